"""The Restorer descriptor: one face-restoration network and the facts a scheduler needs about it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..errors import InputError, SettingsError

__all__ = ["Restorer", "RunFn", "compute_dtype"]

RunFn = Callable[[nn.Module, Tensor, float], Tensor]
"""``run(module, crops, fidelity) -> restored``: crops and result in [0, 1] RGB, [N, 3, S, S], on the
module's device and in its dtype. Each architecture maps [0, 1] to its own input range inside."""


def compute_dtype(requested: torch.dtype, supports_half: bool, supports_bfloat16: bool) -> torch.dtype:
    """The dtype a network really runs in: ``requested`` if it supports it, else float32."""
    if requested == torch.float16 and not supports_half:
        return torch.float32
    if requested == torch.bfloat16 and not supports_bfloat16:
        return torch.float32
    if requested not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise SettingsError(f"--precision: {requested} is not a floating-point dtype a model can run in")
    return requested


def _device_of(module: nn.Module) -> torch.device:
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


@dataclass(frozen=True, eq=False)
class Restorer:
    """A loaded face restorer.

    Facts: ``name`` (registry name), ``architecture``, ``input_size`` (crops are square, this many
    pixels), ``supports_half`` / ``supports_bfloat16`` (precisions the network is known to run in),
    ``license`` and ``commercial_use``. ``dtype`` is the precision it runs in now (float32 whenever the
    requested one is unsupported). ``module`` is the network; ``run`` calls it (see ``RunFn``).

    Call: ``restorer(crops, fidelity=0.5)`` with crops [N, 3, S, S] float RGB in [0, 1] (S =
    input_size), any device/dtype; returns [N, 3, S, S] in [0, 1] on the crops' device and in their
    dtype. ``fidelity`` (0 = most restoration, 1 = closest to the input) is used by models that have
    such a control (CodeFormer) and ignored by the others. The result of one crop does not depend
    on the other crops in the batch.

    Convention: crops are aligned faces in the 512 FFHQ template, channels R, G, B, display-referred.
    """

    name: str
    architecture: str
    module: nn.Module
    run: RunFn
    license: str
    commercial_use: bool
    input_size: int = 512
    supports_half: bool = False
    supports_bfloat16: bool = False
    dtype: torch.dtype = torch.float32
    identity: bool = False  # passthrough: the crops come back as given (copied), not clamped

    @property
    def device(self) -> torch.device:
        return _device_of(self.module)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Restorer:
        """Move the network (in place, as ``nn.Module.to`` does) and return the updated descriptor.

        A dtype the network does not support becomes float32 (see ``compute_dtype``); use the returned
        Restorer, whose ``dtype`` says what it runs in.
        """
        target_dtype = (
            self.dtype if dtype is None else compute_dtype(dtype, self.supports_half, self.supports_bfloat16)
        )
        try:
            target_device = self.device if device is None else torch.device(device)
            self.module.to(device=target_device, dtype=target_dtype)
        except (RuntimeError, AssertionError, TypeError, ValueError) as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SettingsError(f"--device: cannot move {self.name} to {device} ({message})") from None
        return replace(self, dtype=target_dtype)

    def __call__(self, crops: Tensor, *, fidelity: float = 0.5) -> Tensor:
        if not isinstance(crops, Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            shape = tuple(crops.shape) if isinstance(crops, Tensor) else type(crops).__name__
            raise InputError(
                f"{self.name}: crops must be a [N, 3, {self.input_size}, {self.input_size}] tensor, got {shape}"
            )
        if crops.shape[2] != self.input_size or crops.shape[3] != self.input_size:
            raise InputError(
                f"{self.name}: crops must be {self.input_size}x{self.input_size}, got {crops.shape[3]}x{crops.shape[2]}"
            )
        if not crops.is_floating_point():
            raise InputError(f"{self.name}: crops must be float in [0, 1], got {crops.dtype}")
        fidelity = float(fidelity)
        if not math.isfinite(fidelity) or not 0.0 <= fidelity <= 1.0:
            raise SettingsError(f"--fidelity: {fidelity} is outside [0, 1]")
        if self.identity:
            return crops.clone()
        if crops.shape[0] == 0:
            return crops.clone()
        x = crops.to(device=self.device, dtype=self.dtype)
        if self.module.training:
            self.module.eval()
        with torch.no_grad():
            y = self.run(self.module, x, fidelity)
        return y.clamp(0.0, 1.0).to(device=crops.device, dtype=crops.dtype)
