"""Offline import: identified by sha256, checked, architecture recognised; refusals leave nothing behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from facefix.errors import ChecksumError, ModelError
from facefix.models import manager
from facefix.models.catalog import ModelCard


def _installed(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.name != manager.VERIFY_CACHE_NAME)
        if folder.exists()
        else []
    )


def test_import_identifies_by_sha256(tiny_model_file, tmp_path: Path) -> None:
    card = tiny_model_file.card()
    other = ModelCard("other", "restorer", "GFPGAN", None, "0" * 64, "other.pth", "MIT", True)
    cards = {"other": other, card.name: card}
    folder = tmp_path / "models"
    path = manager.import_file(tiny_model_file.path, catalog=cards, directory=folder)
    assert path == folder / "tiny_rf.pth"
    assert path.read_bytes() == tiny_model_file.data
    assert _installed(folder) == ["tiny_rf.pth"]
    assert manager.verify(["tiny-rf"], catalog=cards, directory=folder) == [("tiny-rf", "ok")]


def test_import_by_name_into_facefix_models(tiny_model_file, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path / "farm"))
    card = tiny_model_file.card()
    path = manager.import_file(tiny_model_file.path, "tiny-rf", catalog={card.name: card})
    assert path == tmp_path / "farm" / "tiny_rf.pth"


def test_import_bad_checksum_refused(tiny_model_file, tmp_path: Path) -> None:
    card = tiny_model_file.card()
    altered = tmp_path / "altered.pth"
    data = bytearray(tiny_model_file.data)
    data[-100] ^= 0x55
    altered.write_bytes(bytes(data))
    folder = tmp_path / "models"
    with pytest.raises(ChecksumError) as info:
        manager.import_file(altered, "tiny-rf", catalog={card.name: card}, directory=folder)
    assert str(altered) in str(info.value) and tiny_model_file.sha256 in str(info.value)
    assert _installed(folder) == []
    # Without a name, an unknown hash is refused as well.
    with pytest.raises(ChecksumError, match="matches no model"):
        manager.import_file(altered, catalog={card.name: card}, directory=folder)
    assert _installed(folder) == []


def test_import_not_a_model_refused_even_with_matching_hash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2048))
    card = ModelCard(
        "junk",
        "restorer",
        "RestoreFormer",
        None,
        hashlib.sha256(junk.read_bytes()).hexdigest(),
        "junk.pth",
        "MIT",
        True,
    )
    folder = tmp_path / "models"
    with pytest.raises(ModelError, match="not a model file") as info:
        manager.import_file(junk, catalog={"junk": card}, directory=folder)
    assert "\n" not in str(info.value)
    assert _installed(folder) == []


def test_import_wrong_or_unknown_architecture_refused(tiny_model_file, tmp_path: Path) -> None:
    as_gfpgan = ModelCard(
        "fake-gfpgan", "restorer", "GFPGAN", None, tiny_model_file.sha256, "fake.pth", "MIT", True
    )
    folder = tmp_path / "models"
    with pytest.raises(ModelError, match="is a RestoreFormer model, not GFPGAN"):
        manager.import_file(tiny_model_file.path, catalog={"fake-gfpgan": as_gfpgan}, directory=folder)
    assert _installed(folder) == []

    odd = tmp_path / "odd.pth"
    torch.save({"params": {"some.layer.weight": torch.zeros(3, 3)}}, odd)
    card = ModelCard(
        "odd",
        "restorer",
        "GFPGAN",
        None,
        hashlib.sha256(odd.read_bytes()).hexdigest(),
        "odd.pth",
        "MIT",
        True,
    )
    with pytest.raises(ModelError, match="unrecognised model architecture"):
        manager.import_file(odd, "odd", catalog={"odd": card}, directory=folder)
    assert _installed(folder) == []


def test_import_of_embedded_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="embedded"):
        manager.import_file(__file__, "passthrough", directory=tmp_path)
    with pytest.raises(ModelError, match="not found"):
        manager.import_file(tmp_path / "nope.pth", directory=tmp_path)
