"""The benchmark's own pieces on the CPU (tiny clip, passthrough model): they must run and measure something."""

import sys
from pathlib import Path

import numpy as np
import pytest

from facefix import Settings
from facefix.io import read_frame
from facefix.io.frames import codes_from_unit

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench  # noqa: E402


@pytest.mark.parametrize("fmt", ["png", "dpx", "dpx-words"])
def test_clip_gpu_side_figure_and_reference_reader(tmp_path, fmt, monkeypatch):
    import torch

    import facefix.run as run
    from facefix.engine import Engine

    if fmt == "dpx-words":  # DPX kept as its words, as on a GPU (the torch steps on the CPU here)
        on_gpu = run.frame_reader
        monkeypatch.setattr(run, "frame_reader", lambda src, dest, up, ct, dev: on_gpu(src, dest, up, ct,
                                                                                     torch.device("cuda")))
        fmt = "dpx"

    pattern, tracks = bench.make_clip(tmp_path, (192, 128), faces=1, frames=3, fmt=fmt)
    first = pattern.replace("####", "0001")
    frame = read_frame(first, codes=True)
    assert frame.format.bits_per_sample == (10 if fmt == "dpx" else 8)
    assert len(tracks.faces_at(1)) == 1
    # The classic loop reads DPX through FaceFix's reader, as 8-bit RGB.
    rgb = bench.imread_rgb(first)
    assert rgb.dtype == np.uint8 and rgb.shape == (128, 192, 3)
    np.testing.assert_array_equal(rgb, codes_from_unit(read_frame(first).pixels[..., :3], "uint8", 8))
    engine = Engine(Settings(model="passthrough", device="cpu", temporal=0.5, mask="mesh"))
    res = bench.gpu_side_figures(pattern, tracks, engine, batch=2, frames=3, passes=2)
    assert res["frames"] == 3 and len(res["passes_s"]) == 2 and res["fps"] > 0


def test_results_name_the_commit_they_measured():
    import subprocess

    head = subprocess.run(["git", "-C", str(Path(bench.ROOT)), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    assert bench.code_version() == (head or None)


def test_results_name_the_sources_they_measured(tmp_path):
    """The source digest follows the package's code (not git): any change to a source file changes it."""
    pkg = tmp_path / "core" / "facefix"
    pkg.mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.py").write_text("# bench\n")
    (pkg / "pipeline.py").write_text("x = 1\n")
    first = bench.source_digest(tmp_path)
    assert len(first) == 12 and first == bench.source_digest(tmp_path)
    (pkg / "pipeline.py").write_text("x = 2\n")
    assert bench.source_digest(tmp_path) != first
    assert len(bench.source_digest()) == 12  # this checkout


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_a_runs_rss_peak_is_its_own():
    """The e2e runs' host RAM figure is the peak since the run began, not the process's lifetime peak."""
    bench.reset_run_rss_peak()
    before = bench.run_rss_peak_mb()
    big = np.ones(200 * 2**20 // 8)  # 200 MB, touched
    during = bench.run_rss_peak_mb()
    del big
    bench.reset_run_rss_peak()
    after = bench.run_rss_peak_mb()
    assert before is not None and during is not None and after is not None
    assert during - before > 150 and during - after > 150
