"""How a frame's face region travels to the device as working RGB, and how the result comes back.

The pipeline restores faces inside each frame's face *region* (the box its aligned crops read and paste).
A ``RegionCodec`` is the one thing that knows how a frame is stored:

- ``stage``   (CPU, an I/O thread): pick out the region and make it ready to upload;
- ``upload``  (the GPU feeder): queue its copy to the device into the batch's region buffer;
- ``decode``  (on the device, after the uploads): turn it into working-space RGB in that buffer;
- ``merge``   (on the device): take the composited region and its matte back into the frame's own storage,
  returning a ``PendingFrame`` that finishes on any thread once the download has landed.

``PixelCodec`` takes float32 pixels or a file's integer codes (8/16-bit, 10-bit DPX as codes): the region is
converted on the CPU, and only pixels under the matte are converted back (integer files rounded to their
own codes), so every other pixel is the input's own value. ``WordCodec`` takes a plain 10-bit DPX kept as
the file's words (``PackedFrame``): only the region's rows travel, unpacked and merged back on the device,
and every bit the matte does not touch goes back unchanged. ``frame_reader`` decides how a run reads a
shot's frames (as words only where that pays: GPU, DPX in and out, no colour conversion, no upscale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourTransform
from ..errors import InputError
from ..gpu import PendingDownload, PendingFrame, download, host_buffer, host_words, upload
from . import Frame, FrameFormat, Source
from .dpx import PackedFrame
from .frames import codes_from_unit, unit_from_codes
from .packed import PackedRegion, merge_unit, unpack_unit

__all__ = ["mask_plane", "RegionCodec", "PixelCodec", "WordCodec", "StagedFrame", "PendingFrame", "codec_for", "frame_reader",
           "FrameReader", "reads_words", "restore_input", "touched_boxes", "finish_frame", "Box"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1

# I/O threads of a run whose frames stay their files' words (at most one per core but one). A frame then costs
# a file read and a write, mostly copies in the kernel, but each thread's interpreter work competes with the
# thread that feeds the GPU for the interpreter lock. 1080p 10-bit DPX, H100 host with 16 cores, two
# processes, medians of 4 passes: 1 face a frame, 3 threads 372 / 357 fps, 4: 450 / 406, 5: 453 / 460 (the
# writes had kept the GPU waiting once the feeding thread got lighter); with a heavier feeding thread (4 faces,
# earlier code) 15 threads had given 98.5 fps, 6: 100.8, 3: 108.8.
WORD_IO_THREADS = 5


@dataclass(frozen=True)
class StagedFrame:
    """What the GPU needs of one frame, prepared on the CPU: the working-space RGB (h, w, 3) of its region in
    host memory (pinned for CUDA), its (x0, y0) origin in the frame, and how many non-finite pixels were
    zeroed in it; ``rgb`` is None when the frame has nothing to restore. A frame kept as words is staged as
    the words of its region's rows (``words``, a view of the frame's own, which receive the result) and the
    region's columns (``region``). ``mask``: the host's mask over the region (``with_mask``)."""

    rgb: torch.Tensor | None
    origin: tuple[int, int]
    nonfinite: int = 0
    words: np.ndarray | None = None
    region: PackedRegion | None = None
    mask: torch.Tensor | None = None  # the host mask over the region (h, w), float32 in [0, 1], if one was given

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the region (0, 0 when there is none)."""
        if self.words is not None and self.region is not None:
            return self.words.shape[0], self.region.x1 - self.region.x0
        if self.rgb is not None:
            return self.rgb.shape[0], self.rgb.shape[1]
        return 0, 0

    def with_mask(self, mask: np.ndarray | None, device: torch.device) -> StagedFrame:
        """This frame with the host's mask (H, W) over its region: where the mask is 0 the fix does not apply,
        where it is 1 in full (values are clipped to [0, 1], NaN counts as 0)."""
        if mask is None:
            return self
        h, w = self.shape
        x0, y0 = self.origin
        staged = host_buffer((h, w), device)
        part = staged.numpy()
        np.copyto(part, mask[y0 : y0 + h, x0 : x0 + w])
        np.nan_to_num(part, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(part, 0.0, 1.0, out=part)
        return replace(self, mask=staged)


class RegionCodec(Protocol):
    """See the module notes: a frame's region to working RGB on the device, and the result back."""

    def size(self, frame: Any) -> tuple[int, int]: ...

    def stage(self, frame: Any, box: Box, ct: ColourTransform, device: torch.device, bits: int | None
              ) -> StagedFrame: ...

    def upload(self, staged: StagedFrame, into: torch.Tensor, dev: torch.device) -> object: ...

    def decode(self, uploaded: object, into: torch.Tensor) -> None: ...

    def merge(self, frame: Any, uploaded: object, pasted: torch.Tensor, alpha: torch.Tensor,
              origin: tuple[int, int], ct: ColourTransform, up: int, bits: int | None, inplace: bool,
              keep_matte: bool, mask: torch.Tensor | None = None) -> PendingFrame:
        """``mask``: the host's mask over the region (host memory, ``StagedFrame.mask``): the result is blended
        with the plate by it, in the output's own space (``alpha`` already carries it)."""
        ...


class _PendingPixels(PendingDownload):
    def __init__(self, image: np.ndarray, pasted: torch.Tensor, alpha: torch.Tensor,
                 event: torch.cuda.Event | None, origin: tuple[int, int], ct: ColourTransform, up: int,
                 inplace: bool, bits: int | None, mask: torch.Tensor | None) -> None:
        self.image, self.pasted, self.alpha, self.event = image, pasted, alpha, event
        self.origin, self.ct, self.up, self.inplace, self.bits, self.mask = origin, ct, up, inplace, bits, mask
        self._done: tuple[np.ndarray, np.ndarray] | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._done is None:
            self.wait()
            self._done = finish_frame(self.image, self.pasted.numpy(), self.alpha.numpy(), self.origin, self.ct,
                                      self.up, self.inplace, self.bits,
                                      self.mask.numpy() if self.mask is not None else None)
        return self._done

    def output(self, number: int, fmt: FrameFormat) -> Frame:
        return Frame(number=number, pixels=self.result()[0], format=fmt)

    def matte(self) -> np.ndarray:
        return self.result()[1]


class _PendingWords(PendingDownload):
    def __init__(self, frame: PackedFrame, alpha: torch.Tensor | None, event: torch.cuda.Event | None,
                 origin: tuple[int, int]) -> None:
        self.frame, self.alpha, self.event, self.origin = frame, alpha, event, origin

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.frame.unpacked().pixels, self.matte()

    def output(self, number: int, fmt: FrameFormat) -> PackedFrame:
        self.wait()
        return self.frame

    def matte(self) -> np.ndarray:
        self.wait()
        if self.alpha is None:
            raise InputError("this frame was queued without its matte (keep_mattes=False)")
        frame = np.zeros((self.frame.layout.height, self.frame.layout.width), np.float32)
        (x0, y0), (h, w) = self.origin, self.alpha.shape
        frame[y0 : y0 + h, x0 : x0 + w] = self.alpha.numpy()
        return frame


class PixelCodec:
    """Frames as (H, W, C) float32 pixels or a file's integer codes of stored depth ``bits``."""

    def size(self, frame: np.ndarray) -> tuple[int, int]:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] < 3:
            raise InputError(f"expected (H, W, C>=3) float32 images, got {getattr(frame, 'shape', type(frame))}")
        return frame.shape[0], frame.shape[1]

    def stage(self, frame: np.ndarray, box: Box, ct: ColourTransform, device: torch.device, bits: int | None
              ) -> StagedFrame:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return StagedFrame(None, (x0, y0))
        staged = host_buffer((y1 - y0, x1 - x0, 3), device)
        rgb = staged.numpy()
        nonfinite = 0
        if frame.dtype != np.float32:  # integer codes: finite by construction
            unit_from_codes(frame[y0:y1, x0:x1, :3], bits, out=rgb)
        else:
            np.copyto(rgb, frame[y0:y1, x0:x1, :3])
            bad = ~np.isfinite(rgb)
            if bad.any():
                nonfinite = int(bad.any(axis=-1).sum())
                np.nan_to_num(rgb, copy=False, nan=0.0, posinf=65504.0, neginf=-65504.0)
        ct.to_working(rgb, out=rgb)
        return StagedFrame(staged, (x0, y0), nonfinite)

    def upload(self, staged: StagedFrame, into: torch.Tensor, dev: torch.device) -> object:
        if staged.rgb is not None:
            upload(staged.rgb, dev, into=into)
        return None

    def decode(self, uploaded: object, into: torch.Tensor) -> None:
        return None

    def merge(self, frame: np.ndarray, uploaded: object, pasted: torch.Tensor, alpha: torch.Tensor,
              origin: tuple[int, int], ct: ColourTransform, up: int, bits: int | None, inplace: bool,
              keep_matte: bool, mask: torch.Tensor | None = None) -> PendingFrame:
        # Regions are uploaded as (h, w, 3) and used through a (3, h, w) view (channels-last), so this is the
        # layout the host wants: without upscaling the copy goes straight out, with no reordering on the GPU.
        (host_pasted, host_alpha), event = download(pasted.permute(1, 2, 0), alpha)
        return _PendingPixels(frame, host_pasted, host_alpha, event, origin, ct, up, inplace, bits, mask)


