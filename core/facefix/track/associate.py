"""Frame-to-frame association of faces: costs, optimal assignment, and a small tracker.

Faces detected in one frame are matched to the tracks alive in the previous frames by a cost built from
three cues: the distance between the track's predicted landmarks and the detection's (normalised by face
size), box overlap (IoU), and appearance (a small face-aligned colour patch sampled from the frame). The
matching is an optimal assignment (Hungarian / Kuhn-Munkres, implemented here) with a "leave unmatched"
option per track and per face. A track missing for up to ``max_gap`` listed frames stays a candidate, so a
face hidden by a passing hand, a blink or a missed detection gets its id back.

Convention: points are (x, y) in frame pixels, pixel centres at +0.5; boxes are (x0, y0, x1, y1). Time is
counted in *listed frames*: consecutive entries of the clip's frame list are one step apart, whatever their
frame numbers (1001, 1003, ... is a clip with one step between 1001 and 1003).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, SettingsError
from ..faces import Face

__all__ = [
    "AssociationWeights",
    "Tracker",
    "appearance_descriptors",
    "appearance_distance",
    "association_cost",
    "box_iou",
    "landmark_distance",
    "linear_assignment",
]

# Where the 5 landmarks sit in the unit square of the appearance patch (eyes, nose, mouth corners), the
# usual 5-point face layout; the patch is the face-aligned square around them.
_PATCH_LAYOUT = np.array(
    [[0.34, 0.40], [0.66, 0.40], [0.50, 0.58], [0.37, 0.74], [0.63, 0.74]], dtype=np.float64
)
PATCH_SIZE = 12


# -- geometric cues ----------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M); 0 for empty boxes."""
    from ..geometry import box_iou_np

    return box_iou_np(np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4))


