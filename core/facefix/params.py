"""The one parameter schema: the node's controls, declared once.

The CLI options, the Nuke knobs and the Resolve inputs are all generated from ``PARAMS``
(OpenFX-style descriptors). ``Settings`` is the validated, frozen set of values the core uses.
Animatable parameters may arrive per frame from a host (``Settings.at(frame)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .errors import SettingsError

__all__ = ["Param", "PARAMS", "RUN_PARAMS", "Settings", "param", "schema", "SCHEMA_VERSION", "RESTORER_CHOICES",
           "COLORSPACE_CHOICES", "CODEC_CHOICES"]

Kind = Literal["float", "int", "bool", "choice", "str"]

# Kept here (not imported from the registries) so that reading the schema never imports torch.
RESTORER_CHOICES = ("gfpgan-1.4", "gfpgan-1.3", "restoreformer", "codeformer", "realesrgan-face", "passthrough")
UPSCALER_CHOICES = ("x4plus", "x4plus-anime", "animevideov3")
COLORSPACE_CHOICES = ("auto", "srgb", "linear", "acescg", "rec709", "raw")
DETECTOR_CHOICES = ("blazeface", "retinaface")
CODEC_CHOICES = ("auto", "h264", "h264-10", "h265", "prores", "dnxhr", "mjpeg", "ffv1")
SCHEMA_VERSION = "facefix.Schema.2"


@dataclass(frozen=True)
class Param:
    """One control: its type, default, range, help and whether a host may animate it."""

    name: str
    kind: Kind
    default: Any
    help: str
    label: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    animatable: bool = False
    group: str = "restore"

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def display_label(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` to this parameter's type and check its range; raise SettingsError."""
        flag = self.cli_flag
        try:
            if self.kind == "float":
                v: Any = float(value)
                if v != v:
                    raise ValueError("NaN")
            elif self.kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                v = int(value)
            elif self.kind == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    v = low in ("1", "true", "yes", "on")
                else:
                    v = bool(value)
            elif self.kind == "choice":
                v = type(self.choices[0])(value)
                if v not in self.choices:
                    raise SettingsError(
                        f"{flag}: {value!r} is not one of {', '.join(str(c) for c in self.choices)}"
                    )
            else:
                v = "" if value is None else str(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{flag}: {value!r} is not a valid {self.kind}") from None
        if self.minimum is not None and v < self.minimum:
            raise SettingsError(f"{flag}: {v} is below the minimum {self.minimum}")
        if self.maximum is not None and v > self.maximum:
            raise SettingsError(f"{flag}: {v} is above the maximum {self.maximum}")
        return v


PARAMS: tuple[Param, ...] = (
    Param("model", "choice", "gfpgan-1.4", "Face restoration model.", choices=RESTORER_CHOICES),
    Param("strength", "float", 1.0, "Blend of the restored face over the original (0 = original).",
          minimum=0.0, maximum=1.0, animatable=True),
    Param("fidelity", "float", 0.5, "CodeFormer fidelity weight: 0 = most restoration, 1 = closest to input.",
          minimum=0.0, maximum=1.0, animatable=True),
    Param("faces", "choice", "all", "Which faces to fix.", choices=("all", "largest", "ids", "reference"),
          group="faces"),
    Param("face_ids", "str", "", "Comma-separated track ids to fix when --faces ids.", group="faces"),
    Param("reference", "str", "", "Image of the character to fix when --faces reference.", group="faces"),
    Param("min_face", "int", 24, "Faces smaller than this (pixels) are skipped and counted.",
          minimum=4, maximum=4096, group="faces"),
    Param("detector", "choice", "blazeface", "Face detector when no --tracks are given.",
          choices=DETECTOR_CHOICES, group="faces"),
    Param("mask", "choice", "mesh", "Face matte shape: face-oval from the landmark mesh, or the aligned box.",
          choices=("mesh", "box"), group="mask"),
    Param("mask_expand", "float", 0.0, "Grow (+) or shrink (-) the face matte, as a fraction of face size.",
          minimum=-0.3, maximum=0.5, animatable=True, group="mask"),
    Param("mask_feather", "float", 0.08, "Softness of the matte edge, as a fraction of face size.",
          minimum=0.0, maximum=0.5, animatable=True, group="mask"),
    Param("color_match", "float", 1.0, "Match the restored face's colour to the original's local colour.",
          minimum=0.0, maximum=1.0, animatable=True, group="mask"),
    Param("temporal", "float", 0.5, "Temporal stabilisation of restored faces (0 = off).",
          minimum=0.0, maximum=1.0, group="temporal"),
    Param("deboil", "float", 0.0, "De-boil: before restoring, replace what flickers in for fewer than 4 frames "
          "(ghosted features, per-frame texture) by what the 3 frames either side agree on (0 = off).",
          minimum=0.0, maximum=1.0, animatable=True, group="repair"),
    Param("regrain", "float", 0.0, "Regrain: add grain matched to the plate around the face where the restored "
          "face is smoother than the plate (waxy skin; 0 = off).", minimum=0.0, maximum=1.0, animatable=True,
          group="repair"),
    Param("dewarp", "float", 0.0, "De-warp: before restoring, undo shape changes of the landmark mesh lasting fewer than 4 frames (an eye drifting, the mouth widening then springing back) by warping the face back to the shape the 3 frames either side agree on (0 = off).", minimum=0.0, maximum=1.0, animatable=True, group="repair"),
    Param("upscale", "choice", 1, "Upscale the whole frame after the face pass.", choices=(1, 2, 4),
          group="upscale"),
    Param("upscale_model", "choice", "x4plus", "Upscaler: x4plus for live action, anime models for stylised footage.",
          choices=UPSCALER_CHOICES, group="upscale"),
    Param("colorspace", "choice", "auto",
          "Colourspace of the input (auto: sRGB for integer files and movies, scene-linear for float files).",
          choices=COLORSPACE_CHOICES, group="colour"),
    Param("device", "choice", "auto", "Compute device.", choices=("auto", "cpu", "cuda"), group="compute"),
    Param("batch", "int", 0, "Frames processed together; 0 = auto: 16 on a GPU, 4 on the CPU (output does not "
          "depend on it).", minimum=0, maximum=256, group="compute"),
)

# Run-level options: not part of a frame's look (``Settings``) but of a job; hosts offer them as their own group.
RUN_PARAMS: tuple[Param, ...] = (
    Param("frames", "str", "", "Frame range, e.g. 1001-1100, 1001-1100x2 or 1,5,9-12 (empty: every frame found).",
          group="run"),
    Param("tracks", "str", "", "FaceTracks JSON to use instead of detecting (from `facefix track` or a host).",
          group="run"),
    Param("matte", "str", "", "Also write the face alpha matte to this image-sequence pattern.", group="run"),
    Param("mask_input", "str", "", "A mask image sequence (the plate's size; its alpha, else its first channel) "
          "that limits where the fix applies: 0 = the plate untouched, 1 = the full fix.", group="run"),
    Param("codec", "choice", "auto", "Movie codec (auto: by container: .mov ProRes 422 HQ, .mp4/.mkv H.264).",
          choices=CODEC_CHOICES, group="run"),
    Param("resume", "bool", False, "Skip frames already written (image sequences); the result equals one "
          "uninterrupted run.", group="run"),
    Param("compile", "bool", False, "CUDA: compile the face model (about a minute) and the stabiliser's flow "
          "first, then run ~2x faster. For long shots.", group="run"),
)

_BY_NAME = {p.name: p for p in PARAMS}


def param(name: str) -> Param:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SettingsError(f"unknown parameter {name!r}") from None


@dataclass(frozen=True)
class Settings:
    """Validated values of every parameter. Build with ``Settings.from_mapping``."""

    model: str = "gfpgan-1.4"
    strength: float = 1.0
    fidelity: float = 0.5
    faces: str = "all"
    face_ids: str = ""
    reference: str = ""
    min_face: int = 24
    detector: str = "blazeface"
    mask: str = "mesh"
    mask_expand: float = 0.0
    mask_feather: float = 0.08
    color_match: float = 1.0
    temporal: float = 0.5
    deboil: float = 0.0
    regrain: float = 0.0
    dewarp: float = 0.0
    upscale: int = 1
    upscale_model: str = "x4plus"
    colorspace: str = "auto"
    device: str = "auto"
    batch: int = 0
    # Per-frame values of animated parameters from a host: {name: {frame: value}}.
    animation: Mapping[str, Mapping[int, float]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "animation":
                continue
            object.__setattr__(self, f.name, param(f.name).coerce(getattr(self, f.name)))
        for name, curve in self.animation.items():
            p = param(name)
            if not p.animatable:
                raise SettingsError(f"{p.cli_flag} cannot be animated")
            for v in curve.values():
                p.coerce(v)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_mapping(self) -> dict[str, Any]:
        return {p.name: getattr(self, p.name) for p in PARAMS}

    def at(self, frame: int) -> Settings:
        """The settings at ``frame``: animated values interpolated linearly between keys, held outside."""
        if not self.animation:
            return self
        values = {name: _interpolate(curve, frame) for name, curve in self.animation.items()}
        return replace(self, animation={}, **values)  # type: ignore[arg-type]

    @property
    def track_ids(self) -> tuple[int, ...]:
        if not self.face_ids.strip():
            return ()
        try:
            return tuple(int(s) for s in self.face_ids.split(",") if s.strip())
        except ValueError:
            raise SettingsError(f"--face-ids: {self.face_ids!r} is not a comma-separated list of ids") from None


def _interpolate(curve: Mapping[int, float], frame: int) -> float:
    keys = sorted(curve)
    if not keys:
        raise SettingsError("empty animation curve")
    if frame <= keys[0]:
        return float(curve[keys[0]])
    if frame >= keys[-1]:
        return float(curve[keys[-1]])
    for a, b in zip(keys, keys[1:]):
        if a <= frame <= b:
            t = (frame - a) / (b - a)
            return float(curve[a]) * (1 - t) + float(curve[b]) * t
    raise AssertionError("unreachable")


def _describe(p: Param) -> dict[str, Any]:
    return {"name": p.name, "label": p.display_label, "type": p.kind, "default": p.default, "help": p.help,
            "min": p.minimum, "max": p.maximum, "choices": list(p.choices), "animatable": p.animatable,
            "group": p.group, "flag": p.cli_flag}


def schema() -> dict[str, Any]:
    """The node's controls as JSON-ready data: ``params`` (the look: every ``Settings`` field, animatable ones
    marked) and ``run`` (the job's options: frames, tracks, matte, codec, resume, compile). The CLI options,
    the Nuke knobs and the Resolve inputs are all built from this."""
    return {"version": SCHEMA_VERSION, "params": [_describe(p) for p in PARAMS],
            "run": [_describe(p) for p in RUN_PARAMS]}


def params_in(groups: Sequence[str] | None = None) -> tuple[Param, ...]:
    return tuple(p for p in PARAMS if groups is None or p.group in groups)
