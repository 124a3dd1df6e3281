#!/usr/bin/env python3
"""The analysis pass (detection + tracking) on the CPU: paired runs of this checkout against another copy of the code.

Builds a clip with bench.py's generator (default 720p, one moving face, PNG), then times ``track_clip`` on it (or,
with --restore, ``run_clip`` without tracks and the passthrough model: analysis, restore pass and writes) in
fresh processes, alternating the two code trees (A = --base, B = this checkout) so that a busy machine slows both
alike; reports each pair's ratio and the median. Without --base it times this checkout alone.

  python benchmarks/analysis_cpu.py --base /tmp/base --pairs 5 --out benchmarks/results/cpu_720p_analysis.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One timed analysis (or, with "restore", a whole `facefix restore --model passthrough` run without tracks) in a
# fresh process: the code tree comes from PYTHONPATH.
CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
from facefix import Settings
from facefix.analyse import AnalysisStats, track_clip
from facefix.faces import FaceTracks
from facefix.io import open_source
src = open_source(sys.argv[1])
numbers = list(src.frame_numbers)[: int(sys.argv[2])]
if sys.argv[5] == "restore":
    from facefix.run import run_clip, tracks_sidecar
    dest = str(Path(sys.argv[4]).with_suffix("") / "out.####.png")
    t = time.perf_counter()
    summary = run_clip(sys.argv[1], dest, Settings(device="cpu", model="passthrough"), progress=False,
                       frames=f"{numbers[0]}-{numbers[-1]}")
    wall = time.perf_counter() - t
    FaceTracks.load(tracks_sidecar(dest)).save(sys.argv[4])
    print(json.dumps({"seconds": wall, "fps": len(numbers) / wall, "timings_s": summary.timings}))
else:
    stats = AnalysisStats()
    t = time.perf_counter()
    tracks = track_clip(src, numbers, Settings(device="cpu"), progress=False, stats=stats)
    wall = time.perf_counter() - t
    tracks.save(sys.argv[4])
    print(json.dumps({"seconds": wall, "fps": len(numbers) / wall, "faces": stats.faces_detected,
                      "tracks": len(tracks.tracks), "timings_s": stats.timings}))
"""


def make_clip(folder: Path, size: tuple[int, int], faces: int, frames: int) -> str:
    sys.path.insert(0, str(ROOT / "core"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench import make_clip as bench_clip

    pattern, _ = bench_clip(folder, size, faces, frames, "png")
    return pattern


def timed(core: Path, pattern: str, frames: int, threads: int, tracks_out: Path, what: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(core))
    out = subprocess.run([sys.executable, "-c", CHILD, pattern, str(frames), str(threads), str(tracks_out), what],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tracks_difference(a: Path, b: Path) -> dict:
    """How far two FaceTracks files are apart: frames with faces in each, and the largest landmark and box
    difference (px) over the faces both have (matched by track order and frame)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "core"))
    from facefix.faces import FaceTracks

    ta, tb = FaceTracks.load(a), FaceTracks.load(b)
    faces_a = sum(len(t.faces) for t in ta.tracks)
    faces_b = sum(len(t.faces) for t in tb.tracks)
    lm = box = 0.0
    for x, y in zip(ta.tracks, tb.tracks):
        for n in set(x.faces) & set(y.faces):
            lm = max(lm, float(np.abs(np.asarray(x.faces[n].landmarks) - np.asarray(y.faces[n].landmarks)).max()))
            box = max(box, float(np.abs(np.asarray(x.faces[n].box) - np.asarray(y.faces[n].box)).max()))
    return {"tracks": [len(ta.tracks), len(tb.tracks)], "faces": [faces_a, faces_b], "max_landmark_px": lm,
            "max_box_px": box}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="root of the other code tree (its core/ is used as A)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--faces", type=int, default=1)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    ap.add_argument("--restore", action="store_true",
                    help="time a whole restore without tracks (passthrough model) instead of the analysis alone")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    result: dict = {"command": " ".join(sys.argv), "timed": "restore" if args.restore else "analyse", "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "size": [w, h], "frames": args.frames, "faces": args.faces, "pairs": []}
    with tempfile.TemporaryDirectory(prefix="facefix-analysis-") as tmp:
        pattern = make_clip(Path(tmp), (w, h), args.faces, args.frames)
        for i in range(args.pairs):
            pair: dict = {}
            # Alternate which tree goes first: the second run of a pair may find the clip in a warmer cache.
            order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
            for name in order:
                if name == "A" and args.base is None:
                    continue
                core = (args.base / "core") if name == "A" else ROOT / "core"
                # A fresh output per run: a restore keeps its tracks beside its output and would reuse them.
                pair[name] = timed(core, pattern, args.frames, args.threads, Path(tmp) / f"tracks_{name}{i}.json",
                                   "restore" if args.restore else "analyse")
            if "A" in pair:
                pair["speedup"] = pair["A"]["seconds"] / pair["B"]["seconds"]
                pair["tracks_A_vs_B"] = tracks_difference(Path(tmp) / f"tracks_A{i}.json", Path(tmp) / f"tracks_B{i}.json")
            result["pairs"].append(pair)
            print(json.dumps({k: (round(v["fps"], 3) if k in ("A", "B") else v) for k, v in pair.items()}), flush=True)
    if args.base is not None:
        result["median_speedup"] = statistics.median(p["speedup"] for p in result["pairs"])
        result["median_fps_A"] = statistics.median(p["A"]["fps"] for p in result["pairs"])
    result["median_fps_B"] = statistics.median(p["B"]["fps"] for p in result["pairs"])
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(result, indent=1))
        tmp_out.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
