"""10-bit DPX written through facefix.io.dpx: the same file OpenImageIO's own writer gives, byte for byte.

Reference files are written with OpenImageIO directly, never through the code under test.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from facefix.errors import InputError, OutputError
from facefix.io import read_frame, write_frame
from facefix.io.dpx import byte_order, pack_filled_10bit, write_packed_10bit
from facefix.io.sequence import read_packed_frame

RNG = np.random.default_rng(11)
ATTRS = {"dpx:FrameRate": 23.976, "dpx:TimeCode": "01:00:00:12", "dpx:FramePosition": 1012,
         "DocumentName": "shot_010", "Orientation": 1}


def _spec(w: int, h: int, c: int, endian: str, attrs: dict) -> oiio.ImageSpec:
    spec = oiio.ImageSpec(w, h, c, oiio.TypeDesc("uint16"))
    spec.attribute("oiio:BitsPerSample", 10)
    spec.attribute("oiio:Endian", endian)
    for k, v in attrs.items():
        spec.attribute(k, v)
    return spec


def _oiio_write(path: Path, spec: oiio.ImageSpec, codes: np.ndarray) -> None:
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(codes), out.geterror()
    assert out.close()


def _reference_pack(codes: np.ndarray) -> list[int]:
    """Filled method A, one sample at a time: the top 10 bits of each code, three to a word from the top."""
    h, w, c = codes.shape
    words = []
    for y in range(h):
        line = [int(v) >> 6 for v in codes[y].reshape(-1)]
        line += [0] * (-len(line) % 3)
        words += [(a << 22) | (b << 12) | (d << 2) for a, b, d in zip(line[0::3], line[1::3], line[2::3])]
    return words


@pytest.mark.parametrize("channels", [3, 4])
def test_packing_is_three_samples_a_word_from_the_top(channels: int) -> None:
    codes = RNG.integers(0, 65536, (3, 5, channels)).astype(np.uint16)
    codes[0, 0, 0], codes[0, 0, 1] = 65535, 64  # top code, and the smallest non-zero 10-bit one
    little, big = pack_filled_10bit(codes, False), pack_filled_10bit(codes, True)
    assert little.tolist() == big.tolist() and big.dtype == np.dtype(">u4") and little.dtype == np.dtype("<u4")
    assert little.reshape(-1).tolist() == _reference_pack(codes)
    assert (int(little[0, 0]) >> 22) == 1023 and (int(little[0, 0]) >> 12) & 1023 == 1


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("width", [1, 7, 9])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_file_is_the_one_openimageio_writes(tmp_path: Path, channels: int, width: int, endian: str) -> None:
    codes = RNG.integers(0, 65536, (6, width, channels)).astype(np.uint16)
    spec = _spec(width, 6, channels, endian, ATTRS)
    path = tmp_path / "frame.dpx"  # the same name for both: it is written into the header
    _oiio_write(path, spec, codes)
    plain = path.read_bytes()
    path.unlink()
    assert write_packed_10bit(path, spec, codes)
    assert path.read_bytes() == plain
    # Written under a temporary name, the header names the file it becomes (as if written there directly).
    tmp = tmp_path / ".frame.1234.tmp.dpx"
    assert write_packed_10bit(tmp, spec, codes, name=path)
    assert tmp.read_bytes() == plain


def test_write_frame_packs_10bit_and_keeps_header_and_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = RNG.integers(0, 1024, (12, 16, 3)) * 64
    src = tmp_path / "in.dpx"
    _oiio_write(src, _spec(16, 12, 3, "big", ATTRS), codes.astype(np.uint16))
    frame = read_frame(src, 1012, codes=True)
    packed = []
    import facefix.io.sequence as sequence

    def spy(path: Path, spec: oiio.ImageSpec, data: np.ndarray, name: Path | None = None, words: object = None,
            spec_key: str | None = None) -> bool:
        packed.append(write_packed_10bit(path, spec, data, name, words=words, spec_key=spec_key))  # type: ignore[arg-type]
        return packed[-1]

    monkeypatch.setattr(sequence, "write_packed_10bit", spy)
    out = tmp_path / "out.dpx"
    write_frame(out, frame)
    assert packed == [True]
    a, b = src.read_bytes(), out.read_bytes()
    start = struct.unpack(">I", a[4:8])[0]
    assert a[:4] == b[:4] == b"SDPX" and len(a) == len(b) == start + 12 * 16 * 4  # byte order kept
    assert a[start:] == b[start:]  # the pixels
    assert a[768:start] == b[768:start]  # image, orientation, film and TV headers
    assert b[36:136] == str(out).encode()[:100].ljust(100, b"\0")  # its own name, not the temporary file's
    back = read_frame(out, codes=True)
    assert back.format.attributes["dpx:TimeCode"] == "01:00:00:12"
    np.testing.assert_array_equal(back.pixels, frame.pixels)


def test_other_layouts_are_left_to_openimageio(tmp_path: Path) -> None:
    grey = RNG.integers(0, 65536, (4, 5, 1)).astype(np.uint16)
    assert not write_packed_10bit(tmp_path / "grey.dpx", _spec(5, 4, 1, "little", {}), grey)
    rgb = RNG.integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    # OpenImageIO writes another packing when asked: its header says so, and the frame goes back to it.
    spec = _spec(5, 4, 3, "little", {"dpx:Packing": "Filled, method B"})
    path = tmp_path / "method_b.dpx"
    _oiio_write(path, spec, rgb)
    packing = struct.unpack("<H", path.read_bytes()[804:806])[0]
    assert write_packed_10bit(path, spec, rgb) is (packing == 1)


def test_a_failed_packed_write_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = RNG.integers(0, 65536, (4, 6, 3)).astype(np.uint16)
    src = tmp_path / "in.dpx"
    _oiio_write(src, _spec(6, 4, 3, "little", {}), codes)
    frame = read_frame(src, codes=True)
    import facefix.io.dpx as dpx

    def full_disk(words: np.ndarray, big: bool) -> np.ndarray:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dpx, "pack_filled_10bit", full_disk)
    with pytest.raises(OutputError, match=r"^cannot write .*out.dpx: No space left on device$"):
        write_frame(tmp_path / "out.dpx", frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.dpx"]


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_a_packed_read_is_the_frame_read_frame_gives(tmp_path: Path, channels: int, endian: str) -> None:
    codes = (RNG.integers(0, 1024, (5, 7, channels)) * 64).astype(np.uint16)
    path = tmp_path / "in.1012.dpx"
    _oiio_write(path, _spec(7, 5, channels, endian, ATTRS), codes)
    packed = read_packed_frame(path, 1012)
    plain = read_frame(path, 1012, codes=True)
    assert packed is not None and packed.number == 1012 and packed.layout.big_endian == (endian == "big")
    assert packed.format == plain.format and dict(packed.format.attributes) == dict(plain.format.attributes)
    unpacked = packed.unpacked()
    assert unpacked.format == plain.format and unpacked.number == 1012
    k = codes >> 6
    np.testing.assert_array_equal(unpacked.pixels, (k << 6) | (k >> 4))  # widened as OpenImageIO widens
    # OpenImageIO's own reader agrees, but for the last sample of an RGBA line whose last word is not full,
    # which it does not read right (0, or another value).
    same = np.ones(codes.shape, bool)
    if channels == 4:
        same[:, -1, -1] = False
    np.testing.assert_array_equal(unpacked.pixels[same], plain.pixels[same])


def test_other_files_are_not_read_packed(tmp_path: Path) -> None:
    rgb = (RNG.integers(0, 1024, (4, 5, 3)) * 64).astype(np.uint16)
    _oiio_write(tmp_path / "a.png", oiio.ImageSpec(5, 4, 3, "uint16"), rgb)
    _oiio_write(tmp_path / "b.dpx", oiio.ImageSpec(5, 4, 3, "uint16"), rgb)  # 16-bit DPX
    _oiio_write(tmp_path / "c.dpx", oiio.ImageSpec(5, 4, 3, "uint8"), (rgb >> 8).astype(np.uint8))
    _oiio_write(tmp_path / "d.dpx", _spec(5, 4, 3, "little", {"dpx:Packing": "Filled, method B"}), rgb)
    _oiio_write(tmp_path / "e.dpx", _spec(5, 4, 1, "little", {}), rgb[..., :1])  # one channel
    for name in ("a.png", "b.dpx", "c.dpx", "d.dpx", "e.dpx"):
        assert read_packed_frame(tmp_path / name) is None, name


def test_a_truncated_packed_frame_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.dpx"
    _oiio_write(path, _spec(6, 4, 3, "big", {}), np.zeros((4, 6, 3), np.uint16))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"cut.dpx: 86 of 96 bytes of pixels$"):
        read_packed_frame(path)
    with pytest.raises(InputError, match=r"frame 7 is missing: .*gone.dpx$"):
        read_packed_frame(tmp_path / "gone.dpx", 7)


@pytest.mark.parametrize("channels", [3, 4])
def test_packed_frames_are_written_as_their_words(tmp_path: Path, channels: int) -> None:
    codes = (RNG.integers(0, 1024, (6, 9, channels)) * 64).astype(np.uint16)
    src = tmp_path / "in.dpx"
    _oiio_write(src, _spec(9, 6, channels, "big", ATTRS), codes)
    packed = read_packed_frame(src, 3)
    assert packed is not None
    # As read_frame's frame is written (the same header, its own name), byte for byte.
    write_frame(tmp_path / "out.dpx", read_frame(src, 3, codes=True))
    expected = (tmp_path / "out.dpx").read_bytes()
    write_frame(tmp_path / "out.dpx", packed)
    assert (tmp_path / "out.dpx").read_bytes() == expected
    # The words go out as they are: even bits no reader looks at.
    packed.words.view(">u4")[:, 0] |= 3
    write_frame(tmp_path / "out.dpx", packed)
    got = (tmp_path / "out.dpx").read_bytes()
    assert got[-packed.words.nbytes :] == packed.words.tobytes() and len(got) == len(expected)
    # Other formats and byte orders get the unpacked frame.
    little = replace(packed, format=_endian(packed.format, "little"))  # big-endian words, to be written little
    for name, frame in (("o.exr", packed), ("o.png", packed), ("little.dpx", little)):
        write_frame(tmp_path / name, frame)
        write_frame(tmp_path / ("want_" + name), frame.unpacked())
        assert read_frame(tmp_path / name).format.file_format == read_frame(tmp_path / ("want_" + name)).format.file_format
        np.testing.assert_array_equal(read_frame(tmp_path / name).pixels, read_frame(tmp_path / ("want_" + name)).pixels)
    assert byte_order(tmp_path / "little.dpx") == "little"


def _endian(fmt, order: str):  # type: ignore[no-untyped-def]
    return replace(fmt, attributes={**fmt.attributes, "oiio:Endian": order})


def test_a_shots_frames_share_one_header_from_openimageio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenImageIO writes the header once per spec; every frame still gets exactly the file it would write."""
    import facefix.io.dpx as dpx

    calls = []
    one_line = dpx._one_line_header
    monkeypatch.setattr(dpx, "_one_line_header", lambda *a: calls.append(a) or one_line(*a))
    spec = _spec(5, 3, 3, "big", {**ATTRS, "DocumentName": "cached_shot"})
    for i in range(3):
        codes = RNG.integers(0, 65536, (3, 5, 3)).astype(np.uint16)
        path = tmp_path / f"shot.{i:04d}.dpx"
        assert write_packed_10bit(tmp_path / ".tmp.dpx", spec, codes, name=path)
        _oiio_write(path, spec, codes)
        assert (tmp_path / ".tmp.dpx").read_bytes() == path.read_bytes()
    assert len(calls) == 1
    other = _spec(5, 3, 3, "big", {**ATTRS, "DocumentName": "cached_shot", "dpx:TimeCode": "02:00:00:00"})
    codes = RNG.integers(0, 65536, (3, 5, 3)).astype(np.uint16)
    assert write_packed_10bit(tmp_path / ".tmp.dpx", other, codes, name=tmp_path / "other.dpx")
    _oiio_write(tmp_path / "other.dpx", other, codes)
    assert (tmp_path / ".tmp.dpx").read_bytes() == (tmp_path / "other.dpx").read_bytes() and len(calls) == 2


