"""Hand diagnosis of a shot: find hands, score their anatomy and stability, merge flagged frames into spans.

FaceFix diagnoses hands; it does not repair them. Scores (per hand per frame, higher is worse; a frame
is flagged for a kind when its score reaches the threshold; a span's severity is its peak score divided
by the threshold, so >= 1):

=================  ==============================================================  =========
kind               score (unit)                                                    threshold
=================  ==============================================================  =========
low_presence       1 - the landmark model's hand presence (probability)            0.3
finger_length      max over fingers of |ln(chain length / typical)| (palm-size     0.6
                   ratio; 0.69 = half or twice the usual length)
missing_fingers    fingers missing from the count of 5: collapsed chains (shorter   1
                   than 0.45x typical), fused neighbours (counted once) and
                   unseen fingers
unseen_finger      max over fingers of the median chromaticity distance of the     0.09
                   finger's bones to the palm's colour (evidence.py): a finger
                   the model placed where the picture shows none
fused_fingers      1 - (closest adjacent finger gap / 0.25 palm sizes); real        0.65
                   fingers held together measure 0.23-0.3 palm sizes apart
hyperextension     max over the 12 finger joints of the backwards bend / its       1
                   limit (MCP 50, PIP 30, DIP 40 degrees)
overflexion        max forward bend / its limit (MCP 100, PIP 120, DIP 100 deg)    1
sideways_bend      max sideways bend / its limit (MCP 50, PIP and DIP 40 deg)      1
instability        landmark jitter against a line fitted through the 5 frames      0.1
                   around, in the hand's own frame (motion removed): mean over
                   the worst finger's 4 points, palm sizes
=================  ==============================================================  =========

Measured on real photos (tests/hands/golden and OpenCV's documentation pictures, turned, scaled and
blurred; 168 hands): no anatomy score reached its threshold but one sideways bend, on a hand half
hidden behind a board; the landmark jitter of real hands moved smoothly or shaken (turns of 10
degrees, 15 px and 5 % zoom, frame to frame) stayed under 0.025 palm sizes for open hands and 0.077
for a hand gripping an object.

Hands whose palm (mean wrist -> MCP distance) is under 24 px are too small for the landmark model to
resolve fingers (real hands of ~10 px scored anything): their scores are reported but never flagged.
The anatomy scores read the landmark model's metric "world" points, so they do not depend on the
hand's size, distance or pose in the frame. The landmark model always returns 21 points and leans
towards plausible hands: a finger erased from the picture may be guessed back. These scores flag what
it does see.

Convention: frames in [0, 1] sRGB-encoded RGB, (N, 3, H, W) float; boxes (x0, y0, x1, y1) and
landmarks in frame pixels (see :mod:`facefix.hands.models`); ``frame_numbers`` are the source's own
frame numbers, used as given in the report and its spans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..detect.blazeface import Detections
from ..errors import InputError
from . import anatomy
from .evidence import finger_evidence
from .models import HandLandmarker, HandRois, PalmDetector, check_frames, dedupe_rois, palm_rois
from .temporal import associate, instability

__all__ = [
    "HAND_REPORT_VERSION",
    "THRESHOLDS",
    "UNITS",
    "Hand",
    "HandReport",
    "HandAnalyser",
    "hand_scores",
    "hand_spans",
    "report_from_hands",
    "detect_hands",
    "analyse_hands",
]

HAND_REPORT_VERSION = "facefix.Hands.1"
THRESHOLDS: dict[str, float] = {
    "low_presence": 0.3,
    "finger_length": 0.6,
    "missing_fingers": 1.0,
    "fused_fingers": 0.65,
    "unseen_finger": 0.09,
    "hyperextension": 1.0,
    "overflexion": 1.0,
    "sideways_bend": 1.0,
    "instability": 0.1,
}
UNITS: dict[str, str] = {
    "low_presence": "1 - hand presence probability",
    "finger_length": "|ln(finger length / typical)|",
    "missing_fingers": "fingers",
    "fused_fingers": "1 - adjacent finger gap / 0.25 palm sizes",
    "unseen_finger": "chromaticity distance to the palm",
    "hyperextension": "backwards bend / anatomical limit",
    "overflexion": "forward bend / anatomical limit",
    "sideways_bend": "sideways bend / anatomical limit",
    "instability": "palm sizes",
}
# Joint limits in degrees, per joint of a finger: (MCP, PIP, DIP).
HYPEREXTENSION_LIMIT = (50.0, 30.0, 40.0)
OVERFLEXION_LIMIT = (100.0, 120.0, 100.0)
SIDEWAYS_LIMIT = (50.0, 40.0, 40.0)
GAP_TOGETHER = 0.25  # palm sizes between adjacent fingers held together
COLLAPSED_LENGTH = math.log(0.45)  # a chain shorter than 0.45x typical counts as missing
# Below this palm size (mean wrist -> MCP distance, frame pixels) the landmark model cannot resolve
# fingers or be sure of a hand: scores are reported but not flagged (real hands of ~10 px scored anything).
MIN_PALM_PX = 24.0


@dataclass(frozen=True)
class Hand:
    """One hand in one frame. landmarks (21, 3) frame pixels; world (21, 3) metres (see models)."""

    box: tuple[float, float, float, float]
    score: float
    presence: float
    handedness: str
    handedness_score: float
    landmarks: Tensor
    world: Tensor
    evidence: Tensor | None = None  # (5,) per finger, see evidence.py
    track: int = -1


def hand_scores(world: Tensor, right: Tensor, presence: Tensor, evidence: Tensor | None = None) -> dict[str, Tensor]:
    """The per-frame scores (module table) of K hands: world (K, 21, 3), right (K,), presence (K,),
    evidence (K, 5) (None: not measured) -> {kind: (K,)} (all but instability), plus "finger_count" (K,)."""
    world, right, presence = world.float(), right.float(), presence.float()
    length_err = anatomy.finger_length_error(world)  # (K, 5)
    signed = torch.log(anatomy.finger_lengths(world).clamp(min=1e-3)
                       / torch.tensor(anatomy.EXPECTED_FINGER_LENGTH, device=world.device))
    collapsed = signed < COLLAPSED_LENGTH
    unseen = (evidence.float() if evidence is not None else torch.zeros_like(signed)).to(world.device)
    gone = collapsed | (unseen >= THRESHOLDS["unseen_finger"])
    gaps = anatomy.finger_gaps(world)  # (K, 3)
    fused = (1.0 - gaps / GAP_TOGETHER) >= THRESHOLDS["fused_fingers"]
    # A fused pair of present fingers is one finger; a collapsed or unseen finger is none.
    both_present = ~gone[:, 1:4] & ~gone[:, 2:5]
    count = 5 - gone.sum(-1) - (fused & both_present).sum(-1)
    flex, side = anatomy.joint_angles(world, right)  # (K, 4, 3)
    hyper_lim = torch.tensor(HYPEREXTENSION_LIMIT, device=world.device)
    over_lim = torch.tensor(OVERFLEXION_LIMIT, device=world.device)
    side_lim = torch.tensor(SIDEWAYS_LIMIT, device=world.device)
    # A collapsed finger has no meaningful angles: leave its joints out.
    ok = ~collapsed[:, 1:, None]
    zero = torch.zeros_like(flex)
    return {
        "low_presence": 1.0 - presence,
        "finger_length": length_err.amax(-1),
        "missing_fingers": (5 - count).clamp(min=0).float(),
        "fused_fingers": (1.0 - gaps.amin(-1) / GAP_TOGETHER).clamp(min=0.0),
        "unseen_finger": unseen.amax(-1),
        "hyperextension": torch.where(ok, (-flex).clamp(min=0) / hyper_lim, zero).flatten(1).amax(-1),
        "overflexion": torch.where(ok, flex.clamp(min=0) / over_lim, zero).flatten(1).amax(-1),
        "sideways_bend": torch.where(ok, side.abs() / side_lim, zero).flatten(1).amax(-1),
        "finger_count": count.float(),
    }


def hand_spans(flags: Iterable[Mapping[str, Any]], max_gap: int = 1) -> list[dict[str, Any]]:
    """Merge flagged frames into spans: flags are {"frame", "kind", "severity"} (optionally "track");
    frames of one kind (and track) whose numbers are at most ``max_gap`` + 1 apart join one span.
    Returns {kind, first, last, severity (peak), track?} sorted by first frame, then kind."""
    groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for f in flags:
        groups.setdefault((str(f["kind"]), int(f.get("track", -1))), []).append((int(f["frame"]), float(f["severity"])))
    spans: list[dict[str, Any]] = []
    for (kind, track), items in groups.items():
        items.sort()
        cur: dict[str, Any] | None = None
        for frame, sev in items:
            if cur is not None and frame - cur["last"] <= max_gap + 1:
                cur["last"] = frame
                cur["severity"] = max(cur["severity"], sev)
                continue
            cur = {"kind": kind, "first": frame, "last": frame, "severity": sev}
            if track >= 0:
                cur["track"] = track
            spans.append(cur)
    spans.sort(key=lambda s: (s["first"], s["kind"], s.get("track", -1)))
    for s in spans:
        s["severity"] = round(s["severity"], 3)
    return spans


@dataclass
class HandReport:
    """The hands of a shot: per frame number a list of hands (dicts), and the flagged spans."""

    frames: list[int]
    per_frame: dict[int, list[dict[str, Any]]]
    spans: list[dict[str, Any]]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` takes it as is), labelled ``facefix.Hands.1``."""
        return {
            "version": HAND_REPORT_VERSION,
            "frames": [self.frames[0], self.frames[-1]] if self.frames else [],
            "scores": {k: {"unit": UNITS[k], "threshold": v} for k, v in self.thresholds.items()},
            "per_frame": [{"frame": f, "hands": self.per_frame.get(f, [])} for f in self.frames],
            "spans": [dict(s) for s in self.spans],
        }


