"""``facefix serve``: the local host bridge.

One process per GPU keeps the models loaded and runs the hosts' jobs one at a time, in submission order, on
one worker thread; hosts talk to it over HTTP + JSON (the standard library's ``ThreadingHTTPServer``) on
127.0.0.1, with a fresh random token per start required on every request (``Authorization: Bearer TOKEN``).
On start it prints one JSON line ``{"url", "token", "pid"}`` and writes the same to the connection file
(``facefix.bridge.client.connection_file()``, mode 0600), which is how adapters find it.

Endpoints: ``GET /health``, ``GET /schema``, ``POST /jobs``, ``GET /jobs``, ``GET /jobs/ID``,
``DELETE /jobs/ID``; for frame-by-frame hosts (the OpenFX plug-in) ``POST /frames``, ``POST /frames/window``,
``POST /analyses``, ``POST /analyses/ID/frames``, ``GET /analyses/ID``, ``DELETE /analyses/ID``, whose frames
cross in POSIX shared memory segments the host creates (see README, "Bridge" and "OpenFX"). A job runs on a warm ``facefix.api.Session`` (one per set of
models: model, device, upscale, upscale model, weights file) with its own settings, so its output is the
command line's, byte for byte.

Imports neither torch nor numpy until the first job (or the device is resolved).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import http.server
import json
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Cancelled, FaceFixError
from .client import connection_file

__all__ = ["BridgeServer", "Job", "JobSpec", "FramesSpec", "FrameLayout", "Analysis", "serve", "parse_job",
           "parse_frames", "STATES", "MAX_BODY", "SHM_PREFIX"]

STATES = ("queued", "running", "done", "failed", "cancelled")
MAX_BODY = 16 << 20  # bytes of a request body; more is refused with 413
KEEP_FINISHED = 1000  # finished jobs remembered for GET /jobs (the oldest are forgotten first)
WARM_SESSIONS = 2  # sets of loaded models kept at once (least recently used closed first)
JOB_FIELDS = ("kind", "input", "output", "frames", "settings", "tracks", "matte", "mask", "codec", "resume",
              "model_path", "compile")
_RESTORE_ONLY = ("tracks", "matte", "mask", "codec", "resume", "compile")


class RequestError(Exception):
    """A request the bridge refuses: HTTP ``status`` with a one-line ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(_one_line(message))
        self.status = status


# ----------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobSpec:
    """A validated job request."""

    kind: str
    input: str
    output: str
    settings: Any  # facefix.params.Settings
    frames: str | None = None
    tracks: Any = None  # FaceTracks, a FaceTracks JSON path, or None
    matte: str | None = None
    mask: str | None = None
    codec: str = "auto"
    resume: bool = False
    model_path: str | None = None
    compile: bool = False


