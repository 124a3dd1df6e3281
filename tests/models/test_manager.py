"""Model manager: models folder, mirrors, resumable verified pulls, verify, resolve and the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

from facefix.errors import ChecksumError, DownloadError, ModelError
from facefix.models import manager
from facefix.models.catalog import CATALOG, ModelCard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_models_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path / "farm"))
    assert manager.models_dir() == tmp_path / "farm"
    monkeypatch.delenv("FACEFIX_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert manager.models_dir() == tmp_path / "home" / ".cache" / "facefix" / "models"


def test_pull_installs_into_facefix_models(file_server, tiny_model_file, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "shared"
    monkeypatch.setenv("FACEFIX_MODELS", str(folder))
    file_server.files["/m/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/m/tiny_rf.pth"))
    path = manager.pull("tiny-rf", catalog={"tiny-rf": card}, progress=False)
    assert path == folder / "tiny_rf.pth"
    assert path.read_bytes() == tiny_model_file.data
    assert not (folder / "tiny_rf.pth.part").exists()
    assert manager.resolve("tiny-rf", catalog={"tiny-rf": card}) == path


def test_source_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    card = CATALOG["gfpgan-1.4"]
    monkeypatch.delenv("FACEFIX_MODEL_URL_GFPGAN_1_4", raising=False)
    monkeypatch.delenv("FACEFIX_MODEL_MIRROR", raising=False)
    assert manager.source_url(card) == card.url
    monkeypatch.setenv("FACEFIX_MODEL_MIRROR", "http://mirror.local/models/")
    assert manager.source_url(card) == "http://mirror.local/models/GFPGANv1.4.pth"
    monkeypatch.setenv("FACEFIX_MODEL_URL_GFPGAN_1_4", "http://one.local/g14.pth")
    assert manager.source_url(card) == "http://one.local/g14.pth"
    assert manager.source_url(card, "http://explicit/x.pth") == "http://explicit/x.pth"


def test_pull_verifies_and_skips_when_present(file_server, tiny_model_file, tmp_path) -> None:
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    path = manager.pull_card(card, progress=False, directory=tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tiny_model_file.sha256
    assert len(file_server.requests) == 1
    again = manager.pull_card(card, progress=False, directory=tmp_path)
    assert again == path
    assert len(file_server.requests) == 1  # already installed and verified: no second download


def test_pull_from_mirror_env(file_server, tiny_model_file, tmp_path, monkeypatch) -> None:
    file_server.files["/mirror/tiny_rf.pth"] = tiny_model_file.data
    monkeypatch.setenv("FACEFIX_MODEL_MIRROR", file_server.url("/mirror"))
    card = tiny_model_file.card(url="http://127.0.0.1:9/unreachable.pth")
    path = manager.pull_card(card, progress=False, directory=tmp_path)
    assert path.read_bytes() == tiny_model_file.data
    assert file_server.requests == [("/mirror/tiny_rf.pth", None)]


def test_pull_checksum_mismatch_leaves_nothing(file_server, tiny_model_file, tmp_path) -> None:
    tampered = bytearray(tiny_model_file.data)
    tampered[len(tampered) // 2] ^= 0xFF
    file_server.files["/tiny_rf.pth"] = bytes(tampered)
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    with pytest.raises(ChecksumError) as info:
        manager.pull_card(card, progress=False, directory=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "tiny_rf.pth" in message
    assert tiny_model_file.sha256 in message
    assert hashlib.sha256(bytes(tampered)).hexdigest() in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .part, no lock file


def test_interrupted_pull_resumes_with_range(file_server, tiny_model_file, tmp_path) -> None:
    half = len(tiny_model_file.data) // 2
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    file_server.cut_after["/tiny_rf.pth"] = half
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    with pytest.raises(DownloadError) as info:
        manager.pull_card(card, progress=False, directory=tmp_path)
    assert "resume" in str(info.value) and "\n" not in str(info.value)
    part = tmp_path / "tiny_rf.pth.part"
    assert part.stat().st_size == half
    assert not (tmp_path / "tiny_rf.pth").exists()

    path = manager.pull_card(card, progress=False, directory=tmp_path)
    assert path.read_bytes() == tiny_model_file.data
    assert file_server.requests == [("/tiny_rf.pth", None), ("/tiny_rf.pth", f"bytes={half}-")]
    assert not part.exists()


def _lock_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".lock"))


@pytest.mark.parametrize("failure", ["checksum", "http-404", "refused", "cut", "install-refused"])
def test_failed_pull_leaves_no_lock_file(failure, file_server, tiny_model_file, tmp_path, monkeypatch) -> None:
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    url = file_server.url("/tiny_rf.pth")
    if failure == "checksum":
        file_server.files["/tiny_rf.pth"] = b"the wrong bytes"
    elif failure == "http-404":
        url = file_server.url("/nope.pth")
    elif failure == "refused":
        url = f"http://127.0.0.1:{_free_port()}/tiny_rf.pth"
    elif failure == "cut":
        file_server.cut_after["/tiny_rf.pth"] = 100
    else:  # the download is fine, but the file cannot be renamed into place

        def refuse(src: object, dst: object) -> None:
            raise PermissionError(13, "Permission denied", str(dst))

        monkeypatch.setattr(manager.os, "replace", refuse)
    card = tiny_model_file.card(url=url)
    with pytest.raises(ModelError) as info:
        manager.pull_card(card, progress=False, directory=tmp_path)
    assert "\n" not in str(info.value)
    assert _lock_files(tmp_path) == []
    assert not (tmp_path / "tiny_rf.pth").exists()


def test_successful_pull_leaves_no_lock_file(file_server, tiny_model_file, tmp_path) -> None:
    # A lock file left behind by an older FaceFix is taken over and removed as well.
    (tmp_path / ".tiny_rf.pth.lock").write_bytes(b"")
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    manager.pull_card(card, progress=False, directory=tmp_path)
    assert _lock_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [manager.VERIFY_CACHE_NAME, "tiny_rf.pth"]


def test_concurrent_pull_is_refused_and_keeps_the_holders_lock(file_server, tiny_model_file, tmp_path) -> None:
    pytest.importorskip("fcntl")
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    with manager._exclusive(tmp_path / "tiny_rf.pth.part", "holder"):
        with pytest.raises(DownloadError, match="another pull of this model .* is under way"):
            manager.pull_card(card, progress=False, directory=tmp_path)
        assert _lock_files(tmp_path) == [".tiny_rf.pth.lock"]  # the refused pull left the holder's lock alone
    assert _lock_files(tmp_path) == []
    assert file_server.requests == []
    assert manager.pull_card(card, progress=False, directory=tmp_path).read_bytes() == tiny_model_file.data
    assert _lock_files(tmp_path) == []


def test_pull_that_locked_a_removed_lock_file_locks_the_new_one(
    file_server, tiny_model_file, tmp_path, monkeypatch
) -> None:
    """Pull B opens the lock file; pull A, finishing, removes it; pull C creates and holds a new one.

    B then gets the lock on the removed file; it must notice and contend for C's lock instead of
    downloading beside C.
    """
    fcntl = pytest.importorskip("fcntl")
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    lock_path = tmp_path / ".tiny_rf.pth.lock"
    real_open = os.open
    held: list[int] = []

    def open_then_race(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode)
        if Path(path) == lock_path and not held:
            os.unlink(lock_path)  # A finished and removed it
            held.append(real_open(lock_path, os.O_CREAT | os.O_RDWR, 0o644))  # C starts
            fcntl.flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd

    monkeypatch.setattr(manager.os, "open", open_then_race)
    try:
        with pytest.raises(DownloadError, match="under way"):
            manager.pull_card(card, progress=False, directory=tmp_path)
        assert file_server.requests == []
        assert lock_path.exists()  # C's lock is C's to remove
    finally:
        for fd in held:
            os.close(fd)


def test_resume_of_a_wrong_part_is_refused_and_cleaned(file_server, tiny_model_file, tmp_path) -> None:
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    (tmp_path / "tiny_rf.pth.part").write_bytes(b"\0" * 1000)  # left by some other download
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    with pytest.raises(ChecksumError):
        manager.pull_card(card, progress=False, directory=tmp_path)
    assert file_server.requests[0][1] == "bytes=1000-"
    assert not (tmp_path / "tiny_rf.pth.part").exists()
    assert manager.pull_card(card, progress=False, directory=tmp_path).read_bytes() == tiny_model_file.data


def test_progress_bar_on_stderr_and_silenced(file_server, tiny_model_file, tmp_path, capfd) -> None:
    file_server.files["/tiny_rf.pth"] = tiny_model_file.data
    card = tiny_model_file.card(url=file_server.url("/tiny_rf.pth"))
    manager.pull_card(card, progress=False, directory=tmp_path / "quiet")
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == ""
    manager.pull_card(card, progress=True, directory=tmp_path / "loud")
    loud = capfd.readouterr()
    assert loud.out == ""
    assert "tiny-rf" in loud.err and "100%" in loud.err


def test_network_errors_are_one_line_download_errors(tiny_model_file, tmp_path, file_server) -> None:
    card = tiny_model_file.card(url=f"http://127.0.0.1:{_free_port()}/tiny_rf.pth")
    with pytest.raises(DownloadError) as info:
        manager.pull_card(card, progress=False, directory=tmp_path)
    assert "\n" not in str(info.value) and "tiny-rf" in str(info.value)
    missing = tiny_model_file.card(url=file_server.url("/nope.pth"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        manager.pull_card(missing, progress=False, directory=tmp_path)


def test_embedded_models_cannot_be_pulled(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="embedded"):
        manager.pull("passthrough", directory=tmp_path)


def test_resolve_missing_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        manager.resolve("gfpgan-1.4", directory=tmp_path)
    assert str(info.value) == (
        "gfpgan-1.4 is not installed: run `facefix models pull gfpgan-1.4` (or `facefix models import FILE`)"
    )
    with pytest.raises(ModelError, match="unknown model"):
        manager.resolve("gfpgan-9", directory=tmp_path)


def test_verify_statuses_and_resolve_bad_file(tiny_model_file, tmp_path: Path) -> None:
    good = tiny_model_file.card(name="good", filename="good.pth")
    bad = tiny_model_file.card(name="bad", filename="bad.pth")
    gone = tiny_model_file.card(name="gone", filename="gone.pth")
    half = tiny_model_file.card(name="half", filename="half.pth")
    cards = {c.name: c for c in (good, bad, gone, half)} | {"passthrough": CATALOG["passthrough"]}
    (tmp_path / "good.pth").write_bytes(tiny_model_file.data)
    (tmp_path / "bad.pth").write_bytes(tiny_model_file.data[:-1] + b"x")
    (tmp_path / "half.pth.part").write_bytes(tiny_model_file.data[:100])
    assert manager.verify(catalog=cards, directory=tmp_path) == [
        ("good", "ok"),
        ("bad", "bad-checksum"),
        ("gone", "missing"),
        ("half", "partial"),
    ]
    assert manager.verify(["passthrough", "good"], catalog=cards, directory=tmp_path) == [
        ("passthrough", "embedded"),
        ("good", "ok"),
    ]
    with pytest.raises(ChecksumError) as info:
        manager.resolve("bad", catalog=cards, directory=tmp_path)
    assert "bad.pth" in str(info.value) and tiny_model_file.sha256 in str(info.value)


def test_hash_cache_skips_rehash_of_unchanged_files(tiny_model_file, tmp_path: Path) -> None:
    card = tiny_model_file.card()
    cards = {card.name: card}
    path = tmp_path / "tiny_rf.pth"
    path.write_bytes(tiny_model_file.data)
    assert manager.resolve("tiny-rf", catalog=cards, directory=tmp_path) == path
    cache = json.loads((tmp_path / manager.VERIFY_CACHE_NAME).read_text())
    assert cache["tiny_rf.pth"]["sha256"] == tiny_model_file.sha256

    # Same size and mtime, different bytes: the cache is trusted (no rehash) ...
    st = path.stat()
    flipped = bytearray(tiny_model_file.data)
    flipped[10] ^= 1
    path.write_bytes(bytes(flipped))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manager.resolve("tiny-rf", catalog=cards, directory=tmp_path) == path
    # ... while an explicit verify rehashes and finds it ...
    assert manager.verify(catalog=cards, directory=tmp_path) == [("tiny-rf", "bad-checksum")]
    # ... and a changed mtime alone makes resolve hash again.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumError):
        manager.resolve("tiny-rf", catalog=cards, directory=tmp_path)


def test_unwritable_cache_still_resolves(tiny_model_file, tmp_path: Path, monkeypatch) -> None:
    """A read-only shared models folder: the cache cannot be written, resolve still works."""
    card = tiny_model_file.card()
    (tmp_path / "tiny_rf.pth").write_bytes(tiny_model_file.data)

    def refuse(target: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(manager, "atomic_write_text", refuse)
    assert (
        manager.resolve("tiny-rf", catalog={card.name: card}, directory=tmp_path) == tmp_path / "tiny_rf.pth"
    )
    assert not (tmp_path / manager.VERIFY_CACHE_NAME).exists()


def test_card_validation() -> None:
    with pytest.raises(ModelError, match="64 hex"):
        ModelCard("x", "restorer", "GFPGAN", "http://x", "abc", "x.pth", "MIT", True)
    with pytest.raises(ModelError, match="embedded"):
        ModelCard("x", "restorer", "GFPGAN", "http://x", None, None, "MIT", True, embedded=True)
