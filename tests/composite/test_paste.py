"""Paste-back in aligned space (facefix.composite.paste_faces): in place into channels-last views, and
grouped warps that change no pixel."""

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
