"""10-bit DPX frames written with their pixels packed here, the header by OpenImageIO.

10-bit "filled, method A" is the DPX that compositing and film scanning pass around: three 10-bit samples
to a 32-bit word, high bits first, each line starting on a new word. OpenImageIO's writer packs them one
sample at a time (~100-250 ms a 1080p frame, a farm's whole encode budget); packing them as whole arrays
takes a few milliseconds and releases Python's interpreter lock as it goes.

The file is still OpenImageIO's, byte for byte: it writes the header for the same spec with a single
line of pixels, whose header differs from the full image's only in two fields (the file size and the
line count), set here. Anything but that plain layout (other depths or packings, padding, several image
elements) is left to OpenImageIO.

Read the same way (``read_packed_10bit``), a frame keeps its pixels as the file's own words: a restore then
unpacks only the rows its faces touch (on the GPU, ``facefix.packed``) and every other word goes back to the
file exactly as it came, with no full-frame unpacking or packing on the CPU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from ..errors import InputError
from .frames import Frame, FrameFormat
from .lru import LruCache

__all__ = ["byte_order", "pack_filled_10bit", "unpack_filled_10bit", "write_packed_10bit", "PackedLayout",
           "plain_layout", "read_packed_10bit", "header_key", "PackedFrame"]

# Byte offsets of the DPX fields (SMPTE 268M) this module reads or sets.
_MAGIC, _IMAGE_OFFSET, _FILE_SIZE, _FILE_NAME = 0, 4, 16, 36
_ELEMENTS, _PIXELS_PER_LINE, _LINES = 770, 772, 776
# The first image element: descriptor, bit depth, packing, encoding, data offset, end-of-line/image padding.
_DESCRIPTOR, _BIT_DEPTH, _PACKING, _ENCODING, _DATA_OFFSET, _LINE_PADDING, _IMAGE_PADDING = (
    800, 803, 804, 806, 808, 812, 816)
_CHANNELS_OF_DESCRIPTOR = {50: 3, 51: 4}  # RGB, RGBA (OpenImageIO packs one channel without filling)
_FILLED_METHOD_A = 1
_HEADER_FIELDS = 820  # every field above lies within the first bytes of the header
_UNSET = (0, 0xFFFFFFFF)  # DPX writes all ones for "not given"


@dataclass(frozen=True)
class PackedLayout:
    """Where and how a plain 10-bit DPX keeps its pixels: one image element, RGB or RGBA, filled method A,
    no padding; each line is ``words_per_line`` 32-bit words in the file's byte order."""

    width: int
    height: int
    channels: int
    big_endian: bool
    data_offset: int

    @property
    def words_per_line(self) -> int:
        return -(-self.width * self.channels // 3)

    @property
    def data_bytes(self) -> int:
        return 4 * self.words_per_line * self.height

    @property
    def word_dtype(self) -> np.dtype:
        """The words' numpy type, in the file's byte order."""
        return np.dtype(">u4" if self.big_endian else "<u4")


@dataclass(frozen=True)
class PackedFrame:
    """A frame of a plain 10-bit DPX whose pixels are still the file's words (``read_packed_10bit``).

    ``format`` is what ``read_frame`` would give for the file; ``unpacked()`` is the frame it would read
    with ``codes=True``. Writers that can take the words as they are write them back untouched.
    """

    number: int
    words: np.ndarray  # (height, words per line) uint32: the file's bytes
    layout: PackedLayout
    format: FrameFormat

    def unpacked(self) -> Frame:
        return Frame(self.number, unpack_filled_10bit(self.words, self.layout), self.format)


def plain_layout(header: bytes) -> PackedLayout | None:
    """The layout of a DPX whose header (its first bytes) describes the plain 10-bit image packed here;
    None for anything else (another depth, packing or encoding, padding, several image elements)."""
    if len(header) < _HEADER_FIELDS or header[_MAGIC:4] not in (b"SDPX", b"XPDS"):
        return None
    big = header[:4] == b"SDPX"
    order = ">" if big else "<"

    def field(fmt: str, offset: int) -> int:
        return int(struct.unpack_from(order + fmt, header, offset)[0])

    start = field("I", _IMAGE_OFFSET)
    channels = _CHANNELS_OF_DESCRIPTOR.get(header[_DESCRIPTOR])
    plain = (
        channels is not None and field("H", _ELEMENTS) == 1 and header[_BIT_DEPTH] == 10
        and field("H", _PACKING) == _FILLED_METHOD_A and field("H", _ENCODING) == 0
        and field("I", _DATA_OFFSET) == start and field("I", _LINE_PADDING) in _UNSET
        and field("I", _IMAGE_PADDING) in _UNSET and 0 < field("I", _PIXELS_PER_LINE) < 1 << 20
        and 0 < field("I", _LINES) < 1 << 20 and start >= _HEADER_FIELDS
    )
    if not plain:
        return None
    return PackedLayout(field("I", _PIXELS_PER_LINE), field("I", _LINES), int(channels or 0), big, start)


def read_packed_10bit(path: Path, words_into: Callable[[tuple[int, int]], np.ndarray] | None = None
                      ) -> tuple[PackedLayout, np.ndarray, bytes] | None:
    """The layout, the pixels and the header of a plain 10-bit DPX, the pixels as its raw words: a (height,
    words per line) uint32 array holding the file's bytes as they are (``layout.word_dtype`` reads them), the
    header every byte before them. ``words_into(shape)`` gives the array to fill (e.g. memory the GPU copies
    from). None when the file is not that layout; InputError when it is shorter than its header says."""
    with open(path, "rb") as f:
        header = f.read(_HEADER_FIELDS)
        layout = plain_layout(header)
        if layout is None:
            return None
        header += f.read(layout.data_offset - len(header))
        shape = (layout.height, layout.words_per_line)
        words = words_into(shape) if words_into is not None else np.empty(shape, np.uint32)
        got = f.readinto(words.reshape(-1).view(np.uint8).data) if len(header) == layout.data_offset else 0
    if got != layout.data_bytes:
        raise InputError(f"corrupt or truncated image {path}: {got} of {layout.data_bytes} bytes of pixels")
    return layout, words, header


def header_key(header: bytes) -> bytes:
    """A DPX header without its file name: frames of a shot whose keys are equal say the same about their
    images (size, layout, metadata, timecode), whatever their files are called."""
    return header[:_FILE_NAME] + bytes(100) + header[_FILE_NAME + 100 :]


def byte_order(path: Path) -> str:
    """"big" or "little": how a DPX file's header and pixels are stored (its magic number says)."""
    with open(path, "rb") as f:
        return "big" if f.read(4) == b"SDPX" else "little"


def pack_filled_10bit(codes: np.ndarray, big_endian: bool) -> np.ndarray:
    """(H, W, C) uint16 full-range codes -> (H, words per line) 32-bit words of 10-bit samples, filled
    method A, in the file's byte order.

    A 16-bit code keeps its top 10 bits, as OpenImageIO converts; a line's samples run on across pixels,
    three to a word (first sample in the highest bits, the lowest two bits zero), the last word of a
    line padded with zero samples.
    """
    h, w, c = codes.shape
    samples = np.right_shift(codes.reshape(h, w * c), 6)
    pad = -(w * c) % 3
    if pad:
        samples = np.pad(samples, ((0, 0), (0, pad)))
    triples = samples.reshape(h, -1, 3)
    words = np.left_shift(triples[..., 0], 22, dtype=np.uint32)
    words |= np.left_shift(triples[..., 1], 12, dtype=np.uint32)
    words |= np.left_shift(triples[..., 2], 2, dtype=np.uint32)
    return words.astype(">u4" if big_endian else "<u4", copy=False)


def unpack_filled_10bit(words: np.ndarray, layout: PackedLayout) -> np.ndarray:
    """Raw words (as ``read_packed_10bit`` gives them) -> (H, W, C) uint16 full-range codes, each 10-bit
    sample widened by repeating its top bits (k << 6 | k >> 4), as OpenImageIO reads them."""
    w = words.view(layout.word_dtype).astype(np.uint32)
    samples = np.stack([(w >> 22) & 1023, (w >> 12) & 1023, (w >> 2) & 1023], axis=-1).astype(np.uint16)
    samples = samples.reshape(layout.height, -1)[:, : layout.width * layout.channels]
    codes = (samples << 6) | (samples >> 4)
    return codes.reshape(layout.height, layout.width, layout.channels)


_HEADERS: LruCache[str, bytes] = LruCache(8)  # one-line files by spec: the frames of a shot share one


def _header_for(path: Path, spec: oiio.ImageSpec, key: str | None = None) -> bytes | None:
    """``_one_line_header`` for ``spec``, written once per spec: it depends on nothing else but the file's name,
    which the caller sets. Frames that share their metadata cost OpenImageIO one header; frames that carry
    their own (a timecode each) still cost one each. ``key``: ``spec.to_xml()``, if the caller has it."""
    key = key if key is not None else spec.to_xml()
    known = _HEADERS.get(key)
    if known is not None:
        return known
    one_line = _one_line_header(path, spec)
    if one_line is not None:
        _HEADERS.put(key, one_line)
    return one_line


def _one_line_header(path: Path, spec: oiio.ImageSpec) -> bytes | None:
    """The header OpenImageIO writes for ``spec`` with one line of pixels, written to ``path``."""
    line = oiio.ImageSpec(spec)
    line.height = 1
    line.full_height = spec.full_height  # the original size is in the header: keep the image's
    out = oiio.ImageOutput.create(str(path))
    if out is None:
        oiio.geterror()
        return None
    try:
        ok = out.open(str(path), line) and out.write_image(np.zeros((1, spec.width, spec.nchannels), np.uint16))
    finally:
        ok = out.close() and ok
    if not ok:
        return None
    return path.read_bytes()


def write_packed_10bit(path: Path, spec: oiio.ImageSpec, codes: np.ndarray | None = None, name: Path | None = None,
                       *, words: tuple[PackedLayout, np.ndarray] | None = None, spec_key: str | None = None) -> bool:
    """Write (H, W, C) uint16 full-range ``codes`` to ``path`` as the 10-bit DPX OpenImageIO would write
    for ``spec`` to ``name`` (default ``path``: the header keeps the file's name; a temporary file renamed into
    place later names its target). ``words``: the pixels already packed, as ``read_packed_10bit`` gives them,
    written as they are. False (``path`` left for another writer to replace) when OpenImageIO's header is not
    the plain one-element, filled-method-A layout packed here, or not the layout of ``words``. ``spec_key``:
    ``spec.to_xml()``, if the caller has it."""
    h, w, c = (codes.shape if codes is not None else (spec.height, spec.width, spec.nchannels))
    if c not in _CHANNELS_OF_DESCRIPTOR.values():
        return False
    one_line = _header_for(path, spec, spec_key)
    layout = plain_layout(one_line) if one_line is not None else None
    if (one_line is None or layout is None or (layout.width, layout.height, layout.channels) != (w, 1, c)
            or len(one_line) != layout.data_offset + 4 * layout.words_per_line):
        return False
    if words is not None and words[0] != PackedLayout(w, h, c, layout.big_endian, layout.data_offset):
        return False
    order = ">" if layout.big_endian else "<"
    header = bytearray(one_line[: layout.data_offset])
    # As OpenImageIO fills it: the path it was given, cut to the field's 100 bytes.
    header[_FILE_NAME : _FILE_NAME + 100] = str(name if name is not None else path).encode()[:100].ljust(100, b"\0")
    struct.pack_into(order + "I", header, _FILE_SIZE, layout.data_offset + 4 * layout.words_per_line * h)
    struct.pack_into(order + "I", header, _LINES, h)
    data = words[1] if words is not None else pack_filled_10bit(codes, layout.big_endian)  # type: ignore[arg-type]
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(data).view(np.uint8).data)
    return True
