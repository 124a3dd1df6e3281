"""Temporal stabilisation of restored face crops along a track, in aligned (512 template) space.

Method: motion-compensated, confidence-weighted temporal blending over a short sliding window.

Per-frame face restorers hallucinate fresh detail in every frame, so a restored face "boils": the same
skin, eyelashes and hair get different high-frequency texture each frame. Within a track the aligned crops
show the same face at nearly the same place (alignment removed translation, rotation and zoom), so the
restored crops of the last K frames are K extra observations of the current frame's detail once the residual
motion is compensated. For the current frame t and each past frame j in t-K..t-1:

1. optical flow ``t -> j`` (and ``j -> t``) between the aligned INPUT crops (not the restored ones, whose
   boiling texture would corrupt the match), at a reduced resolution (128 px for 512 crops) and upsampled; a
   wider integration window and a smoother field than ``estimate_flow``'s defaults, so a boiling input's texture
   does not steer it;
2. restored crop j warped onto frame t's grid by that flow;
3. a per-pixel weight = age weight rho^(t-j) x forward-backward flow consistency (occlusions, failed
   matches) x input agreement: how well the warped INPUT crop j matches input t. Where the input itself
   changed (a blink, an opening mouth, a fast head turn the flow could not follow, a light change), the
   past frame is rejected there, so real change passes through unsmeared. The agreement map is dilated so
   rejection covers the edges of a changed region as well;
4. output = (c restored_t + sum_j w_j warp(restored_j)) / (c + sum_j w_j), where the current frame's own
   weight c is 1 where few past frames are admitted and falls (to 0.4 at strength 1) where the window agrees
   with it: where the gate has rejected the past, the current frame is the output whatever c is, and where
   several past frames agree, the current frame's freshly hallucinated detail is one voice among them.

Why this and not a recursive filter or gradient-domain blind consistency (Bonneel 2015, Lai 2018): those
propagate an unbounded recursive state (the previous OUTPUT), so a farm chunk could never reproduce an
uninterrupted run, and an error (a ghost) persists for many frames. Here the output at frame t is a pure
function of the inputs and restored crops of frames t-K..t: a chunk that starts with K pre-roll frames
(``preroll_frames``) gives bit-identical output. Averaging n independent boils cuts their frame-to-frame
difference several fold, while the input-agreement weight keeps the result anchored to what the current
frame really shows. All operations are per-pixel or fixed-order sums (see ``facefix.temporal.flow``), so
the result of one face does not depend on the batch it is computed in, on CPU or CUDA.

Convention: crops (B, K+1, 3, S, S) float32, index 0 = oldest frame t-K, index -1 = current frame t; all
crops of a window are in the same aligned (template) pixel space; ``valid[b, i]`` is False for a frame the
track does not have (a gap, or before its first frame / a shot cut).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError, SettingsError
from ..tensors import kernels_for, to_device
from .flow import (
    downsample,
    estimate_flow,
    fb_confidence,
    gaussian_blur,
    inside_mask,
    resize_flow,
    warp_by_flow,
)

__all__ = ["MAX_PREROLL", "preroll_frames", "age_weights", "own_weight_floor", "stabilise_window", "stabilise_reduced",
           "flow_weights", "compiled_flow_weights", "blend_past", "blend_past_steps", "TrackHistory", "FLOW_SIZE",
           "reduce_for_flow"]

MAX_PREROLL = 6

# Input agreement is judged on STRUCTURE, not texture. A boiling input (fresh fine texture on every frame:
# generative video, heavy grain) changes at every pixel between frames; gated on that raw change (the first
# version: the difference blurred at 0.7 px, tau 0.035) the gate closed on most of the face, and the restorer,
# which turns that input boil into output boil, was barely averaged. So the agreement reads a low-pass of the
# motion-compensated input change (Gaussian, in pixels at the flow's resolution, 128 px for 512 crops): texture that
# differs frame to frame averages out of the blurred difference (sigma 1.5 cuts independent per-pixel boil about
# 5x), while a blink, a mouth opening, an occluder or a turn the flow missed are regions several pixels wide
# and keep most of their change.
_FLOW_SIGMA = 0.0  # low-pass of the inputs the flow runs on (1.0 cost the closed-eye frames of a blink precision)
_AGREE_SIGMA = 1.5  # low-pass of the motion-compensated input difference the agreement reads
# Mean RGB difference of that low-passed change (sRGB code values, 0..1) where a past frame's weight falls to
# exp(-1): above what boil and sensor noise leave after the low-pass, below a blink or a mouth opening (0.02 and
# 0.035 were tried: see benchmarks/temporal_realesrgan.py).
_AGREE_TAU = 0.03
FLOW_SIZE = 128  # px the flow runs at (for 512 crops)
# The stabiliser's flow (at FLOW_SIZE) integrates over 7x7 px (radius 3, not 2) and is smoothed at 2 px (not 1) per
# pyramid level. The default flow follows a boiling input's texture: on realesrgan-face's output of a boiling
# close-up (benchmarks/temporal_realesrgan.py, development seeds 1-2), the flow of the boil-free input under it
# would lower flicker by 49 % instead of 42 %; this flow lowers it by 45 %, and on the clean clip the smoother field
# no longer bends to follow a closing eyelid (the gate rejects the blink instead: eye band 39.6 -> 42.5 dB).
_FLOW_WINDOW = 3
_FLOW_SMOOTH = 2.0
# The current frame's own weight c falls from 1 towards own_weight_floor(strength) as the past frames' summed weight
# at a pixel grows to _OWN_FULL: where the gate admits the window (boil, hallucinated texture), the current frame
# counts as about one past frame; where it admits little (a blink's edge, a part-rejected region), c stays near 1,
# so the few past frames admitted there do not gain ground. A constant c reached about the same flicker for more
# blink: c = 0.6, 50 % lower for 1.5 dB more off the eye band than this ramp; c = 0.5, 51 % for 2.3 dB (development
# seeds 1-2, with this flow).
_OWN_FULL = 2.0


def _check_strength(strength: float) -> float:
    s = float(strength)
    if not (0.0 <= s <= 1.0):
        raise SettingsError(f"--temporal: {strength!r} is outside 0..1")
    return s


def preroll_frames(strength: float) -> int:
    """Past frames K the stabiliser reads at ``strength`` (0 -> 0; 0.5 -> 4; 1 -> 6).

    A farm chunk must start restoring K frames before its first output frame.
    """
    s = _check_strength(strength)
    if s <= 0.0:
        return 0
    return min(MAX_PREROLL, 2 + round(4 * s))


def own_weight_floor(strength: float) -> float:
    """The current frame's own weight where the past is fully admitted (1 at strength 0, 0.4 at 1)."""
    return 1.0 - 0.6 * _check_strength(strength)


