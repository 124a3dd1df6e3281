"""Whole-frame upscaling after the face pass: Real-ESRGAN converted from its ncnn release, tiled.

``load_upscaler(name, scale, device, dtype)`` returns an ``Upscaler`` descriptor;
``upscale_tiled(upscaler, frames)`` runs it over frames of any size.
"""

from __future__ import annotations

from .realesrgan import UPSCALERS, Upscaler, UpscalerName, converted_state_dict, load_upscaler
from .tile import tile_spans, upscale_tiled

__all__ = [
    "UPSCALERS",
    "Upscaler",
    "UpscalerName",
    "converted_state_dict",
    "load_upscaler",
    "tile_spans",
    "upscale_tiled",
]
