"""The tflite -> torch converter against the LiteRT interpreter's raw outputs (goldens) and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facefix.detect.assets import MEDIAPIPE_DIR, MEDIAPIPE_SHA256, asset_path
from facefix.detect.tflite_torch import TFLiteModule, load_tflite, read_verified, same_padding
from facefix.errors import ChecksumError, ModelError

GOLDEN = Path(__file__).parent / "golden"
torch.set_num_threads(1)

CASES = [
    ("face_detection_short_range.tflite", "short_astro", -1.0, 1.0),
    ("face_detection_short_range.tflite", "short_crowd", -1.0, 1.0),
    ("face_detection_full_range_sparse.tflite", "full_wide", -1.0, 1.0),
    ("face_landmark.tflite", "mesh_astro", 0.0, 1.0),
    ("face_landmark.tflite", "mesh_rot", 0.0, 1.0),
    ("face_landmark.tflite", "mesh_camera", 0.0, 1.0),
]


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "raw.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def modules() -> dict[str, TFLiteModule]:
    return {name: load_tflite(*asset_path(name)) for name in MEDIAPIPE_SHA256}


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "planar"])
@pytest.mark.parametrize(("model", "key", "lo", "hi"), CASES)
def test_raw_outputs_match_litert(modules, raw, model, key, lo, hi, channels_last):
    """Both CPU layouts (channels-last, the default, and planar) give LiteRT's outputs."""
    x_u8 = raw[f"{key}_input"]
    x = torch.from_numpy(x_u8.astype(np.float32) / 255.0 * (hi - lo) + lo).permute(2, 0, 1)[None]
    modules[model].channels_last_on_cpu = channels_last
    try:
        with torch.no_grad():
            outs = modules[model](x)
    finally:
        modules[model].channels_last_on_cpu = True
    assert len(outs) == 2
    for j, y in enumerate(outs):
        ref = raw[f"{key}_out{j}"]
        assert tuple(y.shape) == ref.shape
        # float32 vs XNNPACK: differences are rounding only (measured max 1.2e-4 on outputs up to ~160).
        err = np.abs(y.numpy() - ref).max()
        assert err < 1e-3 * max(1.0, np.abs(ref).max() / 100), (key, j, err)


