#!/usr/bin/env python3
"""A job's start-up through the bridge (`facefix serve`): cold (the first job, the model loaded on the way) against
warm (the next jobs with the same model, which stays loaded).

Starts the real `facefix serve` process (its own cache folder under --work) with random-init GFPGAN v1.4 weights
(`facefix.demo.synth.random_gfpgan`: the real network's size and FLOPs) as its `--model-path`, talks to it through
the standard-library client loaded by path as a host loads it, and submits the same shot (a synthetic clip of a
real face, 8-bit PNG, its FaceTracks given so no detection is timed) again and again to new output folders.
Per job, measured on the host's side (polling every --poll-ms): seconds from submit to the first progress (the
first batch written: set-up, model load when cold, the first batch through the model) and to done; and from the
bridge's own timestamps, the seconds it waited in the queue and ran. Prints JSON (and writes it to --out).

  python benchmarks/bridge_startup.py                               # a GPU when there is one: 1080p, 32 frames
  python benchmarks/bridge_startup.py --frames 4 --size 256 --device cpu      # a CPU smoke test (a minute)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))


def load_client() -> Any:
    """The bridge client as a host loads it: the one file, by path (it imports nothing of facefix)."""
    spec = importlib.util.spec_from_file_location("facefix_bridge_client", ROOT / "core/facefix/bridge/client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_size(text: str) -> tuple[int, int]:
    """``1080`` (16:9 at that height; ``256`` and below: square) or ``WxH`` -> (height, width)."""
    if "x" in text:
        w, h = (int(v) for v in text.lower().split("x"))
        return h, w
    h = int(text)
    return (h, h) if h <= 256 else (h, int(round(h * 16 / 9 / 2)) * 2)


def make_shot(folder: Path, frames: int, size: tuple[int, int]) -> tuple[str, Path]:
    """A moving real face as an 8-bit PNG sequence, and its FaceTracks file."""
    from facefix import Face, FaceTracks
    from facefix.demo import synth
    from facefix.io import Frame, FrameFormat
    from facefix.io.sequence import write_frame

    folder.mkdir(parents=True, exist_ok=True)
    clip = synth.motion_clip(frames, size, translate=(2, 1), rotate_deg=0.5, start_scale=0.5 * min(size) / 256)
    per = {}
    for i, (rgb, lm) in enumerate(zip(clip.frames, clip.landmarks)):
        n = 1001 + i
        write_frame(folder / f"plate.{n:04d}.png", Frame(n, rgb, FrameFormat.for_pixels(rgb, "uint8")))
        pad = 0.25 * float(lm.max(0)[0] - lm.min(0)[0]) + 8
        per[n] = [Face(box=(*(lm.min(0) - pad), *(lm.max(0) + pad)), landmarks=lm, track_id=0)]
    FaceTracks.from_faces(per).save(folder / "tracks.json")
    return str(folder / "plate.####.png"), folder / "tracks.json"


def start_bridge(work: Path, device: str, weights: Path) -> tuple[subprocess.Popen, dict[str, Any], float]:
    env = {**os.environ, "FACEFIX_CACHE": str(work / "cache"), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "core"), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "facefix.cli", "serve", "--device", device, "--model-path",
                             str(weights)], stdout=subprocess.PIPE, stderr=open(work / "serve.log", "w"),  # noqa: SIM115
                            text=True, env=env)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(300)
    if not line or not line[0]:
        proc.kill()
        raise SystemExit(f"facefix serve did not start; see {work / 'serve.log'}")
    return proc, json.loads(line[0]), time.perf_counter() - t0


def time_job(bridge: Any, job: dict[str, Any], poll_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    job_id = bridge.submit(job)
    first = None
    while True:
        status = bridge.status(job_id)
        now = time.perf_counter() - t0
        if first is None and status["progress"]["done"] > 0:
            first = now
        if status["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(poll_s)
    if status["state"] != "done":
        raise SystemExit(f"job {job_id} {status['state']}: {status.get('error')}")
    return {"submit_to_first_progress_s": round(first if first is not None else now, 4),
            "submit_to_done_s": round(now, 4),
            "queued_s": round(status["started"] - status["submitted"], 4),
            "ran_s": round(status["finished"] - status["started"], 4),
            "summary": status["summary"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="1080", help="frame height (16:9; 256 and below: square) or WxH")
    ap.add_argument("--warm-runs", type=int, default=3, help="warm jobs after the cold one (the first is 'warm')")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="how often the host side asks for the job's status")
    ap.add_argument("--work", help="folder for the clip, weights and outputs (default: a temporary folder)")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="facefix_bridge_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    from facefix.demo.synth import random_gfpgan

    size = parse_size(args.size)
    source, tracks = make_shot(work / "shot", args.frames, size)
    weights = random_gfpgan(work / "gfpgan_random.safetensors")
    client = load_client()
    proc, info, start_s = start_bridge(work, args.device, weights)
    try:
        bridge = client.Bridge(info["url"], info["token"], timeout=600)
        health = bridge.health()
        runs = []
        for i in range(1 + max(1, args.warm_runs)):
            job = {"input": source, "output": str(work / f"out{i}" / "fixed.####.png"), "tracks": str(tracks),
                   "settings": {"model": "gfpgan-1.4"}}
            runs.append(time_job(bridge, job, args.poll_ms / 1000))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    gpu = None
    try:
        import torch

        if health["device"].startswith("cuda"):
            gpu = torch.cuda.get_device_name(torch.device(health["device"]))
    except Exception:  # the name is a nicety
        gpu = None
    warm = runs[1:]
    result = {
        "what": "bridge job start-up, cold (first job: model load) vs warm (same model, loaded)",
        "device": health["device"], "gpu": gpu, "host": platform.node(), "cpus": os.cpu_count(),
        "frames": args.frames, "size": f"{size[1]}x{size[0]}", "model": "gfpgan-1.4 (random init)",
        "poll_ms": args.poll_ms, "bridge_start_s": round(start_s, 3), "bridge_exit_status": code,
        "cold": runs[0], "warm": runs[1],
        "warm_median": {k: round(statistics.median(r[k] for r in warm), 4)
                        for k in ("submit_to_first_progress_s", "submit_to_done_s", "ran_s")},
        "warm_runs": warm[1:],
    }
    result["cold_minus_warm_first_progress_s"] = round(runs[0]["submit_to_first_progress_s"]
                                                       - result["warm_median"]["submit_to_first_progress_s"], 4)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
