"""Temporal stability of restored faces: flow, stabilisation along tracks, and metrics.

Imports torch (unlike ``facefix`` itself): the pipeline imports this package lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..tensors import to_device
from .flow import estimate_flow, fb_confidence, warp_by_flow
from .metrics import flicker, identity_step, landmark_jitter
from .stabilise import (
    MAX_PREROLL,
    TrackHistory,
    compiled_flow_weights,
    flow_weights,
    preroll_frames,
    reduce_for_flow,
    stabilise_reduced,
    stabilise_window,
    stack_windows,
)

if TYPE_CHECKING:
    from ..faces import FaceBatch

__all__ = [
    "ClipStabiliser",
    "MAX_PREROLL",
    "TrackHistory",
    "preroll_frames",
    "stabilise_window",
    "stabilise_reduced",
    "estimate_flow",
    "fb_confidence",
    "warp_by_flow",
    "flicker",
    "landmark_jitter",
    "identity_step",
]


class ClipStabiliser:
    """The pipeline's temporal stage: keeps each track's recent crops and stabilises the newest ones.

    Output at frame t depends only on frames t-K..t of the same track (K = ``preroll``), so a run that
    starts with K pre-roll frames matches an uninterrupted one bit for bit. Faces without a track id
    (track_id < 0) are returned as restored.
    """

    def __init__(self, strength: float, compile: bool = False) -> None:
        self.strength = float(strength)
        # compile: the flow and weights through torch.compile (CUDA; see compiled_flow_weights).
        self._weights = compiled_flow_weights() if compile else flow_weights
        self.preroll = preroll_frames(self.strength)
        self.history = TrackHistory(self.preroll)
        self._newest: dict[int, int] = {}

    def stabilise(self, batch: FaceBatch, frame_numbers: Sequence[int], inputs: torch.Tensor,
                  restored: torch.Tensor) -> torch.Tensor:
        """inputs, restored: (N, 3, S, S) for ``batch.faces``; returns the stabilised (N, 3, S, S)."""
        if self.preroll == 0 or restored.shape[0] == 0:
            return restored
        rows = [i for i, face in enumerate(batch.faces) if face.track_id >= 0]
        out = restored
        if rows:
            # Past inputs are only ever read at the flow's resolution: keep them reduced (16x smaller at
            # 512 px), reduced once per batch; each window is then stacked in one copy.
            tracked = inputs if len(rows) == inputs.shape[0] else inputs[to_device(rows, inputs.device)]
            reduced = reduce_for_flow(tracked)
            windows = []
            # Faces arrive in frame order. Each frame's window is read right after that frame is pushed, so
            # the history never holds frames a later one in the same batch would already have evicted.
            for j, i in enumerate(rows):
                face = batch.faces[i]
                frame = int(frame_numbers[int(batch.frame_index[i])])
                self.history.push(face.track_id, frame, reduced[j], restored[i])
                self._newest[face.track_id] = max(frame, self._newest.get(face.track_id, frame))
                windows.append(self.history.entries(face.track_id, frame))
            out = restored.clone()
            out[to_device(rows, restored.device)] = stabilise_reduced(*stack_windows(windows), self.strength,
                                                                      weights=self._weights)
        # Forget tracks no later frame can reach, so memory stays flat over long shots.
        latest = max(int(frame_numbers[int(j)]) for j in batch.frame_index) if len(batch.frame_index) else 0
        for tid in [t for t, f in self._newest.items() if f < latest - self.preroll - 1]:
            self.history.drop(tid)
            del self._newest[tid]
        return out
