"""Whole shots through run_clip and the CLI: formats, resume, interruption, bad input, determinism."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facefix import Face, FaceTracks, Settings
from facefix.cli import main
from facefix.demo import synth
from facefix.errors import InputError, OutputError
from facefix.io import Frame, FrameFormat, open_source, read_frame
from facefix.io.sequence import write_frame
from facefix.run import Interrupted, batch_sizes, run_clip

N = 4
SIZE = (160, 192)


def _tracks(clip, first=1001):
    per = {}
    for i, lm in enumerate(clip.landmarks):
        x0, y0 = lm.min(0) - 25
        x1, y1 = lm.max(0) + 25
        per[first + i] = [Face(box=(x0, y0, x1, y1), landmarks=lm, track_id=0)]
    return FaceTracks.from_faces(per)


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A half-float EXR (linear, with alpha) and a 16-bit PNG sequence of a moving real face."""
    root = tmp_path_factory.mktemp("shot")
    clip = synth.motion_clip(N, SIZE, translate=(2, 1), rotate_deg=1.0, start_scale=0.6)
    from facefix.colour import colour_transform

    lin = colour_transform("linear")
    for i, rgb in enumerate(clip.frames):
        n = 1001 + i
        write_frame(root / f"png.{n:04d}.png", Frame(n, rgb, FrameFormat.for_pixels(rgb, "uint16")))
        rgba = np.concatenate([lin.from_working(rgb), np.full(rgb.shape[:2] + (1,), 0.8, np.float32)], axis=2)
        write_frame(root / f"exr.{n:04d}.exr", Frame(n, rgba, FrameFormat.for_pixels(rgba, "half")))
    tracks = _tracks(clip)
    tracks.save(root / "tracks.json")
    return root, tracks


def _settings(**kw):
    base = dict(model="passthrough", temporal=0.0, mask="box")
    base.update(kw)
    return Settings(**base)


def test_exr_half_in_half_out_alpha_and_outside_untouched(shot, tmp_path):
    root, tracks = shot
    summary = run_clip(str(root / "exr.####.exr"), str(tmp_path / "o.####.exr"), _settings(), tracks=tracks,
                       progress=False, matte=str(tmp_path / "m.####.exr"))
    assert summary.frames_written == N and summary.faces_restored == N
    src, out, matte = (open_source(str(p)) for p in (root / "exr.####.exr", tmp_path / "o.####.exr", tmp_path / "m.####.exr"))
    for n in src.frame_numbers:
        a, b, m = src.read(n), out.read(n), matte.read(n)
        assert b.format.pixel_type == "half" and b.format.channel_names == a.format.channel_names
        assert np.array_equal(a.pixels[..., 3], b.pixels[..., 3])
        outside = m.pixels[..., 0] == 0
        assert 0 < outside.mean() < 1
        assert np.array_equal(a.pixels[outside], b.pixels[outside])
        inside = ~outside
        mse = float(np.mean((a.pixels[inside][:, :3] - b.pixels[inside][:, :3]) ** 2))
        assert 10 * np.log10(1 / max(mse, 1e-30)) >= 45


