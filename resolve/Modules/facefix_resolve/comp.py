"""The Fusion page side: a Loader or MediaIn in, the fix merged over it with one editable face mask per face.

``render_tasks`` makes the work for the selected Loader/MediaIn: a track job (FaceTracks of the shot), a restore
job with those tracks, then ``build`` adds to the comp

* a Polygon (``PolylineMask``) per face track, animated with one key per frame (the face oval from the 5
  landmarks), chained into one mask: pasted as a ``.setting`` (``bmd.readfile`` + ``Composition.Paste``),
  which is how Fusion takes animated polylines from a script;
* a Loader of the result, and a Merge of it over the original through that mask; what the original fed
  before now takes the Merge.

The compositor then edits the masks' points and keys. ``rerender_tasks`` renders the edited mask chain (a
Saver, ``Composition.Render``) to an EXR sequence numbered like the media and sends it back as the restore
job's ``mask``: the fix is then computed only inside it, and the result Loader points at the new render.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from .fusion_api import Bmd, Comp, Tool
from .plan import AdapterError, LoaderTiming, Media, media_of, polygon_setting, source_frame
from .runner import Task

__all__ = ["CompSource", "source_tool", "describe_source", "render_tasks", "rerender_tasks", "facefix_merge",
           "DATA_KEY", "SOURCE_TYPES"]

SOURCE_TYPES = ("Loader", "MediaIn")
DATA_KEY = "FaceFix"


@dataclass
class CompSource:
    """The selected tool's media and how the comp shows it."""

    tool: str
    regid: str
    media: Media
    timing: LoaderTiming
    width: int
    height: int
    first: int  # comp frames rendered: first..last
    last: int

    @property
    def frames(self) -> str:
        return f"{source_frame(self.timing, self.first)}-{source_frame(self.timing, self.last)}"


def _regid(tool: Tool) -> str:
    return str(tool.GetAttrs("TOOLS_RegID") or "")


def source_tool(comp: Comp) -> Tool:
    """The selected Loader or MediaIn (the active tool, else the only one selected)."""
    active = comp.ActiveTool
    if active is not None and _regid(active) in SOURCE_TYPES:
        return active
    chosen = [t for t in (comp.GetToolList(True) or {}).values() if _regid(t) in SOURCE_TYPES]
    if len(chosen) == 1:
        return chosen[0]
    raise AdapterError("select the Loader or MediaIn of the shot to fix (one)")


def _first_value(value: Any) -> Any:
    """Fusion hands some attributes as tables ({1: value}): their first value."""
    if isinstance(value, dict):
        return value[min(value)] if value else None
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _int(value: Any, default: int = 0) -> int:
    value = _first_value(value)
    try:
        return int(round(float(value)))
    except (TypeError, ValueError):
        return default


def describe_source(comp: Comp, tool: Tool, resolve: Any = None) -> CompSource:
    """The media behind ``tool`` and the comp frames it covers (within the comp's render range)."""
    regid = _regid(tool)
    name = str(tool.Name)
    if _int(tool.GetInput("Reverse")) or _int(tool.GetInput("Loop")):
        raise AdapterError(f"{name} plays reversed or looped: FaceFix's frames would not line up (turn that off)")
    global_in, global_out = _int(tool.GetInput("GlobalIn")), _int(tool.GetInput("GlobalOut"))
    trim = _int(tool.GetInput("ClipTimeStart"))
    if regid == "Loader":
        clip = str(tool.GetInput("Clip") or "")
        if not clip:
            raise AdapterError(f"{name} has no file")
        media = _loader_media(clip, trim + global_out - global_in)
        width = _int(tool.GetAttrs("TOOLIT_Clip_Width"))
        height = _int(tool.GetAttrs("TOOLIT_Clip_Height"))
    elif regid == "MediaIn":
        media, left, width, height = _media_in(resolve, name)
        trim += left
    else:
        raise AdapterError(f"{name} is a {regid or 'tool'}: select a Loader or MediaIn")
    if width <= 0 or height <= 0:
        width = _int(comp.GetPrefs("Comp.FrameFormat.Width"))
        height = _int(comp.GetPrefs("Comp.FrameFormat.Height"))
    if width <= 0 or height <= 0:
        raise AdapterError(f"{name}: cannot tell the image size")
    timing = LoaderTiming(global_in, global_out, trim, media.first)
    attrs = comp.GetAttrs() or {}
    start = max(global_in, _int(attrs.get("COMPN_RenderStart"), global_in))
    end = min(global_out, _int(attrs.get("COMPN_RenderEnd"), global_out))
    if end < start:
        raise AdapterError(f"{name} shows nothing inside the comp's render range ({start}-{end})")
    if source_frame(timing, end) > media.last or source_frame(timing, start) < media.first:
        raise AdapterError(f"{name} shows frames {source_frame(timing, start)}-{source_frame(timing, end)} "
                           f"but its media has {media.first}-{media.last}")
    return CompSource(name, regid, media, timing, width, height, start, end)


