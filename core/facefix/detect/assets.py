"""The MediaPipe model files shipped in ``facefix/assets/mediapipe`` and their sha256 (see SOURCES)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

__all__ = ["MEDIAPIPE_DIR", "MEDIAPIPE_SHA256", "asset_path"]

MEDIAPIPE_DIR = Path(__file__).resolve().parent.parent / "assets" / "mediapipe"

# From mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl, copied unmodified.
MEDIAPIPE_SHA256 = {
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    # hands (facefix.hands: diagnosis only)
    "palm_detection_full.tflite": "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    "hand_landmark_full.tflite": "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
}


def asset_path(name: str) -> tuple[Path, str]:
    """Path and expected sha256 of a shipped model file."""
    if name not in MEDIAPIPE_SHA256:
        raise ModelError(f"{name}: not a shipped MediaPipe model")
    p = MEDIAPIPE_DIR / name
    if not p.is_file():
        raise ModelError(f"{p}: shipped model file is missing (reinstall facefix)")
    return p, MEDIAPIPE_SHA256[name]