@pytest.mark.parametrize("per_batch", [1, 2, 3, 16, 32])
def test_batch_sizes_start_and_end_small(per_batch):
    for frames in range(0, 5 * per_batch + 3):
        sizes = batch_sizes(frames, per_batch)
        assert sum(sizes) == frames and all(s >= 1 for s in sizes)
        if frames:
            half = max(1, per_batch // 2)
            assert sizes[0] == min(half, frames) and sizes[-1] <= half
            assert max(sizes) <= per_batch and all(s == per_batch for s in sizes[1:-2])
    assert batch_sizes(240, 32) == [16] + [32] * 6 + [16, 16]


def test_run_sends_the_batches_batch_sizes_gives(shot, tmp_path, monkeypatch):
    import facefix.run as run_module

    root, tracks = shot
    seen = []
    queue = run_module.queue_batch

    def counting(images, *a, **kw):
        seen.append(len(images))
        return queue(images, *a, **kw)
    monkeypatch.setattr(run_module, "queue_batch", counting)
    run_clip(str(root / "png.####.png"), str(tmp_path / "a.####.png"), _settings(batch=2), tracks=tracks,
             progress=False)
    assert seen == batch_sizes(N, 2) == [1, 2, 1]


def test_png16_sequence_and_batch_size_does_not_change_output(shot, tmp_path):
    root, tracks = shot
    run_clip(str(root / "png.####.png"), str(tmp_path / "a.####.png"), _settings(batch=1, color_match=0.5),
             tracks=tracks, progress=False)
    run_clip(str(root / "png.####.png"), str(tmp_path / "b.####.png"), _settings(batch=3, color_match=0.5),
             tracks=tracks, progress=False)
    a, b = open_source(str(tmp_path / "a.####.png")), open_source(str(tmp_path / "b.####.png"))
    assert a.format.pixel_type == "uint16"
    for n in a.frame_numbers:
        assert np.array_equal(a.read(n).pixels, b.read(n).pixels)


@pytest.mark.parametrize(("ext", "ptype", "bits"), [("png", "uint8", 8), ("dpx", "uint16", 10)])
def test_integer_sequence_writes_what_the_float_core_gives(shot, tmp_path, ext, ptype, bits):
    """Integer files stay integer codes through run_clip (no full-frame float round trip): the written
    codes are restore_batch's float result rounded at the file's depth, and outside the matte the input's."""
    from facefix.colour import colour_transform
    from facefix.engine import Engine
    from facefix.io import read_frame
    from facefix.pipeline import restore_batch

    root, tracks = shot
    clip = open_source(str(root / "png.####.png"))
    for n in clip.frame_numbers:
        write_frame(tmp_path / f"in.{n:04d}.{ext}", clip.read(n), pixel_type=ptype, bits_per_sample=bits)
    s = _settings(mask="mesh")
    engine = Engine(s)
    engine._restorer = _Brighten()
    run_clip(str(tmp_path / f"in.####.{ext}"), str(tmp_path / f"out.####.{ext}"), s, tracks=tracks, progress=False,
             engine=engine)
    numbers = clip.frame_numbers
    plain = [read_frame(tmp_path / f"in.{n:04d}.{ext}").pixels for n in numbers]
    want = restore_batch(plain, [tracks.faces_at(n) for n in numbers], s, engine, frame_numbers=numbers,
                         colorspace=colour_transform("srgb"))
    for n, (pixels, alpha) in zip(numbers, want):
        src = read_frame(tmp_path / f"in.{n:04d}.{ext}", codes=True).pixels
        got = read_frame(tmp_path / f"out.{n:04d}.{ext}", codes=True)
        assert got.format.bits_per_sample == bits
        expected = read_frame(_written(tmp_path / f"want.{n:04d}.{ext}", pixels, got.format), codes=True).pixels
        np.testing.assert_array_equal(got.pixels, expected)
        np.testing.assert_array_equal(got.pixels[alpha == 0], src[alpha == 0])
        assert (got.pixels[alpha > 0.5] != src[alpha > 0.5]).any()


class _Brighten:
    def __call__(self, crops, fidelity=0.5):
        return (crops * 1.1).clamp(0, 1)


def _written(path, pixels, fmt):
    write_frame(path, Frame(0, pixels, fmt))
    return path


@pytest.mark.parametrize(("channels", "endian"), [(3, "big"), (4, "little")])
def test_dpx_frames_stay_their_words_and_write_what_the_codes_path_writes(shot, tmp_path, monkeypatch, channels,
                                                                          endian):
    """A 10-bit DPX sequence is read as its words and restored on the device: the files (and the matte) are
    byte for byte those of the path that reads integer codes, and frames without faces are their input's
    words exactly."""
    import facefix.io.regions as regions
    import facefix.io.sequence as sequence
    import facefix.run as run
    from facefix.engine import Engine
    from facefix.io.dpx import byte_order

    root, tracks = shot
    clip = open_source(str(root / "exr.####.exr" if channels == 4 else root / "png.####.png"))
    for n in clip.frame_numbers:
        frame = clip.read(n)
        fmt = FrameFormat(frame.format.width, frame.format.height, frame.format.channel_names, "uint16", 10,
                          attributes={"oiio:Endian": endian, "dpx:TimeCode": f"01:00:00:{n % 24:02d}"},
                          file_format="dpx")
        write_frame(tmp_path / f"in.{n:04d}.dpx", Frame(n, frame.pixels, fmt))
    some = FaceTracks.from_faces({n: tracks.faces_at(n) for n in clip.frame_numbers[:-1]})  # the last: no face
    s = _settings(mask="mesh", batch=3)
    engine = Engine(s)
    engine._restorer = _Brighten()
    # Packed frames are a GPU run's; the same steps run on the CPU here (torch's, not the CUDA kernels).
    on_gpu = run.frame_reader
    monkeypatch.setattr(run, "frame_reader", lambda src, dest, up, ct, dev: on_gpu(src, dest, up, ct,
                                                                                 torch.device("cuda")))
    reads = []
    packed_read = sequence.read_packed_frame
    monkeypatch.setattr(sequence, "read_packed_frame", lambda *a: reads.append(packed_read(*a)) or reads[-1])
    pools = []
    make_pool = run.io_threads
    monkeypatch.setattr(run, "io_threads", lambda workers, name: pools.append(workers) or make_pool(workers, name))
    run_clip(str(tmp_path / "in.####.dpx"), str(tmp_path / "p" / "o.####.dpx"), s, tracks=some, progress=False,
             engine=engine, matte=str(tmp_path / "p" / "m.####.exr"))
    assert len(reads) == N and all(r is not None for r in reads)
    words_threads = regions.FrameReader(clip, True).io_threads
    assert words_threads in pools and None not in pools  # no codec work: a few I/O threads, not one a core
    assert words_threads is not None and 2 <= words_threads <= regions.WORD_IO_THREADS
    monkeypatch.setattr(run, "frame_reader", lambda src, dest, up, ct, dev: regions.FrameReader(src, False))
    pools.clear()
    run_clip(str(tmp_path / "in.####.dpx"), str(tmp_path / "c" / "o.####.dpx"), s, tracks=some, progress=False,
             engine=engine, matte=str(tmp_path / "c" / "m.####.exr"))
    assert len(reads) == N and None in pools
    for n in clip.frame_numbers:
        name = f"o.{n:04d}.dpx"
        packed, codes = (tmp_path / "p" / name).read_bytes(), (tmp_path / "c" / name).read_bytes()
        assert packed[:36] + packed[136:] == codes[:36] + codes[136:]  # all but the file's own name
        assert packed != (tmp_path / f"in.{n:04d}.dpx").read_bytes()[: len(packed)] or n == clip.frame_numbers[-1]
        assert byte_order(tmp_path / "p" / name) == endian
        mattes = [read_frame(tmp_path / d / f"m.{n:04d}.exr").pixels for d in "pc"]
        np.testing.assert_array_equal(*mattes)
        assert (mattes[0].max() > 0) == (n != clip.frame_numbers[-1])
    last = clip.frame_numbers[-1]
    words = len(packed) - 8192
    assert (tmp_path / "p" / f"o.{last:04d}.dpx").read_bytes()[-words:] == (tmp_path / f"in.{last:04d}.dpx").read_bytes()[-words:]


def test_frame_range_with_step(shot, tmp_path):
    root, tracks = shot
    s = run_clip(str(root / "png.####.png"), str(tmp_path / "s.####.png"), _settings(), tracks=tracks,
                 frames="1001-1004x2", progress=False)
    assert s.frames_written == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.1001.png", "s.1003.png"]


def test_interrupted_run_leaves_whole_frames_and_resume_finishes(shot, tmp_path):
    root, tracks = shot
    dest = str(tmp_path / "r.####.exr")

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        run_clip(str(root / "exr.####.exr"), dest, _settings(batch=1), tracks=tracks, progress=False,
                 on_progress=stop_after_two)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert all(not name.startswith(".") for name in written), written  # no temp files left
    assert 2 <= len(written) < N
    before = {p: os.stat(tmp_path / p).st_mtime_ns for p in written}
    summary = run_clip(str(root / "exr.####.exr"), dest, _settings(batch=1), tracks=tracks, progress=False, resume=True)
    assert summary.frames_resumed == len(written) and summary.frames_written == N - len(written)
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in written} == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_clip(str(root / "exr.####.exr"), str(fresh / "r.####.exr"), _settings(batch=1), tracks=tracks, progress=False)
    a, b = open_source(dest), open_source(str(fresh / "r.####.exr"))
    for n in a.frame_numbers:
        assert np.array_equal(a.read(n).pixels, b.read(n).pixels)