def _loader_media(clip: str, last_index: int) -> Media:
    from .plan import fusion_pattern

    seq = fusion_pattern(clip)
    if seq is None:
        if not os.path.isfile(clip):
            raise AdapterError(f"{clip} is not there")
        return Media("movie", clip, 0, max(last_index, 0))
    pattern, first, pad = seq
    media = Media("sequence", pattern, first, first + max(last_index, 0), pad)
    if not os.path.isfile(media.frame_path(first)):
        raise AdapterError(f"{media.frame_path(first)} is not there")
    return media


def _media_in(resolve: Any, name: str) -> tuple[Media, int, int, int]:
    """A MediaIn shows the current timeline clip: its media pool item's file, from its left offset."""
    if resolve is None:
        raise AdapterError(f"{name} is a MediaIn: run this from Resolve's Fusion page")
    from .edit import clip_facts, current_timeline

    _, timeline = current_timeline(resolve)
    item = timeline.GetCurrentVideoItem()
    if not item:
        raise AdapterError(f"{name}: no timeline clip under the playhead")
    facts = clip_facts(item, 1)
    media = media_of(facts.file_path, facts.properties)
    if isinstance(media, str):
        raise AdapterError(f"{facts.name} {media}")
    size = str(facts.properties.get("Resolution") or "")
    w, _, h = size.partition("x")
    return media, facts.left_offset, _int(w), _int(h)


# ------------------------------------------------------------------------------------------------- work


def _prefix(comp: Comp) -> str:
    n = 1
    while comp.FindTool(f"FaceFix{n}_Merge") is not None or comp.FindTool(f"FaceFix{n}_Result") is not None:
        n += 1
    return f"FaceFix{n}_"


