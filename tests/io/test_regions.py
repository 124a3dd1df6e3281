"""The region codecs (facefix.io.regions): a frame's face region back into its own storage, float, integer
codes or 10-bit DPX words."""

import numpy as np
import pytest
import torch

from facefix import Face, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.pipeline import queue_batch


class Sharpen:
    """A deterministic stand-in for a face model."""

    def __call__(self, crops, fidelity=0.5):
        blur = torch.nn.functional.avg_pool2d(crops, 5, stride=1, padding=2, count_include_pad=False)
        return (crops + 0.8 * (crops - blur)).clamp(0, 1)


def _face(landmarks):
    lm = np.asarray(landmarks, float)
    c = lm.mean(0)
    return Face(box=(c[0] - 60, c[1] - 80, c[0] + 60, c[1] + 70), landmarks=lm)


def _engine(settings, restorer):
    e = Engine(settings)
    e._restorer = restorer
    return e


def test_compositing_back_converts_each_faces_box_and_gives_the_same_frame():
    """Faces apart from each other are converted back in a box each (fewer pixels than one box around all),
    and the frame is the same as converting that one box: bit for bit, float and integer codes."""
    from facefix.colour import colour_transform
    from facefix.io.frames import codes_from_unit
    from facefix.io.regions import finish_frame as _finish_frame
    from facefix.io.regions import touched_boxes

    rng = np.random.default_rng(8)
    alpha = np.zeros((60, 90), np.float32)
    alpha[5:20, 4:30] = rng.random((15, 26)) * (rng.random((15, 26)) > 0.3)  # top left
    alpha[8:25, 50:80] = 0.5  # top right, rows overlapping the first
    alpha[40:55, 20:70] = rng.random((15, 50)) + 0.01  # below both
    touched = alpha > 0
    boxes = touched_boxes(touched)
    assert len(boxes) == 3 and sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes) < 0.6 * 50 * 76
    covered = np.zeros_like(touched)
    for r0, r1, c0, c1 in boxes:
        covered[r0:r1, c0:c1] = True
    assert (covered >= touched).all()
    assert touched_boxes(np.zeros((4, 4), bool)) == []
    ct = colour_transform("srgb")
    pasted = rng.random((60, 90, 3), dtype=np.float32)
    for img in (rng.random((80, 120, 4), dtype=np.float32), rng.integers(0, 65536, (80, 120, 3)).astype(np.uint16)):
        got, matte = _finish_frame(img, pasted, alpha, (10, 7), ct, 1, bits=10 if img.dtype == np.uint16 else None)
        want = img.copy()  # the whole touched area as one box, converted pixel by pixel the same way
        back = ct.from_working(pasted)
        if img.dtype == np.uint16:
            back = codes_from_unit(back, "uint16", 10)
        region = want[7:67, 10:100, :3]
        region[touched] = back[touched]
        np.testing.assert_array_equal(got, want)
        assert matte[7:67, 10:100].tolist() == alpha.tolist() and matte.sum() == alpha.sum()


def test_packed_frames_restore_in_their_words_with_or_without_the_matte(tmp_path):
    """A packed 10-bit DPX frame through queue_batch: its words come back restored (the integer-codes frame's
    result, packed), with the matte when asked for and without that transfer when not."""
    from facefix.colour import colour_transform
    from facefix.io import Frame, FrameFormat, read_frame, write_frame
    from facefix.io.dpx import PackedFrame, unpack_filled_10bit
    from facefix.io.sequence import read_packed_frame

    clip = synth.motion_clip(2, (120, 150), translate=(2, 1), rotate_deg=2, start_scale=0.6)
    fmt = FrameFormat(150, 120, ("R", "G", "B"), "uint16", 10, file_format="dpx")
    for i, f in enumerate(clip.frames):
        write_frame(tmp_path / f"f{i}.dpx", Frame(i, f, fmt))
    faces = [[_face(lm)] for lm in clip.landmarks]
    s = Settings(model="passthrough", mask="box", temporal=0)
    e = _engine(s, Sharpen())
    srgb = colour_transform("srgb")
    codes = [read_frame(tmp_path / f"f{i}.dpx", codes=True) for i in range(2)]
    want = queue_batch([c.pixels for c in codes], faces, s, e, colorspace=srgb, bits=[10, 10])
    results = {}
    for keep in (True, False):
        packed = [read_packed_frame(tmp_path / f"f{i}.dpx", i) for i in range(2)]
        assert all(isinstance(p, PackedFrame) for p in packed)
        results[keep] = queue_batch(packed, faces, s, e, colorspace=srgb, keep_mattes=keep)
    for w, with_matte, without in zip(want, results[True], results[False]):
        image, alpha = w.result()
        for p in (with_matte, without):
            out = p.output(0, fmt)
            assert isinstance(out, PackedFrame)
            np.testing.assert_array_equal(unpack_filled_10bit(out.words, out.layout) >> 6, image >> 6)
        np.testing.assert_array_equal(with_matte.matte(), alpha)
        assert alpha.max() > 0.99
        with pytest.raises(Exception, match="without its matte"):
            without.matte()


def test_a_host_mask_blends_alike_in_codes_and_in_words(tmp_path):
    """The host mask blends the result with the plate in the file's own values: the integer-codes path (on the
    CPU) and the 10-bit DPX words path (on the device) give the same samples, and where the mask is 0 every
    sample is the plate's."""
    from facefix.colour import colour_transform
    from facefix.io import Frame, FrameFormat, read_frame, write_frame
    from facefix.io.dpx import PackedFrame, unpack_filled_10bit
    from facefix.io.sequence import read_packed_frame

    clip = synth.motion_clip(2, (120, 150), translate=(2, 1), rotate_deg=2, start_scale=0.6)
    fmt = FrameFormat(150, 120, ("R", "G", "B"), "uint16", 10, file_format="dpx")
    for i, f in enumerate(clip.frames):
        write_frame(tmp_path / f"f{i}.dpx", Frame(i, f, fmt))
    faces = [[_face(lm)] for lm in clip.landmarks]
    mask = np.zeros((120, 150), np.float32)
    mask[:, 75:] = 1.0
    mask[:, 60:75] = np.linspace(0, 1, 15, dtype=np.float32)
    s = Settings(model="passthrough", mask="box", temporal=0)
    e = _engine(s, Sharpen())
    srgb = colour_transform("srgb")
    codes = [read_frame(tmp_path / f"f{i}.dpx", codes=True) for i in range(2)]
    plain = [p.result() for p in queue_batch([c.pixels.copy() for c in codes], faces, s, e, colorspace=srgb,
                                             bits=[10, 10])]
    want = queue_batch([c.pixels for c in codes], faces, s, e, colorspace=srgb, bits=[10, 10], masks=[mask, mask])
    packed = [read_packed_frame(tmp_path / f"f{i}.dpx", i) for i in range(2)]
    got = queue_batch(packed, faces, s, e, colorspace=srgb, masks=[mask, mask])
    for w, g, c, (free, free_alpha) in zip(want, got, codes, plain):
        image, alpha = w.result()
        out = g.output(0, fmt)
        assert isinstance(out, PackedFrame)
        np.testing.assert_array_equal(unpack_filled_10bit(out.words, out.layout) >> 6, image >> 6)
        assert np.array_equal(image[:, :60], c.pixels[:, :60]) and not np.array_equal(free[:, :60], c.pixels[:, :60])
        assert np.array_equal(image[:, 75:], free[:, 75:])
        np.testing.assert_array_equal(g.matte(), alpha)
        np.testing.assert_allclose(alpha, free_alpha * mask, atol=1e-6)
