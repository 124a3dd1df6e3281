"""Index sets of MediaPipe's 468-point face mesh, and the 5 alignment points derived from it.

The 5 points follow the FFHQ template's definition (FFHQ aligned its faces from dlib's 68 points with
eye centres = mean of each eye's six contour points, and the two mouth corners):

* eye centres: the mean of each eye's 16-point lid contour (``RIGHT_EYE_CONTOUR`` for the subject's
  right eye, which is on the image's left in an upright face; ``LEFT_EYE_CONTOUR`` for the other).
  The mean of the closed lid contour sits on the iris centre for an open eye, like dlib's six points.
* nose tip: vertex 4, the lower end of the nose ridge line seen from the front (dlib's point 30). On
  the astronaut photo it lies 1.4 px from the hand-measured tip, vertex 1 (pronasale) 5.7 px below it.
* mouth corners: vertices 61 (subject's right, image left) and 291 (subject's left, image right), the
  lip commissures (dlib's points 48 and 54).

Eyes are not reordered by x: for a face turned upside down, swapping them would mirror the aligned
crop. For upright and moderately rolled faces (the cases the FFHQ template is meant for), point 0 is
the eye on the image's left.

``FACE_OVAL`` is the mesh silhouette as a closed, ordered contour (36 vertices, clockwise on screen
starting at the top of the forehead), for mask building.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "RIGHT_EYE_CONTOUR",
    "LEFT_EYE_CONTOUR",
    "NOSE_TIP",
    "MOUTH_RIGHT_CORNER",
    "MOUTH_LEFT_CORNER",
    "FACE_OVAL",
    "five_points",
    "five_points_from_detection",
]

# Subject's right eye (image left): the 16 lid-contour vertices.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
# Subject's left eye (image right).
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
NOSE_TIP = 4
MOUTH_RIGHT_CORNER = 61  # image left
MOUTH_LEFT_CORNER = 291  # image right

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


def five_points(mesh: Tensor) -> Tensor:
    """The 5 alignment points (K, 5, 2) from meshes (K, 468, 2|3): left eye, right eye, nose tip,
    left mouth corner, right mouth corner ("left" = image left for an upright face)."""
    xy = mesh[..., :2]
    re = xy[:, list(RIGHT_EYE_CONTOUR)].mean(1)
    le = xy[:, list(LEFT_EYE_CONTOUR)].mean(1)
    return torch.stack([re, le, xy[:, NOSE_TIP], xy[:, MOUTH_RIGHT_CORNER], xy[:, MOUTH_LEFT_CORNER]], 1)


# FFHQ 5-point template (512 px): mouth width / eye distance, for the fallback below.
_FFHQ_EYES = np.array([[192.98, 239.95], [318.90, 240.19]])
_FFHQ_MOUTH = np.array([[201.26, 371.41], [313.08, 371.15]])
_MOUTH_HALF = float(np.linalg.norm(_FFHQ_MOUTH[1] - _FFHQ_MOUTH[0]) / np.linalg.norm(_FFHQ_EYES[1] - _FFHQ_EYES[0]) / 2)


def five_points_from_detection(keypoints: Tensor) -> Tensor:
    """5 points (K, 5, 2) from BlazeFace keypoints (K, 6, 2) when no mesh is available.

    BlazeFace gives the mouth centre only: the corners are placed along the eye direction at the FFHQ
    template's mouth-width-to-eye-distance ratio.
    """
    eye_vec = keypoints[:, 1] - keypoints[:, 0]
    mouth = keypoints[:, 3]
    return torch.stack([keypoints[:, 0], keypoints[:, 1], keypoints[:, 2],
                        mouth - _MOUTH_HALF * eye_vec, mouth + _MOUTH_HALF * eye_vec], 1)
