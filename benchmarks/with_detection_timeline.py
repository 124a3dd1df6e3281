"""Where a run with detection spends its wall time: one warm pass (1080p 10-bit DPX, 96 frames) under the torch
profiler, the GPU's busy share in 5 ms bins beside the calling thread's innermost named host range, and the GPU's
idle time blamed on those ranges.

    python benchmarks/with_detection_timeline.py OUT_DIR --faces 1 4

Writes ``timeline_<faces>.txt`` (a line a bin), ``kernels_<faces>.txt`` (the GPU time of each kernel, before and
after the restore's first frame) and ``with_detection_timeline.json``. Only the calling thread's
ranges are recorded: where the scan runs on a thread of its own its work shows as the calling thread's wait
(ANALYSIS).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import warm_clips  # noqa: E402

import facefix.analyse as analyse  # noqa: E402
import facefix.detect as detect  # noqa: E402
import facefix.detect.scan as scan  # noqa: E402
import facefix.run as run  # noqa: E402
import facefix.track as track  # noqa: E402
import facefix.track.associate as associate  # noqa: E402
import facefix.track.cuts as cuts  # noqa: E402

# (owner, function, range name)
RANGES = [
    (detect.BlazeFaceDetector, "queue_look", "queue_look"), (detect.BlazeFaceDetector, "merge", "merge"),
    (detect.BlazeFaceDetector, "queue_results", "queue_results"), (analyse, "_working_batch", "working_batch"),
    (associate, "appearance_batch", "appearance"), (cuts, "thumbnails", "thumbnails"),
    (cuts, "cut_features", "cut_features"), (track.TrackBuilder, "add", "track_add"),
    (track.TrackBuilder, "finish", "track_finish"), (analyse, "track_clip", "ANALYSIS"), (run, "_process", "R_process"),
    (run._Writer, "close", "R_writer_close"), (scan, "_step", "scan_step"), (run, "_keep_tracks", "keep_tracks"),
]
BIN_US = 5000


def _named(fn: Callable, name: str) -> Callable:
    @functools.wraps(fn)
    def call(*args: object, **kwargs: object) -> object:
        with record_function(name):
            return fn(*args, **kwargs)
    return call


def _named_waits(make: Callable, name: str) -> Callable:
    """``prefetch`` whose every wait for the next frame is a named range."""
    def wrapped(*args: object, **kwargs: object) -> Iterator:
        frames = make(*args, **kwargs)
        try:
            while True:
                with record_function(name):
                    item = next(frames, None)
                if item is None:
                    return
                yield item
        finally:
            frames.close()
    return wrapped


def name_ranges() -> list[str]:
    for owner, fn, name in RANGES:
        setattr(owner, fn, _named(getattr(owner, fn), name))
    analyse.prefetch = _named_waits(analyse.prefetch, "A_wait_frame")
    run.prefetch = _named_waits(run.prefetch, "R_wait_frame")
    return [name for _, _, name in RANGES] + ["A_wait_frame", "R_wait_frame"]


def kernel_table(events: list, top: int = 25) -> list[str]:
    """Each kernel's total GPU time (ms) and count, in the analysis (kernels that start before the restore's
    first ``R_process``) and in the restore, most first."""
    restore = min((e.time_range.start for e in events if e.name == "R_process"), default=float("inf"))
    phases: dict[str, dict[str, list[float]]] = {"analysis": {}, "restore": {}}
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CUDA:
            phase = phases["analysis" if e.time_range.start < restore else "restore"]
            row = phase.setdefault(e.name[:90], [0.0, 0])
            row[0] += (e.time_range.end - e.time_range.start) / 1e3
            row[1] += 1
    lines = []
    for phase, rows in phases.items():
        total = sum(r[0] for r in rows.values())
        lines.append(f"== {phase}: {total:.1f} ms of kernels")
        for name, (ms, count) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
            lines.append(f"{ms:8.2f} ms {int(count):6d}x  {name}")
    return lines


def timeline(events: list, names: set[str]) -> tuple[list[str], dict]:
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    host = [(e.time_range.start, e.time_range.end, e.name) for e in events if e.name in names]
    busy: list[list[float]] = []
    for s, t in kernels:
        if busy and s <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], t)
        else:
            busy.append([s, t])
    begin = min([h[0] for h in host] + [b[0] for b in busy[:1]])
    end = max([h[1] for h in host] + [b[1] for b in busy[-1:]])

    def innermost(t: float) -> str:
        best = None
        for h0, h1, name in host:
            if h0 <= t < h1 and (best is None or h0 >= best[0]):
                best = (h0, name)
        return best[1] if best else "-"

    blame: dict[str, float] = {}
    edges = [begin] + [t for b in busy for t in b] + [end]
    gaps = list(zip(edges[::2], edges[1::2]))  # before, between and after the busy spans
    for g0, g1 in gaps:
        t = g0
        while t < g1:
            step = min(100.0, g1 - t)
            name = innermost(t + step / 2)
            blame[name] = blame.get(name, 0.0) + step
            t += step
    lines = []
    t = begin
    while t < end:
        share = sum(max(0.0, min(t + BIN_US, b) - max(t, a)) for a, b in busy) / BIN_US
        counts: dict[str, int] = {}
        for k in range(10):
            name = innermost(t + (k + 0.5) * BIN_US / 10)
            counts[name] = counts.get(name, 0) + 1
        ranges = " ".join(f"{n}:{c}" for n, c in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"{(t - begin) / 1e3:7.1f}ms gpu {share * 100:5.1f}%  {ranges}")
        t += BIN_US
    summary = {"span_ms": round((end - begin) / 1e3, 1), "gpu_busy_ms": round(sum(b - a for a, b in busy) / 1e3, 1),
               "idle_blame_ms": {k: round(v / 1e3, 1) for k, v in sorted(blame.items(), key=lambda kv: -kv[1])}}
    return lines, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--faces", type=int, nargs="+", default=[1])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = set(name_ranges())
    results = {}
    for faces, _, one_pass in warm_clips(args.faces, torch.device(args.device)):
        for _ in range(3):
            one_pass(None)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            one_pass(None)
        lines, results[faces] = timeline(prof.events(), names)
        (args.out / f"timeline_{faces}.txt").write_text("\n".join(lines) + "\n")
        (args.out / f"kernels_{faces}.txt").write_text("\n".join(kernel_table(prof.events())) + "\n")
        print(json.dumps({faces: results[faces]}), flush=True)
    (args.out / "with_detection_timeline.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
