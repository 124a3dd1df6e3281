"""End to end with detection under variants of the analysis (scan thread, windows in flight, read threads, early
reads for the restore), 1080p 10-bit DPX, 96 frames: two interleaved rounds of every variant, the median of
``--passes`` warm passes each, and the tracks-given run before and after for the ratio.

    python benchmarks/with_detection_variants.py OUT_DIR --faces 1 4
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import warm_clips  # noqa: E402

import facefix.analyse as analyse  # noqa: E402
import facefix.detect.scan as scan  # noqa: E402
import facefix.run as run  # noqa: E402
import facefix.streaming as streaming  # noqa: E402

# name: (scan on a thread, windows in flight, analysis read threads (None: the default), GIL switch interval,
# early reads)
VARIANTS = {
    "base": (False, 3, None, 0.005, False),
    "thread": (True, 3, None, 0.005, False),
    "thread_early": (True, 3, None, 0.005, True),
    "thread_f2_early": (True, 2, None, 0.005, True),
    "thread_early_r5": (True, 3, 5, 0.005, True),
    "thread_early_sw1ms": (True, 3, None, 0.001, True),
}
_POOL = analyse.read_pool
_START = run._EarlyReads.start


def use(thread: bool, in_flight: int, readers: int | None, switch: float, early: bool) -> None:
    analyse.SCAN_ON_THREAD = thread
    scan.GPU_IN_FLIGHT = in_flight
    analyse.read_pool = _POOL if readers is None else (lambda kind, name="read": streaming.io_threads(readers, name))
    run._EarlyReads.start = _START if early else (lambda self: None)
    sys.setswitchinterval(switch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for faces, tracks, one_pass in warm_clips(args.faces, torch.device(args.device)):

        def median(given: object, one_pass: Callable[..., dict] = one_pass) -> dict:
            runs = [one_pass(given) for _ in range(args.passes)]
            return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]

        one_pass(tracks)
        got: dict = {"given_before": round(median(tracks)["seconds"], 4)}
        one_pass(None)
        for _ in range(2):  # two rounds of every variant, interleaved
            for name, variant in VARIANTS.items():
                use(*variant)
                one_pass(None)
                m = median(None)
                got.setdefault(name, []).append({
                    "s": round(m["seconds"], 4), "analyse": round(m["timings_s"]["analyse"], 4),
                    "restore": round(m["timings_s"]["restore"], 4),
                    "parts": {k[8:]: round(v, 4) for k, v in m["timings_s"].items() if k.startswith("analyse_")}})
        use(*VARIANTS["thread_early"])
        got["given_after"] = round(median(tracks)["seconds"], 4)
        given = (got["given_before"] + got["given_after"]) / 2
        got["ratio"] = {name: round(given / min(x["s"] for x in got[name]), 3) for name in VARIANTS}
        results[faces] = got
        print(json.dumps({faces: got}), flush=True)
    (args.out / "with_detection_variants.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
