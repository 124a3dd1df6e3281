"""Pure planning: which clip becomes which FaceFix job, and where its result goes. No Resolve, no Fusion.

Everything here is plain data in, plain data out, so that the scripts' decisions are tested directly:

* ``media_of``: a media pool item's file path and properties -> the source FaceFix reads (movie or sequence);
* ``plan_clips``: timeline clips (``ClipFacts``, read from Resolve by ``edit.py``) -> one ``ClipPlan`` (the
  bridge job, the media to import, the placement for ``MediaPool.AppendToTimeline``) or one ``Refusal`` (a
  one-line reason) each;
* ``settings_from_values`` / ``control_specs``: the dialog's controls, built from the bridge's schema;
* ``face_ellipse`` / ``polygon_setting``: the Fusion page's face masks (an ellipse around eyes and mouth from
  FaceTracks' 5 landmarks, as an animated Polygon in a Fusion ``.setting``).

Frame conventions (FaceFix's): a movie's first decoded frame is frame 0; an image sequence uses its file numbers.
Resolve's ``TimelineItem.GetLeftOffset()`` is how many frames of the media come before the clip's first frame.

Python 3.7+ and the standard library only (this runs inside Resolve's Python).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Tuple

__all__ = ["AdapterError", "Media", "ClipFacts", "ClipPlan", "Refusal", "ControlSpec", "PREROLL", "FIXED_BIN",
           "media_of", "plan_clips", "free_track", "control_specs", "settings_from_values", "summary_line",
           "job_key", "face_ellipse", "ellipse_points", "to_fusion", "polygon_setting", "fusion_pattern",
           "LoaderTiming", "source_frame", "parse_fps", "MOVIE_EXTENSIONS", "REPAIR_WINDOW", "frame_window"]

PREROLL = 6  # frames handed to the bridge before a clip's first, for temporal stabilisation (FaceFix's window)
REPAIR_WINDOW = 3  # frames before and after a frame that --deboil / --dewarp read (FaceFix's repair window)
FIXED_BIN = "FaceFix"
MOVIE_EXTENSIONS = (".mov", ".mp4", ".m4v", ".mkv", ".avi", ".mxf")
# Media pool item types FaceFix cannot read as one file or one sequence.
_UNSUPPORTED_TYPES = ("compound", "timeline", "multicam", "fusion", "generator", "title", "still", "audio")
# Resolve shows an image sequence as one item whose path names the range: /shots/plate.[1001-1100].exr
_SEQUENCE = re.compile(r"^(?P<head>.*)\[(?P<first>\d+)-(?P<last>\d+)\](?P<tail>[^/\\\[\]]*)$")
# The run options a timeline clip's job takes from the dialog (frames, tracks and mask are the clip's own).
EDIT_RUN_OPTIONS = ("matte", "codec", "resume", "compile")
COMP_RUN_OPTIONS = ("codec", "compile")


class AdapterError(Exception):
    """Something the user has to fix, as one line."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()) or "FaceFix error")


# ------------------------------------------------------------------------------------------------ media


@dataclass(frozen=True)
class Media:
    """What FaceFix reads for a media pool item: a movie file, or an image sequence.

    pattern: the movie's path, or the sequence's FaceFix pattern (``plate.####.exr``); first/last: the movie's
    frames (0 .. frames-1) or the sequence's file numbers; pad: the sequence's digits (0 for a movie)."""

    kind: str  # "movie" | "sequence"
    pattern: str
    first: int
    last: int
    pad: int = 0

    @property
    def is_movie(self) -> bool:
        return self.kind == "movie"

    def frame_path(self, number: int) -> str:
        """The file of frame ``number`` (a movie: the movie)."""
        if self.is_movie:
            return self.pattern
        head, tail = _split_pattern(self.pattern)
        return f"{head}{number:0{self.pad}d}{tail}"

    def printf(self) -> str:
        """The sequence as ``MediaPool.ImportMedia``'s ``FilePath`` wants it: ``plate.%04d.exr``."""
        head, tail = _split_pattern(self.pattern)
        return f"{head}%0{self.pad}d{tail}"


