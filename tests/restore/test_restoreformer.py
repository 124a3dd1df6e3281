"""RestoreFormer at full size (random init, the release's hyper-parameters and key layout), and a small
RestoreFormer checked against spandrel's own descriptor, which maps [0, 1] <-> [-1, 1] itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from spandrel.architectures.RestoreFormer import RestoreFormer

from facefix.models.archdetect import face_registry
from facefix.restore import load_restorer

if TYPE_CHECKING:
    from .conftest import SaveRelease


@pytest.fixture(scope="module")
def restoreformer_files(
    tmp_path_factory: pytest.TempPathFactory, save_release_files: SaveRelease
) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    torch.manual_seed(5)
    state = RestoreFormer().state_dict()  # spandrel's defaults are the released model's settings
    # The GFPGAN release stores it under "params".
    pth, st = save_release_files(state, tmp_path_factory.mktemp("restoreformer"), "RestoreFormer", "params")
    return pth, st, state


def test_layout_matches_the_release(restoreformer_files) -> None:  # type: ignore[no-untyped-def]
    _, _, state = restoreformer_files
    n_bytes = sum(v.numel() * v.element_size() for v in state.values())
    assert 290_600_000 < n_bytes < 290_785_322  # RestoreFormer.pth is 290,785,322 bytes


def test_safetensors_loads_the_same_weights(restoreformer_files) -> None:  # type: ignore[no-untyped-def]
    _, st, state = restoreformer_files
    r = load_restorer("restoreformer", path=st)
    assert (r.architecture, r.dtype, r.commercial_use) == ("RestoreFormer", torch.float32, True)
    loaded = r.module.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    bf = r.to("cpu", torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and next(r.module.parameters()).dtype == torch.bfloat16


@pytest.mark.slow  # one full-size forward: about 10-20 s on 2 CPU cores
def test_pth_loads_through_the_registry_and_restores(restoreformer_files) -> None:  # type: ignore[no-untyped-def]
    pth, _, _ = restoreformer_files
    r = load_restorer("restoreformer", path=pth)
    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out = r(crop)
    assert out.shape == (1, 3, 512, 512)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.01


def test_agrees_with_spandrels_descriptor(tmp_path: Path) -> None:
    torch.manual_seed(2)
    small = RestoreFormer(
        n_embed=32, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32
    )
    with torch.no_grad():  # keep outputs inside [-1, 1] so clamping does not hide a range error
        small.decoder.conv_out.weight.mul_(0.05)
        small.decoder.conv_out.bias.zero_()
    path = tmp_path / "small.pth"
    torch.save({"params": small.state_dict()}, path)
    ours = load_restorer("restoreformer", path=path)
    theirs = face_registry().load(dict(small.state_dict()))
    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    mine = ours(crop)
    assert 0.05 < mine.mean() < 0.95 and mine.min() > 0 and mine.max() < 1  # no clamping at play
    torch.testing.assert_close(mine, theirs(crop), atol=1e-4, rtol=0)
