"""Shot cuts on real-photo frames: found exactly, not fooled by motion or a light ramp; tracks stop at them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.errors import InputError, SettingsError
from facefix.track import appearance_descriptors, build_tracks
from facefix.track.cuts import cut_score, cut_scores, find_cuts, thumbnail

SIZE = (144, 192)
N_A, N_B = 20, 14


def _coffee(size: tuple[int, int]) -> np.ndarray:
    from skimage import data

    img = torch.from_numpy(data.coffee().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(img, size=size, mode="area")[0].permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def _mirrored(still: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo mirrored with its colour channels swapped, and its landmarks (another-looking face)."""
    lm = synth.ASTRONAUT_LANDMARKS.copy()
    lm[:, 0] = still.shape[1] - lm[:, 0]
    return np.ascontiguousarray(still[:, ::-1, ::-1]), lm[[1, 0, 2, 4, 3]]


@pytest.fixture(scope="module")
def two_shots(still, helpers):
    """Shot A: the astronaut moving right while the light dims 35%; shot B (hard cut): another face on the
    coffee photo, starting where A's face ended and moving down. Returns frames, true landmarks per frame."""
    mats_a = helpers.translation_mats(N_A, (70.0, 72.0), (4.0, 0.5), 0.55)
    gain = np.linspace(1.0, 0.65, N_A)
    frames_a = helpers.render(mats_a, SIZE, still, gain=gain)
    lm_a = synth.apply_affine(mats_a, synth.ASTRONAUT_LANDMARKS[None].repeat(N_A, 0))
    other, lm_other = _mirrored(still)
    c = lm_other.mean(axis=0)
    end = lm_a[-1].mean(axis=0)
    mats_b = np.stack([synth.similarity(0.6, 0.0, end[0] + 2 - c[0], end[1] + 3 * t - c[1], center=tuple(c))
                       for t in range(N_B)])
    frames_b = helpers.render(mats_b, SIZE, other, background=_coffee(SIZE))
    lm_b = synth.apply_affine(mats_b, lm_other[None].repeat(N_B, 0))
    return np.concatenate([frames_a, frames_b]), np.concatenate([lm_a, lm_b])


def test_hard_cut_found_exactly(two_shots) -> None:
    frames, _ = two_shots
    first = 1001
    thumbs = {first + i: thumbnail(f) for i, f in enumerate(frames)}
    scores = cut_scores(thumbs)
    cuts = find_cuts(scores)
    within = [s for n, s in scores.items() if n != first + N_A and n != first]
    print(f"cut score at the cut {scores[first + N_A]:.3f}; within shots max {max(within):.3f}, "
          f"median {np.median(within):.3f}")
    assert cuts == {first + N_A}
    assert scores[first + N_A] > 4 * max(within)


def test_sustained_fast_motion_is_not_a_cut(still, helpers) -> None:
    # A whip pan: the face crosses a third of the frame in 6 frames; every score is high, none stands out.
    mats = helpers.translation_mats(12, (20.0, 70.0), (26.0, 2.0), 0.55)
    frames = helpers.render(mats, SIZE, still)
    scores = cut_scores({i: thumbnail(f) for i, f in enumerate(frames)})
    assert find_cuts(scores) == set()


def test_thumbnail_layouts_agree(two_shots) -> None:
    f = two_shots[0][0]
    a = thumbnail(f)
    b = thumbnail(torch.from_numpy(f.transpose(2, 0, 1).copy()))
    assert a.shape == (32, 32, 3)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert cut_score(a, a) == 0.0
    with pytest.raises(InputError):
        thumbnail(np.zeros((8, 8)))
    with pytest.raises(InputError):
        cut_score(a, a[:16])
    with pytest.raises(SettingsError):
        find_cuts([0.0, 1.0], threshold=0.0)


def test_find_cuts_on_a_sequence_and_mapping() -> None:
    seq = [0.0, 0.05, 0.04, 0.9, 0.06, 0.05, 0.05, 0.03, 0.7, 0.04]
    assert find_cuts(seq) == {3, 8}
    assert find_cuts({1001 + 2 * i: s for i, s in enumerate(seq)}) == {1007, 1017}
    # Scores that leave out the first frame (as a streaming caller gives them) work the same.
    assert find_cuts({1002 + 2 * i: s for i, s in enumerate(seq[1:])}) == {1006, 1016}


