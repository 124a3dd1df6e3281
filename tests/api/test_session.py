"""facefix.api: the Session every host calls. Frame in/frame out equals the command line; whole shots with
progress and cancel; tracking; the schema; a light ``import facefix``."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import facefix
from facefix import Face, FaceTracks, Settings
from facefix.api import RestoredFrame, Session, schema
from facefix.cli import main
from facefix.demo import synth
from facefix.errors import Cancelled, FaceFixError, InputError, SettingsError
from facefix.io import Frame, FrameFormat, open_source, read_frame
from facefix.io.sequence import write_frame

N = 6
SIZE = (144, 176)


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A float32 EXR sequence (scene-linear) of a moving real face, its tracks, and the frames in memory."""
    root = tmp_path_factory.mktemp("shot")
    clip = synth.motion_clip(N, SIZE, translate=(2, 1), rotate_deg=1.0, start_scale=0.6)
    from facefix.colour import colour_transform

    lin = colour_transform("linear")
    per = {}
    for i, (rgb, lm) in enumerate(zip(clip.frames, clip.landmarks)):
        n = 1001 + i
        write_frame(root / f"plate.{n:04d}.exr", Frame(n, lin.from_working(rgb), FrameFormat.for_pixels(rgb, "float")))
        per[n] = [Face(box=(*(lm.min(0) - 25), *(lm.max(0) + 25)), landmarks=lm, track_id=0)]
    tracks = FaceTracks.from_faces(per)
    tracks.save(root / "tracks.json")
    return root, tracks


SETTINGS = {"model": "gfpgan-1.4", "device": "cpu", "temporal": 0.5, "strength": 0.9, "mask": "box"}


def _cli_output(root, out, extra=()):
    argv = ["restore", str(root / "plate.####.exr"), "-o", str(out / "fixed.####.exr"), "--tracks",
            str(root / "tracks.json"), "--quiet", *extra]
    for k, v in SETTINGS.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert main(argv) == 0
    return {n: read_frame(out / f"fixed.{n}.exr").pixels for n in range(1001, 1001 + N)}


def test_restore_frame_by_frame_and_in_batches_equals_the_command_line(shot, tmp_path, fake_model):
    root, _ = shot
    written = _cli_output(root, tmp_path)
    tracks = FaceTracks.load(root / "tracks.json")  # what the command line was given
    plates = {n: read_frame(root / f"plate.{n}.exr").pixels for n in written}
    with Session(SETTINGS) as session:
        one_by_one = {n: session.restore([plates[n]], tracks, [n])[0] for n in written}
    with Session(SETTINGS) as session:
        batches = {}
        for group in ([1001, 1002], [1003, 1004, 1005], [1006]):
            for n, got in zip(group, session.restore([plates[n] for n in group], tracks, group)):
                batches[n] = got
    for n, want in written.items():
        assert isinstance(one_by_one[n], RestoredFrame)
        assert np.array_equal(one_by_one[n].image, want), n
        assert np.array_equal(batches[n].image, want), n
        assert one_by_one[n].matte.shape == want.shape[:2] and one_by_one[n].matte.max() > 0.99
        changed = np.abs(want - plates[n]).max(axis=-1) > 0
        assert changed.any() and not changed[one_by_one[n].matte == 0].any()  # outside the matte: the plate's own
    # The temporal stage did act: without it frame 1006 differs.
    with Session({**SETTINGS, "temporal": 0}) as session:
        alone = session.restore([plates[1006]], tracks, [1006])[0].image
    assert not np.array_equal(alone, written[1006])


def test_restore_takes_per_frame_faces_keyframes_and_integer_codes(shot, fake_model):
    root, tracks = shot
    plate = read_frame(root / "plate.1001.exr").pixels
    faces = tracks.faces_at(1001)
    with Session({**SETTINGS, "temporal": 0, "strength": {1001: 0.0, 1003: 1.0}}) as session:
        assert session.settings.animation["strength"] == {1001: 0.0, 1003: 1.0}
        off, = session.restore([plate], [faces], [1001])
        on, = session.restore([plate], [faces], [1003])
        codes = (np.clip(plate, 0, 1) * 65535).round().astype(np.uint16)
        as_codes, = session.restore([codes], [faces], [1003], colorspace="srgb")
    assert np.array_equal(off.image, plate)  # strength keyed to 0 at 1001
    assert not np.array_equal(on.image, plate)
    assert as_codes.image.dtype == np.uint16 and as_codes.image.shape == codes.shape


