"""``facefix queue SHOTS``: the command line of ``facefix.farm.queue`` (and its ``--export openjd``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import SettingsError
from ..params import PARAMS

__all__ = ["add_queue_parser", "cmd_queue"]


def add_queue_parser(sub: Any) -> argparse.ArgumentParser:
    from ..cli.main import add_param_options

    q = sub.add_parser(
        "queue", help="Run a shot list (YAML, JSON or CSV) in one process, models kept warm; one worker per GPU.",
        description="Run every shot of a shot list (YAML, JSON or CSV: per shot input, output, frames and "
        "controls; `defaults` for every shot) in this process with the models kept warm, one worker per "
        "--gpus device. Resumable: run it again after a kill and it goes on where it stopped. The controls "
        "below are defaults for every shot (a shot's own and the list's defaults win). Exit status 1 when a "
        "shot failed, 130 when interrupted.")
    q.add_argument("shots", help="The shot list: shots.yaml, shots.json or shots.csv.")
    q.add_argument("--gpus", metavar="LIST", help="One worker per device: GPU indices (0,1), cpu, or cpu,cpu for "
                   "two CPU workers (default: one worker on each shot's --device).")
    q.add_argument("--quiet", action="store_true", help="No per-frame progress bars (shot lines and the summary "
                   "table still print).")
    q.add_argument("--restart", action="store_true", help="Forget the state file: run every shot from the start.")
    q.add_argument("--state", metavar="FILE", help="The queue's state file (default: next to the shot list, "
                   "shots.facefix-queue.json).")
    q.add_argument("--model-path", help="Weights file for every shot that names none.")
    ex = q.add_argument_group("farm export")
    ex.add_argument("--export", nargs=2, metavar=("FORMAT", "DIR"), help="Write a job bundle per shot instead of "
                    "running: --export openjd DIR writes DIR/<shot>/ (template, parameter values, asset references) "
                    "for `deadline bundle submit DIR/<shot>` or `openjd run`.")
    ex.add_argument("--frames-per-task", type=int, default=10, metavar="N", help="Frames per farm task (default "
                    "10; a movie output is one task).")
    ex.add_argument("--warm", default="true", metavar="BOOL", help="The bundles' Warm parameter: true (default) "
                    "runs each farm session's chunks on one warm bridge.")
    ex.add_argument("--template", metavar="FILE", help="The job template (default: install/openjd/facefix-shot.yaml).")
    add_param_options(q)
    q.set_defaults(func=cmd_queue)
    return q


def cmd_queue(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .queue import (
        QueueRunner,
        QueueState,
        exclusive,
        load_shots,
        parse_gpus,
        state_path,
        stderr_line,
        summary_table,
    )

    defaults: dict[str, Any] = {p.name: getattr(args, p.name) for p in PARAMS if getattr(args, p.name, None) is not None}
    if args.model_path:
        defaults["model_path"] = args.model_path
    shots = load_shots(args.shots, defaults)
    if args.export:
        return _export(args, shots)
    devices = parse_gpus(args.gpus)
    state_file = Path(args.state).expanduser().absolute() if args.state else state_path(shots.path)
    state = QueueState(state_file, restart=args.restart)
    runner = QueueRunner(shots, devices, state, progress=not args.quiet, log=stderr_line)
    workers = ", ".join(runner.worker_name(i, d) for i, d in enumerate(devices))
    print(f"facefix queue: {len(shots.shots)} shots from {shots.path}; {len(devices)} worker"
          f"{'' if len(devices) == 1 else 's'} ({workers}); state {state_file}", file=sys.stderr, flush=True)
    with exclusive(state_file.with_suffix(".lock")):
        results = runner.run()
    print(summary_table(results), flush=True)
    failed = [r for r in results if r.status == "failed"]
    interrupted = runner.stop.is_set() or any(r.status == "interrupted" for r in results)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "interrupted", "not run")}
    print("facefix queue: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr, flush=True)
    for r in failed:
        print(f"facefix: error: shot {r.name}: {r.error}", file=sys.stderr)
    if interrupted:
        print("facefix: error: interrupted; finished frames are kept: run the same command again to continue",
              file=sys.stderr)
        return 130
    return 1 if failed else 0


def _export(args: argparse.Namespace, shots: Any) -> int:
    from pathlib import Path

    from .openjd import export_bundles
    from .submit import parse_bool

    kind, folder = args.export
    if kind.lower() != "openjd":
        raise SettingsError(f"--export {kind}: the only format is openjd")
    written = export_bundles(shots, folder, frames_per_task=args.frames_per_task, warm=parse_bool(args.warm, "--warm"),
                             template=args.template)
    bad = 0
    for name, where in written:
        if isinstance(where, Path):
            print(f"{where}    # deadline bundle submit {where}")
        else:
            bad += 1
            print(f"facefix: error: shot {name}: {where}", file=sys.stderr)
    return 1 if bad else 0
