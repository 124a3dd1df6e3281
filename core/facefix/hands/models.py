"""MediaPipe hands: the palm detector, its anchors and decoding, the hand ROI, and the 21-point landmarks.

Models (shipped unmodified in ``facefix/assets/mediapipe``, converted by :mod:`facefix.detect.tflite_torch`):

- ``palm_detection_full.tflite``: 192 px letterboxed input in [0, 1]; per anchor (2016) a box
  (x, y, w, h offsets) and 7 keypoints (x, y), then a score logit. Keypoints: 0 wrist centre, 1 index
  finger MCP, 2 middle finger MCP, 3 ring finger MCP, 4 pinky MCP, 5 thumb CMC, 6 thumb MCP.
- ``hand_landmark_full.tflite``: 224 px crop in [0, 1]; 21 (x, y, z) points in crop pixels, hand
  presence and handedness (both already sigmoids), and 21 "world" points in metres about the hand's
  centre.

The front end follows MediaPipe's hand tracking graph in static-image mode: palms scoring >= 0.5,
weighted NMS (IoU 0.3), the best ``max_hands`` kept; the hand ROI is the palm box rotated so that the
wrist -> middle-MCP line points up, shifted half its height towards the fingers, made square on its
longer side and scaled 2.6x; ROIs overlapping an earlier one by IoU > 0.5 replace it.

Convention: frame pixels as in :mod:`facefix.detect.blazeface` (normalised value times the frame size;
pixel ``i``'s centre at ``i``); ``z`` in the same pixel units (MediaPipe's z times the frame width),
smaller is nearer the camera, roughly zero at the wrist. World points are metres, x right, y down, in
the frame's orientation (MediaPipe rotates them by the ROI angle). Landmark order: 0 wrist; thumb 1-4
(CMC, MCP, IP, tip); index 5-8, middle 9-12, ring 13-16, pinky 17-20 (MCP, PIP, DIP, tip).
Handedness here is the subject's own hand in an unmirrored frame: MediaPipe labels hands as if the
image were a mirrored selfie, so its "Left" is the subject's right hand in ordinary footage.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..detect.assets import MEDIAPIPE_SHA256, asset_path
from ..detect.blazeface import AnchorSpec, Detections, box_iou, crop_rects, ssd_anchors, weighted_nms
from ..detect.landmarks import Rois, _normalize_radians
from ..detect.tflite_torch import load_tflite
from ..errors import InputError, ModelError

__all__ = [
    "HAND_SHA256",
    "PALM_ANCHORS",
    "PALM_INPUT",
    "LANDMARK_INPUT",
    "HandRois",
    "hand_asset",
    "decode_palms",
    "palm_rois",
    "dedupe_rois",
    "PalmDetector",
    "HandLandmarker",
]

HAND_MODELS = ("palm_detection_full.tflite", "hand_landmark_full.tflite")
HAND_SHA256 = {name: MEDIAPIPE_SHA256[name] for name in HAND_MODELS}  # shipped unmodified (see SOURCES)
PALM_INPUT = 192
LANDMARK_INPUT = 224
PALM_ANCHORS = AnchorSpec(input_size=PALM_INPUT, num_layers=4, strides=(8, 16, 16, 16))
PALM_KEYPOINTS = 7
ROI_SCALE = 2.6
LANDMARK_Z_NORM = 0.4  # MediaPipe divides the hand model's z by this (TensorsToLandmarks normalize_z)
ROI_SHIFT_Y = -0.5  # in units of the palm box height, along the hand's own "up"


def hand_asset(name: str) -> tuple[Path, str]:
    """Path and expected sha256 of a shipped hand model file."""
    if name not in HAND_SHA256:
        raise ModelError(f"{name}: not a shipped MediaPipe hand model")
    return asset_path(name)


# The hand regions are the face landmarker's rotated squares.
HandRois = Rois


def decode_palms(raw_boxes: Tensor, raw_scores: Tensor, anchors: Tensor, min_score: float
                 ) -> tuple[Detections, Tensor]:
    """Raw palm outputs (B, A, 18), (B, A, 1) -> detections scoring >= ``min_score`` in unit coordinates
    of the letterboxed input (boxes xyxy, 7 keypoints), on the CPU, and the crop of each (M,)."""
    scores = torch.sigmoid(raw_scores[..., 0].clamp(-100.0, 100.0))
    crop, anchor = (scores >= min_score).nonzero(as_tuple=True)
    v = raw_boxes[crop, anchor].float().cpu() / PALM_INPUT
    a = anchors[anchor.cpu()]
    cx, cy = v[:, 0] * a[:, 2] + a[:, 0], v[:, 1] * a[:, 3] + a[:, 1]
    w, h = v[:, 2] * a[:, 2], v[:, 3] * a[:, 3]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    kps = v[:, 4:].reshape(-1, PALM_KEYPOINTS, 2) * a[:, None, 2:4] + a[:, None, 0:2]
    return Detections(boxes, kps, scores[crop, anchor].float().cpu()), crop.cpu()


def palm_rois(index: Tensor, boxes: Tensor, keypoints: Tensor) -> HandRois:
    """Hand ROIs from palm detections in frame pixels: boxes (K, 4) xyxy, keypoints (K, 7, 2).

    The rotation brings the wrist (keypoint 0) -> middle MCP (keypoint 2) line to point up; the box is
    shifted half its height along that line, made square on its longer side, and scaled 2.6x.
    """
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    d = keypoints[:, 2] - keypoints[:, 0]
    angle = _normalize_radians(math.pi / 2 - torch.atan2(-d[:, 1], d[:, 0]))
    shift = ROI_SHIFT_Y * wh[:, 1]
    center = center + torch.stack([-shift * torch.sin(angle), shift * torch.cos(angle)], -1)
    side = wh.amax(-1) * ROI_SCALE
    return HandRois(index, center, side, angle)


def dedupe_rois(rois: HandRois, min_iou: float = 0.5) -> tuple[HandRois, Tensor]:
    """MediaPipe's association of each frame's ROIs (in detection order): an ROI whose unrotated square
    overlaps a kept one of its frame by IoU > ``min_iou`` replaces it, and goes to the end of the list.
    Returns the kept ROIs and their positions (K',) in ``rois``."""
    kept: list[int] = []
    sq = torch.cat([rois.center - rois.side[:, None] / 2, rois.center + rois.side[:, None] / 2], -1)
    iou = box_iou(sq, sq)
    for i in range(len(rois)):
        kept = [k for k in kept if not (rois.index[k] == rois.index[i] and iou[i, k] > min_iou)]
        kept.append(i)
    sel = torch.tensor(kept, dtype=torch.long)
    return HandRois(rois.index[sel], rois.center[sel], rois.side[sel], rois.angle[sel]), sel


class PalmDetector(nn.Module):
    """The palm detection network with its anchors: frames -> palm detections in frame pixels."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        p, sha = hand_asset("palm_detection_full.tflite") if path is None else (Path(path), None)
        self.net = load_tflite(p, sha)
        if self.net.input_shapes != ((1, PALM_INPUT, PALM_INPUT, 3),):
            raise ModelError(f"{p}: expected a palm detector with a {PALM_INPUT} px input")
        self.anchors = ssd_anchors(PALM_ANCHORS)  # stays on the CPU, where decoding runs
        self.quantize = True  # sample crops as MediaPipe does (8-bit OpenCV warp)

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs for crops x (K, 3, 192, 192) in [0, 1]: boxes (K, 2016, 18), logits (K, 2016, 1)."""
        boxes, scores = self.net(x)
        return boxes, scores

    @torch.no_grad()
    def forward(self, frames: Tensor, min_score: float = 0.5, iou_threshold: float = 0.3, batch: int = 32
                ) -> list[Detections]:
        """Palms of frames (N, 3, H, W) sRGB in [0, 1], each letterboxed into the model's square: one
        Detections per frame (frame pixels, best first), on the CPU."""
        n, _, h, w = frames.shape
        side = float(max(w, h))
        dev = frames.device
        per_frame: list[list[Detections]] = [[] for _ in range(n)]
        for k0 in range(0, n, batch):
            idx = torch.arange(k0, min(n, k0 + batch), device=dev)
            k = len(idx)
            center = torch.tensor([[w / 2, h / 2]], device=dev).repeat(k, 1)
            size = torch.full((k, 2), side, device=dev)
            crops = crop_rects(frames, idx, center, size, None, PALM_INPUT, padding="zeros",  # upright
                               quantize=self.quantize)
            det, crop = decode_palms(*self.raw(crops), self.anchors, min_score)
            origin = torch.tensor([w / 2 - side / 2, h / 2 - side / 2])
            det = Detections(det.boxes * side + origin.repeat(2), det.keypoints * side + origin, det.scores)
            for f in crop.unique().tolist():
                per_frame[k0 + f].append(weighted_nms(det.select(crop == f), iou_threshold))
        empty = Detections(torch.zeros(0, 4), torch.zeros(0, PALM_KEYPOINTS, 2), torch.zeros(0))
        return [Detections.cat(d) if d else empty for d in per_frame]


class HandLandmarker(nn.Module):
    """The 21-point hand landmark network: ROIs of frames -> landmarks, world points, presence, handedness."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        p, sha = hand_asset("hand_landmark_full.tflite") if path is None else (Path(path), None)
        self.net = load_tflite(p, sha)
        names = self.net.output_names
        try:
            self._order = tuple(names.index(n) for n in ("Identity", "Identity_1", "Identity_2", "Identity_3"))
        except ValueError:
            raise ModelError(f"{p}: not the MediaPipe hand landmark model (outputs {names})") from None
        self.quantize = True

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Raw outputs for crops x (K, 3, 224, 224) in [0, 1]: landmarks (K, 63) in crop pixels, presence
        (K,), handedness (K,) (MediaPipe's P("Left"), mirrored convention), world points (K, 63)."""
        outs = self.net(x)
        lm, flag, hand, world = (outs[i].reshape(x.shape[0], -1) for i in self._order)
        return lm, flag[:, 0], hand[:, 0], world

    @torch.no_grad()
    def forward(self, frames: Tensor, rois: HandRois, batch: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per ROI: landmarks (K, 21, 3) frame pixels, world points (K, 21, 3) metres (frame-aligned),
        presence (K,), and P(subject's right hand) (K,) for an unmirrored frame."""
        s = LANDMARK_INPUT
        out_lm, out_world, out_flag, out_right = [], [], [], []
        for k0 in range(0, len(rois), batch):
            sl = slice(k0, k0 + batch)
            side, angle, center = rois.side[sl], rois.angle[sl], rois.center[sl]
            crops = crop_rects(frames, rois.index[sl], center, torch.stack([side, side], -1), angle, s,
                               padding="border", quantize=self.quantize)
            lm, flag, left_mirrored, world = self.raw(crops)
            pts = lm.reshape(-1, 21, 3) / s
            u, v = pts[..., 0] - 0.5, pts[..., 1] - 0.5
            cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
            x = (cos * u - sin * v) * side[:, None] + center[:, 0, None]
            y = (sin * u + cos * v) * side[:, None] + center[:, 1, None]
            out_lm.append(torch.stack([x, y, pts[..., 2] / LANDMARK_Z_NORM * side[:, None]], -1))
            wp = world.reshape(-1, 21, 3)
            out_world.append(torch.stack([cos * wp[..., 0] - sin * wp[..., 1], sin * wp[..., 0] + cos * wp[..., 1],
                                          wp[..., 2]], -1))
            out_flag.append(flag)
            out_right.append(left_mirrored)  # mirrored "Left" is the subject's right hand
        if not out_lm:
            z = frames.new_zeros(0, 21, 3)
            return z, z.clone(), frames.new_zeros(0), frames.new_zeros(0)
        return torch.cat(out_lm), torch.cat(out_world), torch.cat(out_flag), torch.cat(out_right)


def check_frames(frames: Tensor) -> None:
    """Frames must be a float (N, 3, H, W) tensor."""
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise InputError(f"hand analysis needs frames as (N, 3, H, W) RGB, got {shape}")
    if not frames.is_floating_point():
        raise InputError(f"hand analysis needs float frames in [0, 1], got {frames.dtype}")
