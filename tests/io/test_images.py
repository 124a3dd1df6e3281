"""Image files through facefix.io: types, channels, metadata and values kept on a round trip.

Source files are written here with OpenImageIO directly, from known arrays, so the expected values
never come from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from facefix.errors import InputError, OutputError
from facefix.io import Frame, FrameFormat, read_frame, write_frame
from facefix.io.sequence import read_format

RNG = np.random.default_rng(7)
H, W = 12, 16


def _oiio_write(path: Path, data: np.ndarray, fmt: str, names: tuple[str, ...] | None = None,
                attrs: dict | None = None, bits: int | None = None) -> None:
    spec = oiio.ImageSpec(data.shape[1], data.shape[0], data.shape[2], fmt)
    if names:
        spec.channelnames = names
        if "A" in names:
            spec.alpha_channel = names.index("A")
    for k, v in (attrs or {}).items():
        spec.attribute(k, v)
    if bits:
        spec.attribute("oiio:BitsPerSample", bits)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(data), out.geterror()
    out.close()


def _oiio_read(path: Path, fmt: str = "float") -> tuple[np.ndarray, oiio.ImageSpec]:
    inp = oiio.ImageInput.open(str(path))
    assert inp is not None, oiio.geterror()
    spec = inp.spec()
    data = inp.read_image(fmt)
    inp.close()
    return data, spec


def _half_rgba() -> np.ndarray:
    # Values exactly representable in half, incl. negative, >1, NaN and Inf.
    data = (RNG.standard_normal((H, W, 4)) * 4).astype(np.float16).astype(np.float32)
    data[0, 0, 0] = np.nan
    data[0, 1, 1] = np.inf
    data[0, 2, 2] = -np.inf
    return data


@pytest.mark.parametrize("compression", ["piz", "zip"])
def test_exr_half_round_trip_bit_identical(tmp_path: Path, compression: str) -> None:
    src_data = _half_rgba()
    src = tmp_path / "in.exr"
    _oiio_write(src, src_data, "half", ("R", "G", "B", "A"), {"compression": compression, "facefix_note": "plate 12"})
    frame = read_frame(src, 1001)
    assert frame.pixels.dtype == np.float32 and frame.pixels.shape == (H, W, 4)
    assert frame.format.pixel_type == "half" and frame.format.is_float
    assert frame.format.alpha_index == 3 and frame.format.channel_names == ("R", "G", "B", "A")
    np.testing.assert_array_equal(frame.pixels, src_data)  # NaN-aware equality

    out = tmp_path / "out.exr"
    write_frame(out, frame, frame.format)
    back, spec = _oiio_read(out)
    assert spec.format == oiio.TypeDesc("half")
    assert spec.get_string_attribute("compression") == compression
    assert spec.get_string_attribute("facefix_note") == "plate 12"
    assert spec.alpha_channel == 3
    # bit-identical, NaN/Inf included
    assert back.astype(np.float16).tobytes() == src_data.astype(np.float16).tobytes()


def test_exr_dwaa_compression_and_metadata_kept(tmp_path: Path) -> None:
    src_data = np.clip(_half_rgba(), 0, 4)
    src_data = np.nan_to_num(src_data, posinf=4.0)
    src = tmp_path / "in.exr"
    _oiio_write(src, src_data, "half", ("R", "G", "B", "A"), {"compression": "dwaa:60", "facefix_note": "x"})
    frame = read_frame(src)
    out = tmp_path / "out.exr"
    write_frame(out, frame)
    back, spec = _oiio_read(out)
    assert spec.get_string_attribute("compression").startswith("dwaa")
    assert spec.get_float_attribute("openexr:dwaCompressionLevel") == 60.0
    assert spec.get_string_attribute("facefix_note") == "x"
    # DWAA is lossless on alpha; colour is recompressed (lossy), so only close to what we read.
    np.testing.assert_array_equal(back[..., 3], frame.pixels[..., 3])
    assert np.abs(back[..., :3] - frame.pixels[..., :3]).max() < 0.1


def test_exr_float_and_extra_channel_kept(tmp_path: Path) -> None:
    data = RNG.standard_normal((H, W, 5)).astype(np.float32) * 1000
    src = tmp_path / "in.exr"
    # File order deliberately not RGBA: the reader must put R, G, B first, then A, then extras.
    _oiio_write(src, data, "float", ("Z", "B", "A", "G", "R"))
    frame = read_frame(src)
    assert frame.format.pixel_type == "float"
    names = frame.format.channel_names
    assert names[:4] == ("R", "G", "B", "A") and names[4] == "Z"
    by_name = dict(zip(("Z", "B", "A", "G", "R"), np.moveaxis(data, 2, 0), strict=True))
    for i, n in enumerate(names):
        np.testing.assert_array_equal(frame.pixels[..., i], by_name[n])
    out = tmp_path / "out.exr"
    write_frame(out, frame)
    back, spec = _oiio_read(out)
    assert spec.format == oiio.TypeDesc("float")
    for i, n in enumerate(spec.channelnames):
        np.testing.assert_array_equal(back[..., i], by_name[n])


def test_exr_half_out_from_integer_source(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    src = tmp_path / "in.png"
    _oiio_write(src, data, "uint16")
    frame = read_frame(src)
    out = tmp_path / "out.exr"
    write_frame(out, frame)
    back, spec = _oiio_read(out)
    assert spec.format == oiio.TypeDesc("half")
    assert np.abs(back - data / 65535.0).max() < 1e-3  # half precision near 1


def test_dpx_10bit_round_trip(tmp_path: Path) -> None:
    codes = RNG.integers(0, 1024, (H, W, 3))
    src = tmp_path / "in.dpx"
    _oiio_write(src, (codes / 1023.0).astype(np.float32), "uint16", bits=10)
    frame = read_frame(src)
    assert frame.format.bits_per_sample == 10 and frame.format.pixel_type == "uint16"
    err_in = np.abs(frame.pixels.astype(np.float64) - codes / 1023.0).max()
    assert err_in <= 1 / 1023 / 2
    out = tmp_path / "out.dpx"
    write_frame(out, frame)
    back, spec = _oiio_read(out, "uint16")
    assert spec.get_int_attribute("oiio:BitsPerSample") == 10
    back_codes = np.rint(back.astype(np.float64) * 1023 / 65535)
    assert np.abs(back_codes - codes).max() <= 1  # error <= 1/1023
    np.testing.assert_array_equal(back_codes, codes)  # measured: exact


def test_dpx_is_the_file_openimageio_writes_and_a_failed_write_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DPX layouts facefix.io.dpx does not pack (here grey) are encoded through an ImageBuf (whose write
    releases Python's interpreter lock): the pixels on disk are the bytes OpenImageIO's plain writer gives;
    a failed write is one line, no file."""
    import struct

    codes = RNG.integers(0, 1024, (H, W, 1))
    plain = tmp_path / "plain.dpx"
    _oiio_write(plain, (codes / 1023.0).astype(np.float32), "uint16", names=("Y",), bits=10)
    frame = read_frame(plain, codes=True)
    ours = tmp_path / "ours.dpx"
    write_frame(ours, frame)
    a, b = plain.read_bytes(), ours.read_bytes()
    start = struct.unpack("<I" if a[:4] == b"XPDS" else ">I", a[4:8])[0]  # offset to the image data
    assert len(a) == len(b) and 2048 <= start < len(a) and a[start:] == b[start:]
    assert a[768:start] == b[768:start]  # image, orientation, film and TV headers

    class FailingBuf:
        def __init__(self, spec: oiio.ImageSpec) -> None:
            pass

        def set_pixels(self, roi: object, data: np.ndarray) -> bool:
            return True

        def write(self, path: str, fileformat: str = "") -> bool:
            Path(path).write_bytes(b"SDPX half")  # as a full disk would leave it
            return False

        def geterror(self) -> str:
            return "write failed: No space left on device"

    monkeypatch.setattr(oiio, "ImageBuf", FailingBuf)
    with pytest.raises(OutputError, match=r"^cannot write .*failed.dpx: write failed: No space left on device$"):
        write_frame(tmp_path / "failed.dpx", frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.dpx", "plain.dpx"]


@pytest.mark.parametrize("fmt,maxcode", [("uint8", 255), ("uint16", 65535)])
def test_tiff_integer_round_trip(tmp_path: Path, fmt: str, maxcode: int) -> None:
    data = RNG.integers(0, maxcode + 1, (H, W, 4)).astype(fmt)
    src = tmp_path / "in.tif"
    _oiio_write(src, data, fmt, ("R", "G", "B", "A"))
    frame = read_frame(src)
    assert frame.format.pixel_type == fmt
    np.testing.assert_allclose(frame.pixels, data / maxcode, atol=0.5 / maxcode / 10)
    out = tmp_path / "out.tif"
    write_frame(out, frame)
    back, spec = _oiio_read(out, fmt)
    assert spec.format == oiio.TypeDesc(fmt) and spec.nchannels == 4
    np.testing.assert_array_equal(back, data)


def test_tiff_float_round_trip_keeps_out_of_range(tmp_path: Path) -> None:
    data = (RNG.standard_normal((H, W, 3)) * 3).astype(np.float32)
    src = tmp_path / "in.tif"
    _oiio_write(src, data, "float")
    frame = read_frame(src)
    assert frame.format.pixel_type == "float"
    out = tmp_path / "out.tif"
    write_frame(out, frame)
    back, spec = _oiio_read(out)
    assert spec.format == oiio.TypeDesc("float")
    np.testing.assert_array_equal(back, data)


def test_png_16bit_round_trip_exact(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, (H, W, 4)).astype(np.uint16)
    data[..., 3] = RNG.integers(1, 65536, (H, W))  # straight alpha kept as stored, not premultiplied
    src = tmp_path / "in.png"
    _oiio_write(src, data, "uint16", ("R", "G", "B", "A"), {"oiio:UnassociatedAlpha": 1})
    frame = read_frame(src)
    assert frame.format.pixel_type == "uint16"
    assert np.abs(frame.pixels.astype(np.float64) - data / 65535.0).max() <= 0.5 / 65535
    out = tmp_path / "out.png"
    write_frame(out, frame)
    inp = oiio.ImageInput.open(str(out), _unassoc())
    back = inp.read_image("uint16")
    inp.close()
    np.testing.assert_array_equal(back, data)


def _unassoc() -> oiio.ImageSpec:
    cfg = oiio.ImageSpec()
    cfg.attribute("oiio:UnassociatedAlpha", 1)
    return cfg


def test_png_8bit_and_grey(tmp_path: Path) -> None:
    data = RNG.integers(0, 256, (H, W, 1)).astype(np.uint8)
    src = tmp_path / "grey.png"
    _oiio_write(src, data, "uint8")
    frame = read_frame(src)
    assert frame.pixels.shape == (H, W, 3) and frame.format.is_grey
    for c in range(3):
        np.testing.assert_allclose(frame.pixels[..., c], data[..., 0] / 255.0, atol=1e-7)
    out = tmp_path / "out.png"
    write_frame(out, frame)
    back, spec = _oiio_read(out, "uint8")
    assert spec.nchannels == 1 and spec.format == oiio.TypeDesc("uint8")
    np.testing.assert_array_equal(back, data)
    out16 = tmp_path / "out16.png"
    write_frame(out16, frame, pixel_type="uint16")
    back16, spec16 = _oiio_read(out16, "uint16")
    assert spec16.format == oiio.TypeDesc("uint16")
    np.testing.assert_array_equal(back16, data.astype(np.uint16) * 257)


def test_png_out_is_16bit_from_float(tmp_path: Path) -> None:
    frame = Frame(3, np.full((H, W, 3), 0.5, np.float32), FrameFormat(W, H, pixel_type="half", file_format="openexr"))
    out = tmp_path / "o.png"
    write_frame(out, frame)
    back, spec = _oiio_read(out, "uint16")
    assert spec.format == oiio.TypeDesc("uint16")
    assert int(back.max()) == round(0.5 * 65535)


def test_integer_outputs_clamp_and_round(tmp_path: Path) -> None:
    px = np.zeros((2, 4, 3), np.float32)
    px[0, :, 0] = [-1.0, 1.5, np.nan, 0.5 / 255 + 1e-4]
    frame = Frame(0, px, FrameFormat(4, 2, pixel_type="float", file_format="openexr"))
    out = tmp_path / "o.png"
    write_frame(out, frame, pixel_type="uint8")
    back, _ = _oiio_read(out, "uint8")
    assert back[0, :, 0].tolist() == [0, 255, 0, 1]


def test_jpeg_reads_and_writes_without_alpha(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([xx / W, yy / H, np.full_like(xx, 0.5, dtype=float)], -1)
    src = tmp_path / "in.jpg"
    _oiio_write(src, (smooth * 255).round().astype(np.uint8), "uint8", attrs={"CompressionQuality": 98})
    frame = read_frame(src)
    assert frame.format.pixel_type == "uint8" and frame.pixels.shape == (H, W, 3)
    assert np.abs(frame.pixels - smooth).max() < 0.05
    rgba = Frame(0, np.concatenate([frame.pixels, np.ones((H, W, 1), np.float32)], 2),
                 FrameFormat(W, H, ("R", "G", "B", "A"), "uint8", 8))
    out = tmp_path / "out.jpg"
    write_frame(out, rgba)
    _, spec = _oiio_read(out)
    assert spec.nchannels == 3


def test_missing_and_truncated_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"frame 7 is missing: .*nope\.exr"):
        read_frame(tmp_path / "nope.exr", 7)
    src = tmp_path / "full.exr"
    _oiio_write(src, RNG.random((64, 64, 4)).astype(np.float32), "half", ("R", "G", "B", "A"), {"compression": "piz"})
    blob = src.read_bytes()
    for name, cut in (("half.exr", len(blob) // 2), ("head.exr", 100)):
        bad = tmp_path / name
        bad.write_bytes(blob[:cut])
        with pytest.raises(InputError, match=name.replace(".", r"\.")) as info:
            read_frame(bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(("ext", "fmt", "names", "bits"), [
    ("exr", "half", ("R", "G", "B", "A"), None), ("exr", "float", ("Y",), None), ("dpx", "uint16", ("R", "G", "B"), 10),
    ("tif", "uint16", ("R", "G", "B", "A"), None), ("png", "uint8", ("R", "G", "B"), None)])
def test_format_from_the_header_alone(tmp_path: Path, ext: str, fmt: str, names: tuple[str, ...], bits: int | None
                                      ) -> None:
    """read_format gives read_frame's FrameFormat without reading pixels: it still does for a file whose pixels
    were cut off after the header, which read_frame refuses."""
    path = tmp_path / f"whole.{ext}"
    data = RNG.random((64, 48, len(names))).astype(np.float32)
    _oiio_write(path, data, fmt, names, {"FramesPerSecond": "24/1"} if ext == "exr" else None, bits)
    want = read_frame(path).format
    assert read_format(path) == want
    if ext == "dpx":  # uncompressed, so cutting the pixels keeps a readable header
        cut = tmp_path / "cut.dpx"
        cut.write_bytes(path.read_bytes()[:4096])
        with pytest.raises(InputError):
            read_frame(cut)
        assert read_format(cut).channel_names == want.channel_names
        assert (read_format(cut).width, read_format(cut).height, read_format(cut).bits_per_sample) == (48, 64, 10)
    with pytest.raises(InputError, match=r"frame 3 is missing"):
        read_format(tmp_path / "nope.exr", 3)


def test_unknown_extension_and_unwritable_folder(tmp_path: Path) -> None:
    frame = Frame(0, np.zeros((2, 2, 3), np.float32), FrameFormat(2, 2))
    with pytest.raises(OutputError, match=r"\.xyz"):
        write_frame(tmp_path / "a.xyz", frame)
    with pytest.raises(OutputError, match="does not exist"):
        write_frame(tmp_path / "no" / "a.exr", frame)


def test_atomic_write_leaves_nothing_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = Frame(0, np.zeros((2, 2, 3), np.float32), FrameFormat(2, 2))

    class Boom(RuntimeError):
        pass

    real_create = oiio.ImageOutput.create

    class Failing:
        def __init__(self, inner: oiio.ImageOutput) -> None:
            self.inner = inner

        def open(self, *a: object) -> bool:
            return self.inner.open(*a)

        def write_image(self, data: np.ndarray) -> bool:
            # fail mid-write, as a full disk would
            raise Boom("disk full")

        def close(self) -> bool:
            return self.inner.close()

        def geterror(self) -> str:
            return ""

    monkeypatch.setattr(oiio.ImageOutput, "create", staticmethod(lambda p: Failing(real_create(p))))
    target = tmp_path / "out.exr"
    with pytest.raises(Boom):
        write_frame(target, frame)
    assert list(tmp_path.iterdir()) == []
    # and a failed rewrite leaves the previous file untouched
    monkeypatch.undo()
    write_frame(target, frame)
    before = target.read_bytes()
    monkeypatch.setattr(oiio.ImageOutput, "create", staticmethod(lambda p: Failing(real_create(p))))
    with pytest.raises(Boom):
        write_frame(target, Frame(0, np.ones((2, 2, 3), np.float32), FrameFormat(2, 2)))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.exr"]


def test_integer_codes_to_float_match_the_float64_route() -> None:
    """The float32 fast path gives exactly the float64 value for every 8- and 16-bit code."""
    from facefix.io.frames import unit_from_codes

    for ptype, dtype in (("uint8", np.uint8), ("uint16", np.uint16)):
        top = np.iinfo(dtype).max
        codes = np.arange(top + 1, dtype=dtype).reshape(1, -1, 1)
        fast = unit_from_codes(codes, 8 if ptype == "uint8" else 16)
        assert fast.dtype == np.float32
        np.testing.assert_array_equal(fast, (codes.astype(np.float64) / top).astype(np.float32))


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_deep_codes_are_exactly_the_float64_route_both_ways(bits: int) -> None:
    """10- to 16-bit codes in a 16-bit container: from float32 (computed in float32, half codes redone) and
    to float32 (a table) equal the float64 route exactly -- at every half code, its float32 neighbours, every
    code, random values and NaN/Inf."""
    from facefix.io.frames import codes_from_unit, unit_from_codes

    top = 2**bits - 1
    k = np.arange(top + 1, dtype=np.float64)
    halves = ((k + 0.5) / top).astype(np.float32)
    v = np.concatenate([halves, np.nextafter(halves, np.float32(0)), np.nextafter(halves, np.float32(2)),
                        (k / top).astype(np.float32), np.random.default_rng(5).uniform(-0.1, 1.1, 300_000).astype(np.float32),
                        np.array([np.nan, np.inf, -np.inf, -0.0, 2.0, -1.0], np.float32)]).reshape(1, -1, 1)
    exact = np.rint(np.clip(np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0), 0, 1) * top)
    if bits < 16:
        exact = np.rint(exact * (65535 / top))
    np.testing.assert_array_equal(codes_from_unit(v, "uint16", bits), exact.astype(np.uint16))
    codes = np.arange(65536, dtype=np.uint16).reshape(1, -1, 1)
    want = (np.rint(codes.astype(np.float64) * (top / 65535)) / top).astype(np.float32)
    np.testing.assert_array_equal(unit_from_codes(codes, bits), want)
    out = np.empty(codes.shape, np.float32)
    assert unit_from_codes(codes, bits, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_quantise_float32_path_agrees_with_exact_rounding() -> None:
    """Codes read back exactly; arbitrary values land within one code of exact rounding; NaN/Inf clamp."""
    from facefix.io.frames import codes_from_unit

    for ptype, dtype in (("uint8", np.uint8), ("uint16", np.uint16)):
        top = np.iinfo(dtype).max
        bits = 8 if ptype == "uint8" else 16
        exact_codes = (np.arange(top + 1, dtype=np.float64) / top).astype(np.float32).reshape(1, -1, 1)
        np.testing.assert_array_equal(codes_from_unit(exact_codes, ptype, bits).ravel(), np.arange(top + 1))
        rng = np.random.default_rng(3)
        v = rng.uniform(-0.2, 1.2, (1, 200_000, 1)).astype(np.float32)
        ref = np.rint(np.clip(v.astype(np.float64), 0, 1) * top)
        got = codes_from_unit(v, ptype, bits)
        assert got.dtype == dtype
        diff = np.abs(got.astype(np.int64) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < (1e-4 if bits == 8 else 1e-12)
        special = np.array([np.nan, np.inf, -np.inf, -1.0, 2.0], np.float32).reshape(1, -1, 1)
        np.testing.assert_array_equal(codes_from_unit(special, ptype, bits).ravel(), [0, top, 0, 0, top])



@pytest.mark.parametrize(("ext", "ptype", "bits"), [("png", "uint8", 8), ("tif", "uint16", 16), ("dpx", "uint16", 10)])
def test_codes_read_keeps_the_files_integers_and_writes_them_back_unchanged(tmp_path: Path, ext: str, ptype: str,
                                                                            bits: int) -> None:
    """codes=True keeps the stored integers; written to the same type they come back bit for bit, and
    their float view is exactly what a plain read gives."""
    top = 2**bits - 1
    stored = RNG.integers(0, top + 1, (H, W, 3)).astype(np.float64) / top
    src = tmp_path / f"in.{ext}"
    _oiio_write(src, stored.astype(np.float32), ptype, bits=bits if bits != 16 else None)
    raw = _oiio_read(src, ptype)[0]
    coded = read_frame(src, codes=True)
    assert coded.is_codes and coded.pixels.dtype == np.dtype(ptype)
    np.testing.assert_array_equal(coded.pixels, raw)
    plain = read_frame(src)
    assert not plain.is_codes
    np.testing.assert_array_equal(coded.unit_pixels(), plain.pixels)
    np.testing.assert_allclose(plain.pixels, stored, atol=1e-7)

    same = tmp_path / f"out.{ext}"
    write_frame(same, coded)
    np.testing.assert_array_equal(_oiio_read(same, ptype)[0], raw)
    # Another format (EXR half) gets what the float frame would give.
    via_codes, via_float = tmp_path / "codes.exr", tmp_path / "float.exr"
    write_frame(via_codes, coded)
    write_frame(via_float, plain)
    np.testing.assert_array_equal(_oiio_read(via_codes, "half")[0], _oiio_read(via_float, "half")[0])


def test_codes_to_another_depth_and_to_grey_go_through_float(tmp_path: Path) -> None:
    codes = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    frame = Frame(1, codes, FrameFormat.for_pixels(codes, "uint8"))
    assert frame.is_codes  # integer pixels of the format's own type are codes, not cast
    out = tmp_path / "deep.png"
    write_frame(out, frame, pixel_type="uint16")
    np.testing.assert_array_equal(_oiio_read(out, "uint16")[0], codes.astype(np.uint16) * 257)
    grey = np.repeat(codes[..., :1], 3, axis=2)
    gframe = Frame(1, grey, FrameFormat(W, H, pixel_type="uint8", bits_per_sample=8, grey_channel="Y"))
    write_frame(tmp_path / "grey.png", gframe)
    back = read_frame(tmp_path / "grey.png", codes=True)
    assert back.format.is_grey
    np.testing.assert_array_equal(back.pixels, grey)
    # Integers of another type than the format's are values, cast to float32 as before.
    assert not Frame(1, codes, FrameFormat.for_pixels(codes, "uint16")).is_codes
