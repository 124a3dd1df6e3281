"""The face-restorer registry: name -> how to load it.

``load_restorer(name)`` finds the model file through the model manager (verified against the
catalogue), reads it with the safe loader (never unpickling code) and builds the network with
spandrel. ``passthrough`` needs no file; ``realesrgan-face`` lives in its own module, imported only
when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch

from ..errors import ModelError
from ..models.catalog import CATALOG
from .base import Restorer

__all__ = ["RestorerSpec", "RESTORERS", "load_restorer", "restorer_names"]

Kind = Literal["spandrel", "identity", "external"]

_EXTERNAL_MODULE = "facefix.restore.realesrgan_face"


@dataclass(frozen=True)
class RestorerSpec:
    """How to load one restorer. ``needs_file``: it reads a model file from the models folder."""

    name: str
    architecture: str
    kind: Kind
    license: str
    commercial_use: bool

    @property
    def needs_file(self) -> bool:
        return self.kind == "spandrel"


def _spec(name: str, kind: Kind) -> RestorerSpec:
    card = CATALOG[name]  # licence facts live once, in the catalogue
    return RestorerSpec(name, card.architecture, kind, card.license, card.commercial_use)


RESTORERS: Mapping[str, RestorerSpec] = MappingProxyType(
    {
        "gfpgan-1.4": _spec("gfpgan-1.4", "spandrel"),
        "gfpgan-1.3": _spec("gfpgan-1.3", "spandrel"),
        "restoreformer": _spec("restoreformer", "spandrel"),
        "codeformer": _spec("codeformer", "spandrel"),
        "realesrgan-face": _spec("realesrgan-face", "external"),
        "passthrough": _spec("passthrough", "identity"),
    }
)


def restorer_names() -> tuple[str, ...]:
    return tuple(RESTORERS)


def _load_external(spec: RestorerSpec, device: str | torch.device, dtype: torch.dtype) -> Restorer:
    try:
        module = importlib.import_module(_EXTERNAL_MODULE)
    except ImportError as err:
        if getattr(err, "name", None) in (_EXTERNAL_MODULE, None) or _EXTERNAL_MODULE in str(err):
            raise ModelError(
                f"{spec.name}: its module {_EXTERNAL_MODULE} is not available in this install"
            ) from None
        raise
    loader = getattr(module, "load_realesrgan_face", None)
    if loader is None:
        raise ModelError(f"{spec.name}: {_EXTERNAL_MODULE} has no load_realesrgan_face()")
    restorer = loader(device, dtype)
    if not isinstance(restorer, Restorer):
        raise ModelError(
            f"{spec.name}: load_realesrgan_face() returned {type(restorer).__name__}, not a Restorer"
        )
    return restorer


def load_restorer(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
) -> Restorer:
    """Load restorer ``name`` onto ``device`` in ``dtype`` (float32 where the model does not support it).

    ``path`` uses that model file instead of the cached one (no catalogue checksum, but the file must
    be of the restorer's architecture); otherwise the file comes from ``facefix.models.resolve(name)``,
    which raises ModelError with the install command when it is missing.
    """
    spec = RESTORERS.get(name)
    if spec is None:
        raise ModelError(f"unknown restorer {name!r}: choose one of {', '.join(RESTORERS)}")
    if spec.kind == "identity":
        from .passthrough import passthrough_restorer

        return passthrough_restorer().to(device, dtype)
    if spec.kind == "external":
        return _load_external(spec, device, dtype)

    from ..models.manager import resolve
    from ..models.safeload import load_state_dict
    from .spandrel_restorers import restorer_from_state_dict

    file = Path(path) if path is not None else resolve(name)
    state_dict = load_state_dict(file)
    restorer = restorer_from_state_dict(
        name,
        spec.architecture,
        state_dict,
        license=spec.license,
        commercial_use=spec.commercial_use,
        origin=str(file),
    )
    return restorer.to(device, dtype)
