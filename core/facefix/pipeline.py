"""The frame-in/frame-out core: a batch of frames and their faces through every stage, in one direction.

    frames -> stage (region -> working RGB, on I/O threads)  -> upload        io.regions codec
           -> align (faces to the 512 template)                               align
           -> repair (the input crops along tracks, optional)                 repair
           -> restore (model, fixed micro-batches)                            engine.run_model
           -> stabilise (along tracks, optional)                              temporal
           -> colour match, mattes, strength                                  composite
           -> paste into each frame's region (or its upscaled frame)          composite / upscale
           -> merge back into the frame's own storage, download               io.regions codec

``queue_batch`` queues the GPU work and returns a pending frame per input frame; ``restore_batch`` waits for
them. Every stage is a function of its inputs; ``Engine`` holds only configuration and loaded weights. How a
frame is stored is the business of its region codec alone (``io.regions``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .align import align_faces
from .colour import ColourTransform, colour_transform, resolve_colorspace
from .composite import (
    face_deltas,
    face_mattes,
    match_colours,
    no_new_negatives,
    paste_faces,
    paste_regions,
    per_face,
)
from .engine import Engine, run_model
from .errors import InputError
from .faces import Face, FaceBatch, face_regions
from .geometry import TEMPLATE_SIZE, invert_affine, warp_affine
from .gpu import PendingFrame, Regions, wait_uploads
from .io.regions import Box, StagedFrame, codec_for
from .params import Settings

__all__ = ["BatchStats", "queue_batch", "restore_batch", "stage_frame", "Stabilise", "Repair"]

# stabilise(batch, frame_numbers, input_crops, restored_crops) -> restored_crops: the temporal stage.
Stabilise = Callable[[FaceBatch, Sequence[int], torch.Tensor, torch.Tensor], torch.Tensor]
# repair(batch, frame_numbers, input_crops, settings_per_face, count) -> the first ``count`` crops repaired: the
# repair stage (``repair.ClipRepairer.repair``); faces past ``count`` belong to look-ahead frames.
Repair = Callable[[FaceBatch, Sequence[int], torch.Tensor, Sequence[Settings], int], torch.Tensor]


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


def _region_box(hw: tuple[int, int], faces: Sequence[Face], up: int, region: Box | None, size: int) -> Box:
    """The part of a frame the GPU needs: its faces' region clipped to the frame (the whole frame when
    upscaling, since the upscaler sees everything; nothing without faces)."""
    h, w = hw
    if up > 1:
        return 0, 0, w, h
    if not faces:
        return 0, 0, 0, 0
    x0, y0, x1, y1 = region if region is not None else face_regions({0: faces}, size)[0]
    return min(x0, w), min(y0, h), min(x1, w), min(y1, h)


def stage_frame(img: Any, faces: Sequence[Face], ct: ColourTransform, up: int, device: torch.device,
                size: int = TEMPLATE_SIZE, bits: int | None = None, region: Box | None = None) -> StagedFrame:
    """The CPU half of a frame's way to the GPU (its codec's ``stage``). Thread-safe: streaming callers run it
    on their decode threads, so the thread that feeds the GPU only uploads. ``region``: the faces' region if
    the caller has it already (``faces.face_regions``)."""
    codec = codec_for(img)
    return codec.stage(img, _region_box(codec.size(img), faces, up, region, size), ct, device, bits)


def restore_batch(
    images: Sequence[np.ndarray],
    faces_per_frame: Sequence[Sequence[Face]],
    settings: Settings,
    engine: Engine | None = None,
    *,
    frame_numbers: Sequence[int] | None = None,
    colorspace: ColourTransform | None = None,
    stabilise: Stabilise | None = None,
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
    images: Sequence[Any],
    faces_per_frame: Sequence[Sequence[Face]],
    settings: Settings,
    engine: Engine | None = None,
    *,
    frame_numbers: Sequence[int] | None = None,
    colorspace: ColourTransform | None = None,
    stabilise: Stabilise | None = None,
    stats: BatchStats | None = None,
    inplace: bool = False,
    staged: Sequence[StagedFrame] | None = None,
    bits: int | Sequence[int | None] | None = None,
    keep_mattes: bool = True,
    masks: Sequence[np.ndarray | None] | None = None,
    repair: Repair | None = None,
    lookahead: int = 0,
) -> list[PendingFrame]:
    """``restore_batch`` without waiting: queues the GPU work and the downloads, returns a ``PendingFrame``
    per frame. Streaming callers finish frames on their encode threads while the next batch runs, and may
    pass each frame ``staged`` already (``stage_frame`` on their decode threads, with the same faces and
    colourspace). Images are anything a region codec takes (``io.regions.codec_for``); ``keep_mattes``
    False lets a codec skip bringing back mattes nobody writes. ``masks``: per frame a host mask (H, W) in
    [0, 1] or None, limiting where the fix applies (frames ``staged`` by the caller carry theirs).
    ``repair``: the repair stage, run on the aligned input crops before the model; ``lookahead``: the last
    ``lookahead`` images are the frames after the batch, only aligned for the repair's look-ahead (no result is
    returned for them; without ``repair`` they are not even read)."""
    if len(images) != len(faces_per_frame):
        raise InputError("restore_batch: one face list per image is required")
    if not 0 <= lookahead <= len(images):
        raise InputError(f"restore_batch: {lookahead} look-ahead frames of {len(images)}")
    if repair is None and lookahead:
        images, faces_per_frame = images[:len(images) - lookahead], faces_per_frame[:len(faces_per_frame) - lookahead]
        staged = staged[:len(images)] if staged is not None else None
        lookahead = 0
    main = len(images) - lookahead
    engine = engine or Engine(settings)
    dev = engine.device
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(len(images)))
    ct = colorspace or colour_transform(resolve_colorspace(settings.colorspace, is_float=False))
    up = settings.upscale
    size = TEMPLATE_SIZE
    stats = stats if stats is not None else BatchStats()
    codecs = [codec_for(img) for img in images]
    bits_each = list(bits) if isinstance(bits, Sequence) else [bits] * len(images)

    batch = FaceBatch.build(faces_per_frame, size)
    per_face_settings = [settings.at(numbers[int(i)]) for i in batch.frame_index]

    # 1. Working-space RGB of each frame's region, in one device buffer.
    with stats.stage("to_working", dev):
        stages = [staged[b] if staged is not None else
                  stage_frame(img, faces_per_frame[b], ct, up, dev, size, bits=bits_each[b]).with_mask(
                      masks[b] if masks is not None else None, dev)
                  for b, img in enumerate(images)]
        stats.nonfinite_pixels += sum(st.nonfinite for st in stages)
        regions = Regions.allocate([st.shape for st in stages], [st.origin for st in stages], dev)
        uploads = [codec.upload(st, regions.hwc(b), dev) for b, (codec, st) in enumerate(zip(codecs, stages))]
        wait_uploads(dev)
        for b, (codec, uploaded) in enumerate(zip(codecs, uploads)):
            codec.decode(uploaded, regions.hwc(b))

    # 2. Align: crops of every face, from its frame's region.
    with stats.stage("align", dev):
        crops, crop_from_roi = align_faces(regions, batch, size)
    model_in = crops.clamp(0.0, 1.0)
    n = int(batch.frame_slices(len(images))[main - 1].stop) if main else 0  # the faces of the batch's own frames

    # 3. Repair the input crops along each track (the look-ahead frames' crops only feed it), then restore all
    #    faces of the batch together, then the temporal stage along each track. The paste adds the change
    #    against the crop as aligned, so a repair shows even through passthrough.
    repaired = model_in[:n]
    if repair is not None and len(batch.faces):
        with stats.stage("repair", dev):
            repaired = repair(batch, numbers, model_in, per_face_settings, n)
    if n < len(batch.faces):
        batch = FaceBatch(batch.faces[:n], batch.frame_index[:n], batch.crop_from_frame[:n])
        crops, crop_from_roi, model_in = crops[:n], crop_from_roi[:n], model_in[:n]
        per_face_settings = per_face_settings[:n]
    if n:
        with stats.stage("model", dev):
            restored = run_model(engine.restorer(), repaired, [s.fidelity for s in per_face_settings],
                                 engine.compute_dtype, engine.micro_batch)
        # passthrough previews alignment, mattes and tracking: nothing may change the face, not even time.
        if stabilise is not None and not getattr(engine.restorer(), "identity", False):
            with stats.stage("stabilise", dev):
                restored = stabilise(batch, numbers, repaired, restored)
        with stats.stage("matte", dev):
            restored = match_colours(restored, repaired, per_face([s.color_match for s in per_face_settings], dev))
            strength = per_face([s.strength for s in per_face_settings], dev)
            # A face at strength 0 is not composited at all: its pixels stay the plate's, bit for bit.
            mattes = face_mattes(batch, per_face_settings, size, dev) * (strength > 0)
        stats.faces_restored += n
    else:
        restored = model_in
        mattes = torch.zeros((0, 1, size, size), device=dev)
        strength = torch.zeros((0, 1, 1, 1), device=dev)

    # 4. Paste each face at output resolution: without upscaling into its frame's region, every face's delta
    #    against its own model input (the whole batch at once); else into its upscaled frame.
    host_masks = _upload_masks(stages, regions) if any(st.mask is not None for st in stages) else None
    if up == 1:
        grain = [settings.at(numbers[b]).regrain if n else 0.0 for b in range(main)]
        plate = regions.flat.clone() if any(grain) else None  # the plate's grain, measured after the paste
        with stats.stage("paste", dev):
            alphas = paste_regions(regions, face_deltas(restored, model_in, strength), mattes, crop_from_roi, batch)
        if plate is not None:
            from .composite.regrain import regrain_regions

            with stats.stage("regrain", dev):
                regrain_regions(regions, plate, alphas, grain, numbers, batch, size)
        if host_masks is not None:  # the codecs blend the colour by the mask in the output's own space
            alphas.mul_(host_masks)
    pending: list[PendingFrame] = []
    for b, (img, sel) in enumerate(zip(images[:main], batch.frame_slices(main))):
        if up == 1:
            pasted, alpha = regions.chw(b), regions.pixels(alphas, b)
        else:
            # Regrain at the output resolution: grain of the upscaled plate's spectrum, made at its pixels.
            x0, y0 = regions.origins[b]
            grain_at = (settings.at(numbers[b]).regrain, numbers[b], (x0 * up, y0 * up),
                        batch.crop_from_frame[sel]) if sel.stop > sel.start else None
            with stats.stage("upscale", dev):
                pasted, alpha = _upscaled_paste(engine, regions.chw(b), restored[sel], crops[sel], mattes[sel],
                                                strength[sel], crop_from_roi[sel], up, size,
                                                regions.pixels(host_masks, b) if host_masks is not None else None,
                                                grain_at)
        with stats.stage("download", dev):
            pending.append(codecs[b].merge(img, uploads[b], pasted, alpha, regions.origins[b], ct, up, bits_each[b],
                                           inplace, keep_mattes, stages[b].mask if up == 1 else None))
    return pending


def _upload_masks(stages: Sequence[StagedFrame], regions: Regions) -> torch.Tensor:
    """The host masks of a batch on the device, one value per region pixel (``Regions.pixels``); 1 (no limit)
    for frames without one."""
    dev = regions.flat.device
    flat = torch.ones(regions.total, device=dev)
    for b, st in enumerate(stages):
        if st.mask is not None and st.mask.numel():
            regions.pixels(flat, b).copy_(st.mask.to(dev, non_blocking=True))
    return flat


def _limit_to(weight: torch.Tensor, pasted: torch.Tensor, plate: torch.Tensor) -> None:
    """In place: the fix only where the host's mask allows it, pasted = plate + (pasted - plate) * weight
    (``weight`` broadcasts over ``pasted``). Where the mask is 1 nothing changes, not even in the last bit."""
    pasted.copy_(torch.where(weight >= 1.0, pasted, torch.lerp(plate, pasted, weight)))


def _upscaled_paste(engine: Engine, frame: torch.Tensor, restored: torch.Tensor, crops: torch.Tensor,
                    mattes: torch.Tensor, strength: torch.Tensor, crop_from_roi: np.ndarray, up: int, size: int,
                    mask: torch.Tensor | None = None,
                    grain_at: tuple[float, int, tuple[int, int], np.ndarray] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole (3, h, w) frame upscaled, its faces pasted at the output resolution against the upscaled
    frame's own crops: ((3, h*up, w*up), matte (h*up, w*up)); ``mask`` (h, w): the host's, upscaled with it;
    ``grain_at``: (regrain amount, frame number, the output region's origin, the faces' crop_from_frame)."""
    from .upscale.tile import upscale_tiled

    count = restored.shape[0]
    # HDR values outside [0, 1] are carried through the upscale (see upscale_tiled).
    base = upscale_tiled(engine.upscaler(), frame[None], up)[0]
    if not base.numel() or not count:
        return base, torch.zeros(base.shape[-2:], device=base.device)
    m = crop_from_roi.copy()
    m[:, :, :2] /= up  # crop_from_up = crop_from_frame o frame_from_up
    base_crops = warp_affine(base[None], m, (size, size), src_index=np.zeros(count, np.int64)).clamp(0, 1)
    floor = base.clamp(max=0.0)
    regrain = grain_at is not None and grain_at[0] > 0
    plate = base.clone() if mask is not None or regrain else None
    pasted, alpha = paste_faces(base[None], face_deltas(restored, base_crops, strength), mattes, invert_affine(m),
                                np.zeros(count, np.int64), inplace=True)
    if regrain and grain_at is not None and plate is not None:
        from .composite.regrain import regrain_frame, ring_px

        amount, number, origin, crop_from_frame = grain_at
        regrain_frame(pasted[0], plate, alpha[0, 0], float(amount), int(number), origin,
                      ring_px(crop_from_frame, size, up))
    no_new_negatives(pasted[0], floor)
    if mask is not None and plate is not None:
        big = F.interpolate(mask[None, None], scale_factor=up, mode="bilinear", align_corners=False)[0, 0]
        _limit_to(big[None], pasted[0], plate)  # over (3, H, W)
        alpha[0, 0].mul_(big)
    return pasted[0], alpha[0, 0]
