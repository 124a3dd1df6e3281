"""The pipeline's repair stage: per track, the INPUT crops of a window around each frame, repaired before the
restorer sees them (``ClipRepairer``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..temporal.stabilise import reduce_for_flow
from ..tensors import to_device
from .deboil import DEBOIL_WINDOW, deboil_window

if TYPE_CHECKING:
    from ..faces import FaceBatch
    from ..params import Settings

__all__ = ["ClipRepairer", "repair_window"]


def _ever_on(settings: Settings, name: str) -> bool:
    """Whether control ``name`` is above 0 on any frame (its value, or any of its keys)."""
    curve = settings.animation.get(name)
    return float(getattr(settings, name)) > 0 or (curve is not None and any(float(v) > 0 for v in curve.values()))


def repair_window(settings: Settings) -> int:
    """Frames before and after a frame that its repair reads (0 when no repair control is ever on). Fixed for a
    shot whatever the controls' values or keys, so chunks know their pre- and post-roll up front."""
    return DEBOIL_WINDOW if _ever_on(settings, "deboil") else 0


class ClipRepairer:
    """Keeps each track's input crops of frames t-K..t+K and repairs the current ones.

    A frame's result depends only on the input crops of frames t-K..t+K of its track (K = ``window``): the
    caller gives every frame's crop once, in frame order, and a frame can be repaired once its K following
    frames have been given (``repair``'s look-ahead frames). Faces without a track id are returned as given.
    """

    def __init__(self, window: int) -> None:
        self.window = int(window)
        # track id -> frame -> (reduced crop (3, h, w), full crop (3, S, S))
        self._tracks: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}

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
                self._tracks.setdefault(batch.faces[i].track_id, {})[numbers[i]] = (reduced[j], crops[i])
        todo = [i for i in rows if i < count and float(settings_per_face[i].deboil) > 0]
        if todo:
            windows = []
            for i in todo:
                frames = self._tracks[batch.faces[i].track_id]
                windows.append([frames.get(n) for n in range(numbers[i] - k, numbers[i] + k + 1)])
            lo, full, valid = _stack(windows)
            amounts = to_device([float(settings_per_face[i].deboil) for i in todo], crops.device, crops.dtype)
            out = out.clone()
            out[to_device(todo, crops.device)] = deboil_window(lo, full, valid, amounts)
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


def _stack(windows: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor] | None]]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B windows of (reduced, full) crops as (B, 2K+1, ...) tensors and their valid (B, 2K+1) (missing frames
    are zeros). Every window's middle entry is present."""
    mid = len(windows[0]) // 2
    lo0, full0 = windows[0][mid]  # type: ignore[misc]
    zlo, zfull = torch.zeros_like(lo0), torch.zeros_like(full0)
    flat = [e for w in windows for e in w]
    lo = torch.stack([zlo if e is None else e[0] for e in flat])
    full = torch.stack([zfull if e is None else e[1] for e in flat])
    valid = to_device([e is not None for e in flat], lo0.device, torch.bool)
    b, n = len(windows), len(windows[0])
    return lo.view(b, n, *lo.shape[1:]), full.view(b, n, *full.shape[1:]), valid.view(b, n)
