"""Test clips built from real stills, with known ground truth.

Generative-video faults are imitated on real faces: motion (translation, rotation, zoom) with the exact
per-frame transform recorded, blink-like occlusions, degradations (blur, noise) and "boiling" (per-frame
independent high-frequency texture in the face region). Tests and benchmarks measure against the recorded
truth instead of only checking that code runs.

Convention: images are float32 (H, W, 3) sRGB-encoded in [0, 1]; matrices are 2x3 ``frame_from_still``
maps taking still pixel coordinates (x, y), pixel centres at +0.5, to frame pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "ASTRONAUT_LANDMARKS",
    "astronaut",
    "similarity",
    "SynthClip",
    "motion_clip",
    "warp_still",
    "apply_affine",
    "boil",
    "degrade",
    "occlude_eyes",
    "crowd_frame",
    "random_gfpgan",
]

# Hand-measured on skimage.data.astronaut() (512x512): eye centres, nose tip, mouth corners.
ASTRONAUT_LANDMARKS = np.array(
    [[202.5, 101.0], [248.0, 102.5], [224.0, 126.0], [205.0, 143.5], [243.5, 143.5]], dtype=np.float64
)


def astronaut() -> np.ndarray:
    """A real portrait (NASA, public domain; the one scikit-image ships) as float32 sRGB (512, 512, 3)."""
    import OpenImageIO as oiio

    path = Path(__file__).parent.parent / "assets" / "examples" / "astronaut.png"
    buf = oiio.ImageBuf(str(path))
    pixels = buf.get_pixels(oiio.FLOAT)
    if buf.has_error or pixels is None:
        raise InputError(f"{path}: cannot read the bundled example image ({buf.geterror()})")
    return np.ascontiguousarray(pixels[..., :3], dtype=np.float32)


def similarity(scale: float = 1.0, angle_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0,
               center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """2x3 matrix: rotate by ``angle_deg`` and scale about ``center``, then translate by (tx, ty)."""
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    cx, cy = center
    return np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty]], dtype=np.float64)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 (or batched (..., 2, 3)) matrix to (..., K, 2) points."""
    return points @ m[..., :2].swapaxes(-1, -2) + m[..., None, :, 2]


