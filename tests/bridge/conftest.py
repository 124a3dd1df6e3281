"""The bridge's tests: a tiny 16-bit PNG shot, the bridge served in-process on a thread, stand-in face models."""

from __future__ import annotations

import threading
import time

import pytest

from facefix.bridge.client import Bridge
from facefix.bridge.server import BridgeServer

N = 4
SIZE = (144, 176)
FIRST = 1001


class Models:
    """The stand-in face model of ``fake_model`` (tests/conftest.py), with knobs: a slow model, a model held
    until a gate opens, a model that raises. ``loads``: the names ``load_restorer`` was asked for."""

    def __init__(self, loads: list) -> None:
        self._loads = loads
        self.delay = 0.0  # seconds per model call: a slow model, to cancel a running job
        self.gate: threading.Event | None = None  # set: every model call waits for it (a job held running)
        self.started = threading.Event()  # set at the first model call
        self.fail: BaseException | None = None

    @property
    def loads(self) -> list[str]:
        return [args[0] for args in self._loads]

    def wrap(self, model):
        def call(crops, fidelity=0.5):
            self.started.set()
            if self.gate is not None:
                assert self.gate.wait(60), "the test never opened the gate"
            if self.fail is not None:
                raise self.fail
            if self.delay:
                time.sleep(self.delay)
            return model(crops, fidelity=fidelity)

        return call


@pytest.fixture
def models(fake_model, monkeypatch):
    """Every restorer loads as the counted stand-in model, with ``Models``' knobs."""
    import facefix.restore.registry as registry

    m = Models(fake_model)
    stand_in = registry.load_restorer
    monkeypatch.setattr(registry, "load_restorer", lambda *a, **kw: m.wrap(stand_in(*a, **kw)))
    return m


@pytest.fixture(scope="session")
def shot(tmp_path_factory, write_face_shot):
    """4 frames of a moving real face as a 16-bit PNG sequence, and its tracks (a FaceTracks file)."""
    return write_face_shot(tmp_path_factory.mktemp("bridge_shot"), N, SIZE, FIRST)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private FaceFix cache folder: where the connection file goes."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FACEFIX_CACHE", str(folder))
    return folder


@pytest.fixture
def server(cache):
    """The bridge, served in-process on threads (any free port, the CPU); stopped after the test."""
    lines: list[str] = []
    srv = BridgeServer(port=0, device="cpu", log=lines.append).start()
    srv.lines = lines  # type: ignore[attr-defined]
    yield srv
    srv.stop(grace_s=60)


@pytest.fixture
def bridge(server):
    return Bridge(server.url, server.token, timeout=30)


@pytest.fixture
def make_job(shot):
    """make_job(out, **fields): a restore job of the shot (its tracks given) to ``out/fixed.####.png``;
    ``settings`` are added to the defaults (the stand-in model, the CPU)."""

    def make(out, **extra):
        spec = {"input": str(shot / "plate.####.png"), "output": str(out / "fixed.####.png"),
                "tracks": str(shot / "tracks.json")}
        spec["settings"] = {"model": "gfpgan-1.4", "device": "cpu", **extra.pop("settings", {})}
        spec.update(extra)
        return spec

    return make
