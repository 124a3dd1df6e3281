"""Test clips built from real stills, with known ground truth.

Generative-video faults are imitated on real faces: motion (translation, rotation, zoom) with the exact
per-frame transform recorded, blink-like occlusions, degradations (blur, noise) and "boiling" (per-frame
independent high-frequency texture in the face region). Tests and benchmarks measure against the recorded
truth instead of only checking that code runs.

Convention: images are float32 (H, W, 3) sRGB-encoded in [0, 1]; matrices are 2x3 ``frame_from_still``
maps taking still pixel coordinates (x, y), pixel centres at +0.5, to frame pixel coordinates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..faces import Face, FaceTracks

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
    "blink",
    "mouth_open",
    "local_warp",
    "ghost",
    "film_grain",
    "grain_clip",
    "waxy",
    "face_ellipse",
    "still_mesh",
    "RepairClip",
    "DEFECTS",
    "repair_clip",
]

# Hand-measured on skimage.data.astronaut() (512x512): eye centres, nose tip, mouth corners.
ASTRONAUT_LANDMARKS = np.array(
    [[202.5, 101.0], [248.0, 102.5], [224.0, 126.0], [205.0, 143.5], [243.5, 143.5]], dtype=np.float64
)


def astronaut() -> np.ndarray:
    """A real portrait (NASA, public domain; the one scikit-image ships) as float32 sRGB (512, 512, 3)."""
    return bundled_image("astronaut.png")


def bundled_image(name: str) -> np.ndarray:
    """An example image shipped in ``facefix/assets/examples`` as float32 sRGB (H, W, 3)."""
    import OpenImageIO as oiio

    path = Path(__file__).parent.parent / "assets" / "examples" / name
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


# -- repair clips: what generative video breaks, on real faces, with the clean clip as ground truth ----------------
#
# Expressions (blinks, speech-like mouth motion) and defects (ghost, local warp, boil, waxy skin) are made on the
# still, in its pixels, then rendered through each frame's known motion, so the clean clip (expressions and motion
# only) is the exact truth of the defective one. The 468-point mesh of the still comes from the embedded detector
# (``still_mesh``) and follows the same motion and, for a warp, the same displacement: what a tracker that follows
# the warped features reports.


def _displace(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) resampled at (x - dx, y - dy) per pixel (bicubic, border replicated): content moves by
    (dx, dy) where the field is smooth and small."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    grid = np.stack([(xs - dx) / w * 2 - 1, (ys - dy) / h * 2 - 1], axis=-1)[None].astype(np.float32)
    src = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    out = F.grid_sample(src, torch.from_numpy(grid), mode="bicubic", padding_mode="border", align_corners=False)
    return np.clip(out[0].numpy().transpose(1, 2, 0), 0, 1).astype(np.float32)


def _bump(shape: tuple[int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    """exp(-|p - centre|^2 / (2 radius^2)) over an (H, W) pixel grid (pixel centres at +0.5)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64) + 0.5
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2.0 * radius * radius))


