"""The ``realesrgan-face`` restorer: x4plus on the 4x-reduced aligned crop, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facefix.errors import InputError, SettingsError
from facefix.restore.base import Restorer
from facefix.restore.realesrgan_face import _build, load_realesrgan_face
from facefix.upscale import load_upscaler

torch.set_num_threads(2)


def _crop() -> torch.Tensor:
    from skimage import data

    img = data.astronaut().astype(np.float32) / 255.0  # 512 x 512, a real face
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def test_restores_a_real_face() -> None:
    # One call only: x4plus on 128 x 128 costs ~8 CPU-seconds.
    r = load_realesrgan_face()
    assert isinstance(r, Restorer)
    assert (r.name, r.input_size, r.license, r.commercial_use) == (
        "realesrgan-face",
        512,
        "BSD-3-Clause",
        True,
    )
    assert r.supports_half and r.supports_bfloat16 and r.architecture == "RealESRGAN-x4plus"
    crop = _crop()
    a = r(crop)
    assert a.shape == (1, 3, 512, 512) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    # It is the same picture: close to the crop at low frequencies (32 px blocks)...
    low = (F.avg_pool2d(a, 32) - F.avg_pool2d(crop, 32)).abs().max()
    assert float(low) < 0.06
    # ...and its detail is rebuilt, not copied: no nearer to the crop than a plain 4x resample.
    small = F.interpolate(crop, size=128, mode="bilinear", antialias=True)
    plain = F.interpolate(small, size=512, mode="bicubic").clamp(0, 1)
    assert float((a - crop).abs().mean()) < 1.5 * float((plain - crop).abs().mean())
    assert float((a - plain).abs().mean()) > 1e-3


def test_two_calls_identical() -> None:
    # The same code path around the cheap compact net (the x4plus pair runs in the GPU test).
    r = _build(load_upscaler("animevideov3", 4))
    crop = _crop()
    a = r(crop)
    b = r(crop.clone(), fidelity=0.9)  # fidelity has no effect on this model
    assert torch.equal(a, b)
    assert not torch.equal(a, r(crop.flip(-1)))  # it does look at its input


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_calls_identical_cuda() -> None:
    r = load_realesrgan_face(device="cuda")
    crop = _crop().repeat(4, 1, 1, 1).cuda()
    a, b = r(crop), r(crop)
    assert torch.equal(a, b)
    cpu_ref = load_realesrgan_face()(crop[:1].cpu())
    assert float((a[:1].cpu() - cpu_ref).abs().max()) < 2e-2  # TF32 convolutions on the GPU


def test_bad_input() -> None:
    r = _build(load_upscaler("animevideov3", 4))
    with pytest.raises(InputError, match="realesrgan-face"):
        r(torch.zeros(1, 3, 256, 256))
    with pytest.raises(SettingsError, match="--fidelity"):
        r(torch.zeros(1, 3, 512, 512), fidelity=2.0)
    assert r(torch.zeros(0, 3, 512, 512)).shape == (0, 3, 512, 512)
    moved = r.to(dtype=torch.bfloat16)  # (not run: bf16 convolutions are very slow on CPU)
    assert moved.dtype == torch.bfloat16 and next(moved.module.parameters()).dtype == torch.bfloat16
