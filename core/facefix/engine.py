"""The compute device and the loaded models: ``Engine`` is built once per job (or per ``api.Session``) and
reused for every frame; ``run_model`` calls the restorer in fixed micro-batches."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import torch

from .errors import SettingsError
from .params import Settings

__all__ = ["Engine", "resolve_device", "run_model", "micro_batch_for", "frames_per_batch",
           "MODEL_MICRO_BATCH", "MODEL_MICRO_BATCH_CUDA"]

log = logging.getLogger("facefix")

# The model always sees batches of exactly this many crops (the last one padded), so its arithmetic, and
# therefore the output, never depends on how many frames the caller groups together.
MODEL_MICRO_BATCH = 1
MODEL_MICRO_BATCH_CUDA = 16

_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def resolve_device(choice: str | torch.device) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device; anything else,
    or a CUDA device this machine lacks, is a one-line ``SettingsError``."""
    if isinstance(choice, torch.device):
        choice = str(choice)
    m = _DEVICE.fullmatch(str(choice).strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise SettingsError(f"--device: {choice!r} is not a device (use auto, cpu, cuda or cuda:N)")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SettingsError(f"--device {choice}: no CUDA device is available (use --device cpu or auto)")
    if index is not None and int(index) >= torch.cuda.device_count():
        raise SettingsError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")


class Engine:
    """Loaded models and the device they run on. Build once per job; reuse for every frame.

    On CUDA the restorer runs in bfloat16 where the architecture allows it, channels-last, with its
    modulated convolutions computed batch-wide (``facefix.restore.fast``) and replayed from CUDA graphs
    (``cuda_graphs``: one capture per micro-batch shape, for architectures known to capture);
    ``accelerate`` = False keeps the plain network (the benchmark's eager baseline). ``device`` overrides
    ``settings.device`` (e.g. ``cuda:1``). Models load on first use.
    """

    def __init__(self, settings: Settings, restorer_path: str | None = None, accelerate: bool = True,
                 compile: bool | str = False, cuda_graphs: bool = True,
                 device: str | torch.device | None = None) -> None:
        self.settings = settings
        self.restorer_path = restorer_path
        self.accelerate = accelerate
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.device = resolve_device(device if device is not None else settings.device)
        self._restorer: object | None = None
        self._upscaler: object | None = None

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    @property
    def micro_batch(self) -> int:
        return micro_batch_for(self.device)

    def restorer(self):  # type: ignore[no-untyped-def]
        if self._restorer is None:
            from .restore.registry import load_restorer

            r = load_restorer(self.settings.model, device=str(self.device), dtype=torch.float32, path=self.restorer_path)
            if self.device.type == "cuda":
                r = r.to(self.device, torch.bfloat16)
                if self.accelerate:
                    from .restore.fast import accelerate

                    r = accelerate(r, channels_last=True, compile=self.compile, micro_batch=self.micro_batch,
                                   cuda_graphs="auto" if self.cuda_graphs else False)
            self._restorer = r
        return self._restorer

    def stabiliser(self, strength: float):  # type: ignore[no-untyped-def]
        """The temporal stage for a shot (``ClipStabiliser``); with ``compile`` on CUDA its flow is compiled too."""
        from .temporal import ClipStabiliser

        return ClipStabiliser(strength, compile=bool(self.compile) and self.accelerate and self.device.type == "cuda")

    def upscaler(self):  # type: ignore[no-untyped-def]
        if self._upscaler is None:
            from .upscale import load_upscaler

            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self._upscaler = load_upscaler(self.settings.upscale_model, self.settings.upscale, device=self.device,
                                           dtype=dtype)
        return self._upscaler

    def sharing_models(self, settings: Settings) -> Engine:
        """An engine for ``settings`` (same model, upscaler and device) that shares this one's loaded models."""
        other = Engine(settings, self.restorer_path, self.accelerate, self.compile, self.cuda_graphs, self.device)
        other._restorer = self.restorer()
        if settings.upscale > 1:
            other._upscaler = self.upscaler()
        return other

    def release(self) -> None:
        """Drop the loaded models and return their GPU memory to the device."""
        self._restorer = None
        self._upscaler = None
        if self.device.type == "cuda":
            import gc

            gc.collect()
            torch.cuda.empty_cache()


def frames_per_batch(settings: Settings, device: torch.device) -> int:
    """--batch, or for 0 (auto): 16 frames on a GPU (the model's micro-batch, filled by one face a frame;
    1.8x the fps of batch 4 on a 1080p clip), 4 on the CPU (there frames in flight only cost memory)."""
    return int(settings.batch) or (16 if device.type == "cuda" else 4)


def micro_batch_for(device: torch.device) -> int:
    """Crops per model call on ``device``: fixed, so output never depends on how frames are grouped."""
    return MODEL_MICRO_BATCH_CUDA if device.type == "cuda" else MODEL_MICRO_BATCH


def run_model(restorer: Callable[..., torch.Tensor], crops: torch.Tensor, fidelity: Sequence[float],
              dtype: torch.dtype, micro_batch: int | None = None) -> torch.Tensor:
    """Restore (N, 3, S, S) crops in fixed micro-batches (the last one padded); returns float32.

    Faces with different (animated) fidelity go in separate calls. On CUDA out-of-memory the micro-batch is
    halved and the call retried (with a warning: results may then differ in the last bits).
    """
    from .tensors import to_device

    n = crops.shape[0]
    if n == 0:
        return crops.float()
    micro = micro_batch or micro_batch_for(crops.device)
    out = torch.empty((n, *crops.shape[1:]), device=crops.device, dtype=torch.float32)
    fids = [float(f) for f in fidelity] if len(fidelity) == n else [0.5] * n
    groups: dict[float, list[int]] = {}
    for i, f in enumerate(fids):
        groups.setdefault(f, []).append(i)
    one_group = len(groups) == 1  # the usual case: chunks are slices, no gathers and scatters
    for fid, idx in groups.items():
        start = 0
        while start < len(idx):
            sel: slice | torch.Tensor = (slice(start, start + micro) if one_group
                                         else to_device(idx[start : start + micro], crops.device))
            chunk = crops[sel]
            k = chunk.shape[0]
            if k < micro:
                chunk = torch.cat([chunk, chunk[-1:].expand(micro - k, -1, -1, -1)])
            try:
                with torch.inference_mode():
                    res = restorer(chunk.to(dtype), fidelity=fid)
            except torch.cuda.OutOfMemoryError:
                if micro == 1:
                    raise
                torch.cuda.empty_cache()
                micro = max(1, micro // 2)
                log.warning("GPU out of memory: model batch reduced to %d (results may differ in the last bits)", micro)
                continue
            out[sel] = res[:k].float()
            start += k
    return out
