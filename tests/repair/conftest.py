"""Repair tests: defect clips of a real face with their clean truth (facefix.demo.synth.repair_clip), aligned the
way the pipeline aligns them, small enough for the CPU."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.geometry import crop_from_frame_matrix, warp_affine


def aligned(frames: np.ndarray, landmarks: np.ndarray, size: int = 256) -> torch.Tensor:
    """(T, 3, size, size) crops of a clip's face, aligned on its landmarks (as the align stage does)."""
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    mats = np.stack([crop_from_frame_matrix(lm, size) for lm in landmarks])
    return warp_affine(x, mats, (size, size), src_index=np.arange(len(frames))).clamp(0, 1)


@functools.lru_cache(maxsize=16)
def _clip(kind: str, n: int, seed: int, size: int) -> synth.RepairClip:
    return synth.repair_clip(kind, n, (size, size), seed=seed, scale=size / 160.0)


@pytest.fixture(scope="session")
def repair_clip():
    return _clip


@pytest.fixture(scope="session")
def align():
    return aligned
