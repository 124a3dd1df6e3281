"""The shot scan: tiles spread over a window of frames and kept around faces find what every tile finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.detect import BlazeFaceDetector, tile_cores
from facefix.detect.scan import (
    GPU_WINDOW_PERIODS,
    gpu_window_periods,
    scan_stream,
    scan_window,
    scan_windows,
    tiles_around,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector("cpu", min_face=24)


@pytest.fixture(scope="module")
def small_moving_face() -> torch.Tensor:
    """8 frames of 640x360 with a ~45 px face moving 6 px right and 2 px down a frame: only tiles find it."""
    clip = synth.motion_clip(8, (360, 640), translate=(6.0, 2.0), start_scale=0.25)
    return torch.from_numpy(np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2)))


def _counting(detector: BlazeFaceDetector, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    looked: list[int] = []
    look = detector.queue_look

    def counted(frames, frame, region):  # type: ignore[no-untyped-def]
        looked.append(len(frame))
        return look(frames, frame, region)

    monkeypatch.setattr(detector, "queue_look", counted)
    return looked


def test_scan_finds_what_every_tile_finds_with_fewer_looks(detector, small_moving_face, monkeypatch):
    frames = small_moving_face
    every_tile = detector(frames)
    whole_only = BlazeFaceDetector("cpu", min_face=24, tiles=False, mesh=False)(frames)
    assert sum(len(r.faces) for r in whole_only) < len(frames)  # the tiles are needed for this face
    looked = _counting(detector, monkeypatch)
    carried = torch.zeros(0, 4)
    scanned = []
    for w0 in (0, 4):  # two windows of 4: the second starts from the faces of the first
        found, carried = scan_window(detector, frames[w0 : w0 + 4], range(w0, w0 + 4), carried, period=4)
        scanned += found
    k = len(detector.regions(640, 360))
    assert 0 < sum(looked) < 0.75 * len(frames) * k  # a small frame: few tiles away from the face to skip
    assert len(carried) == len(scanned[-4].faces) + len(scanned[-3].faces) + len(scanned[-2].faces) + len(
        scanned[-1].faces)
    for full, scan in zip(every_tile, scanned):
        assert len(full.faces) == len(scan.faces) == 1
        a, b = full.faces[0], scan.faces[0]
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        np.testing.assert_allclose(a.mesh, b.mesh, atol=5e-3)  # z: batches of other sizes round differently on some CPUs
        assert abs(a.score - b.score) < 1e-5


def test_period_one_looks_at_every_tile(detector, small_moving_face):
    frames = small_moving_face[:2]
    full = detector(frames)
    scan, carried = scan_window(detector, frames, range(2), torch.zeros(0, 4), period=1)
    assert [len(r.faces) for r in scan] == [len(r.faces) for r in full] == [1, 1]
    for a, b in zip(full, scan):
        assert a.faces[0].box == b.faces[0].box
        assert np.array_equal(a.faces[0].landmarks, b.faces[0].landmarks)
    assert carried.shape == (2, 4)


def test_a_face_found_on_one_frame_is_looked_for_on_every_frame_of_its_window(detector, small_moving_face):
    # The tile slice of frame 0 does not hold the face; round two looks for it there all the same.
    frames = small_moving_face[:4]
    scan, _ = scan_window(detector, frames, range(4), torch.zeros(0, 4), period=4)
    assert all(len(r.faces) == 1 for r in scan)


def test_tiles_around_a_box():
    regions = [(320.0, 180.0, 640.0, float("inf")), (100.0, 100.0, 200.0, 60.0), (500.0, 100.0, 200.0, 60.0),
               (220.0, 180.0, 400.0, 120.0)]
    cores = tile_cores(regions, 640, 360)
    box = torch.tensor([[80.0, 80.0, 120.0, 120.0]])  # 40 px, in the first tile's core
    assert tiles_around(box, cores).tolist() == [True, True, False, True]
    big = torch.tensor([[60.0, 60.0, 200.0, 200.0]])  # 140 px: larger than twice what the tiles keep
    assert tiles_around(big, cores).tolist() == [True, False, False, True]
    assert tiles_around(torch.zeros(0, 4), cores).tolist() == [False] * 4


def test_run_padded_keeps_the_cpu_batch_and_pads_only_on_cuda():
    from facefix.detect.blazeface import run_padded

    shapes: list[int] = []

    def net(x):  # type: ignore[no-untyped-def]
        shapes.append(x.shape[0])
        return x.sum((1, 2, 3)), x[:, :1]

    x = torch.rand(5, 3, 4, 4)
    a, b = run_padded(net, x, 16)
    assert shapes == [5] and torch.equal(a, x.sum((1, 2, 3))) and b.shape == (5, 1, 4, 4)


@pytest.mark.gpu
def test_run_padded_on_cuda_rounds_the_batch_up_and_drops_the_padding():
    from facefix.detect.blazeface import run_padded

    shapes: list[int] = []

    def net(x):  # type: ignore[no-untyped-def]
        shapes.append(x.shape[0])
        return x.sum((1, 2, 3)), x[:, :1]

    x = torch.rand(5, 3, 4, 4, device="cuda")
    a, b = run_padded(net, x, 16)
    assert shapes == [16] and torch.allclose(a, x.sum((1, 2, 3))) and b.shape == (5, 1, 4, 4)
    for k in (16, 17, 40, 100, 128):  # power-of-two chunks: a few shapes (graphs) for any crop count
        y = torch.rand(k, 3, 4, 4, device="cuda")
        a, b = run_padded(net, y, 16)
        assert torch.allclose(a, y.sum((1, 2, 3))) and torch.equal(b, y[:, :1])
    assert shapes[1:] == [16, 16, 16, 32, 16, 64, 32, 16, 128]


@pytest.mark.gpu
def test_detector_graphs_replay_the_eager_outputs():
    """Under inference mode the networks replay CUDA graphs (one per batch shape); the outputs are the eager
    ones, for every shape, and a shape seen before is replayed, not captured again."""
    from facefix.detect.blazeface import load_blazeface

    net = load_blazeface("full", "cuda").net
    for k in (16, 32, 16):
        x = torch.rand(k, 3, 192, 192, device="cuda") * 2 - 1
        with torch.inference_mode():
            graphed = net(x)
            eager = net.run_eager(x)
        assert all(torch.equal(a, b) for a, b in zip(graphed, eager))
    assert net._graphs is not None and len(net._graphs.entries) == 2


def test_track_clip_scan_gives_the_tracks_of_every_tile(tmp_path, small_moving_face):
    from facefix import Settings
    from facefix.analyse import AnalysisStats, track_clip
    from facefix.io import Frame, FrameFormat, open_source
    from facefix.io.sequence import write_frame

    for i, f in enumerate(small_moving_face[:6].permute(0, 2, 3, 1).numpy()):
        write_frame(tmp_path / f"c.{i + 1:04d}.png", Frame(i + 1, f, FrameFormat.for_pixels(f, "uint8")), bits_per_sample=8)
    src = open_source(str(tmp_path / "c.####.png"))
    settings = Settings(device="cpu", batch=2)  # windows of 4 frames: a scan goes window by window, whatever the batch
    stats = AnalysisStats()
    scanned = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=4, stats=stats)
    every = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=1)
    assert stats.faces_detected == 6 and len(scanned.tracks) == len(every.tracks) == 1
    # Windows of several periods (a GPU's: its rounds wait on the device less often) find the same faces.
    long = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_periods=3)
    # So does a GPU's shot whose first window is shorter (the device starts on fewer frames): windows 0-1, 2-5.
    short_first = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_periods=2,
                             scan_first_periods=1)
    # And one whose last window is cut short too (its host work after the device is done is less): 0-1, 2-3, 4-5.
    short_ends = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_periods=2,
                            scan_first_periods=1, scan_last_periods=1)
    assert len(long.tracks) == len(short_first.tracks) == len(short_ends.tracks) == 1
    for a in (scanned.tracks[0], long.tracks[0], short_first.tracks[0], short_ends.tracks[0]):
        b = every.tracks[0]
        assert sorted(a.faces) == sorted(b.faces) == list(range(1, 7))
        for n in a.faces:  # within 5e-3 px: the networks' batches differ, and some CPUs round them differently
            np.testing.assert_allclose(a.faces[n].landmarks, b.faces[n].landmarks, atol=5e-3)
            np.testing.assert_allclose(a.faces[n].box, b.faces[n].box, atol=5e-3)


def test_gpu_windows_in_flight_by_frame_size(monkeypatch):
    # Two windows in flight, as long as they hold their float frames within 4 GB: 1080p 2 (of 0.8 GB), 4K 2 (of
    # 1.6 GB); an 8K window alone is 3.2 GB, and a size not known up front gets one at a time. With more allowed,
    # the memory decides: 1080p 5, 4K still 2.
    from facefix.detect import scan
    from facefix.detect.scan import SCAN_PERIOD, gpu_in_flight

    def frames(size: tuple[int, int]) -> int:
        return SCAN_PERIOD * gpu_window_periods(size)

    assert gpu_in_flight((1920, 1080), frames((1920, 1080))) == scan.GPU_IN_FLIGHT == 2
    assert gpu_in_flight((3840, 2160), frames((3840, 2160))) == 2
    assert gpu_in_flight((7680, 4320), frames((7680, 4320))) == 1
    assert gpu_in_flight(None, 8) == 1
    monkeypatch.setattr(scan, "GPU_IN_FLIGHT", 8)
    assert gpu_in_flight((1920, 1080), frames((1920, 1080))) == 5
    assert gpu_in_flight((3840, 2160), frames((3840, 2160))) == 2
    assert gpu_in_flight((7680, 4320), frames((7680, 4320))) == 1


def test_window_starts_after_a_shorter_first_window():
    from facefix.detect.scan import window_starts

    assert window_starts(96, 32) == window_starts(96, 32, None) == [0, 32, 64]
    assert window_starts(96, 32, 8) == [0, 8, 40, 72]
    assert window_starts(8, 32, 8) == [0]  # a shot shorter than the first window: one window
    assert window_starts(9, 32, 8) == [0, 8]
    assert window_starts(96, 32, 64) == [0, 32, 64]  # never longer than the others
    assert window_starts(0, 32, 8) == []


def test_window_starts_with_a_shorter_last_window():
    from facefix.detect.scan import window_starts

    assert window_starts(96, 32, 8, 8) == [0, 8, 40, 72, 88]  # the last window's final 8 frames on their own
    assert window_starts(100, 32, 8, 8) == [0, 8, 40, 72, 92]  # its final 8, whatever the count
    assert window_starts(80, 32, 8, 8) == [0, 8, 40, 72]  # already that short: as it is
    assert window_starts(76, 32, 8, 8) == [0, 8, 40, 72]
    assert window_starts(6, 32, 8, 8) == [0]  # one short window: left whole
    assert window_starts(12, 32, 8, 8) == [0, 8]
    assert window_starts(96, 32, None, 8) == [0, 32, 64, 88]
    assert window_starts(96, 32, 8, None) == window_starts(96, 32, 8)


def test_a_gpu_window_holds_fewer_periods_for_big_frames():
    # 1080p: the full 4 periods (32 frames, 0.8 GB of float frames); 4K: 2; 8K and unknown sizes: 1 (as on the CPU).
    assert gpu_window_periods((1920, 1080)) == GPU_WINDOW_PERIODS == 4
    assert gpu_window_periods((3840, 2160)) == 2
    assert gpu_window_periods((7680, 4320)) == 1
    assert gpu_window_periods(None) == 1
    assert gpu_window_periods((64, 64), period=1) == GPU_WINDOW_PERIODS


def test_the_frame_size_comes_from_a_header_or_a_host_layout(tmp_path):
    import types

    from facefix.analyse import _frame_size
    from facefix.io import Frame, FrameFormat, open_source
    from facefix.io.sequence import write_frame

    img = np.zeros((6, 10, 3), np.float32)
    write_frame(tmp_path / "f.0001.png", Frame(1, img, FrameFormat.for_pixels(img, "uint8")), bits_per_sample=8)
    assert _frame_size(open_source(str(tmp_path / "f.####.png"))) == (10, 6)
    assert _frame_size(types.SimpleNamespace(layout=types.SimpleNamespace(width=20, height=12))) == (20, 12)
    assert _frame_size(types.SimpleNamespace()) is None
    (tmp_path / "bad.0001.png").write_bytes(b"not a png")
    assert _frame_size(open_source(str(tmp_path / "bad.####.png"))) is None  # the read reports it, not this


def _same_results(a, b) -> None:  # type: ignore[no-untyped-def]
    assert [len(r.faces) for r in a] == [len(r.faces) for r in b]
    for ra, rb in zip(a, b):
        assert ra.skipped_small == rb.skipped_small
        for fa, fb in zip(ra.faces, rb.faces):
            assert fa.box == fb.box and fa.score == fb.score
            assert np.array_equal(fa.landmarks, fb.landmarks) and np.array_equal(fa.mesh, fb.mesh)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_windows_in_flight_carry_from_the_window_that_many_before(detector, small_moving_face, in_flight):
    """Windows scanned at once give, bit for bit, one window at a time carrying the boxes of the window
    ``in_flight`` before it; and so whether the shot's windows come in one call or one call each."""
    frames = small_moving_face
    windows = [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    boxes: list[torch.Tensor] = []
    one_by_one = []
    for wnd in windows:
        carried = boxes[-in_flight] if len(boxes) >= in_flight else torch.zeros(0, 4)
        found, got = scan_window(detector, frames[wnd.start : wnd.stop], wnd, carried, period=4)
        one_by_one += found
        boxes.append(got)
    together, kept = scan_windows(detector, frames, windows, [], period=4, in_flight=in_flight)
    _same_results(together, one_by_one)
    assert len(kept) == 4 and all(torch.equal(a, b) for a, b in zip(kept, boxes))
    split, before = [], []
    for first, last in ((0, 1), (1, 3), (3, 4)):  # groups of windows across calls, as batches bring them
        found, before = scan_windows(detector, frames[windows[first].start : windows[last - 1].stop],
                                     windows[first:last], before[-in_flight:], period=4, in_flight=in_flight)
        split += found
    _same_results(split, one_by_one)
    assert all(len(r.faces) == 1 for r in together)


def test_track_clip_windows_in_flight_do_not_depend_on_the_batch(tmp_path, small_moving_face):
    from facefix import Settings
    from facefix.analyse import track_clip
    from facefix.io import Frame, FrameFormat, open_source
    from facefix.io.sequence import write_frame

    for i, f in enumerate(small_moving_face.permute(0, 2, 3, 1).numpy()):
        write_frame(tmp_path / f"c.{i + 1:04d}.png", Frame(i + 1, f, FrameFormat.for_pixels(f, "uint8")), bits_per_sample=8)
    src = open_source(str(tmp_path / "c.####.png"))
    runs = [track_clip(src, src.frame_numbers, Settings(device="cpu", batch=b), progress=False, scan_period=2,
                       scan_in_flight=2).to_json() for b in (1, 5, 16)]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]["tracks"]) == 1 and len(runs[0]["tracks"][0]["frames"]) == 8


