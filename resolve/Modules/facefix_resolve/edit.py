"""The Edit page side (any page, really): timeline clips in, fixed clips placed above them.

Resolve's scripting API cannot process pixels inside the Edit or Color page, so FaceFix renders each clip's
used range (plus up to ``PREROLL`` handle frames before it, for temporal stabilisation) through the bridge,
imports the result into the "FaceFix" bin and places it with ``MediaPool.AppendToTimeline`` on the lowest free
video track above the clip, at the clip's record frame: frame for frame over the original, which is left as
it is. Every call here is in Blackmagic's scripting README (and in ``fusionscript-stubs``, which CI type-checks
this file against).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, List, Sequence, cast

from .plan import FIXED_BIN, AdapterError, ClipFacts, ClipPlan, Refusal, parse_fps, plan_clips

if TYPE_CHECKING:
    from fusionscript import (
        ClipColor,
        Folder,
        ImportClipInfo,
        MarkerColor,
        MediaPool,
        MediaPoolClipInfo,
        MediaPoolItem,
        Project,
        Resolve,
        Timeline,
        TimelineItem,
    )

__all__ = ["current_timeline", "clip_facts", "occupancy", "clips_in_scope", "plan_timeline", "fixed_bin",
           "import_result", "place", "finish_plan", "DONE_FILE", "is_rendered", "mark_rendered", "CLIP_COLORS"]

DONE_FILE = "facefix_done.json"
CLIP_COLORS = ("Orange", "Apricot", "Yellow", "Lime", "Olive", "Green", "Teal", "Navy", "Blue", "Purple", "Violet",
               "Pink", "Tan", "Beige", "Brown", "Chocolate")
RESULT_COLOR: ClipColor = "Teal"
MARKER_COLOR: MarkerColor = "Cyan"


def current_timeline(resolve: Resolve) -> tuple[Project, Timeline]:
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise AdapterError("no project is open")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise AdapterError("the project has no current timeline: open one on the Edit page")
    return project, timeline


def _prop(item: MediaPoolItem) -> dict[str, Any]:
    props = item.GetClipProperty(None)
    return dict(props) if isinstance(props, dict) else {}


def clip_facts(item: TimelineItem, track: int) -> ClipFacts:
    """What the planner needs of a timeline item, read through the documented calls."""
    name = str(item.GetName() or "clip")
    start = int(item.GetStart(False))
    duration = int(item.GetDuration(False))
    left = int(item.GetLeftOffset(False))
    span: int | None = None
    try:  # Resolve 18.5+; the span of a clip at 100% equals its duration (give or take the end's convention)
        s0, s1 = item.GetSourceStartFrame(), item.GetSourceEndFrame()
        if isinstance(s0, (int, float)) and isinstance(s1, (int, float)):
            span = int(s1) - int(s0)
    except (AttributeError, TypeError):
        span = None
    media = item.GetMediaPoolItem()
    if not media:
        return ClipFacts(name, track, start, duration, left, has_media=False)
    props = _prop(media)
    path = props.get("File Path") or media.GetClipProperty("File Path")
    return ClipFacts(name, track, start, duration, left, str(path or ""), props, span)


def occupancy(timeline: Timeline) -> tuple[int, dict[int, list[tuple[int, int]]]]:
    """(video track count, track -> [(start, end)] of its items); a locked track is taken everywhere."""
    count = int(timeline.GetTrackCount("video") or 0)
    taken: dict[int, list[tuple[int, int]]] = {}
    for track in range(1, count + 1):
        if _locked(timeline, track):
            taken[track] = [(-(2 ** 62), 2 ** 62)]
            continue
        for item in timeline.GetItemListInTrack("video", track) or []:
            start = int(item.GetStart(False))
            taken.setdefault(track, []).append((start, start + int(item.GetDuration(False))))
    return count, taken


def _locked(timeline: Timeline, track: int) -> bool:
    try:
        return bool(timeline.GetIsTrackLocked("video", track))
    except (AttributeError, TypeError):  # a Resolve before GetIsTrackLocked (18.0)
        return False


def clips_in_scope(timeline: Timeline, scope: str, track: int = 1, color: str = "") -> list[ClipFacts]:
    """The clips to fix: ``current`` = the video clip under the playhead (``Timeline.GetCurrentVideoItem``: the
    API has no "selected clips" on the timeline), ``track`` = every clip of video track ``track`` (only those of
    clip colour ``color``, when one is named: colour the clips to pick several)."""
    if scope == "current":
        item = timeline.GetCurrentVideoItem()
        if not item:
            raise AdapterError("no video clip under the playhead: move the playhead onto the clip to fix")
        return [clip_facts(item, _track_of(timeline, item))]
    count = int(timeline.GetTrackCount("video") or 0)
    if not 1 <= track <= count:
        raise AdapterError(f"the timeline has no video track {track} (it has {count})")
    items = list(timeline.GetItemListInTrack("video", track) or [])
    if color:
        items = [i for i in items if str(i.GetClipColor() or "") == color]
    if not items:
        raise AdapterError(f"no clips on video track {track}" + (f" coloured {color}" if color else ""))
    return [clip_facts(i, track) for i in items]


def _track_of(timeline: Timeline, item: TimelineItem) -> int:
    try:
        kind, index = item.GetTrackTypeAndIndex()
        if kind == "video" and int(index) >= 1:
            return int(index)
    except (AttributeError, TypeError, ValueError):
        pass
    uid = item.GetUniqueId()
    for track in range(1, int(timeline.GetTrackCount("video") or 0) + 1):
        for other in timeline.GetItemListInTrack("video", track) or []:
            if other.GetUniqueId() == uid:
                return track
    raise AdapterError(f"{item.GetName()}: cannot tell which video track it is on")


def plan_timeline(timeline: Timeline, clips: Sequence[ClipFacts], settings: dict[str, Any],
                  run: dict[str, Any], out_root: str) -> tuple[list[ClipPlan], list[Refusal]]:
    count, taken = occupancy(timeline)
    fps = parse_fps(timeline.GetSetting("timelineFrameRate"))
    return plan_clips(clips, timeline_fps=fps, occupied=taken, track_count=count, settings=settings, run=run,
                      out_root=out_root)


# ------------------------------------------------------------------------------------------- the result


def is_rendered(plan: ClipPlan) -> bool:
    """The plan's output was rendered by this job before (its folder holds the done file naming the job)."""
    try:
        with open(os.path.join(plan.folder, DONE_FILE), encoding="utf-8") as f:
            return bool(json.load(f).get("key") == plan.key)
    except (OSError, ValueError, AttributeError):
        return False


