"""Where FaceFix is installed, and its bridge client, loaded by path (Nuke's Python never imports ``facefix``).

The install is found, in order, from:

1. ``$FACEFIX_ROOT``: the FaceFix folder (a checkout or an install root: the one holding ``core/facefix``);
2. ``facefix_config.json`` beside ``init.py`` (written by an installer): ``{"root": "/opt/facefix",
   "serve": ["/opt/facefix/.venv/bin/facefix", "serve"]}`` (``serve``, optional: the command that starts
   the bridge, a list or a shell-like string);
3. the folder above this plugin folder, when ``nuke/`` is used straight from a FaceFix checkout.

The bridge is started with, in order: the config's ``serve``, ``$FACEFIX_SERVE``, ``ROOT/.venv/bin/facefix
serve`` when that exists, ``facefix serve`` found on PATH.

No Nuke and no third-party module is imported here (Python 3.7+).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["AdapterError", "PLUGIN_DIR", "CONFIG_NAME", "config", "facefix_root", "client_path", "load_client",
           "serve_command", "gizmo_dirs"]

PLUGIN_DIR = Path(__file__).resolve().parent.parent  # the NUKE_PATH folder: init.py, menu.py, facefix_nuke/
CONFIG_NAME = "facefix_config.json"
CLIENT_MODULE = "facefix_bridge_client"
_CLIENT_PATHS = (("core", "facefix", "bridge", "client.py"), ("facefix", "bridge", "client.py"))


class AdapterError(Exception):
    """Something the compositor has to fix, as one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()) or "FaceFix error")


def config() -> dict[str, Any]:
    """``facefix_config.json`` beside ``init.py``, or {} when there is none."""
    path = PLUGIN_DIR / CONFIG_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AdapterError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: expected a JSON object like {{\"root\": \"/opt/facefix\"}}")
    return data


def facefix_root() -> Path | None:
    """The FaceFix folder: ``$FACEFIX_ROOT``, else the config's ``root``, else the checkout this folder is in."""
    env = os.environ.get("FACEFIX_ROOT", "").strip()
    if env:
        return Path(env).expanduser()
    root = config().get("root")
    if root:
        return Path(str(root)).expanduser()
    here = PLUGIN_DIR.parent
    if any(here.joinpath(*parts).is_file() for parts in _CLIENT_PATHS):
        return here
    return None


def client_path() -> Path:
    """The bridge client's file (``core/facefix/bridge/client.py`` under the root)."""
    root = facefix_root()
    if root is None:
        raise AdapterError("FaceFix is not found: set FACEFIX_ROOT to the FaceFix folder, or write "
                           f"{PLUGIN_DIR / CONFIG_NAME} with {{\"root\": \"/path/to/facefix\"}}")
    for parts in _CLIENT_PATHS:
        path = root.joinpath(*parts)
        if path.is_file():
            return path
    raise AdapterError(f"{root}: no FaceFix bridge client there (core/facefix/bridge/client.py): is FACEFIX_ROOT "
                       "(or the config's root) the FaceFix folder?")


def load_client() -> ModuleType:
    """The bridge client module (``Bridge``, ``BridgeError``), loaded once by path."""
    path = client_path()
    loaded = sys.modules.get(CLIENT_MODULE)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(CLIENT_MODULE, str(path))
    if spec is None or spec.loader is None:
        raise AdapterError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[CLIENT_MODULE] = module  # before running it: its dataclasses and type hints look it up
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(CLIENT_MODULE, None)
        raise AdapterError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from None
    return module


def serve_command() -> str | list[str] | None:
    """What starts the bridge, or None for the client's own default ($FACEFIX_SERVE, facefix on PATH)."""
    serve = config().get("serve")
    if isinstance(serve, (list, tuple)) and serve:
        return [str(a) for a in serve]
    if isinstance(serve, str) and serve.strip():
        return serve
    if os.environ.get("FACEFIX_SERVE", "").strip():
        return None
    root = facefix_root()
    if root is not None:
        for exe in (root / ".venv" / "bin" / "facefix", root / ".venv" / "Scripts" / "facefix.exe"):
            if exe.is_file():
                return [str(exe), "serve"]
    return None


def gizmo_dirs() -> list[Path]:
    """Folders holding FaceFix.gizmo: the root's ``gizmos``, the one beside this plugin folder, and its own."""
    candidates = []
    try:
        root = facefix_root()
    except AdapterError:
        root = None
    if root is not None:
        candidates.append(root / "gizmos")
    candidates += [PLUGIN_DIR.parent / "gizmos", PLUGIN_DIR / "gizmos"]
    out: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if (c / "FaceFix.gizmo").is_file() and c not in out:
            out.append(c)
    return out
