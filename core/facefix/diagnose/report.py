"""The diagnosis of a shot (``Diagnosis``) and its JSON form, ``facefix.Diagnosis.1``:

    {"version": "facefix.Diagnosis.1", "input": str, "frames": [first, last],
     "scores": {kind: {"unit": str, "threshold": float}},          # what each score means, its flag's threshold
     "tracks": [{"id": int,
                 "frames": [{"frame": int, "scores": {"warp", "boil", "waxy", "drift"}, "flags": [kind, ...]}],
                 "spans": [{"kind", "first", "last", "severity"}],  # severity: peak score / threshold
                 "identity": {"descriptor", "reference": "first second" | path, "reference_frames": [first, last],
                              "drift_threshold", "median_drift", "max_drift"},
                 "verdict", "reasons": [...]}],
     "hands": [...], "hands_note": str (only where hands were not analysed),
     "verdict": "clean" | "restore" | "regenerate", "reasons": [...], "suggested": "facefix restore ...",
     "controls": {"deboil"?, "dewarp"?, "regrain"?}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .scores import KINDS, SCORES
from .verdict import Span

__all__ = ["VERSION", "TrackDiagnosis", "Diagnosis", "write_json", "load_json"]

VERSION = "facefix.Diagnosis.1"


@dataclass
class TrackDiagnosis:
    id: int
    numbers: list[int]
    scores: dict[str, np.ndarray]  # kind -> (T,)
    flags: dict[str, np.ndarray]  # kind -> (T,) bool
    spans: list[Span]
    identity: dict[str, Any]
    verdict: str
    reasons: list[str]

    def worst_frames(self, thresholds: dict[str, float], count: int = 3) -> list[int]:
        """Frame numbers of up to ``count`` flagged frames with the highest score over threshold, at least 4 frames
        apart (so the thumbnails show different moments); where the identity drifted so far that the track is to be
        regenerated, its drift comes first."""
        if not self.numbers:
            return []
        first = "drift" if self.verdict == "regenerate" and bool(np.any(self.flags["drift"])) else None
        ratio = np.max(np.stack([self.scores[k] / thresholds[k] * (4.0 if k == first else 1.0) for k in KINDS]),
                       axis=0)
        picked: list[int] = []
        for i in np.argsort(-ratio, kind="stable"):
            if ratio[i] <= 1.0 or len(picked) >= count:
                break
            n = self.numbers[int(i)]
            if all(abs(n - p) >= 4 for p in picked):
                picked.append(n)
        return sorted(picked)

    def to_json(self) -> dict[str, Any]:
        frames = []
        for i, n in enumerate(self.numbers):
            frames.append({"frame": int(n),
                           "scores": {k: round(float(self.scores[k][i]), 4) for k in KINDS},
                           "flags": [k for k in KINDS if bool(self.flags[k][i])]})
        return {"id": int(self.id), "frames": frames, "spans": [s.to_json() for s in self.spans],
                "identity": self.identity, "verdict": self.verdict, "reasons": list(self.reasons)}


@dataclass
class Diagnosis:
    input: str
    frames: list[int]  # [first, last] of the frames read
    tracks: list[TrackDiagnosis]
    thresholds: dict[str, float]
    verdict: str
    reasons: list[str]
    suggested: str
    controls: dict[str, float]
    hands: list[Any] = field(default_factory=list)
    hands_note: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": VERSION, "input": self.input, "frames": list(self.frames),
            "scores": {k: {"unit": SCORES[k], "threshold": self.thresholds[k]} for k in KINDS},
            "tracks": [t.to_json() for t in self.tracks], "hands": list(self.hands),
        }
        if self.hands_note:
            out["hands_note"] = self.hands_note
        out.update({"verdict": self.verdict, "reasons": list(self.reasons), "suggested": self.suggested,
                    "controls": dict(self.controls)})
        return out

    def line(self) -> str:
        n = sum(len(t.numbers) for t in self.tracks)
        return (f"{self.verdict}: {len(self.tracks)} tracks, {n} faces over {self.frames[1] - self.frames[0] + 1 if self.frames else 0}"
                f" frames in {self.seconds:.1f} s; suggested: {self.suggested}")


def write_json(diagnosis: Diagnosis, path: str | Path) -> None:
    """Write the report atomically (temp file, then rename)."""
    from ..io.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(diagnosis.to_json(), indent=1) + "\n")


def load_json(path: str | Path) -> dict[str, Any]:
    """A ``facefix.Diagnosis.1`` report as a dict (a one-line InputError for anything else)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the diagnosis ({err})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise InputError(f"{path}: not a {VERSION} report")
    return data
