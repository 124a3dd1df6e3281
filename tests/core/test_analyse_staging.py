"""The analysis pass's GPU frame path: frames staged as the file keeps them and made working RGB on the device
must equal the CPU path's working RGB, value for value, for every kind of file; and the batched thumbnail and
descriptor functions equal their one-frame forms."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import facefix.analyse as analyse
from facefix.analyse import _describing_stream, _planar_working_rgb, _stage, _working_batch, track_clip
from facefix.colour import colour_transform, resolve_colorspace
from facefix.detect.scan import ScannedWindow
from facefix.errors import InputError
from facefix.faces import Face
from facefix.io import Frame, FrameFormat, open_source
from facefix.io.regions import FrameReader, reads_words
from facefix.io.sequence import write_frame
from facefix.params import Settings
from facefix.track.associate import appearance_batch, appearance_descriptors
from facefix.track.cuts import thumbnail, thumbnails

CPU = torch.device("cpu")


def _plate(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (h, w, 3)).astype(np.float32)


@pytest.mark.parametrize(("ext", "pixel_type", "bits", "colorspace"), [
    ("png", "uint8", 8, "auto"),
    ("png", "uint16", 16, "auto"),
    ("dpx", "uint16", 10, "auto"),   # read as the file's words
    ("dpx", "uint16", 10, "linear"),  # a colour conversion: converted on the CPU, uploaded as float
    ("tif", "uint16", 16, "linear"),
    ("exr", "half", 16, "auto"),
    ("exr", "float", 32, "srgb"),
])
def test_staged_frames_become_the_cpu_paths_working_rgb(tmp_path, ext, pixel_type, bits, colorspace) -> None:  # type: ignore[no-untyped-def]
    img = _plate()
    if pixel_type in ("half", "float"):  # values a float plate has: out of range, NaN, infinities
        img = img * 3.0 - 1.0
        img[0, 0] = (np.nan, np.inf, -np.inf)
    path = tmp_path / f"plate.1001.{ext}"
    write_frame(path, Frame(1001, img, FrameFormat.for_pixels(img, pixel_type)), bits_per_sample=bits)
    src = open_source(str(tmp_path / f"plate.####.{ext}"))
    ct = colour_transform(resolve_colorspace(colorspace, src.is_float))
    # The device path on the CPU: words are read (as the GPU run would) where the format allows it.
    words = ext == "dpx" and ct.is_identity
    assert reads_words(src, ct, torch.device("cuda")) == words
    reader = FrameReader(src, words)
    frame = reader.read(1001)
    staged = _stage(frame, ct, CPU)
    assert staged.kind == ("words" if words else "codes" if pixel_type.startswith("uint") and ct.is_identity
                           else "rgb")
    got = _working_batch([staged, staged], CPU)
    want = _planar_working_rgb(src.read(1001).pixels, colorspace, src.is_float)
    assert got.shape == (2, 3, *img.shape[:2]) and got.dtype == torch.float32
    np.testing.assert_array_equal(got[1].numpy(), want)


def test_a_batch_of_mixed_files_keeps_each_frames_values_and_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ct = colour_transform("srgb")
    staged, want = [], []
    for i, (ext, pixel_type, bits) in enumerate([("png", "uint8", 8), ("dpx", "uint16", 10), ("png", "uint16", 16),
                                                  ("exr", "float", 32), ("png", "uint8", 8)]):
        img = _plate(seed=i)
        folder = tmp_path / str(i)
        folder.mkdir()
        write_frame(folder / f"p.0001.{ext}", Frame(1, img, FrameFormat.for_pixels(img, pixel_type)), bits_per_sample=bits)
        src = open_source(str(folder / f"p.####.{ext}"))
        staged.append(_stage(FrameReader(src, ext == "dpx").read(1), ct, CPU))
        want.append(_planar_working_rgb(src.read(1).pixels, "srgb", src.is_float))
    assert [s.kind for s in staged] == ["codes", "words", "codes", "rgb", "codes"]
    np.testing.assert_array_equal(_working_batch(staged, CPU).numpy(), np.stack(want))


def test_batched_thumbnails_and_descriptors_equal_the_one_frame_forms() -> None:
    frames = torch.from_numpy(np.stack([_plate(64, 80, s).transpose(2, 0, 1) for s in range(3)]))
    assert all(np.array_equal(a, thumbnail(f)) for a, f in zip(thumbnails(frames), frames))
    lm = np.array([[30.0, 25.0], [50.0, 26.0], [40.0, 35.0], [32.0, 45.0], [48.0, 46.0]])
    faces = [[Face(box=(20, 15, 60, 55), landmarks=lm)], [],
             [Face(box=(20, 15, 60, 55), landmarks=lm + 3), Face(box=(0, 0, 30, 30), landmarks=lm * 0.5 - 2)]]
    batch = appearance_batch(frames, faces)
    assert [len(b) for b in batch] == [1, 0, 2]
    for f, fs, got in zip(frames, faces, batch):
        # The one-frame form from an (H, W, 3) array, as other callers pass frames.
        want = appearance_descriptors(f.permute(1, 2, 0).numpy(), fs)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.gpu
def test_gpu_analysis_finds_the_cpu_analysiss_faces(tmp_path, write_face_shot) -> None:  # type: ignore[no-untyped-def]
    write_face_shot(tmp_path, 10, (192, 160))
    src = open_source(str(tmp_path / "plate.####.png"))
    settings = Settings(min_face=24)
    cpu = track_clip(src, list(src.frame_numbers), settings, device="cpu", progress=False)
    gpu = track_clip(src, list(src.frame_numbers), settings, device="cuda", progress=False)
    assert len(cpu.tracks) == len(gpu.tracks) == 1
    a, b = cpu.tracks[0].faces, gpu.tracks[0].faces
    assert a.keys() == b.keys()
    # TF32 convolutions (cuDNN's first layers) against the CPU's float32: a fraction of a pixel.
    assert max(float(np.abs(a[n].landmarks - b[n].landmarks).max()) for n in a) < 0.5


@pytest.mark.gpu
def test_gpu_tracks_are_the_same_whichever_stream_describes(tmp_path, write_face_shot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_face_shot(tmp_path, 12, (192, 160))
    src = open_source(str(tmp_path / "plate.####.png"))
    settings = Settings(min_face=24)
    got = []
    for own in (True, False):
        monkeypatch.setattr(analyse, "DESCRIBE_ON_OWN_STREAM", own)
        # Windows of two frames, two in flight: each window's stream is used again two windows on.
        tracks = track_clip(src, list(src.frame_numbers), settings, device="cuda", progress=False, scan_period=2,
                            scan_periods=1, scan_in_flight=2)
        got.append(tracks)
    a, b = got
    assert len(a.tracks) == len(b.tracks) == 1
    assert a.tracks[0].faces.keys() == b.tracks[0].faces.keys() and a.tracks[0].faces
    assert a.metadata["cuts"] == b.metadata["cuts"]
    # The description gives the cuts and the association, not the positions: those are the detector's own.
    assert max(float(np.abs(f.landmarks - b.tracks[0].faces[n].landmarks).max())
               for n, f in a.tracks[0].faces.items()) < 1e-3


def test_a_cpu_window_is_described_where_it_is() -> None:
    window = ScannedWindow(torch.zeros(1, 3, 4, 4), [], torch.zeros(0, 4), None, None)
    assert _describing_stream(window, None) is None


@pytest.mark.gpu
def test_a_window_is_described_without_waiting_for_the_windows_after_it() -> None:
    """A scanned window's stream already holds a later window's networks when the window is handed over: its
    description runs on its own stream once the window's frames are made, and gives the same values."""
    dev = torch.device("cuda")
    plate = _plate(64, 80, 2)
    window_stream, own = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    with torch.cuda.stream(window_stream):
        frames = torch.from_numpy(plate).permute(2, 0, 1)[None].to(dev)
        made = torch.cuda.Event()
        made.record()
        torch.cuda._sleep(2_000_000_000)  # ~1 s of a later window's rounds queued behind the frames
    window = ScannedWindow(frames, [], torch.zeros(0, 4), window_stream, made)
    stream = _describing_stream(window, own)
    assert stream is own
    with torch.cuda.stream(stream):
        thumbs = thumbnails(frames, clipped=True)
    assert not window_stream.query()  # described while the later window's work still runs
    torch.cuda.synchronize()
    assert np.array_equal(thumbs[0], thumbnails(frames, clipped=True)[0])


