"""MediaPipe face landmarks (468-point mesh): the ROI from a detection, the crop, and the projection back.

ROI (MediaPipe's face-landmark front end): centre = detection box centre; rotation = angle that brings
the line from keypoint 0 to keypoint 1 (the eyes) to horizontal; side = 1.5 x the box's longer side,
square. The crop (192 x 192, replicated border, values in [0, 1]) goes through ``face_landmark.tflite``,
which returns 468 (x, y, z) points in crop pixels and a face-presence logit.

Convention: frame pixels as in :mod:`facefix.detect.blazeface` (MediaPipe's normalised value times the
frame size). ``z`` is depth in the same pixel units as x (MediaPipe's z times the frame width), smaller
is nearer the camera, roughly zero at the face's centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .assets import asset_path
from .blazeface import crop_rects, run_padded
from .tflite_torch import load_tflite

__all__ = ["Rois", "rois_from_detections", "FaceLandmarks", "load_face_landmarks", "LANDMARK_INPUT"]

LANDMARK_INPUT = 192


@dataclass(frozen=True)
class Rois:
    """Square rotated regions: index (K,) frame, center (K, 2), side (K,) pixels, angle (K,) radians."""

    index: Tensor
    center: Tensor
    side: Tensor
    angle: Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])


def _normalize_radians(a: Tensor) -> Tensor:
    return a - 2 * math.pi * torch.floor((a + math.pi) / (2 * math.pi))


def rois_from_detections(index: Tensor, boxes: Tensor, keypoints: Tensor, scale: float = 1.5) -> Rois:
    """Landmark ROIs from detections: boxes (K, 4) xyxy and keypoints (K, 6, 2) in frame pixels.

    Convention: angle > 0 turns the crop's x axis towards the frame's +y (clockwise on screen); the
    crop is upright when the eye line (keypoint 0 -> 1) is horizontal.
    """
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(-1) * scale
    d = keypoints[:, 1] - keypoints[:, 0]
    angle = _normalize_radians(-torch.atan2(-d[:, 1], d[:, 0]))
    return Rois(index, center, side, angle)


class FaceLandmarks(nn.Module):
    """The 468-point face landmark network: ROIs of frames -> mesh in frame pixels + presence."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        p, sha = asset_path("face_landmark.tflite") if path is None else (Path(path), None)
        self.net = load_tflite(p, sha)
        self.quantize = True  # sample crops as MediaPipe does (see blazeface.crop_rects)

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs for crops x (K, 3, 192, 192) in [0, 1]: landmarks (K, 1404), presence logit (K,)."""
        lm, flag = self.net(x)
        return lm.reshape(x.shape[0], -1), flag.reshape(x.shape[0])

    @torch.no_grad()
    def forward(self, frames: Tensor, rois: Rois, batch: int = 32) -> tuple[Tensor, Tensor]:
        """Mesh (K, 468, 3) in frame pixels (x, y, z) and face presence (K,) in [0, 1] for each ROI."""
        meshes, presence = [], []
        s = LANDMARK_INPUT
        for k0 in range(0, len(rois), batch):
            sl = slice(k0, k0 + batch)
            side, angle, center = rois.side[sl], rois.angle[sl], rois.center[sl]
            crops = crop_rects(frames, rois.index[sl], center, torch.stack([side, side], -1), angle, s,
                               padding="border", quantize=self.quantize)
            lm, flag = run_padded(self.raw, crops, 8)  # a few shapes on CUDA (blazeface.run_padded)
            pts = lm.reshape(-1, 468, 3) / s
            u, v = pts[..., 0] - 0.5, pts[..., 1] - 0.5
            cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
            x = (cos * u - sin * v) * side[:, None] + center[:, 0, None]
            y = (sin * u + cos * v) * side[:, None] + center[:, 1, None]
            z = pts[..., 2] * side[:, None]
            meshes.append(torch.stack([x, y, z], -1))
            presence.append(torch.sigmoid(flag))
        if not meshes:
            return frames.new_zeros(0, 468, 3), frames.new_zeros(0)
        return torch.cat(meshes), torch.cat(presence)


def load_face_landmarks(device: str | torch.device = "cpu", path: str | Path | None = None) -> FaceLandmarks:
    """The shipped face landmark model (sha256 checked) on ``device``."""
    return FaceLandmarks(path).to(device).eval()
