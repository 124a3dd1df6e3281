"""A faster Restorer: GFPGAN's modulated convolutions with one shared weight, channels-last memory,
optional ``torch.compile`` and CUDA graphs over fixed micro-batches.

StyleGAN2's modulated convolution (GFPGAN's decoder) builds a weight per sample, ``W * s_b * d_b``
(style-modulated, then demodulated per output channel), and runs a grouped convolution with ``groups = batch``: one small convolution
per crop, slow on GPUs for large batches. The same result comes from one ordinary convolution with
the shared weight, because a per-input-channel scale commutes with the convolution (and with the
bilinear upsampling in front of it, which acts on each channel alone)::

    conv(up(x), W * s_b * d_b) == conv(up(x * s_b), W) * d_b
    d_b[o] = rsqrt(sum_i s_b[i]^2 * sum_kk W[o, i, kk]^2 + eps)

``accelerate`` swaps the forward of those modules for that computation (same padding, upsample mode
and scale, ``eps``, gain, noise, bias and activation order); the weights and the state dict are
untouched. The 1x1 to-RGB convolutions become one batched matrix product with per-sample weights
(3 x C each), which reads the activations once instead of scaling them first.

Convention: crops are [N, 3, S, S] as for any Restorer; nothing here changes what a crop restores
to beyond float rounding (float32: well under 1e-4 on [-1, 1] outputs), and a crop's result still
does not depend on the other crops in the batch: with ``micro_batch`` every network call sees exactly
that many crops (the last chunk is padded with copies of its last crop, whose results are dropped).
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass, replace
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cuda_graphs import CudaGraphs
from ..errors import SettingsError
from .base import Restorer, RunFn

__all__ = ["accelerate", "COMPILE_MODES"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes ``accelerate(compile=...)`` accepts; ``compile=True`` means ``"default"``."""

# Compile modes that already replay CUDA graphs themselves: a manual capture around them would nest.
_GRAPHING_MODES = ("reduce-overhead", "max-autotune")
# Architectures whose network is known to capture in a CUDA graph (checked on a GPU by the test suite):
# ``cuda_graphs="auto"`` graphs these only. A capture that fails mid-run can leave the stream and the
# allocator in capture state, so "auto" never tries one it cannot vouch for.
_CAPTURES = frozenset({"GFPGAN"})
# Architectures whose run ignores ``fidelity``: their graphs need not be keyed on it.
_IGNORES_FIDELITY = frozenset({"GFPGAN", "RestoreFormer"})
_STYLEGAN2_MODULE = "spandrel.architectures.GFPGAN.__arch.stylegan2_clean_arch"
_STYLE_CONV_GAIN = math.sqrt(2.0)  # StyleConv's "* 2**0.5 for conversion"
_CHANNELS_LAST_FLAG = "_facefix_channels_last"  # set on swapped convolutions: run them NHWC


# ---------------------------------------------------------------------------------------------------
# GFPGAN's decoder, computed with shared weights. ``conv`` / ``self`` are spandrel's (untyped)
# ModulatedConv2d and StyleConv modules.


def _modulation(conv: Any, style: Tensor, gain: float) -> tuple[Tensor, Tensor | None]:
    """Per-sample input scales ``s`` [B, C_in] and output scales ``gain * d`` [B, C_out] (None: no demod).

    The demodulation is summed in float32 from ``s^2`` and the per-(out, in) squared kernel sums,
    which equals the upstream sum over the modulated weight without building it.
    """
    s = conv.modulation(style)
    if not conv.demodulate:
        return s, None
    w2 = conv.weight[0].float().pow(2).sum(dim=(2, 3))  # [C_out, C_in]
    d = torch.rsqrt(s.float().pow(2) @ w2.t() + conv.eps)
    if gain != 1.0:
        d = d * gain
    return s, d.to(s.dtype)


def _per_sample_pointwise(x: Tensor, weight: Tensor) -> Tensor:
    """1x1 convolution with a weight per sample: x [B, C_in, H, W], weight [B, C_out, C_in] -> [B, C_out, H, W].

    Keeps the memory format of ``x`` (a channels-last input gives a channels-last result, no copy).
    """
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: pixels x channels per sample
        out = torch.bmm(rows, weight.transpose(1, 2))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)
    out = torch.bmm(weight, x.reshape(b, c, h * w))
    return out.view(b, -1, h, w)


