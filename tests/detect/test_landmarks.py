"""Face mesh: ROI, crop and projection against MediaPipe's face_mesh; the 5 points and FACE_OVAL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facefix.detect.blazeface import load_blazeface
from facefix.detect.landmarks import LANDMARK_INPUT, load_face_landmarks, rois_from_detections
from facefix.detect.mesh import FACE_OVAL, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR, five_points

torch.set_num_threads(1)
IMAGES = ("astro_crop", "astro_rot_p20", "astro_rot_m20", "astro_mirror", "astro_crowd", "camera")


@pytest.fixture(scope="module")
def nets():
    return load_blazeface("short"), load_face_landmarks()


def _mesh(nets, x):
    det, lmk = nets
    d = det.detect_frames(x)[0]
    rois = rois_from_detections(torch.zeros(len(d), dtype=torch.long), d.boxes, d.keypoints)
    mesh, presence = lmk(x, rois)
    return mesh.numpy(), presence.numpy(), rois


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: which points lie inside the closed polygon."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(1) % 2 == 1


def test_roi_from_detection_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    kps = torch.zeros(1, 6, 2)
    kps[0, 0] = torch.tensor([20.0, 40.0])
    kps[0, 1] = torch.tensor([40.0, 60.0])  # eye line going down-right at 45 degrees
    r = rois_from_detections(torch.tensor([0]), boxes, kps)
    assert r.center.tolist() == [[30.0, 50.0]]
    assert r.side.item() == pytest.approx(90.0)  # 1.5 x the longer side
    assert r.angle.item() == pytest.approx(math.pi / 4)


@pytest.mark.parametrize("name", IMAGES)
def test_matches_mediapipe_face_mesh(nets, reference, gold, name):
    """468 points within 1 px at the model's 192 px input scale of mediapipe 0.10.21's face_mesh."""
    x = gold.png(name)
    h, w = x.shape[-2:]
    ref = np.array(reference[name]["mesh"]).reshape(-1, 468, 3) * np.array([w, h, w])
    mesh, presence, rois = _mesh(nets, x)
    assert len(ref) >= 1 and len(mesh) == len(ref)
    for face in ref:
        err = np.abs(mesh[..., :2] - face[None, :, :2]).max(-1).max(-1)
        k = int(err.argmin())
        assert presence[k] > 0.5
        at_input = err[k] * LANDMARK_INPUT / rois.side[k].item()
        assert at_input < 1.0, (name, at_input)
        # Depth in frame pixels: MediaPipe's z times the frame width.
        assert np.abs(mesh[k, :, 2] - face[:, 2]).max() * LANDMARK_INPUT / rois.side[k].item() < 1.0


def test_five_points_against_hand_measured_truth(nets, truth, gold):
    """The 5 mesh points land on the hand-measured astronaut landmarks (eye distance ~45 px)."""
    for name in ("astro_crop", "astro_rot_p20", "astro_mirror"):
        mesh, _, _ = _mesh(nets, gold.png(name))
        pts = five_points(torch.from_numpy(mesh)).numpy()[0]
        true = np.array(truth[name]["landmarks"])
        err = np.linalg.norm(pts - true, axis=-1)
        assert err[:2].max() < 2.5, (name, err)  # eye centres
        assert err.max() < 6.5, (name, err)  # nose and mouth corners: definitions differ slightly
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # "left" = image left


def test_face_oval_is_the_silhouette(nets, gold):
    mesh, _, _ = _mesh(nets, gold.png("astro_crop"))
    xy = mesh[0, :, :2]
    oval = xy[list(FACE_OVAL)]
    assert len(set(FACE_OVAL)) == 36
    # A simple closed polygon, clockwise on screen (positive shoelace area with y down).
    area = 0.5 * np.sum(oval[:, 0] * np.roll(oval[:, 1], -1) - np.roll(oval[:, 0], -1) * oval[:, 1])
    assert area > 0
    inside = _inside(oval, xy)
    others = [i for i in range(468) if i not in FACE_OVAL]
    assert inside[others].mean() > 0.97  # the rest of the mesh lies within the silhouette
    assert inside[list(RIGHT_EYE_CONTOUR) + list(LEFT_EYE_CONTOUR)].all()
