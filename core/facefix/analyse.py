"""The analysis pass: detect every face on every frame, find shot cuts, and build FaceTracks.

It reads the shot once, a window of frames at a time (memory flat), and associates each frame's faces into
tracks as soon as its cut is known (a few frames later); only the tracker's zero-lag (forward-backward)
smoothing waits for the shot's end. BlazeFace scans the shot in windows (:mod:`facefix.detect.scan`): its tiles
for small faces are spread over ``scan_period`` frames and kept around the faces found, not all run on every
frame; on a GPU a window holds several periods, and several windows are in flight.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import streaming
from .colour import ColourTransform, colour_transform, resolve_colorspace
from .engine import frames_per_batch
from .errors import FaceFixError, InputError
from .faces import Face, FaceTracks
from .io.dpx import PackedLayout
from .io.frames import unit_from_codes
from .params import Settings
from .streaming import io_threads, prefetch, read_pool, run_ahead, switch_interval

if TYPE_CHECKING:
    from .detect import Detector, DetectResult
    from .detect.scan import ScannedWindow

__all__ = ["track_clip", "AnalysisStats", "working_rgb", "reference_crops", "SCAN_ON_THREAD", "DESCRIBE_ON_OWN_STREAM"]

# On a GPU the scan runs on a thread of its own, a window ahead of the thread that describes the windows scanned
# and associates their faces: otherwise the scan stands still (its windows' next rounds unplanned, the GPU idle)
# while that thread works on a window. (On the CPU both would compete for the same cores.)
SCAN_ON_THREAD = True

# On a GPU a scanned window is described (thumbnails, appearance) on a stream of its own that waits only for the
# window's frames: on the window's stream it would queue behind the first rounds of the window scanned after the
# next one (started there as soon as this one is done), and the thread describing waits for those networks.
DESCRIBE_ON_OWN_STREAM = True


@dataclass
class AnalysisStats:
    frames: int = 0
    faces_detected: int = 0
    faces_too_small: int = 0
    cuts: int = 0
    # Wall seconds of the calling thread: setting up (the detector, loaded once a process, and the readers),
    # waiting for frames (decode and conversion run ahead on worker threads), detection, per-face descriptors and
    # cut scores, closing the readers, and building the tracks. Where the scan runs on a thread of its own (a GPU),
    # detection is the calling thread's wait for the windows, and waiting for frames is the scan thread's.
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - t0
        return now


def working_rgb(frame: np.ndarray, colorspace: str, is_float: bool) -> np.ndarray:
    """(H, W, 3) display-referred sRGB in [0, 1] (NaN -> 0): what the detectors were trained on."""
    ct = colour_transform(resolve_colorspace(colorspace, is_float))
    return np.clip(np.nan_to_num(ct.to_working(frame[..., :3]), nan=0.0), 0.0, 1.0)


def _planar_working_rgb(frame: np.ndarray, colorspace: str, is_float: bool) -> np.ndarray:
    """(3, H, W) contiguous working RGB of one frame: what a detector batch is stacked from on the CPU."""
    return np.ascontiguousarray(working_rgb(frame, colorspace, is_float).transpose(2, 0, 1))


@dataclass(frozen=True)
class _Staged:
    """A frame read for a GPU analysis, on its way to the device as compactly as the file keeps it (``data``,
    uploading on the copy stream), made working RGB there by ``_working_batch``. ``kind``: 'words' (a plain
    10-bit DPX's words, ``layout``), 'codes' ((H, W, 3) integer codes of stored depth ``bits``, 16-bit ones as
    int16 bit patterns) or 'rgb' ((H, W, 3) float32 in the working space, not yet finite or clipped)."""

    kind: str
    data: torch.Tensor
    bits: int | None = None
    layout: PackedLayout | None = None
    host: object = None  # the host memory the upload reads: kept until the batch is converted


def _stage(frame: object, ct: ColourTransform, device: torch.device) -> _Staged:
    """``frame`` (a Frame read with integer codes, a PackedFrame, or anything with float ``pixels``: a host's frame
    handed over in memory) sent to ``device``, from an I/O thread: the
    file's words or codes as they are (a 1080p 10-bit frame travels as 8 or 12 MB, not as 25 MB of float) from
    pinned memory, so the copy overlaps the detector's work on the frames before; only a colour conversion other
    than sRGB/raw runs here (OpenColorIO, on the CPU)."""
    from .gpu import host_buffer, upload
    from .io.dpx import PackedFrame

    if isinstance(frame, PackedFrame):  # words already in pinned memory (FrameReader's allocator)
        words = torch.from_numpy(frame.words.view(np.int32))
        return _Staged("words", upload(words, device), layout=frame.layout, host=frame)
    px = frame.pixels[..., :3]  # type: ignore[attr-defined]
    bits = getattr(getattr(frame, "format", None), "bits_per_sample", None)
    if px.dtype in (np.uint8, np.uint16) and ct.is_identity:
        host = host_buffer(px.shape, device, torch.uint8 if px.dtype == np.uint8 else torch.int16)
        np.copyto(host.numpy().view(px.dtype), px)
        return _Staged("codes", upload(host, device), bits=bits, host=host)
    host = host_buffer(px.shape, device)
    rgb = host.numpy()
    if np.issubdtype(px.dtype, np.integer):
        unit_from_codes(px, bits, out=rgb)
    else:
        np.copyto(rgb, px)
    ct.to_working(rgb, out=rgb)
    return _Staged("rgb", upload(host, device), host=host)


@lru_cache(maxsize=8)
def _code_table(dtype: str, bits: int | None, device: torch.device) -> torch.Tensor:
    """Every code's working value, as ``unit_from_codes`` gives it on the CPU, on ``device``."""
    codes = np.arange(256 if dtype == "uint8" else 65536, dtype=dtype)
    return torch.from_numpy(unit_from_codes(codes, bits)).to(device)


