"""A minimal OpenFX host in Python + ctypes: loads a bundle and drives one image effect through its actions.

Standard library + numpy only (it runs under an AddressSanitizer preload, where torch is not wanted). It offers
the property, parameter, image effect, memory, multi-thread and message suites (version 1), declared from the
published OpenFX specification, and records every message the plug-in posts.

Convention: frames given to and taken from the host are (H, W, C) arrays, row 0 at the top; the host hands the
plug-in OpenFX images (row y counted from the bottom of ``bounds``), with positive or negative row bytes.
Variadic parameter calls are received as fixed pointer arguments (the x86-64 System V convention passes them
in the same registers), which is why this host runs on x86-64 only.
"""

from __future__ import annotations

import ctypes as C
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OK, FAILED, ERR_UNKNOWN, ERR_BAD_HANDLE, ERR_BAD_INDEX, ERR_UNSUPPORTED, REPLY_DEFAULT = 0, 1, 3, 9, 10, 5, 14
DEPTHS = {"OfxBitDepthFloat": np.float32, "OfxBitDepthShort": np.uint16, "OfxBitDepthByte": np.uint8,
          "OfxBitDepthHalf": np.float16}
COMPONENTS = {4: "OfxImageComponentRGBA", 3: "OfxImageComponentRGB", 1: "OfxImageComponentAlpha"}

P, S, INT, D = C.c_void_p, C.c_char_p, C.c_int, C.c_double
PP = C.POINTER(C.c_void_p)


class OfxRectD(C.Structure):
    _fields_ = [("x1", D), ("y1", D), ("x2", D), ("y2", D)]


FETCH = C.CFUNCTYPE(P, P, S, INT)


class OfxHost(C.Structure):
    _fields_ = [("host", P), ("fetchSuite", FETCH)]


SET_HOST = C.CFUNCTYPE(None, C.POINTER(OfxHost))
MAIN = C.CFUNCTYPE(INT, S, P, P, P)


class OfxPlugin(C.Structure):
    _fields_ = [("pluginApi", S), ("apiVersion", INT), ("pluginIdentifier", S), ("pluginVersionMajor", C.c_uint),
                ("pluginVersionMinor", C.c_uint), ("setHost", SET_HOST), ("mainEntry", MAIN)]


def _suite(name: str, members: list[tuple[str, Any]]) -> type:
    return type(name, (C.Structure,), {"_fields_": members})


class OfxError(Exception):
    """An action that did not return kOfxStatOK (``status``), with the messages the plug-in posted."""

    def __init__(self, action: str, status: int, messages: list[str]) -> None:
        super().__init__(f"{action}: status {status}: {' | '.join(messages)}")
        self.status = status
        self.messages = messages


@dataclass
class PropertySet:
    values: dict[str, list[Any]] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # C strings handed out stay alive with the set

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, [default])[0] if self.values.get(name) else default


@dataclass
class Param:
    kind: str
    name: str
    props: PropertySet
    value: Any = None
    keys: dict[float, float] = field(default_factory=dict)

    def at(self, time: float) -> Any:
        if not self.keys:
            return self.value if self.value is not None else self.props.get("OfxParamPropDefault")
        times = sorted(self.keys)
        if time <= times[0]:
            return self.keys[times[0]]
        if time >= times[-1]:
            return self.keys[times[-1]]
        for a, b in zip(times, times[1:]):
            if a <= time <= b:
                t = (time - a) / (b - a)
                return self.keys[a] * (1 - t) + self.keys[b] * t
        raise AssertionError


@dataclass
class Clip:
    name: str
    props: PropertySet
    frames: Callable[[int], np.ndarray | None] | None = None  # frame number -> top-down (H, W, C) or None
    depth: str = "OfxBitDepthFloat"
    negative_row_bytes: bool = False


@dataclass
class Effect:
    props: PropertySet
    param_set: PropertySet
    params: dict[str, Param] = field(default_factory=dict)
    clips: dict[str, Clip] = field(default_factory=dict)


