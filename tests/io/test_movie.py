"""Movies through PyAV: write/read round trips per container, frame ranges, audio remux, aborts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from facefix.errors import InputError, OutputError, SettingsError
from facefix.io import Frame, FrameFormat, MovieSink, MovieSource, open_sink, open_source
from facefix.io.movie import fps_fraction

H, W, N = 48, 64, 10
_BLOCKS = np.random.default_rng(3).random((H // 16, W // 16, 3))


def _image(n: int) -> np.ndarray:
    """Flat 16x16 colour patches (chroma subsampling leaves their insides alone), brighter each frame."""
    img = np.kron(_BLOCKS * 0.6 + 0.04 * n, np.ones((16, 16, 1)))
    return img.astype(np.float32)


def _inside() -> np.ndarray:
    """Mask of pixels at least 4 px inside their patch."""
    tile = np.zeros((16, 16), bool)
    tile[4:12, 4:12] = True
    return np.tile(tile, (H // 16, W // 16))


def _fmt() -> FrameFormat:
    return FrameFormat(W, H, ("R", "G", "B"), "float", 32)


def _write_movie(path: Path, codec: str = "auto", n: int = N, audio_from: Path | None = None) -> None:
    sink = open_sink(str(path), None, fps=24.0, codec=codec, audio_from=str(audio_from) if audio_from else None)
    for i in range(n):
        sink.write(Frame(i, _image(i), _fmt()))
    sink.close()


# Measured max errors inside the patches (see the report): prores ~0.0013, h264 ~0.015, mjpeg ~0.02.
@pytest.mark.parametrize(
    "name,codec,bits,bound",
    [("a.mov", "auto", 10, 0.004), ("a.mp4", "auto", 8, 0.03), ("a.mkv", "auto", 8, 0.03), ("a.avi", "auto", 8, 0.04)],
)
def test_round_trip(tmp_path: Path, name: str, codec: str, bits: int, bound: float) -> None:
    path = tmp_path / name
    _write_movie(path, codec)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left
    src = open_source(str(path))
    assert isinstance(src, MovieSource) and src.kind == "movie"
    assert src.frame_numbers == list(range(N))
    assert src.fps == pytest.approx(24.0)
    assert not src.has_audio and not src.is_float
    assert src.format.bits_per_sample == bits
    m = _inside()
    errors = []
    for frame in src:
        assert frame.pixels.shape == (H, W, 3) and frame.pixels.dtype == np.float32
        errors.append(float(np.abs(frame.pixels - _image(frame.number))[m].max()))
    src.close()
    assert max(errors) < bound, errors


def test_prores_is_422_hq_10bit(tmp_path: Path) -> None:
    path = tmp_path / "p.mov"
    _write_movie(path, n=2)
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        assert cc.name == "prores" and cc.pix_fmt == "yuv422p10le"
        assert cc.profile in ("HQ", "3", 3) or "HQ" in str(cc.profile)


def test_frame_ranges_and_random_access(tmp_path: Path) -> None:
    path = tmp_path / "r.mp4"
    _write_movie(path)
    sequential = [f.pixels for f in open_source(str(path))]
    src = MovieSource(path, frames="2-8x3")
    assert src.frame_numbers == [2, 5, 8]
    for f in src:
        np.testing.assert_array_equal(f.pixels, sequential[f.number])
    np.testing.assert_array_equal(src.read(1).pixels, sequential[1])  # backward
    np.testing.assert_array_equal(src.read(9).pixels, sequential[9])
    with pytest.raises(InputError, match=r"frame 10 is missing: .*r\.mp4"):
        src.read(10)
    with pytest.raises(InputError, match="frame 10 is missing"):
        MovieSource(path, frames="8-12")


def test_bad_movies(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match=r"bad\.mp4"):
        open_source(str(bad))
    with pytest.raises(InputError, match="file not found"):
        open_source(str(tmp_path / "none.mov"))
    with pytest.raises(OutputError, match="does not exist"):
        MovieSink(tmp_path / "no" / "x.mp4", 24.0)
    with pytest.raises(SettingsError, match="--codec"):
        MovieSink(tmp_path / "x.mp4", 24.0, codec="nope")
    with pytest.raises(OutputError, match="even"):
        sink = MovieSink(tmp_path / "odd.mp4", 24.0)
        sink.write(Frame(0, np.zeros((5, 7, 3), np.float32), FrameFormat(7, 5)))
    assert list(tmp_path.iterdir()) == [bad]


def test_exception_or_abort_leaves_no_output(tmp_path: Path) -> None:
    path = tmp_path / "x.mov"
    with pytest.raises(RuntimeError):
        with MovieSink(path, 24.0) as sink:
            sink.write(Frame(0, _image(0), _fmt()))
            raise RuntimeError("render failed")
    sink2 = MovieSink(path, 24.0)
    sink2.write(Frame(0, _image(0), _fmt()))
    sink2.abort()
    assert list(tmp_path.iterdir()) == []
    assert not sink2.is_done(0)


def test_fps_fraction() -> None:
    assert fps_fraction(23.976) == Fraction(24000, 1001)
    assert fps_fraction(29.97) == Fraction(30000, 1001)
    assert fps_fraction(25.0) == 25


def _movie_with_audio(path: Path, seconds: float = N / 24) -> int:
    """An H.264 + AAC movie written with PyAV directly; returns the number of audio packets."""
    rate = 48000
    packets = 0
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=rate)
        a.layout = "stereo"
        for n in range(N):
            vf = av.VideoFrame.from_ndarray((_image(n) * 255).round().astype(np.uint8), format="rgb24")
            vf.pts = n
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(rate * seconds)) / rate
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.5
        for start in range(0, len(tone), 1024):
            chunk = tone[start : start + 1024]
            af = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = rate, start
            for p in a.encode(af):
                c.mux(p)
                packets += 1
        for p in a.encode():
            c.mux(p)
            packets += 1
    return packets


def _audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size > 0]


@pytest.mark.parametrize("name", ["with_audio.mov", "with_audio.mp4"])
def test_audio_is_copied_without_reencoding(tmp_path: Path, name: str) -> None:
    src_path = tmp_path / "src.mp4"
    _movie_with_audio(src_path)
    src = open_source(str(src_path))
    assert src.has_audio
    out = tmp_path / name
    sink = open_sink(str(out), src.format, fps=src.fps, audio_from=str(src_path))
    for frame in src:
        sink.write(frame)
    sink.close()
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.video[0].index == 0
    source_packets = _audio_payloads(src_path)
    copied = _audio_payloads(out)
    # packet for packet, byte for byte (a re-encode would change them)
    assert len(copied) >= len(source_packets) - 1
    assert copied == source_packets[: len(copied)]
    back = open_source(str(out))
    assert back.has_audio and back.frame_numbers == list(range(N))


def _index_image(i: int) -> np.ndarray:
    """A flat frame whose colour encodes its index (R: i mod 16, G: i div 16), robust to 8-bit coding."""
    px = np.empty((H, W, 3), np.float32)
    px[..., 0] = (i % 16) / 15.0
    px[..., 1] = (i // 16) / 15.0
    px[..., 2] = 0.5
    return px


def _decoded_index(px: np.ndarray) -> int:
    return int(round(float(px[..., 0].mean()) * 15)) + 16 * int(round(float(px[..., 1].mean()) * 15))


@pytest.mark.parametrize("name", ["long.mp4", "long.mkv"])
def test_seeking_lands_on_the_right_frame(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    sink = MovieSink(path, 24.0)
    for i in range(150):
        sink.write(Frame(i, _index_image(i), _fmt()))
    sink.close()
    src = MovieSource(path)
    assert src.frame_numbers == list(range(150))
    for n in (120, 30, 149, 0, 75, 76, 130, 2):  # backward and far-forward jumps seek
        assert _decoded_index(src.read(n).pixels) == n


def test_movie_memory_stays_flat(tmp_path: Path) -> None:
    import gc
    import tracemalloc

    path = tmp_path / "m.mp4"
    sink = MovieSink(path, 24.0)
    for i in range(200):
        sink.write(Frame(i, _index_image(i % 200), _fmt()))
    sink.close()

    def peak(count: int) -> int:
        src = MovieSource(path, frames=f"0-{count - 1}")
        gc.collect()
        tracemalloc.start()
        for frame in src:
            del frame
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        src.close()
        return top

    short, long = peak(20), peak(200)
    frame_bytes = H * W * 3 * 4
    assert long - short < 20 * frame_bytes, (short, long)  # keeping 180 frames would cost 180
