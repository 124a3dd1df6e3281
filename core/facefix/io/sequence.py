"""Image sequences and stills through OpenImageIO; patterns in VFX notation through fileseq.

Patterns: ``shot.####.exr`` (one digit per ``#``, as in Nuke), ``shot.%04d.exr``, ``shot.@@@@.exr``,
``shot.1001-1100#.exr`` (a single ``#`` means four digits, as in fileseq/rvls; the range becomes the
frame list), or a single still file. Frame ranges are fileseq FrameSet strings: ``1001-1100``,
``1001-1100x2``, ``1,5,9-12``.

Convention: pixels are read as stored (no colour conversion, alpha as the file keeps it: straight in
PNG/TIFF, premultiplied in EXR; ``FrameFormat.attributes['oiio:UnassociatedAlpha']`` says which),
see ``facefix.io.frames``. Every write goes to a temporary file beside the target, then is renamed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fileseq
import numpy as np
import OpenImageIO as oiio

from ..errors import InputError, OutputError, SettingsError
from .atomic import atomic_path
from .dpx import PackedFrame, PackedLayout, byte_order, header_key, read_packed_10bit, write_packed_10bit
from .frames import (
    CODE_TYPES,
    NUMPY_INT,
    Frame,
    FrameFormat,
    PixelType,
    codes_from_unit,
    native_bits,
    unit_from_codes,
)
from .lru import LruCache

__all__ = [
    "ImageSequenceSource",
    "ImageSequenceSink",
    "parse_pattern",
    "parse_frames",
    "read_frame",
    "read_format",
    "read_packed_frame",
    "write_frame",
    "has_valid_header",
    "WRITE_EXTENSIONS",
]

# Extension -> OIIO format name of the formats we write (and so test).
WRITE_EXTENSIONS: Mapping[str, str] = {
    ".exr": "openexr",
    ".dpx": "dpx",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
# OIIO format names whose ImageOutput encodes when the file is closed, with Python's interpreter lock held
# (a 1080p 10-bit DPX: ~30 ms during which no other Python thread runs). Those are written through an
# ImageBuf, whose write releases the lock: more CPU per frame (~2x), but frames encode in parallel on the
# run's I/O threads and the thread feeding the GPU keeps running. Same file, byte for byte. (The common
# 10-bit DPX is packed by facefix.io.dpx instead, faster still.)
_ENCODES_ON_CLOSE = frozenset({"dpx"})
_BASETYPE_TO_PIXEL: Mapping[Any, PixelType] = {
    oiio.UINT8: "uint8",
    oiio.INT8: "uint8",
    oiio.UINT16: "uint16",
    oiio.INT16: "uint16",
    oiio.UINT32: "uint32",
    oiio.INT32: "uint32",
    oiio.HALF: "half",
    oiio.FLOAT: "float",
    oiio.DOUBLE: "float",
}
# Attributes that describe how OIIO read this file rather than the image: never written back.
_NEVER_COPY = ("oiio:subimages", "oiio:BitsPerSample", "oiio:RowsPerChunk", "dpx:ImageDescriptor")
# Attributes of one format that still mean the same in another.
_PORTABLE = ("oiio:ColorSpace", "oiio:UnassociatedAlpha")
_COLOUR_NAMES = (("r", "red"), ("g", "green"), ("b", "blue"))
_ALPHA_NAMES = ("a", "alpha")


# --------------------------------------------------------------------------------------------- patterns


def parse_pattern(pattern: str) -> fileseq.FileSequence | None:
    """The fileseq sequence of ``pattern``, or None when it names a single file (no padding).

    A run of several ``#`` counts one digit each (``####`` = 4); a lone ``#`` counts four.
    """
    text = str(pattern)
    try:
        # Parsed once with the style its padding will most likely ask for (parsing costs milliseconds).
        guess = fileseq.PAD_STYLE_HASH1 if "##" in text else fileseq.PAD_STYLE_HASH4
        seq = fileseq.FileSequence(text, pad_style=guess)
        # Only written padding (#, @, %04d, $F4) makes a sequence: 'plate_v001.png' is one file.
        if not seq.padding() or seq.padding() not in text:
            return None
        if _pad_style(seq) is not guess:
            seq = fileseq.FileSequence(text, pad_style=_pad_style(seq))
    except fileseq.FileSeqException as err:
        raise InputError(f"cannot parse the sequence pattern {text}: {str(err).splitlines()[0]}") from err
    return seq


# One range of a FrameSet string: start-end, optionally with a step (x), fill (y) or stagger (:) modifier.
_RANGE = re.compile(r"(-?\d+)-(-?\d+)(?:([xy:])(-?\d+))?")


def _backwards_ranges(text: str) -> tuple[list[str], str]:
    """The ranges of ``text`` that run backwards (``1005-1001``), and ``text`` with each turned around.

    A stepped range keeps its frames: ``1006-1001x2`` (1006, 1004, 1002) becomes ``1002-1006x2``.
    """
    backwards: list[str] = []
    fixed: list[str] = []
    for chunk in text.split(","):
        match = _RANGE.fullmatch(chunk)
        if match is not None and int(match.group(1)) > int(match.group(2)):
            backwards.append(chunk)
            start, end, modifier = int(match.group(1)), int(match.group(2)), match.group(3)
            step = abs(int(match.group(4))) if modifier else 1
            if modifier == "x" and step > 1:
                end = start - (start - end) // step * step  # the last frame the step lands on
            suffix = f"{modifier}{step}" if modifier and (modifier != "x" or step > 1) else ""
            chunk = f"{end}-{start}{suffix}"
        fixed.append(chunk)
    return backwards, ",".join(fixed)


def frame_paths(seq: fileseq.FileSequence) -> Callable[[int], str]:
    """``seq.frame(n)`` as a plain format (fileseq's takes ~10 us a call: a 240-frame shot's paths cost a run
    milliseconds); checked against fileseq on a few numbers, which it falls back to if they differ."""
    head, tail, width = f"{seq.dirname()}{seq.basename()}", seq.extension(), int(seq.zfill())

    def fast(number: int) -> str:
        return f"{head}{int(number):0{width}d}{tail}"

    if all(fast(n) == str(seq.frame(n)) for n in (0, 7, -3, 1001, 123456)):
        return fast
    return lambda number: str(seq.frame(int(number)))


def parse_frames(frames: str, option: str = "--frames") -> list[int]:
    """Frame numbers of a FrameSet string (``1001-1100``, ``1001-1100x2``, ``1,5,9-12``), in order.

    A range that runs backwards (``1005-1001``) is refused rather than read as a reversed order.
    """
    text = str(frames).replace(" ", "")
    backwards, fixed = _backwards_ranges(text)
    if backwards:
        what = "the range runs" if [text] == backwards else f"the range {', '.join(backwards)} runs"
        if len(backwards) > 1:
            what = f"the ranges {', '.join(backwards)} run"
        raise SettingsError(f"{option} {text}: {what} backwards; write {fixed}")
    try:
        fs = fileseq.FrameSet(text)
    except (fileseq.FileSeqException, ValueError) as err:
        raise SettingsError(f"{option} {frames!r} is not a frame range (e.g. 1001-1100, 1001-1100x2, 1,5,9-12)") from err
    numbers = [int(f) for f in fs]
    if not numbers:
        raise SettingsError(f"{option} {frames!r} names no frames")
    return numbers


def _pad_style(seq: fileseq.FileSequence) -> Any:
    return fileseq.PAD_STYLE_HASH1 if seq.padding().count("#") > 1 else fileseq.PAD_STYLE_HASH4


def _first_error_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


# ------------------------------------------------------------------------------------------------ reading


def _name_is(name: str, choices: tuple[str, ...]) -> bool:
    return name.lower() in choices


def _channel_order(names: tuple[str, ...]) -> tuple[list[int], int | None, bool]:
    """Order of the file's channels: (indices R,G,B[,A],extras..., alpha position, grey).

    Without R, G and B names, the first three non-alpha channels count as colour; a file with a
    single non-alpha channel is grey (its channel is repeated into R, G, B by the reader).
    """
    alpha = next((i for i, n in enumerate(names) if _name_is(n, _ALPHA_NAMES)), None)
    rgb = []
    for choices in _COLOUR_NAMES:
        rgb.append(next((i for i, n in enumerate(names) if _name_is(n, choices)), None))
    non_alpha = [i for i in range(len(names)) if i != alpha]
    if all(i is not None for i in rgb):
        colour = [int(i) for i in rgb if i is not None]
        grey = False
    elif len(non_alpha) >= 3:
        colour = non_alpha[:3]
        grey = False
    elif non_alpha:
        colour = non_alpha[:1]
        grey = True
    else:  # alpha only: treat the matte as grey
        colour, alpha, grey = [0], None, True
    head = colour + ([alpha] if alpha is not None else [])
    extras = [i for i in range(len(names)) if i not in head]
    return head + extras, alpha, grey


def _spec_attributes(spec: oiio.ImageSpec) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for p in spec.extra_attribs:
        values[p.name] = p.value
        types[p.name] = str(p.type)
    return values, types


def _fps_from_attributes(attributes: Mapping[str, Any]) -> float | None:
    for key in ("FramesPerSecond", "dpx:FrameRate", "cineon:FrameRate"):
        value = attributes.get(key)
        if value is None:
            continue
        if isinstance(value, tuple) and len(value) == 2 and value[1]:
            fps = float(value[0]) / float(value[1])
        elif isinstance(value, int | float):
            fps = float(value)
        else:
            continue
        if math.isfinite(fps) and fps > 0:
            return fps
    return None


def _open_input(path: Path, number: int | None) -> oiio.ImageInput:
    if not path.is_file():
        if number is not None:
            raise InputError(f"frame {number} is missing: {path}")
        raise InputError(f"file not found: {path}")
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)  # keep straight alpha as stored (PNG, TIFF)
    inp = oiio.ImageInput.open(str(path), config)
    if inp is None:
        raise InputError(f"cannot read {path}: {_first_error_line(oiio.geterror())}")
    return inp


def _pixel_depth(spec: oiio.ImageSpec) -> tuple[PixelType, int]:
    """(pixel type, stored bits per sample) of an open file."""
    pixel_type = _BASETYPE_TO_PIXEL.get(spec.format.basetype, "float")
    bits = int(spec.get_int_attribute("oiio:BitsPerSample", native_bits(pixel_type)))
    bits = min(bits, native_bits(pixel_type)) if pixel_type not in ("half", "float") else native_bits(pixel_type)
    return pixel_type, bits


def _frame_format(spec: oiio.ImageSpec, file_format: str, path: Path, endian: str | None = None
                  ) -> tuple[FrameFormat, list[int]]:
    """The FrameFormat of an open file, and the order its channels are read in (R, G, B first). ``endian``: a
    DPX's byte order when the caller knows it already (else its header is read again for it)."""
    pixel_type, bits = _pixel_depth(spec)
    names = tuple(spec.channelnames) or tuple(f"C{i}" for i in range(spec.nchannels))
    order, _, grey = _channel_order(names)
    ordered = [names[i] for i in order]
    grey_channel = None
    if grey:
        grey_channel = ordered[0]
        ordered = ["R", "G", "B"] + ordered[1:]
    channel_types = None
    if spec.channelformats:
        per = [_BASETYPE_TO_PIXEL.get(t.basetype, "float") for t in spec.channelformats]
        if len(set(per)) > 1:
            channel_types = tuple(per[i] for i in order)
            if grey:
                channel_types = (channel_types[0],) * 3 + channel_types[1:]
    attributes, attribute_types = _spec_attributes(spec)
    if file_format == "dpx" and "oiio:Endian" not in attributes:
        # Written back in the byte order it came in (OpenImageIO's writer would pick the machine's).
        attributes["oiio:Endian"] = endian or byte_order(path)
        attribute_types["oiio:Endian"] = "string"
    fmt = FrameFormat(
        width=spec.width,
        height=spec.height,
        channel_names=tuple(ordered),
        pixel_type=pixel_type,
        bits_per_sample=bits,
        attributes=attributes,
        attribute_types=attribute_types,
        file_format=file_format,
        grey_channel=grey_channel,
        channel_pixel_types=channel_types,
        data_window=(spec.x, spec.y, spec.width, spec.height),
        display_window=(spec.full_x, spec.full_y, spec.full_width, spec.full_height),
    )
    return fmt, order


