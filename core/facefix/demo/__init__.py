"""``facefix demo DIR``: a small example shot to try FaceFix on, fully offline.

A real portrait (bundled) moves, turns and zooms over a few frames, softened and "boiling" the way
generative video breaks faces; written as a 16-bit PNG sequence and a half-float EXR sequence
(scene-linear), the two kinds of plate a compositor gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OutputError

__all__ = ["write_demo"]


def write_demo(folder: str | Path, n_frames: int = 8, size: tuple[int, int] = (384, 512), first: int = 1001) -> list[str]:
    """Write ``plate.####.png`` (16-bit sRGB) and ``plate.####.exr`` (half, linear, with alpha) into ``folder``."""
    from ..colour import colour_transform
    from ..io import Frame, FrameFormat
    from ..io.sequence import write_frame
    from . import synth

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the demo folder ({err.strerror})") from None
    clip = synth.motion_clip(n_frames, size, translate=(2.5, 0.8), rotate_deg=0.8, zoom=1.01, start_scale=0.9)
    frames = synth.boil(synth.degrade(clip.frames, blur_sigma=1.6, noise=0.015), clip.landmarks, amplitude=0.05)
    to_linear = colour_transform("linear")
    for i, rgb in enumerate(frames):
        n = first + i
        write_frame(out / f"plate.{n:04d}.png", Frame(n, rgb, FrameFormat.for_pixels(rgb, "uint16")))
        lin = to_linear.from_working(rgb)
        rgba = np.concatenate([lin, np.ones(lin.shape[:2] + (1,), np.float32)], axis=2)
        write_frame(out / f"plate.{n:04d}.exr", Frame(n, rgba, FrameFormat.for_pixels(rgba, "half")))
    last = first + n_frames - 1
    return [str(out / f"plate.{first:04d}-{last:04d}#.png"), str(out / f"plate.{first:04d}-{last:04d}#.exr")]
