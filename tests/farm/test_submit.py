"""`facefix submit`: a job on the warm bridge equals `facefix restore` (and `--warm false`), byte for byte; the
farm job's Track step (`--track`) writes the tracks an uninterrupted `facefix restore` would analyse; frame
ranges cross from OpenJD to the command line unchanged in meaning."""

from __future__ import annotations

import json

import pytest

from facefix import FaceTracks
from facefix.bridge.server import BridgeServer
from facefix.cli.main import main
from facefix.errors import SettingsError
from facefix.farm.frames import frame_list, frames_arg, openjd_range
from facefix.farm.submit import _MOVIES, shot_tracks_path
from facefix.io.movie import MOVIE_EXTENSIONS
from facefix.run import tracks_sidecar

from .conftest import FIRST, LAST, frames_of


@pytest.fixture
def bridge(tmp_path, monkeypatch):
    """The bridge, served in-process on threads (the CPU), named by the connection file that `facefix submit`
    reads ($FACEFIX_CACHE/serve.json)."""
    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    server = BridgeServer(port=0, device="cpu", log=lines.append).start()
    server.write_connection_file()
    server.lines = lines  # type: ignore[attr-defined]
    yield server
    server.stop(grace_s=60)


def test_frame_ranges_cross_from_openjd_to_the_command_line():
    assert frame_list("1001-1006") == list(range(1001, 1007))
    assert frame_list("1001-1009:2") == [1001, 1003, 1005, 1007, 1009]  # OpenJD's step
    assert frame_list("1001-1009x2") == [1001, 1003, 1005, 1007, 1009]  # the command line's
    assert frame_list("1,5,9-12") == [1, 5, 9, 10, 11, 12]
    assert frames_arg(range(1001, 1011)) == "1001-1010"
    assert frames_arg([1001, 1003, 1005, 1007]) == "1001-1007x2"
    assert frames_arg([1, 5, 9, 10, 11, 12]) == "1,5,9-12"
    assert openjd_range([1001, 1003, 1005]) == "1001-1005:2"
    for text in ("1001-1100", "1001-1099:2", "1,5,9-12", "7", "1-3,10-20:5"):
        assert frame_list(frames_arg(frame_list(text))) == frame_list(text)
    for bad in ("1001-1005:0", "1005-1001:1", "a-b:2", ""):
        with pytest.raises(SettingsError):
            frame_list(bad)


def test_the_shot_tracks_path_is_the_runs_sidecar():
    assert _MOVIES == MOVIE_EXTENSIONS
    for out in ("/o/fixed.####.exr", "/o/fixed.%04d.exr", "/o/fixed.@@@@.dpx", "/o/fixed_####.png", "/o/clip.mov",
                "/o/still.png", "/o/####.exr"):
        assert shot_tracks_path(out) == tracks_sidecar(out), out


def test_a_job_on_the_bridge_equals_facefix_restore_and_the_cold_path(shot, bridge, fake_model, tmp_path, capsys):
    common = [str(shot / "plate.####.png"), "--tracks", str(shot / "tracks.json"), "--frames", "1002-1006:2",
              "--quiet"]
    assert main(["submit", *common, "-o", str(tmp_path / "warm" / "f.####.png"),
                 "--args=--device cpu --strength 0.7"]) == 0
    assert main(["submit", *common, "-o", str(tmp_path / "cold" / "f.####.png"), "--warm", "false",
                 "--args=--device cpu --strength 0.7"]) == 0
    assert main(["restore", str(shot / "plate.####.png"), "--tracks", str(shot / "tracks.json"), "--frames",
                 "1002-1006x2", "--quiet", "-o", str(tmp_path / "ref" / "f.####.png"), "--device", "cpu",
                 "--strength", "0.7"]) == 0
    ref = frames_of(tmp_path / "ref")
    assert sorted(ref) == ["f.1002.png", "f.1004.png", "f.1006.png"]
    assert frames_of(tmp_path / "warm") == ref and frames_of(tmp_path / "cold") == ref
    (job,) = bridge.jobs()
    assert job.state == "done" and job.spec.frames == "1002-1006x2" and job.spec.settings.strength == 0.7
    assert job.spec.input == str(shot / "plate.####.png")  # absolute paths: the bridge's folder is not ours


