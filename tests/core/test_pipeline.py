"""The frame-in/frame-out core with the passthrough restorer and a deterministic toy restorer."""

import numpy as np
import pytest
import torch

from facefix import Face, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.geometry import crop_from_frame_matrix, invert_affine, warp_affine
from facefix.pipeline import queue_batch, restore_batch, stage_frame


def restore_frame(image, faces, settings, engine, *, colorspace="srgb"):
    """One frame through ``restore_batch`` (sRGB unless told), faces below --min-face left alone."""
    from facefix.colour import colour_transform, resolve_colorspace

    keep = [f for f in faces if f.size >= settings.min_face]
    ct = colour_transform(resolve_colorspace(colorspace, is_float=False))
    (out,) = restore_batch([np.asarray(image, np.float32)], [keep], settings, engine, colorspace=ct)
    return out



def _face(landmarks):
    lm = np.asarray(landmarks, float)
    c = lm.mean(0)
    return Face(box=(c[0] - 60, c[1] - 80, c[0] + 60, c[1] + 70), landmarks=lm)


def _psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-30))


class Sharpen:
    """A deterministic stand-in for a face model: visibly changes the face, like a restorer would."""

    def __call__(self, crops, fidelity=0.5):
        blur = torch.nn.functional.avg_pool2d(crops, 5, stride=1, padding=2, count_include_pad=False)
        return (crops + 0.8 * (crops - blur)).clamp(0, 1)


def _engine(settings, restorer=None):
    e = Engine(settings)
    if restorer is not None:
        e._restorer = restorer
    return e


@pytest.fixture(scope="module")
def still():
    return synth.astronaut(), synth.ASTRONAUT_LANDMARKS


def test_passthrough_is_lossless_and_outside_is_bit_identical(still):
    img, lm = still
    s = Settings(model="passthrough", mask="box", temporal=0)
    out, alpha = restore_frame(img, [_face(lm)], s, _engine(s))
    assert out.dtype == np.float32 and out.shape == img.shape
    outside = alpha == 0
    assert outside.sum() > 0.8 * alpha.size
    assert np.array_equal(out[outside], img[outside])  # bit-identical
    inside = alpha > 0
    assert _psnr(out[inside], img[inside]) >= 45.0


def test_plain_align_and_paste_loss_is_measured(still):
    """What a plain replace paste would lose (the reason FaceFix pastes the restored *change* instead)."""
    img, lm = still
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    m = crop_from_frame_matrix(lm)[None]
    back = warp_affine(warp_affine(x, m, (512, 512)), invert_affine(m), img.shape[:2], mode="bilinear")
    back = back[0].numpy().transpose(1, 2, 0)
    s = Settings(model="passthrough", mask="box", temporal=0)
    _, alpha = restore_frame(img, [_face(lm)], s, _engine(s))
    inside = alpha > 0.99
    assert 35.0 < _psnr(back[inside], img[inside]) < 60.0


def test_restorer_changes_only_inside_the_matte(still):
    img, lm = still
    s = Settings(model="passthrough", mask="box", temporal=0, color_match=0.0)
    out, alpha = restore_frame(img, [_face(lm)], s, _engine(s, Sharpen()))
    changed = np.any(out != img, axis=-1)
    assert changed.sum() > 1000
    assert not np.any(changed & (alpha == 0))


def test_strength_zero_returns_the_input(still):
    img, lm = still
    s = Settings(model="passthrough", mask="box", temporal=0, strength=0.0)
    out, _ = restore_frame(img, [_face(lm)], s, _engine(s, Sharpen()))
    assert np.array_equal(out, img)


def test_strength_scales_the_change(still):
    img, lm = still
    full = Settings(model="passthrough", mask="box", temporal=0, color_match=0.0)
    half = Settings(model="passthrough", mask="box", temporal=0, color_match=0.0, strength=0.5)
    a, _ = restore_frame(img, [_face(lm)], full, _engine(full, Sharpen()))
    b, _ = restore_frame(img, [_face(lm)], half, _engine(half, Sharpen()))
    da, db = a - img, b - img
    big = np.abs(da) > 0.02
    ratio = np.median(db[big] / da[big])
    assert ratio == pytest.approx(0.5, abs=0.02)


