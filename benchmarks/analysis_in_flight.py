#!/usr/bin/env python3
"""The shot scan's windows in flight on a GPU, A/B in one process: ``track_clip`` on the benchmark's 1080p clip
with 1 then 2 windows scanned at once (``scan_in_flight``), alternating, and how far apart their tracks are.

  python benchmarks/analysis_in_flight.py --rounds 2 --work /dev/shm --out benchmarks/results/h100_scan_in_flight.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import make_clip, source_digest  # noqa: E402

from facefix.analyse import AnalysisStats, track_clip  # noqa: E402
from facefix.io import open_source  # noqa: E402
from facefix.params import Settings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each setting (the first warms the process)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = Settings(device=dev.type, batch=32, temporal=0.5, mask="mesh")
    out: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "source_sha256": source_digest(), "runs": {}}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for faces in args.faces:
            folder = Path(tmp) / f"clip{faces}"
            folder.mkdir()
            pattern, _ = make_clip(folder, (1920, 1080), faces, args.frames, "dpx")
            src = open_source(pattern)
            numbers = list(src.frame_numbers)
            runs: dict[int, list] = {1: [], 2: []}
            tracks = {}
            for _ in range(args.rounds):
                for k in (1, 2):
                    stats = AnalysisStats()
                    sync()
                    t = time.perf_counter()
                    tracks[k] = track_clip(src, numbers, settings, device=dev, progress=False, stats=stats,
                                           scan_in_flight=k)
                    sync()
                    runs[k].append([time.perf_counter() - t, stats.timings, stats.faces_detected])
            a, b = tracks[1], tracks[2]
            diff = max((abs(x - y) for ta, tb in zip(a.tracks, b.tracks) for n in ta.faces
                        for x, y in zip(ta.faces[n].box, tb.faces[n].box)), default=-1.0)
            out["runs"][str(faces)] = {"in_flight_1": runs[1], "in_flight_2": runs[2],
                                       "tracks": [len(a.tracks), len(b.tracks)], "max_box_diff_px": diff}
            print(json.dumps({faces: out["runs"][str(faces)]}), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
