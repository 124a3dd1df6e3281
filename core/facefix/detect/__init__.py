"""Face detection: frames -> faces (box, 5 landmarks, score, optional 468-point mesh), batched.

Detectors are loaded by name through :func:`load_detector`:

* ``'blazeface'``: MediaPipe's BlazeFace (full-range model, whole frame plus a pyramid of tiles for
  small faces in big frames) and MediaPipe's 468-point face mesh, both shipped with the package as
  ``.tflite`` files and run through PyTorch (:mod:`facefix.detect.tflite_torch`).
* ``'retinaface'``: imported lazily from :mod:`facefix.detect.retinaface`.

Convention: frames are (N, 3, H, W) float32 sRGB in [0, 1]. Output coordinates are frame pixels,
(x, y) order (see :mod:`facefix.faces`). Faces whose box is smaller than ``min_face`` pixels are not
returned but counted in ``DetectResult.skipped_small``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InputError, SettingsError
from ..faces import Face
from .blazeface import Detections, load_blazeface, weighted_nms_groups
from .landmarks import load_face_landmarks, rois_from_detections
from .mesh import five_points, five_points_from_detection

__all__ = ["Detector", "DetectResult", "BlazeFaceDetector", "load_detector", "tile_grid", "tile_cores", "in_core",
           "DETECTORS"]

DETECTORS = ("blazeface", "retinaface")


@dataclass(frozen=True)
class DetectResult:
    """The faces found in one frame (best score first), and how many were smaller than ``min_face``."""

    faces: tuple[Face, ...]
    skipped_small: int = 0


@runtime_checkable
class Detector(Protocol):
    """frames (N, 3, H, W) float32 sRGB in [0, 1] -> one DetectResult per frame."""

    @property
    def min_face(self) -> float: ...

    def __call__(self, frames: Tensor) -> list[DetectResult]: ...


def tile_grid(width: int, height: int, side: float, overlap: float = 0.25) -> list[tuple[float, float]]:
    """Centres of square tiles of ``side`` px covering a frame, neighbours overlapping by ``overlap``
    of a side; tiles stay inside the frame where it is larger than a tile (centred otherwise)."""

    def axis(length: int) -> list[float]:
        if length <= side:
            return [length / 2]
        n = math.ceil((length - side) / (side * (1 - overlap))) + 1
        step = (length - side) / (n - 1)
        return [side / 2 + i * step for i in range(n)]

    return [(x, y) for y in axis(height) for x in axis(width)]


def tile_cores(regions: list[tuple[float, float, float, float]], width: int, height: int) -> Tensor:
    """Where each region's detections are kept, (K, 5) float32: box-centre bounds x0, x1, y0, y1 and the
    largest box side, for regions (cx, cy, side, max_face) of a width x height frame.

    A tile keeps faces centred in its core (away from the edges it shares with neighbours, where faces
    are cut off; a frame edge is no such edge) and small enough for its level; the whole frame (max_face
    infinite) keeps all.
    """
    inf = math.inf
    rows = []
    for cx, cy, side, max_face in regions:
        if math.isinf(max_face):
            rows.append((-inf, inf, -inf, inf, inf))
            continue
        margin = side * 0.125
        x0 = cx - side / 2 + (margin if cx - side / 2 > 0.5 else -inf)
        x1 = cx + side / 2 - (margin if cx + side / 2 < width - 0.5 else -inf)
        y0 = cy - side / 2 + (margin if cy - side / 2 > 0.5 else -inf)
        y1 = cy + side / 2 - (margin if cy + side / 2 < height - 0.5 else -inf)
        rows.append((x0, x1, y0, y1, max_face))
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def in_core(boxes: Tensor, cores: Tensor) -> Tensor:
    """Which boxes (M, 4) are kept by their region's bounds (M, 5) from :func:`tile_cores`."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).amax(-1)
    return ((c[:, 0] >= cores[:, 0]) & (c[:, 0] < cores[:, 1]) & (c[:, 1] >= cores[:, 2]) & (c[:, 1] < cores[:, 3])
            & (size <= cores[:, 4]))


