"""Which faces to fix: all, the largest per shot, given track ids, or the character in a reference image.

Selection works on whole tracks, so a choice holds for every frame of a face.

Reference selection compares identity embeddings of faces aligned to the 512 px template (the same crops
the restore pass uses): the reference image's face and a few well-detected frames of every track
(``sample_frames``) are embedded in one batch, and each track scores the median cosine similarity of its
frames to the reference (the median makes one blurred or half-turned frame harmless). Per shot, the track
that matches best is the character; others are kept too when they reach ``min_similarity``.

The embedding is ``facefix.identity.embed_faces`` with ``facefix.identity.default_identity_model``: dlib's
face-recognition ResNet when its weights are installed (``pip install face-recognition-models`` or ``facefix
models pull dlib-resnet-v1``), a learned identity space that holds one person together across pose and
lighting; otherwise the offline LBP/HOG descriptor ("facefix.lbp-hog.1"), which is blind to exposure and grade
changes but whose similarities are not calibrated across faces (all faces share a layout, so scores sit close
together). Either way the rule is relative: best match per shot, with ``min_similarity`` as an optional floor
(it suits the learned embedding). ``metadata['identity_model']`` names the model that measured. The
embedding function is a parameter so tests and hosts can supply their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError, SettingsError
from ..faces import FaceTrack, FaceTracks

if TYPE_CHECKING:
    import torch

__all__ = [
    "SELECT_MODES",
    "shot_of",
    "select_all",
    "select_largest",
    "select_ids",
    "select_reference",
    "sample_frames",
    "reference_similarity",
    "select_tracks",
]

SELECT_MODES = ("all", "largest", "ids", "reference")

EmbedFn = Callable[["torch.Tensor"], "torch.Tensor"]


def _subset(tracks: FaceTracks, keep: Iterable[int], mode: str) -> FaceTracks:
    wanted = set(keep)
    meta = dict(tracks.metadata)
    meta["selection"] = mode
    return FaceTracks(tracks=tuple(t for t in tracks.tracks if t.id in wanted), metadata=meta)


def shot_of(frame: int, cuts: Iterable[int]) -> int:
    """Shot index of ``frame``: the number of cut frames (frames that start a shot) at or before it."""
    return sum(1 for c in cuts if c <= frame)


def select_all(tracks: FaceTracks) -> FaceTracks:
    """Every track."""
    return _subset(tracks, (t.id for t in tracks.tracks), "all")


def select_largest(tracks: FaceTracks, cuts: Iterable[int] = ()) -> FaceTracks:
    """Per shot, the one track with the largest median face size (detected frames only when it has any)."""
    cut_list = sorted(int(c) for c in cuts)
    best: dict[int, tuple[float, int]] = {}
    for t in tracks.tracks:
        if not t.faces:
            continue
        det = [f.size for f in t.faces.values() if f.source != "interpolated"] or [f.size for f in t.faces.values()]
        size = float(np.median(det))
        shot = shot_of(min(t.faces), cut_list)
        if shot not in best or size > best[shot][0]:
            best[shot] = (size, t.id)
    return _subset(tracks, (tid for _, tid in best.values()), "largest")


def select_ids(tracks: FaceTracks, ids: Sequence[int]) -> FaceTracks:
    """The tracks with the given ids; an id that no track has is an error naming ``--face-ids``."""
    have = {t.id for t in tracks.tracks}
    unknown = [i for i in ids if i not in have]
    if unknown:
        raise SettingsError(f"--face-ids: no track with id {unknown[0]} (tracks: {sorted(have)})")
    return _subset(tracks, ids, "ids")


def sample_frames(track: FaceTrack, count: int = 5) -> list[int]:
    """Up to ``count`` frames of a track to embed: detected frames spread over its length, best score
    first within each stretch (interpolated frames only if nothing else is there)."""
    frames = [n for n in track.frames if track.faces[n].source != "interpolated"] or track.frames
    if len(frames) <= count:
        return frames
    chunks = np.array_split(np.array(frames), count)
    return [int(max(c, key=lambda n: track.faces[int(n)].score)) for c in chunks if len(c)]


def _default_embed(device: torch.device | str = "cpu") -> EmbedFn:
    """The default identity model (dlib's ResNet when installed, else the LBP/HOG descriptor) on ``device``."""
    from ..identity import default_identity_model

    return default_identity_model(device)


def reference_similarity(reference_crops: torch.Tensor, track_crops: Mapping[int, torch.Tensor],
                         embed: EmbedFn | None = None) -> dict[int, float]:
    """Median cosine similarity of each track's crops to the reference.

    reference_crops: (R, 3, 512, 512) aligned crops of the reference face (their embeddings are averaged);
    track_crops: track id -> (K, 3, 512, 512) aligned crops of that track. All tracks are embedded in one
    batched call. Returns track id -> similarity in [-1, 1].
    """
    import torch

    fn = embed or _default_embed(reference_crops.device)
    if reference_crops.ndim != 4 or reference_crops.shape[0] < 1:
        raise InputError(f"--reference: expected (R, 3, H, W) aligned crops, got shape {tuple(reference_crops.shape)}")
    ids = [tid for tid, c in track_crops.items() if c.shape[0] > 0]
    if not ids:
        return {}
    batch = torch.cat([reference_crops] + [track_crops[t] for t in ids], dim=0)
    emb = fn(batch).float()
    emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ref = emb[: reference_crops.shape[0]].mean(dim=0)
    ref = ref / ref.norm().clamp_min(1e-12)
    sims = emb[reference_crops.shape[0]:] @ ref
    out: dict[int, float] = {}
    start = 0
    for t in ids:
        k = track_crops[t].shape[0]
        out[t] = float(sims[start:start + k].median())
        start += k
    return out


def select_reference(tracks: FaceTracks, reference_crops: torch.Tensor, track_crops: Mapping[int, torch.Tensor], *,
                     cuts: Iterable[int] = (), embed: EmbedFn | None = None,
                     min_similarity: float | None = None) -> FaceTracks:
    """The tracks whose face is the reference character (see the module docstring).

    track_crops: track id -> (K, 3, 512, 512) aligned crops (e.g. of ``sample_frames(track)``); tracks
    without crops are not selected. Per shot (``cuts``: frames that start a shot) the best-matching track
    is kept if it reaches ``min_similarity`` (None: no floor), and so is every other track that reaches
    it. ``metadata['similarity']`` records each track's score.
    """
    if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
        raise SettingsError(f"reference min_similarity must be in [-1, 1], got {min_similarity}")
    embed = embed or _default_embed(reference_crops.device)
    sims = reference_similarity(reference_crops, track_crops, embed)
    floor = -np.inf if min_similarity is None else float(min_similarity)
    cut_list = sorted(int(c) for c in cuts)
    best: dict[int, tuple[float, int]] = {}
    keep: set[int] = set()
    for t in tracks.tracks:
        if t.id not in sims or not t.faces:
            continue
        s = sims[t.id]
        if min_similarity is not None and s >= floor:
            keep.add(t.id)
        shot = shot_of(min(t.faces), cut_list)
        if shot not in best or s > best[shot][0]:
            best[shot] = (s, t.id)
    keep.update(tid for s, tid in best.values() if s >= floor)
    out = _subset(tracks, keep, "reference")
    meta = dict(out.metadata)
    meta["similarity"] = {str(t): round(s, 4) for t, s in sims.items()}
    meta["identity_model"] = str(getattr(embed, "name", "custom"))
    return FaceTracks(tracks=out.tracks, metadata=meta)


def select_tracks(tracks: FaceTracks, settings: object, *, reference_crops: torch.Tensor | None = None,
                  track_crops: Mapping[int, torch.Tensor] | None = None, embed: EmbedFn | None = None) -> FaceTracks:
    """Apply ``settings.faces`` (all | largest | ids | reference) to ``tracks``.

    Shots come from ``tracks.metadata['cuts']``. ``ids`` uses ``settings.track_ids``. ``reference`` needs
    the aligned crops of the reference face and of the tracks (the caller owns frames and alignment).
    """
    mode = getattr(settings, "faces", "all")
    cuts = [int(c) for c in tracks.metadata.get("cuts", [])]
    if mode == "all":
        return select_all(tracks)
    if mode == "largest":
        return select_largest(tracks, cuts)
    if mode == "ids":
        ids = tuple(getattr(settings, "track_ids", ()))
        if not ids:
            raise SettingsError("--face-ids: give at least one track id with --faces ids")
        return select_ids(tracks, ids)
    if mode == "reference":
        if reference_crops is None or track_crops is None:
            raise SettingsError("--faces reference: needs the aligned reference face and track crops (--reference)")
        return select_reference(tracks, reference_crops, track_crops, cuts=cuts, embed=embed)
    raise SettingsError(f"--faces: unknown selection {mode!r} (choose from {', '.join(SELECT_MODES)})")