def test_tracks_do_not_cross_a_detected_cut(two_shots, helpers) -> None:
    frames, truth = two_shots
    rng = np.random.default_rng(5)
    first = 1001
    dets = {first + i: [helpers.noisy_face(truth[i], 2.0, rng)] for i in range(len(frames))}
    app = {first + i: appearance_descriptors(frames[i], dets[first + i]) for i in range(len(frames))}
    cuts = find_cuts(cut_scores({first + i: thumbnail(f) for i, f in enumerate(frames)}))
    tracks = build_tracks(dets, cuts, appearance=app)
    spans = sorted((min(t.faces), max(t.faces)) for t in tracks.tracks)
    assert spans == [(first, first + N_A - 1), (first + N_A, first + len(frames) - 1)]
    assert tracks.metadata["cuts"] == [first + N_A]
    # Without the cut the two faces would be joined (same place), so the split is the cut's doing.
    assert len(build_tracks(dets, set(), appearance=app).tracks) == 1


def test_batched_histograms_are_histogram2d():
    """The chromaticity histograms of a batch are, bit for bit, ``np.histogram2d`` of each thumbnail: values on
    the bin edges, at 1 (the last bin) and black pixels included."""
    from facefix.track.cuts import _HIST_BINS, _chroma_hists

    rng = np.random.default_rng(3)
    thumbs = rng.random((6, 32, 32, 3)).astype(np.float32)
    thumbs[1] = np.round(thumbs[1] * 8) / 8  # chromaticities on the edges
    thumbs[2, :, :, 1:] = 0  # r just below 1
    thumbs[3, :8] = 0
    got = _chroma_hists(thumbs)
    for t, h in zip(thumbs, got):
        s = t.sum(axis=-1) + 1e-3
        w = np.clip(t.mean(axis=-1).ravel(), 0.02, None)
        want, _, _ = np.histogram2d((t[..., 0] / s).ravel(), (t[..., 1] / s).ravel(), bins=_HIST_BINS,
                                    range=[[0, 1], [0, 1]], weights=w)
        assert np.array_equal(h, want / want.sum())


def test_thumbnails_of_a_batch_are_each_frames_own(monkeypatch) -> None:
    """Thumbnails pooled a few frames a call are bit for bit each frame's own, whatever the frames with it, and
    so are those of frames said to be clipped already, pooled as they are."""
    from facefix.track import cuts

    frames = torch.rand(5, 3, 45, 61) * 1.4 - 0.2  # values outside [0, 1] are clipped first
    alone = [cuts.thumbnails(f[None])[0] for f in frames]
    for per_call_values in (3 * 45 * 61, 2 * 3 * 45 * 61, 1 << 26):  # 1, 2 and all 5 frames a call
        monkeypatch.setattr(cuts, "_THUMB_VALUES_PER_CALL", per_call_values)
        together = cuts.thumbnails(frames)
        assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    assert cuts.thumbnails(frames[:0]) == [] and cuts.thumbnails(frames[:0], clipped=True) == []
    # Frames already clipped (an analysis's working frames) pool as they are, all at once: the same thumbnails.
    working = frames.clamp(0, 1)
    assert all(np.array_equal(a, b) for a, b in zip(alone, cuts.thumbnails(working, clipped=True), strict=True))
    assert all(t.flags.c_contiguous and t.dtype == np.float32 and t.shape == (32, 32, 3) for t in together)


def test_cut_features_of_a_batch_are_each_frames_own() -> None:
    """A batch's cut features are, bit for bit, each thumbnail's alone (whatever the frames with it), and the
    structure is the thumbnail averaged to 8x8 and standardised per channel (thumbnails whose side is not a
    multiple of 8 cropped first)."""
    from facefix.track.cuts import cut_features

    rng = np.random.default_rng(5)
    for side in (32, 35):
        thumbs = list(rng.random((7, side, side, 3)).astype(np.float32))
        thumbs[2] = np.zeros_like(thumbs[2])  # flat: std floored, not divided by 0
        together = cut_features(thumbs)
        for t, (hist, structure) in zip(thumbs, together, strict=True):
            (alone_hist, alone_structure), = cut_features([t])
            assert np.array_equal(hist, alone_hist) and np.array_equal(structure, alone_structure)
            k = side // 8
            small = t[: 8 * k, : 8 * k].reshape(8, k, 8, k, 3).mean(axis=(1, 3))
            want = (small - small.mean(axis=(0, 1))) / np.maximum(small.std(axis=(0, 1)), 0.02)
            assert structure.shape == (8, 8, 3) and np.array_equal(structure, want)
