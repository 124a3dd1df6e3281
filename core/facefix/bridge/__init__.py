"""The local host bridge, ``facefix serve``: one long-lived process per GPU that keeps the models warm and runs
the hosts' jobs (Nuke, Resolve, an OpenFX plug-in, farm tasks) one at a time, over HTTP + JSON on 127.0.0.1.

``facefix.bridge.server``: the server (``BridgeServer``, ``serve`` for the command line).
``facefix.bridge.client``: the standard-library-only client (``Bridge``, ``BridgeError``) that hosts load by path.

Importing this package imports neither torch nor numpy.
"""

from __future__ import annotations

__all__: list[str] = []
