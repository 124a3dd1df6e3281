"""`facefix queue SHOTS`: shot lists (YAML, JSON, CSV, defaults), warm models (one load per worker and set of
models), workers pulling from one queue with outputs independent of the worker, failures that stop nothing,
a queue that resumes after it was stopped or killed, and job bundles for a farm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

import facefix.restore.registry as registry
from facefix.cli.main import main
from facefix.errors import FaceFixError, SettingsError
from facefix.farm.openjd import shot_args
from facefix.farm.queue import QueueRunner, QueueState, load_shots, parse_gpus, state_path

from .conftest import FIRST, HERE, LAST, frames_of, openjd


def _shots(shot, root, **extra):
    """A list of 4 shots of the test plate: two share the defaults, one has its own strength and temporal, one
    uses another model (a second set of models); outputs relative to the list."""
    plate = str(shot / "plate.####.png")
    data = {"defaults": {"device": "cpu", "tracks": str(shot / "tracks.json"), "settings": {"strength": 0.8}},
            "shots": [
                {"name": "sh010", "input": plate, "output": "out/sh010/f.####.png"},
                {"name": "sh020", "input": plate, "output": "out/sh020/f.####.png", "frames": "1002-1005"},
                {"name": "sh030", "input": plate, "output": "out/sh030/f.####.png", "strength": 0.5,
                 "settings": {"temporal": 1.0}},
                {"name": "sh040", "input": plate, "output": "out/sh040/f.####.png", "model": "codeformer",
                 "fidelity": 0.2},
            ]}
    data.update(extra)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "shots.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_yaml_json_and_csv_lists_give_the_same_shots(shot, tmp_path):
    plate = str(shot / "plate.####.png")
    (tmp_path / "shots.yaml").write_text(yaml.safe_dump({
        "defaults": {"model": "codeformer", "settings": {"strength": 0.5}},
        "shots": [{"name": "a", "input": plate, "output": "out/a.####.png", "frames": "1001-1003", "strength": 0.7},
                  {"name": "b", "input": plate, "output": "out/b.####.png", "tracks": "t.json"}]}))
    (tmp_path / "shots.json").write_text(json.dumps({
        "defaults": {"model": "codeformer", "strength": 0.5},
        "shots": [{"name": "a", "input": plate, "output": "out/a.####.png", "frames": "1001-1003",
                   "settings": {"strength": 0.7}},
                  {"name": "b", "input": plate, "output": "out/b.####.png", "tracks": "t.json"}]}))
    (tmp_path / "shots.csv").write_text(
        "name,input,output,frames,tracks,strength,model\n"
        "defaults,,,,,0.5,codeformer\n"
        f"a,{plate},out/a.####.png,1001-1003,,0.7,\n"
        f"b,{plate},out/b.####.png,,t.json,,\n")
    lists = [load_shots(tmp_path / f"shots.{ext}") for ext in ("yaml", "json", "csv")]
    for shots in lists:
        a, b = shots.shots
        assert (a.name, a.settings.model, a.settings.strength, a.frames) == ("a", "codeformer", 0.7, "1001-1003")
        assert (b.settings.strength, b.tracks) == (0.5, str(tmp_path / "t.json"))  # relative to the list
        assert a.output == str(tmp_path / "out" / "a.####.png") and a.error is None
        assert a.fingerprint() == lists[0].shots[0].fingerprint()
    # the command line's controls are defaults below the list's
    shots = load_shots(tmp_path / "shots.yaml", {"strength": 0.1, "temporal": 0.0})
    assert [s.settings.strength for s in shots.shots] == [0.7, 0.5]
    assert [s.settings.temporal for s in shots.shots] == [0.0, 0.0]


def test_bad_entries_fail_alone_and_bad_lists_at_once(shot, tmp_path):
    plate = str(shot / "plate.####.png")
    path = tmp_path / "shots.yaml"
    path.write_text(yaml.safe_dump({"shots": [
        {"name": "ok", "input": plate, "output": "o/a.####.png"},
        {"name": "typo", "input": plate, "output": "o/b.####.png", "strenght": 0.5},
        {"name": "range", "input": plate, "output": "o/c.####.png", "strength": 3},
        {"name": "nooutput", "input": plate},
        {"name": "ok", "input": plate, "output": "o/d.####.png"}]}))
    shots = load_shots(path).shots
    assert shots[0].error is None
    assert "strenght" in shots[1].error and "--strength" in shots[2].error and "no output" in shots[3].error
    assert "taken" in shots[4].error
    for text in ("just text", "[]", "{shots: 3}", "{defaults: {}, shots: [], extra: 1}", "{shots: [1"):
        path.write_text(text)
        with pytest.raises(FaceFixError):
            load_shots(path)
    with pytest.raises(FaceFixError, match="shot list"):
        load_shots(tmp_path / "shots.txt")
    with pytest.raises(SettingsError, match="mix"):
        parse_gpus("cpu,0")
    assert parse_gpus("cpu,cpu") == ["cpu", "cpu"] and parse_gpus(None) == [None]


def _count_calls(fake_model, monkeypatch, parties=0):
    """Every restorer loads as the stand-in; with ``parties`` the first model call of that many threads waits
    until all of them are in one (so that many workers provably run shots at the same time)."""
    barrier = threading.Barrier(parties, timeout=60) if parties else None
    seen: set[int] = set()
    lock = threading.Lock()
    stand_in = registry.load_restorer

    def load(*a, **kw):
        model = stand_in(*a, **kw)

        def call(crops, fidelity=0.5):
            first = False
            with lock:
                if barrier is not None and threading.get_ident() not in seen and len(seen) < parties:
                    seen.add(threading.get_ident())
                    first = True
            if first:
                barrier.wait()
            return model(crops, fidelity=fidelity)
        return call

    monkeypatch.setattr(registry, "load_restorer", load)


def test_two_cpu_workers_write_what_one_writes_and_models_load_once_per_worker(shot, tmp_path, fake_model,
                                                                                 monkeypatch, capsys):
    one, two = _shots(shot, tmp_path / "one"), _shots(shot, tmp_path / "two")
    _count_calls(fake_model, monkeypatch)
    assert main(["queue", str(one), "--gpus", "cpu", "--quiet"]) == 0
    assert sorted(fake_model) == [("codeformer",), ("gfpgan-1.4",)]  # 4 shots, 2 sets of models: 2 loads
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["SHOT", "FRAMES", "FACES", "TIME", "WORKER", "STATUS"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["sh010", "sh020", "sh030", "sh040"]

    del fake_model[:]
    _count_calls(fake_model, monkeypatch, parties=2)  # both workers must be running a shot at once
    assert main(["queue", str(two), "--gpus", "cpu,cpu"]) == 0
    table = capsys.readouterr().out
    assert "cpu#0" in table and "cpu#1" in table
    assert len(fake_model) <= 4  # at most one load per worker and set of models, however the shots fell
    for name, frames in (("sh010", 6), ("sh020", 4), ("sh030", 6), ("sh040", 6)):
        a, b = frames_of(tmp_path / "one" / "out" / name), frames_of(tmp_path / "two" / "out" / name)
        assert len(a) == frames and a == b, name
    assert frames_of(tmp_path / "one" / "out" / "sh010") != frames_of(tmp_path / "one" / "out" / "sh030")
    state = json.loads((tmp_path / "two" / "shots.facefix-queue.json").read_text())
    assert {s["status"] for s in state["shots"].values()} == {"done"}


def test_a_failing_shot_stops_nothing(shot, tmp_path, fake_model, capsys):
    path = _shots(shot, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["shots"].insert(1, {"name": "broken", "input": str(shot / "missing.####.png"), "output": "out/x.####.png"})
    data["shots"].insert(2, {"name": "typo", "input": "a", "output": "b", "strenght": 1})
    path.write_text(yaml.safe_dump(data))
    assert main(["queue", str(path), "--quiet"]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert "failed" in rows["broken"] and "missing" in rows["broken"] and "failed" in rows["typo"]
    assert all(" done" in rows[n] for n in ("sh010", "sh020", "sh030", "sh040"))
    assert "facefix: error: shot broken:" in captured.err and "facefix: error: shot typo:" in captured.err
    assert "4 done, 2 failed" in captured.err


def test_a_stopped_queue_resumes_skips_done_shots_and_restarts_changed_ones(shot, tmp_path, fake_model, monkeypatch):
    ref = _shots(shot, tmp_path / "ref")
    assert main(["queue", str(ref), "--quiet"]) == 0
    path = _shots(shot, tmp_path / "run")
    shots = load_shots(path)
    state = QueueState(state_path(path))
    runner = QueueRunner(shots, [None], state, progress=False)
    calls = []
    stand_in = registry.load_restorer

    def load(*a, **kw):
        model = stand_in(*a, **kw)

        def call(crops, fidelity=0.5):
            calls.append(1)
            if len(calls) == 9:  # in the middle of the second shot: as Ctrl-C or SIGTERM would
                runner.stop.set()
            return model(crops, fidelity=fidelity)
        return call

    monkeypatch.setattr(registry, "load_restorer", load)
    results = runner.run()
    assert [r.status for r in results] == ["done", "interrupted", "not run", "not run"]
    assert json.loads(state_path(path).read_text())["shots"]["sh020"]["status"] == "interrupted"
    partial = frames_of(tmp_path / "run" / "out" / "sh020")
    assert 0 < len(partial) < 4

    again = QueueRunner(load_shots(path), [None], QueueState(state_path(path)), progress=False).run()
    assert [r.status for r in again] == ["skipped", "done", "done", "done"]
    assert again[1].frames_resumed == len(partial) and again[1].frames == 4 - len(partial)
    for name in ("sh010", "sh020", "sh030", "sh040"):
        assert frames_of(tmp_path / "run" / "out" / name) == frames_of(tmp_path / "ref" / "out" / name), name

    data = yaml.safe_load(path.read_text())
    data["shots"][0]["strength"] = 0.6  # a changed entry runs again, from its start
    path.write_text(yaml.safe_dump(data))
    third = QueueRunner(load_shots(path), [None], QueueState(state_path(path)), progress=False).run()
    assert [r.status for r in third] == ["done", "skipped", "skipped", "skipped"]
    assert third[0].frames == 6 and third[0].frames_resumed == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_queue_picks_up_where_it_stopped(shot, farm_env, fake_model, tmp_path, sig):
    """SIGTERM (a farm manager's stop, Ctrl-C alike) or SIGKILL in the middle of a shot (the real command line,
    a slow stand-in model): the next run skips the finished shot, keeps the shot's finished frames and writes
    the rest; every frame equals an uninterrupted queue's."""
    ref = _shots(shot, tmp_path / "ref")
    two = yaml.safe_load(ref.read_text())
    two["shots"] = two["shots"][:2]
    ref.write_text(yaml.safe_dump(two))
    assert main(["queue", str(ref), "--quiet"]) == 0
    path = tmp_path / "run" / "shots.yaml"
    path.parent.mkdir()
    path.write_text(ref.read_text())
    env = {**farm_env, "FACEFIX_FAKE_DELAY": "0.4"}
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_facefix.py"), "queue", str(path), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(frames_of(tmp_path / "run" / "out" / "sh020")) < 1:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(60)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = json.loads(state_path(path).read_text())["shots"]
    assert state["sh010"]["status"] == "done"
    if sig == signal.SIGTERM:  # stopped between batches: exit 130, the shot marked as cut short
        assert code == 130 and state["sh020"]["status"] == "interrupted", err
        assert "sh020: interrupted" in err and "run the same command again" in err
    else:
        assert code == -signal.SIGKILL and state["sh020"]["status"] == "running"
    kept = frames_of(tmp_path / "run" / "out" / "sh020")
    assert 1 <= len(kept) < 4  # whole frames only (written atomically): compared with the reference below
    results = QueueRunner(load_shots(path), [None], QueueState(state_path(path)), progress=False).run()
    assert [r.status for r in results] == ["skipped", "done"]
    assert results[1].frames_resumed == len(kept)
    for name in ("sh010", "sh020"):
        assert frames_of(tmp_path / "run" / "out" / name) == frames_of(tmp_path / "ref" / "out" / name), name


