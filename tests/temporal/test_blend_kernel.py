"""The stabiliser's blend as one CUDA kernel (facefix.temporal.blend_triton) against its torch steps.

On the CPU the kernel runs in Triton's interpreter (a subprocess: the interpreter is chosen when Triton is
first imported), so its indexing, interpolation and border handling are checked without a GPU.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

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
            got, want = kernel(*args), blend_past_steps(*args)
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
             "up_y", "up_x", "cur_b", "cur_c", "cur_y", "past_b", "past_i", "past_c", "past_y", "K", "BLOCK"]
    types = ["*fp32"] * 5 + ["i32"] * 4 + ["fp32"] * 4 + ["i32"] * 7 + ["constexpr"] * 2
    compiled = hopper_compile(_blend_kernel, dict(zip(names, types)), {"K": 4, "BLOCK": 256})
    assert "ptx" in compiled.asm


def test_cpu_runs_the_torch_steps():
    args = window(2, 2, 16, 4, "cpu")
    torch.testing.assert_close(blend_past(*args), blend_past_steps(*args), rtol=0, atol=0)


def test_zero_weights_give_the_current_crop():
    current, past, flow, weight = window(2, 3, 16, 4, "cpu")
    torch.testing.assert_close(blend_past_steps(current, past, flow, weight * 0), current, rtol=0, atol=0)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("b", "k"), [(5, 4), (1, 6), (3, 1)])
def test_cuda_kernel_equals_the_torch_steps(b, k):
    args = window(b, k, 512, 128, "cuda", seed=k)
    got, want = blend_past(*args), blend_past_steps(*args)
    # The torch steps map pixel -> [-1, 1] -> pixel for grid_sample, which rounds a sample's position by up to
    # ~5e-5 px at 512 px; on these noise crops (neighbours differ by ~1) that is up to ~2.5e-5 in value.
    assert (got - want).abs().max().item() < 1e-4
    assert (got - want).abs().mean().item() < 2e-6
    # Deterministic, and a face's result does not depend on the others in the call.
    torch.testing.assert_close(blend_past(*args), got, rtol=0, atol=0)
    one = [args[0][1:2], args[1][1:2], args[2][k : 2 * k], args[3][k : 2 * k]] if b > 1 else args
    torch.testing.assert_close(blend_past(*one), got[1:2] if b > 1 else got, rtol=0, atol=0)
