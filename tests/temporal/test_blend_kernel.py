"""The stabiliser's blend as one CUDA kernel (facefix.temporal.blend_triton) against its torch steps.

On the CPU the kernel runs in Triton's interpreter (a subprocess: the interpreter is chosen when Triton is
first imported), so its indexing, interpolation and border handling are checked without a GPU.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from facefix.errors import SettingsError
from facefix.temporal.stabilise import blend_past, blend_past_steps

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def window(b: int, k: int, size: int | tuple[int, int], low: int | tuple[int, int], device: str,  # type: ignore[no-untyped-def]
           seed: int = 0):
    """Random crops, and flows large enough to reach past every border (taps clamped there)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size if isinstance(size, tuple) else (size, size)
    fh, fw = low if isinstance(low, tuple) else (low, low)
    current = torch.rand((b, 3, h, w), generator=g)
    past = torch.rand((b, k, 3, h, w), generator=g) * 1.2 - 0.1  # HDR-ish values pass through
    flow = (torch.rand((b * k, 2, fh, fw), generator=g) - 0.5) * (max(fh, fw) / 2)
    weight = torch.rand((b * k, 1, fh, fw), generator=g)
    weight[0, :, : fh // 2] = 0.0  # a rejected region
    return [t.to(device) for t in (current, past, flow, weight)]


@needs_triton
def test_kernel_equals_the_torch_steps_in_the_interpreter(triton_interpreter):
    triton_interpreter("""
        import sys
        import torch
        from facefix.temporal.blend_triton import blend_past as kernel
        from facefix.temporal.stabilise import blend_past_steps
        sys.path.insert(0, sys.argv[1])
        from test_blend_kernel import window
        for b, k, size, low in ((2, 3, (32, 32), (8, 8)), (1, 1, (24, 40), (6, 10))):
            args = window(b, k, size, low, "cpu", seed=b)
            # the current crop as a strided view, as the stabiliser passes it
            args[0] = torch.cat([args[0], args[0]], dim=1)[:, :3]
            for own_floor in (1.0, 0.4):  # the current frame's own weight: 1, and falling where the past agrees
                got, want = kernel(*args, own_floor), blend_past_steps(*args, own_floor)
                assert got.shape == want.shape == (b, 3, *size), got.shape
                err = (got - want).abs().max().item()
                assert err < 2e-5, err
                assert (got - args[0]).abs().max().item() > 0.01  # the past frames did change it
        print("ok")
    """, os.path.dirname(__file__), timeout=300)


@needs_triton
def test_kernel_compiles_for_a_hopper_gpu(hopper_compile):
    """The interpreter runs Python; the compiler is stricter (globals, types). Compiled here without a GPU."""
    from facefix.temporal.blend_triton import _blend_kernel

    names = ["cur_ptr", "past_ptr", "flow_ptr", "weight_ptr", "out_ptr", "h", "w", "fh", "fw", "low_y", "low_x",
             "up_y", "up_x", "own_drop", "inv_own_full", "cur_b", "cur_c", "cur_y", "past_b", "past_i", "past_c",
             "past_y", "K", "BLOCK"]
    types = ["*fp32"] * 5 + ["i32"] * 4 + ["fp32"] * 6 + ["i32"] * 7 + ["constexpr"] * 2
    compiled = hopper_compile(_blend_kernel, dict(zip(names, types)), {"K": 4, "BLOCK": 256})
    assert "ptx" in compiled.asm


def test_cpu_runs_the_torch_steps():
    args = window(2, 2, 16, 4, "cpu")
    torch.testing.assert_close(blend_past(*args), blend_past_steps(*args), rtol=0, atol=0)


def test_zero_weights_give_the_current_crop():
    current, past, flow, weight = window(2, 3, 16, 4, "cpu")
    torch.testing.assert_close(blend_past_steps(current, past, flow, weight * 0), current, rtol=0, atol=0)


def test_own_weight_falls_where_the_past_is_admitted():
    """(c current + sum_j w_j past_j) / (c + W), c = 1 - (1 - own_floor) min(W / 2, 1): flat crops, no motion."""
    b, k, s = 1, 2, 8
    current = torch.zeros((b, 3, s, s))
    past = torch.ones((b, k, 3, s, s))
    flow = torch.zeros((b * k, 2, 4, 4))
    for w, own_floor, want in ((0.5, 1.0, 1 / 2), (0.5, 0.4, 1 / (1 + 0.7)),  # W = 1: c = 0.7, halfway
                               (2.0, 0.4, 4 / 4.4), (0.0, 0.4, 0.0)):  # W = 4: c = own_floor; W = 0: the current
        weight = torch.full((b * k, 1, 4, 4), w)
        got = blend_past_steps(current, past, flow, weight, own_floor)
        torch.testing.assert_close(got, torch.full_like(current, want), rtol=0, atol=1e-6)
    with pytest.raises(SettingsError, match="own_floor"):
        blend_past(current, past, flow, torch.ones((b * k, 1, 4, 4)), 0.0)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("b", "k", "own_floor"), [(5, 4, 1.0), (1, 6, 0.4), (3, 1, 0.7)])
def test_cuda_kernel_equals_the_torch_steps(b, k, own_floor):
    args = [*window(b, k, 512, 128, "cuda", seed=k), own_floor]
    got, want = blend_past(*args), blend_past_steps(*args)
    # The torch steps map pixel -> [-1, 1] -> pixel for grid_sample, which rounds a sample's position by up to
    # ~5e-5 px at 512 px; on these noise crops (neighbours differ by ~1) that is up to ~2.5e-5 in value.
    assert (got - want).abs().max().item() < 1e-4
    assert (got - want).abs().mean().item() < 2e-6
    # Deterministic, and a face's result does not depend on the others in the call.
    torch.testing.assert_close(blend_past(*args), got, rtol=0, atol=0)
    one = [args[0][1:2], args[1][1:2], args[2][k : 2 * k], args[3][k : 2 * k], own_floor] if b > 1 else args
    torch.testing.assert_close(blend_past(*one), got[1:2] if b > 1 else got, rtol=0, atol=0)
