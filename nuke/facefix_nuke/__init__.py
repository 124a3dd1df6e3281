"""FaceFix for Nuke: the adapter behind the FaceFix gizmo.

``init.py`` calls ``register()`` (the gizmo's folder on the plugin path), ``menu.py`` calls ``add_menu()``
(Nodes > FaceFix > FaceFix). The gizmo's buttons call ``analyse``, ``render`` and ``load_tracks`` with
``nuke.thisNode()``; ``render(node, first, last)`` is also what ``nuke -t facefix_render.py`` runs.

Importing this package imports neither ``nuke`` nor ``facefix``: the knob generator (``facefix_nuke.gizmo``)
runs without Nuke, and inside Nuke the FaceFix bridge client is loaded by path (``facefix_nuke.install``), so
Nuke's Python never imports numpy or torch. Python 3.7+.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register", "add_menu", "analyse", "render", "load_tracks", "facefix_nodes", "AdapterError"]

from .install import AdapterError


def register() -> list[str]:
    """Put the folder holding FaceFix.gizmo on Nuke's plugin path (``init.py``); returns the folders added."""
    import nuke

    from .install import gizmo_dirs

    added = []
    for folder in reversed(gizmo_dirs()):  # pluginAddPath prepends: the first folder found ends up first
        nuke.pluginAddPath(str(folder), addToSysPath=False)
        added.append(str(folder))
    return added[::-1]


def add_menu() -> Any:
    """Nodes > FaceFix > FaceFix, which creates the gizmo (``menu.py``)."""
    import nuke

    menu = nuke.menu("Nodes").addMenu("FaceFix")
    return menu.addCommand("FaceFix", "nuke.createNode('FaceFix')", tooltip="FaceFix: face restoration")


def analyse(node: Any) -> None:
    """The Analyse button."""
    from . import node as _node

    _node.analyse(node)


def render(node: Any, first: int | None = None, last: int | None = None) -> str | None:
    """The Render button, and headless renders: ``render(node, first, last)``."""
    from . import node as _node

    return _node.render(node, first, last)


def load_tracks(node: Any) -> None:
    """The Tracks tab's Load button."""
    from . import node as _node

    _node.load_tracks(node)


def facefix_nodes() -> list[Any]:
    """Every FaceFix node of the script."""
    from . import node as _node

    return _node.facefix_nodes()
