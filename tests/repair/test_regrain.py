"""Regrain: grain matched to the plate's, added to a face smoother than the plate, inside its matte only; 0 is
the plain output; the grain is a function of the frame, so batches and chunks give the same bits."""

import numpy as np
import pytest
import torch

from facefix import Settings
from facefix.api import Session
from facefix.demo import synth
from facefix.engine import Engine
from facefix.filters import gaussian_blur
from facefix.io import Frame, FrameFormat, open_source
from facefix.io.sequence import write_frame
from facefix.run import run_clip

SIZE = 160
FIRST = 1001


def _tracks(clip, first=0):
    return synth.truth_tracks(clip.landmarks, clip.mesh, first)


def _restore(frames, tracks, **kw):
    settings = {"model": "passthrough", "temporal": 0.0, "mask": "mesh", "colorspace": "srgb", "device": "cpu", **kw}
    with Session(settings) as s:
        got = s.restore(list(frames), tracks, list(range(len(frames))), colorspace="srgb")
    return np.stack([g.image for g in got]), np.stack([g.matte for g in got])


def _hf(img):
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    return (t - gaussian_blur(t, 1.0))[0].numpy().transpose(1, 2, 0)


def _face_and_ring(out, clip, mattes):
    """Robust deviation of the fine band inside the face (full matte) and in a ring outside the matte."""
    face, ring = [], []
    for i in range(len(out)):
        inside = (clip.face[i] > 0.5) & (mattes[i] > 0.999)
        around = (synth.face_ellipse(out.shape[1:3], clip.landmarks[i], 1.45) > 0) & (mattes[i] == 0)
        h = np.abs(_hf(out[i]))
        face.append(1.4826 * np.median(h[inside], axis=0))
        ring.append(1.4826 * np.median(h[around], axis=0))
    return np.mean(face, 0), np.mean(ring, 0)


@pytest.fixture(scope="module")
def waxy():
    return synth.repair_clip("waxy", 3, (SIZE, SIZE), seed=3, scale=SIZE / 160.0, grain=0.02)


def test_zero_is_the_plain_output_and_grain_fills_the_waxy_face(waxy):
    tracks = _tracks(waxy)
    off, mattes = _restore(waxy.frames, tracks)
    zero, _ = _restore(waxy.frames, tracks, regrain=0.0)
    assert np.array_equal(zero, off) and np.array_equal(off, waxy.frames)  # passthrough, every repair at 0
    on, mattes_on = _restore(waxy.frames, tracks, regrain=1.0)
    assert np.array_equal(mattes_on, mattes)
    face0, ring0 = _face_and_ring(off, waxy, mattes)
    face1, ring1 = _face_and_ring(on, waxy, mattes)
    assert np.all(face0 < 0.6 * ring0), (face0, ring0)
    assert np.all((face1 > 0.8 * ring1) & (face1 < 1.3 * ring1)), (face1, ring1)
    outside = mattes == 0
    assert np.array_equal(on[outside], waxy.frames[outside])  # nothing outside the matte changes
    assert np.any(on[mattes > 0.999] != waxy.frames[mattes > 0.999])
    half, _ = _restore(waxy.frames, tracks, regrain=0.5)
    added, added_half = on - waxy.frames, half - waxy.frames
    mid = (on > 0.01) & (on < 0.99) & (half > 0.01) & (half < 0.99)  # away from where the output is clipped
    assert np.allclose(added_half[mid], 0.5 * added[mid], atol=1e-5)


def test_no_grain_on_a_plate_without_grain(waxy):
    t = torch.from_numpy(np.ascontiguousarray(waxy.clean.transpose(0, 3, 1, 2)))
    smooth = gaussian_blur(t, 2.5).numpy().transpose(0, 2, 3, 1).copy()  # no grain anywhere, face or plate
    out, _ = _restore(smooth, _tracks(waxy), regrain=1.0)
    assert np.abs(out - smooth).max() < 1e-3


def test_batches_and_chunks_give_the_same_frames(tmp_path):
    clip = synth.repair_clip("waxy", 5, (SIZE, SIZE), seed=4, scale=SIZE / 160.0, grain=0.02)
    for i, rgb in enumerate(clip.frames):
        write_frame(tmp_path / f"p.{FIRST + i:04d}.exr", Frame(FIRST + i, rgb, FrameFormat.for_pixels(rgb, "float")))
    tracks = _tracks(clip, FIRST)

    def run(dest, batch, frames=None):
        s = Settings(model="passthrough", mask="mesh", colorspace="srgb", batch=batch, temporal=0.0,
                     animation={"regrain": {FIRST: 1.0, FIRST + 4: 0.6}})
        run_clip(str(tmp_path / "p.####.exr"), str(tmp_path / dest), s, tracks=tracks, frames=frames,
                 progress=False, engine=Engine(s))
        src = open_source(str(tmp_path / dest))
        return {n: src.read(n).pixels for n in src.frame_numbers}

    one = run("one.####.exr", 5)
    b2 = run("b2.####.exr", 2)
    run("c.####.exr", 3, "1001-1002")
    chunks = run("c.####.exr", 3, "1003-1005")
    assert sorted(one) == sorted(b2) == sorted(chunks) == list(range(FIRST, FIRST + 5))
    for n in one:
        assert np.array_equal(b2[n], one[n]) and np.array_equal(chunks[n], one[n]), n
    assert not np.array_equal(one[FIRST], clip.frames[0])


