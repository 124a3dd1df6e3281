"""CodeFormer at full size (random init, the release's hyper-parameters and key layout), loaded through
the registry from .pth and .safetensors; it runs in float32 even when fp16/bf16 is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

from facefix.restore import load_restorer

if TYPE_CHECKING:
    from .conftest import SaveRelease


@pytest.fixture(scope="module")
def codeformer_files(
    tmp_path_factory: pytest.TempPathFactory, save_release_files: SaveRelease
) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    torch.manual_seed(9)
    # The released codeformer.pth: dim 512, 8 heads, 9 layers, codebook 1024, fused at 32..256 px.
    model = CodeFormer(
        dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, connect_list=["32", "64", "128", "256"]
    )
    state = model.state_dict()
    pth, st = save_release_files(state, tmp_path_factory.mktemp("codeformer"), "codeformer", "params_ema")
    return pth, st, state


def test_layout_matches_the_release(codeformer_files) -> None:  # type: ignore[no-untyped-def]
    _, _, state = codeformer_files
    n_bytes = sum(v.numel() * v.element_size() for v in state.values())
    assert 376_300_000 < n_bytes < 376_637_898  # codeformer.pth is 376,637,898 bytes


def test_safetensors_loads_the_same_weights(codeformer_files) -> None:  # type: ignore[no-untyped-def]
    _, st, state = codeformer_files
    r = load_restorer("codeformer", path=st, dtype=torch.float16)
    assert (r.architecture, r.license, r.commercial_use) == ("CodeFormer", "S-Lab License 1.0", False)
    assert (r.supports_half, r.supports_bfloat16, r.dtype) == (False, False, torch.float32)
    loaded = r.module.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.slow  # one full-size forward: about 10-20 s on 2 CPU cores
def test_pth_restores_in_float32_when_bf16_is_asked(codeformer_files) -> None:  # type: ignore[no-untyped-def]
    pth, _, _ = codeformer_files
    r = load_restorer("codeformer", path=pth, dtype=torch.bfloat16)
    assert r.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in r.module.parameters())
    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = r(crop, fidelity=0.7)
    assert out.shape == (1, 3, 512, 512) and out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all() and out.min() >= 0 and out.max() <= 1
    assert out.float().std() > 0.01