def face_ellipse(shape: tuple[int, int], landmarks: np.ndarray, grow: float = 1.0, soft: float = 0.0) -> np.ndarray:
    """(H, W) float32 face region from 5 landmarks (the ellipse ``boil`` uses, scaled by ``grow``); ``soft`` > 0
    feathers its edge over that fraction of the radius."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    c = landmarks.mean(axis=0)
    r = grow * 1.6 * float(np.linalg.norm(landmarks[1] - landmarks[0]))
    d = np.sqrt(((xs - c[0]) / r) ** 2 + ((ys - c[1]) / (1.25 * r)) ** 2)
    if soft <= 0:
        return (d < 1.0).astype(np.float32)
    return np.clip((1.0 - d) / soft, 0.0, 1.0).astype(np.float32)


def blink(still: np.ndarray, landmarks: np.ndarray, closure: float) -> np.ndarray:
    """Both eyelids lowered over ``closure`` (0 open .. 1 shut) of each eye: skin from above the eye slides down
    the eye's ellipse, with a dark lash line at its edge, so per pixel the eye is covered for a time that depends
    on where the pixel is (the eye's middle shortest), as in a real blink."""
    if closure <= 0:
        return still.copy()
    out = still.copy()
    h, w = still.shape[:2]
    iod = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    for eye in landmarks[:2]:
        rx, ry = 0.3 * iod, 0.12 * iod
        inside = ((xs - eye[0]) / rx) ** 2 + ((ys - eye[1]) / ry) ** 2 < 1.0
        ref = eye + np.array([0.1 * iod if eye[0] < landmarks[2, 0] else -0.1 * iod, 0.45 * iod])  # the cheek
        y0, x0 = int(ref[1]), int(ref[0])
        skin = np.median(still[y0 - 2:y0 + 3, x0 - 4:x0 + 5].reshape(-1, 3), axis=0)
        lid = eye[1] - ry + 2.0 * ry * min(1.0, closure)
        cover = np.clip(lid - ys + 0.5, 0.0, 1.0) * inside  # soft 1 px lid edge
        lash = np.exp(-((ys - lid) / (0.03 * iod + 0.5)) ** 2) * inside * 0.55
        out = out * (1 - cover[..., None]) + skin * cover[..., None]
        out = out * (1 - lash[..., None])
    return np.clip(out, 0, 1).astype(np.float32)


def mouth_open(still: np.ndarray, landmarks: np.ndarray, amount: float) -> np.ndarray:
    """Speech-like mouth motion: the lower lip and chin move down by ``amount`` x 0.22 eye distances (a smooth
    warp below the lip line), opening the dark line between the lips."""
    if amount == 0:
        return still.copy()
    iod = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    mouth = landmarks[3:5].mean(axis=0)
    h, w = still.shape[:2]
    ys = np.mgrid[0:h, 0:w][0] + 0.5
    below = 1.0 / (1.0 + np.exp(-(ys - mouth[1]) / (0.04 * iod)))
    dy = amount * 0.22 * iod * below * _bump((h, w), mouth + np.array([0.0, 0.2 * iod]), 0.55 * iod)
    return _displace(still, np.zeros_like(dy), dy)


def local_warp(image: np.ndarray, centre: np.ndarray, shift: tuple[float, float], radius: float
               ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A local warp (features drift, as generators warp them on turns): content near ``centre`` moves by
    ``shift`` px with a Gaussian fall-off of ``radius`` px. Returns the image and the map of points (how a
    tracker sees the warped features)."""
    bump = _bump(image.shape[:2], centre, radius)
    out = _displace(image, shift[0] * bump, shift[1] * bump)

    def move(points: np.ndarray) -> np.ndarray:
        d2 = ((points - centre) ** 2).sum(-1, keepdims=True)
        return points + np.asarray(shift) * np.exp(-d2 / (2.0 * radius * radius))
    return out, move


def ghost(image: np.ndarray, landmarks: np.ndarray, shift: tuple[float, float], opacity: float = 0.35) -> np.ndarray:
    """A second set of features ghosting in: the face, shifted by ``shift`` px, blended over itself at ``opacity``
    inside the face (soft-edged ellipse)."""
    h, w = image.shape[:2]
    shifted = _displace(image, np.full((h, w), shift[0]), np.full((h, w), shift[1]))
    m = face_ellipse((h, w), landmarks, 0.95, soft=0.2)[..., None] * opacity
    return np.clip(image * (1 - m) + shifted * m, 0, 1).astype(np.float32)


def film_grain(frames: np.ndarray, amplitude: float = 0.02, corr: float = 0.7, seed: int = 0) -> np.ndarray:
    """Per-frame independent film grain over the whole frame: white noise blurred by ``corr`` px, scaled to a
    standard deviation of ``amplitude`` per channel (channels partly correlated, as in scans)."""
    import torch

    from ..filters import gaussian_blur

    rng = np.random.default_rng(seed)
    out = frames.copy()
    for i in range(len(frames)):
        n = rng.standard_normal((frames.shape[1], frames.shape[2], 3)).astype(np.float32)
        n = 0.6 * n + 0.4 * n.mean(axis=-1, keepdims=True)
        g = gaussian_blur(torch.from_numpy(np.ascontiguousarray(n.transpose(2, 0, 1)))[None], corr)
        texture = g[0].numpy().transpose(1, 2, 0)
        texture = texture / texture.std(axis=(0, 1), keepdims=True) * amplitude
        out[i] = np.clip(out[i] + texture, 0, 1)
    return out.astype(np.float32)


def waxy(frames: np.ndarray, landmarks: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Airbrushed skin: the face (soft-edged ellipse) replaced by its blurred self, grain and pores gone."""
    import torch

    from ..filters import gaussian_blur

    out = frames.copy()
    for i in range(len(frames)):
        t = torch.from_numpy(np.ascontiguousarray(frames[i].transpose(2, 0, 1)))[None]
        smooth = gaussian_blur(t, sigma)[0].numpy().transpose(1, 2, 0)
        m = face_ellipse(frames.shape[1:3], landmarks[i], 0.9, soft=0.15)[..., None]
        out[i] = frames[i] * (1 - m) + smooth * m
    return out.astype(np.float32)


@functools.lru_cache(maxsize=1)
def still_mesh() -> np.ndarray:
    """The 468-point face mesh (468, 2) of the bundled portrait, found by the embedded detector (once)."""
    import torch

    from ..detect import load_detector

    still = astronaut()
    found = load_detector("blazeface", "cpu")(torch.from_numpy(np.ascontiguousarray(still.transpose(2, 0, 1)))[None])
    faces = found[0].faces
    if not faces or faces[0].mesh is None:
        raise InputError("the bundled portrait: the embedded detector found no face mesh")
    return np.asarray(faces[0].mesh[:, :2], np.float64)


@dataclass(frozen=True)
class RepairClip:
    """A defective clip and its truth: ``frames`` (T, H, W, 3) with the defect, ``clean`` without it (motion,
    blinks and speech only); ``defect`` (T,) marks the frames the defect touches; ``landmarks`` (T, 5, 2) and
    ``mesh`` (T, 468, 2) are what a tracker reports on ``frames``; ``face`` (T, H, W) the face region."""

    frames: np.ndarray
    clean: np.ndarray
    defect: np.ndarray
    landmarks: np.ndarray
    mesh: np.ndarray
    face: np.ndarray
    kind: str


def truth_tracks(landmarks: np.ndarray, mesh: np.ndarray, first: int = 0) -> FaceTracks:
    """One track of a clip's true landmarks (T, 5, 2) and mesh (T, 468, 2) from frame ``first`` on: what
    ``--tracks`` would give (a box 1.8 eye distances around the landmarks' centre)."""
    per = {}
    for i, (lm, m) in enumerate(zip(landmarks, mesh)):
        c = lm.mean(0)
        r = 1.8 * float(np.linalg.norm(lm[1] - lm[0]))
        per[first + i] = [Face(box=(c[0] - r, c[1] - r, c[0] + r, c[1] + r), landmarks=lm, track_id=0, mesh=m)]
    return FaceTracks.from_faces(per)


DEFECTS = ("clean", "ghost", "warp", "boil", "waxy")


def repair_clip(kind: str = "clean", n_frames: int = 12, size: tuple[int, int] = (256, 256), *, seed: int = 0,
                scale: float = 1.6, at: int | None = None, blinks: bool = True, speech: bool = True,
                grain: float = 0.0) -> RepairClip:
    """A clip of the bundled real face with real-looking motion (drift, small turns and zoom), blinks and
    speech-like mouth motion, and one defect ``kind`` (``DEFECTS``): ``ghost`` (3 frames of the features
    shifted by ~10 px at 35 % opacity), ``warp`` (3 frames of an eye or mouth corner drifting ~10 px and springing
    back), ``boil`` (per-frame high-pass texture in the face on every frame), ``waxy`` (airbrushed skin on every
    frame), ``clean`` (none). ``seed`` draws the motion, the expression timing and the defect's place, direction
    and frames (from ``at`` if given); ``scale``: face size against the still (~75 px eye distance at 1.6);
    ``grain`` > 0 adds film grain of that amplitude to every frame of both clips (the plate's own texture)."""
    if kind not in DEFECTS:
        raise InputError(f"repair_clip: kind must be one of {', '.join(DEFECTS)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    still, lm, mesh = astronaut(), ASTRONAUT_LANDMARKS, still_mesh()
    h, w = size
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    # Motion: a slow drift, a small turn and zoom, plus a little jitter (what alignment leaves).
    drift = rng.uniform(-1.2, 1.2, 2)
    turn = rng.uniform(-0.6, 0.6)
    zoom = rng.uniform(0.995, 1.006)
    c = lm.mean(axis=0)
    # Expressions: one blink (closing over 2 frames, shut 2, opening over 3) and speech at ~4 syllables/s (24 fps).
    closure = np.zeros(n_frames)
    if blinks:
        start = int(rng.integers(1, max(2, n_frames - 7)))
        for k, v in enumerate((0.45, 0.9, 1.0, 1.0, 0.7, 0.35, 0.1)):
            if start + k < n_frames:
                closure[start + k] = v
    period, phase = rng.uniform(5.0, 7.0), rng.uniform(0, 2 * np.pi)
    mouth = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_frames) / period + phase)) if speech else np.zeros(n_frames)
    first = int(at) if at is not None else int(rng.integers(2, max(3, n_frames - 4)))
    defect = np.zeros(n_frames, bool)
    if kind in ("ghost", "warp"):
        defect[first:first + 3] = True
    elif kind in ("boil", "waxy"):
        defect[:] = True
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    target = int(rng.integers(0, 4))  # warp: left eye, right eye, left or right mouth corner
    frames, clean, lms, meshes, faces = [], [], [], [], []
    for t in range(n_frames):
        m = similarity(scale * zoom**t, turn * t, w / 2 - c[0] + drift[0] * t + rng.normal(0, 0.3),
                       h / 2 - c[1] + drift[1] * t + rng.normal(0, 0.3), center=(c[0], c[1]))
        expr = mouth_open(blink(still, lm, closure[t]), lm, mouth[t])
        bg = np.full((h, w, 3), 0.45, np.float32)
        truth = warp_still(expr, m, size, background=bg)
        bad_still, pts = expr, mesh
        if defect[t] and kind == "ghost":
            shift = direction * 10.0 / scale
            bad_still = ghost(expr, lm, (float(shift[0]), float(shift[1])), opacity=0.35)
        elif defect[t] and kind == "warp":
            amount = (0.6, 1.0, 0.6)[t - first]
            bad_still, move = local_warp(expr, lm[(0, 1, 3, 4)[target]], tuple(direction * amount * 10.0 / scale),
                                         0.3 * iod)
            pts = move(mesh)
        frame = truth if bad_still is expr else warp_still(bad_still, m, size, background=bg)
        frames.append(frame)
        clean.append(truth)
        lms.append(apply_affine(m, lm))
        meshes.append(apply_affine(m, pts))
        faces.append(face_ellipse(size, apply_affine(m, lm), 0.9))
    frames_a, clean_a, lms_a = np.stack(frames), np.stack(clean), np.stack(lms)
    if grain > 0:
        noise_seed = int(rng.integers(1 << 30))
        frames_a = film_grain(frames_a, grain, seed=noise_seed)
        clean_a = film_grain(clean_a, grain, seed=noise_seed)
    if kind == "boil":
        frames_a = boil(frames_a, lms_a, amplitude=0.05, seed=int(rng.integers(1 << 30)))
    elif kind == "waxy":
        frames_a = waxy(frames_a, lms_a)
    return RepairClip(frames_a, clean_a, defect, lms_a, np.stack(meshes), np.stack(faces), kind)


