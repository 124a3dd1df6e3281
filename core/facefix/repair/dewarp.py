"""De-warp: transient deformations of the face's shape (an eye drifts, the mouth widens on a turn, then springs
back) undone on the INPUT crop, from the dense landmark mesh.

Per track, in aligned (crop) space, for the current frame t and its window t-K..t+K:

1. each frame's points: ``Face.mesh`` (468 points), else its 5 landmarks (the whole window uses the mesh only
   where every frame of it has one), mapped into the crop by the face's alignment;
2. pose and shape separated: each frame's similarity onto the window's robust shape (a weighted least-squares
   fit whose weights fall for points far from that shape, so a deformed region does not bias the pose), the
   robust shape being the per-point temporal median of the pose-normalised points (three rounds). A median of
   2K+1 keeps a shape held for K+1 frames or more (an expression) and outvotes one of K or fewer (a warp);
3. the current frame's offsets against that shape, less a dead zone: max(``DEAD_ZONE_PX`` at the 512 px
   template, three times the point's own jitter over the window, its median distance from the shape), so a clean
   clip's mesh noise moves nothing (soft threshold: no jump at the zone's edge). Only a full window counts: in
   a track's first or last K frames (or next to a gap) a 3-frame warp could be the window's majority, so nothing
   moves there;
4. a smooth displacement field from those offsets (Gaussian-weighted, normalised; evaluated on a coarse grid
   and upsampled bilinearly), scaled by the control, applied with ``grid_sample`` (bicubic). Pixels where the
   field is zero keep their input values to the bit.

The result at frame t depends only on frames t-K..t+K of its track (no recursion), each face's field is
computed on its own, and the sampling is per pixel, so a result depends neither on chunks nor on the batch.

What it cannot tell apart: a fast real movement of the mesh (a syllable's mouth peak lasting fewer than K+1
frames, a blink's onset) looks, to a temporal median, like a transient warp; on a real tracker's mesh such
peaks are damped toward the window's shape (the synthetic clips' mesh does not follow blinks or speech).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..geometry import TEMPLATE_SIZE

__all__ = ["DEWARP_WINDOW", "DEAD_ZONE_PX", "dewarp_offsets", "dewarp_crops"]

# Frames each side the de-warp reads (the same window as de-boil, so the repair stage's look-ahead is shared).
DEWARP_WINDOW = 3

# Offsets below this many pixels of the 512 px template are the mesh's own jitter and move nothing.
DEAD_ZONE_PX = 1.0
# The field's Gaussian radius, as a fraction of the crop: about the mesh's point spacing; wider for 5 points.
_SIGMA_MESH = 0.03
_SIGMA_LANDMARKS = 0.10
# Weight below which the field fades to 0 (far from every point: hair, background).
_FADE = 0.05
_POSE_FLOOR_PX = 1.0  # at 512 px: the least jitter the pose weights assume
_ROUNDS = 6  # robust pose and shape: reweighting rounds


def _weighted_similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dst_from_src (2, 3): the similarity minimising sum w |A src - dst|^2 ((P, 2) points, (P,) weights)."""
    ws = w / w.sum()
    mu_s, mu_d = ws @ src, ws @ dst
    s0, d0 = src - mu_s, dst - mu_d
    var = float(ws @ (s0 ** 2).sum(1))
    a = float(ws @ (s0 * d0).sum(1)) / var  # s cos
    b = float(ws @ (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0])) / var  # s sin
    lin = np.array([[a, -b], [b, a]])
    return np.concatenate([lin, (mu_d - lin @ mu_s)[:, None]], 1)


