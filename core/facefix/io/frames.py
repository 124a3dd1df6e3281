"""Frames as the core sees them: float32 pixels plus the format they came from.

Convention: ``pixels`` is (H, W, C) float32, row 0 at the top, channels in ``format.channel_names``
order with R, G, B first, then A, then any extra channels as the file stored them. Float files keep
their values as stored (negative, above 1, NaN and Inf included); integer files are normalised so
that 0 -> 0.0 and the largest code of their bit depth -> 1.0 (``unit_from_codes``).

A frame read with ``codes=True`` from an 8- or 16-bit integer file keeps the file's integer codes
instead (``pixels.dtype`` is then ``format.pixel_type``: uint8 or uint16). The whole-shot runner reads
that way: only the face regions are ever converted to float, and every other pixel goes back to the
file exactly as it came, without two full-frame conversions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError

__all__ = ["Frame", "FrameFormat", "PixelType", "PIXEL_TYPES", "native_bits", "unit_from_codes", "codes_from_unit",
           "CODE_TYPES", "NUMPY_INT"]

PixelType = Literal["uint8", "uint16", "uint32", "half", "float"]
PIXEL_TYPES: tuple[str, ...] = ("uint8", "uint16", "uint32", "half", "float")
_NATIVE_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "half": 16, "float": 32}
# numpy type of each integer sample type.
NUMPY_INT = {"uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32}
# Integer sample types a Frame may hold as codes (``codes=True`` reads).
CODE_TYPES: tuple[str, ...] = ("uint8", "uint16")


def native_bits(pixel_type: str) -> int:
    """Bits of one sample of ``pixel_type`` in memory (a 10-bit DPX is held as uint16)."""
    return _NATIVE_BITS[pixel_type]


@functools.lru_cache(maxsize=8)
def _unit_table(pixel_type: str, bits: int) -> np.ndarray:
    """float32 [0, 1] value of every full-range code of ``pixel_type`` snapped to ``bits``: the float64
    route below, computed once, so converting a frame is one table lookup per sample."""
    native_max = 2 ** native_bits(pixel_type) - 1
    stored_max = float(2**bits - 1)
    codes = np.arange(native_max + 1, dtype=np.float64)
    return (np.rint(codes * (stored_max / native_max)) / stored_max).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _widen_table(pixel_type: str, bits: int) -> np.ndarray:
    """Full-range code of ``pixel_type`` for every ``bits``-deep code (what a file writer narrows back)."""
    native_max = float(2 ** native_bits(pixel_type) - 1)
    codes = np.arange(2**bits, dtype=np.float64)
    return np.rint(codes * (native_max / (2**bits - 1))).astype(NUMPY_INT[pixel_type])


def unit_from_codes(data: np.ndarray, bits: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Integer codes (uint8/16/32, full range of their type) -> [0, 1] float32, snapped to the grid of
    the stored depth ``bits`` (10-bit DPX: k/1023; None: the type's full width).

    8- and 16-bit codes are divided in float32: k / (2**n - 1) is then correctly rounded, the same value
    the float64 route gives, at a fraction of the memory traffic; codes of a shallower stored depth (10-bit
    in 16) are looked up in a table of that route's values. ``out``: a float32 array to fill.
    """
    pixel_type = data.dtype.name
    native_max = 2 ** native_bits(pixel_type) - 1
    bits = bits or native_bits(pixel_type)
    if bits >= native_bits(pixel_type) and pixel_type in CODE_TYPES:
        return np.divide(data, np.float32(native_max), dtype=np.float32, out=out)
    if pixel_type in CODE_TYPES:
        values = _unit_table(pixel_type, bits)[data]
        if out is None:
            return values
        np.copyto(out, values)
        return out
    d = data.astype(np.float64)
    if bits < native_bits(pixel_type):
        stored_max = float(2**bits - 1)
        d = np.rint(d * (stored_max / native_max)) / stored_max
    else:
        d = d / native_max
    if out is None:
        return d.astype(np.float32)
    np.copyto(out, d, casting="same_kind")
    return out


