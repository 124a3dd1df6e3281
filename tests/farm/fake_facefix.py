"""`facefix` with the stand-in face model of tests/conftest.py (``Sharpen``), for farm tests that run the real
command line in subprocesses (``openjd run``, the bridge it starts, a killed queue): every restorer loads as
``Sharpen``; everything else is FaceFix's own code. ``FACEFIX_FAKE_DELAY``: seconds per model call."""

import importlib.util
import os
import sys
import time
from pathlib import Path

DELAY = float(os.environ.get("FACEFIX_FAKE_DELAY", "0") or 0)


def _stand_in() -> None:
    import facefix.restore.registry as registry

    spec = importlib.util.spec_from_file_location("facefix_tests_conftest",
                                                  Path(__file__).resolve().parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    class Slow(conftest.Sharpen):  # type: ignore[misc, name-defined]
        def __call__(self, crops, fidelity=0.5):  # type: ignore[no-untyped-def]
            if DELAY:
                time.sleep(DELAY)
            return super().__call__(crops, fidelity)

    registry.load_restorer = lambda *a, **kw: Slow()


# Only commands that may load a face model import torch to swap it (a bridge client or a bridge start stays light).
args = [a.lower() for a in sys.argv[1:]]
client = args[:1] == ["submit"] and (
    "--start-bridge" in args or "--stop-bridge" in args or "--track" in args
    or not any(a in ("--warm=false", "--warm=0", "--warm=no") for a in args))
if not client:
    _stand_in()

from facefix.cli.main import main  # noqa: E402

sys.exit(main())
