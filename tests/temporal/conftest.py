"""Aligned-space test clips with known ground truth, built from a real photo (facefix.synth).

Every crop is rendered straight into the S x S FFHQ template through ``crop_from_still`` = residual_t @
template_from_still, where residual_t is a small per-frame similarity about the crop centre: what real
alignment leaves (landmark jitter, drift, out-of-plane turns). Because every transform is known, the true
flow between any two crops and the true (clean) crop of every frame are known too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.geometry import FFHQ_TEMPLATE_512 as FFHQ_512
from facefix.geometry import umeyama_similarity as _fit_similarity


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class AlignedClip:
    clean: torch.Tensor  # (T, 3, S, S) ground-truth crops (with the blink where asked)
    inputs: torch.Tensor  # (T, 3, S, S) degraded crops: what a restorer would see
    mats: np.ndarray  # (T, 2, 3) crop_from_still
    landmarks: np.ndarray  # (T, 5, 2) true landmarks in crop pixels
    occluded: np.ndarray  # (T,) bool
    mask: torch.Tensor  # (T, 1, S, S) face region (ellipse from the landmarks)
    eye_mask: torch.Tensor  # (T, 1, S, S) the blink band region, on every frame

    def true_flow(self, t: int, j: int) -> torch.Tensor:
        """(2, S, S) flow from crop t to crop j, from the known transforms."""
        s = self.clean.shape[-1]
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
        p = np.stack([xs, ys], -1).reshape(-1, 2)
        j_from_t = (_h(self.mats[j]) @ np.linalg.inv(_h(self.mats[t])))[:2]
        q = synth.apply_affine(j_from_t, p)
        return torch.from_numpy((q - p).reshape(s, s, 2).transpose(2, 0, 1).astype(np.float32))

    def consecutive_flows(self) -> torch.Tensor:
        """(T-1, 2, S, S): entry i warps frame i onto frame i+1's grid (flow i+1 -> i)."""
        return torch.stack([self.true_flow(t, t - 1) for t in range(1, len(self.mats))])


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def _ellipse(landmarks: np.ndarray, s: int, grow: float = 1.0) -> np.ndarray:
    ys, xs = np.mgrid[0:s, 0:s] + 0.5
    c = landmarks.mean(axis=0)
    r = grow * 1.6 * float(np.linalg.norm(landmarks[1] - landmarks[0]))
    return ((((xs - c[0]) / r) ** 2 + ((ys - c[1]) / (1.25 * r)) ** 2) < 1.0).astype(np.float32)


def _eye_band(landmarks: np.ndarray, s: int) -> np.ndarray:
    """The region synth.occlude_eyes paints, grown by a few pixels."""
    eyes = landmarks[:2]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    ys, xs = np.mgrid[0:s, 0:s] + 0.5
    x0, x1 = eyes[:, 0].min() - 0.5 * iod, eyes[:, 0].max() + 0.5 * iod
    y0, y1 = eyes[:, 1].min() - 0.25 * iod, eyes[:, 1].max() + 0.25 * iod
    return ((xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)).astype(np.float32)


def make_aligned_clip(n_frames: int = 12, size: int = 256, *, drift: tuple[float, float] = (0.0, 0.0),
                      rotate_deg: float = 0.0, zoom: float = 1.0, jitter: float = 0.0,
                      occlude: tuple[int, int] | None = None, seed: int = 0,
                      blur_sigma: float = 1.0, noise: float = 0.01) -> AlignedClip:
    """A track of aligned crops. Per frame the residual moves by ``drift`` px (at 512 scale), rotates by
    ``rotate_deg`` and zooms by ``zoom``, plus N(0, ``jitter``) px of landmark-like jitter."""
    rng = np.random.default_rng(seed)
    still = synth.astronaut()
    k = size / 512.0
    template_from_still = _fit_similarity(synth.ASTRONAUT_LANDMARKS, FFHQ_512 * k)
    frames, mats, occl = [], [], []
    c = size / 2.0
    for t in range(n_frames):
        jx, jy = rng.normal(0.0, jitter, 2) if jitter > 0 else (0.0, 0.0)
        res = synth.similarity(zoom**t, rotate_deg * t, (drift[0] * t + jx) * k, (drift[1] * t + jy) * k,
                               center=(c, c))
        m = (_h(res) @ _h(template_from_still))[:2]
        img = synth.warp_still(still, m, (size, size))
        pts = synth.apply_affine(m, synth.ASTRONAUT_LANDMARKS)
        hide = occlude is not None and occlude[0] <= t < occlude[0] + occlude[1]
        if hide:
            img = synth.occlude_eyes(img, pts)
        frames.append(img)
        mats.append(m)
        occl.append(hide)
    clean = np.stack(frames)
    mats_a = np.stack(mats)
    lms = synth.apply_affine(mats_a, synth.ASTRONAUT_LANDMARKS[None].repeat(n_frames, 0))
    inputs = synth.degrade(clean, blur_sigma=blur_sigma * size / 512.0 * 2, noise=noise, seed=seed + 1)
    mask = np.stack([_ellipse(lm, size, 0.9) for lm in lms])[:, None]
    eyes = np.stack([_eye_band(lm, size) for lm in lms])[:, None]
    return AlignedClip(_to_tensor(clean), _to_tensor(inputs), mats_a, lms, np.array(occl),
                       torch.from_numpy(mask), torch.from_numpy(eyes))


