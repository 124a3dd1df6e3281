#!/usr/bin/env python3
"""A farm chunk's start-up, cold against warm: what the OpenJD template's Warm parameter buys.

Cold: every chunk is a fresh `facefix restore` process (imports, model load, the chunk). Warm: the session
starts one bridge (`facefix submit --start-bridge`, the template's step environment) and every chunk is a
`facefix submit` process that hands its chunk to it (the model loaded by the first chunk stays loaded). The
same shot (a synthetic clip of a real face, 8-bit PNG, its FaceTracks given as the farm job's Track step
gives them) is cut into --chunks chunks of --frames-per-chunk frames; each chunk also computes its temporal
pre-roll, as on the farm. Random-init GFPGAN v1.4 weights (`facefix.demo.synth.random_gfpgan`: the real
network's size and FLOPs) via --model-path. Every chunk's wall time is measured from the launch of its
process to its exit, as a farm task sees it; the outputs of the two ways are compared byte for byte. Prints
JSON (and writes it to --out).

  python benchmarks/farm_startup.py                                    # a GPU when there is one: 1080p
  python benchmarks/farm_startup.py --chunks 2 --frames-per-chunk 1 --size 256 --device cpu   # CPU smoke test
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_startup import make_shot, parse_size  # noqa: E402

FIRST = 1001


def facefix(*args: str) -> list[str]:
    return [sys.executable, "-m", "facefix.cli", *args]


def timed(argv: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``argv`` to its end; its wall seconds (a failure stops the benchmark with the tail of its log)."""
    t0 = time.perf_counter()
    with open(log, "a") as err:
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {done.returncode}:\n{log.read_text()[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    ap.add_argument("--chunks", type=int, default=6, help="farm tasks (chunks) of the shot")
    ap.add_argument("--frames-per-chunk", type=int, default=10)
    ap.add_argument("--size", default="1080", help="frame height (16:9; 256 and below: square) or WxH")
    ap.add_argument("--model-path", help="weights (default: random-init GFPGAN v1.4 written to --work)")
    ap.add_argument("--work", help="folder for the clip, weights and outputs (default: a temporary folder)")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="facefix_farm_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    frames = args.chunks * args.frames_per_chunk
    source, tracks = make_shot(work / "shot", frames, size)
    if args.model_path:
        weights = Path(args.model_path)
    else:
        from facefix.demo.synth import random_gfpgan

        weights = random_gfpgan(work / "gfpgan_random.safetensors")
    chunks = [f"{FIRST + i * args.frames_per_chunk}-{FIRST + (i + 1) * args.frames_per_chunk - 1}"
              for i in range(args.chunks)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "core"), os.environ.get("PYTHONPATH"))
                                                     if p),
           "FACEFIX_CACHE": str(work / "cache"), "FACEFIX_SERVE": " ".join(facefix("serve"))}
    common = ["--tracks", str(tracks), "--model-path", str(weights), "--device", args.device, "--quiet"]
    log = work / "log.txt"

    cold = [timed(facefix("restore", source, "-o", str(work / "cold" / "f.####.png"), "--frames", c, *common), env,
                  log) for c in chunks]
    bridge_start = timed(facefix("submit", "--start-bridge", "--device", args.device, "--model-path", str(weights)),
                         env, log)
    try:
        warm = [timed(facefix("submit", source, "-o", str(work / "warm" / "f.####.png"), "--frames", c, *common), env,
                      log) for c in chunks]
    finally:
        bridge_stop = timed(facefix("submit", "--stop-bridge"), env, log)

    names = sorted(p.name for p in (work / "cold").glob("f.*.png"))
    identical = len(names) == frames and all(
        filecmp.cmp(work / "cold" / n, work / "warm" / n, shallow=False) for n in names)
    gpu = None
    try:
        import torch

        if args.device != "cpu" and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # the name is a nicety
        gpu = None
    rest = warm[1:] or warm  # after the first chunk, which loads the model into the bridge
    result: dict[str, Any] = {
        "what": "a farm chunk's wall time, cold (a fresh `facefix restore` per chunk) vs warm (`facefix submit` to "
                "the session's bridge, started once)",
        "device": args.device, "gpu": gpu, "host": platform.node(), "cpus": os.cpu_count(),
        "size": f"{size[1]}x{size[0]}", "chunks": args.chunks, "frames_per_chunk": args.frames_per_chunk,
        "model": "gfpgan-1.4 (random init)" if not args.model_path else str(weights),
        "cold_chunk_s": [round(s, 3) for s in cold],
        "warm_bridge_start_s": round(bridge_start, 3),
        "warm_chunk_s": [round(s, 3) for s in warm],
        "warm_bridge_stop_s": round(bridge_stop, 3),
        "cold_median_chunk_after_first_s": round(statistics.median(cold[1:] or cold), 3),
        "warm_median_chunk_after_first_s": round(statistics.median(rest), 3),
        "cold_total_s": round(sum(cold), 3),
        "warm_total_s": round(bridge_start + sum(warm) + bridge_stop, 3),
        "outputs_identical": identical,
    }
    # The same chunk both ways (the first chunk has no pre-roll to compute, so chunks are compared pairwise).
    result["saved_per_chunk_s"] = round(statistics.median(c - w for c, w in zip(cold[1:] or cold, rest)), 3)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if not identical:
        raise SystemExit("the warm and cold outputs differ")


if __name__ == "__main__":
    main()