class _MemorySource:
    """Frames handed over in memory, as the bridge's analysis source gives them: float pixels, no file format."""

    kind = "memory"
    is_float = False

    def __init__(self, frames: dict[int, np.ndarray]) -> None:
        self.frames = frames

    def read(self, number: int) -> object:
        return types.SimpleNamespace(pixels=self.frames[number])


def test_a_memory_frame_stages_as_working_rgb() -> None:
    img = _plate()
    img[0, 0, 0] = np.nan
    staged = _stage(_MemorySource({1: img}).read(1), colour_transform("srgb"), CPU)
    assert staged.kind == "rgb"
    np.testing.assert_array_equal(_working_batch([staged], CPU)[0].numpy(), _planar_working_rgb(img, "srgb", False))


@pytest.mark.gpu
def test_gpu_analysis_of_frames_handed_over_in_memory(tmp_path, write_face_shot) -> None:  # type: ignore[no-untyped-def]
    write_face_shot(tmp_path, 6, (160, 160))
    src = open_source(str(tmp_path / "plate.####.png"))
    memory = _MemorySource({n: src.read(n).pixels[..., :3] for n in src.frame_numbers})
    settings = Settings(min_face=24)
    seen: list[int] = []
    gpu = track_clip(memory, list(src.frame_numbers), settings, device="cuda", progress=False,
                     on_frame=lambda n, faces: seen.append(n))
    cpu = track_clip(memory, list(src.frame_numbers), settings, device="cpu", progress=False)
    assert seen == list(src.frame_numbers)
    assert [sorted(t.faces) for t in gpu.tracks] == [sorted(t.faces) for t in cpu.tracks]


