"""The ``facefix`` command: a thin layer over the core. Options come from the one parameter schema."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import FaceFixError, Interrupted
from ..params import PARAMS, RUN_PARAMS, Param, Settings, schema

__all__ = ["main", "build_parser", "add_param_options", "settings_from_args"]


def _arg_type(p: Param) -> Any:
    if p.kind == "bool":
        return lambda v: p.coerce(v)
    return str  # coerced (with a one-line error naming the flag) by Settings


def add_param_options(parser: argparse.ArgumentParser, groups: Sequence[str] | None = None,
                      params: Sequence[Param] = PARAMS) -> None:
    """Add one option per schema parameter (optionally only some groups)."""
    by_group: dict[str, argparse._ArgumentGroup] = {}
    for p in params:
        if groups is not None and p.group not in groups:
            continue
        g = by_group.get(p.group) or parser.add_argument_group(f"{p.group} controls")
        by_group[p.group] = g
        help_text = p.help
        if p.choices:
            help_text += f" Choices: {', '.join(str(c) for c in p.choices)}."
        if p.minimum is not None and p.maximum is not None:
            help_text += f" Range {p.minimum:g}..{p.maximum:g}."
        if p.kind == "bool" and p.default is False:  # a switch: present = on
            g.add_argument(p.cli_flag, dest=p.name, action="store_true", help=help_text)
            continue
        if p.default not in ("", None):
            help_text += f" Default: {p.default}."
        g.add_argument(p.cli_flag, dest=p.name, default=None, type=_arg_type(p), metavar=p.kind.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = {p.name: getattr(args, p.name) for p in PARAMS if getattr(args, p.name, None) is not None}
    return Settings.from_mapping(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facefix",
        description="Restore faces in footage: detect, track, align, restore, stabilise, composite, upscale.",
    )
    parser.add_argument("--version", action="version", version=f"facefix {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("restore", help="Restore faces in an image sequence or movie.")
    r.add_argument("input", help="Input: shot.####.exr, shot.%%04d.exr, shot.1001-1100#.exr, a still, or a movie.")
    r.add_argument("-o", "--output", required=True, help="Output pattern or movie file.")
    r.add_argument("--quiet", action="store_true", help="No progress bar; errors only.")
    r.add_argument("--model-path", help="Use this weights file instead of the installed model.")
    add_param_options(r, params=RUN_PARAMS)
    add_param_options(r)

    t = sub.add_parser("track", help="Detect and track faces; write FaceTracks JSON.")
    t.add_argument("input")
    t.add_argument("-o", "--output", required=True, help="tracks.json")
    t.add_argument("--frames")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--debug-overlay", metavar="DIR", help="Write frames with boxes, ids and landmarks drawn.")
    add_param_options(t, groups=("faces", "colour", "compute"))

    d = sub.add_parser("demo", help="Write a small example shot (PNG 16-bit and EXR half) to try FaceFix on.")
    d.add_argument("folder")
    d.add_argument("--frames", type=int, default=8, help="Number of frames (default 8).")

    s = sub.add_parser("schema", help="Print the parameter schema as JSON (what hosts build their controls from).")
    s.add_argument("--indent", type=int, default=1)

    v = sub.add_parser("serve", help="Run the local host bridge (HTTP + JSON on 127.0.0.1) that Nuke, Resolve and "
                       "farm tasks talk to; models stay loaded between jobs.")
    v.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1: this machine only).")
    v.add_argument("--port", type=int, default=0, help="Port (default 0: any free port).")
    v.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one bridge per GPU).")
    v.add_argument("--model-path", help="Weights file for jobs that name none (instead of the installed model).")
    v.add_argument("--quiet", action="store_true", help="No log of job state changes on stderr.")

    from ..farm import add_farm_parsers
    from .diagnose import add_diagnose_parser
    from .models import add_models_parser

    add_diagnose_parser(sub)
    add_models_parser(sub)
    add_farm_parsers(sub)  # facefix queue, facefix submit
    return parser


def _cmd_restore(args: argparse.Namespace) -> int:
    from ..api import Session

    settings = settings_from_args(args)
    with Session(settings, model_path=args.model_path, compile=bool(args.compile)) as session:
        summary = session.run(args.input, args.output, frames=args.frames, tracks=args.tracks, resume=args.resume,
                              progress=not args.quiet, codec=args.codec or "auto", matte=args.matte,
                              mask=args.mask_input)
    if not args.quiet:
        print(f"facefix: {summary.line()}", file=sys.stderr)
    return 0


def _cmd_track(args: argparse.Namespace) -> int:
    from .track import run_track

    settings = settings_from_args(args)
    line = run_track(args.input, args.output, settings, frames=args.frames, progress=not args.quiet,
                     debug_overlay=args.debug_overlay)
    if not args.quiet:
        print(f"facefix: {line}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import write_demo

    for path in write_demo(args.folder, n_frames=args.frames):
        print(path)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=args.indent))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..bridge.server import serve

    return serve(args.host, args.port, args.device, quiet=args.quiet, model_path=args.model_path)


def _stop_cleanly_on_sigterm() -> None:
    """Farm managers stop tasks with SIGTERM: treat it like Ctrl-C, so temp files are removed, finished
    frames stay, and the summary says to --resume."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _uses_cuda(args: argparse.Namespace) -> bool:
    try:
        from ..engine import resolve_device

        return resolve_device(getattr(args, "device", None) or "auto").type == "cuda"
    except FaceFixError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="facefix: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    _stop_cleanly_on_sigterm()
    if argv is None and args.command in ("restore", "track", "queue"):
        from ..hostmem import fast_pinned_memory, return_frames_to_the_os

        # The process is ours: process-wide settings, for GPU runs. Pinned memory first: it must precede CUDA
        # (and means nothing on the CPU). The frames' allocator setting only on the GPU: on the CPU the models'
        # own large temporaries would then be mapped afresh on every call (a 720p CPU run took 1.8x as long).
        if getattr(args, "device", None) != "cpu":
            fast_pinned_memory()
        if _uses_cuda(args):
            return_frames_to_the_os()
    handlers = {"restore": _cmd_restore, "track": _cmd_track, "schema": _cmd_schema, "demo": _cmd_demo,
                "serve": _cmd_serve}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        return int(args.func(args))
    except FaceFixError as err:
        print(f"facefix: error: {err}", file=sys.stderr)
        return 130 if isinstance(err, Interrupted) else 1
    except KeyboardInterrupt:  # before or after the frames' loop (analysis, model loading): the same message
        print(f"facefix: error: {Interrupted()}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("facefix: error: out of memory (try a smaller --batch)", file=sys.stderr)
        return 1
    except Exception as err:  # torch's CUDA OOM and other runtime failures: one line, not a traceback
        if type(err).__name__ == "OutOfMemoryError":
            print("facefix: error: out of GPU memory (try a smaller --batch, or --device cpu)", file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(f"facefix: error: {type(err).__name__}: {err} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