class BlazeFaceDetector:
    """BlazeFace + face mesh, with tiles for small faces.

    min_face: faces whose detection box is smaller (longer side, px) are counted, not returned. It also
        sets the finest tile level, so that a face of ``min_face`` px covers ``min_input_face`` px of
        the 192 px model input in some tile (more tiles for smaller ``min_face`` and bigger frames).
        The box is BlazeFace's: about 0.85 of the brow-to-chin height (a 48 px tall face: ~40 px box).
    tiles: False runs the whole-frame pass only (what MediaPipe does).
    batch: crops per network call (None: 64 on the CPU, 256 on a GPU).
    mesh: run the 468-point landmark model: the 5 points then come from the mesh, and detections whose
        face-presence score is below ``min_presence`` are dropped as false (MediaPipe's gate).
    min_score: detection score threshold (default: the model's own, 0.6 for the full-range model).
    """

    # Face size (box px on the 192 px model input) the tiles are planned for. The full-range model
    # finds the astronaut photo down to an 11 px box, but missed some 17 px ones in 4K test frames;
    # from 20 px up it found every one.
    min_input_face = 20.0

    def __init__(self, device: str | torch.device = "cpu", min_face: float = 32.0, *, tiles: bool = True,
                 mesh: bool = True, min_score: float | None = None, min_presence: float = 0.5, model: str = "full",
                 batch: int | None = None) -> None:
        if not (min_face >= 0 and math.isfinite(min_face)):
            raise SettingsError(f"min_face must be a finite number >= 0, got {min_face!r}")
        if min_score is not None and not 0.0 < min_score < 1.0:
            raise SettingsError(f"min_score must be in (0, 1), got {min_score!r}")
        self.device = torch.device(device)
        self.min_face = float(min_face)
        self.tiles = tiles
        self.min_score = min_score
        self.min_presence = min_presence
        # Crops per network call: 64 on the CPU (cache-sized); 256 on a GPU, fewer calls and host syncs.
        self.batch = batch or (256 if self.device.type == "cuda" else 64)
        self.detector = load_blazeface(model, self.device)
        self.landmarks = load_face_landmarks(self.device) if mesh else None
        self._tables: dict[tuple[int, int, float, bool], tuple[Tensor, Tensor]] = {}

    # -- regions ---------------------------------------------------------------------------------
    def regions(self, width: int, height: int) -> list[tuple[float, float, float, float]]:
        """(cx, cy, side, max_face) of every square the detector looks at: the whole frame, then tile
        levels from the side where a ``min_face`` face covers ``min_input_face`` model pixels, doubling
        up to half the frame. A tile keeps faces up to 0.3 of its side; larger ones belong to the next
        level (whose smallest planned face, 0.25 of this side, overlaps that range)."""
        full = float(max(width, height))
        regions = [(width / 2, height / 2, full, math.inf)]
        if not self.tiles:
            return regions
        side = max(self.min_face * self.detector.spec.input_size / self.min_input_face, 96.0)
        while side < full:
            regions += [(x, y, side, 0.3 * side) for x, y in tile_grid(width, height, side)]
            side *= 2
        return regions

    # -- running ---------------------------------------------------------------------------------
    def region_table(self, width: int, height: int) -> tuple[Tensor, Tensor]:
        """(K, 3) centre x, centre y and side of :meth:`regions`, and their (K, 5) cores (:func:`tile_cores`)."""
        key = (width, height, self.min_face, self.tiles)
        if key not in self._tables:  # asked for on every round of a scan: built once a frame size
            regs = self.regions(width, height)
            self._tables[key] = (torch.tensor([r[:3] for r in regs], dtype=torch.float32).reshape(-1, 3),
                                 tile_cores(regs, width, height))
        return self._tables[key]

    @torch.no_grad()
    def look(self, frames: Tensor, frame: Tensor, region: Tensor) -> tuple[Detections, Tensor]:
        """Detections of the (frame, region) pairs ``frame`` (P,), ``region`` (P,) (indices into
        :meth:`regions`), each region's own NMS applied: frame pixels, on the CPU, grouped by pair in order,
        and the pair of each; before the cores and the merge across regions (:meth:`merge`)."""
        return self.queue_look(frames, frame, region)()

    def queue_look(self, frames: Tensor, frame: Tensor, region: Tensor) -> Callable[[], tuple[Detections, Tensor]]:
        """:meth:`look` in two steps (see ``BlazeFace.queue_regions``): the call returned gives its result."""
        table, _ = self.region_table(frames.shape[-1], frames.shape[-2])
        reg = table[region]
        return self.detector.queue_regions(frames, frame, reg[:, :2], reg[:, 2], self.min_score, self.batch)

    def merge(self, det: Detections, frame: Tensor, region: Tensor, width: int, height: int
              ) -> tuple[Detections, Tensor]:
        """Detections of regions (frame (M,) and region (M,) of each, sorted by frame, then region) -> those
        their region's core keeps, merged per frame (weighted NMS), best score first within a frame; and the
        frame of each."""
        _, cores = self.region_table(width, height)
        ok = in_core(det.boxes, cores[region])
        return weighted_nms_groups(det.select(ok), frame[ok], self.detector.spec.iou_threshold)

    @torch.no_grad()
    def merged(self, frames: Tensor) -> tuple[Detections, Tensor]:
        """Merged detections of all frames (frame pixels, on the CPU, grouped by frame, best score
        first within one) and the frame of each, before the size filter and the mesh."""
        n, _, h, w = frames.shape
        k = len(self.regions(w, h))
        index = torch.arange(n).repeat_interleave(k)
        region = torch.arange(k).repeat(n)
        det, pair = self.look(frames, index, region)
        return self.merge(det, index[pair], region[pair], w, h)

    def detect(self, frames: Tensor) -> list[Detections]:
        """Merged detections per frame (frame pixels, on the CPU), before the size filter and the mesh."""
        det, frame = self.merged(frames)
        return det.split(torch.bincount(frame, minlength=frames.shape[0]).tolist())

    @torch.no_grad()
    def _queue_mesh(self, frames: Tensor, det: Detections, frame: Tensor
                    ) -> Callable[[], tuple[Tensor, Tensor, Tensor]]:
        """Face mesh (K, 468, 3), its 5 points (K, 5, 2) and face presence (K,), on the CPU, for CPU
        detections (K) of ``frame`` (K,), from the call returned. The mesh model runs on the frames' device,
        queued now: its inputs go there, and its outputs come back, in one transfer each."""
        assert self.landmarks is not None
        k = len(det)
        # The frame index stays on the CPU, where the crops are grouped by frame without waiting on the device.
        x = torch.cat([det.boxes, det.keypoints.flatten(1)], 1).to(frames.device)
        rois = rois_from_detections(frame, x[:, :4], x[:, 4:16].reshape(k, 6, 2))
        mesh, presence = self.landmarks(frames, rois, 128 if frames.is_cuda else 32)  # a window's faces at once on a GPU
        y = torch.cat([mesh.flatten(1), five_points(mesh).flatten(1), presence[:, None]], 1)

        def collect() -> tuple[Tensor, Tensor, Tensor]:
            c = y.cpu()
            return c[:, :-11].reshape(k, -1, 3), c[:, -11:-1].reshape(k, 5, 2), c[:, -1]

        return collect

    def __call__(self, frames: Tensor) -> list[DetectResult]:
        if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise InputError(f"detector input must be a (N, 3, H, W) tensor, got {shape}")
        frames = frames.to(self.device, torch.float32)
        return self.results(frames, *self.merged(frames))

    def results(self, frames: Tensor, det: Detections, frame: Tensor) -> list[DetectResult]:
        """One DetectResult per frame of ``frames`` (N, 3, H, W) on the detector's device, from merged
        detections (:meth:`merged`, :meth:`merge`) and the frame of each: the size filter, then the mesh."""
        return self.queue_results(frames, det, frame)()

    def queue_results(self, frames: Tensor, det: Detections, frame: Tensor) -> Callable[[], list[DetectResult]]:
        """:meth:`results` in two steps: the mesh is queued now, the call returned gives the results."""
        n = frames.shape[0]
        size = (det.boxes[:, 2:] - det.boxes[:, :2]).amax(-1)
        ok = size >= self.min_face
        small = torch.bincount(frame[~ok], minlength=n).tolist()
        det, frame = det.select(ok), frame[ok]
        counts = torch.bincount(frame, minlength=n).tolist()
        meshed = self._queue_mesh(frames, det, frame) if self.landmarks is not None and len(det) else None

        def collect() -> list[DetectResult]:
            mesh = None
            five = five_points_from_detection(det.keypoints)
            keep = torch.ones(len(det), dtype=torch.bool)
            if meshed is not None:
                mesh, five, presence = meshed()
                # MediaPipe's own gate: the mesh model's face-presence score rejects false detections
                # (on tiled 4K test frames: faces >= 0.99, false detections <= 0.06).
                keep = presence >= self.min_presence
            boxes = det.boxes.double().numpy()
            five_np = five.double().numpy()
            scores = det.scores.double().numpy()
            mesh_np = None if mesh is None else mesh.double().numpy()
            keep_np = keep.numpy()
            results = []
            start = 0
            for f, cnt in enumerate(counts):
                faces = [
                    Face(box=tuple(boxes[i]), landmarks=five_np[i], score=float(scores[i]), source="detected",
                         mesh=None if mesh_np is None else mesh_np[i])
                    for i in range(start, start + cnt) if keep_np[i]
                ]
                results.append(DetectResult(tuple(faces), small[f]))
                start += cnt
            return results

        return collect


def load_detector(name: str = "blazeface", device: str | torch.device = "cpu", **options: object) -> Detector:
    """A detector by name ('blazeface' or 'retinaface') on ``device``; options go to its constructor
    (e.g. ``min_face``)."""
    if name == "blazeface":
        return BlazeFaceDetector(device, **options)  # type: ignore[arg-type]
    if name == "retinaface":
        from .retinaface import load_retinaface  # lazy: its weights and code are separate

        return load_retinaface(device, **options)  # type: ignore[arg-type]
    raise SettingsError(f"unknown detector {name!r} (expected one of {', '.join(DETECTORS)})")