def _fine_std(img, where):
    return 1.4826 * np.median(np.abs(_hf(img)[where]), axis=0)


@pytest.mark.parametrize("size", [0.45, 0.55, 0.65, 1.05, 1.35])
def test_grain_gain_is_exact_between_table_sizes(size):
    from facefix.composite.regrain import fine_gain, grain_noise

    white = grain_noise(7, 0, 0, 320, 320, 1, torch.device("cpu"))[None]
    g = gaussian_blur(white, size)
    fine = (g - gaussian_blur(g, 1.0))[0, 0, 16:-16, 16:-16]
    assert abs(float(fine.std()) / fine_gain(size) - 1) < 0.02


def _vs_truth(clip, grain, out, mattes, amplitude, corr, seed):
    """The face's fine-band deviation over that of the airbrushed face carrying the plate's own grain."""
    flat = np.full_like(clip.frames, 0.5)
    truth = clip.frames - grain + synth.film_grain(flat, amplitude, corr, seed=seed + 7919) - flat
    r = [_fine_std(out[i], (clip.face[i] > 0.5) & (mattes[i] > 0.999))
         / _fine_std(truth[i], (clip.face[i] > 0.5) & (mattes[i] > 0.999)) for i in range(len(out))]
    return np.mean(r, 0)


@pytest.mark.parametrize("amplitude,corr", [(0.01, 0.5), (0.04, 1.2)])
def test_grain_matches_a_known_plate_grain_across_amplitudes(amplitude, corr):
    clip, grain = synth.grain_clip(2, (192, 192), seed=11, amplitude=amplitude, corr=corr)
    out, mattes = _restore(clip.frames, _tracks(clip), regrain=1.0)
    ratio = _vs_truth(clip, grain, out, mattes, amplitude, corr, 11)
    assert np.all(np.abs(ratio - 1) < 0.1), ratio


def _upscaled(frames, tracks, numbers, **kw):
    settings = {"model": "passthrough", "temporal": 0.0, "mask": "mesh", "colorspace": "srgb", "device": "cpu",
                "upscale": 2, "upscale_model": "animevideov3", **kw}
    with Session(settings) as s:
        got = s.restore(list(frames), tracks, numbers, colorspace="srgb")
    return np.stack([g.image for g in got]), np.stack([g.matte for g in got])


def test_upscaled_grain_is_made_at_the_output_resolution():
    clip, _ = synth.grain_clip(2, (96, 96), seed=12, amplitude=0.03, corr=0.7)
    tracks = _tracks(clip)
    off, mattes = _upscaled(clip.frames, tracks, [0, 1])
    on, mattes_on = _upscaled(clip.frames, tracks, [0, 1], regrain=1.0)
    assert on.shape == (2, 192, 192, 3) and np.array_equal(mattes_on, mattes)
    assert np.array_equal(on[mattes == 0], off[mattes == 0])
    for i in range(2):
        lm = clip.landmarks[i] * 2
        face = (synth.face_ellipse((192, 192), lm, 0.9) > 0.5) & (mattes[i] > 0.999)
        ring = ((synth.face_ellipse((192, 192), lm, 1.6) > 0) & (synth.face_ellipse((192, 192), lm, 1.0, 0.15) == 0)
                & (mattes[i] == 0))
        before = _fine_std(off[i], face) / _fine_std(off[i], ring)
        after = _fine_std(on[i], face) / _fine_std(on[i], ring)
        assert np.all(before < 0.5) and np.all(np.abs(after - 1) < 0.12), (before, after)
    # Made per output pixel, not a frame-resolution grain enlarged: neighbouring output pixels differ.
    added = (on - off)[0]
    both = (mattes[0, 0::2, 0::2] > 0.999) & (mattes[0, 1::2, 1::2] > 0.999)
    odd, even = added[1::2, 1::2][both], added[0::2, 0::2][both]
    assert added.std() > 0 and np.corrcoef(odd.ravel(), even.ravel())[0, 1] < 0.8


def test_upscaled_grain_is_the_same_in_chunks(tmp_path):
    clip, _ = synth.grain_clip(3, (96, 96), seed=13, amplitude=0.03, corr=0.7)
    for i, rgb in enumerate(clip.frames):
        write_frame(tmp_path / f"p.{FIRST + i:04d}.exr", Frame(FIRST + i, rgb, FrameFormat.for_pixels(rgb, "float")))
    tracks = _tracks(clip, FIRST)

    def run(dest, batch, frames=None):
        s = Settings(model="passthrough", mask="mesh", colorspace="srgb", batch=batch, temporal=0.0, regrain=1.0,
                     upscale=2, upscale_model="animevideov3")
        run_clip(str(tmp_path / "p.####.exr"), str(tmp_path / dest), s, tracks=tracks, frames=frames,
                 progress=False, engine=Engine(s))
        src = open_source(str(tmp_path / dest))
        return {n: src.read(n).pixels for n in src.frame_numbers}

    one = run("one.####.exr", 3)
    run("c.####.exr", 1, "1001-1001")
    chunks = run("c.####.exr", 2, "1002-1003")
    assert sorted(one) == sorted(chunks) == list(range(FIRST, FIRST + 3))
    for n in one:
        assert one[n].shape[:2] == (192, 192) and np.array_equal(chunks[n], one[n]), n