def _shared_weight_conv(conv: Any, x: Tensor, style: Tensor, gain: float) -> tuple[Tensor, Tensor | None]:
    """``gain * ModulatedConv2d(x, style)`` as ``(out, scale)``: the result is ``out * scale`` (scale None: ``out``).

    x [B, C_in, H, W], style [B, F]; out [B, C_out, H', W'], scale [B, C_out, 1, 1]. The scale is left
    to the caller so that it can fuse it with what follows.
    """
    b = x.shape[0]
    s, d = _modulation(conv, style, gain)
    weight = conv.weight[0]  # [C_out, C_in, k, k], the same for every sample
    if conv.kernel_size == 1 and conv.sample_mode is None:
        per_sample = weight[:, :, 0, 0].unsqueeze(0) * s.unsqueeze(1)  # [B, C_out, C_in]
        if d is not None:
            per_sample = per_sample * d.unsqueeze(2)
        elif gain != 1.0:
            per_sample = per_sample * gain
        return _per_sample_pointwise(x, per_sample), None
    # Scale before resampling: the same result (linear, per channel) on a quarter of the pixels.
    x = x * s.view(b, -1, 1, 1)
    if getattr(conv, _CHANNELS_LAST_FLAG, False):
        # The decoder starts from a repeated NCHW constant; a no-op once activations are NHWC.
        x = x.contiguous(memory_format=torch.channels_last)
    if conv.sample_mode == "upsample":
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    elif conv.sample_mode == "downsample":
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    out = F.conv2d(x, weight, padding=conv.padding)
    if d is None:
        return out, (None if gain == 1.0 else out.new_full((1, 1, 1, 1), gain))
    return out, d.view(b, -1, 1, 1)


def _fast_modulated_conv_forward(self: Any, x: Tensor, style: Tensor) -> Tensor:
    out, scale = _shared_weight_conv(self, x, style, 1.0)
    return out if scale is None else out * scale


