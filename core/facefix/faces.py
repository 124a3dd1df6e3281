"""Faces and FaceTracks, the exchange format between the core and the hosts.

Convention: pixel coordinates in the frame, (x, y) order, origin at the top-left corner of the
top-left pixel (pixel centres at +0.5). Landmarks are, in order: left eye centre, right eye centre,
nose tip, left mouth corner, right mouth corner, where "left" is the image's left (the subject's right).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputError

__all__ = ["Face", "FaceTrack", "FaceTracks", "FaceBatch", "face_regions", "FACETRACKS_VERSION", "Source"]

FACETRACKS_VERSION = "facefix.FaceTracks.1"

Source = Literal["detected", "interpolated", "host"]
_SOURCES = ("detected", "interpolated", "host")


@dataclass(frozen=True)
class Face:
    """One face in one frame.

    box: (x0, y0, x1, y1); landmarks: (5, 2) float64; mesh: optional (468, 2|3) dense landmarks.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float = 1.0
    track_id: int = -1
    source: Source = "detected"
    mesh: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        lm = np.asarray(self.landmarks, dtype=np.float64)
        if lm.shape != (5, 2):
            raise InputError(f"face landmarks must be 5 (x, y) points, got shape {lm.shape}")
        box = tuple(float(v) for v in self.box)
        # Method calls and math on the box's floats: a shot's analysis makes a few Faces a face a frame.
        if not np.isfinite(lm).all() or not all(map(math.isfinite, box)):
            raise InputError("face box/landmarks contain NaN or Inf")
        object.__setattr__(self, "landmarks", lm)
        object.__setattr__(self, "box", box)

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    def scaled(self, factor: float) -> Face:
        """The same face in a frame scaled by ``factor`` (used to paste at upscaled resolution)."""
        mesh = None if self.mesh is None else self.mesh * factor
        return Face(
            box=tuple(v * factor for v in self.box),  # type: ignore[arg-type]
            landmarks=self.landmarks * factor,
            score=self.score,
            track_id=self.track_id,
            source=self.source,
            mesh=mesh,
        )


@dataclass(frozen=True)
class FaceTrack:
    """A face followed across frames: ``faces`` maps frame number -> Face."""

    id: int
    faces: Mapping[int, Face]

    @property
    def frames(self) -> list[int]:
        return sorted(self.faces)


# Decimals a FaceTracks file keeps of a mesh's x and y (1e-3 px).
_MESH_DECIMALS = 3


def _as_saved(f: Face, track_id: int) -> Face:
    """A face as a FaceTracks file keeps it and reads it back: box and landmarks to 1e-4 px, the score to 1e-5,
    the mesh's x and y to 1e-3 px (its depth is not kept)."""
    return Face(box=tuple(round(float(v), 4) for v in f.box),  # type: ignore[arg-type]
                landmarks=np.array([[round(float(x), 4), round(float(y), 4)] for x, y in f.landmarks], np.float64),
                score=round(float(f.score), 5), track_id=track_id, source=f.source,
                mesh=None if f.mesh is None else np.round(np.asarray(f.mesh[:, :2], np.float64), _MESH_DECIMALS))


def _frame_json(face: Face, track_id: int, number: int) -> dict[str, Any]:
    """One frame's entry of a FaceTracks file."""
    f = _as_saved(face, track_id)
    entry = _frame_head(f, number)
    if f.mesh is not None:
        entry["mesh"] = f.mesh.tolist()
    return entry


def _frame_head(f: Face, number: int) -> dict[str, Any]:
    """A saved face's entry but its mesh (which comes last)."""
    return {"frame": int(number), "box": list(f.box), "landmarks": f.landmarks.tolist(), "score": f.score,
            "source": f.source}


def _frame_text(face: Face, number: int, mesh_text: str | None) -> str:
    """A saved face's entry of a compact FaceTracks file: ``json.dumps`` of its head, then its mesh's text
    (:func:`_mesh_texts`), which comes last."""
    head = json.dumps(_frame_head(face, number), separators=(",", ":"))
    return head if mesh_text is None else f'{head[:-1]},"mesh":{mesh_text}}}'


