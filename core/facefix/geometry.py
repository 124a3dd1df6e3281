"""Alignment geometry: similarity transforms to the FFHQ template and batched warps.

Convention: points are (x, y) in pixels with pixel centres at +0.5 (the top-left pixel covers [0, 1)).
Matrices are 2x3 affine maps named ``dst_from_src``: ``crop_from_frame`` takes frame pixel coordinates to
aligned-crop pixel coordinates. Images are (N, C, H, W) tensors; the device and dtype follow the input.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .tensors import to_device

__all__ = [
    "FFHQ_TEMPLATE_512",
    "TEMPLATE_SIZE",
    "umeyama_similarity",
    "box_iou_np",
    "crop_from_frame_matrix",
    "invert_affine",
    "affine_scale",
    "transform_points",
    "warp_affine",
    "antialias_levels",
    "frame_rois",
]

TEMPLATE_SIZE = 512


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (..., M, 4) and b (..., K, 4) -> (..., M, K), over any leading batch axes, in the boxes'
    own float type; 0 where the union is empty."""
    lt = np.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = np.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    zero = np.zeros((), a.dtype)
    wh = np.maximum(rb - lt, zero)
    inter = wh[..., 0] * wh[..., 1]
    sa = np.maximum(a[..., 2:] - a[..., :2], zero)
    sb = np.maximum(b[..., 2:] - b[..., :2], zero)
    union = (sa[..., 0] * sa[..., 1])[..., :, None] + (sb[..., 0] * sb[..., 1])[..., None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, np.asarray(1e-12, a.dtype)), zero)

# The FFHQ 5-point template at 512 px (eye centres, nose tip, mouth corners) used by GFPGAN/CodeFormer-era
# restorers: faces aligned to it look like their training data.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19366],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    src, dst: (K, 2) points, K >= 2, or stacks (N, K, 2) (either may be one set shared by all). Returns the
    2x3 matrix ``dst_from_src`` (or (N, 2, 3)). No reflection. Sums run over the points in a fixed order,
    element-wise over the stack, so a set's matrix does not depend on what else is in the stack.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    single = src.ndim == 2 and dst.ndim == 2
    s3, d3 = (src[None] if src.ndim == 2 else src), (dst[None] if dst.ndim == 2 else dst)
    if (s3.ndim != 3 or d3.ndim != 3 or s3.shape[1:] != d3.shape[1:] or s3.shape[2] != 2 or s3.shape[1] < 2
            or (s3.shape[0] != d3.shape[0] and 1 not in (s3.shape[0], d3.shape[0]))):
        raise InputError(f"similarity needs matching (K, 2) point sets, got {src.shape} and {dst.shape}")
    s3, d3 = np.broadcast_arrays(s3, d3)
    k = s3.shape[1]

    def point_sum(x: np.ndarray) -> np.ndarray:
        total = x[:, 0].copy()
        for i in range(1, k):
            total += x[:, i]
        return total

    mu_s, mu_d = point_sum(s3) / k, point_sum(d3) / k  # (N, 2)
    s0, d0 = s3 - mu_s[:, None], d3 - mu_d[:, None]
    var_s = point_sum((s0**2).sum(-1, keepdims=True))[:, 0] / k  # (N,)
    if (var_s < 1e-12).any():
        raise InputError("degenerate landmarks: all points coincide")
    cov = point_sum(d0[..., :, None] * s0[..., None, :]) / k  # (N, 2, 2)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(cov), 2))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, 1] = -1.0
    rot = u @ (d[:, :, None] * vt)
    scale = (sig * d).sum(-1) / var_s
    t = mu_d - scale[:, None] * (rot @ mu_s[:, :, None])[..., 0]
    out = np.concatenate([scale[:, None, None] * rot, t[:, :, None]], axis=-1)
    return out[0] if single else out


