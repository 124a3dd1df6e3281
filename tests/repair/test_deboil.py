"""De-boil on aligned crops: per-frame texture goes, what persists stays; the window is exact and batch-free."""

import numpy as np
import pytest
import torch

from facefix.repair import DEBOIL_WINDOW, ClipRepairer, deboil_window, weighted_median
from facefix.temporal import flicker
from facefix.temporal.stabilise import reduce_for_flow

K = DEBOIL_WINDOW


def _deboil_track(crops, amount=1.0, frames=None):
    """Every frame of one track through deboil_window, its window clipped to the track."""
    t_ = crops.shape[0]
    lo = reduce_for_flow(crops)
    out = []
    for t in frames if frames is not None else range(t_):
        idx = [min(max(j, 0), t_ - 1) for j in range(t - K, t + K + 1)]
        valid = torch.tensor([[0 <= j < t_ for j in range(t - K, t + K + 1)]])
        out.append(deboil_window(lo[idx][None], crops[idx][None], valid, torch.tensor([amount]))[0])
    return torch.stack(out)


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


class _Face:
    def __init__(self, track_id):
        self.track_id = track_id


class _Batch:
    def __init__(self, n, tid=0):
        self.faces = tuple(_Face(tid) for _ in range(n))
        self.frame_index = np.arange(n)


class _S:
    def __init__(self, deboil):
        self.deboil = deboil


def test_the_repairer_needs_its_lookahead_and_forgets_what_no_frame_reads(repair_clip, align):
    """ClipRepairer fed frame by frame with 3 look-ahead frames equals whole windows; its memory stays bounded."""
    clip = repair_clip("boil", 9, 15, 128)
    crops = align(clip.frames, clip.landmarks)
    whole = _deboil_track(crops)
    rep = ClipRepairer(K)
    got = []
    for t in range(9):
        frames = list(range(t, min(9, t + K + 1)))  # frame t, then its look-ahead
        out = rep.repair(_Batch(len(frames)), frames, crops[frames], [_S(1.0)] * len(frames), 1)
        got.append(out[0])
        assert len(rep) <= 2 * K + 1
    assert torch.equal(torch.stack(got), whole)
