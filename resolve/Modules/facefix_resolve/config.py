"""Where FaceFix is installed, and its bridge client, loaded by path (Resolve's Python never imports ``facefix``).

The install is found, in order, from:

1. ``$FACEFIX_ROOT``: the FaceFix folder (the one holding ``core/facefix``);
2. ``facefix_config.json`` beside this package, in the Scripts folder's ``Modules`` (``install/install_resolve.py``
   writes it there, also when it links the package to a checkout):
   ``{"root": "/opt/facefix", "serve": ["/opt/facefix/.venv/bin/facefix", "serve"]}`` (``serve`` optional: the
   command that starts the bridge, a list or a shell-like string);
3. the FaceFix checkout this folder sits in (``resolve/`` used in place, or linked by the installer).

The bridge is started with, in order: the config's ``serve``, ``$FACEFIX_SERVE``, ``ROOT/.venv/bin/facefix
serve`` when that exists, ``facefix serve`` found on PATH.

Renders go to ``$FACEFIX_RESOLVE_RENDERS``, else the config's ``renders``, else ``~/FaceFix/renders``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .plan import AdapterError

__all__ = ["PACKAGE_DIR", "CONFIG_NAME", "CLIENT_MODULE", "config", "facefix_root", "client_path", "load_client",
           "serve_command", "renders_root", "bridge"]

PACKAGE_DIR = Path(__file__).resolve().parent  # the package's own folder (a link followed to the checkout)
MODULES_DIR = Path(os.path.abspath(__file__)).parent.parent  # the Modules folder it was imported from
CONFIG_NAME = "facefix_config.json"
CLIENT_MODULE = "facefix_bridge_client"
_CLIENT_PATHS = (("core", "facefix", "bridge", "client.py"), ("facefix", "bridge", "client.py"))


def config_path() -> Path:
    return MODULES_DIR / CONFIG_NAME


def config() -> dict[str, Any]:
    """``facefix_config.json`` beside this package (in ``Modules``), or {} when there is none."""
    path = config_path()
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
    """The FaceFix folder: ``$FACEFIX_ROOT``, else the config's ``root``, else the checkout around this one."""
    env = os.environ.get("FACEFIX_ROOT", "").strip()
    if env:
        return Path(env).expanduser()
    root = config().get("root")
    if root:
        return Path(str(root)).expanduser()
    for here in PACKAGE_DIR.parents:
        if any(here.joinpath(*parts).is_file() for parts in _CLIENT_PATHS[:1]):
            return here
    return None


def client_path() -> Path:
    root = facefix_root()
    if root is None:
        raise AdapterError("FaceFix is not found: run install/install_resolve.py from the FaceFix folder, or set "
                           "FACEFIX_ROOT to it")
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
    sys.modules[CLIENT_MODULE] = module
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


def renders_root() -> Path:
    env = os.environ.get("FACEFIX_RESOLVE_RENDERS", "").strip()
    if env:
        return Path(env).expanduser()
    own = config().get("renders")
    if own:
        return Path(str(own)).expanduser()
    return Path.home() / "FaceFix" / "renders"


def bridge(wait_s: float = 60.0) -> Any:
    """The running bridge, or one started now (``Bridge.ensure``); a ``BridgeError`` becomes an AdapterError."""
    client = load_client()
    try:
        return client.Bridge.ensure(serve_command(), wait_s=wait_s)
    except client.BridgeError as err:
        raise AdapterError(str(err)) from None
