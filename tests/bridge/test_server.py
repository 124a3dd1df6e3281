"""facefix serve, in-process: the token, the endpoints, bad requests, jobs in order, cancel, warm models, per-frame
keyframes, track jobs, and output byte-identical to the command line."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse

import numpy as np
import pytest

from facefix import FaceTracks
from facefix.bridge.client import BridgeError
from facefix.bridge.server import BridgeServer
from facefix.cli import main
from facefix.io import read_frame
from facefix.params import schema

FRAMES = [1001, 1002, 1003, 1004]


def raw(server, method, path, body=None, token=None, headers=None):
    """One request as a host would send it; (status, JSON answer). ``token=None``: the right one."""
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    head = {"Content-Type": "application/json", **(headers or {})}
    if token is not False:
        head["Authorization"] = f"Bearer {server.token if token is None else token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=head)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return response.status, answer


def one_line(text):
    return isinstance(text, str) and text and "\n" not in text


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_every_request_needs_the_token(server):
    for token in (False, "", "wrong", server.token + "x", server.token[:-1]):
        for method, path in (("GET", "/health"), ("GET", "/schema"), ("GET", "/jobs"), ("POST", "/jobs"),
                             ("GET", "/jobs/abc"), ("DELETE", "/jobs/abc"), ("GET", "/nowhere")):
            status, answer = raw(server, method, path, body={"input": "/a", "output": "/b"}, token=token)
            assert status == 401, (token, method, path)
            assert one_line(answer["error"]) and "token" in answer["error"]
    status, _ = raw(server, "GET", "/health", headers={"Authorization": f"Basic {server.token}"}, token=False)
    assert status == 401
    assert not server.jobs()  # nothing was queued without the token
    status, answer = raw(server, "GET", "/health")
    assert status == 200 and answer["ok"] is True


def test_health_and_schema(server, bridge):
    health = bridge.health()
    assert health == {"ok": True, "version": health["version"], "pid": os.getpid(), "device": "cpu",
                      "jobs": {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}}
    assert bridge.schema() == json.loads(json.dumps(schema()))
    assert bridge.jobs() == []
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    with BridgeServer(device="cpu") as other:
        assert len(server.token) >= 32 and other.token != server.token and other.port != server.port  # per start


def test_bad_requests_are_refused_with_one_line(server, make_job, tmp_path):
    good = make_job(tmp_path)
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
        ({**good, "input": None}, 400, "input"),
        ({k: v for k, v in good.items() if k != "input"}, 400, "input: missing"),
        ({k: v for k, v in good.items() if k != "output"}, 400, "output: missing"),
        ({**good, "input": "plate.####.png"}, 400, "absolute path"),
        ({**good, "input": 7}, 400, "input"),
        ({**good, "settings": {"strenght": 0.5}}, 400, "unknown parameter"),
        ({**good, "settings": {"strength": 7}}, 400, "--strength: 7.0 is above the maximum 1.0"),
        ({**good, "settings": {"model": "nope"}}, 400, "--model"),
        ({**good, "settings": {"strength": {"1001": "x"}}}, 400, "keyframes"),
        ({**good, "settings": {"temporal": {"1001": 0.5}}}, 400, "cannot be animated"),
        ({**good, "settings": {"strength": {"1001": 0.5, "1003": 2}}}, 400, "maximum"),
        ({**good, "settings": "strong"}, 400, "settings"),
        ({**good, "frames": "1005-1001"}, 400, "backwards"),
        ({**good, "frames": "soon"}, 400, "frame range"),
        ({**good, "codec": "divx"}, 400, "--codec"),
        ({**good, "kind": "paint"}, 400, "kind"),
        ({**good, "colour": "red"}, 400, "unknown job field"),
        ({**good, "tracks": {"version": "facefix.FaceTracks.9", "tracks": []}}, 400, "FaceTracks"),
        ({**good, "kind": "track", "output": str(tmp_path / "t.json")}, 400, "not options of a track job"),
    ]
    for body, status, words in cases:
        got, answer = raw(server, "POST", "/jobs", body=body)
        assert got == status, (body, answer)
        assert one_line(answer["error"]) and words in answer["error"], (words, answer)
    assert not server.jobs()
    for method, path, status in (("GET", "/jobs/nope", 404), ("DELETE", "/jobs/nope", 404), ("GET", "/x", 404),
                                 ("POST", "/health", 405), ("PUT", "/jobs", 405)):
        got, answer = raw(server, method, path)
        assert got == status and one_line(answer["error"]), (method, path, answer)


def test_a_body_over_the_limit_is_413(cache, make_job, tmp_path):
    with BridgeServer(device="cpu", max_body=1000).start() as small:
        status, answer = raw(small, "POST", "/jobs", body={**make_job(tmp_path), "frames": "1001," * 400 + "1002"})
        assert status == 413 and one_line(answer["error"]) and "limit" in answer["error"]
        assert raw(small, "GET", "/health")[0] == 200


def test_a_missing_input_fails_the_job_and_the_bridge_stays_healthy(server, bridge, models, make_job, tmp_path):
    missing = bridge.submit({**make_job(tmp_path), "input": str(tmp_path / "none.####.png")})
    with pytest.raises(BridgeError) as err:
        bridge.wait(missing, poll_s=0.01)
    status = bridge.status(missing)
    assert status["state"] == "failed" and one_line(status["error"]) and str(err.value) == status["error"]
    assert "none.####.png" in status["error"]
    assert status["finished"] >= status["started"] >= status["submitted"]
    assert bridge.health()["jobs"]["failed"] == 1
    # A job that raises something else entirely (a bug, a driver error): one line "Type: message", the bridge goes on.
    models.fail = RuntimeError("boom\n  on two lines")
    broken = bridge.submit(make_job(tmp_path / "broken"))
    with pytest.raises(BridgeError, match="^RuntimeError: boom on two lines$"):
        bridge.wait(broken, poll_s=0.01)
    models.fail = None
    fine = bridge.wait(bridge.submit(make_job(tmp_path / "fine")), poll_s=0.01)
    assert fine["state"] == "done" and fine["progress"] == {"done": 4, "total": 4}
    assert "4 frames written" in fine["summary"]
    assert bridge.health()["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 2, "cancelled": 0}
    assert any("failed: RuntimeError: boom on two lines" in line for line in server.lines)


def test_jobs_run_one_at_a_time_in_submission_order(server, bridge, models, make_job, tmp_path):
    import threading

    models.gate = threading.Event()
    ids = [bridge.submit(make_job(tmp_path / f"o{i}")) for i in range(3)]
    assert models.started.wait(60)
    assert [bridge.status(i)["state"] for i in ids] == ["running", "queued", "queued"]
    assert bridge.health()["jobs"]["queued"] == 2 and bridge.health()["jobs"]["running"] == 1
    models.gate.set()
    final = [bridge.wait(i, poll_s=0.01) for i in ids]
    assert [j["id"] for j in bridge.jobs()] == ids
    for before, after in zip(final, final[1:]):
        assert before["finished"] <= after["started"]
    assert server.lines[0].startswith(f"job {ids[0]} restore queued: ")
    for state in ("queued", "running", "done"):  # one log line per state change, in submission order
        assert [line.split()[1] for line in server.lines if line.split()[3].rstrip(":") == state] == ids, state


def test_cancel_a_running_job_between_batches(server, bridge, models, make_job, tmp_path):
    models.delay = 0.3
    out = tmp_path / "out"
    running = bridge.submit(make_job(out, settings={"batch": 1}))
    seen = []
    with pytest.raises(BridgeError, match="^cancelled$"):
        bridge.wait(running, on_progress=lambda d, t: seen.append((d, t)), should_cancel=lambda: bool(seen),
                    poll_s=0.01)
    wait_for(lambda: bridge.status(running)["state"] != "running")
    status = bridge.status(running)
    assert status["state"] == "cancelled" and "cancelled after" in status["error"]
    assert seen[0][1] == 4 and status["progress"]["done"] < 4
    written = sorted(p.name for p in out.glob("fixed.*.png"))
    assert 1 <= len(written) < 4 and not [p for p in out.iterdir() if p.name.startswith(".")]
    assert bridge.health()["ok"]
    models.delay = 0.0
    assert bridge.wait(bridge.submit(make_job(out, resume=True)), poll_s=0.01)["state"] == "done"


def test_cancel_a_queued_job_it_never_starts(server, bridge, models, make_job, tmp_path):
    import threading

    models.gate = threading.Event()
    first = bridge.submit(make_job(tmp_path / "first"))
    assert models.started.wait(60)
    queued = bridge.submit(make_job(tmp_path / "queued"))
    cancelled = bridge.cancel(queued)
    assert cancelled["state"] == "cancelled" and "started" not in cancelled and "finished" in cancelled
    models.gate.set()
    assert bridge.wait(first, poll_s=0.01)["state"] == "done"
    assert bridge.cancel(first)["state"] == "done"  # cancelling a finished job changes nothing
    with pytest.raises(BridgeError, match="^cancelled$"):
        bridge.wait(queued)
    assert "started" not in bridge.status(queued) and not (tmp_path / "queued").exists()
    assert bridge.health()["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 1}


def test_keyframed_settings_arrive_per_frame(server, bridge, models, make_job, shot, tmp_path):
    out = tmp_path / "out"
    done = bridge.wait(bridge.submit(make_job(out, settings={"strength": {"1001": 0, "1003": 1}})), poll_s=0.01)
    assert done["state"] == "done"
    for n in FRAMES:
        plate = read_frame(shot / f"plate.{n}.png", codes=True).pixels
        fixed = read_frame(out / f"fixed.{n}.png", codes=True).pixels
        assert fixed.dtype == np.uint16
        assert np.array_equal(fixed, plate) == (n == 1001), n  # strength 0 at 1001: untouched


def test_a_track_job_writes_facetracks(server, bridge, shot, tmp_path):
    out = tmp_path / "tracks" / "shot.tracks.json"
    out.parent.mkdir()
    job = bridge.submit({"kind": "track", "input": str(shot / "plate.####.png"), "output": str(out),
                         "frames": "1001-1003", "settings": {"detector": "blazeface", "model": "codeformer"}})
    done = bridge.wait(job, poll_s=0.01)
    assert done["kind"] == "track" and done["progress"] == {"done": 3, "total": 3}
    assert "1 track" in done["summary"] and str(out) in done["summary"]
    tracks = FaceTracks.load(out)
    assert tracks.frame_numbers() == [1001, 1002, 1003] and len(tracks.tracks) == 1
    assert server.warm_keys() == []  # tracking loaded no face model (codeformer is not even installed)


def test_models_load_once_across_jobs_that_use_them(server, bridge, models, make_job, tmp_path):
    for i, settings in enumerate([{"strength": 0.5}, {"strength": 1.0, "temporal": 0, "mask": "box"},
                                  {"device": "auto", "batch": 2}]):
        assert bridge.wait(bridge.submit(make_job(tmp_path / f"a{i}", settings=settings)), poll_s=0.01)["state"] == "done"
    assert models.loads == ["gfpgan-1.4"]
    assert bridge.wait(bridge.submit(make_job(tmp_path / "b", settings={"model": "codeformer"})))["state"] == "done"
    assert models.loads == ["gfpgan-1.4", "codeformer"]
    assert bridge.wait(bridge.submit(make_job(tmp_path / "c")))["state"] == "done"  # still warm
    assert models.loads == ["gfpgan-1.4", "codeformer"]
    assert [k[:2] for k in server.warm_keys()] == [("codeformer", "cpu"), ("gfpgan-1.4", "cpu")]


def test_output_is_byte_identical_to_the_command_line(server, bridge, models, make_job, shot, tmp_path):
    settings = {"model": "gfpgan-1.4", "device": "cpu", "strength": 0.9, "temporal": 0.5, "mask": "box",
                "color_match": 0.5, "batch": 3}
    from facefix.io import Frame, FrameFormat
    from facefix.io.sequence import write_frame

    ramp = np.repeat(np.linspace(0, 1, 176, dtype=np.float32)[None, :, None], 144, axis=0).repeat(3, axis=2)
    for n in FRAMES:  # the host's mask: none of the fix on the left, all of it on the right
        write_frame(tmp_path / f"mask.{n}.png", Frame(n, ramp, FrameFormat.for_pixels(ramp, "uint8")))
    argv = ["restore", str(shot / "plate.####.png"), "-o", str(tmp_path / "cli" / "fixed.####.png"),
            "--matte", str(tmp_path / "cli" / "matte.####.png"), "--tracks", str(shot / "tracks.json"),
            "--mask-input", str(tmp_path / "mask.####.png"), "--frames", "1001-1004", "--quiet"]
    for k, v in settings.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert main(argv) == 0
    # Through the bridge: after another job on the same warm models with other controls, tracks sent as JSON.
    assert bridge.wait(bridge.submit(make_job(tmp_path / "other", settings={"strength": 0.2})))["state"] == "done"
    tracks = FaceTracks.load(shot / "tracks.json").to_json()
    job = make_job(tmp_path / "bridge", settings=settings, tracks=tracks, frames="1001-1004",
                   matte=str(tmp_path / "bridge" / "matte.####.png"), mask=str(tmp_path / "mask.####.png"))
    assert bridge.wait(bridge.submit(job), poll_s=0.01)["state"] == "done"
    assert models.loads == ["gfpgan-1.4", "gfpgan-1.4"]  # the command line's own, and the bridge's one
    for name in [f"{kind}.{n}.png" for kind in ("fixed", "matte") for n in FRAMES]:
        cli, via_bridge = (tmp_path / "cli" / name).read_bytes(), (tmp_path / "bridge" / name).read_bytes()
        assert cli == via_bridge, name
    assert (tmp_path / "cli" / "fixed.1002.png").read_bytes() != (tmp_path / "other" / "fixed.1002.png").read_bytes()
    plate = read_frame(shot / "plate.1002.png", codes=True).pixels
    fixed = read_frame(tmp_path / "bridge" / "fixed.1002.png", codes=True).pixels
    assert np.array_equal(fixed[:, 0], plate[:, 0]) and not np.array_equal(fixed, plate)  # the mask applied


def test_connection_file_is_private_atomic_and_removed_only_if_ours(server, cache):
    path = server.write_connection_file()
    assert path == cache / "serve.json"
    assert json.loads(path.read_text()) == {"url": server.url, "token": server.token, "pid": os.getpid()}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in cache.iterdir()] == ["serve.json"]  # no temporary file left
    server.remove_connection_file()
    assert not path.exists()
    server.write_connection_file()
    path.write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "another", "pid": os.getpid()}))
    server.remove_connection_file()  # another bridge's now: kept
    assert path.exists()
