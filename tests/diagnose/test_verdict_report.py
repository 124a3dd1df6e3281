"""Spans, verdicts, the suggested command, the JSON report and the HTML page."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from facefix.diagnose import report as rp
from facefix.diagnose import verdict as vd
from facefix.diagnose.html import png_bytes, render_html, write_html
from facefix.diagnose.run import Preview
from facefix.diagnose.scores import KINDS, THRESHOLDS
from facefix.errors import InputError

TH = dict(THRESHOLDS)


def _track(tid: int, numbers: list[int], raised: dict[str, list[int]], factor: float = 2.0) -> rp.TrackDiagnosis:
    scores = {k: np.zeros(len(numbers)) for k in KINDS}
    for k, idx in raised.items():
        scores[k][idx] = factor * TH[k]
    flags = vd.flag_frames(scores, TH)
    spans = vd.find_spans(numbers, scores, flags, TH)
    v = vd.track_verdict(tid, numbers, flags, spans, reference_frames=4)
    return rp.TrackDiagnosis(tid, numbers, scores, flags, spans, {"descriptor": "test"}, v.verdict, v.reasons)


def test_spans_break_at_unflagged_frames_and_gaps():
    numbers = [10, 11, 12, 13, 20, 21]
    t = _track(0, numbers, {"boil": [0, 1, 3, 4]})
    boil = [(s.first, s.last) for s in t.spans if s.kind == "boil"]
    assert boil == [(10, 11), (13, 13), (20, 20)]
    assert all(s.severity == pytest.approx(2.0) for s in t.spans)


def test_verdicts():
    n = list(range(40))
    assert _track(0, n, {}).verdict == "clean"
    assert _track(0, n, {"boil": [5, 6, 7]}).verdict == "restore"
    collapsed = _track(0, n, {"drift": list(range(20, 40))})
    assert collapsed.verdict == "regenerate" and "identity" in collapsed.reasons[0]
    unusable = _track(0, n, {"boil": list(range(30)), "waxy": list(range(30))})
    assert unusable.verdict == "regenerate"
    shot = vd.shot_verdict([vd.TrackVerdict("restore", ["a"]), vd.TrackVerdict("regenerate", ["b"])])
    assert shot.verdict == "regenerate" and shot.reasons == ["a", "b"]
    assert vd.shot_verdict([]).verdict == "clean"


def test_suggested_controls_follow_the_flags():
    n = list(range(20))
    weak = _track(0, n, {"boil": [3]}, factor=1.1)
    strong = _track(1, n, {"warp": list(range(20)), "waxy": list(range(20))}, factor=3.0)
    controls = vd.suggest_controls([weak.spans, strong.spans], [weak.flags, strong.flags])
    assert set(controls) == {"deboil", "dewarp", "regrain"}
    assert 0.5 <= controls["deboil"] < controls["dewarp"] == 1.0
    cmd = vd.suggested_command("shot.####.exr", "fixed/shot.####.exr", controls, "1001-1020")
    assert cmd.startswith("facefix restore 'shot.####.exr' -o 'fixed/shot.####.exr' --frames 1001-1020 --deboil ")
    assert "--dewarp 1" in cmd and "--regrain 1" in cmd
    assert vd.suggest_controls([], []) == {}


def _diagnosis(tmp_path) -> rp.Diagnosis:
    tracks = [_track(0, list(range(1001, 1031)), {"boil": [5, 6, 7], "drift": [20]})]
    return rp.Diagnosis("shot.####.exr", [1001, 1030], tracks, TH, "restore", ["track 0: boil"],
                        "facefix restore shot.####.exr -o fixed/shot.####.exr --deboil 1", {"deboil": 1.0},
                        hands=[], hands_note="hands not analysed: test")


def test_json_report_schema(tmp_path):
    d = _diagnosis(tmp_path)
    path = tmp_path / "r.json"
    rp.write_json(d, path)
    data = rp.load_json(path)
    assert data["version"] == "facefix.Diagnosis.1" and data["frames"] == [1001, 1030]
    assert set(data) >= {"version", "input", "frames", "tracks", "hands", "verdict", "reasons", "suggested"}
    t = data["tracks"][0]
    assert set(t) >= {"id", "frames", "spans", "identity"}
    f = t["frames"][5]
    assert f["frame"] == 1006 and set(f["scores"]) == set(KINDS) and f["flags"] == ["boil"]
    assert t["frames"][0]["flags"] == []
    assert {"kind": "boil", "first": 1006, "last": 1008, "severity": 2.0} in t["spans"]
    assert data["scores"]["boil"]["threshold"] == TH["boil"]
    assert not list(tmp_path.glob("*.tmp*"))
    (tmp_path / "other.json").write_text(json.dumps({"version": "x"}))
    with pytest.raises(InputError):
        rp.load_json(tmp_path / "other.json")


def test_worst_frames_are_flagged_and_apart(tmp_path):
    t = _diagnosis(tmp_path).tracks[0]
    assert t.worst_frames(TH, 3) == [1006, 1021] or t.worst_frames(TH, 3) == [1007, 1021]


def test_png_is_a_valid_image(tmp_path):
    import OpenImageIO as oiio

    img = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(img))
    back = oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT)
    assert back.shape == (9, 7, 3)
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6


def test_html_is_self_contained(tmp_path):
    d = _diagnosis(tmp_path)
    face = np.full((40, 40, 3), 0.5, np.float32)
    page = render_html(d, [Preview(0, 1006, face, face * 0.9, "passthrough")])
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "data:image/png;base64," in page
    assert not re.search(r"(src|href)=[\"'](https?:)?//", page)  # nothing fetched from a network
    assert "RESTORE" in page.upper() and "--deboil 1" in page and "hands not analysed" in page
    assert page.count("<polyline") == len(KINDS)
    write_html(d, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text().endswith("</html>\n")


def test_a_track_that_takes_over_is_found():
    from facefix.diagnose.run import _predecessor
    from facefix.diagnose.samples import TrackSamples
    from facefix.faces import Face

    def track(tid, numbers, x):
        lm = np.array([[x + 10, 20], [x + 30, 20], [x + 20, 30], [x + 12, 40], [x + 28, 40]], float)
        return TrackSamples(tid, list(numbers), faces=[Face((x, 0, x + 40, 50), lm, track_id=tid) for _ in numbers])

    a, b, c, far = track(0, range(0, 10), 0), track(1, range(11, 20), 2), track(2, range(12, 20), 200), \
        track(3, range(30, 40), 0)
    ordered = [a, b, c, far]
    assert _predecessor(b, ordered) is a
    assert _predecessor(c, ordered) is None  # elsewhere in the frame
    assert _predecessor(far, ordered) is None  # too long after
    assert _predecessor(a, ordered) is None


def test_worst_frames_show_the_drift_of_a_track_to_regenerate():
    t = _track(0, list(range(40)), {"boil": [10], "drift": list(range(25, 40))}, factor=2.0)
    t.scores["boil"][10] = 3.0 * TH["boil"]  # the boil frame scores higher over its threshold
    assert t.verdict == "regenerate"
    assert t.worst_frames(TH, 1)[0] >= 25
