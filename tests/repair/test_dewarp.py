"""De-warp: a transient deformation of the mesh is undone on the input crop, a persistent one passes, 0 is the
input to the bit, and chunks and batches give the same bits as one run."""

import numpy as np
import pytest
import torch

from facefix import Face, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.io import open_source
from facefix.repair import ClipRepairer, repair_window
from facefix.repair.dewarp import DEWARP_WINDOW, dewarp_crops, dewarp_offsets
from facefix.run import run_clip

K = DEWARP_WINDOW


class _Batch:
    def __init__(self, faces):
        self.faces = tuple(faces)
        self.frame_index = np.arange(len(faces))


class _S:
    def __init__(self, dewarp, deboil=0.0):
        self.dewarp, self.deboil = dewarp, deboil


def _faces(clip, mesh=None):
    mesh = clip.mesh if mesh is None else mesh
    return [Face(box=(0, 0, 1, 1), landmarks=clip.landmarks[t], track_id=0, mesh=mesh[t]) for t in range(len(mesh))]


def _dewarp_track(crops, faces, amount=1.0):
    """Every frame of one track through the repair stage, frame by frame with its look-ahead."""
    rep = ClipRepairer(K)
    out = []
    for t in range(len(faces)):
        frames = list(range(t, min(len(faces), t + K + 1)))
        out.append(rep.repair(_Batch([faces[f] for f in frames]), frames, crops[frames],
                              [_S(amount)] * len(frames), 1)[0])
    return torch.stack(out)


def _error(a, b, mask, rows):
    return float(((a[rows] - b[rows]).abs() * mask[rows]).sum() / (3 * mask[rows].sum()))


def test_the_window_is_the_deboil_window():
    assert repair_window(Settings(dewarp=0.5)) == K and repair_window(Settings()) == 0
    assert repair_window(Settings(animation={"dewarp": {1: 0.0, 5: 1.0}})) == K


def test_a_transient_warp_is_undone(repair_clip, align):
    clip = repair_clip("warp", 10, 1, 128)  # the warp on frames 3-5: each has its full window
    assert list(np.nonzero(clip.defect)[0]) == [3, 4, 5]
    crops, clean = align(clip.frames, clip.landmarks, 128), align(clip.clean, clip.landmarks, 128)
    mask = align(np.repeat(clip.face[..., None], 3, -1), clip.landmarks, 128)[:, :1]
    out = _dewarp_track(crops, _faces(clip))
    d = torch.from_numpy(clip.defect)
    before, after = _error(crops, clean, mask, d), _error(out, clean, mask, d)
    assert after <= 0.6 * before, (before, after)
    assert torch.equal(out[~d], crops[~d])  # frames without the warp: the input, to the bit
    half = _dewarp_track(crops, _faces(clip), 0.5)
    assert after < _error(half, clean, mask, d) < before  # the control scales the displacement


def test_zero_is_the_input_to_the_bit_and_a_clean_clip_stays_clean(repair_clip, align):
    clip = repair_clip("warp", 10, 1, 128)
    crops = align(clip.frames, clip.landmarks, 128)
    assert torch.equal(_dewarp_track(crops, _faces(clip), 0.0), crops)
    clean = repair_clip("clean", 9, 2, 128)
    crops = align(clean.frames, clean.landmarks, 128)
    jitter = clean.mesh + np.random.default_rng(0).normal(0, 0.15, clean.mesh.shape)  # the mesh's own noise
    out = _dewarp_track(crops, _faces(clean, jitter))
    mse = float(((out - crops) ** 2).mean())
    assert 10 * np.log10(1 / max(mse, 1e-12)) >= 45.0


def test_a_persistent_shape_change_passes(repair_clip, align):
    clip = repair_clip("clean", 10, 2, 128)
    crops = align(clip.frames, clip.landmarks, 128)
    mesh = clip.mesh.copy()
    mouth = clip.landmarks[:, 3:4]
    near = np.linalg.norm(mesh - mouth, axis=-1) < 15.0
    mesh[4:] += 5.0 * near[4:, :, None] * np.array([1.0, 0.5])  # held from frame 4 to the end (6 frames)
    assert torch.equal(_dewarp_track(crops, _faces(clip, mesh)), crops)
    # the same offset on 3 frames only is a warp, and moves pixels
    brief = clip.mesh.copy()
    brief[4:7] = mesh[4:7]
    assert not torch.equal(_dewarp_track(crops, _faces(clip, brief))[4:7], crops[4:7])