class WordCodec:
    """Frames of a plain 10-bit DPX kept as the file's words (``PackedFrame``): no upscale, no colour
    conversion (sRGB or raw), the region unpacked and merged back on the device."""

    def size(self, frame: PackedFrame) -> tuple[int, int]:
        return frame.layout.height, frame.layout.width

    def stage(self, frame: PackedFrame, box: Box, ct: ColourTransform, device: torch.device, bits: int | None
              ) -> StagedFrame:
        if not ct.is_identity:
            raise InputError("frames kept as 10-bit DPX words are restored in sRGB or raw only")
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return StagedFrame(None, (x0, y0))
        return StagedFrame(None, (x0, y0), words=frame.words[y0:y1], region=PackedRegion(x0, x1, frame.layout))

    def upload(self, staged: StagedFrame, into: torch.Tensor, dev: torch.device) -> object:
        if staged.words is None or staged.region is None:
            return None
        return upload(torch.from_numpy(staged.words.view(np.int32)), dev), staged.region

    def decode(self, uploaded: object, into: torch.Tensor) -> None:
        if uploaded is not None:
            raw, region = _words_of(uploaded)
            unpack_unit(raw, region, out=into)

    def merge(self, frame: PackedFrame, uploaded: object, pasted: torch.Tensor, alpha: torch.Tensor,
              origin: tuple[int, int], ct: ColourTransform, up: int, bits: int | None, inplace: bool,
              keep_matte: bool, mask: torch.Tensor | None = None) -> PendingFrame:
        if up > 1:
            raise InputError("frames kept as 10-bit DPX words are restored without upscaling")
        if uploaded is None:
            return _PendingWords(frame, torch.zeros((0, 0)) if keep_matte else None, None, origin)
        raw, region = _words_of(uploaded)
        rgb = pasted.permute(1, 2, 0)
        if mask is not None:  # words hold the output's own values: blend with the plate's, unpacked again
            m = mask.to(raw.device, non_blocking=True)[..., None]
            rgb = torch.where(m >= 1.0, rgb, torch.lerp(unpack_unit(raw, region), rgb, m))
        merge_unit(raw, rgb, alpha, region)
        rows = torch.from_numpy(frame.words[origin[1] : origin[1] + raw.shape[0]].view(np.int32))
        if keep_matte:
            (host_alpha, _), event = download(alpha, raw, into=[None, rows])
            return _PendingWords(frame, host_alpha, event, origin)
        _, event = download(raw, into=[rows])
        return _PendingWords(frame, None, event, origin)


