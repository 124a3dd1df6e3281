"""Shared set-up for the restorer tests: random-init weights written the way the releases ship them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SaveRelease = Callable[[dict[str, torch.Tensor], Path, str, str], tuple[Path, Path]]


def _save_release_files(state: dict[str, torch.Tensor], folder: Path, stem: str, container: str) -> tuple[Path, Path]:
    pth = folder / f"{stem}.pth"
    torch.save({container: state}, pth)
    st = folder / f"{stem}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    return pth, st


@pytest.fixture(scope="session")
def save_release_files() -> SaveRelease:
    """``save(state, folder, stem, container)``: ``state`` as ``stem.pth`` (inside the release's
    ``{container: state}`` dict) and as ``stem.safetensors``; returns (pth, safetensors)."""
    return _save_release_files
