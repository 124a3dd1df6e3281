"""The model cache: pull (resumable, verified), offline import, verify and resolve model files.

Where files live: ``models_dir()``, which is ``$FACEFIX_MODELS`` when set (shared farm storage)
and ``~/.cache/facefix/models`` otherwise. A file there is named as in the official release
(``GFPGANv1.4.pth``) and is only handed out by ``resolve`` after its sha256 matched the catalogue.

Mirrors, for farms without internet access:
  ``FACEFIX_MODEL_URL_<NAME>``  full URL of one model; NAME is the model name upper-cased with every
                               other character turned into ``_`` (``FACEFIX_MODEL_URL_GFPGAN_1_4``).
  ``FACEFIX_MODEL_MIRROR``     base URL of a folder holding the release files under their file names
                               (``$FACEFIX_MODEL_MIRROR/GFPGANv1.4.pth``).
An explicit ``url=`` wins over both, and both win over the catalogue's official URL. Whatever the
source, the file must match the catalogue's sha256.

Verification cache: hashing a 350 MB file on every run is wasteful, so ``.facefix-verified.json``
in the models folder maps a file name to (size, mtime_ns, sha256); a file whose size and mtime are
unchanged is not hashed again. On a read-only shared folder the cache is not written (run
``facefix models verify`` once as a user who can write there).

Every function takes optional ``catalog`` (name -> ModelCard) and ``directory`` arguments so that
tests and site tools can use their own cards without touching the global catalogue.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ChecksumError, DownloadError, ModelError
from ..io.atomic import atomic_write_text, give_default_permissions
from .catalog import CATALOG, ModelCard, find_card_by_sha256, get_card

__all__ = [
    "models_dir",
    "model_path",
    "source_url",
    "file_sha256",
    "pull",
    "pull_card",
    "import_file",
    "verify",
    "resolve",
    "Status",
    "VERIFY_CACHE_NAME",
]

Status = str  # "ok" | "missing" | "bad-checksum" | "partial" | "embedded"

VERIFY_CACHE_NAME = ".facefix-verified.json"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


# -- locations -------------------------------------------------------------------------------------
def models_dir() -> Path:
    """The models folder: ``$FACEFIX_MODELS`` if set and non-empty, else ``~/.cache/facefix/models``."""
    env = os.environ.get("FACEFIX_MODELS", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "facefix" / "models"


def _folder(directory: Path | str | None) -> Path:
    return models_dir() if directory is None else Path(directory)


def _downloadable(card: ModelCard) -> str:
    if card.embedded or not card.filename:
        raise ModelError(
            f"{card.name} is embedded in FaceFix: it has no model file to pull, import or verify"
        )
    return card.filename


def model_path(
    name: str, *, catalog: Mapping[str, ModelCard] | None = None, directory: Path | str | None = None
) -> Path:
    """Where ``name``'s file lives (whether or not it is there)."""
    return _folder(directory) / _downloadable(get_card(name, catalog))


def _env_key(name: str) -> str:
    return "FACEFIX_MODEL_URL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def source_url(card: ModelCard, url: str | None = None) -> str:
    """The URL to download ``card`` from: ``url``, else the per-model env var, else the mirror, else the official URL."""
    if url:
        return url
    per_model = os.environ.get(_env_key(card.name), "").strip()
    if per_model:
        return per_model
    mirror = os.environ.get("FACEFIX_MODEL_MIRROR", "").strip()
    filename = _downloadable(card)
    if mirror:
        return mirror.rstrip("/") + "/" + filename
    if not card.url:
        raise DownloadError(
            f"{card.name}: no download URL (set {_env_key(card.name)} or FACEFIX_MODEL_MIRROR)"
        )
    return card.url


