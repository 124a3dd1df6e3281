"""Face selection: all, largest per shot, ids, and reference similarity with an injected embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.errors import InputError, SettingsError
from facefix.faces import Face, FaceTrack, FaceTracks
from facefix.track.select import (
    reference_similarity,
    sample_frames,
    select_all,
    select_ids,
    select_largest,
    select_reference,
    select_tracks,
    shot_of,
)

LM = np.array([[30, 40], [60, 40], [45, 55], [33, 70], [57, 70]], dtype=np.float64)


def _track(tid: int, frames: range, size: float) -> FaceTrack:
    faces = {n: Face(box=(0, 0, size, size), landmarks=LM, score=0.5 + 0.01 * (n % 7), track_id=tid) for n in frames}
    return FaceTrack(id=tid, faces=faces)


@pytest.fixture
def tracks() -> FaceTracks:
    # Shot 0: frames 0-9 (tracks 0 small, 1 large); shot 1 from the cut at 10 (tracks 2 large, 3 small).
    return FaceTracks(tracks=(_track(0, range(0, 10), 80), _track(1, range(2, 10), 120),
                              _track(2, range(10, 20), 150), _track(3, range(10, 20), 60)))


def test_all_ids_largest(tracks) -> None:
    assert [t.id for t in select_all(tracks).tracks] == [0, 1, 2, 3]
    assert [t.id for t in select_ids(tracks, [3, 0]).tracks] == [0, 3]
    assert [t.id for t in select_largest(tracks, {10}).tracks] == [1, 2]
    assert [t.id for t in select_largest(tracks, set()).tracks] == [2]  # one shot: one face
    assert select_largest(tracks, {10}).metadata["selection"] == "largest"
    with pytest.raises(SettingsError, match="--face-ids"):
        select_ids(tracks, [7])
    assert shot_of(9, [10, 20]) == 0 and shot_of(10, [10, 20]) == 1 and shot_of(25, [20, 10]) == 2


def test_largest_uses_the_median_not_one_big_frame() -> None:
    t0 = _track(0, range(0, 10), 80)
    spike = dict(t0.faces)
    spike[5] = Face(box=(0, 0, 400, 400), landmarks=LM)  # one wild detection
    tr = FaceTracks(tracks=(FaceTrack(0, spike), _track(1, range(0, 10), 100)))
    assert [t.id for t in select_largest(tr).tracks] == [1]


def _stub_embed(crops: torch.Tensor) -> torch.Tensor:
    """A stand-in identity embedding: per-channel means of the crop's centre (L2-normalised)."""
    c = crops[:, :, 192:320, 192:320].mean(dim=(2, 3)) - 0.5
    return c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _crops(rgb: tuple[float, float, float], k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(rgb).view(1, 3, 1, 1).expand(k, 3, 512, 512)
    return (base + 0.03 * torch.randn(k, 3, 512, 512, generator=g)).clamp(0, 1)


def test_reference_selection(tracks) -> None:
    calls = []

    def embed(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return _stub_embed(x)

    ref = _crops((0.8, 0.5, 0.3), 1, 0)
    crops = {0: _crops((0.8, 0.5, 0.3), 3, 1), 1: _crops((0.3, 0.5, 0.8), 3, 2), 2: _crops((0.78, 0.52, 0.33), 2, 3)}
    sims = reference_similarity(ref, crops, embed)
    assert calls == [9]  # one batched call for the reference and all tracks
    assert sims[0] > 0.95 and sims[2] > 0.9 and sims[1] < 0.0
    # One shot: only the best match (track 2 is close but second); with a floor, all that reach it.
    assert [t.id for t in select_reference(tracks, ref, crops, embed=embed).tracks] == [0]
    out = select_reference(tracks, ref, crops, embed=embed, min_similarity=0.5)
    assert [t.id for t in out.tracks] == [0, 2]  # track 3 has no crops: not selected
    assert set(out.metadata["similarity"]) == {"0", "1", "2"}
    # Two shots (cut at 10): the best of each shot, unless it is below the floor.
    assert [t.id for t in select_reference(tracks, ref, crops, cuts={10}, embed=embed).tracks] == [0, 2]
    floor = sims[2] + 1e-3
    assert [t.id for t in select_reference(tracks, ref, crops, cuts={10}, embed=embed, min_similarity=floor).tracks] == [0]
    with pytest.raises(InputError):
        reference_similarity(torch.zeros(3, 512, 512), crops, embed)
    with pytest.raises(SettingsError):
        select_reference(tracks, ref, crops, embed=embed, min_similarity=2.0)


def test_select_tracks_dispatches_on_settings(tracks) -> None:
    from facefix.params import Settings

    tr = FaceTracks(tracks=tracks.tracks, metadata={"cuts": [10]})
    assert [t.id for t in select_tracks(tr, Settings(faces="largest")).tracks] == [1, 2]
    assert [t.id for t in select_tracks(tr, Settings(faces="ids", face_ids="3,1")).tracks] == [1, 3]
    assert len(select_tracks(tr, Settings()).tracks) == 4
    with pytest.raises(SettingsError, match="--faces reference"):
        select_tracks(tr, Settings(faces="reference"))
    ref = _crops((0.8, 0.5, 0.3), 1, 0)
    crops = {3: _crops((0.8, 0.5, 0.3), 2, 1), 2: _crops((0.3, 0.5, 0.8), 2, 2)}
    out = select_tracks(tr, Settings(faces="reference"), reference_crops=ref, track_crops=crops, embed=_stub_embed)
    assert [t.id for t in out.tracks] == [3]


def test_sample_frames_spreads_over_the_track() -> None:
    t = _track(0, range(100, 140), 80)
    picks = sample_frames(t, 4)
    assert len(picks) == 4 and picks == sorted(picks)
    assert picks[0] < 110 and picks[-1] >= 130
    assert sample_frames(_track(1, range(0, 3), 50), 5) == [0, 1, 2]
