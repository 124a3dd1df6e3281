"""The README's first run, offline: the demo shot, detection + tracking, the embedded restorer."""

import numpy as np
import pytest

from facefix.cli import main
from facefix.io import open_source


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo", str(root), "--frames", "3"]) == 0
    return root


def test_png16_sequence_detect_track_restore(demo, tmp_path):
    out = tmp_path / "fixed.####.png"
    assert main(["restore", str(demo / "plate.####.png"), "-o", str(out), "--model", "realesrgan-face",
                 "--frames", "1001", "--quiet", "--matte", str(tmp_path / "matte.####.exr")]) == 0
    a = open_source(str(demo / "plate.####.png")).read(1001)
    b = open_source(str(out)).read(1001)
    m = open_source(str(tmp_path / "matte.####.exr")).read(1001).pixels[..., 0]
    assert b.format.pixel_type == "uint16"
    assert m.max() > 0.99 and 0.02 < (m > 0).mean() < 0.5  # a face was found and restored
    assert np.array_equal(a.pixels[m == 0], b.pixels[m == 0])
    assert np.abs(a.pixels[m > 0.5] - b.pixels[m > 0.5]).mean() > 1e-3  # and it changed


def test_half_exr_sequence_with_detection(demo, tmp_path):
    tracks = tmp_path / "tracks.json"
    assert main(["track", str(demo / "plate.####.exr"), "-o", str(tracks), "--quiet",
                 "--debug-overlay", str(tmp_path / "overlay")]) == 0
    assert len(list((tmp_path / "overlay").glob("overlay.*.png"))) == 3
    out = tmp_path / "fixed.####.exr"
    assert main(["restore", str(demo / "plate.####.exr"), "-o", str(out), "--model", "passthrough", "--quiet",
                 "--tracks", str(tracks)]) == 0
    src, dst = open_source(str(demo / "plate.####.exr")), open_source(str(out))
    for n in src.frame_numbers:
        a, b = src.read(n), dst.read(n)
        assert b.format.pixel_type == "half" and b.format.channel_names == ("R", "G", "B", "A")
        assert np.array_equal(a.pixels[..., 3], b.pixels[..., 3])
        mse = float(np.mean((a.pixels[..., :3] - b.pixels[..., :3]) ** 2))
        assert mse < 1e-7


def test_allocator_setting_only_for_gpu_runs():
    """The command line maps frame buffers afresh only on CUDA (on the CPU it would slow the models down)."""
    import argparse

    import torch

    from facefix.cli.main import _uses_cuda

    assert not _uses_cuda(argparse.Namespace(device="cpu"))
    assert _uses_cuda(argparse.Namespace(device="cuda")) == torch.cuda.is_available()
    assert _uses_cuda(argparse.Namespace(device=None)) == torch.cuda.is_available()
