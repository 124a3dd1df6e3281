"""Temporal stabilisation through the whole pipeline: boiling goes down, chunks match one run."""

import numpy as np
import pytest
import torch

from facefix import Face, FaceTracks, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.geometry import crop_from_frame_matrix, warp_affine
from facefix.io import Frame, FrameFormat, open_source
from facefix.io.sequence import write_frame
from facefix.run import run_clip
from facefix.temporal import flicker

N = 10


class BoilingRestorer:
    """A stand-in face model that hallucinates fresh fine texture on every frame (deterministic per input)."""

    def __call__(self, crops, fidelity=0.5):
        out = []
        for c in crops:
            seed = int(torch.round(c.double().sum() * 1000).item()) % (2**31)
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn((1, c.shape[-2] // 8, c.shape[-1] // 8), generator=g)
            noise = torch.nn.functional.interpolate(noise[None], size=c.shape[-2:], mode="nearest")[0]
            out.append((c + 0.08 * noise.to(c.device)).clamp(0, 1))
        return torch.stack(out)


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    root = tmp_path_factory.mktemp("tshot")
    clip = synth.motion_clip(N, (192, 192), translate=(0.6, 0.3), start_scale=0.9)
    per = {}
    for i, (rgb, lm) in enumerate(zip(clip.frames, clip.landmarks)):
        n = 1001 + i
        write_frame(root / f"p.{n:04d}.exr", Frame(n, rgb, FrameFormat.for_pixels(rgb, "float")))
        per[n] = [Face(box=(*(lm.min(0) - 20), *(lm.max(0) + 20)), landmarks=lm, track_id=0)]
    return root, FaceTracks.from_faces(per), clip


def _run(root, tracks, dest, temporal, frames=None):
    s = Settings(model="passthrough", mask="box", temporal=temporal, colorspace="srgb", batch=3)
    e = Engine(s)
    e._restorer = BoilingRestorer()
    return run_clip(str(root / "p.####.exr"), str(dest), s, tracks=tracks, frames=frames, progress=False, engine=e)


def _aligned_face_flicker(path, clip):
    src = open_source(str(path))
    frames = torch.stack([torch.from_numpy(src.read(n).pixels.transpose(2, 0, 1).copy()) for n in src.frame_numbers])
    mats = np.stack([crop_from_frame_matrix(lm, 128) for lm in clip.landmarks])
    crops = warp_affine(frames, mats, (128, 128))  # motion removed: what is left is flicker
    mask = torch.zeros((1, 1, 128, 128))
    mask[..., 40:110, 35:93] = 1
    return flicker(crops, mask.expand(len(crops), -1, -1, -1))


def test_stabilisation_cuts_boiling_by_half(shot, tmp_path):
    root, tracks, clip = shot
    _run(root, tracks, tmp_path / "off.####.exr", 0.0)
    _run(root, tracks, tmp_path / "on.####.exr", 1.0)
    off = _aligned_face_flicker(tmp_path / "off.####.exr", clip)
    on = _aligned_face_flicker(tmp_path / "on.####.exr", clip)
    assert on <= 0.5 * off, (on, off)


def test_chunks_with_preroll_match_one_run(shot, tmp_path):
    root, tracks, _ = shot
    _run(root, tracks, tmp_path / "one.####.exr", 0.5)
    a = _run(root, tracks, tmp_path / "chunk.####.exr", 0.5, frames="1001-1005")
    b = _run(root, tracks, tmp_path / "chunk.####.exr", 0.5, frames="1006-1010")
    assert a.frames_preroll == 0 and b.frames_preroll > 0
    one, chunked = open_source(str(tmp_path / "one.####.exr")), open_source(str(tmp_path / "chunk.####.exr"))
    assert one.frame_numbers == chunked.frame_numbers == list(range(1001, 1001 + N))
    for n in one.frame_numbers:
        assert np.array_equal(one.read(n).pixels, chunked.read(n).pixels), n
