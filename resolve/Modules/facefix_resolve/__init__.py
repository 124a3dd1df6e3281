"""FaceFix for DaVinci Resolve and Fusion: the adapter the Resolve scripts run (Python 3.7+, standard library).

Resolve's scripting API cannot process pixels inside the Edit or Color page, so the scripts hand the work to
FaceFix's bridge (``facefix serve``, started when none runs) and bring the result back:

* ``utility_main`` (Workspace > Scripts > Utility > FaceFix, any page): renders timeline clips and places the
  fixed clips on the video track above, frame for frame (``edit``);
* ``comp_main`` (Workspace > Scripts > Comp > FaceFix, Fusion page): renders the selected Loader/MediaIn and
  merges the result over it through one animated, editable Polygon mask per face; re-renders with the edited
  mask (``comp``).

Nothing of FaceFix is imported: the bridge client is one standard-library file loaded by path (``config``).
``plan`` holds the decisions as pure functions; ``ui`` the UIManager dialogs; ``runner`` the job loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .plan import AdapterError

__all__ = ["AdapterError", "utility_main", "comp_main", "hosts"]
__version__ = "1.0"


def hosts(env: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(resolve, fusion, bmd) from a script's globals (Resolve sets ``resolve``, ``fusion`` / ``fu`` and
    ``bmd`` for scripts run from its menu), else through ``DaVinciResolveScript`` (external scripting)."""
    resolve, fusion, bmd = env.get("resolve"), env.get("fusion") or env.get("fu"), env.get("bmd")
    if resolve is None and bmd is not None:
        resolve = bmd.scriptapp("Resolve")
    if resolve is None or bmd is None:
        try:
            import DaVinciResolveScript as dvr  # type: ignore[import-not-found]
        except ImportError:
            dvr = None
        if dvr is not None:
            resolve = resolve or dvr.scriptapp("Resolve")
            bmd = bmd or dvr
    if fusion is None and resolve is not None:
        fusion = resolve.Fusion()
    if fusion is None or bmd is None:
        raise AdapterError("run FaceFix from Resolve's Workspace > Scripts menu (no Resolve scripting here)")
    return resolve, fusion, bmd


def _open(env: Mapping[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    from . import config

    resolve, fusion, bmd = hosts(env)
    client = config.load_client()
    bridge = config.bridge()
    return resolve, fusion, bmd, bridge, client


def _report(env: Mapping[str, Any], err: Exception) -> None:
    from .ui import message

    print(f"FaceFix: {err}")
    try:
        _, fusion, bmd = hosts(env)
        message(fusion, bmd, str(err))
    except Exception:  # no UI to show it in: the console line above is all there is
        pass


def utility_main(env: dict[str, Any]) -> None:
    """The Utility script: the dialog that fixes timeline clips."""
    from .ui import EditDialog

    try:
        resolve, fusion, bmd, bridge, client = _open(env)
        if resolve is None:
            raise AdapterError("FaceFix's Utility script runs inside DaVinci Resolve")
        EditDialog(resolve, fusion, bmd, bridge, client).show()
    except AdapterError as err:
        _report(env, err)


def comp_main(env: dict[str, Any]) -> None:
    """The Comp script (Fusion page): the dialog that fixes the selected Loader or MediaIn."""
    from .ui import CompDialog

    try:
        resolve, fusion, bmd, bridge, client = _open(env)
        comp = env.get("comp") or fusion.GetCurrentComp()
        if comp is None:
            raise AdapterError("no Fusion composition is open: run this from the Fusion page")
        CompDialog(comp, resolve, fusion, bmd, bridge, client).show()
    except AdapterError as err:
        _report(env, err)
