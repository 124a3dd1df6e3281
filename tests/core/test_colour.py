import numpy as np
import pytest

from facefix.colour import colour_transform, resolve_colorspace
from facefix.errors import SettingsError


def _in_gamut_srgb(n=4096, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 3)).astype(np.float32)


@pytest.mark.parametrize("space", ["srgb", "linear", "acescg", "rec709", "raw"])
def test_round_trip_error_below_1e4(space):
    ct = colour_transform(space)
    # In-gamut values of the input space: sRGB-gamut colours expressed in that space.
    x = ct.from_working(_in_gamut_srgb())
    back = ct.from_working(ct.to_working(x))
    assert float(np.abs(back - x).max()) < 1e-4


def test_linear_to_working_is_the_srgb_curve():
    ct = colour_transform("linear")
    lin = np.array([[0.0, 0.0031308, 0.18], [0.5, 1.0, 0.02]], np.float32)
    enc = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    np.testing.assert_allclose(ct.to_working(lin), enc, atol=2e-4)


def test_acescg_mid_grey_stays_grey():
    w = colour_transform("acescg").to_working(np.full((1, 3), 0.18, np.float32))
    assert float(np.ptp(w)) < 1e-3
    assert 0.45 < float(w.mean()) < 0.48  # 0.18 linear is ~0.46 in sRGB encoding


def test_auto_picks_by_file_type():
    assert resolve_colorspace("auto", is_float=True) == "linear"
    assert resolve_colorspace("auto", is_float=False) == "srgb"
    with pytest.raises(SettingsError):
        colour_transform("p3-hdr")


def test_input_not_modified():
    x = _in_gamut_srgb(10)
    y = x.copy()
    colour_transform("linear").to_working(x)
    np.testing.assert_array_equal(x, y)
