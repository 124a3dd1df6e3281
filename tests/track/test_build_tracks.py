"""build_tracks end to end on real-photo clips: occlusions, crossing faces, stepped frame numbers."""

from __future__ import annotations

import numpy as np
import pytest

from facefix.demo import synth
from facefix.errors import InputError, SettingsError
from facefix.faces import Face, FaceTrack
from facefix.track import appearance_descriptors, build_tracks
from facefix.track.interpolate import fill_gaps


def test_blink_occlusion_keeps_one_id_and_fills_the_gap(helpers) -> None:
    # The synth clip paints over the eyes on frames 12-15; the detector is taken to miss those frames.
    clip = synth.motion_clip(28, (160, 224), translate=(2.5, 0.8), rotate_deg=0.4, start_scale=0.55,
                             occlude=(12, 4))
    rng = np.random.default_rng(11)
    dets = {}
    for t in range(len(clip.frames)):
        dets[t] = [] if clip.occluded[t] else [helpers.noisy_face(clip.landmarks[t], 1.0, rng)]
    app = {t: appearance_descriptors(clip.frames[t], dets[t]) for t in dets}
    tracks = build_tracks(dets, set(), appearance=app)
    assert len(tracks.tracks) == 1
    tr = tracks.tracks[0]
    assert tr.frames == list(range(28))
    assert [n for n in tr.frames if tr.faces[n].source == "interpolated"] == [12, 13, 14, 15]
    filled = np.stack([tr.faces[n].landmarks for n in range(12, 16)])
    err = helpers.rms_template(filled, clip.landmarks[12:16])
    rest = helpers.rms_template(np.stack([tr.faces[n].landmarks for n in tr.frames]), clip.landmarks)
    print(f"occlusion gap of 4 frames: filled landmarks error {err:.2f} px at template scale (whole track {rest:.2f})")
    assert err < 2.0
    # Without smoothing the gap is filled by interpolation alone and is still close.
    raw = build_tracks(dets, set(), appearance=app, smooth=False).tracks[0]
    err_interp = helpers.rms_template(np.stack([raw.faces[n].landmarks for n in range(12, 16)]), clip.landmarks[12:16])
    print(f"  interpolation only: {err_interp:.2f} px")
    assert err_interp < 3.0
    assert raw.faces[13].source == "interpolated"


def test_gap_longer_than_max_gap_starts_a_new_track(helpers) -> None:
    lm = synth.ASTRONAUT_LANDMARKS
    rng = np.random.default_rng(2)
    dets = {t: ([] if 5 <= t < 10 else [helpers.noisy_face(lm, 1.0, rng)]) for t in range(15)}
    assert len(build_tracks(dets, set(), max_gap=4).tracks) == 2
    assert len(build_tracks(dets, set(), max_gap=5).tracks) == 1


def _two_faces_crossing(still, helpers, distinct: bool):
    n, size = 26, (150, 320)
    a = helpers.translation_mats(n, (40.0, 70.0), (10.0, 0.6), 0.5)
    b = helpers.translation_mats(n, (290.0, 82.0), (-10.0, -0.6), 0.5)
    lm_b_still = synth.ASTRONAUT_LANDMARKS
    still_b = still
    if distinct:  # the photo mirrored, colours swapped: another-looking person
        still_b = np.ascontiguousarray(still[:, ::-1, ::-1])
        lm_b_still = synth.ASTRONAUT_LANDMARKS.copy()
        lm_b_still[:, 0] = 512 - lm_b_still[:, 0]
        lm_b_still = lm_b_still[[1, 0, 2, 4, 3]]
        cb = lm_b_still.mean(axis=0)
        b = np.stack([synth.similarity(0.5, 0.0, 290.0 - 10.0 * t - cb[0], 82.0 - 0.6 * t - cb[1], center=tuple(cb))
                      for t in range(n)])
    lm_a = synth.apply_affine(a, synth.ASTRONAUT_LANDMARKS[None].repeat(n, 0))
    lm_b = synth.apply_affine(b, lm_b_still[None].repeat(n, 0))
    frames = np.stack([
        synth.warp_still(still, a[t], size, background=synth.warp_still(still_b, b[t], size,
                                                                          background=np.full((*size, 3), 0.4, np.float32)))
        for t in range(n)
    ])
    return frames, lm_a, lm_b


