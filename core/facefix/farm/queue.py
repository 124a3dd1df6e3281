"""``facefix queue SHOTS``: a workstation's shot list, run in one process with the models kept warm.

A shot list is YAML, JSON or CSV: per shot its input, output, frames and controls, with ``defaults`` applied
to every shot (see README, "Farm"). One worker per device (``--gpus 0,1``: one per GPU; ``cpu``: one on the
CPU; ``cpu,cpu``: two there) pulls shots from one shared queue; each worker keeps one ``facefix.api.Session``
per set of models it has needed (the two most recently used stay loaded), so a model loads once per worker,
not once per shot. A shot's frames do not depend on the worker that ran it.

Resumable: a state file next to the shot list (``shots.facefix-queue.json``) records each shot as it starts
and ends. Run the same command again after a crash, Ctrl-C or a kill: shots that are done are skipped, a shot
that was cut short continues where it stopped (its finished frames are kept: frames are written atomically,
and ``resume`` recomputes only the temporal pre-roll, so the result equals one uninterrupted run), and a shot
whose entry in the list changed since is run again from the start. One failing shot does not stop the others.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import queue as queue_module
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import FaceFixError, InputError, SettingsError
from ..params import PARAMS, RUN_PARAMS

__all__ = ["Shot", "ShotResult", "ShotList", "load_shots", "parse_gpus", "QueueState", "QueueRunner",
           "summary_table", "state_path", "stderr_line", "exclusive", "STATE_VERSION"]

STATE_VERSION = "facefix.QueueState.1"
WARM_SESSIONS = 2  # sets of loaded models a worker keeps (least recently used closed first)

_CONTROLS = {p.name for p in PARAMS}
# Keys of a shot besides the controls; `mask` is the host's mask sequence (--mask-input).
_SHOT_KEYS = ("name", "input", "output", "frames", "tracks", "matte", "mask", "codec", "model_path", "compile",
              "settings")
_PATH_KEYS = ("input", "output", "tracks", "matte", "mask", "model_path")


@dataclass(frozen=True)
class Shot:
    """One shot of a list, its paths absolute, its controls validated (``settings``); ``error`` when its entry
    is not valid (the shot then fails alone, before anything runs)."""

    name: str
    index: int
    input: str = ""
    output: str = ""
    frames: str | None = None
    tracks: str | None = None
    matte: str | None = None
    mask: str | None = None
    codec: str = "auto"
    model_path: str | None = None
    compile: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)  # the controls as given (animatable: keyframes)
    settings: Any = None  # facefix.params.Settings
    error: str | None = None

    def fingerprint(self) -> str:
        """What the shot's frames depend on: a changed entry is run again from its start, not resumed."""
        look = {k: v for k, v in self.settings.to_mapping().items() if k not in ("device", "batch")}
        animation = {k: {str(f): v for f, v in sorted(c.items())} for k, c in self.settings.animation.items()}
        key = {"input": self.input, "output": self.output, "frames": self.frames, "tracks": self.tracks,
               "matte": self.matte, "mask": self.mask, "codec": self.codec, "model_path": self.model_path,
               "settings": look, "animation": animation}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def models_key(self, device: str) -> tuple:
        s = self.settings
        return (s.model, s.upscale, s.upscale_model, self.model_path, self.compile, device)


@dataclass
class ShotList:
    path: Path
    shots: list[Shot]


@dataclass
class ShotResult:
    name: str
    status: str = "not run"  # done, skipped, failed, interrupted, not run
    frames: int = 0
    frames_resumed: int = 0
    faces: int = 0
    seconds: float = 0.0
    worker: str = ""
    error: str | None = None


# ------------------------------------------------------------------------------------------- shot lists