def _round(values: Sequence[float], nd: int = 2) -> list[float]:
    return [round(float(v), nd) for v in values]


class HandAnalyser:
    """The palm detector and hand landmark model on ``device``, with the analysis built on them.

    ``max_hands`` per frame (MediaPipe's default 2), palms scoring >= ``min_score``, hands whose
    landmark presence is >= ``min_presence`` (MediaPipe's 0.5) are kept.
    """

    def __init__(self, device: str | torch.device = "cpu", max_hands: int = 2, min_score: float = 0.5,
                 min_presence: float = 0.5, batch: int = 32) -> None:
        if max_hands < 1:
            raise InputError(f"max_hands must be at least 1, got {max_hands}")
        self.device = torch.device(device)
        self.palms = PalmDetector().to(self.device).eval()
        self.landmarks = HandLandmarker().to(self.device).eval()
        self.max_hands = max_hands
        self.min_score = min_score
        self.min_presence = min_presence
        self.batch = batch

    @torch.no_grad()
    def detect(self, frames: Tensor) -> list[list[Hand]]:
        """Hands of frames (N, 3, H, W) in [0, 1]: per frame a list, in MediaPipe's order; tensors on the CPU."""
        check_frames(frames)
        frames = frames.to(self.device, torch.float32)
        palms = [d.select(torch.arange(min(self.max_hands, len(d)))) for d in self.palms(frames, self.min_score,
                                                                                        batch=self.batch)]
        out: list[list[Hand]] = [[] for _ in range(frames.shape[0])]
        index = torch.cat([torch.full((len(d),), f, dtype=torch.long) for f, d in enumerate(palms)])
        if len(index) == 0:
            return out
        cat = Detections.cat(palms)
        rois, keep = dedupe_rois(palm_rois(index, cat.boxes, cat.keypoints))
        scores = cat.scores[keep]
        dev_rois = HandRois(rois.index.to(self.device), rois.center.to(self.device), rois.side.to(self.device),
                            rois.angle.to(self.device))
        lm, world, presence, right = (t.cpu() for t in self.landmarks(frames, dev_rois, self.batch))
        evidence = finger_evidence(frames, rois.index, lm)
        for k in range(len(rois)):
            if float(presence[k]) < self.min_presence:
                continue
            xy = lm[k, :, :2]
            box = (*xy.amin(0).tolist(), *xy.amax(0).tolist())
            p_right = float(right[k])
            out[int(rois.index[k])].append(Hand(
                box=(box[0], box[1], box[2], box[3]), score=float(scores[k]), presence=float(presence[k]),
                handedness="right" if p_right >= 0.5 else "left", handedness_score=max(p_right, 1.0 - p_right),
                landmarks=lm[k], world=world[k], evidence=evidence[k]))
        return out

    def analyse(self, frames: Tensor | Iterable[Tensor], frame_numbers: Sequence[int]) -> HandReport:
        """Detect, track and score the hands of a shot; ``frames`` a tensor (N, 3, H, W) or an iterable
        of such batches (or single (3, H, W) frames), ``frame_numbers`` one per frame, in order."""
        batches = [frames] if isinstance(frames, Tensor) else frames
        hands: list[list[Hand]] = []
        for b in batches:
            if isinstance(b, Tensor) and b.ndim == 3:
                b = b[None]
            hands.extend(self.detect(b))
        numbers = [int(n) for n in frame_numbers]
        if len(numbers) != len(hands):
            raise InputError(f"hand analysis got {len(hands)} frames but {len(numbers)} frame numbers")
        return report_from_hands(hands, numbers)