def boiled(clip: AlignedClip, amplitude: float, seed: int = 7, grain_sigma: float = 0.0) -> torch.Tensor:
    """"Restored" crops: the clean crops plus per-frame independent texture in the face (synth.boil).

    ``grain_sigma`` > 0 blurs the texture (pixels), a coarser boil closer to a GAN's hallucinated pores.
    """
    frames = clip.clean.numpy().transpose(0, 2, 3, 1)
    out = synth.boil(frames, clip.landmarks, amplitude=amplitude, seed=seed)
    if grain_sigma > 0:
        import torchvision.transforms.functional as TF

        d = torch.from_numpy(np.ascontiguousarray((out - frames).transpose(0, 3, 1, 2)))
        kk = int(2 * round(3 * grain_sigma) + 1)
        d = TF.gaussian_blur(d, [kk, kk], [grain_sigma, grain_sigma])
        d = d * (1.0 / float(d.std() / torch.from_numpy(out - frames).std()))  # keep the amplitude
        return (clip.clean + d).clamp(0, 1)
    return _to_tensor(out)


def stabilise_clip(inputs: torch.Tensor, restored: torch.Tensor, strength: float, frames: range | None = None,
                   batch: int = 8) -> torch.Tensor:
    """Run one track through TrackHistory + stabilise_window the way the pipeline does: push each frame
    (after ``preroll_frames`` pre-roll frames before ``frames.start``), read its window, and stabilise the
    windows ``batch`` at a time. Returns (len(frames), 3, S, S)."""
    from facefix.temporal import TrackHistory, preroll_frames, stabilise_window

    k = preroll_frames(strength)
    frames = range(inputs.shape[0]) if frames is None else frames
    hist = TrackHistory(k)
    for f in range(max(0, frames.start - k), frames.start):
        hist.push(1, f, inputs[f], restored[f])
    windows = []
    for f in frames:
        hist.push(1, f, inputs[f], restored[f])
        windows.append(hist.window(1, f))
    outs = []
    for i in range(0, len(windows), batch):
        part = windows[i:i + batch]
        outs.append(stabilise_window(torch.stack([w[0] for w in part]), torch.stack([w[1] for w in part]),
                                     torch.stack([w[2] for w in part]), strength))
    return torch.cat(outs)


@pytest.fixture(scope="session")
def aligned_clip() -> Callable[..., AlignedClip]:
    return make_aligned_clip


@pytest.fixture(scope="session")
def boil_clip() -> Callable[..., torch.Tensor]:
    return boiled


@pytest.fixture(scope="session")
def run_track() -> Callable[..., torch.Tensor]:
    return stabilise_clip


def hallucinate(crops: torch.Tensor) -> torch.Tensor:
    """A cheap, deterministic stand-in for ``realesrgan-face`` (N, 3, S, S) -> (N, 3, S, S): like it, reduce the
    aligned crop 4x (antialiased) and rebuild full-resolution detail, here by bicubic upsampling and a strong
    two-scale unsharp mask. What matters for the stabiliser: whatever the input's fine texture does from frame to
    frame, the output's does more (a boiling input gives a boiling, amplified output)."""
    import torch.nn.functional as F

    from facefix.filters import gaussian_blur

    s = crops.shape[-1]
    small = F.interpolate(crops.float().clamp(0, 1), size=(s // 4, s // 4), mode="bilinear", align_corners=False,
                          antialias=True)
    up = F.interpolate(small, size=(s, s), mode="bicubic", align_corners=False)
    fine = up - gaussian_blur(up, s / 256.0)
    mid = gaussian_blur(up, s / 256.0) - gaussian_blur(up, s / 64.0)
    return (up + 2.5 * fine + 1.0 * mid).clamp(0, 1)


@pytest.fixture(scope="session")
def standin_restorer() -> Callable[[torch.Tensor], torch.Tensor]:
    return hallucinate