def crop_from_frame_matrix(landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """2x3 ``crop_from_frame`` aligning 5 frame landmarks (5, 2) to the FFHQ template at ``size`` px; for a
    stack of faces' landmarks (N, 5, 2), the (N, 2, 3) matrices in one call."""
    return umeyama_similarity(landmarks, FFHQ_TEMPLATE_512 * (size / TEMPLATE_SIZE))


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (or a (..., 2, 3) batch)."""
    a = m[..., :2]
    inv_a = np.linalg.inv(a)
    return np.concatenate([inv_a, -(inv_a @ m[..., 2:])], axis=-1)


def affine_scale(m: np.ndarray) -> np.ndarray:
    """Uniform scale of 2x3 similarity matrices (..., 2, 3): sqrt(|det|)."""
    return np.sqrt(np.abs(np.linalg.det(m[..., :2])))


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply ``dst_from_src`` (2, 3) to (K, 2) points."""
    return pts @ m[:, :2].T + m[:, 2]


@functools.lru_cache(maxsize=32)
def _pixel_centres(n: int, device: torch.device) -> torch.Tensor:
    """(n,) float32 pixel-centre coordinates 0.5 .. n-0.5 on ``device`` (cached: warps reuse a few sizes)."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


def _grid_for(src_from_dst: np.ndarray, out_hw: tuple[int, int], src_hw: tuple[int, int], device: torch.device
              ) -> torch.Tensor:
    """Sampling grid (N, h, w, 2) in grid_sample's normalised coords (align_corners=False).

    The normalisation (source pixels -> [-1, 1]) is folded into the matrices in float64 on the host, so
    the device computes each coordinate as a x + b y + c: two fused multiply-adds over the grid.
    """
    h, w = out_hw
    sh, sw = src_hw
    norm = np.asarray(src_from_dst, np.float64) * np.array([[2.0 / sw], [2.0 / sh]])
    norm[:, :, 2] -= 1.0
    t = to_device(norm, device, torch.float32)[:, None, None]  # (N, 1, 1, 2, 3)
    xs = _pixel_centres(w, device).view(1, 1, w, 1)
    ys = _pixel_centres(h, device).view(1, h, 1, 1)
    return torch.addcmul(torch.addcmul(t[..., 2], t[..., 0], xs), t[..., 1], ys)


def _antialias_level(scale: float) -> int:
    """Pyramid level (halvings) so that sampling from it shrinks by at most ~1.5x."""
    if scale >= 1.0 / 1.5:
        return 0
    return max(0, int(math.floor(math.log2(1.0 / scale / 1.5))) + 1)


def antialias_levels(dst_from_src: np.ndarray) -> np.ndarray:
    """Per (N, 2, 3) map, how often ``warp_affine`` halves the source first (0: it samples the source itself)."""
    m = np.asarray(dst_from_src, np.float64).reshape(-1, 2, 3)
    return np.array([_antialias_level(float(s)) for s in affine_scale(m)], np.int64)


def warp_affine(
    src: torch.Tensor,
    dst_from_src: np.ndarray,
    out_hw: tuple[int, int],
    *,
    src_index: np.ndarray | None = None,
    mode: str = "bicubic",
) -> torch.Tensor:
    """Warp images through per-output affine maps, antialiased when shrinking.

    src: (B, C, H, W). dst_from_src: (N, 2, 3) float64. src_index: (N,) which source image each output reads
    (default: output n reads source n). Returns (N, C, h, w); samples outside the source are 0.
    Shrinking by more than 1.5x first halves the source (area filter) as often as needed, so small outputs
    from big sources do not alias. Computation is in float32 (float64 on CPU is needlessly slow).
    """
    if src.ndim != 4:
        raise InputError(f"warp_affine expects (B, C, H, W), got {tuple(src.shape)}")
    m = np.asarray(dst_from_src, np.float64).reshape(-1, 2, 3)
    n = m.shape[0]
    idx = np.arange(n) if src_index is None else np.asarray(src_index, np.int64)
    if n == 0:
        return src.new_zeros((0, src.shape[1], *out_hw))
    levels = antialias_levels(m)
    out: torch.Tensor | None = None
    for level in np.unique(levels):
        sel = np.nonzero(levels == level)[0]
        img = src
        factor = 1.0
        for _ in range(int(level)):
            if min(img.shape[-2:]) < 2:
                break
            img = F.avg_pool2d(img, 2, ceil_mode=True)
            factor *= 2.0
        # Map level-L pixel coords to level-0 (x0 = factor * xL), so srcL_from_dst = (1/factor) * src_from_dst.
        src_from_dst = invert_affine(m[sel]) / factor
        grid = _grid_for(src_from_dst, out_hw, (img.shape[-2], img.shape[-1]), src.device)
        rows = idx[sel]
        if (rows == rows[0]).all():  # every output reads one image (all faces of a frame): no copy of it per face
            picked = img[int(rows[0]) : int(rows[0]) + 1].expand(len(sel), -1, -1, -1)
        else:
            picked = img[to_device(rows, src.device)]
        res = F.grid_sample(picked.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(src.dtype)
        if len(sel) == n:  # one level for all (the usual case): no gather into an output
            return res
        if out is None:
            out = torch.empty((n, src.shape[1], *out_hw), device=src.device, dtype=src.dtype)
        out[to_device(sel, src.device)] = res
    assert out is not None
    return out


def frame_rois(frame_from_crop: np.ndarray, crop_size: int, frame_hw: tuple[int, int], pad: int = 2) -> np.ndarray:
    """Integer frame boxes (N, 4) = (x0, y0, x1, y1) covering each crop square's image, clipped to the frame."""
    h, w = frame_hw
    s = float(crop_size)
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64)
    pts = np.einsum("kj,nij->nki", corners, frame_from_crop[..., :2]) + frame_from_crop[:, None, :, 2]
    x0 = np.clip(np.floor(pts[..., 0].min(1)) - pad, 0, w)
    y0 = np.clip(np.floor(pts[..., 1].min(1)) - pad, 0, h)
    x1 = np.clip(np.ceil(pts[..., 0].max(1)) + pad, 0, w)
    y1 = np.clip(np.ceil(pts[..., 1].max(1)) + pad, 0, h)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def index_space(src_from_dst: np.ndarray) -> np.ndarray:
    """(N, 2, 3) maps between pixel coordinates (centres at +0.5) as maps between pixel indices (centres at
    integers), (N, 6) float32: what the kernels evaluate, the half-pixel shifts folded in in float64."""
    m = np.asarray(src_from_dst, np.float64).reshape(-1, 2, 3).copy()
    m[:, :, 2] += 0.5 * (m[:, :, 0] + m[:, :, 1]) - 0.5
    return m.reshape(-1, 6).astype(np.float32)
