"""Paste every face of a batch into its frame's region in one CUDA kernel (Triton).

The counterpart of ``facefix.align.warp_triton``: regions of a batch lie one after another in one buffer and
a table says where each is, so one launch pastes every frame. The arithmetic is that of the torch paste
(``paste_faces``: bilinear, faces composited in order): the two agree to float rounding (tested), and each
frame's result depends only on its own faces. Imported only for CUDA tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..geometry import antialias_levels, index_space, invert_affine
from ..tensors import to_device

__all__ = ["paste_regions"]

_BLOCK = 256


@triton.jit
def _bilinear_taps(plane, i00, i01, i10, i11, w00, w01, w10, w11, m00, m01, m10, m11):
    """Bilinear sample of an (S, S) plane from its four taps (zero padding outside)."""
    return (w00 * tl.load(plane + i00, mask=m00, other=0.0) + w01 * tl.load(plane + i01, mask=m01, other=0.0)
            + w10 * tl.load(plane + i10, mask=m10, other=0.0) + w11 * tl.load(plane + i11, mask=m11, other=0.0))


@triton.jit
def _paste_kernel(frames_ptr, alpha_ptr, src_ptr, regions_ptr, faces_ptr, mats_ptr, BLOCK: tl.constexpr):
    # One region pixel (its three channels and its alpha) of one frame per lane; program axis 1 is the frame.
    frame = tl.program_id(1)
    start = tl.load(regions_ptr + frame * 5)  # pixel offset of the frame's region
    h = tl.load(regions_ptr + frame * 5 + 1).to(tl.int32)
    w = tl.load(regions_ptr + frame * 5 + 2).to(tl.int32)
    first = tl.load(regions_ptr + frame * 5 + 3)
    stop = tl.load(regions_ptr + frame * 5 + 4)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < h * w
    p = tl.where(live, p, 0)
    y = p // tl.maximum(w, 1)
    xf = (p - y * w).to(tl.float32)
    yf = y.to(tl.float32)
    rgb = frames_ptr + (start + p) * 3
    r = tl.load(rgb, mask=live, other=0.0)
    g = tl.load(rgb + 1, mask=live, other=0.0)
    b = tl.load(rgb + 2, mask=live, other=0.0)
    alpha = tl.load(alpha_ptr + start + p, mask=live, other=0.0)
    for face in range(first, stop):  # in order: overlapping faces composite one over the other
        # The face's (4, n, n) source: delta and matte, or their antialiasing level (n = S / 2^level).
        src = src_ptr + tl.load(faces_ptr + face * 2)
        n = tl.load(faces_ptr + face * 2 + 1).to(tl.int32)
        nf = n.to(tl.float32)
        m = mats_ptr + face * 6
        ix = tl.load(m) * xf + tl.load(m + 1) * yf + tl.load(m + 2)
        iy = tl.load(m + 3) * xf + tl.load(m + 4) * yf + tl.load(m + 5)
        near = live & (ix > -2.0) & (ix < nf + 1.0) & (iy > -2.0) & (iy < nf + 1.0)
        ix = tl.where(near, ix, -4.0)
        iy = tl.where(near, iy, -4.0)
        x0f = tl.floor(ix)
        y0f = tl.floor(iy)
        # As grid_sample weighs them: distances to the far taps.
        w00 = (x0f + 1.0 - ix) * (y0f + 1.0 - iy)
        w01 = (ix - x0f) * (y0f + 1.0 - iy)
        w10 = (x0f + 1.0 - ix) * (iy - y0f)
        w11 = (ix - x0f) * (iy - y0f)
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        ox0 = (x0 >= 0) & (x0 < n)
        ox1 = (x0 + 1 >= 0) & (x0 + 1 < n)
        oy0 = near & (y0 >= 0) & (y0 < n)
        oy1 = near & (y0 + 1 >= 0) & (y0 + 1 < n)
        m00, m01, m10, m11 = oy0 & ox0, oy0 & ox1, oy1 & ox0, oy1 & ox1
        i00 = tl.where(m00, y0 * n + x0, 0)
        i01 = tl.where(m01, y0 * n + x0 + 1, 0)
        i10 = tl.where(m10, (y0 + 1) * n + x0, 0)
        i11 = tl.where(m11, (y0 + 1) * n + x0 + 1, 0)
        plane = n * n
        a = _bilinear_taps(src + 3 * plane, i00, i01, i10, i11, w00, w01, w10, w11, m00, m01, m10, m11)
        a = tl.minimum(tl.maximum(a, 0.0), 1.0)
        r += a * _bilinear_taps(src, i00, i01, i10, i11, w00, w01, w10, w11, m00, m01, m10, m11)
        g += a * _bilinear_taps(src + plane, i00, i01, i10, i11, w00, w01, w10, w11, m00, m01, m10, m11)
        b += a * _bilinear_taps(src + 2 * plane, i00, i01, i10, i11, w00, w01, w10, w11, m00, m01, m10, m11)
        alpha = tl.where(a < 0.5, alpha + a * (1.0 - alpha), 1.0 - (1.0 - alpha) * (1.0 - a))  # as torch.lerp
    tl.store(rgb, r, mask=live)
    tl.store(rgb + 1, g, mask=live)
    tl.store(rgb + 2, b, mask=live)
    tl.store(alpha_ptr + start + p, alpha, mask=live)


def paste_regions(flat: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor, matte: torch.Tensor,
                  regions: np.ndarray, crop_from_region: np.ndarray) -> None:
    """Add each face's ``delta`` (N, 3, S, S) into its frame's region in ``flat`` through its ``matte``
    (N, 1, S, S), in place; ``alpha`` (one value per region pixel, same order) composites the mattes "over".

    regions: (B, 5) per frame, its region's (first pixel, height, width) and its faces [first, stop) in the
    batch. crop_from_region: (N, 2, 3). A face shrunk by more than 1.5x is sampled from the same halved
    (area-filtered) delta and matte as the torch warps use, made here for all such faces at once."""
    if not len(regions) or not delta.shape[0]:
        return
    most = int((regions[:, 1] * regions[:, 2]).max())
    if most == 0:
        return
    both = torch.cat([delta, matte], dim=1).float().contiguous()
    n, _, size, _ = both.shape
    levels = antialias_levels(invert_affine(crop_from_region))
    offsets = np.arange(n, dtype=np.int64) * 4 * size * size
    sizes = np.full(n, size, np.int64)
    shrink = np.ones(n)  # level-L pixel coordinates are level-0 ones times this (1 / 2^L)
    parts = [both.view(-1)]
    total = both.numel()
    for level in np.unique(levels[levels > 0]):
        idx = np.flatnonzero(levels == level)
        pooled = both[to_device(idx, both.device)]
        for _ in range(int(level)):
            if min(pooled.shape[-2:]) < 2:
                break
            pooled = F.avg_pool2d(pooled, 2, ceil_mode=True)
            shrink[idx] /= 2.0
        side = pooled.shape[-1]
        offsets[idx] = total + np.arange(len(idx)) * 4 * side * side
        sizes[idx] = side
        parts.append(pooled.reshape(-1))
        total += pooled.numel()
    src = parts[0] if len(parts) == 1 else torch.cat(parts)
    crop_from_level = crop_from_region * shrink[:, None, None]
    table = to_device(np.stack([offsets, sizes], axis=1), flat.device)
    mats = to_device(index_space(crop_from_level), flat.device)
    regions_table = to_device(np.ascontiguousarray(regions, np.int64), flat.device)
    _paste_kernel[(triton.cdiv(most, _BLOCK), len(regions))](flat, alpha, src, regions_table, table, mats,
                                                             BLOCK=_BLOCK)
