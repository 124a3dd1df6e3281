"""End to end on real photos: a moving hand is clean; an erased finger and a jumping finger are flagged."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from facefix.errors import InputError
from facefix.hands import HandAnalyser, analyse_hands
from facefix.hands.analyse import HAND_REPORT_VERSION, THRESHOLDS, report_from_hands

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def analyser() -> HandAnalyser:
    return HandAnalyser("cpu")


def _clip(photo: torch.Tensor, t: int) -> torch.Tensor:
    """The photo on a wall-coloured canvas, turned, zoomed and moved a little more each frame."""
    _, _, h, w = photo.shape
    wall = photo[0, :, :4].mean((1, 2))
    canvas = wall[None, :, None, None].repeat(1, 1, h * 2, w * 2)
    canvas[..., h // 2: h // 2 + h, w // 2: w // 2 + w] = photo
    frames = []
    for k in range(t):
        a = torch.tensor(0.05 * k)
        s = 1.0 + 0.03 * k
        theta = torch.tensor([[torch.cos(a) / s, -torch.sin(a) / s, 0.02 * k],
                              [torch.sin(a) / s, torch.cos(a) / s, -0.01 * k]])[None]
        grid = F.affine_grid(theta, list(canvas.shape), align_corners=False)
        frames.append(F.grid_sample(canvas - wall[None, :, None, None], grid, align_corners=False)[0]
                      + wall[:, None, None])
    return torch.stack(frames).clamp(0, 1)


def test_moving_real_hand_is_clean(analyser, hands_kit):
    clip = _clip(hands_kit.photo("hand_spread"), 4)
    numbers = [1001, 1002, 1003, 1004]
    report = analyser.analyse(iter([clip[:2], clip[2:]]), numbers)  # batches, as a reader yields them
    assert report.frames == numbers and set(report.per_frame) == set(numbers)
    hands = [h for n in numbers for h in report.per_frame[n]]
    assert len(hands) == 4 and {h["track"] for h in hands} == {0}
    assert all(h["flags"] == [] and h["finger_count"] == 5 for h in hands), [h["anomalies"] for h in hands]
    assert report.spans == []
    assert max(h["anomalies"]["instability"] for h in hands) < 0.5 * THRESHOLDS["instability"]
    data = json.loads(json.dumps(report.to_json()))
    assert data["version"] == HAND_REPORT_VERSION and data["frames"] == [1001, 1004]
    assert data["scores"]["instability"]["threshold"] == THRESHOLDS["instability"]
    first = data["per_frame"][0]["hands"][0]
    assert len(first["landmarks"]) == 21 and set(first["anomalies"]) == set(THRESHOLDS)
    # Batches and one call on the whole clip agree.
    found = analyser.detect(clip)
    assert [[round(v, 1) for v in f[0].box] for f in found] == [h["box"] for h in hands]

    # One frame's middle finger jumps sideways (landmarks only): an instability span at that frame.
    hand = found[2][0]
    lm = hand.landmarks.clone()
    lm[9:13, 0] += 0.6 * (lm[12, 1] - lm[9, 1]).abs()
    found[2] = [dataclasses.replace(hand, landmarks=lm)]
    jumpy = report_from_hands(found, numbers)
    assert [s["kind"] for s in jumpy.spans] == ["instability"]
    assert jumpy.spans[0]["first"] <= 1003 <= jumpy.spans[0]["last"] and jumpy.spans[0]["severity"] >= 1.0


def test_erased_finger_is_flagged(analyser, hands_kit):
    """The middle finger painted over with the wall's colour: the landmark model still places it, the
    picture shows none there."""
    photo = hands_kit.photo("hand_spread")
    hand = analyser.detect(photo)[0][0]
    xy = hand.landmarks[:, :2]
    h, w = photo.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    p = torch.stack([xx, yy], -1)

    def near(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ab = b - a
        t = ((p - a) @ ab / (ab @ ab)).clamp(0, 1)
        return (p - (a + t[..., None] * ab)).norm(dim=-1)

    width = 0.55 * float((xy[9] - xy[10]).norm())
    d = torch.stack([near(xy[9] + 0.3 * (xy[10] - xy[9]), xy[10]), near(xy[10], xy[11]),
                     near(xy[11], xy[12] + 0.4 * (xy[12] - xy[11]))]).amin(0)
    erased = photo.clone()
    wall = photo[0, :, :6].reshape(3, -1).median(1).values
    erased[0][:, d < width] = wall[:, None]
    clean = analyse_hands(photo, [0], analyser).per_frame[0][0]
    broken = analyse_hands(erased, [0], analyser).per_frame[0][0]
    assert clean["flags"] == [] and clean["finger_count"] == 5
    assert {"unseen_finger", "missing_fingers"} <= set(broken["flags"]) and broken["finger_count"] == 4


def test_bad_calls(analyser, hands_kit):
    with pytest.raises(InputError) as err:
        analyser.analyse(torch.zeros(2, 3, 32, 32), [0])
    assert "\n" not in str(err.value)
    empty = analyser.analyse(torch.zeros(1, 3, 32, 32), [7])
    assert empty.per_frame == {7: []} and empty.spans == []
    assert empty.to_json()["per_frame"] == [{"frame": 7, "hands": []}]
