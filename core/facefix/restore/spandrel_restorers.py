"""GFPGAN, RestoreFormer and CodeFormer through spandrel's architectures.

spandrel builds the network from a state dict (detected from its keys); FaceFix calls the network
itself rather than spandrel's descriptor, because the descriptors disagree on the input range:
spandrel 0.4 maps [0, 1] -> [-1, 1] for RestoreFormer but passes [0, 1] straight into GFPGAN and
CodeFormer, which were trained on [-1, 1] (wrong range = grey, noisy faces). Here every
architecture gets ``2x - 1`` in and ``(y + 1) / 2`` out, as in the upstream inference scripts.

Texture noise: GFPGAN's StyleGAN2 decoder draws fresh Gaussian noise on every call by default
(``randomize_noise=True``), so the same face restores differently on every frame (flicker). The
network is called with ``randomize_noise=False``: it then uses the noise maps stored in the model
file (``stylegan_decoder.noises.noise<i>``, shape [1, 1, r, r]), the same for every call and
broadcast over the batch, so a crop's result does not depend on its neighbours. A file without those
buffers gets maps drawn once from a fixed seed.

Precision: CodeFormer's codebook lookup multiplies a float32 one-hot by the embedding weights, which
fails in fp16/bf16; it always runs in float32. GFPGAN and RestoreFormer follow spandrel's facts
(no fp16, bf16 allowed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import ModelError
from .base import Restorer, RunFn

__all__ = [
    "SPANDREL_ARCHITECTURES",
    "build_restorer",
    "restorer_from_state_dict",
    "fill_missing_gfpgan_noise",
    "NOISE_SEED",
]

NOISE_SEED = 0x5EED


def _run_gfpgan(module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
    out = module(crops * 2.0 - 1.0, return_rgb=False, randomize_noise=False)[0]
    return (out + 1.0) / 2.0


def _run_restoreformer(module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
    out = module(crops * 2.0 - 1.0)[0]
    return (out + 1.0) / 2.0


def _run_codeformer(module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
    # Guard against a caller's autocast region: the codebook lookup must stay float32.
    with torch.autocast(device_type=crops.device.type, enabled=False):
        out = module(crops.float() * 2.0 - 1.0, weight=fidelity)[0]
    return (out + 1.0) / 2.0


# architecture id -> (run function, supports_half, supports_bfloat16)
SPANDREL_ARCHITECTURES: Mapping[str, tuple[RunFn, bool, bool]] = {
    "GFPGAN": (_run_gfpgan, False, True),
    "RestoreFormer": (_run_restoreformer, False, True),
    "CodeFormer": (_run_codeformer, False, False),
}


def build_restorer(
    name: str,
    architecture: str,
    module: nn.Module,
    *,
    license: str,
    commercial_use: bool,
    input_size: int = 512,
) -> Restorer:
    """Wrap a built network of a known architecture as a float32 CPU-side Restorer (call ``.to`` next)."""
    entry = SPANDREL_ARCHITECTURES.get(architecture)
    if entry is None:
        raise ModelError(f"{name}: no restorer for architecture {architecture!r}")
    run, half, bf16 = entry
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return Restorer(
        name=name,
        architecture=architecture,
        module=module,
        run=run,
        license=license,
        commercial_use=commercial_use,
        input_size=input_size,
        supports_half=half,
        supports_bfloat16=bf16,
        dtype=torch.float32,
    )


def _gfpgan_noise_shapes(state_dict: Mapping[str, Tensor]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Names and shapes of the decoder's noise maps, from the output size implied by the weights."""
    # toRGB holds one conv per level from 8 px up to the output size.
    levels = sum(1 for k in state_dict if k.startswith("toRGB.") and k.endswith(".weight"))
    log_size = levels + 2
    shapes = []
    for i in range((log_size - 2) * 2 + 1):
        res = 2 ** ((i + 5) // 2)
        shapes.append((f"stylegan_decoder.noises.noise{i}", (1, 1, res, res)))
    return shapes


def fill_missing_gfpgan_noise(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with any missing GFPGAN noise map drawn from a fixed seed (same on every load)."""
    out = dict(state_dict)
    generator = torch.Generator().manual_seed(NOISE_SEED)
    for key, shape in _gfpgan_noise_shapes(state_dict):
        noise = torch.randn(shape, generator=generator)  # drawn even when present: keeps maps seed-stable
        if key not in out:
            out[key] = noise
    return out


def restorer_from_state_dict(
    name: str,
    architecture: str,
    state_dict: Mapping[str, Tensor],
    *,
    license: str,
    commercial_use: bool,
    origin: str = "model",
) -> Restorer:
    """Build the spandrel network for ``state_dict`` and check it is of ``architecture``.

    ``origin`` names the file in errors. Raises ModelError for an unrecognised or mismatching file.
    """
    from spandrel import UnsupportedModelError

    from ..models.archdetect import detect_architecture, face_registry

    weights = dict(state_dict)
    if architecture == "GFPGAN" and "toRGB.0.weight" in weights:
        weights = fill_missing_gfpgan_noise(weights)
    try:
        descriptor = face_registry().load(weights)
    except UnsupportedModelError:
        found = detect_architecture(weights)
        what = f"a {found} model" if found else "of an unrecognised architecture"
        raise ModelError(f"{origin}: is {what}, not {architecture} as {name} requires") from None
    except (RuntimeError, KeyError, ValueError, IndexError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelError(f"{origin}: weights do not fit the {architecture} architecture ({first})") from None
    found_id = str(descriptor.architecture.id)
    if found_id != architecture:
        raise ModelError(f"{origin}: is a {found_id} model, not {architecture} as {name} requires")
    # All three are trained on 512x512 crops in the FFHQ template.
    return build_restorer(
        name, architecture, descriptor.model, license=license, commercial_use=commercial_use
    )
