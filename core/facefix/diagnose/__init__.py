"""``facefix diagnose``: what is wrong with the faces of a shot, where and how badly (warp, boil, waxy skin,
identity drift; hands where ``facefix.hands`` is installed), and whether to restore it (with which repair
controls) or generate it again.

Imports torch (unlike ``facefix`` itself): the command imports this package lazily.
"""

from __future__ import annotations

from .report import VERSION, Diagnosis, TrackDiagnosis, load_json, write_json
from .scores import KINDS, SCORES, THRESHOLDS

__all__ = ["VERSION", "Diagnosis", "TrackDiagnosis", "load_json", "write_json", "KINDS", "SCORES", "THRESHOLDS"]
