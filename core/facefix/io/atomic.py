"""Atomic writes: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "give_default_permissions"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = _read_umask()


def give_default_permissions(path: Path) -> None:
    """The permissions a plainly created file would have (0666 less the umask).

    Temporary files are created private (0600); renamed into place as they are, farm renders and shared
    model folders would be unreadable to the rest of the team.
    """
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success rename it to ``target``.

    The temporary name keeps the target's extension (writers pick the format from it). On any
    error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{target}: output folder {folder} is not writable")
    ext = suffix if suffix is not None else "".join(target.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp" + ext, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        give_default_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(Path(target)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(Path(target), text.encode("utf-8"))
