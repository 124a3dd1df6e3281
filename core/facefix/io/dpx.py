"""10-bit DPX frames written with their pixels packed here, the header by OpenImageIO.

10-bit "filled, method A" is the DPX that compositing and film scanning pass around: three 10-bit samples
to a 32-bit word, high bits first, each line starting on a new word. OpenImageIO's writer packs them one
sample at a time (~100-250 ms a 1080p frame, a farm's whole encode budget); packing them as whole arrays
takes a few milliseconds and releases Python's interpreter lock as it goes.

The file is still OpenImageIO's, byte for byte: it writes the header for the same spec with a single
line of pixels, whose header differs from the full image's only in two fields (the file size and the
line count), set here. Anything but that plain layout (other depths or packings, padding, several image
elements) is left to OpenImageIO.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

__all__ = ["byte_order", "pack_filled_10bit", "write_packed_10bit"]

# Byte offsets of the DPX fields (SMPTE 268M) this module reads or sets.
_MAGIC, _IMAGE_OFFSET, _FILE_SIZE, _FILE_NAME = 0, 4, 16, 36
_ELEMENTS, _PIXELS_PER_LINE, _LINES = 770, 772, 776
# The first image element: descriptor, bit depth, packing, encoding, data offset, end-of-line/image padding.
_DESCRIPTOR, _BIT_DEPTH, _PACKING, _ENCODING, _DATA_OFFSET, _LINE_PADDING, _IMAGE_PADDING = (
    800, 803, 804, 806, 808, 812, 816)
_CHANNELS_OF_DESCRIPTOR = {50: 3, 51: 4}  # RGB, RGBA (OpenImageIO packs one channel without filling)
_FILLED_METHOD_A = 1


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


def write_packed_10bit(path: Path, spec: oiio.ImageSpec, codes: np.ndarray, name: Path | None = None) -> bool:
    """Write (H, W, C) uint16 full-range ``codes`` to ``path`` as the 10-bit DPX OpenImageIO would write
    for ``spec`` to ``name`` (default ``path``: the header keeps the file's name; a temporary file renamed into
    place later names its target). False (``path`` left for another writer to replace) when OpenImageIO's
    header is not the plain one-element, filled-method-A layout packed here."""
    h, w, c = codes.shape
    if c not in _CHANNELS_OF_DESCRIPTOR.values():
        return False
    one_line = _one_line_header(path, spec)
    if one_line is None or len(one_line) < 2048 or one_line[_MAGIC:4] not in (b"SDPX", b"XPDS"):
        return False
    big = one_line[:4] == b"SDPX"
    order = ">" if big else "<"

    def field(fmt: str, offset: int) -> int:
        return int(struct.unpack_from(order + fmt, one_line, offset)[0])

    start = field("I", _IMAGE_OFFSET)
    words_per_line = -(-w * c // 3)
    plain = (
        field("H", _ELEMENTS) == 1 and field("I", _PIXELS_PER_LINE) == w and field("I", _LINES) == 1
        and _CHANNELS_OF_DESCRIPTOR.get(one_line[_DESCRIPTOR]) == c and one_line[_BIT_DEPTH] == 10
        and field("H", _PACKING) == _FILLED_METHOD_A and field("H", _ENCODING) == 0
        and field("I", _DATA_OFFSET) == start and field("I", _LINE_PADDING) in (0, 0xFFFFFFFF)
        and field("I", _IMAGE_PADDING) in (0, 0xFFFFFFFF) and len(one_line) == start + 4 * words_per_line
    )
    if not plain:
        return False
    header = bytearray(one_line[:start])
    if name is not None:  # as OpenImageIO fills it: the path it was given, cut to the field's 100 bytes
        header[_FILE_NAME : _FILE_NAME + 100] = str(name).encode()[:100].ljust(100, b"\0")
    struct.pack_into(order + "I", header, _FILE_SIZE, start + 4 * words_per_line * h)
    struct.pack_into(order + "I", header, _LINES, h)
    words = pack_filled_10bit(codes, big)
    with open(path, "wb") as f:
        f.write(header)
        f.write(words.view(np.uint8).data)
    return True
