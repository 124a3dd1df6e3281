"""Gap filling inside a track: faces for the listed frames between two detections.

A face missing for a few frames (a hand passing, a blink, a missed detection) is filled so the restore
pass does not flicker between fixed and unfixed. Positions follow a cubic Hermite curve through the two
detections on either side of the gap, with end slopes from parabolas through one more detection outside
the gap on each side, so a face moving at constant velocity or constant acceleration stays on its path;
where no such detection exists the slope falls back to the chord (linear interpolation). Filled faces are marked ``source='interpolated'``
(and later re-estimated by the smoother, which treats them as unobserved).

Convention: time is counted in listed frames (consecutive entries of the clip's frame list are one step
apart, whatever their frame numbers); coordinates are frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..faces import Face, FaceTrack

__all__ = ["hermite", "fill_gaps"]


def hermite(p0: np.ndarray, p1: np.ndarray, m0: np.ndarray, m1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Cubic Hermite curve from ``p0`` (at s=0) to ``p1`` (at s=1) with end slopes ``m0``, ``m1`` (per unit
    s), evaluated at (K,) parameters ``s`` -> (K, *p0.shape)."""
    s = np.asarray(s, np.float64).reshape(-1, *([1] * np.ndim(p0)))
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1)


def _vector(face: Face, with_mesh: bool) -> np.ndarray:
    parts = [face.landmarks.ravel(), np.asarray(face.box, np.float64)]
    if with_mesh and face.mesh is not None:
        parts.append(np.asarray(face.mesh, np.float64).ravel())
    return np.concatenate(parts)


def listed_positions(track: FaceTrack, frames: Sequence[int], who: str) -> dict[int, int]:
    """Index of each listed frame number in the clip's sorted frame list; every frame of ``track`` must be listed."""
    pos = {n: i for i, n in enumerate(sorted(int(n) for n in frames))}
    missing = [n for n in track.faces if n not in pos]
    if missing:
        raise InputError(f"{who}: track {track.id} has frame {missing[0]} that is not in the clip's frame list")
    return pos


def fill_gaps(track: FaceTrack, frames: Sequence[int], max_gap: int = 12) -> FaceTrack:
    """Return ``track`` with faces added on the listed frames inside its gaps of at most ``max_gap`` frames.

    frames: the clip's listed frame numbers; only those are filled (a clip stepping 1001, 1003, ... gets no
    face on 1002). Gaps longer than ``max_gap`` listed frames are left empty. Interpolated faces carry the
    lower score of the two ends; meshes are interpolated when both ends have one of the same shape.
    """
    if len(track.faces) < 2:
        return track
    pos = listed_positions(track, frames, "fill_gaps")
    listed = sorted(pos, key=pos.__getitem__)
    have = sorted(track.faces, key=lambda n: pos[n])
    idx = [pos[n] for n in have]
    out = dict(track.faces)
    for k in range(len(have) - 1):
        a, b = idx[k], idx[k + 1]
        gap = b - a - 1
        if gap <= 0 or gap > max_gap:
            continue
        fa, fb = track.faces[have[k]], track.faces[have[k + 1]]
        with_mesh = fa.mesh is not None and fb.mesh is not None and np.shape(fa.mesh) == np.shape(fb.mesh)
        pa, pb = _vector(fa, with_mesh), _vector(fb, with_mesh)
        span = float(b - a)
        # End slopes (per gap span) from the parabola through a detection outside the gap and the two
        # ends: exact for constant acceleration. The outside detection is taken about half a span away
        # (not the adjacent frame) so detector jitter is not blown up over a long gap.
        chord = pb - pa
        m0, m1 = chord, chord
        reach = max(1, span // 2)
        before = [j for j in range(k) if a - span <= idx[j] < a]
        if before:
            j = min(before, key=lambda j: abs(a - idx[j] - reach))
            prev = _vector(track.faces[have[j]], with_mesh)
            if prev.shape == pa.shape:
                h0 = float(a - idx[j])
                m0 = span * ((pa - prev) / h0 * span / (h0 + span) + chord / span * h0 / (h0 + span))
        after = [j for j in range(k + 2, len(have)) if b < idx[j] <= b + span]
        if after:
            j = min(after, key=lambda j: abs(idx[j] - b - reach))
            nxt = _vector(track.faces[have[j]], with_mesh)
            if nxt.shape == pb.shape:
                h2 = float(idx[j] - b)
                m1 = span * ((nxt - pb) / h2 * span / (h2 + span) + chord / span * h2 / (h2 + span))
        s = np.arange(1, gap + 1, dtype=np.float64) / span
        vals = hermite(pa, pb, m0, m1, s)
        for j in range(gap):
            v = vals[j]
            box = v[10:14]
            if box[2] <= box[0] or box[3] <= box[1]:  # degenerate curve: fall back to the straight line
                v = pa + s[j] * chord
                box = v[10:14]
            mesh = v[14:].reshape(np.shape(fa.mesh)) if with_mesh and fa.mesh is not None else None
            out[listed[a + 1 + j]] = Face(box=tuple(box), landmarks=v[:10].reshape(5, 2),  # type: ignore[arg-type]
                                          score=min(fa.score, fb.score), track_id=track.id,
                                          source="interpolated", mesh=mesh)
    return FaceTrack(id=track.id, faces=out)
