"""The passthrough restorer: returns the crops as given (tests the pipeline around the restorer)."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Restorer

__all__ = ["passthrough_restorer"]


def _identity(module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
    return crops


def passthrough_restorer() -> Restorer:
    return Restorer(
        name="passthrough",
        architecture="Identity",
        module=nn.Identity(),
        run=_identity,
        license="Apache-2.0",
        commercial_use=True,
        supports_half=True,
        supports_bfloat16=True,
        identity=True,
    )
