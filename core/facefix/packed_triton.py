"""The two packed-word steps of ``facefix.packed`` as one CUDA kernel each (Triton).

Written with torch operations, unpacking and merging a frame's region takes some sixty small kernels; the
thread that feeds the GPU spends longer launching them than the GPU spends running them. Each kernel here
does the whole step in one pass, for every frame of a batch at once: the frames' words lie in one buffer, their
regions' colours in another, and a table of "parts" says where each is. They compute exactly what the torch versions in ``facefix.packed`` do
(same samples, same rounding, same untouched bits; tested against them on the GPU). Imported only for
CUDA tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .tensors import to_device

__all__ = ["unpack_unit", "merge_unit", "unpack_parts", "merge_parts", "Part"]

_BLOCK = 1024


@triton.jit
def _swapped(u):
    """A word's four bytes in the other order (a big-endian file's word -> its value, and back)."""
    return ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)


@triton.jit
def _unpack_unit_kernel(raw_ptr, out_ptr, table_ptr, parts_ptr, BLOCK: tl.constexpr):
    # One output value (row, pixel, colour channel) of one part per lane; program axis 1 is the part. A part's
    # row of ``parts``: its words' first element in raw, rows, words per line, first sample, width, channels,
    # big-endian, and its output's first element in out ((rows, width, 3) float32 there).
    part = parts_ptr + tl.program_id(1) * 8
    raw0 = tl.load(part)
    rows = tl.load(part + 1).to(tl.int32)
    words_per_line = tl.load(part + 2).to(tl.int32)
    first_sample = tl.load(part + 3).to(tl.int32)
    w = tl.load(part + 4).to(tl.int32)
    channels = tl.load(part + 5).to(tl.int32)
    big = tl.load(part + 6) != 0
    out0 = tl.load(part + 7)
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = e < rows * w * 3
    e = tl.where(live, e, 0)
    row = e // tl.maximum(w * 3, 1)
    rest = e - row * (w * 3)
    px = rest // 3
    sample = first_sample + px * channels + (rest - px * 3)  # in the line
    word = sample // 3
    raw = tl.load(raw_ptr + raw0 + row * words_per_line + word, mask=live, other=0)
    u = raw.to(tl.uint32, bitcast=True)
    u = tl.where(big, _swapped(u), u)
    shift = (22 - 10 * (sample - word * 3)).to(tl.uint32)
    k = ((u >> shift) & 1023).to(tl.int32)
    tl.store(out_ptr + out0 + e, tl.load(table_ptr + k, mask=live, other=0.0), mask=live)


@triton.jit
def _merge_kernel(raw_ptr, pasted_ptr, alpha_ptr, parts_ptr, BLOCK: tl.constexpr):
    # One word of a part's columns per lane, rewritten in place; program axis 1 is the part. A part's row of
    # ``parts``: its words' first element in raw, rows, words per line, first word, words per row, first
    # sample, width, channels, big-endian, then its pasted colour's first element and (row, pixel, channel)
    # strides, and its alpha's first element and (row, pixel) strides.
    part = parts_ptr + tl.program_id(1) * 16
    raw0 = tl.load(part)
    rows = tl.load(part + 1).to(tl.int32)
    words_per_line = tl.load(part + 2).to(tl.int32)
    first_word = tl.load(part + 3).to(tl.int32)
    span = tl.load(part + 4).to(tl.int32)
    first_sample = tl.load(part + 5).to(tl.int32)
    w = tl.load(part + 6).to(tl.int32)
    channels = tl.load(part + 7).to(tl.int32)
    big = tl.load(part + 8) != 0
    p0 = tl.load(part + 9)
    p_row = tl.load(part + 10)
    p_col = tl.load(part + 11)
    p_chan = tl.load(part + 12)
    a0 = tl.load(part + 13)
    a_row = tl.load(part + 14)
    a_col = tl.load(part + 15)
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = e < rows * span
    e = tl.where(live, e, 0)
    row = e // tl.maximum(span, 1)
    word = first_word + (e - row * span)
    ptr = raw_ptr + raw0 + row * words_per_line + word
    raw = tl.load(ptr, mask=live, other=0)
    value = raw.to(tl.uint32, bitcast=True)
    value = tl.where(big, _swapped(value), value)
    for pos in tl.static_range(3):
        s = word * 3 + pos - first_sample  # sample of the region
        s_ok = s >= 0
        s = tl.where(s_ok, s, 0)
        px = s // channels
        chan = s - px * channels
        inside = live & s_ok & (px < w) & (chan < 3)  # colour samples of region pixels (alpha is never changed)
        a = tl.load(alpha_ptr + a0 + row * a_row + px * a_col, mask=inside, other=0.0)
        touched = inside & (a > 0)
        v = tl.load(pasted_ptr + p0 + row * p_row + px * p_col + chan * p_chan, mask=touched, other=0.0).to(tl.float64)
        v = tl.where(v == v, v, 0.0)  # NaN -> 0
        v = tl.minimum(tl.maximum(v, 0.0), 1.0)  # +Inf -> 1
        x = v * 1023.0
        f = tl.floor(x)
        k = f.to(tl.int32)
        frac = x - f
        k += ((frac > 0.5) | ((frac == 0.5) & ((k & 1) == 1))).to(tl.int32)  # half to even, as rint
        bits = tl.where(touched, tl.full([BLOCK], 1023, tl.uint32), tl.zeros([BLOCK], tl.uint32)) << (22 - 10 * pos)
        value = (value ^ (value & bits)) | ((k.to(tl.uint32) << (22 - 10 * pos)) & bits)  # (no ~: interpreter)
    value = tl.where(big, _swapped(value), value)
    tl.store(ptr, value.to(tl.int32, bitcast=True), mask=live)


@dataclass(frozen=True)
class Part:
    """One region of a batch's packed words: ``raw`` (rows, words per line) int32, a contiguous view of the
    buffer the words lie in, and pixels [x0, x1) of those rows of a file with ``channels`` samples a pixel."""

    raw: torch.Tensor
    x0: int
    x1: int
    channels: int
    big: bool


def unpack_parts(buffer: torch.Tensor, table: torch.Tensor, parts: Sequence[Part], outs: Sequence[torch.Tensor]) -> None:
    """Each part's colour as (rows, x1 - x0, 3) float32 values of ``table`` (indexed by 10-bit sample), into
    its ``outs`` array (contiguous views of one float32 buffer): all parts in one launch. ``buffer``: the
    int32 buffer the parts' words are views of."""
    if not parts:
        return
    target = outs[0].untyped_storage()
    rows = [[p.raw.storage_offset(), p.raw.shape[0], p.raw.shape[1], p.x0 * p.channels, p.x1 - p.x0, p.channels,
             int(p.big), out.storage_offset()] for p, out in zip(parts, outs)]
    for p, out in zip(parts, outs):
        if (not p.raw.is_contiguous() or p.raw.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr()
                or out.shape != (p.raw.shape[0], p.x1 - p.x0, 3) or not out.is_contiguous()
                or out.untyped_storage().data_ptr() != target.data_ptr()):
            raise ValueError("unpack_parts: each part's words and output must be contiguous views of one buffer each")
    most = max(r[1] * r[4] * 3 for r in rows)
    if most:
        base = torch.as_strided(outs[0], (1,), (1,), 0)  # the output buffer from its first element
        _unpack_unit_kernel[(triton.cdiv(most, _BLOCK), len(rows))](
            torch.as_strided(buffer, (1,), (1,), 0), base, table, to_device(rows, buffer.device, torch.int64),
            BLOCK=_BLOCK)


