"""FaceTracks <-> the node's track knobs: coordinates, and which frames the compositor changed.

FaceTracks (README, "FaceTracks") are in pixels with the origin at the frame's top-left corner, y down;
Nuke's are in pixels with the origin at the bottom-left corner, y up. Pixel centres are at +0.5 in both, so
for a frame ``height`` pixels tall: ``y_nuke = height - y_facetracks`` (and back, the same), x unchanged. A
box (x0, y0, x1, y1) becomes Nuke's BBox (x, y, r, t) = (x0, height - y1, x1, height - y0).

On the node a track is 14 numbers a frame (the box's x, y, r, t and the 5 landmarks' x, y, in Nuke's
coordinates); ``analysis`` keeps what Analyse (or Load) wrote, so that the frames whose values differ
(keys edited, added or deleted) go to the bridge as ``"source": "host"``.

Pure Python 3.7+, no Nuke.
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Sequence

__all__ = ["FACETRACKS_VERSION", "LANDMARKS", "TOLERANCE", "to_nuke_box", "from_nuke_box", "to_nuke_point",
           "from_nuke_point", "face_values", "values_face", "fit_similarity", "apply_similarity", "analysis_of",
           "build_tracks", "check_facetracks"]

FACETRACKS_VERSION = "facefix.FaceTracks.1"
LANDMARKS = ("left eye", "right eye", "nose tip", "mouth left", "mouth right")
TOLERANCE = 2e-3  # pixels: a knob value further than this from what Analyse wrote is the compositor's
Values = List[float]  # x, y, r, t, then x, y of each landmark: Nuke's coordinates


def to_nuke_box(box: Sequence[float], height: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, height - y1, x1, height - y0


def from_nuke_box(xyrt: Sequence[float], height: float) -> tuple[float, float, float, float]:
    x, y, r, t = (float(v) for v in xyrt)
    return min(x, r), height - max(y, t), max(x, r), height - min(y, t)


def to_nuke_point(point: Sequence[float], height: float) -> tuple[float, float]:
    return float(point[0]), height - float(point[1])


def from_nuke_point(point: Sequence[float], height: float) -> tuple[float, float]:
    return float(point[0]), height - float(point[1])


def face_values(face: Mapping[str, Any], height: float) -> Values:
    """A FaceTracks frame entry as the 14 knob values."""
    out = list(to_nuke_box(face["box"], height))
    for p in face["landmarks"]:
        out += list(to_nuke_point(p, height))
    if len(out) != 14:
        raise ValueError("a face needs a box and 5 landmarks")
    return out


def values_face(values: Sequence[float], height: float) -> tuple[list[float], list[list[float]]]:
    """The 14 knob values as a FaceTracks box and landmarks."""
    box = [round(v, 4) for v in from_nuke_box(values[:4], height)]
    lms = [[round(c, 4) for c in from_nuke_point(values[4 + 2 * i: 6 + 2 * i], height)] for i in range(5)]
    return box, lms


def fit_similarity(src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """The least-squares similarity (a, b, tx, ty) taking ``src`` points onto ``dst``:
    x' = a x - b y + tx, y' = b x + a y + ty."""
    n = float(len(src))
    sx = sum(p[0] for p in src) / n
    sy = sum(p[1] for p in src) / n
    dx = sum(p[0] for p in dst) / n
    dy = sum(p[1] for p in dst) / n
    num_a = num_b = den = 0.0
    for (x, y), (u, v) in zip(src, dst):
        x, y, u, v = x - sx, y - sy, u - dx, v - dy
        num_a += x * u + y * v
        num_b += x * v - y * u
        den += x * x + y * y
    if den <= 0:
        return 1.0, 0.0, dx - sx, dy - sy
    a, b = num_a / den, num_b / den
    return a, b, dx - (a * sx - b * sy), dy - (b * sx + a * sy)


def apply_similarity(m: Sequence[float], points: Sequence[Sequence[float]]) -> list[list[float]]:
    a, b, tx, ty = m
    return [[round(a * p[0] - b * p[1] + tx, 3), round(b * p[0] + a * p[1] + ty, 3)] for p in points]


def check_facetracks(data: Any, origin: str = "FaceTracks") -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or not isinstance(data.get("tracks"), list):
        raise ValueError(f"{origin}: not a FaceTracks file")
    version = data.get("version")
    if version != FACETRACKS_VERSION:
        raise ValueError(f"{origin}: FaceTracks version {version!r} is not supported (expected {FACETRACKS_VERSION})")
    return data


def analysis_of(data: Mapping[str, Any], height: float, file: str | None = None) -> dict[str, Any]:
    """What Analyse (or Load) writes to the node, compact: per track and frame the 14 knob values, the
    score and the source; the file that has the meshes; the metadata."""
    tracks: dict[str, dict[str, Any]] = {}
    for t in check_facetracks(data)["tracks"]:
        tracks[str(int(t["id"]))] = {str(int(f["frame"])): [[round(v, 4) for v in face_values(f, height)],
                                                             float(f.get("score", 1.0)), str(f.get("source", "host"))]
                                     for f in t["frames"]}
    return {"height": height, "file": file, "metadata": dict(data.get("metadata") or {}), "tracks": tracks}


def _meshes(data: Mapping[str, Any] | None) -> dict[int, dict[int, tuple[list[list[float]], list[list[float]]]]]:
    """{track: {frame: (landmarks, mesh)}} of a FaceTracks file's frames that have a mesh."""
    out: dict[int, dict[int, tuple[list[list[float]], list[list[float]]]]] = {}
    for t in (data or {}).get("tracks", []):
        for f in t.get("frames", []):
            if f.get("mesh"):
                out.setdefault(int(t["id"]), {})[int(f["frame"])] = (f["landmarks"], f["mesh"])
    return out


