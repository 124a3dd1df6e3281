"""Metrics: flicker, landmark jitter, identity step, against values known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facefix.errors import InputError
from facefix.temporal import flicker, identity_step, landmark_jitter

torch.set_num_threads(1)


def test_flicker_of_alternating_offset_is_the_offset():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 32, 32, generator=g) * 0.5
    frames = base.repeat(6, 1, 1, 1)
    frames[1::2] += 0.1
    zero = torch.zeros(5, 2, 32, 32)
    assert flicker(frames, None, zero) == pytest.approx(0.1, abs=1e-5)
    mask = torch.zeros(6, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    frames[..., :4, :] += 0.5  # outside the mask: ignored
    assert flicker(frames, mask, zero) == pytest.approx(0.1, abs=1e-5)


def test_flicker_is_motion_compensated(aligned_clip):
    clip = aligned_clip(5, 128, drift=(6.0, 3.0), rotate_deg=1.0)
    flows = clip.consecutive_flows()
    still = flicker(clip.clean, clip.mask, flows)
    raw = flicker(clip.clean, clip.mask, torch.zeros_like(flows))
    estimated = flicker(clip.clean, clip.mask)  # flows estimated inside the metric
    assert still < 0.3 * raw
    assert estimated < 0.4 * raw
    noisy = clip.clean + 0.05 * torch.randn(clip.clean.shape, generator=torch.Generator().manual_seed(1))
    assert flicker(noisy, clip.mask, flows) > 3 * still


def test_landmark_jitter_zero_for_smooth_motion_and_known_for_shake():
    t = np.arange(10, dtype=np.float64)
    smooth = np.zeros((10, 5, 2))
    smooth[..., 0] = 100 + 3.0 * t[:, None]  # constant velocity
    smooth[..., 1] = 50 - 1.0 * t[:, None]
    assert landmark_jitter(smooth, 1.0) == pytest.approx(0.0, abs=1e-9)
    shaky = smooth.copy()
    shaky[..., 0] += 0.5 * (-1.0) ** t[:, None]  # +-0.5 px alternating: second difference is +-2 px
    assert landmark_jitter(shaky, 1.0) == pytest.approx(2.0)
    assert landmark_jitter(shaky, 2.0) == pytest.approx(4.0)  # in template pixels
    assert landmark_jitter(shaky, np.full(10, 2.0)) == pytest.approx(4.0)
    assert math.isnan(landmark_jitter(shaky[:2], 1.0))
    with pytest.raises(InputError):
        landmark_jitter(shaky[..., 0], 1.0)
    with pytest.raises(InputError):
        landmark_jitter(shaky, np.ones(3))


def test_identity_step():
    same = torch.tensor([[1.0, 2.0, 3.0]]).repeat(4, 1)
    assert identity_step(same) == pytest.approx(0.0, abs=1e-9)
    alt = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    assert identity_step(alt) == pytest.approx(1.0)
    assert math.isnan(identity_step(same[:1]))
    with pytest.raises(InputError):
        identity_step(torch.zeros(3))


def test_flicker_bad_inputs():
    with pytest.raises(InputError):
        flicker(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError):
        flicker(torch.zeros(3, 3, 8, 8), None, torch.zeros(3, 2, 8, 8))
    with pytest.raises(InputError):
        flicker(torch.zeros(3, 3, 8, 8), torch.zeros(3, 1, 8, 8), torch.zeros(2, 2, 8, 8))
