"""From per-frame scores to what a person decides on: flags, spans of flagged frames, a verdict per track and for
the shot, the reasons, and the ``facefix restore`` command whose repair controls fit what was found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .scores import KINDS

__all__ = ["Span", "flag_frames", "find_spans", "TrackVerdict", "track_verdict", "shot_verdict", "suggest_controls",
           "suggested_command", "VERDICTS", "COLLAPSE_SHARE", "UNUSABLE_SHARE"]

VERDICTS = ("clean", "restore", "regenerate")
# Identity has collapsed where drift is flagged on at least this share of a track's frames.
COLLAPSE_SHARE = 0.25
# A face is unusable where at least two kinds are flagged together on at least this share of its frames.
UNUSABLE_SHARE = 0.5


@dataclass(frozen=True)
class Span:
    kind: str
    first: int  # frame numbers, inclusive
    last: int
    severity: float  # the span's peak score over its threshold (>= 1)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "first": self.first, "last": self.last, "severity": round(self.severity, 2)}


def flag_frames(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per kind, (T,) bool: the score is above its threshold."""
    return {k: np.asarray(scores[k]) > thresholds[k] for k in KINDS if k in scores}


def find_spans(numbers: Sequence[int], scores: Mapping[str, np.ndarray], flags: Mapping[str, np.ndarray],
               thresholds: Mapping[str, float]) -> list[Span]:
    """Runs of consecutive flagged frames per kind (a frame missing from the track ends a run), in frame order."""
    spans = []
    for kind in KINDS:
        if kind not in flags:
            continue
        f, s = flags[kind], np.asarray(scores[kind])
        i = 0
        while i < len(numbers):
            if not f[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(numbers) and f[j + 1] and numbers[j + 1] == numbers[j] + 1:
                j += 1
            spans.append(Span(kind, int(numbers[i]), int(numbers[j]), float(s[i:j + 1].max() / thresholds[kind])))
            i = j + 1
    return sorted(spans, key=lambda sp: (sp.first, KINDS.index(sp.kind)))


@dataclass(frozen=True)
class TrackVerdict:
    verdict: str
    reasons: list[str]


def track_verdict(track_id: int, numbers: Sequence[int], flags: Mapping[str, np.ndarray], spans: Sequence[Span],
                  reference_frames: int) -> TrackVerdict:
    """``regenerate`` where the identity has collapsed (drift on ``COLLAPSE_SHARE`` of the frames past the
    reference) or the face is unusable (two or more kinds flagged together on ``UNUSABLE_SHARE`` of its frames);
    ``restore`` where anything is flagged; ``clean`` otherwise."""
    t = len(numbers)
    if t == 0:
        return TrackVerdict("clean", [])
    reasons = []
    verdict = "clean"
    drift = np.asarray(flags.get("drift", np.zeros(t, bool)))
    past = drift[reference_frames:] if t > reference_frames else drift
    share = float(past.mean()) if len(past) else 0.0
    if share >= COLLAPSE_SHARE:
        first = min(sp.first for sp in spans if sp.kind == "drift")
        verdict = "regenerate"
        reasons.append(f"track {track_id}: identity drifts away from its reference on {share:.0%} of the frames after "
                       f"it (from frame {first}); repair cannot bring a person back")
    together = np.sum([np.asarray(flags[k], int) for k in flags], axis=0) >= 2 if flags else np.zeros(t, bool)
    if float(np.mean(together)) >= UNUSABLE_SHARE:
        verdict = "regenerate"
        reasons.append(f"track {track_id}: two or more defects at once on {float(np.mean(together)):.0%} of its "
                       "frames: the face is unusable over most of the shot")
    for kind in KINDS:
        mine = [sp for sp in spans if sp.kind == kind]
        if not mine or (kind == "drift" and verdict == "regenerate"):
            continue
        n = int(np.sum(flags[kind]))
        peak = max(sp.severity for sp in mine)
        where = ", ".join(f"{sp.first}-{sp.last}" if sp.last > sp.first else f"{sp.first}" for sp in mine[:4])
        more = f" and {len(mine) - 4} more" if len(mine) > 4 else ""
        reasons.append(f"track {track_id}: {kind} on {n} of {t} frames ({where}{more}), up to {peak:.1f}x its "
                       "threshold")
        if verdict == "clean":
            verdict = "restore"
    return TrackVerdict(verdict, reasons)


def shot_verdict(verdicts: Sequence[TrackVerdict]) -> TrackVerdict:
    """The worst track's verdict, with every track's reasons."""
    if not verdicts:
        return TrackVerdict("clean", ["no face found"])
    worst = max((v.verdict for v in verdicts), key=VERDICTS.index)
    reasons = [r for v in verdicts for r in v.reasons]
    return TrackVerdict(worst, reasons or ["no defect passed its threshold on any track"])


def _strength(severity: float, share: float) -> float:
    """A repair control's value: 0.5 for a defect just past its threshold, up to 1 for a strong or lasting one,
    in quarters."""
    s = 0.5 + 0.25 * max(0.0, severity - 1.0) + 0.5 * share
    return float(min(1.0, round(s * 4) / 4))


def suggest_controls(spans_by_track: Sequence[Sequence[Span]], flags_by_track: Sequence[Mapping[str, np.ndarray]]
                     ) -> dict[str, float]:
    """The repair controls that fit what was found: boil -> --deboil, warp -> --dewarp, waxy -> --regrain."""
    control = {"boil": "deboil", "warp": "dewarp", "waxy": "regrain"}
    out: dict[str, float] = {}
    for kind, name in control.items():
        sev = [sp.severity for spans in spans_by_track for sp in spans if sp.kind == kind]
        if not sev:
            continue
        share = max(float(np.mean(f[kind])) for f in flags_by_track if kind in f and len(f[kind]))
        out[name] = _strength(max(sev), share)
    return out


def suggested_command(input_path: str, output_path: str, controls: Mapping[str, float], frames: str | None = None
                      ) -> str:
    """``facefix restore INPUT -o OUTPUT [--frames ...] [--deboil X] [--dewarp Y] [--regrain Z]``."""
    import shlex

    parts = ["facefix", "restore", shlex.quote(input_path), "-o", shlex.quote(output_path)]
    if frames:
        parts += ["--frames", shlex.quote(frames)]
    for name in ("deboil", "dewarp", "regrain"):
        if name in controls:
            parts += [f"--{name}", f"{controls[name]:g}"]
    return " ".join(parts)
