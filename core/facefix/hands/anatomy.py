"""Anatomical plausibility of 21-point hands: proportions, joint angles, fused and missing fingers.

Every function is pure and batched over K hands of "world" landmarks (K, 21, 3) in metres (MediaPipe's
metric hand model; any consistent unit works: every measure below is a ratio or an angle). Distances
are in units of the hand's **palm size**: the mean wrist -> MCP distance of the four fingers (about
9 cm on an adult hand), so the measures do not depend on the hand's size or distance to the camera.

Convention: landmark order as in :mod:`facefix.hands.models` (0 wrist; thumb 1-4; index 5-8; middle
9-12; ring 13-16; pinky 17-20). ``right`` is P(the subject's right hand). Angles are degrees. Flexion
is the bend of a joint about its hinge (the palm's lateral axis, index MCP -> pinky MCP, made
perpendicular to the bone before the joint), positive towards the palm, negative for hyperextension;
the sideways bend is the bone's inclination along that hinge.

The palm side is found from handedness (the palm normal ``(index MCP - wrist) x (pinky MCP - wrist)``
points out of the palm of a right hand and out of the back of a left one, in MediaPipe's world frame),
weighed against the side the fingertips lie on (resting fingers flex): ``2 (right - 0.5)`` plus the
median fingertip offset along the normal in palm sizes, so only an unsure handedness can be outvoted.

Reference values (``EXPECTED_FINGER_LENGTH``) are the mean chain lengths of real hands measured by the
landmark model on photographs (open, spread and gripping hands; tests/hands/golden), in palm sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "FINGERS",
    "FINGER_NAMES",
    "EXPECTED_FINGER_LENGTH",
    "palm_size",
    "palm_normal",
    "finger_lengths",
    "finger_length_error",
    "joint_angles",
    "finger_gaps",
]

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")
# Each finger's chain of 4 landmarks (thumb: CMC, MCP, IP, tip; others: MCP, PIP, DIP, tip).
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
# Chain length (sum of its 3 bones) in palm sizes, the mean over the real hands of tests/hands/golden.
EXPECTED_FINGER_LENGTH = (0.93, 0.87, 1.01, 0.88, 0.76)
_MCPS = (5, 9, 13, 17)
_EPS = 1e-9


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=_EPS)


def palm_size(world: Tensor) -> Tensor:
    """(K,) mean wrist -> MCP distance of the four fingers, in the landmarks' unit."""
    return (world[:, list(_MCPS)] - world[:, :1]).norm(dim=-1).mean(-1).clamp(min=_EPS)


def palm_normal(world: Tensor, right: Tensor) -> Tensor:
    """(K, 3) unit normal pointing out of the palm (towards the side fingers flex to); see module doc."""
    n = _unit(torch.cross(world[:, 5] - world[:, 0], world[:, 17] - world[:, 0], dim=-1))
    # Handedness, weighed against the side the fingertips lie on (median of the four, in palm sizes:
    # resting fingers flex towards the palm, and one finger bent backwards does not outvote the rest).
    tips = ((world[:, [8, 12, 16, 20]] - world[:, :1]) * n[:, None]).sum(-1) / palm_size(world)[:, None]
    vote = 2.0 * (right.to(world.dtype) - 0.5) + tips.median(-1).values
    return n * torch.where(vote >= 0, 1.0, -1.0).to(world.dtype)[:, None]


def finger_lengths(world: Tensor) -> Tensor:
    """(K, 5) length of each finger's chain (3 bones) in palm sizes, thumb first."""
    chains = world[:, [list(f) for f in FINGERS]]  # (K, 5, 4, 3)
    return (chains[:, :, 1:] - chains[:, :, :-1]).norm(dim=-1).sum(-1) / palm_size(world)[:, None]


def finger_length_error(world: Tensor) -> Tensor:
    """(K, 5) |ln(length / expected length)| per finger: 0 for a typical finger, 0.69 for one half
    or twice its usual length; collapsed (absent) fingers go to large values (clipped at 5)."""
    expected = torch.tensor(EXPECTED_FINGER_LENGTH, dtype=world.dtype, device=world.device)
    return torch.log(finger_lengths(world).clamp(min=1e-3) / expected).abs().clamp(max=5.0)


def _signed_angle(u: Tensor, v: Tensor, axis: Tensor) -> Tensor:
    """Angle (degrees) turning u to v about ``axis`` (unit), after projecting both onto the plane normal
    to it; positive counter-clockwise seen from the axis' tip."""
    up = u - (u * axis).sum(-1, keepdim=True) * axis
    vp = v - (v * axis).sum(-1, keepdim=True) * axis
    return torch.rad2deg(torch.atan2((torch.cross(up, vp, dim=-1) * axis).sum(-1), (up * vp).sum(-1)))


def _inclination(v: Tensor, axis: Tensor) -> Tensor:
    return torch.rad2deg(torch.asin((_unit(v) * axis).sum(-1).clamp(-1.0, 1.0)))


def joint_angles(world: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """Flexion and sideways bend (degrees) of the 12 joints of the four fingers, (K, 4, 3) each: per
    finger (index, middle, ring, pinky) the MCP, PIP and DIP joints. The MCP's proximal bone is the
    wrist -> MCP line (the metacarpal's direction).

    Each joint bends about its own hinge: the palm's lateral axis made perpendicular to the proximal
    bone (so a finger spread at its MCP keeps a hinge across it). Flexion is the turn about the hinge,
    > 0 towards the palm; the sideways bend is the distal bone's inclination along the hinge.
    """
    lateral = _unit(world[:, 17] - world[:, 5])  # index -> pinky MCP
    palm = palm_normal(world, right)
    # Orient the lateral axis so that a positive turn about it takes the fingers towards the palm side.
    forward = _unit(world[:, 9] - world[:, 0])
    towards_palm = (torch.cross(forward, palm, dim=-1) * lateral).sum(-1, keepdim=True)
    lateral = torch.where(towards_palm >= 0, lateral, -lateral)
    flex, side = [], []
    for mcp in _MCPS:
        pts = world[:, [0, mcp, mcp + 1, mcp + 2, mcp + 3]]  # wrist, MCP, PIP, DIP, tip
        bones = pts[:, 1:] - pts[:, :-1]  # (K, 4, 3): metacarpal line, proximal, middle, distal
        u, v = _unit(bones[:, :-1]), bones[:, 1:]
        lat = lateral[:, None].expand_as(u)
        hinge = _unit(lat - (lat * u).sum(-1, keepdim=True) * u)
        flex.append(_signed_angle(u, v, hinge))
        side.append(_inclination(v, hinge))
    return torch.stack(flex, 1), torch.stack(side, 1)


def finger_gaps(world: Tensor) -> Tensor:
    """(K, 3) mean distance of the PIP, DIP and tip of adjacent fingers (index-middle, middle-ring,
    ring-pinky) in palm sizes: about 0.25 for fingers held together, near 0 for fused ones."""
    a = world[:, [[6, 7, 8], [10, 11, 12], [14, 15, 16]]]
    b = world[:, [[10, 11, 12], [14, 15, 16], [18, 19, 20]]]
    return (a - b).norm(dim=-1).mean(-1) / palm_size(world)[:, None]
