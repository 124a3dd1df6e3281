"""The frame-in/frame-out core: align, restore, stabilise, composite, upscale.

``restore_frame(image, faces, settings)`` is the entry hosts call; ``restore_batch`` does the same for
several frames at once (faces of all frames go through the model together). ``Engine`` holds only
configuration and loaded weights; every stage below is a function of its inputs.

Data flow per batch (one way):
  frames (input colourspace, float32 HxWxC) -> face ROIs to working RGB -> align (GPU warp) -> restore
  -> stabilise (optional, per track) -> colour match -> matte -> detail-preserving paste -> from working
  -> untouched pixels copied bit for bit from the input (or the whole frame upscaled when asked).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .colour import ColourTransform, colour_transform, resolve_colorspace
from .composite import colour_match, paste_faces, polygon_sdf, soft_matte, template_ellipse
from .errors import InputError
from .faces import Face
from .geometry import (
    TEMPLATE_SIZE,
    antialias_levels,
    crop_from_frame_matrix,
    frame_rois,
    invert_affine,
    warp_affine,
)
from .io.dpx import PackedFrame
from .io.frames import codes_from_unit, unit_from_codes
from .packed import PackedRegion, merge_unit, unpack_unit
from .params import Settings
from .tensors import kernels_for, to_device

__all__ = [
    "Engine", "FaceBatch", "PendingFrame", "StagedFrame", "restore_frame", "restore_batch", "queue_batch",
    "stage_frame", "face_regions", "run_model", "BatchStats", "resolve_device",
    "micro_batch_for", "frames_per_batch", "MODEL_MICRO_BATCH", "MODEL_MICRO_BATCH_CUDA",
]

log = logging.getLogger("facefix")

# The model always sees batches of exactly this many crops (the last one padded), so its arithmetic, and
# therefore the output, never depends on how many frames the caller groups together.
MODEL_MICRO_BATCH = 1
MODEL_MICRO_BATCH_CUDA = 16

# Face width in the 512 template, in px (about 2.2x the eye distance): the unit of expand/feather.
_TEMPLATE_FACE_PX = 280.0


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(choice)


@dataclass
class Engine:
    """Loaded models and the device they run on. Build once per job; reuse for every frame.

    On CUDA the restorer runs in bfloat16 where the architecture allows it, channels-last, with its
    modulated convolutions computed batch-wide (``facefix.restore.fast``) and replayed from CUDA graphs
    (``cuda_graphs``: one capture per micro-batch shape, for architectures known to capture);
    ``accelerate`` = False keeps the plain network (the benchmark's eager baseline).
    """

    settings: Settings
    restorer_path: str | None = None
    accelerate: bool = True
    compile: bool | str = False
    cuda_graphs: bool = True
    device: torch.device = field(init=False)
    _restorer: object | None = field(default=None, init=False, repr=False)
    _upscaler: object | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.settings.device)

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


@dataclass(frozen=True)
class FaceBatch:
    """Faces of a batch of frames, flattened in frame order: face n belongs to frame ``frame_index[n]``
    (non-decreasing, so each frame's faces are one slice)."""

    faces: tuple[Face, ...]
    frame_index: np.ndarray  # (N,) int
    crop_from_frame: np.ndarray  # (N, 2, 3)

    @classmethod
    def build(cls, faces_per_frame: Sequence[Sequence[Face]], size: int = TEMPLATE_SIZE) -> FaceBatch:
        flat = [(i, f) for i, fs in enumerate(faces_per_frame) for f in fs]
        if not flat:
            return cls((), np.zeros(0, np.int64), np.zeros((0, 2, 3)))
        mats = crop_from_frame_matrix(np.stack([f.landmarks for _, f in flat]), size)
        return cls(tuple(f for _, f in flat), np.array([i for i, _ in flat], np.int64), mats)

    def frame_slices(self, frames: int) -> list[slice]:
        """The faces of each of ``frames`` frames, as slices of the batch (faces are in frame order)."""
        starts = np.searchsorted(self.frame_index, np.arange(frames + 1))
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def face_regions(faces: Mapping[int, Sequence[Face]], size: int = TEMPLATE_SIZE) -> dict[int, tuple[int, int, int, int]]:
    """Each frame's faces' region (x0, y0, x1, y1) as ``stage_frame`` finds it, for a whole shot in one call (an
    alignment does not depend on the others in the call), not yet clipped to the frame's right and bottom
    edges (``stage_frame`` does that): the threads that read frames then skip the fit."""
    flat = [f.landmarks for fs in faces.values() for f in fs]
    if not flat:
        return {}
    edge = 1 << 30  # no right or bottom edge here
    boxes = frame_rois(invert_affine(crop_from_frame_matrix(np.stack(flat), size)), size, (edge, edge))
    ends = np.cumsum([len(fs) for fs in faces.values()])
    out = {}
    for (n, fs), end in zip(faces.items(), ends):
        if fs:
            box = boxes[end - len(fs) : end]
            out[n] = (int(box[:, 0].min()), int(box[:, 1].min()), int(box[:, 2].max()), int(box[:, 3].max()))
    return out


@dataclass
class BatchStats:
    """Counters, and (with ``profile``) wall time per stage; the device is synchronised at stage edges."""

    faces_restored: int = 0
    nonfinite_pixels: int = 0
    profile: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, device: torch.device) -> Iterator[None]:
        if not self.profile:
            yield
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


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


@functools.lru_cache(maxsize=8)
def _template_sdf(size: int, device: torch.device) -> torch.Tensor:
    """Signed distance (1, 1, S, S) to the template ellipse: the same for every face without a mesh, so
    computed once per size and device (it is a few hundred small kernels)."""
    return polygon_sdf(template_ellipse(size).to(device)[None], size)


def face_mattes(batch: FaceBatch, settings_per_face: Sequence[Settings], size: int, device: torch.device) -> torch.Tensor:
    """Soft mattes (N, 1, S, S) in crop space: the mesh face-oval where a mesh is known, else the template ellipse."""
    n = len(batch.faces)
    sdf = _template_sdf(size, device).expand(n, -1, -1, -1)
    use_mesh = [i for i, (f, s) in enumerate(zip(batch.faces, settings_per_face)) if s.mask == "mesh" and f.mesh is not None]
    if use_mesh:
        from .detect.mesh import FACE_OVAL

        ovals = np.stack([
            batch.faces[i].mesh[FACE_OVAL, :2] @ batch.crop_from_frame[i, :, :2].T + batch.crop_from_frame[i, :, 2]  # type: ignore[index]
            for i in use_mesh
        ])
        sdf = sdf.clone()
        sdf[to_device(use_mesh, device)] = polygon_sdf(to_device(ovals, device), size)
    unit = _TEMPLATE_FACE_PX * size / TEMPLATE_SIZE
    expand = to_device([s.mask_expand * unit for s in settings_per_face], device).view(-1, 1, 1, 1)
    soft = to_device([s.mask_feather * unit for s in settings_per_face], device).view(-1, 1, 1, 1)
    mattes = soft_matte(sdf, expand, soft)
    # Never reach the crop border, so no square edge can ever show.
    border = max(2, size // 64)
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    edge_d = torch.minimum(coords, size - coords)
    edge = ((torch.minimum(edge_d[:, None], edge_d[None, :]) - border) / border).clamp(0, 1)
    return mattes * edge


def _host_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 host tensor to stage a transfer with ``device``: pinned for CUDA (asynchronous copies)."""
    return torch.empty(shape, dtype=torch.float32, pin_memory=device.type == "cuda")


def _copy_stream(device: torch.device, direction: str) -> torch.cuda.Stream:
    """A side stream per CUDA device and direction ("up", "down"): transfers run on the copy engines
    while the compute stream works on another batch, instead of queueing between its kernels."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _indexed_copy_stream(index, direction)


@functools.lru_cache(maxsize=16)
def _indexed_copy_stream(index: int, direction: str) -> torch.cuda.Stream:
    return torch.cuda.Stream(torch.device("cuda", index))


def _upload(host: torch.Tensor, dev: torch.device, into: torch.Tensor | None = None) -> torch.Tensor:
    """``host`` (pinned) copied to ``dev`` on the upload stream (into ``into``, a ``_device_buffer`` view, if
    given); the compute stream must ``wait_stream`` it before use (``_working_rois`` does, once per batch)."""
    # A copy, always: the paste writes into the result, never into the caller's staged buffer.
    if dev.type != "cuda":
        return into.copy_(host) if into is not None else host.to(dev, copy=True)
    with torch.cuda.stream(_copy_stream(dev, "up")):
        if into is not None:
            return into.copy_(host, non_blocking=True)
        t = host.to(dev, non_blocking=True, copy=True)
    t.record_stream(torch.cuda.current_stream(dev))  # freed only after the compute stream is done with it
    return t


def _device_buffer(numel: int, dev: torch.device) -> torch.Tensor:
    """A float32 buffer for ``_upload(..., into=)``: made on the upload stream (whose copies fill it without
    waiting for the compute stream) and kept until the compute stream is done with it."""
    if dev.type != "cuda":
        return torch.empty(numel, device=dev)
    with torch.cuda.stream(_copy_stream(dev, "up")):
        t = torch.empty(numel, device=dev)
    t.record_stream(torch.cuda.current_stream(dev))
    return t


def _download(*tensors: torch.Tensor, into: Sequence[torch.Tensor | None] | None = None
              ) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
    """Start copying ``tensors`` (all on one device) to the host; returns the host tensors and the event to
    wait on before reading them (None off CUDA). On CUDA the copies run on the download stream, after
    the work queued so far on the compute stream. ``into``: per tensor, a host tensor of its shape and type
    to copy into (pinned for CUDA), or None for a new float32 one."""
    targets = list(into) if into is not None else [None] * len(tensors)
    if tensors[0].device.type != "cuda":
        return [t.detach().float().contiguous() if host is None else host.copy_(t)
                for t, host in zip(tensors, targets)], None
    dev = tensors[0].device
    side = _copy_stream(dev, "down")
    side.wait_stream(torch.cuda.current_stream(dev))
    hosts = []
    with torch.cuda.stream(side):
        for t, target in zip(tensors, targets):
            host = target if target is not None else _host_buffer(tuple(t.shape), dev)
            host.copy_(t.detach(), non_blocking=True)
            t.record_stream(side)  # its memory is not reused before the copy has read it
            hosts.append(host)
    event = torch.cuda.Event()
    event.record(side)
    return hosts, event


@dataclass
class PendingFrame:
    """One restored frame whose GPU work is queued and whose download is under way.

    ``result()`` -- on any thread -- waits for the copy and finishes on the CPU (back to the input
    colourspace, untouched pixels copied bit for bit): the caller's encode threads do this while the
    GPU already runs the next batch.
    """

    image: np.ndarray | None  # None for a packed frame
    pasted: torch.Tensor  # host (H, W, 3) float32, working space
    alpha: torch.Tensor  # host (H, W) float32
    event: torch.cuda.Event | None
    origin: tuple[int, int]
    colour: ColourTransform
    upscale: int
    inplace: bool
    bits: int | None = None
    packed: PackedFrame | None = None  # a packed frame: its words receive the result (no CPU finishing)
    has_matte: bool = True  # False: queued with keep_mattes=False, the matte was not brought back

    def wait(self) -> None:
        """Until the download has landed (the host tensors are then readable)."""
        if self.event is not None:
            self.event.synchronize()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self.wait()
        if self.image is None:
            raise InputError("a packed frame's result is packed_result()")
        return _finish_frame(self.image, self.pasted.numpy(), self.alpha.numpy(), self.origin, self.colour,
                             self.upscale, self.inplace, self.bits)

    def packed_result(self) -> PackedFrame:
        """A packed frame, its words restored (once the download has landed)."""
        self.wait()
        if self.packed is None:
            raise InputError("only a packed frame has a packed_result()")
        return self.packed

    def matte(self) -> np.ndarray:
        """The face matte over the whole frame, (H, W) float32 (packed frames; ``result()`` gives it otherwise)."""
        self.wait()
        if self.packed is None:
            return self.result()[1]
        if not self.has_matte:
            raise InputError("this frame was queued without its matte (keep_mattes=False)")
        frame = np.zeros((self.packed.layout.height, self.packed.layout.width), np.float32)
        (x0, y0), (h, w) = self.origin, self.alpha.shape
        frame[y0 : y0 + h, x0 : x0 + w] = self.alpha.numpy()
        return frame


def restore_batch(
    images: Sequence[np.ndarray],
    faces_per_frame: Sequence[Sequence[Face]],
    settings: Settings,
    engine: Engine | None = None,
    *,
    frame_numbers: Sequence[int] | None = None,
    colorspace: ColourTransform | None = None,
    stabilise: Callable[[FaceBatch, Sequence[int], torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    stats: BatchStats | None = None,
    inplace: bool = False,
    bits: int | Sequence[int | None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Restore the given faces in several frames at once.

    images: float32 (H, W, C) arrays in the input colourspace, C >= 3 (channels past RGB pass through);
    or a file's uint8/uint16 integer codes of stored depth ``bits`` (one for all images or one per image;
    default: the full type), which come back as codes of the same depth (float32 when upscaling).
    faces_per_frame: the faces of each frame (already selected and size-filtered by the caller).
    frame_numbers: used for animated settings and by ``stabilise``.
    stabilise(batch, frame_numbers, input_crops, restored_crops) -> restored_crops: the temporal stage.
    Returns per frame (image, alpha): image float32 (H*u, W*u, C) and the face matte (H*u, W*u) float32,
    u = settings.upscale. ``inplace`` (no upscale) writes the result into the given arrays, saving a
    frame copy when the caller owns them.
    """
    stats = stats if stats is not None else BatchStats()
    engine = engine or Engine(settings)
    pending = queue_batch(images, faces_per_frame, settings, engine, frame_numbers=frame_numbers,
                          colorspace=colorspace, stabilise=stabilise, stats=stats, inplace=inplace, bits=bits)
    with stats.stage("from_working", engine.device):
        return [p.result() for p in pending]


def queue_batch(
    images: Sequence[np.ndarray | PackedFrame],
    faces_per_frame: Sequence[Sequence[Face]],
    settings: Settings,
    engine: Engine | None = None,
    *,
    frame_numbers: Sequence[int] | None = None,
    colorspace: ColourTransform | None = None,
    stabilise: Callable[[FaceBatch, Sequence[int], torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    stats: BatchStats | None = None,
    inplace: bool = False,
    staged: Sequence[StagedFrame] | None = None,
    bits: int | Sequence[int | None] | None = None,
    keep_mattes: bool = True,
) -> list[PendingFrame]:
    """``restore_batch`` without waiting: queues the GPU work and the downloads, returns a ``PendingFrame``
    per frame (its ``result()`` is that frame's (image, alpha)). Streaming callers finish frames on their
    encode threads while the next batch runs, and may pass each frame ``staged`` already (``stage_frame``
    on their decode threads, with the same faces and colourspace). A ``PackedFrame`` (10-bit DPX words, no
    upscale, colourspace sRGB or raw) is unpacked and merged back on the device: its pending frame's
    ``packed_result()`` is the same frame with the restored words, and its ``matte()`` the face matte unless
    ``keep_mattes`` is False (a caller that writes none: one transfer a frame less)."""
    if len(images) != len(faces_per_frame):
        raise InputError("restore_batch: one face list per image is required")
    engine = engine or Engine(settings)
    dev = engine.device
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(len(images)))
    ct = colorspace or colour_transform(resolve_colorspace(settings.colorspace, is_float=False))
    up = settings.upscale
    size = TEMPLATE_SIZE
    stats = stats if stats is not None else BatchStats()
    for img in images:
        if not isinstance(img, PackedFrame) and (img.ndim != 3 or img.shape[2] < 3):
            raise InputError(f"expected (H, W, C>=3) float32 images, got shape {img.shape}")
    bits_each = list(bits) if isinstance(bits, Sequence) else [bits] * len(images)

    batch = FaceBatch.build(faces_per_frame, size)
    per_face_settings = [settings.at(numbers[int(i)]) for i in batch.frame_index]

    # 1. Working-space RGB of what the models see: per frame, the union of its face ROIs (or the whole
    #    frame when upscaling, since the upscaler sees everything).
    with stats.stage("to_working", dev):
        regions, device_words = _working_rois(images, faces_per_frame, ct, up, dev, stats, staged, bits_each)

    # 2. Align: crops of every face, from its frame's working ROI.
    with stats.stage("align", dev):
        crops, crop_from_roi = _align(regions, batch, size, dev)
    model_in = crops.clamp(0.0, 1.0)
    n = len(batch.faces)

    # 3. Restore all faces of the batch together, then the temporal stage along each track.
    if n:
        fidelity = [s.fidelity for s in per_face_settings]
        with stats.stage("model", dev):
            restored = run_model(engine.restorer(), model_in, fidelity, engine.compute_dtype, engine.micro_batch)
        # passthrough previews alignment, mattes and tracking: nothing may change the face, not even time.
        if stabilise is not None and not getattr(engine.restorer(), "identity", False):
            with stats.stage("stabilise", dev):
                restored = stabilise(batch, numbers, model_in, restored)
        with stats.stage("matte", dev):
            amounts = to_device([s.color_match for s in per_face_settings], dev).view(-1, 1, 1, 1)
            restored = restored + amounts * (colour_match(restored, model_in, 1.0) - restored)
            mattes = face_mattes(batch, per_face_settings, size, dev)
            strength = to_device([s.strength for s in per_face_settings], dev).view(-1, 1, 1, 1)
        stats.faces_restored += n
    else:
        restored = model_in
        mattes = torch.zeros((0, 1, size, size), device=dev)
        strength = torch.zeros((0, 1, 1, 1), device=dev)

    # 4. Paste each face at output resolution: without upscaling into its frame's region, every face's delta
    #    against its own model input (the whole batch at once); else into its upscaled frame.
    pending: list[PendingFrame] = []
    if up == 1:
        with stats.stage("paste", dev):
            alphas = _paste(regions, (restored - model_in) * strength, mattes, crop_from_roi, batch, dev)
    for b, (img, sel) in enumerate(zip(images, batch.frame_slices(len(images)))):
        if up == 1:
            pasted, alpha = regions.chw(b), regions.pixels(alphas, b)
        else:
            from .upscale.tile import upscale_tiled

            count = sel.stop - sel.start
            with stats.stage("upscale", dev):
                # HDR values outside [0, 1] are carried through the upscale (see upscale_tiled).
                base_frame = upscale_tiled(engine.upscaler(), regions.chw(b)[None], up)[0]
            m = crop_from_roi[sel].copy()
            m[:, :, :2] /= up  # crop_from_up = crop_from_frame o frame_from_up
            base_crops = (warp_affine(base_frame[None], m, (size, size), src_index=np.zeros(count, np.int64)).clamp(0, 1)
                          if count else crops[sel])
            with stats.stage("paste", dev):
                if base_frame.numel() and count:
                    pasted, alpha = paste_faces(base_frame[None], (restored[sel] - base_crops) * strength[sel],
                                                mattes[sel], invert_affine(m), np.zeros(count, np.int64), inplace=True)
                    pasted, alpha = pasted[0], alpha[0, 0]
                else:
                    pasted, alpha = base_frame, torch.zeros(base_frame.shape[-2:], device=dev)
        if isinstance(img, PackedFrame):
            pending.append(_merge_packed(img, device_words[b], pasted, alpha, regions.origins[b], stats, keep_mattes))
            continue
        with stats.stage("download", dev):
            # Work frames are uploaded as (h, w, 3) and used through a (3, h, w) view (channels-last), so
            # this is the layout the host wants: without upscaling the copy goes straight out, with no
            # reordering on the GPU.
            (host_pasted, host_alpha), event = _download(pasted.permute(1, 2, 0), alpha)
            pending.append(PendingFrame(img, host_pasted, host_alpha, event, regions.origins[b], ct, up, inplace,
                                        bits_each[b]))
    return pending


def _merge_packed(frame: PackedFrame, words: tuple[torch.Tensor, PackedRegion] | None, pasted: torch.Tensor,
                  alpha: torch.Tensor, origin: tuple[int, int], stats: BatchStats, matte: bool) -> PendingFrame:
    """The restored region of a packed frame, rounded to 10-bit samples and merged into its rows' words on the
    device where the matte ``alpha`` touches; those rows then go back into the frame's own words on the host,
    with the matte if ``matte`` (else an empty one)."""
    empty = torch.zeros((0, 0))
    if words is None:
        return PendingFrame(None, empty, empty, None, origin, _IDENTITY, 1, True, packed=frame)
    raw, region = words
    dev = raw.device
    with stats.stage("paste", dev):
        merge_unit(raw, pasted.permute(1, 2, 0), alpha, region)
    with stats.stage("download", dev):
        y0 = origin[1]
        rows = torch.from_numpy(frame.words[y0 : y0 + raw.shape[0]].view(np.int32))
        if matte:
            (host_alpha, _), event = _download(alpha, raw, into=[None, rows])
        else:
            host_alpha = empty
            _, event = _download(raw, into=[rows])
    return PendingFrame(None, empty, host_alpha, event, origin, _IDENTITY, 1, True, packed=frame, has_matte=matte)


_IDENTITY = ColourTransform("raw")  # packed frames are finished on the device


@dataclass(frozen=True)
class StagedFrame:
    """What the GPU needs of one frame, prepared on the CPU: the working-space RGB (h, w, 3) of the union
    of its face regions (the whole frame when upscaling) in host memory (pinned for CUDA), its (x0, y0)
    origin in the frame, and how many non-finite pixels were zeroed in it. ``rgb`` is None when the frame
    has nothing to restore. A packed frame (``PackedFrame``) is staged as the words of its region's rows
    (``words``, a view of the frame's own, which receive the result) and the region's columns (``region``);
    ``rgb`` is then None."""

    rgb: torch.Tensor | None
    origin: tuple[int, int]
    nonfinite: int = 0
    words: np.ndarray | None = None
    region: PackedRegion | None = None


def stage_frame(img: np.ndarray | PackedFrame, faces: Sequence[Face], ct: ColourTransform, up: int,
                device: torch.device, size: int = TEMPLATE_SIZE, bits: int | None = None,
                region: tuple[int, int, int, int] | None = None) -> StagedFrame:
    """The CPU half of the working-space conversion, for one frame and its faces. Thread-safe: streaming
    callers run it on their decode threads, so the thread that feeds the GPU only uploads. ``img`` is
    float32 or integer codes of stored depth ``bits`` (only the region is converted), or a packed frame
    (its region's words are picked out; the device unpacks them). ``region``: the faces' region if the caller
    has it already (``face_regions``)."""
    if isinstance(img, PackedFrame):
        if up > 1 or not ct.is_identity:
            raise InputError("packed 10-bit frames are restored without upscaling, in sRGB or raw only")
        h, w = img.layout.height, img.layout.width
    else:
        h, w = img.shape[:2]
    if up > 1:
        x0, y0, x1, y1 = 0, 0, w, h
    elif faces:
        x0, y0, x1, y1 = region if region is not None else face_regions({0: faces}, size)[0]
        x0, y0, x1, y1 = min(x0, w), min(y0, h), min(x1, w), min(y1, h)
    else:
        x0 = y0 = x1 = y1 = 0
    if x1 <= x0 or y1 <= y0:
        return StagedFrame(None, (x0, y0))
    if isinstance(img, PackedFrame):
        return StagedFrame(None, (x0, y0), words=img.words[y0:y1], region=PackedRegion(x0, x1, img.layout))
    staged = _host_buffer((y1 - y0, x1 - x0, 3), device)
    rgb = staged.numpy()
    nonfinite = 0
    if img.dtype != np.float32:  # integer codes: finite by construction
        unit_from_codes(img[y0:y1, x0:x1, :3], bits, out=rgb)
    else:
        np.copyto(rgb, img[y0:y1, x0:x1, :3])
        bad = ~np.isfinite(rgb)
        if bad.any():
            nonfinite = int(bad.any(axis=-1).sum())
            np.nan_to_num(rgb, copy=False, nan=0.0, posinf=65504.0, neginf=-65504.0)
    ct.to_working(rgb, out=rgb)
    return StagedFrame(staged, (x0, y0), nonfinite)


@dataclass(frozen=True)
class Regions:
    """A batch's working-space regions on the device, one after another in ``flat`` (float32): frame b's is
    an (h, w, 3) array from pixel ``starts[b]`` on, (h, w) = ``shapes[b]``, at ``origins[b]`` in its frame.
    One buffer, so the CUDA warps (``facefix.warp_triton``) align and paste a whole batch in one launch."""

    flat: torch.Tensor
    starts: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    origins: tuple[tuple[int, int], ...]

    def hwc(self, b: int) -> torch.Tensor:
        """Frame b's region as an (h, w, 3) view of ``flat``."""
        start, (h, w) = self.starts[b], self.shapes[b]
        return self.flat[3 * start : 3 * (start + h * w)].view(h, w, 3)

    def chw(self, b: int) -> torch.Tensor:
        """Frame b's region as a (3, h, w) channels-last view (how the torch warps take it)."""
        return self.hwc(b).permute(2, 0, 1)

    def pixels(self, values: torch.Tensor, b: int) -> torch.Tensor:
        """Frame b's (h, w) view of ``values``, one value per region pixel of the batch (a matte)."""
        start, (h, w) = self.starts[b], self.shapes[b]
        return values[start : start + h * w].view(h, w)

    @property
    def total(self) -> int:
        return self.starts[-1] + self.shapes[-1][0] * self.shapes[-1][1] if self.starts else 0


def _working_rois(images: Sequence[np.ndarray | PackedFrame], faces_per_frame: Sequence[Sequence[Face]],
                  ct: ColourTransform, up: int, dev: torch.device, stats: BatchStats,
                  staged: Sequence[StagedFrame] | None, bits: Sequence[int | None]
                  ) -> tuple[Regions, list[tuple[torch.Tensor, PackedRegion] | None]]:
    """The working-space RGB of each frame's faces' region on ``dev`` (uploaded without waiting), in one
    ``Regions`` buffer; frames not ``staged`` by the caller are staged here. Packed frames: their rows' words
    are uploaded and unpacked here; they are returned too (with the region), for the result to be merged into."""
    stages = [staged[b] if staged is not None else stage_frame(img, faces_per_frame[b], ct, up, dev, bits=bits[b])
              for b, img in enumerate(images)]
    shapes: list[tuple[int, int]] = []
    for st in stages:
        stats.nonfinite_pixels += st.nonfinite
        if st.words is not None and st.region is not None:
            shapes.append((st.words.shape[0], st.region.x1 - st.region.x0))
        elif st.rgb is not None:
            shapes.append((st.rgb.shape[0], st.rgb.shape[1]))
        else:
            shapes.append((0, 0))
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])]).tolist()
    regions = Regions(_device_buffer(3 * starts[-1], dev), tuple(starts[:-1]), tuple(shapes),
                      tuple(st.origin for st in stages))
    words: list[tuple[torch.Tensor, PackedRegion] | None] = []
    for b, st in enumerate(stages):
        words.append(None)
        if st.words is not None and st.region is not None:
            words[-1] = (_upload(torch.from_numpy(st.words.view(np.int32)), dev), st.region)
        elif st.rgb is not None:
            _upload(st.rgb, dev, into=regions.hwc(b))
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).wait_stream(_copy_stream(dev, "up"))
    for b, packed in enumerate(words):
        if packed is not None:
            unpack_unit(*packed, out=regions.hwc(b))
    return regions, words


def _align(regions: Regions, batch: FaceBatch, size: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Aligned crops (N, 3, S, S) of every face, and each face's ``crop_from_roi`` (N, 2, 3)."""
    crop_from_roi = batch.crop_from_frame.copy()
    # crop_from_roi = crop_from_frame o frame_from_roi, with frame = roi + (ox, oy)
    offsets = np.array([regions.origins[int(b)] for b in batch.frame_index], np.float64).reshape(-1, 2)
    crop_from_roi[:, :, 2] += (crop_from_roi[:, :, :2] * offsets[:, None, :]).sum(-1)
    n = len(batch.faces)
    crops = torch.empty((n, 3, size, size), device=dev)
    # On CUDA one kernel aligns every face that needs no antialiasing; the torch warps do the rest, a frame
    # at a time (each frame's faces from that frame alone).
    by_kernel = (antialias_levels(crop_from_roi) == 0) if kernels_for(regions.flat) else np.zeros(n, bool)
    if by_kernel.any():
        from .warp_triton import align_crops

        idx = np.flatnonzero(by_kernel)
        frames = batch.frame_index[idx]
        table = np.stack([3 * np.array(regions.starts, np.int64)[frames]] +
                         [np.array(regions.shapes, np.int64)[frames, k] for k in (0, 1)], axis=1)
        got = align_crops(regions.flat, table, invert_affine(crop_from_roi[idx]), size)
        if by_kernel.all():
            return got, crop_from_roi
        crops[to_device(idx, dev)] = got
    for b, sel in enumerate(batch.frame_slices(len(regions.starts))):
        rest = np.flatnonzero(~by_kernel[sel]) + sel.start
        if len(rest):
            warped = warp_affine(regions.chw(b)[None], crop_from_roi[rest], (size, size),
                                 src_index=np.zeros(len(rest), np.int64))
            if len(rest) == n:
                return warped, crop_from_roi
            crops[to_device(rest, dev)] = warped
    return crops, crop_from_roi


def _paste(regions: Regions, delta: torch.Tensor, mattes: torch.Tensor, crop_from_roi: np.ndarray,
           batch: FaceBatch, dev: torch.device) -> torch.Tensor:
    """Every face's ``delta`` added into its frame's region through its matte, in place (see ``paste_faces``);
    returns the regions' composited mattes, one value per region pixel (``Regions.pixels``). On CUDA one
    kernel pastes the whole batch; elsewhere the torch warps paste a frame at a time."""
    alpha = torch.zeros(regions.total, device=dev)
    slices = batch.frame_slices(len(regions.starts))
    if kernels_for(regions.flat):
        from .warp_triton import paste_regions

        table = np.array([(start, h, w, sel.start, sel.stop)
                          for start, (h, w), sel in zip(regions.starts, regions.shapes, slices)], np.int64)
        paste_regions(regions.flat, alpha, delta, mattes, table.reshape(-1, 5), crop_from_roi)
        return alpha
    for b, sel in enumerate(slices):
        frame = regions.chw(b)
        if frame.numel() and sel.stop > sel.start:
            _, frame_alpha = paste_faces(frame[None], delta[sel], mattes[sel], invert_affine(crop_from_roi[sel]),
                                         np.zeros(sel.stop - sel.start, np.int64), inplace=True)
            regions.pixels(alpha, b).copy_(frame_alpha[0, 0])
    return alpha


def _runs(flags: object) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], np.asarray(flags, bool), [False]]).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def touched_boxes(touched: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (r0, r1, c0, c1) covering every True pixel of a 2-D mask: each band of touched rows split into
    its runs of touched columns, each then trimmed to its own rows. Faces apart from each other get a box
    each instead of one box around all of them (4 faces spread over a frame: a fraction of the pixels)."""
    boxes = []
    for r0, r1 in _runs(touched.any(axis=1)):
        band = touched[r0:r1]
        for c0, c1 in _runs(band.any(axis=0)):
            rows = np.flatnonzero(band[:, c0:c1].any(axis=1))
            boxes.append((r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0, c1))
    return boxes


def _finish_frame(img: np.ndarray, pasted: np.ndarray, alpha: np.ndarray, origin: tuple[int, int],
                  ct: ColourTransform, up: int, inplace: bool = False, bits: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Back to the input colourspace; untouched pixels are copied from the input bit for bit.

    pasted: (h, w, 3) working-space RGB of the region at ``origin`` (the whole frame when upscaling), alpha
    its (h, w) matte. Only the boxes around the matte's pixels (``touched_boxes``) are converted (and, for
    integer ``img``, rounded to its codes); ``inplace`` writes into ``img``.
    """
    h, w, c = img.shape
    if up == 1:
        out = img if inplace and img.flags.writeable else img.copy()
        matte = np.zeros((h, w), np.float32)
        touched = alpha > 0
        if pasted.size:
            x0, y0 = origin
            for r0, r1, c0, c1 in touched_boxes(touched):
                back = ct.from_working(pasted[r0:r1, c0:c1])
                if img.dtype != np.float32:
                    back = codes_from_unit(back, img.dtype.name, bits)
                region = out[y0 + r0 : y0 + r1, x0 + c0 : x0 + c1, :3]
                # The mask at full shape: numpy's copy through a broadcast mask is ~2x slower than the repeat.
                np.copyto(region, back, where=np.repeat(touched[r0:r1, c0:c1, None], 3, axis=2))
            rh, rw = alpha.shape
            matte[y0 : y0 + rh, x0 : x0 + rw] = alpha
        return out, matte
    rgb = ct.from_working(pasted)
    if c > 3:
        rest = img[..., 3:] if img.dtype == np.float32 else unit_from_codes(img[..., 3:], bits)
        channels = torch.from_numpy(np.ascontiguousarray(rest.transpose(2, 0, 1)))[None]
        extra = F.interpolate(channels, scale_factor=up, mode="bicubic", align_corners=False)[0].numpy().transpose(1, 2, 0)
        rgb = np.concatenate([rgb, extra], axis=-1)
    return np.ascontiguousarray(rgb, dtype=np.float32), np.array(alpha, np.float32)


def restore_frame(image: np.ndarray, faces: Sequence[Face], settings: Settings, engine: Engine | None = None,
                  *, frame: int = 0, colorspace: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Restore ``faces`` in one frame: returns (image, alpha matte).

    image: float32 (H, W, C>=3) in ``colorspace`` (default: settings.colorspace; 'auto' = sRGB here, since a
    bare array does not say whether it came from a float file; hosts pass the concrete space).
    Faces smaller than settings.min_face are left alone. Pixels outside the matte are bit-identical.
    """
    cs = colorspace or settings.colorspace
    ct = colour_transform(resolve_colorspace(cs, is_float=False))
    keep = [f for f in faces if f.size >= settings.min_face]
    (out,) = restore_batch([np.asarray(image, np.float32)], [keep], settings, engine, frame_numbers=[frame], colorspace=ct)
    return out
