#!/usr/bin/env python3
"""Where a run with detection spends its time beside the run with tracks given, on the benchmark's 1080p clips.

In one process on a GPU, for each face count: the analysis alone (``track_clip``, its default settings and the
variants given with --analysis-variants), then whole runs (``bench.e2e``) with the clip's true tracks, with the
analysed tracks, with the analysed tracks stripped of their meshes (no mesh mattes), and without tracks (analysis,
restore and the sidecar's save beside it); the sidecar's save alone; and the analysis's and the detected-tracks
restore's GPU kernel time (PyTorch profiler). Medians of --passes. Writes one JSON.

  python benchmarks/with_detection_breakdown.py --faces 1 4 --frames 96 --work /dev/shm --out /tmp/breakdown.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import e2e, make_clip, source_digest  # noqa: E402

VARIANTS = {"in_flight_1": {"scan_in_flight": 1}, "in_flight_2": {"scan_in_flight": 2},
            "in_flight_3": {"scan_in_flight": 3}, "periods_2": {"scan_periods": 2}}


def kernel_ms(run) -> float:  # type: ignore[no-untyped-def]
    """GPU kernel time (ms) of ``run()`` under the PyTorch profiler: the device's own work, whatever waits on it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.time_range.end - e.time_range.start for e in kernels) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--analysis-variants", nargs="*", default=[], choices=sorted(VARIANTS))
    ap.add_argument("--size", type=int, nargs=2, default=[1920, 1080], metavar=("W", "H"))
    ap.add_argument("--device", default="cuda", help="cuda (what it is for); cpu only to try the script")
    ap.add_argument("--work", type=Path, default=None, help="folder for the clips (a RAM disk measures the software)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from facefix.analyse import AnalysisStats, track_clip
    from facefix.demo import synth
    from facefix.faces import FaceTrack, FaceTracks
    from facefix.io import open_source
    from facefix.params import Settings
    from facefix.run import _keep_tracks

    dev = torch.device(args.device)
    settings = Settings(model="gfpgan-1.4", device=dev.type, batch=32, temporal=0.5, mask="mesh")
    on_gpu = dev.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    out: dict = {"source_sha256": source_digest(), "device": torch.cuda.get_device_name(dev) if on_gpu else "cpu",
                 "size": args.size, "frames": args.frames,
                 "command": "benchmarks/with_detection_breakdown.py " + " ".join(sys.argv[1:]), "runs": {}}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        weights = synth.random_gfpgan(work / "gfpgan.safetensors")
        engine = None
        for faces in args.faces:
            folder = work / f"clip{faces}"
            folder.mkdir()
            pattern, given = make_clip(folder, tuple(args.size), faces, args.frames, "dpx")
            run: dict = out["runs"].setdefault(str(faces), {})
            for _ in range(2):  # warm: the engine's compile, the detector's graphs
                _, engine = e2e(pattern, given, weights, dev, 32, work, engine=engine)
            e2e(pattern, None, weights, dev, 32, work, engine=engine)
            src = open_source(pattern)
            numbers = list(src.frame_numbers)

            def analyse(src=src, numbers=numbers, **kw):  # type: ignore[no-untyped-def]
                stats = AnalysisStats()
                sync()
                t = time.perf_counter()
                tracks = track_clip(src, numbers, settings, device=dev, progress=False, stats=stats, **kw)
                sync()
                return time.perf_counter() - t, {k: round(v, 4) for k, v in stats.timings.items()}, tracks

            detected = None
            for name, kw in {"default": {}, **{v: VARIANTS[v] for v in args.analysis_variants}}.items():
                passes = [analyse(**kw) for _ in range(args.passes)]
                run[f"analyse_{name}_s"] = round(statistics.median(p[0] for p in passes), 4)
                run[f"analyse_{name}_timings_s"] = passes[-1][1]
                detected = detected or passes[-1][2]
            assert detected is not None
            no_mesh = FaceTracks(tracks=tuple(
                FaceTrack(id=t.id, faces={n: dataclasses.replace(f, mesh=None) for n, f in t.faces.items()})
                for t in detected.tracks), metadata=detected.metadata)
            for name, tracks in {"given": given, "detected": detected, "detected_without_meshes": no_mesh,
                                 "without_tracks": None}.items():
                passes = [e2e(pattern, tracks, weights, dev, 32, work, engine=engine)[0] for _ in range(args.passes)]
                run[f"run_{name}_s"] = round(statistics.median(p["seconds"] for p in passes), 4)
                run[f"run_{name}_restore_s"] = round(statistics.median(p["timings_s"]["restore"] for p in passes), 4)
            saves = []
            for i in range(args.passes):
                t = time.perf_counter()
                _keep_tracks(detected.as_saved(), work / f"sidecar{i}.json")
                saves.append(time.perf_counter() - t)
            run["sidecar_save_s"] = round(statistics.median(saves), 4)
            run["analyse_kernel_ms"] = round(kernel_ms(analyse), 1)
            run["restore_detected_kernel_ms"] = round(
                kernel_ms(functools.partial(e2e, pattern, detected, weights, dev, 32, work, engine=engine)), 1)
            print(json.dumps({faces: run}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
