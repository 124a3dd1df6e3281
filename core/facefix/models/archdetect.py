"""Which network family a state dict belongs to, from its keys alone (nothing is built)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["detect_architecture", "face_registry"]

# RetinaFace (facexlib / Pytorch_Retinaface): the three heads are its signature.
_RETINAFACE_KEYS = (
    "ClassHead.0.conv1x1.weight",
    "BboxHead.0.conv1x1.weight",
    "LandmarkHead.0.conv1x1.weight",
)


@lru_cache(maxsize=1)
def _full_registry() -> Any:
    """spandrel's main registry plus the extra architectures, without changing the global one."""
    from spandrel import MAIN_REGISTRY
    from spandrel_extra_arches import EXTRA_REGISTRY

    registry = MAIN_REGISTRY.copy()
    registry.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


@lru_cache(maxsize=1)
def face_registry() -> Any:
    """A spandrel registry holding only the face-restoration architectures FaceFix runs.

    Restricting detection to these means a file of another family (an upscaler, say) is never
    loaded as a face restorer by a first-match accident.
    """
    from spandrel import MAIN_REGISTRY, ArchRegistry
    from spandrel_extra_arches import EXTRA_REGISTRY

    registry = ArchRegistry()
    registry.add(
        MAIN_REGISTRY.get("GFPGAN"), MAIN_REGISTRY.get("RestoreFormer"), EXTRA_REGISTRY.get("CodeFormer")
    )
    return registry


def detect_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """The architecture id (spandrel's ids, or ``RetinaFace``) of ``state_dict``; None if unknown."""
    if all(k in state_dict for k in _RETINAFACE_KEYS):
        return "RetinaFace"
    registry = _full_registry()
    for support in registry.architectures("detection"):
        if support.detect(state_dict):
            return str(support.architecture.id)
    return None
