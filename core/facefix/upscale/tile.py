"""Tiled upscaling: large frames through an upscaler one tile at a time, without visible seams.

Each tile is run with ``overlap`` pixels of real image context on every side that has a neighbour,
and only its core is kept (crop, no blending). Image borders are never padded artificially, so
along them a tile sees exactly what the whole-frame pass sees. Away from tile seams the result is
the untiled one; near a seam it differs only by what lies beyond ``overlap`` pixels of context:
nothing for networks whose receptive radius is below ``overlap`` (animevideov3: 18 px), and a
rapidly decaying remainder for the deep RRDBNet: on a real photo cut into 128 px tiles, max
|tiled - whole| for x4plus is 8.7e-2 with 32 px of context (a visible seam), 9.4e-3 with 64 px
(3 8-bit levels at isolated pixels, 99.99th percentile 3e-3) and 2.5e-3 with 96 px. Hence the
per-model default ``Upscaler.tile_overlap`` (64 for the RRDBNet models, 24 for animevideov3);
pass a larger ``overlap`` for stricter agreement. The tests measure it.

Range: the networks are defined on display-referred RGB in [0, 1]. The caller (the pipeline's
``to_working`` stage) passes display-referred frames; values outside [0, 1] (scene-linear
highlights, negative gamut excursions) are split off before the network, upscaled bilinearly and
added back, so HDR values survive the upscale instead of being clipped (their detail is not
enhanced). Non-finite values are replaced (NaN and -inf by 0, +inf by 1), as ``Upscaler`` does.

Convention: images are (N, 3, H, W); output pixel (X, Y) covers input area
[X/s, (X+1)/s) x [Y/s, (Y+1)/s). Tiles are batched over N (all frames of a batch share a tile).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, SettingsError

__all__ = ["tile_spans", "upscale_tiled"]


def tile_spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into ceil(length / tile) near-equal spans (no sliver at the end)."""
    n = max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:])]


def upscale_tiled(
    upscaler: Callable[[Tensor], Tensor],
    img: Tensor,
    scale: int | None = None,
    tile: int = 512,
    overlap: int | None = None,
) -> Tensor:
    """Upscale ``img`` (N, 3, H, W) by ``scale`` through ``upscaler``, ``tile`` x ``tile`` at a time.

    ``upscaler`` maps (N, 3, h, w) in [0, 1] to (N, 3, scale*h, scale*w) and may live on another
    device (``.device`` attribute, e.g. an ``Upscaler`` on CUDA): each tile is moved there and its
    result back, so only one tile's activations sit on the accelerator and the full-size output
    stays on ``img``'s device. ``scale`` defaults to ``upscaler.scale``; a different value is an error.
    ``overlap`` (context pixels per side) defaults to ``upscaler.tile_overlap``, else 32.
    Returns (N, 3, scale*H, scale*W) in ``img``'s dtype and device.
    """
    own_scale = getattr(upscaler, "scale", None)
    chosen = own_scale if scale is None else scale
    if chosen is None:
        raise SettingsError("--upscale: no scale given and the upscaler states none")
    s = int(chosen)
    if own_scale is not None and s != own_scale:
        raise SettingsError(f"--upscale: {s} does not match the loaded upscaler's scale {own_scale}")
    if s < 1:
        raise SettingsError(f"--upscale: {s} must be a positive integer")
    if overlap is None:
        overlap = int(getattr(upscaler, "tile_overlap", 32))
    if tile < 16 or overlap < 0:
        raise SettingsError(f"upscale tiling: tile {tile} must be >= 16 and overlap {overlap} >= 0")
    if not isinstance(img, Tensor) or img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
        shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
        raise InputError(f"upscale: expected a float (N, 3, H, W) image, got {shape}")

    n, c, h, w = img.shape
    device = getattr(upscaler, "device", img.device)
    out = torch.empty((n, c, h * s, w * s), dtype=img.dtype, device=img.device)
    for y0, y1 in tile_spans(h, tile):
        cy0, cy1 = max(0, y0 - overlap), min(h, y1 + overlap)
        for x0, x1 in tile_spans(w, tile):
            cx0, cx1 = max(0, x0 - overlap), min(w, x1 + overlap)
            part = upscaler(img[:, :, cy0:cy1, cx0:cx1].to(device))
            if part.shape[-2:] != ((cy1 - cy0) * s, (cx1 - cx0) * s):
                raise InputError(f"upscale: upscaler returned {tuple(part.shape)} for a x{s} tile")
            core = part[:, :, (y0 - cy0) * s : (y1 - cy0) * s, (x0 - cx0) * s : (x1 - cx0) * s]
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = core.to(out)

    # Out-of-range values are not the network's business: carry them around it.
    excess = torch.where(torch.isfinite(img), img - img.clamp(0.0, 1.0), torch.zeros_like(img))
    if bool((excess != 0).any()):
        big = F.interpolate(excess.float(), scale_factor=s, mode="bilinear", align_corners=False)
        out += big.to(out.dtype)
    return out
