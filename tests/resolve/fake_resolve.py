"""A small fake of Blackmagic's ``DaVinciResolveScript`` (Resolve's and Fusion's scripting), for testing FaceFix's
Resolve scripts without Resolve.

Honest by construction: every public method of the Resolve classes here (Resolve, ProjectManager, Project,
MediaPool, Folder, MediaPoolItem, Timeline, TimelineItem) is in Blackmagic's scripting README, with the same
arguments; ``test_fake_resolve.py`` checks each name and argument list against ``fusionscript-stubs`` (the README
as stubs). The Fusion half (Fusion, Composition, tools, inputs, outputs, BezierSpline keyframes, UIManager,
``bmd``) follows the Fusion Scripting Guide and the UIManager README; the stubs have no Fusion methods to check
it against, so its surface is listed in ``FUSION_SURFACE`` and the adapter's Protocols are checked against that.
Private names (a leading underscore) are the fake's own machinery and test hooks.

What it does, as far as the adapter can tell:

* media: ``MediaPool.ImportMedia`` takes real files: a movie (frames and rate read with PyAV) or an image
  sequence ``{"FilePath": "plate.%04d.exr", "StartIndex", "EndIndex"}`` (shown as ``plate.[1001-1010].exr``,
  the way Resolve names a sequence); ``GetClipProperty`` answers "File Path", "Type", "FPS", "Frames",
  "Resolution", "Start", "End" like Resolve's Media Pool;
* timelines: ``MediaPool.AppendToTimeline`` with clipInfo dicts (``startFrame``/``endFrame`` in the media's
  frames, ``endFrame`` inclusive unless ``END_EXCLUSIVE``; ``trackIndex``; ``recordFrame``), refusing to
  overwrite (it returns [] and notes it in ``_refused``: Resolve would overwrite, FaceFix must never ask);
  items with their start, duration, left offset, source frames, markers and clip colours; ``AddTrack``,
  ``GetCurrentVideoItem`` (the item under ``_playhead`` on the highest video track that has one);
* Fusion: a comp of tools with inputs (values, keyframes, connections), ``AddTool``, ``FindTool``,
  ``GetToolList``, ``Paste`` of a settings table (as ``bmd.readfile`` reads a ``.setting``: a small Lua-table
  parser is included), BezierSpline keyframes of Polylines, ``Render`` of a Saver fed by Polygon masks (rasterised
  to an EXR sequence), ``SetData``/``GetData``;
* UIManager: windows of elements (``AddWindow``, ``GetItems``, ``On.ID.Event`` handlers, ``Timer``); ``RunLoop``
  plays ``_ui_script`` (callables given the window, e.g. pressing a button), one a turn, and fires the running
  timers once a turn, until ``ExitLoop``; with nothing left to do it closes the window (its Close handler runs), as a user would.

Fusion's Polygon coordinates, as this fake reads them: relative to the image centre, x in image widths, y in
image heights, y up (what the adapter writes; ``to_pixels``).
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from typing import Any

import numpy as np

END_EXCLUSIVE = False  # AppendToTimeline's endFrame: inclusive (False) or exclusive (True); tests try both

_ids = itertools.count(1)


def _uid() -> str:
    return str(uuid.UUID(int=next(_ids)))


# ============================================================================================ Resolve


class Resolve:
    def __init__(self) -> None:
        self._pm = ProjectManager(self)
        self._fusion = Fusion(self)
        self._page = "edit"

    def Fusion(self) -> Fusion:
        return self._fusion

    def GetProjectManager(self) -> ProjectManager:
        return self._pm

    def GetProductName(self) -> str:
        return "DaVinci Resolve Studio"

    def GetVersionString(self) -> str:
        return "19.1.0.12"

    def GetVersion(self) -> list:
        return [19, 1, 0, 12, ""]

    def OpenPage(self, pageName: str) -> bool:
        self._page = pageName
        return True

    def GetCurrentPage(self) -> str:
        return self._page


class ProjectManager:
    def __init__(self, resolve: Resolve) -> None:
        self._projects: dict[str, Project] = {}
        self._current: Project | None = None

    def CreateProject(self, projectName: str, mediaLocationPath: str | None = None) -> Project | None:
        if projectName in self._projects:
            return None
        project = Project(projectName)
        self._projects[projectName] = project
        self._current = project
        return project

    def GetCurrentProject(self) -> Project | None:
        return self._current

    def LoadProject(self, projectName: str) -> Project | None:
        self._current = self._projects.get(projectName)
        return self._current

    def SaveProject(self) -> bool:
        return self._current is not None


class Project:
    def __init__(self, name: str) -> None:
        self._name = name
        self._pool = MediaPool(self)
        self._timelines: list[Timeline] = []
        self._current: Timeline | None = None
        self._settings = {"timelineFrameRate": "24"}

    def GetName(self) -> str:
        return self._name

    def GetMediaPool(self) -> MediaPool:
        return self._pool

    def GetTimelineCount(self) -> int:
        return len(self._timelines)

    def GetTimelineByIndex(self, idx: int) -> Timeline:
        return self._timelines[idx - 1]

    def GetCurrentTimeline(self) -> Timeline | None:
        return self._current

    def SetCurrentTimeline(self, timeline: Timeline) -> bool:
        self._current = timeline
        return True

    def GetSetting(self, settingName: str = "") -> Any:
        return dict(self._settings) if not settingName else self._settings.get(settingName, "")

    def SetSetting(self, settingName: str, settingValue: str) -> bool:
        self._settings[settingName] = str(settingValue)
        return True


# ----------------------------------------------------------------------------------------------- media


def _movie_info(path: str) -> tuple[int, float, int, int, bool]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 24
        frames = sum(1 for _ in container.decode(stream))
        return frames, float(rate), stream.codec_context.width, stream.codec_context.height, \
            len(container.streams.audio) > 0


def _image_size(path: str) -> tuple[int, int]:
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise OSError(f"cannot read {path}")
    try:
        spec = inp.spec()
        return spec.width, spec.height
    finally:
        inp.close()


class MediaPoolItem:
    def __init__(self, props: dict[str, Any]) -> None:
        self._props = props
        self._meta: dict[str, str] = {}
        self._markers: dict[float, dict] = {}
        self._uid = _uid()

    def GetName(self) -> str:
        return str(self._props["Clip Name"])

    def SetName(self, name: str) -> bool:
        self._props["Clip Name"] = name
        return True

    def GetClipProperty(self, propertyName: str | None = None) -> Any:
        if not propertyName:
            return {k: str(v) for k, v in self._props.items()}
        return str(self._props.get(propertyName, ""))

    def SetClipProperty(self, propertyName: str, propertyValue: Any) -> bool:
        self._props[propertyName] = propertyValue
        return True

    def GetMetadata(self, metadataType: str | None = None) -> Any:
        return dict(self._meta) if not metadataType else self._meta.get(metadataType, "")

    def SetMetadata(self, metadataType: Any, metadataValue: str | None = None) -> bool:
        if isinstance(metadataType, dict):
            self._meta.update({str(k): str(v) for k, v in metadataType.items()})
        else:
            self._meta[str(metadataType)] = str(metadataValue)
        return True

    def GetMediaId(self) -> str:
        return self._uid

    def GetUniqueId(self) -> str:
        return self._uid

    def AddMarker(self, frameId: float, color: str, name: str, note: str, duration: float,
                  customData: str | None = None) -> bool:
        self._markers[float(frameId)] = {"color": color, "duration": float(duration), "note": note, "name": name,
                                         "customData": customData or ""}
        return True

    def GetMarkers(self) -> dict:
        return dict(self._markers)

    # the fake's own
    @property
    def _frames(self) -> int:
        return int(self._props["Frames"])


class Folder:
    def __init__(self, name: str) -> None:
        self._name = name
        self._clips: list[MediaPoolItem] = []
        self._subs: list[Folder] = []
        self._uid = _uid()

    def GetName(self) -> str:
        return self._name

    def GetClipList(self) -> list[MediaPoolItem]:
        return list(self._clips)

    def GetSubFolderList(self) -> list[Folder]:
        return list(self._subs)

    def GetUniqueId(self) -> str:
        return self._uid


_PRINTF = re.compile(r"%0?(\d*)d")


class MediaPool:
    def __init__(self, project: Project) -> None:
        self._project = project
        self._root = Folder("Master")
        self._current = self._root

    def GetRootFolder(self) -> Folder:
        return self._root

    def AddSubFolder(self, folder: Folder, name: str) -> Folder:
        sub = Folder(name)
        folder._subs.append(sub)
        return sub

    def GetCurrentFolder(self) -> Folder:
        return self._current

    def SetCurrentFolder(self, folder: Folder) -> bool:
        self._current = folder
        return True

    def CreateEmptyTimeline(self, name: str) -> Timeline | None:
        if any(t.GetName() == name for t in self._project._timelines):
            return None
        timeline = Timeline(name, self._project)
        self._project._timelines.append(timeline)
        self._project._current = timeline
        return timeline

    def ImportMedia(self, items: list) -> list[MediaPoolItem]:
        out = []
        for item in items:
            clip = self._import(item)
            if clip is not None:
                self._current._clips.append(clip)
                out.append(clip)
        return out

    def _import(self, item: Any) -> MediaPoolItem | None:
        if isinstance(item, dict):
            pattern, first, last = item["FilePath"], int(item["StartIndex"]), int(item["EndIndex"])
            m = _PRINTF.search(os.path.basename(pattern))
            if m is None:
                return None
            pad = int(m.group(1) or 1)
            folder, name = os.path.split(pattern)

            def path(n: int) -> str:
                return os.path.join(folder, name[:m.start()] + f"{n:0{pad}d}" + name[m.end():])

            if not all(os.path.isfile(path(n)) for n in range(first, last + 1)):
                return None
            shown = name[:m.start()] + f"[{first:0{pad}d}-{last:0{pad}d}]" + name[m.end():]
            w, h = _image_size(path(first))
            return MediaPoolItem({"Clip Name": shown, "File Name": shown, "File Path": os.path.join(folder, shown),
                                  "Type": "Video", "FPS": "24.000", "Frames": last - first + 1,
                                  "Start": first, "End": last, "Resolution": f"{w}x{h}"})
        path = str(item)
        if not os.path.isfile(path):
            return None
        frames, fps, w, h, audio = _movie_info(path)
        return MediaPoolItem({"Clip Name": os.path.basename(path), "File Name": os.path.basename(path),
                              "File Path": path, "Type": "Video + Audio" if audio else "Video",
                              "FPS": f"{fps:.3f}", "Frames": frames, "Start": 0, "End": frames - 1,
                              "Resolution": f"{w}x{h}"})

    def AppendToTimeline(self, *clips: Any) -> list[TimelineItem]:
        timeline = self._project._current
        if timeline is None:
            return []
        infos = clips[0] if len(clips) == 1 and isinstance(clips[0], list) else list(clips)
        out = []
        for info in infos:
            if isinstance(info, MediaPoolItem):
                info = {"mediaPoolItem": info, "startFrame": 0, "endFrame": info._frames - 1 + int(END_EXCLUSIVE)}
            item = timeline._append(info)
            if item is not None:
                out.append(item)
        return out

    def DeleteClips(self, clips: list[MediaPoolItem]) -> bool:
        def walk(folder: Folder) -> None:
            folder._clips = [c for c in folder._clips if c not in clips]
            for sub in folder._subs:
                walk(sub)

        walk(self._root)
        return True


# -------------------------------------------------------------------------------------------- timeline


class Timeline:
    def __init__(self, name: str, project: Project) -> None:
        self._name = name
        self._project = project
        self._start = 86400  # 01:00:00:00 at 24 fps
        self._tracks: list[list[TimelineItem]] = [[]]
        self._locked: set[int] = set()
        self._playhead = self._start
        self._markers: dict[float, dict] = {}
        self._refused: list[str] = []
        self._uid = _uid()
        self._settings: dict[str, str] = {}

    def GetName(self) -> str:
        return self._name

    def GetStartFrame(self) -> int:
        return self._start

    def GetEndFrame(self) -> int:
        return max([i._start + i._duration for t in self._tracks for i in t] + [self._start])

    def GetTrackCount(self, trackType: str) -> int:
        return len(self._tracks) if trackType == "video" else 0

    def AddTrack(self, trackType: str, subTrackType: Any = None) -> bool:
        if trackType != "video":
            return False
        self._tracks.append([])
        return True

    def DeleteTrack(self, trackType: str, trackIndex: int) -> bool:
        if trackType != "video" or not 1 <= trackIndex <= len(self._tracks):
            return False
        del self._tracks[trackIndex - 1]
        return True

    def GetIsTrackLocked(self, trackType: str, trackIndex: int) -> bool:
        return trackIndex in self._locked

    def SetTrackLock(self, trackType: str, trackIndex: int, Bool: bool) -> bool:
        (self._locked.add if Bool else self._locked.discard)(trackIndex)
        return True

    def GetItemListInTrack(self, trackType: str, index: int) -> list[TimelineItem]:
        if trackType != "video" or not 1 <= index <= len(self._tracks):
            return []
        return sorted(self._tracks[index - 1], key=lambda i: i._start)

    def GetSetting(self, settingName: str = "") -> Any:
        merged = {**self._project._settings, **self._settings}
        return merged if not settingName else merged.get(settingName, "")

    def SetSetting(self, settingName: str, settingValue: str) -> bool:
        self._settings[settingName] = str(settingValue)
        return True

    def GetCurrentVideoItem(self) -> TimelineItem | None:
        for track in reversed(self._tracks):
            for item in track:
                if item._start <= self._playhead < item._start + item._duration:
                    return item
        return None

    def DeleteClips(self, timelineItems: list[TimelineItem], Bool: bool = False) -> bool:
        for track in self._tracks:
            track[:] = [i for i in track if i not in timelineItems]
        return True

    def GetUniqueId(self) -> str:
        return self._uid

    def AddMarker(self, frameId: float, color: str, name: str, note: str, duration: float,
                  customData: str | None = None) -> bool:
        self._markers[float(frameId)] = {"color": color, "duration": duration, "note": note, "name": name,
                                         "customData": customData or ""}
        return True

    def GetMarkers(self) -> dict:
        return dict(self._markers)

    # the fake's own
    def _append(self, info: dict) -> TimelineItem | None:
        media = info.get("mediaPoolItem")
        if not isinstance(media, MediaPoolItem):
            self._refused.append("no mediaPoolItem")
            return None
        first = int(info.get("startFrame", 0))
        end = int(info.get("endFrame", media._frames - 1))
        duration = end - first + (0 if END_EXCLUSIVE else 1)
        if first < 0 or first + duration > media._frames or duration <= 0:
            self._refused.append(f"frames {first}-{end} outside {media.GetName()} (0-{media._frames - 1})")
            return None
        track = int(info.get("trackIndex", 1))
        if not 1 <= track <= len(self._tracks):
            self._refused.append(f"no video track {track}")
            return None
        if track in self._locked:
            self._refused.append(f"video track {track} is locked")
            return None
        record = info.get("recordFrame")
        if record is None:
            record = max([i._start + i._duration for i in self._tracks[track - 1]] + [self._start])
        record = int(record)
        for other in self._tracks[track - 1]:
            if other._start < record + duration and record < other._start + other._duration:
                self._refused.append(f"V{track} {record}-{record + duration} overlaps {other.GetName()}")
                return None
        item = TimelineItem(self, media, record, duration, first)
        self._tracks[track - 1].append(item)
        return item


class TimelineItem:
    def __init__(self, timeline: Timeline, media: MediaPoolItem, start: int, duration: int, left: int) -> None:
        self._timeline = timeline
        self._media = media
        self._start = start
        self._duration = duration
        self._left = left
        self._speed = 100.0  # a retime, in percent: the fake's hook (Resolve's API does not set or show it)
        self._markers: dict[float, dict] = {}
        self._color = ""
        self._uid = _uid()
        self._props: dict[str, Any] = {"Pan": 0.0, "Tilt": 0.0, "ZoomX": 1.0, "ZoomY": 1.0, "Opacity": 100.0}

    def GetName(self) -> str:
        return self._media.GetName()

    def GetDuration(self, subframe_precision: bool = False) -> int:
        return self._duration

    def GetStart(self, subframe_precision: bool = False) -> int:
        return self._start

    def GetEnd(self, subframe_precision: bool = False) -> int:
        return self._start + self._duration

    def GetLeftOffset(self, subframe_precision: bool = False) -> int:
        return self._left

    def GetRightOffset(self, subframe_precision: bool = False) -> int:
        return self._media._frames - self._left - self._source_span

    def GetSourceStartFrame(self) -> int:
        return self._left

    def GetSourceEndFrame(self) -> int:
        return self._left + self._source_span

    def GetMediaPoolItem(self) -> MediaPoolItem:
        return self._media

    def GetTrackTypeAndIndex(self) -> list:
        for n, track in enumerate(self._timeline._tracks, 1):
            if self in track:
                return ["video", n]
        return ["video", 0]

    def AddMarker(self, frameId: float, color: str, name: str, note: str, duration: float,
                  customData: str | None = None) -> bool:
        if not 0 <= frameId < self._duration:
            return False
        self._markers[float(frameId)] = {"color": color, "duration": float(duration), "note": note, "name": name,
                                         "customData": customData or ""}
        return True

    def GetMarkers(self) -> dict:
        return dict(self._markers)

    def GetClipColor(self) -> str:
        return self._color

    def SetClipColor(self, colorName: str) -> bool:
        self._color = colorName
        return True

    def ClearClipColor(self) -> bool:
        self._color = ""
        return True

    def GetUniqueId(self) -> str:
        return self._uid

    def GetProperty(self, propertyKey: str | None = None) -> Any:
        return dict(self._props) if not propertyKey else self._props.get(propertyKey)

    def SetProperty(self, propertyKey: str, propertyValue: Any) -> bool:
        if propertyKey not in self._props:
            return False
        self._props[propertyKey] = propertyValue
        return True

    # the fake's own
    @property
    def _source_span(self) -> int:
        return int(round(self._duration * self._speed / 100.0))

    def _frame_at(self, record: int) -> int:
        """The media frame (0-based, within the media pool item) shown at timeline frame ``record``."""
        return self._left + int((record - self._start) * self._speed / 100.0)


# ============================================================================================= Fusion

# What of Fusion's documented scripting API the fake has (the adapter's Protocols are checked against it).
FUSION_SURFACE = {
    "Fusion": ["GetCurrentComp", "MapPath", "UIManager"],
    "Comp": ["ActiveTool", "CurrentTime", "GetAttrs", "GetToolList", "FindTool", "AddTool", "Paste", "Render",
             "Lock", "Unlock", "StartUndo", "EndUndo", "GetPrefs", "MapPath"],
    "Tool": ["Name", "GetAttrs", "SetAttrs", "GetInput", "SetInput", "ConnectInput", "FindMainOutput",
             "FindMainInput", "GetData", "SetData", "Delete"],
    "Input": ["ConnectTo", "GetConnectedOutput", "GetTool"],
    "Output": ["GetConnectedInputs", "GetTool"],
    "Bmd": ["readfile", "UIDispatcher", "scriptapp"],
}

# Inputs each tool kind has (with defaults), and the name of its main output.
_TOOLS: dict[str, tuple[dict[str, Any], str]] = {
    "Loader": ({"Clip": "", "GlobalIn": 0, "GlobalOut": 0, "ClipTimeStart": 0, "ClipTimeEnd": 0, "Reverse": 0,
                "Loop": 0, "HoldFirstFrame": 0, "HoldLastFrame": 0}, "Output"),
    "MediaIn": ({"GlobalIn": 0, "GlobalOut": 0, "ClipTimeStart": 0, "ClipTimeEnd": 0, "Reverse": 0, "Loop": 0,
                 "MediaID": "", "Layer": ""}, "Output"),
    "Merge": ({"Background": None, "Foreground": None, "EffectMask": None, "Blend": 1.0}, "Output"),
    "MediaOut": ({"Input": None}, "Output"),
    "Saver": ({"Input": None, "Clip": "", "OutputFormat": "OpenEXRFormat", "SetSequenceStart": 0,
               "SequenceStartFrame": 0, "EffectMask": None}, "Output"),
    "PolylineMask": ({"Polyline": None, "Polyline2": None, "EffectMask": None, "OutputSize": "Default",
                      "MaskWidth": 1920, "MaskHeight": 1080, "PixelAspect": [1, 1], "ClippingMode": "Frame",
                      "SoftEdge": 0.0, "Level": 1.0, "Invert": 0, "Center": [0.5, 0.5]}, "Mask"),
    "BezierSpline": ({}, "Value"),
    "Background": ({"Width": 1920, "Height": 1080}, "Output"),
}


class Output:
    def __init__(self, tool: Tool, name: str) -> None:
        self._tool = tool
        self.Name = name

    def GetTool(self) -> Tool:
        return self._tool

    def GetConnectedInputs(self) -> dict:
        found = [inp for t in self._tool._comp._tools.values() for inp in t._inputs.values()
                 if inp._connected is self]
        return {i: inp for i, inp in enumerate(found, 1)}


class Input:
    def __init__(self, tool: Tool, name: str, value: Any) -> None:
        self._tool = tool
        self.Name = name
        self._value = value
        self._keys: dict[float, Any] = {}
        self._connected: Output | None = None

    def GetTool(self) -> Tool:
        return self._tool

    def ConnectTo(self, output: Output | None = None) -> bool:
        self._connected = output
        return True

    def GetConnectedOutput(self) -> Output | None:
        return self._connected

    def __getitem__(self, time: float) -> Any:
        return self._tool._value_at(self.Name, time)

    def __setitem__(self, time: float, value: Any) -> None:
        self._keys[float(time)] = value


class Tool:
    def __init__(self, comp: Comp, regid: str, name: str) -> None:
        defaults, main = _TOOLS.get(regid, ({}, "Output"))
        object.__setattr__(self, "_comp", comp)
        object.__setattr__(self, "_regid", regid)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_inputs", {k: Input(self, k, v) for k, v in defaults.items()})
        object.__setattr__(self, "_outputs", {main: Output(self, main)})
        object.__setattr__(self, "_main", main)
        object.__setattr__(self, "_data", {})
        object.__setattr__(self, "_keyframes", {})  # a BezierSpline's
        object.__setattr__(self, "_attrs", {})

    @property
    def Name(self) -> str:
        return self._name

    def GetAttrs(self, name: str | None = None) -> Any:
        attrs = {"TOOLS_Name": self._name, "TOOLS_RegID": self._regid, "TOOLB_PassThrough": False, **self._attrs}
        if self._regid == "Loader" and self._inputs["Clip"]._value and os.path.isfile(self._inputs["Clip"]._value):
            w, h = _image_size(self._inputs["Clip"]._value)
            attrs.update({"TOOLIT_Clip_Width": {1: w}, "TOOLIT_Clip_Height": {1: h},
                          "TOOLST_Clip_Name": {1: self._inputs["Clip"]._value}})
        return attrs if name is None else attrs.get(name)

    def SetAttrs(self, attrs: dict) -> None:
        if "TOOLS_Name" in attrs:
            new = str(attrs["TOOLS_Name"])
            self._comp._tools.pop(self._name, None)
            object.__setattr__(self, "_name", self._comp._free_name(new))
            self._comp._tools[self._name] = self
        self._attrs.update({k: v for k, v in attrs.items() if k != "TOOLS_Name"})

    def GetInput(self, name: str, time: float | None = None) -> Any:
        if name not in self._inputs:
            return None
        return self._value_at(name, self._comp.CurrentTime if time is None else time)

    def SetInput(self, name: str, value: Any, time: float | None = None) -> bool:
        if name not in self._inputs:
            return False
        if time is None:
            self._inputs[name]._value = value
            self._inputs[name]._connected = None
        else:
            self._inputs[name]._keys[float(time)] = value
        return True

    def ConnectInput(self, name: str, source: Any) -> bool:
        if name not in self._inputs:
            return False
        if isinstance(source, Tool):
            source = source.FindMainOutput(1)
        self._inputs[name]._connected = source
        return True

    def FindMainOutput(self, index: int) -> Output | None:
        return self._outputs[self._main] if index == 1 else None

    def FindMainInput(self, index: int) -> Input | None:
        mains = [n for n in ("Background", "Input", "EffectMask") if n in self._inputs]
        return self._inputs[mains[index - 1]] if 0 < index <= len(mains) else None

    def GetData(self, name: str | None = None) -> Any:
        return dict(self._data) if name is None else self._data.get(name)

    def SetData(self, name: str, value: Any) -> None:
        self._data[name] = value

    def Delete(self) -> None:
        self._comp._tools.pop(self._name, None)
        for tool in self._comp._tools.values():
            for inp in tool._inputs.values():
                if inp._connected is not None and inp._connected._tool is self:
                    inp._connected = None

    # BezierSpline
    def GetKeyFrames(self) -> dict:
        return dict(self._keyframes)

    def SetKeyFrames(self, keyframes: dict, replace: bool = False) -> None:
        if replace:
            self._keyframes.clear()
        self._keyframes.update({float(k): v for k, v in keyframes.items()})

    # attribute access to inputs (tool.Clip, tool.EffectMask), as in Fusion
    def __getattr__(self, name: str) -> Any:
        inputs = object.__getattribute__(self, "_inputs")
        if name in inputs:
            return inputs[name]
        outputs = object.__getattribute__(self, "_outputs")
        if name in outputs:
            return outputs[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._inputs:
            if isinstance(value, Output):
                self._inputs[name]._connected = value
            else:
                self.SetInput(name, value)
            return
        raise AttributeError(f"{self._regid} has no input {name}")

    # the fake's own
    def _value_at(self, name: str, time: float) -> Any:
        inp = self._inputs[name]
        if inp._connected is not None and inp._connected._tool._regid == "BezierSpline":
            return inp._connected._tool._spline_at(time)
        if inp._keys:
            keys = sorted(inp._keys)
            if time <= keys[0]:
                return inp._keys[keys[0]]
            if time >= keys[-1]:
                return inp._keys[keys[-1]]
            for a, b in zip(keys, keys[1:]):
                if a <= time <= b:
                    va, vb = inp._keys[a], inp._keys[b]
                    if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                        return va + (vb - va) * (time - a) / (b - a)
                    return va
        return inp._value

    def _spline_at(self, time: float) -> Any:
        """A BezierSpline's polyline at ``time``: its key there, or the linear blend of the keys around it
        (held before the first and after the last)."""
        keys = sorted(self._keyframes)
        if not keys:
            return None

        def value(k: float) -> Any:
            return self._keyframes[k].get("Value")

        if time <= keys[0]:
            return value(keys[0])
        if time >= keys[-1]:
            return value(keys[-1])
        for a, b in zip(keys, keys[1:]):
            if a <= time <= b:
                if time == a:
                    return value(a)
                t = (time - a) / (b - a)
                pa, pb = _points(value(a)), _points(value(b))
                blended = [{k: pa[i][k] * (1 - t) + pb[i][k] * t for k in pa[i] if isinstance(pa[i][k], float)}
                           for i in range(len(pa))]
                return {"__ctor": "Polyline", "Closed": True, "Points": {i + 1: p for i, p in enumerate(blended)}}
        return value(keys[-1])

    def _mask(self, time: float) -> np.ndarray:
        """A PolylineMask chain's mask at ``time`` (the union of its shape and its EffectMask's)."""
        w, h = int(self.GetInput("MaskWidth", time)), int(self.GetInput("MaskHeight", time))
        poly = self._value_at("Polyline", time)
        out = _rasterise(_points(poly), w, h) if poly else np.zeros((h, w), np.float32)
        chained = self._inputs["EffectMask"]._connected
        if chained is not None:
            out = np.maximum(out, chained._tool._mask(time))
        return out


def _points(polyline: Any) -> list[dict]:
    pts = polyline.get("Points") or {}
    return [{k: float(v) for k, v in pts[i].items() if isinstance(v, (int, float))} for i in sorted(pts)]


def to_pixels(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """A Polygon point (relative to the image centre, x in widths, y in heights, y up) in pixels (y down)."""
    return (x + 0.5) * width, (0.5 - y) * height


def _rasterise(points: list[dict], width: int, height: int) -> np.ndarray:
    """The closed Bezier spline through ``points`` (with LX/LY/RX/RY handles) filled, pixel centres inside = 1."""
    outline = []
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        p0 = np.array([a["X"], a["Y"]])
        p1 = p0 + [a.get("RX", 0.0), a.get("RY", 0.0)]
        p3 = np.array([b["X"], b["Y"]])
        p2 = p3 + [b.get("LX", 0.0), b.get("LY", 0.0)]
        for t in np.linspace(0, 1, 16, endpoint=False):
            q = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
            outline.append(to_pixels(q[0], q[1], width, height))
    if len(outline) < 3:
        return np.zeros((height, width), np.float32)
    poly = np.array(outline)
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    inside = np.zeros((height, width), bool)
    px, py = poly[:, 0], poly[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    for x0, y0, x1, y1 in zip(px, py, qx, qy):
        if y0 == y1:
            continue
        crosses = ((y0 <= yy) & (yy < y1)) | ((y1 <= yy) & (yy < y0))
        xs = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < xs)
    return inside.astype(np.float32)


class Comp:
    def __init__(self, fusion: Fusion) -> None:
        self._fusion = fusion
        self._tools: dict[str, Tool] = {}
        self._selected: list[Tool] = []
        self.ActiveTool: Tool | None = None
        self.CurrentTime = 0.0
        self._attrs = {"COMPN_RenderStart": 0.0, "COMPN_RenderEnd": 100.0, "COMPN_GlobalStart": 0.0,
                       "COMPN_GlobalEnd": 100.0, "COMPS_Name": "Composition1"}
        self._prefs = {"Comp.FrameFormat.Width": 1920, "Comp.FrameFormat.Height": 1080}
        self._renders: list[dict] = []
        self._undo: list[str] = []
        self._locked = 0

    def GetAttrs(self, name: str | None = None) -> Any:
        return dict(self._attrs) if name is None else self._attrs.get(name)

    def GetPrefs(self, name: str | None = None) -> Any:
        return dict(self._prefs) if name is None else self._prefs.get(name)

    def MapPath(self, path: str) -> str:
        return self._fusion.MapPath(path)

    def GetToolList(self, selected: bool = False, regid: str | None = None) -> dict:
        tools = self._selected if selected else list(self._tools.values())
        tools = [t for t in tools if regid is None or t._regid == regid]
        return {i: t for i, t in enumerate(tools, 1)}

    def FindTool(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def AddTool(self, regid: str, x: float = -32768, y: float = -32768) -> Tool | None:
        if regid not in _TOOLS:
            return None
        tool = Tool(self, regid, self._free_name(regid + "1"))
        self._tools[tool.Name] = tool
        return tool

    def Paste(self, settings: Any = None) -> bool:
        if not isinstance(settings, dict) or not isinstance(settings.get("Tools"), dict):
            return False
        made: dict[str, Tool] = {}
        for name, spec in settings["Tools"].items():
            regid = spec.get("__ctor")
            if regid not in _TOOLS:
                return False
            tool = Tool(self, regid, self._free_name(name))
            self._tools[tool.Name] = tool
            made[name] = tool
            if regid == "BezierSpline":
                tool.SetKeyFrames(spec.get("KeyFrames") or {}, True)
        for name, spec in settings["Tools"].items():
            tool = made[name]
            for iname, ispec in (spec.get("Inputs") or {}).items():
                if iname not in tool._inputs:
                    tool._inputs[iname] = Input(tool, iname, None)
                if "SourceOp" in ispec:
                    src = made.get(ispec["SourceOp"]) or self._tools.get(ispec["SourceOp"])
                    if src is None:
                        return False
                    tool._inputs[iname]._connected = src._outputs.get(ispec.get("Source")) or src.FindMainOutput(1)
                elif "Value" in ispec:
                    value = ispec["Value"]
                    if isinstance(value, dict) and value.get("__ctor") == "FuID":
                        value = value.get(1)
                    tool._inputs[iname]._value = value
        return True

    def Render(self, settings: dict) -> bool:
        saver = settings.get("Tool")
        start, end = int(settings.get("Start", 0)), int(settings.get("End", 0))
        self._renders.append(dict(settings))
        if not isinstance(saver, Tool) or saver._regid != "Saver":
            return False
        source = saver._inputs["Input"]._connected
        if source is None:
            return False
        clip = str(saver.GetInput("Clip"))
        folder, name = os.path.split(clip)
        m = re.match(r"^(.*?)(\d*)(\.[^.]+)$", name)
        if m is None:
            return False
        head, digits, ext = m.groups()
        pad = len(digits) or 4
        offset = int(saver.GetInput("SequenceStartFrame")) - start if saver.GetInput("SetSequenceStart") else 0
        import OpenImageIO as oiio

        for t in range(start, end + 1):
            mask = source._tool._mask(float(t))
            path = os.path.join(folder, f"{head}{t + offset:0{pad}d}{ext}")
            out = oiio.ImageOutput.create(path)
            spec = oiio.ImageSpec(mask.shape[1], mask.shape[0], 1, "half")
            spec.channelnames = ("A",)
            if out is None or not out.open(path, spec):
                return False
            out.write_image(mask[..., None])
            out.close()
        return True

    def Lock(self) -> None:
        self._locked += 1

    def Unlock(self) -> None:
        self._locked -= 1

    def StartUndo(self, name: str) -> None:
        self._undo.append(name)

    def EndUndo(self, keep: bool = True) -> None:
        pass

    # the fake's own
    def _free_name(self, name: str) -> str:
        if name not in self._tools:
            return name
        m = re.match(r"^(.*?)(\d*)$", name)
        base = m.group(1) if m else name
        n = 1
        while f"{base}{n}" in self._tools or (base + "_" + str(n)) in self._tools:
            n += 1
        return f"{base}_{n}" if name == base or not m or not m.group(2) else f"{base}{n}"

    def _select(self, *tools: Tool) -> None:
        self._selected = list(tools)
        self.ActiveTool = tools[0] if tools else None


class Fusion:
    def __init__(self, resolve: Resolve | None = None) -> None:
        self._resolve = resolve
        self._comp = Comp(self)
        self.UIManager = UIManager()
        self._paths = {"Scripts:": ""}

    def GetCurrentComp(self) -> Comp:
        return self._comp

    def MapPath(self, path: str) -> str:
        for key, value in self._paths.items():
            if path.startswith(key):
                return value + path[len(key):]
        return path


# ========================================================================================== UIManager

# Each element's properties, with their defaults.
_ELEMENTS = {
    "Label": {"Text": "", "WordWrap": False}, "Button": {"Text": ""}, "CheckBox": {"Text": "", "Checked": False},
    "ComboBox": {"CurrentIndex": -1}, "SpinBox": {"Value": 0, "Minimum": 0, "Maximum": 99},
    "DoubleSpinBox": {"Value": 0.0, "Minimum": 0.0, "Maximum": 99.99, "SingleStep": 1.0, "Decimals": 2},
    "LineEdit": {"Text": "", "PlaceholderText": ""}, "TextEdit": {"Text": ""}, "Slider": {"Value": 0},
    "HGroup": {}, "VGroup": {}, "HGap": {}, "VGap": {}, "Timer": {"Interval": 0, "SingleShot": False},
}


class Element:
    def __init__(self, kind: str, props: Any = None, children: Any = None) -> None:
        if isinstance(props, (list, tuple)) and children is None:
            props, children = {}, props
        if kind in ("HGap", "VGap"):
            props = {}
        props = dict(props or {})
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_props", {"Enabled": True, "Hidden": False, "ID": "",
                                            **_ELEMENTS[kind], **props})
        object.__setattr__(self, "_children", list(children or []))
        object.__setattr__(self, "_items", [])
        object.__setattr__(self, "_window", None)
        object.__setattr__(self, "_active", False)
        if kind == "SpinBox" or kind == "DoubleSpinBox":
            self._clamp()

    def __getattr__(self, name: str) -> Any:
        props = object.__getattribute__(self, "_props")
        if name == "CurrentText" and self._kind == "ComboBox":
            i = props["CurrentIndex"]
            return self._items[i] if 0 <= i < len(self._items) else ""
        if name in props:
            return props[name]
        raise AttributeError(f"{self._kind} has no {name}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._props and name not in ("Text", "Enabled", "Hidden", "ToolTip"):
            raise AttributeError(f"{self._kind} has no {name}")
        self._props[name] = value
        if self._kind in ("SpinBox", "DoubleSpinBox") and name == "Value":
            self._clamp()

    def _clamp(self) -> None:
        v = min(max(self._props["Value"], self._props["Minimum"]), self._props["Maximum"])
        self._props["Value"] = int(v) if self._kind == "SpinBox" else float(v)

    # ComboBox
    def AddItems(self, items: list) -> None:
        self._items.extend(str(i) for i in items)
        if self._props["CurrentIndex"] < 0 and self._items:
            self._props["CurrentIndex"] = 0

    def AddItem(self, item: str) -> None:
        self.AddItems([item])

    def Count(self) -> int:
        return len(self._items)

    # Button
    def Click(self) -> None:
        if self._window is not None and self._props["Enabled"]:
            self._window._fire(self._props["ID"], "Clicked")

    # Timer
    def Start(self) -> None:
        object.__setattr__(self, "_active", True)

    def Stop(self) -> None:
        object.__setattr__(self, "_active", False)

    # Window-ish, on every element
    def Show(self) -> None:
        pass

    def Hide(self) -> None:
        pass

    def GetChildren(self) -> list:
        return list(self._children)

    def _walk(self) -> list[Element]:
        out: list[Element] = [self]
        for c in self._children:
            out += c._walk()
        return out


class _Handlers:
    """``win.On.ID.Event = fn`` / ``win.On[ID].Event = fn``."""

    def __init__(self, table: dict) -> None:
        object.__setattr__(self, "_table", table)

    def __getattr__(self, element: str) -> Any:
        return _EventSlot(self._table, element)

    def __getitem__(self, element: str) -> Any:
        return _EventSlot(self._table, element)


class _EventSlot:
    def __init__(self, table: dict, element: str) -> None:
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_element", element)

    def __setattr__(self, event: str, fn: Any) -> None:
        self._table[(self._element, event)] = fn

    def __getattr__(self, event: str) -> Any:
        return self._table.get((self._element, event))


class Window:
    def __init__(self, dispatcher: UIDispatcher, props: dict, root: Element) -> None:
        self._disp = dispatcher
        self._props = dict(props)
        self._root = root
        self.On = _Handlers(dispatcher._handlers)
        self._shown = False
        for e in root._walk():
            object.__setattr__(e, "_window", self)

    def GetItems(self) -> dict:
        items = {e._props["ID"]: e for e in self._root._walk() if e._props.get("ID")}
        items[self._props.get("ID", "")] = self
        return items

    def Find(self, ID: str) -> Element | None:
        return self.GetItems().get(ID)

    def Show(self) -> None:
        self._shown = True

    def Hide(self) -> None:
        self._shown = False

    def RecalcLayout(self) -> None:
        pass

    # the fake's own
    def _fire(self, element: str, event: str, **info: Any) -> None:
        fn = self._disp._handlers.get((element, event))
        if fn is not None:
            fn({"who": element, "what": event, **info})

    def _texts(self) -> list[str]:
        return [str(e._props.get("Text", "")) for e in self._root._walk() if e._kind == "Label"]


class UIManager:
    """``fusion.UIManager``: ``ui.Label({...})``, ``ui.VGroup([...])``, ``ui.Timer({...})``..."""

    def __getattr__(self, kind: str) -> Any:
        if kind not in _ELEMENTS:
            raise AttributeError(f"UIManager has no element {kind}")

        def make(props: Any = None, children: Any = None, *more: Any) -> Element:
            if kind in ("HGap", "VGap"):
                return Element(kind)
            element = Element(kind, props, children)
            if kind == "Timer":
                _timers.append(element)
            return element

        return make


_timers: list[Element] = []
_ui_script: list = []  # test hook: callables(window) that RunLoop plays, one per turn, before firing timers
_windows: list[Window] = []  # test hook: every window made, in order


class UIDispatcher:
    def __init__(self, ui: UIManager) -> None:
        self._ui = ui
        self._handlers: dict = {}
        self.On = _Handlers(self._handlers)
        self._exit = False
        self._window: Window | None = None

    def AddWindow(self, props: dict, children: Any = None) -> Window:
        root = children if isinstance(children, Element) else Element("VGroup", {}, children)
        window = Window(self, props, root)
        self._window = window
        _windows.append(window)
        return window

    def ExitLoop(self, code: int = 0) -> None:
        self._exit = True

    def RunLoop(self, timeout_s: float = 300.0) -> int:
        self._exit = False
        deadline = time.monotonic() + timeout_s
        window = self._window
        while not self._exit:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake UI loop ran too long")
            acted = bool(_ui_script)
            if acted:  # the user does one thing...
                _ui_script.pop(0)(window)
                if self._exit:
                    break
            running = [t for t in _timers if t._active and t._props["ID"]
                       and (t._props["ID"], "Timeout") in self._handlers]
            for t in running:  # ...and the running timers tick once
                time.sleep(min(float(t._props["Interval"]) / 1000.0, 0.05))
                self._handlers[(t._props["ID"], "Timeout")]({"who": t._props["ID"], "what": "Timeout"})
            if not acted and not running:
                if window is not None:  # nothing left for the user to do: they close the window
                    window._fire(window._props.get("ID", ""), "Close")
                self._exit = True
        return 0


# ================================================================================================ bmd


def scriptapp(name: str, host: str = "localhost", *more: Any) -> Any:
    return _apps.get(name)


_apps: dict[str, Any] = {}


def _install(resolve: Resolve) -> None:
    """Test hook: what ``scriptapp`` answers."""
    _apps.clear()
    _apps.update({"Resolve": resolve, "Fusion": resolve.Fusion()})


def readstring(text: str) -> Any:
    """A Lua table (a ``.setting`` / ``.comp`` text) as nested dicts: ``Name { ... }`` keeps its constructor
    under ``"__ctor"``, positional entries are keyed 1, 2, ..."""
    return _LuaParser(text).parse()


def readfile(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return readstring(f.read())


_TOKEN = re.compile(r"""\s*(?:(--[^\n]*)|(-?\d+\.?\d*(?:[eE][-+]?\d+)?)|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_.]*)|(.))""",
                    re.S)


class _LuaParser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, Any]] = []
        for m in _TOKEN.finditer(text):
            comment, number, string, name, other = m.groups()
            if comment:
                continue
            if number is not None:
                self.tokens.append(("num", float(number) if any(c in number for c in ".eE") else int(number)))
            elif string is not None:
                self.tokens.append(("str", re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                                                  string[1:-1])))
            elif name is not None:
                self.tokens.append(("name", name))
            elif other and not other.isspace():
                self.tokens.append(("op", other))
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, Any]:
        return self.tokens[self.i + k] if self.i + k < len(self.tokens) else ("eof", None)

    def take(self, kind: str | None = None, value: Any = None) -> Any:
        tok = self.peek()
        if (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise ValueError(f"Lua table: expected {value or kind}, got {tok[1]!r} at token {self.i}")
        self.i += 1
        return tok[1]

    def parse(self) -> Any:
        value = self.value()
        if self.peek()[0] != "eof":
            raise ValueError(f"Lua table: trailing {self.peek()[1]!r}")
        return value

    def value(self) -> Any:
        kind, tok = self.peek()
        if kind in ("num", "str"):
            self.i += 1
            return tok
        if kind == "op" and tok == "{":
            return self.table()
        if kind == "name":
            self.i += 1
            if tok in ("true", "false"):
                return tok == "true"
            if tok == "nil":
                return None
            if self.peek() == ("op", "("):
                self.take("op", "(")
                self.take("op", ")")
            table = self.table()
            if tok != "ordered":
                table["__ctor"] = tok
            return table
        raise ValueError(f"Lua table: unexpected {tok!r}")

    def table(self) -> dict:
        self.take("op", "{")
        out: dict[Any, Any] = {}
        n = 1
        while self.peek() != ("op", "}"):
            if self.peek() == ("op", "["):
                self.take("op", "[")
                key = self.value()
                self.take("op", "]")
                self.take("op", "=")
                out[key] = self.value()
            elif self.peek()[0] == "name" and self.peek(1) == ("op", "="):
                key = self.take("name")
                self.take("op", "=")
                out[key] = self.value()
            else:
                out[n] = self.value()
                n += 1
            if self.peek() in (("op", ","), ("op", ";")):
                self.i += 1
        self.take("op", "}")
        return out
