"""10-bit DPX words unpacked and merged on the device (facefix.io.packed): the same samples the CPU reader and
writer give, and every bit the restore does not change left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.io.dpx import PackedLayout, pack_filled_10bit, unpack_filled_10bit
from facefix.io.frames import _widen_table, codes_from_unit, unit_from_codes
from facefix.io.packed import PackedRegion, merge_region, samples_of_unit, unit_of_samples, unpack_region

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
    from facefix.io.packed import merge_unit, unpack_unit

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