def _words_of(uploaded: object) -> tuple[torch.Tensor, PackedRegion]:
    assert isinstance(uploaded, tuple)
    return uploaded[0], uploaded[1]


_PIXELS = PixelCodec()
_WORDS = WordCodec()


def codec_for(frame: np.ndarray | PackedFrame) -> RegionCodec:
    """The codec of a frame as ``queue_batch`` takes it."""
    return _WORDS if isinstance(frame, PackedFrame) else _PIXELS


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


def finish_frame(img: np.ndarray, pasted: np.ndarray, alpha: np.ndarray, origin: tuple[int, int],
                 ct: ColourTransform, up: int, inplace: bool = False, bits: int | None = None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back to the input colourspace; untouched pixels are copied from the input bit for bit.

    pasted: (h, w, 3) working-space RGB of the region at ``origin`` (the whole frame when upscaling), alpha
    its (h, w) matte. Only the boxes around the matte's pixels (``touched_boxes``) are converted (and, for
    integer ``img``, rounded to its codes); ``inplace`` writes into ``img``. A float result never goes below
    the lower of the input's value and 0 (``composite.no_new_negatives``). ``mask`` (h, w): the host's mask
    over the region; the result is blended with the plate by it, in the input's colourspace (no upscale).
    """
    from ..composite import no_new_negatives

    h, w, c = img.shape
    if up == 1:
        out = img if inplace and img.flags.writeable else img.copy()
        matte = np.zeros((h, w), np.float32)
        touched = alpha > 0
        if pasted.size:
            x0, y0 = origin
            for r0, r1, c0, c1 in touched_boxes(touched):
                back = ct.from_working(pasted[r0:r1, c0:c1])
                region = out[y0 + r0 : y0 + r1, x0 + c0 : x0 + c1, :3]
                if img.dtype != np.float32:
                    if mask is not None:
                        _blend_by_mask(back, unit_from_codes(region, bits), mask[r0:r1, c0:c1])
                    back = codes_from_unit(back, img.dtype.name, bits)
                else:
                    no_new_negatives(back, region)
                    if mask is not None:
                        _blend_by_mask(back, region, mask[r0:r1, c0:c1])
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


def _blend_by_mask(result: np.ndarray, plate: np.ndarray, mask: np.ndarray) -> None:
    """In place: result = plate + (result - plate) * mask where the mask is below 1 (exactly the result at 1)."""
    m = mask[..., None]
    np.copyto(result, plate + (result - plate) * m, where=m < 1.0)


def restore_input(frame: Frame | PackedFrame) -> np.ndarray | PackedFrame:
    """What ``queue_batch`` takes for a frame a ``FrameReader`` gave: a frame's pixels, or the frame kept as words."""
    return frame if isinstance(frame, PackedFrame) else frame.pixels


