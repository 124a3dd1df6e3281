"""The ncnn reader: every shipped model's .bin is consumed exactly by its .param's layers."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from facefix.errors import ModelError
from facefix.upscale.ncnn import FP16_TAG, parse_bin, parse_param, read_model
from facefix.upscale.realesrgan import ncnn_model_dir

SHIPPED = [
    "realesrgan-x4plus",
    "realesrgan-x4plus-anime",
    "realesr-animevideov3-x2",
    "realesr-animevideov3-x3",
    "realesr-animevideov3-x4",
]


def _expected_bin_size(param_text: str) -> int:
    """Byte count implied by the .param alone (fp16-tagged conv weights, fp32 biases and slopes)."""
    total = 0
    for line in param_text.splitlines()[2:]:
        tok = line.split()
        kv = dict(t.split("=", 1) for t in tok if "=" in t)
        if tok[0] == "Convolution":
            n = int(kv["6"])
            total += 4 + (2 * n + 3) // 4 * 4 + (4 * int(kv["0"]) if kv.get("5") == "1" else 0)
        elif tok[0] == "PReLU":
            total += 4 * int(kv["0"])
    return total


@pytest.mark.parametrize("stem", SHIPPED)
def test_shipped_bin_consumed_exactly(stem: str) -> None:
    d = ncnn_model_dir()
    param, binf = d / f"{stem}.param", d / f"{stem}.bin"
    size = binf.stat().st_size
    assert _expected_bin_size(param.read_text()) == size
    graph, weights = read_model(param, binf)
    assert weights.nbytes == size
    convs = graph.of_type("Convolution")
    assert set(weights.fp16) == {c.name for c in convs}  # every conv is fp16-tagged
    for c in convs:
        w, b = weights.arrays[c.name]
        assert w.size == c.params[6] and b.shape == (c.params[0],)
        assert np.isfinite(w).all() and np.isfinite(b).all()


def test_shipped_layer_counts() -> None:
    d = ncnn_model_dir()
    counts = {}
    for stem in SHIPPED:
        g, _ = read_model(d / f"{stem}.param", d / f"{stem}.bin")
        counts[stem] = (len(g.of_type("Convolution")), len(g.of_type("PReLU")))
    assert counts["realesrgan-x4plus"] == (351, 0)  # 1 + 23 blocks * 15 + 5
    assert counts["realesrgan-x4plus-anime"] == (96, 0)  # 1 + 6 blocks * 15 + 5
    assert counts["realesr-animevideov3-x4"] == (18, 17)


def test_animevideov3_x2_x3_are_the_x4_net_plus_a_resize() -> None:
    d = ncnn_model_dir()
    bins = {s: (d / f"realesr-animevideov3-{s}.bin").read_bytes() for s in ("x2", "x3", "x4")}
    assert bins["x2"] == bins["x3"] == bins["x4"]
    x4 = parse_param((d / "realesr-animevideov3-x4.param").read_text())
    for s, factor in (("x2", 0.5), ("x3", 0.75)):
        g = parse_param((d / f"realesr-animevideov3-{s}.param").read_text())
        last = g.layers[-1]
        assert last.type == "Interp" and last.params[0] == 3 and last.params[1] == factor  # bicubic
        assert [(la.type, la.params) for la in g.layers[:-1]] == [(la.type, la.params) for la in x4.layers]


_TINY = """7767517
4 5
Input            in0     0 1 data
Convolution      conv0   1 1 data a 0=2 1=3 4=1 5=1 6=54 9=2 -23310=1,2.000000e-01
PReLU            act0    1 1 a b 0=2
Eltwise          add0    2 1 b b output 0=1 -23301=2,2.0e-01,1
"""


def _tiny_bin(fp16: bool) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(54).astype(np.float16).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    s = rng.standard_normal(2).astype(np.float32)
    if fp16:
        wb = struct.pack("<I", FP16_TAG) + w.astype("<f2").tobytes()  # 108 bytes: already 4-aligned
    else:
        wb = struct.pack("<I", 0) + w.astype("<f4").tobytes()
    return wb + b.astype("<f4").tobytes() + s.astype("<f4").tobytes(), w, b, s


@pytest.mark.parametrize("fp16", [True, False])
def test_tiny_model_roundtrip(fp16: bool) -> None:
    g = parse_param(_TINY)
    conv = g.layers[1]
    assert conv.params[10] == (0.2,) and conv.params[9] == 2 and isinstance(conv.params[0], int)
    assert g.layers[3].params[1] == (0.2, 1)
    data, w, b, s = _tiny_bin(fp16)
    weights = parse_bin(data, g)
    assert weights.nbytes == len(data)
    np.testing.assert_array_equal(weights.arrays["conv0"][0], w.reshape(2, 3, 3, 3))
    np.testing.assert_array_equal(weights.arrays["conv0"][1], b)
    np.testing.assert_array_equal(weights.arrays["act0"][0], s)
    assert weights.fp16 == (frozenset({"conv0"}) if fp16 else frozenset())


def test_fp16_padding_to_four_bytes() -> None:
    text = "7767517\n1 2\nConvolution c 1 1 x y 0=1 1=1 5=0 6=3\n"
    data = struct.pack("<I", FP16_TAG) + np.array([1, 2, 3], "<f2").tobytes() + b"\0\0"
    w = parse_bin(data, parse_param(text)).arrays["c"][0]
    assert w.shape == (1, 3, 1, 1) and w.ravel().tolist() == [1.0, 2.0, 3.0]


def test_bin_errors() -> None:
    g = parse_param(_TINY)
    data, *_ = _tiny_bin(True)
    with pytest.raises(ModelError, match="left over"):
        parse_bin(data + b"\0\0\0\0", g, origin="m.bin")
    with pytest.raises(ModelError, match="truncated"):
        parse_bin(data[:-1], g, origin="m.bin")
    with pytest.raises(ModelError, match="tag 0x000D4B38"):
        parse_bin(struct.pack("<I", 0x000D4B38) + data[4:], g, origin="m.bin")
    bad = parse_param("7767517\n1 1\nDeconvolution d 1 1 x y 0=1\n")
    with pytest.raises(ModelError, match="Deconvolution"):
        parse_bin(b"", bad)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "magic"),
        ("123\n1 1\n", "magic"),
        ("7767517\n2 1\nInput in 0 1 data\n", "declares 2 layers"),
        ("7767517\n1 1\nInput in 0 3 data\n", "fewer blobs"),
        ("7767517\n1 1\nInput in 0 1 data 0=abc\n", "bad ncnn param value"),
        ("7767517\n1 1\nInput in 0 1 data -23310=2,1.0\n", "length mismatch"),
    ],
)
def test_param_errors(text: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        parse_param(text, origin="m.param")
