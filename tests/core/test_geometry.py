import numpy as np
import pytest
import torch

from facefix.demo.synth import similarity
from facefix.errors import InputError
from facefix.geometry import (
    FFHQ_TEMPLATE_512,
    affine_scale,
    crop_from_frame_matrix,
    frame_rois,
    invert_affine,
    transform_points,
    umeyama_similarity,
    warp_affine,
)


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (5, 2))
    m = similarity(1.7, 23.0, 12.0, -40.0, center=(100, 50))
    dst = transform_points(m, src)
    est = umeyama_similarity(src, dst)
    np.testing.assert_allclose(est, m, atol=1e-9)


def test_umeyama_on_a_stack_equals_one_at_a_time_whatever_the_stack():
    """Crop matrices of a batch are computed in one call; a face's matrix must not depend on the others
    (that is what keeps output bit-identical across batch sizes)."""
    rng = np.random.default_rng(7)
    mats = [similarity(rng.uniform(0.2, 3), rng.uniform(-40, 40), *rng.uniform(-500, 500, 2)) for _ in range(6)]
    landmarks = np.stack([transform_points(m, FFHQ_TEMPLATE_512) + rng.normal(0, 2, (5, 2)) for m in mats])
    together = crop_from_frame_matrix(landmarks, 256)
    assert together.shape == (6, 2, 3)
    for i in range(6):
        alone = crop_from_frame_matrix(landmarks[i], 256)
        assert alone.shape == (2, 3) and np.array_equal(alone, together[i])
        assert np.array_equal(crop_from_frame_matrix(landmarks[i : i + 3], 256)[0], together[i])
        # The closed-form least squares: the template's points are the best fit in the mean square sense.
        cen = landmarks[i] - landmarks[i].mean(0)
        tpl = FFHQ_TEMPLATE_512 * 0.5 - (FFHQ_TEMPLATE_512 * 0.5).mean(0)
        a = (cen[:, 0] * tpl[:, 0] + cen[:, 1] * tpl[:, 1]).sum() / (cen**2).sum()
        b = (cen[:, 0] * tpl[:, 1] - cen[:, 1] * tpl[:, 0]).sum() / (cen**2).sum()
        np.testing.assert_allclose(alone[:, :2], [[a, -b], [b, a]], atol=1e-12)
    with pytest.raises(InputError):
        umeyama_similarity(np.zeros((3, 4, 2)), np.zeros((2, 4, 2)))  # stacks of different lengths


def test_umeyama_rejects_degenerate_points():
    with pytest.raises(InputError):
        umeyama_similarity(np.ones((5, 2)), np.zeros((5, 2)))


def test_crop_matrix_maps_landmarks_to_template():
    m = similarity(0.4, -12.0, 300, 200)
    landmarks = transform_points(invert_affine(m), FFHQ_TEMPLATE_512)  # frame landmarks whose crop is exact
    crop_from_frame = crop_from_frame_matrix(landmarks)
    np.testing.assert_allclose(transform_points(crop_from_frame, landmarks), FFHQ_TEMPLATE_512, atol=1e-8)
    assert affine_scale(crop_from_frame) == pytest.approx(0.4)


def test_invert_affine_roundtrip():
    m = similarity(2.5, 40, 3, 4)
    pts = np.array([[1.0, 2.0], [30.0, -4.0]])
    np.testing.assert_allclose(transform_points(invert_affine(m), transform_points(m, pts)), pts, atol=1e-10)


def test_warp_affine_pixel_centre_convention():
    """A pure translation by whole pixels moves pixels exactly (no half-pixel drift)."""
    img = torch.rand(1, 3, 16, 16)
    m = np.array([[[1.0, 0, 3.0], [0, 1.0, 2.0]]])  # dst = src + (3, 2)
    out = warp_affine(img, m, (16, 16), mode="bilinear")
    torch.testing.assert_close(out[0, :, 2:, 3:], img[0, :, :14, :13], atol=1e-5, rtol=0)
    assert torch.all(out[0, :, :2, :] == 0)


def test_warp_affine_batches_and_indexes_sources():
    imgs = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(3)])
    m = np.repeat(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), 4, axis=0)
    out = warp_affine(imgs, m, (8, 8), src_index=np.array([2, 0, 1, 2]), mode="bilinear")
    assert out.shape == (4, 1, 8, 8)
    assert [float(o[0, 4, 4]) for o in out] == [2.0, 0.0, 1.0, 2.0]


def test_warp_affine_antialiases_when_shrinking():
    """A 1-px checkerboard shrunk 8x must come out mid-grey, not aliased stripes."""
    ys, xs = np.mgrid[0:256, 0:256]
    board = torch.from_numpy(((xs + ys) % 2).astype(np.float32))[None, None]
    m = np.array([[[1 / 8, 0, 0], [0, 1 / 8, 0]]])
    out = warp_affine(board, m, (32, 32))
    inner = out[0, 0, 2:-2, 2:-2]
    assert float((inner - 0.5).abs().max()) < 0.05


def test_frame_rois_cover_and_clip():
    frame_from_crop = np.array([[[0.25, 0, 10.0], [0, 0.25, 20.0]]])
    r = frame_rois(frame_from_crop, 512, (100, 100), pad=0)
    assert r.tolist() == [[10, 20, 100, 100]]


@pytest.mark.parametrize("scale", [1.2, 0.3])  # plain, and through the antialiasing pyramid
def test_many_outputs_from_one_source_equal_warping_each_alone(scale):
    """All faces of one frame read that frame without a copy of it per face: same pixels as one at a time
    and as a batch of separate copies."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((1, 3, 90, 120), dtype=np.float32))
    m = np.stack([similarity(scale, 3.0 * i, 5.0 * i, -3.0 * i) for i in range(3)])
    together = warp_affine(x, m, (40, 40), src_index=np.zeros(3, np.int64))
    alone = torch.cat([warp_affine(x, m[i : i + 1], (40, 40)) for i in range(3)])
    copies = warp_affine(x.expand(3, -1, -1, -1).contiguous(), m, (40, 40))
    assert torch.equal(together, alone) and torch.equal(together, copies)
    assert together.abs().sum() > 0