def report_from_hands(hands: Sequence[Sequence[Hand]], numbers: Sequence[int]) -> HandReport:
    """Track, score and flag already detected hands (one list per frame, ``numbers`` their frame numbers)."""
    ids = associate([torch.tensor([h.box for h in fh]).reshape(-1, 4) for fh in hands])
    flat = [(t, i) for t, fh in enumerate(hands) for i in range(len(fh))]
    per_frame: dict[int, list[dict[str, Any]]] = {n: [] for n in numbers}
    if not flat:
        return HandReport(list(numbers), per_frame, [])
    world = torch.stack([hands[t][i].world for t, i in flat])
    right = torch.tensor([hands[t][i].handedness_score if hands[t][i].handedness == "right"
                          else 1.0 - hands[t][i].handedness_score for t, i in flat])
    presence = torch.tensor([hands[t][i].presence for t, i in flat])
    seen = [hands[t][i].evidence for t, i in flat]
    evidence = torch.stack([e if e is not None else torch.zeros(5) for e in seen])
    scores = hand_scores(world, right, presence, evidence)
    unstable = torch.zeros(len(flat))
    tracks: dict[int, list[int]] = {}
    for k, (t, i) in enumerate(flat):
        tracks.setdefault(ids[t][i], []).append(k)
    for rows in tracks.values():
        lms = torch.stack([hands[flat[k][0]][flat[k][1]].landmarks for k in rows])
        unstable[rows] = instability(lms, [flat[k][0] for k in rows])
    scores["instability"] = unstable
    flags: list[dict[str, Any]] = []
    for k, (t, i) in enumerate(flat):
        h = hands[t][i]
        values = {kind: float(scores[kind][k]) for kind in THRESHOLDS}
        palm_px = float((h.landmarks[[5, 9, 13, 17]] - h.landmarks[:1]).norm(dim=-1).mean())
        judged = palm_px >= MIN_PALM_PX
        flagged = [kind for kind, v in values.items() if judged and v >= THRESHOLDS[kind]]
        per_frame[numbers[t]].append({
            "track": ids[t][i], "box": _round(h.box, 1), "score": round(h.score, 3),
            "presence": round(h.presence, 3), "handedness": h.handedness,
            "handedness_score": round(h.handedness_score, 3),
            "landmarks": [_round(p, 1) for p in h.landmarks.tolist()],
            "palm_px": round(palm_px, 1), "finger_count": int(scores["finger_count"][k]),
            "anomalies": {kind: round(v, 3) for kind, v in values.items()}, "flags": flagged,
        })
        flags.extend({"frame": numbers[t], "kind": kind, "track": ids[t][i],
                      "severity": values[kind] / THRESHOLDS[kind]} for kind in flagged)
    return HandReport(list(numbers), per_frame, hand_spans(flags))


_DEFAULT: dict[str, HandAnalyser] = {}


def _analyser(device: str | torch.device) -> HandAnalyser:
    key = str(torch.device(device))
    if key not in _DEFAULT:
        _DEFAULT[key] = HandAnalyser(device)
    return _DEFAULT[key]


def detect_hands(frames: Tensor, analyser: HandAnalyser | None = None) -> list[list[Hand]]:
    """:meth:`HandAnalyser.detect` with a shared analyser on the frames' device unless one is given."""
    return (analyser or _analyser(frames.device)).detect(frames)


def analyse_hands(frames: Tensor | Iterable[Tensor], frame_numbers: Sequence[int],
                  analyser: HandAnalyser | None = None) -> HandReport:
    """:meth:`HandAnalyser.analyse` with a shared CPU analyser unless one is given."""
    return (analyser or _analyser("cpu")).analyse(frames, frame_numbers)