def test_colour_match_pulls_a_tinted_face_back(still):
    img, lm = still

    class Tint:
        def __call__(self, crops, fidelity=0.5):
            return (crops + torch.tensor([0.12, -0.05, 0.0]).view(1, 3, 1, 1)).clamp(0, 1)

    s_off = Settings(model="passthrough", mask="box", temporal=0, color_match=0.0)
    s_on = Settings(model="passthrough", mask="box", temporal=0, color_match=1.0)
    off, alpha = restore_frame(img, [_face(lm)], s_off, _engine(s_off, Tint()))
    on, _ = restore_frame(img, [_face(lm)], s_on, _engine(s_on, Tint()))
    core = alpha > 0.99
    err_off = np.abs((off - img)[core].mean(0)).max()
    err_on = np.abs((on - img)[core].mean(0)).max()
    assert err_off > 0.04 and err_on < 0.25 * err_off


def test_float_hdr_and_nan_outside_faces_are_kept(still):
    img, lm = still
    lin = img.copy()
    lin[5:10, 5:10] = 7.5  # HDR highlight far from the face
    lin[20, 20] = np.nan
    lin[21, 21] = np.inf
    lin = np.concatenate([lin, np.full(lin.shape[:2] + (1,), 0.7, np.float32)], axis=-1)  # RGBA
    s = Settings(model="passthrough", mask="box", temporal=0, colorspace="linear")
    out, alpha = restore_frame(lin, [_face(lm)], s, _engine(s, Sharpen()))
    assert out.shape[-1] == 4 and np.array_equal(out[..., 3], lin[..., 3])
    assert np.isnan(out[20, 20, :3]).all() and np.isinf(out[21, 21, :3]).all()
    np.testing.assert_array_equal(out[5:10, 5:10], lin[5:10, 5:10])


def test_nan_inside_the_face_is_reported_not_spread(still):
    img, lm = still
    bad = img.copy()
    cx, cy = lm.mean(0).astype(int)
    bad[cy, cx] = np.nan
    s = Settings(model="passthrough", mask="box", temporal=0)
    from facefix.pipeline import BatchStats

    stats = BatchStats()
    (out, alpha), = restore_batch([bad], [[_face(lm)]], s, _engine(s, Sharpen()), stats=stats)
    assert stats.nonfinite_pixels == 1
    assert np.isfinite(out[alpha > 0]).sum() >= (alpha > 0).sum() * 3 - 3


def test_no_faces_passes_frame_through(still):
    img, _ = still
    s = Settings(model="passthrough", temporal=0)
    out, alpha = restore_frame(img, [], s, _engine(s, Sharpen()))
    assert np.array_equal(out, img) and not alpha.any()


def test_tiny_faces_are_skipped(still):
    img, lm = still
    s = Settings(model="passthrough", temporal=0, min_face=500)
    out, alpha = restore_frame(img, [_face(lm)], s, _engine(s, Sharpen()))
    assert np.array_equal(out, img) and not alpha.any()


def test_batches_give_identical_output():
    clip = synth.motion_clip(4, (160, 160), translate=(2, 1), rotate_deg=3, start_scale=0.7)
    faces = [[_face(lm)] for lm in clip.landmarks]
    s = Settings(model="passthrough", mask="box", temporal=0)
    e = _engine(s, Sharpen())
    together = restore_batch(list(clip.frames), faces, s, e)
    alone = [restore_batch([f], [fs], s, e)[0] for f, fs in zip(clip.frames, faces)]
    again = restore_batch(list(clip.frames), faces, s, e)
    for (a, _), (b, _), (c, _) in zip(together, alone, again):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_queued_frames_finished_on_other_threads_match_restore_batch():
    """The streaming path (staged on decode threads, queued, finished on I/O threads in any order) gives
    restore_batch's pixels, and with ``inplace`` writes into the caller's frames instead of copying them."""
    from concurrent.futures import ThreadPoolExecutor

    from facefix.colour import colour_transform

    clip = synth.motion_clip(4, (160, 160), translate=(2, 1), rotate_deg=3, start_scale=0.7)
    faces = [[_face(lm)] for lm in clip.landmarks]
    s = Settings(model="passthrough", mask="box", temporal=0)
    e = _engine(s, Sharpen())
    expected = restore_batch(list(clip.frames), faces, s, e)
    owned = [f.copy() for f in clip.frames]
    with ThreadPoolExecutor(3) as pool:
        staged = list(pool.map(lambda i: stage_frame(owned[i], faces[i], colour_transform("srgb"), 1, e.device),
                               range(len(owned))))
        kept = [st.rgb.clone() for st in staged]
        pending = queue_batch(owned, faces, s, e, inplace=True, staged=staged)
        finished = list(pool.map(lambda p: p.result(), reversed(pending)))[::-1]
    # The paste works on the device's own copy: the caller's staged buffers are left as they were.
    assert all(torch.equal(st.rgb, k) for st, k in zip(staged, kept))
    for (img, alpha), (want, want_alpha), mine in zip(finished, expected, owned):
        assert img is mine
        assert np.array_equal(img, want) and np.array_equal(alpha, want_alpha)
        assert alpha.max() > 0.99  # a face was really restored in every frame


