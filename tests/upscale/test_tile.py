"""Tiled upscaling equals the whole-frame result within a measured bound; HDR excess is carried."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facefix.errors import InputError, SettingsError
from facefix.upscale import Upscaler, load_upscaler, tile_spans, upscale_tiled

torch.set_num_threads(1)


def _photo(rows: slice, cols: slice) -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[rows, cols].astype(np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


class _Counting:
    """Wraps an Upscaler and records the input size of every call."""

    def __init__(self, up: Upscaler) -> None:
        self.up, self.scale, self.device, self.tile_overlap = up, up.scale, up.device, up.tile_overlap
        self.calls: list[tuple[int, int]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[-2], x.shape[-1]))
        return self.up(x)


def test_tile_spans() -> None:
    assert tile_spans(10, 512) == [(0, 10)]
    assert tile_spans(1024, 512) == [(0, 512), (512, 1024)]
    spans = tile_spans(1100, 512)
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == 1100
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))
    assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1  # no sliver


@pytest.mark.parametrize("scale", [4, 2])
def test_compact_tiled_equals_untiled(scale: int) -> None:
    # animevideov3's receptive radius is 18 px < its default 24 px overlap: tiling is exact.
    x = _photo(slice(90, 146), slice(180, 248))
    x = torch.cat([x, x.flip(-1)])  # 2 frames, 56 x 68
    up = _Counting(load_upscaler("animevideov3", scale))
    whole = up.up(x)
    tiled = upscale_tiled(up, x, tile=24)
    assert len(up.calls) == 9  # 3 x 3 tiles, each frame batch at once
    assert tiled.shape == whole.shape == (2, 3, 56 * scale, 68 * scale)
    err = float((tiled - whole).abs().max())
    print(f"animevideov3 x{scale}: max |tiled - whole| = {err:.2e}")
    assert err < 1e-5


def test_x4plus_tiled_bound() -> None:
    # Two tiles side by side; each sees 64 px of context across the cut (the default for RRDBNet).
    x = _photo(slice(104, 120), slice(168, 328))  # 16 x 160 through the eyes: cut at column 80
    up = _Counting(load_upscaler("x4plus", 4))
    assert up.tile_overlap == 64
    whole = up.up(x)
    tiled = upscale_tiled(up, x, tile=80)
    assert up.calls == [(16, 144), (16, 144)]
    diff = (tiled - whole).abs()
    err = float(diff.max())
    # Away from the cut (beyond its receptive influence) nothing changes: tiles share the true borders.
    print(f"x4plus: max |tiled - whole| = {err:.2e}, mean {float(diff.mean()):.1e}")
    assert err < 5e-3  # measured 1.5e-3 here; 2e-2 with a 32 px overlap, hence the 64 px default


def test_hdr_excess_is_carried() -> None:
    up = load_upscaler("animevideov3", 2)
    x = _photo(slice(100, 132), slice(200, 232))
    hdr = x.clone()
    hdr[..., 8:16, 8:16] *= 6.0  # a highlight far above 1
    hdr[..., 20:24, 20:24] = -0.3  # a negative excursion
    y = upscale_tiled(up, hdr, tile=16)
    base = upscale_tiled(up, hdr.clamp(0, 1), tile=16)
    excess = hdr - hdr.clamp(0, 1)
    expected = base + F.interpolate(excess, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    assert float(y.max()) > 3.0 and float(y.min()) < -0.2
    # Display-referred input is untouched by the excess path.
    assert torch.equal(upscale_tiled(up, x, tile=16), upscale_tiled(up, x.clamp(0, 1), tile=16))


def test_bad_arguments() -> None:
    up = load_upscaler("animevideov3", 4)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(SettingsError, match="--upscale"):
        upscale_tiled(up, x, scale=2)
    with pytest.raises(SettingsError, match="tile"):
        upscale_tiled(up, x, tile=4)
    with pytest.raises(InputError, match="upscale"):
        upscale_tiled(up, torch.zeros(3, 8, 8))