def _read_rows(path: Path) -> tuple[Mapping[str, Any], list[Any]]:
    """(defaults, shots) of a shot list file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: shot list not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the shot list ({err})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        shots = [{k.strip(): v.strip() for k, v in row.items() if k and v is not None and v.strip() != ""}
                 for row in rows]
        defaults = next((r for r in shots if r.get("name") == "defaults"), {})
        return ({k: v for k, v in defaults.items() if k != "name"}, [r for r in shots if r is not defaults])
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or give the list as JSON "
                             "or CSV") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        raise InputError(f"{path}: a shot list is .yaml, .yml, .json or .csv")
    if isinstance(data, list):
        return {}, data
    if not isinstance(data, Mapping) or not isinstance(data.get("shots"), list):
        raise InputError(f"{path}: expected a list of shots, or {{defaults: ..., shots: [...]}}")
    unknown = sorted(set(data) - {"defaults", "shots"})
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {', '.join(map(str, unknown))} (known: defaults, shots)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise InputError(f"{path}: defaults must be a mapping of shot keys and controls")
    return defaults, data["shots"]


def _norm_keys(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        name = str(key).strip().replace("-", "_")
        if name == "mask_input":
            name = "mask"
        if name not in _SHOT_KEYS and name not in _CONTROLS:
            known = ", ".join(k for k in _SHOT_KEYS if k != "settings")
            raise SettingsError(f"{where}: unknown key {key!r} (known: {known}, settings, and the controls of "
                                "`facefix schema`)")
        out[name] = value
    return out


def _split(entry: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(shot keys, controls) of a normalised entry; controls given flat or under ``settings``."""
    keys = {k: v for k, v in entry.items() if k in _SHOT_KEYS and k != "settings"}
    controls = {k: v for k, v in entry.items() if k in _CONTROLS and k not in _SHOT_KEYS}
    nested = entry.get("settings") or {}
    if not isinstance(nested, Mapping):
        raise SettingsError(f"{where}: settings must be a mapping of control names to values")
    for key, value in nested.items():
        name = str(key).replace("-", "_")
        if name not in _CONTROLS:
            raise SettingsError(f"{where}: settings: unknown control {key!r}")
        controls[name] = value
    return keys, controls


def _resolve(folder: Path, value: Any) -> str:
    text = os.path.expanduser(str(value))
    return os.path.normpath(text if os.path.isabs(text) else os.path.join(folder, text))


def load_shots(path: str | os.PathLike[str], cli_defaults: Mapping[str, Any] | None = None) -> ShotList:
    """The shots of a YAML, JSON or CSV shot list. Paths relative to the list's folder; a shot's own keys
    win over the list's ``defaults``, which win over ``cli_defaults`` (the command line's controls). A list
    that cannot be read is an ``InputError``; an invalid shot is kept with its ``error`` (it fails alone)."""
    from ..api import settings_from
    from .frames import frame_list, frames_arg

    file = Path(path).expanduser().absolute()
    folder = file.parent
    raw_defaults, rows = _read_rows(file)
    base_keys, base_controls = _split(_norm_keys(raw_defaults, f"{file.name}: defaults"), f"{file.name}: defaults")
    if "name" in base_keys:
        raise SettingsError(f"{file.name}: defaults: a name belongs to one shot")
    cli_keys, cli_controls = _split(dict(cli_defaults or {}), "the command line")
    shots: list[Shot] = []
    names: dict[str, int] = {}
    for i, row in enumerate(rows):
        name = f"shot{i + 1}"
        if isinstance(row, Mapping) and str(row.get("name") or "").strip():
            name = str(row["name"]).strip()
        where = f"{file.name}: shot {name}"
        try:
            if not isinstance(row, Mapping):
                raise SettingsError(f"{where}: expected a mapping (input, output, frames, ...), got {row!r}")
            keys, controls = _split(_norm_keys(row, where), where)
            merged = {**cli_keys, **base_keys, **keys}
            values = {**cli_controls, **base_controls, **controls}
            for required in ("input", "output"):
                if not merged.get(required):
                    raise SettingsError(f"{where}: no {required}")
            for key in _PATH_KEYS:
                if merged.get(key):
                    merged[key] = _resolve(folder, merged[key])
            if values.get("reference"):
                values["reference"] = _resolve(folder, values["reference"])
            frames = merged.get("frames")
            if frames not in (None, ""):
                frames = frames_arg(frame_list(str(frames), option=f"{where}: frames"))
            else:
                frames = None
            compile_ = merged.get("compile", False)
            run = {p.name: p for p in RUN_PARAMS}
            shot = Shot(name=name, index=i, input=merged["input"], output=merged["output"], frames=frames,
                        tracks=merged.get("tracks") or None, matte=merged.get("matte") or None,
                        mask=merged.get("mask") or None, codec=run["codec"].coerce(merged.get("codec") or "auto"),
                        model_path=merged.get("model_path") or None, compile=bool(run["compile"].coerce(compile_)),
                        values=values, settings=settings_from(values))
        except FaceFixError as err:
            shot = Shot(name=name, index=i, error=str(err))
        if shot.name in names:
            shot = Shot(name=f"{shot.name}-{i + 1}", index=i, error=f"{where}: the name {shot.name!r} is taken by "
                        f"shot {names[shot.name] + 1} (names must be unique: they key the queue's state)")
        names[shot.name] = i
        shots.append(shot)
    if not shots:
        raise InputError(f"{file}: no shots")
    return ShotList(file, shots)