def grain_clip(n_frames: int = 3, size: tuple[int, int] = (160, 160), *, seed: int = 0, amplitude: float = 0.02,
               corr: float = 0.7) -> tuple[RepairClip, np.ndarray]:
    """A clip whose plate grain is known: the clean clip's face kept but airbrushed (``waxy``, 3 px: no grain and no fine texture inside), the
    plate around it replaced by a smooth version of itself (no texture of its own) carrying ``film_grain`` of
    ``amplitude`` and ``corr`` only outside the face. Returns the clip (``frames`` as described, ``clean`` the
    grain-free plate) and the grain alone (T, H, W, 3), the truth a regrain measures against."""
    import torch

    from ..filters import gaussian_blur

    base = repair_clip("clean", n_frames, size, seed=seed, scale=size[0] / 160.0)
    t = torch.from_numpy(np.ascontiguousarray(base.clean.transpose(0, 3, 1, 2)))
    smooth = gaussian_blur(t, 6.0).numpy().transpose(0, 2, 3, 1)
    face = np.stack([face_ellipse(size, lm, 1.0, soft=0.15) for lm in base.landmarks])[..., None]
    plate = smooth * (1 - face) + base.clean * face
    flat = np.full_like(plate, 0.5)
    grain = film_grain(flat, amplitude, corr, seed=seed + 7919) - flat
    grain = grain * (1 - face)
    frames = waxy(plate.astype(np.float32), base.landmarks, sigma=3.0) + grain
    clip = RepairClip(frames.astype(np.float32), plate.astype(np.float32), base.defect, base.landmarks, base.mesh,
                      base.face, "waxy")
    return clip, grain.astype(np.float32)