def test_long_batches_convert_a_few_frames_a_call_and_sizes_must_match(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ct = colour_transform("srgb")
    staged, want = [], []
    for i in range(11):  # more than one conversion call's frames
        img = _plate(seed=i)
        write_frame(tmp_path / f"p.{i + 1:04d}.png", Frame(i + 1, img, FrameFormat.for_pixels(img, "uint16")),
                    bits_per_sample=16)
    src = open_source(str(tmp_path / "p.####.png"))
    for n in src.frame_numbers:
        staged.append(_stage(src.read(n, codes=True), ct, CPU))
        want.append(_planar_working_rgb(src.read(n).pixels, "srgb", False))
    np.testing.assert_array_equal(_working_batch(staged, CPU).numpy(), np.stack(want))
    other = _stage(types.SimpleNamespace(pixels=_plate(10, 12)), ct, CPU)
    with pytest.raises(InputError, match="differ in size"):
        _working_batch([staged[0], other], CPU)


def test_descriptors_take_any_array_layout_and_refuse_frames_without_colour() -> None:
    img = _plate(64, 80)
    lm = np.array([[30.0, 25.0], [50.0, 26.0], [40.0, 35.0], [32.0, 45.0], [48.0, 46.0]])
    face = [Face(box=(20, 15, 60, 55), landmarks=lm)]
    flipped = img[::-1]
    want = appearance_descriptors(np.ascontiguousarray(flipped), face)
    assert np.array_equal(appearance_descriptors(flipped, face)[0], want[0])
    with pytest.raises(InputError):
        appearance_descriptors(img[..., :1], face)


@pytest.mark.gpu
def test_frames_converted_on_a_busy_side_stream_keep_their_uploads() -> None:
    """A scan window converts its frames on its own stream: the uploads it reads stay its own until that stream
    has read them, even when the stream is busy and the next uploads come at once (they would reuse the memory)."""
    dev = torch.device("cuda")
    side = torch.cuda.Stream(dev)
    img = _plate(64, 80, 1)
    want = _working_batch([_stage(_MemorySource({1: img}).read(1), colour_transform("srgb"), dev)], dev).cpu()
    staged = [_stage(_MemorySource({1: img}).read(1), colour_transform("srgb"), dev)]  # as a reading thread does
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of work queued before the conversion
        got = _working_batch(staged, dev)
    del staged
    for _ in range(8):  # uploads of other frames while the conversion waits: none may take its memory
        _stage(_MemorySource({1: np.zeros_like(img)}).read(1), colour_transform("srgb"), dev)
    torch.cuda.synchronize()
    assert torch.equal(got.cpu(), want)