def parse_gpus(text: str | None) -> list[str | None]:
    """``--gpus``: one device per worker (``0,1`` -> cuda:0, cuda:1; ``cpu``; ``cpu,cpu``: two CPU workers);
    None: one worker on each shot's own device. CPU and GPU workers are not mixed: a shot's frames would
    then depend on the worker that ran it."""
    if text is None or not str(text).strip():
        return [None]
    devices: list[str | None] = []
    for item in str(text).split(","):
        t = item.strip().lower()
        if t == "cpu":
            devices.append("cpu")
        elif t.isdigit():
            devices.append(f"cuda:{t}")
        elif re.fullmatch(r"cuda(:\d+)?", t):
            devices.append(t if ":" in t else "cuda:0")
        else:
            raise SettingsError(f"--gpus {text!r}: {item!r} is not a GPU index or cpu (e.g. --gpus 0,1)")
    kinds = {str(d).split(":")[0] for d in devices}
    if len(kinds) > 1:
        raise SettingsError(f"--gpus {text!r}: do not mix cpu and GPUs (a shot's frames would depend on the worker "
                            "that ran it)")
    if "cuda" in kinds:
        from ..engine import resolve_device

        for d in devices:
            resolve_device(str(d))  # a GPU this machine lacks fails here, before any shot starts
    return devices


# ------------------------------------------------------------------------------------------------ state


def state_path(shot_list: Path) -> Path:
    """The queue's state file, next to the shot list: ``shots.yaml`` -> ``shots.facefix-queue.json``."""
    return shot_list.with_name(f"{shot_list.stem}.facefix-queue.json")


class QueueState:
    """Per shot name: its fingerprint, status and result, written atomically on every change."""

    def __init__(self, path: Path, restart: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.shots: dict[str, dict[str, Any]] = {}
        if not restart and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise InputError(f"{path}: the queue's state is unreadable ({err}); remove it or use --restart") from None
            if isinstance(data, Mapping) and data.get("version") == STATE_VERSION and isinstance(data.get("shots"), Mapping):
                self.shots = {str(k): dict(v) for k, v in data["shots"].items() if isinstance(v, Mapping)}

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.shots.get(name, {}))

    def update(self, name: str, **values: Any) -> None:
        from ..io.atomic import atomic_write_text

        with self._lock:
            entry = self.shots.setdefault(name, {})
            entry.update(values, updated=time.time())
            text = json.dumps({"version": STATE_VERSION, "shots": self.shots}, indent=1, sort_keys=True)
            try:
                atomic_write_text(self.path, text + "\n")
            except FaceFixError:
                raise
            except OSError as err:
                raise InputError(f"{self.path}: cannot write the queue's state ({err.strerror or err})") from None


@contextlib.contextmanager
def exclusive(path: Path) -> Any:
    """Held while a queue runs its list: a second ``facefix queue`` of the same list is refused (POSIX)."""
    if os.name == "nt":
        yield
        return
    import fcntl

    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"{path}: cannot create the queue's lock ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another facefix queue is running this shot list (lock {path})") from None
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- runner


