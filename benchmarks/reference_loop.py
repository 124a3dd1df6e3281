"""The classic GFPGAN inference loop, as a baseline for FaceFix's batched pipeline.

What the upstream inference scripts do, one face at a time: estimate a similarity transform from
the 5 landmarks to the FFHQ 512 template (OpenCV, LMEDS), warp the face to 512x512 on the CPU,
normalise to [-1, 1], run the network at batch 1 in float32, convert back to an 8-bit image, warp
it back into the frame with the inverse transform, and blend it in with a soft box mask (the warped
crop square, eroded by 2 px, eroded again and Gaussian-blurred by an amount that grows with the face
size), all in numpy on the CPU. Nothing is batched, nothing overlaps.

``reference_restore`` returns the frames; ``reference_fps`` times it. Use it to state how much faster
the pipeline is than the usual way, on the same frames, faces and network.

Convention: frames are H x W x 3 RGB, display-referred (sRGB), uint8 or float32 in [0, 1]; landmarks
are (5, 2) (x, y) frame pixels in FaceFix's convention (pixel centres at +0.5; order: left eye,
right eye, nose, left and right mouth corners). OpenCV puts pixel centres at integers, so landmarks
and template are both shifted by -0.5 before estimating the transform; the crop then lines up with
FaceFix's own alignment of the same landmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from facefix.errors import InputError, SettingsError
from facefix.geometry import FFHQ_TEMPLATE_512, TEMPLATE_SIZE

__all__ = ["reference_restore", "reference_fps", "gfpgan_module_call", "BORDER_GREY"]

ModuleCall = Callable[[Tensor], Tensor]
"""``call(crop) -> restored``: [1, 3, 512, 512] float32 RGB in [-1, 1] on the device, same out."""

BORDER_GREY = (132.0, 133.0, 135.0)
"""Fill outside the frame when warping a crop (RGB, 0-255): the classic helper's grey."""

_BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT,
    "reflect101": cv2.BORDER_REFLECT_101,
}


def gfpgan_module_call(module: nn.Module, *, randomize_noise: bool = False) -> ModuleCall:
    """The GFPGAN network as the loop calls it: image out, no side outputs.

    ``randomize_noise=False`` uses the stored noise maps (as FaceFix does); the upstream script
    draws fresh noise per call, which costs the same time.
    """

    def call(crop: Tensor) -> Tensor:
        return module(crop, return_rgb=False, randomize_noise=randomize_noise)[0]

    return call


