"""The Nuke adapter's tests: a fresh fake ``nuke`` module per test (``fake_nuke.py``), the adapter imported
against it, and for end-to-end tests the real FaceFix bridge served in-process with a stand-in face model."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ..conftest import Sharpen

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "nuke"
GIZMOS = REPO / "gizmos"
FIRST, N = 1001, 4
SIZE = (192, 160)  # height, width: 160x192 frames


def load_fake_nuke():
    spec = importlib.util.spec_from_file_location("nuke", Path(__file__).with_name("fake_nuke.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["nuke"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def nuke(monkeypatch):
    """A fresh fake ``nuke`` (an interactive session), with ``nuke/`` on sys.path as NUKE_PATH puts it, and the
    adapter forgotten so that it imports this fake."""
    monkeypatch.delitem(sys.modules, "nuke", raising=False)
    for name in [m for m in sys.modules if m == "facefix_nuke" or m.startswith("facefix_nuke.")]:
        monkeypatch.delitem(sys.modules, name)
    module = load_fake_nuke()
    monkeypatch.setitem(sys.modules, "nuke", module)
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.delenv("FACEFIX_ROOT", raising=False)
    monkeypatch.delenv("FACEFIX_SERVE", raising=False)
    yield module
    for name in [m for m in sys.modules if m == "facefix_nuke" or m.startswith("facefix_nuke.")]:
        sys.modules.pop(name, None)


@pytest.fixture
def ff(nuke):
    """The adapter (``facefix_nuke``), imported against the fake, with the gizmo folder registered."""
    import facefix_nuke

    facefix_nuke.register()
    return facefix_nuke


class SlowSharpen(Sharpen):
    """The suite's stand-in face model, made slow on demand (``delay`` seconds a call: a job to cancel)."""

    delay = 0.0

    def __call__(self, crops, fidelity=0.5):
        if self.delay:
            time.sleep(self.delay)
        return super().__call__(crops, fidelity)


@pytest.fixture
def model(monkeypatch):
    """Every restorer loads as one ``SlowSharpen`` (through the registry, as the bridge's sessions load it)."""
    import facefix.restore.registry as registry

    m = SlowSharpen()
    monkeypatch.setattr(registry, "load_restorer", lambda *a, **kw: m)
    return m


@pytest.fixture
def server(tmp_path, monkeypatch, model, host_bridge):
    """The real bridge in-process, as a host finds it (``host_bridge``, tests/conftest.py); jobs submitted are
    recorded in ``server.submitted``."""
    monkeypatch.setenv("FACEFIX_NUKE_CACHE", str(tmp_path / "nuke_cache"))
    return host_bridge


@pytest.fixture(scope="session")
def plate(tmp_path_factory):
    """4 frames of a moving real face, 160x192, as a scene-linear float32 EXR sequence; and the frames."""
    from facefix.colour import colour_transform
    from facefix.demo import synth
    from facefix.io import Frame, FrameFormat
    from facefix.io.sequence import write_frame

    root = tmp_path_factory.mktemp("nuke_plate")
    clip = synth.motion_clip(N, SIZE, translate=(2, 1), rotate_deg=1.0, start_scale=0.75)
    lin = colour_transform("linear")
    frames = {}
    for i, rgb in enumerate(clip.frames):
        n = FIRST + i
        px = lin.from_working(rgb).astype(np.float32)
        write_frame(root / f"plate.{n:04d}.exr", Frame(n, px, FrameFormat.for_pixels(px, "float")))
        frames[n] = px
    return root / "plate.####.exr", frames, clip


def read_exr(path):
    from facefix.io import read_frame

    return np.asarray(read_frame(path).pixels)
