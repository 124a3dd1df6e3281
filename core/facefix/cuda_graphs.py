"""CUDA graphs of a network call: one capture per input shape, replayed, so a call costs one launch instead of
one per kernel (the thread that feeds the GPU otherwise spends its time launching small kernels)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import SettingsError

__all__ = ["CudaGraphs", "GRAPH_LIMIT"]

GRAPH_WARMUP = 3  # eager runs on a side stream before capture (allocator, cuDNN and compile settle)
GRAPH_LIMIT = 4  # captured shapes kept by default; each holds its own activation memory


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: Tensor
    static_out: Any  # a Tensor, or a tuple of them


def _storage_key(module: nn.Module) -> tuple[int, ...]:
    """Addresses of the weights: a captured graph reads them there, so a move invalidates it."""
    return tuple(t.data_ptr() for t in itertools.chain(module.parameters(), module.buffers()))


@dataclass
class CudaGraphs:
    """CUDA graphs of ``fn(module, x, fidelity)`` (a tensor or a tuple of them), one per input shape/dtype/device
    (and fidelity), the ``limit`` most recently used kept. Not for two threads at once (one static input)."""

    name: str
    fn: Callable[[nn.Module, Tensor, float], Any]
    keyed_on_fidelity: bool
    limit: int = GRAPH_LIMIT
    entries: OrderedDict[tuple[object, ...], _Captured] = field(default_factory=OrderedDict)
    weights: tuple[int, ...] = ()
    last_stream: torch.cuda.Stream | None = None
    last_done: torch.cuda.Event | None = None  # recorded on last_stream once the last call's copies were made

    def __call__(self, module: nn.Module, x: Tensor, fidelity: float) -> Any:
        weights = _storage_key(module)
        if weights != self.weights:
            self.entries.clear()
            self.weights = weights
        key = (x.device, x.dtype, tuple(x.shape), x.stride(), fidelity if self.keyed_on_fidelity else None)
        entry = self.entries.get(key)
        if entry is None:
            entry = self._capture(module, x, fidelity)
            self.entries[key] = entry
            while len(self.entries) > self.limit:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        # A call on another stream than the last waits for the last call's copies out (the static buffers are
        # shared), not for all that stream holds: work queued there since (a scan window's other networks and
        # crops) goes on beside this replay.
        stream = torch.cuda.current_stream(x.device)
        if self.last_done is not None and self.last_stream != stream:
            stream.wait_event(self.last_done)
        entry.static_in.copy_(x)
        entry.graph.replay()
        out = entry.static_out  # the next replay overwrites it: the caller gets copies
        copies = tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()
        self.last_stream = stream
        self.last_done = torch.cuda.Event()
        self.last_done.record(stream)
        return copies

    def _capture(self, module: nn.Module, x: Tensor, fidelity: float) -> _Captured:
        static_in = x.clone()
        try:
            with torch.cuda.device(x.device):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(GRAPH_WARMUP):
                        self.fn(module, static_in, fidelity)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # thread_local: the run's I/O threads go on allocating pinned buffers meanwhile.
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    static_out = self.fn(module, static_in, fidelity)
        except torch.cuda.OutOfMemoryError:
            raise  # the caller's out-of-memory back-off handles it
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise SettingsError(
                f"--cuda-graphs: {self.name} cannot be captured in a CUDA graph ({first})"
            ) from None
        return _Captured(graph, static_in, static_out)


