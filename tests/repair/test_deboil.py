"""De-boil on aligned crops: per-frame texture goes, what persists stays; the window is exact and batch-free."""

import numpy as np
import pytest
import torch

from facefix import Face
from facefix.demo import synth
from facefix.geometry import crop_from_frame_matrix, transform_points
from facefix.repair import DEBOIL_WINDOW, ClipRepairer, deboil_window, mesh_flows, weighted_median
from facefix.temporal import flicker
from facefix.temporal.stabilise import reduce_for_flow

K = DEBOIL_WINDOW


def _deboil_track(crops, amount=1.0, frames=None, points=None):
    """Every frame of one track through deboil_window, its window clipped to the track (``points``: (T, P, 2)
    each frame's tracked points in its crop, or None)."""
    t_ = crops.shape[0]
    lo = reduce_for_flow(crops)
    out = []
    for t in frames if frames is not None else range(t_):
        idx = [min(max(j, 0), t_ - 1) for j in range(t - K, t + K + 1)]
        valid = torch.tensor([[0 <= j < t_ for j in range(t - K, t + K + 1)]])
        pts = None if points is None else points[[j if 0 <= j < t_ else t for j in range(t - K, t + K + 1)]][None]
        out.append(deboil_window(lo[idx][None], crops[idx][None], valid, torch.tensor([amount]), pts)[0])
    return torch.stack(out)


def _mesh_in_crops(clip, size):
    """(T, 468, 2) the clip's tracked mesh in its aligned crops of ``size`` px."""
    return torch.tensor(np.stack([transform_points(crop_from_frame_matrix(lm, size), m)
                                  for lm, m in zip(clip.landmarks, clip.mesh)]), dtype=torch.float32)


def _psnr(a, b, mask):
    mse = float((((a - b) ** 2) * mask).sum() / (mask.sum() * a.shape[1]))
    return 10 * np.log10(1 / max(mse, 1e-12))


def test_weighted_median_picks_the_weighted_middle():
    v = torch.tensor([0.9, 0.1, 0.5, 0.2, 0.8]).view(1, 5, 1, 1, 1)
    assert float(weighted_median(v, torch.ones_like(v))) == pytest.approx(0.5)
    w = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]).view(1, 5, 1, 1, 1)
    assert float(weighted_median(v, w)) == pytest.approx(0.9)  # a sample of no weight has no say


def test_boiling_texture_flickers_far_less(repair_clip, align):
    clip = repair_clip("boil", 8, 11, 128)
    crops, clean = align(clip.frames, clip.landmarks), align(clip.clean, clip.landmarks)
    mask = align(np.repeat(clip.face[..., None], 3, -1), clip.landmarks)[:, :1]
    out = _deboil_track(crops)
    before, after = flicker(crops, mask), flicker(out, mask)
    assert after <= 0.5 * before, (before, after)
    # and closer to the clean clip than the boiling input
    assert float(((out - clean).abs() * mask).mean()) < float(((crops - clean).abs() * mask).mean())


def test_a_clean_clip_with_blinks_and_speech_passes(repair_clip, align):
    clip = repair_clip("clean", 8, 12, 128)
    crops = align(clip.frames, clip.landmarks)
    mask = align(np.repeat(clip.face[..., None], 3, -1), clip.landmarks)[:, :1]
    out = _deboil_track(crops)
    assert _psnr(out, crops, mask) >= 36.0  # the crop, at its own 2x scale (the frame's figure is higher)


def test_amount_zero_is_the_input_to_the_bit_and_amount_blends(repair_clip, align):
    clip = repair_clip("boil", 8, 13, 128)
    crops = align(clip.frames, clip.landmarks)
    assert torch.equal(_deboil_track(crops, 0.0, [3]), crops[3:4])
    full, half = _deboil_track(crops, 1.0, [3]), _deboil_track(crops, 0.5, [3])
    assert torch.allclose(half, 0.5 * (crops[3:4] + full), atol=1e-5)


def test_a_result_depends_on_its_window_only_and_not_on_the_batch(repair_clip, align):
    clip = repair_clip("boil", 9, 14, 128)
    crops = align(clip.frames, clip.landmarks)
    alone = _deboil_track(crops, frames=[4])
    changed = crops.clone()
    changed[0] = 0.0  # frame 0 lies outside frame 4's window (1..7)
    changed[8] = 1.0
    assert torch.equal(_deboil_track(changed, frames=[4]), alone)
    batched = _deboil_track(crops, frames=[2, 3, 4, 5])
    assert torch.equal(batched[2:3], alone)


