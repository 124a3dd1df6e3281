"""The real `facefix serve` process: one JSON line on stdout, a private connection file, 127.0.0.1 only, a job
end to end, and SIGTERM -> exit 0 with the connection file removed. Also Bridge.ensure() starting it detached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facefix.bridge.client import Bridge, connection_file

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM and file modes are POSIX")


def _first_line(proc, timeout=120.0):
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got and got[0], "facefix serve printed no connection line"
    return got[0]


def _listening_addresses(port):
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6), or None where that is not readable."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            return None
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_serve_prints_its_connection_writes_a_private_file_binds_loopback_and_stops_on_sigterm(shot, cache, tmp_path):
    env = {**os.environ, "FACEFIX_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "facefix.cli", "serve", "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _first_line(proc)
        info = json.loads(line)
        assert set(info) == {"url", "token", "pid"} and info["pid"] == proc.pid
        assert info["url"].startswith("http://127.0.0.1:")
        file = cache / "serve.json"
        assert json.loads(file.read_text()) == info
        assert (file.stat().st_mode & 0o777) == 0o600
        assert [p.name for p in cache.iterdir()] == ["serve.json"]
        port = int(info["url"].rsplit(":", 1)[1])
        listening = _listening_addresses(port)
        if listening is not None:
            assert listening == ["0100007F"], listening  # 127.0.0.1, nothing else
        bridge = Bridge.find()
        assert bridge is not None and bridge.health()["device"] == "cpu"
        out = tmp_path / "out"
        job = bridge.submit({"input": str(shot / "plate.####.png"), "output": str(out / "f.####.png"),
                             "tracks": str(shot / "tracks.json"), "settings": {"model": "passthrough"}})
        assert bridge.wait(job, poll_s=0.02)["state"] == "done"
        assert len(list(out.glob("f.*.png"))) == 4
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert rest == ""  # exactly one line on stdout
    assert not file.exists()
    assert f"job {job} restore done: 4 frames written" in err
    assert "listening on" in err and "stopping" in err


def test_ensure_starts_one_bridge_detached_for_hosts_asking_at_once(cache, monkeypatch):
    monkeypatch.setenv("FACEFIX_SERVE", f"{sys.executable} -m facefix.cli serve --device cpu")
    assert Bridge.find() is None
    found: list = []
    hosts = [threading.Thread(target=lambda: found.append(Bridge.ensure(wait_s=120))) for _ in range(3)]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join(150)
    assert len(found) == 3 and len({b.url for b in found}) == 1  # one bridge for the three of them
    bridge = found[0]
    pid = bridge.health()["pid"]
    try:
        assert pid != os.getpid() and Bridge.find().url == bridge.url
        assert Bridge.ensure().url == bridge.url  # the same one, not a second bridge
        assert os.getsid(pid) == pid  # its own session: the host's Ctrl-C or exit does not stop it
    finally:
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)  # started by this process, so reaped here
    assert os.waitstatus_to_exitcode(status) == 0
    assert not connection_file().exists()
    assert (cache / "serve.log").read_text().count("listening on") == 1
    assert Bridge.find() is None
