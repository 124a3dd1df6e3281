"""Scanning a shot: the detector's tile pyramid spread over the frames of a window, and kept around faces.

A BlazeFaceDetector looks at every frame through the whole frame plus a pyramid of tiles for small faces
(93 squares a 1080p frame at ``min_face`` 24). In a shot, faces persist from frame to frame, so a window of
``period`` consecutive frames is scanned like this:

1. every frame: the whole frame, one ``period``-th of the tiles (tile ``j`` on the frames whose position in the
   shot is ``j - 1`` modulo ``period``, so each tile is looked at once a window), and every tile around the
   faces found in the window before;
2. the window: every tile around any face found in round 1, on every frame of the window (a face found
   on one frame is looked for on all the others, before and after it);
3. closure: for each face now found, every tile around it on its frame that has not run yet, until none is
   left (a face that moved into another tile's core).

"Around" a face: the tiles whose core (:func:`tile_cores`) meets its box grown by half its size on each
side and whose level keeps faces of at least half its size. Those include every tile that would keep it
or a detection overlapping it, so each face found is merged from the same detections as with every tile on
every frame -- the same box, keypoints and mesh. What a window can miss is a face smaller than the whole
frame's pass finds that is in view for fewer than ``period`` frames, outside the tiles it was looked for in.

Windows are independent but for the boxes carried into round 1, so several can be scanned at once
(:func:`scan_windows`): each carries the boxes of the window ``in_flight`` before it, and while the host reads
one window's detections and plans its next round, the device runs the others' networks (on a GPU each window
has a stream of its own; the CPU scans one window at a time).

Convention: as :mod:`facefix.detect` (frames (N, 3, H, W) float32 sRGB in [0, 1], frame pixels, (x, y)).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import BlazeFaceDetector, DetectResult
from .blazeface import Detections

__all__ = ["SCAN_PERIOD", "GPU_WINDOW_PERIODS", "GPU_WINDOW_BYTES", "GPU_IN_FLIGHT", "GPU_FIRST_WINDOW_PERIODS",
           "GPU_LAST_WINDOW_PERIODS",
           "gpu_window_periods", "gpu_in_flight", "window_starts", "tiles_around",
           "scan_window", "scan_windows", "scan_stream", "ScannedWindow"]

# Frames a window's tile scan is spread over: 8 makes the analysis of a 720p shot with one face ~3x faster
# on 2 CPU cores (benchmarks/analysis_cpu.py) and keeps a window under a third of a second at 24 fps.
SCAN_PERIOD = 8
# Periods a window holds on a GPU: each round of a window waits on the device for the faces it found before the
# next round can choose its tiles, and at 1080p those waits, not the networks, were most of the scan; a window of
# 4 periods waits a quarter as often (an H100, 96 frames, 1 face: the scan 0.64 -> 0.48 s). On the CPU nothing
# waits, and a longer window only runs more tiles around a moving face.
GPU_WINDOW_PERIODS = 4
# At most this many bytes of float frames in a GPU window: a 4K shot's window holds 2 periods, an 8K shot's 1.
GPU_WINDOW_BYTES = 2 << 30
# Windows a GPU scans at once (scan_stream): while the host reads one window's detections and plans its next
# round, the device runs the others' networks, on streams of their own. Two, with the analysis describing each
# window on a thread of its own while the scan goes on: the first window is then done (and described) while the
# third has yet to start, not all three at the end together (an H100, 1080p DPX, 96 frames, runs with detection,
# two rounds of 3 passes: 1 face 0.54 / 0.57 s against 0.55 / 0.63 with three, 4 faces 1.28 / 1.36 s against
# 1.44 / 1.42: benchmarks/with_detection_variants.py).
GPU_IN_FLIGHT = 2
# Periods the first window of a GPU shot holds: the device starts once that many frames are read and converted,
# not a whole window's (at 1080p 32 frames kept it idle for the first ~75 ms of a 96-frame run); the windows after
# it hold GPU_WINDOW_PERIODS, their frames read while it is scanned. An H100, 1080p DPX, 96 frames, runs with
# detection, two rounds of 3 passes: 4 faces 1.20 / 1.24 s against 1.26 / 1.27 with a whole first window, 1 face
# even (0.53 / 0.51 s against 0.53 / 0.52).
GPU_FIRST_WINDOW_PERIODS = 1
# Periods the last window of a GPU shot holds at most: what is left of the analysis once the device is done (the
# last window's descriptors and association, on the host) is then a period's frames, not up to a whole window's.
GPU_LAST_WINDOW_PERIODS = 1


def window_starts(count: int, window: int, first: int | None = None, last: int | None = None) -> list[int]:
    """Where the scan windows of a shot of ``count`` frames start: every ``window`` frames, after a first window
    of ``first`` frames (None, or not shorter than ``window``: a window like the others), the last window cut to its
    final ``last`` frames where it holds more (None: left whole). A property of the shot and these sizes, never of
    the batch."""
    window = max(1, int(window))
    first = window if first is None else max(1, min(int(first), window))
    if count <= 0:
        return []
    starts = [0] + list(range(first, count, window))
    last = None if last is None else max(1, int(last))
    if last is not None and count - starts[-1] > last:
        starts.append(count - last)
    return starts


def gpu_window_periods(size: tuple[int, int] | None, period: int = SCAN_PERIOD) -> int:
    """Periods a GPU scan window holds for frames of ``size`` (width, height): ``GPU_WINDOW_PERIODS``, fewer where
    the window's float RGB frames would pass ``GPU_WINDOW_BYTES``, at least 1; 1 where the size is unknown. A
    property of the shot, never of the batch: the faces found do not depend on ``--batch``."""
    if size is None:
        return 1
    per_period = max(1, int(period)) * _float_frame_bytes(size)
    return max(1, min(GPU_WINDOW_PERIODS, GPU_WINDOW_BYTES // per_period))


def gpu_in_flight(size: tuple[int, int] | None, frames_per_window: int) -> int:
    """Windows a GPU scans at once for frames of ``size`` (width, height): as many as keep their float RGB frames
    within twice ``GPU_WINDOW_BYTES``, up to ``GPU_IN_FLIGHT`` (1080p and 4K 2), at least 1 (8K; and where the size
    is not known up front). A property of the shot, never of the batch."""
    if size is None:
        return 1
    window = max(1, int(frames_per_window)) * _float_frame_bytes(size)
    return max(1, min(GPU_IN_FLIGHT, 2 * GPU_WINDOW_BYTES // window))


def _float_frame_bytes(size: tuple[int, int]) -> int:
    """Bytes of one (width, height) frame as the scan holds it: float32 RGB."""
    return max(1, size[0] * size[1]) * 3 * 4


def tiles_around(boxes: Tensor, cores: Tensor) -> Tensor:
    """Which regions (cores (K, 5) from :func:`tile_cores`) lie around any of ``boxes`` (B, 4) xyxy: (K,) bool.

    A region is around a box when its core meets the box grown by half the box's size on each side and it
    keeps faces (its largest, ``cores[:, 4]``) of at least half the box's size.
    """
    return torch.from_numpy(_tiles_around(boxes.detach().cpu().numpy(), cores.detach().cpu().numpy()))


def _tiles_around(boxes: np.ndarray, cores: np.ndarray) -> np.ndarray:
    """:func:`tiles_around` in float32 numpy (a scan asks a few hundred times a shot, for a few boxes)."""
    if boxes.shape[0] == 0:
        return np.zeros(cores.shape[0], dtype=bool)
    b = boxes.astype(np.float32, copy=False)
    c = cores.astype(np.float32, copy=False)[None]  # (1, K, 5)
    size = (b[:, 2:] - b[:, :2]).max(-1, keepdims=True)
    half = size / np.float32(2)
    g = np.concatenate([b[:, :2] - half, b[:, 2:] + half], 1)[:, None]  # (B, 1, 4)
    meets = (c[..., 0] < g[..., 2]) & (c[..., 1] > g[..., 0]) & (c[..., 2] < g[..., 3]) & (c[..., 3] > g[..., 1])
    big_enough = c[..., 4] >= half
    return (meets & big_enough).any(0)  # type: ignore[no-any-return]


def scan_window(detector: BlazeFaceDetector, frames: Tensor, positions: Sequence[int], carried: Tensor,
                period: int = SCAN_PERIOD) -> tuple[list[DetectResult], Tensor]:
    """Detect faces on a window of frames (N, 3, H, W) of a shot, the tiles scanned as the module says.

    positions: each frame's position in the shot (which slice of the tiles it gets). carried: boxes (B, 4)
    of faces found before (the window before; empty for the first). Returns one DetectResult per frame and
    the boxes of every face returned, to carry into a later window. ``period`` 1 looks at every tile on
    every frame (the detector's own call).
    """
    (window,) = scan_stream(detector, [(positions, lambda: frames)], period, 1, [carried])
    return window.results, window.boxes


def scan_windows(detector: BlazeFaceDetector, frames: Tensor, windows: Sequence[Sequence[int]],
                 before: Sequence[Tensor], period: int = SCAN_PERIOD, in_flight: int = 1
                 ) -> tuple[list[DetectResult], list[Tensor]]:
    """:func:`scan_window` on consecutive windows of ``frames`` (N, 3, H, W): ``windows`` holds each window's
    positions in the shot (their lengths add up to N), ``before`` the boxes found in the windows before these
    (oldest first). :func:`scan_stream` on windows whose frames are already there. Returns one DetectResult per
    frame and the boxes of every window (``before`` then these), to pass on as the next call's ``before``."""
    frames = frames.to(detector.device, torch.float32)
    starts = [0]
    for positions in windows:
        starts.append(starts[-1] + len(positions))
    wanted = [(positions, functools.partial(frames.__getitem__, slice(a, b)))
              for positions, a, b in zip(windows, starts, starts[1:])]
    boxes = list(before)
    found: list[DetectResult] = []
    for window in scan_stream(detector, wanted, period, in_flight, before):
        found += window.results
        boxes.append(window.boxes)
    if frames.device.type == "cuda":
        for stream in _streams(frames.device, in_flight):
            if stream is not None:
                torch.cuda.current_stream(frames.device).wait_stream(stream)
    return found, boxes


@dataclass
class ScannedWindow:
    """A window :func:`scan_stream` is done with: its frames (N, 3, H, W) on the detector's device, one DetectResult
    a frame, the boxes it found (to carry), the CUDA stream its work was queued on and the event recorded there
    once its frames were made (None on the CPU). Other work on its frames waits for that event, not for the
    stream: by the time the window is handed over, the stream holds the first rounds of a later window too."""

    frames: Tensor
    results: list[DetectResult]
    boxes: Tensor
    stream: torch.cuda.Stream | None
    made: torch.cuda.Event | None = None


def scan_stream(detector: BlazeFaceDetector, windows: Iterable[tuple[Sequence[int], Callable[[], Tensor]]],
                period: int = SCAN_PERIOD, in_flight: int = 1, before: Sequence[Tensor] = ()
                ) -> Generator[ScannedWindow, None, None]:
    """:func:`scan_window` on the consecutive windows of a shot as their frames come: ``windows`` gives each
    window's positions in the shot and a function that makes its frames (N, 3, H, W) (called in order, on the
    window's stream, once the window can start). ``before``: the boxes found in windows before these (oldest
    first). Each window carries the boxes of the window ``in_flight`` before it, so that many are scanned at once:
    while the host merges one window's detections, the device runs the others' networks (on a GPU each window on
    a stream of its own), from one window to the next with no pause between groups of them. The faces found
    depend on ``in_flight``, never on how the windows come. Yields each window once it and those before it are
    done, in order; the windows in flight wait (on the host) while the caller works on one."""
    period = max(1, int(period))
    in_flight = max(1, int(in_flight))
    streams = _streams(detector.device, in_flight)
    current = torch.cuda.current_stream(detector.device) if detector.device.type == "cuda" else None
    boxes: list[Tensor | None] = list(before)
    first = len(boxes)
    done: dict[int, ScannedWindow] = {}
    Steps = Generator[None, None, tuple[list[DetectResult], Tensor]]
    Entry = tuple[int, torch.cuda.Stream | None, Steps, Tensor, torch.cuda.Event | None]  # a window in flight
    active: list[Entry] = []
    pending = iter(windows)
    started = handed = 0
    more = True

    def advance(entry: Entry) -> None:
        w, stream, steps, frames, made = entry
        result = _step(steps, stream)
        if result is not None:
            done[w] = ScannedWindow(frames, result[0], result[1], stream, made)
            boxes[first + w] = result[1]
            active.remove(entry)

    while more or active or done:
        # Start windows in order, each once the window it carries from is done, up to in_flight at once (so the
        # windows in flight are consecutive, each on its own stream).
        while more and len(active) < in_flight:
            source = first + started - in_flight
            held = boxes[source] if source >= 0 else torch.zeros(0, 4)
            if held is None:
                break  # the window it carries from is still being scanned
            window = next(pending, None)
            if window is None:
                more = False
                break
            positions, make = window
            stream = streams[started % in_flight]
            if stream is not None and current is not None:
                stream.wait_stream(current)  # whatever the caller queued before (its frames' uploads)
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():  # type: ignore[arg-type]
                frames = make().to(detector.device, torch.float32)
                made = torch.cuda.Event() if frames.is_cuda else None
                if made is not None:
                    made.record()  # on the window's stream
            entry = (started, stream, _window_steps(detector, frames, positions, held, period), frames, made)
            boxes.append(None)
            active.append(entry)
            started += 1
            advance(entry)  # queues its first round
        for entry in list(active):
            advance(entry)  # waits for its round, reads it, queues the next
        while handed in done:
            yield done.pop(handed)
            handed += 1


@functools.lru_cache(maxsize=4)
def _cuda_streams(device: torch.device, count: int) -> tuple[torch.cuda.Stream, ...]:
    return tuple(torch.cuda.Stream(device) for _ in range(count))


def _streams(device: torch.device, count: int) -> list[torch.cuda.Stream | None]:
    """A stream for each window scanned at once on a GPU (the current one where there is one window), Nones on
    the CPU."""
    if device.type != "cuda" or count <= 1:
        return [None] * max(1, count)
    return list(_cuda_streams(device, count))


def _step(steps: Generator[None, None, tuple[list[DetectResult], Tensor]], stream: object
          ) -> tuple[list[DetectResult], Tensor] | None:
    """Advance a window to its next wait (on its stream): None, or its result once it is done."""
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():  # type: ignore[arg-type]
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
    return None


def _window_steps(detector: BlazeFaceDetector, frames: Tensor, positions: Sequence[int], carried: Tensor,
                  period: int) -> Generator[None, None, tuple[list[DetectResult], Tensor]]:
    """The scan of one window (see :func:`scan_window`), pausing after it queues each round's networks on the
    device and before it waits for them: resumed, it reads the round's detections and plans the next."""
    n, _, h, w = frames.shape
    table, cores = detector.region_table(w, h)
    k = table.shape[0]
    ran: dict[tuple[int, int], Detections] = {}
    # Each frame's merged detections, merged again only once a round has run more of its tiles.
    per_frame: dict[int, Detections] = {}
    dirty: set[int] = set()

    def run(pairs: set[tuple[int, int]]) -> Generator[None, None, None]:
        todo = sorted(p for p in pairs if p not in ran)
        if not todo:
            return
        frame = torch.tensor([p[0] for p in todo], dtype=torch.long)
        region = torch.tensor([p[1] for p in todo], dtype=torch.long)
        collect = detector.queue_look(frames, frame, region)
        yield
        det, pair = collect()
        for p, d in zip(todo, det.split(torch.bincount(pair, minlength=len(todo)).tolist())):
            ran[p] = d
            dirty.add(p[0])

    def merged() -> tuple[Detections, Tensor]:
        if dirty:
            order = sorted(p for p in ran if p[0] in dirty)
            parts = [ran[p] for p in order]
            sizes = torch.tensor([len(d) for d in parts], dtype=torch.long)
            frame = torch.repeat_interleave(torch.tensor([p[0] for p in order], dtype=torch.long), sizes)
            region = torch.repeat_interleave(torch.tensor([p[1] for p in order], dtype=torch.long), sizes)
            det, frame = detector.merge(Detections.cat(parts), frame, region, w, h)
            counts = torch.bincount(frame, minlength=n).tolist()
            for i, d in zip(range(n), det.split(counts)):
                if i in dirty:
                    per_frame[i] = d
            dirty.clear()
        order_f = sorted(per_frame)
        sizes = torch.tensor([len(per_frame[i]) for i in order_f], dtype=torch.long)
        return (Detections.cat([per_frame[i] for i in order_f]),
                torch.repeat_interleave(torch.tensor(order_f, dtype=torch.long), sizes))

    cores_np = cores.numpy()

    def around(boxes: np.ndarray) -> list[int]:
        return np.flatnonzero(_tiles_around(boxes, cores_np)).tolist()  # type: ignore[no-any-return]

    period = max(1, int(period))
    carried_regions = around(carried.numpy())
    first: set[tuple[int, int]] = set()
    for i, pos in enumerate(positions):
        first |= {(i, j) for j in range(k) if j == 0 or (j - 1) % period == pos % period}
        first |= {(i, j) for j in carried_regions}
    yield from run(first)
    det, frame = merged()
    found = det.boxes[(det.boxes[:, 2:] - det.boxes[:, :2]).amax(-1) >= detector.min_face / 2]
    near = around(found.numpy())
    yield from run({(i, j) for i in range(n) for j in near})
    while True:  # closure: at most a few rounds, each only for faces found in the one before
        det, frame = merged()
        at, of = det.boxes.numpy(), frame.numpy()  # a frame's boxes at a time: numpy, not a tensor op each
        missing = {(i, j) for i in np.unique(of).tolist() for j in around(at[of == i])} - ran.keys()
        if not missing:
            break
        yield from run(missing)
    collect = detector.queue_results(frames, det, frame)
    yield
    results = collect()
    boxes = [f.box for r in results for f in r.faces]
    return results, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
