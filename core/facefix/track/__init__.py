"""Following faces over a shot: association, cuts, gap filling, zero-lag smoothing, selection.

``build_tracks`` is the stage's pure entry: per-frame detections in, ``FaceTracks`` out.

Convention: frame numbers are the clip's own (they may step: 1001, 1003, ...); consecutive *listed*
frames (the keys of ``detections``) are neighbours one time step apart. Coordinates are frame pixels,
(x, y), pixel centres at +0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError, SettingsError
from ..faces import Face, FaceTrack, FaceTracks
from .associate import AssociationWeights, Tracker, appearance_descriptors, linear_assignment
from .cuts import cut_score, cut_scores, find_cuts, thumbnail
from .interpolate import fill_gaps
from .select import select_all, select_ids, select_largest, select_reference
from .smooth import SmoothParams, rts_smooth, smooth_track

__all__ = [
    "build_tracks",
    "TrackBuilder",
    "AssociationWeights",
    "SmoothParams",
    "Tracker",
    "appearance_descriptors",
    "linear_assignment",
    "thumbnail",
    "cut_score",
    "cut_scores",
    "find_cuts",
    "fill_gaps",
    "rts_smooth",
    "smooth_track",
    "select_all",
    "select_ids",
    "select_largest",
    "select_reference",
]


def build_tracks(detections: Mapping[int, Sequence[Face]], cuts: Iterable[int], *,
                 appearance: Mapping[int, Sequence[np.ndarray]] | None = None, max_gap: int = 12,
                 smooth: bool = True, smooth_params: SmoothParams | None = None,
                 weights: AssociationWeights | None = None, min_length: int = 1) -> FaceTracks:
    """Group per-frame detections into tracks, split at cuts, fill short gaps, and smooth.

    detections: frame number -> the faces detected on it (list every analysed frame, also those with no
    face: the keys are the clip's frame list). cuts: frame numbers that start a new shot; no track crosses
    one. appearance: frame number -> one appearance vector per face, same order
    (``appearance_descriptors(frame, faces)``); without it association uses geometry only. max_gap: a
    face missing for up to this many listed frames keeps its id and the gap is filled with
    ``interpolated`` faces. smooth: zero-lag RTS smoothing of every track (``smooth_params``, default
    ``SmoothParams()``). weights: association cost weights and gates (default ``AssociationWeights()``).
    min_length: tracks with fewer detected frames are dropped (1 keeps everything).

    Returns FaceTracks with ids numbered from 0 in order of appearance; ``metadata['cuts']`` lists the cuts
    inside the clip. The same as a :class:`TrackBuilder` given the frames one by one.
    """
    if min_length < 1:  # before any work (``finish`` would say so too, after the association)
        raise SettingsError(f"build_tracks: need min_length >= 1, got {min_length}")
    frames = sorted(int(n) for n in detections)
    cut_set = {int(c) for c in cuts}
    builder = TrackBuilder(max_gap=max_gap, weights=weights)
    for index, n in enumerate(frames):
        app = None
        if appearance is not None:
            if n not in appearance:
                raise InputError(f"build_tracks: frame {n} has detections but no appearance vectors")
            app = appearance[n]
        cut = n in cut_set or (index > 0 and any(frames[index - 1] < c < n for c in cut_set))
        builder.add(n, detections[n], app, cut=cut)
    return builder.finish(cut_set, smooth=smooth, smooth_params=smooth_params, min_length=min_length)


class TrackBuilder:
    """:func:`build_tracks` a frame at a time, for a pass that analyses a shot as it reads it: each frame's faces
    are associated as they come (``add``, frames in order, a cut flagged on the frame that starts a shot), and
    ``finish`` fills the gaps, smooths (which needs whole tracks) and numbers the tracks."""

    def __init__(self, *, max_gap: int = 12, weights: AssociationWeights | None = None) -> None:
        if max_gap < 0:
            raise SettingsError(f"build_tracks: need max_gap >= 0, got {max_gap}")
        self.max_gap = max_gap
        self.frames: list[int] = []
        self._tracker = Tracker(max_gap=max_gap, weights=weights or AssociationWeights())
        self._per_track: dict[int, dict[int, Face]] = {}

    def add(self, number: int, faces: Sequence[Face], appearance: Sequence[np.ndarray] | None = None, *,
            cut: bool = False) -> None:
        """The faces detected on the next listed frame ``number`` (and their appearance vectors, same order);
        ``cut``: it starts a new shot (no track continues into it)."""
        n = int(number)
        if self.frames and n <= self.frames[-1]:
            raise InputError(f"build_tracks: frame {n} comes after frame {self.frames[-1]}: frames go in order")
        faces = list(faces)
        if cut:
            self._tracker.reset()
        ids = self._tracker.update(len(self.frames), faces, None if appearance is None else list(appearance))
        self.frames.append(n)
        for f, tid in zip(faces, ids, strict=True):
            self._per_track.setdefault(tid, {})[n] = Face(box=f.box, landmarks=f.landmarks, score=f.score,
                                                           track_id=tid, source=f.source, mesh=f.mesh)

    def finish(self, cuts: Iterable[int], *, smooth: bool = True, smooth_params: SmoothParams | None = None,
               min_length: int = 1) -> FaceTracks:
        """The tracks of every frame added: short gaps filled, smoothed, ids numbered from 0 in order of
        appearance; ``metadata['cuts']``: those of ``cuts`` inside the frames added."""
        if min_length < 1:
            raise SettingsError(f"build_tracks: need min_length >= 1, got {min_length}")
        frames = self.frames
        params = smooth_params or SmoothParams()
        tracks: list[FaceTrack] = []
        for tid in sorted(self._per_track):
            faces_by_frame = self._per_track[tid]
            if sum(1 for f in faces_by_frame.values() if f.source != "interpolated") < min_length:
                continue
            track = fill_gaps(FaceTrack(id=tid, faces=faces_by_frame), frames, max_gap=self.max_gap)
            if smooth:
                track = smooth_track(track, frames, params)
            tracks.append(track)
        # Renumber densely in order of first appearance, so ids read 0, 1, 2 ... in the host.
        tracks.sort(key=lambda t: (min(t.faces), t.id))
        renum = []
        for new_id, t in enumerate(tracks):
            renamed = {n: Face(box=f.box, landmarks=f.landmarks, score=f.score, track_id=new_id, source=f.source,
                               mesh=f.mesh)
                       for n, f in sorted(t.faces.items())}
            renum.append(FaceTrack(id=new_id, faces=renamed))
        inside = sorted({int(c) for c in cuts if frames and frames[0] < int(c) <= frames[-1]})
        return FaceTracks(tracks=tuple(renum), metadata={"cuts": inside})