def test_two_faces_in_one_frame():
    frame, lms = synth.crowd_frame((240, 320), 2, face_px=90)
    s = Settings(model="passthrough", mask="box", temporal=0)
    out, alpha = restore_frame(frame, [_face(lm) for lm in lms], s, _engine(s, Sharpen()))
    left, right = alpha[:, :160], alpha[:, 160:]
    assert left.max() > 0.99 and right.max() > 0.99


def test_out_of_gpu_memory_backs_off_and_goes_on():
    from facefix.engine import run_model

    calls = []

    class Tight:
        def __call__(self, crops, fidelity=0.5):
            calls.append(crops.shape[0])
            if crops.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return crops * 0.5

    crops = torch.rand(5, 3, 8, 8)
    out = run_model(Tight(), crops, [0.5] * 5, torch.float32, micro_batch=8)
    assert torch.equal(out, crops * 0.5)
    assert calls == [8, 4, 2, 2, 2]  # halved until it fits, then every face restored


def test_to_device_on_cpu_keeps_values_and_dtype():
    from facefix.tensors import to_device

    t = to_device(np.arange(5.0)[::-1], "cpu", torch.float32)
    assert t.dtype == torch.float32 and t.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert to_device([1, 2], torch.device("cpu")).dtype == torch.int64


@pytest.mark.parametrize(("dtype", "bits"), [(np.uint8, 8), (np.uint16, 10), (np.uint16, 16)])
def test_integer_codes_in_give_the_float_paths_codes_out(still, dtype, bits):
    """A file's integer codes go through the core without a full-frame float round trip: the result is
    exactly what the float frame gives once written at that depth, and outside the matte the very input."""
    from facefix.io.frames import codes_from_unit, unit_from_codes

    img, lm = still
    native = np.iinfo(dtype).max
    stored = np.rint(np.clip(img, 0, 1) * (2**bits - 1)).astype(np.int64)
    codes = np.rint(stored * (native / (2**bits - 1))).astype(dtype)  # full-range codes, as the reader gives
    s = Settings(model="passthrough", mask="mesh", temporal=0)
    e = _engine(s, Sharpen())
    plain = unit_from_codes(codes, bits)
    (want, want_alpha), = restore_batch([plain], [[_face(lm)]], s, e)
    (got, alpha), = restore_batch([codes.copy()], [[_face(lm)]], s, e, bits=bits)
    assert got.dtype == dtype
    np.testing.assert_array_equal(alpha, want_alpha)
    np.testing.assert_array_equal(got, codes_from_unit(want, np.dtype(dtype).name, bits))
    outside = alpha == 0
    np.testing.assert_array_equal(got[outside], codes[outside])
    assert (got[alpha > 0.5] != codes[alpha > 0.5]).mean() > 0.3  # the face really changed


def test_face_regions_for_a_shot_equal_each_frames_own():
    """run_clip finds every frame's face region once for the shot; staged with it, a frame is what it is when
    staged alone, faces over the frame's edges included."""
    from facefix.colour import colour_transform
    from facefix.faces import face_regions
    from facefix.pipeline import stage_frame

    clip = synth.motion_clip(4, (96, 96), translate=(2, 1), rotate_deg=3)
    faces = {n: [Face(box=(0, 0, 1, 1), landmarks=lm + (k * 40.0, k * 30.0)) for k in range(n % 3)]
             for n, lm in enumerate(clip.landmarks)}
    regions = face_regions(faces)
    assert set(regions) == {n for n, fs in faces.items() if fs}
    assert max(r[2] for r in regions.values()) > 96  # a face past the right edge
    ct = colour_transform("srgb")
    for n, fs in faces.items():
        alone = stage_frame(clip.frames[n], fs, ct, 1, torch.device("cpu"))
        given = stage_frame(clip.frames[n], fs, ct, 1, torch.device("cpu"), region=regions.get(n))
        assert alone.origin == given.origin
        assert (alone.rgb is None and given.rgb is None) or torch.equal(alone.rgb, given.rgb)
    assert face_regions({0: [], 1: []}) == {}
