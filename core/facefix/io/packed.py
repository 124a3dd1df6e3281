"""10-bit DPX words on the device: the region a restore needs unpacked to samples, and the result merged back.

A plain 10-bit DPX (``facefix.io.dpx``) holds three samples to a 32-bit word, each line on whole words. The
runner keeps such frames as the file's words: only the rows of the face region travel to the device (as they
are, in the file's byte order), only the words of its columns are unpacked there, and the merge changes only
the bits of samples whose pixel the matte touches. Every other bit of the file goes back unchanged.

Words are handled as int64 (their unsigned value), so shifts and masks never meet a sign bit; they travel as
int32 holding the same four bytes. ``unpack_unit`` and ``merge_unit`` are the two steps the pipeline takes: on
CUDA each is one kernel (``facefix.packed_triton``), elsewhere the torch functions below.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..tensors import kernels_for
from .dpx import PackedLayout

__all__ = ["PackedRegion", "unpack_unit", "merge_unit", "unpack_region", "merge_region", "unit_of_samples",
           "samples_of_unit"]

_SHIFTS = (22, 12, 2)  # first, second and third sample of a word, from the top (filled method A)
_SAMPLE = 1023
_WORD = 0xFFFFFFFF


@dataclass(frozen=True)
class PackedRegion:
    """Pixels [x0, x1) of the rows a region spans, in the words of those rows: words [first_word,
    last_word) hold them, from sample ``skip`` of the first word on."""

    x0: int
    x1: int
    layout: PackedLayout

    @property
    def first_word(self) -> int:
        return self.x0 * self.layout.channels // 3

    @property
    def last_word(self) -> int:
        return -(-self.x1 * self.layout.channels // 3)

    @property
    def skip(self) -> int:
        return self.x0 * self.layout.channels - 3 * self.first_word


def _values(raw: torch.Tensor, big_endian: bool) -> torch.Tensor:
    """int32 words holding the file's bytes -> their unsigned values as int64."""
    w = raw.to(torch.int64) & _WORD
    if big_endian:
        w = ((w & 0xFF) << 24) | ((w & 0xFF00) << 8) | ((w >> 8) & 0xFF00) | (w >> 24)
    return w


def _raw(values: torch.Tensor, big_endian: bool) -> torch.Tensor:
    """Unsigned int64 word values -> int32 words holding the bytes the file stores."""
    w = values
    if big_endian:
        w = ((w & 0xFF) << 24) | ((w & 0xFF00) << 8) | ((w >> 8) & 0xFF00) | (w >> 24)
    return (w - ((w >> 31) << 32)).to(torch.int32)  # the same 32 bits, as a signed value


def unpack_region(raw: torch.Tensor, region: PackedRegion) -> torch.Tensor:
    """(rows, words per line) int32 raw words -> the region's (rows, x1 - x0, C) int64 samples (0..1023)."""
    words = _values(raw[:, region.first_word : region.last_word], region.layout.big_endian)
    samples = torch.stack([(words >> s) & _SAMPLE for s in _SHIFTS], dim=-1).flatten(1)
    c = region.layout.channels
    return samples[:, region.skip : region.skip + (region.x1 - region.x0) * c].unflatten(1, (-1, c))


def merge_region(raw: torch.Tensor, samples: torch.Tensor, changed: torch.Tensor, region: PackedRegion) -> None:
    """Write ``samples`` (rows, x1 - x0, C) into ``raw``'s words in place, only where ``changed`` (same shape,
    bool): every bit of an unchanged sample, and the two unused bits of each word, stay as they were."""
    rows = samples.shape[0]
    span = region.last_word - region.first_word
    tail = 3 * span - region.skip - samples.shape[1] * samples.shape[2]

    def to_words(per_sample: torch.Tensor) -> torch.Tensor:  # (rows, x1 - x0, C) -> (rows, span, 3)
        return F.pad(per_sample.flatten(1), (region.skip, tail)).view(rows, span, 3)

    new, where = to_words(samples), to_words(changed.to(torch.int64))
    packed = torch.zeros((rows, span), dtype=torch.int64, device=raw.device)
    mask = torch.zeros_like(packed)
    for i, s in enumerate(_SHIFTS):
        packed |= new[..., i] << s
        mask |= (where[..., i] * _SAMPLE) << s
    big = region.layout.big_endian
    old = _values(raw[:, region.first_word : region.last_word], big)
    raw[:, region.first_word : region.last_word] = _raw((old & ~mask) | (packed & mask), big)


@functools.lru_cache(maxsize=8)
def _unit_table(device: torch.device) -> torch.Tensor:
    # k / 1023 rounded once, as the CPU reader's table gives it (facefix.io.frames.unit_from_codes).
    return torch.from_numpy((np.arange(_SAMPLE + 1, dtype=np.float64) / _SAMPLE).astype(np.float32)).to(device)


def unit_of_samples(samples: torch.Tensor) -> torch.Tensor:
    """10-bit samples -> float32 in [0, 1]: the values the CPU reader gives for the same file."""
    return _unit_table(samples.device)[samples]


def samples_of_unit(values: torch.Tensor) -> torch.Tensor:
    """float -> 10-bit samples (int64): clamped to [0, 1] (NaN -> 0, +Inf -> 1023) and rounded half to even
    in float64, as the CPU writer rounds (facefix.io.frames.codes_from_unit)."""
    v = torch.nan_to_num(values.to(torch.float64), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    return torch.round(v * _SAMPLE).to(torch.int64)


def unpack_unit(raw: torch.Tensor, region: PackedRegion, out: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, words per line) int32 raw words -> the region's colour as (rows, x1 - x0, 3) float32 in [0, 1]
    (written into ``out``, a contiguous array of that shape, if given)."""
    if kernels_for(raw):
        from .packed_triton import unpack_unit as kernel

        return kernel(raw, _unit_table(raw.device), region.x0, region.x1, region.layout.channels,
                      region.layout.big_endian, out=out)
    unit = unit_of_samples(unpack_region(raw, region)[..., :3])
    return out.copy_(unit) if out is not None else unit


def merge_unit(raw: torch.Tensor, rgb: torch.Tensor, alpha: torch.Tensor, region: PackedRegion) -> None:
    """The region's new colour ``rgb`` ((rows, x1 - x0, 3) float, any strides) rounded to 10-bit samples and
    written into ``raw``'s words in place where ``alpha`` (rows, x1 - x0) is above 0; nothing else changes."""
    if kernels_for(raw):
        from .packed_triton import merge_unit as kernel

        kernel(raw, rgb, alpha, region.x0, region.x1, region.layout.channels, region.layout.big_endian)
        return
    touched = alpha > 0
    samples = unpack_region(raw, region)
    colour = samples[..., :3]
    colour.copy_(torch.where(touched[..., None], samples_of_unit(rgb), colour))
    changed = torch.zeros_like(samples, dtype=torch.bool)
    changed[..., :3] = touched[..., None]
    merge_region(raw, samples, changed, region)