def test_track_clip_scanning_on_a_thread_of_its_own_gives_the_same_tracks(tmp_path, small_moving_face, monkeypatch):
    """The scan on a thread of its own (as on a GPU), a window ahead of the thread that describes and associates:
    the same tracks as scanning on the calling thread, on_frame still called there, every frame in order, Python's
    thread switch interval short while the scan runs on its thread (and put back after); a
    corrupt frame is a one-line error naming it, and a caller that stops (on_frame raising) stops the scan
    thread."""
    import sys
    import threading

    from facefix import Settings
    from facefix.analyse import track_clip
    from facefix.errors import InputError
    from facefix.io import Frame, FrameFormat, open_source
    from facefix.io.sequence import write_frame
    from facefix.streaming import FEEDER_SWITCH_INTERVAL

    for i, f in enumerate(small_moving_face.permute(0, 2, 3, 1).numpy()):
        write_frame(tmp_path / f"c.{i + 1:04d}.png", Frame(i + 1, f, FrameFormat.for_pixels(f, "uint8")), bits_per_sample=8)
    src = open_source(str(tmp_path / "c.####.png"))
    settings = Settings(device="cpu", batch=4)
    calls: list[tuple[int, str]] = []
    scanned_on: set[str] = set()
    queue_look = BlazeFaceDetector.queue_look

    def spy(self, *args):
        scanned_on.add(threading.current_thread().name)
        return queue_look(self, *args)

    monkeypatch.setattr(BlazeFaceDetector, "queue_look", spy)
    before = threading.active_count()
    python_s = sys.getswitchinterval()
    switches: set[float] = set()

    def seen(n, faces):
        calls.append((n, threading.current_thread().name))
        switches.add(sys.getswitchinterval())

    threaded = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_in_flight=2,
                          scan_thread=True, on_frame=seen)
    assert scanned_on == {"facefix-scan"}
    # The scan thread gets the interpreter's lock back quickly while the calling thread works; Python's after.
    assert [pytest.approx(FEEDER_SWITCH_INTERVAL)] == sorted(switches) and sys.getswitchinterval() == python_s
    scanned_on.clear()
    switches.clear()
    plain = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_in_flight=2,
                       scan_thread=False, on_frame=lambda n, fs: switches.add(sys.getswitchinterval()))
    assert scanned_on == {threading.current_thread().name}
    assert switches == {python_s}  # one thread: nothing to hand the lock to
    assert threaded.to_json() == plain.to_json() and len(threaded.tracks) == 1
    assert calls == [(n, threading.current_thread().name) for n in src.frame_numbers]
    assert threading.active_count() == before

    class Stop(Exception):
        pass

    def stop_at_3(n, faces):
        if n == 3:
            raise Stop

    with pytest.raises(Stop):
        track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, scan_thread=True, on_frame=stop_at_3)
    assert threading.active_count() == before
    (tmp_path / "c.0006.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match=r"c\.0006\.png"):
        track_clip(open_source(str(tmp_path / "c.####.png")), src.frame_numbers, settings, progress=False,
                   scan_period=2, scan_thread=True)
    assert threading.active_count() == before


def test_a_stream_of_windows_makes_each_window_s_frames_once_it_can_start(detector, small_moving_face):
    """scan_stream asks for a window's frames only when the window it carries from is done (so at most in_flight
    windows' frames are made ahead of the one handed out), hands windows out in order, and finds what
    scan_windows finds on the same windows."""
    frames = small_moving_face
    windows = [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    events: list[str] = []

    def make(w: int) -> torch.Tensor:
        events.append(f"make {w}")
        return frames[windows[w].start : windows[w].stop]

    found = []
    for w, window in enumerate(scan_stream(detector, [(windows[w], lambda w=w: make(w)) for w in range(4)],
                                           period=4, in_flight=2)):
        events.append(f"hand {w}")
        assert window.stream is None and window.made is None and torch.equal(window.frames, frames[windows[w].start : windows[w].stop])
        found += window.results
    assert [e for e in events if e.startswith("make")] == ["make 0", "make 1", "make 2", "make 3"]
    assert [e for e in events if e.startswith("hand")] == ["hand 0", "hand 1", "hand 2", "hand 3"]
    made_before_hand = {w: sum(1 for e in events[: events.index(f"hand {w}")] if e.startswith("make")) for w in range(4)}
    assert all(made_before_hand[w] <= w + 2 for w in range(4))  # at most in_flight windows ahead
    together, _ = scan_windows(detector, frames, windows, [], period=4, in_flight=2)
    _same_results(found, together)


@pytest.mark.gpu
def test_windows_in_flight_on_their_streams_give_one_at_a_time(small_moving_face):
    """On a GPU, two windows in flight (each on a stream of its own, the networks' graphs shared between them)
    give bit for bit what the same windows give one at a time on the current stream."""
    det = BlazeFaceDetector("cuda", min_face=24)
    frames = small_moving_face.cuda()
    windows = [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    with torch.inference_mode():
        boxes: list[torch.Tensor] = []
        one_by_one = []
        for wnd in windows:
            carried = boxes[-2] if len(boxes) >= 2 else torch.zeros(0, 4)
            found, got = scan_window(det, frames[wnd.start : wnd.stop], wnd, carried, period=4)
            one_by_one += found
            boxes.append(got)
        together, _ = scan_windows(det, frames, windows, [], period=4, in_flight=2)
    _same_results(together, one_by_one)
    assert all(len(r.faces) == 1 for r in together)


def test_track_clip_associates_frames_as_it_reads_them_as_the_whole_shot_would(tmp_path, small_moving_face):
    """The analysis associates each frame's faces as soon as its cut is known (a few windows later), and gets the
    tracks that build_tracks gives on the whole shot's detections, descriptors and cuts: here a shot cut (a new
    grade) in the middle of 12 frames, windows of 2 frames, and the cut's own window of scores after it."""
    from facefix import Settings
    from facefix.analyse import track_clip
    from facefix.io import Frame, FrameFormat, open_source
    from facefix.io.sequence import write_frame
    from facefix.track import build_tracks
    from facefix.track.associate import appearance_descriptors
    from facefix.track.cuts import cut_scores, find_cuts, thumbnail

    frames = torch.cat([small_moving_face, small_moving_face[:4].flip(-1) * torch.tensor([0.55, 0.8, 1.0])[:, None, None]])
    pixels = frames.permute(0, 2, 3, 1).contiguous().numpy()
    for i, f in enumerate(pixels):
        write_frame(tmp_path / f"c.{i + 1:04d}.exr", Frame(i + 1, f, FrameFormat.for_pixels(f, "float")))
    src = open_source(str(tmp_path / "c.####.exr"))
    seen: dict[int, list] = {}
    settings = Settings(device="cpu", colorspace="raw")
    got = track_clip(src, src.frame_numbers, settings, progress=False, scan_period=2, on_frame=lambda n, fs: seen.update({n: list(fs)}))
    read = {n: src.read(n).pixels for n in src.frame_numbers}
    cuts = find_cuts(cut_scores({n: thumbnail(p) for n, p in read.items()}))
    want = build_tracks(seen, cuts, appearance={n: appearance_descriptors(read[n], seen[n]) for n in seen})
    assert cuts == {9} and got.metadata["cuts"] == [9]
    assert len(got.tracks) == len(want.tracks) >= 2  # none crosses the cut
    for a, b in zip(got.tracks, want.tracks):
        assert list(a.faces) == list(b.faces)
        for n in a.faces:
            np.testing.assert_allclose(a.faces[n].landmarks, b.faces[n].landmarks, atol=1e-6)
