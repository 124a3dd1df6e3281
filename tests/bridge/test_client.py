"""facefix.bridge.client: standard library only (hosts load the file by path), every error one BridgeError line,
finding the bridge through the connection file and starting one when there is none."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import facefix.bridge.client as client_module
from facefix.bridge.client import Bridge, BridgeError, connection_file

CLIENT = Path(client_module.__file__)


def one_line(err):
    text = str(err.value if hasattr(err, "value") else err)
    return bool(text) and "\n" not in text


def test_client_imports_nothing_outside_the_standard_library():
    tree = ast.parse(CLIENT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import at line {node.lineno}"
            imported.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module"):
            raise AssertionError(f"dynamic import at line {node.lineno}")
    assert imported, "no imports found: the check is not looking"
    outside = sorted(m for m in imported if m.split(".")[0] not in sys.stdlib_module_names)
    assert not outside, outside
    assert not [m for m in imported if m.split(".")[0] in ("facefix", "numpy", "torch")]
    # As a host loads it: by path, into a bare interpreter without site-packages (no facefix, no numpy there).
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('facefix_bridge', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "assert not [n for n in sys.modules if n.split('.')[0] in ('facefix', 'numpy', 'torch')]; "
            "print(m.Bridge.__name__, m.BridgeError.__name__, m.connection_file().name)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(CLIENT)], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["Bridge", "BridgeError", "serve.json"], done.stderr


def test_connection_file_follows_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEFIX_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert connection_file() == tmp_path / "home" / ".cache" / "facefix" / "serve.json"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert connection_file() == tmp_path / "xdg" / "facefix" / "serve.json"
    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "own"))
    assert connection_file() == tmp_path / "own" / "serve.json"
    monkeypatch.setenv("FACEFIX_CACHE", "")
    assert connection_file() == tmp_path / "xdg" / "facefix" / "serve.json"


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_error_is_one_bridge_error_line(server, bridge, make_job, tmp_path):
    down = Bridge(f"http://127.0.0.1:{_closed_port()}", "token", timeout=5)
    for call in (down.health, down.schema, down.jobs, lambda: down.submit({"input": "/a", "output": "/b"}),
                 lambda: down.status("x"), lambda: down.cancel("x"), lambda: down.wait("x")):
        with pytest.raises(BridgeError, match="cannot reach the FaceFix bridge") as err:
            call()
        assert one_line(err) and err.value.status is None
    with pytest.raises(BridgeError, match="token") as err:
        Bridge(server.url, "wrong").health()
    assert err.value.status == 401 and one_line(err)
    with pytest.raises(BridgeError, match="no job") as err:
        bridge.status("nope")
    assert err.value.status == 404 and one_line(err)
    with pytest.raises(BridgeError, match="--strength") as err:
        bridge.submit(make_job(tmp_path, settings={"strength": 2}))
    assert err.value.status == 400 and one_line(err)
    with pytest.raises(BridgeError, match="a job is a dict"):
        bridge.submit(["not", "a", "job"])  # type: ignore[arg-type]
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(BridgeError, match="did not answer|timed out") as err:
            Bridge(f"http://127.0.0.1:{silent.getsockname()[1]}", "t", timeout=0.5).health()
        assert one_line(err)
    assert str(BridgeError("two\nlines\n")) == "two lines"


def _answering(*answers: bytes) -> tuple[str, threading.Thread]:
    """A loopback server that sends each connection the next of ``answers`` (raw HTTP), then closes it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with listener:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


def test_an_answer_broken_off_is_asked_again_once_or_one_bridge_error_line():
    body = json.dumps({"ok": True, "pid": 7}).encode()
    broken = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 140\r\n\r\n"  # then closed
    whole = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    url, thread = _answering(broken, whole)
    assert Bridge(url, "t", timeout=5).health() == {"ok": True, "pid": 7}  # a GET: asked again
    thread.join(5)
    url, thread = _answering(broken, broken)
    with pytest.raises(BridgeError, match="broke off its answer") as err:
        Bridge(url, "t", timeout=5).health()
    assert one_line(err)
    thread.join(5)
    url, thread = _answering(broken, whole)
    with pytest.raises(BridgeError, match="broke off its answer"):  # a POST is never sent twice
        Bridge(url, "t", timeout=5).cancel("x")
    thread.join(0.2)
    assert thread.is_alive()  # the second answer was never asked for
    with socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]))) as late:
        late.sendall(b"GET / HTTP/1.1\r\n\r\n")  # lets the server finish
    thread.join(5)


def test_find_reads_the_connection_file_and_checks_health(server, cache):
    assert Bridge.find() is None  # no file
    connection_file().parent.mkdir(parents=True)
    connection_file().write_text("{half a file")
    assert Bridge.find() is None
    connection_file().write_text(json.dumps({"url": f"http://127.0.0.1:{_closed_port()}", "token": "x", "pid": 1}))
    assert Bridge.find() is None  # a bridge that is gone
    connection_file().write_text(json.dumps({"url": server.url, "token": "stale", "pid": 1}))
    assert Bridge.find() is None  # someone else's (wrong token)
    server.write_connection_file()
    found = Bridge.find()
    assert found is not None and found.url == server.url and found.health()["pid"] == os.getpid()
    # ensure() takes the running bridge: the command (which would fail) is never run.
    assert Bridge.ensure(command=[sys.executable, "-c", "raise SystemExit(3)"]).url == server.url


def test_ensure_says_why_it_could_not_start_one(cache, monkeypatch, tmp_path):
    fails = [sys.executable, "-c", "import sys; print('no GPU here, sorry', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(BridgeError, match="exited with status 3: no GPU here, sorry") as err:
        Bridge.ensure(command=fails, wait_s=30)
    assert one_line(err)
    with pytest.raises(BridgeError, match="did not answer within 0.5 s") as err:
        Bridge.ensure(command=f"{sys.executable} -c pass", wait_s=0.5)  # a launcher that exits 0 and starts nothing
    monkeypatch.delenv("FACEFIX_SERVE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BridgeError, match="no `facefix` command on PATH") as err:
        Bridge.ensure()
    monkeypatch.setenv("FACEFIX_SERVE", str(tmp_path / "not-there"))
    with pytest.raises(BridgeError, match="cannot start the FaceFix bridge") as err:
        Bridge.ensure()
    assert one_line(err)


def test_wait_reports_progress_and_cancels_when_asked(server, bridge, models, make_job, tmp_path):
    models.delay = 0.2
    seen = []
    stop = threading.Event()
    job = bridge.submit(make_job(tmp_path, settings={"batch": 1}))

    def progress(done, total):
        seen.append((done, total))
        stop.set()

    with pytest.raises(BridgeError, match="^cancelled$"):
        bridge.wait(job, on_progress=progress, should_cancel=stop.is_set, poll_s=0.01)
    assert seen and seen[0][1] == 4
    models.delay = 0.0
    done = []
    final = bridge.wait(bridge.submit(make_job(tmp_path / "all")), on_progress=lambda d, t: done.append((d, t)),
                        poll_s=0.001)
    assert final["state"] == "done" and done[-1] == (4, 4) and done == sorted(set(done))
