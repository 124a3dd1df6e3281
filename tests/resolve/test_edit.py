"""End to end on the Edit page: a timeline with an image-sequence clip and a movie clip, the Utility script run
as Resolve runs it (its globals: resolve, fusion, bmd), the dialog driven like a user, the real bridge rendering
real frames; the results land on the track above, frame for frame."""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest

from .conftest import FIRST, SCRIPTS, N, movie_frames, read

START = 86400  # the fake timeline starts at 01:00:00:00 (24 fps)


def build_timeline(dvr, footage, retimed=False):
    """V1: frames 1003-1006 of the sequence at START, then frames 1-6 of the movie at START + 10."""
    pattern, movie, _ = footage
    resolve = dvr.Resolve()
    dvr._install(resolve)
    project = resolve.GetProjectManager().CreateProject("FaceFix test")
    pool = project.GetMediaPool()
    seq = pool.ImportMedia([{"FilePath": str(pattern).replace("####", "%04d"), "StartIndex": FIRST,
                             "EndIndex": FIRST + N - 1}])[0]
    mov = pool.ImportMedia([str(movie)])[0]
    timeline = pool.CreateEmptyTimeline("Edit")
    placed = pool.AppendToTimeline([
        {"mediaPoolItem": seq, "startFrame": 2, "endFrame": 5 + int(dvr.END_EXCLUSIVE), "trackIndex": 1,
         "recordFrame": START},
        {"mediaPoolItem": mov, "startFrame": 1, "endFrame": 6 + int(dvr.END_EXCLUSIVE), "trackIndex": 1,
         "recordFrame": START + 10}])
    assert len(placed) == 2
    if retimed:
        placed[1]._speed = 50.0
    return resolve, timeline, placed


def run_utility(dvr, resolve, actions):
    dvr._ui_script.extend(actions)
    fusion = resolve.Fusion()
    runpy.run_path(str(SCRIPTS / "Utility" / "FaceFix.py"),
                   init_globals={"resolve": resolve, "fusion": fusion, "fu": fusion, "bmd": dvr})
    dialog = next(w for w in dvr._windows if w._props.get("ID") == "FaceFixWin")
    return dialog.Find("FFStatus").Text


def press(scope=1, track=1, strength=None, color="Any"):
    def act(win):
        items = win.GetItems()
        items["FFScope"].CurrentIndex = scope
        items["FFTrack"].Value = track
        from facefix_resolve.edit import CLIP_COLORS

        items["FFColor"].CurrentIndex = (["Any", *CLIP_COLORS]).index(color)
        if strength is not None:
            items["FF_strength"].Value = strength
        items["FFStart"].Click()

    return act


def best_match(image, candidates):
    errors = [float(np.abs(image - c).mean()) for c in candidates]
    return int(np.argmin(errors)), errors


@pytest.mark.parametrize("exclusive", [False, True], ids=["endFrame-inclusive", "endFrame-exclusive"])
def test_fix_every_clip_of_a_track(dvr, ffr, server, footage, exclusive):
    dvr.END_EXCLUSIVE = exclusive
    resolve, timeline, originals = build_timeline(dvr, footage)
    before = [(o._start, o._duration, o._left, o.GetTrackTypeAndIndex()) for o in originals]
    status = run_utility(dvr, resolve, [press(scope=1, track=1, strength=0.8)])
    assert "Done: 2 of 2" in status, status
    assert timeline._refused == []  # nothing asked to overwrite (an exclusive endFrame was placed again, longer)
    # the originals are untouched; the results are on V2 at the same record frames, for the same durations
    assert [(o._start, o._duration, o._left, o.GetTrackTypeAndIndex()) for o in originals] == before
    assert timeline.GetTrackCount("video") == 2
    fixed = timeline.GetItemListInTrack("video", 2)
    assert [(f.GetStart(), f.GetDuration()) for f in fixed] == [(START, 4), (START + 10, 6)]
    # jobs: the used frames plus up to 6 handle frames of pre-roll, the dialog's settings
    jobs = server.submitted
    assert [(j.kind, j.frames) for j in jobs] == [("restore", f"{FIRST}-{FIRST + 5}"), ("restore", "0-6")]
    assert all(j.settings.strength == pytest.approx(0.8) for j in jobs)
    # frame for frame: at every timeline frame, the fixed clip shows the fix of the frame the original shows
    pattern, movie, _ = footage
    seq_item, mov_item = fixed
    seq_path = seq_item.GetMediaPoolItem().GetClipProperty("File Path")
    assert "FaceFix" == ffr.plan.FIXED_BIN and "[1001-1006]" in seq_path
    plates = {n: read(str(pattern).replace("####", f"{n:04d}")) for n in range(FIRST, FIRST + N)}
    out_pattern = seq_path.replace("[1001-1006]", "{:04d}")
    for t in range(START, START + 4):
        shown = FIRST + originals[0]._frame_at(t)
        result = read(out_pattern.format(FIRST + seq_item._frame_at(t)))
        index, errors = best_match(result, [plates[n] for n in range(FIRST, FIRST + N)])
        assert FIRST + index == shown, errors
        assert (result == plates[shown]).all(axis=-1).mean() > 0.5  # outside the face: the plate's own pixels
    source = movie_frames(movie)
    result = movie_frames(mov_item.GetMediaPoolItem().GetClipProperty("File Path"))
    assert len(result) == 7
    for t in range(START + 10, START + 16):
        index, errors = best_match(result[mov_item._frame_at(t)], source)
        assert index == originals[1]._frame_at(t), errors
    # the settings are noted: a marker on each new clip, the comments of its media pool item
    for item, job in zip(fixed, jobs):
        (marker,) = item.GetMarkers().values()
        assert marker["name"] == "FaceFix" and "strength=0.8" in marker["note"]
        assert json.loads(marker["customData"])["frames"] == job.frames
        assert item.GetMediaPoolItem().GetMetadata("Comments").startswith("FaceFix restore")
        assert item.GetClipColor() == "Teal"
    bin_ = next(f for f in resolve.GetProjectManager().GetCurrentProject().GetMediaPool().GetRootFolder()
                .GetSubFolderList() if f.GetName() == "FaceFix")
    assert len(bin_.GetClipList()) == 2


