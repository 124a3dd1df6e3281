"""Repair what the generator broke, before restoration: de-boil (``deboil``), de-warp and regrain.

Imports torch (unlike ``facefix`` itself): the pipeline imports this package lazily.
"""

from __future__ import annotations

from .deboil import DEBOIL_WINDOW, deboil_window, mesh_flows, weighted_median
from .stage import ClipRepairer, repair_window

__all__ = ["DEBOIL_WINDOW", "deboil_window", "mesh_flows", "weighted_median", "ClipRepairer", "repair_window"]
