"""Host values onto the device without stalling the thread that feeds it."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

__all__ = ["to_device", "kernels_for"]


def to_device(data: Any, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``data`` (list, numpy array, tensor) as a tensor on ``device``, queued behind the device's work.

    ``torch.tensor(x, device=cuda)`` waits for everything already queued on the GPU before it returns;
    the small index and parameter tensors made for every batch would then serialise the CPU and the GPU.
    A non-blocking copy from ordinary memory is staged by the driver at once, so the source may be freed.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)  # views with negative strides (a[::-1]) are copied first
    return torch.as_tensor(data, dtype=dtype).to(device, non_blocking=True)


def kernels_for(t: torch.Tensor) -> bool:
    """Whether ``t``'s steps run as the project's own Triton kernels: CUDA tensors, with Triton installed
    (it comes with torch's CUDA builds). Everything else runs the torch steps they are tested against."""
    return t.device.type == "cuda" and _have_triton()


@functools.lru_cache(maxsize=1)
def _have_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
