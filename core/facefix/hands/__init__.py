"""Hands in generated video: MediaPipe's palm detector and 21-point hand landmarks (ported to PyTorch),
anatomical and temporal anomaly scores, and flagged spans. Diagnosis only: FaceFix does not repair hands.

``HandAnalyser(device).detect(frames)`` finds hands; ``analyse_hands(frames, frame_numbers)`` returns a
:class:`HandReport` (``.per_frame``, ``.spans``, ``.to_json()``). Scores and thresholds:
:mod:`facefix.hands.analyse`.
"""

from __future__ import annotations

from .analyse import (
           THRESHOLDS,
           Hand,
           HandAnalyser,
           HandReport,
           analyse_hands,
           detect_hands,
           hand_scores,
           hand_spans,
)

__all__ = ["Hand", "HandAnalyser", "HandReport", "analyse_hands", "detect_hands", "hand_scores", "hand_spans",
           "THRESHOLDS"]
