"""Anatomy scores: real hands pass, synthetic defects built from real hands' landmarks are flagged."""

from __future__ import annotations

import math

import pytest
import torch

from facefix.hands import THRESHOLDS, hand_scores
from facefix.hands.anatomy import finger_gaps, finger_lengths, joint_angles, palm_size

STATIC = [k for k in THRESHOLDS if k != "instability"]


def _scores(worlds, rights, evidence=None):
    w = torch.stack(list(worlds))
    r = torch.tensor(list(rights), dtype=torch.float32)
    return hand_scores(w, r, torch.full((len(w),), 0.99), evidence)


def _flags(scores, k):
    return [kind for kind in STATIC if float(scores[kind][k]) >= THRESHOLDS[kind]]


def test_real_hands_are_not_flagged(real_hands):
    """The 9 golden hands (open, spread, gripping a clock; mirrored, turned): five fingers, no flag."""
    s = _scores([w for _, w, _ in real_hands], [r for _, _, r in real_hands])
    for k, (name, _, _) in enumerate(real_hands):
        assert _flags(s, k) == [], name
        assert int(s["finger_count"][k]) == 5


def _recall(real_hands, make, kind, cases):
    worlds, rights = [], []
    for _, w, r in real_hands:
        for args in cases:
            worlds.append(make(w, r, *args))
            rights.append(r)
    s = _scores(worlds, rights)
    return float((s[kind] >= THRESHOLDS[kind]).float().mean()), s


def test_collapsed_finger_is_missing(real_hands, hands_kit):
    recall, s = _recall(real_hands, lambda w, r, f: hands_kit.collapse(w, f), "missing_fingers", [(f,) for f in range(5)])
    assert recall == 1.0
    assert (s["finger_count"] == 4).all()
    assert (s["finger_length"] >= THRESHOLDS["finger_length"]).all()


def test_fused_fingers(real_hands, hands_kit):
    recall, s = _recall(real_hands, lambda w, r, a, b: hands_kit.fuse(w, a, b), "fused_fingers",
                        [(1, 2), (2, 3), (3, 4)])
    assert recall == 1.0
    assert (s["finger_count"] == 4).all()


def test_stretched_finger(real_hands, hands_kit):
    recall, _ = _recall(real_hands, lambda w, r, f: hands_kit.stretch(w, f, 2.5), "finger_length",
                        [(f,) for f in range(5)])
    assert recall >= 0.95


@pytest.mark.parametrize(("kind", "joints", "sideways"), [
    ("hyperextension", [(0, -80.0), (1, -60.0), (2, -70.0)], False),
    ("overflexion", [(0, 130.0), (1, 150.0), (2, 130.0)], False),
    ("sideways_bend", [(0, 75.0), (1, 65.0), (2, 65.0)], True),
])
def test_impossible_joint_angles(real_hands, hands_kit, kind, joints, sideways):
    """Each joint of each finger set to ~1.5x its anatomical limit, on hands the model is sure and unsure
    (hand_open: 0.58-0.7) of the side of."""
    cases = [(f, j, deg) for f in range(1, 5) for j, deg in joints]
    recall, _ = _recall(real_hands, lambda w, r, f, j, deg: hands_kit.bend(w, r, f, j, deg, sideways), kind, cases)
    assert recall >= 0.95, recall


def test_unseen_finger_evidence(real_hands):
    w, r = real_hands[0][1], real_hands[0][2]
    s = _scores([w, w], [r, r], torch.tensor([[0.02] * 5, [0.02, 0.12, 0.02, 0.02, 0.02]]))
    assert _flags(s, 0) == []
    assert {"unseen_finger", "missing_fingers"} <= set(_flags(s, 1))
    assert s["finger_count"].tolist() == [5.0, 4.0]


def _random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    return q * torch.sign(torch.det(q))


def test_scores_do_not_depend_on_pose_size_or_side(real_hands):
    """Turning, scaling and moving a hand changes nothing; its mirror image with the other handedness
    neither (a left hand is a mirrored right hand)."""
    _, w, r = real_hands[6]  # gripping the clock: bent fingers
    rot = _random_rotation(3)
    moved = (w @ rot.T) * 1.7 + torch.tensor([0.3, -0.2, 1.0])
    mirrored = w * torch.tensor([-1.0, 1.0, 1.0])
    s = _scores([w, moved, mirrored], [r, r, 1.0 - r])
    for kind in STATIC:
        assert s[kind][1].item() == pytest.approx(s[kind][0].item(), abs=1e-3), kind
        assert s[kind][2].item() == pytest.approx(s[kind][0].item(), abs=1e-3), kind


def test_geometry_by_hand():
    """A flat, straight synthetic hand: typical lengths, zero bends; fingers bent 90 degrees at the PIP."""
    world = torch.zeros(21, 3)
    xs = (-0.03, -0.01, 0.01, 0.03)  # index .. pinky MCPs along x, fingers along -y, palm facing -z
    for f, x in enumerate(xs):
        mcp = 5 + 4 * f
        world[mcp] = torch.tensor([x, -0.09, 0.0])
        for k in range(1, 4):
            world[mcp + k] = world[mcp] + torch.tensor([0.0, -0.03 * k, 0.0])
    for k in range(1, 5):  # thumb out to the side
        world[k] = torch.tensor([-0.03 - 0.025 * k, -0.02 * k, 0.0])
    ps = float(palm_size(world[None])[0])
    assert ps == pytest.approx((2 * math.hypot(0.09, 0.03) + 2 * math.hypot(0.09, 0.01)) / 4)
    assert torch.allclose(finger_lengths(world[None])[0, 1:], torch.full((4,), 0.09 / ps), atol=1e-4)
    flex, side = joint_angles(world[None], torch.tensor([0.0]))
    assert flex.abs().max() < 1e-3 and side[:, :, 1:].abs().max() < 1e-3
    bent = world.clone()
    for f in range(4):
        pip = 6 + 4 * f
        bent[pip + 1] = bent[pip] + torch.tensor([0.0, 0.0, 0.03])
        bent[pip + 2] = bent[pip] + torch.tensor([0.0, 0.0, 0.06])
    for right in (0.0, 1.0):
        flex, _ = joint_angles(bent[None], torch.tensor([right]))
        assert flex[0, :, 1].abs().tolist() == pytest.approx([90.0] * 4, abs=1e-3)
    # The sign follows the hand: towards the palm for one handedness, backwards for the other.
    f_left, _ = joint_angles(bent[None], torch.tensor([0.0]))
    f_right, _ = joint_angles(bent[None], torch.tensor([1.0]))
    assert torch.sign(f_left[0, 0, 1]) == -torch.sign(f_right[0, 0, 1])
    assert finger_gaps(world[None])[0].tolist() == pytest.approx([0.02 / ps] * 3, rel=1e-4)
    assert math.isfinite(float(hand_scores(world[None], torch.tensor([0.0]), torch.tensor([1.0]))["sideways_bend"][0]))
