#!/usr/bin/env python3
"""The analysis's eager tensor operations outside the detector's networks, by the function that issues them.

On a GPU the networks replay as CUDA graphs, and what the scan thread's host time goes on is everything else: each
eager operation is a dispatch, and each that is no view a kernel launch (or a small CPU tensor's work). This counts
them in one analysis of the benchmark's kind of clip (1080p 10-bit DPX) run on the CPU with a GPU's scan settings
(windows of four periods, a first and a last window of one, two in flight, 256 crops a network call, candidates
read every 2048 crops, crops sampled in one call where a GPU would): the counts do not depend on the device, and need none.

  python benchmarks/analysis_host_ops.py --faces 1 4 --frames 96 --out /tmp/ops.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import make_clip  # noqa: E402

import facefix.detect.blazeface as blazeface  # noqa: E402
import facefix.detect.landmarks as landmarks  # noqa: E402
import facefix.detect.tflite_torch as tflite_torch  # noqa: E402
from facefix.analyse import _detector, track_clip  # noqa: E402
from facefix.io import open_source  # noqa: E402
from facefix.params import Settings  # noqa: E402

# Operations that make views (no kernel, no data): counted apart from the rest.
VIEWS = ("view", "permute", "slice", "reshape", "alias", "select", "expand", "unsqueeze", "squeeze", "split",
         "unbind", "detach", "transpose", "as_strided", "lift_fresh", "aten.t.")


class _Counted(TorchDispatchMode):
    """Counts every operation dispatched outside the networks, by the innermost facefix function calling it."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.in_network = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not self.in_network:
            frame = sys._getframe(1)
            where = "?"
            while frame is not None:
                name = frame.f_code.co_filename
                if "facefix" in name:
                    where = f"{Path(name).name}:{frame.f_code.co_name}"
                    break
                frame = frame.f_back
            kind = "views" if any(v in str(func) for v in VIEWS) else "ops"
            self.counts[f"{kind} {where}"] += 1
        return func(*args, **(kwargs or {}))


def count(pattern: str) -> dict[str, int]:
    mode = _Counted()
    network = tflite_torch.TFLiteModule.forward
    regions = blazeface.BlazeFace.queue_regions

    def forward(net: tflite_torch.TFLiteModule, *inputs: torch.Tensor) -> Any:
        mode.in_network += 1
        try:
            return network(net, *inputs)
        finally:
            mode.in_network -= 1

    def as_on_a_gpu(net: blazeface.BlazeFace, frames: torch.Tensor, index: torch.Tensor, center: torch.Tensor,
                    side: torch.Tensor, min_score: float | None = None, batch: int = 64, hold: int | None = None) -> Any:
        return regions(net, frames, index, center, side, min_score, 256, 2048)

    crops = blazeface.crop_rects

    def crops_as_on_a_gpu(frames: torch.Tensor, index: torch.Tensor, *args: Any, one_call: bool | None = None,
                          **kwargs: Any) -> torch.Tensor:
        if one_call is None and len(index):  # crop_rects' choice on a GPU
            one_call = blazeface.pays_in_one_call(index.numpy())
        return crops(frames, index, *args, one_call=one_call, **kwargs)

    src = open_source(pattern)
    settings = Settings(device="cpu")
    _detector(settings.detector, "cpu", float(settings.min_face))  # loaded before counting
    tflite_torch.TFLiteModule.forward = forward  # type: ignore[method-assign]
    blazeface.BlazeFace.queue_regions = as_on_a_gpu  # type: ignore[assignment,method-assign]
    blazeface.crop_rects = landmarks.crop_rects = crops_as_on_a_gpu  # type: ignore[assignment]
    try:
        with mode:
            track_clip(src, src.frame_numbers, settings, device="cpu", progress=False, scan_periods=4,
                       scan_first_periods=1, scan_last_periods=1, scan_in_flight=2, scan_thread=False)
    finally:
        tflite_torch.TFLiteModule.forward = network  # type: ignore[method-assign]
        blazeface.BlazeFace.queue_regions = regions  # type: ignore[method-assign]
        blazeface.crop_rects = landmarks.crop_rects = crops  # type: ignore[assignment]
    return dict(mode.counts.most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    for faces in args.faces:
        with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
            pattern, _ = make_clip(Path(tmp), (1920, 1080), faces, args.frames, "dpx")
            counts = count(pattern)
        ops = sum(v for k, v in counts.items() if k.startswith("ops "))
        views = sum(v for k, v in counts.items() if k.startswith("views "))
        results[str(faces)] = {"ops": ops, "views": views, "by_function": counts}
        print(f"{faces} face(s), {args.frames} frames: {ops} operations and {views} views outside the networks")
        for name, n in list(counts.items())[:12]:
            print(f"  {n:6d}  {name}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