@pytest.mark.parametrize("distinct", [True, False], ids=["different-faces", "same-face"])
def test_crossing_faces_keep_their_ids(still, helpers, distinct) -> None:
    frames, lm_a, lm_b = _two_faces_crossing(still, helpers, distinct)
    n = len(frames)
    rng = np.random.default_rng(4)
    dets, hidden = {}, []
    for t in range(n):
        fa = helpers.noisy_face(lm_a[t], 1.5, rng)
        fb = helpers.noisy_face(lm_b[t], 1.5, rng)
        # Face B passes behind A: when they overlap heavily the detector sees only A.
        if np.linalg.norm(lm_a[t].mean(0) - lm_b[t].mean(0)) < 0.6 * helpers.face_size(lm_a[t]):
            hidden.append(t)
            faces = [fa]
        else:
            faces = [fb, fa] if t % 2 else [fa, fb]  # detector order carries no identity
        dets[t] = faces
    assert 2 <= len(hidden) <= 5
    app = {t: appearance_descriptors(frames[t], dets[t]) for t in dets}
    tracks = build_tracks(dets, set(), appearance=app)
    assert len(tracks.tracks) == 2
    # Each track must follow one true face on every frame it has.
    for tr in tracks.tracks:
        d_a = [np.linalg.norm(tr.faces[t].landmarks - lm_a[t], axis=1).mean() for t in tr.frames]
        d_b = [np.linalg.norm(tr.faces[t].landmarks - lm_b[t], axis=1).mean() for t in tr.frames]
        follows_a = np.mean(d_a) < np.mean(d_b)
        worst = max(d_a) if follows_a else max(d_b)
        assert worst < 0.1 * helpers.face_size(lm_a[0]), (distinct, follows_a, worst)
        assert tr.frames == list(range(n))
    b_track = min(tracks.tracks, key=lambda tr: np.mean([np.linalg.norm(tr.faces[t].landmarks - lm_b[t]) for t in tr.frames]))
    assert [t for t in b_track.frames if b_track.faces[t].source == "interpolated"] == hidden


def test_stepped_frame_numbers(still, helpers) -> None:
    # Frames 1001, 1003, ... 1059 (every other frame analysed); 1021 and 1023 missed.
    numbers = list(range(1001, 1061, 2))
    mats = helpers.translation_mats(len(numbers), (60.0, 80.0), (3.0, 0.0), 0.55)
    truth = synth.apply_affine(mats, synth.ASTRONAUT_LANDMARKS[None].repeat(len(numbers), 0))
    rng = np.random.default_rng(9)
    dets = {n: ([] if n in (1021, 1023) else [helpers.noisy_face(truth[i], 1.0, rng)]) for i, n in enumerate(numbers)}
    tracks = build_tracks(dets, {1041}, max_gap=2)
    assert [(min(t.faces), max(t.faces)) for t in tracks.tracks] == [(1001, 1039), (1041, 1059)]
    first = tracks.tracks[0]
    assert first.frames == list(range(1001, 1041, 2))  # no even frame is invented
    assert [n for n in first.frames if first.faces[n].source == "interpolated"] == [1021, 1023]
    est = np.stack([t.faces[n].landmarks for t in tracks.tracks for n in t.frames])
    err = helpers.rms_template(est, truth)
    print(f"stepped frames (3 px per listed frame): error {err:.2f} px at template scale")
    assert err < 1.0
    # A cut between two listed frames (1040 is not analysed) also ends the tracks.
    assert len(build_tracks(dets, {1040}, max_gap=2).tracks) == 2
    # A gap of 2 listed frames is 4 frame numbers, but max_gap counts listed frames.
    assert len(build_tracks(dets, set(), max_gap=1).tracks) == 2


def test_interpolation_is_exact_for_constant_acceleration() -> None:
    lm0 = synth.ASTRONAUT_LANDMARKS
    t = np.arange(12, dtype=np.float64)
    offs = np.stack([2.0 * t + 0.25 * t**2, -1.5 * t], axis=1)
    faces = {}
    for k in [0, 1, 2, 3, 4, 8, 9, 10, 11]:
        lm = lm0 + offs[k]
        faces[k] = Face(box=(lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()), landmarks=lm, score=0.9)
    filled = fill_gaps(FaceTrack(id=0, faces=faces), list(range(12)), max_gap=5)
    for k in (5, 6, 7):
        f = filled.faces[k]
        assert f.source == "interpolated" and f.score == 0.9
        lin = lm0 + offs[4] + (offs[8] - offs[4]) * (k - 4) / 4
        err = np.abs(f.landmarks - (lm0 + offs[k])).max()
        assert err < 0.35 * np.abs(lin - (lm0 + offs[k])).max()  # far better than a straight line
    assert set(fill_gaps(FaceTrack(id=0, faces=faces), list(range(12)), max_gap=2).faces) == set(faces)


def test_meshes_are_interpolated_and_inputs_checked() -> None:
    lm = synth.ASTRONAUT_LANDMARKS
    mesh0 = np.zeros((468, 3))
    mesh1 = np.ones((468, 3)) * 4
    faces = {0: Face(box=(0, 0, 50, 50), landmarks=lm, mesh=mesh0), 4: Face(box=(4, 0, 54, 50), landmarks=lm + [4, 0], mesh=mesh1)}
    out = fill_gaps(FaceTrack(id=1, faces=faces), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(out.faces[2].mesh, 2.0)
    np.testing.assert_allclose(out.faces[1].box, (1, 0, 51, 50))
    with pytest.raises(InputError):
        fill_gaps(FaceTrack(id=1, faces=faces), [0, 1, 2])
    with pytest.raises(SettingsError):
        build_tracks({0: []}, set(), max_gap=-1)
    with pytest.raises(InputError):
        build_tracks({0: [faces[0]]}, set(), appearance={})


def test_empty_and_serialisable() -> None:
    assert build_tracks({}, set()).tracks == ()
    lm = synth.ASTRONAUT_LANDMARKS
    dets = {n: [Face(box=(180, 70, 270, 170), landmarks=lm + 0.1 * n)] for n in range(5)}
    tracks = build_tracks(dets, set())
    data = tracks.to_json()
    assert data["tracks"][0]["id"] == 0 and len(data["tracks"][0]["frames"]) == 5
