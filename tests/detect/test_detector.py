"""The 'blazeface' Detector end to end: MediaPipe agreement, small faces in 4K frames, min_face."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.detect import BlazeFaceDetector, Detector, DetectResult, load_detector, tile_grid
from facefix.detect.mesh import five_points
from facefix.errors import InputError, SettingsError
from facefix.faces import Face

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    det = load_detector("blazeface", "cpu")
    assert isinstance(det, BlazeFaceDetector)
    return det


def _face_in_frame(size: tuple[int, int], eye_dist: float, at: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
    """The astronaut scaled to ``eye_dist`` px between the eyes, pasted at ``at`` in a grey frame
    (rendered in a 256 px window only, so big frames stay cheap)."""
    still, lm = synth.astronaut(), synth.ASTRONAUT_LANDMARKS
    c = lm.mean(0)
    s = eye_dist / float(np.linalg.norm(lm[1] - lm[0]))
    h, w = size
    frame = np.full((h, w, 3), 0.45, np.float32)
    m = synth.similarity(s, 0.0, at[0] - c[0], at[1] - c[1], center=(c[0], c[1]))
    x0, y0 = at[0] - 128, at[1] - 128
    local = m.copy()
    local[:, 2] -= (x0, y0)
    frame[y0:y0 + 256, x0:x0 + 256] = synth.warp_still(still, local, (256, 256), frame[y0:y0 + 256, x0:x0 + 256])
    return torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous(), synth.apply_affine(m, lm)


def test_crowd_matches_mediapipe(detector, reference, gold):
    x = gold.png("astro_crowd")
    h, w = x.shape[-2:]
    (res,) = detector(x)
    assert isinstance(res, DetectResult) and res.skipped_small == 0
    boxes, _, _ = gold.detections(reference, "astro_crowd", 1, w, h)
    assert len(res.faces) == 4
    ours = np.array([f.box for f in res.faces])
    iou = gold.iou(boxes, ours)
    assert iou.max(1).min() >= 0.9  # tiles add detections to the blend; the strict check is per model
    ref_mesh = torch.tensor(reference["astro_crowd"]["mesh"]).reshape(-1, 468, 3) * torch.tensor([w, h, w])
    ref5 = five_points(ref_mesh).numpy()
    for f in res.faces:
        assert isinstance(f, Face) and f.source == "detected" and f.mesh is not None
        assert f.mesh.shape == (468, 3)
        err = np.linalg.norm(ref5 - f.landmarks[None], axis=-1).max(-1).min()
        # MediaPipe's face_mesh crops from short-range detections, this detector from full-range ones:
        # the mesh moves a little with its ROI (measured up to 2.6 px on these ~110 px faces).
        assert err < 4.0, err
    assert [f.score for f in res.faces] == sorted((f.score for f in res.faces), reverse=True)


def test_small_face_in_4k_needs_tiles(detector):
    """A face ~48 px tall (eye distance 19 px) in a 3840x2160 frame is found, with its landmarks."""
    x, true = _face_in_frame((2160, 3840), 19.0, (2900, 1500))
    (res,) = detector(x)
    assert len(res.faces) == 1 and res.skipped_small == 0
    f = res.faces[0]
    x0, y0, x1, y1 = f.box
    assert 40 <= y1 - y0 <= 60 and x0 < true[:, 0].min() and x1 > true[:, 0].max()
    assert np.linalg.norm(f.landmarks - true, axis=-1).max() < 3.0
    whole_only = BlazeFaceDetector(min_face=40, tiles=False, mesh=False)
    assert len(whole_only(x)[0].faces) == 0  # the whole-frame pass alone misses it


def test_min_face_counts_small_faces():
    det = BlazeFaceDetector(min_face=80, mesh=False)
    x, _ = _face_in_frame((720, 1280), 24.0, (400, 300))
    (res,) = det(x)
    assert res.faces == () and res.skipped_small == 1
    det_small = BlazeFaceDetector(min_face=40, mesh=False)
    (res2,) = det_small(x)
    assert len(res2.faces) == 1 and res2.skipped_small == 0
    assert res2.faces[0].mesh is None  # mesh off: 5 points come from the detection keypoints


def test_batch_equals_single(detector, gold):
    a, b = gold.png("astro_rot_p20"), gold.png("astro_mirror")
    both = detector(torch.cat([a, b]))
    assert len(both) == 2
    for single, batched in zip((detector(a)[0], detector(b)[0]), both):
        assert len(single.faces) == len(batched.faces) == 1
        assert np.allclose(single.faces[0].landmarks, batched.faces[0].landmarks, atol=1e-3)


def test_tile_grid_covers_frame():
    centres = tile_grid(1000, 500, 200.0)
    xs = sorted({c[0] for c in centres})
    assert xs[0] == 100 and xs[-1] == 900
    assert max(np.diff(xs)) <= 150 + 1e-9  # 25% overlap
    assert tile_grid(100, 80, 200.0) == [(50.0, 40.0)]


def test_api_contract(detector):
    assert isinstance(detector, Detector)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DetectResult((), 0).skipped_small = 1  # type: ignore[misc]
    with pytest.raises(InputError):
        detector(torch.zeros(3, 64, 64))
    with pytest.raises(SettingsError):
        load_detector("nope")
    with pytest.raises(SettingsError):
        BlazeFaceDetector(min_face=-1)
    (empty,) = detector(torch.full((1, 3, 96, 128), 0.5))
    assert empty.faces == () and empty.skipped_small == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(detector, gold):
    x = gold.png("astro_crowd")
    cpu = detector(x)[0]
    gpu = BlazeFaceDetector("cuda")(x.cuda())[0]
    assert len(gpu.faces) == len(cpu.faces) == 4
    for a, b in zip(cpu.faces, gpu.faces):
        assert np.abs(a.landmarks - b.landmarks).max() < 0.05
        assert np.abs(np.array(a.box) - np.array(b.box)).max() < 0.05
