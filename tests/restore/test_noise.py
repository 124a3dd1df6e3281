"""GFPGAN texture noise is locked: same crop, same result, whatever the call or the batch around it.

Uses GFPGAN's own architecture at a small size (32 px, narrow channels) so the decoder, its noise
injection and the Restorer's call path are the real ones, but a forward pass takes a fraction of a
second. Random-init StyleGAN noise strengths are zero, so they are set non-zero here, as in trained
weights; otherwise noise could not show.
"""

from __future__ import annotations

import pytest
import torch
from spandrel.architectures.GFPGAN import GFPGAN

from facefix.restore.spandrel_restorers import NOISE_SEED, build_restorer, fill_missing_gfpgan_noise

SIZE = 32


@pytest.fixture(scope="module")
def tiny_gfpgan() -> GFPGAN:
    torch.manual_seed(7)
    model = GFPGAN(out_size=SIZE, narrow=0.125).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                name.startswith("stylegan_decoder.style_convs.")
                and name.endswith(".weight")
                and p.numel() == 1
            ):
                p.fill_(0.5)  # noise strength of each StyleConv
        model.stylegan_decoder.style_conv1.weight.fill_(0.5)
    return model


def _restorer(model: GFPGAN):  # type: ignore[no-untyped-def]
    return build_restorer(
        "gfpgan-1.4", "GFPGAN", model, license="Apache-2.0", commercial_use=True, input_size=SIZE
    )


def _crops(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_upstream_default_draws_fresh_noise(tiny_gfpgan: GFPGAN) -> None:
    """The flicker being fixed: the network's default call differs from call to call."""
    x = _crops(1, 0) * 2 - 1
    with torch.no_grad():
        a = tiny_gfpgan(x, return_rgb=False)[0]
        b = tiny_gfpgan(x, return_rgb=False)[0]
    assert (a - b).abs().max() > 1e-3


def test_same_crop_same_result_on_every_call(tiny_gfpgan: GFPGAN) -> None:
    r = _restorer(tiny_gfpgan)
    x = _crops(1, 1)
    assert torch.equal(r(x), r(x))


def test_result_does_not_depend_on_batch_neighbours(tiny_gfpgan: GFPGAN) -> None:
    r = _restorer(tiny_gfpgan)
    x = _crops(2, 2)
    both = r(x)
    first, second = r(x[:1]), r(x[1:])
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)
    swapped = r(x.flip(0))
    torch.testing.assert_close(swapped.flip(0), both, atol=1e-5, rtol=0)


def test_matches_the_upstream_convention_with_stored_noise(tiny_gfpgan: GFPGAN) -> None:
    """[-1, 1] in, [-1, 1] out, noise from the stored buffers (GFPGAN's inference normalisation)."""
    r = _restorer(tiny_gfpgan)
    x = _crops(1, 3)
    with torch.no_grad():
        raw = tiny_gfpgan(x * 2 - 1, return_rgb=False, randomize_noise=False)[0]
    expected = ((raw + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(r(x), expected, atol=1e-6, rtol=0)
    # Feeding [0, 1] unmapped (spandrel's GFPGAN descriptor does) gives a different picture.
    with torch.no_grad():
        unmapped = tiny_gfpgan(x, return_rgb=False, randomize_noise=False)[0].clamp(0, 1)
    assert (unmapped - expected).abs().mean() > 1e-2


def test_missing_noise_maps_are_drawn_from_a_fixed_seed(tiny_gfpgan: GFPGAN) -> None:
    full = tiny_gfpgan.state_dict()
    noise_keys = [k for k in full if ".noises.noise" in k]
    assert len(noise_keys) == (5 - 2) * 2 + 1  # log2(32) = 5
    stripped = {k: v for k, v in full.items() if k not in noise_keys}
    a = fill_missing_gfpgan_noise(stripped)
    b = fill_missing_gfpgan_noise(stripped)
    for k in noise_keys:
        assert a[k].shape == full[k].shape
        assert torch.equal(a[k], b[k])
    g = torch.Generator().manual_seed(NOISE_SEED)
    assert torch.equal(a[noise_keys[0]], torch.randn(full[noise_keys[0]].shape, generator=g))
    # Maps present in the file are kept as they are.
    kept = fill_missing_gfpgan_noise(full)
    assert all(torch.equal(kept[k], full[k]) for k in noise_keys)
