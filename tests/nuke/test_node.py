"""The FaceFix node end to end: the fake Nuke renders real frames, the real bridge (served in-process, a
stand-in face model) analyses and restores them. Analyse keys the tracks on the Tracks tab in Nuke's
coordinates; the compositor's edits are what renders use (marked as the host's); Render restores, shows the
result, leaves every pixel outside the face matte bit-identical, and does not render what it rendered
before (reopened scripts included); the Mask input limits the fix; Cancel cancels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import FIRST, SIZE, N, read_exr

FRAMES = list(range(FIRST, FIRST + N))
H = SIZE[0]


def _node(nuke, plate, name="FaceFix"):
    pattern, _, _ = plate
    read = nuke.nodes.Read(file=str(pattern), first=FIRST, last=FIRST + N - 1)
    node = nuke.createNode(name)
    node.setInput(0, read)
    node["device"].setValue("cpu")
    return read, node


def _restores(server):
    return [s for s in server.submitted if s.kind == "restore"]


def _truth_tracks(clip, tmp_path, frames=FRAMES):
    """FaceTracks of the synthetic clip's known landmarks (what Load is given)."""
    out = []
    for n in frames:
        lm = clip.landmarks[n - FIRST]
        box = [*(lm.min(0) - 25), *(lm.max(0) + 25)]
        out.append({"frame": n, "box": [round(float(v), 4) for v in box],
                    "landmarks": [[round(float(x), 4), round(float(y), 4)] for x, y in lm], "score": 1.0,
                    "source": "detected"})
    path = tmp_path / "truth.tracks.json"
    path.write_text(json.dumps({"version": "facefix.FaceTracks.1", "metadata": {}, "tracks": [{"id": 0, "frames": out}]}))
    return path


def test_analyse_keys_each_face_on_every_frame_in_nukes_coordinates(nuke, ff, server, plate):
    _, _, clip = plate
    _, node = _node(nuke, plate)
    node["ff_analyse"].execute()  # the button, as the compositor presses it
    assert nuke._messages == [], nuke._messages
    (job,) = server.submitted
    assert job.kind == "track" and job.frames == f"{FIRST}-{FIRST + N - 1}"
    assert node["ff_status"].value() == f"Analysed {FIRST}-{FIRST + N - 1}: 1 face track"
    analysis = json.loads(node["ff_analysis"].value())
    written = json.loads(open(analysis["file"]).read())  # what the bridge wrote
    (track,) = written["tracks"]
    tid = track["id"]
    box, enable = node[f"ff_t{tid}_box"], node[f"ff_t{tid}_enable"]
    assert box.Class() == "BBox_Knob" and enable.Class() == "Boolean_Knob" and enable.value() is True
    lms = [node[f"ff_t{tid}_lm{i}"] for i in range(5)]
    assert [k.Class() for k in lms] == ["XY_Knob"] * 5 and lms[0].label() == "left eye"
    for knob in [box, *lms]:
        assert knob.isAnimated() and knob.getKeyList() == [float(n) for n in FRAMES]  # one key per frame, no more
    for f in track["frames"]:
        n = f["frame"]
        x0, y0, x1, y1 = f["box"]
        assert [box.getValueAt(n, c) for c in range(4)] == pytest.approx([x0, H - y1, x1, H - y0], abs=1e-3)
        for k, (x, y) in zip(lms, f["landmarks"]):
            assert (k.getValueAt(n, 0), k.getValueAt(n, 1)) == pytest.approx((x, H - y), abs=1e-3)
        # against the clip's known landmarks: the y axis really points up in Nuke
        truth = clip.landmarks[n - FIRST]
        for k, (x, y) in zip(lms, truth):
            assert abs(k.getValueAt(n, 0) - x) < 4 and abs(k.getValueAt(n, 1) - (H - y)) < 4