class QueueRunner:
    """Runs a ``ShotList`` on one worker per device (``parse_gpus``); ``run()`` returns one ``ShotResult``
    per shot, in list order. ``log`` gets one line per shot start and end; ``progress`` draws a per-frame bar
    per worker (tqdm). ``stop`` (set by Ctrl-C / SIGTERM) makes each worker stop its shot between batches."""

    def __init__(self, shots: ShotList, devices: Sequence[str | None], state: QueueState, *, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        self.shots = shots
        self.devices = list(devices) or [None]
        self.state = state
        self.progress = progress
        self._log = log
        self.stop = threading.Event()
        self._todo: queue_module.Queue[Shot] = queue_module.Queue()
        self._results: dict[str, ShotResult] = {s.name: ShotResult(s.name) for s in shots.shots}
        self._lock = threading.Lock()
        self._started = 0
        self._errors: list[BaseException] = []

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def worker_name(self, index: int, device: str | None) -> str:
        name = device or "auto"
        return f"{name}#{index}" if self.devices.count(device) > 1 else name

    def run(self) -> list[ShotResult]:
        for shot in self.shots.shots:
            self._todo.put(shot)
        # Waited for through events, not Thread.join: a join interrupted by Ctrl-C can leave a live thread
        # reported as finished.
        finished = [threading.Event() for _ in self.devices]
        threads = [threading.Thread(target=self._worker, args=(i, d, finished[i]), name=f"facefix-queue-{i}",
                                    daemon=True) for i, d in enumerate(self.devices)]
        for t in threads:
            t.start()
        try:
            while not all(e.is_set() for e in finished):
                next(e for e in finished if not e.is_set()).wait(0.2)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every worker stops its shot between batches
            self.stop.set()
            while not all(e.is_set() for e in finished):
                with contextlib.suppress(KeyboardInterrupt):
                    next(e for e in finished if not e.is_set()).wait(0.5)
        if self._errors:
            raise self._errors[0]
        return [self._results[s.name] for s in self.shots.shots]

    # -- a worker -------------------------------------------------------------------------------------
    def _worker(self, index: int, device: str | None, finished: threading.Event) -> None:
        sessions: OrderedDict[tuple, Any] = OrderedDict()
        name = self.worker_name(index, device)
        try:
            if device is not None and device.startswith("cuda"):
                import torch

                torch.cuda.set_device(torch.device(device))  # this thread's current device: kernels, graphs
            while not self.stop.is_set():
                try:
                    shot = self._todo.get_nowait()
                except queue_module.Empty:
                    break
                self._run_shot(shot, device, name, index, sessions)
        except BaseException as err:  # noqa: B036 - reported by run(), never a silent dead worker
            with self._lock:
                self._errors.append(err)
            self.stop.set()
        finally:
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    session.close()
            finished.set()

    def _session(self, shot: Shot, settings: Any, device: str | None, sessions: OrderedDict[tuple, Any]) -> Any:
        from ..api import Session

        key = shot.models_key(device or str(settings.device))
        session = sessions.get(key)
        if session is not None:
            sessions.move_to_end(key)
            return session
        session = Session(settings, device=device, model_path=shot.model_path, compile=shot.compile)
        sessions[key] = session
        while len(sessions) > WARM_SESSIONS:
            with contextlib.suppress(Exception):
                sessions.popitem(last=False)[1].close()
        return session

    def _run_shot(self, shot: Shot, device: str | None, worker: str, index: int,
                  sessions: OrderedDict[tuple, Any]) -> None:
        result = self._results[shot.name]
        with self._lock:
            self._started += 1
            tag = f"[{self._started}/{len(self.shots.shots)}] {shot.name}"
        if shot.error is not None:
            result.status, result.error, result.worker = "failed", shot.error, worker
            self.state.update(shot.name, status="failed", error=shot.error)
            self.log(f"facefix queue: {tag}: failed: {shot.error}")
            return
        fingerprint = shot.fingerprint()
        kind = (device or "auto").split(":")[0]
        before = self.state.get(shot.name)
        same = before.get("fingerprint") == fingerprint
        if same and before.get("status") == "done":
            result.status = "skipped"
            result.frames, result.faces = int(before.get("frames", 0)), int(before.get("faces", 0))
            self.log(f"facefix queue: {tag}: skipped: done in an earlier run")
            return
        # A shot cut short continues where it stopped, on the same kind of device: its finished frames are
        # the ones this run would write. A changed entry starts again.
        resume = same and before.get("status") in ("running", "interrupted", "failed") and before.get("device") == kind
        result.worker = worker
        self.state.update(shot.name, fingerprint=fingerprint, status="running", device=kind, error=None)
        self.log(f"facefix queue: {tag}: start on {worker}" + (" (resuming)" if resume else ""))
        bar: list[Any] = []
        t0 = time.perf_counter()

        def on_progress(done: int, total: int) -> None:
            if not self.progress:
                return
            if not bar:
                from tqdm import tqdm

                bar.append(tqdm(total=total, unit="frame", desc=shot.name, dynamic_ncols=True, leave=False,
                                position=index if len(self.devices) > 1 else None))
            bar[0].update(done - bar[0].n)

        from ..errors import Cancelled

        try:
            # A worker's device wins over the shot's device control (kept as "auto": it is the worker's).
            settings = shot.settings if device is None else replace(shot.settings, device="auto")
            session = self._session(shot, settings, device, sessions)
            settings = replace(settings, device=session.settings.device)
            summary = session.run(shot.input, shot.output, frames=shot.frames, tracks=shot.tracks, matte=shot.matte,
                                  mask=shot.mask, codec=shot.codec, resume=resume, on_progress=on_progress,
                                  cancel=self.stop, settings=settings)
        except Cancelled:
            result.status, result.error = "interrupted", "its finished frames are kept (run the queue again to continue)"
        except BaseException as err:  # noqa: B036 - one failing shot never stops the others
            if isinstance(err, KeyboardInterrupt):
                raise
            result.status, result.error = "failed", _error_line(err)
            if not isinstance(err, FaceFixError):  # the models may be in a bad state (out of GPU memory...)
                key = shot.models_key(device or str(shot.settings.device))
                dropped = sessions.pop(key, None)
                if dropped is not None:
                    with contextlib.suppress(Exception):
                        dropped.close()
        else:
            result.status = "done"
            result.frames, result.frames_resumed = summary.frames_written, summary.frames_resumed
            result.faces = summary.faces_restored
        finally:
            if bar:
                bar[0].close()
            result.seconds = time.perf_counter() - t0
        self.state.update(shot.name, status=result.status, error=result.error, frames=result.frames,
                          faces=result.faces, seconds=round(result.seconds, 3))
        if result.status == "done":
            resumed = f" (+{result.frames_resumed} already done)" if result.frames_resumed else ""
            self.log(f"facefix queue: {tag}: done: {result.frames} frames{resumed}, {result.faces} faces, "
                     f"{result.seconds:.1f} s")
        else:
            self.log(f"facefix queue: {tag}: {result.status}: {result.error}")


def stderr_line(line: str) -> None:
    """A shot line on stderr, above the progress bars."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


def _error_line(err: BaseException) -> str:
    if isinstance(err, FaceFixError):
        return " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, MemoryError):
        return "out of memory (try a smaller --batch)"
    if type(err).__name__ == "OutOfMemoryError":
        return "out of GPU memory (try a smaller --batch)"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def summary_table(results: Sequence[ShotResult]) -> str:
    """The queue's results as a plain-text table: shot, frames, faces, time, worker, status."""
    rows = [("SHOT", "FRAMES", "FACES", "TIME", "WORKER", "STATUS")]
    for r in results:
        frames = str(r.frames) + (f" (+{r.frames_resumed})" if r.frames_resumed else "")
        ran = r.status in ("done", "failed", "interrupted")
        status = r.status + (f": {r.error}" if r.error and r.status != "interrupted" else "")
        rows.append((r.name, frames if r.status in ("done", "skipped") else "-",
                     str(r.faces) if r.status in ("done", "skipped") else "-",
                     f"{r.seconds:.1f} s" if ran else "-", r.worker or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)
