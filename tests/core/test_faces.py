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


def test_as_saved_is_the_json_round_trip_without_the_text(tmp_path):
    """``as_saved`` gives exactly what a sidecar's JSON reads back as (values rounded as the file keeps them,
    float32 meshes included); a compact file reads back the same as an indented one."""
    rng = np.random.default_rng(3)
    per = {n: [Face(box=tuple(rng.uniform(0, 500, 4)), landmarks=rng.uniform(0, 500, (5, 2)),
                    score=float(rng.uniform()), track_id=k, source="detected",
                    mesh=rng.uniform(0, 500, (468, 3)).astype(np.float64 if k else np.float32)) for k in range(2)]
           for n in range(1001, 1005)}
    tracks = FaceTracks(tracks=FaceTracks.from_faces(per).tracks, metadata={"cuts": (1003,), "frames": [1001, 1004]})
    want = FaceTracks.from_json(json.loads(json.dumps(tracks.to_json())))
    got = tracks.as_saved()
    assert got.metadata == want.metadata == {"cuts": [1003], "frames": [1001, 1004]}
    assert [t.id for t in got.tracks] == [t.id for t in want.tracks]
    for a, b in zip(got.tracks, want.tracks):
        assert list(a.faces) == list(b.faces)
        for n in a.faces:
            fa, fb = a.faces[n], b.faces[n]
            assert fa.track_id == fb.track_id and fa.box == fb.box and fa.score == fb.score and fa.source == fb.source
            assert np.array_equal(fa.landmarks, fb.landmarks) and fa.landmarks.dtype == fb.landmarks.dtype
            assert np.array_equal(fa.mesh, fb.mesh) and fa.mesh.dtype == fb.mesh.dtype
    assert got.to_json() == want.to_json()
    tracks.save(tmp_path / "compact.json", indent=None)
    tracks.save(tmp_path / "indented.json")
    compact = (tmp_path / "compact.json").read_text()
    assert compact == json.dumps(tracks.to_json(), separators=(",", ":"))  # written a frame at a time, same text
    assert FaceTracks.load(tmp_path / "compact.json").to_json() == FaceTracks.load(tmp_path / "indented.json").to_json()
    empty = FaceTracks()
    empty.save(tmp_path / "empty.json", indent=None)
    assert (tmp_path / "empty.json").read_text() == json.dumps(empty.to_json(), separators=(",", ":"))


def test_compact_text_with_a_mesh_json_writes_its_own_way(tmp_path):
    """A mesh value JSON spells its own way (NaN, infinity, -0.0, large and tiny numbers) is written as json.dumps
    writes it: the compact file's text is json.dumps's whatever the mesh holds."""
    mesh = np.random.default_rng(4).uniform(0, 500, (468, 2))
    odd = mesh.copy()
    odd[:5, 0] = [-0.0, 1e17, 1e-7, -3.5e-5, 123456789.123]
    bad = mesh.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    faces = {1: [Face(box=(0, 0, 10, 10), landmarks=np.ones((5, 2)), track_id=0, mesh=odd),
                 Face(box=(5, 5, 20, 20), landmarks=np.ones((5, 2)) * 2, track_id=1, mesh=bad)]}
    tracks = FaceTracks.from_faces(faces)
    tracks.save(tmp_path / "t.json", indent=None)
    assert (tmp_path / "t.json").read_text() == json.dumps(tracks.to_json(), separators=(",", ":"))
