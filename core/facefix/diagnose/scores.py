"""Per-frame defect scores of one face track, from its aligned crops, its landmark mesh and its identity
embeddings. Each score is a pure function of the track's samples; a flag is set where a score passes its
threshold (``THRESHOLDS``, in the score's own units, documented in ``SCORES``).

Convention: ``crops`` (T, 3, S, S) float32 sRGB in [0, 1], aligned to the FFHQ template at ``S`` px (the flow's
resolution, ``ANALYSIS_SIZE``); ``points`` per frame (P, 2) in 512-template pixels (the dense mesh where every
frame has one, else the 5 landmarks); ``numbers`` (T,) the frames' numbers (a neighbour is frame t +- k, so a
gap in the track is a missing neighbour, not a far one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..filters import gaussian_blur
from ..geometry import TEMPLATE_SIZE
from ..repair.deboil import DEBOIL_WINDOW, weighted_median
from ..repair.dewarp import DEWARP_WINDOW, dewarp_offsets
from ..temporal.flow import estimate_flow, fb_confidence, inside_mask, warp_by_flow

__all__ = ["ANALYSIS_SIZE", "KINDS", "SCORES", "THRESHOLDS", "WARP_FLOW_DEAD_ZONE", "face_masks", "warp_scores",
           "motion_scores", "flow_warp_score", "boil_scores",
           "texture_energy", "waxy_scores", "drift_scores", "drift_threshold"]

ANALYSIS_SIZE = 128  # px of the aligned crops the appearance scores read (the flow's resolution)

KINDS = ("warp", "boil", "waxy", "drift")

# What each score measures and in which unit (the report's documentation, and the README's).
SCORES = {
    "warp": "px at the 512 px template, the larger of two transient shape changes, each less its dead zone: the mean "
            "of the 10 largest mesh offsets from the shape the 3 frames either side agree on (de-warp's robust "
            "pose/shape split), and the peak of the face's motion against what the 3 frames either side agree on "
            "(their per-pixel median flow) outside the eyes, horizontal only from the lip line down",
    "boil": "% of full scale: mean absolute difference between the face and what the motion-compensated frames "
            "t-3..t-1 and t+1..t+3 agree on (their per-pixel median), less the same around the face",
    "waxy": "0..1: share of the skin's fine texture missing against the track's typical frames (or a floor)",
    "drift": "cosine distance of the face's identity embedding from the track's first second (or --reference)",
}

# Calibrated on development seeds 1-6 of benchmarks/diagnose_accuracy.py (held-out seeds report the accuracy).
#   kind   threshold  unit (``SCORES``)
#   warp   4.0        px at the 512 px template (flow part: peak flow 5.6 px less WARP_FLOW_DEAD_ZONE)
#   boil   0.65       % of full scale
#   waxy   0.15       share 0..1
#   drift  0.06       cosine distance (the built-in LBP-HOG descriptor; a learned model carries its own)
THRESHOLDS = {"warp": 4.0, "boil": 0.65, "waxy": 0.15, "drift": 0.06}

# The flow's own noise on clean faces (motion, blinks, speech): on development seeds 1-6 no clean frame's peak
# consensus flow passed 4.7 px at the template; a warp's middle frame reached 11.2-17.5 px.
WARP_FLOW_DEAD_ZONE = 1.6
_WARP_FLOW_BLUR = 16.0  # px at the template: a warp bends a feature's neighbourhood, flow noise is finer
_MIN_SUPPORT = 0.25  # share of the blur's weight that must fall on the kept face for a mean to count

# Drift thresholds per identity descriptor: distances of different embedders are not comparable. A model passed
# in may carry its own (``model.drift_threshold``).
_DRIFT_BY_DESCRIPTOR = {"facefix.lbp-hog.1": THRESHOLDS["drift"]}
_DRIFT_UNKNOWN_MODEL = 0.3  # a unit-normalised learned embedding: a clearly different face

_TOP_POINTS = 10
# Skin texture below this (fine band over mid band, see ``texture_energy``) is not plausible for a sharp face.
WAXY_FLOOR = 0.90


def _ellipse(size: int, cx: float, cy: float, rx: float, ry: float) -> torch.Tensor:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (TEMPLATE_SIZE / size)
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    return (((gx - cx) / rx) ** 2 + ((gy - cy) / ry) ** 2) < 1.0


def face_masks(size: int = ANALYSIS_SIZE) -> dict[str, torch.Tensor]:
    """(size, size) bool masks in the aligned crop: ``face`` (brows to chin, cheek to cheek), ``ring`` (around the
    face: hair, background; the plate's own temporal noise), ``skin`` (both cheeks and the forehead), and where faces
    articulate: ``eyes`` (lids: blinks), ``jaw`` (the face from the lip line down: speech opens it vertically) and
    ``chin`` (the chin's edge and below, where the jaw slides over the neck)."""
    face = _ellipse(size, 256, 300, 150, 185)
    outer = _ellipse(size, 256, 290, 250, 300)
    ring = outer & ~_ellipse(size, 256, 300, 195, 235)
    skin = (_ellipse(size, 178, 330, 42, 38) | _ellipse(size, 334, 330, 42, 38) | _ellipse(size, 256, 172, 72, 26))
    eyes = _ellipse(size, 193, 240, 50, 28) | _ellipse(size, 319, 240, 50, 28)
    rows = ((torch.arange(size, dtype=torch.float32) + 0.5) * (TEMPLATE_SIZE / size))[:, None].expand(size, size)
    return {"face": face, "ring": ring, "skin": skin, "eyes": eyes, "jaw": face & (rows > 335), "chin": rows > 440}


def _neighbours(numbers: Sequence[int], k: int) -> list[list[int | None]]:
    """Per frame, the track index of frames t-k..t+k (None where the track lacks one)."""
    where = {int(n): i for i, n in enumerate(numbers)}
    return [[where.get(int(n) + d) for d in range(-k, k + 1)] for n in numbers]


def warp_scores(points: Sequence[np.ndarray], numbers: Sequence[int]) -> np.ndarray:
    """(T,) the mesh part of the warp score (``SCORES["warp"]``) of each frame; 0 where the window is clipped (a track's first or
    last 3 frames, next to a gap: de-warp leaves those too)."""
    k = DEWARP_WINDOW
    out = np.zeros(len(numbers))
    for i, nb in enumerate(_neighbours(numbers, k)):
        if any(j is None for j in nb) or len({len(points[j]) for j in nb if j is not None}) != 1:
            continue
        win = np.stack([points[j] for j in nb if j is not None])
        off = dewarp_offsets(win, np.ones(len(win), bool), TEMPLATE_SIZE)
        mag = np.sort(np.linalg.norm(off, axis=-1))[::-1]
        out[i] = float(mag[: min(_TOP_POINTS, len(mag))].mean())
    return out


def _consensus(cur: torch.Tensor, nbs: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the neighbours (B, M, 3, h, w), motion-compensated onto ``cur`` (B, 3, h, w), agree on per pixel: their
    weighted median, weighted by the flow's forward-backward consistency (``ok`` (B, M): present); and the same
    median of the flows (B, 2, h, w) from ``cur`` to them (px at h: where ``cur``'s content sits in the others)."""
    b, m, c, h, w = nbs.shape
    ref = cur.unsqueeze(1).expand(b, m, c, h, w).reshape(b * m, c, h, w)
    mov = nbs.reshape(b * m, c, h, w)
    flows = estimate_flow(torch.cat([ref, mov]), torch.cat([mov, ref]))
    fw, bw = flows[: b * m], flows[b * m:]
    conf = fb_confidence(fw, bw, rel=0.05, abs_px=0.75) * inside_mask(fw)
    # A small floor keeps every present neighbour in the vote where no match is consistent (at least one weighs).
    wts = (conf.view(b, m, 1, h, w) + 1e-3) * ok.view(b, m, 1, 1, 1)
    return weighted_median(warp_by_flow(mov, fw).view(b, m, c, h, w), wts), weighted_median(fw.view(b, m, 2, h, w), wts)


def flow_warp_score(flow: torch.Tensor) -> np.ndarray:
    """(B,) the flow part of the warp score (``SCORES["warp"]``) from consensus flows (B, 2, h, w) in px at h: the
    peak, in 512-template px, of the flow averaged over a feature's neighbourhood (a normalised Gaussian blur, so
    what is left out does not leak in), inside the face above the chin's edge; the eyes are left out (a blink
    moves the lids) and from the lip line down only the horizontal part counts (speech opens the jaw vertically);
    less ``WARP_FLOW_DEAD_ZONE``, at least 0."""
    h = flow.shape[-1]
    px = TEMPLATE_SIZE / h
    m = {k: v.to(flow.device) for k, v in face_masks(h).items()}
    use_x = (m["face"] & ~m["eyes"] & ~m["chin"]).float()
    use = torch.stack([use_x, use_x * (~m["jaw"]).float()])[None]  # (1, 2, h, w): per component
    sigma = _WARP_FLOW_BLUR / px
    den = gaussian_blur(use, sigma)  # the same for every frame
    mean = gaussian_blur(flow.float() * use, sigma) / den.clamp_min(_MIN_SUPPORT) * (den > _MIN_SUPPORT)
    peak = (mean.norm(dim=1) * use_x).flatten(1).amax(1) * px
    return (peak - WARP_FLOW_DEAD_ZONE).clamp_min(0.0).cpu().numpy().astype(np.float64)


def motion_scores(crops: torch.Tensor, numbers: Sequence[int], chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(boil, flow warp) scores (T,) each from one pass of flows between each frame and frames t-3..t-1 and
    t+1..t+3. Boil (``SCORES["boil"]``): the face's residual against what the motion-compensated neighbours agree on
    (de-boil's weighted median, weighted by forward-backward consistency), less the same residual around the face
    (the plate's grain, background motion). Warp (``flow_warp_score``): the same median of the flows, where the
    face's content is displaced from where its neighbours on both sides agree it is. A median of those 6 follows
    every change lasting 4 frames or more (a blink, speech, a head turn) and outvotes one of 3 or fewer (a ghost,
    per-frame texture, a warp). Boil is 0 where the frame has fewer than 4 neighbours (no majority), warp where it
    lacks any of the 6 (a track's first or last 3 frames, next to a gap: as the mesh's warp score)."""
    k = DEBOIL_WINDOW
    t = crops.shape[0]
    masks = face_masks(crops.shape[-1])
    face, ring = masks["face"].to(crops.device), masks["ring"].to(crops.device)
    nbs = [[j for d, j in enumerate(r) if d != k] for r in _neighbours(numbers, k)]
    boil, warp = np.zeros(t), np.zeros(t)
    todo = [i for i in range(t) if sum(j is not None for j in nbs[i]) > k]
    for s in range(0, len(todo), chunk):
        rows = todo[s:s + chunk]
        ok = torch.tensor([[j is not None for j in nbs[i]] for i in rows], dtype=crops.dtype, device=crops.device)
        pick = torch.tensor([[i if j is None else j for j in nbs[i]] for i in rows], device=crops.device)
        cur = crops[rows]
        cons, flow = _consensus(cur, crops[pick.flatten()].view(len(rows), 2 * k, *crops.shape[1:]), ok)
        r = (cur - cons).abs().mean(1)  # (B, h, w)
        fw = flow_warp_score(flow)
        for j, i in enumerate(rows):
            boil[i] = 100.0 * max(0.0, float(r[j][face].mean() - r[j][ring].mean()))
            if all(n is not None for n in nbs[i]):
                warp[i] = fw[j]
    return boil, warp


def boil_scores(crops: torch.Tensor, numbers: Sequence[int], chunk: int = 16) -> np.ndarray:
    """(T,) boil score (``SCORES["boil"]``) of each frame (``motion_scores``' first part)."""
    return motion_scores(crops, numbers, chunk)[0]


def texture_energy(crops: torch.Tensor) -> np.ndarray:
    """(T,) the skin's fine texture: the RMS of the finest band of luma (x - blur(x, 1 px)) over that of the
    next band (blur(x, 1) - blur(x, 2)) on the cheeks and forehead. A ratio of bands, so exposure and
    contrast cancel; airbrushing removes the fine band first."""
    luma = (crops[:, 0:1] * 0.2126 + crops[:, 1:2] * 0.7152 + crops[:, 2:3] * 0.0722).float()
    b1 = gaussian_blur(luma, 1.0)
    b2 = gaussian_blur(luma, 2.0)
    skin = face_masks(crops.shape[-1])["skin"].to(crops.device)
    fine = ((luma - b1)[:, 0][:, skin] ** 2).mean(-1).sqrt()
    mid = ((b1 - b2)[:, 0][:, skin] ** 2).mean(-1).sqrt()
    return (fine / mid.clamp_min(1e-4)).cpu().numpy().astype(np.float64)


def waxy_scores(energy: np.ndarray, scorable: np.ndarray | None = None) -> np.ndarray:
    """(T,) waxy score (``SCORES["waxy"]``): 1 - energy / max(the track's median energy, ``WAXY_FLOOR``),
    clipped to 0..1; 0 where ``scorable`` is False (a face too small for its fine texture to exist)."""
    e = np.asarray(energy, np.float64)
    ok = np.ones(len(e), bool) if scorable is None else np.asarray(scorable, bool)
    if not ok.any():
        return np.zeros(len(e))
    ref = max(float(np.median(e[ok])), WAXY_FLOOR)
    return np.where(ok, np.clip(1.0 - e / ref, 0.0, 1.0), 0.0)


def drift_threshold(model: object | None, descriptor: str | None = None) -> float:
    """The drift threshold for embeddings of ``model`` (None = the built-in descriptor)."""
    if model is None:
        return _DRIFT_BY_DESCRIPTOR.get(descriptor or "facefix.lbp-hog.1", _DRIFT_UNKNOWN_MODEL)
    own = getattr(model, "drift_threshold", None)
    return float(own) if own is not None else _DRIFT_UNKNOWN_MODEL


def drift_scores(embeddings: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """(T,) drift score (``SCORES["drift"]``): 1 - cos between each (L2-normalised) embedding and the
    normalised mean of ``reference`` (R, D) embeddings."""
    ref = torch.nn.functional.normalize(reference.float().mean(0, keepdim=True), dim=1)
    return (1.0 - (embeddings.float() @ ref.T)[:, 0]).clamp_min(0.0).cpu().numpy().astype(np.float64)
