"""``facefix submit``: one job on this machine's warm bridge (``facefix serve``), and the farm job's tasks.

    facefix submit plate.####.exr -o fixed/fixed.####.exr --frames 1001-1100 --strength 0.8   # on the bridge
    facefix submit --start-bridge        # a step environment's onEnter: the bridge runs, models load once
    facefix submit --track ...           # the farm job's Track step: the shot's tracks next to the output
    facefix submit --shot-tracks --frames 1011-1020 ...   # a chunk of the Restore step, with those tracks
    facefix submit --warm false ...      # the same in this process instead: exactly ``facefix restore``
    facefix submit --stop-bridge         # onExit

A restore job takes every ``facefix restore`` option (and ``--args "FLAGS"``: more of them in one string, as
an OpenJD template passes its ``Args`` parameter). On the bridge it runs on the warm models of the bridge's
session; its frames are the command line's, byte for byte. The client side imports no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import FaceFixError, InputError, SettingsError
from ..params import PARAMS, RUN_PARAMS

__all__ = ["cmd_submit", "shot_tracks_path", "merge_args", "start_bridge", "stop_bridge", "parse_bool"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(text: object, option: str) -> bool:
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise SettingsError(f"{option}: {text!r} is not true or false")


# facefix.io.movie.MOVIE_EXTENSIONS, without importing the readers (a bridge client stays light; tested equal).
_MOVIES = (".mp4", ".mov", ".avi", ".mkv")


def shot_tracks_path(output: str) -> Path:
    """Where a farm job keeps its shot's FaceTracks: next to the output (``out/fixed.####.exr`` ->
    ``out/fixed.facefix-tracks.json``), where a run that detects its own faces keeps them
    (``facefix.run.tracks_sidecar``, computed here without importing torch; tested equal)."""
    path = Path(os.path.abspath(os.path.expanduser(output)))
    movie = path.suffix.lower() in _MOVIES
    stem = path.stem if movie else path.name.split("#")[0].split("%")[0].split("@")[0]
    stem = stem.rstrip("._-") or "output"
    if stem == path.name:  # a still: drop the extension
        stem = path.stem
    return path.parent / f"{stem}.facefix-tracks.json"


def merge_args(args: argparse.Namespace, parser: argparse.ArgumentParser, extra: str | None) -> None:
    """Add the options in ``extra`` (a string of flags, split like a shell) to ``args``; an option given on
    the command line itself wins over the same option in ``extra``."""
    if not extra or not extra.strip():
        return
    try:
        words = shlex.split(extra, posix=os.name != "nt")
    except ValueError as err:
        raise SettingsError(f"--args {extra!r}: {err}") from None
    if os.name == "nt":  # Windows paths keep their backslashes; quotes around a word are dropped
        words = [w[1:-1] if len(w) > 1 and w[0] == w[-1] and w[0] in "\"'" else w for w in words]
    given = parser.parse_args(words)
    for name, value in vars(given).items():
        if name.startswith("_") or name in ("func", "command", "input", "output") or value in (None, False):
            continue
        if getattr(args, name, None) in (None, False):
            setattr(args, name, value)
    if given.input is not None:
        raise SettingsError(f"--args {extra!r}: give options only (the input is {args.input!r})")


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _serve_command(device: str | None, model_path: str | None) -> list[str]:
    """``facefix serve`` as this installation starts it: $FACEFIX_SERVE, else ``facefix`` on PATH, else this
    Python with ``-m facefix.cli``."""
    env = os.environ.get("FACEFIX_SERVE", "").strip()
    if env:
        argv = shlex.split(env, posix=os.name != "nt")
    else:
        exe = shutil.which("facefix")
        argv = [exe, "serve"] if exe else [sys.executable, "-m", "facefix.cli", "serve"]
    if device:
        argv += ["--device", device]
    if model_path:
        argv += ["--model-path", model_path]
    return argv


def start_bridge(device: str | None = None, model_path: str | None = None, wait_s: float = 300.0) -> Any:
    """The running bridge (connection file in ``$FACEFIX_CACHE``), or start ``facefix serve`` detached and wait
    for it; returns its client ``Bridge``. A ``BridgeError`` (one line) when it cannot be started."""
    from ..bridge.client import Bridge

    return Bridge.ensure(_serve_command(device, _absolute(model_path)), wait_s=wait_s)


def stop_bridge(wait_s: float = 60.0) -> int | None:
    """Stop the bridge named by the connection file (SIGTERM: it cancels its queued jobs, finishes the running
    one's batch, frees the models and removes the file); returns its pid, or None when none was running."""
    from ..bridge.client import Bridge, BridgeError

    bridge = Bridge.find()
    if bridge is None:
        return None
    try:
        pid = int(bridge.health()["pid"])
    except (BridgeError, KeyError, TypeError, ValueError):  # gone since it was found
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if Bridge.find() is None and not _alive(pid):
            break
        time.sleep(0.1)
    return pid


def _alive(pid: int) -> bool:
    if os.name == "nt":  # no signal 0 on Windows: the connection file is gone, so is the bridge
        return False
    with contextlib.suppress(OSError, IndexError):  # Linux: a zombie (exited, its parent gone) is not alive
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Progress:
    """Progress of a job on the bridge: a bar on a terminal, else a line a second (and OpenJD's
    ``openjd_progress:`` lines inside an OpenJD session, which a farm monitor shows as the task's progress)."""

    def __init__(self, quiet: bool, desc: str) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.tty = sys.stderr.isatty()
        self.openjd = "OPENJD_SESSION_WORKING_DIR" in os.environ
        self.desc = desc
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.openjd and total:
            print(f"openjd_progress: {100.0 * done / total:.1f}", flush=True)
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="frame", desc=self.desc, dynamic_ncols=True)
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
            return
        now = time.monotonic()
        if done == total or now - self.last >= 1.0:
            self.last = now
            print(f"facefix: {self.desc} {done}/{total} frames", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _settings_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {p.name: getattr(args, p.name) for p in PARAMS if getattr(args, p.name, None) is not None}
    from ..params import Settings

    Settings.from_mapping(values)  # a bad control fails here, in one line, before anything is submitted
    return values


def _frames(args: argparse.Namespace) -> str | None:
    from .frames import frame_list, frames_arg

    return frames_arg(frame_list(args.frames)) if args.frames else None


def cmd_submit(args: argparse.Namespace) -> int:
    """``facefix submit``: see the module's docstring."""
    from ..bridge.client import BridgeError

    warm = parse_bool(args.warm, "--warm")
    try:
        merge_args(args, args._parser, args.args)
        if args.start_bridge or args.stop_bridge:
            if args.input or args.output:
                raise SettingsError("--start-bridge / --stop-bridge take no input or output")
            if not warm:  # a template's cold variant: nothing to start or stop
                return 0
            if args.start_bridge:
                bridge = start_bridge(args.device if args.device not in (None, "auto") else None, args.model_path)
                health = bridge.health()
                print(f"facefix: bridge {bridge.url} (pid {health['pid']}, device {health['device']})",
                      file=sys.stderr, flush=True)
            else:
                pid = stop_bridge()
                print("facefix: no bridge running" if pid is None else f"facefix: bridge (pid {pid}) stopped",
                      file=sys.stderr, flush=True)
            return 0
        if not args.input or not args.output:
            raise SettingsError("give the input and -o OUTPUT (or --start-bridge / --stop-bridge)")
        if args.track:
            return _track(args)
        return _restore(args, warm)
    except BridgeError as err:
        print(f"facefix: error: {err}", file=sys.stderr)
        return 1


def _tracks_for(args: argparse.Namespace) -> str | None:
    if args.tracks:
        return _absolute(args.tracks)
    if args.shot_tracks:
        path = shot_tracks_path(args.output)
        if not path.is_file():
            raise InputError(f"{path}: the shot's tracks are not there (the farm job's Track step writes them: "
                             "facefix submit --track)")
        return str(path)
    return None


def _restore(args: argparse.Namespace, warm: bool) -> int:
    args.frames = _frames(args)
    args.tracks = _tracks_for(args)
    if not warm:  # a fresh process per task: exactly `facefix restore` with these options
        from ..cli.main import _cmd_restore, _uses_cuda
        from ..hostmem import fast_pinned_memory, return_frames_to_the_os

        if args.device != "cpu":  # the process is the task's: the command line's settings for GPU runs
            fast_pinned_memory()
        if _uses_cuda(args):
            return_frames_to_the_os()
        return _cmd_restore(args)
    from ..bridge.client import BridgeError

    job: dict[str, Any] = {"input": _absolute(args.input), "output": _absolute(args.output),
                           "settings": _settings_values(args)}
    optional = {"frames": args.frames, "tracks": args.tracks, "matte": _absolute(args.matte),
                "mask": _absolute(args.mask_input), "codec": args.codec, "model_path": _absolute(args.model_path)}
    job.update({k: v for k, v in optional.items() if v})
    for name in ("resume", "compile"):
        if getattr(args, name):
            job[name] = True
    bridge = start_bridge()
    job_id = bridge.submit(job)
    if not args.quiet:
        print(f"facefix: job {job_id} on {bridge.url}", file=sys.stderr, flush=True)
    progress = _Progress(args.quiet, "restore")
    try:
        final = bridge.wait(job_id, on_progress=progress)
    except KeyboardInterrupt:  # Ctrl-C or the farm's SIGTERM: the job stops between batches, frames kept
        with contextlib.suppress(BridgeError):
            bridge.cancel(job_id)
        raise
    finally:
        progress.close()
    if not args.quiet:
        print(f"facefix: {final.get('summary', 'done')}", file=sys.stderr, flush=True)
    return 0


def _track(args: argparse.Namespace) -> int:
    """The shot's tracks next to the output: copied from --tracks, or detected over the frames and the temporal
    pre-roll before them, exactly as an uninterrupted ``facefix restore`` of those frames analyses them (a
    plain ``facefix restore --frames`` of the shot would reuse this file)."""
    from ..faces import FaceTracks

    target = shot_tracks_path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    if args.tracks:
        given = Path(_absolute(args.tracks) or "")
        tracks = FaceTracks.load(given)  # validated: a bad file fails here, not in every chunk
        if not (target.exists() and os.path.samefile(given, target)):
            tracks.save(target)
        if not args.quiet:
            print(f"facefix: {len(tracks.tracks)} tracks from {given}; wrote {target}", file=sys.stderr, flush=True)
        return 0
    from ..engine import Engine
    from ..io import open_source
    from ..params import Settings
    from ..run import RunSummary, _analysed_tracks
    from .frames import frame_list

    settings = Settings.from_mapping(_settings_values(args))
    source = args.input
    full = open_source(source)
    try:
        all_numbers = list(full.frame_numbers)
        wanted = frame_list(args.frames) if args.frames else all_numbers
        present = set(all_numbers)
        missing = [n for n in wanted if n not in present]
        if missing:
            raise InputError(f"{source}: frame {missing[0]} is not there ({len(missing)} of the frames asked for "
                             "are missing)")
        numbers = _analysed_frames(wanted, all_numbers, settings)
        summary = RunSummary()
        t0 = time.perf_counter()
        tracks = _analysed_tracks(full, source, args.output, numbers, settings, Engine(settings), not args.quiet,
                                  summary)
    finally:
        full.close()
    if not target.is_file():
        raise FaceFixError(f"{target}: could not write the shot's tracks")
    if not args.quiet:
        reused = " (reused)" if summary.notes else ""
        print(f"facefix: {len(numbers)} frames analysed, {len(tracks.tracks)} tracks{reused}; wrote {target} "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return 0


def _analysed_frames(wanted: list[int], all_numbers: list[int], settings: Any) -> list[int]:
    """The frames ``run_clip`` analyses for ``wanted``: each with the frames before it that the temporal stage
    (and a repair stage, where there is one) reads, and the frames after it that a repair stage reads."""
    from .. import run
    from ..temporal import preroll_frames

    preroll = preroll_frames(settings.temporal) if settings.temporal > 0 else 0
    postroll = 0
    repairer = getattr(run, "_repairer", None)  # the repair stage's window, where this FaceFix has one
    stage = repairer(settings) if repairer is not None else None
    if stage is not None:
        preroll += int(stage.preroll)
        postroll = int(stage.lookahead)
    index = {n: i for i, n in enumerate(all_numbers)}
    if postroll:
        return list(run._with_preroll(wanted, all_numbers, index, preroll, postroll))  # type: ignore[call-arg]
    return list(run._with_preroll(wanted, all_numbers, index, preroll))


def add_submit_parser(sub: Any) -> argparse.ArgumentParser:
    from ..cli.main import add_param_options

    s = sub.add_parser("submit", help="Run a restore job on this machine's warm bridge (facefix serve) and wait; "
                       "also the farm job's tasks (--track, --shot-tracks, --start-bridge, --stop-bridge).",
                       description="Submit a restore job to the running bridge (`facefix serve`; started if none "
                       "runs) and wait for it, printing progress; exit status 0 when it is done, 1 when it failed. "
                       "Every `facefix restore` option applies.")
    s.add_argument("input", nargs="?", help="Input, as `facefix restore` takes it.")
    s.add_argument("-o", "--output", help="Output pattern or movie file.")
    s.add_argument("--quiet", action="store_true", help="No progress; errors only.")
    s.add_argument("--model-path", help="Use this weights file instead of the installed model.")
    farm = s.add_argument_group("farm tasks")
    farm.add_argument("--warm", default="true", metavar="BOOL",
                      help="true (default): run on the bridge, whose models stay loaded between jobs; false: run "
                      "in this process, as `facefix restore` (an OpenJD template passes its Warm parameter).")
    farm.add_argument("--args", metavar="FLAGS", help="More `facefix restore` options in one string (split like a "
                      "shell): how an OpenJD template passes its Args parameter.")
    farm.add_argument("--track", action="store_true", help="Write the shot's FaceTracks next to OUTPUT "
                      "(out/fixed.facefix-tracks.json): copied from --tracks if given, else detected over --frames "
                      "and their temporal pre-roll, as `facefix restore` would. Restores nothing.")
    farm.add_argument("--shot-tracks", action="store_true", help="Restore with the shot's FaceTracks next to "
                      "OUTPUT (written by --track): every chunk of a shot uses the same tracks.")
    farm.add_argument("--start-bridge", action="store_true", help="Start the bridge (detached) unless one runs, "
                      "wait until it answers, and exit: an OpenJD step environment's onEnter.")
    farm.add_argument("--stop-bridge", action="store_true", help="Stop the bridge in the connection file "
                      "($FACEFIX_CACHE/serve.json): onExit.")
    add_param_options(s, params=RUN_PARAMS)
    add_param_options(s)
    s.set_defaults(func=cmd_submit, _parser=s)
    return s
