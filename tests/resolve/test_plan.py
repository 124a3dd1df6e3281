"""The pure planning of the Resolve scripts: which clip becomes which job, placed where; the dialog's controls;
the Fusion face masks."""

from __future__ import annotations

import math

import pytest

from .conftest import FIRST, N


@pytest.fixture
def plan(ffr):
    from facefix_resolve import plan

    return plan


def test_media_of_reads_sequences_and_movies_and_refuses_the_rest(plan, footage, tmp_path):
    pattern, movie, _ = footage
    folder = pattern.parent
    seq = plan.media_of(str(folder / f"plate.[{FIRST}-{FIRST + N - 1}].png"), {"Type": "Video"})
    assert seq == plan.Media("sequence", str(folder / "plate.####.png"), FIRST, FIRST + N - 1, 4)
    assert seq.frame_path(1003) == str(folder / "plate.1003.png")
    assert seq.printf() == str(folder / "plate.%04d.png")
    mov = plan.media_of(str(movie), {"Type": "Video + Audio", "Frames": str(N)})
    assert mov == plan.Media("movie", str(movie), 0, N - 1)
    for kind in ("Compound", "Timeline", "Multicam", "Fusion Composition", "Generator", "Still", "Audio"):
        assert isinstance(plan.media_of(str(movie), {"Type": kind, "Frames": "8"}), str)
    assert "offline" in plan.media_of(str(tmp_path / "gone.mov"), {"Type": "Video", "Frames": "8"})
    assert "offline" in plan.media_of(str(tmp_path / "x.[0001-0010].exr"), {"Type": "Video"})
    assert "no media file" in plan.media_of("", {"Type": "Video"})


def _facts(plan, footage, **kw):
    pattern, _, _ = footage
    path = str(pattern.parent / f"plate.[{FIRST}-{FIRST + N - 1}].png")
    base = dict(name="A", track=1, start=86400, duration=4, left_offset=2, file_path=path,
                properties={"Type": "Video", "FPS": "24.000"}, source_span=4)
    base.update(kw)
    return plan.ClipFacts(**base)


def test_plan_maps_the_used_range_to_a_job_and_a_placement(plan, footage, tmp_path):
    facts = _facts(plan, footage)
    plans, refusals = plan.plan_clips([facts], timeline_fps=24.0, occupied={1: [(86400, 86404)]}, track_count=1,
                                      settings={"model": "passthrough", "temporal": 0.5}, run={}, out_root=str(tmp_path))
    assert refusals == []
    (p,) = plans
    # frames 1003-1006 used; 2 handle frames before them go to the bridge as pre-roll (temporal stabilisation)
    assert p.job["frames"] == f"{FIRST}-{FIRST + 5}"
    assert p.job["input"].endswith("plate.####.png") and p.job["output"].endswith("plate_facefix.####.png")
    assert p.job["settings"] == {"model": "passthrough", "temporal": 0.5}
    assert (p.import_first, p.import_last) == (FIRST, FIRST + 5)
    assert p.place == {"startFrame": 2, "endFrame": 5, "trackIndex": 2, "recordFrame": 86400}
    assert p.new_track and p.track == 2
    spec = p.import_spec()
    assert spec["StartIndex"] == FIRST and spec["EndIndex"] == FIRST + 5 and spec["FilePath"].endswith("%04d.png")
    assert p.folder.startswith(str(tmp_path)) and p.key in p.folder
    # no temporal stabilisation: no pre-roll
    (q,), _ = plan.plan_clips([facts], timeline_fps=24.0, occupied={}, track_count=1,
                              settings={"temporal": 0.0}, run={}, out_root=str(tmp_path))
    assert q.job["frames"] == f"{FIRST + 2}-{FIRST + 5}" and q.place["startFrame"] == 0


def test_the_window_adds_the_repair_frames_when_a_repair_is_on(plan):
    assert plan.frame_window({}) == (plan.PREROLL, 0)  # temporal defaults to on
    assert plan.frame_window({"temporal": 0.0}) == (0, 0)
    assert plan.frame_window({"temporal": 0.0, "deboil": 0.5}) == (plan.REPAIR_WINDOW, plan.REPAIR_WINDOW)
    assert plan.frame_window({"temporal": 0.3, "dewarp": 1.0}) == (plan.PREROLL + plan.REPAIR_WINDOW,
                                                                   plan.REPAIR_WINDOW)
    keyed = {"temporal": 0.0, "deboil": 0.0, "animation": {"deboil": {"1001": 0.0, "1010": 0.4}}}
    assert plan.frame_window(keyed) == (plan.REPAIR_WINDOW, plan.REPAIR_WINDOW)


def test_plan_movie_frames_start_at_zero(plan, footage, tmp_path):
    _, movie, _ = footage
    facts = _facts(plan, footage, file_path=str(movie), properties={"Type": "Video", "FPS": "24", "Frames": "8"},
                   left_offset=3, duration=5)
    (p,), _ = plan.plan_clips([facts], timeline_fps=24.0, occupied={}, track_count=2, settings={}, run={},
                              out_root=str(tmp_path))
    assert p.job["frames"] == "0-7" and p.job["output"].endswith("take_facefix.mov")
    assert p.place == {"startFrame": 3, "endFrame": 7, "trackIndex": 2, "recordFrame": 86400}
    assert p.import_spec() == p.output and not p.new_track