def _mesh_texts(meshes: Sequence[np.ndarray]) -> list[str]:
    """The JSON text of saved meshes ((P, 2) float64, as ``_as_saved`` rounds them): meshes alike written all at
    once (:func:`_fixed_point_columns`), each reads back exactly as it is; a mesh that text cannot hold (not finite,
    huge) as ``json.dumps`` writes it."""
    texts: list[str | None] = [None] * len(meshes)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, mesh in enumerate(meshes):
        by_shape.setdefault(mesh.shape, []).append(i)
    for shape, index in by_shape.items():
        if len(shape) != 2 or shape[0] == 0:
            continue
        stacked = np.stack([meshes[i] for i in index]).reshape(len(index), -1)  # (M, P * C)
        good = _fixed_point_exact(stacked, _MESH_DECIMALS)
        index = [i for i, g in zip(index, good) if g]
        if not index:
            continue
        m, p, c = len(index), shape[0], shape[1]
        by_coordinate = np.ascontiguousarray(stacked[good].reshape(m, p, c).transpose(2, 0, 1))  # (C, M, P)
        fields = _fixed_point_columns(by_coordinate, _MESH_DECIMALS)
        # A point is "[x,y],": built column by column (each contiguous), then laid out point by point.
        width = len(fields)
        layout = np.empty((c * (width + 1) + 2, m, p), np.uint8)
        layout[0] = ord("[")
        for k in range(c):
            at = 1 + k * (width + 1)
            for j, column in enumerate(fields):
                layout[at + j] = column[k]
            layout[at + width] = ord(",")
        layout[-2], layout[-1] = ord("]"), ord(",")
        rows = np.ascontiguousarray(layout.transpose(1, 2, 0)).reshape(m, -1)
        for j, i in enumerate(index):
            texts[i] = "[" + rows[j, :-1].tobytes().decode("ascii") + "]"
    return [t if t is not None else json.dumps(meshes[i].tolist(), separators=(",", ":")) for i, t in enumerate(texts)]


# A fixed-point field holds integers below this (15 digits): beyond, a float's step is too coarse for the text.
_FIXED_POINT_LIMIT = 10**15


def _fixed_point_exact(values: np.ndarray, decimals: int) -> np.ndarray:
    """Per row of ``values`` (M, K): whether every value is finite, below the limit, and exactly the nearest
    float to a multiple of 10**-decimals (what ``np.round`` gives), so that its fixed-point text reads back as it."""
    scale = 10.0**decimals
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(values * scale)
        ok = np.isfinite(values) & (np.abs(k) < _FIXED_POINT_LIMIT) & (k / scale == values)
    return ok.all(axis=1)  # type: ignore[no-any-return]


