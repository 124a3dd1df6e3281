"""10-bit DPX words unpacked and merged on the device (facefix.packed): the same samples the CPU reader and
writer give, and every bit the restore does not change left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.io.dpx import PackedLayout, pack_filled_10bit, unpack_filled_10bit
from facefix.io.frames import _widen_table, codes_from_unit, unit_from_codes
from facefix.packed import PackedRegion, merge_region, samples_of_unit, unit_of_samples, unpack_region

RNG = np.random.default_rng(5)


def _raw_words(layout: PackedLayout) -> np.ndarray:
    """Random words as a file holds them, unused bits set too (a careless writer's)."""
    return RNG.integers(0, 2**32, (layout.height, layout.words_per_line), dtype=np.uint64).astype(np.uint32)


def _samples_of(raw: np.ndarray, layout: PackedLayout) -> np.ndarray:
    """The file's 10-bit samples (H, W, C), through the CPU unpacker."""
    return unpack_filled_10bit(raw, layout) >> 6


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize(("width", "x0", "x1"), [(7, 0, 7), (7, 2, 5), (11, 1, 10), (11, 3, 4), (1, 0, 1)])
def test_unpacked_region_is_what_the_cpu_reader_gives(channels, big, width, x0, x1):
    layout = PackedLayout(width, 5, channels, big, 8192)
    raw = _raw_words(layout)
    region = PackedRegion(x0, x1, layout)
    got = unpack_region(torch.from_numpy(raw.view(np.int32)), region)
    np.testing.assert_array_equal(got.numpy(), _samples_of(raw, layout)[:, x0:x1].astype(np.int64))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize(("width", "x0", "x1"), [(7, 0, 7), (7, 2, 5), (11, 1, 10), (11, 3, 4)])
def test_merge_changes_only_the_changed_samples_bits(channels, big, width, x0, x1):
    layout = PackedLayout(width, 6, channels, big, 8192)
    raw = _raw_words(layout)
    region = PackedRegion(x0, x1, layout)
    new = torch.from_numpy(RNG.integers(0, 1024, (6, x1 - x0, channels)))
    changed = torch.from_numpy(RNG.random((6, x1 - x0, channels)) < 0.5)
    merged = torch.from_numpy(raw.view(np.int32).copy())
    merge_region(merged, new, changed, region)
    out = merged.numpy().view(np.uint32)

    want = _samples_of(raw, layout).astype(np.int64)
    want[:, x0:x1] = np.where(changed.numpy(), new.numpy(), want[:, x0:x1])
    np.testing.assert_array_equal(_samples_of(out, layout), want)
    native = out.view(layout.word_dtype), raw.view(layout.word_dtype)
    assert np.array_equal(native[0] & 3, native[1] & 3)  # the two unused bits of every word, as they were
    # Words whose samples did not change are the file's, byte for byte; so is a line's padding sample.
    touched_words = np.zeros(raw.shape, bool)
    flat = np.zeros((6, width * channels), bool)
    flat[:, x0 * channels : x1 * channels] = changed.numpy().reshape(6, -1)
    touched_words[:, : -(-width * channels // 3)] = np.pad(flat, ((0, 0), (0, -flat.shape[1] % 3))).reshape(
        6, -1, 3).any(-1)
    assert np.array_equal(out[~touched_words], raw[~touched_words])


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("big", [False, True])
def test_merged_words_of_a_clean_file_are_the_cpu_packers(channels, big):
    """A file written by the book (unused bits zero): the merged words are exactly what packing the merged
    samples on the CPU gives."""
    layout = PackedLayout(13, 4, channels, big, 8192)
    before = RNG.integers(0, 1024, (4, 13, channels))
    raw = pack_filled_10bit((before << 6).astype(np.uint16), big).view(np.uint32).copy()
    region = PackedRegion(2, 11, layout)
    new = torch.from_numpy(RNG.integers(0, 1024, (4, 9, channels)))
    changed = torch.from_numpy(RNG.random((4, 9, channels)) < 0.5)
    merged = torch.from_numpy(raw.view(np.int32).copy())
    merge_region(merged, new, changed, region)
    after = before.copy()
    after[:, 2:11] = np.where(changed.numpy(), new.numpy(), before[:, 2:11])
    want = pack_filled_10bit((after << 6).astype(np.uint16), big)
    assert merged.numpy().tobytes() == want.tobytes()


def test_unit_values_and_rounding_are_the_cpu_conversions():
    codes = np.arange(1024)
    want = unit_from_codes(_widen_table("uint16", 10)[codes], 10)
    np.testing.assert_array_equal(unit_of_samples(torch.from_numpy(codes)).numpy(), want)

    halves = (np.arange(1023) + 0.5) / 1023
    values = np.concatenate([
        RNG.random(100_000) * 1.2 - 0.1, want, halves, np.nextafter(halves.astype(np.float32), 0),
        np.nextafter(halves.astype(np.float32), 1), [np.nan, np.inf, -np.inf, -0.0, 1.0, 2.0],
    ]).astype(np.float32)
    cpu = codes_from_unit(values, "uint16", 10) >> 6
    np.testing.assert_array_equal(samples_of_unit(torch.from_numpy(values)).numpy(), cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize(("width", "x0", "x1"), [(7, 0, 7), (11, 1, 10), (11, 3, 4), (1920, 611, 1333)])
def test_cuda_kernels_are_the_torch_steps(channels, big, width, x0, x1):
    """On CUDA each step is one kernel: the same values, and the same words to the bit, as the torch steps
    (run on the CPU), for random words (unused bits set), NaN, Inf, half codes and values outside [0, 1]."""
    from facefix.packed import merge_unit, unpack_unit

    layout = PackedLayout(width, 9, channels, big, 8192)
    raw = torch.from_numpy(_raw_words(layout).view(np.int32))
    region = PackedRegion(x0, x1, layout)
    np.testing.assert_array_equal(unpack_unit(raw.cuda(), region).cpu().numpy(), unpack_unit(raw, region).numpy())

    h, w = 9, x1 - x0
    values = RNG.random((3, h, w)).astype(np.float32) * 1.2 - 0.1
    flat = values.reshape(-1)
    flat[::7] = ((RNG.integers(0, 1023, flat[::7].size) + 0.5) / 1023).astype(np.float32)  # half codes
    flat[::11] = np.resize(np.array([np.nan, np.inf, -np.inf, 1.0], np.float32), flat[::11].size)
    alpha = np.where(RNG.random((h, w)) < 0.3, 0.0, RNG.random((h, w))).astype(np.float32)
    rgb = torch.from_numpy(values).permute(1, 2, 0)  # (h, w, 3) through a channels-first buffer, as pasted
    on_cpu, on_gpu = raw.clone(), raw.cuda()
    merge_unit(on_cpu, rgb, torch.from_numpy(alpha), region)
    merge_unit(on_gpu, rgb.cuda(), torch.from_numpy(alpha).cuda(), region)
    assert on_gpu.cpu().numpy().tobytes() == on_cpu.numpy().tobytes()
    assert not torch.equal(on_cpu, raw)


def batch_of_parts(device: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """Several frames' regions of packed words in one buffer (both byte orders, RGB and RGBA, regions that
    start and end inside a word), their colours and alphas in one buffer each, as the pipeline lays them."""
    g = np.random.default_rng(seed)
    specs = [(11, 5, 3, False, 1, 10), (7, 4, 4, True, 2, 5), (13, 3, 3, True, 0, 13), (9, 6, 4, False, 3, 4)]
    raws, regions = [], []
    for width, rows, channels, big, x0, x1 in specs:
        layout = PackedLayout(width, rows, channels, big, 8192)
        raws.append(g.integers(0, 2**32, (rows, layout.words_per_line), dtype=np.uint64).astype(np.uint32))
        regions.append(PackedRegion(x0, x1, layout))
    buffer = torch.from_numpy(np.concatenate([r.reshape(-1) for r in raws]).view(np.int32)).to(device)
    sizes = [r.size for r in raws]
    views = [buffer[a : a + n].view(r.shape) for a, n, r in zip(np.cumsum([0, *sizes[:-1]]), sizes, raws)]
    pixels = [r.shape[0] * (reg.x1 - reg.x0) for r, reg in zip(raws, regions)]
    starts = np.cumsum([0, *pixels[:-1]])
    colours = torch.from_numpy(g.random(3 * sum(pixels), np.float32) * 1.2 - 0.1).to(device)
    colours[::13] = float("nan")
    alphas = torch.from_numpy(np.where(g.random(sum(pixels)) < 0.3, 0.0, g.random(sum(pixels))).astype(np.float32)).to(device)

    def region_of(values: torch.Tensor, k: int, per_pixel: int) -> torch.Tensor:
        rows, w = raws[k].shape[0], regions[k].x1 - regions[k].x0
        a = int(starts[k]) * per_pixel
        return values[a : a + rows * w * per_pixel].view(rows, w, per_pixel)

    parts = [(views[k], regions[k]) for k in range(len(raws))]
    rgb = [region_of(colours, k, 3) for k in range(len(raws))]
    alpha = [region_of(alphas, k, 1)[..., 0] for k in range(len(raws))]
    return buffer, parts, rgb, alpha


def check_parts_equal_one_at_a_time(device: str) -> None:
    """unpack_units / merge_units over a batch give what the torch steps give a region at a time."""
    from facefix.packed import merge_unit_steps, merge_units, unpack_unit_steps, unpack_units

    buffer, parts, rgb, alpha = batch_of_parts(device)
    outs = torch.empty(sum(r.numel() for r in rgb), device=device)
    sizes = [r.numel() for r in rgb]
    out_views = [outs[a : a + n].view(r.shape) for a, n, r in zip(np.cumsum([0, *sizes[:-1]]), sizes, rgb)]
    unpack_units(buffer, [(raw, region, out) for (raw, region), out in zip(parts, out_views)])
    for (raw, region), out in zip(parts, out_views):
        assert torch.equal(out.cpu(), unpack_unit_steps(raw.cpu(), region))
    want = [raw.cpu().clone() for raw, _ in parts]
    for w, (_, region), c, a in zip(want, parts, rgb, alpha):
        merge_unit_steps(w, c.cpu(), a.cpu(), region)
    merge_units(buffer, [(raw, region, c, a) for (raw, region), c, a in zip(parts, rgb, alpha)])
    for w, (raw, _) in zip(want, parts):
        assert raw.cpu().numpy().tobytes() == w.numpy().tobytes()
    assert any(not torch.equal(w, raw.cpu()) for w, (raw, _) in zip(want, batch_of_parts("cpu")[1]))


def test_batched_steps_on_the_cpu_are_the_steps_one_at_a_time():
    check_parts_equal_one_at_a_time("cpu")


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="Triton is not installed")
def test_batched_kernels_in_the_interpreter_are_the_torch_steps():
    """The kernels, run by Triton's interpreter on the CPU (a subprocess: it is chosen at import), over a batch
    of parts, against the torch steps a region at a time: the same values and the same words to the bit."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import facefix.packed as packed
        packed.kernels_for = lambda t: True  # the kernels, on CPU tensors
        from test_packed import check_parts_equal_one_at_a_time
        check_parts_equal_one_at_a_time("cpu")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)], capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.gpu
def test_batched_cuda_kernels_are_the_torch_steps():
    check_parts_equal_one_at_a_time("cuda")