def age_weights(strength: float) -> list[float]:
    """Weight of the past frames t-1, t-2, ..., t-K relative to the current frame's 1."""
    s = _check_strength(strength)
    rho = 0.6 + 0.3 * s
    return [rho**a for a in range(1, preroll_frames(s) + 1)]


def _check_window(inputs: torch.Tensor, restored: torch.Tensor, valid: torch.Tensor) -> None:
    if inputs.ndim != 5 or inputs.shape[2] != 3:
        raise InputError(f"stabilise_window: inputs must be (B, K+1, 3, S, S), got {tuple(inputs.shape)}")
    if restored.shape != inputs.shape:
        raise InputError(
            f"stabilise_window: restored {tuple(restored.shape)} does not match inputs {tuple(inputs.shape)}")
    if valid.shape != inputs.shape[:2] or valid.dtype != torch.bool:
        raise InputError(f"stabilise_window: valid must be a bool (B, K+1) tensor, got {valid.dtype} "
                         f"{tuple(valid.shape)}")
    if not (inputs.is_floating_point() and restored.is_floating_point()):
        raise InputError("stabilise_window: inputs and restored must be floating-point tensors")


def stabilise_window(inputs: torch.Tensor, restored: torch.Tensor, valid: torch.Tensor, strength: float, *,
                     flow_size: int = FLOW_SIZE) -> torch.Tensor:
    """Stabilised restored crop of the current (last) frame of each window.

    Args:
        inputs: (B, K+1, 3, S, S) aligned INPUT crops (what the restorer saw), oldest..current.
        restored: (B, K+1, 3, S, S) the restorer's raw outputs for the same frames (not stabilised ones).
        valid: (B, K+1) bool; False for frames missing from the track. The current frame is always used.
        strength: 0..1; 0 returns ``restored[:, -1]`` unchanged. Only the last ``preroll_frames(strength)``
            past frames are read, whatever K the window has.
        flow_size: resolution the flow runs at (capped at S).

    Returns:
        (B, 3, S, S) float, on the device of ``restored``.
    """
    _check_window(inputs, restored, valid)
    s = _check_strength(strength)
    k = min(preroll_frames(s), inputs.shape[1] - 1)
    if k == 0:
        return restored[:, -1].clone()
    b, _, c, h, w = inputs.shape
    reduced = reduce_for_flow(inputs[:, -k - 1:].reshape(b * (k + 1), c, h, w), flow_size)
    return stabilise_reduced(reduced.view(b, k + 1, *reduced.shape[1:]), restored[:, -k - 1:], valid[:, -k - 1:], s)


