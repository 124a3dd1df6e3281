"""Streaming helpers shared by the passes over a shot: frames read ahead on worker threads, in order.

Decoders (OpenImageIO, FFmpeg) release the interpreter lock, so several threads decode in parallel while
the thread that feeds the GPU keeps it busy.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

__all__ = ["prefetch", "run_ahead", "io_thread_priority", "io_thread_count", "io_threads", "read_pool",
           "switch_interval", "FEEDER_SWITCH_INTERVAL"]

T = TypeVar("T")


def prefetch(read: Callable[[int], Any], numbers: Sequence[int], depth: int, pool: Executor
             ) -> Generator[tuple[int, Any], None, None]:
    """``read(n)`` of every frame on ``pool``, up to ``depth`` ahead, yielded in order; re-raises read errors."""
    pending: deque[tuple[int, Future]] = deque()
    it = iter(numbers)
    try:
        for n in it:
            pending.append((n, pool.submit(read, n)))
            if len(pending) >= max(1, depth):
                break
        while pending:
            n, fut = pending.popleft()
            frame = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt)))
            yield n, frame
    finally:
        for _, fut in pending:
            fut.cancel()


def run_ahead(items: Iterator[T], depth: int, name: str,
              context: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext) -> Generator[T, None, None]:
    """``items`` made on a thread of their own (inside ``context()``, entered there: thread-local state such as
    torch's inference mode), handed over in order up to ``depth`` ahead of the caller; the thread's errors are
    raised here. Closing the generator (or an error here) stops the thread at its next item and waits for it,
    ``items`` closed on that thread, so whatever ``items`` reads from may be closed afterwards."""
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(entry, timeout=0.05)
                return True
        return False

    def work() -> None:
        last: tuple[bool, Any] = (False, None)  # the end, or the error that ended it
        try:
            with context():
                try:
                    for item in items:
                        if not put((True, item)):
                            return
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
        except BaseException as err:  # noqa: BLE001 - raised on the caller's thread
            last = (False, err)
        put(last)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            more, value = handoff.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


def io_thread_priority(step: int = 5) -> None:
    """Thread initializer: I/O threads give way to the one thread that feeds the GPU.

    With every core busy decoding and encoding, that thread would otherwise wait for a time slice
    between kernel launches and the GPU would idle. Linux keeps a nice value per thread; elsewhere this
    does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))


def io_thread_count(at_most: int | None = None) -> int:
    """One I/O thread per core but the one that feeds the GPU (at least two), and no more than ``at_most``."""
    count = max(2, (os.cpu_count() or 2) - 1)
    return count if at_most is None else min(at_most, count)


def io_threads(workers: int | None, name: str) -> ThreadPoolExecutor:
    """I/O threads that give way to the GPU feeder: ``workers`` of them, or ``io_thread_count()`` for None."""
    count = workers if workers is not None else io_thread_count()
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix=name, initializer=io_thread_priority)


def read_pool(kind: str, name: str = "facefix-read") -> ThreadPoolExecutor:
    """Threads to read a source with: one per core but one for image sequences (frames are independent
    files), a single one for movies (decoded in order)."""
    return io_threads(None if kind == "sequence" else 1, name)


class _SwitchInterval:
    """Python's thread switch interval, changed while any caller needs it changed: the first in keeps the one it
    finds, the last out puts it back (two analyses may run at once on a host's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._kept = 0.0

    @contextlib.contextmanager
    def __call__(self, seconds: float | None) -> Iterator[None]:
        if seconds is None:
            yield
            return
        with self._lock:
            if not self._inside:
                self._kept = sys.getswitchinterval()
            self._inside += 1
            sys.setswitchinterval(seconds)
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if not self._inside:
                    sys.setswitchinterval(self._kept)


# ``with switch_interval(s):`` runs its body with the interpreter handing its lock between threads every ``s``
# seconds (None: as it is).
switch_interval = _SwitchInterval()

# Python's switch interval (seconds) while a thread of ours runs Python beside one that feeds the GPU: the analysis's
# describing and associating beside its scan thread, a run's sidecar being written beside the restore. The feeder
# gives up the interpreter's lock at every tensor operation it queues and must get it back from the other thread,
# which with Python's 5 ms holds it that long each time: while that thread works, the feeder queues one operation
# per 5 ms and the GPU idles. At 50 us it gets it back at once (a model of the scan and the calling thread,
# benchmarks/switch_interval.py: the scan done 1.35x sooner; not yet timed on a GPU:
# with_detection_variants.py python_switch_interval). None: Python's as it is.
FEEDER_SWITCH_INTERVAL: float | None = 5e-5
