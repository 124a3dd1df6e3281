"""Diagnose scores on small crops and meshes with known truth."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.diagnose import scores as sc
from facefix.diagnose.samples import face_points
from facefix.faces import Face
from facefix.geometry import crop_from_frame_matrix, warp_affine


@functools.lru_cache(maxsize=1)
def _crops(n: int = 9) -> torch.Tensor:
    """n aligned 128 px crops of the bundled portrait drifting by a pixel a frame (the same face, real motion)."""
    still = torch.from_numpy(np.ascontiguousarray(synth.astronaut().transpose(2, 0, 1)))[None]
    lms = np.stack([synth.ASTRONAUT_LANDMARKS + np.array([0.6 * t, -0.4 * t]) for t in range(n)])
    mats = crop_from_frame_matrix(lms, sc.ANALYSIS_SIZE)
    return warp_affine(still, mats, (sc.ANALYSIS_SIZE, sc.ANALYSIS_SIZE), src_index=np.zeros(n, np.int64)).clamp(0, 1)


def test_boil_flags_only_the_transient_frame():
    crops = _crops().clone()
    gen = torch.Generator().manual_seed(0)
    face = sc.face_masks()["face"]
    crops[4] = (crops[4] + 0.08 * torch.randn(crops[4].shape, generator=gen) * face).clamp(0, 1)
    boil = sc.boil_scores(crops, list(range(9)))
    assert boil[4] > sc.THRESHOLDS["boil"]
    others = np.delete(boil, 4)
    assert others.max() < sc.THRESHOLDS["boil"]
    assert boil[0] == 0.0  # fewer than 4 neighbours: no majority, no score


def test_boil_ignores_a_change_that_lasts():
    crops = _crops().clone()
    crops[4:] = (crops[4:] * 0.85 + 0.05).clamp(0, 1)  # a light change from frame 4 on: shared by the frames after
    boil = sc.boil_scores(crops, list(range(9)))
    assert boil.max() < sc.THRESHOLDS["boil"]


def test_boil_a_gap_is_a_missing_neighbour():
    crops = _crops()
    boil = sc.boil_scores(crops, [0, 1, 2, 3, 10, 11, 12, 13, 14])
    assert boil[3] == 0.0 and boil[4] == 0.0  # each has 3 neighbours in its window


def _mesh_window(offset_at: int | None, shift: float = 12.0) -> list[np.ndarray]:
    mesh = synth.still_mesh()
    lm = synth.ASTRONAUT_LANDMARKS
    pts = []
    for t in range(9):
        m = synth.similarity(1.0 + 0.01 * t, 0.5 * t, 2.0 * t, -1.0 * t, center=tuple(lm.mean(0)))
        mesh_t = synth.apply_affine(m, mesh)
        if t == offset_at:
            eye = synth.apply_affine(m, lm[:1])[0]
            d2 = ((mesh_t - eye) ** 2).sum(-1, keepdims=True)
            mesh_t = mesh_t + np.array([shift, 0.0]) * np.exp(-d2 / (2 * 12.0 ** 2))
        face = Face(box=(0, 0, 10, 10), landmarks=synth.apply_affine(m, lm), mesh=mesh_t)
        pts.append(face_points(face))
    return pts


def test_warp_scores_a_transient_mesh_offset_and_not_rigid_motion():
    clean = sc.warp_scores(_mesh_window(None), list(range(9)))
    assert clean.max() < 0.5
    warped = sc.warp_scores(_mesh_window(4), list(range(9)))
    assert warped[4] > sc.THRESHOLDS["warp"]
    assert np.delete(warped, 4).max() < sc.THRESHOLDS["warp"]


def test_texture_energy_falls_when_airbrushed():
    from facefix.filters import gaussian_blur

    crops = _crops()[:3]
    sharp = sc.texture_energy(crops)
    soft = sc.texture_energy(gaussian_blur(crops, 1.0))
    assert np.all(soft < 0.8 * sharp)
    # A track's typical frames set the reference: one airbrushed frame among sharp ones scores high.
    e = np.array([sharp[0]] * 6 + [soft[0]])
    w = sc.waxy_scores(e)
    assert w[-1] > sc.THRESHOLDS["waxy"] and w[:-1].max() == 0.0
    # A whole track below the floor is waxy too; unscorable frames score 0.
    low = sc.waxy_scores(np.full(4, 0.5 * sc.WAXY_FLOOR), np.array([True, True, True, False]))
    assert np.allclose(low, [0.5, 0.5, 0.5, 0.0])


def test_drift_is_the_cosine_distance_from_the_reference():
    gen = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(1, 16, generator=gen), dim=1)
    b = torch.nn.functional.normalize(torch.randn(1, 16, generator=gen), dim=1)
    mix = torch.nn.functional.normalize(torch.cat([a, 0.5 * a + 0.5 * b, b]), dim=1)
    d = sc.drift_scores(mix, a.repeat(3, 1))
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert d[0] < d[1] < d[2]
    assert d[2] == pytest.approx(1.0 - float(a @ b.T), abs=1e-5)


def test_drift_threshold_follows_the_model():
    class Model:
        drift_threshold = 0.123

    assert sc.drift_threshold(None, "facefix.lbp-hog.1") == sc.THRESHOLDS["drift"]
    assert sc.drift_threshold(Model()) == 0.123
    assert sc.drift_threshold(object()) > 0


@pytest.mark.gpu
def test_scores_on_the_gpu_match_the_cpu():
    crops = _crops().clone()
    crops[4] = (crops[4] + 0.08 * torch.randn(crops[4].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    cpu = sc.motion_scores(crops, list(range(9)))
    gpu = sc.motion_scores(crops.cuda(), list(range(9)))
    assert np.allclose(cpu[0], gpu[0], atol=0.05)
    assert np.allclose(cpu[1], gpu[1], atol=0.1)
    assert np.allclose(sc.texture_energy(crops), sc.texture_energy(crops.cuda()), rtol=1e-3)

