"""The OpenFX plug-in's tests: the bundle built with CMake once per session (and its sanitizer build), the ctypes
test host (ofx_host.py), a small clip of a moving real face with its tracks."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_FILE = Path(__file__).resolve().parent / "ofx_host.py"
HOSTILE_FILE = HOST_FILE.parent / "hostile.py"
FIRST, N, SIZE = 1001, 4, (72, 88)  # frames, (height, width)

if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the ctypes test host runs on x86-64 Linux", allow_module_level=True)


def build_bundle(build_dir: Path, sanitize: bool = False) -> Path:
    """Configure and build openfx/ with CMake into ``build_dir``; the .ofx binary's path."""
    # the dev extra installs CMake into the environment (PyPI's cmake), so CI always builds the bundle
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    assert cmake is not None, "no cmake: install the dev extra (pip install -e '.[dev]') or put cmake on PATH"
    flags = ["-DCMAKE_BUILD_TYPE=" + ("Debug" if sanitize else "Release"), f"-DFACEFIX_SANITIZE={'ON' if sanitize else 'OFF'}"]
    for argv in ([cmake, "-S", str(REPO / "openfx"), "-B", str(build_dir), *flags], [cmake, "--build", str(build_dir)]):
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build_dir / "FaceFix.ofx.bundle" / "Contents" / "Linux-x86-64" / "FaceFix.ofx"


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("ofx_build"))


def libasan() -> str | None:
    """The compiler's AddressSanitizer runtime, to preload into Python for the sanitizer build; None without one."""
    done = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = done.stdout.strip()
    return path if done.returncode == 0 and Path(path).is_absolute() and Path(path).exists() else None


@pytest.fixture(scope="session")
def sanitized_bundle(tmp_path_factory) -> Path:
    """The AddressSanitizer + UndefinedBehaviorSanitizer build (-DFACEFIX_SANITIZE=ON)."""
    return build_bundle(tmp_path_factory.mktemp("ofx_asan"), sanitize=True)


def load_module(name: str, path: Path):
    """A module of this folder, loaded by path once (the tests import in importlib mode)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ofx():
    """The test host module."""
    return load_module("facefix_ofx_test_host", HOST_FILE)


@pytest.fixture(scope="session")
def hostile():
    """The misbehaving bridge and host cases (hostile.py)."""
    return load_module("facefix_ofx_hostile", HOSTILE_FILE)


@pytest.fixture(scope="session")
def clip():
    """N float RGBA frames (SIZE) of a moving real face, and its FaceTracks JSON (from the known landmarks)."""
    from facefix import Face, FaceTracks
    from facefix.demo import synth

    made = synth.motion_clip(N, SIZE, translate=(1, 1), rotate_deg=1.0, start_scale=0.6)
    frames, per = [], {}
    for i, (rgb, lm) in enumerate(zip(made.frames, made.landmarks)):
        alpha = np.full(rgb.shape[:2] + (1,), 0.5, np.float32)
        frames.append(np.concatenate([rgb.astype(np.float32), alpha], axis=2))
        per[FIRST + i] = [Face(box=(*(lm.min(0) - 8), *(lm.max(0) + 8)), landmarks=lm, track_id=0)]
    return np.stack(frames), FaceTracks.from_faces(per).to_json()
