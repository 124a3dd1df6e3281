#!/usr/bin/env python3
"""The shot scan against every tile on every frame: the same faces? and the detector's time per frame of each.

Builds 1080p frames from the bundled portrait (1 big, 4 medium and 6 small faces, moving a few pixels a frame),
then runs the BlazeFace detector both ways on the same frames, twice (the first run meets the kernels cold).

  python benchmarks/detection_scan.py --device cuda --frames 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from facefix.demo import synth  # noqa: E402
from facefix.detect import BlazeFaceDetector, load_detector  # noqa: E402
from facefix.detect.scan import SCAN_PERIOD, scan_window  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev = torch.device(args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    n = max(SCAN_PERIOD, args.frames // SCAN_PERIOD * SCAN_PERIOD)
    det = load_detector("blazeface", device=str(dev), min_face=24)
    assert isinstance(det, BlazeFaceDetector)
    rows = []
    for faces, px in ((1, 360.0), (4, 243.0), (6, 60.0)):
        base, _ = synth.crowd_frame((h, w), faces, face_px=px)
        frames = np.stack([np.roll(base, (int(round(2 * np.cos(i / 5))), int(round(3 * np.sin(i / 7)))), (0, 1))
                           for i in range(n)])
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).to(dev)
        row: dict = {"faces": faces, "face_px": px, "frames": n}
        for rep in ("cold", "warm"):
            sync(dev)
            t = time.perf_counter()
            full = [r for i in range(0, n, 16) for r in det(x[i : i + 16])]
            sync(dev)
            t_full = time.perf_counter() - t
            t = time.perf_counter()
            carried = torch.zeros(0, 4)
            scan = []
            for i in range(0, n, SCAN_PERIOD):
                found, carried = scan_window(det, x[i : i + SCAN_PERIOD], range(i, i + SCAN_PERIOD), carried)
                scan += found
            sync(dev)
            t_scan = time.perf_counter() - t
            row[f"every_tile_ms_per_frame_{rep}"] = 1000 * t_full / n
            row[f"scan_ms_per_frame_{rep}"] = 1000 * t_scan / n
        diff = 0.0
        for a, b in zip(full, scan):
            for fa, fb in zip(sorted(a.faces, key=lambda f: f.box), sorted(b.faces, key=lambda f: f.box)):
                diff = max(diff, float(np.abs(np.subtract(fa.box, fb.box)).max()),
                           float(np.abs(fa.landmarks - fb.landmarks).max()))
        row.update({"faces_every_tile": sum(len(r.faces) for r in full), "faces_scan": sum(len(r.faces) for r in scan),
                    "same_counts_per_frame": all(len(a.faces) == len(b.faces) for a, b in zip(full, scan)),
                    "max_difference_px": diff})
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"device": name, "size": [w, h], "period": SCAN_PERIOD, "runs": rows}, indent=1))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