def read_frame(path: str | os.PathLike[str], number: int = 0, *, codes: bool = False) -> Frame:
    """Read one image file into a Frame (all channels, R, G, B first; grey expanded to RGB).

    ``codes``: keep an 8- or 16-bit file's integer codes (see ``facefix.io.frames``); float and 32-bit
    integer files read as float32 either way. Raises InputError naming the file when it is missing,
    unreadable, truncated or corrupt.
    """
    path = Path(path)
    inp = _open_input(path, number)
    try:
        spec = inp.spec()
        pixel_type, bits = _pixel_depth(spec)
        if pixel_type in NUMPY_INT:
            data = inp.read_image(0, 0, 0, spec.nchannels, pixel_type)
        else:
            data = inp.read_image(0, 0, 0, spec.nchannels, "float")
        if data is None:
            raise InputError(f"corrupt or truncated image {path}: {_first_error_line(inp.geterror())}")
        fmt, order = _frame_format(spec, inp.format_name(), path)
    finally:
        inp.close()
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4:  # volume images: the first slice
        data = data[0]
    if codes and pixel_type in CODE_TYPES:
        pixels = data
    elif pixel_type in NUMPY_INT:
        pixels = unit_from_codes(data, bits)
    else:
        pixels = data.astype(np.float32, copy=False)
    if order != list(range(len(order))):
        pixels = pixels[:, :, order]
    if fmt.is_grey:
        pixels = np.concatenate([np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1:]], axis=2)
    return Frame(number=number, pixels=np.ascontiguousarray(pixels), format=fmt)