def test_a_failed_job_exits_1_with_its_error(shot, bridge, fake_model, tmp_path, capsys):
    assert main(["submit", str(shot / "nothere.####.png"), "-o", str(tmp_path / "o" / "f.####.png"),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "facefix: error:" in err and "nothere" in err
    assert main(["submit", str(shot / "plate.####.png"), "-o", str(tmp_path / "o" / "f.####.png"),
                 "--strength", "7"]) == 1  # refused before anything is submitted
    assert "--strength" in capsys.readouterr().err and len(bridge.jobs()) == 1


def test_command_line_options_win_over_args(shot, bridge, fake_model, tmp_path):
    assert main(["submit", str(shot / "plate.####.png"), "-o", str(tmp_path / "o" / "f.####.png"), "--tracks",
                 str(shot / "tracks.json"), "--strength", "0.3", "--frames", "1001",
                 "--args=--strength 0.9 --temporal 0 --device cpu", "--quiet"]) == 0
    (job,) = bridge.jobs()
    assert job.spec.settings.strength == 0.3 and job.spec.settings.temporal == 0.0


def test_the_track_step_writes_what_one_uninterrupted_restore_analyses(shot, fake_model, tmp_path, capsys):
    """`submit --track` detects over the frames and their temporal pre-roll; chunks restored with those tracks
    (`--shot-tracks`) equal one plain `facefix restore` of the frames, which detects by itself."""
    plate, out = str(shot / "plate.####.png"), str(tmp_path / "farm" / "f.####.png")
    assert main(["submit", "--track", plate, "-o", out, "--frames", "1004-1006", "--device", "cpu"]) == 0
    assert "frames analysed" in capsys.readouterr().err
    sidecar = tmp_path / "farm" / "f.facefix-tracks.json"
    tracks = FaceTracks.load(sidecar)
    assert tracks.frame_numbers() == list(range(FIRST, LAST + 1))  # 1004-1006 and 3 frames of pre-roll before
    for chunk in ("1004-1005", "1006-1006"):
        assert main(["submit", "--shot-tracks", "--warm", "false", plate, "-o", out, "--frames", chunk,
                     "--device", "cpu", "--quiet"]) == 0
    assert main(["restore", plate, "-o", str(tmp_path / "ref" / "f.####.png"), "--frames", "1004-1006",
                 "--device", "cpu", "--quiet"]) == 0
    assert frames_of(tmp_path / "farm") == frames_of(tmp_path / "ref") and len(frames_of(tmp_path / "ref")) == 3
    # ... and a plain restore into the farm's folder finds the Track step's analysis and uses it
    assert json.loads(sidecar.read_text())["metadata"]["analysis"]
    assert main(["submit", "--track", plate, "-o", out, "--frames", "1004-1006", "--device", "cpu"]) == 0
    assert "(reused)" in capsys.readouterr().err


def test_the_track_step_takes_given_tracks_and_chunks_need_them(shot, tmp_path, capsys):
    out = str(tmp_path / "farm" / "f.####.png")
    assert main(["submit", "--shot-tracks", str(shot / "plate.####.png"), "-o", out, "--warm", "false"]) == 1
    assert "Track step" in capsys.readouterr().err
    assert main(["submit", "--track", str(shot / "plate.####.png"), "-o", out, "--tracks",
                 str(shot / "tracks.json")]) == 0
    given = FaceTracks.load(shot / "tracks.json").to_json()
    assert FaceTracks.load(tmp_path / "farm" / "f.facefix-tracks.json").to_json() == given
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["submit", "--track", str(shot / "plate.####.png"), "-o", out, "--tracks", str(bad)]) == 1
    assert "bad.json" in capsys.readouterr().err


def test_start_and_stop_take_no_shot_and_do_nothing_cold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "cache"))
    assert main(["submit", "--start-bridge", "--warm", "False"]) == 0
    assert main(["submit", "--stop-bridge", "--warm", "False"]) == 0
    assert main(["submit", "--stop-bridge"]) == 0 and "no bridge running" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
    assert main(["submit", "--start-bridge", "x.####.exr"]) == 1


@pytest.mark.parametrize("frames,controls,analysed", [
    ("1005-1006", {"temporal": "0.25"}, [1002, 1003, 1004, 1005, 1006]),  # the temporal stage's 3 frames before
    ("1001", {"temporal": "0", "deboil": "0.5"}, [1001, 1002, 1003, 1004]),  # the repair stage's 3 frames after
])
def test_the_track_step_covers_every_stage_s_pre_and_post_roll(shot, fake_model, tmp_path, frames, controls, analysed):
    """The Track step analyses what a plain run of the frames analyses (each chunk's pre-roll, and the post-roll
    a repair stage reads): that run finds the Track step's tracks to be its own."""
    from facefix import Settings
    from facefix.run import run_clip

    if any(name not in Settings.__dataclass_fields__ for name in controls):
        pytest.skip(f"this FaceFix has no {', '.join(controls)} control")
    plate, out = str(shot / "plate.####.png"), str(tmp_path / "farm" / "f.####.png")
    flags = [w for k, v in controls.items() for w in (f"--{k}", v)]
    assert main(["submit", "--track", plate, "-o", out, "--frames", frames, "--device", "cpu", "--quiet", *flags]) == 0
    assert FaceTracks.load(tmp_path / "farm" / "f.facefix-tracks.json").frame_numbers() == analysed
    summary = run_clip(plate, out, Settings.from_mapping({"device": "cpu", **controls}), frames=frames,
                       progress=False)
    assert any("tracks reused" in note for note in summary.notes), summary.notes
