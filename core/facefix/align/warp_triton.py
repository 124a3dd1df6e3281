"""Align every face of a batch in one CUDA kernel (Triton).

Each frame's face region is a different size, so the torch warps run a frame at a time: a dozen small
kernels per frame, which the thread feeding the GPU spends longer launching than the GPU spends running.
Here the regions of a batch lie one after another in one buffer (``facefix.pipeline.Regions``) and a table
says where each is: one launch aligns every face. The arithmetic is that of the torch warp (bicubic with zero
padding as ``F.grid_sample``): the two agree to float rounding (tested), and each crop depends only on its own
face's data, never on the rest of the batch. Faces shrunk by more than 1.5x need the torch warps'
antialiasing pyramid and are aligned by them. Imported only for CUDA tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..geometry import index_space
from ..interp_triton import cubic_weights
from ..tensors import to_device

__all__ = ["align_crops"]

_BLOCK = 256


@triton.jit
def _cubic_taps(plane, row, c0, c1, c2, c3, w0, w1, w2, w3, mask, m0, m1, m2, m3):
    """One row of four bicubic taps of an (h, w, 3) region; taps outside it read 0 (zero padding)."""
    return (w0 * tl.load(plane + row + c0, mask=mask & m0, other=0.0)
            + w1 * tl.load(plane + row + c1, mask=mask & m1, other=0.0)
            + w2 * tl.load(plane + row + c2, mask=mask & m2, other=0.0)
            + w3 * tl.load(plane + row + c3, mask=mask & m3, other=0.0))


@triton.jit
def _align_kernel(src_ptr, regions_ptr, mats_ptr, out_ptr, S, BLOCK: tl.constexpr):
    # One crop pixel (all three channels) of one face per lane; program axis 1 is the face.
    face = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < S * S
    p = tl.where(live, p, 0)
    yf = (p // S).to(tl.float32)
    xf = (p % S).to(tl.float32)
    start = tl.load(regions_ptr + face * 3)  # element offset of the face's frame region, (h, w, 3)
    h = tl.load(regions_ptr + face * 3 + 1).to(tl.int32)
    w = tl.load(regions_ptr + face * 3 + 2).to(tl.int32)
    m = mats_ptr + face * 6
    ix = tl.load(m) * xf + tl.load(m + 1) * yf + tl.load(m + 2)
    iy = tl.load(m + 3) * xf + tl.load(m + 4) * yf + tl.load(m + 5)
    # A position more than two pixels outside the region has every tap outside: moved to a safe distance,
    # it still reads 0 (and converts to an integer without overflow).
    ix = tl.minimum(tl.maximum(ix, -4.0), w.to(tl.float32) + 4.0)
    iy = tl.minimum(tl.maximum(iy, -4.0), h.to(tl.float32) + 4.0)
    ix0 = tl.floor(ix)
    iy0 = tl.floor(iy)
    wx0, wx1, wx2, wx3 = cubic_weights(ix - ix0)
    wy0, wy1, wy2, wy3 = cubic_weights(iy - iy0)
    # Tap positions clamped into the region only to keep the pointers inside it: the masks zero the outside.
    cx = ix0.to(tl.int32)
    cy = iy0.to(tl.int32)
    c0 = tl.minimum(tl.maximum(cx - 1, 0), w - 1) * 3
    c1 = tl.minimum(tl.maximum(cx, 0), w - 1) * 3
    c2 = tl.minimum(tl.maximum(cx + 1, 0), w - 1) * 3
    c3 = tl.minimum(tl.maximum(cx + 2, 0), w - 1) * 3
    mx0 = (cx - 1 >= 0) & (cx - 1 < w)
    mx1 = (cx >= 0) & (cx < w)
    mx2 = (cx + 1 >= 0) & (cx + 1 < w)
    mx3 = (cx + 2 >= 0) & (cx + 2 < w)
    r0 = tl.minimum(tl.maximum(cy - 1, 0), h - 1) * w * 3
    r1 = tl.minimum(tl.maximum(cy, 0), h - 1) * w * 3
    r2 = tl.minimum(tl.maximum(cy + 1, 0), h - 1) * w * 3
    r3 = tl.minimum(tl.maximum(cy + 2, 0), h - 1) * w * 3
    my0 = live & (cy - 1 >= 0) & (cy - 1 < h)
    my1 = live & (cy >= 0) & (cy < h)
    my2 = live & (cy + 1 >= 0) & (cy + 1 < h)
    my3 = live & (cy + 2 >= 0) & (cy + 2 < h)
    out = out_ptr + face.to(tl.int64) * 3 * S * S + p
    for ch in tl.static_range(3):
        plane = src_ptr + start + ch
        v = (wy0 * _cubic_taps(plane, r0, c0, c1, c2, c3, wx0, wx1, wx2, wx3, my0, mx0, mx1, mx2, mx3)
             + wy1 * _cubic_taps(plane, r1, c0, c1, c2, c3, wx0, wx1, wx2, wx3, my1, mx0, mx1, mx2, mx3)
             + wy2 * _cubic_taps(plane, r2, c0, c1, c2, c3, wx0, wx1, wx2, wx3, my2, mx0, mx1, mx2, mx3)
             + wy3 * _cubic_taps(plane, r3, c0, c1, c2, c3, wx0, wx1, wx2, wx3, my3, mx0, mx1, mx2, mx3))
        tl.store(out + ch * S * S, v, mask=live)


def align_crops(flat: torch.Tensor, regions: np.ndarray, region_from_crop: np.ndarray, size: int) -> torch.Tensor:
    """Bicubic (N, 3, size, size) crops of faces whose frame regions lie in ``flat`` (float32, contiguous).

    regions: (N, 3) per face, its region's (first element, height, width): an (h, w, 3) array in ``flat``.
    region_from_crop: (N, 2, 3) the face's crop pixels -> its region's pixels. Outside a region reads 0."""
    n = len(regions)
    out = torch.empty((n, 3, size, size), dtype=torch.float32, device=flat.device)
    if n:
        table = to_device(np.ascontiguousarray(regions, np.int64), flat.device)
        mats = to_device(index_space(region_from_crop), flat.device)
        _align_kernel[(triton.cdiv(size * size, _BLOCK), n)](flat, table, mats, out, size, BLOCK=_BLOCK)
    return out
