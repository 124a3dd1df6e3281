"""De-boil: each frame's INPUT crop fused with its motion-compensated neighbours t-K..t+K, robustly.

Generative video "boils": for a few frames a second set of features ghosts in, skin texture is redrawn on every
frame, a shape blends briefly into another. What such a defect has in common is that it does not persist: the
frames around it do not show it. Per track, in aligned (template) space, for the current frame t and each
neighbour j in t-K..t+K (both directions):

1. optical flow t -> j and j -> t between the reduced INPUT crops (``temporal.flow``, 128 px for 512 crops) and
   its forward-backward consistency c_j (occlusions, failed matches get no say). A ghost (a cross-fade of
   shifted features) pulls the flow of its frames toward the shifted copy, by about a third of the shift, and
   the median would follow the displaced neighbours; the tracked points do not move with it. So where the
   window's points are given, each flow is compared with the one they imply (``mesh_flows``) inside the face:
   when the whole window agrees that the current frame's appearance sits displaced from its own points, the
   neighbours are registered by the points instead (a soft gate), must agree more closely with the median, and
   the current frame's vote is reduced;
2. at the flow's resolution, the per-pixel weighted median of the current crop (weight 1) and the warped
   neighbours (weights c_j): what the window agrees on. A median keeps every change that lasts at least K+1
   frames (a blink, speech, a head turn, a lighting change: the "root signals" of a median of 2K+1) and
   drops what lasts fewer (a 3-frame ghost at K = 3, per-frame texture). But where a ramp turns (a blink opening
   right after the lid was shut) the far side outvotes the current frame, a thin feature moving with it (the lash
   line) crosses each pixel in a single frame, so where the current frame lies between what the frames before and
   after it show, it gets 2 more votes; and a window clipped at the track's start or end would let its full side
   outvote the current frame wherever that side moves (an eye closing just after the track starts), so the
   missing side's votes go to the current frame everywhere (``_ramp_votes``; neither for a frame displaced from
   its points);
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

__all__ = ["DEBOIL_WINDOW", "deboil_window", "mesh_flows", "weighted_median"]

# Frames each side a de-boiled frame reads, whenever --deboil is on (the value only blends): a defect lasting
# up to 3 frames is outvoted by the 4 frames that do not show it; a change of 4 frames or more passes.
DEBOIL_WINDOW = 3

# Agreement with the window's median: mean absolute RGB difference (sRGB code values) at the flow's resolution,
# after a light blur, where a sample's weight falls to exp(-1).
_AGREE_TAU = 0.05
_BLUR = 1.5
# A frame whose appearance sits displaced from its own mesh (a ghost: a cross-fade of shifted features pulls the
# photometric flow toward the shifted copy, the tracked mesh does not move) is registered by its mesh instead,
# and its neighbours must agree more closely: the window's consistent flow-against-mesh offset, in px at 128 px,
# from which the mesh takes over (fully at _ANCHOR_HI), and the agreement tolerance then.
_ANCHOR_LO = 0.35
_ANCHOR_HI = 0.7
_AGREE_TAU_ANCHORED = 0.012
_ANCHORED_VOTE = 0.5  # how much of its vote such a frame loses (a clipped window's tie then goes to the others)
# Extra votes of a current frame that lies between the two sides of its window (``_ramp_votes``): with 2 more, a
# frame on a blink's opening outweighs the 3 frames on its far side that still show the lid shut.
_RAMP_VOTES = 2.0
# The mesh field's Gaussian radius (fraction of the crop; dense mesh, 5 landmarks) and the weight below which a
# pixel is too far from every point to count as face.
_SIGMA_MESH = 0.03
_SIGMA_LANDMARKS = 0.10
_FACE_WEIGHT = 0.5


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


def _similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst_from_src (M, 2, 3): the least-squares similarities of point sets (M, P, 2) onto (M, P, 2)."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s0, d0 = src - mu_s, dst - mu_d
    var = s0.square().sum((1, 2)).clamp(min=1e-12)
    a = (s0 * d0).sum((1, 2)) / var
    b = (s0[..., 0] * d0[..., 1] - s0[..., 1] * d0[..., 0]).sum(1) / var
    lin = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (M, 2, 2)
    t = mu_d[:, 0] - (lin @ mu_s[:, 0, :, None])[..., 0]
    return torch.cat([lin, t[..., None]], -1)


def mesh_flows(points: torch.Tensor, size: tuple[int, int], crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows current -> each neighbour from the tracked points alone, and where they speak for the face.

    points: (B, 2K+1, P, 2) each window's points in its crops' pixels (crops of ``crop`` px; index K the current
    frame); size: (h, w) of the flow. Returns flows (B, 2K, 2, h, w) in the flow's pixels (neighbours in window
    order, the current frame left out; the ``estimate_flow`` convention): the similarity of the current points
    onto the neighbour's plus their remaining offsets spread by a Gaussian (what a tracked mouth or lid moves),
    and face (B, 1, h, w) 1 where the points are dense enough to say where the face is. Per window, per point:
    no batch dependence."""
    b, n, p, _ = points.shape
    k = n // 2
    h, w = size
    pts = points.to(torch.float32) * (w / crop)
    cur = pts[:, k:k + 1].expand(b, n - 1, p, 2).reshape(-1, p, 2)
    nb = pts[:, [i for i in range(n) if i != k]].reshape(-1, p, 2)
    mats = _similarity(cur, nb)  # (M, 2, 3) neighbour_from_current
    moved = cur @ mats[:, :, :2].transpose(1, 2) + mats[:, None, :, 2]
    rest = nb - moved  # (M, P, 2) what the similarity leaves: expressions, deformations
    grid = 32
    sigma = (_SIGMA_MESH if p > 5 else _SIGMA_LANDMARKS) * w
    cx = (torch.arange(grid, dtype=torch.float32, device=pts.device) + 0.5) * (w / grid)
    cy = (torch.arange(grid, dtype=torch.float32, device=pts.device) + 0.5) * (h / grid)
    gy, gx = torch.meshgrid(cy, cx, indexing="ij")
    cells = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (g*g, 2)
    d2 = (cells[None, :, None, :] - pts[:, k, None, :, :]).square().sum(-1)  # (B, g*g, P)
    wgt = torch.exp(-d2 / (2.0 * sigma * sigma))
    norm = wgt.sum(-1, keepdim=True)
    face = (norm / _FACE_WEIGHT).clamp(max=1.0)  # (B, g*g, 1)
    wgt = wgt / (norm + 0.05)
    spread = wgt.repeat_interleave(n - 1, 0) @ rest  # (M, g*g, 2)
    spread = F.interpolate(spread.transpose(1, 2).reshape(-1, 2, grid, grid), size=size, mode="bilinear",
                           align_corners=False)
    xs = (torch.arange(w, dtype=torch.float32, device=pts.device) + 0.5).view(1, w).expand(h, w)
    ys = (torch.arange(h, dtype=torch.float32, device=pts.device) + 0.5).view(h, 1).expand(h, w)
    at = torch.stack([xs, ys], 0).reshape(1, 2, h * w)
    sim = (mats[:, :, :2] @ at + mats[:, :, 2:]).reshape(-1, 2, h, w) - at.reshape(1, 2, h, w)
    face = F.interpolate(face.transpose(1, 2).reshape(b, 1, grid, grid), size=size, mode="bilinear",
                         align_corners=False)
    return (sim + spread).view(b, n - 1, 2, h, w), (face >= 1.0).to(torch.float32)


