"""A small thread-safe least-recently-used cache, for what the readers and writers derive once per shot (a
FrameFormat from a header, an output spec, a DPX header) and the I/O threads then share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar, overload

__all__ = ["LruCache"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class LruCache(Generic[K, V]):
    """At most ``size`` entries; ``get`` marks an entry used, ``put`` drops the least recently used beyond
    ``size``. Values are shared between threads, so they must not be changed once put."""

    def __init__(self, size: int = 16) -> None:
        self._size = max(1, size)
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
