"""Association: optimal assignment proven against brute force, IoU, appearance from real pixels, tracker."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facefix.demo import synth
from facefix.errors import InputError, SettingsError
from facefix.faces import Face
from facefix.track.associate import (
    AssociationWeights,
    Tracker,
    appearance_descriptors,
    appearance_distance,
    box_iou,
    linear_assignment,
)


def _brute_force(cost: np.ndarray, max_cost: float) -> float:
    """Best objective over every partial matching: matched costs + max_cost/2 per unmatched row/column."""
    n, m = cost.shape
    best = (n + m) * max_cost / 2
    for k in range(1, min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                c = cost[list(rows), list(cols)]
                if np.all(np.isfinite(c)) and np.all(c < max_cost):
                    best = min(best, float(c.sum()) + (n + m - 2 * k) * max_cost / 2)
    return best


def _objective(cost: np.ndarray, pairs: list[tuple[int, int]], max_cost: float) -> float:
    n, m = cost.shape
    return sum(cost[i, j] for i, j in pairs) + (n + m - 2 * len(pairs)) * max_cost / 2


def test_assignment_matches_brute_force_on_small_cases() -> None:
    rng = np.random.default_rng(0)
    for trial in range(150):
        n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        cost = rng.uniform(0, 1.5, (n, m))
        cost[rng.uniform(size=(n, m)) < 0.2] = np.inf
        max_cost = 1.0
        pairs = linear_assignment(cost, max_cost)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        assert all(np.isfinite(cost[i, j]) and cost[i, j] < max_cost for i, j in pairs)
        assert _objective(cost, pairs, max_cost) == pytest.approx(_brute_force(cost, max_cost), abs=1e-9), trial


def test_assignment_without_threshold_is_a_minimum_full_matching() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        n, m = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        cost = rng.uniform(0, 10, (n, m))
        pairs = linear_assignment(cost)
        assert len(pairs) == min(n, m)
        k = min(n, m)
        if n <= m:
            best = min(sum(cost[i, p[i]] for i in range(k)) for p in itertools.permutations(range(m), k))
        else:
            best = min(sum(cost[p[j], j] for j in range(k)) for p in itertools.permutations(range(n), k))
        assert sum(cost[i, j] for i, j in pairs) == pytest.approx(best)


def test_greedy_would_be_wrong_here() -> None:
    # Greedy takes (0, 0) at 0.1 and then must pay 0.9; the optimum pays 0.2 + 0.2.
    cost = np.array([[0.1, 0.2], [0.2, 0.9]])
    assert linear_assignment(cost, 1.0) == [(0, 1), (1, 0)]


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])


def test_appearance_tells_faces_apart_and_ignores_pose_and_exposure(still) -> None:
    lm = synth.ASTRONAUT_LANDMARKS
    c = lm.mean(axis=0)
    m1 = synth.similarity(0.7, 0.0, 128 - c[0], 96 - c[1], center=tuple(c))
    m2 = synth.similarity(0.9, 12.0, 140 - c[0], 90 - c[1], center=tuple(c))  # zoomed, rotated, moved
    f1 = synth.warp_still(still, m1, (192, 256))
    f2 = np.clip(synth.warp_still(still, m2, (192, 256)) * 0.75, 0, 1)  # and 25% darker
    lm1, lm2 = synth.apply_affine(m1, lm), synth.apply_affine(m2, lm)
    # Another real face: the same photo mirrored with its colours swapped (a different-looking person).
    other = np.ascontiguousarray(still[:, ::-1, ::-1])
    lm_o = lm.copy()
    lm_o[:, 0] = 512 - lm[:, 0]
    lm_o = lm_o[[1, 0, 2, 4, 3]]
    f3 = synth.warp_still(other, m1, (192, 256))
    lm3 = synth.apply_affine(m1, lm_o)
    # Box-only crops would differ by a pixel shift; a non-face patch of the photo as a control.
    d1 = appearance_descriptors(f1, [Face(box=(0, 0, 1, 1), landmarks=lm1)])[0]
    d2 = appearance_descriptors(f2, [Face(box=(0, 0, 1, 1), landmarks=lm2)])[0]
    d3 = appearance_descriptors(f3, [Face(box=(0, 0, 1, 1), landmarks=lm3)])[0]
    same, diff = appearance_distance(d1[None], d2[None])[0, 0], appearance_distance(d1[None], d3[None])[0, 0]
    print(f"appearance distance: same face (moved, rotated, zoomed, darker) {same:.4f}, other face {diff:.4f}")
    assert same < 0.08
    assert diff > 3 * same
    # Channels-first tensors give the same descriptor.
    import torch

    d1t = appearance_descriptors(torch.from_numpy(f1.transpose(2, 0, 1).copy()), [Face(box=(0, 0, 1, 1), landmarks=lm1)])[0]
    np.testing.assert_allclose(d1t, d1, atol=1e-5)


def _face(x: float, y: float, s: float = 60.0) -> Face:
    lm = (synth.ASTRONAUT_LANDMARKS - synth.ASTRONAUT_LANDMARKS.mean(axis=0)) * (s / 100.0) + [x, y]
    return Face(box=(x - s / 2, y - s / 2, x + s / 2, y + s / 2), landmarks=lm)


def test_tracker_keeps_ids_and_reattaches_after_a_miss() -> None:
    tr = Tracker(max_gap=3)
    assert tr.update(0, [_face(100, 100), _face(300, 100)]) == [0, 1]
    assert tr.update(1, [_face(305, 100), _face(103, 100)]) == [1, 0]
    assert tr.update(2, [_face(106, 100)]) == [0]  # face 1 missed
    assert tr.update(4, [_face(320, 100), _face(112, 100)]) == [1, 0]  # back after 2 missing frames
    assert tr.update(5, [_face(600, 400)]) == [2]  # far away: a new face
    tr.reset()
    assert tr.update(6, [_face(114, 100)]) == [3]  # a cut: new id even in the same place
    with pytest.raises(InputError):
        tr.update(6, [])
    with pytest.raises(InputError):
        tr.update(7, [_face(1, 1)], appearance=[])


def test_tracker_forgets_after_max_gap() -> None:
    tr = Tracker(max_gap=2)
    tr.update(0, [_face(100, 100)])
    assert tr.update(3, [_face(100, 100)]) == [0]  # 2 missing frames: still the same
    assert tr.update(7, [_face(100, 100)]) == [1]  # 3 missing frames: a new track


def test_bad_settings() -> None:
    with pytest.raises(SettingsError):
        AssociationWeights(max_cost=-1)
    with pytest.raises(SettingsError):
        Tracker(max_gap=-1)
    with pytest.raises(InputError):
        linear_assignment(np.zeros(3))


def test_small_matrices_enumerated_give_the_hungarian_pairs(monkeypatch) -> None:
    """Up to 4 x 4 the matching is chosen by the cost of every matching where one is clearly cheapest: the same
    pairs as the Hungarian method on the padded matrix; ties (two matchings of the same cost) go to it."""
    from facefix.track import associate

    rng = np.random.default_rng(7)
    cases = []
    for _ in range(300):
        n, m = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        cost = rng.uniform(0, 1.5, (n, m))
        cost[rng.uniform(size=(n, m)) < 0.2] = np.inf
        cases.append(cost)
    cases += [np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([[1.0]]), np.array([[0.3, np.inf], [np.inf, 1.0]])]
    fast = [linear_assignment(c, 1.0) for c in cases]
    enumerated = [associate._clear_best_matching(c, 1.0, 1e3) for c in cases]
    assert sum(e is not None for e in enumerated) > 150  # most cases up to 4 x 4 take the quick path
    assert associate._clear_best_matching(cases[-3], 1.0, 1e3) is None  # a tie
    assert associate._clear_best_matching(cases[-2], 1.0, 1e3) is None  # matching or not at exactly max_cost
    monkeypatch.setattr(associate, "_ENUMERATED", 0)  # the Hungarian method on every matrix
    assert fast == [linear_assignment(c, 1.0) for c in cases]
