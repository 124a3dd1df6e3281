"""Image evidence for each finger: does the picture show skin where the landmark model put the finger?

The landmark model always returns five fingers; where a generated hand has lost one, it often guesses
the finger back from the hand's shape. The pixels then disagree with it: the bones it draws lie on
background. For each finger, points along its bones past the first knuckle (PIP -> tip; thumb MCP ->
tip) are compared with the palm's colour in chromaticity (r, g) = (R, G) / (R + G + B), which shading
and exposure barely change. The score of a finger is the median distance of its points' chromaticity
to the palm's median: real fingers measured 0.01-0.06 (shadowed, gripping, partly out of frame), a
finger erased onto a wall 0.12. Where the background has the skin's colour (or the picture is grey)
an erased finger cannot be told from this.

Convention: frames (N, 3, H, W) in [0, 1]; landmarks (K, 21, 3) frame pixels with pixel ``i``'s centre at
``i`` (as :mod:`facefix.hands.models` returns them); ``index`` (K,) the frame of each hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["finger_evidence"]

_STEPS = 6  # points per bone
# Bones checked per finger (landmark pairs), thumb first.
_BONES = (((2, 3), (3, 4)), ((6, 7), (7, 8)), ((10, 11), (11, 12)), ((14, 15), (15, 16)), ((18, 19), (19, 20)))
_PALM_FROM, _PALM_TO = 0, (5, 9, 13, 17)


def _sample(frames: Tensor, index: Tensor, points: Tensor) -> Tensor:
    """Bilinear colours (K, P, 3) of frames at points (K, P, 2) (pixel centres at integers, border clamped)."""
    h, w = frames.shape[-2:]
    grid = torch.stack([(points[..., 0] + 0.5) / w * 2 - 1, (points[..., 1] + 0.5) / h * 2 - 1], -1)
    out = F.grid_sample(frames[index], grid[:, None].to(frames.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (K, 3, 1, P)
    return out[:, :, 0].transpose(1, 2)


def _chroma(rgb: Tensor) -> Tensor:
    return rgb[..., :2] / rgb.sum(-1, keepdim=True).clamp(min=1e-3)


def finger_evidence(frames: Tensor, index: Tensor, landmarks: Tensor) -> Tensor:
    """(K, 5) median chromaticity distance of each finger's bone points to the palm's colour (thumb first)."""
    if landmarks.shape[0] == 0:
        return landmarks.new_zeros(0, 5)
    xy = landmarks[..., :2].to(frames.device, torch.float32)
    t = torch.linspace(0.15, 0.85, _STEPS, device=xy.device)
    wrist = xy[:, _PALM_FROM, None]
    palm_pts = torch.cat([wrist + (xy[:, [m], :] - wrist) * f for m in _PALM_TO for f in (0.35, 0.65)], 1)
    bones = [(a, b) for finger in _BONES for a, b in finger]
    a = xy[:, [p for p, _ in bones]]
    b = xy[:, [q for _, q in bones]]
    finger_pts = (a[:, :, None] + (b - a)[:, :, None] * t[None, None, :, None]).reshape(len(xy), -1, 2)
    idx = index.to(frames.device)
    palm = _chroma(_sample(frames, idx, palm_pts)).median(1).values  # (K, 2)
    fingers = _chroma(_sample(frames, idx, finger_pts))  # (K, 5 * 2 * steps, 2)
    dist = (fingers - palm[:, None]).norm(dim=-1).reshape(len(xy), 5, -1)
    return dist.median(-1).values.cpu()