def read_format(path: str | os.PathLike[str], number: int = 0) -> FrameFormat:
    """The FrameFormat ``read_frame`` gives for ``path``, from its header alone (no pixels are read)."""
    path = Path(path)
    inp = _open_input(path, number)
    try:
        return _frame_format(inp.spec(), inp.format_name(), path)[0]
    finally:
        inp.close()


def read_packed_frame(path: str | os.PathLike[str], number: int = 0,
                      words_into: Callable[[tuple[int, int]], np.ndarray] | None = None) -> PackedFrame | None:
    """Frame ``number`` of a plain 10-bit RGB(A) DPX with its pixels kept as the file's words (see
    ``facefix.io.dpx``; ``words_into`` as there), or None for any other file (read it with ``read_frame``).
    Only the header goes through OpenImageIO, for the same FrameFormat ``read_frame`` gives, and only once for
    frames whose headers differ in nothing but the file's name (``header_key``): a shot's frames usually."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"frame {number} is missing: {path}")
    packed = read_packed_10bit(path, words_into)
    if packed is None:
        return None
    layout, words, header = packed
    key = header_key(header)
    known = _FORMATS.get(key, _UNKNOWN)
    if known is _UNKNOWN:
        known = _packed_format(path, number, layout)
        _FORMATS.put(key, known)
    return PackedFrame(number, words, layout, known) if isinstance(known, FrameFormat) else None


# FrameFormat of a packed frame by header_key (None: OpenImageIO reads it otherwise); FrameFormats are not
# changed once made, so frames share them.
_FORMATS: LruCache[bytes, FrameFormat | None] = LruCache(16)
_UNKNOWN = object()


def _packed_format(path: Path, number: int, layout: PackedLayout) -> FrameFormat | None:
    """The FrameFormat OpenImageIO gives for a file of the plain layout ``layout``, or None if it reads the file
    as anything else (another depth, channel order or size)."""
    inp = _open_input(path, number)
    try:
        spec = inp.spec()
        file_format = inp.format_name()
        if file_format != "dpx" or _pixel_depth(spec) != ("uint16", 10):
            return None
        fmt, order = _frame_format(spec, file_format, path, endian="big" if layout.big_endian else "little")
    finally:
        inp.close()
    rgba = ("R", "G", "B", "A")[: layout.channels]
    if order != list(range(len(order))) or fmt.channel_names != rgba or (fmt.width, fmt.height) != (
            layout.width, layout.height):
        return None
    return fmt


def has_valid_header(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists and OpenImageIO can read its header."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    inp = oiio.ImageInput.open(str(p))
    if inp is None:
        oiio.geterror()  # clear the pending message
        return False
    ok = inp.spec().width > 0 and inp.spec().height > 0
    inp.close()
    return ok


# ------------------------------------------------------------------------------------------------ writing


def _output_format_name(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in WRITE_EXTENSIONS:
        known = ", ".join(sorted(WRITE_EXTENSIONS))
        raise OutputError(f"cannot write {path}: unknown image extension {ext or '(none)'}; use one of {known}")
    return WRITE_EXTENSIONS[ext]


def _pick_pixel_type(out_format: str, src: FrameFormat, same: bool) -> tuple[PixelType, int]:
    """(pixel type, bits per sample) for writing ``src``-like frames as ``out_format``."""
    if same and not (out_format == "jpeg"):
        if out_format == "png" and src.pixel_type not in ("uint8", "uint16"):
            return "uint16", 16
        if out_format == "dpx" and src.pixel_type not in ("uint8", "uint16"):
            return "uint16", 10
        if out_format == "openexr" and src.pixel_type not in ("half", "float"):
            return ("float" if src.pixel_type == "uint32" else "half"), native_bits("half")
        return src.pixel_type, src.bits_per_sample
    if out_format == "openexr":
        return ("float", 32) if src.pixel_type in ("float", "uint32") else ("half", 16)
    if out_format == "dpx":
        return ("uint8", 8) if src.pixel_type == "uint8" else ("uint16", 10)
    if out_format == "tiff":
        if src.is_float or src.pixel_type == "uint32":
            return "float", 32
        return ("uint8", 8) if src.pixel_type == "uint8" else ("uint16", 16)
    if out_format == "png":
        return ("uint8", 8) if src.pixel_type == "uint8" else ("uint16", 16)
    return "uint8", 8  # jpeg


def _channel_selection(fmt: FrameFormat, out_format: str, grey_channel: str | None
                       ) -> tuple[list[int], list[str], int, list[int]]:
    """Which channels to write: grey collapsed, channels the format cannot hold dropped.

    Returns (source channels after the colour, names to write, alpha index or -1, source channel indices
    kept (for per-channel types)).
    """
    names = list(fmt.channel_names)
    alpha = fmt.alpha_index
    extras = [i for i in range(3, len(names)) if i != alpha]
    if out_format == "jpeg":
        alpha, extras = None, []
    elif out_format in ("png", "dpx"):
        extras = []
    keep_rest = ([alpha] if alpha is not None else []) + extras
    if grey_channel is not None:
        out_names = [grey_channel if out_format == "openexr" else "Y"] + [names[i] for i in keep_rest]
        kept = [0] + keep_rest
    else:
        out_names = names[:3] + [names[i] for i in keep_rest]
        kept = [0, 1, 2] + keep_rest
    alpha_out = out_names.index(names[alpha]) if alpha is not None else -1
    return keep_rest, out_names, alpha_out, kept


def _selected_pixels(frame: Frame, keep_rest: list[int], grey: bool) -> np.ndarray:
    """The pixels of ``_channel_selection``'s channels, in its order."""
    px = frame.pixels
    if grey:
        # Rec.709 luma in float64: exactly the value back when R = G = B.
        luma = px[..., :3].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
        cols = [luma.astype(np.float32)[..., None]] + [px[..., i : i + 1] for i in keep_rest]
    else:
        cols = [px[..., :3]] + [px[..., i : i + 1] for i in keep_rest]
    return np.ascontiguousarray(np.concatenate(cols, axis=2) if len(cols) > 1 else cols[0])


