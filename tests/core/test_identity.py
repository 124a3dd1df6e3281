"""Identity embeddings: same person under small changes is closer than a different person.

These tests are of the LBP/HOG fallback descriptor (named explicitly: the default is dlib's ResNet when its
weights are installed; that model is tested against dlib in tests/identity/).

Real different people come from the LFW faces bundled with scikit-image (``lfw_subset``, 25 x 25 px, so
the identity information is coarse and the test is demanding on the descriptor's noise robustness). The
sharp astronaut photo checks invariance to exposure, gamma, side light, noise, blur and residual
misalignment. Limits (not tested as features): the descriptor is not mirror-invariant and does not model
pose; see facefix.identity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.errors import InputError, ModelError
from facefix.geometry import FFHQ_TEMPLATE_512 as FFHQ_512
from facefix.geometry import umeyama_similarity as _fit_similarity
from facefix.identity import DESCRIPTOR_DIM, LBP_HOG, embed_faces

torch.set_num_threads(1)

def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def _t(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


def _residual(rng: np.random.Generator) -> np.ndarray:
    """What alignment leaves: up to 2 % zoom, 2 degrees, 4 px at 512 scale."""
    return synth.similarity(1 + rng.uniform(-0.02, 0.02), rng.uniform(-2, 2), *rng.uniform(-4, 4, 2),
                            center=(256.0, 256.0))


@pytest.fixture(scope="module")
def astronaut_aligned() -> tuple[np.ndarray, np.ndarray]:
    m = _fit_similarity(synth.ASTRONAUT_LANDMARKS, FFHQ_512)
    return synth.astronaut(), m


def test_shape_norm_and_batch_independence(astronaut_aligned):
    still, m = astronaut_aligned
    face = synth.warp_still(still, m, (512, 512))
    crops = _t([face, face[:, ::-1].copy(), np.full_like(face, 0.5)])
    e = embed_faces(crops, LBP_HOG)
    assert e.shape == (3, DESCRIPTOR_DIM) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(embed_faces(crops[:1], LBP_HOG)[0], e[0], atol=1e-6)
    assert torch.equal(embed_faces(crops, LBP_HOG), e)  # deterministic
    half = torch.nn.functional.interpolate(crops, size=(256, 256), mode="area")  # other sizes are resampled
    assert float(1 - embed_faces(half, LBP_HOG)[0] @ e[0]) < 0.05


def test_astronaut_is_stable_under_lighting_noise_and_misalignment(astronaut_aligned):
    still, m = astronaut_aligned
    rng = np.random.default_rng(0)
    face = synth.warp_still(still, m, (512, 512))
    variants = {
        "residual": synth.warp_still(still, _compose(_residual(rng), m), (512, 512)),
        "darker": np.clip(face * 0.6, 0, 1),
        "gamma": face**1.6,
        "side light": np.clip(face * np.linspace(0.6, 1.2, 512, dtype=np.float32)[None, :, None], 0, 1),
        "noise": np.clip(face + rng.normal(0, 0.03, face.shape).astype(np.float32), 0, 1),
        "soft": synth.degrade(face[None], blur_sigma=1.5, noise=0.02)[0],
    }
    from skimage import data

    cat = synth.warp_still(data.chelsea()[..., :3].astype(np.float32) / 255, synth.similarity(1.6, 0, -50, -40),
                           (512, 512))
    e = embed_faces(_t([face, cat, *variants.values()]), LBP_HOG)
    dist = {k: float(1 - e[0] @ e[i + 2]) for i, k in enumerate(variants)}
    not_a_face = float(1 - e[0] @ e[1])
    for name, d in dist.items():
        assert d < 0.25 * not_a_face, (name, d, not_a_face)


def test_lfw_same_person_is_closer_than_any_other_person():
    from skimage import data

    faces = data.lfw_subset()[:40]  # the first 100 of lfw_subset are faces (of mostly different people)
    base = synth.similarity(300 / 25, 0, 106, 130)  # 25 px crop -> the inner face of the 512 template
    rng = np.random.default_rng(1)

    def render(f: np.ndarray, m: np.ndarray) -> np.ndarray:
        return synth.warp_still(np.repeat(f[..., None], 3, -1).astype(np.float32), m, (512, 512))

    anchors = embed_faces(_t([render(f, base) for f in faces]), LBP_HOG)
    perturbed = []
    for f in faces:
        img = render(f, _compose(_residual(rng), base))
        img = np.clip(img * rng.uniform(0.7, 1.1) + rng.normal(0, 0.02, img.shape), 0, 1) ** rng.uniform(0.8, 1.25)
        perturbed.append(img.astype(np.float32))
    same = embed_faces(_t(perturbed), LBP_HOG)
    d_same = 1 - (anchors * same).sum(1)
    d_other = 1 - anchors @ anchors.T
    d_other.fill_diagonal_(float("inf"))
    nearest_other = d_other.min(1).values
    assert float((d_same < nearest_other).float().mean()) >= 0.95
    assert float(d_same.median()) < 0.5 * float(nearest_other.median())


def test_optional_model_is_used_and_normalised(astronaut_aligned):
    crops = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    seen = {}

    def model(x: torch.Tensor) -> torch.Tensor:
        seen["shape"] = tuple(x.shape)
        return x.mean((2, 3)) * 10

    e = embed_faces(crops, model=model)
    assert seen["shape"] == (2, 3, 512, 512)
    assert torch.allclose(e, torch.nn.functional.normalize(crops.mean((2, 3)), dim=1), atol=1e-6)
    with pytest.raises(ModelError):
        embed_faces(crops, model=lambda x: x.mean((1, 2, 3)))


def test_bad_crops_raise_input_error():
    with pytest.raises(InputError):
        embed_faces(torch.zeros(1, 1, 512, 512))
    with pytest.raises(InputError):
        embed_faces(torch.zeros(1, 3, 512, 256))
    with pytest.raises(InputError):
        embed_faces(torch.zeros(1, 3, 512, 512, dtype=torch.uint8))
    with pytest.raises(InputError):
        embed_faces(torch.zeros(0, 3, 512, 512))
