#!/usr/bin/env python3
"""Repair quality, measured against ground truth: defect clips of a real face (``facefix.demo.synth.repair_clip``)
through the pipeline with the ``passthrough`` restorer (so what is measured is the repair alone), in frame space,
inside the face matte. Prints one JSON object.

  python benchmarks/repair_quality.py                       # CPU, the evaluation seeds
  python benchmarks/repair_quality.py --device cuda --seeds 101 102 103 104
  python benchmarks/repair_quality.py --control dewarp          # de-warp: the warp and clean clips
  python benchmarks/repair_quality.py --control all --size 384  # clean clips, every repair control at 1
  python benchmarks/repair_quality.py --timing --device cuda    # ms per face of each repair, synchronised

Figures (per clip kind, before = the input, after = the output with the repair control at 1; ``--control``:
deboil (default: every kind), dewarp (default: warp and clean; the clips' mesh follows the warp as a tracker
would, but not the blinks or speech) or all (deboil, dewarp and regrain at 1; default: clean)):
  * ghost, warp: mean absolute error against the clean clip on the defect frames (lower is better);
  * boil: flicker of the face (motion removed on the true landmarks; ``temporal.flicker``), the clean clip's own
    flicker given as the floor, and (``--control deboil``) the flicker when the repair returns each frame's clean
    crop exactly (``flicker_crop_truth``: the most a repair of the crops reaches once pasted back); and the boil's
    own flicker, what lies above the clean clip's (its motion, blink and speech flicker, which a repair must
    keep), before and after (``boil_excess_lower_by``: the figure held to the 50 % target);
  * clean (motion, a blink, speech-like mouth motion, no defect): PSNR of the output against its input (every
    repair control at 1: what a repair costs a clip that needs none);
  * ms_per_face: the repair stage's time per face on --device (synchronised), per control.

The evaluation seeds (101..) are not the ones the method was developed on (1-3, 11-15, 21: tests and trials).
Only one real face ships (the bundled portrait), so clips vary its scale, motion, expression timing and the
defect's place, direction and frames instead.
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

KINDS = ("ghost", "warp", "boil", "clean")
CONTROLS = ("deboil", "dewarp", "regrain")


def _faces(clip, first):
    from facefix.demo.synth import truth_tracks

    return truth_tracks(clip.landmarks, clip.mesh, first)


def _restore(clip, settings, device, timings):
    """Every frame of ``clip`` through a Session, a batch of 4 at a time with its look-ahead; (images, mattes)."""
    import torch

    from facefix.api import Session

    tracks = _faces(clip, 0)
    frames = list(clip.frames)
    with Session({**settings, "device": device}) as session:
        look = session.lookahead
        session._repairer = None  # made by the first call; wrapped below to time it
        out, mattes = [], []
        for start in range(0, len(frames), 4):
            group = list(range(start, min(len(frames), start + 4 + look)))
            own = [n for n in group if n < start + 4]
            if look and session._repairer is None:
                from facefix.repair import ClipRepairer

                session._repairer = ClipRepairer(look)
                inner = session._repairer.repair

                def timed(*a, inner=inner, **kw):
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    res = inner(*a, **kw)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    timings.append((time.perf_counter() - t0, a[4]))
                    return res
                session._repairer.repair = timed
            for got in session.restore([frames[n] for n in group], tracks, group, lookahead=len(group) - len(own),
                                       colorspace="srgb"):
                out.append(got.image)
                mattes.append(got.matte)
    return np.stack(out), np.stack(mattes)


def _face_flicker(frames, landmarks, mattes):
    import torch

    from facefix.geometry import crop_from_frame_matrix, warp_affine
    from facefix.temporal import flicker

    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    a = torch.from_numpy(np.ascontiguousarray(mattes[:, None]))
    mats = np.stack([crop_from_frame_matrix(lm, 128) for lm in landmarks])
    idx = np.arange(len(x))
    crops = warp_affine(x, mats, (128, 128), src_index=idx)
    mask = (warp_affine(a, mats, (128, 128), src_index=idx) > 0.999).float()
    return flicker(crops, mask)


def _truth_flicker(clip, settings, device):
    """Flicker of a boil clip whose repair returns each frame's CLEAN crop exactly: the most a de-boil of the crops
    can reach once its correction is pasted back (the paste resamples the crop to the frame, so the part of the
    boil at the frame's own pixel scale stays)."""
    import torch

    import facefix.repair.stage as stage
    from facefix.geometry import crop_from_frame_matrix, warp_affine

    def crops(frames, size):
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        mats = np.stack([crop_from_frame_matrix(lm, size) for lm in clip.landmarks])
        return warp_affine(x, mats, (size, size), src_index=np.arange(len(x)))

    made = {}

    def clean_crops(reduced, full, valid, amount, points=None):
        size = int(full.shape[-1])
        if size not in made:
            made[size] = (crops(clip.frames, size).to(full), crops(clip.clean, size).to(full))
        given, truth = made[size]
        current = full[:, full.shape[1] // 2]  # which frame: the input crop it is
        return truth[(current[:, None] - given[None]).abs().mean((2, 3, 4)).argmin(1)]

    inner = stage.deboil_window
    stage.deboil_window = clean_crops
    try:
        out, mattes = _restore(clip, settings, device, [])
    finally:
        stage.deboil_window = inner
    return _face_flicker(out, clip.landmarks, mattes)


def measure(kind, seed, device, control, size, frames):
    from facefix.demo import synth

    clip = synth.repair_clip(kind, frames, (size, size), seed=seed, scale=size / 160.0)
    timings: list = []
    base = {"model": "passthrough", "temporal": 0.0, "mask": "mesh", "colorspace": "srgb"}
    controls = CONTROLS if control == "all" else (control,)
    out, mattes = _restore(clip, {**base, **dict.fromkeys(controls, 1.0)}, device, timings)
    inside = mattes > 0.5
    row = {"kind": kind, "seed": seed, "control": control}
    if kind in ("ghost", "warp"):
        d = clip.defect
        m = inside[d][..., None].repeat(3, -1)
        row["error_before"] = float(np.abs(clip.frames[d] - clip.clean[d])[m].mean())
        row["error_after"] = float(np.abs(out[d] - clip.clean[d])[m].mean())
    elif kind == "boil":
        row["flicker_before"] = _face_flicker(clip.frames, clip.landmarks, mattes)
        row["flicker_after"] = _face_flicker(out, clip.landmarks, mattes)
        row["flicker_clean"] = _face_flicker(clip.clean, clip.landmarks, mattes)
        if control == "deboil":
            row["flicker_crop_truth"] = _truth_flicker(clip, {**base, control: 1.0}, device)
    else:
        m = inside[..., None].repeat(3, -1)
        mse = float(((out - clip.frames) ** 2)[m].mean())
        row["psnr_vs_input_db"] = 10 * np.log10(1.0 / max(mse, 1e-12))
    faces = sum(c for _, c in timings)
    row["ms_per_face"] = 1000 * sum(t for t, _ in timings) / max(1, faces)
    return row


def timing(device, batch, repeats, seed=1):
    """ms per face of ``deboil_window`` and ``dewarp_crops`` alone on ``device``: ``batch`` faces' windows of 512 px
    crops of a ghost clip (so the anchored path runs too), each timed ``repeats`` times after a warm-up, the
    device synchronised around each call; the median call over the faces of a batch."""
    import torch

    from facefix.demo import synth
    from facefix.geometry import crop_from_frame_matrix, transform_points, warp_affine
    from facefix.repair import DEBOIL_WINDOW, deboil_window
    from facefix.repair.dewarp import dewarp_crops
    from facefix.temporal.stabilise import reduce_for_flow

    k, size = DEBOIL_WINDOW, 512
    clip = synth.repair_clip("ghost", 2 * k + 1, (384, 384), seed=seed, scale=384 / 160.0, at=k - 1)
    mats = np.stack([crop_from_frame_matrix(lm, size) for lm in clip.landmarks])
    x = torch.from_numpy(np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2)))
    crops = warp_affine(x, mats, (size, size), src_index=np.arange(len(x))).to(device)
    points = np.stack([transform_points(m, mesh) for m, mesh in zip(mats, clip.mesh)])  # (2K+1, 468, 2)
    full = crops[None].expand(batch, -1, -1, -1, -1).contiguous()
    lo = reduce_for_flow(crops)[None].expand(batch, -1, -1, -1, -1).contiguous()
    valid = torch.ones(batch, 2 * k + 1, dtype=torch.bool, device=device)
    amount = torch.ones(batch, device=device)
    pts = torch.as_tensor(points, dtype=torch.float32, device=device)[None].expand(batch, -1, -1, -1).contiguous()
    current = crops[k:k + 1].expand(batch, -1, -1, -1).contiguous()
    calls = {
        "deboil": lambda: deboil_window(lo, full, valid, amount, pts),
        "dewarp": lambda: dewarp_crops(current, [points] * batch, [np.ones(2 * k + 1, bool)] * batch, amount,
                                       [True] * batch),
    }

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    out = {}
    with torch.inference_mode():
        for name, call in calls.items():
            call()  # warm-up: kernels, caches
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                call()
                sync()
                times.append(time.perf_counter() - t0)
            out[name] = 1000 * float(np.median(times)) / batch
    return {"device": str(device), "batch": batch, "repeats": repeats, "crop": size, "window": 2 * k + 1,
            "ms_per_face": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--control", default="deboil", choices=(*CONTROLS[:2], "all"))
    ap.add_argument("--kinds", nargs="+", default=None, choices=KINDS,
                    help="clip kinds (default: all for deboil, warp and clean for dewarp)")
    ap.add_argument("--size", type=int, default=192, help="frame size (px, square)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--timing", action="store_true",
                    help="time deboil and dewarp alone on --device (ms per face; no quality figures)")
    ap.add_argument("--batch", type=int, default=8, help="--timing: faces per call")
    ap.add_argument("--repeats", type=int, default=20, help="--timing: timed calls per repair")
    args = ap.parse_args(argv)
    if args.timing:
        print(json.dumps(timing(args.device, args.batch, args.repeats), indent=1))
        return 0
    if args.kinds is None:
        args.kinds = {"deboil": list(KINDS), "dewarp": ["warp", "clean"], "all": ["clean"]}[args.control]
    import torch

    torch.manual_seed(0)
    rows = [measure(kind, seed, args.device, args.control, args.size, args.frames) for kind in args.kinds
            for seed in args.seeds]
    summary: dict = {}
    for kind in args.kinds:
        sel = [r for r in rows if r["kind"] == kind]
        if kind in ("ghost", "warp"):
            b, a = np.mean([r["error_before"] for r in sel]), np.mean([r["error_after"] for r in sel])
            summary[kind] = {"error_before": b, "error_after": a, "lower_by": 1 - a / b}
        elif kind == "boil":
            b, a = np.mean([r["flicker_before"] for r in sel]), np.mean([r["flicker_after"] for r in sel])
            summary[kind] = {"flicker_before": b, "flicker_after": a, "lower_by": 1 - a / b,
                             "flicker_clean": np.mean([r["flicker_clean"] for r in sel])}
            c = summary[kind]["flicker_clean"]
            summary[kind]["boil_excess_lower_by"] = 1 - (a - c) / (b - c)
            if all("flicker_crop_truth" in r for r in sel):
                truth = np.mean([r["flicker_crop_truth"] for r in sel])
                summary[kind].update(flicker_crop_truth=truth, crop_truth_lower_by=1 - truth / b)
        else:
            summary[kind] = {"psnr_vs_input_db_min": min(r["psnr_vs_input_db"] for r in sel),
                             "psnr_vs_input_db_mean": float(np.mean([r["psnr_vs_input_db"] for r in sel]))}
    ms = [r["ms_per_face"] for r in rows if r["ms_per_face"] > 0]
    result = {"device": args.device, "control": args.control, "seeds": args.seeds, "size": args.size,
              "frames": args.frames, "ms_per_face": {args.control: float(np.median(ms)) if ms else None}, "summary": summary, "clips": rows}
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
