"""Shared test set-up: small, fast, deterministic, CPU unless a test is marked gpu."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's model cache."""
    if "FACEFIX_MODELS" not in os.environ or not os.environ["FACEFIX_MODELS"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path_factory.mktemp("models")))


@pytest.fixture
def triton_interpreter():  # type: ignore[no-untyped-def]
    """Run a script's kernels in Triton's interpreter on the CPU: in a subprocess, since the interpreter is
    chosen when Triton is first imported. The script gets the calling test's folder as ``sys.argv[1]`` and
    must print "ok" last; ``setup`` lines run first."""
    import subprocess
    import sys
    import textwrap

    def run(code: str, test_dir: str, setup: str = "", timeout: int = 600) -> None:
        script = setup + textwrap.dedent(code)
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        done = subprocess.run([sys.executable, "-c", script, test_dir], env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    return run


@pytest.fixture
def hopper_compile():  # type: ignore[no-untyped-def]
    """Compile a Triton kernel for an sm_90 GPU here, without one (the compiler is stricter than the
    interpreter: globals, types); skips where this Triton or platform cannot. Returns the compiled kernel."""
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this Triton has no ASTSource / GPUTarget")

    def compile_(fn, signature: dict[str, str], constexprs: dict[str, int]):  # type: ignore[no-untyped-def]
        source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        try:
            return triton.compile(source, target=GPUTarget("cuda", 90, 32))
        except (RuntimeError, FileNotFoundError) as err:  # no ptxas for this platform
            if "ptxas" not in str(err):
                raise
            pytest.skip(f"no ptxas: {err}")
    return compile_


class Sharpen:
    """A deterministic stand-in for a face model (where the model is not what is under test): it visibly
    changes the face, like a restorer would."""

    def __call__(self, crops, fidelity=0.5):  # type: ignore[no-untyped-def]
        import torch

        blur = torch.nn.functional.avg_pool2d(crops, 5, stride=1, padding=2, count_include_pad=False)
        return (crops + 0.8 * (crops - blur)).clamp(0, 1)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every restorer loads as ``Sharpen``, through the registry as the CLI and a Session load it; returns the
    list of loads (one entry a load)."""
    import facefix.restore.registry as registry

    loads: list = []
    monkeypatch.setattr(registry, "load_restorer", lambda *a, **kw: loads.append(a) or Sharpen())
    return loads


@pytest.fixture
def host_bridge(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The real bridge, served in-process on threads (the CPU), found through its connection file as a host finds
    it (a private FACEFIX_CACHE); every job a host submits is recorded in ``server.submitted``. The face model is
    whatever the requesting fixture has patched in."""
    from facefix.bridge.server import BridgeServer

    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "facefix_cache"))
    srv = BridgeServer(port=0, device="cpu").start()
    srv.write_connection_file()
    srv.submitted = []
    original = srv.submit

    def submit(spec):  # type: ignore[no-untyped-def]
        srv.submitted.append(spec)
        return original(spec)

    monkeypatch.setattr(srv, "submit", submit)
    yield srv
    srv.stop(grace_s=60)


@pytest.fixture(scope="session")
def write_face_shot():  # type: ignore[no-untyped-def]
    """``write(root, frames, size, first=1001)``: a moving real face as a 16-bit PNG sequence ``plate.####.png``
    in ``root`` and its FaceTracks from the known landmarks (``tracks.json``: what a host would give)."""

    def write(root, frames, size, first=1001):  # type: ignore[no-untyped-def]
        from facefix import Face, FaceTracks
        from facefix.demo import synth
        from facefix.io import Frame, FrameFormat
        from facefix.io.sequence import write_frame

        clip = synth.motion_clip(frames, size, translate=(2, 1), rotate_deg=1.0, start_scale=0.6)
        per = {}
        for i, (rgb, lm) in enumerate(zip(clip.frames, clip.landmarks)):
            n = first + i
            write_frame(root / f"plate.{n:04d}.png", Frame(n, rgb, FrameFormat.for_pixels(rgb, "uint16")))
            per[n] = [Face(box=(*(lm.min(0) - 25), *(lm.max(0) + 25)), landmarks=lm, track_id=0)]
        FaceTracks.from_faces(per).save(root / "tracks.json")
        return root

    return write