def reduce_for_flow(crops: torch.Tensor, flow_size: int = FLOW_SIZE) -> torch.Tensor:
    """(N, C, S, S) input crops area-reduced to the resolution the flow runs at (capped at S)."""
    h, w = crops.shape[-2:]
    return downsample(crops, (min(flow_size, h), min(flow_size, w)))


def stabilise_reduced(reduced: torch.Tensor, restored: torch.Tensor, valid: torch.Tensor, strength: float,
                      weights: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """``stabilise_window`` with the input crops already area-reduced to the flow's resolution
    (``downsample`` of each crop; the same numbers, so the same result). The pipeline keeps only these
    small crops of past frames: the full-size inputs are never read again.

    reduced: (B, K+1, 3, fh, fw); restored: (B, K+1, 3, S, S); valid: (B, K+1) bool. ``weights``:
    ``flow_weights`` (the default) or ``compiled_flow_weights()``.
    """
    weights = weights or flow_weights
    if reduced.ndim != 5 or reduced.shape[:3] != restored.shape[:3]:
        raise InputError(f"stabilise_reduced: reduced inputs {tuple(reduced.shape)} do not match restored "
                         f"{tuple(restored.shape)}")
    _check_window(restored, restored, valid)
    s = _check_strength(strength)
    k = min(preroll_frames(s), restored.shape[1] - 1)
    cur_restored = restored[:, -1]
    if k == 0:
        return cur_restored.clone()
    b, _, c = restored.shape[:3]
    fh, fw = reduced.shape[-2:]

    past_rs = restored[:, -k - 1:-1]  # (B, k, 3, S, S), oldest..t-1
    ok = valid[:, -k - 1:-1].to(restored.dtype)  # (B, k)
    ages = to_device(age_weights(s)[:k][::-1], restored.device, restored.dtype)  # oldest first

    lo_cur = reduced[:, -1]  # (B, 3, fh, fw)
    lo_past = reduced[:, -k - 1:-1].reshape(b * k, c, fh, fw)
    lo_ref = lo_cur.unsqueeze(1).expand(b, k, c, fh, fw).reshape(b * k, c, fh, fw)
    prior = ok.reshape(b * k, 1, 1, 1) * ages.repeat(b).view(b * k, 1, 1, 1)
    flow_tj, weight_lo = weights(lo_ref, lo_past, prior)
    return blend_past(cur_restored, past_rs, flow_tj, weight_lo, own_weight_floor(s))


def flow_weights(lo_ref: torch.Tensor, lo_past: torch.Tensor, prior: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 and 3 at the flow's resolution: for N (current, past) pairs of reduced input crops (N, 3, fh,
    fw), the flows t -> j (N, 2, fh, fw) and each past pixel's weight (N, 1, fh, fw), ``prior`` (N, 1, 1, 1:
    age weight, 0 for a missing frame) times flow consistency and input agreement. Per-pixel steps only,
    several hundred small ones: ``compiled_flow_weights`` fuses them."""
    n = lo_ref.shape[0]
    # Forward (t -> j) and backward (j -> t) flows in one batched call (on inputs low-passed by _FLOW_SIGMA; 0 = off).
    smooth = gaussian_blur(torch.cat([lo_ref, lo_past]), _FLOW_SIGMA)
    flows = estimate_flow(smooth, torch.cat([smooth[n:], smooth[:n]]), window=_FLOW_WINDOW,
                          smooth_sigma=_FLOW_SMOOTH)
    flow_tj, flow_jt = flows[:n], flows[n:]

    conf = fb_confidence(flow_tj, flow_jt, rel=0.05, abs_px=0.75)
    # Input agreement on structure: low-pass the signed motion-compensated difference (averages texture boil and
    # noise away, keeps real change), then dilate the mismatch so the whole changed region and its rim are rejected.
    diff = gaussian_blur(warp_by_flow(lo_past, flow_tj) - lo_ref, _AGREE_SIGMA).abs().mean(1, keepdim=True)
    diff = F.max_pool2d(diff, kernel_size=5, stride=1, padding=2)
    agree = torch.exp(-(diff / _AGREE_TAU).square())
    weight_lo = conf * agree * inside_mask(flow_tj)
    return flow_tj, weight_lo * prior


@functools.lru_cache(maxsize=1)
def compiled_flow_weights() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``flow_weights`` through ``torch.compile`` (made once per process, for any number of pairs): a few fused
    kernels instead of several hundred launches a batch, which on CUDA cost the thread that feeds the GPU more
    than the GPU spends on them. Still per-pixel, so a face's result does not depend on its batch."""
    compiled = torch.compile(flow_weights)

    def run(lo_ref: torch.Tensor, lo_past: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for t in (lo_ref, lo_past, prior):  # one graph for any number of pairs; sizes and constants fixed
            torch._dynamo.maybe_mark_dynamic(t, 0)
        return compiled(lo_ref, lo_past, prior)  # type: ignore[no-any-return]
    return run


def blend_past(current: torch.Tensor, past: torch.Tensor, flow_lo: torch.Tensor, weight_lo: torch.Tensor,
               own_floor: float = 1.0) -> torch.Tensor:
    """The stabilised crops: each current crop averaged with its past ones, warped onto it.

    current: (B, 3, S, S) restored crops of frame t; past: (B, k, 3, S, S) restored crops of t-k..t-1;
    flow_lo (B*k, 2, fh, fw) and weight_lo (B*k, 1, fh, fw), at the flow's resolution: flow t -> j and the
    weight of each past pixel. Both are upsampled (bilinear), the past crops warped (bicubic, border) and
    summed in window order: W = sum_j w_j, (c current + sum_j w_j warp(past_j)) / (c + W), with the current
    frame's own weight c = 1 - (1 - own_floor) min(W / 2, 1) (``own_floor`` 1: c = 1, a plain weighted mean).

    On CUDA (with Triton) one kernel does it all (``facefix.temporal.blend_triton``): the full-size flows,
    weights and warped crops are never written, which is most of the stabiliser's memory traffic.
    """
    own_floor = _check_own_floor(own_floor)
    if kernels_for(current):
        from .blend_triton import blend_past as kernel

        return kernel(current, past, flow_lo, weight_lo, own_floor, _OWN_FULL)
    return blend_past_steps(current, past, flow_lo, weight_lo, own_floor)


def _check_own_floor(own_floor: float) -> float:
    f = float(own_floor)
    if not (0.0 < f <= 1.0):
        raise SettingsError(f"blend_past: own_floor must be in (0, 1], got {own_floor!r}")
    return f


def blend_past_steps(current: torch.Tensor, past: torch.Tensor, flow_lo: torch.Tensor, weight_lo: torch.Tensor,
                     own_floor: float = 1.0) -> torch.Tensor:
    """``blend_past`` in torch operations (any device): what the CUDA kernel is tested against."""
    b, k, c, h, w = past.shape
    flow_full = resize_flow(flow_lo, (h, w))
    weight = F.interpolate(weight_lo, size=(h, w), mode="bilinear", align_corners=False)
    warped = warp_by_flow(past.reshape(b * k, c, h, w), flow_full, mode="bicubic")

    weight = weight.view(b, k, 1, h, w)
    warped = warped.view(b, k, c, h, w)
    # Fixed-order accumulation over the window (no reduction kernels whose order could vary).
    num = torch.zeros_like(current)
    den = torch.zeros_like(weight[:, 0])
    for i in range(k):
        num.addcmul_(weight[:, i], warped[:, i])  # one fused pass per past frame
        den.add_(weight[:, i])
    own = 1.0 - (1.0 - _check_own_floor(own_floor)) * (den / _OWN_FULL).clamp(max=1.0)
    return num.addcmul_(own, current).div_(den.add_(own))


class TrackHistory:
    """The last K+1 (input, restored) crops of every track, for ``stabilise_window``.

    Holds only frames that a later window can still read (a frame older than ``latest - k`` is dropped),
    so memory is bounded by tracks x (k+1) crops. Crops are stored as given (device, dtype and size: the
    pipeline stores the inputs already reduced to the flow's resolution).
    """

    def __init__(self, k: int) -> None:
        if not isinstance(k, int) or k < 0:
            raise SettingsError(f"TrackHistory: k must be a non-negative int, got {k!r}")
        self.k = k
        self._tracks: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}

    def push(self, track_id: int, frame: int, input_crop: torch.Tensor, restored_crop: torch.Tensor) -> None:
        """Record frame ``frame`` of track ``track_id``: (C, h, w) input and (C, S, S) raw restored crops."""
        if input_crop.ndim != 3 or restored_crop.ndim != 3 or restored_crop.shape[0] != input_crop.shape[0]:
            raise InputError(f"track {track_id} frame {frame}: crops must be two (C, h, w) tensors of one C, "
                             f"got {tuple(input_crop.shape)} and {tuple(restored_crop.shape)}")
        frames = self._tracks.setdefault(int(track_id), {})
        frames[int(frame)] = (input_crop, restored_crop)
        newest = max(frames)
        for f in [f for f in frames if f < newest - self.k]:
            del frames[f]

    def entries(self, track_id: int, frame: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """The stored (input, restored) pairs of frames frame-K..frame, None where the track lacks one.

        The current frame must have been pushed.
        """
        frames = self._tracks.get(int(track_id), {})
        if int(frame) not in frames:
            raise InputError(f"track {track_id} frame {frame}: not in the temporal history (push it first)")
        return [frames.get(f) for f in range(frame - self.k, frame + 1)]

    def window(self, track_id: int, frame: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs (K+1, C, h, w), restored (K+1, C, S, S), valid (K+1,) bool) for frames frame-K..frame.

        Frames the track lacks are zeros with ``valid`` False. The current frame must have been pushed.
        """
        ins, outs, ok = stack_windows([self.entries(track_id, frame)])
        return ins[0], outs[0], ok[0]

    def windows(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched ``window`` for (track_id, frame) pairs: (B, K+1, C, h, w), (B, K+1, C, S, S), (B, K+1)."""
        if not keys:
            raise InputError("TrackHistory.windows: no (track, frame) keys given")
        return stack_windows([self.entries(t, f) for t, f in keys])

    def drop(self, track_id: int) -> None:
        """Forget a finished track."""
        self._tracks.pop(int(track_id), None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._tracks.values())


def stack_windows(windows: Sequence[Sequence[tuple[torch.Tensor, ...] | None]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B windows of (first, second, ...) tensor entries (``TrackHistory.entries``: (input, restored)) as
    (firsts, seconds, valid) tensors, each stacked in one copy (missing frames are zeros, valid False). The
    first window must have an entry (the pipeline's always has its current frame)."""
    cur_in, cur_out = next(e for e in windows[0] if e is not None)[:2]
    zero_in, zero_out = torch.zeros_like(cur_in), torch.zeros_like(cur_out)
    flat = [e for w in windows for e in w]
    ins = torch.stack([zero_in if e is None else e[0] for e in flat])
    outs = torch.stack([zero_out if e is None else e[1] for e in flat])
    valid = to_device([e is not None for e in flat], cur_in.device, torch.bool)
    b, n = len(windows), len(windows[0])
    return ins.view(b, n, *ins.shape[1:]), outs.view(b, n, *outs.shape[1:]), valid.view(b, n)
