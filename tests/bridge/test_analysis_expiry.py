"""Finished analyses that no host collects are forgotten after ``analysis_keep_s`` (measured on an injected clock,
no sleeping); running ones and collected ones behave as before."""

from __future__ import annotations

import threading
import types

import pytest

from facefix.bridge.server import ANALYSIS_KEEP_S, BridgeServer, RequestError

BODY = {"width": 8, "height": 6, "channels": 4, "depth": "float32", "frames": [1, 2], "settings": {"device": "cpu"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tracking(monkeypatch):
    """``track_clip`` stand-in: each analysis ends as soon as ``gate`` is set (set: at once) with fake tracks."""
    import facefix.analyse

    gate = threading.Event()
    gate.set()

    def track_clip(source, numbers, settings, device, progress):
        assert gate.wait(30), "the test never opened the gate"
        return types.SimpleNamespace(to_json=lambda: {"numbers": list(numbers)})

    monkeypatch.setattr(facefix.analyse, "track_clip", track_clip)
    return gate


@pytest.fixture
def bridge():
    clock, lines = Clock(), []
    server = BridgeServer(port=0, device="cpu", analysis_keep_s=60.0, clock=clock, log=lines.append)
    server.clock, server.lines = clock, lines  # type: ignore[attr-defined]
    yield server
    server.stop(grace_s=10)


def _finished(bridge: BridgeServer) -> str:
    analysis = bridge.start_analysis(dict(BODY))
    assert analysis.done.wait(30)
    return analysis.id


def test_a_finished_analysis_nobody_collects_is_forgotten_after_the_keep_time(bridge, tracking):
    first = _finished(bridge)
    bridge.clock.now += 59.0
    assert bridge.analysis(first).finished == 1000.0  # still there just before its time
    bridge.clock.now += 1.0
    with pytest.raises(RequestError, match=r"no analysis '\w+' \(a finished analysis is kept 60 s") as err:
        bridge.analysis(first)
    assert err.value.status == 404
    assert any(line.startswith(f"analysis {first} forgotten") for line in bridge.lines)


def test_starting_an_analysis_forgets_the_stale_ones_only(bridge, tracking):
    old = _finished(bridge)
    bridge.clock.now += 30.0
    recent = _finished(bridge)
    bridge.clock.now += 40.0  # old: 70 s since it finished, recent: 40 s
    bridge.start_analysis(dict(BODY))
    assert old not in bridge._analyses and recent in bridge._analyses
    assert bridge.analysis_result(recent) == {"frames": 2, "tracks": {"numbers": [1, 2]}}  # collected as before


def test_a_running_analysis_is_never_forgotten_for_its_age(bridge, tracking):
    tracking.clear()  # the tracker holds the analysis running
    running = bridge.start_analysis(dict(BODY))
    bridge.clock.now += 10 * 60.0
    assert bridge.analysis(running.id) is running and running.finished is None
    tracking.set()
    assert running.done.wait(30)
    assert running.finished == bridge.clock.now  # its keep time starts when it ends
    bridge.clock.now += 59.0
    assert bridge.analysis(running.id) is running


def test_the_default_keep_time_is_half_an_hour_and_must_be_positive():
    assert ANALYSIS_KEEP_S == 1800.0
    with pytest.raises(ValueError, match="analysis_keep_s"):
        BridgeServer(port=0, device="cpu", analysis_keep_s=0)