class _Batch:
    def __init__(self, faces):
        self.faces = tuple(faces)
        self.frame_index = np.arange(len(faces))


class _S:
    def __init__(self, deboil):
        self.deboil = deboil


def test_the_repairer_needs_its_lookahead_and_forgets_what_no_frame_reads(repair_clip, align):
    """ClipRepairer fed frame by frame with 3 look-ahead frames equals whole windows; its memory stays bounded."""
    clip = repair_clip("boil", 9, 15, 128)
    crops = align(clip.frames, clip.landmarks)
    whole = _deboil_track(crops, points=_mesh_in_crops(clip, crops.shape[-1]))
    faces = [Face(box=(0, 0, 1, 1), landmarks=lm, track_id=0, mesh=m) for lm, m in zip(clip.landmarks, clip.mesh)]
    rep = ClipRepairer(K)
    got = []
    for t in range(9):
        frames = list(range(t, min(9, t + K + 1)))  # frame t, then its look-ahead
        out = rep.repair(_Batch([faces[f] for f in frames]), frames, crops[frames], [_S(1.0)] * len(frames), 1)
        got.append(out[0])
        assert len(rep) <= 2 * K + 1
    assert torch.equal(torch.stack(got), whole)


def test_a_ghost_goes_when_its_frames_are_registered_by_their_mesh(repair_clip, align):
    """A 3-frame ghost biases the photometric flow of its frames toward the shifted copy; the tracked mesh does
    not move, so a frame found displaced from it is registered by it and the 4 clean frames outvote the ghost."""
    clip = synth.repair_clip("ghost", 9, (128, 128), seed=12, scale=128 / 160.0, at=3)
    crops, clean = align(clip.frames, clip.landmarks), align(clip.clean, clip.landmarks)
    mask = align(np.repeat(clip.face[..., None], 3, -1), clip.landmarks)[:, :1]
    d = [int(t) for t in np.flatnonzero(clip.defect)]

    def error(x):
        return float(((x - clean[d]).abs() * mask[d]).sum() / (mask[d].sum() * 3))

    before = error(crops[d])
    by_flow = error(_deboil_track(crops, frames=d))
    by_mesh = error(_deboil_track(crops, frames=d, points=_mesh_in_crops(clip, crops.shape[-1])))
    assert by_mesh <= 0.5 * before and by_mesh < 0.75 * by_flow, (before, by_flow, by_mesh)


def test_the_mesh_changes_nothing_where_the_flow_agrees_with_it(repair_clip, align):
    clip = repair_clip("clean", 8, 12, 128)
    crops = align(clip.frames, clip.landmarks)
    frames = [3, 4]
    assert torch.equal(_deboil_track(crops, frames=frames, points=_mesh_in_crops(clip, crops.shape[-1])),
                       _deboil_track(crops, frames=frames))