def test_plan_picks_the_lowest_free_track_above_and_counts_earlier_plans(plan, footage, tmp_path):
    a = _facts(plan, footage, name="A", start=100, duration=4)
    b = _facts(plan, footage, name="B", start=102, duration=4, track=1)
    occupied = {1: [(100, 104)], 2: [(90, 103)], 3: []}
    plans, _ = plan.plan_clips([a, b], timeline_fps=24.0, occupied=occupied, track_count=3, settings={}, run={},
                               out_root=str(tmp_path))
    # A: V2 is taken at 100, V3 is free; B overlaps A's result on V3, so it goes on a new V4
    assert [(p.clip, p.track, p.new_track) for p in plans] == [("A", 3, False), ("B", 4, True)]
    assert plan.free_track({2: [(0, 10)]}, 1, 2, 10, 20) == 2  # touching is not overlapping


@pytest.mark.parametrize("change, words", [
    (dict(source_span=2), "retimed"),
    (dict(speed=50.0), "retimed"),
    (dict(properties={"Type": "Video", "FPS": "25"}), "25 fps on a 24 fps timeline"),
    (dict(properties={"Type": "Compound"}), "Compound"),
    (dict(has_media=False), "no media pool item"),
    (dict(left_offset=6), "uses frames"),
    (dict(file_path="/nowhere/plate.[1001-1008].png"), "offline"),
])
def test_plan_refuses_what_cannot_line_up(plan, footage, tmp_path, change, words):
    facts = _facts(plan, footage, **change)
    plans, refusals = plan.plan_clips([facts], timeline_fps=24.0, occupied={}, track_count=1, settings={}, run={},
                                      out_root=str(tmp_path))
    assert plans == [] and len(refusals) == 1 and words in refusals[0].reason
    assert refusals[0].line().startswith("A: ")


def test_job_key_changes_with_the_job(plan, footage, tmp_path):
    a = _facts(plan, footage)
    (p1,), _ = plan.plan_clips([a], timeline_fps=24, occupied={}, track_count=1, settings={"strength": 0.5},
                               run={}, out_root=str(tmp_path))
    (p2,), _ = plan.plan_clips([a], timeline_fps=24, occupied={}, track_count=1, settings={"strength": 0.5},
                               run={}, out_root=str(tmp_path))
    (p3,), _ = plan.plan_clips([a], timeline_fps=24, occupied={}, track_count=1, settings={"strength": 0.6},
                               run={}, out_root=str(tmp_path))
    assert p1.key == p2.key != p3.key


def test_controls_come_from_the_schema(plan):
    from facefix.params import schema

    specs = plan.control_specs(schema())
    names = [s.name for s in specs]
    assert names[:len(schema()["params"])] == [p["name"] for p in schema()["params"]]
    assert [s.name for s in specs if s.run] == ["matte", "codec", "resume", "compile"]
    strength = next(s for s in specs if s.name == "strength")
    assert (strength.kind, strength.default, strength.minimum, strength.maximum) == ("float", 1.0, 0.0, 1.0)
    values = {s.name: s.default for s in specs}
    values.update(strength=0.4, upscale="2", model="passthrough", compile=True)
    settings, run = plan.settings_from_values(specs, values)
    assert settings == {"strength": 0.4, "upscale": 2, "model": "passthrough"}
    assert run == {"matte": False, "codec": "auto", "resume": False, "compile": True}
    with pytest.raises(plan.AdapterError, match="Strength: 1.5 is above the maximum"):
        plan.settings_from_values(specs, {"strength": 1.5})
    with pytest.raises(plan.AdapterError, match="not one of"):
        plan.settings_from_values(specs, {"model": "nope"})
    with pytest.raises(plan.AdapterError, match="no parameter schema"):
        plan.control_specs({"version": "x"})


def test_face_ellipse_surrounds_eyes_and_mouth(plan):
    lm = [(40.0, 50.0), (60.0, 50.0), (50.0, 60.0), (43.0, 70.0), (57.0, 70.0)]
    (cx, cy), hw, hh, angle = plan.face_ellipse(lm)
    assert angle == pytest.approx(0.0) and cx == pytest.approx(50.0)
    assert cy - hh < 50 - 15 and cy + hh > 70 + 10  # forehead above the eyes, chin below the mouth
    assert hw == pytest.approx(20.0)
    for x, y in lm:
        assert ((x - cx) / hw) ** 2 + ((y - cy) / hh) ** 2 < 1
    # rotated face: the oval turns with the eye line
    rot = [(50 + (x - 50) * math.cos(0.3) - (y - 60) * math.sin(0.3),
            60 + (x - 50) * math.sin(0.3) + (y - 60) * math.cos(0.3)) for x, y in lm]
    assert plan.face_ellipse(rot)[3] == pytest.approx(0.3)
    pts = plan.ellipse_points((50.0, 60.0), 20.0, 30.0, 0.0)
    assert len(pts) == 8 and pts[0][0] == (70.0, 60.0) and pts[2][0] == pytest.approx((50.0, 90.0))