def merge_parts(buffer: torch.Tensor, parts: Sequence[Part], pasted: Sequence[torch.Tensor],
                alphas: Sequence[torch.Tensor]) -> None:
    """Round each part's ``pasted`` colour ((rows, x1 - x0, 3) float, any strides, all views of one buffer) to
    10-bit samples and write those whose ``alphas`` value ((rows, x1 - x0), views of one buffer) is above 0 into
    its words in place: all parts in one launch."""
    if not parts:
        return
    rows = []
    for p, rgb, alpha in zip(parts, pasted, alphas):
        first_word, last_word = p.x0 * p.channels // 3, -(-p.x1 * p.channels // 3)
        if (not p.raw.is_contiguous() or p.raw.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr()
                or rgb.untyped_storage().data_ptr() != pasted[0].untyped_storage().data_ptr()
                or alpha.untyped_storage().data_ptr() != alphas[0].untyped_storage().data_ptr()
                or rgb.dtype != torch.float32 or alpha.dtype != torch.float32):
            raise ValueError("merge_parts: words, colours and alphas must be views of one buffer each (float32)")
        rows.append([p.raw.storage_offset(), p.raw.shape[0], p.raw.shape[1], first_word, last_word - first_word,
                     p.x0 * p.channels, p.x1 - p.x0, p.channels, int(p.big), rgb.storage_offset(), *rgb.stride(),
                     alpha.storage_offset(), *alpha.stride()])
    most = max(r[1] * r[4] for r in rows)
    if most:
        _merge_kernel[(triton.cdiv(most, _BLOCK), len(rows))](
            torch.as_strided(buffer, (1,), (1,), 0), torch.as_strided(pasted[0], (1,), (1,), 0),
            torch.as_strided(alphas[0], (1,), (1,), 0), to_device(rows, buffer.device, torch.int64), BLOCK=_BLOCK)


def unpack_unit(raw: torch.Tensor, table: torch.Tensor, x0: int, x1: int, channels: int, big: bool,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, words per line) int32 raw words -> the colour of pixels [x0, x1) as (rows, x1 - x0, 3) float32
    values of ``table`` (indexed by 10-bit sample), in ``out`` (contiguous, that shape) if given."""
    rows, _ = raw.shape
    if out is None:
        out = torch.empty((rows, x1 - x0, 3), dtype=torch.float32, device=raw.device)
    elif out.shape != (rows, x1 - x0, 3) or not out.is_contiguous():
        raise ValueError(f"unpack_unit: out must be a contiguous {(rows, x1 - x0, 3)} array, not {tuple(out.shape)}")
    raw = raw.contiguous()
    unpack_parts(raw, table, [Part(raw, x0, x1, channels, big)], [out])
    return out


def merge_unit(raw: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor, x0: int, x1: int, channels: int,
               big: bool) -> None:
    """Round ``pasted`` (h, w, 3 float, any strides) to 10-bit samples and write those whose ``alpha`` (h, w)
    is above 0 into the words of pixels [x0, x1) of ``raw`` (rows, words per line, int32) in place."""
    if not raw.is_contiguous():
        raise ValueError("merge_unit: raw words must be contiguous")
    merge_parts(raw, [Part(raw, x0, x1, channels, big)], [pasted.float()], [alpha.float()])
