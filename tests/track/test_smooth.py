"""Zero-lag smoothing: jitter removed on a still face, no lag on a fast-moving one (real photo, known motion)."""

from __future__ import annotations

import numpy as np
import pytest

from facefix.demo import synth
from facefix.errors import InputError, SettingsError
from facefix.faces import Face, FaceTrack
from facefix.track import appearance_descriptors, build_tracks
from facefix.track.smooth import SmoothParams, rts_smooth, smooth_track


def _apply(mats: np.ndarray) -> np.ndarray:
    return synth.apply_affine(mats, synth.ASTRONAUT_LANDMARKS[None].repeat(len(mats), 0))


def test_static_face_jitter_is_removed(still, helpers) -> None:
    n = 60
    mats = helpers.translation_mats(n, (128.0, 96.0), (0.0, 0.0), 0.8)
    frame = helpers.render(mats[:1], (192, 256), still)[0]  # a static shot: every frame is this one
    truth = _apply(mats)
    rng = np.random.default_rng(7)
    dets = {1001 + t: [helpers.noisy_face(truth[t], 3.0, rng)] for t in range(n)}
    app = {k: appearance_descriptors(frame, v) for k, v in dets.items()}
    tracks = build_tracks(dets, set(), appearance=app)
    assert len(tracks.tracks) == 1
    raw = np.stack([dets[1001 + t][0].landmarks for t in range(n)])
    sm = np.stack([tracks.tracks[0].faces[1001 + t].landmarks for t in range(n)])
    raw_rms, sm_rms = helpers.rms_template(raw, truth), helpers.rms_template(sm, truth)
    print(f"static jitter at template scale: raw {raw_rms:.2f} px, smoothed {sm_rms:.2f} px ({sm_rms / raw_rms:.2f}x)")
    assert raw_rms > 3.5  # the noise really is there (3 px per axis)
    assert sm_rms < 0.5 * raw_rms
    # Frame-to-frame jitter (what the eye sees as shimmer) drops even more.
    jit_raw = np.abs(np.diff(raw, axis=0)).mean()
    jit_sm = np.abs(np.diff(sm, axis=0)).mean()
    assert jit_sm < 0.2 * jit_raw


def test_fast_translation_has_no_lag(still, helpers) -> None:
    n = 28
    step = (12.0, 2.0)  # frame px per frame: ~0.15 face sizes per frame, ~75 template px per frame
    mats = helpers.translation_mats(n, (50.0, 70.0), step, 0.8)
    frames = helpers.render(mats, (160, 448), still)
    truth = _apply(mats)
    rng = np.random.default_rng(3)
    dets = {t: [helpers.noisy_face(truth[t], 1.0, rng)] for t in range(n)}
    app = {t: appearance_descriptors(frames[t], dets[t]) for t in range(n)}
    tracks = build_tracks(dets, set(), appearance=app)
    assert len(tracks.tracks) == 1
    sm = np.stack([tracks.tracks[0].faces[t].landmarks for t in range(n)])
    raw = np.stack([dets[t][0].landmarks for t in range(n)])
    err = helpers.rms_template(sm, truth)
    # The systematic part of the error (lag shows up as a mean offset along the motion).
    k = 512.0 / helpers.face_size(truth[0])
    bias = float(np.abs((sm - truth).mean(axis=(0, 1))).max() * k)
    # A causal exponential smoother of similar strength for comparison: it trails the motion.
    ema = raw.copy()
    for t in range(1, n):
        ema[t] = 0.3 * raw[t] + 0.7 * ema[t - 1]
    ema_err = helpers.rms_template(ema, truth)
    print(f"fast translation ({np.hypot(*step) * k:.0f} template px/frame): smoothed error {err:.2f} px, "
          f"bias {bias:.2f} px; raw {helpers.rms_template(raw, truth):.2f} px; causal EMA {ema_err:.1f} px")
    assert err <= 1.0
    assert bias <= 0.5
    assert ema_err > 10 * err  # the comparison really lags: the test could fail


def test_motion_onset_error_is_bounded(helpers) -> None:
    # Static, then a sudden fast move: the only place a zero-lag smoother may err is the kink.
    size, n = 100.0, 60
    pos = np.concatenate([np.zeros(30), np.arange(1, n - 29) * 0.05 * size])
    z = np.repeat(pos[:, None], 10, axis=1)
    noisy = z + np.random.default_rng(0).normal(0, 3.0 * size / 512, z.shape)
    s = rts_smooth(noisy, np.ones(n, bool), measurement_std=0.01 * size, accel_std=0.003 * size)
    plain = rts_smooth(noisy, np.ones(n, bool), measurement_std=0.01 * size, accel_std=0.003 * size, adaptive=False)
    err = np.abs(s - z).max(axis=1) * 512 / size
    err_plain = np.abs(plain - z).max(axis=1) * 512 / size
    print(f"motion onset (25.6 template px/frame from rest): max error {err.max():.2f} px at frame {err.argmax()} "
          f"(single pass {err_plain.max():.2f} px), RMS away from the kink "
          f"{np.sqrt((err[:25] ** 2).mean()):.2f} / {np.sqrt((err[36:] ** 2).mean()):.2f} px")
    assert err.max() < 10.0
    assert err.max() < 0.6 * err_plain.max()
    assert np.sqrt((err[36:] ** 2).mean()) < 3.0


def test_rts_exact_on_constant_velocity_and_fills_gaps() -> None:
    t = np.arange(40, dtype=np.float64)
    z = np.stack([3.0 + 7.5 * t, -2.0 * t], axis=1)
    obs = np.ones(40, bool)
    obs[10:16] = False
    corrupt = z.copy()
    corrupt[10:16] = 1e6  # unobserved rows must be ignored
    s = rts_smooth(corrupt, obs, measurement_std=1.0, accel_std=0.1)
    np.testing.assert_allclose(s, z, atol=1e-4)


def test_smooth_track_keeps_host_faces_and_boxes_valid() -> None:
    lm = synth.ASTRONAUT_LANDMARKS
    rng = np.random.default_rng(1)
    faces = {}
    for n in range(10):
        p = lm + rng.normal(0, 2.0, lm.shape)
        src = "host" if n == 4 else "detected"
        faces[n] = Face(box=(180.0, 70.0, 270.0, 170.0), landmarks=p, source=src)
    out = smooth_track(FaceTrack(id=3, faces=faces), list(range(10)))
    np.testing.assert_array_equal(out.faces[4].landmarks, faces[4].landmarks)
    assert out.faces[4].box == faces[4].box and out.faces[4].source == "host"
    for n in range(10):
        b = out.faces[n].box
        assert b[2] > b[0] and b[3] > b[1]
        assert out.faces[n].track_id == 3
    with pytest.raises(InputError):
        smooth_track(FaceTrack(id=3, faces=faces), list(range(5)))


def test_bad_parameters() -> None:
    with pytest.raises(SettingsError):
        SmoothParams(measurement_std=0.0)
    with pytest.raises(InputError):
        rts_smooth(np.zeros(5), np.ones(5, bool), measurement_std=1.0, accel_std=1.0)