def codes_from_unit(pixels: np.ndarray, pixel_type: str, bits: int | None = None) -> np.ndarray:
    """Clamp to [0, 1] and round to integer codes of ``bits`` (None: the type's full width), stored in
    ``pixel_type``'s width.

    NaN -> 0, +Inf -> the top code. 8-bit codes are computed in float32 in one buffer (fmax/fmin also
    map NaN to the bound): a value within a float32 rounding of a half code may land on the other
    neighbour, never further. Deeper codes (up to 16 bits) are exactly the float64 route's: the float32
    product can only round differently where it lands exactly on a half code, and those few are redone in
    float64. 32-bit codes go through float64.
    """
    bits = bits or native_bits(pixel_type)
    stored_max = float(2**bits - 1)
    native_max = float(2 ** native_bits(pixel_type) - 1)
    if pixel_type in CODE_TYPES:
        scaled = np.multiply(pixels, np.float32(stored_max), dtype=np.float32)
        np.fmax(scaled, np.float32(0.0), out=scaled)
        np.fmin(scaled, np.float32(stored_max), out=scaled)
        exact_halves = not (pixel_type == "uint8" and bits == 8)  # 8-bit: within a code is enough
        rounded = np.rint(scaled, out=None if exact_halves else scaled)
        if exact_halves:
            np.subtract(scaled, rounded, out=scaled)
            halves = np.flatnonzero(np.abs(scaled, out=scaled) == 0.5)
            if halves.size:
                exact = np.nan_to_num(pixels.reshape(-1)[halves].astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
                rounded.reshape(-1)[halves] = np.rint(np.clip(exact, 0.0, 1.0) * stored_max)
        codes = rounded.astype(NUMPY_INT[pixel_type])
        return _widen_table(pixel_type, bits)[codes] if bits < native_bits(pixel_type) else codes
    v = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    codes64 = np.rint(np.clip(v, 0.0, 1.0) * stored_max)
    if bits < native_bits(pixel_type):
        codes64 = np.rint(codes64 * (native_max / stored_max))  # the writer takes full-range codes
    return codes64.astype(NUMPY_INT[pixel_type])


@dataclass(frozen=True)
class FrameFormat:
    """What a frame's file looked like: size, channels, sample type and the file's own attributes.

    ``channel_names`` name the channels of ``Frame.pixels`` (so a grey file reads as R, G, B, and
    ``grey_channel`` keeps the file's original name, e.g. ``"Y"``, so that writing gives grey again).
    ``bits_per_sample`` is the stored depth (10 for 10-bit DPX, whose ``pixel_type`` is uint16).
    ``attributes`` are the OpenImageIO spec attributes of the source (compression, metadata), with
    their OIIO type names in ``attribute_types``. ``channel_pixel_types`` is set only where channels
    differ in type (an EXR with half RGBA and a float Z). ``file_format`` is OIIO's format name
    ("openexr", "dpx", ...) or "" for frames made in memory. ``data_window`` is (x, y, w, h) of the
    pixels and ``display_window`` (x, y, w, h) of the full frame, equal unless the file had overscan
    or a crop.
    """

    width: int
    height: int
    channel_names: tuple[str, ...] = ("R", "G", "B")
    pixel_type: PixelType = "float"
    bits_per_sample: int = 32
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    attribute_types: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    file_format: str = ""
    grey_channel: str | None = None
    channel_pixel_types: tuple[str, ...] | None = None
    data_window: tuple[int, int, int, int] | None = None
    display_window: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.pixel_type not in PIXEL_TYPES:
            raise InputError(f"unsupported pixel type {self.pixel_type!r}; expected one of {PIXEL_TYPES}")
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"frame size must be positive, got {self.width}x{self.height}")
        if len(self.channel_names) < 1:
            raise InputError("a frame needs at least one channel")

    @property
    def is_float(self) -> bool:
        return self.pixel_type in ("half", "float")

    @property
    def alpha_index(self) -> int | None:
        """Index of the alpha channel ('A') in ``channel_names``, or None."""
        for i, name in enumerate(self.channel_names):
            if name in ("A", "a", "Alpha", "alpha"):
                return i
        return None

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    @property
    def is_grey(self) -> bool:
        return self.grey_channel is not None

    @property
    def compression(self) -> str | None:
        value = self.attributes.get("compression")
        return str(value) if value is not None else None

    @classmethod
    def for_pixels(cls, pixels: np.ndarray, pixel_type: PixelType = "float") -> FrameFormat:
        """A plain format for pixels made in memory: R, G, B (+ A for a 4th channel, then X1, X2...)."""
        if pixels.ndim != 3:
            raise InputError(f"frame pixels must be (H, W, C), got shape {pixels.shape}")
        h, w, c = pixels.shape
        names = ["R", "G", "B", "A"][: min(c, 4)] + [f"X{i}" for i in range(1, c - 3)]
        return cls(width=w, height=h, channel_names=tuple(names), pixel_type=pixel_type,
                   bits_per_sample=native_bits(pixel_type))


@dataclass(frozen=True)
class Frame:
    """One frame: its number in the clip, (H, W, C) pixels and the format it came from.

    ``pixels`` is float32, or the file's integer codes when its dtype is ``format.pixel_type`` (uint8 or
    uint16; see the module notes); any other dtype is converted to float32.
    """

    number: int
    pixels: np.ndarray
    format: FrameFormat

    def __post_init__(self) -> None:
        px = self.pixels
        if not isinstance(px, np.ndarray) or px.ndim != 3:
            raise InputError(f"frame {self.number}: pixels must be an (H, W, C) array")
        if px.dtype != np.float32 and not (px.dtype.name == self.format.pixel_type and px.dtype.name in CODE_TYPES):
            object.__setattr__(self, "pixels", px.astype(np.float32))
        if px.shape[2] != len(self.format.channel_names):
            raise InputError(
                f"frame {self.number}: {px.shape[2]} channels but the format names "
                f"{len(self.format.channel_names)} ({', '.join(self.format.channel_names)})"
            )

    @property
    def is_codes(self) -> bool:
        """True when ``pixels`` holds the file's integer codes rather than float32."""
        return self.pixels.dtype != np.float32

    def unit_pixels(self) -> np.ndarray:
        """``pixels`` as float32 (integer codes normalised as a plain read would)."""
        return unit_from_codes(self.pixels, self.format.bits_per_sample) if self.is_codes else self.pixels

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) view of the colour channels."""
        return self.pixels[..., :3]

    @property
    def alpha(self) -> np.ndarray | None:
        """(H, W) view of the alpha channel, or None."""
        i = self.format.alpha_index
        return None if i is None else self.pixels[..., i]
