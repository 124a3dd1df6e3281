"""Dense optical flow between aligned face crops, in plain torch (no OpenCV at run time).

Method: coarse-to-fine iterative Lucas-Kanade (Bouguet's pyramidal scheme, applied densely). Each pyramid
level warps the moving image by the current flow, solves the 2x2 windowed least-squares system per pixel
(with a small Tikhonov term so flat skin keeps the flow propagated from coarser levels) and adds the update.
Faces in aligned space move little (the similarity alignment already removed translation, rotation and
zoom), so a 3-4 level pyramid at 128 px covers the residual motion of expressions, blinks, out-of-plane turns
and landmark jitter, and costs a few milliseconds per pair on a CPU.

Every operation is per pixel or a fixed-order sum of shifted slices (no convolutions, no atomics, no
reductions across the batch), so the result of one pair does not depend on which other pairs share the
batch, on CPU or CUDA. That is what lets the temporal stabiliser be bit-identical across farm chunks.

Convention: images (N, C, H, W) float32; flows (N, 2, H, W) in pixels of the image they belong to, channel 0
= dx, channel 1 = dy, (x, y) order, pixel centres at +0.5. ``flow_ref_to_mov[:, :, y, x]`` is the
displacement from pixel (x, y) of ``ref`` to the matching point of ``mov``: ``warp_by_flow(mov, flow)``
resamples ``mov`` onto ``ref``'s pixel grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..filters import gaussian_blur
from ..tensors import to_device

__all__ = [
    "to_luma",
    "gaussian_blur",
    "box_filter",
    "downsample",
    "resize_flow",
    "warp_by_flow",
    "inside_mask",
    "estimate_flow",
    "fb_confidence",
]

_LUMA = (0.2126, 0.7152, 0.0722)  # Rec.709 / sRGB primaries


def _check_images(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise InputError(f"{name}: expected a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_flow(name: str, flow: torch.Tensor) -> None:
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise InputError(f"{name}: expected a (N, 2, H, W) flow, got shape {tuple(flow.shape)}")


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma; a one-channel input is returned as is."""
    _check_images("to_luma", x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise InputError(f"to_luma: expected 1 or 3 channels, got {x.shape[1]}")
    return x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window with replicated borders (one pooling call; per-pixel, fixed order)."""
    if radius <= 0:
        return x
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel_size=2 * radius + 1, stride=1)


def downsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average (N, C, H, W) down to (N, C, h, w) (no-op when the size already matches)."""
    _check_images("downsample", x)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] > x.shape[-2] or size[1] > x.shape[-1]:
        raise InputError(f"downsample: cannot shrink {tuple(x.shape[-2:])} to the larger {tuple(size)}")
    return F.adaptive_avg_pool2d(x, size)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a flow field to (h, w) and rescale its vectors to the new pixel units (bilinear)."""
    _check_flow("resize_flow", flow)
    h0, w0 = flow.shape[-2:]
    h, w = size
    if (h, w) == (h0, w0):
        return flow
    out = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    scale = to_device([w / w0, h / h0], flow.device, flow.dtype).view(1, 2, 1, 1)
    return out * scale


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """Sampling grid for grid_sample (align_corners=False) at pixel centres displaced by ``flow``."""
    n, _, h, w = flow.shape
    xs = (torch.arange(w, dtype=flow.dtype, device=flow.device) + 0.5).view(1, 1, w)
    ys = (torch.arange(h, dtype=flow.dtype, device=flow.device) + 0.5).view(1, h, 1)
    gx = (xs + flow[:, 0]) * (2.0 / w) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / h) - 1.0
    return torch.stack([gx, gy], dim=-1)


def warp_by_flow(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
                 padding_mode: str = "border") -> torch.Tensor:
    """Resample ``image`` (N, C, H, W) at each pixel centre displaced by ``flow`` (N, 2, H, W).

    With ``flow = flow_ref_to_mov`` and ``image = mov``, the result lies on ``ref``'s grid.
    ``mode``: "bilinear" or "bicubic" (bicubic keeps restored detail sharper; it may overshoot [0, 1]).
    """
    _check_images("warp_by_flow", image)
    _check_flow("warp_by_flow", flow)
    if image.shape[0] != flow.shape[0] or image.shape[-2:] != flow.shape[-2:]:
        raise InputError(f"warp_by_flow: image {tuple(image.shape)} and flow {tuple(flow.shape)} do not match")
    return F.grid_sample(image, _grid(flow), mode=mode, padding_mode=padding_mode, align_corners=False)


def inside_mask(flow: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """(N, 1, H, W) float: 1 where the displaced pixel centre stays ``margin`` px inside the image."""
    _check_flow("inside_mask", flow)
    _, _, h, w = flow.shape
    xs = (torch.arange(w, dtype=flow.dtype, device=flow.device) + 0.5).view(1, 1, w) + flow[:, 0]
    ys = (torch.arange(h, dtype=flow.dtype, device=flow.device) + 0.5).view(1, h, 1) + flow[:, 1]
    ok = (xs >= margin) & (xs <= w - margin) & (ys >= margin) & (ys <= h - margin)
    return ok.unsqueeze(1).to(flow.dtype)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences with replicated borders."""
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]) * 0.5
    gy = (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]) * 0.5
    return gx, gy


