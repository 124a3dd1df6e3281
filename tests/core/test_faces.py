import json

import numpy as np
import pytest

from facefix.errors import InputError
from facefix.faces import FACETRACKS_VERSION, Face, FaceTrack, FaceTracks


def _face(x, tid=0, src="detected"):
    lm = np.array([[x, 10], [x + 10, 10], [x + 5, 15], [x + 1, 20], [x + 9, 20]], float)
    return Face(box=(x - 5, 0, x + 15, 30), landmarks=lm, score=0.9, track_id=tid, source=src)


def test_facetracks_json_round_trip(tmp_path):
    tracks = FaceTracks((FaceTrack(3, {1001: _face(10, 3), 1002: _face(12, 3, "interpolated")}),))
    p = tmp_path / "t.json"
    tracks.save(p)
    data = json.loads(p.read_text())
    assert data["version"] == FACETRACKS_VERSION
    assert data["tracks"][0]["frames"][1]["source"] == "interpolated"
    back = FaceTracks.load(p)
    assert back.frame_numbers() == [1001, 1002]
    np.testing.assert_allclose(back.faces_at(1002)[0].landmarks, _face(12).landmarks)
    assert back.faces_at(1002)[0].track_id == 3


def test_bad_facetracks_are_refused(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        FaceTracks.load(p)
    with pytest.raises(InputError, match="version"):
        FaceTracks.from_json({"tracks": []})
    with pytest.raises(InputError, match="malformed"):
        FaceTracks.from_json({"version": FACETRACKS_VERSION, "tracks": [{"id": 1, "frames": [{"frame": 1}]}]})
    with pytest.raises(InputError):
        Face(box=(0, 0, 1, 1), landmarks=np.full((5, 2), np.nan))