def test_a_shots_frames_are_parsed_by_openimageio_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames whose headers differ only in their file names share one FrameFormat (what read_frame gives each);
    a frame with its own timecode gets its own."""
    import facefix.io.sequence as sequence

    opened = []
    parse = sequence._packed_format
    monkeypatch.setattr(sequence, "_packed_format", lambda *a: opened.append(a) or parse(*a))
    monkeypatch.setattr(sequence, "_FORMATS", type(sequence._FORMATS)())
    attrs = {**ATTRS, "DocumentName": "parsed_once"}
    for i in range(3):
        path = tmp_path / f"shot.{i:04d}.dpx"
        _oiio_write(path, _spec(6, 4, 3, "little", attrs), (RNG.integers(0, 1024, (4, 6, 3)) * 64).astype(np.uint16))
        packed = read_packed_frame(path, i)
        assert packed is not None and packed.number == i
        assert packed.format == read_frame(path, i).format
        assert dict(packed.format.attributes) == dict(read_frame(path, i).format.attributes)
    assert len(opened) == 1
    other = tmp_path / "other.dpx"
    _oiio_write(other, _spec(6, 4, 3, "little", {**attrs, "dpx:TimeCode": "02:00:00:00"}), np.zeros((4, 6, 3), np.uint16))
    packed = read_packed_frame(other, 9)
    assert len(opened) == 2 and packed is not None and packed.format.attributes["dpx:TimeCode"] == "02:00:00:00"
    # A file OpenImageIO reads as another layout is remembered as such too.
    _oiio_write(tmp_path / "b.dpx", _spec(6, 4, 3, "little", {"dpx:Packing": "Filled, method B"}),
                np.zeros((4, 6, 3), np.uint16))
    assert read_packed_frame(tmp_path / "b.dpx") is None and read_packed_frame(tmp_path / "b.dpx") is None


def test_frames_sharing_a_format_share_one_spec_and_each_gets_its_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """write_frame makes the spec of packed frames with one FrameFormat once; every file is still the one the
    frame's own spec gives (its name in the header)."""
    import facefix.io.sequence as sequence

    made = []
    copy_attributes = sequence._copy_attributes
    monkeypatch.setattr(sequence, "_copy_attributes", lambda *a: made.append(a) or copy_attributes(*a))
    attrs = {**ATTRS, "DocumentName": "one_spec"}
    frames = []
    for i in range(3):
        path = tmp_path / f"in.{i:04d}.dpx"
        _oiio_write(path, _spec(7, 3, 3, "big", attrs), (RNG.integers(0, 1024, (3, 7, 3)) * 64).astype(np.uint16))
        frames.append(read_packed_frame(path, i))
    assert frames[0] is not None and all(f is not None and f.format is frames[0].format for f in frames)
    for i, frame in enumerate(frames):
        write_frame(tmp_path / f"out.{i:04d}.dpx", frame, frames[0].format, fps=24.0)  # type: ignore[arg-type]
    assert len(made) == 1
    for i in range(3):
        write_frame(tmp_path / f"want.{i:04d}.dpx", read_frame(tmp_path / f"in.{i:04d}.dpx", i, codes=True), fps=24.0)
        got, want = (tmp_path / f"out.{i:04d}.dpx").read_bytes(), (tmp_path / f"want.{i:04d}.dpx").read_bytes()
        assert got[:36] == want[:36] and got[136:] == want[136:]  # all but the name field, which names each file
        assert got[36:136] == str(tmp_path / f"out.{i:04d}.dpx").encode()[:100].ljust(100, b"\0")
