"""Colour: the input's colourspace <-> the display-referred sRGB the face models were trained on.

OpenColorIO's built-in CG config does the maths, so FaceFix agrees with Nuke/Resolve set up on the same
config. Only what the models see is converted; the compositor keeps untouched pixels bit-identical.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import SettingsError

__all__ = ["WORKING_SPACE", "OCIO_NAMES", "resolve_colorspace", "ColourTransform", "colour_transform"]

WORKING_SPACE = "sRGB Encoded Rec.709 (sRGB)"

# The --colorspace choices and the OCIO colourspaces they name.
OCIO_NAMES = {
    "srgb": "sRGB Encoded Rec.709 (sRGB)",
    "linear": "Linear Rec.709 (sRGB)",
    "acescg": "ACEScg",
    "rec709": "Gamma 2.4 Encoded Rec.709",
    "raw": None,
}


def resolve_colorspace(choice: str, is_float: bool) -> str:
    """The concrete --colorspace for a source: 'auto' is scene-linear for float files, sRGB otherwise."""
    if choice == "auto":
        return "linear" if is_float else "srgb"
    if choice not in OCIO_NAMES:
        raise SettingsError(f"--colorspace: unknown colourspace {choice!r}")
    return choice


@functools.lru_cache(maxsize=1)
def _config():  # type: ignore[no-untyped-def]
    import PyOpenColorIO as ocio

    return ocio.Config.CreateFromBuiltinConfig("cg-config-latest")


@functools.lru_cache(maxsize=16)
def _processor(src: str, dst: str):  # type: ignore[no-untyped-def]
    return _config().getProcessor(src, dst).getDefaultCPUProcessor()


@dataclass(frozen=True)
class ColourTransform:
    """Forward (input -> working) and inverse (working -> input) conversions of RGB float32 arrays."""

    colorspace: str

    @property
    def is_identity(self) -> bool:
        name = OCIO_NAMES[self.colorspace]
        return name is None or name == WORKING_SPACE

    def to_working(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self._apply(rgb, forward=True, out=out)

    def from_working(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self._apply(rgb, forward=False, out=out)

    def _apply(self, rgb: np.ndarray, forward: bool, out: np.ndarray | None = None) -> np.ndarray:
        """rgb: (..., 3) float32; returns a new float32 array, or ``out`` (C-contiguous float32, may be
        ``rgb`` itself) filled with the result -- e.g. pinned memory about to be uploaded."""
        if out is None:
            out = np.array(rgb, dtype=np.float32, copy=True, order="C")
        elif out is not rgb:
            np.copyto(out, rgb)
        if self.is_identity:
            return out
        name = OCIO_NAMES[self.colorspace]
        src, dst = (name, WORKING_SPACE) if forward else (WORKING_SPACE, name)
        flat = out.reshape(-1, 3)
        _processor(src, dst).applyRGB(flat)
        return out


def colour_transform(colorspace: str) -> ColourTransform:
    if colorspace not in OCIO_NAMES:
        raise SettingsError(f"--colorspace: unknown colourspace {colorspace!r}")
    return ColourTransform(colorspace)
