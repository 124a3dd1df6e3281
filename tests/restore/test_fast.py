"""The accelerated Restorer computes what the original does, and the classic reference loop runs.

GFPGAN is spandrel's own architecture at a small size (64 px, narrow channels), so the decoder, its
modulated convolutions and noise injection are the real ones. Random-init StyleGAN noise strengths
and biases are zero; they are set non-zero here (as in trained weights) so that a wrong order of
noise, bias and activation would show. The reference is an untouched deep copy of the same network.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from spandrel.architectures.GFPGAN import GFPGAN
from spandrel.architectures.GFPGAN.__arch import stylegan2_clean_arch as sg2
from spandrel.architectures.RestoreFormer import RestoreFormer

from facefix.errors import InputError, SettingsError
from facefix.geometry import FFHQ_TEMPLATE_512
from facefix.restore.base import Restorer
from facefix.restore.fast import _swap_gfpgan_forwards, accelerate
from facefix.restore.passthrough import passthrough_restorer
from facefix.restore.spandrel_restorers import build_restorer

SIZE = 64
TOL = 1e-4  # float32, outputs in [-1, 1]


def _tiny_gfpgan(seed: int = 3) -> GFPGAN:
    torch.manual_seed(seed)
    model = GFPGAN(out_size=SIZE, num_style_feat=32, narrow=0.125).eval()
    with torch.no_grad():
        for name, p in model.stylegan_decoder.named_parameters():
            if name.endswith("bias") or (name.endswith(".weight") and p.numel() == 1):
                p.copy_(torch.randn_like(p) * 0.3)  # biases and noise strengths, zero at init
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _restorer(model: torch.nn.Module, architecture: str = "GFPGAN", size: int = SIZE) -> Restorer:
    return build_restorer(
        "gfpgan-1.4", architecture, model, license="Apache-2.0", commercial_use=True, input_size=size
    )


def _crops(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _raw(model: torch.nn.Module, crops: torch.Tensor, randomize_noise: bool = False) -> torch.Tensor:
    with torch.no_grad():
        return model(crops * 2 - 1, return_rgb=False, randomize_noise=randomize_noise)[0]


@pytest.fixture(scope="module")
def reference() -> GFPGAN:
    return _tiny_gfpgan()


# --- the modulated convolution itself -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "demodulate", "mode"),
    [
        (3, True, None),
        (3, True, "upsample"),
        (3, True, "downsample"),
        (3, False, "upsample"),
        (1, False, None),
        (1, True, None),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_shared_weight_conv_equals_the_grouped_one(kernel, demodulate, mode, channels_last) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(kernel * 10 + demodulate)
    conv = sg2.ModulatedConv2d(6, 5, kernel, num_style_feat=8, demodulate=demodulate, sample_mode=mode)
    x = torch.randn(3, 6, 8, 8)
    style = torch.randn(3, 8)
    with torch.no_grad():
        expected = sg2.ModulatedConv2d.forward(conv, x, style)  # the class's own (grouped) forward
        holder = torch.nn.Sequential(conv)
        assert _swap_gfpgan_forwards(holder, channels_last) == 1
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        got = conv(x, style)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5 * max(1.0, expected.abs().max().item())


# --- the whole network ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_accelerated_gfpgan_equals_the_original(reference: GFPGAN, channels_last: bool) -> None:
    model = copy.deepcopy(reference)
    fast = accelerate(_restorer(model), channels_last=channels_last)
    x = _crops(4, 0)
    expected = _raw(reference, x)
    assert 0.2 < expected.std() and expected.abs().max() < 3  # a real, varied output
    got = _raw(model, x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    assert (got - expected).abs().max() < TOL
    # Through the Restorer call: [0, 1] in and out, contiguous NCHW back.
    out = fast(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ((expected + 1) / 2).clamp(0, 1), atol=TOL / 2, rtol=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_fresh_noise_is_drawn_as_upstream_draws_it(reference: GFPGAN) -> None:
    """The randomize_noise path (not used by FaceFix) keeps upstream's random stream too."""
    model = copy.deepcopy(reference)
    accelerate(_restorer(model), channels_last=False)
    x = _crops(2, 1)
    torch.manual_seed(11)
    expected = _raw(reference, x, randomize_noise=True)
    torch.manual_seed(11)
    got = _raw(model, x, randomize_noise=True)
    assert (got - expected).abs().max() < TOL
    assert (_raw(model, x, randomize_noise=True) - got).abs().max() > 1e-3  # it is random


