"""Accuracy clips for ``diagnose``: the repair clips of a real face (``facefix.demo.synth.repair_clip``: ghost,
warp, boil, waxy, clean with motion, blinks and speech) plus identity drift, made by blending the face toward a
second real person over known frames; and an in-memory source so the clips run through the same analysis pass
(detection, tracking) as files do.

The second face: ``assets/examples/second_face.png`` (its NOTICE says where it comes from).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..demo import synth
from ..faces import FaceTracks
from ..geometry import umeyama_similarity
from ..io.frames import Frame, FrameFormat

__all__ = ["SECOND_FACE_LANDMARKS", "second_face", "DiagnoseClip", "drift_clip", "defect_clip", "ArraySource",
           "DEFECT_FLAG"]

# The embedded detector's 5 landmarks on the bundled second face (256 x 256): eyes, nose tip, mouth corners.
SECOND_FACE_LANDMARKS = np.array([[93.4, 93.7], [160.4, 93.2], [129.2, 127.8], [90.0, 162.0], [166.1, 162.5]])

# Which flag should catch each injected defect (a ghost is a transient appearance change: boil).
DEFECT_FLAG = {"ghost": "boil", "boil": "boil", "warp": "warp", "waxy": "waxy", "drift": "drift"}


@functools.lru_cache(maxsize=1)
def second_face() -> np.ndarray:
    """A second real person (float32 sRGB (256, 256, 3)), for identity drift."""
    return synth.bundled_image("second_face.png")


@dataclass(frozen=True)
class DiagnoseClip:
    """frames (T, H, W, 3); defect (T,) frames that carry the defect; ignore (T,) frames that are neither clean nor
    defective (a drift's onset, below half way); kind: the injected defect (``clean``: none); landmarks (T, 5, 2)
    and mesh (T, 468, 2): the truth a tracker that follows the features would report (``tracks_of``)."""

    frames: np.ndarray
    defect: np.ndarray
    ignore: np.ndarray
    kind: str
    landmarks: np.ndarray
    mesh: np.ndarray

    def truth_tracks(self, first: int = 0) -> FaceTracks:
        """One track of the clip's true landmarks and mesh (what ``--tracks`` would give)."""
        return synth.truth_tracks(self.landmarks, self.mesh, first)


def _second_on_still(still_shape: tuple[int, int], still: np.ndarray) -> np.ndarray:
    """The second face warped onto the bundled portrait's landmarks, its colour matched to the portrait's face."""
    other = second_face()
    m = umeyama_similarity(SECOND_FACE_LANDMARKS, synth.ASTRONAUT_LANDMARKS)
    placed = synth.warp_still(other, m, still_shape, background=still)
    face = synth.face_ellipse(still_shape, synth.ASTRONAUT_LANDMARKS, 0.9) > 0.5
    a, b = placed[face], still[face]
    matched = (placed - a.mean(0)) / (a.std(0) + 1e-6) * b.std(0) + b.mean(0)
    return np.clip(matched, 0, 1).astype(np.float32)


def drift_clip(n_frames: int = 40, size: tuple[int, int] = (192, 192), *, seed: int = 0, scale: float = 1.2,
               start: int | None = None, ramp: int = 6) -> DiagnoseClip:
    """A clean repair clip (motion, blinks, speech) whose face blends toward the second person from ``start``
    (default: a seeded frame after the first second at 24 fps) over ``ramp`` frames, up to 60-90 % (seeded),
    then holds. Defect frames: blend at or above 50 %; frames between 0 and 50 % are ``ignore``."""
    rng = np.random.default_rng(seed + 7919)
    clean = synth.repair_clip("clean", n_frames, size, seed=seed, scale=scale)
    first = int(start) if start is not None else int(rng.integers(26, max(27, n_frames - ramp - 4)))
    top = float(rng.uniform(0.6, 0.9))
    alpha = np.clip((np.arange(n_frames) - first + 1) / ramp, 0.0, 1.0) * top
    still = synth.astronaut()
    other = _second_on_still(still.shape[:2], still)
    frames = clean.frames.copy()
    for t in np.nonzero(alpha > 0)[0]:
        m = umeyama_similarity(synth.ASTRONAUT_LANDMARKS, clean.landmarks[t])
        rendered = synth.warp_still(other, m, size, background=clean.frames[t])
        mask = synth.face_ellipse(size, clean.landmarks[t], 1.0, soft=0.25)[..., None] * alpha[t]
        frames[t] = clean.frames[t] * (1 - mask) + rendered * mask
    defect = alpha >= 0.5
    return DiagnoseClip(frames.astype(np.float32), defect, (alpha > 0) & ~defect, "drift", clean.landmarks, clean.mesh)


def defect_clip(kind: str, n_frames: int, size: tuple[int, int] = (192, 192), *, seed: int = 0) -> DiagnoseClip:
    """One accuracy clip: ``kind`` in synth.DEFECTS (clean, ghost, warp, boil, waxy) or ``drift``."""
    scale = size[0] / 160.0
    if kind == "drift":
        return drift_clip(n_frames, size, seed=seed, scale=scale)
    clip = synth.repair_clip(kind, n_frames, size, seed=seed, scale=scale)
    return DiagnoseClip(clip.frames, clip.defect, np.zeros(n_frames, bool), kind, clip.landmarks, clip.mesh)


class ArraySource:
    """Frames in memory (T, H, W, 3) float32 sRGB, numbered from ``first``: what ``track_clip`` reads."""

    kind = "sequence"
    is_float = True

    def __init__(self, frames: np.ndarray, first: int = 0, fps: float = 24.0) -> None:
        self._frames = np.asarray(frames, np.float32)
        self.frame_numbers = list(range(first, first + len(self._frames)))
        self._first = first
        self.fps = fps

    @property
    def format(self) -> FrameFormat:
        return FrameFormat.for_pixels(self._frames[0], "float")

    def read(self, number: int, codes: bool = False) -> Frame:
        return Frame(number, self._frames[number - self._first], self.format)

    def close(self) -> None:
        pass
