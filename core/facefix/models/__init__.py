"""Model files: the catalogue, the download/import cache, and safe weight loading.

Light to import: torch and spandrel load only when weights are read.
"""

from __future__ import annotations

from .catalog import CATALOG, ModelCard, card_names, find_card_by_sha256, get_card
from .manager import (
    file_sha256,
    import_file,
    model_path,
    models_dir,
    pull,
    pull_card,
    resolve,
    source_url,
    verify,
)

__all__ = [
    "CATALOG",
    "ModelCard",
    "card_names",
    "find_card_by_sha256",
    "get_card",
    "file_sha256",
    "import_file",
    "model_path",
    "models_dir",
    "pull",
    "pull_card",
    "resolve",
    "source_url",
    "verify",
]
