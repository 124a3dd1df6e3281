"""--faces reference: only the character in the reference image is restored."""

import numpy as np

from facefix.cli import main
from facefix.demo import synth
from facefix.io import Frame, FrameFormat, open_source
from facefix.io.sequence import write_frame


def test_reference_picks_the_matching_face(tmp_path):
    still = synth.astronaut()
    other = np.ascontiguousarray(still[:, ::-1] * np.array([0.8, 0.95, 1.1], np.float32)).clip(0, 1)
    other_lm = synth.ASTRONAUT_LANDMARKS.copy()
    other_lm[:, 0] = 512 - other_lm[:, 0]
    other_lm = other_lm[[1, 0, 2, 4, 3]]  # mirrored: image-left eye is the other one now
    for i in range(3):
        left = synth.warp_still(still, synth.similarity(0.9, 0, 2 * i, 0), (360, 320))
        right = synth.warp_still(other, synth.similarity(0.9, 0, -2 * i, 0), (360, 320))
        frame = np.concatenate([left, right], axis=1)
        write_frame(tmp_path / f"two.{i + 1:04d}.png", Frame(i + 1, frame, FrameFormat.for_pixels(frame, "uint16")))
    write_frame(tmp_path / "who.png", Frame(0, still, FrameFormat.for_pixels(still, "uint8")))
    rc = main(["restore", str(tmp_path / "two.####.png"), "-o", str(tmp_path / "o.####.png"), "--model", "passthrough",
               "--faces", "reference", "--reference", str(tmp_path / "who.png"), "--quiet",
               "--matte", str(tmp_path / "m.####.exr")])
    assert rc == 0
    mattes = open_source(str(tmp_path / "m.####.exr"))
    for n in mattes.frame_numbers:
        m = mattes.read(n).pixels[..., 0]
        assert m[:, :320].max() > 0.99  # the astronaut is selected
        assert m[:, 320:].max() == 0.0  # the other character is left alone
    # Both faces are found: with --faces all, both are restored (so the selection above did the work).
    assert main(["restore", str(tmp_path / "two.####.png"), "-o", str(tmp_path / "a.####.png"), "--model",
                 "passthrough", "--quiet", "--matte", str(tmp_path / "ma.####.exr"), "--frames", "1"]) == 0
    m = open_source(str(tmp_path / "ma.####.exr")).read(1).pixels[..., 0]
    assert m[:, :320].max() > 0.99 and m[:, 320:].max() > 0.99