def test_render_uses_the_knobs_and_leaves_the_rest_bit_identical(nuke, ff, server, plate, tmp_path):
    _, frames, _ = plate
    _, node = _node(nuke, plate)
    ff.analyse(node)
    tid = int(next(iter(json.loads(node["ff_analysis"].value())["tracks"])))
    box = node[f"ff_t{tid}_box"]
    eye = node[f"ff_t{tid}_lm0"]
    edited = FIRST + 1
    before = [box.getValueAt(edited, c) for c in range(4)]
    for c in (0, 2):  # the compositor moves the face 3 px right on one frame...
        box.setValueAt(before[c] + 3.0, edited, c)
    eye.setValueAt(eye.getValueAt(edited, 0) + 3.0, edited, 0)
    strength = node["strength"]  # ...and animates the strength
    strength.setAnimated()
    strength.setValueAt(0.5, FIRST)
    strength.setValueAt(1.0, FIRST + N - 1)
    strength.removeKeyAt(nuke.frame())
    node["matte"].setValue(str(tmp_path / "matte" / "matte.####.exr"))
    node["ff_render"].execute()
    assert nuke._messages == [], nuke._messages
    (job,) = _restores(server)
    faces = {n: f for n, f in job.tracks.tracks[0].faces.items()}
    assert sorted(faces) == FRAMES
    assert faces[edited].source == "host" and {faces[n].source for n in FRAMES if n != edited} == {"detected"}
    assert faces[edited].box[0] == pytest.approx(before[0] + 3.0, abs=1e-3)  # x0 = the knob's x
    assert faces[edited].box[1] == pytest.approx(H - before[3], abs=1e-3)  # y0 = height - the knob's t
    assert faces[FIRST].mesh is not None and faces[edited].mesh is not None  # the oval follows the edit
    assert dict(job.settings.animation["strength"]) == pytest.approx(
        {FIRST: 0.5, FIRST + 1: 2 / 3, FIRST + 2: 5 / 6, FIRST + 3: 1.0})
    assert job.mask is None and job.resume
    result = node["ff_result"].value()
    assert node["ff_rendered"].value() and (node["ff_first"].value(), node["ff_last"].value()) == (FIRST, FIRST + N - 1)
    changed = 0
    for n in FRAMES:
        out = read_exr(result.replace("####", f"{n:04d}"))
        matte = read_exr(str(tmp_path / "matte" / f"matte.{n:04d}.exr"))[..., 0]
        outside = matte == 0
        assert outside.any() and (~outside).any()
        assert np.array_equal(out[..., :3][outside], frames[n][outside]), f"frame {n}: a pixel outside the face changed"
        changed += int((out[..., :3] != frames[n]).any())
    assert changed == N  # and the faces were restored
    # the node shows the result: a Write after it gets the restored frames
    comp = nuke.nodes.Write(file=str(tmp_path / "comp" / "comp.####.exr"), channels="rgba", datatype="32 bit float")
    comp.setInput(0, node)
    (tmp_path / "comp").mkdir()
    nuke.execute(comp, FIRST, FIRST + N - 1)
    for n in FRAMES:
        shown = read_exr(str(tmp_path / "comp" / f"comp.{n:04d}.exr"))
        assert np.array_equal(shown, read_exr(result.replace("####", f"{n:04d}")))


def test_nothing_is_rendered_twice_not_even_after_reopening(nuke, ff, server, plate, tmp_path):
    _, node = _node(nuke, plate)
    ff.analyse(node)
    first = ff.render(node)
    assert len(_restores(server)) == 1
    assert ff.render(node) == first and len(_restores(server)) == 1  # nothing changed: nothing rendered
    assert "cached" in node["ff_status"].value()
    script = tmp_path / "shot.nk"
    nuke.scriptSaveAs(str(script))
    nuke.scriptOpen(str(script))
    node = nuke.toNode("FaceFix1")
    assert node is not None and node["ff_result"].value() == first  # the reopened script shows its render
    assert node.node("Show")._which(FIRST) == 1
    assert ff.render(node) == first and len(_restores(server)) == 1  # and does not render it again
    tid = int(next(iter(json.loads(node["ff_analysis"].value())["tracks"])))
    eye = node[f"ff_t{tid}_lm1"]
    eye.setValueAt(eye.getValueAt(FIRST, 1) - 2.0, FIRST, 1)  # a key edited after reopening
    second = ff.render(node)
    assert second != first and len(_restores(server)) == 2
    sources = {n: f.source for n, f in _restores(server)[-1].tracks.tracks[0].faces.items()}
    assert sources[FIRST] == "host" and sources[FIRST + 1] == "detected"
    node["strength"].setValue(0.25)  # a control changed: rendered again
    assert ff.render(node) not in (first, second) and len(_restores(server)) == 3


