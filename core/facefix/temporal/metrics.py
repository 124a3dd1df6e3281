"""Temporal quality metrics for restored face sequences: flicker, landmark jitter, identity drift.

Used by the diagnose command and by the tests. All three are "lower is better" and 0 for a perfectly
stable sequence.

- ``flicker``: motion-compensated temporal difference (the "warping error" of Lai et al. 2018 video
  consistency work): warp frame t-1 onto frame t, mean absolute difference inside the face region, with
  occluded / out-of-frame pixels excluded. In code values of the frames (0..1 for sRGB).
- ``landmark_jitter``: TLME-like (temporal landmark mean error): RMS of the second temporal difference of
  the landmarks, i.e. their deviation from a locally constant-velocity trajectory, in pixels of the 512
  template. Smooth motion scores ~0; shaking scores its acceleration.
- ``identity_step``: VIDD-like (video identity distance): mean cosine distance between the identity
  embeddings of consecutive frames. ``crops_identity_step`` embeds aligned crops first, by default with
  ``facefix.identity.default_identity_model`` (dlib's face-recognition ResNet when installed, else the LBP/HOG
  descriptor): numbers of different models are not comparable, so report the model's ``name`` with them.

Convention: frames (T, 3, H, W) float; masks (T, 1, H, W) in [0, 1]; ``flows[i]`` (T-1, 2, H, W) is the flow
from frame i+1 to frame i (module ``facefix.temporal.flow`` convention), so ``warp_by_flow(frames[i], flows[i])``
lies on frame i+1's grid. Landmarks (T, 5, 2) in (x, y) pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .flow import downsample, estimate_flow, fb_confidence, inside_mask, resize_flow, warp_by_flow

__all__ = ["flicker", "landmark_jitter", "identity_step", "crops_identity_step", "estimate_consecutive_flows"]


def estimate_consecutive_flows(frames: torch.Tensor, flow_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows (T-1, 2, H, W) from frame i+1 to frame i, and their forward-backward confidence (T-1, 1, H, W).

    The flow runs at ``flow_size`` (capped at the frame size) and is upsampled.
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise InputError(f"estimate_consecutive_flows: need (T>=2, C, H, W) frames, got {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    size = (min(flow_size, h), min(flow_size, w))
    lo = downsample(frames.float(), size)
    cur, prev = lo[1:], lo[:-1]
    both = estimate_flow(torch.cat([cur, prev]), torch.cat([prev, cur]))
    n = cur.shape[0]
    conf = fb_confidence(both[:n], both[n:])
    full = resize_flow(both[:n], (h, w))
    conf = torch.nn.functional.interpolate(conf, size=(h, w), mode="bilinear", align_corners=False)
    return full, conf


def flicker(frames: torch.Tensor, mask: torch.Tensor | None = None, flows: torch.Tensor | None = None) -> float:
    """Motion-compensated temporal difference inside ``mask`` (mean |frame_t - warp(frame_{t-1})|).

    Args:
        frames: (T, 3, H, W) with T >= 2.
        mask: (T, 1, H, W) face region (weights in [0, 1]); None = whole frame. Frame t's mask is used.
        flows: (T-1, 2, H, W) flows from frame t to frame t-1; None = estimated from the frames themselves
            (pyramidal Lucas-Kanade at 128 px), and pixels failing the forward-backward check are excluded.
            Given flows only exclude pixels whose match falls outside the frame.

    Returns:
        Mean absolute difference per channel, in the frames' code values.
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise InputError(f"flicker: need (T>=2, C, H, W) frames, got {tuple(frames.shape)}")
    t, _, h, w = frames.shape
    frames = frames.float()
    if flows is None:
        flows, conf = estimate_consecutive_flows(frames)
        keep = (conf > 0.5).to(frames.dtype)
    else:
        if flows.shape != (t - 1, 2, h, w):
            raise InputError(f"flicker: flows must be (T-1, 2, H, W) = {(t - 1, 2, h, w)}, got {tuple(flows.shape)}")
        flows = flows.to(frames)
        keep = torch.ones_like(frames[1:, :1])
    keep = keep * inside_mask(flows)
    if mask is not None:
        if mask.shape != (t, 1, h, w):
            raise InputError(f"flicker: mask must be (T, 1, H, W) = {(t, 1, h, w)}, got {tuple(mask.shape)}")
        keep = keep * mask[1:].to(frames)
    prev = warp_by_flow(frames[:-1], flows, mode="bilinear")
    diff = (frames[1:] - prev).abs().mean(1, keepdim=True)
    total = keep.sum()
    if float(total) <= 0:
        raise InputError("flicker: the mask leaves no pixel to measure")
    return float((diff * keep).sum() / total)


def landmark_jitter(landmarks: np.ndarray, template_scale: float | np.ndarray = 1.0) -> float:
    """RMS second temporal difference of the landmarks, in pixels at 512-template scale.

    Args:
        landmarks: (T, P, 2) points in frame pixels (P = 5 for FaceTracks landmarks).
        template_scale: the scale of the template_from_frame similarity (template px per frame px), a
            float or one per frame (T,). Per-frame scales are applied to each point before differencing.

    Returns:
        sqrt(mean_t,p |p_{t+1} - 2 p_t + p_{t-1}|^2); NaN for fewer than 3 frames (nothing to measure).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[-1] != 2:
        raise InputError(f"landmark_jitter: landmarks must be (T, P, 2), got shape {lm.shape}")
    scale = np.asarray(template_scale, dtype=np.float64)
    if scale.ndim == 1:
        if scale.shape[0] != lm.shape[0]:
            raise InputError(f"landmark_jitter: {scale.shape[0]} template scales for {lm.shape[0]} frames")
        scale = scale[:, None, None]
    elif scale.ndim != 0:
        raise InputError(f"landmark_jitter: template_scale must be a float or (T,), got shape {scale.shape}")
    if lm.shape[0] < 3:
        return float("nan")
    pts = lm * scale
    acc = pts[2:] - 2.0 * pts[1:-1] + pts[:-2]
    return float(np.sqrt(np.mean(np.sum(acc * acc, axis=-1))))


def identity_step(embeddings: torch.Tensor) -> float:
    """Mean cosine distance (1 - cos) between consecutive frames' identity embeddings (T, D).

    Embeddings are L2-normalised here, so unnormalised ones are accepted. NaN for fewer than 2 frames.
    """
    if embeddings.ndim != 2:
        raise InputError(f"identity_step: embeddings must be (T, D), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] < 2:
        return float("nan")
    e = torch.nn.functional.normalize(embeddings.double(), dim=1)
    cos = (e[1:] * e[:-1]).sum(1)
    return float((1.0 - cos).mean())


def crops_identity_step(crops: torch.Tensor, model: object | None = None) -> float:
    """``identity_step`` of aligned face crops (T, 3, S, S) sRGB in [0, 1] (FFHQ template), embedded by
    ``facefix.identity.embed_faces`` with ``model`` (None: the default identity model on the crops' device)."""
    from ..identity import embed_faces

    if crops.ndim != 4:
        raise InputError(f"crops_identity_step: crops must be (T, 3, S, S), got shape {tuple(crops.shape)}")
    if crops.shape[0] < 2:
        return float("nan")
    return identity_step(embed_faces(crops, model))  # type: ignore[arg-type]
