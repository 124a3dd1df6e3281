#!/usr/bin/env python3
"""Diagnose accuracy, measured against ground truth: clips of a real face (``facefix.diagnose.clips``: the repair
clips of ``facefix.demo.synth`` with motion, a blink and speech, and identity drift toward a second real person)
with defects injected on known frames, through the same analysis as ``facefix diagnose`` (the embedded detector
and tracker, then the scores). Prints one JSON object and writes it to benchmarks/results/diagnose_accuracy_cpu.json
(with ``--write``).

  python benchmarks/diagnose_accuracy.py --write                 # CPU, held-out seeds 101-103
  python benchmarks/diagnose_accuracy.py --seeds 1 2 3 --raw dev.json   # development seeds: raw scores to calibrate

Figures:
  * recall per defect: share of the defect frames whose expected flag is set (ghost and boil -> boil; warp ->
    warp; waxy -> waxy; drift -> drift, defect frames = blend toward the other person >= 50 %);
  * false-flag rate: share of the clean clips' frames (motion, a blink, speech-like mouth motion) with any flag;
  * the same for ``truth`` tracks (the clips' true 468-point mesh, as ``--tracks`` from a tracker that follows the
    features would give): warp is reported on both (the detector's mesh does not follow a local warp of a few
    pixels, so there the flow part of the warp score finds it);
  * seconds per frame on --device: the analysis pass (detection, tracking) and the diagnosis pass (samples,
    scores).

Thresholds were calibrated on development seeds (1-3; the warp score's flow part on 1-6,
``facefix.diagnose.scores.THRESHOLDS``); the default seeds 101-103 are held out.
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

KINDS = ("clean", "ghost", "warp", "boil", "waxy", "drift")


def measure(kind: str, seed: int, size: int, frames: int, device: str, truth: bool) -> dict:
    from facefix.analyse import track_clip
    from facefix.diagnose.clips import DEFECT_FLAG, ArraySource, defect_clip
    from facefix.diagnose.run import diagnose_tracks
    from facefix.diagnose.scores import KINDS as SCORE_KINDS
    from facefix.params import Settings

    n = frames if kind != "drift" else max(frames, 40)
    clip = defect_clip(kind, n, (size, size), seed=seed)
    src = ArraySource(clip.frames)
    t0 = time.perf_counter()
    if truth:
        tracks = clip.truth_tracks()
    else:
        tracks = track_clip(src, src.frame_numbers, Settings.from_mapping({"colorspace": "srgb", "device": device}),
                            device=device, progress=False)
    t1 = time.perf_counter()
    d = diagnose_tracks(lambda: ((i, clip.frames[i]) for i in range(n)), tracks, input_label=f"{kind}-{seed}",
                        numbers=list(range(n)), device=device)
    t2 = time.perf_counter()
    row: dict = {"kind": kind, "seed": seed, "tracks": "truth" if truth else "detected", "frames": n,
                 "s_per_frame_analysis": (t1 - t0) / n, "s_per_frame_diagnose": (t2 - t1) / n,
                 "verdict": d.verdict}
    if not d.tracks:
        row.update({"found": False, "flags": [[] for _ in range(n)]})
        return row
    # One face per clip: a frame's flags and scores are those of every track on it (a face whose appearance
    # changes a lot may continue on a new track).
    at = [[(t, t.numbers.index(m)) for t in d.tracks if m in t.numbers] for m in range(n)]
    flags = [[k for k in SCORE_KINDS if any(bool(t.flags[k][i]) for t, i in at[m])] for m in range(n)]
    row["found"] = True
    row["tracks_found"] = len(d.tracks)
    row["flags"] = flags
    row["scores"] = {k: [round(max(float(t.scores[k][i]) for t, i in at[m]), 4) if at[m] else None
                         for m in range(n)] for k in SCORE_KINDS}
    row["defect"] = [bool(v) for v in clip.defect]
    row["ignore"] = [bool(v) for v in clip.ignore]
    row["thresholds"] = d.thresholds
    if kind != "clean":
        want = DEFECT_FLAG[kind]
        hits = [want in flags[m] for m in range(n) if clip.defect[m]]
        row["recall"] = float(np.mean(hits)) if hits else None
    else:
        row["flagged_share"] = float(np.mean([bool(f) for f in flags]))
    return row


def rescore(rows: list[dict], thresholds: dict[str, float]) -> list[dict]:
    """The rows' flags, recall and verdicts again from their recorded per-frame scores, with ``thresholds`` (the
    drift threshold stays the identity model's, as recorded)."""
    from facefix.diagnose import verdict as vd
    from facefix.diagnose.clips import DEFECT_FLAG
    from facefix.diagnose.scores import KINDS as SCORE_KINDS

    out = []
    for r in rows:
        r = dict(r)
        if not r.get("found"):
            out.append(r)
            continue
        th = dict(thresholds, drift=r["thresholds"]["drift"])
        n = r["frames"]
        sc = {k: np.array([0.0 if v is None else v for v in r["scores"][k]]) for k in SCORE_KINDS}
        flags = vd.flag_frames(sc, th)
        r["flags"] = [[k for k in SCORE_KINDS if flags[k][m]] for m in range(n)]
        spans = vd.find_spans(list(range(n)), sc, flags, th)
        r["verdict"] = vd.track_verdict(0, list(range(n)), flags, spans, min(24, n // 2)).verdict
        r["thresholds"] = th
        if r["kind"] != "clean":
            hits = [DEFECT_FLAG[r["kind"]] in r["flags"][m] for m in range(n) if r["defect"][m]]
            r["recall"] = float(np.mean(hits)) if hits else None
        else:
            r["flagged_share"] = float(np.mean([bool(f) for f in r["flags"]]))
        out.append(r)
    return out


def summarise(rows: list[dict]) -> dict:
    from facefix.diagnose.clips import DEFECT_FLAG

    out: dict = {}
    for tracks in ("detected", "truth"):
        sel = [r for r in rows if r["tracks"] == tracks]
        if not sel:
            continue
        s: dict = {}
        for kind in KINDS[1:]:
            got = [DEFECT_FLAG[kind] in r["flags"][m] for r in sel if r["kind"] == kind and r.get("found")
                   for m, h in enumerate(r["defect"]) if h]
            if got:
                s[f"recall_{kind}"] = float(np.mean(got))
        outside = [bool(r["flags"][m]) for r in sel if r["kind"] != "clean" and r.get("found")
                   for m in range(r["frames"]) if not r["defect"][m] and not r["ignore"][m]]
        if outside:
            # The defect clips' other frames: flags there are mostly a defect's neighbours (a 3-frame ghost sways
            # the window of the frames next to it) and a drift's onset.
            s["flagged_share_defect_clips_outside_defect"] = float(np.mean(outside))
        clean = [bool(f) for r in sel if r["kind"] == "clean" for f in r["flags"]]
        if clean:
            s["false_flag_rate_clean"] = float(np.mean(clean))
            s["clean_frames"] = len(clean)
        s["s_per_frame_analysis"] = float(np.median([r["s_per_frame_analysis"] for r in sel]))
        s["s_per_frame_diagnose"] = float(np.median([r["s_per_frame_diagnose"] for r in sel]))
        s["verdicts"] = {k: sorted({r["verdict"] for r in sel if r["kind"] == k}) for k in KINDS
                         if any(r["kind"] == k for r in sel)}
        out[tracks] = s
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--truth-kinds", nargs="*", default=["clean", "warp"], choices=KINDS,
                    help="kinds also run on the clips' true tracks (default: clean, warp)")
    ap.add_argument("--size", type=int, default=192, help="frame size (px, square)")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip (drift clips: at least 40)")
    ap.add_argument("--raw", help="also write every clip's per-frame scores here (JSON)")
    ap.add_argument("--rescore", metavar="RAW", help="no clips: flags, recall and verdicts again from a --raw file's "
                    "scores with the current thresholds")
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/diagnose_accuracy_cpu.json")
    args = ap.parse_args(argv)
    import torch

    torch.manual_seed(0)
    rows: list[dict] = []
    if args.rescore:
        from facefix.diagnose.scores import THRESHOLDS as CURRENT

        raw = json.loads(Path(args.rescore).read_text())
        rows = rescore(raw, CURRENT)
        args.seeds = sorted({r["seed"] for r in rows})
        args.kinds = []
    for kind in args.kinds:
        for seed in args.seeds:
            rows.append(measure(kind, seed, args.size, args.frames, args.device, False))
            print(f"{kind} {seed} detected: {rows[-1].get('recall', rows[-1].get('flagged_share'))}", file=sys.stderr)
            if kind in args.truth_kinds:
                rows.append(measure(kind, seed, args.size, args.frames, args.device, True))
                print(f"{kind} {seed} truth: {rows[-1].get('recall', rows[-1].get('flagged_share'))}", file=sys.stderr)
    from facefix.diagnose.scores import THRESHOLDS

    result = {"device": args.device, "seeds": args.seeds, "size": args.size, "frames": args.frames,
              "thresholds": rows[0].get("thresholds", THRESHOLDS) if rows else THRESHOLDS,
              "summary": summarise(rows),
              "clips": [{k: v for k, v in r.items() if k not in ("flags", "scores", "defect", "ignore", "thresholds")}
                        for r in rows]}
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.raw:
        Path(args.raw).write_text(json.dumps(rows, default=float))
    if args.write:
        out = ROOT / "benchmarks" / "results" / "diagnose_accuracy_cpu.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
