"""Hands over time: IoU association of one shot's hands into tracks, and landmark instability.

Convention: frames are positions in the analysed sequence (0..T-1), not source frame numbers; boxes
are (x0, y0, x1, y1) frame pixels; landmarks (21, 3) frame pixels as in :mod:`facefix.hands.models`.

Instability measures what a generator's per-frame independence does to hands (fingers that boil,
swap or jump) apart from the hand's own motion: each frame's landmarks are put in the hand's own frame
(centred on the palm, turned so the wrist -> middle MCP line points up, divided by the palm size), then
compared with a straight line fitted through the ``window`` frames around it (steady motion stays on
the line, per-frame noise does not). The score is the mean distance of a finger's 4 points to that line,
for the worst finger (a generator's boiling is local), in palm sizes; frames whose window has fewer
than 3 frames of the track score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..detect.blazeface import box_iou

__all__ = ["associate", "hand_frame", "instability"]

_PALM = (0, 5, 9, 13, 17)


def associate(boxes: Sequence[Tensor], min_iou: float = 0.2, max_gap: int = 2) -> list[list[int]]:
    """Track ids for each frame's hands: boxes[t] (M_t, 4). A hand joins the track whose last box (seen
    at most ``max_gap`` frames earlier) it overlaps most, by IoU >= ``min_iou``, best pairs first;
    others start new tracks. Ids count from 0 in order of first appearance."""
    ids: list[list[int]] = []
    last: dict[int, tuple[int, Tensor]] = {}  # track -> (frame, box)
    next_id = 0
    for t, b in enumerate(boxes):
        live = [k for k, (f, _) in last.items() if t - f <= max_gap + 1]
        cur = [-1] * len(b)
        if live and len(b):
            iou = box_iou(b.float(), torch.stack([last[k][1] for k in live]).float())
            pairs = sorted(((float(iou[i, j]), i, j) for i in range(len(b)) for j in range(len(live))), reverse=True)
            used_i: set[int] = set()
            used_j: set[int] = set()
            for v, i, j in pairs:
                if v < min_iou:
                    break
                if i in used_i or j in used_j:
                    continue
                cur[i] = live[j]
                used_i.add(i)
                used_j.add(j)
        for i in range(len(b)):
            if cur[i] < 0:
                cur[i] = next_id
                next_id += 1
            last[cur[i]] = (t, b[i])
        ids.append(cur)
    return ids


def hand_frame(landmarks: Tensor) -> Tensor:
    """Landmarks (T, 21, 3) -> (T, 21, 2) in the hand's own frame: palm centre at 0, the wrist -> middle
    MCP line along -y, units of palm size (mean wrist -> MCP distance, in 3-D, so turning the hand in
    depth hardly changes it)."""
    xy = landmarks[..., :2]
    centre = xy[:, list(_PALM)].mean(1, keepdim=True)
    size = (landmarks[:, [5, 9, 13, 17]] - landmarks[:, :1]).norm(dim=-1).mean(-1).clamp(min=1e-6)
    d = xy[:, 9] - xy[:, 0]
    angle = torch.atan2(d[:, 0], -d[:, 1])  # 0 when the fingers point up
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    p = xy - centre
    x = cos * p[..., 0] + sin * p[..., 1]  # turned by -angle: the fingers' direction to -y
    y = -sin * p[..., 0] + cos * p[..., 1]
    return torch.stack([x, y], -1) / size[:, None, None]


def instability(landmarks: Tensor, frames: Sequence[int], window: int = 5) -> Tensor:
    """(T,) instability of one track's landmarks (T, 21, 3) seen at sequence positions ``frames``
    (increasing); see the module doc. Each frame is compared with the straight line fitted (least
    squares, per coordinate) through the track's frames within ``window // 2`` positions of it, itself
    included: steady motion, at the ends of a track too, leaves no residual. Gaps do not blend distant
    poses; frames with fewer than 3 such neighbours score 0."""
    t = landmarks.shape[0]
    out = landmarks.new_zeros(t)
    if t < 3:
        return out
    norm = hand_frame(landmarks.float()).reshape(t, -1)  # (T, 42)
    pos = torch.as_tensor(list(frames), dtype=torch.float32)
    near = ((pos[:, None] - pos[None, :]).abs() <= window // 2).float()  # (T, T) neighbours of each frame
    counts = near.sum(1)
    # Local line through each frame's neighbours, evaluated at the frame: x = a + b * (pos - pos_i).
    d = (pos[None, :] - pos[:, None]) * near  # offsets of the neighbours
    s1, s2 = d.sum(1), (d * d).sum(1)
    y0, y1 = near @ norm, d @ norm  # (T, 42) sums of values and of offset * value
    det = (counts * s2 - s1 * s1).clamp(min=1e-6)
    fit = (s2[:, None] * y0 - s1[:, None] * y1) / det[:, None]  # the intercept: the line at the frame itself
    dist = (norm - fit).reshape(t, 21, 2).norm(dim=-1)  # (T, 21)
    resid = dist[:, 1:].reshape(t, 5, 4).mean(-1).amax(-1)  # the worst finger: boiling is local
    return torch.where(counts >= 3, resid, torch.zeros_like(resid)).to(landmarks.dtype)
