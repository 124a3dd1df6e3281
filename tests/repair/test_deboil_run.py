"""De-boil through whole shots: passthrough shows it, chunks and --resume equal one run, the frame-in/frame-out
API with its look-ahead equals the command line."""

import numpy as np
import pytest
import torch

from facefix import Settings
from facefix.api import Session
from facefix.demo import synth
from facefix.engine import Engine
from facefix.geometry import crop_from_frame_matrix, warp_affine
from facefix.io import open_source, read_frame
from facefix.run import run_clip
from facefix.temporal import flicker

N = 10
FIRST = 1001


@pytest.fixture(scope="module")
def shot(tmp_path_factory, write_repair_shot):
    root = tmp_path_factory.mktemp("deboil_shot")
    clip = synth.repair_clip("boil", N, (160, 160), seed=21, scale=1.1)
    tracks = write_repair_shot(root, clip, FIRST, mesh=False)
    tracks.save(root / "tracks.json")
    return root, tracks, clip


def _run(root, tracks, dest, frames=None, resume=False, restorer=None, matte=None, **kw):
    s = Settings(**{"model": "passthrough", "mask": "box", "colorspace": "srgb", "batch": 3, "temporal": 0.0, **kw})
    e = Engine(s)
    if restorer is not None:
        e._restorer = restorer
    return run_clip(str(root / "p.####.exr"), str(dest), s, tracks=tracks, frames=frames, resume=resume,
                    progress=False, engine=e, matte=matte)


def _frames(pattern):
    src = open_source(str(pattern))
    return {n: src.read(n).pixels for n in src.frame_numbers}


def _face_flicker(frames, clip, matte):
    """Flicker of the face, motion removed (aligned on the true landmarks), where the matte is full."""
    x = torch.stack([torch.from_numpy(frames[n].transpose(2, 0, 1).copy()) for n in sorted(frames)])
    a = torch.stack([torch.from_numpy(matte[n][..., :1].transpose(2, 0, 1).copy()) for n in sorted(matte)])
    mats = np.stack([crop_from_frame_matrix(lm, 128) for lm in clip.landmarks])
    crops = warp_affine(x, mats, (128, 128), src_index=np.arange(len(x)))
    mask = (warp_affine(a, mats, (128, 128), src_index=np.arange(len(x))) > 0.999).float()
    return flicker(crops, mask)


def test_passthrough_shows_the_deboil_and_changes_nothing_outside(shot, tmp_path):
    root, tracks, clip = shot
    _run(root, tracks, tmp_path / "off.####.exr")
    summary = _run(root, tracks, tmp_path / "on.####.exr", deboil=1.0, matte=str(tmp_path / "m.####.exr"))
    assert summary.frames_written == N
    plate, off, on = _frames(root / "p.####.exr"), _frames(tmp_path / "off.####.exr"), _frames(tmp_path / "on.####.exr")
    for n in plate:
        assert np.array_equal(off[n], plate[n])  # every repair control 0: passthrough changes nothing
        changed = np.any(on[n] != plate[n], axis=-1)
        assert changed.any()
        box = tracks.faces_at(n)[0].box
        ys, xs = np.nonzero(changed)
        assert xs.min() >= box[0] - 80 and xs.max() <= box[2] + 80 and ys.min() >= box[1] - 80 and ys.max() <= box[3] + 80
    matte = _frames(tmp_path / "m.####.exr")
    # The boil's flicker: above the boil-free clip's own (its motion, blink and speech), at most half is left.
    clean = _face_flicker(dict(zip(sorted(plate), clip.clean)), clip, matte)
    assert _face_flicker(on, clip, matte) - clean <= 0.5 * (_face_flicker(plate, clip, matte) - clean)


def test_chunks_resume_and_batches_equal_one_run(shot, tmp_path):
    from tests.conftest import Sharpen

    root, tracks, _ = shot
    kw = dict(deboil=0.8, temporal=0.5, restorer=Sharpen())
    one = _run(root, tracks, tmp_path / "one.####.exr", **kw)
    assert one.frames_preroll == 0
    a = _run(root, tracks, tmp_path / "chunk.####.exr", frames="1001-1004", **kw)
    b = _run(root, tracks, tmp_path / "chunk.####.exr", frames="1005-1010", **kw)
    # 3 post-roll frames after the first chunk; before the second, its 4 + 3 pre-roll frames (the clip has 4)
    assert a.frames_preroll == 3 and b.frames_preroll == 4
    (tmp_path / "resumed").mkdir()
    for n in (1001, 1002, 1006):
        (tmp_path / "resumed" / f"r.{n}.exr").write_bytes((tmp_path / f"one.{n}.exr").read_bytes())
    resumed = _run(root, tracks, tmp_path / "resumed" / "r.####.exr", resume=True, **kw)
    assert resumed.frames_resumed == 3
    kw["batch"] = 7
    batch7 = _run(root, tracks, tmp_path / "b7.####.exr", **kw)
    assert batch7.frames_written == N
    want = _frames(tmp_path / "one.####.exr")
    for other in ("chunk.####.exr", "resumed/r.####.exr", "b7.####.exr"):
        got = _frames(tmp_path / other)
        assert sorted(got) == sorted(want)
        for n in want:
            assert np.array_equal(got[n], want[n]), (other, n)


def test_session_with_lookahead_equals_the_command_line(shot, tmp_path, fake_model):
    root, tracks, _ = shot
    settings = {"model": "gfpgan-1.4", "device": "cpu", "mask": "box", "colorspace": "srgb", "temporal": 0.5,
                "deboil": {FIRST: 1.0, FIRST + N - 1: 0.4}}
    with Session(settings) as session:
        session.run(str(root / "p.####.exr"), str(tmp_path / "cli.####.exr"), tracks=tracks)
        assert session.lookahead == 3 and session.preroll == 4 + 3
    want = _frames(tmp_path / "cli.####.exr")
    plates = {n: read_frame(root / f"p.{n}.exr").pixels for n in want}
    with Session(settings) as session:
        k = session.lookahead
        for n in sorted(want):  # frame by frame, each with the frames after it as look-ahead
            group = [m for m in range(n, n + k + 1) if m in plates]
            got = session.restore([plates[m] for m in group], tracks, group, lookahead=len(group) - 1)
            assert len(got) == 1
            assert np.array_equal(got[0].image, want[n]), n
    with Session(settings) as session:  # in batches of 4, each with its look-ahead
        for start in range(FIRST, FIRST + N, 4):
            group = [m for m in range(start, start + 4 + 3) if m in plates]
            own = [m for m in group if m < start + 4]
            for m, got in zip(own, session.restore([plates[m] for m in group], tracks, group,
                                                   lookahead=len(group) - len(own))):
                assert np.array_equal(got.image, want[m]), m