def _group_table() -> np.ndarray:
    """(5 * 1000, 3) ASCII: how a group of three digits of a number's whole part is written, by the group's place
    (rows ``place * 1000 + group``): 0 below the number's first digit (zero-padded, "007"); 1 and 2 holding it
    (space-padded, "  7", and with a minus sign "- 7" where there is room); 3 above it ("   "); 4 just above a
    negative number's first group of three full digits ("  -")."""
    n = np.arange(1000)
    digits = (n[:, None] // np.array([100, 10, 1]) % 10 + ord("0")).astype(np.uint8)
    width = 1 + (n >= 10) + (n >= 100)  # digits to show (0 shows one)
    lead = np.where(np.arange(3) >= 3 - width[:, None], digits, ord(" ")).astype(np.uint8)
    signed = lead.copy()
    room = width < 3
    signed[np.flatnonzero(room), 2 - width[room]] = ord("-")
    blank = np.full((1000, 3), ord(" "), np.uint8)
    minus = blank.copy()
    minus[:, 2] = ord("-")
    return np.concatenate([digits, lead, signed, blank, minus])


_GROUPS = tuple(np.ascontiguousarray(column) for column in _group_table().T)  # a table for each of the 3 columns


def _fixed_point_columns(values: np.ndarray, decimals: int) -> list[np.ndarray]:
    """The ASCII text of ``values`` written with ``decimals`` decimals (at most 3), as columns (each like ``values``,
    uint8) left to right: each value right-aligned in a field as wide as the widest (spaces before it, which JSON
    allows), a minus sign where the sign bit is set (-0.0 reads back as itself). Only values that pass
    :func:`_fixed_point_exact` read back as they are."""
    scale = 10**decimals
    whole, frac = np.divmod(np.abs(np.rint(values * scale)).astype(np.int64), scale)
    digits = len(str(int(whole.max()))) if whole.size else 1  # of the widest whole part
    count = -(-(digits + 1) // 3)  # groups of three: the widest's digits and a minus sign
    negative = np.signbit(values)
    groups = []  # each group's three columns, lowest group first
    below = np.zeros(values.shape, bool)  # the number's first digit lies in a lower group
    full = np.zeros(values.shape, bool)  # ... which is three full digits of a negative number
    for _ in range(count):
        group = whole % 1000
        whole //= 1000
        holds = ~below & (whole == 0)  # nothing above this group: it holds the number's first digit
        place = np.where(below, np.where(full, 4, 3), np.where(holds, np.where(negative, 2, 1), 0))
        full = holds & negative & (group >= 100)
        below |= holds
        index = place * 1000 + group
        groups.append([table.take(index) for table in _GROUPS])
    point = np.full(values.shape, ord("."), np.uint8)
    decimals_ = [table.take(frac) for table in _GROUPS][3 - decimals :]
    columns = [c for group in groups[::-1] for c in group] + [point] + decimals_
    return columns[3 * count - digits - 1 :]  # a column for the widest's sign, and what follows


@dataclass(frozen=True)
class FaceTracks:
    """All tracks of a clip, with the frame -> faces lookup the restore pass needs."""

    tracks: tuple[FaceTrack, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def faces_at(self, frame: int) -> list[Face]:
        return [t.faces[frame] for t in self.tracks if frame in t.faces]

    def frame_numbers(self) -> list[int]:
        return sorted({n for t in self.tracks for n in t.faces})

    # -- serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        tracks = [{"id": int(t.id), "frames": [_frame_json(t.faces[n], int(t.id), n) for n in t.frames]}
                  for t in self.tracks]
        return {"version": FACETRACKS_VERSION, "metadata": dict(self.metadata), "tracks": tracks}

    def _compact_text(self) -> str:
        """``json.dumps(self.to_json())`` written compact but for the meshes' numbers, which are written all at once
        in fixed-point fields padded with spaces (:func:`_mesh_texts`: the same values read back, ~8x faster than
        a float's repr each): no Python list of a mesh is ever made, so writing a big shot's tracks neither holds
        the interpreter long (a run writes its sidecar while its frames restore) nor sets off its full garbage
        collections over a large process (a host's, a farm worker's)."""
        sep = (",", ":")
        head = json.dumps({"version": FACETRACKS_VERSION, "metadata": dict(self.metadata)}, separators=sep)
        saved = [[(n, _as_saved(t.faces[n], int(t.id))) for n in t.frames] for t in self.tracks]
        meshes = iter(_mesh_texts([f.mesh for frames in saved for _, f in frames if f.mesh is not None]))
        tracks = ",".join(
            f'{{"id":{int(t.id)},"frames":['
            + ",".join(_frame_text(f, n, None if f.mesh is None else next(meshes)) for n, f in frames)
            + "]}" for t, frames in zip(self.tracks, saved))
        return f'{head[:-1]},"tracks":[{tracks}]}}'

    def as_saved(self) -> FaceTracks:
        """These tracks as a FaceTracks file holds them (what ``from_json(to_json())`` gives), made without the
        text: a run that analysed a shot restores with exactly the tracks its sidecar keeps."""
        tracks = tuple(FaceTrack(id=int(t.id), faces={int(n): _as_saved(t.faces[n], int(t.id)) for n in t.frames})
                       for t in self.tracks)
        return FaceTracks(tracks=tracks, metadata=json.loads(json.dumps(dict(self.metadata))))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], origin: str = "FaceTracks") -> FaceTracks:
        version = data.get("version") if isinstance(data, Mapping) else None
        if not isinstance(version, str) or not version.startswith("facefix.FaceTracks."):
            raise InputError(f"{origin}: not a FaceTracks file (missing or unknown 'version')")
        if version != FACETRACKS_VERSION:
            raise InputError(f"{origin}: FaceTracks version {version!r} is not supported (expected {FACETRACKS_VERSION})")
        tracks = []
        try:
            for t in data["tracks"]:
                tid = int(t["id"])
                faces: dict[int, Face] = {}
                for fr in t["frames"]:
                    src = fr.get("source", "host")
                    if src not in _SOURCES:
                        raise InputError(f"{origin}: track {tid} frame {fr['frame']}: bad source {src!r}")
                    mesh = np.asarray(fr["mesh"], dtype=np.float64) if "mesh" in fr else None
                    faces[int(fr["frame"])] = Face(
                        box=tuple(float(v) for v in fr["box"]),  # type: ignore[arg-type]
                        landmarks=np.asarray(fr["landmarks"], dtype=np.float64),
                        score=float(fr.get("score", 1.0)),
                        track_id=tid,
                        source=src,
                        mesh=mesh,
                    )
                tracks.append(FaceTrack(id=tid, faces=faces))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{origin}: malformed FaceTracks ({type(err).__name__}: {err})") from None
        return cls(tracks=tuple(tracks), metadata=dict(data.get("metadata", {})))

    def save(self, path: str | os.PathLike[str], *, indent: int | None = 1) -> None:
        """Write the tracks as JSON (atomically); ``indent`` None writes them compact, ~6x faster (a run's sidecar:
        the 4-face, 96-frame tracks of a 1080p shot with their meshes are 3.6 MB)."""
        from .io.atomic import atomic_write_text

        text = json.dumps(self.to_json(), indent=indent) if indent is not None else self._compact_text()
        atomic_write_text(Path(path), text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaceTracks:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(f"{p}: tracks file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{p}: not valid JSON ({err})") from None
        return cls.from_json(data, origin=str(p))

    @classmethod
    def from_faces(cls, per_frame: Mapping[int, Iterable[Face]]) -> FaceTracks:
        """Group faces by their ``track_id`` (ids < 0 each get a track of their own)."""
        grouped: dict[int, dict[int, Face]] = {}
        next_free = max([f.track_id for fs in per_frame.values() for f in fs] + [-1]) + 1
        for n, faces in sorted(per_frame.items()):
            for f in faces:
                tid = f.track_id
                if tid < 0:
                    tid, next_free = next_free, next_free + 1
                grouped.setdefault(tid, {})[n] = f
        return cls(tracks=tuple(FaceTrack(id=k, faces=v) for k, v in sorted(grouped.items())))


@dataclass(frozen=True)
class FaceBatch:
    """Faces of a batch of frames, flattened in frame order: face n belongs to frame ``frame_index[n]``
    (non-decreasing, so each frame's faces are one slice), with its crop-from-frame similarity (N, 2, 3)."""

    faces: tuple[Face, ...]
    frame_index: np.ndarray  # (N,) int
    crop_from_frame: np.ndarray  # (N, 2, 3)

    @classmethod
    def build(cls, faces_per_frame: Sequence[Sequence[Face]], size: int = 512) -> FaceBatch:
        from .geometry import crop_from_frame_matrix

        flat = [(i, f) for i, fs in enumerate(faces_per_frame) for f in fs]
        if not flat:
            return cls((), np.zeros(0, np.int64), np.zeros((0, 2, 3)))
        mats = crop_from_frame_matrix(np.stack([f.landmarks for _, f in flat]), size)
        return cls(tuple(f for _, f in flat), np.array([i for i, _ in flat], np.int64), mats)

    def frame_slices(self, frames: int) -> list[slice]:
        """The faces of each of ``frames`` frames, as slices of the batch (faces are in frame order)."""
        starts = np.searchsorted(self.frame_index, np.arange(frames + 1))
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def face_regions(faces: Mapping[int, Sequence[Face]], size: int = 512) -> dict[int, tuple[int, int, int, int]]:
    """Each frame's faces' region (x0, y0, x1, y1): the box around every pixel their aligned crops read or
    paste, for a whole shot in one call (an alignment does not depend on the others in the call), not yet
    clipped to the frame's right and bottom edges (staging does that): reading threads then skip the fit."""
    from .geometry import crop_from_frame_matrix, frame_rois, invert_affine

    flat = [f.landmarks for fs in faces.values() for f in fs]
    if not flat:
        return {}
    edge = 1 << 30  # no right or bottom edge here
    boxes = frame_rois(invert_affine(crop_from_frame_matrix(np.stack(flat), size)), size, (edge, edge))
    ends = np.cumsum([len(fs) for fs in faces.values()])
    out = {}
    for (n, fs), end in zip(faces.items(), ends):
        if fs:
            box = boxes[end - len(fs) : end]
            out[n] = (int(box[:, 0].min()), int(box[:, 1].min()), int(box[:, 2].max()), int(box[:, 3].max()))
    return out
