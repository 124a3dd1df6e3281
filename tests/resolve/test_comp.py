"""End to end on the Fusion page: the Comp script on a Loader (and a MediaIn), the real bridge tracking and
rendering real frames; the result merged over the original through one animated Polygon mask per face; the
mask edited and rendered back as the job's mask."""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest

from .conftest import FIRST, SCRIPTS, SIZE, N, read


def make_comp(dvr, footage, first_comp_frame=0):
    pattern, _, _ = footage
    resolve = dvr.Resolve()
    dvr._install(resolve)
    fusion = resolve.Fusion()
    comp = fusion.GetCurrentComp()
    comp._attrs.update(COMPN_RenderStart=float(first_comp_frame), COMPN_RenderEnd=float(first_comp_frame + N - 1))
    loader = comp.AddTool("Loader")
    loader.Clip = str(pattern).replace("####", f"{FIRST:04d}")
    loader.GlobalIn = first_comp_frame
    loader.GlobalOut = first_comp_frame + N - 1
    out = comp.AddTool("MediaOut")
    out.ConnectInput("Input", loader)
    comp._select(loader)
    return resolve, fusion, comp, loader, out


def run_comp(dvr, resolve, fusion, comp, actions):
    dvr._ui_script.extend(actions)
    runpy.run_path(str(SCRIPTS / "Comp" / "FaceFix.py"),
                   init_globals={"resolve": resolve, "fusion": fusion, "bmd": dvr, "comp": comp})
    dialog = next(w for w in reversed(dvr._windows) if w._props.get("ID") == "FaceFixWin")
    return dialog.Find("FFStatus").Text


def click(button, **values):
    def act(win):
        items = win.GetItems()
        for name, value in values.items():
            items[f"FF_{name}"].Value = value
        items[button].Click()

    return act


def test_render_adds_masks_loader_and_merge(dvr, ffr, server, footage):
    pattern, _, clip = footage
    resolve, fusion, comp, loader, out = make_comp(dvr, footage, first_comp_frame=10)
    status = run_comp(dvr, resolve, fusion, comp, [click("FFStart", strength=0.9)])
    assert "Done: 1 of 1" in status and "1 face mask" in status, status
    track_job, restore_job = server.submitted
    assert (track_job.kind, track_job.frames) == ("track", f"{FIRST}-{FIRST + N - 1}")
    assert restore_job.kind == "restore" and restore_job.tracks == track_job.output
    assert restore_job.settings.strength == pytest.approx(0.9)
    merge = comp.FindTool("FaceFix1_Merge")
    result = comp.FindTool("FaceFix1_Result")
    mask = comp.FindTool("FaceFix1_Face0")
    assert merge is not None and result is not None and mask is not None
    # the Merge: the original under, the result over, through the face mask; what the Loader fed takes the Merge
    assert merge.Background.GetConnectedOutput().GetTool() is loader
    assert merge.Foreground.GetConnectedOutput().GetTool() is result
    assert merge.EffectMask.GetConnectedOutput().GetTool() is mask
    assert out.Input.GetConnectedOutput().GetTool() is merge
    # the result Loader shows the render where the Loader shows the plate
    assert result.GetInput("Clip").endswith(f"fixed.{FIRST:04d}.png")
    assert (result.GetInput("GlobalIn"), result.GetInput("GlobalOut")) == (10, 10 + N - 1)
    for i in range(N):
        fixed = read(result.GetInput("Clip").replace(f"{FIRST:04d}", f"{FIRST + i:04d}"))
        plate = read(str(pattern).replace("####", f"{FIRST + i:04d}"))
        assert fixed.shape == plate.shape and not np.array_equal(fixed, plate)
    # one key per frame, in Fusion's coordinates: the mask covers the face's landmarks there, not the corners
    spline = mask.Polyline.GetConnectedOutput().GetTool()
    assert sorted(spline.GetKeyFrames()) == list(range(10, 10 + N))
    for i in range(N):
        m = mask._mask(10 + i)
        assert m.shape == SIZE
        for x, y in clip.landmarks[i]:
            assert m[int(y), int(x)] == 1.0
        assert m[0, 0] == m[-1, -1] == 0.0
        assert 0.05 < m.mean() < 0.6
    data = json.loads(merge.GetData("FaceFix"))
    assert data["loader"] == "FaceFix1_Result" and data["masks"] == ["FaceFix1_Face0"]


