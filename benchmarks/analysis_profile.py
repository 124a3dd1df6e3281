#!/usr/bin/env python3
"""Where the analysis pass (detection + tracking) spends its time, on a 1080p clip of the benchmark's kind.

In one fresh process: the detector's first call on each batch shape (what a process's first pass pays), then
``track_clip`` passes: the first and a later one under cProfile (Python's view: host work and waits), and a later
one under the PyTorch profiler (the device's view). Writes text tables and one JSON summary into --out.

  python benchmarks/analysis_profile.py --faces 1 4 --frames 96 --work /dev/shm --out /tmp/prof
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import make_clip  # noqa: E402

from facefix.analyse import AnalysisStats, _detector, track_clip  # noqa: E402
from facefix.io import open_source  # noqa: E402
from facefix.params import Settings  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def first_calls(dev: torch.device, settings: Settings) -> dict:
    """Seconds of the detector's networks on each padded batch shape: first call, then a second one."""
    det = _detector(settings.detector, str(dev), float(settings.min_face))
    out: dict = {}
    for name, net, size, shapes in (("blazeface", det.detector.raw, 192, range(16, 257, 16)),
                                    ("mesh", det.landmarks.raw, 192, range(8, 33, 8))):
        rows = []
        for k in shapes:
            x = torch.rand(k, 3, size, size, device=dev)
            times = []
            for _ in range(2):
                sync(dev)
                t = time.perf_counter()
                with torch.inference_mode():
                    net(x)
                sync(dev)
                times.append(time.perf_counter() - t)
            rows.append({"batch": k, "first_s": times[0], "second_s": times[1]})
        out[name] = rows
    return out


def cprofiled(fn, path: Path) -> float:  # type: ignore[no-untyped-def]
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("cumulative").print_stats(45)
    st.sort_stats("tottime").print_stats(45)
    path.write_text(f"wall {wall:.3f} s\n" + s.getvalue())
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--format", default="dpx")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shapes", action="store_true", help="time the first call on each batch shape first")
    ap.add_argument("--scan-periods", type=int, default=None,
                    help="periods a BlazeFace scan window holds (default: the analysis's own choice)")
    ap.add_argument("--scan-first-periods", type=int, default=None,
                    help="periods the first scan window holds (default: the analysis's own choice)")
    ap.add_argument("--scan-in-flight", type=int, default=None,
                    help="windows scanned at once (default: the analysis's own choice)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    settings = Settings(device=dev.type, batch=32, temporal=0.5, mask="mesh")
    summary: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                     "scan_periods": args.scan_periods, "scan_first_periods": args.scan_first_periods,
                     "scan_in_flight": args.scan_in_flight,
                     "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    t = time.perf_counter()
    _detector(settings.detector, str(dev), float(settings.min_face))
    summary["detector_load_s"] = time.perf_counter() - t
    if args.shapes:
        summary["first_calls"] = first_calls(dev, settings)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for faces in args.faces:
            folder = Path(tmp) / f"clip{faces}"
            folder.mkdir()
            pattern, _ = make_clip(folder, (w, h), faces, args.frames, args.format)
            src = open_source(pattern)
            numbers = list(src.frame_numbers)
            runs = []
            for i in range(3):
                stats = AnalysisStats()

                def one(stats: AnalysisStats = stats, src: object = src, numbers: list[int] = numbers) -> None:
                    track_clip(src, numbers, settings, device=dev, progress=False, stats=stats,
                               scan_periods=args.scan_periods, scan_first_periods=args.scan_first_periods,
                               scan_in_flight=args.scan_in_flight)
                    sync(dev)

                if i < 2:
                    wall = cprofiled(one, args.out / f"cprofile_{faces}face_pass{i + 1}.txt")
                else:
                    from torch.profiler import ProfilerActivity, profile

                    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
                    t = time.perf_counter()
                    with profile(activities=acts) as prof:
                        one()
                    wall = time.perf_counter() - t
                    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
                    (args.out / f"torch_{faces}face.txt").write_text(
                        prof.key_averages().table(sort_by=key, row_limit=40) + "\n\n"
                        + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
                runs.append({"wall_s": wall, "timings_s": stats.timings, "faces": stats.faces_detected})
            summary[f"{faces}_faces"] = runs
            (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