def _check_frame(frame: np.ndarray, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise InputError(f"frame {index}: expected an H x W x 3 RGB array, got {shape}")
    if frame.dtype not in (np.uint8, np.float32):
        raise InputError(f"frame {index}: expected uint8 or float32, got {frame.dtype}")


def _landmarks(face: object, frame_index: int) -> np.ndarray:
    points = np.asarray(getattr(face, "landmarks", face), dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise InputError(f"frame {frame_index}: landmarks must be 5 finite (x, y) points, got {points.shape}")
    return points


def _crop_from_frame_cv(points: np.ndarray) -> np.ndarray | None:
    """The classic similarity estimate, both point sets in OpenCV's pixel-centre convention."""
    matrix, _ = cv2.estimateAffinePartial2D(
        (points - 0.5).astype(np.float32), (FFHQ_TEMPLATE_512 - 0.5).astype(np.float32), method=cv2.LMEDS
    )
    return matrix


def _restore_crop(crop: np.ndarray, call: ModuleCall, device: torch.device) -> np.ndarray:
    """One crop (512 x 512 x 3, 0-255) through the network at batch 1; returns the uint8 result."""
    tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255.0
    tensor = ((tensor - 0.5) / 0.5).unsqueeze(0).to(device)
    with torch.no_grad():
        out = call(tensor)
    image = (out[0].float().clamp(-1.0, 1.0) + 1.0) / 2.0
    return (image.cpu().numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)


def _soft_mask(frame_from_crop: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(hard, soft) masks in the frame, float32 H x W: the crop square warped back and eroded 2 px,
    and that eroded again and blurred by about a tenth of the face's size."""
    square = np.ones((TEMPLATE_SIZE, TEMPLATE_SIZE), dtype=np.float32)
    warped = cv2.warpAffine(square, frame_from_crop, (width, height))
    hard = cv2.erode(warped, np.ones((2, 2), np.uint8))  # drop the interpolated edge
    edge = int(float(hard.sum()) ** 0.5) // 20
    centre = cv2.erode(hard, np.ones((max(2 * edge, 1), max(2 * edge, 1)), np.uint8))
    soft = cv2.GaussianBlur(centre, (2 * edge + 1, 2 * edge + 1), 0)
    return hard, soft


def reference_restore(
    frames: Sequence[np.ndarray],
    faces: Sequence[Sequence[np.ndarray]],
    restorer_module_call: ModuleCall,
    device: str | torch.device,
    *,
    border: Literal["constant", "reflect", "reflect101"] = "constant",
) -> list[np.ndarray]:
    """Restore every face of every frame the classic way; returns new frames (same shape and dtype).

    ``faces[i]`` lists the (5, 2) landmarks (or objects with ``.landmarks``, such as ``Face``) of
    ``frames[i]``; ``restorer_module_call`` is the raw network (see ``ModuleCall``), e.g.
    ``gfpgan_module_call(module)``, already on ``device``. ``border`` is how the crop is filled
    outside the frame: the classic grey (``"constant"``, see ``BORDER_GREY``) or a reflection.
    A face whose transform cannot be estimated is left as it is.
    """
    if len(frames) != len(faces):
        raise InputError(f"reference loop: {len(frames)} frames but face lists for {len(faces)}")
    if border not in _BORDERS:
        raise SettingsError(f"border: {border!r} is not one of {', '.join(_BORDERS)}")
    device = torch.device(device)
    results = []
    for index, (frame, frame_faces) in enumerate(zip(frames, faces)):
        _check_frame(frame, index)
        height, width = frame.shape[:2]
        # The classic loop works in 0-255; float frames are scaled into that range and back.
        source = frame if frame.dtype == np.uint8 else frame * np.float32(255.0)
        canvas = source.astype(np.float32)
        for face in frame_faces:
            matrix = _crop_from_frame_cv(_landmarks(face, index))
            if matrix is None:
                continue
            crop = cv2.warpAffine(
                source,
                matrix,
                (TEMPLATE_SIZE, TEMPLATE_SIZE),
                borderMode=_BORDERS[border],
                borderValue=BORDER_GREY,
            )
            restored = _restore_crop(crop, restorer_module_call, device)
            frame_from_crop = cv2.invertAffineTransform(matrix)
            back = cv2.warpAffine(restored, frame_from_crop, (width, height)).astype(np.float32)
            hard, soft = _soft_mask(frame_from_crop, width, height)
            pasted = hard[:, :, None] * back
            blend = soft[:, :, None]
            canvas = (blend * pasted + (1.0 - blend) * canvas).astype(np.float32, copy=False)
        if frame.dtype == np.uint8:
            results.append(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
        else:
            results.append((canvas / np.float32(255.0)).astype(np.float32))
    return results


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_fps(
    frames: Sequence[np.ndarray],
    faces: Sequence[Sequence[np.ndarray]],
    restorer_module_call: ModuleCall,
    device: str | torch.device,
    *,
    warmup: int = 1,
    repeats: int = 1,
) -> float:
    """Frames per second of ``reference_restore`` on these frames (best of ``repeats`` passes).

    ``warmup`` frames are restored first and not timed (CUDA context, cuDNN algorithm choice).
    CUDA work is synchronised before the clock starts and before it stops.
    """
    if not frames:
        raise InputError("reference loop: no frames to time")
    if repeats < 1 or warmup < 0:
        raise SettingsError(f"repeats/warmup: need repeats >= 1 and warmup >= 0, got {repeats}/{warmup}")
    device = torch.device(device)
    for i in range(warmup):
        k = i % len(frames)
        reference_restore(frames[k : k + 1], faces[k : k + 1], restorer_module_call, device)
    best = float("inf")
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        reference_restore(frames, faces, restorer_module_call, device)
        _synchronise(device)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best