@pytest.mark.parametrize(("model", "key", "lo", "hi", "pad_adds", "folded"), [
    ("face_detection_short_range.tflite", "short_crowd", -1.0, 1.0, 11, 0),
    ("face_detection_full_range_sparse.tflite", "full_wide", -1.0, 1.0, 0, 43),
    ("face_landmark.tflite", "mesh_rot", 0.0, 1.0, 3, 0),
])
def test_pad_ops_are_folded_without_changing_the_outputs(modules, raw, model, key, lo, hi, pad_adds, folded):
    """Explicit PAD ops go into the convolutions' own padding or into the residual additions: no PAD is
    left to copy activations, and the outputs equal the graph run op by op (up to float rounding)."""
    fused = modules[model]
    assert (fused.fused_pad_adds, fused.folded_pads) == (pad_adds, folded)
    assert not any(step.op == "PAD" for step in fused._steps)
    plain = TFLiteModule(read_verified(*asset_path(model)), origin=model, fuse=False).eval()
    assert any(step.op == "PAD" for step in plain._steps)
    x = torch.from_numpy(raw[f"{key}_input"].astype(np.float32) / 255.0 * (hi - lo) + lo).permute(2, 0, 1)[None]
    x = torch.cat([x, x.flip(-1)])  # two crops: the in-place additions must not mix them
    with torch.no_grad():
        for a, b in zip(fused(x), plain(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_batched_equals_single(modules, raw):
    m = modules["face_landmark.tflite"]
    xs = torch.stack([torch.from_numpy(raw[f"{k}_input"].astype(np.float32) / 255).permute(2, 0, 1)
                      for k in ("mesh_astro", "mesh_rot", "mesh_camera")])
    with torch.no_grad():
        batched = m(xs)[0]
        single = torch.cat([m(xs[i:i + 1])[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-3)


def test_op_sets(modules):
    assert modules["face_detection_full_range_sparse.tflite"].ops_used == {
        "ADD", "CONV_2D", "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "PAD", "RESHAPE",
        "RESIZE_BILINEAR"}
    assert modules["face_landmark.tflite"].ops_used == {
        "ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "MAX_POOL_2D", "PAD", "PRELU"}
    assert "MAX_POOL_2D" in modules["face_detection_short_range.tflite"].ops_used


def test_same_padding():
    # TensorFlow: out = ceil(in / stride); the odd extra pixel goes after.
    assert same_padding(128, 3, 1) == (1, 1)
    assert same_padding(128, 5, 2) == (1, 2)
    assert same_padding(128, 2, 2) == (0, 0)
    assert same_padding(7, 3, 2) == (1, 1)


def test_tampered_file_is_refused(tmp_path):
    src, sha = asset_path("face_detection_short_range.tflite")
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "face_detection_short_range.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_tflite(bad, sha)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "sha256" in msg


def test_not_a_model(tmp_path):
    bad = tmp_path / "junk.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError) as err:
        load_tflite(bad)
    assert "\n" not in str(err.value) and "junk.tflite" in str(err.value)
    with pytest.raises(ModelError):
        load_tflite(tmp_path / "missing.tflite")


def test_shipped_files_have_notice_and_sources():
    sources = (MEDIAPIPE_DIR / "SOURCES").read_text()
    assert "mediapipe-0.10.21" in sources
    for name, sha in MEDIAPIPE_SHA256.items():
        assert f"{sha}  {name}" in sources
    assert "Apache License" in (MEDIAPIPE_DIR / "LICENSE").read_text()
    assert (MEDIAPIPE_DIR / "NOTICE").is_file()


def test_pointwise_product_is_the_convolution():
    """What CUDA runs for a 1x1 convolution (a batched matrix product) is the convolution, to rounding."""
    from facefix.detect.tflite_torch import _pointwise

    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 16, 9, 7, generator=g), torch.randn(24, 16, 1, 1, generator=g), torch.randn(24, generator=g)
    want = torch.nn.functional.conv2d(x, w, b)
    assert torch.allclose(_pointwise(x, w, b), want, atol=1e-5)
    assert torch.allclose(_pointwise(x, w, None), want - b.view(1, -1, 1, 1), atol=1e-5)
    # Channels-last input (CUDA's layout): the same values, in channels-last, without a copy to planar.
    cl = x.contiguous(memory_format=torch.channels_last)
    got = _pointwise(cl, w, b)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(_pointwise(cl, w, None), want - b.view(1, -1, 1, 1), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "planar"])
@pytest.mark.parametrize(("model", "key", "lo", "hi"), CASES)
def test_cuda_outputs_match_litert(modules, raw, model, key, lo, hi, channels_last):
    """On CUDA (pointwise convolutions as matrix products, resizes channels-last), in both layouts, the outputs are
    LiteRT's, within the TF32 rounding of cuDNN's other convolutions."""
    x_u8 = raw[f"{key}_input"]
    x = torch.from_numpy(x_u8.astype(np.float32) / 255.0 * (hi - lo) + lo).permute(2, 0, 1)[None].cuda()
    net = modules[model].cuda()
    default, net.channels_last_on_cuda = net.channels_last_on_cuda, channels_last
    try:
        with torch.no_grad():
            outs = [y.cpu() for y in net(x.repeat(5, 1, 1, 1))]
    finally:
        net.channels_last_on_cuda = default
        modules[model].cpu()
    for j, y in enumerate(outs):
        ref = raw[f"{key}_out{j}"]
        assert torch.equal(y[0], y[4])
        err = np.abs(y[0].numpy() - ref[0]).max()
        assert err < 2e-2 * max(1.0, np.abs(ref).max() / 10), (key, j, err)