def _hashes(pad: int) -> str:
    return "#" * pad if pad > 1 else "@"  # FaceFix: a run of several # counts one digit each; @ is one digit


def _split_pattern(pattern: str) -> tuple[str, str]:
    m = re.match(r"^(.*?)(#+|@+)([^/\\]*)$", pattern)
    if m is None:
        raise AdapterError(f"{pattern}: not a sequence pattern")
    return m.group(1), m.group(3)


def media_of(file_path: str, properties: Mapping[str, Any]) -> Media | str:
    """The media of a media pool item (its ``File Path`` and ``GetClipProperty()``), or why FaceFix cannot
    read it (a one-line reason)."""
    kind = str(properties.get("Type") or "").strip()
    low = kind.lower()
    for word in _UNSUPPORTED_TYPES:
        if word in low and not (word == "audio" and "video" in low):
            what = "a still image" if word == "still" else f"a {kind or word} clip"
            return f"is {what}: FaceFix works on movie files and image sequences"
    path = str(file_path or "").strip()
    if not path:
        return "has no media file (a generator, title or compound clip?): FaceFix works on movie files and image " \
               "sequences"
    m = _SEQUENCE.match(path)
    if m is not None:
        first_text, last_text = m.group("first"), m.group("last")
        first, last = int(first_text), int(last_text)
        pad = len(first_text) if len(first_text) == len(last_text) or first_text.startswith("0") else 1
        media = Media("sequence", m.group("head") + _hashes(pad) + m.group("tail"), first, last, pad)
        missing = [n for n in (first, last) if not os.path.isfile(media.frame_path(n))]
        if missing:
            return f"is offline: {media.frame_path(missing[0])} is not there"
        return media
    if os.path.splitext(path)[1].lower() in MOVIE_EXTENSIONS:
        if not os.path.isfile(path):
            return f"is offline: {path} is not there"
        frames = _int(properties.get("Frames"))
        if frames is None or frames <= 0:
            return f"{path}: Resolve does not say how many frames it has"
        return Media("movie", path, 0, frames - 1)
    if not os.path.exists(path):
        return f"is offline: {path} is not there"
    return f"{path}: not a movie FaceFix reads ({', '.join(MOVIE_EXTENSIONS)}) nor an image sequence"


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def parse_fps(value: Any) -> float | None:
    """A frame rate as Resolve writes it (``"24"``, ``"23.976"``, ``"29.97 DF"``), or None."""
    m = re.match(r"\s*(\d+(?:\.\d+)?)", str(value or ""))
    return float(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class ClipFacts:
    """What Resolve says about one video clip on the timeline (see ``edit.clip_facts``)."""

    name: str
    track: int  # video track index, 1-based
    start: int  # record frame: the clip's first frame on the timeline
    duration: int  # frames on the timeline
    left_offset: int  # frames of the media before the clip's first frame
    file_path: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)  # MediaPoolItem.GetClipProperty()
    source_span: int | None = None  # GetSourceEndFrame() - GetSourceStartFrame(), where Resolve has them
    has_media: bool = True  # False: GetMediaPoolItem() gave nothing (generators, titles)
    speed: float | None = None  # a retime Resolve reports, where it does

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass(frozen=True)
class Refusal:
    clip: str
    reason: str

    def line(self) -> str:
        return f"{self.clip}: {self.reason}"