def _working_batch(staged: Sequence[_Staged], device: torch.device) -> torch.Tensor:
    """(N, 3, H, W) float32 working RGB on ``device`` of staged frames (one shot: one size), converted on the
    compute stream once their uploads are done: the same values as ``working_rgb`` on the CPU (codes through the
    same table, NaN -> 0, clipped to [0, 1]). Consecutive frames stored alike convert together, a few at a time:
    a kernel for several frames, not one a frame (a launch costs the feeding thread more than the GPU spends on a
    frame), with temporaries of a few frames and indices well inside 32 bits at any frame size."""
    from .gpu import wait_uploads
    from .io.packed import PackedRegion, unpack_unit

    wait_uploads(device)
    if device.type == "cuda":
        # The uploads are read here, on whatever stream is current (a scan window's own): they must outlive that
        # work, not only the default stream's, before the allocator hands their memory to the next upload.
        current = torch.cuda.current_stream(device)
        for t in staged:
            t.data.record_stream(current)
    first = staged[0]
    h, w = (first.layout.height, first.layout.width) if first.layout is not None else first.data.shape[:2]
    out = torch.empty((len(staged), 3, h, w), dtype=torch.float32, device=device)
    per_call = max(1, min(8, (1 << 30) // max(1, h * w * 3)))
    start = 0
    def stored(t: _Staged) -> tuple[object, ...]:  # frames stored alike convert in one call
        return t.kind, t.data.dtype, t.bits, t.layout, tuple(t.data.shape)

    while start < len(staged):
        s = staged[start]
        end = start + 1
        while end < len(staged) and end - start < per_call and stored(staged[end]) == stored(s):
            end += 1
        data = torch.stack([t.data for t in staged[start:end]])
        if s.kind == "words":
            assert s.layout is not None
            flat = unpack_unit(data.reshape(-1, data.shape[-1]), PackedRegion(0, s.layout.width, s.layout))
            rgb = flat.reshape(end - start, h, w, 3)
        elif s.kind == "codes":
            wide = data.dtype == torch.int16
            index = data.to(torch.int32) & 0xFFFF if wide else data.to(torch.int32)
            rgb = _code_table("uint16" if wide else "uint8", s.bits, device)[index]
        else:
            rgb = data
        if rgb.shape[1:3] != (h, w):
            raise InputError(f"the shot's frames differ in size: {w}x{h} and {rgb.shape[2]}x{rgb.shape[1]}")
        out[start:end] = rgb.permute(0, 3, 1, 2)
        start = end
    return torch.nan_to_num_(out, nan=0.0).clamp_(0.0, 1.0)


def _frame_size(source: object) -> tuple[int, int] | None:
    """(width, height) of a source's frames where it says so without decoding one: a file's header, the layout of a
    host's frames; None otherwise (or where the header cannot be read: reading the frame reports that)."""
    for attr in ("format", "layout"):
        try:
            got = getattr(source, attr, None)
        except (FaceFixError, OSError):
            return None
        width, height = getattr(got, "width", None), getattr(got, "height", None)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return None


@lru_cache(maxsize=2)
def _detector(name: str, device: str, min_face: float) -> Detector:
    """The detector of an analysis, loaded once per process: a host's session or a farm worker analyses shot
    after shot, and reading the model files and moving them to the GPU each time costs more than a short
    shot's detection. Detectors hold only their weights: the scan's state lives in ``track_clip``."""
    from .detect import load_detector

    return load_detector(name, device=device, min_face=min_face)


def track_clip(
    source: object,
    numbers: Sequence[int],
    settings: Settings,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stats: AnalysisStats | None = None,
    on_frame: Callable[[int, Sequence[Face]], None] | None = None,
    scan_period: int | None = None,
    scan_periods: int | None = None,
    scan_first_periods: int | None = None,
    scan_last_periods: int | None = None,
    scan_in_flight: int | None = None,
    scan_thread: bool | None = None,
    on_read: Callable[[], None] | None = None,
) -> FaceTracks:
    """Detect and track faces on ``numbers`` of ``source`` (an open facefix.io source).

    on_frame(number, faces): called after each frame is analysed (progress, cancelling). scan_period: frames a
    BlazeFace window spreads its tiles over (None: ``detect.scan.SCAN_PERIOD``; 1: every tile on every
    frame). scan_periods: periods a window holds (None: on a GPU ``detect.scan.gpu_window_periods`` of the frame
    size, on the CPU 1). scan_first_periods: periods the first window holds (None: on a GPU
    ``detect.scan.GPU_FIRST_WINDOW_PERIODS``, on the CPU as the others); the windows after it start every (period x
    periods) frames of ``numbers``, whatever the batch size. scan_last_periods: periods the last window holds at
    most (None: on a GPU ``detect.scan.GPU_LAST_WINDOW_PERIODS``, on the CPU as the others).
    scan_in_flight: windows scanned at once, each carrying the faces of the window that many before it (None: on a
    GPU ``detect.scan.gpu_in_flight`` of the frame size, on the CPU 1). scan_thread: scan on a thread of its own,
    a window ahead of the one that describes and associates (None: on a GPU, ``SCAN_ON_THREAD``); the tracks are
    the same either way. on_read(): called once every frame has been read (on the thread that scans), while the
    analysis still works on the last ones: a run starts reading the frames it restores first.
    """
    from .detect import BlazeFaceDetector
    from .detect.scan import (
        GPU_FIRST_WINDOW_PERIODS,
        GPU_LAST_WINDOW_PERIODS,
        SCAN_PERIOD,
        gpu_in_flight,
        gpu_window_periods,
        scan_stream,
        window_starts,
    )
    from .gpu import host_words
    from .track import TrackBuilder
    from .track.associate import appearance_batch
    from .track.cuts import CUT_WINDOW, cut_features, feature_score, is_cut, thumbnails

    stats = stats if stats is not None else AnalysisStats()
    t_set_up = time.perf_counter()
    numbers = sorted({int(n) for n in numbers})  # each frame once, in order: the tracker follows them in order
    dev = torch.device(device)
    detector = _detector(settings.detector, str(dev), float(settings.min_face))
    is_float = bool(getattr(source, "is_float", False))
    detections: dict[int, list[Face]] = {}  # of the frames described but not yet associated
    appearance: dict[int, list[np.ndarray]] = {}
    described: list[int] = []  # the frames described, in order
    scores: list[float] = []  # each described frame's cut score against the one before, from the second on
    prev_cut = None  # the previous frame's cut features
    # Tracks are associated as the frames come, on the host while the device scans the windows after them: a
    # frame once its cut is known (the cut test's window of scores after it is in).
    builder = TrackBuilder()
    cuts: set[int] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(numbers), unit="frame", desc="analyse", dynamic_ncols=True)
    step = frames_per_batch(settings, dev)
    on_gpu = dev.type == "cuda"
    period = max(1, int(SCAN_PERIOD if scan_period is None else scan_period))
    size = _frame_size(source) if on_gpu else None  # only a GPU's windows follow the frame size
    if scan_periods is None:
        scan_periods = gpu_window_periods(size, period) if on_gpu else 1
    window = period * max(1, int(scan_periods))
    if scan_first_periods is None:
        scan_first_periods = GPU_FIRST_WINDOW_PERIODS if on_gpu else None
    first_window = None if scan_first_periods is None else period * max(1, int(scan_first_periods))
    if scan_last_periods is None:
        scan_last_periods = GPU_LAST_WINDOW_PERIODS if on_gpu else None
    last_window = None if scan_last_periods is None else period * max(1, int(scan_last_periods))
    if scan_in_flight is None:
        scan_in_flight = gpu_in_flight(size, window) if on_gpu else 1
    in_flight = max(1, int(scan_in_flight))
    scanning = isinstance(detector, BlazeFaceDetector)
    threaded = scanning and (on_gpu and SCAN_ON_THREAD if scan_thread is None else bool(scan_thread))

    ct = colour_transform(resolve_colorspace(settings.colorspace, is_float))
    reader = None
    if on_gpu and getattr(source, "kind", None) in ("sequence", "movie"):
        # Read as the restore pass does: a plain 10-bit DPX as its words, other integer files as codes. Other
        # sources (a host's frames handed over in memory) give their pixels as they are.
        from .io.regions import FrameReader, reads_words

        reader = FrameReader(source, reads_words(source, ct, dev), host_words(dev))  # type: ignore[arg-type]

    def read(n: int) -> object:
        # Decoded and made ready for the detector on an I/O thread while it works on the previous batch: on the
        # GPU as compact pinned pixels (converted there), on the CPU as working RGB planes.
        if on_gpu:
            return _stage(reader.read(n) if reader is not None else source.read(n), ct, dev)  # type: ignore[attr-defined]
        return _planar_working_rgb(source.read(n).pixels, settings.colorspace, is_float)  # type: ignore[attr-defined]

    # As the restore reads: a DPX's words with a few threads (more only contend with the threads that feed the
    # GPU: an H100, 1 face, runs with detection 0.53 / 0.55 s against 0.55 / 0.63 with 15), other files with a
    # thread per core.
    pool = (io_threads(reader.io_threads, "facefix-analyse") if reader is not None and reader.as_words
            else read_pool(str(getattr(source, "kind", "sequence")), "facefix-analyse"))
    # On a GPU every frame read ahead waits on the device: the windows in flight and one more, not a second batch.
    ahead = window * (in_flight + 1) if scanning else step + window
    stream = prefetch(read, list(numbers), depth=ahead if on_gpu else 2 * step, pool=pool)
    stats.timed("set_up", t_set_up)

    taken = 0

    def frames_of(count: int) -> torch.Tensor:
        """The next ``count`` frames of the shot, as a batch where the detector works."""
        nonlocal taken
        t = time.perf_counter()
        frames = [next(stream)[1] for _ in range(count)]
        stats.timed("wait_for_frames", t)
        taken += count
        if taken == len(numbers) and on_read is not None:
            on_read()
        if on_gpu:
            return _working_batch(frames, dev)  # type: ignore[arg-type]
        return torch.from_numpy(np.stack(frames))  # type: ignore[arg-type]

    def describe(chunk: Sequence[int], batch: torch.Tensor, results: Sequence[DetectResult]) -> None:
        """What tracking needs of a batch's frames besides their faces: cut features and appearance descriptors,
        sampled where the frames are (only they come back from a GPU)."""
        nonlocal prev_cut
        cut = cut_features(thumbnails(batch, clipped=True))  # working frames: float32 in [0, 1]
        vectors = appearance_batch(batch, [r.faces for r in results])
        for i, (n, feats, res) in enumerate(zip(chunk, cut, results)):
            detections[n] = list(res.faces)
            appearance[n] = vectors[i]
            described.append(n)
            stats.faces_detected += len(res.faces)
            stats.faces_too_small += int(res.skipped_small)
            if prev_cut is not None:
                scores.append(feature_score(prev_cut, feats))
            prev_cut = feats
            if on_frame is not None:
                on_frame(n, res.faces)
        stats.frames += len(chunk)
        if bar is not None:
            bar.update(len(chunk))

    def associate(last: bool) -> None:
        """Associate the frames described whose cut is known (all of them once the ``last`` is described)."""
        first = len(builder.frames)
        # Only the scores the cut tests of these frames read (a window each side), not the whole shot's each time.
        base = max(0, first - 1 - CUT_WINDOW)
        values = np.asarray(scores[base:], np.float64)
        for i in range(first, len(described)):
            if i > 0 and not last and i - 1 + CUT_WINDOW >= len(scores):
                break  # its cut test needs scores not in yet
            n = described[i]
            cut = i > 0 and is_cut(values, i - 1 - base, window=CUT_WINDOW)
            if cut:
                cuts.add(n)
            builder.add(n, detections.pop(n), appearance.pop(n), cut=cut)

    own = torch.cuda.Stream(dev) if on_gpu and scanning and DESCRIBE_ON_OWN_STREAM else None

    def batches() -> Generator[tuple[Sequence[int], torch.Tensor, Sequence[DetectResult], object], None, None]:
        """Each batch of the shot with its detections (and the CUDA stream to describe it on, or None)."""
        if scanning:
            # One window after the other, in_flight of them on the device at once across the whole shot.
            starts = window_starts(len(numbers), window, first_window, last_window)
            bounds = list(zip(starts, starts[1:] + [len(numbers)]))
            wanted = ((range(a, b), functools.partial(frames_of, b - a)) for a, b in bounds)
            scanned = scan_stream(detector, wanted, period, in_flight)  # type: ignore[arg-type]
            if threaded:
                # "cuda" is the calling thread's current device, which a new thread does not share.
                here = torch.device("cuda", torch.cuda.current_device()) if on_gpu and dev.index is None else dev
                scanned = run_ahead(scanned, 1, "facefix-scan", functools.partial(_scan_thread_state, here))
            with contextlib.closing(scanned):
                for (a, b), found in zip(bounds, scanned):
                    yield numbers[a:b], found.frames, found.results, _describing_stream(found, own)
            return
        for start in range(0, len(numbers), step):
            chunk = numbers[start : start + step]
            batch = frames_of(len(chunk))
            yield chunk, batch, detector(batch), None

    try:
        # The scan thread gets the interpreter's lock back at once while this one describes and associates.
        with (switch_interval(streaming.FEEDER_SWITCH_INTERVAL if threaded else None), torch.inference_mode(),
              contextlib.closing(batches()) as scanned):  # faces come back to the host
            t = time.perf_counter()
            for chunk, batch, results, on_stream in scanned:
                t = stats.timed("detect", t)
                with torch.cuda.stream(on_stream) if on_stream is not None else contextlib.nullcontext():  # type: ignore[arg-type]
                    describe(chunk, batch, results)
                del batch  # the frames are no longer needed
                t = stats.timed("describe", t)
                associate(last=False)
                t = stats.timed("track", t)
    finally:
        t = time.perf_counter()
        stream.close()
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        stats.timed("close", t)
    if not threaded:
        stats.timings["detect"] = stats.timings.get("detect", 0.0) - stats.timings.get("wait_for_frames", 0.0)
    t = time.perf_counter()
    associate(last=True)
    stats.cuts = len(cuts)
    tracks = builder.finish(cuts)
    stats.timed("track", t)
    meta = dict(tracks.metadata)
    meta.update({"detector": settings.detector, "cuts": sorted(int(c) for c in cuts),
                 "frames": [int(numbers[0]), int(numbers[-1])] if numbers else []})
    return FaceTracks(tracks=tracks.tracks, metadata=meta)


def _describing_stream(window: ScannedWindow, own: torch.cuda.Stream | None) -> torch.cuda.Stream | None:
    """The stream to work on a scanned window's frames on: ``own`` (None: the window's), once the window's frames
    are made there; the frames' memory is not handed on before the work queued there is done."""
    if own is None or window.made is None:
        return window.stream
    own.wait_event(window.made)
    window.frames.record_stream(own)
    return own


@contextlib.contextmanager
def _scan_thread_state(device: torch.device) -> Iterator[None]:
    """What the scan thread needs of the calling thread's state (thread-local in torch): inference mode (the
    detector's CUDA graphs replay only under it) and the device."""
    with torch.inference_mode(), torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        yield


def reference_crops(reference: str, source: object, tracks: FaceTracks, settings: Settings,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Aligned 512 crops of the --reference face and of sample frames of every track, for ``--faces reference``."""
    from .detect import load_detector
    from .errors import InputError
    from .geometry import TEMPLATE_SIZE, crop_from_frame_matrix, warp_affine
    from .io import open_source
    from .track.select import sample_frames

    def crops_of(rgb: np.ndarray, faces: Sequence[Face]) -> torch.Tensor:
        img = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        mats = crop_from_frame_matrix(np.stack([f.landmarks for f in faces]))
        return warp_affine(img, mats, (TEMPLATE_SIZE, TEMPLATE_SIZE), src_index=np.zeros(len(faces), np.int64))

    ref_src = open_source(reference)
    ref = ref_src.read(ref_src.frame_numbers[0])
    ref_rgb = working_rgb(ref.pixels, settings.colorspace, ref.format.is_float)
    detector = load_detector(settings.detector, device=str(device), min_face=8)
    with torch.inference_mode():
        found = detector(torch.from_numpy(np.ascontiguousarray(ref_rgb.transpose(2, 0, 1)))[None].to(device))[0].faces
    if not found:
        raise InputError(f"{reference}: no face found in the --reference image")
    largest = max(found, key=lambda f: f.size)
    is_float = bool(getattr(source, "is_float", False))
    per_track: dict[int, torch.Tensor] = {}
    for t in tracks.tracks:
        frames = sample_frames(t)
        per_track[t.id] = torch.cat([
            crops_of(working_rgb(source.read(n).pixels, settings.colorspace, is_float), [t.faces[n]])  # type: ignore[attr-defined]
            for n in frames
        ])
    return crops_of(ref_rgb, [largest]), per_track