def mark_rendered(plan: ClipPlan) -> None:
    os.makedirs(plan.folder, exist_ok=True)
    tmp = os.path.join(plan.folder, DONE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"key": plan.key, "job": plan.job}, f, indent=1)
    os.replace(tmp, os.path.join(plan.folder, DONE_FILE))


def fixed_bin(media_pool: MediaPool) -> Folder:
    """The "FaceFix" bin under the media pool's root (made on first use)."""
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == FIXED_BIN:
            return folder
    made = media_pool.AddSubFolder(root, FIXED_BIN)
    if not made:
        raise AdapterError(f"cannot make the {FIXED_BIN} bin in the media pool")
    return made


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def import_result(media_pool: MediaPool, plan: ClipPlan) -> MediaPoolItem:
    """The plan's output as a media pool item in the FaceFix bin (the one imported before, if any)."""
    folder = fixed_bin(media_pool)
    out = plan.output_media
    want = out.pattern if out.is_movie else f"[{out.first:0{out.pad}d}-{out.last:0{out.pad}d}]"
    for clip in folder.GetClipList() or []:
        path = str(clip.GetClipProperty("File Path") or "")
        if out.is_movie and _same_file(path, out.pattern):
            return clip
        if not out.is_movie and want in path and _same_file(os.path.dirname(path), os.path.dirname(out.pattern)):
            return clip
    previous = media_pool.GetCurrentFolder()
    media_pool.SetCurrentFolder(folder)
    try:
        spec = plan.import_spec()
        if isinstance(spec, str):
            items = media_pool.ImportMedia([spec])
        else:
            info: ImportClipInfo = {"FilePath": str(spec["FilePath"]), "StartIndex": int(spec["StartIndex"]),
                                      "EndIndex": int(spec["EndIndex"])}
            items = media_pool.ImportMedia([info])
    finally:
        if previous:
            media_pool.SetCurrentFolder(previous)
    if not items:
        raise AdapterError(f"Resolve could not import {out.pattern}")
    item = items[0]
    item.SetMetadata("Comments", plan.note)
    return item


