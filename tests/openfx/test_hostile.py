"""The OpenFX plug-in against a misbehaving bridge and host (hostile.py): every case ends in one `FaceFix: ...`
error (kOfxStatFailed) by its request deadline, in the release build and, all together, in the sanitizer build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import HOSTILE_FILE, libasan, load_module

HERE = Path(__file__).resolve().parent
CASES = load_module("facefix_ofx_hostile", HOSTILE_FILE).CASES


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_misbehaving_bridge_or_host_is_one_error(ofx, bundle, hostile, tmp_path, case):
    message, took = hostile.run_case(ofx, str(bundle), case, tmp_path)
    if case.waits:  # it waited for the deadline (no sooner: the bridge was only slow), then no longer than that
        assert hostile.DEADLINE_S * 0.9 <= took < hostile.DEADLINE_S + 3.0, took
    else:
        assert took < 3.0, took


def test_the_fake_bridge_serves_a_good_render(ofx, bundle, hostile, tmp_path, monkeypatch):
    """The harness itself lets a render through: the cases fail for their misbehaviour, not the fake bridge's."""
    bridge = hostile.FakeBridge(dict(hostile.GOOD_REPLIES))
    try:
        (tmp_path / "serve.json").write_text(json.dumps(bridge.connection()))
        monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path))
        monkeypatch.setenv("FACEFIX_OFX_TIMEOUT", "10")
        with hostile.make_host(ofx, str(bundle)) as host:
            t = hostile.FIRST + 1
            assert host.frames_needed(t) == [t - 1, t]
            out = host.render(t)
            host.press("analyse", t)  # answers an id, then 404s for its frames: the plug-in gives up and says so
    except ofx.OfxError as err:
        assert "no fake reply for /analyses/abc123/frames" in str(err), err
    finally:
        bridge.close()
    assert np.array_equal(out, np.zeros_like(out))  # the (fresh, zero) result segment, copied out
    assert bridge.requests[:3] == [("POST", "/frames/window"), ("POST", "/frames/window"), ("POST", "/frames")]
    assert bridge.requests[3:] == [("POST", "/analyses"), ("POST", "/analyses/abc123/frames"),
                                   ("DELETE", "/analyses/abc123")]


ASAN_SCRIPT = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import ofx_host, hostile
for name, message, took in hostile.run_all(ofx_host, sys.argv[2], Path(sys.argv[3])):
    print(f"{took:6.2f} s  {name}: {message}")
print("ok")
"""


def test_every_case_runs_clean_under_asan_and_ubsan(hostile, sanitized_bundle, tmp_path):
    preload = libasan()
    if preload is None:
        pytest.skip("no libasan")
    env = {**os.environ, "LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    done = subprocess.run([sys.executable, "-c", ASAN_SCRIPT, str(HERE), str(sanitized_bundle), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-3000:] + done.stderr[-4000:]
    assert "runtime error" not in done.stderr and "AddressSanitizer" not in done.stderr
    assert done.stdout.count(" s  ") == len(hostile.CASES)
