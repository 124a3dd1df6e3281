"""Face mattes, colour matching and paste-back, all batched in aligned (template) space.

Convention: crops are (N, 3, S, S) working-space RGB; mattes are (N, 1, S, S) in [0, 1]; ``frame_from_crop``
is (N, 2, 3) mapping crop pixels to frame pixels (pixel centres at +0.5).

Paste-back is *detail preserving*: the frame receives ``warp_back(restored - base)`` where ``base`` is what the
model was given. Where the model changed nothing the frame keeps its own pixels (and HDR values above 1);
at template resolution the result equals the restored face exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..filters import gaussian_blur
from ..geometry import FFHQ_TEMPLATE_512, TEMPLATE_SIZE, frame_rois, invert_affine, warp_affine
from ..tensors import kernels_for, to_device

if TYPE_CHECKING:
    from ..faces import FaceBatch
    from ..gpu import Regions
    from ..params import Settings

__all__ = ["gaussian_blur", "polygon_sdf", "soft_matte", "template_ellipse", "colour_match", "paste_faces",
           "face_mattes", "face_deltas", "match_colours", "per_face", "paste_regions", "no_new_negatives", "TEMPLATE_FACE_PX"]

# Face width in the 512 template, in px (about 2.2x the eye distance): the unit of expand/feather.
TEMPLATE_FACE_PX = 280.0


def polygon_sdf(polygons: torch.Tensor, size: int, factor: int = 4, edges_per_step: int | None = None) -> torch.Tensor:
    """Signed distance (N, 1, size, size) in pixels to closed polygons (N, K, 2): positive inside.

    Polygons are in crop pixels (pixel centres at +0.5). Inside/outside by the even-odd rule. A distance
    field is smooth, so it is computed at 1/``factor`` resolution and upsampled (16x cheaper at 4).
    edges_per_step: edges batched in one step (None: the device's choice); the result does not depend on it.
    """
    if factor > 1 and size % factor == 0:
        low = polygon_sdf(polygons / factor, size // factor, factor=1, edges_per_step=edges_per_step) * factor
        return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    n, k, _ = polygons.shape
    dev = polygons.device
    coords = torch.arange(size, device=dev, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    p = polygons.float()
    a, b = p, torch.roll(p, -1, dims=1)
    inside = torch.zeros((n, size, size), dtype=torch.bool, device=dev)
    dist2 = torch.full((n, size, size), float("inf"), device=dev)
    # On a GPU the edges go a few at a time, batched over faces, edges and pixels: a few dozen launches for a
    # contour of several dozen points (a launch an operation an edge was most of a batch's matte time), with
    # temporaries of at most ~8M values; the CPU goes edge by edge (cache-sized). The same values either way: min
    # and parity do not depend on the order.
    step = edges_per_step or (max(1, (1 << 23) // max(1, n * size * size)) if dev.type == "cuda" else 1)
    for i in range(0, k, step):
        ax, ay = a[:, i : i + step, 0, None, None], a[:, i : i + step, 1, None, None]  # (n, e, 1, 1)
        ex, ey = b[:, i : i + step, 0, None, None] - ax, b[:, i : i + step, 1, None, None] - ay
        px, py = gx - ax, gy - ay  # (n, e, S, S)
        t = ((px * ex + py * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0.0, 1.0)
        near = (px - t * ex) ** 2 + (py - t * ey) ** 2
        crosses = (ay > gy) != (ay + ey > gy)
        x_at = ax + (gy - ay) * ex / torch.where(ey == 0, torch.ones_like(ey), ey)
        flips = crosses & (gx < x_at)
        if near.shape[1] == 1:  # one edge: no reduction over edges
            dist2 = torch.minimum(dist2, near[:, 0])
            inside ^= flips[:, 0]
        else:
            dist2 = torch.minimum(dist2, near.amin(1))
            inside ^= (flips.sum(1) % 2).bool()
    d = dist2.sqrt()
    return torch.where(inside, d, -d).unsqueeze(1)


def soft_matte(sdf: torch.Tensor, expand_px: torch.Tensor | float, feather_px: torch.Tensor | float) -> torch.Tensor:
    """Matte from a signed distance: grown by ``expand_px``, with a smooth edge ``feather_px`` wide.

    Scalars or per-face (N, 1, 1, 1) tensors. The soft edge lies inside the (expanded) border and is
    exactly 0 outside it, so pixels outside the matte stay untouched.
    """
    expand = to_device(expand_px, sdf.device, sdf.dtype)
    soft = to_device(feather_px, sdf.device, sdf.dtype)
    d = sdf + expand
    t = (d / soft.clamp_min(1e-6)).clamp(0.0, 1.0)
    return torch.where(soft > 0, t * t * (3.0 - 2.0 * t), (d > 0).to(sdf.dtype))


def template_ellipse(size: int, points: int = 72) -> torch.Tensor:
    """(points, 2) polygon of the face ellipse in the FFHQ template at ``size``: forehead to chin."""
    t = FFHQ_TEMPLATE_512 * (size / 512.0)
    iod = float(t[1, 0] - t[0, 0])
    cx = float(t[:, 0].mean())
    cy = float(t[2, 1]) - 0.18 * iod  # a little above the nose tip
    rx, ry = 1.08 * iod, 1.36 * iod
    a = torch.arange(points, dtype=torch.float32) * (2 * math.pi / points)
    return torch.stack([cx + rx * torch.cos(a), cy + ry * torch.sin(a)], dim=1)


def colour_match(restored: torch.Tensor, reference: torch.Tensor, amount: float, sigma: float = 24.0) -> torch.Tensor:
    """Give ``restored`` the local colour of ``reference`` (both (N, 3, S, S)): swap their low frequencies.

    Models shift skin tone and white balance; the compositor wants the plate's grade. ``sigma`` (px at
    the crop's size) separates colour (low) from detail (high). ``amount`` 0 returns ``restored``.
    """
    if amount <= 0:
        return restored
    # Low frequencies only: blur at 1/8 resolution and upsample (same result, ~60x cheaper).
    f = 8 if min(restored.shape[-2:]) >= 64 else 1
    diff = reference - restored
    low = F.avg_pool2d(diff, f) if f > 1 else diff
    low = gaussian_blur(low, sigma / f)
    if f > 1:
        low = F.interpolate(low, size=restored.shape[-2:], mode="bilinear", align_corners=False)
    return restored + amount * low


def _paste_groups(rois: np.ndarray, waste: float = 0.5) -> list[list[int]]:
    """Consecutive faces with a non-empty ROI, grouped so that padding each group to its largest ROI wastes
    at most ``waste`` of the warped area (a crowd of small faces beside one close-up is not padded to it)."""
    groups: list[list[int]] = []
    area = 0
    gh = gw = 0
    for i, (x0, y0, x1, y1) in enumerate(rois.tolist()):
        h, w = y1 - y0, x1 - x0
        if h <= 0 or w <= 0:
            continue
        nh, nw = max(gh, h), max(gw, w)
        if groups and (len(groups[-1]) + 1) * nh * nw * (1 - waste) <= area + h * w:
            groups[-1].append(i)
            area, gh, gw = area + h * w, nh, nw
        else:
            groups.append([i])
            area, gh, gw = h * w, h, w
    return groups


def paste_faces(
    frames: torch.Tensor,
    delta: torch.Tensor,
    matte: torch.Tensor,
    frame_from_crop: np.ndarray,
    frame_index: np.ndarray,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add each face's ``delta`` (restored - base, (N, 3, S, S)) into its frame through its ``matte``.

    frames: (B, 3, H, W) working-space RGB, any memory layout (not modified unless ``inplace``: then the
    result is written into it, saving a copy of every frame). frame_index: (N,) frame of each face.
    Returns (frames_out, alpha (B, 1, H, W)). Only the face ROIs are touched; where the warped matte is 0 the
    output is the input plus 0 (the same value; a -0.0 turns +0.0), and callers that promise untouched pixels
    copy back only where alpha > 0. Overlapping faces composite in order.
    """
    out = frames if inplace else frames.clone()
    alpha = torch.zeros((frames.shape[0], 1, *frames.shape[-2:]), device=frames.device, dtype=frames.dtype)
    if delta.shape[0] == 0:
        return out, alpha
    size = delta.shape[-1]
    rois = frame_rois(frame_from_crop, size, (frames.shape[-2], frames.shape[-1]))
    both = torch.cat([delta, matte], dim=1)
    # Map crop -> ROI-local frame coords; faces are warped into their ROIs a group at a time (padded to the
    # group's largest ROI: a pixel's value depends only on its own face's matrix, so grouping changes nothing).
    roi_from_crop = np.array(frame_from_crop, np.float64)
    roi_from_crop[:, :, 2] -= rois[:, :2]
    one = alpha.new_ones(())
    for group in _paste_groups(rois):
        gh = int((rois[group, 3] - rois[group, 1]).max())
        gw = int((rois[group, 2] - rois[group, 0]).max())
        if group == list(range(group[0], group[-1] + 1)):
            src = both[group[0] : group[-1] + 1]
        else:
            src = both[to_device(group, both.device)]
        warped_group = warp_affine(src, roi_from_crop[group], (gh, gw), mode="bilinear")
        for j, i in enumerate(group):
            x0, y0, x1, y1 = (int(v) for v in rois[i])
            warped = warped_group[j, :, : y1 - y0, : x1 - x0]
            d, a = warped[:3], warped[3:].clamp(0.0, 1.0)
            b = int(frame_index[i])
            # In place, one kernel each: where a is 0 the pixel gains 0 * d (the delta is finite: staged frames
            # are, and warps outside a crop read 0), and alpha composites "over" as a + ar (1 - a).
            out[b, :, y0:y1, x0:x1].addcmul_(a, d)
            alpha[b, :, y0:y1, x0:x1].lerp_(one, a)
    return out, alpha


def per_face(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """One value per face as an (N, 1, 1, 1) tensor on ``device`` (animated controls vary per face)."""
    return to_device([float(v) for v in values], device, torch.float32).view(-1, 1, 1, 1)


def face_deltas(restored: torch.Tensor, base: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """What each face adds to its frame (the change, not the face: see the module notes), scaled by its
    strength (N, 1, 1, 1): (restored - base) * strength."""
    return (restored - base) * strength


def match_colours(restored: torch.Tensor, reference: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
    """``colour_match`` with a per-face amount (N, 1, 1, 1): restored + amount * (matched - restored)."""
    return restored + amounts * (colour_match(restored, reference, 1.0) - restored)


@functools.lru_cache(maxsize=8)
def _template_sdf(size: int, device: torch.device) -> torch.Tensor:
    """Signed distance (1, 1, S, S) to the template ellipse: the same for every face without a mesh, so
    computed once per size and device (it is a few hundred small kernels)."""
    return polygon_sdf(template_ellipse(size).to(device)[None], size)


def face_mattes(batch: FaceBatch, settings_per_face: Sequence[Settings], size: int, device: torch.device) -> torch.Tensor:
    """Soft mattes (N, 1, S, S) in crop space: the mesh face-oval where a mesh is known, else the template ellipse."""
    n = len(batch.faces)
    sdf = _template_sdf(size, device).expand(n, -1, -1, -1)
    use_mesh = [i for i, (f, s) in enumerate(zip(batch.faces, settings_per_face)) if s.mask == "mesh" and f.mesh is not None]
    if use_mesh:
        from ..detect.mesh import FACE_OVAL

        ovals = np.stack([
            batch.faces[i].mesh[FACE_OVAL, :2] @ batch.crop_from_frame[i, :, :2].T + batch.crop_from_frame[i, :, 2]  # type: ignore[index]
            for i in use_mesh
        ])
        sdf = sdf.clone()
        sdf[to_device(use_mesh, device)] = polygon_sdf(to_device(ovals, device), size)
    unit = TEMPLATE_FACE_PX * size / TEMPLATE_SIZE
    expand = per_face([s.mask_expand * unit for s in settings_per_face], device)
    soft = per_face([s.mask_feather * unit for s in settings_per_face], device)
    mattes = soft_matte(sdf, expand, soft)
    # Never reach the crop border, so no square edge can ever show.
    border = max(2, size // 64)
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    edge_d = torch.minimum(coords, size - coords)
    edge = ((torch.minimum(edge_d[:, None], edge_d[None, :]) - border) / border).clamp(0, 1)
    return mattes * edge


def paste_regions(regions: Regions, delta: torch.Tensor, mattes: torch.Tensor, crop_from_roi: np.ndarray,
                  batch: FaceBatch) -> torch.Tensor:
    """Every face's ``delta`` added into its frame's region through its matte, in place (see ``paste_faces``);
    returns the regions' composited mattes, one value per region pixel (``Regions.pixels``). On CUDA one
    kernel pastes the whole batch (``paste_triton``); elsewhere the torch warps paste a frame at a time."""
    dev = regions.flat.device
    alpha = torch.zeros(regions.total, device=dev)
    slices = batch.frame_slices(len(regions.starts))
    if kernels_for(regions.flat):
        from .paste_triton import paste_regions as kernel

        table = np.array([(start, h, w, sel.start, sel.stop)
                          for start, (h, w), sel in zip(regions.starts, regions.shapes, slices)], np.int64)
        kernel(regions.flat, alpha, delta, mattes, table.reshape(-1, 5), crop_from_roi)
        return alpha
    for b, sel in enumerate(slices):
        frame = regions.chw(b)
        if frame.numel() and sel.stop > sel.start:
            _, frame_alpha = paste_faces(frame[None], delta[sel], mattes[sel], invert_affine(crop_from_roi[sel]),
                                         np.zeros(sel.stop - sel.start, np.int64), inplace=True)
            regions.pixels(alpha, b).copy_(frame_alpha[0, 0])
    return alpha


def no_new_negatives(result: np.ndarray | torch.Tensor, original: np.ndarray | torch.Tensor) -> None:
    """In place: ``result`` never goes below ``min(original, 0)``.

    A face pass adds a restored delta through interpolating warps, whose overshoot can take a dark pixel a
    little below zero (-0.004 on the example shot). A compositor's float plate keeps its own negative
    values (they may be meaningful: a grade, a key), but the fix must not add any: negative RGB breaks the
    log, power and divide operations of a grade downstream.
    """
    if isinstance(result, torch.Tensor):
        assert isinstance(original, torch.Tensor)
        torch.maximum(result, original.clamp(max=0.0), out=result)
    else:
        np.maximum(result, np.minimum(original, 0.0), out=result)
