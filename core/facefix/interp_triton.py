"""Interpolation weights shared by the Triton kernels (align, stabiliser blend): one definition, so every
kernel weighs its taps exactly as torch's bicubic does."""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["cubic_weights", "KEYS_A"]

KEYS_A = tl.constexpr(-0.75)  # torch's bicubic (Keys) coefficient


@triton.jit
def cubic_weights(t):
    """Keys' cubic convolution weights of the four taps around a point at fraction ``t``."""
    u = t + 1.0
    w0 = ((KEYS_A * u - 5.0 * KEYS_A) * u + 8.0 * KEYS_A) * u - 4.0 * KEYS_A
    w1 = ((KEYS_A + 2.0) * t - (KEYS_A + 3.0)) * t * t + 1.0
    v = 1.0 - t
    w2 = ((KEYS_A + 2.0) * v - (KEYS_A + 3.0)) * v * v + 1.0
    u = v + 1.0
    w3 = ((KEYS_A * u - 5.0 * KEYS_A) * u + 8.0 * KEYS_A) * u - 4.0 * KEYS_A
    return w0, w1, w2, w3
