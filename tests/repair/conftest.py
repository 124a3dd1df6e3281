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


@pytest.fixture(scope="session")
def write_repair_shot():  # type: ignore[no-untyped-def]
    """``write(root, clip, first=1001, mesh=True)``: a ``synth.repair_clip`` as a float EXR sequence ``p.####.exr``
    in ``root``; returns its FaceTracks from the clip's true landmarks (boxes 30 px around them; with the true mesh
    unless ``mesh=False``)."""

    def write(root, clip, first=1001, mesh=True):  # type: ignore[no-untyped-def]
        from facefix import Face, FaceTracks
        from facefix.io import Frame, FrameFormat
        from facefix.io.sequence import write_frame

        per = {}
        for i, (rgb, lm, m) in enumerate(zip(clip.frames, clip.landmarks, clip.mesh)):
            n = first + i
            write_frame(root / f"p.{n:04d}.exr", Frame(n, rgb, FrameFormat.for_pixels(rgb, "float")))
            box = (*(lm.min(0) - 30), *(lm.max(0) + 30))
            per[n] = [Face(box=box, landmarks=lm, track_id=0, mesh=m if mesh else None)]
        return FaceTracks.from_faces(per)

    return write
