"""Host <-> device transfers that overlap the compute stream, pending frames, and the batch's region buffer.

On CUDA, uploads and downloads run on side streams (the copy engines) while the compute stream works on
another batch; host buffers are pinned so the copies are asynchronous. Off CUDA every function here is a
plain copy, so the pipeline has one code path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["PendingFrame", "PendingDownload", "host_buffer", "host_words", "upload", "device_buffer", "download", "wait_uploads", "Regions"]


def host_buffer(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A host tensor to stage a transfer with ``device``: pinned for CUDA (asynchronous copies)."""
    return torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")


def host_words(device: object) -> Callable[[tuple[int, int]], np.ndarray]:
    """Allocator of uint32 host arrays (a frame's file words) for ``device``: pinned memory for CUDA (the rows
    a batch needs upload and download from it without a staging copy), else plain memory."""
    pinned = getattr(device, "type", "cpu") == "cuda" and torch.cuda.is_available()

    def words_into(shape: tuple[int, int]) -> np.ndarray:
        return torch.empty(shape, dtype=torch.int32, pin_memory=pinned).numpy().view(np.uint32)
    return words_into


def _copy_stream(device: torch.device, direction: str) -> torch.cuda.Stream:
    """A side stream per CUDA device and direction ("up", "down"): transfers run on the copy engines
    while the compute stream works on another batch, instead of queueing between its kernels."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _indexed_copy_stream(index, direction)


@functools.lru_cache(maxsize=16)
def _indexed_copy_stream(index: int, direction: str) -> torch.cuda.Stream:
    return torch.cuda.Stream(torch.device("cuda", index))


def upload(host: torch.Tensor, dev: torch.device, into: torch.Tensor | None = None) -> torch.Tensor:
    """``host`` (pinned) copied to ``dev`` on the upload stream (into ``into``, a ``device_buffer`` view, if
    given); the compute stream must ``wait_uploads`` before use."""
    # A copy, always: the paste writes into the result, never into the caller's staged buffer.
    if dev.type != "cuda":
        return into.copy_(host) if into is not None else host.to(dev, copy=True)
    with torch.cuda.stream(_copy_stream(dev, "up")):
        if into is not None:
            return into.copy_(host, non_blocking=True)
        t = host.to(dev, non_blocking=True, copy=True)
    t.record_stream(torch.cuda.current_stream(dev))  # freed only after the compute stream is done with it
    return t


def wait_uploads(dev: torch.device) -> None:
    """The compute stream waits for the uploads queued so far (once per batch)."""
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).wait_stream(_copy_stream(dev, "up"))


def device_buffer(numel: int, dev: torch.device) -> torch.Tensor:
    """A float32 buffer for ``upload(..., into=)``: made on the upload stream (whose copies fill it without
    waiting for the compute stream) and kept until the compute stream is done with it."""
    if dev.type != "cuda":
        return torch.empty(numel, device=dev)
    with torch.cuda.stream(_copy_stream(dev, "up")):
        t = torch.empty(numel, device=dev)
    t.record_stream(torch.cuda.current_stream(dev))
    return t


def download(*tensors: torch.Tensor, into: Sequence[torch.Tensor | None] | None = None
             ) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
    """Start copying ``tensors`` (all on one device) to the host; returns the host tensors and the event to
    wait on before reading them (None off CUDA). On CUDA the copies run on the download stream, after
    the work queued so far on the compute stream. ``into``: per tensor, a host tensor of its shape and type
    to copy into (pinned for CUDA), or None for a new float32 one."""
    targets = list(into) if into is not None else [None] * len(tensors)
    if tensors[0].device.type != "cuda":
        return [t.detach().float().contiguous() if host is None else host.copy_(t)
                for t, host in zip(tensors, targets)], None
    dev = tensors[0].device
    side = _copy_stream(dev, "down")
    side.wait_stream(torch.cuda.current_stream(dev))
    hosts = []
    with torch.cuda.stream(side):
        for t, target in zip(tensors, targets):
            host = target if target is not None else host_buffer(tuple(t.shape), dev)
            host.copy_(t.detach(), non_blocking=True)
            t.record_stream(side)  # its memory is not reused before the copy has read it
            hosts.append(host)
    event = torch.cuda.Event()
    event.record(side)
    return hosts, event


class PendingFrame(Protocol):
    """One restored frame whose GPU work is queued and whose download is under way; every method waits for
    the download first, and may run on any thread (the caller's encode threads, while the GPU runs on)."""

    def wait(self) -> None: ...

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, C): float32, or integer codes like the input's; matte (H, W) float32)."""
        ...

    def output(self, number: int, fmt: Any) -> Any:
        """The frame as a sink writes it (a ``Frame``, or the frame kept as the file's words)."""
        ...

    def matte(self) -> np.ndarray:
        """The face matte over the whole frame, (H, W) float32."""
        ...


class PendingDownload:
    """What every pending frame shares: the event its download records (None off CUDA)."""

    event: torch.cuda.Event | None

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


@dataclass(frozen=True)
class Regions:
    """A batch's working-space regions on the device, one after another in ``flat`` (float32): frame b's is
    an (h, w, 3) array from pixel ``starts[b]`` on, (h, w) = ``shapes[b]``, at ``origins[b]`` in its frame.
    One buffer, so the CUDA warps align and paste a whole batch in one launch."""

    flat: torch.Tensor
    starts: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    origins: tuple[tuple[int, int], ...]

    @classmethod
    def allocate(cls, shapes: Sequence[tuple[int, int]], origins: Sequence[tuple[int, int]],
                 dev: torch.device) -> Regions:
        starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])]).astype(np.int64).tolist()
        return cls(device_buffer(3 * starts[-1], dev), tuple(starts[:-1]), tuple(shapes), tuple(origins))

    def hwc(self, b: int) -> torch.Tensor:
        """Frame b's region as an (h, w, 3) view of ``flat``."""
        start, (h, w) = self.starts[b], self.shapes[b]
        return self.flat[3 * start : 3 * (start + h * w)].view(h, w, 3)

    def chw(self, b: int) -> torch.Tensor:
        """Frame b's region as a (3, h, w) channels-last view (how the torch warps take it)."""
        return self.hwc(b).permute(2, 0, 1)

    def pixels(self, values: torch.Tensor, b: int) -> torch.Tensor:
        """Frame b's (h, w) view of ``values``, one value per region pixel of the batch (a matte)."""
        start, (h, w) = self.starts[b], self.shapes[b]
        return values[start : start + h * w].view(h, w)

    @property
    def total(self) -> int:
        return self.starts[-1] + self.shapes[-1][0] * self.shapes[-1][1] if self.starts else 0
