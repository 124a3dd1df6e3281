"""Frames as the core sees them: float32 pixels plus the format they came from.

Convention: ``pixels`` is (H, W, C) float32, row 0 at the top, channels in ``format.channel_names``
order with R, G, B first, then A, then any extra channels as the file stored them. Float files keep
their values as stored (negative, above 1, NaN and Inf included); integer files are normalised so
that 0 -> 0.0 and the largest code of their bit depth -> 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError

__all__ = ["Frame", "FrameFormat", "PixelType", "PIXEL_TYPES", "native_bits"]

PixelType = Literal["uint8", "uint16", "uint32", "half", "float"]
PIXEL_TYPES: tuple[str, ...] = ("uint8", "uint16", "uint32", "half", "float")
_NATIVE_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "half": 16, "float": 32}


def native_bits(pixel_type: str) -> int:
    """Bits of one sample of ``pixel_type`` in memory (a 10-bit DPX is held as uint16)."""
    return _NATIVE_BITS[pixel_type]


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
    """One frame: its number in the clip, float32 (H, W, C) pixels and the format it came from."""

    number: int
    pixels: np.ndarray
    format: FrameFormat

    def __post_init__(self) -> None:
        px = self.pixels
        if not isinstance(px, np.ndarray) or px.ndim != 3:
            raise InputError(f"frame {self.number}: pixels must be an (H, W, C) array")
        if px.dtype != np.float32:
            object.__setattr__(self, "pixels", px.astype(np.float32))
        if px.shape[2] != len(self.format.channel_names):
            raise InputError(
                f"frame {self.number}: {px.shape[2]} channels but the format names "
                f"{len(self.format.channel_names)} ({', '.join(self.format.channel_names)})"
            )

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) view of the colour channels."""
        return self.pixels[..., :3]

    @property
    def alpha(self) -> np.ndarray | None:
        """(H, W) view of the alpha channel, or None."""
        i = self.format.alpha_index
        return None if i is None else self.pixels[..., i]