@dataclass
class ClipPlan:
    """One clip's job and placement.

    job: the bridge job (absolute paths); media: the source; output: what the job writes (a movie, or a
    sequence pattern); import_first/import_last: the rendered frames (file numbers, or movie frames);
    place: ``AppendToTimeline``'s clipInfo without the media pool item (startFrame/endFrame in the imported
    item's own frames, endFrame inclusive); new_track: True when ``track`` is above the timeline's last video
    track (the script adds it first)."""

    clip: str
    facts: ClipFacts
    media: Media
    job: dict[str, Any]
    output: str
    folder: str
    import_first: int
    import_last: int
    track: int
    new_track: bool
    place: dict[str, int]
    key: str
    note: str

    @property
    def output_media(self) -> Media:
        if self.media.is_movie:
            return Media("movie", self.output, 0, self.import_last - self.import_first)
        return Media("sequence", self.output, self.import_first, self.import_last, self.media.pad)

    def import_spec(self) -> str | dict[str, Any]:
        """``MediaPool.ImportMedia``'s item: the movie's path, or ``{"FilePath", "StartIndex", "EndIndex"}``."""
        out = self.output_media
        if out.is_movie:
            return out.pattern
        return {"FilePath": out.printf(), "StartIndex": out.first, "EndIndex": out.last}


def free_track(occupied: Mapping[int, Sequence[tuple[int, int]]], above: int, track_count: int,
               start: int, end: int) -> int:
    """The lowest video track above ``above`` with nothing in [start, end); ``track_count + 1`` (a new track)
    when every existing one is taken there. ``occupied``: track -> (start, end) of its clips."""
    for track in range(above + 1, track_count + 1):
        if all(e <= start or s >= end for s, e in occupied.get(track, ())):
            return track
    return track_count + 1


def plan_clips(clips: Sequence[ClipFacts], *, timeline_fps: float | None, occupied: Mapping[int, Sequence[tuple[int, int]]],
               track_count: int, settings: Mapping[str, Any], run: Mapping[str, Any], out_root: str
               ) -> tuple[list[ClipPlan], list[Refusal]]:
    """Plan every clip: its job, its output folder (under ``out_root``, named by the job's hash), its place on
    the timeline (the lowest free video track above it, clips planned earlier counted, or a new top track).

    A clip FaceFix cannot line up frame for frame is refused with one reason and gets nothing: retimed or at
    another frame rate than the timeline, compound/multicam/Fusion clips, generators, stills, offline media,
    a range outside the media."""
    plans: list[ClipPlan] = []
    refusals: list[Refusal] = []
    taken: dict[int, list[tuple[int, int]]] = {t: list(v) for t, v in occupied.items()}
    tracks = int(track_count)
    for facts in clips:
        reason = _refuse(facts, timeline_fps)
        media: Media | str = reason or media_of(facts.file_path, facts.properties)
        if isinstance(media, str):
            refusals.append(Refusal(facts.name, media))
            continue
        used_first = media.first + facts.left_offset
        used_last = used_first + facts.duration - 1
        if facts.left_offset < 0 or used_last > media.last:
            refusals.append(Refusal(facts.name, f"uses frames {used_first}-{used_last} but the media has "
                                                f"{media.first}-{media.last} (relink or conform it)"))
            continue
        # The frames after the clip that a repair reads, the job reads from the media itself.
        preroll = min(frame_window(settings)[0], facts.left_offset)
        first = used_first - preroll
        track = free_track(taken, facts.track, tracks, facts.start, facts.end)
        new_track = track > tracks
        tracks = max(tracks, track)
        taken.setdefault(track, []).append((facts.start, facts.end))
        job: dict[str, Any] = {"kind": "restore", "input": media.pattern, "frames": f"{first}-{used_last}",
                               "settings": dict(settings)}
        for name in EDIT_RUN_OPTIONS:
            value = run.get(name)
            if name == "matte" or value in (None, "", False) or (name == "codec" and value == "auto"):
                continue
            job[name] = value
        key = job_key(job, media)
        stem = _safe(os.path.splitext(os.path.basename(media.pattern))[0].rstrip("#@._-") or "clip")
        folder = os.path.join(out_root, f"{_safe(facts.name)[:40]}_{key}")
        if media.is_movie:
            output = os.path.join(folder, f"{stem}_facefix.mov")
        else:
            ext = os.path.splitext(media.pattern)[1]
            output = os.path.join(folder, f"{stem}_facefix.{_hashes(media.pad)}{ext}")
        job["output"] = output
        if run.get("matte"):
            job["matte"] = os.path.join(folder, "matte", f"{stem}_matte.{_hashes(max(media.pad, 4))}.exr")
        place = {"startFrame": preroll, "endFrame": preroll + facts.duration - 1, "trackIndex": track,
                 "recordFrame": facts.start}
        plans.append(ClipPlan(facts.name, facts, media, job, output, folder, first, used_last, track, new_track,
                              place, key, summary_line(job)))
    return plans, refusals


