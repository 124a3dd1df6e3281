"""GFPGAN v1.4 / v1.3 at full size: a random-init network with the real hyper-parameters (so the key
layout and tensor shapes are those of the released files), saved as .pth and .safetensors and loaded
through the registry. v1.3 and v1.4 share one layout (both are GFPGANv1Clean, out 512, channel
multiplier 2), so the same file stands in for both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from spandrel.architectures.GFPGAN import GFPGAN

from facefix.restore import load_restorer

if TYPE_CHECKING:
    from .conftest import SaveRelease


@pytest.fixture(scope="module")
def gfpgan_files(
    tmp_path_factory: pytest.TempPathFactory, save_release_files: SaveRelease
) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    torch.manual_seed(14)
    state = GFPGAN().state_dict()  # spandrel's defaults are GFPGAN v1.3/v1.4's settings
    # BasicSR's container, as in the release.
    pth, st = save_release_files(state, tmp_path_factory.mktemp("gfpgan"), "GFPGANv1.4", "params_ema")
    return pth, st, state


def test_layout_matches_the_release(gfpgan_files) -> None:  # type: ignore[no-untyped-def]
    _, _, state = gfpgan_files
    n_bytes = sum(v.numel() * v.element_size() for v in state.values())
    # GFPGANv1.4.pth is 348,632,874 bytes: tensors plus ~60 kB of zip/pickle framing.
    assert 348_500_000 < n_bytes < 348_632_874
    assert sum(1 for k in state if ".noises.noise" in k) == 15


@pytest.mark.slow  # one full-size forward: about 10-20 s on 2 CPU cores
def test_pth_loads_through_the_registry_and_restores(gfpgan_files) -> None:  # type: ignore[no-untyped-def]
    pth, _, state = gfpgan_files
    r = load_restorer("gfpgan-1.4", path=pth)
    assert (r.name, r.architecture, r.input_size, r.license, r.commercial_use) == (
        "gfpgan-1.4",
        "GFPGAN",
        512,
        "Apache-2.0",
        True,
    )
    assert (r.supports_half, r.supports_bfloat16, r.dtype) == (False, True, torch.float32)
    loaded = r.module.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)  # incl. the stored noise maps

    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out = r(crop)
    assert out.shape == (1, 3, 512, 512) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.01  # an image, not a constant


def test_safetensors_and_v13_load_the_same_weights(gfpgan_files) -> None:  # type: ignore[no-untyped-def]
    _, st, state = gfpgan_files
    r = load_restorer("gfpgan-1.3", path=st, dtype=torch.float16)
    assert r.name == "gfpgan-1.3"
    assert r.dtype == torch.float32  # fp16 is not supported by GFPGAN: runs in float32
    loaded = r.module.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_synth_random_gfpgan_has_the_release_layout(gfpgan_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The stand-in weights the GPU tests and the benchmark use: the release's keys and shapes, loadable as
    gfpgan-1.4, and the same file for the same seed."""
    from facefix.demo import synth

    _, _, state = gfpgan_files
    path = synth.random_gfpgan(tmp_path / "a.safetensors", seed=3)
    loaded = load_restorer("gfpgan-1.4", path=path).module.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == {k: tuple(v.shape) for k, v in state.items()}
    again = synth.random_gfpgan(tmp_path / "b.safetensors", seed=3)
    assert path.read_bytes() == again.read_bytes()
