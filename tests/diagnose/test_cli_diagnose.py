"""``facefix diagnose`` end to end on a short ghosted clip of a real face, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import OpenImageIO as oiio
import pytest

from facefix.cli.main import main
from facefix.diagnose.clips import ArraySource, defect_clip, drift_clip, second_face


@pytest.fixture(scope="module")
def ghost_shot(tmp_path_factory):
    clip = defect_clip("ghost", 12, (160, 160), seed=3)
    folder = tmp_path_factory.mktemp("ghost")
    for i, f in enumerate(clip.frames):
        buf = oiio.ImageBuf(oiio.ImageSpec(160, 160, 3, oiio.UINT16))
        buf.set_pixels(oiio.ROI(0, 160, 0, 160, 0, 1, 0, 3), f)
        assert buf.write(str(folder / f"shot.{1001 + i:04d}.png"))
    clip.truth_tracks(1001).save(folder / "tracks.json")
    return folder, clip


class _FakeHands:
    """Stands in for facefix.hands (tested on its own): counts the frames it is given, flags one span."""

    def __init__(self):
        self.frames = 0

    def __call__(self, frames, numbers):
        self.frames = sum(1 for f in frames if f.shape[0] == 3)
        span = {"kind": "fingers", "first": numbers[0], "last": numbers[1], "severity": 1.5}
        return type("Report", (), {"to_json": lambda _self: {"version": "facefix.Hands.1", "spans": [span]}})()


def test_diagnose_writes_json_and_html(ghost_shot, capsys, monkeypatch):
    import facefix.hands

    fake = _FakeHands()
    monkeypatch.setattr(facefix.hands, "analyse_hands", fake)
    folder, clip = ghost_shot
    before = sorted(p.stat().st_mtime_ns for p in folder.glob("shot.*.png"))
    rc = main([
        "diagnose", str(folder / "shot.####.png"), "--tracks", str(folder / "tracks.json"), "--json",
        str(folder / "r.json"), "-o", str(folder / "r.html"), "--quiet", "--thumbnails", "1",
        "--preview-model", "passthrough", "--device", "cpu",
    ])
    assert rc == 0
    data = json.loads((folder / "r.json").read_text())
    assert data["version"] == "facefix.Diagnosis.1" and data["frames"] == [1001, 1012]
    track = data["tracks"][0]
    flagged = {f["frame"] for f in track["frames"] if "boil" in f["flags"]}
    ghost = {1001 + i for i in np.nonzero(clip.defect)[0]}
    assert flagged & ghost  # the ghost is found ...
    assert len(flagged - ghost) <= 2  # ... and the clean frames stay (almost all) unflagged
    assert data["verdict"] == "restore" and "--deboil" in data["suggested"]
    assert fake.frames == 12 and data["hands"] == [{"kind": "fingers", "first": 1001, "last": 1002, "severity": 1.5}]
    page = (folder / "r.html").read_text()
    assert "data:image/png;base64," in page and "passthrough" in page
    assert capsys.readouterr().err == ""  # --quiet
    assert sorted(p.stat().st_mtime_ns for p in folder.glob("shot.*.png")) == before  # inputs untouched


@pytest.mark.parametrize("args, message", [
    (["-o", "r.txt"], "expected a .html file"),
    (["--json", "r.html"], "expected a .json file"),
    (["--thumbnails", "-1"], "--thumbnails must be 0 or more"),
    (["--reference", "/nonexistent/face.png"], "no such file"),
])
def test_bad_options_fail_in_one_line(ghost_shot, capsys, args, message):
    folder, _ = ghost_shot
    rc = main(["diagnose", str(folder / "shot.####.png"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("facefix: error:") and message in err and "\n" not in err


def test_missing_input_fails_in_one_line(tmp_path, capsys):
    rc = main(["diagnose", str(tmp_path / "none.####.exr"), "--quiet", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("facefix: error:") and "\n" not in err
    assert not (tmp_path / "r.json").exists()


def test_drift_clip_truth():
    clip = drift_clip(34, (96, 96), seed=1, scale=0.6, start=28, ramp=4)
    assert second_face().shape == (256, 256, 3)
    assert not clip.defect[:28].any() and clip.defect[-3:].all()
    assert clip.ignore[28] and not (clip.ignore & clip.defect).any()
    # Before the blend starts the frames are the clean clip's; after, the face changes.
    assert np.abs(clip.frames[-1] - clip.frames[0]).mean() > 0.01
    src = ArraySource(clip.frames, first=5)
    assert src.frame_numbers[0] == 5 and np.array_equal(src.read(6).pixels, clip.frames[1])


def test_reference_of_another_person_is_drift(ghost_shot, monkeypatch):
    from pathlib import Path

    import facefix
    import facefix.diagnose.run as run

    # Hands are the hands module's to test (they run in the test above): this one is about identity.
    monkeypatch.setattr(run, "_analyse_hands", lambda *a: ([], "hands not analysed: test"))
    folder, _ = ghost_shot
    other = Path(facefix.__file__).parent / "assets" / "examples" / "second_face.png"
    common = ["diagnose", str(folder / "shot.####.png"), "--tracks", str(folder / "tracks.json"), "--quiet",
              "--device", "cpu", "--frames", "1001-1008"]
    assert main([*common, "--json", str(folder / "own.json")]) == 0
    assert main([*common, "--json", str(folder / "ref.json"), "--reference", str(other)]) == 0
    data = json.loads((folder / "ref.json").read_text())
    own = json.loads((folder / "own.json").read_text())["tracks"][0]["identity"]
    ident = data["tracks"][0]["identity"]
    assert ident["reference"] == str(other)
    assert ident["median_drift"] > 2 * own["median_drift"]
    assert ident["median_drift"] > ident["drift_threshold"]
    assert data["verdict"] == "regenerate" and any("identity" in r for r in data["reasons"])


def test_hands_missing_is_said(monkeypatch):
    import sys

    from facefix.diagnose.run import _analyse_hands
    from facefix.params import Settings

    monkeypatch.setitem(sys.modules, "facefix.hands", None)  # an install without it
    hands, note = _analyse_hands(ArraySource(np.zeros((2, 8, 8, 3), np.float32)), [0, 1], Settings())
    assert hands == [] and note is not None and "not available" in note