def _fast_style_conv_forward(self: Any, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
    out, scale = _shared_weight_conv(self.modulated_conv, x, style, _STYLE_CONV_GAIN)
    if noise is None:  # drawn as upstream does: same shape, same point in the random stream
        b, _, h, w = out.shape
        noise = out.new_empty(b, 1, h, w).normal_()
    # Noise (strength x map) and bias form one small broadcast term, added with the scale in one pass.
    term = self.weight * noise + self.bias
    if out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
        term = term.contiguous(memory_format=torch.channels_last)  # the result takes the first input's layout
    out = out + term if scale is None else torch.addcmul(term, out, scale)
    return self.activate(out)


def _contiguous_output_forward(self: nn.Module, x: Tensor) -> Tensor:
    # GFPGAN flattens this layer's output with .view, which needs the NCHW layout.
    return type(self).forward(self, x).contiguous()


def _swap_gfpgan_forwards(module: nn.Module, channels_last: bool) -> int:
    """Swap the modulated convolutions' forwards in place; returns how many modules were swapped."""
    arch = importlib.import_module(_STYLEGAN2_MODULE)
    swapped = 0
    for m in module.modules():
        # Exact types only: a subclass may compute something else.
        if type(m) is arch.ModulatedConv2d:
            m.forward = MethodType(_fast_modulated_conv_forward, m)
            setattr(m, _CHANNELS_LAST_FLAG, channels_last)
            swapped += 1
        elif type(m) is arch.StyleConv:
            m.forward = MethodType(_fast_style_conv_forward, m)
            swapped += 1
    return swapped


def _prepare_channels_last(restorer: Restorer) -> None:
    # Module.to(memory_format=...) refuses GFPGAN's 5-D modulated weights: convert the 4-D tensors only.
    restorer.module._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
    final_conv = getattr(restorer.module, "final_conv", None)
    if restorer.architecture == "GFPGAN" and isinstance(final_conv, nn.Conv2d):
        setattr(final_conv, "forward", MethodType(_contiguous_output_forward, final_conv))  # noqa: B010


# ---------------------------------------------------------------------------------------------------
# The run wrapper: micro-batches, compile, CUDA graphs


@dataclass
class _AcceleratedRun:
    """A RunFn: ``base`` (or its compiled form) over fixed micro-batches, CUDA-graphed on CUDA devices."""

    base: RunFn
    fn: RunFn
    channels_last: bool
    micro_batch: int | None
    graphs: CudaGraphs | None

    def __call__(self, module: nn.Module, crops: Tensor, fidelity: float) -> Tensor:
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        n = crops.shape[0]
        step = self.micro_batch or n
        pieces = []
        for start in range(0, n, step):
            chunk = crops[start : start + step]
            real = chunk.shape[0]
            if real < step:  # pad to the fixed shape with copies of the last crop (results dropped)
                chunk = torch.cat([chunk, chunk[-1:].expand(step - real, -1, -1, -1)])
                if self.channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
            if self.graphs is not None and chunk.is_cuda:
                out = self.graphs(module, chunk, fidelity)
            else:
                out = self.fn(module, chunk, fidelity)
            pieces.append(out[:real])
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return out.contiguous()


def _compile_mode(compile: bool | str) -> str | None:
    if compile is False:
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return compile
    raise SettingsError(f"--compile: {compile!r} is not one of {', '.join(COMPILE_MODES)} (or true/false)")


def accelerate(
    restorer: Restorer,
    *,
    channels_last: bool = True,
    compile: bool | str = False,
    cuda_graphs: bool | str = False,
    micro_batch: int | None = None,
) -> Restorer:
    """A Restorer computing the same result as ``restorer``, faster.

    - GFPGAN: the decoder's modulated convolutions run with one shared weight over the batch (see the
      module docstring) instead of a grouped convolution with a weight per crop.
    - ``channels_last``: the network's 4-D weights and the crops use the NHWC layout (tensor cores
      prefer it); results come back contiguous NCHW.
    - ``compile``: ``torch.compile`` the network call; ``True`` is mode ``"default"``, or name one of
      ``COMPILE_MODES``. With ``micro_batch`` the shapes are static (one compilation).
    - ``cuda_graphs``: capture the network call for the fixed micro-batch shape and replay it; used on
      CUDA devices only (elsewhere the call runs as is), and needs ``micro_batch``. Skipped under
      compile modes that replay graphs themselves (``"reduce-overhead"``, ``"max-autotune"``).
      ``"auto"``: graphs for architectures known to capture (GFPGAN), none for others. On a compiled
      network graphs remove the launch cost of its ~1,400 kernels per call from the thread that
      feeds the GPU.
    - ``micro_batch``: call the network on at most this many crops at a time (bounds memory), always
      on exactly this many (the last chunk is padded), so every call has the same shape.

    Other architectures pass through unchanged except for ``channels_last``, ``compile``, graphs and
    micro-batches; the passthrough restorer is returned as is.

    The network is changed in place (memory layout, and the modulated convolutions' forwards), as
    ``Restorer.to`` does: the given descriptor shares it, so keep using the returned one.
    Raises SettingsError for an unknown compile mode, a micro-batch below 1, or graphs without one.
    """
    if not isinstance(restorer, Restorer):
        raise SettingsError(f"accelerate: expected a Restorer, got {type(restorer).__name__}")
    mode = _compile_mode(compile)
    if micro_batch is not None and (
        isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1
    ):
        raise SettingsError(f"--micro-batch: {micro_batch!r} is not a whole number of crops >= 1")
    if cuda_graphs not in (True, False, "auto"):
        raise SettingsError(f"--cuda-graphs: {cuda_graphs!r} is not true, false or auto")
    if cuda_graphs and micro_batch is None:
        raise SettingsError("--cuda-graphs: needs a fixed --micro-batch (a graph replays one batch shape)")
    if restorer.identity:
        return restorer

    if restorer.architecture == "GFPGAN" and _swap_gfpgan_forwards(restorer.module, channels_last) == 0:
        warnings.warn(
            f"{restorer.name}: no StyleGAN2 modulated convolutions found; its decoder runs as loaded",
            RuntimeWarning,
            stacklevel=2,
        )
    if channels_last:
        _prepare_channels_last(restorer)

    base = restorer.run.base if isinstance(restorer.run, _AcceleratedRun) else restorer.run
    if not (channels_last or mode or cuda_graphs or micro_batch):
        return replace(restorer, run=base)
    fn: RunFn = base
    if mode is not None:
        # Static shapes with micro-batches; otherwise let the compiler mark the batch dynamic.
        fn = torch.compile(base, mode=mode, dynamic=False if micro_batch else None)
    graphs = None
    if cuda_graphs == "auto" and restorer.architecture not in _CAPTURES:
        cuda_graphs = False
    if cuda_graphs and mode not in _GRAPHING_MODES:
        graphs = CudaGraphs(restorer.name, fn, restorer.architecture not in _IGNORES_FIDELITY)
    run = _AcceleratedRun(base, fn, channels_last, micro_batch, graphs)
    return replace(restorer, run=run)
