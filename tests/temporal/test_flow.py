"""Optical flow between aligned crops: accuracy against known transforms, occlusion confidence, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.errors import InputError
from facefix.temporal import flow as fl

torch.set_num_threads(1)


def _pair(aligned_clip, **kw):
    clip = aligned_clip(2, 128, **kw)
    return clip, clip.inputs[1:2], clip.inputs[0:1]


@pytest.mark.parametrize("motion", [dict(drift=(3.0, -2.0)), dict(rotate_deg=2.0), dict(zoom=1.03),
                                    dict(drift=(12.0, 8.0))])
def test_flow_matches_known_motion(aligned_clip, motion):
    clip, ref, mov = _pair(aligned_clip, **motion)
    est = fl.estimate_flow(ref, mov)
    true = clip.true_flow(1, 0)[None]
    inner = clip.mask[1:2, 0] > 0  # the face, where there is texture to match
    epe = (est - true).norm(dim=1)[inner]
    assert float(epe.median()) < 0.25, float(epe.median())
    assert float(epe.mean()) < 0.5, float(epe.mean())


def test_warp_by_flow_zero_flow_is_identity_and_shift_is_exact():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 20, generator=g)
    zero = torch.zeros(2, 2, 16, 20)
    assert torch.allclose(fl.warp_by_flow(img, zero), img, atol=1e-6)
    one = zero.clone()
    one[:, 0] = 1.0  # sample one pixel to the right
    out = fl.warp_by_flow(img, one)
    assert torch.allclose(out[..., :-1], img[..., 1:], atol=1e-6)
    assert torch.all(fl.inside_mask(one)[..., -1] == 0) and torch.all(fl.inside_mask(one)[..., :-1] == 1)


def test_resize_flow_scales_vectors():
    f = torch.zeros(1, 2, 8, 8)
    f[:, 0], f[:, 1] = 1.5, -0.5
    big = fl.resize_flow(f, (32, 32))
    assert torch.allclose(big[:, 0], torch.full((1, 32, 32), 6.0))
    assert torch.allclose(big[:, 1], torch.full((1, 32, 32), -2.0))


def test_fb_confidence_separates_consistent_and_inconsistent_flows():
    fw = torch.zeros(1, 2, 32, 32)
    fw[:, 0] = 3.0
    bw = -fw.clone()
    bw[..., :, 16:] = 3.0  # the right half "returns" 6 px away from where it started: an occlusion
    conf = fl.fb_confidence(fw, bw)[0, 0]
    assert float(conf[:, 2:10].min()) > 0.95  # consistent, well inside both grids
    assert float(conf[:, 16:28].max()) < 0.05
    assert float(conf[:, 30:].max()) == 0.0  # the match leaves the image


def test_flow_of_an_unmatched_patch_is_not_trusted_by_fb_or_photometry(aligned_clip):
    clip, ref, mov = _pair(aligned_clip, drift=(2.0, 0.0))
    mov = mov.clone()
    # A patch that exists in one crop only (a hand passing in front of the cheek).
    blocks = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    mov[..., 70:100, 30:60] = torch.nn.functional.interpolate(blocks, size=(30, 30), mode="nearest")
    fw, bw = fl.estimate_flow(ref, mov), fl.estimate_flow(mov, ref)
    conf = fl.fb_confidence(fw, bw)[0, 0]
    err = (fl.warp_by_flow(mov, fw) - ref).abs().mean(1)[0]
    face = clip.mask[1, 0].clone()
    face[60:110, 20:70] = 0
    assert float(conf[face > 0].mean()) > 0.7
    # Regularised flows may agree on a wrong match; the photometric error then gives it away.
    assert float(err[78:92, 38:52].mean()) > 5 * float(err[face > 0].mean())


def test_flow_does_not_depend_on_batch_composition(aligned_clip):
    clip = aligned_clip(4, 64, drift=(2.0, 1.0), rotate_deg=1.0)
    ref, mov = clip.inputs[1:], clip.inputs[:-1]
    together = fl.estimate_flow(ref, mov)
    alone = torch.cat([fl.estimate_flow(ref[i:i + 1], mov[i:i + 1]) for i in range(3)])
    assert torch.equal(together, alone)


def test_gaussian_blur_preserves_constant_and_mean():
    x = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(fl.gaussian_blur(x, 1.5), x)
    y = torch.zeros(1, 1, 21, 21)
    y[..., 10, 10] = 1.0
    assert abs(float(fl.gaussian_blur(y, 1.5).sum()) - 1.0) < 1e-5


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        fl.estimate_flow(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(InputError):
        fl.warp_by_flow(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError):
        fl.estimate_flow(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(InputError):
        fl.to_luma(torch.zeros(1, 2, 4, 4))
    assert np.isfinite(fl.estimate_flow(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)).numpy()).all()