def dewarp_offsets(points: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Per point, how far the current (middle) frame's point should move in its crop, (P, 2) px (0 where the
    shape agrees with the window's within the dead zone).

    points: (2K+1, P, 2) the window's points in crop pixels (index K the current frame); valid: (2K+1,) bool
    (the current frame always counts); size: the crop's side in px (the dead zone scales with it).
    """
    n, p = points.shape[:2]
    k = n // 2
    zero = np.zeros((p, 2))
    rows = [j for j in range(n) if valid[j] or j == k]
    if len(rows) < n or p < 3:  # a clipped window (a track's first or last K frames, a gap) has no safe majority
        return zero
    x = np.asarray(points, np.float64)[rows]
    cur = rows.index(k)
    m = len(rows)
    mats = np.repeat(np.eye(2, 3)[None], m, 0)
    q = x.copy()
    shape = np.median(q, axis=0)
    w = np.ones((m, p))
    for _ in range(_ROUNDS):
        for j in range(m):
            mats[j] = _weighted_similarity(x[j], shape, w[j])
            q[j] = x[j] @ mats[j][:, :2].T + mats[j][:, 2]
        shape = np.median(q, axis=0)
        r = np.linalg.norm(q - shape, axis=-1)  # (m, P)
        # The window's own jitter (most points of most frames agree with the shape): a point further than a
        # few times that from the shape is deformed and has (almost) no say on its frame's pose.
        tau = 3.0 * max(1.4826 * float(np.median(r)), _POSE_FLOOR_PX * size / TEMPLATE_SIZE)
        z = (r / tau) ** 2
        w = np.exp(-0.5 * (z - z.min(axis=1, keepdims=True)))
    e = shape - q[cur]  # (P, 2) in the shape's frame
    jitter = np.median(np.linalg.norm(q - shape, axis=-1), axis=0)  # (P,)
    zone = np.maximum(DEAD_ZONE_PX * size / TEMPLATE_SIZE, 3.0 * jitter)
    mag = np.linalg.norm(e, axis=-1)
    keep = np.clip(1.0 - zone / np.maximum(mag, 1e-12), 0.0, None)
    e = e * keep[:, None]
    if not keep.any():
        return zero
    lin = mats[cur][:, :2]
    return np.asarray(e @ np.linalg.inv(lin).T)  # back into the current crop (its pose)


def _coarse_field(pts: np.ndarray, offsets: np.ndarray, size: int, grid: int, sigma: float,
                  device: torch.device) -> torch.Tensor:
    """Backward displacement (2, g, g) in px at the coarse grid's cell centres: where each point's content
    lands (pts + offsets), sample it from ``offsets`` back."""
    moving = np.linalg.norm(offsets, axis=-1) > 0
    if not moving.any():
        return torch.zeros((2, grid, grid), device=device)
    target = torch.as_tensor(pts + offsets, dtype=torch.float32, device=device)  # (P, 2)
    back = torch.as_tensor(-offsets, dtype=torch.float32, device=device)
    c = (torch.arange(grid, device=device, dtype=torch.float32) + 0.5) * (size / grid)
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    cells = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (g*g, 2)
    d2 = ((cells[:, None, :] - target[None, :, :]) ** 2).sum(-1)  # (g*g, P)
    wgt = torch.exp(-d2 / (2.0 * sigma * sigma))
    field = (wgt @ back) / (wgt.sum(-1, keepdim=True) + _FADE)  # (g*g, 2)
    return field.T.reshape(2, grid, grid)


def dewarp_crops(crops: torch.Tensor, windows: Sequence[np.ndarray], valid: Sequence[np.ndarray],
                 amount: torch.Tensor, dense: Sequence[bool] | None = None) -> torch.Tensor:
    """De-warped crops (B, 3, S, S) of each window's current frame.

    crops: (B, 3, S, S) the current frames' input crops; windows: per face (2K+1, P, 2) its window's points in
    crop pixels (P may differ between faces); valid: per face (2K+1,) bool; amount: (B,) 0..1, the share of the
    displacement applied (0 returns the crop to the bit); dense: per face whether its points are a dense mesh
    (else 5 landmarks: a wider field).
    """
    if crops.ndim != 4 or len(windows) != crops.shape[0] or len(valid) != crops.shape[0]:
        raise InputError(f"dewarp_crops: one window per crop needed, got {len(windows)} for {tuple(crops.shape)}")
    b, c, s, _ = crops.shape
    dev = crops.device
    amounts = [float(a) for a in amount.detach().cpu().tolist()]
    grid = max(16, s // 8)
    fields, moving = [], []
    for i in range(b):
        pts = np.asarray(windows[i], np.float64)
        k = pts.shape[0] // 2
        off = dewarp_offsets(pts, np.asarray(valid[i], bool), s) * amounts[i] if amounts[i] > 0 else 0 * pts[k]
        is_dense = dense[i] if dense is not None else pts.shape[1] > 5
        sigma = (_SIGMA_MESH if is_dense else _SIGMA_LANDMARKS) * s
        fields.append(_coarse_field(pts[k], off, s, grid, sigma, dev))
        moving.append(bool(np.any(off != 0)))
    if not any(moving):
        return crops.clone()
    idx = [i for i in range(b) if moving[i]]
    sel = torch.as_tensor(idx, device=dev)
    back = F.interpolate(torch.stack([fields[i] for i in idx]), size=(s, s), mode="bilinear", align_corners=False)
    centres = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5)
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    sx = (gx[None] + back[:, 0]) * (2.0 / s) - 1.0
    sy = (gy[None] + back[:, 1]) * (2.0 / s) - 1.0
    src = crops[sel]
    warped = F.grid_sample(src, torch.stack([sx, sy], -1).to(src.dtype), mode="bicubic", padding_mode="border",
                           align_corners=False).clamp(0.0, 1.0)
    still = (back.abs().amax(1, keepdim=True) < 1e-3)  # the field is (near) zero: the input, to the bit
    out = crops.clone()
    out[sel] = torch.where(still, src, warped)
    return out