def _copy_attributes(spec: oiio.ImageSpec, src: FrameFormat, same: bool, compression: str | None) -> None:
    for name, value in src.attributes.items():
        if name in _NEVER_COPY:
            continue
        if not same and (":" in name and name not in _PORTABLE or name == "compression"):
            continue
        type_name = src.attribute_types.get(name)
        try:
            if type_name:
                spec.attribute(name, oiio.TypeDesc(type_name), value)
            else:
                spec.attribute(name, value)
        except (TypeError, ValueError, RuntimeError):
            continue  # an attribute OIIO cannot write back: the image matters more than it
    level = src.attributes.get("openexr:dwaCompressionLevel")
    current = str(src.attributes.get("compression", ""))
    if same and compression is None and current.startswith("dwa") and ":" not in current and level:
        # The EXR writer takes the DWA level from the compression name ("dwaa:60").
        spec.attribute("compression", f"{current}:{float(level):g}")
    if compression:
        spec.attribute("compression", compression)


def write_frame(
    path: str | os.PathLike[str],
    frame: Frame | PackedFrame,
    like: FrameFormat | None = None,
    *,
    pixel_type: PixelType | None = None,
    bits_per_sample: int | None = None,
    compression: str | None = None,
    fps: float | None = None,
) -> None:
    """Write ``frame`` to ``path`` atomically; the format comes from the extension.

    ``like`` (default: the frame's own format) gives the sample type, compression and metadata when
    it is of the same file format; otherwise a sensible type is chosen (EXR half unless the source is
    float, DPX 10-bit, TIFF float for float sources, PNG 16-bit unless the source is 8-bit, JPEG
    8-bit without alpha). Float outputs keep values as they are (NaN/Inf included); integer outputs
    are clamped to [0, 1] and rounded. A ``PackedFrame`` written as the same 10-bit DPX layout keeps its
    words as they are; anything else unpacks it first. Raises OutputError naming the file.
    """
    path = Path(path)
    out_format = _output_format_name(path)
    src = like if like is not None else frame.format
    same = src.file_format == out_format
    ptype, bits = _pick_pixel_type(out_format, src, same)
    if pixel_type is not None:
        ptype, bits = pixel_type, native_bits(pixel_type)
    if bits_per_sample is not None:
        bits = int(bits_per_sample)
    grey = frame.format.grey_channel if frame.format.grey_channel is not None else src.grey_channel
    packed = frame if isinstance(frame, PackedFrame) else None
    if isinstance(frame, PackedFrame) and (out_format, ptype, bits, grey) != ("dpx", "uint16", 10, None):
        frame, packed = frame.unpacked(), None
    if isinstance(frame, Frame) and frame.is_codes and (
            grey is not None or ptype != frame.format.pixel_type or bits != frame.format.bits_per_sample):
        frame = Frame(frame.number, frame.unit_pixels(), frame.format)  # another depth (or grey): via float
    keep_rest, names, alpha, kept = _channel_selection(frame.format, out_format, grey)
    h, w, c = ((frame.layout.height, frame.layout.width, len(names)) if isinstance(frame, PackedFrame)
               else frame.pixels.shape[:2] + (len(names),))

    def make_spec() -> oiio.ImageSpec:
        spec = oiio.ImageSpec(w, h, c, oiio.TypeDesc(ptype))
        spec.channelnames = tuple(names)
        spec.alpha_channel = alpha
        if same and src.channel_pixel_types and len(src.channel_pixel_types) == frame.format.channels and pixel_type is None:
            spec.channelformats = tuple(oiio.TypeDesc(src.channel_pixel_types[i]) for i in kept)
        # A frame read from a file of the same format keeps its own metadata (each frame's timecode and frame
        # position); ``like`` gives the rest, and the metadata of frames made in memory.
        _copy_attributes(spec, frame.format if frame.format.file_format == src.file_format else src, same, compression)
        if out_format == "png":
            # Fast deflate (level 1, "sub" filter): ~6x faster to write than the library default for ~15-30 %
            # more bytes -- the right trade for intermediate frames on a render farm.
            spec.attribute("png:compressionLevel", 1)
            spec.attribute("png:filter", 16)
        if bits < native_bits(ptype):
            spec.attribute("oiio:BitsPerSample", bits)
        same_size = src.width == w and src.height == h
        if same and same_size and src.data_window and src.display_window:
            spec.x, spec.y = src.data_window[0], src.data_window[1]
            spec.full_x, spec.full_y, spec.full_width, spec.full_height = src.display_window
        if fps is not None and fps > 0 and "FramesPerSecond" not in src.attributes:
            num, den = _rational(fps)
            spec.attribute("FramesPerSecond", oiio.TypeDesc("rational2i"), (num, den))
        return spec

    # Frames of a shot kept as words share their FrameFormat (read_packed_frame): their spec is made once.
    spec, spec_key = (_shared_spec((frame.format, src), (out_format, ptype, bits, pixel_type, compression, fps, w, h, c),
                                   make_spec)
                      if packed is not None else (make_spec(), None))

    with atomic_path(path) as tmp:
        if packed is not None:
            if _write_dpx_words(tmp, path, spec, words=(packed.layout, packed.words), spec_key=spec_key):
                return
            frame = packed.unpacked()  # another byte order than the words': packed again below
        data = _data_to_write(_selected_pixels(frame, keep_rest, grey is not None), ptype, bits)  # type: ignore[arg-type]
        if out_format == "dpx" and bits == 10 and data.dtype == np.uint16 and _write_dpx_words(tmp, path, spec, data):
            return
        if out_format in _ENCODES_ON_CLOSE:
            buf = oiio.ImageBuf(spec)
            if not (buf.set_pixels(oiio.ROI(), data) and buf.write(str(tmp), fileformat=out_format)):
                raise OutputError(f"cannot write {path}: {_first_error_line(buf.geterror() or oiio.geterror())}")
            return
        out = oiio.ImageOutput.create(str(tmp))
        if out is None:
            raise OutputError(f"cannot write {path}: {_first_error_line(oiio.geterror())}")
        try:
            if not out.open(str(tmp), spec):
                raise OutputError(f"cannot write {path}: {_first_error_line(out.geterror())}")
            if not out.write_image(data):
                raise OutputError(f"cannot write {path}: {_first_error_line(out.geterror())}")
        finally:
            closed = out.close()
        if not closed:
            raise OutputError(f"cannot write {path}: {_first_error_line(out.geterror())}")