@dataclass
class Job:
    spec: JobSpec
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"
    done: int = 0
    total: int = 0
    error: str | None = None
    summary: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.spec.kind, "state": self.state,
                               "progress": {"done": self.done, "total": self.total},
                               "input": self.spec.input, "output": self.spec.output, "submitted": self.submitted}
        for name in ("error", "summary", "started", "finished"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _error_line(err: BaseException) -> str:
    """A job's error as the command line would put it: FaceFix errors as they are, others ``Type: message``."""
    if isinstance(err, FaceFixError):
        return _one_line(err) or type(err).__name__
    if isinstance(err, MemoryError):
        return "out of memory (try a smaller batch)"
    if type(err).__name__ == "OutOfMemoryError":
        return "out of GPU memory (try a smaller batch, or the cpu device)"
    text = _one_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _text(body: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise RequestError(400, f"{name}: missing (give a path)")
        return None
    if not isinstance(value, str):
        raise RequestError(400, f"{name}: expected a string, got {type(value).__name__}")
    return value


def _path(body: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = _text(body, name, required)
    if value is not None and not os.path.isabs(os.path.expanduser(value)):
        raise RequestError(400, f"{name}: {value!r} is not an absolute path (the bridge's working folder is not "
                                "the host's)")
    return os.path.expanduser(value) if value is not None else None


def parse_job(body: object) -> JobSpec:
    """Validate a ``POST /jobs`` body; a bad request is a ``RequestError`` (400) with a one-line message.

    Settings go through ``facefix.api``'s own handling (``{"frame": value}`` keyframes for animatable controls,
    frame keys as strings) and ``Settings``' validation, as a ``Session`` does."""
    from ..api import settings_from
    from ..params import RUN_PARAMS

    if not isinstance(body, Mapping):
        raise RequestError(400, f"a job is a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(JOB_FIELDS))
    if unknown:
        raise RequestError(400, f"unknown job field(s): {', '.join(map(str, unknown))} (known: {', '.join(JOB_FIELDS)})")
    kind = body.get("kind") or "restore"
    if kind not in ("restore", "track"):
        raise RequestError(400, f"kind: {kind!r} is not restore or track")
    if kind == "track":
        extra = [name for name in _RESTORE_ONLY if body.get(name) not in (None, "", False)]
        if extra:
            raise RequestError(400, f"{', '.join(extra)}: not options of a track job")
    source = _path(body, "input", required=True)
    dest = _path(body, "output", required=True)
    frames = body.get("frames")
    if frames is not None and frames != "":
        if isinstance(frames, bool) or not isinstance(frames, (str, int)):
            raise RequestError(400, f"frames: expected a frame range string such as 1001-1100, got {frames!r}")
        frames = str(frames)
        from ..io.sequence import parse_frames

        try:
            parse_frames(frames, option="frames")
        except FaceFixError as err:
            raise RequestError(400, str(err)) from None
    else:
        frames = None
    values = body.get("settings")
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise RequestError(400, f"settings: expected an object of control names, got {type(values).__name__}")
    run = {p.name: p for p in RUN_PARAMS}
    try:
        settings = settings_from(values)
        codec = run["codec"].coerce(body.get("codec") or "auto")
        resume = run["resume"].coerce(body.get("resume") or False)
        compile_ = run["compile"].coerce(body.get("compile") or False)
    except FaceFixError as err:
        raise RequestError(400, str(err)) from None
    tracks = body.get("tracks")
    if isinstance(tracks, Mapping):
        from ..faces import FaceTracks

        try:
            tracks = FaceTracks.from_json(tracks, origin="tracks")
        except FaceFixError as err:
            raise RequestError(400, str(err)) from None
    elif tracks is not None and tracks != "":
        tracks = _path(body, "tracks")
    else:
        tracks = None
    return JobSpec(kind=kind, input=source, output=dest, settings=settings, frames=frames,  # type: ignore[arg-type]
                   tracks=tracks, matte=_path(body, "matte"), mask=_path(body, "mask"), codec=codec,
                   resume=bool(resume), model_path=_path(body, "model_path"), compile=bool(compile_))


# ------------------------------------------------------------------------------------------ frames (OpenFX)

# Frames cross in POSIX shared memory that the host creates: the bridge maps only segments named like this.
SHM_PREFIX = "facefix-"
_SHM_NAME = re.compile(r"/?facefix-[A-Za-z0-9_.-]{1,200}")
DEPTHS = {"float32": 4, "uint16": 2, "uint8": 1}
FRAME_FIELDS = ("width", "height", "channels", "depth", "input", "output", "frames", "render", "mask",
                "mask_channels", "settings", "tracks")
ANALYSIS_FIELDS = ("width", "height", "channels", "depth", "frames", "settings")
ANALYSIS_BUFFER = 4  # frames a host may hand over ahead of the detector (then it waits)
ANALYSIS_IDLE_S = 120.0  # an analysis whose host stops sending frames for this long fails
ANALYSIS_KEEP_S = 1800.0  # a finished analysis whose host never collects it is forgotten after this long
KEEP_ANALYSES = 16  # analyses held at once (beyond, the oldest is failed and forgotten)


@dataclass(frozen=True)
class FrameLayout:
    """Packed frames in a segment: ``count`` x (height, width, channels) of ``depth``, rows top to bottom."""

    width: int
    height: int
    channels: int
    depth: str

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * self.channels * DEPTHS[self.depth]


@dataclass(frozen=True)
class FramesSpec:
    """A validated ``POST /frames``: restore frame ``render`` of ``frames`` (those before it: the temporal
    controls' pre-roll, those after: their look-ahead), read from segment ``input``, written to ``output``."""

    layout: FrameLayout
    input: str
    output: str
    frames: tuple[int, ...]
    render: int
    settings: Any
    tracks: Any
    mask: str | None = None
    mask_channels: int = 1


def _int_field(body: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def _shm_field(body: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _SHM_NAME.fullmatch(value):
        raise RequestError(400, f"{name}: expected a shared memory segment name {SHM_PREFIX}..., got {value!r}")
    return value.lstrip("/")


def _layout(body: Mapping[str, Any]) -> FrameLayout:
    depth = body.get("depth", "float32")
    if depth not in DEPTHS:
        raise RequestError(400, f"depth: {depth!r} is not one of {', '.join(DEPTHS)}")
    return FrameLayout(width=_int_field(body, "width", 1, 1 << 15), height=_int_field(body, "height", 1, 1 << 15),
                       channels=_int_field(body, "channels", 3, 4, 4), depth=depth)


def _frame_numbers(body: Mapping[str, Any]) -> tuple[int, ...]:
    frames = body.get("frames")
    if (not isinstance(frames, list) or not frames or len(frames) > 64
            or any(isinstance(n, bool) or not isinstance(n, int) for n in frames)):
        raise RequestError(400, f"frames: expected a list of 1 to 64 frame numbers, got {frames!r}")
    if len(set(frames)) != len(frames):
        raise RequestError(400, "frames: a frame number appears twice")
    return tuple(frames)


def _checked(body: object, known: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(400, f"{what} is a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(400, f"unknown {what} field(s): {', '.join(map(str, unknown))} (known: {', '.join(known)})")
    return body


def _frame_settings(body: Mapping[str, Any]) -> Any:
    from ..api import settings_from

    values = body.get("settings") or {}
    if not isinstance(values, Mapping):
        raise RequestError(400, f"settings: expected an object of control names, got {type(values).__name__}")
    try:
        settings = settings_from(values)
    except FaceFixError as err:
        raise RequestError(400, str(err)) from None
    if settings.upscale != 1:
        raise RequestError(400, "upscale: frame-by-frame renders keep the frame's size (use 1; upscale with a job)")
    return settings


def parse_frames(body: object) -> FramesSpec:
    """Validate a ``POST /frames`` body; a bad request is a ``RequestError`` (400) with a one-line message."""
    from ..faces import FaceTracks

    body = _checked(body, FRAME_FIELDS, "frames request")
    frames = _frame_numbers(body)
    render = body.get("render", frames[-1])
    if render not in frames or isinstance(render, bool):
        raise RequestError(400, f"render: {render!r} is not one of frames")
    tracks = body.get("tracks")
    if not isinstance(tracks, Mapping) or not tracks:
        raise RequestError(400, "tracks: no face tracks given (analyse the clip first)")
    try:
        face_tracks = FaceTracks.from_json(tracks, origin="tracks")
    except FaceFixError as err:
        raise RequestError(400, str(err)) from None
    mask = _shm_field(body, "mask", required=False)
    return FramesSpec(layout=_layout(body), input=str(_shm_field(body, "input")),
                      output=str(_shm_field(body, "output")), frames=frames, render=int(render),
                      settings=_frame_settings(body), tracks=face_tracks, mask=mask,
                      mask_channels=_int_field(body, "mask_channels", 1, 4, 1) if mask else 1)


class _Segment:
    """The host's shared memory segment ``name``, checked to be at least ``size`` bytes, a regular file and the
    bridge user's own. Pixels are copied with pread/pwrite rather than mapped: a host that shrinks its segment
    mid-request then gets a short read (a 400), where a mapping would kill the bridge with SIGBUS."""

    def __init__(self, name: str, size: int, what: str) -> None:
        self.name, self.size, self.what = name, size, what
        self._fd: int | None = None
        self._shm: Any = None
        try:
            try:
                import _posixshmem  # type: ignore[import-not-found]
            except ImportError:  # Windows: named file mappings, which cannot shrink
                from multiprocessing import shared_memory

                self._shm = shared_memory.SharedMemory(name=name)
                length = self._shm.size
            else:  # shm_open adds O_NOFOLLOW: a symlink named facefix-... is refused (ELOOP)
                self._fd = _posixshmem.shm_open("/" + name, os.O_RDWR | os.O_NONBLOCK, mode=0o600)
                info = os.fstat(self._fd)
                if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                    self.close()
                    raise RequestError(400, f"{what}: segment {name!r} is not a file of the bridge's own user")
                length = info.st_size
        except FileNotFoundError:
            raise RequestError(400, f"{what}: no shared memory segment {name!r}") from None
        except OSError as err:
            self.close()
            raise RequestError(400, f"{what}: cannot open {name!r} ({err.strerror or err})") from None
        if length < size:
            self.close()
            raise RequestError(400, f"{what}: segment {name!r} holds {length} bytes, {size} needed")

    def read(self) -> Any:
        """The segment's first ``size`` bytes, copied (uint8)."""
        import numpy as np

        data = np.empty(self.size, np.uint8)
        if self._shm is not None:
            data[:] = np.frombuffer(self._shm.buf, np.uint8, self.size)
            return data
        view, done = memoryview(data), 0  # type: ignore[arg-type]
        while done < self.size:
            got = os.preadv(self._fd, [view[done:]], done)  # type: ignore[arg-type]
            if got <= 0:
                raise RequestError(400, f"{self.what}: segment {self.name!r} shrank while being read")
            done += got
        return data

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        if self._shm is not None:
            self._shm.buf[:len(view)] = view
            return
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], done)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    def __enter__(self) -> _Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frames_of(buffer: Any, layout: FrameLayout, count: int, channels: int | None = None) -> Any:
    """(count, H, W, C) array view of a segment's packed frames."""
    import numpy as np

    c = layout.channels if channels is None else channels
    return np.ndarray((count, layout.height, layout.width, c), dtype=layout.depth, buffer=buffer)


def _mask_of(frame_mask: Any, depth: str) -> Any:
    """A host mask (H, W, C) of the frames' depth -> (H, W) float32 in [0, 1] from its last channel (alpha)."""
    import numpy as np

    alpha = frame_mask[..., -1].astype(np.float32)
    if depth != "float32":
        alpha /= float(np.iinfo(depth).max)
    return np.clip(np.nan_to_num(alpha), 0.0, 1.0)


class _FedSource:
    """A facefix.io-like source whose frames the host hands over one request at a time, in order: what
    ``track_clip`` reads an OpenFX clip from. Holds at most ``ANALYSIS_BUFFER`` frames."""

    kind = "memory"

    def __init__(self, layout: FrameLayout, numbers: tuple[int, ...]) -> None:
        self.layout = layout
        self.is_float = layout.depth == "float32"
        self.numbers = numbers
        self._frames: dict[int, Any] = {}
        self._given: set[int] = set()
        self._cond = threading.Condition()
        self.failed: str | None = None

    def give(self, number: int, pixels: Any) -> int:
        with self._cond:
            if number not in self.numbers or number in self._given:
                raise RequestError(400, f"frame: {number} is not a frame of this analysis still to give")
            deadline = time.monotonic() + ANALYSIS_IDLE_S
            while len(self._frames) >= ANALYSIS_BUFFER and self.failed is None:
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise RequestError(503, "the analysis is not taking frames")
            if self.failed is not None:
                raise RequestError(409, f"the analysis failed: {self.failed}")
            self._frames[number] = pixels
            self._given.add(number)
            self._cond.notify_all()
            return len(self._given)

    def read(self, number: int) -> Any:
        import types

        with self._cond:
            if not self._cond.wait_for(lambda: number in self._frames or self.failed is not None,
                                       timeout=ANALYSIS_IDLE_S):
                raise FaceFixError(f"the host stopped sending frames (waited {ANALYSIS_IDLE_S:g} s for frame {number})")
            if self.failed is not None:
                raise FaceFixError(self.failed)
            pixels = self._frames.pop(number)
            self._cond.notify_all()
        return types.SimpleNamespace(pixels=pixels)

    def fail(self, reason: str) -> None:
        with self._cond:
            if self.failed is None:
                self.failed = reason
            self._frames.clear()
            self._cond.notify_all()

    def close(self) -> None:
        pass


@dataclass
class Analysis:
    """Tracking an OpenFX clip: the host hands its frames over in order, a thread detects and tracks them."""

    source: _FedSource
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    tracks: Any = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    finished: float | None = None  # the bridge's clock when it ended (done or failed)


# --------------------------------------------------------------------------------------------- server


class BridgeServer:
    """The bridge: an HTTP server (its own threads) and one worker thread running jobs in submission order.

    host/port: where to listen (port 0 = any free port). device: the jobs' device (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``) unless a job's settings name one. model_path: a weights file for every job that
    gives none. log: where job state changes go, one line each (None: nowhere). analysis_keep_s: how long a
    finished analysis waits for its host to collect it (``ANALYSIS_KEEP_S``); clock: the monotonic clock that
    measures it (tests pass their own).

        server = BridgeServer(port=0, device="cpu").start()
        ... server.url, server.token ...
        server.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, device: str = "auto",
                 model_path: str | None = None, log: Callable[[str], None] | None = None,
                 max_body: int = MAX_BODY, warm_sessions: int = WARM_SESSIONS,
                 analysis_keep_s: float = ANALYSIS_KEEP_S, clock: Callable[[], float] = time.monotonic) -> None:
        from .. import __version__
        from ..engine import resolve_device

        self.device = str(resolve_device(device))  # a bad --device fails here, before anything listens
        self.model_path = model_path
        self.version = __version__
        self.token = secrets.token_urlsafe(32)
        self.pid = os.getpid()
        self.max_body = int(max_body)
        self.warm_sessions = max(1, int(warm_sessions))
        self._log = log
        self._lock = threading.Condition()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: list[Job] = []
        self._sessions: OrderedDict[tuple, Any] = OrderedDict()
        self._frame_sessions: OrderedDict[tuple, Any] = OrderedDict()  # guarded by _frames_lock
        self._frames_lock = threading.Lock()
        self._analyses: OrderedDict[str, Analysis] = OrderedDict()  # guarded by _lock
        self.analysis_keep_s = float(analysis_keep_s)
        if not self.analysis_keep_s > 0:
            raise ValueError(f"analysis_keep_s: expected seconds above 0, got {analysis_keep_s!r}")
        self._clock = clock
        self._stopping = False
        self._connection_file: Path | None = None
        server_class = _V6Server if ":" in host else _V4Server
        try:
            self._http = server_class((host, int(port)), _Handler)
        except OSError as err:
            raise FaceFixError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self._http.bridge = self  # type: ignore[attr-defined]
        self.host = host
        self.port = int(self._http.server_address[1])
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        self._threads: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------------------------
    def start(self) -> BridgeServer:
        """Serve and work on background threads; returns self."""
        serve_http = functools.partial(self._http.serve_forever, poll_interval=0.1)  # 0.1 s: a quick stop()
        for target, name in ((serve_http, "facefix-serve-http"), (self._work, "facefix-serve-jobs")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def info(self) -> dict[str, Any]:
        """What the connection line and file say: ``{"url", "token", "pid"}``."""
        return {"url": self.url, "token": self.token, "pid": self.pid}

    def write_connection_file(self, path: Path | None = None) -> Path:
        """Write ``info()`` to the connection file (default ``connection_file()``): readable only by the
        user, written atomically (a private temporary file renamed into place)."""
        target = Path(path) if path is not None else connection_file()
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".serve.", suffix=".tmp", dir=target.parent)
        except OSError as err:
            raise FaceFixError(f"{target}: cannot write the connection file ({err.strerror or err})") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.chmod(tmp, 0o600)
                json.dump(self.info(), f)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._connection_file = target
        return target

    def remove_connection_file(self) -> None:
        """Remove the connection file if it still names this server (another may have replaced it)."""
        target, self._connection_file = self._connection_file, None
        if target is None:
            return
        with contextlib.suppress(OSError, ValueError, TypeError):
            info = json.loads(target.read_text(encoding="utf-8"))
            if info.get("pid") == self.pid and hmac.compare_digest(str(info.get("token")), self.token):
                target.unlink()

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop: no new requests, queued jobs cancelled, the running job asked to stop at its next batch
        (waited for up to ``grace_s``), the warm models freed, the connection file removed."""
        self.remove_connection_file()
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for job in self._jobs.values():
                if job.state in ("queued", "running"):
                    job.cancel.set()
            for analysis in self._analyses.values():
                analysis.source.fail("the bridge is shutting down")
            self._lock.notify_all()
        if self._threads:  # shutdown() waits for a serve_forever() that never ran otherwise
            with contextlib.suppress(Exception):
                self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=grace_s)
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        with self._frames_lock:
            sessions += list(self._frame_sessions.values())
            self._frame_sessions.clear()
        for session in sessions:
            with contextlib.suppress(Exception):
                session.close()

    def __enter__(self) -> BridgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, line: str) -> None:
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log(line)

    # -- jobs -------------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> Job:
        job = Job(spec)
        with self._lock:
            if self._stopping:
                raise RequestError(503, "the bridge is shutting down")
            self._jobs[job.id] = job
            self._queue.append(job)
            self._forget_old_jobs()
            self._changed(job)  # logged before the worker can log it running
            self._lock.notify_all()
        return job

    def job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise RequestError(404, f"no job {job_id!r}")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def statuses(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The jobs' statuses, each consistent (taken under the lock that job changes are made under)."""
        with self._lock:
            return [job.status() for job in jobs]

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled now (it never starts); a running one is asked to stop between batches;
        a finished one is left as it is."""
        job = self.job(job_id)
        changed = False
        with self._lock:
            if job.state == "queued":
                job.cancel.set()
                job.finished, job.state = time.time(), "cancelled"
                self._queue.remove(job)
                changed = True
            elif job.state == "running":
                job.cancel.set()
        if changed:
            self._changed(job)
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(STATES, 0)
            for job in self._jobs.values():
                counts[job.state] += 1
        return counts

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed", "cancelled")]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]

    def _changed(self, job: Job) -> None:
        spec = job.spec
        what = f"job {job.id} {spec.kind} {job.state}"
        if job.state == "queued":
            what += f": {spec.input} -> {spec.output}"
        elif job.state == "done" and job.summary:
            what += f": {job.summary}"
        elif job.state in ("failed", "cancelled") and job.error:
            what += f": {job.error}"
        self.log(what)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    for job in self._queue:
                        job.finished, job.state = time.time(), "cancelled"
                    self._queue.clear()
                    return
                job = self._queue.pop(0)
                job.started, job.state = time.time(), "running"
            self._changed(job)
            self._run(job)
            self._changed(job)

    def _run(self, job: Job) -> None:
        """Run one job; whatever happens, the job ends in a final state and the worker goes on."""
        state, error, summary = "failed", None, None
        try:
            summary = self._execute(job)
            state = "done"
        except Cancelled as err:
            state, error = "cancelled", _error_line(err)
        except BaseException as err:  # noqa: B036 - a job never takes the bridge down
            error = _error_line(err)
            if not isinstance(err, FaceFixError) and job.spec.kind == "restore":
                self._drop_session(job)  # the models may be in a bad state (e.g. after running out of GPU memory)
        with self._lock:
            job.error, job.summary, job.finished, job.state = error, summary, time.time(), state
            self._forget_old_jobs()

    def _progress(self, job: Job) -> Callable[[int, int], None]:
        def on_progress(done: int, total: int) -> None:
            with self._lock:
                job.total, job.done = int(total), int(done)
        return on_progress

    def _execute(self, job: Job) -> str:
        from dataclasses import replace

        from ..api import Session

        spec = job.spec
        if job.cancel.is_set():
            raise Cancelled(0, 0)
        if spec.kind == "track":
            # Tracking loads no face model: a session of the job's own settings (cheap to open), not a warm one.
            with Session(spec.settings, device=self._device_of(spec)) as session:
                tracks = session.track(spec.input, frames=spec.frames, output=spec.output,
                                       on_progress=self._progress(job), cancel=job.cancel)
            n = len(tracks.tracks)
            return f"{job.total} frames analysed, {n} track{'' if n == 1 else 's'}; wrote {spec.output}"
        session = self._session(spec)
        # The job's own controls on the warm models; its device control is the session's (the key matched it).
        settings = replace(spec.settings, device=session.settings.device)
        summary = session.run(spec.input, spec.output, frames=spec.frames, tracks=spec.tracks, matte=spec.matte,
                              mask=spec.mask, codec=spec.codec, resume=spec.resume, on_progress=self._progress(job),
                              cancel=job.cancel, settings=settings)
        return str(summary.line())

    # -- frames (OpenFX) --------------------------------------------------------------------------------
    def frame_window(self, settings: Any) -> dict[str, int]:
        """The frames around a frame that its result depends on, as ``Session.preroll`` / ``lookahead`` count them."""
        from ..repair import repair_window
        from ..temporal import preroll_frames

        repair = repair_window(settings)
        preroll = (preroll_frames(settings.temporal) if settings.temporal > 0 else 0) + repair
        return {"preroll": int(preroll), "lookahead": int(repair)}

    def restore_frames(self, spec: FramesSpec) -> dict[str, Any]:
        """Restore frame ``spec.render`` from the host's segments into its output segment.

        Every request starts from a fresh temporal state (the pre-roll frames it carries rebuild it), so a
        frame's result does not depend on the order a host renders in. Frame requests run one at a time, on
        warm sessions of their own (jobs keep theirs)."""
        from dataclasses import replace

        start = time.perf_counter()
        layout, count = spec.layout, len(spec.frames)
        mask_bytes = count * layout.width * layout.height * spec.mask_channels * DEPTHS[layout.depth]
        with self._frames_lock:
            base = self._frame_session(spec.settings)
            session = base.for_settings(replace(spec.settings, device=base.settings.device))
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(_Segment(spec.input, count * layout.frame_bytes, "input"))
                dst = stack.enter_context(_Segment(spec.output, layout.frame_bytes, "output"))
                masks = None
                if spec.mask is not None:
                    with _Segment(spec.mask, mask_bytes, "mask") as held:
                        views = _frames_of(held.read(), layout, count, spec.mask_channels)
                    masks = [_mask_of(views[i], layout.depth) for i in range(count)]
                    del views
                frames = _frames_of(src.read(), layout, count)
                lookahead = count - 1 - spec.frames.index(spec.render)
                try:
                    results = session.restore(list(frames), spec.tracks, list(spec.frames), masks=masks,
                                              lookahead=lookahead)
                except FaceFixError as err:
                    raise RequestError(422, str(err)) from None
                except BaseException:
                    self._drop_frame_session(spec.settings)
                    raise
                finally:
                    del frames
                out = _frames_of(bytearray(layout.frame_bytes), layout, 1)
                out[0] = results[-1].image
                dst.write(out)
                del out, results
        return {"frame": spec.render, "seconds": time.perf_counter() - start}

    def _frame_key(self, settings: Any) -> tuple:
        device = self.device if settings.device == "auto" else str(settings.device)
        return (settings.model, device, self.model_path)

    def _frame_session(self, settings: Any) -> Any:
        from ..api import Session

        key = self._frame_key(settings)
        session = self._frame_sessions.get(key)
        if session is not None:
            self._frame_sessions.move_to_end(key)
            return session
        session = Session(settings, device=key[1], model_path=key[2])
        self._frame_sessions[key] = session
        while len(self._frame_sessions) > self.warm_sessions:
            with contextlib.suppress(Exception):
                self._frame_sessions.popitem(last=False)[1].close()
        return session

    def _drop_frame_session(self, settings: Any) -> None:
        session = self._frame_sessions.pop(self._frame_key(settings), None)
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def start_analysis(self, body: object) -> Analysis:
        """Begin tracking a clip whose frames the host then gives one by one (``give_frame``)."""
        from ..api import settings_from

        body = _checked(body, ANALYSIS_FIELDS, "analysis")
        frames = body.get("frames")
        if (not isinstance(frames, list) or not frames or len(frames) > 1_000_000
                or any(isinstance(n, bool) or not isinstance(n, int) for n in frames) or len(set(frames)) != len(frames)):
            raise RequestError(400, f"frames: expected a list of distinct frame numbers, got {str(frames)[:80]}")
        try:
            settings = settings_from(body.get("settings") or {})
        except FaceFixError as err:
            raise RequestError(400, str(err)) from None
        analysis = Analysis(_FedSource(_layout(body), tuple(frames)))
        device = self.device if settings.device == "auto" else str(settings.device)
        with self._lock:
            if self._stopping:
                raise RequestError(503, "the bridge is shutting down")
            self._forget_stale_analyses()
            self._analyses[analysis.id] = analysis
            while len(self._analyses) > KEEP_ANALYSES:
                self._analyses.popitem(last=False)[1].source.fail("too many analyses at once")
        threading.Thread(target=self._analyse, args=(analysis, settings, device), name="facefix-serve-analyse",
                         daemon=True).start()
        self.log(f"analysis {analysis.id} of {len(frames)} frames started")
        return analysis

    def _analyse(self, analysis: Analysis, settings: Any, device: str) -> None:
        from ..analyse import track_clip

        try:
            analysis.tracks = track_clip(analysis.source, list(analysis.source.numbers), settings, device=device,
                                         progress=False)
        except BaseException as err:  # noqa: B036 - an analysis never takes the bridge down
            analysis.error = _error_line(err)
            analysis.source.fail(analysis.error)
        finally:
            analysis.finished = self._clock()
            analysis.done.set()
        self.log(f"analysis {analysis.id} " + (f"failed: {analysis.error}" if analysis.error else "done"))

    def _forget_stale_analyses(self) -> None:
        """Forget the analyses that finished ``analysis_keep_s`` ago or more and were never collected (their
        hosts went away): their tracks would otherwise stay until KEEP_ANALYSES newer ones push them out.
        Called with ``_lock`` held, whenever a host starts or asks for an analysis."""
        now = self._clock()
        stale = [key for key, analysis in self._analyses.items()
                 if analysis.finished is not None and now - analysis.finished >= self.analysis_keep_s]
        for key in stale:
            del self._analyses[key]
            self.log(f"analysis {key} forgotten: never collected in the {self.analysis_keep_s:g} s after it finished")

    def analysis(self, analysis_id: str) -> Analysis:
        with self._lock:
            self._forget_stale_analyses()
            found = self._analyses.get(analysis_id)
        if found is None:
            raise RequestError(404, f"no analysis {analysis_id!r} (a finished analysis is kept "
                                    f"{self.analysis_keep_s:g} s for its host to collect)")
        return found

    def give_frame(self, analysis_id: str, body: object) -> dict[str, int]:
        """One frame of an analysis, from the host's segment ``input``: ``{"input", "frame"}``."""
        import numpy as np

        analysis = self.analysis(analysis_id)
        body = _checked(body, ("input", "frame"), "analysis frame")
        number = body.get("frame")
        if isinstance(number, bool) or not isinstance(number, int):
            raise RequestError(400, f"frame: expected a frame number, got {number!r}")
        layout = analysis.source.layout
        with _Segment(str(_shm_field(body, "input")), layout.frame_bytes, "input") as shm:
            pixels = _frames_of(shm.read(), layout, 1)[0].astype(np.float32)
        if layout.depth != "float32":
            pixels /= float(np.iinfo(layout.depth).max)
        given = analysis.source.give(number, pixels)
        return {"given": given, "total": len(analysis.source.numbers)}

    def analysis_result(self, analysis_id: str, wait_s: float = 600.0) -> dict[str, Any]:
        """The analysis' FaceTracks once every frame is given and tracked (waits up to ``wait_s``)."""
        analysis = self.analysis(analysis_id)
        source = analysis.source
        with source._cond:
            missing = len(source.numbers) - len(source._given)
        if missing and not analysis.done.is_set():
            raise RequestError(409, f"{missing} frame(s) of the analysis still to give")
        if not analysis.done.wait(wait_s):
            raise RequestError(503, "the analysis is still running")
        with self._lock:
            self._analyses.pop(analysis_id, None)
        if analysis.error is not None:
            raise RequestError(422, analysis.error)
        return {"frames": len(source.numbers), "tracks": analysis.tracks.to_json()}

    def drop_analysis(self, analysis_id: str) -> None:
        with self._lock:
            analysis = self._analyses.pop(analysis_id, None)
        if analysis is None:
            raise RequestError(404, f"no analysis {analysis_id!r}")
        analysis.source.fail("cancelled by the host")

    # -- warm sessions ----------------------------------------------------------------------------------
    def _device_of(self, spec: JobSpec) -> str:
        """The job's device: its settings' if they name one, else the bridge's."""
        return self.device if spec.settings.device == "auto" else str(spec.settings.device)

    def _key(self, spec: JobSpec) -> tuple:
        """What loads models: jobs with the same key share one warm session."""
        s = spec.settings
        return (s.model, self._device_of(spec), s.upscale, s.upscale_model, spec.model_path or self.model_path,
                spec.compile)

    def _session(self, spec: JobSpec) -> Any:
        """The warm session for the job's models, opened (models load on first use) if there is none; beyond
        ``warm_sessions`` the least recently used is closed, freeing its GPU memory."""
        from ..api import Session

        key = self._key(spec)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        session = Session(spec.settings, device=key[1], model_path=key[4], compile=spec.compile)
        evicted = []
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > self.warm_sessions:
                evicted.append(self._sessions.popitem(last=False)[1])
        for old in evicted:
            with contextlib.suppress(Exception):
                old.close()
        return session

    def warm_keys(self) -> list[tuple]:
        """The keys (model, device, upscale, upscale model, weights file, compile) of the warm sessions."""
        with self._lock:
            return list(self._sessions)

    def _drop_session(self, job: Job) -> None:
        with self._lock:
            session = self._sessions.pop(self._key(job.spec), None)
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


class _V4Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _V6Server(_V4Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "facefix-serve"
    protocol_version = "HTTP/1.1"
    timeout = 60.0  # seconds a client may stall mid-request (or idle between requests) before its socket closes

    @property
    def bridge(self) -> BridgeServer:
        return self.server.bridge  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per job state change is the bridge's log, not one per request

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            self._authorise()
            status, answer = self._route(method, self.path.split("?", 1)[0].rstrip("/") or "/")
        except RequestError as err:
            status, answer = err.status, {"error": str(err)}
        except Exception as err:  # never a traceback to the host
            status, answer = 500, {"error": _error_line(err)}
        self._send(status, answer)

    def _authorise(self) -> None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.bridge.token.encode("utf-8")):
            self._discard_body()
            raise RequestError(401, "missing or wrong token: send Authorization: Bearer TOKEN "
                                    "(the token is in the bridge's connection file)")

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        bridge = self.bridge
        if path == "/health":
            self._allow(method, "GET")
            return 200, {"ok": True, "version": bridge.version, "pid": bridge.pid, "device": bridge.device,
                         "jobs": bridge.counts()}
        if path == "/schema":
            self._allow(method, "GET")
            from ..params import schema

            return 200, schema()
        if path == "/jobs":
            self._allow(method, "GET", "POST")
            if method == "GET":
                return 200, {"jobs": bridge.statuses(bridge.jobs())}
            return 201, {"id": bridge.submit(parse_job(self._body())).id}
        if path.startswith("/jobs/") and "/" not in path[len("/jobs/"):]:
            self._allow(method, "GET", "DELETE")
            from urllib.parse import unquote

            job_id = unquote(path[len("/jobs/"):])
            job = bridge.cancel(job_id) if method == "DELETE" else bridge.job(job_id)
            return 200, bridge.statuses([job])[0]
        if path == "/frames":
            self._allow(method, "POST")
            return 200, bridge.restore_frames(parse_frames(self._body()))
        if path == "/frames/window":
            self._allow(method, "POST")
            body = _checked(self._body(), ("settings",), "window request")
            return 200, bridge.frame_window(_frame_settings(body))
        if path == "/analyses":
            self._allow(method, "POST")
            return 201, {"id": bridge.start_analysis(self._body()).id}
        if path.startswith("/analyses/"):
            from urllib.parse import unquote

            rest = path[len("/analyses/"):]
            analysis_id, _, tail = rest.partition("/")
            analysis_id = unquote(analysis_id)
            if tail == "frames":
                self._allow(method, "POST")
                return 200, bridge.give_frame(analysis_id, self._body())
            if not tail:
                self._allow(method, "GET", "DELETE")
                if method == "DELETE":
                    bridge.drop_analysis(analysis_id)
                    return 200, {"id": analysis_id, "state": "cancelled"}
                return 200, bridge.analysis_result(analysis_id)
        raise RequestError(404, f"no such endpoint: {method} {path} (try GET /health, GET /schema, POST /jobs)")

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise RequestError(405, f"{method} is not allowed here (use {' or '.join(allowed)})")

    def _body(self) -> object:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, "Content-Length is not a number") from None
        if length > self.bridge.max_body:
            self._discard_body()
            raise RequestError(413, f"the request body is {length} bytes; the limit is {self.bridge.max_body}")
        try:
            raw = self.rfile.read(length) if length > 0 else b""
        except OSError:  # a stalled or vanished client: answer if it still listens, then close
            self.close_connection = True
            raise RequestError(408, "the request body did not arrive in time") from None
        if len(raw) < length:
            self.close_connection = True
            raise RequestError(400, f"the request body ended after {len(raw)} of {length} bytes")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise RequestError(400, f"the body is not valid JSON ({err})") from None

    def _discard_body(self, limit: int = 64 << 20) -> None:
        """Read a refused request's body (up to ``limit`` bytes), so the client gets to read the answer
        instead of a reset connection; the connection is closed afterwards."""
        self.close_connection = True
        with contextlib.suppress(ValueError, OSError):
            left = int(self.headers.get("Content-Length") or 0)
            if left > limit or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)

    def _send(self, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the host went away
            self.close_connection = True


# ------------------------------------------------------------------------------------------ command line


def serve(host: str = "127.0.0.1", port: int = 0, device: str = "auto", *, quiet: bool = False,
          model_path: str | None = None, own_process: bool = True) -> int:
    """``facefix serve``: start the bridge, print its connection line, serve until SIGTERM or Ctrl-C (exit 0).

    own_process: the process is the bridge's (the command line), so the command line's process-wide memory
    settings for GPU runs apply."""
    if own_process:
        from ..hostmem import fast_pinned_memory, return_frames_to_the_os

        if device != "cpu":
            fast_pinned_memory()  # must precede CUDA
    stderr: Callable[[str], None] | None = None
    if not quiet:
        def stderr(line: str) -> None:
            print(f"facefix serve: {line}", file=sys.stderr, flush=True)

    if model_path:
        model_path = os.path.abspath(os.path.expanduser(model_path))
        if not os.path.isfile(model_path):
            raise FaceFixError(f"--model-path {model_path}: no such file")
    server = BridgeServer(host, port, device=device, model_path=model_path, log=stderr)
    if own_process and server.device.startswith("cuda"):
        return_frames_to_the_os()
    try:
        server.start()
        server.write_connection_file()
        print(json.dumps(server.info()), flush=True)
        server.log(f"listening on {server.url} (device {server.device}); connection file {connection_file()}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            server.log(f"warning: {host} may be reachable from other machines (every request still needs the token)")
        stop = threading.Event()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the command line turns it into KeyboardInterrupt)
        pass
    finally:
        server.log("stopping")
        with contextlib.suppress(KeyboardInterrupt):
            server.stop()
    return 0