def test_export_writes_a_job_bundle_per_shot(shot, tmp_path, capsys):
    path = _shots(shot, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["shots"].append({"name": "anim", "input": str(shot / "plate.####.png"), "output": "out/anim/f.####.png",
                          "strength": {1001: 0.0, 1006: 1.0}})
    data["shots"].append({"name": "movie out", "input": str(shot / "plate.####.png"), "output": "out/m.mov"})
    path.write_text(yaml.safe_dump(data))
    assert main(["queue", str(path), "--export", "openjd", str(tmp_path / "b"), "--frames-per-task", "3"]) == 1
    captured = capsys.readouterr()
    assert "shot anim:" in captured.err and "animated" in captured.err  # the others are written
    assert "deadline bundle submit" in captured.out
    bundles = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert bundles == ["movie_out", "sh010", "sh020", "sh030", "sh040"]
    values = {v["name"]: v["value"] for v in
              yaml.safe_load((tmp_path / "b" / "sh030" / "parameter_values.yaml").read_text())["parameterValues"]}
    assert values["Input"] == str(shot / "plate.####.png") and values["Output"] == str(tmp_path / "out/sh030/f.####.png")
    assert values["Frames"] == f"{FIRST}-{LAST}" and values["FramesPerTask"] == 3 and values["Warm"] == "True"
    assert values["Tracks"] == str(shot / "tracks.json")
    assert set(values["Args"].split()) >= {"--strength", "0.5", "--temporal", "1.0", "--device", "cpu"}
    sh020 = yaml.safe_load((tmp_path / "b" / "sh020" / "parameter_values.yaml").read_text())["parameterValues"]
    assert {"name": "Frames", "value": "1002-1005"} in sh020
    movie = yaml.safe_load((tmp_path / "b" / "movie_out" / "parameter_values.yaml").read_text())["parameterValues"]
    assert {"name": "FramesPerTask", "value": 6} in movie  # a movie is one file: one task
    refs = yaml.safe_load((tmp_path / "b" / "sh030" / "asset_references.yaml").read_text())["assetReferences"]
    assert refs["inputs"]["directories"] == [str(shot)] and str(shot / "tracks.json") in refs["inputs"]["filenames"]
    assert refs["outputs"]["directories"] == [str(tmp_path / "out" / "sh030")]
    done = subprocess.run([openjd(), "check", str(tmp_path / "b" / "sh030" / "template.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_shots(path).shots[2].settings.temporal == 1.0 and "--temporal" in shot_args(load_shots(path).shots[2])


@pytest.mark.skipif(os.name != "posix", reason="POSIX file locks")
def test_one_queue_per_shot_list(shot, tmp_path, fake_model):
    from facefix.farm.queue import exclusive

    path = _shots(shot, tmp_path)
    with exclusive(state_path(path).with_suffix(".lock")):
        assert main(["queue", str(path), "--quiet"]) == 1
    assert not (tmp_path / "out").exists()