def test_offsets_follow_a_transient_point_shift_and_ignore_pose():
    rng = np.random.default_rng(3)
    base = rng.uniform(40, 90, (60, 2))
    win = []
    for j in range(2 * K + 1):
        a = np.deg2rad(2.0 * j)
        rot = 1.01 ** j * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = base.copy()
        if j == K:
            pts[:8] += np.array([4.0, -2.0])  # the current frame's transient shift
        win.append(pts @ rot.T + np.array([1.5 * j, -j]))
    off = dewarp_offsets(np.stack(win), np.ones(2 * K + 1, bool), 128)
    cur_lin = 1.01 ** K * np.array([[np.cos(np.deg2rad(2.0 * K)), -np.sin(np.deg2rad(2.0 * K))],
                                    [np.sin(np.deg2rad(2.0 * K)), np.cos(np.deg2rad(2.0 * K))]])
    want = -np.array([4.0, -2.0]) @ cur_lin.T
    assert np.allclose(off[:8], want, atol=0.5)  # moved back by the shift, less the dead zone
    assert np.abs(off[8:]).max() == 0.0  # pose alone moves nothing
    valid = np.ones(2 * K + 1, bool)
    valid[0] = False
    assert not dewarp_offsets(np.stack(win), valid, 128).any()  # a clipped window moves nothing


def test_the_result_does_not_depend_on_the_batch(repair_clip, align):
    clip = repair_clip("warp", 10, 1, 128)
    crops = align(clip.frames, clip.landmarks, 128)
    from facefix.geometry import crop_from_frame_matrix, transform_points

    pts = np.stack([transform_points(crop_from_frame_matrix(lm, 128), m) for lm, m in zip(clip.landmarks, clip.mesh)])
    rows = [3, 4, 5]
    wins = [pts[t - K:t + K + 1] for t in rows]
    valid = [np.ones(2 * K + 1, bool)] * 3
    amounts = torch.tensor([1.0, 0.7, 1.0])
    together = dewarp_crops(crops[rows], wins, valid, amounts)
    for j, t in enumerate(rows):
        alone = dewarp_crops(crops[t:t + 1], [wins[j]], [valid[j]], amounts[j:j + 1])
        assert torch.equal(alone[0], together[j])


# -- whole shots: chunks and batches equal one run -----------------------------------------------------------------

N = 10
FIRST = 1001


@pytest.fixture(scope="module")
def shot(tmp_path_factory, write_repair_shot):
    root = tmp_path_factory.mktemp("dewarp_shot")
    clip = synth.repair_clip("warp", N, (128, 128), seed=1, scale=0.9)
    return root, write_repair_shot(root, clip, FIRST), clip


def _run(root, tracks, dest, frames=None, **kw):
    s = Settings(**{"model": "passthrough", "mask": "box", "colorspace": "srgb", "batch": 3, "temporal": 0.0, **kw})
    return run_clip(str(root / "p.####.exr"), str(dest), s, tracks=tracks, frames=frames, progress=False,
                    engine=Engine(s))


def _frames(pattern):
    src = open_source(str(pattern))
    return {n: src.read(n).pixels for n in src.frame_numbers}


def test_chunks_and_batches_equal_one_run(shot, tmp_path):
    root, tracks, clip = shot
    kw = dict(dewarp=1.0)
    _run(root, tracks, tmp_path / "one.####.exr", **kw)
    a = _run(root, tracks, tmp_path / "chunk.####.exr", frames="1001-1004", **kw)
    _run(root, tracks, tmp_path / "chunk.####.exr", frames="1005-1010", **kw)
    assert a.frames_preroll == 3
    _run(root, tracks, tmp_path / "b7.####.exr", **{**kw, "batch": 7})
    want = _frames(tmp_path / "one.####.exr")
    for other in ("chunk.####.exr", "b7.####.exr"):
        got = _frames(tmp_path / other)
        assert sorted(got) == sorted(want)
        for n in want:
            assert np.array_equal(got[n], want[n]), (other, n)
    plate, warp = _frames(root / "p.####.exr"), want
    for i, n in enumerate(sorted(plate)):  # passthrough shows the de-warp on the warped frames only
        assert np.array_equal(warp[n], plate[n]) != bool(clip.defect[i]), n
