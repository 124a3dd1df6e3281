"""Loading model weights without executing code from the file.

``.safetensors`` files are plain tensors and are preferred. ``.pth``/``.ckpt`` files are pickles:
they are read only through ``torch.load(weights_only=True)``, whose restricted unpickler builds
tensors and plain containers and refuses any other global (so a ``__reduce__`` payload never runs).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

__all__ = ["load_state_dict", "unwrap_state_dict", "UNWRAP_KEYS"]

# Containers the usual training frameworks wrap weights in, most specific first: BasicSR saves
# ``params_ema`` (the weights to use) beside ``params``; Lightning and many others use ``state_dict``.
UNWRAP_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net")


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header size, then a JSON object."""
    if path.suffix.lower() == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= header_len <= 100_000_000


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    first = first[:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def unwrap_state_dict(obj: Any, origin: str = "model") -> dict[str, torch.Tensor]:
    """The ``name -> Tensor`` mapping inside a loaded checkpoint.

    Unwraps the containers in UNWRAP_KEYS (and a lone top-level entry), drops non-tensor entries
    beside the tensors (step counters, version numbers), and strips a ``module.`` prefix that
    DataParallel adds to every key. Raises ModelError naming ``origin`` when no tensors are found.
    """
    if not isinstance(obj, Mapping):
        raise ModelError(f"{origin}: not a model file (holds a {type(obj).__name__}, not named tensors)")
    for _ in range(3):  # containers may nest (state_dict -> params_ema)
        inner = next((obj[k] for k in UNWRAP_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None and len(obj) == 1:
            only = next(iter(obj.values()))
            inner = only if isinstance(only, Mapping) else None
        if inner is None:
            break
        obj = inner
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{origin}: not a model file (no weight tensors found)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the weights in ``path`` onto the CPU without running code from the file.

    Safetensors files (by extension or by their header) go through ``safetensors``; anything else
    through ``torch.load(weights_only=True, map_location='cpu')``. Containers are unwrapped (see
    ``unwrap_state_dict``). Any file that is not a weights file (text, random bytes, a truncated
    archive, a pickle that asks for code) raises ModelError with a one-line message naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: model file is empty")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except pickle.UnpicklingError:
        # The restricted unpickler refused it: either not a pickle at all, or one that asks to build
        # objects other than tensors (possibly code); in both cases nothing from it was run.
        raise ModelError(
            f"{path}: not a weights file, or one holding objects other than tensors "
            "(refused by the safe loader; nothing in it was run)"
        ) from None
    except Exception as err:  # every loader failure means the same thing to the user
        raise ModelError(f"{path}: not a loadable weights file ({_short(err)})") from None
    return unwrap_state_dict(obj, origin=str(path))