def place(timeline: Timeline, media_pool: MediaPool, item: MediaPoolItem, plan: ClipPlan) -> TimelineItem:
    """Put the imported result on ``plan.track`` at the clip's record frame (adding the track when the plan says
    so) and check it landed there, frame for frame; anything else is undone and an AdapterError."""
    count = int(timeline.GetTrackCount("video") or 0)
    while count < plan.track:
        # fusionscript-stubs 21.0.0 makes AddTrack's second argument required; the README has it optional
        if not timeline.AddTrack("video"):  # type: ignore[call-overload]
            raise AdapterError(f"no free video track above V{plan.facts.track} and Resolve could not add one: "
                               "add a video track and run FaceFix again (the render is kept)")
        count += 1
    if _locked(timeline, plan.track):
        raise AdapterError(f"video track {plan.track} is locked: unlock it and run FaceFix again (the render is kept)")
    # fusionscript-stubs 21.0.0 leaves @overload off AppendToTimeline's first form, hiding the documented
    # clipInfo form; this is that form's signature.
    append = cast("Callable[[List[MediaPoolClipInfo]], List[TimelineItem]]", media_pool.AppendToTimeline)
    want = plan.facts.duration
    end = plan.place["endFrame"]
    for attempt in range(2):
        info: MediaPoolClipInfo = {"mediaPoolItem": item, "startFrame": plan.place["startFrame"], "endFrame": end,
                                     "mediaType": 1, "trackIndex": plan.track, "recordFrame": plan.place["recordFrame"]}
        placed = [p for p in append([info]) or [] if p]
        if not placed:
            raise AdapterError(f"Resolve did not place {os.path.basename(plan.output)} on V{plan.track}")
        new = placed[0]
        start, duration = int(new.GetStart(False)), int(new.GetDuration(False))
        if start == plan.facts.start and duration == want:
            return new
        timeline.DeleteClips(placed, False)
        if attempt == 0 and start == plan.facts.start and duration == want - 1:
            end += 1  # a Resolve whose endFrame is exclusive: place it again one frame longer
            continue
        raise AdapterError(f"Resolve placed the result at {start} for {duration} frames instead of "
                           f"{plan.facts.start} for {want}: nothing was left on the timeline")
    raise AssertionError("unreachable")


def finish_plan(resolve: Resolve, plan: ClipPlan) -> str:
    """Import and place a rendered plan, note its settings (a marker on the new clip, the media pool item's
    comments); returns the line to report."""
    project, timeline = current_timeline(resolve)
    media_pool = project.GetMediaPool()
    item = import_result(media_pool, plan)
    try:
        new = place(timeline, media_pool, item, plan)
    except AdapterError:
        if not _on_timeline(timeline, item):
            media_pool.DeleteClips([item])
        raise
    new.SetClipColor(RESULT_COLOR)
    new.AddMarker(0, MARKER_COLOR, "FaceFix", plan.note, 1, json.dumps(plan.job, sort_keys=True))
    if plan.job.get("matte"):
        _import_matte(media_pool, plan)
    return f"{plan.clip}: fixed on V{plan.track} at {plan.facts.start}"


def _on_timeline(timeline: Timeline, item: MediaPoolItem) -> bool:
    uid = item.GetUniqueId()
    for track in range(1, int(timeline.GetTrackCount("video") or 0) + 1):
        for other in timeline.GetItemListInTrack("video", track) or []:
            mpi = other.GetMediaPoolItem()
            if mpi and mpi.GetUniqueId() == uid:
                return True
    return False


def _import_matte(media_pool: MediaPool, plan: ClipPlan) -> None:
    matte = str(plan.job["matte"])
    pad = matte.count("#")
    head, tail = matte.split("#" * pad, 1)
    folder = fixed_bin(media_pool)
    previous = media_pool.GetCurrentFolder()
    media_pool.SetCurrentFolder(folder)
    try:
        info: ImportClipInfo = {"FilePath": f"{head}%0{pad}d{tail}", "StartIndex": plan.import_first,
                                  "EndIndex": plan.import_last}
        media_pool.ImportMedia([info])
    finally:
        if previous:
            media_pool.SetCurrentFolder(previous)
