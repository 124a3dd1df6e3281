#!/usr/bin/env python3
"""The temporal stabiliser on real restorer output: ``realesrgan-face`` (the embedded restorer, Real-ESRGAN x4plus
on the 4x-reduced aligned face) on close-ups of the bundled real face (``facefix.demo.synth.repair_clip``), in
aligned (512 template) space, the way the pipeline's temporal stage sees them. Prints one JSON object.

  python benchmarks/temporal_realesrgan.py                      # CPU, 8 frames at 192 px, seed 101
  python benchmarks/temporal_realesrgan.py --restorer standin   # the tests' cheap stand-in (no weights)

Figures, per strength (``--temporal``):
  * boil (the input boils: per-frame independent texture on the face): flicker of the restored crops without and
    with stabilisation (``temporal.flicker`` on the 128 px reduction, inside the face ellipse), and how much lower;
  * clean (motion, a blink, speech-like mouth motion, no boil): PSNR of the stabilised crops against the
    unstabilised ones inside the face ellipse (what stabilisation costs real motion), and the same on the eye band
    (with 8 frames the blink spans frames 1..7: a smeared blink shows there first);
  * ms_per_face: the restorer's time per face on --device, and the stabiliser's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

S = 512


def aligned(clip):
    """(T, 3, 512, 512) aligned crops of ``clip.frames`` and the face ellipse / eye band masks at 128 px."""
    import torch

    from facefix.geometry import FFHQ_TEMPLATE_512, crop_from_frame_matrix, warp_affine

    x = torch.from_numpy(np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2)))
    mats = np.stack([crop_from_frame_matrix(lm, S) for lm in clip.landmarks])
    crops = warp_affine(x, mats, (S, S), src_index=np.arange(len(x))).clamp(0, 1)
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    lm = FFHQ_TEMPLATE_512 / 4
    c, r = lm.mean(0), 1.6 * 0.9 * float(np.linalg.norm(lm[1] - lm[0]))
    face = (((xs - c[0]) / r) ** 2 + ((ys - c[1]) / (1.25 * r)) ** 2) < 1.0
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    eyes = ((xs > lm[:2, 0].min() - 0.5 * iod) & (xs < lm[:2, 0].max() + 0.5 * iod)
            & (ys > lm[:2, 1].min() - 0.25 * iod) & (ys < lm[:2, 1].max() + 0.25 * iod))
    return crops, torch.from_numpy(face.astype(np.float32)), torch.from_numpy(eyes.astype(np.float32))


def standin(crops):
    """The tests' stand-in for realesrgan-face (tests/temporal/conftest.py ``hallucinate``)."""
    sys.path.insert(0, str(ROOT / "tests" / "temporal"))
    from conftest import hallucinate

    return hallucinate(crops)


def restore(crops, restorer, device, timing):
    import torch

    if restorer == "standin":
        t0 = time.perf_counter()
        out = standin(crops)
        timing.append((time.perf_counter() - t0) / len(crops))
        return out
    from facefix.restore.realesrgan_face import load_realesrgan_face

    model = load_realesrgan_face(device)
    outs = []
    with torch.inference_mode():
        for c in crops:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs.append(model(c[None].to(device)).float().clamp(0, 1).cpu())
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            timing.append(time.perf_counter() - t0)
    return torch.cat(outs)


def stabilise(inputs, restored, strength):
    """The pipeline's way: one track through TrackHistory, each frame's window as soon as it is pushed."""
    import torch

    from facefix.temporal import (
        TrackHistory,
        preroll_frames,
        reduce_for_flow,
        stabilise_reduced,
        stack_windows,
    )

    hist = TrackHistory(preroll_frames(strength))
    reduced = reduce_for_flow(inputs)
    outs = []
    for f in range(len(inputs)):
        hist.push(0, f, reduced[f], restored[f])
        outs.append(stabilise_reduced(*stack_windows([hist.entries(0, f)]), strength)[0])
    return torch.stack(outs)


def lo(x):
    from facefix.temporal.flow import downsample

    return downsample(x, (128, 128))


def face_flicker(crops, face):
    from facefix.temporal import flicker

    return flicker(lo(crops), face.expand(len(crops), 1, 128, 128).contiguous())


def psnr(a, b, mask):
    m = mask.expand_as(a[:, :1]).expand_as(a)
    mse = float((((a - b) ** 2) * m).sum() / m.sum())
    return 10 * float(np.log10(1.0 / max(mse, 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--restorer", default="realesrgan-face", choices=("realesrgan-face", "standin"))
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--size", type=int, default=192, help="frame size (px, square)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--cache", type=Path, default=None, help="npz file: reuse / store the restored crops")
    args = ap.parse_args(argv)
    import torch

    from facefix.demo import synth

    torch.manual_seed(0)
    clips = {kind: synth.repair_clip(kind, args.frames, (args.size, args.size), seed=args.seed,
                                     scale=args.size / 160.0) for kind in ("boil", "clean")}
    timing: list[float] = []
    data = {}
    cached = dict(np.load(args.cache)) if args.cache is not None and args.cache.exists() else {}
    for kind, clip in clips.items():
        crops, face, eyes = aligned(clip)
        if f"{kind}_restored" in cached:
            restored = torch.from_numpy(cached[f"{kind}_restored"])
        else:
            restored = restore(crops, args.restorer, args.device, timing)
            cached[f"{kind}_restored"] = restored.numpy()
        data[kind] = (clip, crops, restored, face, eyes)
    if args.cache is not None:
        np.savez(args.cache, **cached)

    result: dict = {"device": args.device, "restorer": args.restorer, "seed": args.seed, "size": args.size,
                    "frames": args.frames,
                    "ms_per_face_restorer": 1000 * float(np.median(timing)) if timing else None}
    clip, crops, restored, face, eyes = data["boil"]
    result["flicker_input"] = face_flicker(crops, face)
    result["flicker_restored"] = face_flicker(restored, face)
    for s in args.strengths:
        t0 = time.perf_counter()
        out = stabilise(crops, restored, s)
        ms = 1000 * (time.perf_counter() - t0) / len(crops)
        row: dict = {"ms_per_face_stabiliser": ms}
        row["boil_flicker_before"] = result["flicker_restored"]
        row["boil_flicker_after"] = face_flicker(out, face)
        row["boil_lower_by"] = 1 - row["boil_flicker_after"] / row["boil_flicker_before"]
        cclip, ccrops, crest, cface, ceyes = data["clean"]
        cout = stabilise(ccrops, crest, s)
        row["clean_psnr_db"] = psnr(lo(cout), lo(crest), cface)
        row["clean_eye_psnr_db"] = psnr(lo(cout), lo(crest), ceyes)  # the blink spans the clip's frames 1..7
        row["clean_flicker_restored"] = face_flicker(crest, cface)
        row["clean_flicker_stabilised"] = face_flicker(cout, cface)
        result[f"temporal_{s:g}"] = row
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
