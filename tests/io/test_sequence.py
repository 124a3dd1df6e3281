"""Image sequences: VFX patterns, frame ranges, discovery, errors, resume checks, flat memory."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from facefix.errors import InputError, OutputError, SettingsError
from facefix.io import (
    Frame,
    FrameFormat,
    ImageSequenceSink,
    ImageSequenceSource,
    Sink,
    Source,
    is_movie,
    open_sink,
    open_source,
    parse_frames,
)

H, W = 6, 8


def _value(n: int) -> float:
    return (n % 97) / 128.0  # exact in half


def _make_sequence(folder: Path, numbers: list[int], pad: int = 4, name: str = "shot", ext: str = "exr",
                   fps: tuple[int, int] | None = None, size: tuple[int, int] = (H, W)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        path = folder / f"{name}.{n:0{pad}d}.{ext}"
        spec = oiio.ImageSpec(size[1], size[0], 3, "half")
        if fps:
            spec.attribute("FramesPerSecond", oiio.TypeDesc("rational2i"), fps)
        out = oiio.ImageOutput.create(str(path))
        out.open(str(path), spec)
        out.write_image(np.full((size[0], size[1], 3), _value(n), np.float32))
        out.close()


@pytest.mark.parametrize("pattern", ["shot.####.exr", "shot.%04d.exr", "shot.@@@@.exr", "shot.#.exr"])
def test_patterns_discover_frames_on_disk(tmp_path: Path, pattern: str) -> None:
    _make_sequence(tmp_path, [1001, 1002, 1003, 1005])
    (tmp_path / "shot.exr").touch()  # not part of the sequence
    _make_sequence(tmp_path, [1001], pad=5)  # shot.01001.exr: other padding, not ours
    src = open_source(str(tmp_path / pattern))
    assert isinstance(src, ImageSequenceSource) and src.kind == "sequence"
    assert src.frame_numbers == [1001, 1002, 1003, 1005]
    assert src.path_for(1002) == str(tmp_path / "shot.1002.exr")
    values = [float(f.pixels[0, 0, 0]) for f in src]
    assert values == [_value(n) for n in (1001, 1002, 1003, 1005)]
    assert src.is_float and src.format.pixel_type == "half"


def test_explicit_range_in_pattern_and_missing_frame(tmp_path: Path) -> None:
    _make_sequence(tmp_path, [1001, 1002, 1003, 1005])
    src = open_source(str(tmp_path / "shot.1001-1005#.exr"))
    assert src.frame_numbers == [1001, 1002, 1003, 1004, 1005]
    assert src.read(1003).number == 1003
    missing = tmp_path / "shot.1004.exr"
    with pytest.raises(InputError, match=rf"^frame 1004 is missing: {missing}$"):
        src.read(1004)
    with pytest.raises(InputError, match="frame 1004 is missing"):
        list(src)


def test_frames_option_with_step_and_list(tmp_path: Path) -> None:
    _make_sequence(tmp_path, list(range(1001, 1011)))
    src = open_source(str(tmp_path / "shot.####.exr"), frames="1001-1009x2")
    assert src.frame_numbers == [1001, 1003, 1005, 1007, 1009]
    assert [f.number for f in src] == [1001, 1003, 1005, 1007, 1009]
    assert parse_frames("1,5,9-12") == [1, 5, 9, 10, 11, 12]
    with pytest.raises(SettingsError, match="--frames"):
        parse_frames("ten")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1005-1001", "--frames 1005-1001: the range runs backwards; write 1001-1005"),
        ("1005-1001x2", "--frames 1005-1001x2: the range runs backwards; write 1001-1005x2"),
        # The suggestion names the same frames (1006, 1004, 1002), in order.
        ("1006-1001x2", "--frames 1006-1001x2: the range runs backwards; write 1002-1006x2"),
        ("1005-1001x-1", "--frames 1005-1001x-1: the range runs backwards; write 1001-1005"),
        ("-1--5", "--frames -1--5: the range runs backwards; write -5--1"),
        ("1,12-9", "--frames 1,12-9: the range 12-9 runs backwards; write 1,9-12"),
        ("1 , 1005 - 1001", "--frames 1,1005-1001: the range 1005-1001 runs backwards; write 1,1001-1005"),
    ],
)
def test_backwards_frame_range_is_refused(spec: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_frames(spec)
    assert str(info.value) == message


def test_backwards_frame_range_refused_by_sources(tmp_path: Path) -> None:
    _make_sequence(tmp_path, list(range(1001, 1006)))
    with pytest.raises(SettingsError, match="runs backwards; write 1001-1005"):
        open_source(str(tmp_path / "shot.####.exr"), frames="1005-1001")
    with pytest.raises(SettingsError, match=r"^--in 9-3: the range runs backwards; write 3-9$"):
        parse_frames("9-3", "--in")


@pytest.mark.parametrize(
    ("spec", "frames"),
    [
        ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
        ("1001-1009x2", [1001, 1003, 1005, 1007, 1009]),
        ("1,5,9-12", [1, 5, 9, 10, 11, 12]),
        ("1001", [1001]),
        ("1001-1001", [1001]),
        ("-5--3", [-5, -4, -3]),
        ("-2-1", [-2, -1, 0, 1]),
        ("-3", [-3]),
        ("1-10y3", [2, 3, 5, 6, 8, 9]),
        ("1001 - 1003", [1001, 1002, 1003]),
    ],
)
def test_forward_frame_specs_still_parse(spec: str, frames: list[int]) -> None:
    assert parse_frames(spec) == frames


def test_no_frames_match(tmp_path: Path) -> None:
    _make_sequence(tmp_path, [1, 2], name="other")
    with pytest.raises(InputError, match="no frames match"):
        open_source(str(tmp_path / "shot.####.exr"))
    with pytest.raises(InputError, match="no frames match"):
        open_source(str(tmp_path / "nowhere" / "shot.####.exr"))


def test_truncated_frame_in_sequence_names_the_file(tmp_path: Path) -> None:
    _make_sequence(tmp_path, [1, 2, 3])
    bad = tmp_path / "shot.0002.exr"
    bad.write_bytes(bad.read_bytes()[:60])
    src = open_source(str(tmp_path / "shot.####.exr"))
    src.read(1)
    with pytest.raises(InputError, match=str(bad)):
        src.read(2)


def test_still_file_and_fps(tmp_path: Path) -> None:
    _make_sequence(tmp_path, [1001], fps=(25, 1))
    still = tmp_path / "plate_v001.exr"
    (tmp_path / "shot.1001.exr").rename(still)
    src = open_source(str(still))
    assert len(src.frame_numbers) == 1
    assert src.read(src.frame_numbers[0]).pixels[0, 0, 0] == _value(1001)
    assert src.fps == 25.0
    with pytest.raises(InputError, match="file not found"):
        open_source(str(tmp_path / "gone.exr"))


def test_fps_defaults_to_24(tmp_path: Path) -> None:
    _make_sequence(tmp_path, [1])
    assert open_source(str(tmp_path / "shot.####.exr")).fps == 24.0


def test_sink_writes_pattern_and_is_done(tmp_path: Path) -> None:
    _make_sequence(tmp_path / "in", [1, 2, 3])
    src = open_source(str(tmp_path / "in" / "shot.####.exr"))
    (tmp_path / "out").mkdir()
    sink = open_sink(str(tmp_path / "out" / "res.%04d.exr"), src.format, fps=25.0)
    assert isinstance(sink, Sink) and isinstance(src, Source)
    assert not sink.is_done(1)
    for frame in src:
        sink.write(frame)
    sink.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["res.0001.exr", "res.0002.exr", "res.0003.exr"]
    assert sink.is_done(2) and not sink.is_done(4)
    # a file cut short of its header is not done (resume rewrites it)
    cut = tmp_path / "out" / "res.0003.exr"
    cut.write_bytes(cut.read_bytes()[:20])
    assert not sink.is_done(3)
    back = open_source(str(tmp_path / "out" / "res.####.exr"))
    assert back.fps == 25.0
    np.testing.assert_array_equal(back.read(2).pixels, src.read(2).pixels)


def test_sink_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        ImageSequenceSink(str(tmp_path / "missing" / "o.####.exr"), None)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere: nothing to test then
            with pytest.raises(OutputError, match="not writable"):
                ImageSequenceSink(str(locked / "o.####.exr"), None)
    finally:
        locked.chmod(0o700)
    with pytest.raises(OutputError, match="unknown image extension"):
        ImageSequenceSink(str(tmp_path / "o.####.xyz"), None)
    still = ImageSequenceSink(str(tmp_path / "one.png"), None)
    fmt = FrameFormat(2, 2)
    still.write(Frame(5, np.zeros((2, 2, 3), np.float32), fmt))
    with pytest.raises(OutputError, match="single file"):
        still.write(Frame(6, np.zeros((2, 2, 3), np.float32), fmt))


def test_is_movie() -> None:
    assert is_movie("a/b.MOV") and is_movie("x.mp4") and is_movie("x.mkv") and is_movie("x.avi")
    assert not is_movie("shot.####.exr") and not is_movie("still.png")


def _read_all(src: ImageSequenceSource, count: int) -> int:
    gc.collect()
    tracemalloc.start()
    for i, frame in enumerate(src):
        if i + 1 >= count:
            break
        del frame
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_memory_stays_flat_with_clip_length(tmp_path: Path) -> None:
    _make_sequence(tmp_path, list(range(1, 201)), size=(64, 64))
    src = open_source(str(tmp_path / "shot.####.exr"))
    short = _read_all(src, 20)
    long = _read_all(src, 200)
    frame_bytes = 64 * 64 * 3 * 4
    # 180 more frames would cost >= 180 * frame_bytes if anything kept them.
    assert long - short < 4 * frame_bytes, (short, long)
    assert long < 20 * frame_bytes, long


@pytest.mark.parametrize("ext", ["dpx", "exr"])
def test_each_frame_keeps_its_own_timecode_through_a_sink(tmp_path, ext):
    """A sequence sink writes like its source's first frame, but every frame keeps its own metadata."""
    from facefix.io import read_frame, write_frame

    ptype, bits, name = ("uint16", 10, "dpx:TimeCode") if ext == "dpx" else ("half", 16, "smpte:TimeCode")
    values = {}
    for n in (1, 2, 3):
        fmt = FrameFormat(8, 6, ("R", "G", "B"), ptype, bits, file_format="dpx" if ext == "dpx" else "openexr",
                          attributes={"dpx:TimeCode": f"01:00:00:{n:02d}", "DocumentName": f"frame {n}"})
        write_frame(tmp_path / f"in.{n:04d}.{ext}", Frame(n, np.full((6, 8, 3), 0.25, np.float32), fmt))
        values[n] = read_frame(tmp_path / f"in.{n:04d}.{ext}", n)
    sink = ImageSequenceSink(str(tmp_path / f"out.####.{ext}"), like=values[1].format)
    for frame in values.values():
        sink.write(frame)
    for n, frame in values.items():
        got = read_frame(tmp_path / f"out.{n:04d}.{ext}").format.attributes
        assert got.get("DocumentName") == f"frame {n}"
        if name in frame.format.attributes:
            assert got[name] == frame.format.attributes[name]


@pytest.mark.parametrize("pattern", ["/a/b/out.####.dpx", "/a/b/out.%04d.dpx", "/a/b/out.@@@@.exr", "out_#.png",
                                     "/a/shot.1001-1100#.exr", "/a/shot.%06d.tif", "plate.1001.exr"])
def test_frame_paths_are_fileseqs(pattern):
    """The fast frame-path format gives fileseq's paths (padding, negative frames, wide numbers)."""
    import fileseq

    from facefix.io.sequence import frame_paths

    seq = fileseq.FileSequence(pattern)
    path_of = frame_paths(seq)
    for n in (-12, -3, 0, 7, 1001, 99999, 1234567):
        assert path_of(n) == str(seq.frame(n)), n