def test_fusion_coordinates_are_centred_with_y_up(plan):
    assert plan.to_fusion(0, 0, 200, 100) == (-0.5, 0.5)
    assert plan.to_fusion(200, 100, 200, 100) == (0.5, -0.5)
    assert plan.to_fusion(100, 50, 200, 100) == (0.0, 0.0)


def test_polygon_setting_keys_every_tracked_frame(plan, dvr):
    lm = [[40, 50], [60, 50], [50, 60], [43, 70], [57, 70]]
    tracks = {"version": "facefix.FaceTracks.1", "tracks": [
        {"id": 0, "frames": [{"frame": f, "landmarks": [[x + f - 1003, y] for x, y in lm]} for f in (1003, 1004, 1005)]},
        {"id": 3, "frames": [{"frame": 1001, "landmarks": lm}]}]}
    timing = plan.LoaderTiming(global_in=0, global_out=7, trim=0, first=1001)
    text, names = plan.polygon_setting(tracks, prefix="FaceFix1_", width=160, height=192,
                                       comp_frame=timing.comp_frame, frame_range=(0, 7))
    assert names == ["FaceFix1_Face0", "FaceFix1_Face3"]
    table = dvr.readstring(text)
    tools = table["Tools"]
    assert tools["FaceFix1_Face0"]["__ctor"] == "PolylineMask"
    assert tools["FaceFix1_Face3"]["Inputs"]["EffectMask"]["SourceOp"] == "FaceFix1_Face0"  # chained: the union
    keys = tools["FaceFix1_Face0Polyline"]["KeyFrames"]
    assert sorted(keys) == [1, 2, 3, 4, 5]  # frames 1003-1005 at comp 2-4, collapsed keys at 1 and 5
    assert keys[2]["Value"]["__ctor"] == "Polyline" and keys[2]["Value"]["Closed"] is True
    first = keys[2]["Value"]["Points"][1]
    (cx, cy), hw, _, _ = plan.face_ellipse(lm)
    assert (first["X"], first["Y"]) == pytest.approx(plan.to_fusion(cx + hw, cy, 160, 192), abs=1e-6)
    collapsed = keys[1]["Value"]["Points"]
    assert len({(p["X"], p["Y"]) for p in collapsed.values()}) == 1
    assert sorted(tools["FaceFix1_Face3Polyline"]["KeyFrames"]) == [0, 1]  # frame 1001 at comp 0, collapsed at 1


def test_loader_timing(plan):
    t = plan.LoaderTiming(global_in=10, global_out=19, trim=2, first=1001)
    assert plan.source_frame(t, 10) == 1003 and plan.source_frame(t, 19) == 1012
    assert t.comp_frame(1003) == 10 and t.comp_frame(1002) is None and t.comp_frame(1013) is None
    assert plan.fusion_pattern("/s/plate.1001.exr") == ("/s/plate.####.exr", 1001, 4)
    assert plan.fusion_pattern("/s/take.mov") is None


class FakeBridge:
    """Jobs finish after two polls; a job whose input is "bad" fails."""

    def __init__(self):
        self.jobs, self.polls, self.cancelled = [], {}, []

    def submit(self, job):
        self.jobs.append(job)
        return str(len(self.jobs))

    def status(self, job_id):
        n = self.polls[job_id] = self.polls.get(job_id, 0) + 1
        job = self.jobs[int(job_id) - 1]
        if job["input"] == "bad":
            return {"state": "failed", "error": "bad: file not found"}
        return {"state": "done" if n >= 2 else "running", "progress": {"done": n, "total": 2}}

    def cancel(self, job_id):
        self.cancelled.append(job_id)
        return {}


def test_runner_steps_tasks_whole_reports_failures_and_cancels(ffr):
    from facefix_resolve.runner import Runner, Task

    done = []
    tasks = [Task("A", [{"input": "a1"}, {"input": "a2"}], lambda: done.append("A") or "A placed"),
             Task("B", [{"input": "bad"}], lambda: done.append("B") or "B placed"),
             Task("C", [{"input": "c"}], lambda: done.append("C") or "", cached=lambda: True)]
    bridge = FakeBridge()
    runner = Runner(bridge, tasks)
    lines = []
    while runner.step():
        lines.append(runner.line)
    assert runner.state == "done" and done == ["A", "C"]  # B's finish never ran; C was on disk already
    assert runner.results == ["A placed", "C: done"] and runner.errors == ["B: bad: file not found"]
    assert [j["input"] for j in bridge.jobs] == ["a1", "a2", "bad"]
    assert "A (1/3): rendering 1/2 frames" in lines and runner.line == "Done: 2 of 3, 1 failed."
    runner = Runner(bridge, [Task("D", [{"input": "d"}], lambda: done.append("D") or "")])
    assert runner.step() and runner.running
    runner.cancel()
    assert runner.state == "cancelled" and bridge.cancelled == [str(len(bridge.jobs))] and "D" not in done
    assert not runner.step()
