"""Memory stays flat in clip length: the restore loop holds a bounded number of frames, whatever the shot."""

import os
import subprocess
import sys
import tracemalloc

import pytest
import torch

from facefix import Face, FaceTracks, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.io import Frame, FrameFormat
from facefix.io.sequence import write_frame
from facefix.run import run_clip


class Dim:
    def __call__(self, crops, fidelity=0.5):
        return (crops * 0.98).clamp(0, 1)


def test_peak_memory_does_not_grow_with_clip_length(tmp_path):
    frame, lms = synth.crowd_frame((96, 128), 1, face_px=60)
    per = {}
    for i in range(120):
        write_frame(tmp_path / f"c.{i + 1:04d}.png", Frame(i + 1, frame, FrameFormat.for_pixels(frame, "uint8")))
        per[i + 1] = [Face(box=(0, 0, 60, 60), landmarks=lms[0], track_id=0)]
    tracks = FaceTracks.from_faces(per)
    settings = Settings(model="passthrough", temporal=0.5, batch=4)
    torch.set_num_threads(1)

    def peak_mb(frames: int) -> float:
        engine = Engine(settings)
        engine._restorer = Dim()
        tracemalloc.start()
        run_clip(str(tmp_path / "c.####.png"), str(tmp_path / f"o{frames}" / "o.####.png"), settings, tracks=tracks,
                 frames=f"1-{frames}", progress=False, engine=engine)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak / 2**20

    short, long = peak_mb(12), peak_mb(120)
    print(f"python-side peak: 12 frames {short:.1f} MB, 120 frames {long:.1f} MB")
    assert long < 1.25 * short + 1.0


_CHURN = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
if sys.argv[1] == "fixed":
    from facefix.hostmem import return_frames_to_the_os
    assert return_frames_to_the_os()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def churn(_):
    for _ in range(4):
        frame = np.ones((540, 960, 3), np.float32)  # 6 MB, freed on the thread that made it
        del frame
base = rss()
with ThreadPoolExecutor(4) as pool:
    list(pool.map(churn, range(8)))
print((rss() - base) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_freed_frame_buffers_go_back_to_the_os():
    """Frame-sized buffers freed on I/O threads stay resident by default (the creep seen over long shots);
    with the command line's allocator setting they are returned."""
    def retained_mb(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    assert retained_mb("fixed") < 2.0
    assert retained_mb("default") > 10.0  # the control: without it, the pools keep what they were given


def test_pinned_memory_setting_joins_the_users_and_never_overrides_it(monkeypatch):
    from facefix import hostmem

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert hostmem.fast_pinned_memory()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == hostmem.PINNED_SETTINGS
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert hostmem.fast_pinned_memory()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True," + hostmem.PINNED_SETTINGS
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "pinned_num_register_threads:2")
    assert not hostmem.fast_pinned_memory()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "pinned_num_register_threads:2"
    monkeypatch.setattr(hostmem.metadata, "version", lambda name: "2.1.2+cu121")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert not hostmem.fast_pinned_memory() and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
