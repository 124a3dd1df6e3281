#!/usr/bin/env python3
"""Regrain quality against known grain: ``facefix.demo.synth.grain_clip`` (an airbrushed face, no grain inside;
a smooth plate around it carrying film grain of a known amplitude and size) through the pipeline with the
``passthrough`` restorer and ``--regrain 1``. Prints one JSON object.

  python benchmarks/regrain_quality.py                    # CPU, the evaluation seeds
  python benchmarks/regrain_quality.py --seeds 1 2 3      # the development seeds

The evaluation seeds (101..) are not the ones the method was checked on while it was made (1-3, 11-13: trials and
tests).

Figure: per clip and channel, the fine band's (``x - blur(x, 1)``) robust deviation inside the face (full matte)
over the same of the truth, the airbrushed face carrying the plate's own grain (what the face would show had it
kept its grain), averaged over frames; 1.0 is matched grain. ``ratio_vs_ring``: the same against
the output's own ring outside the matte (what a viewer compares). Amplitudes 0.01-0.04, grain sizes 0.5-1.2 px.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))


def _tracks(clip):
    from facefix.demo.synth import truth_tracks

    return truth_tracks(clip.landmarks, clip.mesh)


def fine_std(img, where):
    """(C,) robust deviation (1.4826 x median absolute value) of the fine band of (H, W, C) ``img`` over ``where``."""
    import torch

    from facefix.filters import gaussian_blur

    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    hf = (t - gaussian_blur(t, 1.0))[0].numpy().transpose(1, 2, 0)
    return 1.4826 * np.median(np.abs(hf[where]), axis=0)


def measure(seed, amplitude, corr, size, frames):
    from facefix.api import Session
    from facefix.demo import synth

    clip, grain = synth.grain_clip(frames, (size, size), seed=seed, amplitude=amplitude, corr=corr)
    settings = {"model": "passthrough", "temporal": 0.0, "mask": "mesh", "colorspace": "srgb", "device": "cpu",
                "regrain": 1.0}
    with Session(settings) as s:
        got = s.restore(list(clip.frames), _tracks(clip), list(range(frames)), colorspace="srgb")
    out, mattes = np.stack([g.image for g in got]), np.stack([g.matte for g in got])
    # The truth: the airbrushed face carrying the plate's own grain (the same film grain, not kept out of it).
    flat = np.full((frames, size, size, 3), 0.5, np.float32)
    truth = clip.frames - grain + synth.film_grain(flat, amplitude, corr, seed=seed + 7919) - flat
    vs_truth, vs_ring = [], []
    for i in range(frames):
        inside = (clip.face[i] > 0.5) & (mattes[i] > 0.999)
        around = (synth.face_ellipse((size, size), clip.landmarks[i], 1.6) > 0) & (
            synth.face_ellipse((size, size), clip.landmarks[i], 1.0, soft=0.15) == 0) & (mattes[i] == 0)
        face = fine_std(out[i], inside)
        vs_truth.append(face / fine_std(truth[i], inside))
        vs_ring.append(face / fine_std(out[i], around))
    return {"seed": seed, "amplitude": amplitude, "corr": corr,
            "ratio": np.mean(vs_truth, 0).tolist(), "ratio_vs_ring": np.mean(vs_ring, 0).tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--amplitudes", type=float, nargs="+", default=[0.01, 0.02, 0.04])
    ap.add_argument("--corrs", type=float, nargs="+", default=[0.5, 0.7, 1.2])
    ap.add_argument("--size", type=int, default=256, help="frame size (px, square)")
    ap.add_argument("--frames", type=int, default=4)
    args = ap.parse_args(argv)
    rows = [measure(s, a, c, args.size, args.frames) for s in args.seeds for a in args.amplitudes for c in args.corrs]
    r = np.array([row["ratio"] for row in rows])
    rr = np.array([row["ratio_vs_ring"] for row in rows])
    summary = {"ratio_min": float(r.min()), "ratio_max": float(r.max()), "ratio_mean": float(r.mean()),
               "ratio_vs_ring_min": float(rr.min()), "ratio_vs_ring_max": float(rr.max())}
    print(json.dumps({"device": "cpu", "seeds": args.seeds, "size": args.size, "frames": args.frames,
                      "summary": summary, "clips": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
