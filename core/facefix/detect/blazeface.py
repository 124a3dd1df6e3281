"""BlazeFace (MediaPipe face detection): anchors, decoding, weighted NMS and the square crops it sees.

The shipped models are ``face_detection_short_range`` (128 px input, 896 anchors) and
``face_detection_full_range_sparse`` (192 px input, 2304 anchors). Both output, per anchor, 16 box
values (x, y, w, h offsets, then 6 keypoints (x, y)) and one score logit. Keypoints are, in order:
the subject's right eye (the image's left for an upright face), the subject's left eye, nose tip, mouth
centre, right ear tragion, left ear tragion.

Convention: boxes are (x0, y0, x1, y1), points (x, y). "Unit" coordinates are the model input's
normalised [0, 1] square. Frame coordinates are pixels as MediaPipe writes them (normalised value times
the frame size), used throughout this package: a square crop of side ``s`` centred at ``c`` maps its
unit coordinate ``u`` to ``c - s/2 + u * s``, and samples the frame at that position with pixel ``i``'s
centre at ``i`` (OpenCV's convention, which MediaPipe's crops use).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..geometry import box_iou_np
from .assets import asset_path
from .tflite_torch import load_tflite

__all__ = [
    "AnchorSpec",
    "BlazeFaceSpec",
    "SHORT_RANGE",
    "FULL_RANGE",
    "Detections",
    "ssd_anchors",
    "decode_raw",
    "decode_boxes",
    "decode_scores",
    "weighted_nms",
    "weighted_nms_groups",
    "candidates",
    "unit_to_frame",
    "box_iou",
    "crop_rects",
    "pays_in_one_call",
    "run_padded",
    "BlazeFace",
    "load_blazeface",
]


# Crops per network call on CUDA are padded to a power of two, at least this (see run_padded).
PAD_MULTIPLE = 16
# Crops whose raw outputs a GPU holds before it reads their candidates (see BlazeFace.detect_regions).
_HELD_CROPS = 2048


@dataclass(frozen=True)
class AnchorSpec:
    """SSD anchor layout (MediaPipe's SsdAnchorsCalculator options)."""

    input_size: int
    num_layers: int
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One detection model: its file, input size, anchors and the default thresholds MediaPipe uses."""

    name: str
    file: str
    input_size: int
    anchors: AnchorSpec
    min_score: float = 0.5
    iou_threshold: float = 0.3


SHORT_RANGE = BlazeFaceSpec(
    "short", "face_detection_short_range.tflite", 128,
    AnchorSpec(input_size=128, num_layers=4, strides=(8, 16, 16, 16)),
)  # fmt: skip
FULL_RANGE = BlazeFaceSpec(
    "full", "face_detection_full_range_sparse.tflite", 192,
    AnchorSpec(input_size=192, num_layers=1, strides=(4,), interpolated_scale_aspect_ratio=0.0),
    min_score=0.6,  # what MediaPipe's full-range graph applies (its solutions API included)
)  # fmt: skip


@dataclass(frozen=True)
class Detections:
    """Detections of one image or crop: boxes (M, 4), keypoints (M, 6, 2), scores (M,)."""

    boxes: Tensor
    keypoints: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> Detections:
        return Detections(torch.zeros(0, 4, device=device), torch.zeros(0, 6, 2, device=device),
                          torch.zeros(0, device=device))

    @staticmethod
    def cat(items: Sequence[Detections]) -> Detections:
        if not items:
            return Detections.empty()
        return Detections(torch.cat([d.boxes for d in items]), torch.cat([d.keypoints for d in items]),
                          torch.cat([d.scores for d in items]))

    def select(self, keep: Tensor) -> Detections:
        return Detections(self.boxes[keep], self.keypoints[keep], self.scores[keep])

    def split(self, sizes: Sequence[int]) -> list[Detections]:
        """Consecutive runs of ``sizes[i]`` detections (views), e.g. per region or per frame."""
        parts = zip(self.boxes.split(list(sizes)), self.keypoints.split(list(sizes)), self.scores.split(list(sizes)))
        return [Detections(b, k, s) for b, k, s in parts]


def _scale(spec: AnchorSpec, i: int) -> float:
    n = len(spec.strides)
    if n == 1:
        return (spec.min_scale + spec.max_scale) * 0.5
    return spec.min_scale + (spec.max_scale - spec.min_scale) * i / (n - 1)


def ssd_anchors(spec: AnchorSpec) -> Tensor:
    """Anchor centres and sizes (A, 4) as (cx, cy, w, h) in unit coordinates.

    Order: layers of equal stride are merged; within a layer, rows, then columns, then the anchors of a
    cell (one per aspect ratio and scale, plus the interpolated scale when enabled).
    """
    rows: list[tuple[float, float, float, float]] = []
    layer = 0
    n = len(spec.strides)
    while layer < spec.num_layers:
        sizes: list[tuple[float, float]] = []
        last = layer
        while last < n and spec.strides[last] == spec.strides[layer]:
            scale = _scale(spec, last)
            for ar in spec.aspect_ratios:
                r = math.sqrt(ar)
                sizes.append((scale / r, scale * r))  # (h, w)
            if spec.interpolated_scale_aspect_ratio > 0.0:
                nxt = 1.0 if last == n - 1 else _scale(spec, last + 1)
                s = math.sqrt(scale * nxt)
                r = math.sqrt(spec.interpolated_scale_aspect_ratio)
                sizes.append((s / r, s * r))
            last += 1
        stride = spec.strides[layer]
        fm = math.ceil(spec.input_size / stride)
        for y in range(fm):
            for x in range(fm):
                for h, w in sizes:
                    cx, cy = (x + spec.offset) / fm, (y + spec.offset) / fm
                    rows.append((cx, cy, 1.0, 1.0) if spec.fixed_anchor_size else (cx, cy, w, h))
        layer = last
    return torch.tensor(rows, dtype=torch.float32)


def decode_raw(raw_boxes: Tensor, raw_scores: Tensor, anchors: Tensor, input_size: int
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Decode raw outputs (N, A, 16) and (N, A, 1) into unit boxes (N, A, 4) xyxy, keypoints
    (N, A, 6, 2) and scores (N, A) (sigmoid of the logit clipped to +-100)."""
    boxes, kp = decode_boxes(raw_boxes, anchors, input_size)
    return boxes, kp, decode_scores(raw_scores)


def decode_boxes(raw_boxes: Tensor, anchors: Tensor, input_size: int) -> tuple[Tensor, Tensor]:
    """Unit boxes (..., A, 4) xyxy and keypoints (..., A, 6, 2) from raw box outputs (..., A, 16) and
    their anchors (A, 4); element by element, so a subset of rows decodes to the same values."""
    a = anchors.to(raw_boxes)
    v = raw_boxes / input_size
    cx = v[..., 0] * a[:, 2] + a[:, 0]
    cy = v[..., 1] * a[:, 3] + a[:, 1]
    w = v[..., 2] * a[:, 2]
    h = v[..., 3] * a[:, 3]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    kp = v[..., 4:16].reshape(*v.shape[:-1], 6, 2) * a[:, None, 2:4] + a[:, None, 0:2]
    return boxes, kp


def decode_scores(raw_scores: Tensor) -> Tensor:
    """Scores (..., A) from raw score outputs (..., A, 1): sigmoid of the logit clipped to +-100."""
    return torch.sigmoid(raw_scores[..., 0].clamp(-100.0, 100.0))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix (M, K) of xyxy boxes a (M, 4) and b (K, 4); 0 where the union is empty."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def weighted_nms(det: Detections, iou_threshold: float = 0.3) -> Detections:
    """MediaPipe's weighted ("blending") NMS on one image.

    Repeatedly take the best remaining detection and every remaining one overlapping it by IoU >
    ``iou_threshold`` (itself included); emit the score-weighted mean of their boxes and keypoints with
    the best one's score. Output is sorted by score, highest first.
    """
    out, _ = weighted_nms_groups(det, torch.zeros(len(det), dtype=torch.long), iou_threshold)
    return out


def group_runs(group: Tensor) -> tuple[list[int], list[int]]:
    """The groups in ``group`` (M,), a CPU tensor sorted so that each group is one run, and the runs'
    lengths."""
    ids, counts = torch.unique_consecutive(group, return_counts=True)
    return ids.tolist(), counts.tolist()


# Padded (groups x size x size) IoU entries per step of the batched NMS: bounds its memory for any candidate count.
_NMS_CHUNK = 1 << 22


def _nms_padded(boxes: np.ndarray, values: np.ndarray, scores: np.ndarray, valid: np.ndarray, iou_threshold: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted NMS of G groups at once, each a row of a padded batch sorted best score first: boxes (G, L, 4),
    values (G, L, V) (what is averaged: box and keypoints), scores (G, L), valid (G, L). Returns the leaders'
    (group, position) as (R, 2) in group then score order, and their averaged values (R, V).

    The greedy order is the one-group loop's: position by position, a detection still alive leads every alive
    one overlapping it. Sums run over positions left to right, so a group's result never depends on the padding
    or on the other groups of the batch."""
    iou = box_iou_np(boxes, boxes)  # float32, the same values as box_iou on the detector's tensors
    alive = valid.copy()
    members = np.zeros(iou.shape, dtype=bool)  # members[g, i]: the detections led by position i
    for i in range(boxes.shape[1]):
        lead = alive[:, i]
        group = alive & (iou[:, i] > iou_threshold) & lead[:, None]
        group[:, i] = lead
        members[:, i] = group
        alive &= ~group
    leader = np.nonzero(members[:, np.arange(boxes.shape[1]), np.arange(boxes.shape[1])])
    m = members[leader]  # (R, L)
    g = leader[0]
    num = np.zeros((len(g), values.shape[-1]), np.float32)
    den = np.zeros(len(g), np.float32)
    for j in range(boxes.shape[1]):
        w = np.where(m[:, j], scores[g, j], np.float32(0))
        num += values[g, j] * w[:, None]
        den += w
    with np.errstate(divide="ignore", invalid="ignore"):  # a group of zero weight averages to NaN, as it did
        return np.stack(leader, 1), num / den[:, None]


def weighted_nms_groups(det: Detections, group: Tensor, iou_threshold: float = 0.3) -> tuple[Detections, Tensor]:
    """:func:`weighted_nms` on each group of detections (``group`` (M,) sorted, e.g. region or frame);
    returns the merged detections, still in group order, and the group of each.

    All groups at once on the CPU (numpy over a padded batch, groups of like size together): no loop over
    groups, and a group's result is bit for bit what it gives alone.
    """
    if len(det) == 0:
        return det, group
    ids, counts = group_runs(group)
    m = len(det)
    scores = det.scores.to(torch.float32).numpy()
    run = np.repeat(np.arange(len(ids)), counts)
    order = np.lexsort((-scores, run))  # by group, then best score first (stable: ties keep their order)
    boxes = det.boxes.to(torch.float32).numpy().reshape(m, 4)[order]
    kps = det.keypoints.to(torch.float32).numpy()
    npts = kps.shape[1]
    values = np.concatenate([boxes, kps.reshape(m, -1)[order]], 1)
    scores = scores[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sizes = np.asarray(counts)
    out_rows, out_values, out_scores = [], [], []
    # Groups padded to the next power of two of their size, a bounded number of them per step.
    width = 1 << np.ceil(np.log2(sizes)).astype(np.int64)
    for w in np.unique(width):
        which = np.nonzero(width == w)[0]
        for c0 in range(0, len(which), max(1, _NMS_CHUNK // int(w * w))):
            sel = which[c0 : c0 + max(1, _NMS_CHUNK // int(w * w))]
            pos = np.arange(w)[None, :]
            valid = pos < sizes[sel, None]
            idx = np.where(valid, starts[sel, None] + pos, 0)
            lead, avg = _nms_padded(boxes[idx], values[idx], np.where(valid, scores[idx], 0), valid, iou_threshold)
            out_rows.append(np.stack([sel[lead[:, 0]], lead[:, 1]], 1))
            out_values.append(avg)
            out_scores.append(scores[starts[sel[lead[:, 0]]] + lead[:, 1]])
    rows = np.concatenate(out_rows)
    keep = np.lexsort((rows[:, 1], rows[:, 0]))  # group order, then score order within a group
    avg = np.concatenate(out_values)[keep]
    dt = det.boxes.dtype  # computed in float32, as the detector's outputs are
    out = Detections(torch.from_numpy(np.ascontiguousarray(avg[:, :4])).to(dt),
                     torch.from_numpy(np.ascontiguousarray(avg[:, 4:])).reshape(-1, npts, 2).to(dt),
                     torch.from_numpy(np.concatenate(out_scores)[keep]).to(det.scores.dtype))
    out_group = torch.tensor(ids, dtype=group.dtype)[torch.from_numpy(rows[keep, 0])]
    return out, out_group


def candidates(raw_boxes: Tensor, raw_scores: Tensor, anchors: Tensor, input_size: int, min_score: float
               ) -> tuple[Detections, Tensor]:
    """Raw outputs of a batch of crops (B, A, 16), (B, A, 1) -> the detections scoring >= ``min_score``,
    decoded (unit coordinates) on the CPU, in crop then anchor order, and the crop of each (M,);
    ``anchors`` (A, 4) on the CPU.

    Only the scores are computed for every anchor, on the network's device, with one mask for the whole
    batch; the few candidates' raw rows then travel to the CPU in one transfer and are decoded there.
    One host sync for the selection and one for the copy, however many crops and candidates.
    """
    scores = decode_scores(raw_scores)
    crop, anchor = (scores >= min_score).nonzero(as_tuple=True)
    # Crop and anchor indices travel in the same float32 tensor: exact (the batch and anchor counts are far
    # below 2**24).
    f32 = torch.float32
    packed = torch.cat([raw_boxes[crop, anchor].to(f32), scores[crop, anchor, None].to(f32), crop[:, None].to(f32),
                        anchor[:, None].to(f32)], 1).cpu()
    boxes, kps = decode_boxes(packed[:, :16], anchors[packed[:, 18].long()], input_size)
    return Detections(boxes, kps, packed[:, 16].contiguous()), packed[:, 17].long()


def unit_to_frame(det: Detections, center: Tensor, side: Tensor) -> Detections:
    """Detections in unit coordinates of square crops -> frame pixels; center (M, 2) and side (M,) of
    each detection's crop: ``c - s/2 + u * s``."""
    origin = center - side[:, None] / 2
    return Detections(det.boxes * side[:, None] + origin.repeat(1, 2), det.keypoints * side[:, None, None]
                      + origin[:, None], det.scores)


# On a GPU the crops of a call are sampled in one go where padding each frame's crops to the most any frame has
# costs at most this many times the crops asked for (a launch is dearer there than sampling a few crops for
# nothing); otherwise, and on the CPU, a frame's crops at a time.
ONE_CALL_WASTE = 2


def crop_rects(frames: Tensor, index: Tensor, center: Tensor, size: Tensor, angle: Tensor | None, out_size: int,
               padding: str = "zeros", quantize: bool = False, one_call: bool | None = None) -> Tensor:
    """Sample rotated rectangles of frames into (K, C, S, S) crops (bilinear), batched.

    frames (N, C, H, W); index (K,) frame of each crop; center (K, 2) and size (K, 2) = (w, h) in frame
    pixels; angle (K,) radians, or None for upright crops (angle 0, the rotation not worked out). padding:
    'zeros' (MediaPipe's BORDER_ZERO) or 'border' (replicate). quantize: sample like OpenCV's warp on 8-bit
    images, as MediaPipe does (positions rounded to 1/32 pixel, values to 1/255), for outputs that match
    MediaPipe's most closely.

    one_call: sample every crop in one call, each frame's crops padded to as many as the frame with most has
    (None: on a GPU where that pads to at most ``ONE_CALL_WASTE`` times the crops); the crops are the same either
    way, bit for bit.

    Convention: crop pixel ``d`` (centre at ``d``, OpenCV style) samples the frame at
    ``center + R(angle) @ ((d / S - 0.5) * size)``; frame pixel ``i`` has its centre at ``i``.
    """
    h, w = frames.shape[-2:]
    dev, dt = frames.device, frames.dtype
    k, channels, s = int(index.shape[0]), frames.shape[1], out_size
    frame_of = index.cpu().numpy()  # the one host sync of a call
    if k and (one_call or (one_call is None and frames.is_cuda and pays_in_one_call(frame_of))):
        return _crop_rects_at_once(frames, frame_of, _crop_grid(center, size, angle, s, w, h, quantize, dt),
                                   padding, quantize)
    # A frame's crops at a time, side by side in one call (no copy of the frame per crop), taken grouped by frame
    # (as they mostly come: a scan's pairs are sorted by frame) so that they are a slice of the grid and of the
    # output: two kernels a frame. Crops that come in another order are sampled grouped and put back in theirs.
    order = None
    if k > 1 and (frame_of[1:] < frame_of[:-1]).any():
        order = torch.from_numpy(np.argsort(frame_of, kind="stable"))
        frame_of = frame_of[order.numpy()]
        center, size = center[order.to(center.device)], size[order.to(size.device)]
        angle = None if angle is None else angle[order.to(angle.device)]
    grid = _crop_grid(center, size, angle, s, w, h, quantize, dt)
    out = frames.new_empty(k, channels, s, s)
    firsts = np.flatnonzero(np.r_[True, frame_of[1:] != frame_of[:-1]]) if k else np.zeros(0, np.int64)
    for a, b in zip(firsts.tolist(), [*firsts[1:].tolist(), k]):
        f = int(frame_of[a])
        o = F.grid_sample(frames[f:f + 1], grid[:, a:b].reshape(1, s, (b - a) * s, 2), mode="bilinear",
                          padding_mode=padding, align_corners=False)
        out[a:b] = o.view(channels, s, b - a, s).permute(2, 0, 1, 3)
    if order is not None:
        out = out[torch.argsort(order).to(dev)]
    return torch.round(out * 255) / 255 if quantize else out


def _crop_grid(center: Tensor, size: Tensor, angle: Tensor | None, s: int, w: int, h: int, quantize: bool,
               dtype: torch.dtype) -> Tensor:
    """``grid_sample``'s grid of :func:`crop_rects`'s crops, laid out (crop row, crop, crop column, 2): a frame's
    crops side by side are a view of it. x and y together, in a few operations (each a kernel launch on a GPU): the
    positions ``center + R(angle) @ ((d / S - 0.5) * size)`` added in the same order as written out per axis, so
    the same values bit for bit; angle None: upright crops (no rotation at all)."""
    exact = torch.promote_types(torch.promote_types(torch.float32, size.dtype), center.dtype)  # what xy is worked in
    steps, scale = _grid_constants(s, w, h, center.device, exact)
    along = steps * size[:, :, None]  # (K, 2, S): u along the crop's x, v along its y
    if angle is None:
        # x = cx + u and y = cy + v (what the rotation gives at angle 0, bar the sign of a zero, gone at + 0.5): x
        # follows the crop's column alone and y its row, so both are worked out (K, 2, S) and laid out at the end.
        xy = _grid_units(along + center[:, :, None], scale[:, None], quantize)
        x, y = xy[:, 0], xy[:, 1]
        return torch.stack(torch.broadcast_tensors(x[None, :, :], y.T[:, :, None]), -1).to(dtype)  # (S, K, S, 2)
    u, v = along[:, 0], along[:, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([cos, sin, -sin, cos], -1)  # (K, 4): the crop's x axis in the frame, then its y axis
    xy = (center[None, :, None, :] + u[None, :, :, None] * rot[None, :, None, :2]) \
        + v.T[:, :, None, None] * rot[None, :, None, 2:]  # (cx + cos u) - sin v, (cy + sin u) + cos v
    return _grid_units(xy, scale, quantize).to(dtype)


def _grid_units(xy: Tensor, scale: Tensor, quantize: bool) -> Tensor:
    """Frame positions ``xy`` (x and y along the axis ``scale`` (2,) is laid out on) in ``grid_sample``'s [-1, 1]:
    rounded to 1/32 pixel first where ``quantize``."""
    if quantize:
        xy = torch.round(xy * 32) / 32
    # grid_sample with align_corners=False puts pixel i's centre at i + 0.5 of the [0, W] span.
    unit = (xy + 0.5) * scale if scale.is_cuda else (xy + 0.5) / scale
    return unit - 1


@functools.lru_cache(maxsize=32)
def _grid_constants(s: int, w: int, h: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A crop's sample steps ``d / S - 0.5`` (S,) as the device works them out, and the (2,) scale that takes
    ``p`` (x and y, pixels + 0.5, worked in ``dtype``) to ``p / W * 2`` as the device works that out: torch divides
    a CUDA tensor by a number as a product with its reciprocal in the tensor's type (so times 2 / W there), a CPU
    tensor by true division (so divided by W / 2 there); doubling is exact either way. Made once a size, device
    and type."""
    steps = torch.arange(s, device=device, dtype=torch.float32) / s - 0.5
    on_cuda = device.type == "cuda"
    wh: np.ndarray = np.array([w, h], np.float64 if dtype == torch.float64 else np.float32)
    scale = torch.from_numpy(2 * (1 / wh) if on_cuda else wh / 2).to(device)
    if on_cuda:
        torch.cuda.current_stream(device).synchronize()  # made on one window's stream, read on every other
    return steps, scale


def pays_in_one_call(frame_of: np.ndarray) -> bool:
    """Whether crops of frames ``frame_of`` (K,), each frame's padded to as many as the frame with most has, come to
    at most ``ONE_CALL_WASTE`` times K: :func:`crop_rects`' choice on a GPU."""
    per_frame = np.bincount(frame_of - frame_of.min())
    return len(per_frame) * int(per_frame.max()) <= ONE_CALL_WASTE * len(frame_of)


def _crop_rects_at_once(frames: Tensor, frame_of: np.ndarray, grid: Tensor, padding: str, quantize: bool) -> Tensor:
    """:func:`crop_rects` in one ``grid_sample`` of the frames the crops are on (``frame_of`` (K,), at least one),
    each with as many crops side by side as the frame with most has (its own, then crops that sample nothing, their
    outputs dropped); ``grid`` (S, K, S, 2)."""
    k, channels, s = len(frame_of), frames.shape[1], grid.shape[0]
    first = int(frame_of.min())
    frame_of = frame_of - first
    per_frame = np.bincount(frame_of)
    span, most = len(per_frame), int(per_frame.max())
    # Each crop's place among its frame's crops, in the order asked for.
    order = np.argsort(frame_of, kind="stable")
    grouped = frame_of[order]
    place = np.empty(k, np.int64)
    place[order] = np.arange(k) - np.searchsorted(grouped, grouped)
    at = torch.from_numpy(np.stack([frame_of.astype(np.int64), place])).to(frames.device)
    padded = grid.new_full((span, s, most, s, 2), 3.0)  # far outside the frame
    padded[at[0], :, at[1]] = grid.permute(1, 0, 2, 3)
    o = F.grid_sample(frames[first:first + span], padded.view(span, s, most * s, 2), mode="bilinear",
                      padding_mode=padding, align_corners=False)
    out = o.view(span, channels, s, most, s)[at[0], :, :, at[1]]  # (K, C, S, S)
    return torch.round(out * 255) / 255 if quantize else out


def run_padded(net: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    """``net(x)`` for a batch x (K, ...). On CUDA in power-of-two chunks of at least ``multiple`` (the last one
    padded with zero rows, their outputs dropped): a few batch shapes for a whole process, each captured once in
    a CUDA graph (``TFLiteModule``) rather than for every count of crops a frame window happens to need, and no
    chunk padded to more than ``multiple`` rows (130 crops run as 128 + 16, not 256). Elsewhere as it is."""
    k = x.shape[0]
    if x.device.type != "cuda" or k == 0:
        return net(x)
    firsts, seconds = [], []
    start = 0
    while start < k:
        size = max(multiple, 1 << ((k - start).bit_length() - 1))
        chunk = x[start : start + size]
        n = chunk.shape[0]
        if n < size:
            chunk = torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])])
        a, b = net(chunk)
        firsts.append(a[:n])
        seconds.append(b[:n])
        start += size
    if len(firsts) == 1:
        return firsts[0], seconds[0]
    return torch.cat(firsts), torch.cat(seconds)


class BlazeFace(nn.Module):
    """A BlazeFace network with its anchors: frames -> detections in frame pixels."""

    anchors: Tensor

    def __init__(self, spec: BlazeFaceSpec, path: str | Path | None = None) -> None:
        super().__init__()
        self.spec = spec
        p, sha = asset_path(spec.file) if path is None else (Path(path), None)
        self.net = load_tflite(p, sha)
        self.anchors = ssd_anchors(spec.anchors)  # not a buffer: stays on the CPU, where decoding runs
        # Sample crops as MediaPipe does (8-bit OpenCV warp): the closest match to its results.
        self.quantize = True

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw network outputs for input crops x (K, 3, S, S) in [-1, 1]: (K, A, 16), (K, A, 1)."""
        boxes, scores = self.net(x)
        return boxes, scores

    @torch.no_grad()
    def detect_regions(self, frames: Tensor, index: Tensor, center: Tensor, side: Tensor,
                       min_score: float | None = None, batch: int = 64, hold: int | None = None
                       ) -> tuple[Detections, Tensor]:
        """Detect faces in square regions of frames (sRGB in [0, 1]), NMS applied per region: all
        regions' detections in frame pixels on the CPU, grouped by region in order, and the region of
        each (M,).

        index (K,) frame of each region; center (K, 2) and side (K,) in frame pixels, on any device; the
        part of a region outside its frame reads as black (MediaPipe's letterbox). The network runs on
        the frames' device, in batches of ``batch`` crops; what follows it runs on the few candidates
        on the CPU, where NMS costs no kernel launches or host syncs. hold: crops whose raw outputs are
        held before their candidates are read (None: ``_HELD_CROPS`` on a GPU, one batch on the CPU); the
        result does not depend on it.
        """
        return self.queue_regions(frames, index, center, side, min_score, batch, hold)()

    @torch.no_grad()
    def queue_regions(self, frames: Tensor, index: Tensor, center: Tensor, side: Tensor,
                      min_score: float | None = None, batch: int = 64, hold: int | None = None
                      ) -> Callable[[], tuple[Detections, Tensor]]:
        """:meth:`detect_regions` in two steps: this call queues the crops and networks on the frames' device (on
        the CPU: runs them), the call it returns waits for them and gives the detections. Meanwhile the host can
        do other work, or queue more on another stream."""
        thr = self.spec.min_score if min_score is None else min_score
        s = self.spec.input_size
        dev = frames.device
        center_d, side_d = center.to(dev), side.to(dev)
        found: list[Detections] = []
        regions: list[Tensor] = []
        raw: list[tuple[Tensor, Tensor]] = []
        # A GPU queues batches and then waits once for the candidates of all of them (one sync, not one a batch),
        # up to this many crops' outputs at a time (~160 kB a crop); the CPU takes them a batch at a time.
        held = (_HELD_CROPS if dev.type == "cuda" else 0) if hold is None else hold
        first = 0  # the first crop of the outputs held

        def flush() -> None:
            rb, rs = (torch.cat(t) for t in zip(*raw)) if len(raw) > 1 else raw[0]
            det, crop = candidates(rb, rs, self.anchors, s, thr)
            found.append(det)
            regions.append(crop + first)
            raw.clear()

        for k0 in range(0, len(index), batch):
            sl = slice(k0, k0 + batch)
            sides = side_d[sl]
            crops = crop_rects(frames, index[sl], center_d[sl], torch.stack([sides, sides], -1), None, s,
                               padding="zeros", quantize=self.quantize)
            raw.append(run_padded(self.raw, crops * 2.0 - 1.0, PAD_MULTIPLE))
            if k0 + batch - first > held:
                flush()
                first = k0 + batch

        def collect() -> tuple[Detections, Tensor]:
            if raw:
                flush()
            if not found:
                return Detections.empty(), torch.zeros(0, dtype=torch.long)
            det, region = weighted_nms_groups(Detections.cat(found), torch.cat(regions), self.spec.iou_threshold)
            center_c, side_c = center.cpu(), side.cpu()
            return unit_to_frame(det, center_c[region], side_c[region]), region

        return collect

    def detect_squares(self, frames: Tensor, index: Tensor, center: Tensor, side: Tensor,
                       min_score: float | None = None, batch: int = 64) -> list[Detections]:
        """:meth:`detect_regions` as one Detections per region (on the CPU)."""
        det, region = self.detect_regions(frames, index, center, side, min_score, batch)
        return det.split(torch.bincount(region, minlength=len(index)).tolist())

    def detect_frames(self, frames: Tensor, min_score: float | None = None) -> list[Detections]:
        """Whole-frame detection as MediaPipe does it: each frame letterboxed into the model's square;
        one Detections per frame, on the CPU."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        n, _, h, w = frames.shape
        dev = frames.device
        center = torch.tensor([[w / 2, h / 2]], device=dev, dtype=torch.float32).repeat(n, 1)
        side = torch.full((n,), float(max(w, h)), device=dev)
        return self.detect_squares(frames, torch.arange(n, device=dev), center, side, min_score)


def load_blazeface(model: str = "full", device: str | torch.device = "cpu",
                   path: str | Path | None = None) -> BlazeFace:
    """The short-range (128 px) or full-range (192 px) BlazeFace, checked by sha256, on ``device``."""
    specs = {"short": SHORT_RANGE, "full": FULL_RANGE}
    if model not in specs:
        raise InputError(f"unknown BlazeFace model {model!r} (expected 'short' or 'full')")
    return BlazeFace(specs[model], path).to(device).eval()