def test_restore_refuses_nonsense_with_one_line_errors(shot, fake_model):
    root, tracks = shot
    plate = read_frame(root / "plate.1001.exr").pixels
    with Session(SETTINGS) as session:
        for call, words in [
            (lambda: session.restore([plate], tracks, [1001, 1002]), "frame numbers"),
            (lambda: session.restore([plate[..., 0]], tracks, [1001]), "(H, W, C>=3)"),
            (lambda: session.restore([plate, plate], tracks, [1001, 1001]), "twice"),
            (lambda: session.restore([plate], [["not a face"]], [1001]), "Face objects"),
        ]:
            with pytest.raises(InputError) as err:
                call()
            assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FaceFixError, match="closed"):
        session.restore([plate], tracks, [1001])
    with pytest.raises(SettingsError, match="--strength"):
        Session({"strength": 7})
    with pytest.raises(SettingsError, match="unknown parameter"):
        Session({"strenght": 0.5})
    with pytest.raises(SettingsError, match="--device"):
        Session(SETTINGS, device="gpu")


def test_run_reports_progress_cancels_between_batches_and_resumes_to_the_same_frames(shot, tmp_path, fake_model):
    root, _ = shot
    tracks = FaceTracks.load(root / "tracks.json")
    full = tmp_path / "full"
    with Session({**SETTINGS, "batch": 2}) as session:
        summary = session.run(str(root / "plate.####.exr"), str(full / "f.####.exr"), tracks=tracks)
        assert summary.frames_written == N and str(full) in summary.line()
        stop = threading.Event()
        seen = []

        def progress(done, total):
            seen.append((done, total))
            if done >= 2:
                stop.set()  # asked after the batch of frames 1002-1003 started: honoured before the next

        part = tmp_path / "part"
        with pytest.raises(Cancelled) as err:
            session.run(str(root / "plate.####.exr"), str(part / "f.####.exr"), tracks=str(root / "tracks.json"),
                        on_progress=progress, cancel=stop)
        assert "cancelled after 3 of 6 frames" in str(err.value)  # batches of 1, 2, 2, 1 frames
        assert seen == [(1, N), (2, N), (3, N)]
        assert sorted(p.name for p in part.glob("f.*.exr")) == ["f.1001.exr", "f.1002.exr", "f.1003.exr"]
        resumed = session.run(str(root / "plate.####.exr"), str(part / "f.####.exr"), tracks=tracks, resume=True)
        assert resumed.frames_resumed == 3 and resumed.frames_written == N - 3
    for n in range(1001, 1001 + N):
        assert np.array_equal(read_frame(part / f"f.{n}.exr").pixels, read_frame(full / f"f.{n}.exr").pixels)


def test_track_finds_the_face_with_progress(shot, tmp_path):
    root, _ = shot
    seen = []
    with Session({"device": "cpu"}) as session:
        tracks = session.track(str(root / "plate.####.exr"), frames="1001-1003", output=str(tmp_path / "t.json"),
                               on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert tracks.frame_numbers() == [1001, 1002, 1003] and len(tracks.tracks) == 1
    assert FaceTracks.load(tmp_path / "t.json").frame_numbers() == [1001, 1002, 1003]


def test_session_keeps_its_model_warm_and_frees_it(shot, fake_model):
    loads = fake_model
    root, tracks = shot
    plate = read_frame(root / "plate.1001.exr").pixels
    with Session(SETTINGS).warm() as session:
        for n in (1001, 1002, 1003):
            session.restore([plate], tracks, [n])
        session.run(str(root / "plate.####.exr"), str(root.parent / "warm" / "w.####.exr"), tracks=tracks,
                    frames="1001-1002")
        assert len(loads) == 1
        assert session.device == "cpu" and session.preroll > 0
    assert session._engine._restorer is None


def test_schema_has_the_controls_and_the_run_options_and_drives_the_cli(capsys):
    data = schema()
    assert data == facefix.schema()
    names = {p["name"] for p in data["params"]}
    assert names == set(Settings().to_mapping())
    run = {p["name"]: p for p in data["run"]}
    assert set(run) == {"frames", "tracks", "matte", "mask_input", "codec", "resume", "compile"}
    assert all(p["group"] == "run" for p in run.values()) and "prores" in run["codec"]["choices"]
    animatable = {p["name"] for p in data["params"] if p["animatable"]}
    assert {"strength", "fidelity", "mask_feather"} <= animatable
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(data))
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = capsys.readouterr().out
    for p in data["params"] + data["run"]:
        assert p["flag"] in text, p["flag"]


