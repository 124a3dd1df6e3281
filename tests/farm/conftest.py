"""Farm tests: a tiny shot (6 frames of a moving real face, 144x176, 16-bit PNG), the real command line in
subprocesses with the stand-in face model (``fake_facefix.py`` as ``facefix`` on PATH), ``openjd`` from the
dev extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

N = 6
SIZE = (144, 176)
FIRST = 1001
LAST = FIRST + N - 1
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TEMPLATES = ROOT / "install" / "openjd"


@pytest.fixture(scope="session")
def shot(tmp_path_factory, write_face_shot):
    """6 frames of a moving real face as a 16-bit PNG sequence (``plate.####.png``) and a FaceTracks file of it
    (``tracks.json``, from the known landmarks: what a host would give)."""
    return write_face_shot(tmp_path_factory.mktemp("farm_shot"), N, SIZE, FIRST)


def frames_of(folder: Path, prefix: str = "f") -> dict[str, bytes]:
    """The bytes of every frame file ``prefix.NNNN.png`` in ``folder``."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{prefix}.*.png"))}


@pytest.fixture(scope="session")
def fake_bin(tmp_path_factory):
    """A folder with a ``facefix`` that is the real command line with the stand-in face model."""
    if os.name != "posix":
        pytest.skip("the stand-in `facefix` is a POSIX shell script")
    folder = tmp_path_factory.mktemp("bin")
    exe = folder / "facefix"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_facefix.py"}" "$@"\n')
    exe.chmod(0o755)
    return folder


@pytest.fixture
def farm_env(fake_bin, tmp_path):
    """The environment of a farm subprocess: the stand-in ``facefix`` first on PATH, a private FaceFix cache,
    as many threads as this process computes with (CPU results can differ in the last bits between thread
    counts, and some test modules set their own when imported)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FACEFIX_SERVE", "PYTHONPATH")}
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    env["FACEFIX_CACHE"] = str(tmp_path / "cache")
    import torch

    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def openjd() -> str:
    exe = Path(sys.executable).parent / "openjd"
    found = str(exe) if exe.exists() else shutil.which("openjd")
    if not found:
        pytest.skip("openjd-cli is not installed (pip install -e '.[dev]')")
    return found


def openjd_run(template: Path, params: dict[str, object], env: dict[str, str], *extra: str, timeout: float = 300) -> str:
    """``openjd run TEMPLATE -p K=V ... EXTRA`` (every step, in one local session); its log, asserted successful."""
    args = [openjd(), "run", str(template), *extra]
    for key, value in params.items():
        args += ["-p", f"{key}={value}"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "Session ended successfully" in log, log[-6000:]
    return log
