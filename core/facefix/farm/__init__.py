"""Farm and queue: Open Job Description job bundles, the farm job's tasks (``facefix submit``) and a
workstation's warm shot queue (``facefix queue``). Imports no torch."""

from __future__ import annotations

__all__ = ["add_farm_parsers"]


def add_farm_parsers(sub: object) -> None:
    """Add ``facefix queue`` and ``facefix submit`` to the command line's subcommands."""
    from .cli import add_queue_parser
    from .submit import add_submit_parser

    add_queue_parser(sub)
    add_submit_parser(sub)
