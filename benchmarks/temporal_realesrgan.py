#!/usr/bin/env python3
"""The temporal stabiliser on real restorer output: ``realesrgan-face`` (the embedded restorer, Real-ESRGAN x4plus
on the 4x-reduced aligned face) on close-ups of the bundled real face (``facefix.demo.synth.repair_clip``), in
aligned (512 template) space, the way the pipeline's temporal stage sees them. Prints one JSON object.

  python benchmarks/temporal_realesrgan.py                      # CPU, 8 frames at 192 px, seed 101
  python benchmarks/temporal_realesrgan.py --seeds 101 102 103 --deboil 1 --cache-dir /tmp/tr \\
      --out benchmarks/results/temporal_realesrgan_cpu.json     # the evaluation seeds, with the de-boil chain
  python benchmarks/temporal_realesrgan.py --restorer standin   # the tests' cheap stand-in (no weights)

Figures, per strength (``--temporal``):
  * boil (the input boils: per-frame independent texture on the face): flicker of the restored crops without and
    with stabilisation (``temporal.flicker`` on the 128 px reduction, inside the face ellipse), and how much lower;
    ``boil_excess_lower_by``: how much lower the boil's own flicker is, what lies above the restorer's output of
    the boil-free clip (``clean_flicker_restored``: its motion, blink and speech, which stabilising must keep);
  * clean (motion, a blink, speech-like mouth motion, no boil): PSNR of the stabilised crops against the
    unstabilised ones inside the face ellipse (what stabilisation costs real motion), and the same on the eye band
    (with 8 frames the blink spans frames 1..7: a smeared blink shows there first);
  * boil_eye_error_ratio_max: the boil clip's eye band against the restorer's output of the boil-free clip, per
    frame, stabilised over unstabilised, the worst frame (a blink smeared under boil raises it above 1);
  * ms_per_face: the restorer's time per face on --device (the median; timed on two faces of a seed whose
    restored crops all came from the cache), and the stabiliser's.
  * with --deboil A, the chain a user runs on a boiling close-up: the input crops through the repair stage
    (``facefix.repair.ClipRepairer`` at --deboil A, the clip's true tracks), the restorer, then --temporal (0 and
    each strength): boil flicker and how much lower than the restorer alone; clean PSNR (face, eye band) against
    the restorer alone on the clean clip. ``deboil_version`` is the git blob id of the de-boil stage measured.
Seeds run one after another; each prints its figures to stderr as it finishes; ``mean`` averages them. The
development seeds were 1-3; the evaluation seeds are 101-103.
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


def deboil(clip, crops, amount):
    """The input crops through the pipeline's repair stage (``facefix.repair.ClipRepairer``, ``--deboil amount``),
    given the clip's true tracks (landmarks and mesh, as ``--tracks`` would give them): what the restorer sees."""
    from facefix.demo.synth import truth_tracks
    from facefix.faces import FaceBatch
    from facefix.params import Settings
    from facefix.repair import DEBOIL_WINDOW, ClipRepairer

    tracks = truth_tracks(clip.landmarks, clip.mesh)
    faces = [tracks.faces_at(f) for f in range(len(crops))]
    settings = Settings.from_mapping({"model": "passthrough", "deboil": amount})
    # One call holds every frame: a frame's result depends only on frames t-3..t+3 of its track, so this is what
    # any batching gives (the clip's last frames lack their following ones, as at a track's end).
    repairer = ClipRepairer(DEBOIL_WINDOW)
    return repairer.repair(FaceBatch.build(faces, S), list(range(len(crops))), crops, [settings] * len(crops),
                           len(crops))


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


def eye_error(crops, reference, eyes):
    """(T,) mean absolute difference from ``reference`` in the eye band, per frame, at 128 px."""
    d = (lo(crops) - lo(reference)).abs().mean(1, keepdim=True)
    return (d * eyes).sum((1, 2, 3)) / eyes.sum()


def psnr(a, b, mask):
    m = mask.expand_as(a[:, :1]).expand_as(a)
    mse = float((((a - b) ** 2) * m).sum() / m.sum())
    return 10 * float(np.log10(1.0 / max(mse, 1e-12)))


def boil_excess_lower_by(after: float, result: dict) -> float:
    """How much of the boil's own flicker goes: the flicker above the restorer's output of the boil-free clip (its
    motion, blink and speech, and the restorer's own flicker on it), before and after."""
    floor = result["clean_flicker_restored"]
    return 1 - (after - floor) / (result["flicker_restored"] - floor)


