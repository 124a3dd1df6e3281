"""FaceTracks (origin top-left, y down) <-> Nuke's knobs (origin bottom-left, y up), both ways; which frames
the compositor changed; the frame-range syntax."""

from __future__ import annotations

import pytest

from .conftest import PLUGIN


@pytest.fixture
def tr(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    from facefix_nuke import tracks

    return tracks


def test_coordinates_flip_y_both_ways(tr):
    h = 1080
    assert tr.to_nuke_box((100, 200, 300, 500), h) == (100, 580, 300, 880)
    assert tr.from_nuke_box((100, 580, 300, 880), h) == (100, 200, 300, 500)
    assert tr.from_nuke_box((300, 880, 100, 580), h) == (100, 200, 300, 500)  # a box dragged inside out
    assert tr.to_nuke_point((10.5, 0.5), h) == (10.5, 1079.5)  # the top-left pixel's centre
    assert tr.from_nuke_point((10.5, 1079.5), h) == (10.5, 0.5)
    face = {"box": [10, 20, 110, 140], "landmarks": [[40, 60], [80, 60], [60, 90], [45, 110], [75, 110]]}
    values = tr.face_values(face, 200)
    assert values[:4] == [10, 60, 110, 180] and values[4:6] == [40, 140]
    box, lms = tr.values_face(values, 200)
    assert box == face["box"] and lms == face["landmarks"]


def _facetracks(frames=(1001, 1002, 1003)):
    out = []
    for i, n in enumerate(frames):
        x = 50 + 2 * i
        out.append({"frame": n, "box": [x, 40, x + 60, 120],
                    "landmarks": [[x + 15, 70], [x + 45, 70], [x + 30, 85], [x + 18, 100], [x + 42, 100]],
                    "score": 0.9, "source": "detected",
                    "mesh": [[x + 30, 40], [x + 60, 80], [x + 30, 120], [x, 80]]})
    return {"version": tr_version(), "metadata": {"detector": "blazeface"}, "tracks": [{"id": 3, "frames": out}]}


def tr_version():
    return "facefix.FaceTracks.1"


def test_unchanged_frames_keep_their_source_and_edited_ones_are_the_hosts(tr):
    h = 200
    data = _facetracks()
    analysis = tr.analysis_of(data, h, None)
    knobs = {3: {int(n): list(v[0]) for n, v in analysis["tracks"]["3"].items()}}
    knobs[3][1002][0] += 5.0  # the compositor moved the box's left edge on 1002
    knobs[3][1002][4] += 5.0  # and the left eye
    knobs[3][1004] = list(knobs[3][1003])  # and keyed a frame Analyse had not
    out = tr.build_tracks(knobs, analysis, h, data)
    frames = {f["frame"]: f for f in out["tracks"][0]["frames"]}
    assert out["version"] == "facefix.FaceTracks.1" and out["tracks"][0]["id"] == 3
    assert [frames[n]["source"] for n in (1001, 1002, 1003, 1004)] == ["detected", "host", "detected", "host"]
    assert frames[1001]["score"] == 0.9 and frames[1002]["score"] == 1.0
    assert frames[1001] == {**data["tracks"][0]["frames"][0]}  # round trip, mesh included
    assert frames[1002]["box"] == [57.0, 40.0, 112.0, 120.0] and frames[1002]["landmarks"][0] == [72.0, 70.0]
    assert frames[1004]["box"] == data["tracks"][0]["frames"][2]["box"]
    # the edited frame's mesh follows its landmarks (a similarity fit), close to the analysed one
    assert frames[1002]["mesh"] != data["tracks"][0]["frames"][1]["mesh"]
    assert all(abs(a - b) < 6 for p, q in zip(frames[1002]["mesh"], data["tracks"][0]["frames"][1]["mesh"])
               for a, b in zip(p, q))
    # without an analysis every frame is the host's
    bare = tr.build_tracks(knobs, None, h)
    assert {f["source"] for f in bare["tracks"][0]["frames"]} == {"host"}
    assert "mesh" not in bare["tracks"][0]["frames"][0]


def test_similarity_fit_recovers_a_known_transform(tr):
    pts = [[0, 0], [10, 0], [0, 10], [7, 3]]
    a, b, tx, ty = 0.8, 0.6, 5.0, -2.0
    moved = [[a * x - b * y + tx, b * x + a * y + ty] for x, y in pts]
    assert tr.fit_similarity(pts, moved) == pytest.approx((a, b, tx, ty))


def test_facetracks_version_is_checked(tr):
    with pytest.raises(ValueError, match="not supported"):
        tr.check_facetracks({"version": "facefix.FaceTracks.9", "tracks": []})
    with pytest.raises(ValueError, match="not a FaceTracks"):
        tr.check_facetracks({"tracks": "no"})


def test_frame_ranges(nuke, ff):
    from facefix_nuke.node import frame_list

    assert frame_list("1001-1004") == [1001, 1002, 1003, 1004]
    assert frame_list("1001-1009x4") == [1001, 1005, 1009]
    assert frame_list("1,5,9-11") == [1, 5, 9, 10, 11]
    with pytest.raises(ff.AdapterError, match="backwards"):
        frame_list("1004-1001")
    with pytest.raises(ff.AdapterError, match="not a frame range"):
        frame_list("all")