# -- hashing and its cache ---------------------------------------------------------------------------
def _hash_stream(f: BinaryIO, out: BinaryIO | None = None) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def _read_cache(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / VERIFY_CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache_entry(path: Path, sha256: str) -> None:
    folder = path.parent
    try:
        st = path.stat()
        cache = _read_cache(folder)
        cache[path.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
        atomic_write_text(folder / VERIFY_CACHE_NAME, json.dumps(cache, indent=1, sort_keys=True))
    except Exception:  # the cache is an optimisation: a read-only folder just means hashing again
        pass


def file_sha256(path: Path | str, *, use_cache: bool = True) -> str:
    """The sha256 (hex) of ``path``, from the verification cache when size and mtime are unchanged."""
    path = Path(path)
    try:
        st = path.stat()
        if use_cache:
            entry = _read_cache(path.parent).get(path.name)
            if (
                isinstance(entry, dict)
                and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns
                and isinstance(entry.get("sha256"), str)
            ):
                return str(entry["sha256"])
        with path.open("rb") as f:
            sha = _hash_stream(f)
    except OSError as err:
        raise ModelError(f"{path}: cannot read model file ({err.strerror or err})") from None
    _write_cache_entry(path, sha)
    return sha


# -- download ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _exclusive(part: Path, label: str) -> Iterator[None]:
    """Hold an advisory lock beside ``part`` so two pulls of one model into one folder never interleave.

    The lock file is removed when the pull ends, however it ends. Removing it is safe because a pull
    that obtained the lock checks that the file it locked is still the one at ``lock_path``; if
    another pull removed it in between, it opens the new file and locks that instead.
    """
    lock_path = part.with_name("." + part.name.removesuffix(".part") + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a concurrent pull there is the user's call
        fcntl = None  # type: ignore[assignment]
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:
            raise ModelError(
                f"{part.parent}: cannot write to the models folder ({err.strerror or err})"
            ) from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DownloadError(f"{label}: another pull of this model into {part.parent} is under way") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except OSError:  # removed by the pull that held it until now
            same = False
        if same:
            break
        os.close(fd)  # we locked a file that is no longer there: lock the current one instead
    try:
        yield
    finally:
        # Unlink while still holding the lock, then release: a pull that opened this file before the
        # unlink and locks it now sees it gone and starts over. (Windows cannot unlink an open file.)
        if fcntl is None:
            os.close(fd)
        with contextlib.suppress(OSError):
            lock_path.unlink()
        if fcntl is not None:
            os.close(fd)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _download(url: str, part: Path, *, label: str, progress: bool, expected_size: int | None) -> None:
    """Fetch ``url`` into ``part``, continuing after the bytes already there (HTTP Range).

    Leaves ``part`` in place on a network failure so the next call resumes; raises DownloadError.
    """
    from tqdm import tqdm

    from .. import __version__

    start = part.stat().st_size if part.exists() else 0
    if expected_size is not None and start >= expected_size:
        return  # already complete (or too long): the checksum decides
    headers = {"User-Agent": f"facefix/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            return  # nothing left to send: the checksum decides
        raise DownloadError(f"{label}: download from {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"{label}: download from {url} failed: {reason}") from None

    with response:
        resumed = (
            start > 0
            and response.status == 206
            and _content_range_start(response.headers.get("Content-Range")) == start
        )
        if not resumed:
            start = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else expected_size
        written = start
        try:
            with (
                part.open("ab" if resumed else "wb") as out,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    file=sys.stderr,
                    disable=not progress,
                    leave=True,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                f"{label}: download from {url} stopped at {written} bytes ({type(err).__name__}); "
                "run the pull again to resume"
            ) from None
    if total is not None and written < total:
        raise DownloadError(
            f"{label}: download from {url} stopped at {written} of {total} bytes; run the pull again to resume"
        )


def pull_card(
    card: ModelCard,
    *,
    url: str | None = None,
    progress: bool = True,
    directory: Path | str | None = None,
) -> Path:
    """Download ``card``'s file into the models folder and return its path.

    Resumable: bytes go to ``<file>.part`` and a later call continues from its end (HTTP Range).
    The sha256 is checked before the file is renamed into place; on a mismatch the ``.part`` is
    deleted and ChecksumError names the file and both hashes. Network failures raise DownloadError
    (the ``.part`` is kept for resuming). A file already in place with the right hash is not fetched
    again. ``url`` overrides the source (see the module docstring for the env-var mirrors);
    ``progress=False`` silences the progress bar on stderr.
    """
    filename = _downloadable(card)
    folder = _folder(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"{folder}: cannot create the models folder ({err.strerror or err})") from None
    target = folder / filename
    if target.is_file() and file_sha256(target) == card.sha256:
        return target
    src = source_url(card, url)
    part = target.with_name(target.name + ".part")
    with _exclusive(part, card.name):
        # A compressed release's size is not the catalogue's (that is the decompressed file's).
        expected = None if card.compression else card.size_bytes
        _download(src, part, label=card.name, progress=progress, expected_size=expected)
        unpacked = _unpack_if_bz2(part, card.name, src)
        with unpacked.open("rb") as f:
            got = _hash_stream(f)
        if got != card.sha256:
            for leftover in {part, unpacked}:
                with contextlib.suppress(OSError):
                    leftover.unlink()
            raise ChecksumError(
                f"{filename}: sha256 {got} does not match the catalogue's {card.sha256} "
                f"(downloaded from {src}; the partial file was deleted)"
            )
        give_default_permissions(unpacked)
        try:
            os.replace(unpacked, target)
        except OSError as err:
            raise ModelError(f"{target}: cannot install the model file ({err.strerror or err})") from None
        if unpacked != part:
            with contextlib.suppress(OSError):
                part.unlink()
    _write_cache_entry(target, got)
    return target


def _is_bz2(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(3) == b"BZh"


def _unpack_if_bz2(part: Path, label: str, src: str) -> Path:
    """``part`` itself, or, when it is a bzip2 stream (dlib's releases are), its decompressed copy beside it.

    Decided by the file's magic bytes, so a mirror may hold either the compressed or the plain file. A
    corrupt stream deletes both files and raises ChecksumError.
    """
    if not _is_bz2(part):
        return part
    out = part.with_name(part.name.removesuffix(".part") + ".unpacked")
    try:
        with bz2.open(part, "rb") as packed, out.open("wb") as plain:
            shutil.copyfileobj(packed, plain, _CHUNK)
    except (OSError, EOFError, ValueError) as err:
        for leftover in (part, out):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise ChecksumError(
            f"{label}: the download from {src} is not a valid .bz2 file ({err}); it was deleted"
        ) from None
    return out


def pull(
    name: str,
    *,
    url: str | None = None,
    progress: bool = True,
    catalog: Mapping[str, ModelCard] | None = None,
    directory: Path | str | None = None,
) -> Path:
    """Download the catalogue model ``name`` (see ``pull_card``) and return its path."""
    return pull_card(get_card(name, catalog), url=url, progress=progress, directory=directory)


# -- offline import ----------------------------------------------------------------------------------
def _check_architecture(path: Path, card: ModelCard, origin: Path) -> None:
    if card.architecture == "DlibResNet":  # a dlib serialisation, not a state dict: its own reader checks it
        from ..identity_dlib import read_dlib_resnet

        read_dlib_resnet(path.read_bytes(), origin=str(origin))
        return
    from .archdetect import detect_architecture
    from .safeload import load_state_dict

    try:
        state_dict = load_state_dict(path)
    except ModelError:
        raise ModelError(
            f"{origin}: not a model file (the safe loader could not read weights from it)"
        ) from None
    try:
        arch = detect_architecture(state_dict)
    except Exception:  # a detector tripping over odd tensors: the file is of no architecture we know
        arch = None
    if arch is None:
        raise ModelError(
            f"{origin}: unrecognised model architecture (expected {card.architecture} for {card.name})"
        )
    if arch != card.architecture:
        raise ModelError(f"{origin}: is a {arch} model, not {card.architecture} as {card.name} requires")


def import_file(
    path: Path | str,
    name: str | None = None,
    *,
    catalog: Mapping[str, ModelCard] | None = None,
    directory: Path | str | None = None,
) -> Path:
    """Copy a model file into the models folder, for machines without internet access.

    Without ``name`` the file is identified by its sha256 among the catalogue's files; with ``name``
    its sha256 must match that card's. The weights are then read with the safe loader and their
    architecture must be the card's. A file that fails either check is refused (ModelError /
    ChecksumError) and nothing is left in the models folder. Returns the installed path.
    """
    src = Path(path)
    if src.is_dir():
        raise ModelError(f"{src}: is a folder, not a model file")
    if not src.is_file():
        raise ModelError(f"{src}: file not found")
    wanted = get_card(name, catalog) if name else None
    if wanted is not None:
        _downloadable(wanted)
    folder = _folder(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".import-", suffix=".tmp", dir=folder)
    except OSError as err:
        raise ModelError(f"{folder}: cannot write to the models folder ({err.strerror or err})") from None
    tmp = Path(tmp_name)
    try:
        # Copy and hash in one pass; the check then applies to exactly the bytes installed. A .bz2 (as
        # dlib releases its models) is decompressed on the way.
        compressed = False
        try:
            compressed = _is_bz2(src)
            opener = bz2.open if compressed else open
            with os.fdopen(fd, "wb") as out, opener(src, "rb") as f:
                got = _hash_stream(f, out)  # type: ignore[arg-type]
        except (EOFError, ValueError):
            raise ModelError(f"{src}: not a valid .bz2 file") from None
        except OSError as err:
            if compressed and err.filename is None and err.errno is None:  # bz2's "Invalid data stream"
                raise ModelError(f"{src}: not a valid .bz2 file ({err})") from None
            doing = "cannot read it" if err.filename == str(src) else f"cannot copy it into {folder}"
            raise ModelError(f"{src}: {doing} ({err.strerror or err})") from None
        card = wanted if wanted is not None else find_card_by_sha256(got, catalog)
        if card is None:
            raise ChecksumError(
                f"{src}: sha256 {got} matches no model in the catalogue (pass --name NAME to say which it should be)"
            )
        if got != card.sha256:
            raise ChecksumError(
                f"{src}: sha256 {got} does not match the catalogue's {card.sha256} for {card.name}"
            )
        _check_architecture(tmp, card, src)
        target = folder / _downloadable(card)
        give_default_permissions(tmp)
        try:
            os.replace(tmp, target)
        except OSError as err:
            raise ModelError(f"{target}: cannot install the model file ({err.strerror or err})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _write_cache_entry(target, got)
    return target


# -- verify and resolve ------------------------------------------------------------------------------
def _status(card: ModelCard, folder: Path, *, use_cache: bool) -> Status:
    if card.embedded or not card.filename:
        return "embedded"
    path = folder / card.filename
    if not path.is_file():
        return "partial" if path.with_name(path.name + ".part").is_file() else "missing"
    return "ok" if file_sha256(path, use_cache=use_cache) == card.sha256 else "bad-checksum"


def verify(
    names: Sequence[str] | Iterable[str] | None = None,
    *,
    rehash: bool = True,
    catalog: Mapping[str, ModelCard] | None = None,
    directory: Path | str | None = None,
) -> list[tuple[str, Status]]:
    """(name, status) for ``names`` (default: every downloadable model in the catalogue).

    Status is ``ok``, ``missing``, ``bad-checksum``, ``partial`` (an unfinished pull that a new
    pull resumes) or ``embedded``. ``rehash=True`` (default) reads every file again and refreshes the
    verification cache; ``rehash=False`` trusts the cache for unchanged files.
    """
    cards = CATALOG if catalog is None else catalog
    folder = _folder(directory)
    chosen = [get_card(n, cards) for n in names] if names else [c for c in cards.values() if not c.embedded]
    return [(card.name, _status(card, folder, use_cache=not rehash)) for card in chosen]


def resolve(
    name: str, *, catalog: Mapping[str, ModelCard] | None = None, directory: Path | str | None = None
) -> Path:
    """The verified file of model ``name``.

    ModelError when it is not installed (with the command that installs it), ChecksumError when the
    file there does not match the catalogue. The hash comes from the verification cache when the
    file is unchanged since it was last checked.
    """
    card = get_card(name, catalog)
    folder = _folder(directory)
    path = folder / _downloadable(card)
    if not path.is_file():
        raise ModelError(
            f"{name} is not installed: run `facefix models pull {name}` (or `facefix models import FILE`)"
        )
    got = file_sha256(path)
    if got != card.sha256:
        raise ChecksumError(
            f"{path}: sha256 {got} does not match the catalogue's {card.sha256} for {name}; "
            f"run `facefix models pull {name}` to replace it"
        )
    return path
