"""Outputs land with ordinary permissions, not the private ones of their temporary file."""

import os
import stat

import numpy as np

from facefix.io import Frame, FrameFormat
from facefix.io.atomic import atomic_write_text
from facefix.io.sequence import write_frame


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_frames_and_text_are_readable_by_the_team(tmp_path):
    expected = 0o666 & ~_umask()
    px = np.zeros((4, 4, 3), np.float32)
    write_frame(tmp_path / "f.0001.exr", Frame(1, px, FrameFormat.for_pixels(px, "half")))
    atomic_write_text(tmp_path / "t.json", "{}")
    for name in ("f.0001.exr", "t.json"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == expected, (name, oct(mode))
