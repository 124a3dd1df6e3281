"""The Resolve scripts' tests: a fresh fake ``DaVinciResolveScript`` per test (``fake_resolve.py``), the adapter
(``resolve/Modules/facefix_resolve``) imported as Resolve's scripts import it, and for end-to-end tests the real
FaceFix bridge served in-process with the suite's stand-in face model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "resolve"
MODULES = SCRIPTS / "Modules"
HERE = Path(__file__).resolve().parent
N = 8
SIZE = (192, 160)  # height, width: 160x192 frames
FIRST = 1001


def load_fake():
    spec = importlib.util.spec_from_file_location("DaVinciResolveScript", HERE / "fake_resolve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["DaVinciResolveScript"] = module
    spec.loader.exec_module(module)
    return module


def _forget_adapter():
    for name in [m for m in sys.modules if m == "facefix_resolve" or m.startswith("facefix_resolve.")]:
        sys.modules.pop(name, None)


@pytest.fixture
def dvr(monkeypatch):
    """A fresh fake ``DaVinciResolveScript`` (also what ``bmd`` is inside Resolve)."""
    monkeypatch.delitem(sys.modules, "DaVinciResolveScript", raising=False)
    module = load_fake()
    monkeypatch.setitem(sys.modules, "DaVinciResolveScript", module)
    return module


@pytest.fixture
def ffr(monkeypatch):
    """The adapter, imported from ``resolve/Modules`` as the scripts import it."""
    _forget_adapter()
    monkeypatch.syspath_prepend(str(MODULES))
    monkeypatch.delenv("FACEFIX_ROOT", raising=False)
    monkeypatch.delenv("FACEFIX_SERVE", raising=False)
    import facefix_resolve

    yield facefix_resolve
    _forget_adapter()


@pytest.fixture
def server(tmp_path, monkeypatch, fake_model, host_bridge):
    """The real bridge in-process, as a host finds it (``host_bridge``, tests/conftest.py); jobs submitted are
    recorded in ``server.submitted``."""
    monkeypatch.setenv("FACEFIX_RESOLVE_RENDERS", str(tmp_path / "renders"))
    return host_bridge


@pytest.fixture(scope="session")
def footage(tmp_path_factory):
    """A moving real face, 160x192: frames 1001-1008 as a 16-bit PNG sequence, and the same motion as an 8-frame
    H.264 movie (its first frame is FaceFix's frame 0). Returns (sequence pattern, movie path, frames)."""
    from facefix.demo import synth
    from facefix.io import Frame, FrameFormat, open_sink
    from facefix.io.sequence import write_frame

    root = tmp_path_factory.mktemp("resolve_footage")
    clip = synth.motion_clip(N, SIZE, translate=(2, 1), rotate_deg=1.5, start_scale=0.75)
    for i, rgb in enumerate(clip.frames):
        n = FIRST + i
        write_frame(root / f"plate.{n:04d}.png", Frame(n, rgb, FrameFormat.for_pixels(rgb, "uint16")))
    movie = root / "take.mov"
    sink = open_sink(movie, None, fps=24.0)
    try:
        for i, rgb in enumerate(clip.frames):
            sink.write(Frame(i, np.ascontiguousarray(rgb[:, ::-1]), FrameFormat.for_pixels(rgb, "uint16")))
    finally:
        sink.close()
    return root / "plate.####.png", movie, clip


def read(path) -> np.ndarray:
    from facefix.io import read_frame

    return np.asarray(read_frame(path).pixels, np.float32)


def movie_frames(path) -> list[np.ndarray]:
    from facefix.io import open_source

    src = open_source(path)
    try:
        return [np.asarray(f.pixels, np.float32) for f in src]
    finally:
        src.close()