def build_tracks(knobs: Mapping[int, Mapping[int, Values]], analysis: Mapping[str, Any] | None,
                 height: float, meshes_from: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The FaceTracks JSON object of what the knobs say.

    knobs: {track id: {frame: 14 values}} of the enabled frames, read from the knobs. analysis: what Analyse
    wrote (``analysis_of``), or None. A frame whose values match the analysis keeps its source, score and
    mesh; any other frame is ``"source": "host"`` (score 1), its mesh the nearest analysed one moved by the
    similarity between their landmarks (so the face-oval matte follows the edit). meshes_from: the FaceTracks
    file Analyse wrote (for the meshes), if it is still there.
    """
    analysed = (analysis or {}).get("tracks", {})
    scale = height / float((analysis or {}).get("height") or height)
    meshes = _meshes(meshes_from)
    tracks = []
    for tid in sorted(knobs):
        before = analysed.get(str(tid), {})
        track_meshes = meshes.get(tid, {})
        frames = []
        for n in sorted(knobs[tid]):
            values = [float(v) for v in knobs[tid][n]]
            if any(not math.isfinite(v) for v in values):
                raise ValueError(f"track {tid} frame {n}: not a number in its knobs")
            box, lms = values_face(values, height)
            entry: dict[str, Any] = {"frame": int(n), "box": box, "landmarks": lms}
            old = before.get(str(n))
            same = (old is not None and scale == 1.0
                    and all(abs(a - b) <= TOLERANCE for a, b in zip(values, old[0])))
            entry["score"] = float(old[1]) if same else 1.0
            entry["source"] = str(old[2]) if same else "host"
            if same and n in track_meshes:
                entry["mesh"] = track_meshes[n][1]
            elif track_meshes:
                near = min(track_meshes, key=lambda m: (abs(m - n), m))
                lm_before, mesh = track_meshes[near]
                entry["mesh"] = apply_similarity(fit_similarity(lm_before, lms), mesh)
            frames.append(entry)
        if frames:
            tracks.append({"id": int(tid), "frames": frames})
    metadata = dict((analysis or {}).get("metadata") or {})
    metadata["host"] = "nuke"
    return {"version": FACETRACKS_VERSION, "metadata": metadata, "tracks": tracks}
