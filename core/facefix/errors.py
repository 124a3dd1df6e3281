"""Exception types. Every message is one line that names the file, frame or option at fault."""

from __future__ import annotations

__all__ = [
    "FaceFixError",
    "InputError",
    "OutputError",
    "ModelError",
    "ChecksumError",
    "DownloadError",
    "SettingsError",
    "Interrupted",
    "Cancelled",
]


class FaceFixError(Exception):
    """Base class: the CLI prints ``str(err)`` as a single line and exits non-zero."""


class InputError(FaceFixError):
    """A source file or frame is missing, corrupt, or unsupported."""


class OutputError(FaceFixError):
    """An output cannot be written (unwritable folder, disk full, bad extension)."""


class SettingsError(FaceFixError):
    """A parameter value is of the wrong type or out of range."""


class ModelError(FaceFixError):
    """A model file is missing, not a model, or of an unrecognised architecture."""


class ChecksumError(ModelError):
    """A model file's sha256 does not match the catalogue."""


class DownloadError(ModelError):
    """A model download failed."""


class Interrupted(FaceFixError):
    """The run was stopped (Ctrl-C / SIGTERM); finished frames are on disk and --resume continues."""

    def __init__(self, done: int | None = None, total: int | None = None) -> None:
        where = f" after {done} of {total} frames" if done is not None and total is not None else ""
        super().__init__(f"interrupted{where}; finished frames are kept: run again with --resume to continue")


class Cancelled(FaceFixError):
    """A host cancelled the run between batches; finished frames are on disk and a resumed run continues."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"cancelled after {done} of {total} frames; finished frames are kept (resume to continue)")
