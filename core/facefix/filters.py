"""Small image filters shared by the stages, written to give the same bits whatever the batch or device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur"]


def _kernel(sigma: float) -> list[float]:
    r = max(1, math.ceil(2.5 * sigma))
    w = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)]
    s = sum(w)
    return [v / s for v in w]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with replicated borders.

    Written as a fixed-order sum of shifted slices, so every output pixel is computed the same way
    whatever the batch size or device (convolution back-ends choose algorithms by shape).
    """
    if sigma <= 0:
        return x
    k = _kernel(sigma)
    r = len(k) // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (r, r, 0, 0), mode="replicate")
    acc = xp[..., :, 0:w] * k[0]
    for i in range(1, len(k)):
        acc = acc + xp[..., :, i:i + w] * k[i]
    yp = F.pad(acc, (0, 0, r, r), mode="replicate")
    out = yp[..., 0:h, :] * k[0]
    for i in range(1, len(k)):
        out = out + yp[..., i:i + h, :] * k[i]
    return out
