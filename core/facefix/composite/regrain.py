"""Regrain (``--regrain``): film grain matched to the plate, added to restored faces that came out smoother.

A restorer's face has no grain while the plate around it does, so a grain-free oval shows ("waxy"). After the
paste, per frame and in the working-space region the pipeline holds on the device:

1. **Estimate** the plate's grain in a ring around the faces, outside their matte (the plate as staged, before
   the paste), per channel: its amplitude, the robust standard deviation (median absolute value x 1.4826,
   so hair and edges in the ring barely count) of a fine high-pass ``x - blur(x, 1)``; its grain size, a
   correlation length read from the ratio of that band's energy to the next band's (``blur(x, 1) -
   blur(x, 2.5)``) against a table made on synthetic grain; and how much the channels' grain is shared.
2. **Synthesise** grain of that spectrum from counter-based noise: each value is a hash of the frame number,
   the channel and the pixel's position in the frame, so a frame's grain does not depend on the batch, the
   chunk or the region around it (reruns, ``--batch`` and farm chunks give the same bits).
3. **Add** it inside the face matte only as far as the result lacks high-frequency energy against the ring:
   per pixel and channel, ``sqrt(max(0, ring_energy - local_energy))`` (the local energy a Gaussian-weighted
   mean over ~3 px of the result's own high-pass, capped at the face's robust level so its detail does not keep
   grain off it), times the matte, times the control. A face that kept its grain, or a plate without grain, gets
   (almost) none. The grain is scaled by the exact fine-band gain of its size (``fine_gain``).

With ``--upscale`` the pipeline runs ``regrain_frame`` on the upscaled frame after its paste: the ring is read on
the upscaled plate and the grain made at the output's pixels.

Everything works in frame pixels, where grain lives: a face's crop is resampled, so its grain size there
depends on the face's size. Pixels outside the matte are not touched.
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

if TYPE_CHECKING:
    from ..faces import FaceBatch
    from ..gpu import Regions

__all__ = ["regrain_frame", "regrain_regions", "grain_noise", "grain_stats", "highpass_energy", "fine_gain",
           "ring_px"]

HP_SIGMA = 1.0  # the fine band: x - blur(x, HP_SIGMA)
BAND_SIGMA = 2.5  # the next band: blur(x, HP_SIGMA) - blur(x, BAND_SIGMA)
LOCAL_SIGMA = 3.0  # px: how locally the result's own high-frequency energy is measured
FLOOR = 1 / 255 / math.sqrt(12)  # 8-bit quantisation noise: the written face gets its own, so it is no grain
RING = (0.25, 0.5)  # the ring, from its gap to its outer edge, in fractions of the face's width in the frame
EDGE = 4  # px of the region's border left out of the ring (the blurs replicate the border)
# Grain sizes (Gaussian sigma, px) tabled: 0.1 px apart up to 1.6 (the band ratio changes fastest there), then 0.2.
CORR_GRID = tuple(round(0.1 * i, 1) for i in range(17)) + tuple(round(1.8 + 0.2 * i, 1) for i in range(8))
_M = 0xFFFFFFFF
_MAD = 1.4826  # standard deviation / median absolute value, for Gaussian values


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (int64 tensors holding values below 2**32; no product overflows)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M
    return (x >> 16) ^ x


def _hash_int(x: int) -> int:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M
    return (x >> 16) ^ x


def grain_noise(frame: int, y0: int, x0: int, h: int, w: int, channels: int, device: torch.device) -> torch.Tensor:
    """(channels, h, w) standard normal values for the frame pixels (x0.., y0..) of frame ``frame``: a function
    of the frame number, channel and absolute position only (Box-Muller on two hashes)."""
    ys = (torch.arange(y0, y0 + h, device=device, dtype=torch.int64) & _M).view(h, 1)
    xs = (torch.arange(x0, x0 + w, device=device, dtype=torch.int64) & _M).view(1, w)
    out = []
    for c in range(channels):
        u = []
        for k in (2 * c, 2 * c + 1):
            seed = _hash_int((_hash_int(int(frame) & _M) + 0x9E3779B9 * (k + 1)) & _M)
            hv = _hash32((_hash32((ys + seed) & _M) + xs) & _M)
            u.append((hv.to(torch.float32) + 0.5) * (1.0 / 4294967296.0))
        out.append(torch.sqrt(-2.0 * torch.log(u[0].clamp(1e-12, 1.0))) * torch.cos((2 * math.pi) * u[1]))
    return torch.stack(out)


def _bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine and the next band of (N, C, H, W)."""
    lo = gaussian_blur(x, HP_SIGMA)
    return x - lo, lo - gaussian_blur(x, BAND_SIGMA)


