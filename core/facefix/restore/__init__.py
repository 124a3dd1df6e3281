"""Face restorers: a registry of networks that restore aligned 512x512 face crops.

``load_restorer(name, device, dtype)`` returns a ``Restorer``; call it on crops [N, 3, 512, 512]
in [0, 1]. Importing this package imports torch but no network code; spandrel loads on first use.
"""

from __future__ import annotations

from .base import Restorer, RunFn, compute_dtype
from .registry import RESTORERS, RestorerSpec, load_restorer, restorer_names

__all__ = [
    "Restorer",
    "RunFn",
    "compute_dtype",
    "RESTORERS",
    "RestorerSpec",
    "load_restorer",
    "restorer_names",
]