def _write_dpx_words(tmp: Path, path: Path, spec: oiio.ImageSpec, codes: np.ndarray | None = None,
                     words: tuple[PackedLayout, np.ndarray] | None = None, spec_key: str | None = None) -> bool:
    """``write_packed_10bit`` to ``tmp`` for the file ``path``, an OS error as the one-line OutputError."""
    try:
        return write_packed_10bit(tmp, spec, codes, name=path, words=words, spec_key=spec_key)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err


_SPECS: LruCache[tuple[object, ...], tuple[tuple[object, ...], oiio.ImageSpec, str]] = LruCache(8)


def _shared_spec(objects: tuple[object, ...], values: tuple[object, ...], make: Callable[[], oiio.ImageSpec]
                 ) -> tuple[oiio.ImageSpec, str]:
    """``make()`` and its XML, made once for these very ``objects`` (by identity: FrameFormats are not changed
    once made) and ``values``; the spec is only read after that, by any thread."""
    key = tuple(id(o) for o in objects) + values
    known = _SPECS.get(key)
    if known is not None and all(a is b for a, b in zip(known[0], objects)):
        return known[1], known[2]
    spec = make()
    xml = spec.to_xml()
    _SPECS.put(key, (objects, spec, xml))  # holds the objects, so their ids are not reused while cached
    return spec, xml


