"""Whole shots: ``run_clip`` streams a source through the core and writes the result.

Used by the CLI, the farm templates and the host adapters alike. Memory stays flat in clip length: frames
are read ahead and written behind on worker threads through bounded queues, a batch at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import streaming
from .colour import colour_transform, resolve_colorspace
from .engine import Engine, frames_per_batch
from .errors import Cancelled, FaceFixError, InputError, Interrupted, OutputError, SettingsError
from .faces import Face, FaceTracks, face_regions
from .gpu import PendingFrame
from .io.frames import Frame, FrameFormat
from .io.regions import StagedFrame, frame_reader, mask_plane, restore_input
from .params import Settings
from .pipeline import BatchStats, queue_batch, stage_frame
from .streaming import io_threads, prefetch, switch_interval

__all__ = ["RunSummary", "run_clip", "faces_for_frames", "Interrupted", "Cancelled", "batch_sizes",
           "tracks_sidecar"]

log = logging.getLogger("facefix")


@dataclass
class RunSummary:
    output: str = ""
    frames_written: int = 0
    frames_resumed: int = 0
    frames_preroll: int = 0
    frames_without_faces: int = 0
    faces_restored: int = 0
    faces_too_small: int = 0
    nonfinite_pixels: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # With profile=True: seconds per stage. decode/encode are summed over worker threads (they overlap
    # each other and the GPU); analyse and restore are wall times of the two passes (always given), with
    # analyse_* the analysis pass's own parts (see AnalysisStats.timings).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        parts = [
            f"{self.frames_written} frames written" + (f" to {self.output}" if self.output else ""),
            f"{self.faces_restored} faces restored",
            f"{self.frames_without_faces} frames without faces",
        ]
        if self.faces_too_small:
            parts.append(f"{self.faces_too_small} faces too small (skipped)")
        if self.frames_resumed:
            parts.append(f"{self.frames_resumed} frames already done (resumed)")
        if self.nonfinite_pixels:
            parts.append(f"{self.nonfinite_pixels} NaN/Inf pixels (left as they were outside faces)")
        parts.append(f"{self.seconds:.1f} s ({self.fps:.2f} fps)")
        return "; ".join(parts)


def faces_for_frames(tracks: FaceTracks, numbers: Sequence[int], settings: Settings,
                     summary: RunSummary | None = None, source: object | None = None,
                     device: object = "cpu") -> dict[int, list[Face]]:
    """The faces to restore on each frame: the selected tracks, without faces below --min-face.

    ``source`` (the open clip) is needed only for ``--faces reference``, to crop the tracks' faces.
    """
    selected = tracks
    if settings.faces != "all":
        from .track.select import select_tracks

        ref = tracks_crops = None
        if settings.faces == "reference":
            from .analyse import reference_crops

            if not settings.reference:
                raise SettingsError("--faces reference: give the character's image with --reference FILE")
            if source is None:
                raise SettingsError("--faces reference: needs the source clip")
            ref, tracks_crops = reference_crops(settings.reference, source, tracks, settings, device)  # type: ignore[arg-type]
        selected = select_tracks(tracks, settings, reference_crops=ref, track_crops=tracks_crops)
    out: dict[int, list[Face]] = {}
    for n in numbers:
        faces = []
        for f in selected.faces_at(n):
            if f.size < settings.min_face:
                if summary is not None:
                    summary.faces_too_small += 1
                continue
            faces.append(f)
        out[n] = faces
    return out


def batch_sizes(frames: int, per_batch: int) -> list[int]:
    """How many of ``frames`` frames go to the GPU in each batch: ``per_batch``, but half that for the first
    (the GPU starts after half as many reads) and at most that for the last (fewer frames left to write once
    the GPU is done). A frame's result does not depend on the batch it is in, only the overlap does."""
    if frames <= 0:
        return []
    half = max(1, per_batch // 2)
    sizes = [min(half, frames)]
    left = frames - sizes[0]
    while left > per_batch:
        sizes.append(per_batch)
        left -= per_batch
    if left > half:
        sizes += [left - left // 2, left // 2]
    elif left:
        sizes.append(left)
    return sizes


class _Writer:
    """Writes frames on ``pool`` (bounded backlog); errors surface on the next put or on close.

    A frame goes to the pool only once ``ready(item)`` returns (its GPU result is on the host): one waiter
    thread waits for frames in order, so the pool's threads, shared with decoding, never sit blocked on the
    GPU while frames wait to be read. A pool of several threads only for sinks whose frames are independent
    files (image sequences); frames reach the pool in the order they were put.
    """

    def __init__(self, write: Callable[[object], None], depth: int, pool: Executor,
                 ready: Callable[[object], None] = lambda item: None) -> None:
        self._write = write
        self._ready = ready
        self._pool = pool
        self._waiter = io_threads(1, "facefix-wait")
        self._pending: deque = deque()
        self._depth = max(1, depth)

    def _when_ready(self, item: object) -> Future:
        self._ready(item)
        return self._pool.submit(self._write, item)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._pending.popleft().result().result()

    def put(self, item: object) -> None:
        self._drain(self._depth - 1)
        self._pending.append(self._waiter.submit(self._when_ready, item))

    def close(self) -> None:
        try:
            self._drain(0)
        finally:
            self._waiter.shutdown(wait=True, cancel_futures=True)


def run_clip(
    source: str,
    dest: str,
    settings: Settings,
    *,
    frames: str | None = None,
    tracks: FaceTracks | None = None,
    resume: bool = False,
    progress: bool = True,
    codec: str = "auto",
    matte: str | None = None,
    mask: str | None = None,
    engine: Engine | None = None,
    restorer_path: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    profile: bool = False,
) -> RunSummary:
    """Restore every selected face of ``source`` (frames ``frames``) and write ``dest``.

    tracks: FaceTracks to use; None = detect and track first (the analysis pass, over every requested frame
    and its pre-roll, whatever is already written), keeping them in a sidecar next to the output
    (``tracks_sidecar``) that a resumed run reuses. resume: skip frames already written to ``dest`` (image
    sequences), recomputing only the temporal pre-roll they need: the result equals one uninterrupted run.
    matte: optional image-sequence pattern for the face alpha matte. mask: a host's mask (an image sequence
    of the plate's size, its alpha channel or else its first): the fix applies only where it is above 0, in
    proportion (``io.regions.mask_plane``). on_progress(done, total): for hosts that
    draw their own progress. cancel(): asked between batches; True stops the run (``Cancelled``), finished
    frames kept. profile: fill ``summary.timings`` (synchronises the GPU between stages, so it is slower).
    An output that would overwrite one of the input files is refused before anything is written.
    """
    from .io import is_movie, open_sink, open_source

    t0 = time.perf_counter()
    summary = RunSummary(output=dest)
    src = open_source(source, frames)
    numbers = list(src.frame_numbers)
    if not numbers:
        raise InputError(f"{source}: no frames to process")
    ct = colour_transform(resolve_colorspace(settings.colorspace, src.is_float))
    engine = engine or Engine(settings, restorer_path=restorer_path)
    engine.restorer()  # fail fast (model not installed, bad file) before any frame is analysed or written

    stabiliser = None
    preroll = 0
    if settings.temporal > 0:
        stabiliser = engine.stabiliser(settings.temporal)
        preroll = stabiliser.preroll
    # The repair reads K frames either side of a frame: a restored pre-roll frame needs its own K before it, and
    # every frame the K after it (the post-roll, read after each written run as the pre-roll is before it).
    repairer = _repairer(settings)
    postroll = repairer.lookahead if repairer is not None else 0
    preroll += repairer.preroll if repairer is not None else 0

    full = open_source(source) if (preroll or postroll) and frames is not None else src
    all_numbers = list(full.frame_numbers)
    mask_src = open_source(mask) if mask else None
    _refuse_overwriting_inputs([(full, all_numbers)] + ([(mask_src, numbers)] if mask_src is not None else []),
                               [(dest, numbers), (matte, numbers)])

    for target in (dest, matte):
        if target:
            _make_folder(Path(target).parent)
    fmt = _output_format(src.format, settings.upscale)
    sink = open_sink(dest, like=fmt, fps=src.fps, codec=codec, audio_from=source if src.kind == "movie" else None)
    matte_sink = open_sink(matte, like=_matte_format(fmt), fps=src.fps) if matte else None

    todo = [n for n in numbers if not (resume and sink.is_done(n) and (matte_sink is None or matte_sink.is_done(n)))]
    summary.frames_resumed = len(numbers) - len(todo)
    if not todo:
        sink.abort()
        if matte_sink is not None:
            matte_sink.abort()
        summary.seconds = time.perf_counter() - t0
        summary.notes.append("nothing to do: every frame is already written")
        return summary

    # Frames to compute: every frame to write, plus up to `preroll` frames before and `postroll` after each
    # written run (they only feed the temporal history and the repair's window, so a chunk or a resumed run
    # equals one uninterrupted run).
    index = {n: i for i, n in enumerate(all_numbers)}
    compute = _with_preroll(todo, all_numbers, index, preroll, postroll)
    todo_set = set(todo)
    summary.frames_preroll = len([m for m in compute if m not in todo_set])

    io_lock = threading.Lock()

    def timed(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        if not profile:
            return fn

        def run(*a: object, **kw: object) -> object:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with io_lock:
                    summary.timings[name] = summary.timings.get(name, 0.0) + time.perf_counter() - t
        return run

    reader = frame_reader(full, dest, settings.upscale, ct, engine.device)
    decode: Callable[[int], Frame] = timed("decode", reader.read)  # type: ignore[assignment]
    per_batch = frames_per_batch(settings, engine.device)
    read_ahead = 2 * per_batch + postroll
    early = _EarlyReads(decode, compute[:read_ahead], reader.io_threads)
    sidecar = None
    # Without tracks, once the analysis has read its last frame (its host work on the last ones still to come),
    # the frames the restore starts with are decoded meanwhile: image files only (a movie decodes in order, once).
    with early.cancelled_on_error():
        if tracks is None:
            tracks, sidecar = _tracks_to_keep(full, source, dest,
                                              _with_preroll(numbers, all_numbers, index, preroll, postroll),
                                              settings, engine, progress, summary,
                                              on_read=early.start if full.kind == "sequence" else None)
        faces = faces_for_frames(tracks, compute, settings, summary, source=full, device=engine.device)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="frame", desc="restore", dynamic_ncols=True, leave=True)

    finish: Callable[[PendingFrame, int, FrameFormat], Frame] = timed(  # type: ignore[assignment]
        "finish", lambda pending, n, fmt: pending.output(n, fmt))
    stage: Callable[..., StagedFrame] = timed("stage", stage_frame)  # type: ignore[assignment]
    regions = face_regions(faces)

    def read(n: int) -> tuple[Frame, StagedFrame]:
        # Decoded and staged for the GPU here, on an I/O thread: the thread that feeds the GPU only uploads.
        # The frame stays as the reader gives it (io.regions): only its face region is converted.
        frame = early.take(n)
        if frame is None:
            frame = decode(n)
        staged = stage(restore_input(frame), faces.get(n, []), ct, settings.upscale, engine.device,
                       bits=frame.format.bits_per_sample, region=regions.get(n))
        if mask_src is not None and n in todo_set:  # pre-roll frames are not written: no mask needed
            size = (frame.format.height, frame.format.width)
            staged = staged.with_mask(mask_plane(mask_src.read(n), size, n), engine.device)
        return frame, staged

    def write(item: tuple[int, FrameFormat, PendingFrame]) -> None:
        # The frame's CPU finishing runs here, on an I/O thread, while the GPU works on the next batch.
        n, fmt, pending = item
        sink.write(finish(pending, n, fmt))
        if matte_sink is not None:
            alpha = pending.matte()
            matte_sink.write(Frame(number=n, pixels=np.repeat(alpha[..., None], 3, axis=2), format=_matte_format(fmt)))

    # One pool serves decode, finishing and encode of independent files, so the threads go where the work
    # is (a PNG encodes ~3x slower than it decodes; an EXR about as fast); movies read and write in order.
    # One core is left to the thread that feeds the GPU.
    io_pool = io_threads(reader.io_threads, "facefix-io")
    read_pool = io_pool if full.kind == "sequence" else io_threads(1, "facefix-read")
    write_pool = io_pool if not is_movie(dest) else io_threads(1, "facefix-write")
    writer = _Writer(timed("encode", write), depth=2 * per_batch, pool=write_pool,  # type: ignore[arg-type]
                     ready=lambda item: item[2].wait())  # type: ignore[index]  # (number, format, PendingFrame)
    stats = BatchStats(profile=profile)
    t_restore = time.perf_counter()
    done = 0
    ok = False
    keeping = None
    if sidecar is not None:  # written while the shot restores (a 4-face shot's is ~4 MB of text); joined below
        beside_gpu = streaming.FEEDER_SWITCH_INTERVAL if engine.device.type == "cuda" else None
        keeping = threading.Thread(target=_keep_tracks, args=(tracks, sidecar, beside_gpu), name="facefix-sidecar")
        keeping.start()
    try:
        with contextlib.closing(prefetch(read, compute, depth=read_ahead, pool=read_pool)) as stream:
            ahead: deque = deque()  # frames read but not yet restored: the next batch, then its look-ahead
            for size in batch_sizes(len(compute), per_batch):
                if cancel is not None and cancel():
                    writer.close()  # the frames already queued are finished and kept
                    raise Cancelled(done, len(todo))
                ahead.extend(itertools.islice(stream, size + postroll - len(ahead)))
                batch = [ahead.popleft() for _ in range(min(size, len(ahead)))]
                done = _process(batch, list(ahead)[:postroll], faces, settings, engine, ct, stabiliser, repairer,
                                stats, writer, todo_set, summary, done, bar, on_progress, len(todo),
                                matte_sink is not None)
        writer.close()
        ok = True
    except KeyboardInterrupt:
        raise Interrupted(done, len(todo)) from None
    finally:
        if bar is not None:
            bar.close()
        if not ok:
            with contextlib.suppress(Exception):
                writer.close()
        for pool in {io_pool, read_pool, write_pool}:
            pool.shutdown(wait=True, cancel_futures=True)
        early.cancel()
        if keeping is not None:  # the sidecar is whole (or not there) when the run returns, however it ends
            keeping.join()
        if not ok:
            with contextlib.suppress(Exception):
                sink.abort()
            if matte_sink is not None:
                with contextlib.suppress(Exception):
                    matte_sink.abort()
    sink.close()
    if matte_sink is not None:
        matte_sink.close()
    summary.faces_restored = stats.faces_restored
    summary.nonfinite_pixels = stats.nonfinite_pixels
    summary.timings["restore"] = time.perf_counter() - t_restore
    summary.timings.update(stats.timings)
    summary.seconds = time.perf_counter() - t0
    return summary


class _EarlyReads:
    """Frames decoded before the restore asks for them (while the analysis finishes): ``start`` submits the
    decodes on threads of its own, ``take(n)`` gives frame n's (None where it was not decoded early), ``cancel``
    drops what was not taken and stops the threads."""

    def __init__(self, decode: Callable[[int], Frame], numbers: Sequence[int], threads: int | None) -> None:
        self._decode, self._numbers, self._threads = decode, list(numbers), threads
        self._pending: dict[int, Future] = {}
        self._pool: Executor | None = None

    def start(self) -> None:
        if self._pool is None:
            self._pool = io_threads(self._threads, "facefix-early")
            self._pending.update({n: self._pool.submit(self._decode, n) for n in self._numbers})

    def take(self, n: int) -> Frame | None:
        pending = self._pending.pop(n, None)
        return None if pending is None else pending.result()  # type: ignore[no-any-return]

    def cancel(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    @contextlib.contextmanager
    def cancelled_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.cancel()
            raise


def _with_preroll(wanted: Sequence[int], all_numbers: Sequence[int], index: dict[int, int], preroll: int,
                  postroll: int = 0) -> list[int]:
    """``wanted`` frames, each with up to ``preroll`` frames of the clip before it and ``postroll`` after it, in
    clip order."""
    seen: set[int] = set()
    out: list[int] = []
    for n in wanted:
        i = index.get(n)
        around = [n] if i is None else list(all_numbers[max(0, i - preroll) : i + 1 + postroll])
        for m in around:
            if m not in seen:
                seen.add(m)
                out.append(m)
    out.sort(key=lambda m: index.get(m, m))
    return out


def _repairer(settings: Settings):  # type: ignore[no-untyped-def]
    """The shot's repair stage (``repair.ClipRepairer``), or None when no repair control is ever on."""
    from .repair import ClipRepairer, repair_window

    window = repair_window(settings)
    return ClipRepairer(window) if window else None


def _refuse_overwriting_inputs(sources: Sequence[tuple[object, Sequence[int]]],
                               outputs: Sequence[tuple[str | None, Sequence[int]]]) -> None:
    """One-line ``OutputError`` if any output file would be one of the sources' files (the same path, through
    links, or another name of the same file), before anything is written: a run never overwrites its plate.
    Folders are resolved once each, and files' identities compared only for outputs that exist already."""
    import os

    from .io import output_paths

    folders: dict[str, str] = {}

    def real(path: str) -> str:
        folder, name = os.path.split(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        return os.path.join(folders[folder], name)

    def refuse(out: str) -> None:
        raise OutputError(f"{out}: is one of the input files; refusing to overwrite the source "
                          "(choose another output path)")

    inputs = {src.path_for(n) for src, numbers in sources for n in numbers}  # type: ignore[attr-defined]
    resolved = {real(p) for p in inputs}
    existing = []
    for dest, wanted in outputs:
        for out in output_paths(dest, wanted) if dest else []:
            if real(out) in resolved:
                refuse(out)
            if os.path.lexists(out):
                existing.append(out)
    if existing:  # a link to an input file, or a hard link: the same file under another name
        inodes = set()
        for p in inputs:
            with contextlib.suppress(OSError):
                st = os.stat(p)
                inodes.add((st.st_dev, st.st_ino))
        for out in existing:
            with contextlib.suppress(OSError):
                st = os.stat(out)
                if (st.st_dev, st.st_ino) in inodes:
                    refuse(out)


def tracks_sidecar(dest: str) -> Path:
    """Where a run keeps the tracks it analysed, next to its output (``out/shot.####.exr`` ->
    ``out/shot.facefix-tracks.json``): a resumed run reuses them, so its frames equal an uninterrupted run's."""
    from .io import is_movie

    path = Path(dest)
    stem = path.stem if is_movie(dest) else path.name.split("#")[0].split("%")[0].split("@")[0]
    stem = stem.rstrip("._-") or "output"
    if stem == path.name:  # a still: drop the extension
        stem = path.stem
    return path.parent / f"{stem}.facefix-tracks.json"


def _analysis_key(source: str, numbers: Sequence[int], settings: Settings, device: object) -> str:
    """What an analysis depends on: the same key means the same tracks."""
    import hashlib
    import json
    import os

    key = {"source": os.path.realpath(source), "frames": list(numbers), "detector": settings.detector,
           "min_face": settings.min_face, "colorspace": settings.colorspace,
           "device": getattr(device, "type", str(device))}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _analysed_tracks(full: object, source: str, dest: str, numbers: Sequence[int], settings: Settings,
                     engine: Engine, progress: bool, summary: RunSummary) -> FaceTracks:
    """Tracks of ``numbers`` (every requested frame with its pre-roll): the sidecar's when it was made for the
    same analysis (a resumed run), else detected and tracked now and written to the sidecar."""
    tracks, sidecar = _tracks_to_keep(full, source, dest, numbers, settings, engine, progress, summary)
    if sidecar is not None:
        _keep_tracks(tracks, sidecar)
    return tracks


def _tracks_to_keep(full: object, source: str, dest: str, numbers: Sequence[int], settings: Settings,
                    engine: Engine, progress: bool, summary: RunSummary, on_read: Callable[[], None] | None = None
                    ) -> tuple[FaceTracks, Path | None]:
    """:func:`_analysed_tracks` before the sidecar is written: the tracks, and the sidecar to write them to (None
    where they were read from it). on_read: ``track_clip``'s, where the shot is analysed."""
    from dataclasses import replace as replace_tracks

    sidecar = tracks_sidecar(dest)
    key = _analysis_key(source, numbers, settings, engine.device)
    if sidecar.is_file():
        with contextlib.suppress(FaceFixError, OSError, ValueError):
            kept = FaceTracks.load(sidecar)
            if kept.metadata.get("analysis") == key:
                summary.notes.append(f"tracks reused from {sidecar}")
                return kept, None
    from .analyse import AnalysisStats, track_clip

    t_analyse = time.perf_counter()
    analysis = AnalysisStats()
    tracks = track_clip(full, numbers, settings, device=engine.device, progress=progress, stats=analysis,
                        on_read=on_read)
    summary.timings["analyse"] = time.perf_counter() - t_analyse
    summary.timings.update({f"analyse_{k}": v for k, v in analysis.timings.items()})
    # The run uses the tracks as the sidecar holds them (FaceTracks JSON rounds to 1e-4 px): a resumed run, or
    # `facefix track` followed by `restore --tracks`, then gives exactly the frames of this run.
    return replace_tracks(tracks, metadata={**tracks.metadata, "analysis": key}).as_saved(), sidecar


def _keep_tracks(tracks: FaceTracks, sidecar: Path, switch_s: float | None = None) -> None:
    """Write the analysed tracks to their sidecar (for the program alone: compact JSON, written ~6x faster than the
    indented form); a run goes on without one, with a warning. switch_s: Python's switch interval meanwhile (beside
    the thread feeding a GPU: ``streaming.FEEDER_SWITCH_INTERVAL``)."""
    try:
        with switch_interval(switch_s):
            tracks.save(sidecar, indent=None)
    except (FaceFixError, OSError) as err:
        log.warning("could not keep the tracks next to the output (%s): a resumed run will analyse again", err)


def _make_folder(folder: Path) -> None:
    """Create the output folder (as a Write node's "create directories" does); one-line error if impossible."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None


def _output_format(fmt: FrameFormat, upscale: int) -> FrameFormat:
    """The source's format, at the upscaled size (EXR windows reset: they no longer fit)."""
    if upscale == 1:
        return fmt
    return replace(fmt, width=fmt.width * upscale, height=fmt.height * upscale, data_window=None, display_window=None)


def _matte_format(fmt: FrameFormat) -> FrameFormat:
    """A one-channel (written as grey) float format for the face matte, at the output size."""
    return FrameFormat(width=fmt.width, height=fmt.height, channel_names=("R", "G", "B"),
                       pixel_type="half" if fmt.pixel_type == "half" else "float", grey_channel="Y")


def _process(batch, ahead, faces, settings, engine, ct, stabiliser, repairer, stats, writer, todo_set, summary,
             done, bar, on_progress, total, mattes):  # type: ignore[no-untyped-def]
    """Restore ``batch`` (frames as read: (number, (frame, staged))); ``ahead``: the frames after it, read for the
    repair's look-ahead (restored in a later batch)."""
    if repairer is None:
        ahead = []
    numbers = [n for n, _ in batch]
    frames = [f for _, (f, _) in batch]
    staged = [st for _, (_, st) in batch + ahead]
    per_frame = [faces.get(n, []) for n in numbers]
    stab = stabiliser.stabilise if stabiliser is not None else None
    # The frames were read for this run alone: the result may overwrite them (one 1080p copy less each). The
    # look-ahead frames are only aligned: they are not merged into until their own batch.
    pending = queue_batch([restore_input(f) for f in frames + [f for _, (f, _) in ahead]],
                          per_frame + [faces.get(n, []) for n, _ in ahead], settings, engine,
                          frame_numbers=numbers + [n for n, _ in ahead], colorspace=ct, stabilise=stab, stats=stats,
                          inplace=True, staged=staged,
                          bits=[f.format.bits_per_sample for f in frames + [f for _, (f, _) in ahead]],
                          keep_mattes=mattes, repair=repairer.repair if repairer is not None else None,
                          lookahead=len(ahead))
    for n, src_frame, fs, frame_pending in zip(numbers, frames, per_frame, pending):
        if n not in todo_set:
            continue
        if not fs:
            summary.frames_without_faces += 1
        writer.put((n, _output_format(src_frame.format, settings.upscale), frame_pending))
        summary.frames_written += 1
        done += 1
        if bar is not None:
            bar.update(1)
        if on_progress is not None:
            on_progress(done, total)
    return done