def test_current_clip_then_its_track_cached_and_around_a_locked_track(dvr, ffr, server, footage):
    resolve, timeline, originals = build_timeline(dvr, footage)
    timeline._playhead = START + 12  # on the movie clip
    status = run_utility(dvr, resolve, [press(scope=0)])
    assert "Done: 1 of 1" in status, status
    assert len(server.submitted) == 1 and server.submitted[0].frames == "0-6"
    assert [(i.GetStart(), i.GetDuration()) for i in timeline.GetItemListInTrack("video", 2)] == [(START + 10, 6)]
    # the whole track now, V2 locked: the results go on V3; the movie clip's render is already on disk
    timeline.SetTrackLock("video", 2, True)
    dvr._windows.clear()
    status = run_utility(dvr, resolve, [press(scope=1, track=1)])
    assert "Done: 2 of 2" in status, status
    assert len(server.submitted) == 2 and server.submitted[1].frames == f"{FIRST}-{FIRST + 5}"
    assert [(i.GetStart(), i.GetDuration()) for i in timeline.GetItemListInTrack("video", 2)] == [(START + 10, 6)]
    assert [(i.GetStart(), i.GetDuration()) for i in timeline.GetItemListInTrack("video", 3)] == \
        [(START, 4), (START + 10, 6)]
    # the same media pool item again for the cached render: the bin holds each result once
    pool = resolve.GetProjectManager().GetCurrentProject().GetMediaPool()
    (bin_,) = [f for f in pool.GetRootFolder().GetSubFolderList() if f.GetName() == "FaceFix"]
    assert len(bin_.GetClipList()) == 2


def test_refused_clips_get_one_message_and_nothing_else(dvr, ffr, server, footage):
    resolve, timeline, originals = build_timeline(dvr, footage, retimed=True)
    status = run_utility(dvr, resolve, [press(scope=1, track=1)])
    assert "Done: 1 of 1" in status and "Skipped take.mov: is retimed" in status, status
    assert [(i.GetStart(), i.GetDuration()) for i in timeline.GetItemListInTrack("video", 2)] == [(START, 4)]
    assert len(server.submitted) == 1


def test_only_clips_of_a_colour(dvr, ffr, server, footage):
    resolve, timeline, originals = build_timeline(dvr, footage)
    originals[1].SetClipColor("Orange")
    status = run_utility(dvr, resolve, [press(scope=1, track=1, color="Orange")])
    assert "Done: 1 of 1" in status, status
    assert [i.GetStart() for i in timeline.GetItemListInTrack("video", 2)] == [START + 10]


def test_cancel_stops_and_places_nothing(dvr, ffr, server, footage, monkeypatch):
    import time

    from ..conftest import Sharpen

    monkeypatch.setattr(Sharpen, "__call__", lambda self, crops, fidelity=0.5: time.sleep(0.3) or crops)
    resolve, timeline, _ = build_timeline(dvr, footage)

    def cancel_when_running(win):
        if not server.submitted:
            dvr._ui_script.append(cancel_when_running)
            time.sleep(0.05)
            return
        win.Find("FFCancel").Click()

    status = run_utility(dvr, resolve, [press(scope=1, track=1), cancel_when_running])
    assert status.startswith("Cancelled"), status
    assert timeline.GetTrackCount("video") == 1 and len(server.submitted) == 1


def test_no_bridge_is_one_message(dvr, ffr, footage, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEFIX_SERVE", "false")
    resolve, timeline, _ = build_timeline(dvr, footage)
    fusion = resolve.Fusion()
    runpy.run_path(str(SCRIPTS / "Utility" / "FaceFix.py"),
                   init_globals={"resolve": resolve, "fusion": fusion, "bmd": dvr})
    (win,) = dvr._windows
    assert win._props["ID"] == "FaceFixMessage"
    assert "bridge" in win.Find("FFMessage").Text and "exited with status 1" in win.Find("FFMessage").Text