def _lk_level(ref: torch.Tensor, mov: torch.Tensor, flow: torch.Tensor, iters: int, window: int,
              reg: float, max_step: float) -> torch.Tensor:
    for _ in range(iters):
        warped = warp_by_flow(mov, flow)
        gx, gy = _gradients((ref + warped) * 0.5)
        it = warped - ref
        # Window sums of the structure tensor and the mismatch, all five maps blurred in one call.
        terms = box_filter(torch.cat([gx * gx, gx * gy, gy * gy, gx * it, gy * it], dim=1), window)
        ixx, ixy, iyy, ixt, iyt = (terms[:, i:i + 1] for i in range(5))
        ixx = ixx + reg
        iyy = iyy + reg
        det = ixx * iyy - ixy * ixy
        du = -(iyy * ixt - ixy * iyt) / det
        dv = -(ixx * iyt - ixy * ixt) / det
        step = torch.cat([du, dv], dim=1).clamp(-max_step, max_step)
        flow = flow + step
    return flow


def estimate_flow(ref: torch.Tensor, mov: torch.Tensor, *, levels: int | None = None, iters: int = 1,
                  window: int = 2, reg: float = 1e-4, smooth_sigma: float = 1.0) -> torch.Tensor:
    """Dense flow from ``ref`` to ``mov``, both (N, C, H, W) (RGB is reduced to luma).

    Args:
        levels: pyramid levels (default: down to about 16 px; 4 at 128 px, covering about +-16 px).
        iters: Lucas-Kanade iterations per level.
        window: radius of the (2r+1)^2 integration window, in pixels of each level.
        reg: Tikhonov term added to the structure tensor (luma units squared); flat regions keep the
            coarser level's flow instead of fitting noise.
        smooth_sigma: Gaussian smoothing of the flow after each level (pixels), a cheap regulariser.

    Returns:
        (N, 2, H, W) float ``flow_ref_to_mov`` (see the module Convention).
    """
    _check_images("estimate_flow ref", ref)
    _check_images("estimate_flow mov", mov)
    if ref.shape != mov.shape:
        raise InputError(f"estimate_flow: ref {tuple(ref.shape)} and mov {tuple(mov.shape)} differ in shape")
    a, b = to_luma(ref), to_luma(mov)
    h, w = a.shape[-2:]
    if levels is None:
        levels = max(1, int(math.floor(math.log2(max(1, min(h, w) // 16)))) + 1)
    pyr = [(a, b)]
    for _ in range(levels - 1):
        pa, pb = pyr[-1]
        if min(pa.shape[-2:]) < 8 or pa.shape[-1] % 2 or pa.shape[-2] % 2:
            break
        pyr.append((F.avg_pool2d(pa, 2), F.avg_pool2d(pb, 2)))
    flow = torch.zeros((a.shape[0], 2) + tuple(pyr[-1][0].shape[-2:]), dtype=a.dtype, device=a.device)
    for i, (pa, pb) in enumerate(reversed(pyr)):
        if i:
            flow = resize_flow(flow, tuple(pa.shape[-2:]))  # type: ignore[arg-type]
        flow = _lk_level(pa, pb, flow, iters, window, reg, max_step=1.0)
        flow = gaussian_blur(flow, smooth_sigma)
    return flow


def fb_confidence(flow_fw: torch.Tensor, flow_bw: torch.Tensor, rel: float = 0.05,
                  abs_px: float = 0.5) -> torch.Tensor:
    """Forward-backward consistency of ``flow_fw = flow_a_to_b`` and ``flow_bw = flow_b_to_a``.

    Following a pixel of ``a`` to ``b`` and back should return to it; where it does not (occlusion,
    disocclusion, failed match) the confidence falls towards 0. Soft version of the Sundaram et al. (2010)
    test ``|fw + bw(x + fw)|^2 < rel (|fw|^2 + |bw|^2) + abs_px^2``.

    Returns:
        (N, 1, H, W) confidence in (0, 1] on ``a``'s grid (1 = consistent), 0 where the match leaves ``b``.
    """
    _check_flow("fb_confidence fw", flow_fw)
    _check_flow("fb_confidence bw", flow_bw)
    if flow_fw.shape != flow_bw.shape:
        raise InputError(f"fb_confidence: flows differ in shape {tuple(flow_fw.shape)} vs {tuple(flow_bw.shape)}")
    bw_at = warp_by_flow(flow_bw, flow_fw)
    err = (flow_fw + bw_at).square().sum(1, keepdim=True)
    tol = rel * (flow_fw.square().sum(1, keepdim=True) + bw_at.square().sum(1, keepdim=True)) + abs_px * abs_px
    return torch.exp(-err / tol) * inside_mask(flow_fw)