def warp_still(still: np.ndarray, frame_from_still: np.ndarray, size: tuple[int, int],
               background: np.ndarray | None = None) -> np.ndarray:
    """Render ``still`` into a (h, w) frame through ``frame_from_still`` (bicubic, border = background)."""
    import torch
    import torch.nn.functional as F

    h, w = size
    hs, ws = still.shape[:2]
    inv = np.linalg.inv(np.vstack([frame_from_still, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    grid = np.stack([sx / ws * 2 - 1, sy / hs * 2 - 1], axis=-1)[None].astype(np.float32)
    src = torch.from_numpy(np.ascontiguousarray(still.transpose(2, 0, 1)))[None]
    ones = torch.ones_like(src[:, :1])
    g = torch.from_numpy(grid)
    out = F.grid_sample(src, g, mode="bicubic", padding_mode="zeros", align_corners=False)[0]
    cover = F.grid_sample(ones, g, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    img = out.numpy().transpose(1, 2, 0)
    k = cover.numpy().transpose(1, 2, 0)
    bg = np.zeros((h, w, 3), np.float32) if background is None else background
    return np.clip(img + (1 - k) * bg, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class SynthClip:
    """Frames (T, H, W, 3) with the true transform and landmarks of each frame."""

    frames: np.ndarray
    frame_from_still: np.ndarray  # (T, 2, 3)
    landmarks: np.ndarray  # (T, 5, 2) true landmarks in frame pixels
    occluded: np.ndarray  # (T,) bool: frames with a blink-like occlusion


def motion_clip(n_frames: int = 12, size: tuple[int, int] = (256, 256), *, translate: tuple[float, float] = (0.0, 0.0),
                rotate_deg: float = 0.0, zoom: float = 1.0, start_scale: float = 1.0,
                still: np.ndarray | None = None, landmarks: np.ndarray | None = None,
                occlude: tuple[int, int] | None = None) -> SynthClip:
    """A face moving with known motion: per frame it translates by ``translate`` px, rotates by
    ``rotate_deg`` and zooms by ``zoom`` (multiplicative), starting centred at ``start_scale``.

    ``occlude=(first, count)`` covers the eyes on those frames, like a blink.
    """
    still = astronaut() if still is None else still
    lm = ASTRONAUT_LANDMARKS if landmarks is None else landmarks
    h, w = size
    face_c = lm.mean(axis=0)
    mats, frames, occl = [], [], []
    for t in range(n_frames):
        m = similarity(start_scale * zoom**t, rotate_deg * t, w / 2 - face_c[0] + translate[0] * t,
                       h / 2 - face_c[1] + translate[1] * t, center=(face_c[0], face_c[1]))
        img = warp_still(still, m, size, background=np.full((h, w, 3), 0.45, np.float32))
        pts = apply_affine(m, lm)
        hide = occlude is not None and occlude[0] <= t < occlude[0] + occlude[1]
        if hide:
            img = occlude_eyes(img, pts)
        mats.append(m)
        frames.append(img)
        occl.append(hide)
    mats_a = np.stack(mats)
    return SynthClip(np.stack(frames), mats_a, apply_affine(mats_a, lm[None].repeat(n_frames, 0)), np.array(occl))


def occlude_eyes(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Paint a skin-toned band over both eyes (a closed-eye stand-in)."""
    out = img.copy()
    eyes = landmarks[:2]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    x0, x1 = int(eyes[:, 0].min() - 0.45 * iod), int(np.ceil(eyes[:, 0].max() + 0.45 * iod))
    y0, y1 = int(eyes[:, 1].min() - 0.18 * iod), int(np.ceil(eyes[:, 1].max() + 0.18 * iod))
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    skin = np.median(img[int(landmarks[2, 1]) - 2:int(landmarks[2, 1]) + 3, int(landmarks[2, 0]) - 2:int(landmarks[2, 0]) + 3]
                     .reshape(-1, 3), axis=0)
    out[y0:y1, x0:x1] = skin
    return out


def boil(frames: np.ndarray, landmarks: np.ndarray, amplitude: float = 0.06, seed: int = 0) -> np.ndarray:
    """Add per-frame independent high-frequency texture inside the face (what "boiling" looks like)."""
    rng = np.random.default_rng(seed)
    out = frames.copy()
    t, h, w, _ = frames.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    for i in range(t):
        c = landmarks[i].mean(axis=0)
        r = 1.6 * float(np.linalg.norm(landmarks[i, 1] - landmarks[i, 0]))
        inside = (((xs - c[0]) / r) ** 2 + ((ys - c[1]) / (1.25 * r)) ** 2) < 1.0
        noise = rng.standard_normal((h, w, 1)).astype(np.float32) * amplitude
        out[i] = np.clip(out[i] + noise * inside[..., None], 0, 1)
    return out


def degrade(frames: np.ndarray, blur_sigma: float = 1.5, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """Soften and add sensor-like noise (generative video's waxy, soft look)."""
    import torch
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    if blur_sigma > 0:
        k = int(2 * round(3 * blur_sigma) + 1)
        x = TF.gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
    out = x.numpy().transpose(0, 2, 3, 1)
    out = out + rng.standard_normal(out.shape).astype(np.float32) * noise
    return np.clip(out, 0, 1).astype(np.float32)


def crowd_frame(size: tuple[int, int], n_faces: int, face_px: float = 160.0, still: np.ndarray | None = None,
                landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One frame with ``n_faces`` copies of the face on a grid; returns (frame, landmarks (n, 5, 2))."""
    still = astronaut() if still is None else still
    lm = ASTRONAUT_LANDMARKS if landmarks is None else landmarks
    h, w = size
    cols = int(np.ceil(np.sqrt(n_faces)))
    rows = int(np.ceil(n_faces / cols))
    still_face = float(np.linalg.norm(lm[1] - lm[0])) * 2.5
    scale = face_px / still_face
    frame = np.full((h, w, 3), 0.4, np.float32)
    out_lm = []
    c = lm.mean(axis=0)
    for i in range(n_faces):
        r, k = divmod(i, cols)
        cx, cy = (k + 0.5) * w / cols, (r + 0.5) * h / rows
        m = similarity(scale, 0.0, cx - c[0], cy - c[1], center=(c[0], c[1]))
        frame = warp_still(still, m, size, background=frame)
        out_lm.append(apply_affine(m, lm))
    return frame, np.stack(out_lm)


def random_gfpgan(path: str | Path, seed: int = 0) -> Path:
    """Random-init GFPGAN v1.4 weights (the release's hyper-parameters and key layout, so the real FLOPs)
    saved as safetensors at ``path``: a stand-in for the real file where the network, not its output, is
    under test (GPU paths, benchmarks)."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path = Path(path)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path
