"""Align: every face of a batch warped to the 512 FFHQ template, from its frame's working-space region.

The similarity transforms come from the faces' 5 landmarks (``FaceBatch.crop_from_frame``, by
``facefix.geometry``); on CUDA one Triton kernel aligns the whole batch (``warp_triton``), elsewhere (and
for faces that need antialiasing) the torch warps do it a frame at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..geometry import antialias_levels, invert_affine, warp_affine
from ..tensors import kernels_for, to_device

if TYPE_CHECKING:
    from ..faces import FaceBatch
    from ..gpu import Regions

__all__ = ["align_faces"]


def align_faces(regions: Regions, batch: FaceBatch, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Aligned crops (N, 3, S, S) of every face, and each face's ``crop_from_roi`` (N, 2, 3)."""
    dev = regions.flat.device
    crop_from_roi = batch.crop_from_frame.copy()
    # crop_from_roi = crop_from_frame o frame_from_roi, with frame = roi + (ox, oy)
    offsets = np.array([regions.origins[int(b)] for b in batch.frame_index], np.float64).reshape(-1, 2)
    crop_from_roi[:, :, 2] += (crop_from_roi[:, :, :2] * offsets[:, None, :]).sum(-1)
    n = len(batch.faces)
    crops = torch.empty((n, 3, size, size), device=dev)
    # On CUDA one kernel aligns every face that needs no antialiasing; the torch warps do the rest, a frame
    # at a time (each frame's faces from that frame alone).
    by_kernel = (antialias_levels(crop_from_roi) == 0) if kernels_for(regions.flat) else np.zeros(n, bool)
    if by_kernel.any():
        from .warp_triton import align_crops

        idx = np.flatnonzero(by_kernel)
        frames = batch.frame_index[idx]
        table = np.stack([3 * np.array(regions.starts, np.int64)[frames]] +
                         [np.array(regions.shapes, np.int64)[frames, k] for k in (0, 1)], axis=1)
        got = align_crops(regions.flat, table, invert_affine(crop_from_roi[idx]), size)
        if by_kernel.all():
            return got, crop_from_roi
        crops[to_device(idx, dev)] = got
    for b, sel in enumerate(batch.frame_slices(len(regions.starts))):
        rest = np.flatnonzero(~by_kernel[sel]) + sel.start
        if len(rest):
            warped = warp_affine(regions.chw(b)[None], crop_from_roi[rest], (size, size),
                                 src_index=np.zeros(len(rest), np.int64))
            if len(rest) == n:
                return warped, crop_from_roi
            crops[to_device(rest, dev)] = warped
    return crops, crop_from_roi