@pytest.mark.parametrize("micro_batch", [None, 2, 3])
def test_result_does_not_depend_on_the_batch(reference: GFPGAN, micro_batch: int | None) -> None:
    fast = accelerate(_restorer(copy.deepcopy(reference)), micro_batch=micro_batch)
    x = _crops(5, 2)
    together = fast(x)
    assert together.shape == x.shape
    alone = torch.cat([fast(x[i : i + 1]) for i in range(5)])
    assert (together - alone).abs().max() < 1e-5
    order = torch.tensor([3, 0, 4, 1, 2])
    assert (fast(x[order]) - together[order]).abs().max() < 1e-5
    assert torch.equal(fast(x), together)  # same input, same output


def test_noise_stays_locked_and_in_use(reference: GFPGAN) -> None:
    model = copy.deepcopy(reference)
    fast = accelerate(_restorer(model))
    x = _crops(1, 4)
    first = fast(x)
    assert torch.equal(fast(x), first)
    stored = model.stylegan_decoder.noises.noise8.clone()  # the 64 px level
    with torch.no_grad():
        model.stylegan_decoder.noises.noise8.mul_(-1)
    flipped = fast(x)
    with torch.no_grad():
        model.stylegan_decoder.noises.noise8.copy_(stored)
    assert (flipped - first).abs().max() > 1e-3  # the stored map still reaches the output
    assert torch.equal(fast(x), first)


def test_micro_batches_and_graph_option_on_cpu(reference: GFPGAN) -> None:
    """CUDA graphs apply to CUDA tensors only: on the CPU the same call runs eagerly."""
    fast = accelerate(_restorer(copy.deepcopy(reference)), cuda_graphs=True, micro_batch=2)
    x = _crops(3, 5)
    expected = ((_raw(reference, x) + 1) / 2).clamp(0, 1)
    assert (fast(x) - expected).abs().max() < TOL
    assert fast(x[:0]).shape == (0, 3, SIZE, SIZE)
    # Every network call sees exactly the micro-batch (the last chunk is padded).
    seen: list[int] = []
    inner = fast.run.fn
    fast.run.fn = lambda module, crops, fidelity: (
        seen.append(crops.shape[0]) or inner(module, crops, fidelity)
    )
    assert (fast(x) - expected).abs().max() < TOL
    assert seen == [2, 2]


def test_graphs_auto_only_for_architectures_known_to_capture(reference: GFPGAN) -> None:
    """cuda_graphs="auto" (the Engine's choice) graphs GFPGAN, whose capture the GPU tests check, and
    leaves other networks uncaptured rather than risk a capture failing mid-run."""
    auto = accelerate(_restorer(copy.deepcopy(reference)), cuda_graphs="auto", micro_batch=2)
    assert auto.run.graphs is not None
    torch.manual_seed(5)
    rf = RestoreFormer(n_embed=64, embed_dim=32, ch=32, ch_mult=(1, 2, 2, 4), attn_resolutions=(8,), resolution=64,
                       z_channels=32, head_size=2).eval()
    other = build_restorer("restoreformer", "RestoreFormer", rf, license="Apache-2.0", commercial_use=True,
                           input_size=64)
    assert accelerate(other, cuda_graphs="auto", micro_batch=2).run.graphs is None
    assert accelerate(copy.deepcopy(other), cuda_graphs=True, micro_batch=2).run.graphs is not None  # asked for


def test_accelerating_twice_wraps_once(reference: GFPGAN) -> None:
    once = accelerate(_restorer(copy.deepcopy(reference)), micro_batch=2)
    twice = accelerate(once, micro_batch=3, channels_last=False)
    assert twice.run.micro_batch == 3 and twice.run.base is once.run.base
    plain = accelerate(twice, channels_last=False)
    assert plain.run is once.run.base