def _anchor_gate(flow: torch.Tensor, meshflow: torch.Tensor, face: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """(B,) 0..1: how far each current frame's appearance sits displaced from its own points, consistently
    against every neighbour. flow, meshflow: (B, 2K, 2, h, w); face: (B, 1, h, w); ok: (B, 2K) bool."""
    b, m, _, h, w = flow.shape
    diff = (flow - meshflow).reshape(b, m, 2, h * w)
    inside = (face.reshape(b, 1, 1, h * w) > 0) & ok.view(b, m, 1, 1)
    per_pair = torch.where(inside, diff, torch.full_like(diff, float("nan"))).nanmedian(-1).values  # (B, 2K, 2)
    offset = per_pair.nanmedian(1).values.nan_to_num(0.0)  # (B, 2): the offset the whole window agrees on
    px = offset.norm(dim=-1) * (128.0 / w)
    return ((px - _ANCHOR_LO) / (_ANCHOR_HI - _ANCHOR_LO)).clamp(0.0, 1.0)


def _ramp_votes(cur: torch.Tensor, warped: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, k: int,
                anchored: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, h, w): extra votes for the current frame where it lies between what the frames before and after
    it show: a blink or a word in progress. A median keeps a ramp that runs the whole window, but not where it
    turns (a blink's opening right after the lid was shut) nor a thin feature that moves with it (the lash line
    crosses each pixel in one frame): there the current frame gets ``_RAMP_VOTES``. Where the window is clipped
    (the track's start or end) its full side alone would outvote the current frame wherever that side moves, so
    the missing side's votes go to the current frame at every pixel: the window votes as if it were symmetric
    (those votes also weigh in the fused mean, so per-frame texture near a track's ends is averaged less). Per-frame
    texture rarely lies between the two sides, whose means differ only where something moves. ``anchored`` (B,)
    0..1: a frame displaced from its points (a ghost) gets no extra votes."""
    b, _, _, h, w = warped.shape
    trusted = 1 - anchored.to(cur.dtype)
    missing = ((~valid[:, :k]).sum(1) - (~valid[:, k + 1:]).sum(1)).abs().to(cur.dtype) * trusted

    def side(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        wgt = conf[:, sl]
        return (warped[:, sl] * wgt).sum(1) / wgt.sum(1).clamp_min(1e-6), wgt.sum(1) > 0.5

    def apart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x - y, _BLUR).abs().mean(1, keepdim=True)

    before, has_before = side(slice(0, k))
    after, has_after = side(slice(k, 2 * k))
    # Between: the path through the current frame is no longer than the direct one (up to the tolerance).
    span = apart(after, before)
    detour = apart(cur, before) + apart(cur, after) - span
    ramp = torch.exp(-(detour.clamp_min(0.0) / _AGREE_TAU).square()) * (span > _AGREE_TAU)
    ramp = ramp * (has_before & has_after)
    return (missing.view(b, 1, 1, 1) + (_RAMP_VOTES * trusted).view(b, 1, 1, 1) * ramp).unsqueeze(1)


def deboil_window(reduced: torch.Tensor, full: torch.Tensor, valid: torch.Tensor, amount: torch.Tensor,
                  points: torch.Tensor | None = None) -> torch.Tensor:
    """De-boiled full-size crops (B, 3, S, S) of each window's current (middle) frame.

    reduced: (B, 2K+1, 3, h, w) the window's input crops at the flow's resolution; full: (B, 2K+1, 3, S, S) at
    full size; valid: (B, 2K+1) bool (the current frame is always used); amount: (B,) blend 0..1 (0 returns the
    current crop unchanged, to the bit); points: (B, 2K+1, P, 2) the window's tracked points in the full crops'
    pixels (the mesh, or 5 landmarks), or None: where given, a current frame whose flow sits consistently
    displaced from its points (a ghost) is registered by its points (``mesh_flows``).
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
    tau = torch.full((b, 1, 1, 1, 1), _AGREE_TAU, dtype=reduced.dtype, device=reduced.device)
    own = torch.ones((b, 1, 1, h, w), dtype=reduced.dtype, device=reduced.device)  # the current frame's vote
    anchored = torch.zeros((b,), dtype=reduced.dtype, device=reduced.device)
    if points is not None:
        meshflow, face = mesh_flows(points, (h, w), int(full.shape[-1]))
        gate = _anchor_gate(flow_tj.view(b, n - 1, 2, h, w), meshflow, face, valid[:, others])
        if bool((gate > 0).any()):
            g = gate.to(reduced.dtype).view(b, 1, 1, 1, 1)
            flow_tj = (flow_tj.view(b, n - 1, 2, h, w) * (1 - g) + meshflow.to(reduced.dtype) * g).view(-1, 2, h, w)
            conf = (conf.view(b, n - 1, 1, h, w) * (1 - g) + (inside_mask(flow_tj) * ok).view(b, n - 1, 1, h, w) * g
                    ).view(-1, 1, h, w)
            tau = tau + g * (_AGREE_TAU_ANCHORED - _AGREE_TAU)
            own = own * (1 - _ANCHORED_VOTE * g)  # a frame displaced from its points is suspect: a lesser vote
            anchored = gate.to(reduced.dtype)
    warped_lo = warp_by_flow(lo_nb, flow_tj)

    # 2. What the window agrees on, at the flow's resolution (the current frame first: ties favour it).
    samples = torch.cat([lo_cur.unsqueeze(1), warped_lo.view(b, n - 1, c, h, w)], 1)
    own = own + _ramp_votes(lo_cur, warped_lo.view(b, n - 1, c, h, w), conf.view(b, n - 1, 1, h, w), valid, k, anchored)
    weights = torch.cat([own, conf.view(b, n - 1, 1, h, w)], 1)
    median = weighted_median(samples, weights)

    # 3. Each sample's agreement with it; disagreement dilated so a rejected region's rim goes with it.
    diff = gaussian_blur((samples - median.unsqueeze(1)).reshape(b * n, c, h, w), _BLUR).abs().mean(1, keepdim=True)
    diff = F.max_pool2d(diff, kernel_size=3, stride=1, padding=1)
    agree = torch.exp(-(diff.view(b, n, 1, h, w) / tau).square()) * weights

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