def test_load_tracks_with_a_gap_and_the_mask_input(nuke, ff, server, plate, tmp_path):
    pattern, frames, clip = plate
    _, node = _node(nuke, plate)
    gap = FIRST + 2
    node["tracks"].setValue(str(_truth_tracks(clip, tmp_path, [n for n in FRAMES if n != gap])))
    node["ff_load_tracks"].execute()
    assert nuke._messages == [], nuke._messages
    enable = node["ff_t0_enable"]
    assert enable.isAnimated() and [enable.getValueAt(n, 0) for n in FRAMES] == [True, True, False, True]
    # the mask: only the left half of the frame may change
    h, w = SIZE
    mask = np.zeros((h, w, 4), np.float32)
    mask[:, : w // 2, 3] = 1.0
    import OpenImageIO as oiio

    for n in FRAMES:
        out = oiio.ImageOutput.create(str(tmp_path / f"mask.{n:04d}.exr"))
        spec = oiio.ImageSpec(w, h, 4, "float")
        out.open(str(tmp_path / f"mask.{n:04d}.exr"), spec)
        out.write_image(mask)
        out.close()
    mask_read = nuke.nodes.Read(file=str(tmp_path / "mask.####.exr"), first=FIRST, last=FIRST + N - 1)
    node.setInput(1, mask_read)
    node["matte"].setValue(str(tmp_path / "matte" / "m.####.exr"))
    result = ff.render(node)
    (job,) = _restores(server)
    assert job.mask is not None and job.mask.endswith("mask.####.exr")
    assert sorted(job.tracks.tracks[0].faces) == [n for n in FRAMES if n != gap]
    assert {f.source for f in job.tracks.tracks[0].faces.values()} == {"detected"}  # as the file says
    for n in FRAMES:
        out = read_exr(result.replace("####", f"{n:04d}"))[..., :3]
        assert np.array_equal(out[:, w // 2:], frames[n][:, w // 2:]), "the fix went outside the mask"
        if n == gap:
            assert np.array_equal(out, frames[n]), "a disabled frame was fixed"
        else:
            assert (out[:, : w // 2] != frames[n][:, : w // 2]).any()


def test_cancel_and_errors(nuke, ff, server, plate, model, tmp_path):
    _, _, clip = plate
    _, node = _node(nuke, plate)
    node["tracks"].setValue(str(_truth_tracks(clip, tmp_path)))
    ff.load_tracks(node)
    model.delay = 0.3
    nuke.ProgressTask._cancel = staticmethod(lambda task: True)  # the compositor presses Cancel
    node["ff_render"].execute()
    assert node["ff_status"].value() == "Render: cancelled" and not node["ff_rendered"].value()
    assert nuke._messages == []  # no dialog for a cancel
    assert ("task", "FaceFix: rendering FaceFix1") in nuke._progress
    nuke.GUI = False  # nuke -t: a failure raises
    client = __import__("sys").modules["facefix_bridge_client"]
    with pytest.raises(client.BridgeError, match="cancelled"):
        ff.render(node)
    nuke.ProgressTask._cancel = staticmethod(lambda task: False)
    nuke.GUI = True
    lonely = nuke.createNode("FaceFix")
    lonely.setInput(0, None)
    lonely["ff_analyse"].execute()
    assert nuke._messages and "connect the Source input" in nuke._messages[-1][1]
    assert lonely["ff_status"].value().startswith("Analyse: failed")
    node["frames"].setValue("the end")
    node["ff_render"].execute()
    assert "frames: 'the end' is not a frame range" in nuke._messages[-1][1]
    node["frames"].setValue(f"{FIRST + 1}-{FIRST + 2}")
    model.delay = 0.0
    result = ff.render(node)
    assert _restores(server)[-1].frames == f"{FIRST + 1}-{FIRST + 2}"
    assert (node["ff_first"].value(), node["ff_last"].value()) == (FIRST + 1, FIRST + 2)
    assert result is not None


@pytest.mark.parametrize("deboil", [0.0, 1.0])
def test_a_repair_renders_with_the_frames_its_window_reads_after_the_range(nuke, ff, server, plate, deboil):
    _, node = _node(nuke, plate)
    node["temporal"].setValue(0.0)
    node["deboil"].setValue(deboil)
    ff.analyse(node)
    ff.render(node, FIRST + 1, FIRST + 1)
    assert nuke._messages == [], nuke._messages
    (job,) = _restores(server)
    # with --deboil the bridge gets the 3 frames each side the repair reads (as far as the Source has them)
    handed = sorted(job.tracks.tracks[0].faces)
    assert handed == (FRAMES if deboil else [FIRST + 1]), handed
