"""Paste-back in aligned space (facefix.composite.paste_faces): in place into channels-last views, and
grouped warps that change no pixel."""

import math

import numpy as np
import torch

from facefix.demo import synth
from facefix.geometry import crop_from_frame_matrix, invert_affine


def test_paste_in_place_into_a_channels_last_view_equals_the_copying_paste():
    """The pipeline uploads frames as (h, w, 3) and pastes into their (3, h, w) view in place: the same
    pixels and matte as pasting into a contiguous copy, and the view's memory holds the result."""
    from facefix.composite import paste_faces

    frame, lms = synth.crowd_frame((200, 260), 2, face_px=80)
    hwc = torch.from_numpy(np.ascontiguousarray(frame[..., :3], dtype=np.float32))
    mats = np.stack([crop_from_frame_matrix(lm, 64) for lm in lms])
    torch.manual_seed(3)
    delta = torch.randn(2, 3, 64, 64) * 0.1
    matte = torch.rand(2, 1, 64, 64)
    idx = np.zeros(2, np.int64)
    planar = hwc.permute(2, 0, 1).contiguous()[None]
    expected, expected_alpha = paste_faces(planar, delta, matte, invert_affine(mats), idx)
    assert torch.equal(planar[0], hwc.permute(2, 0, 1))  # not modified without inplace
    view = hwc.clone().permute(2, 0, 1)[None]
    got, alpha = paste_faces(view, delta, matte, invert_affine(mats), idx, inplace=True)
    assert got.data_ptr() == view.data_ptr()
    assert torch.equal(got, expected) and torch.equal(alpha, expected_alpha)
    assert not torch.equal(got, planar)  # the faces did change


def test_paste_groups_faces_without_changing_a_pixel():
    """Faces are warped into their ROIs a group at a time (padded to the group's largest ROI): the result
    equals pasting them one call at a time, and a close-up is not grouped with a crowd of small faces."""
    from facefix.composite import _paste_groups, paste_faces

    frame, lms = synth.crowd_frame((300, 400), 4, face_px=60)
    big = lms[0] * 2.2 - np.array([40.0, 60.0])  # a close-up overlapping the others
    all_lms = [*lms, big]
    mats = invert_affine(np.stack([crop_from_frame_matrix(lm, 64) for lm in all_lms]))
    torch.manual_seed(4)
    delta = torch.randn(5, 3, 64, 64) * 0.1
    matte = torch.rand(5, 1, 64, 64)
    frames = torch.from_numpy(np.ascontiguousarray(frame[..., :3].transpose(2, 0, 1)))[None]
    together, alpha = paste_faces(frames, delta, matte, mats, np.zeros(5, np.int64))
    one_by_one, alpha_one = frames, torch.zeros_like(alpha)
    for i in range(5):
        one_by_one, a = paste_faces(one_by_one, delta[i : i + 1], matte[i : i + 1], mats[i : i + 1], np.zeros(1, np.int64))
        alpha_one = torch.lerp(alpha_one, torch.ones(()), a)  # "over", as paste_faces composites
    assert torch.equal(together, one_by_one) and torch.equal(alpha, alpha_one)
    from facefix.geometry import frame_rois

    groups = _paste_groups(frame_rois(mats, 64, (300, 400)))
    assert groups[0] == [0, 1, 2, 3] and groups[-1] == [4]


def test_polygon_sdf_is_the_same_whatever_the_edges_per_step():
    """The face-oval distance field batched over edges (as a GPU computes it) equals it edge by edge, bit for
    bit, and is the distance to the polygon: positive inside, negative outside, ~0 on the contour."""
    from facefix.composite import polygon_sdf

    g = torch.Generator().manual_seed(5)
    ang = torch.linspace(0, 2 * math.pi, 37)[:-1]
    r = 20 + torch.rand(3, 36, generator=g) * 6
    poly = torch.stack([32 + r * torch.cos(ang), 32 + r * torch.sin(ang)], -1)
    poly[:, ::4] = torch.round(poly[:, ::4]) + 0.5  # vertices on pixel centres' rows
    one = polygon_sdf(poly, 64, factor=1, edges_per_step=1)
    for step in (2, 7, 36, 100):
        assert torch.equal(polygon_sdf(poly, 64, factor=1, edges_per_step=step), one), step
    assert one[:, 0, 32, 32].min() > 19 and one[:, 0, 0, 0].max() < -10
    square = torch.tensor([[[10.5, 10.5], [50.5, 10.5], [50.5, 50.5], [10.5, 50.5]]])
    sq = polygon_sdf(square, 64, factor=1, edges_per_step=3)[0, 0]
    assert sq[30, 30] == 20 and sq[30, 5] == -5 and sq[10, 30] == 0