def measure_seed(args, seed, cache_path):
    """One seed's figures (a dict); restored crops are reused from / stored in ``cache_path`` (npz) if given."""
    import torch

    from facefix.demo import synth

    torch.manual_seed(0)
    clips = {kind: synth.repair_clip(kind, args.frames, (args.size, args.size), seed=seed,
                                     scale=args.size / 160.0) for kind in ("boil", "clean")}
    timing: list[float] = []
    deboil_timing: list[float] = []
    cached = dict(np.load(cache_path)) if cache_path is not None and cache_path.exists() else {}
    tag = f"deboil{args.deboil:g}_"
    version = _deboil_version() or "unknown"
    if args.deboil > 0 and str(cached.get(tag + "version", "")) != version:
        # Crops de-boiled by another version of the stage are not this version's figures: redo them.
        cached = {k: v for k, v in cached.items() if not k.startswith(tag)}
    data = {}
    for kind, clip in clips.items():
        crops, face, eyes = aligned(clip)
        variants = {"": crops}
        if args.deboil > 0:
            t0 = time.perf_counter()
            variants[tag] = deboil(clip, crops, args.deboil)
            deboil_timing.append((time.perf_counter() - t0) / len(crops))
            cached[tag + "version"] = np.array(version)
        for prefix, ins in variants.items():
            key = f"{prefix}{kind}_restored"
            if key in cached:
                restored = torch.from_numpy(cached[key])
            else:
                restored = restore(ins, args.restorer, args.device, timing)
                cached[key] = restored.numpy()
                if cache_path is not None:  # after each restoration: an interrupted run keeps what it paid for
                    np.savez(cache_path, **cached)
            data[prefix + kind] = (ins, restored, face, eyes)

    if not timing:  # every restoration came from the cache: time the restorer on two faces of this seed
        restore(data["boil"][0][:2], args.restorer, args.device, timing)
    result: dict = {"seed": seed, "deboil_version": version if args.deboil > 0 else None,
                    "ms_per_face_restorer": 1000 * float(np.median(timing)) if timing else None}
    crops, restored, face, eyes = data["boil"]
    _, crest, cface, ceyes = data["clean"]
    result["flicker_input"] = face_flicker(crops, face)
    result["flicker_restored"] = face_flicker(restored, face)
    result["clean_flicker_restored"] = face_flicker(crest, cface)
    for s in args.strengths:
        t0 = time.perf_counter()
        out = stabilise(crops, restored, s)
        ms = 1000 * (time.perf_counter() - t0) / len(crops)
        row: dict = {"ms_per_face_stabiliser": ms}
        row["boil_flicker_before"] = result["flicker_restored"]
        row["boil_flicker_after"] = face_flicker(out, face)
        row["boil_lower_by"] = 1 - row["boil_flicker_after"] / row["boil_flicker_before"]
        row["boil_excess_lower_by"] = boil_excess_lower_by(row["boil_flicker_after"], result)
        # A blink smeared under boil: the eye band against the restorer's output of the boil-free clip, frame by
        # frame, stabilised over unstabilised (above 1 on a frame: stabilising moved it away from the boil-free eye).
        row["boil_eye_error_ratio_max"] = float((eye_error(out, crest, eyes) / eye_error(restored, crest, eyes)).max())
        cout = stabilise(data["clean"][0], crest, s)
        row["clean_psnr_db"] = psnr(lo(cout), lo(crest), cface)
        row["clean_eye_psnr_db"] = psnr(lo(cout), lo(crest), ceyes)  # the blink spans the clip's frames 1..7
        row["clean_flicker_stabilised"] = face_flicker(cout, cface)
        result[f"temporal_{s:g}"] = row
    if args.deboil > 0:
        # What a user does with a boiling close-up: --deboil on the input, the restorer, then --temporal. Compared
        # with the restorer alone on the same clip (boil: flicker; clean: what the whole chain costs a clip
        # that needs none, against the restorer alone on it).
        dcrops, drest, _, _ = data[tag + "boil"]
        dccrops, dcrest, _, _ = data[tag + "clean"]
        chain: dict = {"ms_per_face_deboil": 1000 * float(np.mean(deboil_timing))}
        for s in [0.0, *args.strengths]:
            out = stabilise(dcrops, drest, s)
            cout = stabilise(dccrops, dcrest, s)
            after = face_flicker(out, face)
            chain[f"temporal_{s:g}"] = {
                "boil_flicker_after": after,
                "boil_lower_by": 1 - after / result["flicker_restored"],
                "boil_excess_lower_by": boil_excess_lower_by(after, result),
                "clean_psnr_db": psnr(lo(cout), lo(crest), cface),
                "clean_eye_psnr_db": psnr(lo(cout), lo(crest), ceyes),
            }
        result[f"deboil_{args.deboil:g}"] = chain
    return result


def _mean_rows(rows: list[dict]) -> dict:
    """Per-key mean of the seeds' numeric figures (nested dicts alike)."""
    out: dict = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = _mean_rows([r[key] for r in rows])
        elif key != "seed":
            got = [r[key] for r in rows if isinstance(r.get(key), (int, float))]  # a seed all from the cache: None
            out[key] = float(np.mean(got)) if got else None
    return out


def _deboil_version() -> str | None:
    """The git blob id of the de-boil stage measured (its figures move with it), or None outside a checkout."""
    import subprocess

    try:
        got = subprocess.run(["git", "hash-object", "core/facefix/repair/deboil.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return got.stdout.strip() or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--restorer", default="realesrgan-face", choices=("realesrgan-face", "standin"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[101], help="run one after another")
    ap.add_argument("--size", type=int, default=192, help="frame size (px, square)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--deboil", type=float, default=0.0,
                    help="also measure the input through --deboil at this amount before the restorer (0: not)")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="folder of seed<N>.npz files: reuse / store the restored crops")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.deboil <= 1.0:
        ap.error(f"--deboil: {args.deboil!r} is outside 0..1")
    if args.cache_dir is not None:
        args.cache_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in args.seeds:
        cache = None if args.cache_dir is None else args.cache_dir / f"seed{seed}.npz"
        rows.append(measure_seed(args, seed, cache))
        print(json.dumps(rows[-1], default=float), file=sys.stderr, flush=True)
    result = {"device": args.device, "restorer": args.restorer, "size": args.size, "frames": args.frames,
              "deboil": args.deboil,
              "seeds": rows, "mean": _mean_rows(rows)}
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out is not None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