def test_missing_and_corrupt_frames_name_the_file(shot, tmp_path):
    root, tracks = shot
    for n in range(1001, 1001 + N):
        (tmp_path / f"c.{n:04d}.png").write_bytes((root / f"png.{n:04d}.png").read_bytes())
    (tmp_path / "c.1002.png").unlink()
    with pytest.raises(InputError, match=r"c\.1002\.png"):
        run_clip(str(tmp_path / "c.####.png"), str(tmp_path / "out.####.png"), _settings(), tracks=tracks,
                 frames="1001-1004", progress=False)
    data = (root / "png.1002.png").read_bytes()
    (tmp_path / "c.1002.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"c\.1002\.png"):
        run_clip(str(tmp_path / "c.####.png"), str(tmp_path / "out.####.png"), _settings(), tracks=tracks,
                 frames="1001-1004", progress=False)
    assert not list(tmp_path.glob("out.1002*"))


def test_analysis_pass_reads_ahead_and_names_a_corrupt_frame(shot, tmp_path):
    """Without tracks the shot is analysed first, its frames read ahead on worker threads: the same
    tracks as reading them one by one, and a corrupt frame is still a one-line error naming it."""
    import threading

    from facefix.analyse import track_clip
    from facefix.io import open_source

    root, _ = shot
    src = open_source(str(root / "png.####.png"))

    class OneByOne:  # the same source, read on the calling thread only
        kind = "movie"
        is_float = src.is_float

        def read(self, n):
            return src.read(n)

    s = _settings()
    ahead = track_clip(src, src.frame_numbers, s, progress=False)
    serial = track_clip(OneByOne(), src.frame_numbers, s, progress=False)
    assert ahead.to_json() == serial.to_json() and ahead.faces_at(src.frame_numbers[0])
    for n in src.frame_numbers:
        (tmp_path / f"c.{n:04d}.png").write_bytes((root / f"png.{n:04d}.png").read_bytes())
    bad = src.frame_numbers[2]
    (tmp_path / f"c.{bad:04d}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = threading.active_count()
    with pytest.raises(InputError, match=rf"c\.{bad:04d}\.png"):
        track_clip(open_source(str(tmp_path / "c.####.png")), src.frame_numbers, s, progress=False)
    assert threading.active_count() == before  # the reading threads are gone


def test_unwritable_output_is_refused(shot, tmp_path):
    root, tracks = shot
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        run_clip(str(root / "png.####.png"), str(blocker / "o.####.png"), _settings(), tracks=tracks, progress=False)


def test_frames_without_faces_pass_through(shot, tmp_path):
    root, _ = shot
    s = run_clip(str(root / "exr.####.exr"), str(tmp_path / "n.####.exr"), _settings(), tracks=FaceTracks(),
                 progress=False)
    assert s.frames_without_faces == N and s.faces_restored == 0
    a, b = open_source(str(root / "exr.####.exr")), open_source(str(tmp_path / "n.####.exr"))
    for n in a.frame_numbers:
        assert np.array_equal(a.read(n).pixels, b.read(n).pixels)


def test_tiny_faces_are_counted(shot, tmp_path):
    root, tracks = shot
    s = run_clip(str(root / "png.####.png"), str(tmp_path / "t.####.png"), _settings(min_face=4000), tracks=tracks,
                 progress=False)
    assert s.faces_too_small == N and s.faces_restored == 0 and "too small" in s.line()


def test_cli_exit_codes_and_one_line_errors(shot, tmp_path, capsys):
    root, _ = shot
    ok = main(["restore", str(root / "png.####.png"), "-o", str(tmp_path / "cli.####.png"), "--model", "passthrough",
               "--tracks", str(root / "tracks.json"), "--temporal", "0", "--quiet"])
    assert ok == 0 and len(list(tmp_path.glob("cli.*.png"))) == N
    bad = main(["restore", str(root / "nothing.####.png"), "-o", str(tmp_path / "x.####.png"), "--quiet",
                "--tracks", str(root / "tracks.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 1 and len(err) == 1 and err[0].startswith("facefix: error:")
    assert main(["restore", str(root / "png.####.png"), "-o", str(tmp_path / "y.####.png"), "--strength", "2"]) == 1
    assert "--strength" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert main(["restore", str(root / "png.####.png"), "-o", str(tmp_path / "z.####.png"), "--model", "gfpgan-1.4",
                 "--tracks", str(root / "tracks.json"), "--quiet"]) == 1
    assert "models pull gfpgan-1.4" in capsys.readouterr().err


def test_movie_in_movie_out(tmp_path):
    from facefix.io import open_sink

    clip = synth.motion_clip(N, (96, 128), start_scale=0.45)
    src = tmp_path / "in.mp4"
    sink = open_sink(str(src), like=None, fps=24.0)
    for i, f in enumerate(clip.frames):
        sink.write(Frame(i, f, FrameFormat.for_pixels(f)))
    sink.close()
    tracks = _tracks(clip, first=0)
    s = run_clip(str(src), str(tmp_path / "out.mov"), _settings(), tracks=tracks, progress=False)
    assert s.frames_written == N
    out = open_source(str(tmp_path / "out.mov"))
    assert out.frame_numbers == list(range(N))
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]


def test_integer_sequence_to_movie(shot, tmp_path):
    """An 8/16-bit sequence is read as integer codes; a movie written from it gets the picture, not raw codes."""
    root, tracks = shot
    s = run_clip(str(root / "png.####.png"), str(tmp_path / "out.mov"), _settings(), tracks=tracks, progress=False)
    assert s.frames_written == N
    src, out = open_source(str(root / "png.####.png")), open_source(str(tmp_path / "out.mov"))
    for i, n in enumerate(src.frame_numbers):
        want, got = src.read(n).pixels[..., :3], out.read(i).pixels[..., :3]
        assert float(np.abs(got - want).mean()) < 0.03  # a lossy codec's error, not a white frame


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
def test_io_threads_give_way_to_the_gpu_feeder():
    """I/O threads run at a lower priority than the thread that calls run_clip (which keeps its own)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from facefix.streaming import io_thread_priority

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = nice()
    with ThreadPoolExecutor(1, initializer=io_thread_priority) as pool:
        theirs = pool.submit(nice).result()
    assert theirs == min(19, mine + 5)
    assert nice() == mine


def test_analysis_pass_reports_where_its_time_goes(shot, tmp_path):
    root, _ = shot
    summary = run_clip(str(root / "png.####.png"), str(tmp_path / "out.####.png"), _settings(), progress=False)
    parts = {k: v for k, v in summary.timings.items() if k.startswith("analyse_")}
    assert set(parts) == {"analyse_set_up", "analyse_wait_for_frames", "analyse_detect", "analyse_describe",
                          "analyse_close", "analyse_track"}
    assert all(v >= 0 for v in parts.values()) and parts["analyse_detect"] > 0
    assert sum(parts.values()) <= summary.timings["analyse"]


def test_frames_waiting_for_the_gpu_leave_the_io_threads_free():
    """A frame goes to the shared I/O pool only once its GPU result is ready: with one I/O thread, a read
    queued behind a frame still on the GPU runs at once, and frames are written in the order put."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from facefix.run import _Writer

    gpu_done = {1: threading.Event(), 2: threading.Event()}
    written: list[int] = []
    pool = ThreadPoolExecutor(1)
    writer = _Writer(written.append, depth=4, pool=pool, ready=lambda n: gpu_done[n].wait(10))  # type: ignore[arg-type]
    writer.put(1)
    writer.put(2)
    read = pool.submit(lambda: "decoded")
    assert read.result(timeout=5) == "decoded" and written == []  # before the fix: stuck behind frame 1
    gpu_done[2].set()
    gpu_done[1].set()
    writer.close()
    assert written == [1, 2]

    def failing(n: object) -> None:
        raise OutputError("cannot write out.0001.exr: disk full")

    bad = _Writer(failing, depth=4, pool=pool)
    bad.put(1)
    with pytest.raises(OutputError, match="disk full"):
        bad.close()
    pool.shutdown()


def test_the_restore_decodes_its_first_frames_while_the_analysis_finishes(shot, tmp_path, monkeypatch):
    """Without tracks, once the analysis has read its last frame the restore's first frames (two batches ahead, as
    it reads) are decoded on threads of their own; each frame is decoded once for the restore, and the output is
    bit for bit that of a run that decodes them when it gets to them."""
    import threading

    from facefix import run as run_module
    from facefix.io.regions import FrameReader

    root, _ = shot
    reads: list[tuple[int, str]] = []
    read = FrameReader.read

    def spy(self, n):
        reads.append((n, threading.current_thread().name))
        return read(self, n)

    monkeypatch.setattr(FrameReader, "read", spy)
    settings = _settings(batch=2)
    run_clip(str(root / "png.####.png"), str(tmp_path / "a.####.png"), settings, progress=False)
    numbers = sorted({n for n, _ in reads})
    assert sorted(n for n, _ in reads) == numbers == list(range(1001, 1001 + N))  # each once
    early = sorted(n for n, name in reads if name.startswith("facefix-early"))
    assert early == numbers[: 2 * 2]  # two batches of 2 frames

    reads.clear()
    monkeypatch.setattr(run_module._EarlyReads, "start", lambda self: None)
    run_clip(str(root / "png.####.png"), str(tmp_path / "b.####.png"), settings, progress=False)
    assert not [n for n, name in reads if name.startswith("facefix-early")]
    for n in numbers:
        assert (tmp_path / f"a.{n:04d}.png").read_bytes() == (tmp_path / f"b.{n:04d}.png").read_bytes()


def test_early_reads_give_each_frame_once_and_stop_when_cancelled():
    from facefix.run import _EarlyReads

    decoded: list[int] = []

    def decode(n):
        decoded.append(n)
        return f"frame {n}"

    early = _EarlyReads(decode, [5, 6, 7], threads=2)
    assert early.take(5) is None  # nothing decoded before start
    early.start()
    early.start()  # once
    assert early.take(6) == "frame 6" and early.take(6) is None and early.take(9) is None
    early.cancel()
    assert early.take(5) is None and sorted(decoded) == [5, 6, 7]
    with pytest.raises(KeyError):
        with early.cancelled_on_error():
            raise KeyError("analysis failed")