def _work_dir(root: str, src: CompSource, settings: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps([src.tool, src.media.pattern, src.frames, settings], sort_keys=True, default=str)
    return os.path.join(root, "comp", f"{src.tool}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}")


def _output_pattern(folder: str, src: CompSource) -> str:
    ext = ".png" if src.media.is_movie else os.path.splitext(src.media.pattern)[1]
    return os.path.join(folder, "fixed." + "#" * max(src.media.pad, 4) + ext)


def _frame_file(pattern: str, number: int) -> str:
    pad = pattern.count("#")
    return pattern.replace("#" * pad, f"{number:0{pad}d}")


def render_tasks(comp: Comp, bmd: Bmd, src: CompSource, settings: dict[str, Any], run: dict[str, Any],
                 out_root: str) -> list[Task]:
    """Track, render, then build the masks, the result Loader and the Merge."""
    work = _work_dir(out_root, src, settings)
    tracks = os.path.join(work, "tracks.json")
    output = _output_pattern(os.path.join(work, "v1"), src)
    track_job = {"kind": "track", "input": src.media.pattern, "output": tracks, "frames": src.frames,
                 "settings": {k: v for k, v in settings.items() if k in ("detector", "min_face", "device")}}
    restore = {"kind": "restore", "input": src.media.pattern, "output": output, "frames": src.frames,
               "settings": dict(settings), "tracks": tracks}
    for name in ("codec", "compile"):
        if run.get(name) not in (None, "", False, "auto"):
            restore[name] = run[name]

    def finish() -> str:
        return build(comp, bmd, src, tracks, output, restore, work)

    return [Task(src.tool, [track_job, restore], finish)]


def build(comp: Comp, bmd: Bmd, src: CompSource, tracks_path: str, output: str, job: dict[str, Any],
          work: str) -> str:
    try:
        with open(tracks_path, encoding="utf-8") as f:
            tracks = json.load(f)
    except (OSError, ValueError) as err:
        raise AdapterError(f"{tracks_path}: the bridge's tracks cannot be read ({err})") from None
    source = comp.FindTool(src.tool)
    if source is None:
        raise AdapterError(f"{src.tool} is gone from the comp")
    prefix = _prefix(comp)
    text, names = polygon_setting(tracks, prefix=prefix, width=src.width, height=src.height,
                                  comp_frame=src.timing.comp_frame, frame_range=(src.first, src.last))
    comp.Lock()
    comp.StartUndo("FaceFix")
    try:
        mask: Tool | None = None
        if names:
            setting = os.path.join(work, f"{prefix}masks.setting")
            with open(setting, "w", encoding="utf-8") as f:
                f.write(text)
            if not comp.Paste(bmd.readfile(setting)):
                raise AdapterError("Fusion did not take the face masks")
            mask = comp.FindTool(names[-1])
            if mask is None:
                raise AdapterError(f"the pasted face mask {names[-1]} is not in the comp")
        loader = _add(comp, "Loader", prefix + "Result")
        loader.SetInput("Clip", _frame_file(output, source_frame(src.timing, src.first)))
        loader.SetInput("GlobalIn", src.first)
        loader.SetInput("GlobalOut", src.last)
        merge = _add(comp, "Merge", prefix + "Merge")
        out = source.FindMainOutput(1)
        downstream = list((out.GetConnectedInputs() or {}).values()) if out is not None else []
        merge.ConnectInput("Background", source)
        merge.ConnectInput("Foreground", loader)
        if mask is not None:
            merge.ConnectInput("EffectMask", mask)
        merged = merge.FindMainOutput(1)
        for inp in downstream:
            inp.ConnectTo(merged)
        data = {"source": asdict(src), "work": work, "tracks": tracks_path, "job": job, "loader": loader.Name,
                "masks": names, "version": 1}
        merge.SetData(DATA_KEY, json.dumps(data))
    finally:
        comp.EndUndo(True)
        comp.Unlock()
    faces = len(names)
    return f"{src.tool}: fixed frames {src.first}-{src.last}, {faces} face mask{'' if faces == 1 else 's'} ({prefix}Merge)"


def _add(comp: Comp, regid: str, name: str) -> Tool:
    tool = comp.AddTool(regid, -32768, -32768)
    if tool is None:
        raise AdapterError(f"Fusion could not add a {regid}")
    tool.SetAttrs({"TOOLS_Name": name})
    return tool


def facefix_merge(comp: Comp) -> Tool:
    """The FaceFix Merge to re-render: the selected one, else the comp's only one."""
    def ours(tool: Tool) -> bool:
        return bool(tool.GetData(DATA_KEY))

    selected = [t for t in (comp.GetToolList(True) or {}).values() if ours(t)]
    if len(selected) == 1:
        return selected[0]
    every = [t for t in (comp.GetToolList(False, "Merge") or {}).values() if ours(t)]
    if len(every) == 1:
        return every[0]
    raise AdapterError("select the FaceFix Merge to re-render" if every else
                       "no FaceFix Merge in this comp: run Render first")


def rerender_tasks(comp: Comp, merge: Tool, settings: dict[str, Any], run: dict[str, Any]) -> list[Task]:
    """Render the Merge's EffectMask to EXR (numbered like the media) now, and the restore job with it as
    ``mask``; then point the result Loader at the new render."""
    try:
        data = json.loads(str(merge.GetData(DATA_KEY)))
        s = data["source"]
        src = CompSource(s["tool"], s["regid"], Media(**s["media"]), LoaderTiming(**s["timing"]), s["width"],
                         s["height"], s["first"], s["last"])
    except (ValueError, KeyError, TypeError) as err:
        raise AdapterError(f"{merge.Name}: its FaceFix data is unreadable ({err})") from None
    connected = merge.EffectMask.GetConnectedOutput()  # type: ignore[attr-defined]  # an input, by its ID
    if connected is None:
        raise AdapterError(f"{merge.Name} has no mask on its EffectMask: connect the face masks to it")
    mask_tool = connected.GetTool()
    version = int(data.get("version", 1)) + 1
    work = str(data["work"])
    mask_dir = os.path.join(work, f"mask_v{version}")
    os.makedirs(mask_dir, exist_ok=True)
    first_number = source_frame(src.timing, src.first)
    saver = _add(comp, "Saver", f"{merge.Name}_MaskSaver")
    try:
        saver.ConnectInput("Input", mask_tool)
        saver.SetInput("Clip", os.path.join(mask_dir, "mask.0000.exr"))
        saver.SetInput("OutputFormat", "OpenEXRFormat")
        saver.SetInput("SetSequenceStart", 1)
        saver.SetInput("SequenceStartFrame", first_number)
        ok = comp.Render({"Start": src.first, "End": src.last, "Tool": saver, "Wait": True})
    finally:
        saver.Delete()
    mask_pattern = os.path.join(mask_dir, "mask.####.exr")
    missing = [n for n in (first_number, source_frame(src.timing, src.last))
               if not os.path.isfile(_frame_file(mask_pattern, n))]
    if not ok or missing:
        raise AdapterError(f"Fusion did not render the mask to {mask_dir}"
                           + (f" ({_frame_file(mask_pattern, missing[0])} is missing)" if missing else ""))
    output = _output_pattern(os.path.join(work, f"v{version}"), src)
    job = dict(data["job"])
    job.update({"output": output, "mask": mask_pattern, "settings": dict(settings)})
    for name in ("codec", "compile"):
        job.pop(name, None)
        if run.get(name) not in (None, "", False, "auto"):
            job[name] = run[name]
    loader_name = str(data["loader"])

    def finish() -> str:
        loader = comp.FindTool(loader_name)
        if loader is None:
            raise AdapterError(f"the result Loader {loader_name} is gone from the comp")
        loader.SetInput("Clip", _frame_file(output, first_number))
        loader.SetInput("GlobalIn", src.first)
        loader.SetInput("GlobalOut", src.last)
        merge.SetData(DATA_KEY, json.dumps({**data, "job": job, "version": version}))
        return f"{src.tool}: re-rendered with {mask_tool.Name} as the mask (v{version})"

    return [Task(f"{src.tool} (mask)", [job], finish)]
