"""What a new user hit on the command line: bad devices, an output naming the plate, resumed runs without
tracks, where the output went, interruption wording, and float output going below zero."""

import os

import numpy as np
import pytest
import torch

from facefix import Face
from facefix.cli import main
from facefix.demo import synth
from facefix.errors import Interrupted, SettingsError
from facefix.io import Frame, FrameFormat, read_frame
from facefix.io.sequence import write_frame

N = 5


@pytest.fixture
def plate(tmp_path):
    """A 16-bit PNG sequence of a moving real face, big enough for the embedded detector."""
    clip = synth.motion_clip(N, (192, 192), translate=(1.5, 0.5), start_scale=0.8)
    for i, rgb in enumerate(clip.frames):
        write_frame(tmp_path / f"plate.{i + 1:04d}.png", Frame(i + 1, rgb, FrameFormat.for_pixels(rgb, "uint16")))
    return tmp_path


# (ids prefixed: a bare "gpu" id would read as the gpu marker and skip the test without CUDA)
@pytest.mark.parametrize("device", ["gpu", "tpu", "cuda:x", "cpu:1"], ids=lambda d: f"device-{d}")
def test_a_bad_device_is_one_error_line(plate, capsys, device):
    code = main(["restore", str(plate / "plate.####.png"), "-o", str(plate / "o" / "o.####.png"),
                 "--device", device, "--model", "passthrough", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("facefix: error: --device"), err
    assert not (plate / "o").exists()


def test_resolve_device_names_the_problem():
    from facefix.engine import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("CPU ").type == "cpu"
    for bad in ("gpu", "cuda:one", "cpu:0", ""):
        with pytest.raises(SettingsError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA device"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("how", ["same-pattern", "other-notation", "through-a-link", "one-frame", "matte"])
def test_an_output_naming_the_input_files_is_refused_before_anything_is_written(plate, capsys, how):
    before = {p.name: p.read_bytes() for p in plate.glob("plate.*.png")}
    src = str(plate / "plate.####.png")
    out, extra = {
        "same-pattern": (src, []),
        "other-notation": (str(plate / "plate.%04d.png"), []),
        "through-a-link": (str(plate / "link" / "plate.####.png"), []),
        "one-frame": (str(plate / "plate.0003.png"), []),
        "matte": (str(plate / "fixed.####.png"), ["--matte", src]),
    }[how]
    if how == "through-a-link":
        os.symlink(plate, plate / "link")
    code = main(["restore", src, "-o", out, "--model", "passthrough", "--quiet", "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "is one of the input files" in err[0], err
    assert {p.name: p.read_bytes() for p in plate.glob("plate.*.png")} == before
    assert not list(plate.glob("fixed.*"))


def test_resume_without_tracks_equals_an_uninterrupted_run(plate, capsys, fake_model):
    args = ["restore", str(plate / "plate.####.png"), "--quiet", "--device", "cpu", "--temporal", "0.6"]
    assert main([*args, "-o", str(plate / "full" / "f.####.png")]) == 0
    assert main([*args, "-o", str(plate / "part" / "f.####.png")]) == 0
    sidecar = plate / "part" / "f.facefix-tracks.json"
    assert sidecar.is_file()  # the tracks the run analysed, kept for a resumed run
    full = {n: read_frame(plate / "full" / f"f.{n:04d}.png").pixels for n in range(1, N + 1)}
    assert any(not np.array_equal(full[n], read_frame(plate / f"plate.{n:04d}.png").pixels) for n in full)
    for keep_sidecar in (True, False):
        for n in (3, 4, 5):  # as if the run had stopped after frame 2
            (plate / "part" / f"f.{n:04d}.png").unlink()
        if not keep_sidecar:
            sidecar.unlink()
        assert main([*args, "-o", str(plate / "part" / "f.####.png"), "--resume"]) == 0
        for n in full:
            assert np.array_equal(read_frame(plate / "part" / f"f.{n:04d}.png").pixels, full[n]), (keep_sidecar, n)


def test_the_summary_says_where_the_output_went(plate, capsys):
    out = plate / "fixed" / "fixed.####.png"
    assert main(["restore", str(plate / "plate.####.png"), "-o", str(out), "--model", "passthrough",
                 "--device", "cpu", "--frames", "1-2"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("facefix: 2 frames written to ") and str(out) in last


def test_both_interruptions_are_worded_alike():
    inside, outside = str(Interrupted(3, 10)), str(Interrupted())
    assert inside.startswith("interrupted after 3 of 10 frames;") and outside.startswith("interrupted;")
    assert inside.split(";", 1)[1] == outside.split(";", 1)[1]  # the same advice: --resume


def test_float_output_never_goes_below_the_plate_or_zero(tmp_path, fake_model):
    """A sharpened face next to black pixels overshoots below 0 through the warps (33 pixels down to -0.004 on
    the example shot): the result keeps no value below min(input, 0); the plate's own negatives stay."""
    from facefix.api import Session

    img, lms = synth.crowd_frame((160, 160), 1, face_px=70)
    img = np.ascontiguousarray(img, np.float32)
    img[:, :, :][img.sum(-1) > 1.6] = 0.0  # hard black where the face is brightest: overshoot below it
    img[:4, :4] = -0.25  # the plate's own negative values, outside the face
    face = Face(box=(*(lms[0].min(0) - 20), *(lms[0].max(0) + 20)), landmarks=lms[0], track_id=0)
    with Session({"model": "gfpgan-1.4", "device": "cpu", "temporal": 0, "mask": "box", "color_match": 0}) as s:
        out, matte = s.restore([img], [[face]], [1], colorspace="linear")[0]
    assert (matte > 0).sum() > 100 and not np.array_equal(out, img)
    assert (out >= np.minimum(img, 0)).all(), out.min()
    assert np.array_equal(out[:4, :4], img[:4, :4])


def test_a_cancelled_run_leaves_its_whole_sidecar(plate, monkeypatch):
    """The sidecar is written while the shot restores; a run stopped after its first batch still leaves it whole,
    and the resumed run reuses it."""
    import time

    from facefix import run as run_module
    from facefix.errors import Cancelled
    from facefix.faces import FaceTracks
    from facefix.params import Settings

    slow_save = FaceTracks.save

    def save(self, path, indent=2):  # a save that outlasts the restore's first batch
        time.sleep(0.5)
        slow_save(self, path, indent=indent)

    monkeypatch.setattr(FaceTracks, "save", save)
    asked = []
    out = str(plate / "c" / "c.####.png")
    settings = Settings(model="passthrough", device="cpu", batch=2)
    with pytest.raises(Cancelled):
        run_module.run_clip(str(plate / "plate.####.png"), out, settings, progress=False,
                            cancel=lambda: asked.append(1) or len(asked) > 1)
    sidecar = run_module.tracks_sidecar(out)
    kept = FaceTracks.load(sidecar)  # whole: it parses
    assert kept.tracks and not list(sidecar.parent.glob("*.tmp*"))
    summary = run_module.run_clip(str(plate / "plate.####.png"), out, settings, progress=False, resume=True)
    assert any("tracks reused" in note for note in summary.notes)
