"""De-boil: each frame's INPUT crop fused with its motion-compensated neighbours t-K..t+K, robustly.

Generative video "boils": for a few frames a second set of features ghosts in, skin texture is redrawn on every
frame, a shape blends briefly into another. What such a defect has in common is that it does not persist: the
frames around it do not show it. Per track, in aligned (template) space, for the current frame t and each
neighbour j in t-K..t+K (both directions):

1. optical flow t -> j and j -> t between the reduced INPUT crops (``temporal.flow``, 128 px for 512 crops) and
   its forward-backward consistency c_j (occlusions, failed matches get no say);
2. at the flow's resolution, the per-pixel weighted median of the current crop (weight 1) and the warped
   neighbours (weights c_j): what the window agrees on. A median keeps every change that lasts at least K+1
   frames (a blink, speech, a head turn, a lighting change: the "root signals" of a median of 2K+1) and
   drops what lasts fewer (a 3-frame ghost at K = 3, per-frame texture);
3. each sample's weight a_j: how well it agrees with that median there (blurred absolute difference against a
   tolerance well above sensor noise, well below a feature), times c_j; the current frame's own a_t;
4. at full resolution the weighted mean of the current crop and the warped neighbour crops by those weights
   (per-frame texture averages out; samples that show a ghost are left out), blended with the current crop by
   the control's value.

The result at frame t is a pure function of the input crops of frames t-K..t+K of its track (no recursion), so a
chunk that reads K frames before and after itself gives the same bits as one run. Every step is per pixel or a
fixed-order sum over the window (as in ``temporal``), so a face's result does not depend on its batch.

Convention: ``reduced`` (B, 2K+1, 3, h, w) and ``full`` (B, 2K+1, 3, S, S): index K is the current frame, 0 the
oldest; ``valid`` (B, 2K+1) bool, False where the track lacks the frame (its start or end, a gap, a cut).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..filters import gaussian_blur
from ..temporal.flow import estimate_flow, fb_confidence, inside_mask, resize_flow, warp_by_flow

__all__ = ["DEBOIL_WINDOW", "deboil_window", "weighted_median"]

# Frames each side a de-boiled frame reads, whenever --deboil is on (the value only blends): a defect lasting
# up to 3 frames is outvoted by the 4 frames that do not show it; a change of 4 frames or more passes.
DEBOIL_WINDOW = 3

# Agreement with the window's median: mean absolute RGB difference (sRGB code values) at the flow's resolution,
# after a light blur, where a sample's weight falls to exp(-1).
_AGREE_TAU = 0.05
_BLUR = 1.5


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel weighted median over dim 1: values (B, M, C, H, W), weights (B, M, 1, H, W) >= 0 (at least one
    positive per pixel). The lower weighted median; ties keep the window's order (a stable sort)."""
    m = values.shape[1]
    v, idx = torch.sort(values, dim=1, stable=True)
    w = torch.gather(weights.expand_as(values), 1, idx)
    total = w.sum(1, keepdim=True)
    acc = torch.zeros_like(w[:, 0])
    below = torch.zeros_like(w[:, 0])
    for i in range(m):  # fixed-order running sum: how many sorted samples stay below half the weight
        acc = acc + w[:, i]
        below = below + (acc < 0.5 * total[:, 0]).to(w.dtype)
    pick = below.clamp(max=m - 1).long().unsqueeze(1)
    return torch.gather(v, 1, pick)[:, 0]


def deboil_window(reduced: torch.Tensor, full: torch.Tensor, valid: torch.Tensor, amount: torch.Tensor
                  ) -> torch.Tensor:
    """De-boiled full-size crops (B, 3, S, S) of each window's current (middle) frame.

    reduced: (B, 2K+1, 3, h, w) the window's input crops at the flow's resolution; full: (B, 2K+1, 3, S, S) at
    full size; valid: (B, 2K+1) bool (the current frame is always used); amount: (B,) blend 0..1 (0 returns the
    current crop unchanged, to the bit).
    """
    if reduced.ndim != 5 or full.ndim != 5 or reduced.shape[:3] != full.shape[:3] or reduced.shape[1] % 2 != 1:
        raise InputError(f"deboil_window: windows must be (B, 2K+1, 3, ...), got {tuple(reduced.shape)} and "
                         f"{tuple(full.shape)}")
    b, n, c, h, w = reduced.shape
    k = n // 2
    cur_full = full[:, k]
    if k == 0 or b == 0:
        return cur_full.clone()
    size = tuple(full.shape[-2:])
    others = [i for i in range(n) if i != k]
    lo_cur = reduced[:, k]
    lo_nb = reduced[:, others].reshape(b * (n - 1), c, h, w)
    lo_ref = lo_cur.unsqueeze(1).expand(b, n - 1, c, h, w).reshape(b * (n - 1), c, h, w)
    flows = estimate_flow(torch.cat([lo_ref, lo_nb]), torch.cat([lo_nb, lo_ref]))
    flow_tj, flow_jt = flows[: b * (n - 1)], flows[b * (n - 1):]
    ok = valid[:, others].to(reduced.dtype).reshape(b * (n - 1), 1, 1, 1)
    conf = fb_confidence(flow_tj, flow_jt, rel=0.05, abs_px=0.75) * inside_mask(flow_tj) * ok
    warped_lo = warp_by_flow(lo_nb, flow_tj)

    # 2. What the window agrees on, at the flow's resolution (the current frame first: ties favour it).
    samples = torch.cat([lo_cur.unsqueeze(1), warped_lo.view(b, n - 1, c, h, w)], 1)
    weights = torch.cat([torch.ones_like(conf.view(b, n - 1, 1, h, w)[:, :1]), conf.view(b, n - 1, 1, h, w)], 1)
    median = weighted_median(samples, weights)

    # 3. Each sample's agreement with it; disagreement dilated so a rejected region's rim goes with it.
    diff = gaussian_blur((samples - median.unsqueeze(1)).reshape(b * n, c, h, w), _BLUR).abs().mean(1, keepdim=True)
    diff = F.max_pool2d(diff, kernel_size=3, stride=1, padding=1)
    agree = torch.exp(-(diff / _AGREE_TAU).square()).view(b, n, 1, h, w) * weights

    # 4. The weighted mean at full size (fixed order), then the blend.
    flow_full = resize_flow(flow_tj, size)  # type: ignore[arg-type]
    nb_full = warp_by_flow(full[:, others].reshape(b * (n - 1), c, *size), flow_full, mode="bicubic")
    nb_full = nb_full.view(b, n - 1, c, *size)
    up = F.interpolate(agree.view(b * n, 1, h, w), size=size, mode="bilinear", align_corners=False).view(b, n, 1, *size)
    eps = 1e-3
    num = cur_full * (up[:, 0] + eps)
    den = up[:, 0] + eps
    for i in range(n - 1):
        num = num + up[:, i + 1] * nb_full[:, i]
        den = den + up[:, i + 1]
    fused = (num / den).clamp(0.0, 1.0)
    a = amount.to(full.device, full.dtype).view(b, 1, 1, 1)
    return torch.where(a > 0, cur_full + a * (fused - cur_full), cur_full)