def frame_window(settings: Mapping[str, Any]) -> tuple[int, int]:
    """Frames before and after a frame that its result reads, as FaceFix's ``Session.preroll`` / ``lookahead``
    count them: the temporal pre-roll when ``temporal`` is on (its default 0.5 included), plus the repair window
    both ways when ``deboil`` or ``dewarp`` is on (on any key of an animated control)."""
    def on(name: str, default: float) -> bool:
        keys = (settings.get("animation") or {}).get(name) or {}
        return float(settings.get(name, default) or 0) > 0 or any(float(v) > 0 for v in dict(keys).values())

    repair = REPAIR_WINDOW if on("deboil", 0.0) or on("dewarp", 0.0) else 0
    return (PREROLL if on("temporal", 0.5) else 0) + repair, repair


def _refuse(facts: ClipFacts, timeline_fps: float | None) -> str | None:
    if not facts.has_media:
        return "has no media pool item (a generator, title or effect): FaceFix works on movie files and image " \
               "sequences"
    if facts.duration <= 0:
        return "is empty"
    if facts.speed is not None and abs(facts.speed - 100.0) > 1e-6:
        return f"is retimed ({facts.speed:g}%): render the retime first (Render in Place) and run FaceFix on that"
    fps = parse_fps(facts.properties.get("FPS"))
    if fps is not None and timeline_fps is not None and abs(fps - timeline_fps) > 0.01:
        return f"plays at {fps:g} fps on a {timeline_fps:g} fps timeline: FaceFix's frames would not line up " \
               "(conform the clip's frame rate first)"
    if facts.source_span is not None and abs(facts.source_span - facts.duration) > 1:
        return f"is retimed ({facts.source_span} source frames over {facts.duration} timeline frames): render the " \
               "retime first (Render in Place) and run FaceFix on that"
    return None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.") or "clip"


