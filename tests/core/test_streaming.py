"""run_ahead: a generator made on a thread of its own, handed over in order, a bounded number of items ahead."""

import contextlib
import threading
import time

import pytest

from facefix.streaming import run_ahead


def test_items_come_in_order_made_on_another_thread_at_most_depth_ahead():
    made: list[tuple[int, str]] = []
    taken: list[int] = []

    def items():
        for i in range(6):
            made.append((i, threading.current_thread().name))
            yield i

    got = []
    for item in run_ahead(items(), 2, "ahead-test"):
        time.sleep(0.02)  # a slow caller: the thread fills its hand-over and waits
        # Made so far: the ones taken, the two handed over and waiting, and the one the thread holds.
        assert len(made) <= len(taken) + 1 + 2 + 1
        taken.append(item)
        got.append(item)
    assert got == list(range(6))
    assert {name for _, name in made} == {"ahead-test"}


def test_the_thread_s_error_is_raised_to_the_caller_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("frame 3 is corrupt")

    got = []
    with pytest.raises(ValueError, match="frame 3 is corrupt"):
        for item in run_ahead(items(), 1, "ahead-test"):
            got.append(item)
    assert got == [1, 2]


def test_closing_stops_the_thread_and_closes_the_items_on_it():
    closed_on: list[str] = []
    before = threading.active_count()

    def items():
        try:
            yield from range(10_000)
        finally:
            closed_on.append(threading.current_thread().name)

    ahead = run_ahead(items(), 1, "ahead-test")
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()
    assert closed_on == ["ahead-test"]
    assert threading.active_count() == before


def test_an_error_in_the_caller_stops_the_thread():
    before = threading.active_count()
    made = []

    def items():
        for i in range(10_000):
            made.append(i)
            yield i

    with pytest.raises(KeyError):
        for item in run_ahead(items(), 1, "ahead-test"):
            if item == 3:
                raise KeyError("cancelled")
    assert threading.active_count() == before
    assert len(made) <= 3 + 1 + 1 + 1


def test_the_context_is_entered_on_the_thread_around_the_items():
    log: list[str] = []

    @contextlib.contextmanager
    def context():
        log.append(f"enter {threading.current_thread().name}")
        yield
        log.append("exit")

    def items():
        log.append("item")
        yield 1

    assert list(run_ahead(items(), 1, "ahead-test", context)) == [1]
    assert log == ["enter ahead-test", "item", "exit"]


def test_an_error_closing_the_items_reaches_the_caller_rather_than_leaving_it_waiting():
    def items():
        try:
            yield 1
        finally:
            raise OSError("could not release the reader")

    got = []
    with pytest.raises(OSError, match="could not release"):
        for item in run_ahead(items(), 1, "ahead-test"):
            got.append(item)
    assert got == [1]


def test_switch_interval_is_set_inside_and_put_back_by_the_last_out():
    """switch_interval(s) sets Python's switch interval for its body and puts back what it found, also when the
    body raises; overlapping users (two analyses on a host's threads) put it back only when the last is out; None
    changes nothing."""
    import sys

    from facefix.streaming import switch_interval

    kept = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        with switch_interval(None):
            assert sys.getswitchinterval() == pytest.approx(0.004)
        with pytest.raises(KeyError), switch_interval(5e-5):
            assert sys.getswitchinterval() == pytest.approx(5e-5)
            raise KeyError("the body's error goes through")
        assert sys.getswitchinterval() == pytest.approx(0.004)
        first, second = switch_interval(5e-5), switch_interval(5e-5)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert sys.getswitchinterval() == pytest.approx(5e-5)  # the second user is still inside
        second.__exit__(None, None, None)
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        sys.setswitchinterval(kept)


def test_a_sidecar_written_beside_a_gpu_feeder_hands_the_lock_back_quickly(tmp_path, monkeypatch):
    """A run's sidecar thread writes with Python's switch interval at what it is given (a GPU run:
    FEEDER_SWITCH_INTERVAL), then puts Python's back; given None it leaves it; the file is whole either way."""
    import sys

    import numpy as np

    from facefix.faces import Face, FaceTrack, FaceTracks
    from facefix.run import _keep_tracks
    from facefix.streaming import FEEDER_SWITCH_INTERVAL

    tracks = FaceTracks(tracks=(FaceTrack(id=0, faces={1: Face(box=(0, 0, 8, 8), landmarks=np.ones((5, 2)))}),))
    seen: list[float] = []
    save = FaceTracks.save

    def spy(self, path, **kwargs):
        seen.append(sys.getswitchinterval())
        save(self, path, **kwargs)

    monkeypatch.setattr(FaceTracks, "save", spy)
    python_s = sys.getswitchinterval()
    _keep_tracks(tracks, tmp_path / "a.json", FEEDER_SWITCH_INTERVAL)
    _keep_tracks(tracks, tmp_path / "b.json")
    assert seen == [pytest.approx(FEEDER_SWITCH_INTERVAL), python_s] and sys.getswitchinterval() == python_s
    assert FaceTracks.load(tmp_path / "a.json").to_json() == FaceTracks.load(tmp_path / "b.json").to_json()
