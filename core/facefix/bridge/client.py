"""The FaceFix bridge client: what a host (Nuke, Resolve, a farm task, a script) uses to talk to `facefix serve`.

Standard library only, and it imports nothing of the ``facefix`` package: a host may load this one file by
path into its own Python (``importlib.util.spec_from_file_location``), without FaceFix, numpy or torch
installed there.

    bridge = Bridge.ensure()                       # the running bridge, or start `facefix serve` and wait
    job = bridge.submit({"input": "/shots/plate.####.exr", "output": "/shots/fixed/fixed.####.exr",
                         "frames": "1001-1100", "settings": {"model": "gfpgan-1.4", "strength": {"1001": 0.5}}})
    final = bridge.wait(job, on_progress=lambda done, total: print(done, "/", total))
    print(final["summary"])

Every error a host can see is a ``BridgeError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BridgeError", "Bridge", "connection_file", "cache_folder"]

# How long ``find`` waits for /health: a live bridge answers at once, even while it renders.
FIND_TIMEOUT_S = 5.0


class BridgeError(Exception):
    """Anything that went wrong talking to the bridge, as one line. ``status``: the HTTP status, if any."""

    def __init__(self, message: object, status: int | None = None) -> None:
        super().__init__(" ".join(str(message).split()) or "bridge error")
        self.status = status


def cache_folder() -> Path:
    """FaceFix's cache folder: ``$FACEFIX_CACHE``, else ``$XDG_CACHE_HOME/facefix``, else ``~/.cache/facefix``."""
    own = os.environ.get("FACEFIX_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "facefix"
    return Path.home() / ".cache" / "facefix"


def connection_file() -> Path:
    """Where a running bridge says how to reach it (``{"url", "token", "pid"}``, readable only by the user)."""
    return cache_folder() / "serve.json"


# Loopback requests never go through the user's HTTP proxy (studios often set one for the internet).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Bridge:
    """A connection to one running bridge: ``Bridge(url, token)``, or ``Bridge.find()`` / ``Bridge.ensure()``."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = str(url).rstrip("/")
        self.token = str(token)
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"Bridge({self.url!r})"

    # -- finding or starting the bridge ---------------------------------------------------------------------
    @classmethod
    def find(cls, path: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> Bridge | None:
        """The bridge named by the connection file (``path``, default ``connection_file()``), if it answers
        ``/health``; None when there is no file, it is unreadable, or that bridge is gone."""
        file = Path(path) if path is not None else connection_file()
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
            url, token = info["url"], info["token"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not isinstance(url, str) or not isinstance(token, str):
            return None
        bridge = cls(url, token, timeout=timeout)
        try:
            bridge._request("GET", "/health", timeout=min(FIND_TIMEOUT_S, timeout))
        except BridgeError:
            return None
        return bridge

    @classmethod
    def ensure(cls, command: str | Sequence[str] | None = None, wait_s: float = 60.0) -> Bridge:
        """The running bridge, or start one and wait (up to ``wait_s``) until it answers.

        command: what starts it (a list, or a string split like a shell would); default ``$FACEFIX_SERVE``,
        else ``facefix serve`` found on PATH. It is started detached (it outlives the host), with the host's
        PYTHONPATH and PYTHONHOME removed (a host's own Python must not leak into FaceFix's); its log goes
        to ``serve.log`` beside the connection file. Hosts that call this at the same time (farm tasks
        starting together on one node) start one bridge between them: the start is under a file lock.
        """
        found = cls.find()
        if found is not None:
            return found
        argv = _serve_command(command)
        folder = connection_file().parent
        deadline = time.monotonic() + float(wait_s)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise BridgeError(f"cannot start the FaceFix bridge: {folder}: {err.strerror or err}") from None
        with _start_lock(folder / "serve.start.lock", deadline, wait_s):
            found = cls.find()  # started by another host while this one waited for the lock
            if found is not None:
                return found
            proc = _start_detached(argv, folder / "serve.log")
            while True:
                found = cls.find()
                if found is not None:
                    return found
                code = proc.poll()
                if code not in (None, 0):  # exit 0: a launcher that handed over to the bridge; keep waiting
                    raise BridgeError(f"the FaceFix bridge ({_shell_line(argv)}) exited with status {code}: "
                                      f"{_last_line(folder / 'serve.log')}")
                if time.monotonic() > deadline:
                    raise BridgeError(f"the FaceFix bridge ({_shell_line(argv)}) did not answer within "
                                      f"{wait_s:g} s (see {folder / 'serve.log'})")
                time.sleep(0.1)

    # -- the endpoints ----------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``{"ok", "version", "pid", "device", "jobs": {state: count}}``."""
        return self._request("GET", "/health")

    def schema(self) -> dict[str, Any]:
        """The parameter schema (``facefix schema``): what a host builds its controls from."""
        return self._request("GET", "/schema")

    def submit(self, job: Mapping[str, Any]) -> str:
        """Queue a job (``{"kind", "input", "output", "frames", "settings", ...}``); returns its id."""
        if not isinstance(job, Mapping):
            raise BridgeError(f"a job is a dict, got {type(job).__name__}")
        answer = self._request("POST", "/jobs", dict(job))
        job_id = answer.get("id")
        if not isinstance(job_id, str):
            raise BridgeError(f"the bridge at {self.url} answered without a job id")
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        """``{"id", "kind", "state", "progress": {"done", "total"}, "error"?, "summary"?, ...}``."""
        return self._request("GET", f"/jobs/{_quote(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one never starts, a running one stops between batches (frames written stay)."""
        return self._request("DELETE", f"/jobs/{_quote(job_id)}")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the bridge remembers, in submission order."""
        return list(self._request("GET", "/jobs").get("jobs", []))

    def wait(self, job_id: str, on_progress: Callable[[int, int], None] | None = None,
             should_cancel: Callable[[], bool] | None = None, poll_s: float = 0.2) -> dict[str, Any]:
        """Wait for a job to end; returns its final status when done.

        on_progress(done, total) is called whenever the progress changes. should_cancel() is asked every
        ``poll_s``: True cancels the job and raises ``BridgeError("cancelled")``. A failed job raises
        ``BridgeError`` with the job's one-line error, a cancelled one ``BridgeError("cancelled")``.
        """
        seen: tuple[int, int] | None = None
        while True:
            st = self.status(job_id)
            progress = st.get("progress") or {}
            now = (int(progress.get("done", 0)), int(progress.get("total", 0)))
            if on_progress is not None and now != seen and (now != (0, 0) or seen is not None):
                on_progress(*now)
            seen = now
            state = st.get("state")
            if state == "done":
                return st
            if state == "failed":
                raise BridgeError(st.get("error") or f"job {job_id} failed")
            if state == "cancelled":
                raise BridgeError("cancelled")
            if should_cancel is not None and should_cancel():
                self.cancel(job_id)
                raise BridgeError("cancelled")
            time.sleep(poll_s)

    # -- frame by frame (shared memory) ---------------------------------------------------------------------
    def frame_window(self, settings: Mapping[str, Any] | None = None) -> dict[str, int]:
        """``{"preroll", "lookahead"}``: the frames before and after a frame that its result depends on."""
        return self._request("POST", "/frames/window", {"settings": dict(settings or {})})

    def restore_frames(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Restore one frame from shared memory into shared memory (``POST /frames``: ``{"width", "height",
        "channels", "depth", "input", "output", "frames", "render", "mask"?, "mask_channels"?, "settings",
        "tracks"}``, see README "Bridge"); returns ``{"frame", "seconds"}`` once the output segment holds it."""
        return self._request("POST", "/frames", dict(request))

    def start_analysis(self, request: Mapping[str, Any]) -> str:
        """Begin tracking frames a host hands over one by one (``{"width", "height", "channels", "depth",
        "frames", "settings"}``); returns the analysis id."""
        return str(self._request("POST", "/analyses", dict(request))["id"])

    def give_frame(self, analysis_id: str, segment: str, frame: int) -> dict[str, int]:
        """Hand frame ``frame`` of an analysis over from shared memory segment ``segment``."""
        return self._request("POST", f"/analyses/{_quote(analysis_id)}/frames", {"input": segment, "frame": int(frame)})

    def analysis_result(self, analysis_id: str) -> dict[str, Any]:
        """``{"frames", "tracks"}`` (FaceTracks JSON) once every frame is given and tracked."""
        return self._request("GET", f"/analyses/{_quote(analysis_id)}")

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for attempt in (1, 2):
            try:
                with _OPENER.open(request, timeout=self.timeout if timeout is None else timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as err:
                raise BridgeError(_error_text(err), status=err.code) from None
            except urllib.error.URLError as err:
                reason = getattr(err.reason, "strerror", None) or err.reason
                raise BridgeError(f"cannot reach the FaceFix bridge at {self.url}: {reason}") from None
            except TimeoutError:
                raise BridgeError(f"the FaceFix bridge at {self.url} did not answer in time") from None
            except (OSError, ValueError) as err:  # reset connections, bad URLs
                raise BridgeError(f"cannot talk to the FaceFix bridge at {self.url}: {err}") from None
            except http.client.HTTPException as err:  # an answer broken off (IncompleteRead) or malformed
                if method != "GET" or attempt == 2:  # a GET changes nothing: asked once more
                    raise BridgeError(f"the FaceFix bridge at {self.url} broke off its answer "
                                      f"({type(err).__name__})") from None
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BridgeError(f"the FaceFix bridge at {self.url} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise BridgeError(f"the FaceFix bridge at {self.url} answered {type(answer).__name__}, not an object")
        return answer


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        text = json.loads(err.read().decode("utf-8")).get("error")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        text = None
    return str(text) if text else f"HTTP {err.code} {err.reason}"


def _quote(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")


def _serve_command(command: str | Sequence[str] | None) -> list[str]:
    if command is None:
        env = os.environ.get("FACEFIX_SERVE", "").strip()
        if env:
            command = env
        else:
            exe = shutil.which("facefix")
            if exe is None:
                raise BridgeError("cannot start the FaceFix bridge: no `facefix` command on PATH "
                                  "(set FACEFIX_SERVE to the command that starts `facefix serve`)")
            return [exe, "serve"]
    argv = shlex.split(command, posix=os.name != "nt") if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise BridgeError("cannot start the FaceFix bridge: the command is empty")
    return argv


def _start_detached(argv: Sequence[str], log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    detach: dict[str, Any] = {"start_new_session": True}
    if os.name == "nt":  # no console window, not in the host's process group
        detach = {"creationflags": getattr(subprocess, "DETACHED_PROCESS", 0x8)
                  | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    try:
        with open(log_path, "ab") as log:
            return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    env=env, close_fds=True, **detach)
    except OSError as err:
        raise BridgeError(f"cannot start the FaceFix bridge ({_shell_line(argv)}): {err.strerror or err}") from None


@contextlib.contextmanager
def _start_lock(path: Path, deadline: float, wait_s: float) -> Iterator[None]:
    """Held while one host starts the bridge; others wait for it (then find that bridge). An OS lock on an
    open file: released when the holder closes it or dies, so a crashed host leaves no stale lock."""
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise BridgeError(f"cannot start the FaceFix bridge: {path}: {err.strerror or err}") from None
    try:
        while True:
            try:
                if os.name == "nt":
                    import msvcrt

                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                else:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BridgeError(f"another host is starting the FaceFix bridge and it did not answer within "
                                      f"{wait_s:g} s (see {path.parent / 'serve.log'})") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def _shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)  # shlex.join is Python 3.8+; some hosts still run 3.7


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"

