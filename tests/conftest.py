"""Shared test set-up: small, fast, deterministic, CPU unless a test is marked gpu."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's model cache."""
    if "FACEFIX_MODELS" not in os.environ or not os.environ["FACEFIX_MODELS"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path_factory.mktemp("models")))
