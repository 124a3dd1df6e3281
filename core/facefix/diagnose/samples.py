"""What the scores read of each face track, gathered in one pass over the frames: aligned crops at the analysis
resolution, the mesh (or landmarks) in template pixels, identity embeddings, and whether the face is large
enough in the frame for its fine skin texture to be measured."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..faces import Face, FaceTracks
from ..geometry import TEMPLATE_SIZE, affine_scale, crop_from_frame_matrix, transform_points, warp_affine
from .scores import ANALYSIS_SIZE

__all__ = ["TrackSamples", "collect_samples", "IDENTITY_SIZE", "face_points"]

IDENTITY_SIZE = 256  # px of the crops the identity embedder reads (it resamples to its own template)


@dataclass
class TrackSamples:
    track_id: int
    numbers: list[int] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list)  # (3, ANALYSIS_SIZE, ANALYSIS_SIZE) each
    points: list[np.ndarray] = field(default_factory=list)  # (P, 2) template px
    embeddings: list[torch.Tensor] = field(default_factory=list)  # (D,)
    scorable: list[bool] = field(default_factory=list)  # the face is at least ANALYSIS_SIZE px in the frame
    faces: list[Face] = field(default_factory=list)

    def stacked_crops(self) -> torch.Tensor:
        return torch.stack(self.crops) if self.crops else torch.zeros((0, 3, ANALYSIS_SIZE, ANALYSIS_SIZE))


def face_points(face: Face) -> np.ndarray:
    """The face's dense mesh (or its 5 landmarks) in 512-template pixels."""
    m = crop_from_frame_matrix(face.landmarks, TEMPLATE_SIZE)
    mesh = face.mesh
    pts = face.landmarks if mesh is None or len(mesh) < 6 else np.asarray(mesh, np.float64)[:, :2]
    return transform_points(m, pts)


def collect_samples(frames: Iterable[tuple[int, np.ndarray]], tracks: FaceTracks, *,
                    device: torch.device | str = "cpu",
                    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    on_frame: Callable[[int], None] | None = None) -> dict[int, TrackSamples]:
    """One pass over ``frames`` ((number, working RGB (H, W, 3) float32 in [0, 1]) in frame order): per track id,
    its samples. ``embed``: identity embeddings of (N, 3, IDENTITY_SIZE, IDENTITY_SIZE) crops (None: none)."""
    dev = torch.device(device)
    out: dict[int, TrackSamples] = {t.id: TrackSamples(t.id) for t in tracks.tracks}
    by_frame: dict[int, list[Face]] = {}
    for t in tracks.tracks:
        for n, f in t.faces.items():
            by_frame.setdefault(int(n), []).append(Face(f.box, f.landmarks, f.score, t.id, f.source, f.mesh))
    for n, rgb in frames:
        faces = by_frame.get(int(n), [])
        if faces:
            img = torch.from_numpy(np.ascontiguousarray(rgb[..., :3].transpose(2, 0, 1), dtype=np.float32))[None].to(dev)
            lms = np.stack([f.landmarks for f in faces])
            idx = np.zeros(len(faces), np.int64)
            mats = crop_from_frame_matrix(lms, ANALYSIS_SIZE)
            small = warp_affine(img, mats, (ANALYSIS_SIZE, ANALYSIS_SIZE), src_index=idx).clamp(0, 1)
            emb = None
            if embed is not None:
                big = warp_affine(img, crop_from_frame_matrix(lms, IDENTITY_SIZE), (IDENTITY_SIZE, IDENTITY_SIZE),
                                  src_index=idx).clamp(0, 1)
                emb = embed(big).detach()
            # The crop resamples the frame by this factor: above 1 the crop is an enlargement, its finest band empty.
            zoom = affine_scale(crop_from_frame_matrix(lms, ANALYSIS_SIZE))
            for j, f in enumerate(faces):
                s = out[f.track_id]
                s.numbers.append(int(n))
                s.crops.append(small[j])
                s.points.append(face_points(f))
                s.scorable.append(bool(zoom[j] <= 1.0))
                s.faces.append(f)
                if emb is not None:
                    s.embeddings.append(emb[j])
        if on_frame is not None:
            on_frame(int(n))
    return out


def sample_frames_of(samples: TrackSamples, numbers: Sequence[int]) -> list[int]:
    """Indices into ``samples`` of the frames ``numbers`` that the track has."""
    where = {n: i for i, n in enumerate(samples.numbers)}
    return [where[n] for n in numbers if n in where]
