"""The detector's networks (BlazeFace full range, face mesh) on CUDA in both layouts, replayed from their CUDA graphs:
milliseconds a call at a few batch sizes, and how far the layouts' outputs differ.

    python benchmarks/detector_layout.py OUT.json

Planar is the default on CUDA (``TFLiteModule.channels_last_on_cuda``): channels-last runs cuDNN's depthwise kernels
instead of PyTorch's own NCHW one, a little faster once warm, but cuDNN compiles them at run time for each new batch
shape, which a process's first pass pays (see the attribute's comment). Warm calls only are timed here.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from facefix.detect.blazeface import load_blazeface
from facefix.detect.landmarks import load_face_landmarks

NETWORKS: dict[str, Callable[[], torch.nn.Module]] = {
    "blazeface_full": lambda: load_blazeface("full", "cuda").net,
    "face_mesh": lambda: load_face_landmarks("cuda").net,
}


def ms_per_call(fn: Callable[[], object], reps: int = 40) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128])
    args = ap.parse_args()
    torch.manual_seed(0)
    results = {}
    for name, make in NETWORKS.items():
        channels_last, planar = make(), make()
        channels_last.channels_last_on_cuda, planar.channels_last_on_cuda = True, False
        for k in args.batches:
            x = torch.rand(k, 3, 192, 192, device="cuda") * 2 - 1
            with torch.inference_mode():
                a, b = planar(x), channels_last(x)
                row = {"planar_ms": round(ms_per_call(functools.partial(planar, x)), 3),
                       "channels_last_ms": round(ms_per_call(functools.partial(channels_last, x)), 3),
                       "max_difference": [float((p.float() - q.float()).abs().max()) for p, q in zip(a, b)]}
            results[f"{name}_{k}"] = row
            print(name, k, row, flush=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "results": results}, indent=1))


if __name__ == "__main__":
    main()
