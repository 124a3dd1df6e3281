"""Real-ESRGAN converted from ncnn: same numbers as ncnn itself, official key layout, scales."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facefix.errors import InputError, SettingsError
from facefix.upscale import converted_state_dict, load_upscaler
from facefix.upscale.ncnn import read_model
from facefix.upscale.realesrgan import UPSCALERS, ncnn_model_files

torch.set_num_threads(1)


def _patch(size: int = 32) -> np.ndarray:
    """A real face patch (the astronaut's eyes), float32 RGB in [0, 1], (H, W, 3)."""
    from skimage import data

    return (
        np.ascontiguousarray(data.astronaut()[100 : 100 + size, 200 : 200 + size]).astype(np.float32) / 255.0
    )


def _to_tensor(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(2, 0, 1)[None].contiguous()


def _ncnn_forward(stem: str, chw: np.ndarray) -> np.ndarray:
    """Run the original .param/.bin with ncnn's CPU path, all in fp32.

    realesrgan-ncnn-vulkan feeds blob "data" with RGB / 255 (planar) and reads blob "output".
    """
    ncnn = pytest.importorskip("ncnn")
    param, binf = ncnn_model_files(stem)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = 1
    assert net.load_param(str(param)) == 0 and net.load_model(str(binf)) == 0
    src = np.ascontiguousarray(chw, dtype=np.float32)
    mat_in = ncnn.Mat(src)  # wraps src's memory: keep src alive until extraction is done
    ex = net.create_extractor()
    ex.input("data", mat_in)
    ret, mat_out = ex.extract("output")
    assert ret == 0
    out = np.array(mat_out).copy()
    del ex, net
    return out


@pytest.mark.parametrize("name", ["x4plus", "x4plus-anime", "animevideov3"])
def test_matches_ncnn(name: str) -> None:
    img = _patch(32)
    ref = _ncnn_forward(UPSCALERS[name][0], img.transpose(2, 0, 1))
    up = load_upscaler(name, 4)
    with torch.inference_mode():
        ours = up.module(_to_tensor(img))[0].numpy()  # raw network, before the [0, 1] clamp
    assert ours.shape == ref.shape == (3, 128, 128)
    err = float(np.abs(ours - ref).max())
    print(f"{name}: max |torch - ncnn| = {err:.2e}")
    assert err < 1e-4  # measured ~2e-6 (x4plus), ~2e-6 (anime), ~1e-6 (animevideov3)


def test_official_key_layout_and_exact_weights() -> None:
    sd = converted_state_dict("x4plus")
    assert len(sd) == 2 * 351
    for key, shape in {
        "conv_first.weight": (64, 3, 3, 3),
        "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
        "body.22.rdb3.conv5.weight": (64, 192, 3, 3),
        "conv_body.weight": (64, 64, 3, 3),
        "conv_up2.bias": (64,),
        "conv_last.weight": (3, 64, 3, 3),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    # The fp16 ncnn weights are exact in fp32: a round trip through fp16 changes nothing.
    w = sd["body.11.rdb2.conv3.weight"]
    assert torch.equal(w, w.half().float())
    # ...and equal the file's values for the layer at that position (conv 1 + 11*15 + 5 + 3 - 1).
    graph, weights = read_model(*ncnn_model_files("realesrgan-x4plus"))
    layer = graph.of_type("Convolution")[1 + 11 * 15 + 5 + 2]
    np.testing.assert_array_equal(weights.arrays[layer.name][0], w.numpy())

    compact = converted_state_dict("animevideov3")
    assert tuple(compact["body.1.weight"].shape) == (64,)  # PReLU slopes
    assert tuple(compact["body.34.weight"].shape) == (48, 64, 3, 3)  # 3 * 4**2 for the PixelShuffle


def test_conversion_is_fast_and_cached() -> None:
    t0 = time.perf_counter()
    a = converted_state_dict("x4plus-anime")
    t1 = time.perf_counter()
    b = converted_state_dict("x4plus-anime")
    t2 = time.perf_counter()
    assert t1 - t0 < 5.0 and t2 - t1 < 0.05
    assert a["conv_first.weight"] is b["conv_first.weight"]


@pytest.mark.parametrize("name", ["x4plus", "animevideov3"])
def test_scales_and_descriptor(name: str) -> None:
    x = _to_tensor(_patch(16)).repeat(2, 1, 1, 1)
    up4 = load_upscaler(name, 4)
    up2 = load_upscaler(name, 2)
    assert (up4.native_scale, up4.scale, up2.scale) == (4, 4, 2)
    assert up4.supports_half and up4.supports_bfloat16 and up4.license == "BSD-3-Clause"
    y4, y2 = up4(x), up2(x)
    assert y4.shape == (2, 3, 64, 64) and y2.shape == (2, 3, 32, 32)
    assert y4.dtype == torch.float32 and 0.0 <= float(y4.min()) and float(y4.max()) <= 1.0
    # x2 = the x4 result reduced by a 2x2 area average (computed here from the raw network).
    with torch.inference_mode():
        raw = up4.module(x)
    torch.testing.assert_close(y2, F.avg_pool2d(raw, 2).clamp(0, 1), rtol=0, atol=1e-6)
    # The x2 result is close to the input upsampled (it is a super-resolution of the same image).
    assert float((y2 - F.interpolate(x, scale_factor=2, mode="bilinear")).abs().mean()) < 0.03


def test_to_returns_a_new_descriptor() -> None:
    up = load_upscaler("animevideov3", 4)
    bf = up.to(dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and up.dtype == torch.float32
    assert next(up.module.parameters()).dtype == torch.float32
    x = _to_tensor(_patch(16))
    y, yb = up(x), bf(x)
    assert yb.dtype == torch.float32 and float((y - yb).abs().mean()) < 1e-2


def test_bad_arguments() -> None:
    with pytest.raises(SettingsError, match="--upscale-model"):
        load_upscaler("x8", 4)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="--upscale"):
        load_upscaler("x4plus", 3)
    up = load_upscaler("animevideov3", 4)
    with pytest.raises(InputError, match="animevideov3"):
        up(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="animevideov3"):
        up(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