def _data_to_write(px: np.ndarray, ptype: str, bits: int) -> np.ndarray:
    """The samples to hand the writer: integer codes as they are (same type and depth, checked by the
    caller), float as float for float files, else rounded to ``bits``-deep codes."""
    if px.dtype != np.float32 or ptype in ("half", "float"):
        return px
    return codes_from_unit(px, ptype, bits)


def _rational(fps: float) -> tuple[int, int]:
    for den in (1, 1001, 100, 1000):
        num = fps * den
        if abs(num - round(num)) < 1e-3 * den / 1000:
            return int(round(num)), den
    return int(round(fps * 1000)), 1000


# ------------------------------------------------------------------------------------------ source/sink


class ImageSequenceSource:
    """Frames of an image sequence (or one still), read one at a time; nothing is cached.

    ``frames`` (a FrameSet string) selects frames; without it, the frames on disk are discovered
    (or the range written in the pattern is used). A still file has one frame: the number in its
    name, or 0.
    """

    kind = "sequence"

    def __init__(self, pattern: str | os.PathLike[str], frames: str | None = None) -> None:
        self.pattern = str(pattern)
        self._seq = parse_pattern(self.pattern)
        self._paths: Callable[[int], str] | None = None
        self._still: Path | None = None
        if self._seq is None:
            self._init_still(frames)
        elif frames is not None:
            self.frame_numbers = parse_frames(frames)
        else:
            written = self._seq.frameSet()  # a range written in the pattern: shot.1001-1100#.exr
            self.frame_numbers = [int(f) for f in written] if written is not None else self._discover()
        self._format: FrameFormat | None = None

    def _init_still(self, frames: str | None) -> None:
        path = Path(self.pattern)
        named = fileseq.FileSequence(self.pattern) if path.suffix else None
        number = 0
        # 'shot.1001.exr' is frame 1001 of a sequence: with --frames, read it as that sequence.
        named_frames = named.frameSet() if named is not None else None
        if named is not None and named_frames is not None and len(named_frames) == 1:
            number = int(list(named_frames)[0])
            if frames is not None:
                self._seq = named
                self.frame_numbers = parse_frames(frames)
                return
        if frames is not None and parse_frames(frames) != [number]:
            raise SettingsError(f"--frames {frames!r} given for the single file {path}; use a pattern such as shot.####.exr")
        if not path.is_file():
            raise InputError(f"file not found: {path}")
        self._still = path
        self.frame_numbers = [number]

    def _discover(self) -> list[int]:
        seq = self._seq
        if seq is None:
            return list(self.frame_numbers)
        folder = Path(seq.dirname() or ".")
        if not folder.is_dir():
            raise InputError(f"no frames match {self.pattern}: folder {folder} does not exist")
        try:
            found = fileseq.findSequenceOnDisk(
                self.pattern, strictPadding=True, pad_style=_pad_style(seq)
            )
        except fileseq.FileSeqException as err:
            raise InputError(f"no frames match {self.pattern}") from err
        fs = found.frameSet()
        if fs is None or len(fs) == 0:
            raise InputError(f"no frames match {self.pattern}")
        return [int(f) for f in fs]

    def path_for(self, number: int) -> str:
        if self._seq is None:
            return str(self._still)
        if self._paths is None:
            self._paths = frame_paths(self._seq)
        return self._paths(number)

    def read(self, number: int, codes: bool = False) -> Frame:
        return read_frame(self.path_for(number), int(number), codes=codes)

    def __iter__(self) -> Iterator[Frame]:
        for n in self.frame_numbers:
            yield self.read(n)

    def __len__(self) -> int:
        return len(self.frame_numbers)

    @property
    def format(self) -> FrameFormat:
        """The format of the first frame (its header, read once)."""
        if self._format is None:
            self._format = read_format(self.path_for(self.frame_numbers[0]), self.frame_numbers[0])
        return self._format

    @property
    def fps(self) -> float:
        """From the first frame's metadata (EXR FramesPerSecond, DPX frame rate), else 24.0."""
        fps = _fps_from_attributes(self.format.attributes)
        return fps if fps is not None else 24.0

    @property
    def is_float(self) -> bool:
        return self.format.is_float

    @property
    def has_audio(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> ImageSequenceSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSequenceSink:
    """Writes frames to an image sequence (or one still file), each one atomically.

    ``like`` is the source's format: with the same file format, sample type, compression and metadata
    are kept; ``pixel_type``/``compression`` override them.
    """

    kind = "sequence"

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        like: FrameFormat | None = None,
        *,
        fps: float | None = None,
        pixel_type: PixelType | None = None,
        bits_per_sample: int | None = None,
        compression: str | None = None,
    ) -> None:
        self.pattern = str(pattern)
        self.like = like
        self.fps = fps
        self.pixel_type = pixel_type
        self.bits_per_sample = bits_per_sample
        self.compression = compression
        self._seq = parse_pattern(self.pattern)
        self._paths: Callable[[int], str] | None = None
        self._still_number: int | None = None
        target = Path(self.path_for(0))
        _output_format_name(target)
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(f"cannot write {self.pattern}: output folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"cannot write {self.pattern}: output folder {folder} is not writable")

    def path_for(self, number: int) -> str:
        if self._seq is None:
            return self.pattern
        if self._paths is None:
            self._paths = frame_paths(self._seq)
        return self._paths(number)

    def is_done(self, number: int) -> bool:
        """True when frame ``number``'s file exists with a valid header (used to resume)."""
        return has_valid_header(self.path_for(number))

    def write(self, frame: Frame) -> None:
        if self._seq is None:
            if self._still_number is not None and self._still_number != frame.number:
                raise OutputError(
                    f"cannot write frame {frame.number} to the single file {self.pattern}; "
                    "use a pattern such as out.####.exr for several frames"
                )
            self._still_number = frame.number
        write_frame(
            self.path_for(frame.number),
            frame,
            self.like,
            pixel_type=self.pixel_type,
            bits_per_sample=self.bits_per_sample,
            compression=self.compression,
            fps=self.fps,
        )

    def abort(self) -> None:
        """Nothing to undo: each frame is complete on disk or absent."""

    def close(self) -> None:
        pass

    def __enter__(self) -> ImageSequenceSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