@dataclass(frozen=True)
class FrameReader:
    """How a run reads a shot's frames for restoring (``frame_reader``); ``io_threads`` is the I/O thread
    count that suits those frames (None: one per core but one)."""

    source: Source
    as_words: bool
    words_into: Callable[[tuple[int, int]], np.ndarray] | None = None

    @property
    def io_threads(self) -> int | None:
        from ..streaming import io_thread_count

        return io_thread_count(WORD_IO_THREADS) if self.as_words else None

    def read(self, number: int) -> Frame | PackedFrame:
        """Frame ``number``: as the file's words where ``as_words`` and the file is the plain layout, else with
        integer files as their codes."""
        if self.as_words:
            from .sequence import read_packed_frame

            frame = read_packed_frame(self.source.path_for(number), number, self.words_into)
            if frame is not None:
                return frame
        return self.source.read(number, codes=True)


def frame_reader(source: Source, dest: str, upscale: int, ct: ColourTransform, device: torch.device) -> FrameReader:
    """A run's reader of ``source``: frames kept as the file's words when that pays (a 10-bit DPX sequence
    written to DPX, restored on a GPU in its own colourspace, sRGB or raw, without upscaling); frames that
    turn out not to be the plain layout are read as usual. On the CPU the word steps cost more than they save
    (a 720p, 4-face shot took 1.07x the time): there frames are read as integer codes."""
    words = reads_words(source, ct, device) and Path(dest).suffix.lower() == ".dpx" and upscale == 1
    return FrameReader(source, words, host_words(device) if words else None)


def reads_words(source: Source, ct: ColourTransform, device: torch.device) -> bool:
    """Whether frames of ``source`` can travel to ``device`` as their files' words: a 10-bit DPX sequence, in its
    own colourspace (sRGB or raw), for a GPU."""
    fmt = getattr(source, "format", None)
    return (device.type == "cuda" and getattr(source, "kind", "") == "sequence" and fmt is not None
            and fmt.file_format == "dpx" and (fmt.pixel_type, fmt.bits_per_sample) == ("uint16", 10)
            and ct.is_identity)


def mask_plane(frame: Frame, size: tuple[int, int], number: int) -> np.ndarray:
    """A host mask frame as one (H, W) float32 plane: its alpha channel if it has one, else its first channel.
    ``size`` (H, W) is the plate's: a mask of another size is a one-line error."""
    names = [c.upper() for c in frame.format.channel_names]
    channel = names.index("A") if "A" in names else 0
    px = frame.pixels
    plane = px[..., channel].astype(np.float32) if px.dtype == np.float32 else unit_from_codes(px[..., channel], None)
    if plane.shape != tuple(size):
        raise InputError(f"mask frame {number} is {plane.shape[1]}x{plane.shape[0]}, the plate {size[1]}x{size[0]}")
    return plane
