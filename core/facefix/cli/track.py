"""``facefix track``: the analysis pass on its own, writing FaceTracks (and an optional debug overlay)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..faces import Face
from ..params import Settings

__all__ = ["run_track", "draw_overlay"]

_COLOURS = [(1.0, 0.25, 0.2), (0.2, 0.9, 0.3), (0.25, 0.5, 1.0), (1.0, 0.85, 0.1), (0.9, 0.3, 0.9), (0.2, 0.9, 0.9)]


def draw_overlay(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with each face's box, track id, score and 5 landmarks drawn."""
    import OpenImageIO as oiio

    h, w = rgb.shape[:2]
    buf = oiio.ImageBuf(oiio.ImageSpec(w, h, 3, oiio.FLOAT))
    buf.set_pixels(oiio.ROI(0, w, 0, h, 0, 1, 0, 3), np.ascontiguousarray(rgb[..., :3], dtype=np.float32))
    for f in faces:
        col = _COLOURS[f.track_id % len(_COLOURS)] if f.track_id >= 0 else (1.0, 1.0, 1.0)
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        for k in range(2):  # two pixels wide so it reads on 4K frames scaled down
            oiio.ImageBufAlgo.render_box(buf, x0 - k, y0 - k, x1 + k, y1 + k, col)
        label = f"id {f.track_id}  {f.score:.2f}" + ("  interp" if f.source == "interpolated" else "")
        size = max(12, int((y1 - y0) / 8))
        oiio.ImageBufAlgo.render_text(buf, x0, max(size, y0 - 4), label, size, "", col)
        for x, y in f.landmarks:
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    oiio.ImageBufAlgo.render_point(buf, int(x) + dx, int(y) + dy, col)
    pixels = buf.get_pixels(oiio.FLOAT)
    if pixels is None:
        raise OutputError(f"cannot draw the debug overlay ({buf.geterror()})")
    return np.asarray(pixels, dtype=np.float32)


def run_track(source_path: str, output: str, settings: Settings, *, frames: str | None = None,
              progress: bool = True, debug_overlay: str | None = None) -> str:
    """Detect and track faces in ``source_path``, write FaceTracks JSON to ``output``; returns a summary line."""
    from ..analyse import AnalysisStats, track_clip, working_rgb
    from ..io import Frame, FrameFormat, open_source
    from ..io.sequence import write_frame

    src = open_source(source_path, frames)
    overlay_dir = Path(debug_overlay) if debug_overlay else None
    if overlay_dir is not None:
        try:
            overlay_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{overlay_dir}: cannot create the debug overlay folder ({err.strerror})") from None
    stats = AnalysisStats()
    tracks = track_clip(src, src.frame_numbers, settings, device=_device(settings), progress=progress, stats=stats)
    tracks.save(output)
    if overlay_dir is not None:
        # A second read after tracking, so the overlay shows final ids, smoothed landmarks and interpolated
        # faces, without holding the shot in memory.
        for n in src.frame_numbers:
            rgb = working_rgb(src.read(n).pixels, settings.colorspace, src.is_float)
            drawn = draw_overlay(rgb, tracks.faces_at(n))
            write_frame(overlay_dir / f"overlay.{n:04d}.png", Frame(n, drawn, FrameFormat.for_pixels(drawn, "uint8")))
    n_tracks = len(tracks.tracks)
    return (f"{stats.frames} frames, {stats.faces_detected} detections, {n_tracks} tracks, {stats.cuts} cuts, "
            f"{stats.faces_too_small} faces below --min-face; wrote {output}")


def _device(settings: Settings) -> str:
    from ..engine import resolve_device

    return str(resolve_device(settings.device))
