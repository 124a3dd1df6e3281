"""Golden fixtures: PNGs and MediaPipe 0.10.21's own results on them (tools/make_detect_goldens.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

GOLDEN = Path(__file__).parent / "golden"
IMAGES = ("astro_crop", "astro_small_wide", "astro_rot_p20", "astro_rot_m20", "astro_mirror", "astro_crowd",
          "camera")


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((GOLDEN / "reference.json").read_text())["images"]


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((GOLDEN / "images.json").read_text())


def load_png(name: str) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]."""
    rgb = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def golden_detections(ref: dict, name: str, model: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's detections in frame pixels: boxes (M, 4) xyxy, keypoints (M, 6, 2), scores (M,)."""
    dets = ref[name][f"detection_model{model}"]
    boxes = np.array([[d["box"][0] * w, d["box"][1] * h, (d["box"][0] + d["box"][2]) * w,
                       (d["box"][1] + d["box"][3]) * h] for d in dets]).reshape(-1, 4)
    kps = np.array([[[p[0] * w, p[1] * h] for p in d["keypoints"]] for d in dets]).reshape(-1, 6, 2)
    return boxes, kps, np.array([d["score"] for d in dets])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


@pytest.fixture(scope="session")
def gold():
    """Helpers for the golden fixtures (conftest functions are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(png=load_png, detections=golden_detections, iou=iou_matrix, images=IMAGES)