def landmark_distance(a: np.ndarray, b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """Mean distance between the 5 landmarks of ``a`` (N, 5, 2) and ``b`` (M, 5, 2), divided by the mean of
    the two face sizes (N,) and (M,) -> (N, M). 0.1 means "a tenth of a face apart"."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = np.linalg.norm(a[:, None] - b[None, :], axis=-1).mean(axis=-1)
    scale = 0.5 * (np.asarray(size_a, np.float64)[:, None] + np.asarray(size_b, np.float64)[None, :])
    return d / np.maximum(scale, 1e-6)


# -- appearance ----------------------------------------------------------------------------------------
def _to_chw(frame: object) -> torch.Tensor:
    """A frame as a (3, H, W) float tensor: a (3, H, W) tensor as it is; an array (H, W, C>=3), or (C, H, W) where
    only its first axis can be channels, copied to a contiguous float32 one."""
    if isinstance(frame, torch.Tensor):
        x = frame
    else:
        arr = np.asarray(frame)
        if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and arr.shape[0] in (3, 4):
            arr = arr.transpose(1, 2, 0)  # channels first
        if arr.ndim != 3 or arr.shape[-1] < 3:
            raise InputError(f"appearance: expected a (3, H, W) or (H, W, 3) frame, got shape {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1), dtype=np.float32))
    if x.ndim != 3 or x.shape[0] < 3:
        raise InputError(f"appearance: expected a (3, H, W) or (H, W, 3) frame, got shape {tuple(x.shape)}")
    return x[:3]


def _taps(h: int, w: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bilinear taps of pixel coordinates (centres at +0.5) in an h x w image, edge-clamped: the rows y0, y1,
    columns x0, x1 and weights fx, fy (..., 1)."""
    x = np.clip(xs - 0.5, 0, w - 1)
    y = np.clip(ys - 0.5, 0, h - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    return y0, np.minimum(y0 + 1, h - 1), x0, np.minimum(x0 + 1, w - 1), (x - x0)[..., None], (y - y0)[..., None]


def appearance_batch(frames: torch.Tensor, faces: Sequence[Sequence[Face]], patch: int = PATCH_SIZE
                     ) -> list[list[np.ndarray]]:
    """``appearance_descriptors`` of the faces of every frame of a batch (N, 3, H, W), on any device: the
    sample points are placed on the CPU; the frames' pixels under them are gathered, blended into patches and
    normalised where the frames are, and only the descriptors come back (a GPU batch sends a few kB, not its
    frames, in one transfer each way, and the host does no per-pixel work)."""
    from ..geometry import umeyama_similarity

    h, w = frames.shape[-2:]
    out: list[list[np.ndarray]] = [[] for _ in faces]
    frame_of = np.asarray([i for i, fs in enumerate(faces) for _ in fs], np.int64)
    if not len(frame_of):
        return out
    # 2x2 sub-samples per patch pixel, in unit patch coordinates (pixel centres at +0.5), placed by each face's
    # landmarks: every face at once.
    sub = (np.arange(2 * patch) + 0.5) / (2 * patch)
    gx, gy = np.meshgrid(sub, sub)
    m = umeyama_similarity(_PATCH_LAYOUT, np.stack([f.landmarks for fs in faces for f in fs]))[:, :, :, None, None]
    y0, y1, x0, x1, fx, fy = _taps(h, w, m[:, 0, 0] * gx + m[:, 0, 1] * gy + m[:, 0, 2],
                                   m[:, 1, 0] * gx + m[:, 1, 1] * gy + m[:, 1, 2])  # (F, 2p, 2p)
    n = len(frame_of)
    k = gx.size
    dev = frames.device
    # The frame, row and column of each tap, and the blend weights: one upload each.
    where = torch.from_numpy(np.stack([np.repeat(frame_of, 4 * k), np.stack([y0, y0, y1, y1], 1).ravel(),
                                       np.stack([x0, x1, x0, x1], 1).ravel()])).to(dev)
    weights = torch.from_numpy(np.stack([fx, fy])).to(dev)  # (2, F, 2p, 2p, 1) float64
    values = frames[where[0], :3, where[1], where[2]].double().reshape(n, 4, *y0.shape[1:], 3)
    wx, wy = weights[0], weights[1]
    top = values[:, 0] * (1 - wx) + values[:, 1] * wx
    bot = values[:, 2] * (1 - wx) + values[:, 3] * wx
    patches = (top * (1 - wy) + bot * wy).reshape(n, patch, 2, patch, 2, 3).mean(dim=(2, 4)).reshape(n, -1)
    d = patches - patches.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    vectors = torch.where(norm > 1e-9, d / norm.clamp_min(1e-9), d).float().cpu().numpy()
    for i, v in zip(frame_of.tolist(), vectors):
        out[i].append(v)
    return out


def appearance_descriptors(frame: object, faces: Sequence[Face], patch: int = PATCH_SIZE) -> list[np.ndarray]:
    """One appearance vector per face, sampled from the frame's pixels.

    frame: (3, H, W) tensor, or (H, W, 3) (or (3, H, W)) array, display-referred values. Each face is resampled into
    a ``patch`` x ``patch`` colour patch aligned to its landmarks (so rotation and zoom do not change it),
    pre-blurred by averaging 2x2 sub-samples per patch pixel; the patch's mean brightness is removed and
    the vector L2-normalised, so a global exposure change barely moves it. Returns (3 * patch**2,) float32
    vectors, compared by ``appearance_distance``.
    """
    return appearance_batch(_to_chw(frame)[None], [faces], patch)[0]


def appearance_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance between descriptor sets ``a`` (N, D) and ``b`` (M, D), mapped to [0, 1] -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    cos = (a / np.maximum(na, 1e-12)) @ (b / np.maximum(nb, 1e-12)).T
    return np.clip((1.0 - cos) / 2.0, 0.0, 1.0)


# -- cost and assignment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AssociationWeights:
    """Weights and gates of the association cost (distances in face sizes, appearance in [0, 1]).

    A pair is matched only when its cost is below ``max_cost``; the landmark gate widens with the number
    of listed frames the track has been missing (``gate + gate_per_frame * (gap - 1)``, at most ``gate_max``).
    """

    landmarks: float = 1.0
    iou: float = 0.3
    appearance: float = 1.0
    gap_penalty: float = 0.01
    gate: float = 0.6
    gate_per_frame: float = 0.1
    gate_max: float = 1.5
    max_size_ratio: float = 1.8
    max_cost: float = 1.0

    def __post_init__(self) -> None:
        for name in ("landmarks", "iou", "appearance", "gap_penalty", "gate", "gate_per_frame", "gate_max",
                     "max_cost"):
            if not getattr(self, name) >= 0:
                raise SettingsError(f"association weight {name!r} must be >= 0, got {getattr(self, name)!r}")
        if not self.max_size_ratio >= 1:
            raise SettingsError(f"association max_size_ratio must be >= 1, got {self.max_size_ratio!r}")


def association_cost(pred_landmarks: np.ndarray, pred_boxes: np.ndarray, gaps: np.ndarray,
                     det_landmarks: np.ndarray, det_boxes: np.ndarray,
                     track_app: np.ndarray | None = None, det_app: np.ndarray | None = None,
                     weights: AssociationWeights = AssociationWeights()) -> np.ndarray:
    """Cost of matching N tracks to M detections -> (N, M); ``inf`` where the pair is gated out.

    pred_landmarks (N, 5, 2), pred_boxes (N, 4): each track's prediction for this frame; gaps (N,): listed
    frames since the track was last seen (1 = seen in the previous frame). det_landmarks (M, 5, 2),
    det_boxes (M, 4). track_app (N, D) / det_app (M, D): appearance vectors, or None to go without.
    """
    n, m = len(pred_boxes), len(det_boxes)
    if n == 0 or m == 0:
        return np.zeros((n, m))
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(n, 4)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(m, 4)
    size_t = np.maximum(pred_boxes[:, 2] - pred_boxes[:, 0], pred_boxes[:, 3] - pred_boxes[:, 1])
    size_d = np.maximum(det_boxes[:, 2] - det_boxes[:, 0], det_boxes[:, 3] - det_boxes[:, 1])
    lm = landmark_distance(pred_landmarks, det_landmarks, size_t, size_d)
    iou = box_iou(pred_boxes, det_boxes)
    gaps = np.asarray(gaps, np.float64).reshape(n)
    cost = weights.landmarks * lm + weights.iou * (1.0 - iou) + weights.gap_penalty * (gaps[:, None] - 1)
    if track_app is not None and det_app is not None:
        cost = cost + weights.appearance * appearance_distance(track_app, det_app)
    gate = np.minimum(weights.gate + weights.gate_per_frame * (gaps - 1), weights.gate_max)
    ratio = np.maximum(size_t[:, None], size_d[None, :]) / np.maximum(np.minimum(size_t[:, None], size_d[None, :]), 1e-6)
    ok = (lm <= gate[:, None]) & (ratio <= weights.max_size_ratio)
    return np.where(ok, cost, np.inf)


def _hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of every row of an (n, m) matrix, n <= m, all entries finite.

    Returns (n,) column indices. Shortest augmenting paths with row/column potentials, O(n^2 m).
    """
    n, m = cost.shape
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    match_col = np.zeros(m + 1, dtype=np.int64)  # match_col[j] = row (1-based) assigned to column j; 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match_col[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match_col[j0]
            # Reduced costs of row i0 against all free columns, in one vector step.
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            used_idx = np.nonzero(used)[0]
            u[match_col[used_idx]] += delta
            v[used_idx] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match_col[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match_col[j0] = match_col[j1]
            j0 = j1
    rows_to_col = np.full(n, -1, dtype=np.int64)
    for j in range(1, m + 1):
        if match_col[j]:
            rows_to_col[match_col[j] - 1] = j - 1
    return rows_to_col


# Matrices up to this many rows and columns are matched by looking at every matching (a few hundred for 4 x 4).
_ENUMERATED = 4


@functools.lru_cache(maxsize=32)
def _matchings(n: int, m: int) -> np.ndarray:
    """Every one-to-one matching of some of n rows to some of m columns: (K, n), each row's column or m (none)."""
    found: list[list[int]] = []

    def extend(cols: list[int], used: frozenset[int]) -> None:
        if len(cols) == n:
            found.append(cols)
            return
        extend(cols + [m], used)
        for j in range(m):
            if j not in used:
                extend(cols + [j], used | {j})

    extend([], frozenset())
    return np.array(found, np.int64).reshape(len(found), n)


def _clear_best_matching(cost: np.ndarray, max_cost: float, big: float) -> list[tuple[int, int]] | None:
    """``linear_assignment``'s pairs for a small matrix, from the cost of every matching, where one matching is
    clearly the cheapest (then it is the one the Hungarian method finds: ~10x faster at 4 x 4, a tracker's frame
    with four faces); None where the matrix is larger or two matchings cost (nearly) the same."""
    n, m = cost.shape
    if n > _ENUMERATED or m > _ENUMERATED:
        return None
    cols = _matchings(n, m)
    # A row left alone costs max_cost / 2, and so does a column: padded with a column for "none".
    padded = np.concatenate([np.where(np.isfinite(cost), cost, np.inf), np.full((n, 1), max_cost / 2.0)], axis=1)
    matched = (cols < m).sum(axis=1)
    totals = padded[np.arange(n), cols].sum(axis=1) + max_cost / 2.0 * (m - matched)
    order = np.argsort(totals, kind="stable")
    first = float(totals[order[0]])
    second = float(totals[order[1]]) if len(order) > 1 else np.inf
    if not np.isfinite(first) or not second - first > 1e-9 * big:
        return None
    return [(i, int(j)) for i, j in enumerate(cols[order[0]]) if j < m and cost[i, j] < max_cost]


def linear_assignment(cost: np.ndarray, max_cost: float = np.inf) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of rows to columns of ``cost`` (N, M), leaving any row or column
    unmatched when pairing it would cost ``max_cost`` or more; ``inf`` entries never match.

    Minimises sum(matched costs) + max_cost / 2 * (unmatched rows + unmatched columns), solved exactly by
    the Hungarian method on the (N + M) square matrix padded with "unmatched" slots. Returns sorted
    (row, col) pairs.
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise InputError(f"linear_assignment: cost must be 2-D, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    finite = np.isfinite(cost)
    if np.isfinite(max_cost):
        # Larger than any complete solution built from allowed entries, so a forbidden one is never used.
        big = (n + m + 1) * (abs(max_cost) + (np.abs(cost[finite]).max() if finite.any() else 0.0) + 1.0)
        best = _clear_best_matching(cost, max_cost, big)
        if best is not None:
            return best
        half = max_cost / 2.0
        sq = np.zeros((n + m, m + n))
        sq[:n, :m] = np.where(finite, cost, big)
        sq[:n, m:] = big
        sq[np.arange(n), m + np.arange(n)] = half  # row i left unmatched
        sq[n:, :m] = big
        sq[n + np.arange(m), np.arange(m)] = half  # column j left unmatched
        sq[n:, m:] = 0.0
        cols = _hungarian(sq)
        pairs = [(i, int(cols[i])) for i in range(n) if cols[i] < m]
        return sorted((i, j) for i, j in pairs if finite[i, j] and cost[i, j] < max_cost)
    # Without a threshold: match min(N, M) pairs (gated pairs only as a last resort, then dropped).
    big = (n + m + 1) * ((np.abs(cost[finite]).max() if finite.any() else 0.0) + 1.0)
    c = np.where(finite, cost, big)
    if n <= m:
        cols = _hungarian(c)
        pairs = [(i, int(cols[i])) for i in range(n)]
    else:
        rows = _hungarian(c.T)
        pairs = [(int(rows[j]), j) for j in range(m)]
    return sorted((i, j) for i, j in pairs if finite[i, j])


# -- tracker -----------------------------------------------------------------------------------------
@dataclass
class _Active:
    """Mutable state of one live track (what the tracker remembers between frames)."""

    id: int
    last_index: int
    landmarks: np.ndarray  # (5, 2) at last_index
    box: np.ndarray  # (4,)
    velocity: np.ndarray  # (7, 2): per listed frame, landmarks then box corners
    appearance: np.ndarray | None
    hits: int = 1


class Tracker:
    """Holds the live tracks of one shot and assigns a stable id to every face it is given.

    ``update(index, faces, appearance)`` is called once per listed frame in order (``index`` counts listed
    frames, see the module Convention) and returns one track id per face. ``reset()`` ends every track
    (a shot cut). Ids are never reused within one Tracker.
    """

    def __init__(self, max_gap: int = 12, weights: AssociationWeights = AssociationWeights(),
                 velocity_smoothing: float = 0.5, appearance_rate: float = 0.3, first_id: int = 0) -> None:
        if max_gap < 0:
            raise SettingsError(f"tracker max_gap must be >= 0, got {max_gap}")
        if not 0.0 <= velocity_smoothing < 1.0 or not 0.0 < appearance_rate <= 1.0:
            raise SettingsError("tracker velocity_smoothing must be in [0, 1) and appearance_rate in (0, 1]")
        self.max_gap = int(max_gap)
        self.weights = weights
        self.velocity_smoothing = float(velocity_smoothing)
        self.appearance_rate = float(appearance_rate)
        self.next_id = int(first_id)
        self.active: dict[int, _Active] = {}
        self.last_index: int | None = None

    def reset(self) -> None:
        """End all tracks (the next faces start new ids)."""
        self.active.clear()

    def _predict(self, t: _Active, index: int) -> tuple[np.ndarray, np.ndarray]:
        g = index - t.last_index
        # Trust the velocity only once it has been measured at least once.
        vel = t.velocity if t.hits > 1 else np.zeros_like(t.velocity)
        return t.landmarks + vel[:5] * g, t.box + vel[5:].ravel() * g

    def update(self, index: int, faces: Sequence[Face], appearance: Sequence[np.ndarray] | None = None) -> list[int]:
        """Associate ``faces`` seen at listed frame ``index``; returns their track ids (same order)."""
        if self.last_index is not None and index <= self.last_index:
            raise InputError(f"tracker: listed frame index {index} is not after {self.last_index}")
        if appearance is not None and len(appearance) != len(faces):
            raise InputError(f"tracker: frame index {index} has {len(faces)} faces but {len(appearance)} appearance vectors")
        self.last_index = index
        # Drop tracks missing for longer than max_gap listed frames.
        self.active = {k: t for k, t in self.active.items() if index - t.last_index <= self.max_gap + 1}
        tracks = list(self.active.values())
        ids = [-1] * len(faces)
        if tracks and faces:
            preds = [self._predict(t, index) for t in tracks]
            use_app = appearance is not None and all(t.appearance is not None for t in tracks)
            cost = association_cost(
                np.stack([p[0] for p in preds]), np.stack([p[1] for p in preds]),
                np.array([index - t.last_index for t in tracks]),
                np.stack([f.landmarks for f in faces]), np.array([f.box for f in faces]),
                np.stack([t.appearance for t in tracks]) if use_app else None,  # type: ignore[misc]
                np.stack(list(appearance)) if use_app and appearance is not None else None,
                self.weights,
            )
            for r, c in linear_assignment(cost, self.weights.max_cost):
                t = tracks[r]
                f = faces[c]
                g = index - t.last_index
                now = np.vstack([f.landmarks, np.asarray(f.box, np.float64).reshape(2, 2)])
                before = np.vstack([t.landmarks, t.box.reshape(2, 2)])
                v_new = (now - before) / g
                a = self.velocity_smoothing if t.hits > 1 else 0.0
                t.velocity = a * t.velocity + (1 - a) * v_new
                t.landmarks = f.landmarks.copy()
                t.box = np.asarray(f.box, np.float64)
                t.last_index = index
                t.hits += 1
                if appearance is not None and t.appearance is not None:
                    mix = (1 - self.appearance_rate) * t.appearance + self.appearance_rate * appearance[c]
                    t.appearance = (mix / max(float(np.linalg.norm(mix)), 1e-12)).astype(np.float32)
                ids[c] = t.id
        for c, f in enumerate(faces):
            if ids[c] >= 0:
                continue
            tid = self.next_id
            self.next_id += 1
            self.active[tid] = _Active(
                id=tid, last_index=index, landmarks=f.landmarks.copy(), box=np.asarray(f.box, np.float64),
                velocity=np.zeros((7, 2)),
                appearance=None if appearance is None else np.asarray(appearance[c], np.float32),
            )
            ids[c] = tid
        return ids