def test_swapped_forwards_trace_in_one_graph(reference: GFPGAN) -> None:
    """torch.compile sees the whole network (no graph break in the swapped modules)."""
    model = copy.deepcopy(reference)
    fast = accelerate(_restorer(model))
    compiled = torch.compile(fast.run.base, backend="eager", fullgraph=True)
    x = _crops(2, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = compiled(model, x, 0.5)
    assert (got - (_raw(reference, x.contiguous()) + 1) / 2).abs().max() < TOL


def test_other_architectures_pass_through() -> None:
    assert accelerate(passthrough_restorer()).identity
    torch.manual_seed(5)
    rf = RestoreFormer(
        n_embed=64,
        embed_dim=32,
        ch=32,
        ch_mult=(1, 2, 2, 4),
        attn_resolutions=(8,),
        resolution=64,
        z_channels=32,
        head_size=2,
    ).eval()
    original = copy.deepcopy(rf)
    restorer = build_restorer(
        "restoreformer", "RestoreFormer", rf, license="Apache-2.0", commercial_use=True, input_size=64
    )
    fast = accelerate(restorer)
    assert not any("forward" in vars(m) for m in rf.modules())  # nothing swapped
    x = _crops(2, 7)
    expected = build_restorer(
        "restoreformer", "RestoreFormer", original, license="Apache-2.0", commercial_use=True, input_size=64
    )(x)
    assert (fast(x) - expected).abs().max() < TOL


@pytest.mark.parametrize(
    ("options", "fault"),
    [
        ({"compile": "fastest"}, "--compile"),
        ({"micro_batch": 0}, "--micro-batch"),
        ({"micro_batch": True}, "--micro-batch"),
        ({"micro_batch": 2.0}, "--micro-batch"),
        ({"cuda_graphs": True}, "--cuda-graphs"),
        ({"cuda_graphs": "sometimes", "micro_batch": 2}, "--cuda-graphs"),
    ],
)
def test_bad_options_are_named(reference: GFPGAN, options: dict, fault: str) -> None:
    with pytest.raises(SettingsError, match=fault):
        accelerate(_restorer(copy.deepcopy(reference)), **options)


@pytest.mark.slow  # two full-size forwards at batch 1: about 10-25 s on 2 CPU cores
def test_real_hyper_parameters_one_crop() -> None:
    torch.manual_seed(14)
    original = GFPGAN().eval()  # spandrel's defaults are GFPGAN v1.3/v1.4's settings
    with torch.no_grad():
        for name, p in original.stylegan_decoder.named_parameters():
            if name.endswith("bias") or (name.endswith(".weight") and p.numel() == 1):
                p.copy_(torch.randn_like(p) * 0.1)
    model = copy.deepcopy(original)
    accelerate(_restorer(model, size=512))
    x = _crops(1, 8, size=512)
    start = time.perf_counter()
    expected = _raw(original, x)
    mid = time.perf_counter()
    got = _raw(model, x.contiguous(memory_format=torch.channels_last))
    end = time.perf_counter()
    print(f"GFPGAN 512, 1 crop, CPU: original {mid - start:.2f} s, accelerated {end - mid:.2f} s")
    assert expected.std() > 0.05
    assert (got - expected).abs().max() < TOL


@pytest.mark.gpu
def test_cuda_graphs_and_compile_equal_eager_on_gpu(reference: GFPGAN) -> None:
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare float32 with float32
    try:
        x = _crops(5, 9).cuda()
        expected = ((_raw(reference.cuda(), x) + 1) / 2).clamp(0, 1)
        graphed = accelerate(_restorer(copy.deepcopy(reference)).to("cuda"), cuda_graphs=True, micro_batch=2)
        first = graphed(x)
        assert (first - expected).abs().max() < 1e-4
        assert torch.equal(graphed(x), first)
        assert (graphed(x[1:2]) - first[1:2]).abs().max() < 1e-5
        compiled = accelerate(_restorer(copy.deepcopy(reference)).to("cuda"), compile=True, micro_batch=2)
        assert (compiled(x) - expected).abs().max() < 1e-3
        # The Engine's choice: the compiled network replayed from graphs (no launches from Python).
        both = accelerate(_restorer(copy.deepcopy(reference)).to("cuda"), compile=True, cuda_graphs="auto",
                          micro_batch=2)
        once = both(x)
        assert both.run.graphs.entries
        assert (once - expected).abs().max() < 1e-3
        assert torch.equal(both(x), once)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
        reference.cpu()


# --- the classic reference loop ------------------------------------------------------------------


def _reference_loop() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_loop.py"
    spec = importlib.util.spec_from_file_location("facefix_benchmarks_reference_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FRAME = 128
SCALE = 70 / 512  # the aligned crop covers a 70 px square of the frame
OFFSET = np.array([30.0, 25.0])


def _frame() -> np.ndarray:
    y, x = np.mgrid[0:FRAME, 0:FRAME] + 0.5
    base = 128 + 60 * np.sin(x / 9.0) * np.cos(y / 11.0)
    return np.stack([base, base[::-1], base.T], axis=-1).round().astype(np.uint8)


def _face_box_masks() -> tuple[np.ndarray, np.ndarray]:
    """(outside, inside): pixels more than 1.5 px outside the crop's square, and its central half."""
    y, x = np.mgrid[0:FRAME, 0:FRAME] + 0.5
    lo, hi = OFFSET, OFFSET + 512 * SCALE  # the crop square [0, 512]^2 in the frame
    outside = (x < lo[0] - 1.5) | (x > hi[0] + 1.5) | (y < lo[1] - 1.5) | (y > hi[1] + 1.5)
    q = (hi - lo) / 4
    inside = (x > lo[0] + q[0]) & (x < hi[0] - q[0]) & (y > lo[1] + q[1]) & (y < hi[1] - q[1])
    return outside, inside


def test_reference_loop_pastes_only_near_the_face() -> None:
    loop = _reference_loop()
    frame = _frame()
    landmarks = FFHQ_TEMPLATE_512 * SCALE + OFFSET  # an exact similarity of the template
    outside, inside = _face_box_masks()

    (same,) = loop.reference_restore([frame], [[landmarks]], lambda t: t, "cpu")
    assert same.shape == frame.shape and same.dtype == np.uint8
    diff = np.abs(same.astype(int) - frame.astype(int))
    assert diff[outside].max() == 0
    assert diff[inside].mean() < 2 and diff[inside].max() < 10  # resampled twice, nothing else

    (white,) = loop.reference_restore([frame], [[landmarks]], lambda t: torch.ones_like(t), "cpu")
    changed = np.abs(white.astype(int) - frame.astype(int)).max(axis=2) > 0
    assert not changed[outside].any()
    assert (white[inside] == 255).all()

    as_float = frame.astype(np.float32) / 255
    (white_f,) = loop.reference_restore([as_float], [[landmarks]], lambda t: torch.ones_like(t), "cpu")
    assert white_f.dtype == np.float32 and white_f.shape == frame.shape
    np.testing.assert_allclose(white_f[inside], 1.0, atol=1e-6)
    np.testing.assert_array_equal(white_f[outside], as_float[outside])


def test_reference_loop_frames_without_faces_and_timing() -> None:
    loop = _reference_loop()
    frame = _frame()
    landmarks = FFHQ_TEMPLATE_512 * SCALE + OFFSET
    out = loop.reference_restore([frame, frame], [[], [landmarks]], lambda t: t, "cpu")
    assert len(out) == 2 and np.array_equal(out[0], frame) and out[0] is not frame
    fps = loop.reference_fps([frame], [[landmarks]], lambda t: t, "cpu", warmup=0)
    assert np.isfinite(fps) and fps > 0
    with pytest.raises(InputError, match="2 frames but face lists for 1"):
        loop.reference_restore([frame, frame], [[landmarks]], lambda t: t, "cpu")
    with pytest.raises(InputError, match="frame 0"):
        loop.reference_restore([frame[..., :2]], [[landmarks]], lambda t: t, "cpu")
