"""The public Python API: what every host (Nuke, Resolve, the job server, farm tasks, scripts) calls.

    from facefix.api import Session, schema

    with Session({"model": "gfpgan-1.4", "strength": 0.8}) as session:
        session.run("plate.####.exr", "fixed/fixed.####.exr", frames="1001-1100")   # a whole shot
        tracks = session.track("plate.####.exr")                                    # FaceTracks
        out = session.restore([image], tracks, [1001], colorspace="linear")         # frame in, frame out

A ``Session`` owns the loaded models (loaded once, kept warm across calls), the per-track temporal state of
frame-by-frame use and the face selection. Everything outside this module, ``facefix.params`` and the
exchange types (``Settings``, ``FaceTracks``, ``Face``, the errors) is private and may change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import FaceFixError, InputError, SettingsError
from .faces import Face, FaceTrack, FaceTracks
from .params import Settings, schema

__all__ = ["Session", "RestoredFrame", "schema", "settings_from", "Settings", "FaceTracks", "FaceTrack", "Face", "FaceFixError"]

Cancel = Callable[[], bool] | threading.Event

# The controls that decide which models a session loads: other settings may vary from call to call.
_MODEL_KEYS = ("model", "upscale", "upscale_model", "device")


class RestoredFrame(NamedTuple):
    """One frame out of ``Session.restore``: the image (the input's shape and type; float32 when
    upscaling) and the face matte (H, W) float32 in [0, 1] at the output size."""

    image: np.ndarray
    matte: np.ndarray


def settings_from(values: Settings | Mapping[str, Any] | None) -> Settings:
    """Validated ``Settings`` from what a host sends: control names to values, an animatable control possibly
    as ``{frame: value}`` keyframes (frame keys may be strings, as in JSON); a one-line SettingsError else."""
    return _settings(_keyframes(values))


def _settings(values: Settings | Mapping[str, Any] | None) -> Settings:
    if values is None:
        return Settings()
    if isinstance(values, Settings):
        return values
    if not isinstance(values, Mapping):
        raise SettingsError(f"settings must be a Settings or a mapping of control names, got {type(values).__name__}")
    return Settings.from_mapping(values)


def _cancel_check(cancel: Cancel | None) -> Callable[[], bool] | None:
    if cancel is None:
        return None
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


class Session:
    """A warm FaceFix: settings, the models they need and the temporal state of a shot.

    settings: a ``Settings`` or a mapping of control names (``schema()["params"]``) to values; animatable
    controls may be ``{frame: value}`` keyframes. device: overrides ``settings.device`` (``cpu``, ``cuda``,
    ``cuda:1``). model_path: a weights file to use instead of the installed model. compile: CUDA only,
    compile the model first (about a minute; then ~2x faster).

    Use it as a context manager: leaving it frees the models and their GPU memory. A session is not
    thread-safe: give each thread its own, or serialise calls.
    """

    def __init__(self, settings: Settings | Mapping[str, Any] | None = None, *, device: str | None = None,
                 model_path: str | None = None, compile: bool = False) -> None:
        self.settings = settings_from(settings)
        from .engine import Engine

        self._start(Engine(self.settings, restorer_path=model_path, compile=compile, device=device))

    def _start(self, engine: Any) -> None:
        """Run on ``engine``'s models with fresh per-shot state (temporal, repair, face selection)."""
        self._engine: Any = engine
        self._stabiliser: Any = None
        self._repairer: Any = None
        self._selected: tuple[int, dict[int, list[Face]]] | None = None  # (id of the FaceTracks, faces by frame)
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the models (and their GPU memory); the session cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._stabiliser = None
            self._repairer = None
            self._selected = None
            self._engine.release()

    def _open(self) -> Any:
        if self._closed:
            raise FaceFixError("this Session is closed")
        return self._engine

    @property
    def device(self) -> str:
        """The device the session computes on, e.g. ``cuda:0`` or ``cpu``."""
        return str(self._engine.device)

    @property
    def preroll(self) -> int:
        """Frames before a frame that its result depends on (its temporal stabilisation and repair; 0 with
        --temporal 0 and every repair control 0): to get exactly what the command line writes for frame t,
        restore frames t-preroll..t-1 of its tracks first."""
        from .repair import repair_window
        from .temporal import preroll_frames

        return (preroll_frames(self.settings.temporal) if self.settings.temporal > 0 else 0) + repair_window(self.settings)

    @property
    def lookahead(self) -> int:
        """Frames after a frame that its repair reads (``--deboil``: 3; 0 with every repair control 0): give them
        in the same ``restore`` call, after it, as ``lookahead`` frames."""
        from .repair import repair_window

        return repair_window(self.settings)

    def warm(self) -> Session:
        """Load the models now (they otherwise load on first use); a bad or missing model fails here."""
        engine = self._open()
        engine.restorer()
        if self.settings.upscale > 1:
            engine.upscaler()
        return self

    def reset(self) -> None:
        """Forget the temporal state (a new shot, or frames out of order that should not be blended)."""
        self._stabiliser = None
        self._repairer = None
        self._selected = None

    # -- frame in, frame out ----------------------------------------------------------------------------
    def restore(self, frames: Sequence[np.ndarray], faces: FaceTracks | Sequence[Sequence[Face]],
                frame_numbers: Sequence[int] | None = None, *, colorspace: str | None = None,
                bits: int | Sequence[int | None] | None = None,
                masks: Sequence[np.ndarray | None] | None = None, lookahead: int = 0) -> list[RestoredFrame]:
        """Restore a batch of frames with their tracked faces; returns one ``RestoredFrame`` per frame (but the
        look-ahead ones).

        frames: (H, W, C>=3) arrays, float32 in ``colorspace`` or a file's uint8/uint16 integer codes (of
        stored depth ``bits``); channels past RGB pass through. faces: the shot's ``FaceTracks`` (faces are
        looked up by frame number, selected by the settings' ``faces`` control over the whole shot), or each
        frame's faces (then ``largest`` and ``reference`` see only the frames given). frame_numbers: the
        frames' numbers (default 0, 1, ...): animated controls and the temporal state key on them.
        colorspace: the frames' colourspace (default: the settings'; ``auto`` = scene-linear for float32
        frames, sRGB for integer codes, as the command line decides for float and integer files). masks: per
        frame the host's mask (H, W) in [0, 1] or None: the fix applies only where it is above 0, in proportion.

        lookahead: the last ``lookahead`` of ``frames`` (with their faces and numbers) are the frames that follow
        the batch, given only for the repair controls' look-ahead (``--deboil`` reads ``self.lookahead`` frames
        after each frame): no result is returned for them, and they are restored when a later call gives them as
        frames. A frame whose following frames are not given is repaired as if its track ended there.

        Called frame by frame (or batch by batch) in frame order, the result equals what ``facefix restore``
        writes for the same frames and settings (for frame t, given frames t-``preroll``..t-1 of its tracks
        before it in this session, and frames t+1..t+``lookahead`` in the same call, as look-ahead frames when
        they are not restored in it). Pixels outside the matte are the input's own, bit for bit.
        """
        from .colour import colour_transform, resolve_colorspace
        from .pipeline import queue_batch

        engine = self._open()
        images = [np.asarray(f) for f in frames]
        numbers = [int(n) for n in frame_numbers] if frame_numbers is not None else list(range(len(images)))
        if len(numbers) != len(images):
            raise InputError(f"restore: {len(images)} frames but {len(numbers)} frame numbers")
        if len(set(numbers)) != len(numbers):
            raise InputError("restore: a frame number appears twice in one call")
        if not 0 <= lookahead < max(1, len(images)):
            raise InputError(f"restore: {lookahead} look-ahead frames of {len(images)} frames (at least one to restore)")
        for i, (n, img) in enumerate(zip(numbers, images)):
            if img.ndim != 3 or img.shape[2] < 3:
                raise InputError(f"restore: frame {n}: expected an (H, W, C>=3) array, got shape {img.shape}")
            if img.dtype not in (np.float32, np.uint8, np.uint16):
                images[i] = img.astype(np.float32)
        tracks = faces if isinstance(faces, FaceTracks) else self._tracks_of(faces, numbers)
        per_frame = self._faces(tracks, numbers)
        is_float = all(img.dtype == np.float32 for img in images)
        ct = colour_transform(resolve_colorspace(colorspace or self.settings.colorspace, is_float))
        if self.settings.temporal > 0 and self._stabiliser is None:
            self._stabiliser = engine.stabiliser(self.settings.temporal)
        stabilise = self._stabiliser.stabilise if self._stabiliser is not None else None
        if self._repairer is None and self.lookahead:
            from .repair import ClipRepairer

            self._repairer = ClipRepairer(self.lookahead)
        if masks is not None:
            if len(masks) != len(images):
                raise InputError(f"restore: {len(images)} frames but {len(masks)} masks")
            for n, img, m in zip(numbers, images, masks):
                if m is not None and np.shape(m) != img.shape[:2]:
                    raise InputError(f"restore: frame {n}: the mask is {np.shape(m)}, the frame {img.shape[:2]}")
        pending = queue_batch(images, [per_frame[n] for n in numbers], self.settings, engine, frame_numbers=numbers,
                              colorspace=ct, stabilise=stabilise, bits=bits,
                              masks=[None if m is None else np.asarray(m, np.float32) for m in masks] if masks else None,
                              repair=self._repairer.repair if self._repairer is not None else None, lookahead=lookahead)
        return [RestoredFrame(*p.result()) for p in pending]

    def _tracks_of(self, faces: Sequence[Sequence[Face]], numbers: Sequence[int]) -> FaceTracks:
        if len(faces) != len(numbers):
            raise InputError(f"restore: {len(numbers)} frames but {len(faces)} face lists")
        for n, fs in zip(numbers, faces):
            for f in fs:
                if not isinstance(f, Face):
                    raise InputError(f"restore: frame {n}: faces must be facefix Face objects, got {type(f).__name__}")
        return FaceTracks.from_faces({n: list(fs) for n, fs in zip(numbers, faces)})

    def _faces(self, tracks: FaceTracks, numbers: Sequence[int]) -> dict[int, list[Face]]:
        """The faces to restore on each frame: the selection is made once per shot's FaceTracks."""
        from .run import faces_for_frames

        if self.settings.faces in ("all", "ids"):
            return faces_for_frames(tracks, numbers, self.settings)
        if self._selected is None or self._selected[0] != id(tracks):
            self._selected = (id(tracks), faces_for_frames(tracks, tracks.frame_numbers(), self.settings))
        chosen = self._selected[1]
        return {n: chosen.get(n, []) for n in numbers}

    # -- whole shots ------------------------------------------------------------------------------------
    def run(self, source: str, dest: str, *, frames: str | None = None, tracks: FaceTracks | str | None = None,
            matte: str | None = None, mask: str | None = None, codec: str = "auto", resume: bool = False,
            on_progress: Callable[[int, int], None] | None = None, cancel: Cancel | None = None,
            progress: bool = False, settings: Settings | Mapping[str, Any] | None = None) -> Any:
        """Restore a whole shot from ``source`` to ``dest`` (image sequences in VFX notation, stills, movies),
        as ``facefix restore`` does; returns its ``RunSummary`` (frames written, faces, seconds, ``line()``).

        tracks: FaceTracks (or a FaceTracks JSON path) to use instead of detecting. matte: where to write the
        face matte (an image-sequence pattern). mask: the host's mask (an image sequence of the plate's size:
        its alpha, else its first channel) limiting where the fix applies. on_progress(done, total) after each
        frame is queued for writing. cancel: a ``threading.Event`` or a callable, checked between batches: the
        run stops with ``facefix.errors.Cancelled``, finished frames kept (``resume`` continues). settings:
        this run's controls instead of the session's, with the same models (``for_settings``).
        """
        from .run import run_clip

        engine = self._engine_for(settings)
        if isinstance(tracks, str):
            tracks = FaceTracks.load(tracks)
        return run_clip(source, dest, engine.settings, frames=frames or None, tracks=tracks, resume=resume,
                        progress=progress, codec=codec, matte=matte or None, mask=mask or None, engine=engine,
                        on_progress=on_progress, cancel=_cancel_check(cancel))

    def for_settings(self, settings: Settings | Mapping[str, Any]) -> Session:
        """A session with other controls on this session's models (the same model and upscaler, on its device;
        else a SettingsError), with its own temporal state and face selection: for hosts whose controls change
        from render to render. Closing it leaves this session's models loaded."""
        engine = self._engine_for(settings)
        other = Session.__new__(Session)
        other.settings = engine.settings
        other._start(engine)
        return other

    def uses_models_of(self, settings: Settings | Mapping[str, Any]) -> bool:
        """Whether ``settings`` need the models this session holds (same model and upscaler, on the session's
        device: ``auto`` counts as the device it resolves to)."""
        return not self._other_models(settings_from(settings))

    def _other_models(self, other: Settings) -> list[str]:
        from .engine import resolve_device

        changed = [k for k in _MODEL_KEYS if k != "device" and getattr(other, k) != getattr(self.settings, k)]
        if resolve_device(other.device) != self._engine.device and other.device != self.settings.device:
            changed.append("device")
        return changed

    def _engine_for(self, settings: Settings | Mapping[str, Any] | None) -> Any:
        """The session's engine, or for other settings with the same models a view of it that shares them."""
        engine = self._open()
        if settings is None:
            return engine
        other = settings_from(settings)
        changed = self._other_models(other)
        if changed:
            raise SettingsError(f"these settings need other models than this session holds ({', '.join(changed)}): "
                                "open another Session")
        return engine.sharing_models(other)

    def track(self, source: str, *, frames: str | None = None, output: str | None = None,
              on_progress: Callable[[int, int], None] | None = None, cancel: Cancel | None = None,
              progress: bool = False, settings: Settings | Mapping[str, Any] | None = None) -> FaceTracks:
        """Detect and track every face of ``source`` (frames ``frames``): the shot's ``FaceTracks``, also
        written to ``output`` (JSON, atomically) if given. on_progress(done, total) after each frame analysed;
        cancel is checked after each frame."""
        from .analyse import track_clip
        from .errors import Cancelled
        from .io import open_source

        engine = self._open()
        # Tracking needs no face model: other settings (detector, colourspace...) apply as given.
        chosen = settings_from(settings) if settings is not None else self.settings
        src = open_source(source, frames or None)
        numbers = list(src.frame_numbers)
        if not numbers:
            raise InputError(f"{source}: no frames to analyse")
        check = _cancel_check(cancel)
        count = [0]

        def on_frame(number: int, found: Sequence[Face]) -> None:
            if check is not None and check():
                raise Cancelled(count[0], len(numbers))
            count[0] += 1
            if on_progress is not None:
                on_progress(count[0], len(numbers))

        try:
            tracks = track_clip(src, numbers, chosen, device=engine.device, progress=progress, on_frame=on_frame)
        finally:
            src.close()
        if output:
            tracks.save(output)
        return tracks


def _keyframes(values: Settings | Mapping[str, Any] | None) -> Settings | Mapping[str, Any] | None:
    """Host-style settings: an animatable control given as ``{frame: value}`` keyframes goes to ``animation``
    (its static value is the first key's), frame keys may be strings (JSON)."""
    if values is None or isinstance(values, Settings) or not isinstance(values, Mapping):
        return values
    plain: dict[str, Any] = {}
    animation: dict[str, dict[int, float]] = dict(values.get("animation", {}) or {})
    for name, value in values.items():
        if name == "animation":
            continue
        if isinstance(value, Mapping):
            try:
                curve = {int(k): float(v) for k, v in value.items()}
            except (TypeError, ValueError):
                raise SettingsError(f"{name}: keyframes must be {{frame: number}}, got {value!r}") from None
            if not curve:
                raise SettingsError(f"{name}: no keyframes given")
            animation[name] = curve
            plain[name] = curve[min(curve)]
        else:
            plain[name] = value
    if animation:
        plain["animation"] = animation
    return plain
