#!/usr/bin/env python3
"""A model of the GPU analysis's two threads under Python's thread switch intervals (no GPU needed).

The scan thread queues a round of tensor operations (each gives up the interpreter's lock and takes it back), plans
the next round in Python, then waits for the device (lock released); once a window's rounds are done it hands the
window over. The calling thread describes and associates each window handed over: Python that holds the lock.
Reported: when the scan is done (the GPU is fed until then) and when both are, the median of ``--repeats`` runs per
interval, against the scan alone. It shows the mechanism ``facefix.streaming.FEEDER_SWITCH_INTERVAL`` is set for; the
figure that counts is ``with_detection_variants.py python_switch_interval`` on a GPU.

  python benchmarks/switch_interval.py --out benchmarks/results/cpu_switch_interval_model.json
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

import torch


def _python(seconds: float) -> None:
    """Python that holds the interpreter's lock for about ``seconds``."""
    t = time.perf_counter()
    s = 0
    while time.perf_counter() - t < seconds:
        for i in range(200):
            s += i


def scan(handoff: queue.Queue | None, windows: int, rounds: int, ops: int, plan_s: float, device_s: float) -> float:
    """The scan thread's part: seconds until its last window is handed over."""
    x = torch.zeros(16)
    t = time.perf_counter()
    for w in range(windows):
        for _ in range(rounds):
            for _ in range(ops):
                x.add_(1)  # an operation queued: the lock given up and taken back
            _python(plan_s)  # the next round planned
            time.sleep(device_s)  # waiting for the device, the lock released
        if handoff is not None:
            handoff.put(w)
    if handoff is not None:
        handoff.put(None)
    return time.perf_counter() - t


def describe(handoff: queue.Queue, window_s: float) -> None:
    """The calling thread's part: each window described and associated."""
    while handoff.get() is not None:
        _python(window_s)


def one_run(args: argparse.Namespace) -> tuple[float, float]:
    handoff: queue.Queue = queue.Queue()
    scanned: list[float] = []
    t = time.perf_counter()
    threads = [threading.Thread(target=lambda: scanned.append(scan(handoff, args.windows, args.rounds, args.ops,
                                                                      args.plan_ms / 1e3, args.device_ms / 1e3))),
               threading.Thread(target=describe, args=(handoff, args.describe_ms / 1e3))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return scanned[0], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intervals-us", type=float, nargs="+", default=[5000, 1000, 200, 50, 20])
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=8, help="rounds a window")
    ap.add_argument("--ops", type=int, default=60, help="tensor operations a round")
    ap.add_argument("--plan-ms", type=float, default=0.4, help="Python planning a round")
    ap.add_argument("--device-ms", type=float, default=1.0, help="wait for the device a round")
    ap.add_argument("--describe-ms", type=float, default=20.0, help="Python describing and associating a window")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    kept = sys.getswitchinterval()
    alone = statistics.median(scan(None, args.windows, args.rounds, args.ops, args.plan_ms / 1e3, args.device_ms / 1e3)
                              for _ in range(args.repeats))
    rows = []
    try:
        for us in args.intervals_us:
            sys.setswitchinterval(us / 1e6)
            runs = [one_run(args) for _ in range(args.repeats)]
            row = {"interval_us": us, "scan_s": round(statistics.median(r[0] for r in runs), 4),
                   "both_s": round(statistics.median(r[1] for r in runs), 4)}
            rows.append(row)
            print(f"{us:7.0f} us: scan done {row['scan_s'] * 1e3:6.1f} ms, both {row['both_s'] * 1e3:6.1f} ms "
                  f"(scan alone {alone * 1e3:.1f} ms)", flush=True)
    finally:
        sys.setswitchinterval(kept)
    result = {"command": " ".join(["benchmarks/switch_interval.py"] + sys.argv[1:]), "machine": platform.machine(),
              "python": platform.python_version(), "scan_alone_s": round(alone, 4), "model": {
                  k: getattr(args, k) for k in ("windows", "rounds", "ops", "plan_ms", "device_ms", "describe_ms")},
              "intervals": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
