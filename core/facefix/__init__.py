"""FaceFix: face restoration for compositors.

``import facefix`` is light: it imports neither torch nor any host. The heavy stages load lazily.
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
from .params import PARAMS, Param, Settings

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