def test_import_facefix_is_light():
    code = ("import sys, facefix; assert 'torch' not in sys.modules; facefix.schema(); "
            "from facefix import Session; assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_open_source_of_the_shot_is_float(shot):
    root, _ = shot
    assert open_source(str(root / "plate.####.exr")).is_float  # the CLI's 'auto' is scene-linear here


def test_a_host_mask_limits_the_fix(shot, tmp_path, fake_model):
    """Where the host's mask is 0 the plate is untouched, where it is 1 the result is the unmasked one bit for
    bit, in between a blend; the written matte is the face matte times the mask. Whole shots and frames."""
    root, _ = shot
    tracks = FaceTracks.load(root / "tracks.json")
    h, w = SIZE
    ramp = np.zeros((h, w), np.float32)
    ramp[:, w // 2 :] = 1.0
    ramp[:, w // 2 - 8 : w // 2] = 0.5
    for n in range(1001, 1001 + N):  # as a host writes a mask: RGBA, the alpha is the mask
        rgba = np.concatenate([np.zeros((h, w, 3), np.float32), ramp[..., None]], axis=2)
        write_frame(tmp_path / f"mask.{n}.exr", Frame(n, rgba, FrameFormat.for_pixels(rgba, "half")))
    with Session({**SETTINGS, "temporal": 0}) as session:
        session.run(str(root / "plate.####.exr"), str(tmp_path / "free" / "f.####.exr"), tracks=tracks,
                    matte=str(tmp_path / "free" / "m.####.exr"))
        session.run(str(root / "plate.####.exr"), str(tmp_path / "masked" / "f.####.exr"), tracks=tracks,
                    matte=str(tmp_path / "masked" / "m.####.exr"), mask=str(tmp_path / "mask.####.exr"))
        plate_1002 = read_frame(root / "plate.1002.exr").pixels
        (img, matte), = session.restore([plate_1002], tracks, [1002], masks=[ramp])
        with pytest.raises(InputError, match="the mask is"):
            session.restore([plate_1002], tracks, [1002], masks=[ramp[:10]])
    for n in range(1001, 1001 + N):
        plate = read_frame(root / f"plate.{n}.exr").pixels
        free, masked = (read_frame(tmp_path / d / f"f.{n}.exr").pixels for d in ("free", "masked"))
        m_free, m_masked = (read_frame(tmp_path / d / f"m.{n}.exr").pixels[..., 0] for d in ("free", "masked"))
        assert not np.array_equal(free[:, : w // 2 - 8], plate[:, : w // 2 - 8])  # the face spans both halves
        assert np.array_equal(masked[:, : w // 2 - 8], plate[:, : w // 2 - 8])
        assert np.array_equal(masked[:, w // 2 :], free[:, w // 2 :])
        mid = slice(w // 2 - 8, w // 2)
        np.testing.assert_allclose(masked[:, mid], 0.5 * (plate[:, mid] + free[:, mid]), atol=1e-6)
        np.testing.assert_allclose(m_masked, m_free * ramp, atol=1e-3)  # (a half-float file)
    assert np.array_equal(img[:, : w // 2 - 8], plate_1002[:, : w // 2 - 8]) and matte[:, : w // 2 - 8].max() == 0
    assert np.array_equal(img, read_frame(tmp_path / "masked" / "f.1002.exr").pixels)


def test_run_takes_other_settings_with_the_same_models(shot, tmp_path, fake_model):
    loads = fake_model
    root, _ = shot
    tracks = FaceTracks.load(root / "tracks.json")
    with Session(SETTINGS) as session:
        a = session.run(str(root / "plate.####.exr"), str(tmp_path / "a" / "a.####.exr"), tracks=tracks, frames="1001")
        b = session.run(str(root / "plate.####.exr"), str(tmp_path / "b" / "b.####.exr"), tracks=tracks, frames="1001",
                        settings={**SETTINGS, "strength": 0.0})
        assert len(loads) == 1 and a.frames_written == b.frames_written == 1
        with pytest.raises(SettingsError, match="other models"):
            session.run(str(root / "plate.####.exr"), str(tmp_path / "c" / "c.####.exr"), tracks=tracks,
                        settings={**SETTINGS, "model": "codeformer"})
    assert np.array_equal(read_frame(tmp_path / "b" / "b.1001.exr").pixels, read_frame(root / "plate.1001.exr").pixels)
    assert not np.array_equal(read_frame(tmp_path / "a" / "a.1001.exr").pixels,
                              read_frame(root / "plate.1001.exr").pixels)
