"""The pipeline's repair stage: per track, the INPUT crops of a window around each frame, repaired before the
restorer sees them (``ClipRepairer``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..geometry import crop_from_frame_matrix, transform_points
from ..temporal.stabilise import reduce_for_flow, stack_windows
from ..tensors import to_device
from .deboil import DEBOIL_WINDOW, deboil_window
from .dewarp import DEWARP_WINDOW, dewarp_crops

if TYPE_CHECKING:
    from ..faces import Face, FaceBatch
    from ..params import Settings

__all__ = ["ClipRepairer", "repair_window"]


def _ever_on(settings: Settings, name: str) -> bool:
    """Whether control ``name`` is above 0 on any frame (its value, or any of its keys)."""
    curve = settings.animation.get(name)
    return float(getattr(settings, name)) > 0 or (curve is not None and any(float(v) > 0 for v in curve.values()))


def repair_window(settings: Settings) -> int:
    """Frames before and after a frame that its repair reads (0 when no repair control is ever on). Fixed for a
    shot whatever the controls' values or keys, so chunks know their pre- and post-roll up front."""
    return max(DEBOIL_WINDOW if _ever_on(settings, "deboil") else 0,
               DEWARP_WINDOW if _ever_on(settings, "dewarp") else 0)


def _amount(settings: Settings, name: str) -> float:
    return float(getattr(settings, name, 0.0))


def _crop_points(face: Face, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A face's 5 landmarks and its mesh (or None) in its aligned crop of ``size`` px (as the align stage maps
    them: the crop-from-frame similarity of its landmarks)."""
    m = crop_from_frame_matrix(face.landmarks, size)
    mesh = getattr(face, "mesh", None)
    dense = None if mesh is None or len(mesh) < 6 else transform_points(m, np.asarray(mesh, np.float64)[:, :2])
    return transform_points(m, face.landmarks), dense


def _window_points(entries: Sequence[tuple[torch.Tensor, torch.Tensor, Face] | None], size: int
                   ) -> tuple[np.ndarray, np.ndarray, bool]:
    """A window's points (2K+1, P, 2) in crop pixels, valid (2K+1,) and whether they are the dense mesh (used
    where every frame of the window has one of the same size; else the 5 landmarks)."""
    mid = len(entries) // 2
    got = [None if e is None else _crop_points(e[2], size) for e in entries]
    sizes = {None if g[1] is None else len(g[1]) for g in got if g is not None}
    dense = len(sizes) == 1 and None not in sizes
    pick = [None if g is None else (g[1] if dense else g[0]) for g in got]
    centre = pick[mid]
    assert centre is not None
    pts = np.stack([centre if q is None else q for q in pick])
    return pts, np.array([q is not None for q in pick]), dense


class ClipRepairer:
    """Keeps each track's input crops of frames t-K..t+K and repairs the current ones.

    A frame's result depends only on the input crops of frames t-K..t+K of its track (K = ``window``): the
    caller gives every frame's crop once, in frame order, and a frame can be repaired once its K following
    frames have been given (``repair``'s look-ahead frames). Faces without a track id are returned as given.
    """

    def __init__(self, window: int) -> None:
        self.window = int(window)
        # track id -> frame -> (reduced crop (3, h, w), full crop (3, S, S), the face (its landmarks and mesh))
        self._tracks: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor, Face]]] = {}

    @property
    def preroll(self) -> int:
        return self.window

    @property
    def lookahead(self) -> int:
        return self.window

    def repair(self, batch: FaceBatch, frame_numbers: Sequence[int], crops: torch.Tensor,
               settings_per_face: Sequence[Settings], count: int) -> torch.Tensor:
        """crops: (N, 3, S, S) aligned input crops of every face of ``batch`` (frames in order; the faces past
        ``count`` belong to look-ahead frames). Returns the repaired crops of the first ``count`` faces."""
        out = crops[:count]
        if self.window == 0 or crops.shape[0] == 0:
            return out
        k = self.window
        numbers = [int(frame_numbers[int(i)]) for i in batch.frame_index]
        rows = [i for i, f in enumerate(batch.faces) if f.track_id >= 0]
        if rows:
            tracked = crops if len(rows) == crops.shape[0] else crops[to_device(rows, crops.device)]
            reduced = reduce_for_flow(tracked)
            for j, i in enumerate(rows):
                self._tracks.setdefault(batch.faces[i].track_id, {})[numbers[i]] = (reduced[j], crops[i], batch.faces[i])

        def window(i: int) -> list[tuple[torch.Tensor, torch.Tensor, Face] | None]:
            frames = self._tracks[batch.faces[i].track_id]
            return [frames.get(n) for n in range(numbers[i] - k, numbers[i] + k + 1)]

        # De-warp first: the current crops' shape put back; de-boil then registers the neighbours to it.
        dewarped: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        todo = [i for i in rows if i < count and _amount(settings_per_face[i], "dewarp") > 0]
        if todo:
            size = int(crops.shape[-1])
            got = [_window_points(window(i), size) for i in todo]
            amounts = to_device([_amount(settings_per_face[i], "dewarp") for i in todo], crops.device, crops.dtype)
            idx = to_device(todo, crops.device)
            fixed = dewarp_crops(crops[idx], [g[0] for g in got], [g[1] for g in got], amounts, [g[2] for g in got])
            out = out.clone()
            out[idx] = fixed
            fixed_lo = reduce_for_flow(fixed)
            dewarped = {i: (fixed_lo[j], fixed[j]) for j, i in enumerate(todo)}
        todo = [i for i in rows if i < count and _amount(settings_per_face[i], "deboil") > 0]
        if todo:
            windows = []
            for i in todo:
                win: list[tuple[torch.Tensor, ...] | None] = [None if e is None else e[:2] for e in window(i)]
                if i in dewarped:
                    win[k] = dewarped[i]
                windows.append(win)
            lo, full, valid = stack_windows(windows)
            amounts = to_device([_amount(settings_per_face[i], "deboil") for i in todo], crops.device, crops.dtype)
            # The tracked points anchor a frame whose appearance drifts from them (a ghost); faces are grouped by
            # their point count (mesh or 5 landmarks), each face's result being its own anyway.
            points = [_window_points(window(i), int(crops.shape[-1]))[0] for i in todo]
            out = out.clone() if not dewarped else out
            for count_ in sorted({len(q[0]) for q in points}):
                sel = [j for j, q in enumerate(points) if len(q[0]) == count_]
                pts = torch.as_tensor(np.stack([points[j] for j in sel]), dtype=torch.float32, device=crops.device)
                at = to_device(sel, crops.device)
                out[to_device([todo[j] for j in sel], crops.device)] = deboil_window(lo[at], full[at], valid[at],
                                                                                  amounts[at], pts)
        # Frames no later face can read are dropped: faces arrive in frame order.
        if count:
            oldest = max(numbers[:count]) + 1 - k
            for tid in list(self._tracks):
                frames = self._tracks[tid]
                for n in [n for n in frames if n < oldest]:
                    del frames[n]
                if not frames:
                    del self._tracks[tid]
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._tracks.values())


