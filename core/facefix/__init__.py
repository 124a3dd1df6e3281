"""FaceFix: face restoration for compositors.

The public API is ``facefix.api`` (``Session``, ``schema``) and the exchange types exported here.
``import facefix`` is light: it imports neither torch nor any host; ``facefix.Session`` loads the core lazily.
"""

from __future__ import annotations

from .errors import (
    ChecksumError,
    DownloadError,
    FaceFixError,
    InputError,
    ModelError,
    OutputError,
    SettingsError,
)
from .faces import Face, FaceTrack, FaceTracks
from .params import PARAMS, Param, Settings, schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import RestoredFrame, Session

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Session",
    "RestoredFrame",
    "schema",
    "Face",
    "FaceTrack",
    "FaceTracks",
    "PARAMS",
    "Param",
    "Settings",
    "FaceFixError",
    "InputError",
    "OutputError",
    "ModelError",
    "ChecksumError",
    "DownloadError",
    "SettingsError",
]


def __getattr__(name: str) -> object:
    # The API module imports numpy and, on use, torch: only when asked for.
    if name in ("Session", "RestoredFrame"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'facefix' has no attribute {name!r}")
