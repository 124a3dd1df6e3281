"""The Open Job Description templates: `openjd check` passes, and `openjd run` of the shot template (every step,
chunks chosen by OpenJD) writes exactly the frames of one uninterrupted `facefix restore` of the shot, with the
warm bridge and without. The Nuke template's tasks run `nuke -t facefix_render.py SCRIPT FIRST-LAST`."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from facefix import FaceTracks
from facefix.cli.main import main

from .conftest import FIRST, LAST, TEMPLATES, frames_of, openjd, openjd_run

pytestmark = pytest.mark.slow


def _chunks(log: str) -> list[str]:
    return re.findall(r"Frame\(CHUNK\[INT\]\) = (\S+)", log)


def _covered(chunks: list[str]) -> list[int]:
    frames = []
    for c in chunks:
        a, _, b = c.partition("-")
        frames += list(range(int(a), int(b or a) + 1))
    return frames


@pytest.mark.parametrize("name", ["facefix-shot.yaml", "facefix-nuke.yaml"])
def test_templates_pass_openjd_check(name):
    done = subprocess.run([openjd(), "check", str(TEMPLATES / name)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "passes validation checks" in done.stdout, done.stdout + done.stderr


def test_the_shot_template_tracks_once_then_restores_chunks_with_a_warm_bridge():
    t = yaml.safe_load((TEMPLATES / "facefix-shot.yaml").read_text())
    assert t["specificationVersion"] == "jobtemplate-2023-09" and "TASK_CHUNKING" in t["extensions"]
    params = {p["name"]: p for p in t["parameterDefinitions"]}
    assert {"Input", "Output", "Frames", "FramesPerTask", "Args", "Tracks", "Warm"} <= set(params)
    assert all(params[n]["type"] == "PATH" for n in ("Input", "Output", "Tracks"))  # path-mapped on a farm
    assert params["Args"]["default"] == "" and params["Tracks"]["default"] == ""
    track, restore = t["steps"]
    assert track["name"] == "Track" and "parameterSpace" not in track  # the whole shot, once
    assert restore["dependencies"] == [{"dependsOn": "Track"}]
    (chunk,) = restore["parameterSpace"]["taskParameterDefinitions"]
    assert chunk["type"] == "CHUNK[INT]" and chunk["range"] == "{{Param.Frames}}"
    assert chunk["chunks"]["defaultTaskCount"] == "{{Param.FramesPerTask}}"
    run = restore["script"]["actions"]["onRun"]
    assert run["command"] == "facefix" and "--frames={{Task.Param.Frame}}" in run["args"]
    assert "--shot-tracks" in run["args"]
    (env,) = restore["stepEnvironments"]
    assert "--start-bridge" in env["script"]["actions"]["onEnter"]["args"]
    assert "--stop-bridge" in env["script"]["actions"]["onExit"]["args"]
    assert env["variables"]["FACEFIX_CACHE"].startswith("{{Session.WorkingDirectory}}")  # private to the session


def test_openjd_run_warm_chunks_equal_one_uninterrupted_run(shot, farm_env, fake_model, tmp_path):
    """Input, Output and Tracks as the submitting machine names them (/mnt/facefix-shows/...), mapped by OpenJD's
    path mapping to where this "worker" sees them."""
    out = tmp_path / "farm"
    rules = tmp_path / "path_mapping.json"
    rules.write_text(json.dumps({"version": "pathmapping-1.0", "path_mapping_rules": [
        {"source_path_format": "POSIX", "source_path": "/mnt/facefix-shows/plates", "destination_path": str(shot)},
        {"source_path_format": "POSIX", "source_path": "/mnt/facefix-shows/renders", "destination_path": str(out)}]}))
    log = openjd_run(TEMPLATES / "facefix-shot.yaml", {
        "Input": "/mnt/facefix-shows/plates/plate.####.png", "Output": "/mnt/facefix-shows/renders/f.####.png",
        "Frames": f"{FIRST}-{LAST}", "FramesPerTask": 2, "Args": "--device cpu",
        "Tracks": "/mnt/facefix-shows/plates/tracks.json", "Warm": "True"}, farm_env,
        "--path-mapping-rules", f"file://{rules}")
    chunks = _chunks(log)
    assert len(chunks) >= 2 and sorted(_covered(chunks)) == list(range(FIRST, LAST + 1)), chunks
    # The Track step took the given tracks (no detection); every chunk ran on the one bridge of the session.
    assert "tracks from" in log and "frames analysed" not in log
    assert log.count("facefix: bridge http://") == 1 and "stopped" in log
    bridges = set(re.findall(r"facefix: job \S+ on (http://\S+)", log))
    assert len(bridges) == 1 and len(re.findall(r"facefix: job \S+ on", log)) == len(chunks)
    sidecar = out / "f.facefix-tracks.json"
    assert FaceTracks.load(sidecar).to_json() == FaceTracks.load(shot / "tracks.json").to_json()

    ref = tmp_path / "ref"
    assert main(["restore", str(shot / "plate.####.png"), "-o", str(ref / "f.####.png"), "--tracks", str(sidecar),
                 "--frames", f"{FIRST}-{LAST}", "--device", "cpu", "--quiet"]) == 0
    written, one_run = frames_of(out), frames_of(ref)
    assert len(written) == len(one_run) == LAST - FIRST + 1
    assert written == one_run  # byte for byte
    plate = {p.name.replace("plate", "f"): p.read_bytes() for p in shot.glob("plate.*.png")}
    assert all(written[k] != plate[k] for k in written)  # the stand-in model changed every face


def test_an_exported_bundle_runs_cold_and_equals_a_plain_restore(shot, farm_env, fake_model, tmp_path):
    """`facefix queue --export openjd` -> `openjd run` of the bundle with Warm False (a process per chunk), the
    Track step detecting: the frames of one plain `facefix restore` of the shot (which detects by itself)."""
    shots = tmp_path / "shots.yaml"
    shots.write_text(yaml.safe_dump({"defaults": {"device": "cpu"}, "shots": [
        {"name": "sh010", "input": str(shot / "plate.####.png"), "output": "out/f.####.png",
         "frames": f"{FIRST}-{LAST}"}]}))
    assert main(["queue", str(shots), "--export", "openjd", str(tmp_path / "bundles"), "--frames-per-task", "4",
                 "--warm", "false"]) == 0
    bundle = tmp_path / "bundles" / "sh010"
    values = {v["name"]: v["value"] for v in yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]}
    log = openjd_run(bundle / "template.yaml", values, farm_env)
    assert values["Warm"] == "False" and "facefix: bridge" not in log
    assert "frames analysed" in log  # the Track step detected
    assert len(_chunks(log)) >= 2

    ref = tmp_path / "ref"
    assert main(["restore", str(shot / "plate.####.png"), "-o", str(ref / "f.####.png"), "--frames",
                 f"{FIRST}-{LAST}", "--device", "cpu", "--quiet"]) == 0
    written = frames_of(tmp_path / "out")
    assert len(written) == LAST - FIRST + 1 and written == frames_of(ref)


def test_the_nuke_template_runs_nuke_t_on_each_chunk(farm_env, tmp_path):
    """No Nuke here: a stand-in `nuke` records its arguments (the real render is tests/nuke's and needs Nuke)."""
    calls = tmp_path / "calls.txt"
    fake_nuke = tmp_path / "nuke"
    fake_nuke.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake_nuke.chmod(0o755)
    script = tmp_path / "shot.nk"
    script.write_text("# a script\n")
    plugin = TEMPLATES.parents[1] / "nuke"
    log = openjd_run(TEMPLATES / "facefix-nuke.yaml", {
        "Script": script, "Frames": "1001-1025", "FramesPerTask": 10, "NukePlugin": plugin,
        "NukeExecutable": fake_nuke, "Args": "--write Write1 --node FaceFix1", "Warm": "False"}, farm_env)
    lines = calls.read_text().splitlines()
    chunks = _chunks(log)
    assert len(lines) == len(chunks) >= 3
    assert sorted(_covered(chunks)) == list(range(1001, 1026))
    for line, chunk in zip(lines, chunks):
        assert line == f"-t {plugin}/facefix_render.py {script} {chunk} --write Write1 --node FaceFix1"
    assert (plugin / "facefix_render.py").is_file()