def test_rerender_with_the_edited_mask(dvr, ffr, server, footage):
    pattern, _, clip = footage
    resolve, fusion, comp, loader, out = make_comp(dvr, footage)
    run_comp(dvr, resolve, fusion, comp, [click("FFStart")])
    merge = comp.FindTool("FaceFix1_Merge")
    mask = comp.FindTool("FaceFix1_Face0")
    spline = mask.Polyline.GetConnectedOutput().GetTool()
    # the compositor keeps only the face's left half (image left): every key's points clipped at the nose
    keys = spline.GetKeyFrames()
    for t, key in keys.items():
        nose_x = clip.landmarks[int(t)][2][0] / SIZE[1] - 0.5 if int(t) < N else 0.0
        for p in key["Value"]["Points"].values():
            p["X"] = min(p["X"], nose_x)
            p["LX"] = p["RX"] = 0.0
    spline.SetKeyFrames(keys, True)
    comp._select(merge)
    dvr._windows.clear()
    status = run_comp(dvr, resolve, fusion, comp, [click("FFMask")])
    assert "re-rendered" in status, status
    job = server.submitted[-1]
    assert job.mask is not None and job.mask.endswith("mask.####.exr")
    result = comp.FindTool("FaceFix1_Result")
    assert "/v2/" in result.GetInput("Clip").replace("\\", "/")
    for i in range(N):
        n = FIRST + i
        m = read(job.mask.replace("####", f"{n:04d}"))[..., 0]  # numbered like the plate
        fixed = read(result.GetInput("Clip").replace(f"{FIRST:04d}", f"{n:04d}"))
        plate = read(str(pattern).replace("####", f"{n:04d}"))
        changed = np.abs(fixed - plate).max(axis=-1) > 0
        nose = int(clip.landmarks[i][2][0])
        assert changed.any() and not changed[:, nose + 2:].any()  # the fix stops at the mask's edge
        assert not changed[m == 0].any()
    data = json.loads(merge.GetData("FaceFix"))
    assert data["version"] == 2


def test_mask_moved_off_the_face_leaves_the_plate(dvr, ffr, server, footage):
    pattern, _, _ = footage
    resolve, fusion, comp, loader, out = make_comp(dvr, footage)
    run_comp(dvr, resolve, fusion, comp, [click("FFStart")])
    spline = comp.FindTool("FaceFix1_Face0").Polyline.GetConnectedOutput().GetTool()
    keys = spline.GetKeyFrames()
    for key in keys.values():
        for p in key["Value"]["Points"].values():
            p["X"], p["Y"] = -0.45 + p["X"] * 0.01, 0.45 + p["Y"] * 0.01  # a speck in the top-left corner
    spline.SetKeyFrames(keys, True)
    dvr._windows.clear()
    status = run_comp(dvr, resolve, fusion, comp, [click("FFMask")])  # the only FaceFix Merge: no need to select
    assert "re-rendered" in status, status
    result = comp.FindTool("FaceFix1_Result")
    for i in range(N):
        n = FIRST + i
        fixed = read(result.GetInput("Clip").replace(f"{FIRST:04d}", f"{n:04d}"))
        assert np.array_equal(fixed, read(str(pattern).replace("####", f"{n:04d}")))


def test_media_in_follows_the_timeline_clip(dvr, ffr, server, footage):
    from .test_edit import START, build_timeline

    resolve, timeline, originals = build_timeline(dvr, footage)
    timeline._playhead = START + 12  # the movie clip: frames 1-6 of take.mov
    fusion = resolve.Fusion()
    comp = fusion.GetCurrentComp()
    comp._attrs.update(COMPN_RenderStart=0.0, COMPN_RenderEnd=5.0)
    media_in = comp.AddTool("MediaIn")
    media_in.GlobalIn = 0
    media_in.GlobalOut = 5
    comp._select(media_in)
    status = run_comp(dvr, resolve, fusion, comp, [click("FFStart")])
    assert "Done: 1 of 1" in status, status
    track_job, restore_job = server.submitted
    assert restore_job.input.endswith("take.mov") and restore_job.frames == "1-6"
    result = comp.FindTool("FaceFix1_Result")
    assert result.GetInput("Clip").endswith("fixed.0001.png")
    assert (result.GetInput("GlobalIn"), result.GetInput("GlobalOut")) == (0, 5)


def test_nothing_selected_is_one_line(dvr, ffr, server, footage):
    resolve, fusion, comp, loader, out = make_comp(dvr, footage)
    comp._select()
    seen = []
    status = run_comp(dvr, resolve, fusion, comp, [click("FFStart"), lambda win: seen.append(win.Find("FFStatus").Text),
                                                   click("FFMask")])
    assert seen == ["select the Loader or MediaIn of the shot to fix (one)"]
    assert status == "no FaceFix Merge in this comp: run Render first"
    assert server.submitted == []
    assert comp.FindTool("FaceFix1_Merge") is None
