"""``facefix.temporal.stabilise.blend_past`` as one CUDA kernel (Triton).

Written with torch operations, the blend upsamples every past frame's flow and weight to the crop's size,
builds a sampling grid, warps the past crop and accumulates: per face and past frame some 20 MB written
and read again (4 faces a frame, 32 frames: most of the stabiliser's GPU time). Here each output pixel
interpolates its flow and weight from the small maps, samples the past crops itself and writes only the
result. The arithmetic is that of the torch steps (bilinear as ``F.interpolate``, bicubic with border
padding as ``F.grid_sample``, sums in window order), in another order of operations: the two agree to
float rounding (tested), and each is deterministic and independent of the batch it runs in.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interp_triton import cubic_weights

__all__ = ["blend_past"]

_BLOCK = 256


@triton.jit
def _bilinear(base, sy, sx, fh, fw):
    """Samples of a (fh, fw) map at float source positions (already clamped at 0), as F.interpolate."""
    y0 = sy.to(tl.int32)
    x0 = sx.to(tl.int32)
    y1 = tl.where(y0 < fh - 1, y0 + 1, y0)
    x1 = tl.where(x0 < fw - 1, x0 + 1, x0)
    ly = sy - y0.to(tl.float32)
    lx = sx - x0.to(tl.float32)
    top = (1.0 - lx) * tl.load(base + y0 * fw + x0) + lx * tl.load(base + y0 * fw + x1)
    bottom = (1.0 - lx) * tl.load(base + y1 * fw + x0) + lx * tl.load(base + y1 * fw + x1)
    return (1.0 - ly) * top + ly * bottom


@triton.jit
def _cubic_row(plane, row, c0, c1, c2, c3, w0, w1, w2, w3, mask):
    return (w0 * tl.load(plane + row + c0, mask=mask, other=0.0) + w1 * tl.load(plane + row + c1, mask=mask, other=0.0)
            + w2 * tl.load(plane + row + c2, mask=mask, other=0.0) + w3 * tl.load(plane + row + c3, mask=mask, other=0.0))


@triton.jit
def _blend_kernel(cur_ptr, past_ptr, flow_ptr, weight_ptr, out_ptr, h, w, fh, fw, low_y, low_x, up_y, up_x,
                  own_drop, inv_own_full, cur_b, cur_c, cur_y, past_b, past_i, past_c, past_y,
                  K: tl.constexpr, BLOCK: tl.constexpr):
    # One output pixel (all three channels) of one face per lane; program axis 1 is the face.
    b = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = p < h * w
    p = tl.where(live, p, 0)
    y = p // w
    x = p - y * w
    yf = y.to(tl.float32)
    xf = x.to(tl.float32)
    # Where this pixel falls in the flow's grid (align_corners=False, clamped at 0 like F.interpolate).
    sy = tl.maximum((yf + 0.5) * low_y - 0.5, 0.0)
    sx = tl.maximum((xf + 0.5) * low_x - 0.5, 0.0)
    cur = cur_ptr + b * cur_b + y * cur_y + x
    n0 = tl.zeros([BLOCK], tl.float32)
    n1 = tl.zeros([BLOCK], tl.float32)
    n2 = tl.zeros([BLOCK], tl.float32)
    den = tl.zeros([BLOCK], tl.float32)
    plane_px = fh * fw
    for i in tl.static_range(K):
        pair = b * K + i
        flow = flow_ptr + pair * 2 * plane_px
        fx = _bilinear(flow, sy, sx, fh, fw) * up_x
        fy = _bilinear(flow + plane_px, sy, sx, fh, fw) * up_y
        wt = _bilinear(weight_ptr + pair * plane_px, sy, sx, fh, fw)
        # Bicubic sample of the past crop at the displaced pixel centre, taps clamped to the border.
        ix = xf + fx
        iy = yf + fy
        ix0 = tl.floor(ix)
        iy0 = tl.floor(iy)
        wx0, wx1, wx2, wx3 = cubic_weights(ix - ix0)
        wy0, wy1, wy2, wy3 = cubic_weights(iy - iy0)
        last_x = (w - 1).to(tl.float32)
        last_y = (h - 1).to(tl.float32)
        c0 = tl.minimum(tl.maximum(ix0 - 1.0, 0.0), last_x).to(tl.int32)
        c1 = tl.minimum(tl.maximum(ix0, 0.0), last_x).to(tl.int32)
        c2 = tl.minimum(tl.maximum(ix0 + 1.0, 0.0), last_x).to(tl.int32)
        c3 = tl.minimum(tl.maximum(ix0 + 2.0, 0.0), last_x).to(tl.int32)
        r0 = tl.minimum(tl.maximum(iy0 - 1.0, 0.0), last_y).to(tl.int32) * past_y
        r1 = tl.minimum(tl.maximum(iy0, 0.0), last_y).to(tl.int32) * past_y
        r2 = tl.minimum(tl.maximum(iy0 + 1.0, 0.0), last_y).to(tl.int32) * past_y
        r3 = tl.minimum(tl.maximum(iy0 + 2.0, 0.0), last_y).to(tl.int32) * past_y
        frame = past_ptr + b * past_b + i * past_i
        for ch in tl.static_range(3):
            plane = frame + ch * past_c
            v = (wy0 * _cubic_row(plane, r0, c0, c1, c2, c3, wx0, wx1, wx2, wx3, live)
                 + wy1 * _cubic_row(plane, r1, c0, c1, c2, c3, wx0, wx1, wx2, wx3, live)
                 + wy2 * _cubic_row(plane, r2, c0, c1, c2, c3, wx0, wx1, wx2, wx3, live)
                 + wy3 * _cubic_row(plane, r3, c0, c1, c2, c3, wx0, wx1, wx2, wx3, live))
            if ch == 0:
                n0 += wt * v
            elif ch == 1:
                n1 += wt * v
            else:
                n2 += wt * v
        den += wt
    # The current frame's own weight: 1 - (1 - own_floor) min(W / full, 1).
    own = 1.0 - own_drop * tl.minimum(den * inv_own_full, 1.0)
    den += own
    out = out_ptr + b * 3 * h * w + p
    tl.store(out, (n0 + own * tl.load(cur, mask=live, other=0.0)) / den, mask=live)
    tl.store(out + h * w, (n1 + own * tl.load(cur + cur_c, mask=live, other=0.0)) / den, mask=live)
    tl.store(out + 2 * h * w, (n2 + own * tl.load(cur + 2 * cur_c, mask=live, other=0.0)) / den, mask=live)


def blend_past(current: torch.Tensor, past: torch.Tensor, flow_lo: torch.Tensor, weight_lo: torch.Tensor,
               own_floor: float = 1.0, own_full: float = 2.0) -> torch.Tensor:
    """See ``facefix.temporal.stabilise.blend_past``: current (B, 3, S, S), past (B, k, 3, S, S) float32
    (unit column stride), flow_lo (B*k, 2, fh, fw), weight_lo (B*k, 1, fh, fw); the current frame's own weight
    falls from 1 to ``own_floor`` as the past weights' sum grows to ``own_full``; returns (B, 3, S, S)."""
    b, k, c, h, w = past.shape
    if c != 3 or current.shape != (b, 3, h, w):
        raise ValueError(f"blend_past: crops {tuple(current.shape)} and {tuple(past.shape)} do not match")
    current, past = _unit_columns(current), _unit_columns(past)
    flow_lo, weight_lo = flow_lo.float().contiguous(), weight_lo.float().contiguous()
    fh, fw = flow_lo.shape[-2:]
    out = torch.empty((b, 3, h, w), dtype=torch.float32, device=current.device)
    if b == 0:
        return out
    grid = (triton.cdiv(h * w, _BLOCK), b)
    _blend_kernel[grid](current, past, flow_lo, weight_lo, out, h, w, fh, fw, fh / h, fw / w, h / fh, w / fw,
                        1.0 - float(own_floor), 1.0 / float(own_full),
                        current.stride(0), current.stride(1), current.stride(2),
                        past.stride(0), past.stride(1), past.stride(2), past.stride(3), K=k, BLOCK=_BLOCK)
    return out


def _unit_columns(t: torch.Tensor) -> torch.Tensor:
    t = t.float()
    return t if t.stride(-1) == 1 else t.contiguous()
