"""Shot-cut detection from small thumbnails.

Each frame is reduced to a 32x32 thumbnail once (cheap to keep for a whole clip). Two frames are compared
by two cues that are each blind to something a cut is not:

* chromaticity histogram distance: the 2-D histogram of (r, g) / (r + g + b) ignores brightness, so a
  light ramp or an exposure change does not move it, and it ignores where things are, so motion does not;
* structure distance: the thumbnails are normalised per channel (mean 0, std 1, so again blind to gain and
  offset) and compared at 8x8, coarse enough that a face or camera moving by a few percent of the frame
  barely registers.

``cut_score`` averages them (0 = same shot, ~1 = unrelated images). ``find_cuts`` keeps a frame as a cut
when its score is high both in absolute terms and against the median of its neighbours, so sustained fast
motion (high scores everywhere) does not fire. A cut ends every track.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError, SettingsError

__all__ = ["THUMB_SIZE", "thumbnail", "cut_features", "feature_score", "cut_score", "cut_scores", "find_cuts", "is_cut", "CUT_WINDOW"]

THUMB_SIZE = 32
_HIST_BINS = 8
_STRUCT_SIZE = 8
# Scores on each side of a frame that ``find_cuts`` compares its score with.
CUT_WINDOW = 6
# Values of clipped frames pooled in one call of ``thumbnails`` (~64M: ten 1080p frames).
_THUMB_VALUES_PER_CALL = 1 << 26


def thumbnail(frame: object, size: int = THUMB_SIZE) -> np.ndarray:
    """Area-averaged (size, size, 3) float32 thumbnail of a frame.

    frame: a (3, H, W) tensor, or an (H, W, 3) (or (3, H, W)) array, display-referred values (sRGB-like; values
    are clipped to [0, 1] so scene-linear highlights do not dominate).
    """
    import torch

    if hasattr(frame, "detach"):
        x = frame.detach().float().cpu()  # type: ignore[attr-defined]
    else:
        arr = np.asarray(frame, dtype=np.float32)
        # Arrays are channels-last (H, W, 3) unless only the first axis can be channels.
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.ndim != 3 or x.shape[0] < 3:
        raise InputError(f"thumbnail: expected a (3, H, W) or (H, W, 3) frame, got shape {tuple(x.shape)}")
    return thumbnails(x[None], size)[0]


def thumbnails(frames: object, size: int = THUMB_SIZE, *, clipped: bool = False) -> list[np.ndarray]:
    """``thumbnail`` of every frame of a batch (N, 3, H, W) tensor, computed on its device (a GPU batch sends
    back its thumbnails only). clipped: the frames are float32 already in [0, 1] (an analysis's working frames),
    pooled as they are, all in one call: no clipped copy of them (the same thumbnails)."""
    import torch
    import torch.nn.functional as F

    batch: torch.Tensor = frames  # type: ignore[assignment]
    if clipped:
        parts = [batch[:, :3]] if len(batch) else []
    else:
        # A few frames a call (the pooling kernel has an output per thread: a frame alone leaves most of a GPU
        # idle), the clipped copy of at most _THUMB_VALUES_PER_CALL values; each thumbnail is the same whatever the
        # frames pooled with it.
        per_call = max(1, _THUMB_VALUES_PER_CALL // max(1, batch[0, :3].numel())) if len(batch) else 1
        parts = [batch[i : i + per_call, :3].float().clamp(0, 1) for i in range(0, len(batch), per_call)]
    if not parts:
        return []
    pooled = [F.adaptive_avg_pool2d(x, (size, size)) for x in parts]
    t = pooled[0] if len(pooled) == 1 else torch.cat(pooled)
    return list(np.ascontiguousarray(t.permute(0, 2, 3, 1).cpu().numpy(), dtype=np.float32))


_HIST_EDGES = np.linspace(0.0, 1.0, _HIST_BINS + 1)


def _chroma_hists(thumbs: np.ndarray) -> np.ndarray:
    """Brightness-weighted (r, g) chromaticity histograms (N, bins, bins) of thumbnails (N, h, w, 3), each
    summing to 1: the bins, counts and sums of ``np.histogram2d`` on each (the same values), in one pass."""
    n = thumbs.shape[0]
    red, green, blue = thumbs[..., 0], thumbs[..., 1], thumbs[..., 2]
    total = red + green + blue  # added in the order ``sum(axis=-1)`` adds them (the same values, 4x faster)
    s = total + 1e-3
    r = (red / s).reshape(n, -1)
    g = (green / s).reshape(n, -1)
    # Weight by brightness so near-black pixels (undefined chromaticity) count little.
    w = np.clip((total / 3).reshape(n, -1), 0.02, None)
    # histogram2d's binning: bin i + 1 holds edges[i] <= v < edges[i + 1], the last edge in the last bin; 0 and
    # bins + 1 are outside the range (dropped).
    side = _HIST_BINS + 2

    def bins(v: np.ndarray) -> np.ndarray:
        i = np.searchsorted(_HIST_EDGES, v, side="right")
        i[v == _HIST_EDGES[-1]] -= 1
        return i

    flat = (np.arange(n)[:, None] * side + bins(r)) * side + bins(g)
    h = np.bincount(flat.ravel(), w.ravel(), minlength=n * side * side).reshape(n, side, side)[:, 1:-1, 1:-1]
    return h / np.maximum(h.sum(axis=(1, 2), keepdims=True), 1e-12)  # type: ignore[no-any-return]


def _structures(thumbs: np.ndarray) -> np.ndarray:
    """Each thumbnail (N, h, w, 3) averaged to 8x8 and standardised per channel (mean 0, std 1) -> (N, 8, 8, 3)."""
    n, k = thumbs.shape[0], thumbs.shape[1] // _STRUCT_SIZE
    side = k * _STRUCT_SIZE
    small = thumbs[:, :side, :side].reshape(n, _STRUCT_SIZE, k, _STRUCT_SIZE, k, 3).mean(axis=(2, 4))
    mu = small.mean(axis=(1, 2), keepdims=True)
    sd = small.std(axis=(1, 2), keepdims=True)
    return (small - mu) / np.maximum(sd, 0.02)  # type: ignore[no-any-return]


def _checked(thumbs: Sequence[np.ndarray]) -> np.ndarray:
    a = [np.asarray(t, np.float32) for t in thumbs]
    if any(t.shape != a[0].shape for t in a) or a[0].ndim != 3 or a[0].shape[-1] != 3:
        raise InputError(f"cut scores: thumbnails must share an (h, w, 3) shape, got {sorted({t.shape for t in a})}")
    return np.stack(a)


def cut_features(thumbs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """What a cut score compares, of each thumbnail (from ``thumbnail``): its chromaticity histogram and its
    standardised 8x8 structure. Made once a frame, though a frame is scored against both its neighbours."""
    if not len(thumbs):
        return []
    a = _checked(thumbs)
    return list(zip(_chroma_hists(a), _structures(a)))


def feature_score(prev: tuple[np.ndarray, np.ndarray], cur: tuple[np.ndarray, np.ndarray]) -> float:
    """``cut_score`` of two frames from their ``cut_features``."""
    hist = 0.5 * float(np.abs(prev[0] - cur[0]).sum())  # total variation, in [0, 1]
    # Mean |difference| of two standardised images: ~1.13 for independent ones; scale to ~1.
    struct = float(np.abs(prev[1] - cur[1]).mean()) / 1.13
    return 0.5 * hist + 0.5 * min(struct, 1.5)


def cut_score(prev_thumb: np.ndarray, cur_thumb: np.ndarray) -> float:
    """Dissimilarity of two thumbnails (from ``thumbnail``): 0 = same shot, around 1 = unrelated images."""
    a, b = cut_features([prev_thumb, cur_thumb])
    return feature_score(a, b)


def cut_scores(thumbs: Mapping[int, np.ndarray]) -> dict[int, float]:
    """Score of each listed frame against the previous listed frame (the first frame scores 0)."""
    frames = sorted(thumbs)
    feats = cut_features([thumbs[n] for n in frames])
    return {n: 0.0 if i == 0 else feature_score(feats[i - 1], feats[i]) for i, n in enumerate(frames)}


def find_cuts(scores: Mapping[int, float] | Sequence[float], threshold: float = 0.3, *, window: int = CUT_WINDOW,
              ratio: float = 2.5) -> set[int]:
    """Frame numbers that start a new shot.

    scores: frame number -> score against the previous listed frame (``cut_scores``; the clip's first
    frame may be left out or scored 0), or a sequence indexed by frame number whose first entry is ignored. A frame is a cut when its score is at least ``threshold``
    and at least ``ratio`` times the median score of the ``window`` listed frames on each side (itself
    excluded), so steady fast motion, which scores high on every frame, is not a cut.
    """
    _check_cut_settings(threshold, window, ratio)
    items = sorted(scores.items()) if isinstance(scores, Mapping) else list(enumerate(scores))[1:]
    vals = np.array([float(s) for _, s in items], dtype=np.float64)
    return {int(n) for i, (n, _) in enumerate(items) if is_cut(vals, i, threshold, window=window, ratio=ratio)}


def is_cut(values: np.ndarray, i: int, threshold: float = 0.3, *, window: int = CUT_WINDOW, ratio: float = 2.5) -> bool:
    """Whether the frame of ``values[i]`` starts a new shot (``find_cuts``'s test on the frames' scores in order):
    known once the ``window`` scores after it are there, or the shot's last score is."""
    if values[i] < threshold:
        return False
    lo, hi = max(0, i - window), min(len(values), i + window + 1)
    neigh = np.concatenate([values[lo:i], values[i + 1 : hi]])
    base = float(np.median(neigh)) if len(neigh) else 0.0
    return bool(values[i] >= ratio * base)


def _check_cut_settings(threshold: float, window: int, ratio: float) -> None:
    if not threshold > 0 or not ratio >= 1 or window < 1:
        raise SettingsError(f"find_cuts: need threshold > 0, ratio >= 1, window >= 1 (got {threshold}, {ratio}, {window})")
