"""Clips for the tracking tests: a real photo moved with known transforms, detections from ground truth.

Noise is specified at the 512 template scale: a face of box size ``s`` frame pixels gets landmark noise of
``sigma * s / 512`` frame pixels, and errors are reported back at that scale (x 512 / s).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from facefix.demo import synth
from facefix.faces import Face


def gt_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    """A detector-like box around 5 landmarks (about 2.2 eye distances wide)."""
    c = lm.mean(axis=0)
    half = 1.1 * float(np.linalg.norm(lm[1] - lm[0]))
    return (c[0] - half, c[1] - 1.2 * half, c[0] + half, c[1] + 1.0 * half)


def face_size(lm: np.ndarray) -> float:
    x0, y0, x1, y1 = gt_box(lm)
    return max(x1 - x0, y1 - y0)


def noisy_face(lm: np.ndarray, sigma_template: float, rng: np.random.Generator) -> Face:
    """A detection: true landmarks plus Gaussian noise of ``sigma_template`` px at template scale."""
    s = face_size(lm) * sigma_template / 512.0
    noisy = lm + rng.normal(0.0, s, lm.shape)
    return Face(box=gt_box(noisy), landmarks=noisy, score=0.99)


def rms_template(est: np.ndarray, truth: np.ndarray) -> float:
    """RMS landmark error (T, 5, 2) in template pixels."""
    k = 512.0 / np.array([face_size(t) for t in truth])
    err = np.linalg.norm(est - truth, axis=-1) * k[:, None]
    return float(np.sqrt((err**2).mean()))


def render(mats: np.ndarray, size: tuple[int, int], still: np.ndarray, background: np.ndarray | None = None,
           gain: np.ndarray | None = None) -> np.ndarray:
    """Render the still through each (2, 3) frame_from_still matrix -> (T, H, W, 3)."""
    h, w = size
    bg = np.full((h, w, 3), 0.45, np.float32) if background is None else background
    out = np.stack([synth.warp_still(still, m, size, background=bg) for m in mats])
    if gain is not None:
        out = np.clip(out * gain[:, None, None, None], 0, 1).astype(np.float32)
    return out


def translation_mats(n: int, start: tuple[float, float], step: tuple[float, float], scale: float) -> np.ndarray:
    """Matrices placing the still's face centre at ``start`` + t * ``step``, scaled by ``scale``."""
    c = synth.ASTRONAUT_LANDMARKS.mean(axis=0)
    return np.stack([
        synth.similarity(scale, 0.0, start[0] + step[0] * t - c[0], start[1] + step[1] * t - c[1], center=(c[0], c[1]))
        for t in range(n)
    ])


@pytest.fixture(scope="session")
def still() -> np.ndarray:
    return synth.astronaut()


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    return SimpleNamespace(gt_box=gt_box, face_size=face_size, noisy_face=noisy_face, rms_template=rms_template,
                           render=render, translation_mats=translation_mats)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