def highpass_energy(x: torch.Tensor) -> torch.Tensor:
    """Per pixel, the energy of the fine band of (N, C, H, W), averaged over ~LOCAL_SIGMA px."""
    fine, _ = _bands(x)
    return gaussian_blur(fine * fine, LOCAL_SIGMA)


def _robust_std(values: torch.Tensor) -> torch.Tensor:
    """(C, K) -> (C,): 1.4826 x the median absolute value (the values are zero-mean band-passes)."""
    return values.abs().median(dim=1).values * _MAD


FLAT = 0.5  # the share of the ring, per channel, with the least band-pass energy, where the grain is measured


def _flat_deviations(fine: torch.Tensor, nxt: torch.Tensor, ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,) robust deviations of the fine and the next band of (1, C, H, W) over the flattest ``FLAT`` of
    ``ring`` (H, W), per channel: hair, edges and texture of the plate are left out, grain is everywhere."""
    energy = gaussian_blur(fine * fine + nxt * nxt, LOCAL_SIGMA)[0]
    a, b = [], []
    for c in range(fine.shape[1]):
        e = energy[c][ring]
        flat = ring & (energy[c] <= torch.quantile(e, FLAT))
        a.append(_robust_std(fine[0, c][flat][None])[0])
        b.append(_robust_std(nxt[0, c][flat][None])[0])
    return torch.stack(a), torch.stack(b)


@functools.lru_cache(maxsize=1)
def _spectrum_table() -> tuple[np.ndarray, np.ndarray]:
    """For each grain size in CORR_GRID, on unit white noise blurred by that size (made once, on the CPU, with
    the runtime's filters and selection): the fine/next ratio of ``_flat_deviations`` and the flat selection's
    bias on the fine band's deviation (against ``fine_gain``)."""
    white = grain_noise(0, 0, 0, 256, 256, 1, torch.device("cpu"))[None]
    ratio, bias = [], []
    inner = torch.zeros(224, 224, dtype=torch.bool)
    inner[EDGE:-EDGE, EDGE:-EDGE] = True
    for c in CORR_GRID:
        g = gaussian_blur(white, c)[..., 16:-16, 16:-16]
        fine, nxt = _bands(g)
        a, b = _flat_deviations(fine, nxt, inner)
        ratio.append(float(a[0] / b[0]))
        bias.append(float(a[0]) / fine_gain(c))
    return np.array(ratio), np.array(bias)


@functools.lru_cache(maxsize=512)
def fine_gain(size: float) -> float:
    """The fine band's standard deviation of unit white noise blurred by ``size`` px: exact, from the filters'
    impulse response (the discrete kernels make it far from linear in the size, so no table)."""
    r = int(math.ceil(3 * (size + BAND_SIGMA))) + 4
    delta = torch.zeros(1, 1, 2 * r + 1, 2 * r + 1, dtype=torch.float32)
    delta[0, 0, r, r] = 1.0
    fine, _ = _bands(gaussian_blur(delta, size))
    return float(fine.double().pow(2).sum().sqrt())


def grain_stats(plate: torch.Tensor, ring: torch.Tensor) -> tuple[list[float], list[float], float]:
    """The grain of ``plate`` (C, H, W) over the pixels ``ring`` (H, W) bool: per channel the fine band's robust
    deviation and the grain size (Gaussian sigma, px), and the channels' shared fraction of it (0..0.95)."""
    fine, nxt = _bands(plate[None].float())
    s1, s2 = _flat_deviations(fine, nxt, ring)
    ratio, bias = _spectrum_table()
    grid = np.array(CORR_GRID)
    r = (s1 / s2.clamp_min(1e-12)).tolist()
    # The ratio falls as the grain grows: interpolate the size on the reversed table.
    sizes = [float(np.interp(v, ratio[::-1], grid[::-1])) for v in r]
    stds = [float(a) / float(np.interp(c, grid, bias)) for a, c in zip(s1.tolist(), sizes)]
    # Shared fraction: the mean correlation of the channels' fine band over the ring, past 3 deviations clipped.
    f = fine[0][:, ring]
    if f.shape[0] > 1:
        z = (f / f.std(dim=1, keepdim=True).clamp_min(1e-12)).clamp(-3.0, 3.0)
        z = z - z.mean(dim=1, keepdim=True)
        cov = z @ z.T
        d = cov.diagonal().clamp_min(1e-12).sqrt()
        corr = cov / (d[:, None] * d[None, :])
        k = f.shape[0]
        rho = float((corr.sum() - corr.diagonal().sum()) / (k * (k - 1)))
    else:
        rho = 0.0
    return stds, sizes, min(0.95, max(0.0, rho))


def _grain_energy(out: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(3, h, w): per pixel the high-frequency energy ``out`` already holds that counts as grain: its local
    energy, but no more than the face's typical level (the robust deviation over ``inside``), so the face's
    own detail (eyes, lips, hair edges: sparse, strong) does not keep grain off it; film grain lies over detail."""
    fine, _ = _bands(out[None].float())
    local = gaussian_blur(fine * fine, LOCAL_SIGMA)[0]
    if int(inside.sum()) < 16:
        return local
    level = _robust_std(fine[0][:, inside]).square().view(-1, 1, 1)
    return torch.minimum(local, level)


def _grow(mask: torch.Tensor, px: float) -> torch.Tensor:
    """(H, W) bool ``mask`` grown by ``px`` (a square, two separable max-pools)."""
    r = int(min(256, max(1, round(px))))
    grown = F.max_pool2d(mask[None, None].float(), (1, 2 * r + 1), 1, (0, r))
    return F.max_pool2d(grown, (2 * r + 1, 1), 1, (r, 0))[0, 0] > 0


def regrain_frame(out: torch.Tensor, plate: torch.Tensor, alpha: torch.Tensor, amount: float, frame: int,
                  origin: tuple[int, int], ring_px: tuple[float, float]) -> None:
    """In place: grain matched to ``plate`` added to ``out`` (both (3, h, w), one frame's region; ``plate`` as it
    was before the faces were pasted) where ``alpha`` (h, w), the faces' composited matte, is above 0.
    ``origin``: the region's (x, y) in its frame; ``ring_px``: the ring's gap from the matte and its outer edge,
    in px (the plate just outside a face may be as waxy as the face)."""
    h, w = alpha.shape
    if amount <= 0 or h <= 2 * EDGE or w <= 2 * EDGE:
        return
    face = alpha > 0
    ring = _grow(face, ring_px[1]) & ~_grow(face, ring_px[0])
    ring[:EDGE] = False
    ring[-EDGE:] = False
    ring[:, :EDGE] = False
    ring[:, -EDGE:] = False
    if int(ring.sum()) < 64:  # too little plate to tell its grain
        return
    stds, sizes, rho = grain_stats(plate, ring)
    target = [max(0.0, s * s - FLOOR * FLOOR) for s in stds]
    if not any(target):
        return
    m = int(math.ceil(2.5 * max(sizes))) + 1
    x0, y0 = origin
    white = grain_noise(frame, y0 - m, x0 - m, h + 2 * m, w + 2 * m, 4, out.device)
    mixed = math.sqrt(1.0 - rho) * white[:3] + math.sqrt(rho) * white[3:]
    grain = torch.stack([
        gaussian_blur(mixed[c][None, None], sizes[c])[0, 0, m:m + h, m:m + w]
        / fine_gain(round(sizes[c], 3))
        for c in range(3)])
    have = _grain_energy(out, alpha > 0.5)
    want = torch.tensor(target, device=out.device, dtype=torch.float32).view(3, 1, 1)
    add = (want - have).clamp_min(0.0).sqrt() * grain * (alpha * float(amount))
    out.copy_(torch.where(face, out + add, out))


def ring_px(crop_from_frame: np.ndarray, size: int, up: int = 1) -> tuple[float, float]:
    """The ring's gap from the matte and its outer edge, in output px, for the faces whose (F, 2, 3)
    ``crop_from_frame`` (crops of ``size``) share a frame: it follows the frame's largest face; ``up``: the
    output's scale over the frame."""
    from ..geometry import TEMPLATE_SIZE
    from . import TEMPLATE_FACE_PX

    scale = np.sqrt(np.abs(np.linalg.det(np.asarray(crop_from_frame, np.float64)[:, :, :2])))
    face_px = float((TEMPLATE_FACE_PX * size / TEMPLATE_SIZE / scale).max()) * up
    return RING[0] * face_px, RING[1] * face_px


def regrain_regions(regions: Regions, plate: torch.Tensor, alphas: torch.Tensor, amounts: Sequence[float],
                    numbers: Sequence[int], batch: FaceBatch, size: int) -> None:
    """``regrain_frame`` for every frame of a batch whose amount is above 0, in place in ``regions``; ``plate``:
    ``regions.flat`` before the paste, ``alphas`` the paste's mattes (``paste_regions``), ``amounts`` and
    ``numbers`` per frame, ``size`` the crops' (``batch.crop_from_frame`` maps frames to them)."""
    for b, sel in enumerate(batch.frame_slices(len(amounts))):
        (h, w), start = regions.shapes[b], regions.starts[b]
        if amounts[b] <= 0 or sel.stop <= sel.start or not h * w:
            continue
        before = plate[3 * start:3 * (start + h * w)].view(h, w, 3).permute(2, 0, 1)
        regrain_frame(regions.chw(b), before, regions.pixels(alphas, b), float(amounts[b]), int(numbers[b]),
                      regions.origins[b], ring_px(batch.crop_from_frame[sel], size))
