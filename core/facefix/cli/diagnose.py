"""``facefix diagnose``: score warp, boil, waxy skin and identity drift per face track, say whether the shot is
clean, worth restoring (and with which repair controls) or needs a new generation; write an HTML page and/or the
``facefix.Diagnosis.1`` JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputError

__all__ = ["add_diagnose_parser", "cmd_diagnose"]


def add_diagnose_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``diagnose`` to the CLI's subparsers (sets ``func``)."""
    from .main import add_param_options

    p = subparsers.add_parser(
        "diagnose", help="Say what is wrong with the faces of a shot (warp, boil, waxy skin, identity drift), where "
        "and how badly, and which repair fits; write an HTML report and/or JSON.")
    p.add_argument("input", help="Image sequence, still or movie (as for restore).")
    p.add_argument("-o", "--output", help="report.html: one self-contained page (timelines, worst frames before "
                   "and after the suggested repair).")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="report.json (facefix.Diagnosis.1); without "
                   "-o or --json the JSON goes to stdout.")
    p.add_argument("--frames", help="Frame range, e.g. 1001-1100 (default: every frame found).")
    p.add_argument("--tracks", metavar="JSON", help="FaceTracks JSON to use instead of detecting.")
    p.add_argument("--thumbnails", type=int, default=None, metavar="N", help="Worst frames shown per track, before "
                   "and after the suggested repair (default 3 on a GPU, 1 on the CPU where the restorer is slow; 0: "
                   "none, and no repair is run).")
    p.add_argument("--preview-model", metavar="NAME", help="Restorer for the 'after' thumbnails (default: "
                   "realesrgan-face, else passthrough).")
    p.add_argument("--quiet", action="store_true", help="No progress bar; errors only.")
    # --reference (faces group): drift is measured against the largest face of that image instead of each track's
    # first second.
    add_param_options(p, groups=("faces", "colour", "compute"))
    p.set_defaults(func=cmd_diagnose)
    return p


def _check_output(path: str, input_path: str, what: str) -> None:
    out = Path(path)
    if out.suffix.lower() not in {".html", ".htm"} and what == "-o" or out.suffix.lower() != ".json" and what == "--json":
        want = ".html" if what == "-o" else ".json"
        raise InputError(f"{what} {path}: expected a {want} file")
    try:
        if out.exists() and Path(input_path).exists() and os.path.samefile(out, input_path):
            raise InputError(f"{what} {path}: that is the input")
    except OSError:
        pass
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise OutputError(f"{what} {path}: folder {out.parent} does not exist")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from ..diagnose.run import diagnose_source
    from ..faces import FaceTracks
    from .main import settings_from_args

    if args.thumbnails is not None and args.thumbnails < 0:
        raise InputError(f"--thumbnails must be 0 or more, got {args.thumbnails}")
    for path, what in ((args.output, "-o"), (args.json_path, "--json")):
        if path:
            _check_output(path, args.input, what)
    settings = settings_from_args(args)
    reference = settings.reference or None
    if reference and not Path(reference).is_file():
        raise InputError(f"--reference {reference}: no such file")
    tracks = FaceTracks.load(args.tracks) if args.tracks else None
    diagnosis, source, tracks = diagnose_source(args.input, settings, frames=args.frames, reference=reference,
                                                progress=not args.quiet, tracks=tracks)
    if args.json_path:
        from ..diagnose.report import write_json

        write_json(diagnosis, args.json_path)
    if args.output:
        from ..diagnose.html import write_html
        from ..diagnose.run import repair_previews

        count = args.thumbnails
        if count is None:
            from ..engine import resolve_device

            count = 3 if resolve_device(settings.device).type == "cuda" else 1
        previews = repair_previews(diagnosis, source, tracks, settings, count=count, model=args.preview_model,
                                   progress=not args.quiet) if count else []
        write_html(diagnosis, args.output, previews)
    if not args.output and not args.json_path:
        print(json.dumps(diagnosis.to_json(), indent=1))
    if not args.quiet:
        print(f"facefix: {diagnosis.line()}", file=sys.stderr)
    return 0