def test_mesh_flows_follow_the_points():
    """Points moved by a similarity give that similarity's displacement; a moved point drags its surroundings."""
    g = np.linspace(60, 196, 20)
    cur = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)  # as dense as a face mesh
    ang, s, t = 0.05, 1.02, np.array([3.0, -2.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    nb = cur @ rot.T + t
    pts = torch.tensor(np.stack([nb, cur, nb]), dtype=torch.float32)[None]  # window of 3, the current in the middle
    flows, face = mesh_flows(pts, (64, 64), 256)
    assert flows.shape == (1, 2, 2, 64, 64) and face.shape == (1, 1, 64, 64)
    y, x = 32, 30  # a flow pixel; its centre in crop px
    p = (np.array([x, y]) + 0.5) * 4.0
    want = (p @ rot.T + t - p) / 4.0
    assert np.allclose(flows[0, 0, :, y, x].numpy(), want, atol=2e-3)
    assert face[0, 0, y, x] == 1 and face[0, 0, 0, 0] == 0  # amid the points, not in the corner
    moved = nb.copy()
    moved[0] += 8.0
    flows2, _ = mesh_flows(torch.tensor(np.stack([moved, cur, nb]), dtype=torch.float32)[None], (64, 64), 256)
    cx, cy = (cur[0] / 4.0).astype(int)
    assert float((flows2 - flows)[0, 0, :, cy, cx].norm()) > 0.5  # near the moved point
    assert torch.equal(flows2[0, 1], flows[0, 1])  # the other neighbour's flow is its own


def test_a_ramp_at_a_clipped_window_keeps_the_current_frame():
    # A blink's onset at a track's second frame: frames before it are missing, the ones after it continue the
    # change. Flat frames so the flow is still; the current frame lies between its two sides.
    levels = [0.0, 0.0, 0.40, 0.45, 0.50, 0.55, 0.60]  # t-3 .. t+3; t-3 and t-2 missing
    full = torch.stack([torch.full((3, 64, 64), v) for v in levels])[None]
    lo = torch.stack([torch.full((3, 32, 32), v) for v in levels])[None]
    clipped = torch.tensor([[False, False, True, True, True, True, True]])
    out = deboil_window(lo, full, clipped, torch.tensor([1.0]))
    assert abs(float(out.mean()) - 0.45) < 0.01, float(out.mean())
    # Per-frame texture (a pixel checkerboard, gone at the flow's resolution) on a still face is still averaged
    # away, less than in a full window: the current frame holds the missing side's votes (3 of 7).
    still = full[:, 3:4].expand(-1, 7, -1, -1, -1).clone()
    lo_still = lo[:, 3:4].expand(-1, 7, -1, -1, -1).clone()
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 0.4 - 0.2
    still[0, 3] += checker
    texture = float((deboil_window(lo_still, still, clipped, torch.tensor([1.0])) - 0.45).abs().mean())
    full_window = float((deboil_window(lo_still, still, torch.ones(1, 7, dtype=torch.bool), torch.tensor([1.0]))
                         - 0.45).abs().mean())
    assert full_window < texture < 0.5 * 0.2, (full_window, texture)


def test_a_track_s_first_frame_is_not_outvoted_by_the_frames_after_it():
    # An eye starts closing right after a track's first frame: only the frames after it are in its window, and
    # all three show the change. The window votes as if it were symmetric: the missing side's three votes go to
    # the current frame, which keeps its state (a median of four samples, three of them changed, would not).
    levels = [0.0, 0.0, 0.0, 0.20, 0.60, 0.62, 0.64]  # t-3 .. t+3; t-3 .. t-1 missing
    full = torch.stack([torch.full((3, 64, 64), v) for v in levels])[None]
    lo = torch.stack([torch.full((3, 32, 32), v) for v in levels])[None]
    clipped = torch.tensor([[False, False, False, True, True, True, True]])
    out = deboil_window(lo, full, clipped, torch.tensor([1.0]))
    assert abs(float(out.mean()) - 0.20) < 0.01, float(out.mean())


def test_a_blink_opening_in_a_full_window_keeps_the_current_frame(align, monkeypatch):
    """On a blink's opening the frames on the far side still show the lid shut, and the lash line crosses each
    pixel in one frame, so a plain median of 7 drags the eye back: the current frame, lying between its two sides,
    gets the extra votes (``_ramp_votes``) and the eyes keep their state."""
    from facefix.repair import deboil

    clip = synth.repair_clip("clean", 12, (128, 128), seed=11, scale=0.8)  # its blink shuts at frames 3-5
    frames = [6, 7, 8]  # opening, each window full (3..11 of 0..11)
    crops = align(clip.frames, clip.landmarks)
    eyes = transform_points(crop_from_frame_matrix(clip.landmarks[6], crops.shape[-1]), clip.landmarks[6])[:2]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    band = torch.zeros(1, 1, *crops.shape[-2:])
    for x, y in eyes:
        band[..., int(y - 0.2 * iod):int(y + 0.2 * iod), int(x - 0.4 * iod):int(x + 0.4 * iod)] = 1
    kept = _psnr(_deboil_track(crops, frames=frames), crops[frames], band)
    monkeypatch.setattr(deboil, "_RAMP_VOTES", 0.0)
    dragged = _psnr(_deboil_track(crops, frames=frames), crops[frames], band)
    assert kept >= dragged + 0.6, (kept, dragged)
