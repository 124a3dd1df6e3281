import json
import re

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
    for box in [(0, 0, np.inf, 1), (0, float("nan"), 1, 1), np.array([0.0, 0.0, 1.0, -np.inf])]:
        with pytest.raises(InputError, match="NaN or Inf"):
            Face(box=box, landmarks=np.zeros((5, 2)))
    face = Face(box=np.array([1, 2, 3, 4]), landmarks=[[0, 0]] * 5)  # any numbers: kept as floats
    assert face.box == (1.0, 2.0, 3.0, 4.0) and all(type(v) is float for v in face.box)
    assert face.landmarks.dtype == np.float64


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
    # The compact file's meshes are fixed-point text: the same values, bit for bit (json.dumps writes each float's
    # repr, which reads back as it is; so equal dumps mean equal bits, -0.0 and NaN included).
    assert json.dumps(FaceTracks.load(tmp_path / "compact.json").to_json()) == json.dumps(tracks.to_json())
    assert FaceTracks.load(tmp_path / "compact.json").to_json() == FaceTracks.load(tmp_path / "indented.json").to_json()
    empty = FaceTracks()
    empty.save(tmp_path / "empty.json", indent=None)
    assert (tmp_path / "empty.json").read_text() == json.dumps(empty.to_json(), separators=(",", ":"))


def test_compact_meshes_read_back_bit_for_bit(tmp_path):
    """A compact file writes meshes as fixed-point text, which reads back exactly what ``as_saved`` holds: -0.0, large
    and tiny numbers, every width of whole part, negative numbers of 1-3 digits a group; a mesh with a value that
    text cannot hold (NaN, infinity, 1e17) is written as json.dumps writes it."""
    rng = np.random.default_rng(4)
    mesh = rng.uniform(0, 500, (468, 2))
    odd = mesh.copy()
    odd[:12, 0] = [-0.0, 1e-7, -3.5e-5, 123456789.123, -0.5, -12.25, -999.999, -1000, -123456.5, 999.9995, 0.0004, -1e-4]
    bad = mesh.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    huge = mesh.copy()
    huge[0, 0] = 1e17
    widths = [rng.uniform(-(10.0**e), 10.0**e, (468, 2)) for e in range(13)]
    meshes = [odd, bad, huge, mesh.astype(np.float32), rng.uniform(-9, 9, (5, 3)), *widths]
    faces = {n: [Face(box=(0, 0, 10, 10), landmarks=np.ones((5, 2)), track_id=k, mesh=m) for k, m in enumerate(ms)]
             for n, ms in enumerate([meshes[:5], meshes[5:]], start=1)}
    tracks = FaceTracks.from_faces(faces)
    tracks.save(tmp_path / "t.json", indent=None)
    text = (tmp_path / "t.json").read_text()
    back, want = FaceTracks.load(tmp_path / "t.json"), tracks.as_saved()
    for a, b in zip(back.tracks, want.tracks):
        for n in a.faces:
            assert a.faces[n].mesh.tobytes() == b.faces[n].mesh.tobytes()
    assert json.dumps(back.to_json()) == json.dumps(tracks.to_json())
    assert re.search(r"\"mesh\":\[\[ +-0\.000,", text)  # fixed point, padded to the widest number
    assert "NaN" in text and "Infinity" in text and "1e+17" in text  # the meshes text cannot hold, as json writes them


def test_fixed_point_text_of_every_sign_and_width():
    """The fixed-point fields of a mesh read back as every value they hold, whatever its sign and digits."""
    from facefix.faces import _mesh_texts

    rng = np.random.default_rng(5)
    whole = np.concatenate([10 ** np.arange(10) - 1, 10 ** np.arange(10), rng.integers(0, 10**9, 200)])
    values = np.round(whole + rng.integers(0, 1000, whole.size) / 1000, 3) * rng.choice([-1.0, 1.0], whole.size)
    for size in (1, 7, 1000):  # the widest number sets the field: short ones pad with spaces
        mesh = np.concatenate([values, [size, -0.0, 0.0]])
        mesh = mesh[: mesh.size // 2 * 2].reshape(-1, 2)
        (text,) = _mesh_texts([mesh])
        assert np.array(json.loads(text)).tobytes() == mesh.tobytes()
