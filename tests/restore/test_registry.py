"""Restorer registry and descriptor: names, passthrough, lazy external module, ranges, dtypes, errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from facefix.errors import InputError, ModelError, SettingsError
from facefix.params import RESTORER_CHOICES
from facefix.restore import RESTORERS, Restorer, compute_dtype, load_restorer, restorer_names
from facefix.restore.spandrel_restorers import build_restorer


class _Recorder(nn.Module):
    """Stands in for a network: returns its input and records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[float, float, torch.dtype, dict]] = []

    def forward(self, x: torch.Tensor, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append((x.min().item(), x.max().item(), x.dtype, kwargs))
        return x + self.anchor.to(x.dtype), None


def _crops(n: int = 2, size: int = 512) -> torch.Tensor:
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    x[:, :, 0, 0] = 0.0
    x[:, :, 0, 1] = 1.0
    return x


def test_names_match_the_parameter_schema() -> None:
    assert set(restorer_names()) == set(RESTORER_CHOICES)
    assert RESTORERS["codeformer"].commercial_use is False
    assert RESTORERS["gfpgan-1.4"].architecture == "GFPGAN"
    assert RESTORERS["passthrough"].needs_file is False


def test_passthrough_returns_crops_unchanged() -> None:
    r = load_restorer("passthrough")
    x = _crops(3) * 1.5 - 0.2  # even out-of-range values come back as given
    y = r(x, fidelity=0.9)
    assert y is not x and torch.equal(y, x)
    half = x.half()
    assert torch.equal(r(half), half)
    assert (r.name, r.architecture, r.input_size, r.commercial_use) == ("passthrough", "Identity", 512, True)


@pytest.mark.parametrize("architecture", ["GFPGAN", "RestoreFormer", "CodeFormer"])
def test_models_see_minus_one_to_one_and_results_come_back_in_zero_one(architecture: str) -> None:
    rec = _Recorder()
    r = build_restorer("t", architecture, rec, license="MIT", commercial_use=True)
    x = _crops()
    y = r(x, fidelity=0.3)
    lo, hi, dtype, kwargs = rec.seen[-1]
    assert (lo, hi, dtype) == (-1.0, 1.0, torch.float32)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)  # (2x - 1 + 1) / 2 round trip
    if architecture == "GFPGAN":
        assert kwargs["randomize_noise"] is False
    if architecture == "CodeFormer":
        assert kwargs["weight"] == 0.3  # fidelity reaches CodeFormer's w


def test_codeformer_runs_float32_whatever_is_asked() -> None:
    rec = _Recorder()
    r = build_restorer("codeformer", "CodeFormer", rec, license="S-Lab", commercial_use=False)
    for asked in (torch.float16, torch.bfloat16):
        moved = r.to("cpu", asked)
        assert moved.dtype == torch.float32 and rec.anchor.dtype == torch.float32
        out = moved(_crops(1).to(asked))
        assert rec.seen[-1][2] == torch.float32
        assert out.dtype == asked  # handed back in the caller's dtype


def test_gfpgan_precision_facts() -> None:
    rec = _Recorder()
    r = build_restorer("g", "GFPGAN", rec, license="Apache-2.0", commercial_use=True)
    assert (r.supports_half, r.supports_bfloat16) == (False, True)
    assert r.to("cpu", torch.float16).dtype == torch.float32
    bf = r.to("cpu", torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and rec.anchor.dtype == torch.bfloat16
    assert compute_dtype(torch.float16, True, False) == torch.float16
    with pytest.raises(SettingsError):
        compute_dtype(torch.int8, True, True)


def test_call_validates_inputs() -> None:
    r = build_restorer("g", "GFPGAN", _Recorder(), license="MIT", commercial_use=True)
    with pytest.raises(InputError, match="512x512"):
        r(torch.rand(1, 3, 256, 256))
    with pytest.raises(InputError, match=r"\[N, 3, 512, 512\]"):
        r(torch.rand(3, 512, 512))
    with pytest.raises(InputError, match="float"):
        r(torch.zeros(1, 3, 512, 512, dtype=torch.uint8))
    with pytest.raises(SettingsError, match="--fidelity"):
        r(torch.rand(1, 3, 512, 512), fidelity=1.5)
    empty = r(torch.zeros(0, 3, 512, 512))
    assert empty.shape == (0, 3, 512, 512)


def test_unknown_and_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    with pytest.raises(ModelError, match="unknown restorer 'gfpgan-2'"):
        load_restorer("gfpgan-2")
    with pytest.raises(ModelError) as info:
        load_restorer("gfpgan-1.4")
    assert "gfpgan-1.4 is not installed: run `facefix models pull gfpgan-1.4`" in str(info.value)


def test_not_a_model_path_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_text("weights? no")
    with pytest.raises(ModelError, match="junk.pth"):
        load_restorer("restoreformer", path=junk)


def test_wrong_architecture_path_is_refused(tmp_path: Path) -> None:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    tiny = RestoreFormer(
        n_embed=32, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32
    )
    path = tmp_path / "rf.pth"
    torch.save({"params": tiny.state_dict()}, path)
    with pytest.raises(ModelError, match="is a RestoreFormer model, not GFPGAN"):
        load_restorer("gfpgan-1.4", path=path)
    # The same file is fine as what it is.
    assert load_restorer("restoreformer", path=path).architecture == "RestoreFormer"


def test_realesrgan_face_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "facefix.restore.realesrgan_face", None)  # import now fails
    with pytest.raises(ModelError, match="realesrgan-face: its module facefix.restore.realesrgan_face"):
        load_restorer("realesrgan-face")


def test_realesrgan_face_is_loaded_lazily_from_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_realesrgan_face(device, dtype):  # type: ignore[no-untyped-def]
        calls.append((device, dtype))
        return Restorer(
            "realesrgan-face", "RealESRGAN", nn.Identity(), lambda m, x, f: x, "BSD-3-Clause", True
        )

    fake = types.ModuleType("facefix.restore.realesrgan_face")
    fake.load_realesrgan_face = load_realesrgan_face  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "facefix.restore.realesrgan_face", fake)
    r = load_restorer("realesrgan-face", device="cpu", dtype=torch.bfloat16)
    assert r.name == "realesrgan-face"
    assert calls == [("cpu", torch.bfloat16)]
