"""Hands over time: association, landmark instability (motion removed), spans."""

from __future__ import annotations

import json
import math

import torch

from facefix.hands import THRESHOLDS, hand_spans
from facefix.hands.temporal import associate, hand_frame, instability


def _hand(reference) -> torch.Tensor:
    """A real hand's 21 landmarks (frame pixels, z as x) from the goldens."""
    ref = reference["hand_spread"]
    w, h = ref["size"]
    return torch.tensor(ref["hands"][0]["landmarks"]) * torch.tensor([w, h, w])


def _moving(hand: torch.Tensor, t: int, shake: float = 0.0, seed: int = 0) -> torch.Tensor:
    """The hand turned, zoomed and moved steadily over t frames, plus random whole-hand shake."""
    g = torch.Generator().manual_seed(seed)
    out = []
    c = hand[:, :2].mean(0)
    for k in range(t):
        jitter = torch.randn(4, generator=g) * shake
        a = math.radians(4.0 * k + 10.0 * float(jitter[0]))
        s = 1.0 + 0.03 * k + 0.05 * float(jitter[1])
        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        xy = (hand[:, :2] - c) @ rot.T * s + c + torch.tensor([5.0 * k, -3.0 * k]) + 15.0 * jitter[2:]
        out.append(torch.cat([xy, hand[:, 2:] * s], -1))
    return torch.stack(out)


def test_hand_frame_removes_similarity_motion(reference):
    hand = _hand(reference)
    clip = _moving(hand, 6, shake=1.0)
    norm = hand_frame(clip)
    assert (norm - norm[:1]).abs().max() < 1e-3
    # Fingers point up (-y) in the hand's frame.
    assert norm[0, 12, 1] < norm[0, 0, 1]


def test_steady_or_shaken_motion_is_stable(reference):
    hand = _hand(reference)
    for shake in (0.0, 1.0):
        score = instability(_moving(hand, 9, shake), range(9))
        assert score.max() < 1e-3, shake


def test_jittering_landmarks_are_unstable(reference):
    """Landmark noise of 0.15 palm sizes in a moving hand is flagged on most frames; noise of 0.01 is not."""
    hand = _hand(reference)
    clip = _moving(hand, 12)
    palm = float((hand[[5, 9, 13, 17]] - hand[:1]).norm(dim=-1).mean())
    g = torch.Generator().manual_seed(1)
    for sigma, flagged in ((0.15, True), (0.01, False)):
        noisy = clip.clone()
        noisy[..., :2] += torch.randn(noisy[..., :2].shape, generator=g) * sigma * palm
        score = instability(noisy, range(12))
        rate = float((score >= THRESHOLDS["instability"]).float().mean())
        assert (rate >= 0.8) if flagged else (rate == 0.0), (sigma, score)


def test_one_jumping_finger_is_found(reference):
    hand = _hand(reference)
    clip = _moving(hand, 9)
    clip[4, 9:13, :2] += (clip[4, 9:13, :2] - clip[4, 9, :2]).flip(-1) * 0.8  # middle finger swung aside
    score = instability(clip, range(9))
    assert int(score.argmax()) == 4 and score[4] >= THRESHOLDS["instability"]
    assert score[[0, 1, 7, 8]].max() < THRESHOLDS["instability"]


def test_short_tracks_and_gaps(reference):
    hand = _hand(reference)
    assert instability(hand[None].repeat(2, 1, 1), [0, 1]).tolist() == [0.0, 0.0]
    clip = _moving(hand, 6)
    # Frames far apart are no neighbours: isolated frames score 0.
    assert instability(clip, [0, 10, 20, 30, 40, 50]).abs().max() == 0.0


def test_associate_tracks_hands():
    a = torch.tensor([[0.0, 0.0, 50.0, 50.0]])
    b = torch.tensor([[200.0, 0.0, 250.0, 50.0]])
    frames = [torch.cat([a, b]), torch.cat([b + 5, a + 5]), a + 10, torch.zeros(0, 4), torch.zeros(0, 4),
              torch.zeros(0, 4), torch.zeros(0, 4), a + 12]
    ids = associate(frames)
    assert ids[:3] == [[0, 1], [1, 0], [0]]
    assert ids[3:7] == [[], [], [], []]
    assert ids[7] == [2]  # gone for 4 frames: a new track


def test_hand_spans_merge_and_split():
    flags = [{"frame": f, "kind": "instability", "severity": s, "track": 0}
             for f, s in ((10, 1.2), (11, 2.5), (13, 1.1), (20, 1.0))]
    flags += [{"frame": 11, "kind": "fused_fingers", "severity": 1.4, "track": 1}]
    spans = hand_spans(flags)
    assert spans == [
        {"kind": "instability", "first": 10, "last": 13, "severity": 2.5, "track": 0},
        {"kind": "fused_fingers", "first": 11, "last": 11, "severity": 1.4, "track": 1},
        {"kind": "instability", "first": 20, "last": 20, "severity": 1.0, "track": 0},
    ]
    assert hand_spans(flags, max_gap=0)[0]["last"] == 11
    assert hand_spans([]) == []
    json.dumps(spans)

