"""The converted networks follow .to(): weights captured at build time must not stay behind."""

import torch

from facefix.detect.blazeface import load_blazeface


def test_blazeface_follows_to_dtype():
    net = load_blazeface("short")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    ref = net.raw(x)
    net64 = net.to(torch.float64)
    out = net64.raw(x.double())  # raises a dtype mismatch if a closure kept the float32 weights
    assert out[0].dtype == torch.float64
    torch.testing.assert_close(out[0].float(), ref[0], atol=1e-3, rtol=1e-4)