class Host:
    """Load ``bundle`` (the .ofx file), describe its one plug-in in ``context`` and create an instance.

    host.source(frames_fn, rod=(x1, y1, x2, y2), frame_range=(a, b)); host.set("strength", 0.5) or
    host.set_keys("strength", {1001: 0.0, 1003: 1.0}); host.render(time) -> top-down output frame;
    host.press("analyse"); host.close(). OfxError on a failed action.
    """

    def __init__(self, bundle: str, context: str = "OfxImageEffectContextFilter") -> None:
        self._handles: dict[int, Any] = {}
        self._ids = itertools.count(0x10000, 16)
        self._memory: dict[int, Any] = {}
        self._images: dict[int, tuple[Any, np.ndarray]] = {}
        self._mutexes: dict[int, threading.RLock] = {}
        self.messages: list[str] = []
        self.rod = (0.0, 0.0, 0.0, 0.0)
        self.reported_rod: tuple[float, float, float, float] | None = None  # a region of definition to report
        # instead of ``rod`` (a host's nonsense: NaN, huge), while images keep ``rod``'s size
        self.frame_range = (0.0, 0.0)
        self.aborted = False
        self._suites = self._make_suites()
        self.host_props = PropertySet({"OfxPropName": ["org.facefix.testhost"], "OfxPropLabel": ["FaceFix test host"],
                                       "OfxImageEffectHostPropIsBackground": [0],
                                       "OfxImageEffectPropSupportsMultipleClipDepths": [0],
                                       "OfxImageEffectPropTemporalClipAccess": [1]})
        self._fetch = FETCH(self._fetch_suite)
        self._host = OfxHost(self._handle(self.host_props), self._fetch)
        self.lib = C.CDLL(bundle)
        self.lib.OfxGetNumberOfPlugins.restype = INT
        self.lib.OfxGetPlugin.restype = C.POINTER(OfxPlugin)
        self.lib.OfxGetPlugin.argtypes = [INT]
        if self.lib.OfxGetNumberOfPlugins() != 1:
            raise RuntimeError("expected one plug-in in the bundle")
        self.plugin = self.lib.OfxGetPlugin(0).contents
        if self.plugin.pluginApi != b"OfxImageEffectPluginAPI" or self.plugin.apiVersion != 1:
            raise RuntimeError(f"not an image effect plug-in: {self.plugin.pluginApi!r}")
        self.plugin.setHost(C.byref(self._host))
        self.action("OfxActionLoad", None)
        self.descriptor = Effect(PropertySet(), PropertySet())
        self.action("OfxActionDescribe", self.descriptor)
        self.context_descriptor = Effect(PropertySet({"OfxImageEffectPropContext": [context]}), PropertySet())
        self.action("OfxImageEffectActionDescribeInContext", self.context_descriptor,
                    PropertySet({"OfxImageEffectPropContext": [context]}))
        self.instance = Effect(PropertySet({"OfxImageEffectPropContext": [context]}), PropertySet())
        for name, clip in self.context_descriptor.clips.items():
            props = PropertySet({k: list(v) for k, v in clip.props.values.items()})
            props.values["OfxImageClipPropConnected"] = [int(name != "Mask")]
            self.instance.clips[name] = Clip(name, props)
        for name, p in self.context_descriptor.params.items():
            self.instance.params[name] = Param(p.kind, name, PropertySet({k: list(v) for k, v in p.props.values.items()}))
        self.action("OfxActionCreateInstance", self.instance)
        self._alive = True

    # -- driving the plug-in ------------------------------------------------------------------------------
    def action(self, name: str, effect: Effect | None, in_args: PropertySet | None = None,
               out_args: PropertySet | None = None) -> int:
        before = len(self.messages)
        status = self.plugin.mainEntry(name.encode(), self._handle(effect) if effect is not None else None,
                                       self._handle(in_args) if in_args is not None else None,
                                       self._handle(out_args) if out_args is not None else None)
        if status not in (OK, REPLY_DEFAULT):
            raise OfxError(name, status, self.messages[before:])
        return int(status)

    def source(self, frames: Callable[[int], np.ndarray | None], rod: tuple[float, float, float, float],
               frame_range: tuple[float, float], depth: str = "OfxBitDepthFloat", negative_row_bytes: bool = False,
               components: int = 4) -> None:
        self.rod, self.frame_range = rod, frame_range
        for clip in (self.instance.clips["Source"], self.instance.clips["Output"]):
            clip.depth, clip.negative_row_bytes = depth, negative_row_bytes
            clip.props.values.update({"OfxImageEffectPropPixelDepth": [depth],
                                      "OfxImageEffectPropComponents": [COMPONENTS[components]],
                                      "OfxImageEffectPropFrameRange": list(frame_range)})
        self.instance.clips["Source"].frames = frames

    def mask(self, frames: Callable[[int], np.ndarray | None] | None, depth: str = "OfxBitDepthFloat") -> None:
        clip = self.instance.clips["Mask"]
        clip.frames, clip.depth = frames, depth
        clip.props.values["OfxImageClipPropConnected"] = [int(frames is not None)]

    def set(self, name: str, value: Any) -> None:
        self.instance.params[name].value = value

    def set_keys(self, name: str, keys: dict[float, float]) -> None:
        self.instance.params[name].keys = dict(keys)

    def get(self, name: str, time: float = 0.0) -> Any:
        return self.instance.params[name].at(time)

    def render(self, time: float, window: tuple[int, int, int, int] | None = None,
               scale: float = 1.0, output: np.ndarray | None = None) -> np.ndarray:
        """Render frame ``time``; the output image (the source's region of definition) as a top-down array,
        pixels outside ``window`` left at the host's NaN fill (``output``: the host's own buffer, reused as is)."""
        x1, y1, x2, y2 = (int(v) for v in self.rod)
        window = window or (x1, y1, x2, y2)
        out = self.instance.clips["Output"]
        channels = {v: k for k, v in COMPONENTS.items()}[out.props.get("OfxImageEffectPropComponents")]
        dtype = DEPTHS[out.depth]
        fill = np.nan if dtype in (np.float32, np.float16) else np.iinfo(dtype).max
        self._output = output if output is not None else np.full((y2 - y1, x2 - x1, channels), fill, dtype)
        args = PropertySet({"OfxPropTime": [float(time)], "OfxImageEffectPropFieldToRender": ["OfxImageFieldNone"],
                            "OfxImageEffectPropRenderWindow": list(window),
                            "OfxImageEffectPropRenderScale": [scale, scale]})
        self.action("OfxImageEffectActionRender", self.instance, args)
        return self._output

    def press(self, name: str, time: float = 0.0) -> None:
        args = PropertySet({"OfxPropType": ["OfxTypeParameter"], "OfxPropName": [name],
                            "OfxPropChangeReason": ["OfxChangeUserEdited"], "OfxPropTime": [float(time)],
                            "OfxImageEffectPropRenderScale": [1.0, 1.0]})
        self.action("OfxActionInstanceChanged", self.instance, args)

    def regions_of_interest(self, time: float) -> PropertySet:
        out = PropertySet()
        self.action("OfxImageEffectActionGetRegionsOfInterest", self.instance,
                    PropertySet({"OfxPropTime": [float(time)], "OfxImageEffectPropRenderScale": [1.0, 1.0],
                                 "OfxImageEffectPropRegionOfInterest": list(self.rod)}), out)
        return out

    def frames_needed(self, time: float) -> list[float] | None:
        """The Source frame range the plug-in asks for to render ``time`` (None: it left it to the host)."""
        out = PropertySet()
        self.action("OfxImageEffectActionGetFramesNeeded", self.instance,
                    PropertySet({"OfxPropTime": [float(time)]}), out)
        return out.values.get("OfxImageClipPropFrameRange_Source")

    def close(self) -> None:
        if self._alive:
            self._alive = False
            self.action("OfxActionDestroyInstance", self.instance)
            self.action("OfxActionUnload", None)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handles ----------------------------------------------------------------------------------------------
    def _handle(self, obj: Any) -> int:
        for key, value in self._handles.items():
            if value is obj:
                return key
        key = next(self._ids)
        self._handles[key] = obj
        return key

    def _obj(self, handle: int | None, kind: type) -> Any:
        obj = self._handles.get(handle or 0)
        return obj if isinstance(obj, kind) else None

    # -- suites -----------------------------------------------------------------------------------------------
    def _fetch_suite(self, host: int, name: bytes, version: int) -> int | None:
        suite = self._suites.get((name.decode(), version))
        return C.addressof(suite) if suite is not None else None

    def _make_suites(self) -> dict[tuple[str, int], Any]:
        self._callbacks: list[Any] = []

        def build(name: str, members: list[tuple[str, Any, Callable]]) -> Any:
            struct = _suite(name, [(n, t) for n, t, _ in members])
            made = [t(fn) for _, t, fn in members]
            self._callbacks += made
            return struct(*made)

        f = C.CFUNCTYPE
        return {
            ("OfxPropertySuite", 1): build("Props", [
                ("propSetPointer", f(INT, P, S, INT, P), lambda h, n, i, v: self._set(h, n, i, v)),
                ("propSetString", f(INT, P, S, INT, S), lambda h, n, i, v: self._set(h, n, i, v.decode())),
                ("propSetDouble", f(INT, P, S, INT, D), lambda h, n, i, v: self._set(h, n, i, v)),
                ("propSetInt", f(INT, P, S, INT, INT), lambda h, n, i, v: self._set(h, n, i, v)),
                ("propSetPointerN", f(INT, P, S, INT, PP), lambda h, n, c, v: self._set_n(h, n, [v[k] for k in range(c)])),
                ("propSetStringN", f(INT, P, S, INT, C.POINTER(S)),
                 lambda h, n, c, v: self._set_n(h, n, [v[k].decode() for k in range(c)])),
                ("propSetDoubleN", f(INT, P, S, INT, C.POINTER(D)), lambda h, n, c, v: self._set_n(h, n, list(v[:c]))),
                ("propSetIntN", f(INT, P, S, INT, C.POINTER(INT)), lambda h, n, c, v: self._set_n(h, n, list(v[:c]))),
                ("propGetPointer", f(INT, P, S, INT, PP), lambda h, n, i, out: self._get(h, n, i, out, "p")),
                ("propGetString", f(INT, P, S, INT, PP), lambda h, n, i, out: self._get(h, n, i, out, "s")),
                ("propGetDouble", f(INT, P, S, INT, C.POINTER(D)), lambda h, n, i, out: self._get(h, n, i, out, "d")),
                ("propGetInt", f(INT, P, S, INT, C.POINTER(INT)), lambda h, n, i, out: self._get(h, n, i, out, "i")),
                ("propGetPointerN", f(INT, P, S, INT, PP), lambda h, n, c, out: self._get_n(h, n, c, out, "p")),
                ("propGetStringN", f(INT, P, S, INT, PP), lambda h, n, c, out: self._get_n(h, n, c, out, "s")),
                ("propGetDoubleN", f(INT, P, S, INT, C.POINTER(D)), lambda h, n, c, out: self._get_n(h, n, c, out, "d")),
                ("propGetIntN", f(INT, P, S, INT, C.POINTER(INT)), lambda h, n, c, out: self._get_n(h, n, c, out, "i")),
                ("propReset", f(INT, P, S), lambda h, n: OK),
                ("propGetDimension", f(INT, P, S, C.POINTER(INT)), self._dimension),
            ]),
            ("OfxParameterSuite", 1): build("Params", [
                ("paramDefine", f(INT, P, S, S, PP), self._param_define),
                ("paramGetHandle", f(INT, P, S, PP, PP), self._param_handle),
                ("paramSetGetPropertySet", f(INT, P, PP), self._param_set_props),
                ("paramGetPropertySet", f(INT, P, PP), self._param_props),
                ("paramGetValue", f(INT, P, P, P, P), lambda h, a, b, c: self._param_value(h, None, a)),
                ("paramGetValueAtTime", f(INT, P, D, P, P, P), lambda h, t, a, b, c: self._param_value(h, t, a)),
                ("paramGetDerivative", f(INT, P, D, P), lambda *a: ERR_UNSUPPORTED),
                ("paramGetIntegral", f(INT, P, D, D, P), lambda *a: ERR_UNSUPPORTED),
                ("paramSetValue", f(INT, P, P), self._param_set_value),
                ("paramSetValueAtTime", f(INT, P, D, P), lambda *a: ERR_UNSUPPORTED),
                ("paramGetNumKeys", f(INT, P, C.POINTER(C.c_uint)), self._param_num_keys),
                ("paramGetKeyTime", f(INT, P, C.c_uint, C.POINTER(D)), lambda *a: ERR_UNSUPPORTED),
                ("paramGetKeyIndex", f(INT, P, D, INT, C.POINTER(INT)), lambda *a: ERR_UNSUPPORTED),
                ("paramDeleteKey", f(INT, P, D), lambda *a: ERR_UNSUPPORTED),
                ("paramDeleteAllKeys", f(INT, P), lambda *a: ERR_UNSUPPORTED),
                ("paramCopy", f(INT, P, P, D, P), lambda *a: ERR_UNSUPPORTED),
                ("paramEditBegin", f(INT, P, S), lambda *a: OK),
                ("paramEditEnd", f(INT, P), lambda *a: OK),
            ]),
            ("OfxImageEffectSuite", 1): build("Effect", [
                ("getPropertySet", f(INT, P, PP), lambda h, out: self._effect_part(h, out, "props")),
                ("getParamSet", f(INT, P, PP), lambda h, out: self._effect_part(h, out, "param_set")),
                ("clipDefine", f(INT, P, S, PP), self._clip_define),
                ("clipGetHandle", f(INT, P, S, PP, PP), self._clip_handle),
                ("clipGetPropertySet", f(INT, P, PP), self._clip_props),
                ("clipGetImage", f(INT, P, D, P, PP), self._clip_image),
                ("clipReleaseImage", f(INT, P), self._release_image),
                ("clipGetRegionOfDefinition", f(INT, P, D, C.POINTER(OfxRectD)), self._clip_rod),
                ("abort", f(INT, P), lambda h: int(self.aborted)),
                ("imageMemoryAlloc", f(INT, P, C.c_size_t, PP), lambda e, n, out: self._alloc(n, out)),
                ("imageMemoryFree", f(INT, P), lambda p: self._free(p)),
                ("imageMemoryLock", f(INT, P, PP), lambda p, out: self._lock_memory(p, out)),
                ("imageMemoryUnlock", f(INT, P), lambda p: OK),
            ]),
            ("OfxMemorySuite", 1): build("Memory", [
                ("memoryAlloc", f(INT, P, C.c_size_t, PP), lambda h, n, out: self._alloc(n, out)),
                ("memoryFree", f(INT, P), lambda p: self._free(p)),
            ]),
            ("OfxMultiThreadSuite", 1): build("Threads", [
                ("multiThread", f(INT, C.CFUNCTYPE(None, C.c_uint, C.c_uint, P), C.c_uint, P), self._multi_thread),
                ("multiThreadNumCPUs", f(INT, C.POINTER(C.c_uint)), lambda out: self._put(out, 1)),
                ("multiThreadIndex", f(INT, C.POINTER(C.c_uint)), lambda out: self._put(out, 0)),
                ("multiThreadIsSpawnedThread", f(INT), lambda: 0),
                ("mutexCreate", f(INT, PP, INT), self._mutex_create),
                ("mutexDestroy", f(INT, P), lambda m: OK if self._mutexes.pop(m or 0, None) else ERR_BAD_HANDLE),
                ("mutexLock", f(INT, P), lambda m: self._mutex(m, "acquire")),
                ("mutexUnLock", f(INT, P), lambda m: self._mutex(m, "release")),
                ("mutexTryLock", f(INT, P), lambda m: self._mutex(m, "try")),
            ]),
            ("OfxMessageSuite", 1): build("Messages", [
                ("message", f(INT, P, S, S, S, S), self._message),
            ]),
        }

    # property suite
    def _set(self, h: int, name: bytes, index: int, value: Any) -> int:
        props = self._obj(h, PropertySet)
        if props is None:
            return ERR_BAD_HANDLE
        values = props.values.setdefault(name.decode(), [])
        values.extend([None] * (index + 1 - len(values)))
        values[index] = value
        return OK

    def _set_n(self, h: int, name: bytes, values: list[Any]) -> int:
        props = self._obj(h, PropertySet)
        if props is None:
            return ERR_BAD_HANDLE
        props.values[name.decode()] = values
        return OK

    def _get(self, h: int, name: bytes, index: int, out: Any, kind: str) -> int:
        props = self._obj(h, PropertySet)
        if props is None:
            return ERR_BAD_HANDLE
        values = props.values.get(name.decode())
        if values is None:
            return ERR_UNKNOWN
        if not 0 <= index < len(values):
            return ERR_BAD_INDEX
        value = values[index]
        if kind == "s":
            text = C.create_string_buffer(str(value).encode())
            props.keep.append(text)
            out[0] = C.addressof(text)
        elif kind == "p":
            out[0] = value
        elif kind == "d":
            out[0] = float(value)
        else:
            out[0] = int(value)
        return OK

    def _get_n(self, h: int, name: bytes, count: int, out: Any, kind: str) -> int:
        for k in range(count):
            status = self._get(h, name, k, C.cast(C.addressof(out.contents) + k * C.sizeof(out._type_),
                                                   C.POINTER(out._type_)), kind)
            if status != OK:
                return status
        return OK

    def _dimension(self, h: int, name: bytes, out: Any) -> int:
        props = self._obj(h, PropertySet)
        if props is None:
            return ERR_BAD_HANDLE
        out[0] = len(props.values.get(name.decode(), []))
        return OK

    # parameter suite
    def _param_define(self, h: int, kind: bytes, name: bytes, out: Any) -> int:
        params = self._param_owner(h)
        if params is None:
            return ERR_BAD_HANDLE
        if name.decode() in params:
            return 6  # kOfxStatErrExists
        p = Param(kind.decode(), name.decode(), PropertySet({"OfxParamPropType": [kind.decode()],
                                                             "OfxPropName": [name.decode()]}))
        params[p.name] = p
        if out:
            out[0] = self._handle(p.props)
        return OK

    def _param_owner(self, set_handle: int) -> dict[str, Param] | None:
        props = self._obj(set_handle, PropertySet)
        for effect in (self.descriptor, self.context_descriptor, getattr(self, "instance", None)):
            if effect is not None and effect.param_set is props:
                return effect.params
        return None

    def _param_handle(self, h: int, name: bytes, out: Any, props_out: Any) -> int:
        params = self._param_owner(h)
        p = params.get(name.decode()) if params is not None else None
        if p is None:
            return ERR_UNKNOWN
        out[0] = self._handle(p)
        if props_out:
            props_out[0] = self._handle(p.props)
        return OK

    def _param_set_props(self, h: int, out: Any) -> int:
        out[0] = h
        return OK

    def _param_props(self, h: int, out: Any) -> int:
        p = self._obj(h, Param)
        if p is None:
            return ERR_BAD_HANDLE
        out[0] = self._handle(p.props)
        return OK

    def _param_value(self, h: int, time: float | None, out: int) -> int:
        p = self._obj(h, Param)
        if p is None or not out:
            return ERR_BAD_HANDLE
        value = p.at(0.0 if time is None else time)
        if p.kind == "OfxParamTypeDouble":
            C.cast(out, C.POINTER(D))[0] = float(value)
        elif p.kind in ("OfxParamTypeInteger", "OfxParamTypeBoolean", "OfxParamTypeChoice"):
            C.cast(out, C.POINTER(INT))[0] = int(value)
        elif p.kind == "OfxParamTypeString":
            text = C.create_string_buffer(str(value if value is not None else "").encode())
            p.props.keep.append(text)
            C.cast(out, PP)[0] = C.addressof(text)
        else:
            return ERR_UNSUPPORTED
        return OK

    def _param_set_value(self, h: int, value: int) -> int:
        p = self._obj(h, Param)
        if p is None:
            return ERR_BAD_HANDLE
        if p.kind != "OfxParamTypeString":
            return ERR_UNSUPPORTED  # this host only takes strings through the variadic call
        p.value = C.string_at(value).decode() if value else ""
        return OK

    def _param_num_keys(self, h: int, out: Any) -> int:
        p = self._obj(h, Param)
        if p is None:
            return ERR_BAD_HANDLE
        out[0] = len(p.keys)
        return OK

    # image effect suite
    def _effect_part(self, h: int, out: Any, part: str) -> int:
        effect = self._obj(h, Effect)
        if effect is None:
            return ERR_BAD_HANDLE
        out[0] = self._handle(getattr(effect, part))
        return OK

    def _clip_define(self, h: int, name: bytes, out: Any) -> int:
        effect = self._obj(h, Effect)
        if effect is None:
            return ERR_BAD_HANDLE
        clip = Clip(name.decode(), PropertySet({"OfxPropName": [name.decode()]}))
        effect.clips[clip.name] = clip
        out[0] = self._handle(clip.props)
        return OK

    def _clip_handle(self, h: int, name: bytes, out: Any, props_out: Any) -> int:
        effect = self._obj(h, Effect)
        clip = effect.clips.get(name.decode()) if effect is not None else None
        if clip is None:
            return ERR_UNKNOWN
        out[0] = self._handle(clip)
        if props_out:
            props_out[0] = self._handle(clip.props)
        return OK

    def _clip_props(self, h: int, out: Any) -> int:
        clip = self._obj(h, Clip)
        if clip is None:
            return ERR_BAD_HANDLE
        out[0] = self._handle(clip.props)
        return OK

    def _clip_rod(self, h: int, time: float, out: Any) -> int:
        if self._obj(h, Clip) is None:
            return ERR_BAD_HANDLE
        out[0] = OfxRectD(*(self.reported_rod or self.rod))
        return OK

    def _clip_image(self, h: int, time: float, region: int, out: Any) -> int:
        clip = self._obj(h, Clip)
        if clip is None:
            return ERR_BAD_HANDLE
        x1, y1, x2, y2 = (int(v) for v in self.rod)
        if clip.name == "Output":
            pixels = self._output
        else:
            if clip.frames is None:
                return FAILED
            frame = clip.frames(int(round(time)))
            if frame is None:
                return FAILED
            pixels = np.ascontiguousarray(frame)
        dtype = pixels.dtype
        depth = {np.dtype(v): k for k, v in DEPTHS.items()}[dtype]
        h_, w_, c_ = pixels.shape
        stride = w_ * c_ * dtype.itemsize
        if clip.negative_row_bytes or clip.name == "Output":
            # top-down memory: the bottom row (y1) is the last one; rows go up by -stride
            data, row_bytes, keep = pixels.ctypes.data + (h_ - 1) * stride, -stride, pixels
        else:
            keep = np.ascontiguousarray(pixels[::-1])
            data, row_bytes = keep.ctypes.data, stride
        props = PropertySet({"OfxImagePropData": [data], "OfxImagePropBounds": [x1, y1, x1 + w_, y1 + h_],
                             "OfxImagePropRowBytes": [row_bytes], "OfxImageEffectPropPixelDepth": [depth],
                             "OfxImageEffectPropComponents": [COMPONENTS[c_]], "OfxImagePropPixelAspectRatio": [1.0],
                             "OfxImagePropRegionOfDefinition": [x1, y1, x2, y2]})
        handle = self._handle(props)
        self._images[handle] = (props, keep)
        out[0] = handle
        return OK

    def _release_image(self, h: int) -> int:
        if self._images.pop(h or 0, None) is None:
            return ERR_BAD_HANDLE
        self._handles.pop(h, None)
        return OK

    def _alloc(self, n: int, out: Any) -> int:
        block = C.create_string_buffer(max(1, n))
        self._memory[C.addressof(block)] = block
        out[0] = C.addressof(block)
        return OK

    def _free(self, p: int | None) -> int:
        return OK if self._memory.pop(p or 0, None) is not None else ERR_BAD_HANDLE

    def _lock_memory(self, p: int, out: Any) -> int:
        out[0] = p
        return OK

    # multi-thread and message suites
    def _multi_thread(self, fn: Any, n: int, arg: int) -> int:
        for i in range(max(1, n)):
            fn(i, max(1, n), arg)
        return OK

    @staticmethod
    def _put(out: Any, value: int) -> int:
        out[0] = value
        return OK

    def _mutex_create(self, out: Any, count: int) -> int:
        lock = threading.RLock()
        key = next(self._ids)
        self._mutexes[key] = lock
        for _ in range(count):
            lock.acquire()
        out[0] = key
        return OK

    def _mutex(self, m: int, what: str) -> int:
        lock = self._mutexes.get(m or 0)
        if lock is None:
            return ERR_BAD_HANDLE
        if what == "try":
            return OK if lock.acquire(blocking=False) else FAILED
        getattr(lock, what)()
        return OK

    def _message(self, h: int, kind: bytes, ident: bytes, fmt: bytes, arg: bytes) -> int:
        text = fmt.decode()
        if "%s" in text and arg is not None:
            text = text.replace("%s", arg.decode(errors="replace"), 1)
        self.messages.append(f"{kind.decode()}: {text}")
        return OK
