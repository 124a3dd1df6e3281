"""The two packed-word steps of ``facefix.packed`` as one CUDA kernel each (Triton).

Written with torch operations, unpacking and merging a frame's region takes some sixty small kernels; the
thread that feeds the GPU spends longer launching them than the GPU spends running them. Each kernel here
does the whole step in one pass. They compute exactly what the torch versions in ``facefix.packed`` do
(same samples, same rounding, same untouched bits; tested against them on the GPU). Imported only for
CUDA tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["unpack_unit", "merge_unit"]

_BLOCK = 1024


@triton.jit
def _native(u, big: tl.constexpr):
    """A word as the file stores it -> its value (byte-swapped for a big-endian file); its own inverse."""
    if big:
        u = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
    return u


@triton.jit
def _unpack_unit_kernel(raw_ptr, out_ptr, table_ptr, n, w, words_per_line, first_sample, channels,
                        big: tl.constexpr, BLOCK: tl.constexpr):
    # One output value (row, pixel, colour channel) per lane: out is (rows, w, 3) float32.
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = e < n
    row = e // (w * 3)
    rest = e - row * (w * 3)
    px = rest // 3
    sample = first_sample + px * channels + (rest - px * 3)  # in the line
    word = sample // 3
    raw = tl.load(raw_ptr + row * words_per_line + word, mask=live, other=0)
    u = _native(raw.to(tl.uint32, bitcast=True), big)
    shift = (22 - 10 * (sample - word * 3)).to(tl.uint32)
    k = ((u >> shift) & 1023).to(tl.int32)
    tl.store(out_ptr + e, tl.load(table_ptr + k, mask=live, other=0.0), mask=live)


@triton.jit
def _merge_kernel(raw_ptr, pasted_ptr, alpha_ptr, n, span, words_per_line, first_word, first_sample, w, channels,
                  p_row, p_col, p_chan, a_row, a_col, big: tl.constexpr, BLOCK: tl.constexpr):
    # One word of the region's columns per lane, rewritten in place.
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = e < n
    row = e // span
    word = first_word + (e - row * span)
    ptr = raw_ptr + row * words_per_line + word
    raw = tl.load(ptr, mask=live, other=0)
    value = _native(raw.to(tl.uint32, bitcast=True), big)
    for pos in tl.static_range(3):
        s = word * 3 + pos - first_sample  # sample of the region
        s_ok = s >= 0
        s = tl.where(s_ok, s, 0)
        px = s // channels
        chan = s - px * channels
        inside = live & s_ok & (px < w) & (chan < 3)  # colour samples of region pixels (alpha is never changed)
        a = tl.load(alpha_ptr + row * a_row + px * a_col, mask=inside, other=0.0)
        touched = inside & (a > 0)
        v = tl.load(pasted_ptr + row * p_row + px * p_col + chan * p_chan, mask=touched, other=0.0).to(tl.float64)
        v = tl.where(v == v, v, 0.0)  # NaN -> 0
        v = tl.minimum(tl.maximum(v, 0.0), 1.0)  # +Inf -> 1
        x = v * 1023.0
        f = tl.floor(x)
        k = f.to(tl.int32)
        frac = x - f
        k += ((frac > 0.5) | ((frac == 0.5) & ((k & 1) == 1))).to(tl.int32)  # half to even, as rint
        bits = tl.where(touched, tl.full([BLOCK], 1023, tl.uint32), tl.zeros([BLOCK], tl.uint32)) << (22 - 10 * pos)
        value = (value & ~bits) | ((k.to(tl.uint32) << (22 - 10 * pos)) & bits)
    tl.store(ptr, _native(value, big).to(tl.int32, bitcast=True), mask=live)


def unpack_unit(raw: torch.Tensor, table: torch.Tensor, x0: int, x1: int, channels: int, big: bool,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, words per line) int32 raw words -> the colour of pixels [x0, x1) as (rows, x1 - x0, 3) float32
    values of ``table`` (indexed by 10-bit sample), in ``out`` (contiguous, that shape) if given."""
    rows, words_per_line = raw.shape
    if out is None:
        out = torch.empty((rows, x1 - x0, 3), dtype=torch.float32, device=raw.device)
    elif out.shape != (rows, x1 - x0, 3) or not out.is_contiguous():
        raise ValueError(f"unpack_unit: out must be a contiguous {(rows, x1 - x0, 3)} array, not {tuple(out.shape)}")
    n = out.numel()
    if n:
        _unpack_unit_kernel[(triton.cdiv(n, _BLOCK),)](raw, out, table, n, x1 - x0, words_per_line, x0 * channels,
                                                        channels, big=big, BLOCK=_BLOCK)
    return out


def merge_unit(raw: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor, x0: int, x1: int, channels: int,
               big: bool) -> None:
    """Round ``pasted`` (h, w, 3 float, any strides) to 10-bit samples and write those whose ``alpha`` (h, w)
    is above 0 into the words of pixels [x0, x1) of ``raw`` (rows, words per line, int32) in place."""
    rows, words_per_line = raw.shape
    first_word, last_word = x0 * channels // 3, -(-x1 * channels // 3)
    span = last_word - first_word
    n = rows * span
    if n:
        _merge_kernel[(triton.cdiv(n, _BLOCK),)](
            raw, pasted, alpha, n, span, words_per_line, first_word, x0 * channels, x1 - x0, channels,
            pasted.stride(0), pasted.stride(1), pasted.stride(2), alpha.stride(0), alpha.stride(1),
            big=big, BLOCK=_BLOCK)
