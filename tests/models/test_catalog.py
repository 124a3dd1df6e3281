"""The catalogue: complete, consistent with the parameter schema, licences flagged."""

from __future__ import annotations

import re

import pytest

from facefix.errors import ModelError
from facefix.models.catalog import CATALOG, card_names, find_card_by_sha256, get_card
from facefix.params import RESTORER_CHOICES, UPSCALER_CHOICES

EXPECTED_FILES = {
    "gfpgan-1.3": (
        "GFPGANv1.3.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
    ),
    "gfpgan-1.4": (
        "GFPGANv1.4.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
    ),
    "restoreformer": (
        "RestoreFormer.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
    ),
    "codeformer": (
        "codeformer.pth",
        "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
    ),
    "retinaface-r50": (
        "detection_Resnet50_Final.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_downloadable_cards(name: str) -> None:
    card = get_card(name)
    filename, url = EXPECTED_FILES[name]
    assert (card.filename, card.url, card.embedded) == (filename, url, False)
    assert card.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", card.sha256)
    assert card.size_bytes is not None and card.size_bytes > 50_000_000
    assert find_card_by_sha256(card.sha256.upper()) is card


def test_hashes_are_distinct() -> None:
    hashes = [c.sha256 for c in CATALOG.values() if c.sha256]
    # + dlib-resnet-v1, whose card (a .bz2 release) tests/identity/test_dlib_weights.py checks
    assert len(hashes) == len(set(hashes)) == len(EXPECTED_FILES) + 1


def test_licences() -> None:
    assert get_card("codeformer").commercial_use is False
    assert "NON-COMMERCIAL" in get_card("codeformer").licence_label
    assert "S-Lab" in get_card("codeformer").license
    assert get_card("retinaface-r50").license == "MIT"
    for name in ("gfpgan-1.3", "gfpgan-1.4", "restoreformer"):
        assert get_card(name).commercial_use is True


def test_every_schema_choice_has_a_card() -> None:
    for name in RESTORER_CHOICES:
        assert get_card(name).role == "restorer"
    for name in UPSCALER_CHOICES:
        card = get_card(name)
        assert card.role == "upscaler" and card.embedded
    embedded = [c for c in CATALOG.values() if c.embedded]
    assert all(c.url is None and c.sha256 is None for c in embedded)
    assert {"passthrough", "realesrgan-face"} <= {c.name for c in embedded}


def test_unknown_name() -> None:
    with pytest.raises(ModelError, match="unknown model 'gfpgan-2'"):
        get_card("gfpgan-2")
    assert "gfpgan-1.4" in card_names()
    assert find_card_by_sha256("0" * 64) is None
