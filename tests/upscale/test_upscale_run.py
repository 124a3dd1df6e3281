"""--upscale through the pipeline: the whole frame is upscaled after the face pass, faces pasted at output size."""

import numpy as np

from facefix import Face, Settings
from facefix.demo import synth
from facefix.engine import Engine
from facefix.pipeline import restore_batch


def restore_frame(image, faces, settings, engine, *, colorspace="srgb"):
    """One frame through ``restore_batch`` (sRGB unless told), faces below --min-face left alone."""
    from facefix.colour import colour_transform, resolve_colorspace

    keep = [f for f in faces if f.size >= settings.min_face]
    ct = colour_transform(resolve_colorspace(colorspace, is_float=False))
    (out,) = restore_batch([np.asarray(image, np.float32)], [keep], settings, engine, colorspace=ct)
    return out



def test_upscale_2_keeps_alpha_and_pastes_faces_at_output_resolution():
    clip = synth.motion_clip(1, (96, 128), start_scale=0.4)
    img = np.concatenate([clip.frames[0], np.full((96, 128, 1), 0.6, np.float32)], axis=2)
    lm = clip.landmarks[0]
    face = Face(box=(*(lm.min(0) - 10), *(lm.max(0) + 10)), landmarks=lm)
    s = Settings(model="passthrough", upscale=2, upscale_model="animevideov3", temporal=0, mask="box")
    out, alpha = restore_frame(img, [face], s, Engine(s))
    assert out.shape == (192, 256, 4) and alpha.shape == (192, 256)
    np.testing.assert_allclose(out[..., 3], 0.6, atol=1e-5)
    # The face matte sits where the face is, at twice the coordinates.
    ys, xs = np.nonzero(alpha > 0.5)
    cx, cy = lm.mean(0)
    assert abs(xs.mean() / 2 - cx) < 4 and abs(ys.mean() / 2 - cy) < 6
    # Upscaled content matches the input when shrunk back (no shift, no colour change).
    small = out[..., :3].reshape(96, 2, 128, 2, 3).mean(axis=(1, 3))
    assert float(np.abs(small - img[..., :3]).mean()) < 0.03