def job_key(job: Mapping[str, Any], media: Media) -> str:
    """A short hash of everything a job's result depends on (its input, frames, settings, options; the
    media's size and modification times), naming its output folder: the same job renders once."""
    stamp: list[list[int] | None] = []
    for n in (media.first, media.last):
        try:
            st = os.stat(media.frame_path(n))
            stamp.append([st.st_size, int(st.st_mtime)])
        except OSError:
            stamp.append(None)
    body = {k: v for k, v in job.items() if k not in ("output", "matte")}
    text = json.dumps([body, stamp], sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def summary_line(job: Mapping[str, Any]) -> str:
    """The job in one line: written into the new clip's marker and the media pool item's comments."""
    settings = job.get("settings") or {}
    parts = [f"{k}={_short(v)}" for k, v in sorted(settings.items())]
    return (f"FaceFix {job.get('kind', 'restore')}: {', '.join(parts) or 'defaults'}; source {job.get('input')} "
            f"frames {job.get('frames') or 'all'}")


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


# ----------------------------------------------------------------------------------------------- controls


@dataclass(frozen=True)
class ControlSpec:
    """One dialog control, from one schema entry."""

    name: str
    label: str
    kind: str  # float | int | bool | choice | str
    default: Any
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    group: str = "restore"
    run: bool = False

    @property
    def id(self) -> str:
        return ("FFRun_" if self.run else "FF_") + self.name


def control_specs(schema: Mapping[str, Any], run_options: Iterable[str] = EDIT_RUN_OPTIONS) -> list[ControlSpec]:
    """The dialog's controls: every control of the schema's ``params``, then the run options named (the rest
    of ``run`` belongs to the clip: its frames, its tracks, its mask)."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("params"), list):
        raise AdapterError("the FaceFix bridge sent no parameter schema")
    wanted = list(run_options)
    out = [_spec(p, run=False) for p in schema["params"]]
    run = {p.get("name"): p for p in schema.get("run") or [] if isinstance(p, Mapping)}
    for name in wanted:
        if name == "matte":
            out.append(ControlSpec("matte", "Face matte", "bool", False,
                                   "Also write the face matte (an EXR sequence beside the result, imported into "
                                   "the FaceFix bin).", group="run", run=True))
        elif name in run:
            out.append(_spec(run[name], run=True))
    return out


def _spec(p: Mapping[str, Any], run: bool) -> ControlSpec:
    return ControlSpec(str(p["name"]), str(p.get("label") or p["name"]), str(p.get("type") or "str"),
                       p.get("default"), str(p.get("help") or ""), p.get("min"), p.get("max"),
                       tuple(p.get("choices") or ()), str(p.get("group") or ("run" if run else "restore")), run)


def settings_from_values(specs: Sequence[ControlSpec], values: Mapping[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, run options) from the dialog's values by control name, converted to the schema's types and
    checked against its ranges (an AdapterError names the control). Controls at their default are left out of
    the settings (the bridge's defaults are the schema's)."""
    settings: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in values:
            continue
        value = _coerce(spec, values[spec.name])
        if spec.run:
            run[spec.name] = value
        elif value != spec.default:
            settings[spec.name] = value
    return settings, run


def _coerce(spec: ControlSpec, value: Any) -> Any:
    try:
        if spec.kind == "float":
            v: Any = float(value)
        elif spec.kind == "int":
            v = int(round(float(value)))
        elif spec.kind == "bool":
            v = value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
        elif spec.kind == "choice":
            by_text = {str(c): c for c in spec.choices}
            if str(value) not in by_text:
                raise AdapterError(f"{spec.label}: {value!r} is not one of {', '.join(by_text)}")
            v = by_text[str(value)]
        else:
            v = "" if value is None else str(value)
    except (TypeError, ValueError):
        raise AdapterError(f"{spec.label}: {value!r} is not a valid {spec.kind}") from None
    if spec.minimum is not None and v < spec.minimum:
        raise AdapterError(f"{spec.label}: {v} is below the minimum {spec.minimum}")
    if spec.maximum is not None and v > spec.maximum:
        raise AdapterError(f"{spec.label}: {v} is above the maximum {spec.maximum}")
    return v


# ------------------------------------------------------------------------------------------ Fusion masks

Point = Tuple[float, float]


def face_ellipse(landmarks: Sequence[Sequence[float]]) -> tuple[Point, float, float, float]:
    """The face oval around FaceFix's 5 landmarks (left eye, right eye, nose tip, left and right mouth
    corner; pixels, y down): (centre, half width, half height, angle in radians of the face's x axis).

    From the eyes' midpoint E and the mouth's midpoint M (h = |M - E|, along the face's down axis): the oval
    runs from 1.0 h above the eyes (forehead) to 0.75 h below the mouth (chin), and 1.0x the eye distance to
    each side of the face's axis (cheeks)."""
    pts = [(float(x), float(y)) for x, y in landmarks]
    if len(pts) != 5:
        raise AdapterError(f"a face has 5 landmarks, got {len(pts)}")
    (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = pts
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    mx, my = (mlx + mrx) / 2, (mly + mry) / 2
    eye = math.hypot(rx - lx, ry - ly)
    angle = math.atan2(ry - ly, rx - lx)
    # the face's down axis: perpendicular to the eye line, towards the mouth
    dx, dy = -math.sin(angle), math.cos(angle)
    h = (mx - ex) * dx + (my - ey) * dy
    if h <= 1e-6:
        h = max(math.hypot(mx - ex, my - ey), 0.5 * eye)
    centre_down = (-1.0 * h + 1.75 * h) / 2  # midway between forehead and chin, from the eyes
    half_h = (1.0 * h + 1.75 * h) / 2
    half_w = max(eye, 0.6 * h)
    return (ex + dx * centre_down, ey + dy * centre_down), half_w, half_h, angle


def ellipse_points(centre: Point, half_w: float, half_h: float, angle: float, n: int = 8
                   ) -> list[tuple[Point, Point, Point]]:
    """``n`` points around the ellipse (pixels, y down), each with its Bezier handles (left, right) as offsets
    from the point: a smooth closed spline whose shape is the ellipse within 0.03 % at n = 8."""
    k = 4.0 / 3.0 * math.tan(math.pi / (2 * n))  # handle length of a circle's n-segment Bezier, per unit radius
    ca, sa = math.cos(angle), math.sin(angle)
    out = []
    for i in range(n):
        t = 2 * math.pi * i / n
        ux, uy = half_w * math.cos(t), half_h * math.sin(t)  # on the ellipse, in the face's frame
        tx, ty = -half_w * math.sin(t) * k, half_h * math.cos(t) * k  # tangent (direction of increasing t)
        px, py = centre[0] + ux * ca - uy * sa, centre[1] + ux * sa + uy * ca
        hx, hy = tx * ca - ty * sa, tx * sa + ty * ca
        out.append(((px, py), (-hx, -hy), (hx, hy)))
    return out


def to_fusion(x: float, y: float, width: int, height: int) -> Point:
    """A point in pixels (origin top-left, y down) in a Polygon's coordinates: relative to its centre (the
    image's, at (0.5, 0.5)), x in image widths, y in image heights, y up."""
    return x / width - 0.5, 0.5 - y / height


def _offset(dx: float, dy: float, width: int, height: int) -> Point:
    return dx / width, -dy / height


def _num(v: float) -> str:
    text = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _polyline(points: Sequence[tuple[Point, Point, Point]], width: int, height: int) -> str:
    rows = []
    for (px, py), (lx, ly), (rx, ry) in points:
        x, y = to_fusion(px, py, width, height)
        lxx, lyy = _offset(lx, ly, width, height)
        rxx, ryy = _offset(rx, ry, width, height)
        rows.append(f"{{ X = {_num(x)}, Y = {_num(y)}, LX = {_num(lxx)}, LY = {_num(lyy)}, "
                    f"RX = {_num(rxx)}, RY = {_num(ryy)} }}")
    return "Polyline { Closed = true, Points = { " + ", ".join(rows) + " } }"


def _lua_string(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def polygon_setting(tracks: Mapping[str, Any], *, prefix: str, width: int, height: int,
                    comp_frame: Any, frame_range: tuple[int, int], pos: tuple[float, float] = (0.0, 0.0)
                    ) -> tuple[str, list[str]]:
    """A Fusion ``.setting`` (a Lua table, as ``bmd.readfile`` reads and ``Composition.Paste`` pastes) with one
    animated Polygon (``PolylineMask``) per face track, and the names of its tools, the last one the end of the
    chain (each Polygon's EffectMask takes the one before: the faces' union).

    tracks: FaceTracks JSON; comp_frame(frame) -> the comp time showing that FaceFix frame (None: not shown);
    frame_range: the comp's first and last frame. One key per frame of the track (the face oval of
    ``face_ellipse``), and a key collapsing the oval to its centre the frame before and after the track, so that
    the mask is empty where the face is not tracked. Points are in ``to_fusion``'s coordinates."""
    lo, hi = frame_range
    tools: list[str] = []
    blocks: list[str] = []
    track_list = [t for t in tracks.get("tracks") or [] if t.get("frames")]
    for i, track in enumerate(track_list):
        name = f"{prefix}Face{int(track.get('id', i))}"
        keys: dict[int, tuple[Point, list[tuple[Point, Point, Point]]]] = {}
        for fr in track["frames"]:
            t = comp_frame(int(fr["frame"]))
            if t is None or not lo <= t <= hi:
                continue
            centre, half_w, half_h, angle = face_ellipse(fr["landmarks"])
            keys[int(t)] = (centre, ellipse_points(centre, half_w, half_h, angle))
        if not keys:
            continue
        first, last = min(keys), max(keys)
        for edge, near in ((first - 1, first), (last + 1, last)):
            if lo <= edge <= hi and edge not in keys:
                c = keys[near][0]
                keys[edge] = (c, [(c, (0.0, 0.0), (0.0, 0.0)) for _ in keys[near][1]])
        spline_rows = []
        for index, t in enumerate(sorted(keys)):
            spline_rows.append(f"[{t}] = {{ {index}, Flags = {{ Linear = true, LockedY = true }}, "
                               f"Value = {_polyline(keys[t][1], width, height)} }}")
        chain = ""
        if tools:
            chain = f'EffectMask = Input {{ SourceOp = {_lua_string(tools[-1])}, Source = "Mask", }}, '
        x, y = pos[0] + 110 * len(tools), pos[1]
        blocks.append(
            f"{name} = PolylineMask {{ DrawMode = \"ModifyOnly\", DrawMode2 = \"InsertAndModify\", Inputs = {{ "
            f"{chain}"
            f"OutputSize = Input {{ Value = FuID {{ \"Custom\" }}, }}, "
            f"MaskWidth = Input {{ Value = {int(width)}, }}, MaskHeight = Input {{ Value = {int(height)}, }}, "
            f"PixelAspect = Input {{ Value = {{ 1, 1 }}, }}, "
            f"ClippingMode = Input {{ Value = FuID {{ \"None\" }}, }}, "
            f"SoftEdge = Input {{ Value = 0.004, }}, "
            f"Polyline = Input {{ SourceOp = {_lua_string(name + 'Polyline')}, Source = \"Value\", }}, "
            f"Polyline2 = Input {{ Value = Polyline {{ }}, Disabled = true, }}, "
            f"}}, ViewInfo = OperatorInfo {{ Pos = {{ {_num(x)}, {_num(y)} }} }}, }},\n"
            f"{name}Polyline = BezierSpline {{ SplineColor = {{ Red = 173, Green = 255, Blue = 47 }}, "
            f"NameSet = true, KeyFrames = {{\n  " + ",\n  ".join(spline_rows) + "\n} },")
        tools.append(name)
    text = "{\n Tools = ordered() {\n" + "\n".join(blocks) + "\n }\n}\n"
    return text, tools


def fusion_pattern(path: str) -> tuple[str, int, int] | None:
    """A Loader's file (``/shots/plate.1001.exr``) as a FaceFix sequence: (pattern, first number, digits); None
    for a movie or a single file without a frame number."""
    if os.path.splitext(path)[1].lower() in MOVIE_EXTENSIONS:
        return None
    folder, name = os.path.split(path)
    m = re.match(r"^(.*?)(\d+)(\.[^.]+)$", name)
    if m is None:
        return None
    digits = m.group(2)
    return os.path.join(folder, m.group(1) + _hashes(len(digits)) + m.group(3)), int(digits), len(digits)


@dataclass(frozen=True)
class LoaderTiming:
    """How a Loader or MediaIn shows its media in comp time: comp frame ``global_in`` shows the media's frame
    ``first + trim`` (file number, or movie frame), one frame a comp frame, up to ``global_out``."""

    global_in: int
    global_out: int
    trim: int
    first: int

    def comp_frame(self, frame: int) -> int | None:
        t = self.global_in + frame - self.first - self.trim
        return t if self.global_in <= t <= self.global_out else None


def source_frame(timing: LoaderTiming, t: int) -> int:
    """The media frame (FaceFix's numbering) that comp frame ``t`` shows."""
    return timing.first + timing.trim + t - timing.global_in
