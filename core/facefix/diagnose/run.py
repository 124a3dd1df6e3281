"""``diagnose``: the analysis pass (detect, track), a second pass gathering each track's samples, the scores, spans
and verdicts, and (for the HTML report) the worst frames before and after the suggested repair."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FaceFixError, InputError
from ..faces import FaceTracks
from ..params import Settings
from . import scores as sc
from .report import Diagnosis, TrackDiagnosis
from .samples import TrackSamples, collect_samples
from .verdict import find_spans, flag_frames, shot_verdict, suggest_controls, suggested_command, track_verdict

__all__ = ["diagnose_source", "diagnose_tracks", "score_track", "identity_embedder", "Preview", "repair_previews",
           "default_output_for"]


def identity_embedder(device: torch.device | str = "cpu") -> tuple[Callable[[torch.Tensor], torch.Tensor], str, float]:
    """(embed, descriptor name, drift threshold): the project's identity model where one loads
    (``facefix.identity.load_identity_model``), else ``embed_faces``' default."""
    from .. import identity

    model: Any = None
    loader = getattr(identity, "load_identity_model", None)
    if callable(loader):
        try:
            model = loader(device)
        except (FaceFixError, OSError, ImportError):
            model = None
    descriptor = str(getattr(model, "descriptor", None) or getattr(model, "name", None) or "model") if model is not None \
        else str(getattr(identity, "DESCRIPTOR", "facefix.lbp-hog.1"))
    threshold = sc.drift_threshold(model, descriptor)

    def embed(crops: torch.Tensor) -> torch.Tensor:
        return identity.embed_faces(crops, model)
    return embed, descriptor, threshold


def _reference_frames(count: int, fps: float) -> int:
    """The first second's frames (at most half the track, so something is left to compare)."""
    return max(1, min(int(round(fps)), count // 2))


def score_track(samples: TrackSamples, *, fps: float = 24.0, reference: torch.Tensor | None = None,
                thresholds: dict[str, float] | None = None, descriptor: str = "", reference_label: str = "first second"
                ) -> TrackDiagnosis:
    """Scores, flags, spans and verdict of one track's samples. reference: (R, D) embeddings of the --reference
    image (None: the track's first second)."""
    th = dict(sc.THRESHOLDS if thresholds is None else thresholds)
    numbers = list(samples.numbers)
    t = len(numbers)
    crops = samples.stacked_crops()
    boil, flow_warp = sc.motion_scores(crops, numbers)
    scores = {
        # The mesh sees a warp where it follows the features (true meshes, --tracks); the flow where it does not.
        "warp": np.maximum(sc.warp_scores(samples.points, numbers), flow_warp),
        "boil": boil,
        "waxy": sc.waxy_scores(sc.texture_energy(crops), np.asarray(samples.scorable, bool)) if t else np.zeros(0),
        "drift": np.zeros(t),
    }
    ref_n = _reference_frames(t, fps)
    identity: dict[str, Any] = {"descriptor": descriptor, "drift_threshold": th["drift"]}
    if samples.embeddings:
        emb = torch.stack(samples.embeddings)
        ref = reference if reference is not None else emb[:ref_n]
        scores["drift"] = sc.drift_scores(emb, ref)
        identity.update({"reference": reference_label if reference is not None else "first second",
                         "median_drift": round(float(np.median(scores["drift"])), 4),
                         "max_drift": round(float(np.max(scores["drift"])), 4)})
        if reference is None:
            identity["reference_frames"] = [numbers[0], numbers[ref_n - 1]]
    flags = flag_frames(scores, th)
    spans = find_spans(numbers, scores, flags, th)
    v = track_verdict(samples.track_id, numbers, flags, spans, 0 if reference is not None else ref_n)
    return TrackDiagnosis(samples.track_id, numbers, scores, flags, spans, identity, v.verdict, v.reasons)


def diagnose_tracks(frames: Callable[[], Any], tracks: FaceTracks, *, input_label: str, numbers: Sequence[int],
                    device: torch.device | str = "cpu", fps: float = 24.0, reference: torch.Tensor | None = None,
                    reference_label: str = "first second", output_label: str | None = None,
                    frames_arg: str | None = None, progress: bool = False,
                    hands: tuple[list[Any], str | None] = ([], None)) -> Diagnosis:
    """The diagnosis of ``tracks`` over ``frames()`` (an iterable of (number, working RGB (H, W, 3)) in order)."""
    t0 = time.perf_counter()
    embed, descriptor, drift_th = identity_embedder(device)
    thresholds = dict(sc.THRESHOLDS, drift=drift_th)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(numbers), unit="frame", desc="diagnose", dynamic_ncols=True)
    try:
        per_track = collect_samples(frames(), tracks, device=device, embed=embed,
                                    on_frame=(lambda n: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    ref_emb = embed(reference) if reference is not None else None
    ordered = sorted((s for s in per_track.values() if s.numbers), key=lambda s: (s.numbers[0], s.track_id))
    refs: dict[int, tuple[torch.Tensor, str]] = {}
    if ref_emb is None:
        # A face whose appearance changes enough splits its track: the track that takes over where another ended
        # (same place, within a few frames) is measured against that one's first second, so drift is not lost.
        for s in ordered:
            prev = _predecessor(s, ordered)
            if prev is not None and s.embeddings:
                base = refs.get(prev.track_id)
                own = (torch.stack(prev.embeddings)[:_reference_frames(len(prev.numbers), fps)],
                       f"track {prev.track_id}'s first second (this track takes over from it)")
                refs[s.track_id] = base if base is not None else own
    diagnosed = []
    for s in ordered:
        ref, label = (ref_emb, reference_label) if ref_emb is not None else refs.get(s.track_id, (None, ""))
        diagnosed.append(score_track(s, fps=fps, reference=ref, thresholds=thresholds, descriptor=descriptor,
                                     reference_label=label))
    from .verdict import TrackVerdict

    shot = shot_verdict([TrackVerdict(d.verdict, d.reasons) for d in diagnosed])
    controls = suggest_controls([d.spans for d in diagnosed], [d.flags for d in diagnosed])
    out = output_label or default_output_for(input_label)
    first_last = [int(numbers[0]), int(numbers[-1])] if len(numbers) else []
    return Diagnosis(input_label, first_last, diagnosed, thresholds, shot.verdict, shot.reasons,
                     suggested_command(input_label, out, controls, frames_arg), controls, hands=hands[0],
                     hands_note=hands[1], seconds=time.perf_counter() - t0)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _predecessor(track: TrackSamples, ordered: Sequence[TrackSamples], gap: int = 3) -> TrackSamples | None:
    """The track that ended at most ``gap`` frames before ``track`` started, where it starts (box overlap)."""
    first = track.numbers[0]
    best, best_iou = None, 0.3
    for other in ordered:
        if other is track or not other.numbers or not first - gap - 1 <= other.numbers[-1] < first:
            continue
        iou = _box_iou(other.faces[-1].box, track.faces[0].box)
        if iou > best_iou:
            best, best_iou = other, iou
    return best


def default_output_for(input_path: str) -> str:
    """Where the suggested command writes: a ``fixed`` folder beside the input, same file name."""
    p = Path(input_path)
    return str(p.parent / "fixed" / p.name)


def _analyse_hands(source: object, numbers: Sequence[int], settings: Settings) -> tuple[list[Any], str | None]:
    """Hands, where ``facefix.hands`` is installed: (its flagged spans, None); else ([], why not). Frames stream
    through it one at a time."""
    try:
        from ..hands import analyse_hands
    except ImportError:
        return [], "hands not analysed: facefix.hands is not available in this install"
    from ..analyse import working_rgb

    is_float = bool(getattr(source, "is_float", False))

    def frames() -> Any:
        for n in numbers:
            rgb = working_rgb(source.read(n).pixels, settings.colorspace, is_float)  # type: ignore[attr-defined]
            yield torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))
    try:
        got = analyse_hands(frames(), list(numbers)).to_json()
    except FaceFixError as err:
        return [], f"hands not analysed: {err}"
    spans = got.get("spans", []) if isinstance(got, dict) else list(got)
    return list(spans), None


def diagnose_source(source_path: str, settings: Settings, *, frames: str | None = None, reference: str | None = None,
                    progress: bool = True, tracks: FaceTracks | None = None, output_label: str | None = None
                    ) -> tuple[Diagnosis, Any, FaceTracks]:
    """Diagnose the shot at ``source_path``; returns (the diagnosis, the open source, its tracks)."""
    from ..analyse import reference_crops, track_clip, working_rgb
    from ..engine import resolve_device
    from ..io import open_source

    device = resolve_device(settings.device)
    src = open_source(source_path, frames)
    numbers = list(src.frame_numbers)
    if not numbers:
        raise InputError(f"{source_path}: no frames to diagnose")
    if tracks is None:
        tracks = track_clip(src, numbers, settings, device=device, progress=progress)
    ref = None
    if reference is not None:
        ref, _ = reference_crops(reference, src, FaceTracks(tracks=(), metadata={}), settings, device=device)
    is_float = bool(src.is_float)

    def read() -> Any:
        for n in numbers:
            yield n, working_rgb(src.read(n).pixels, settings.colorspace, is_float)

    hands = _analyse_hands(src, numbers, settings)
    diagnosis = diagnose_tracks(read, tracks, input_label=source_path, numbers=numbers, device=device,
                                fps=float(getattr(src, "fps", 24.0) or 24.0), reference=ref,
                                reference_label=reference or "first second", output_label=output_label,
                                frames_arg=frames, progress=progress, hands=hands)
    return diagnosis, src, tracks


@dataclass(frozen=True)
class Preview:
    track: int
    frame: int
    before: np.ndarray  # (h, w, 3) sRGB in [0, 1]: the face's region of the frame
    after: np.ndarray  # the same region after the suggested repair
    model: str


def _face_region(face: Any, shape: tuple[int, int], grow: float = 1.6) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = face.box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, grow * max(x1 - x0, y1 - y0) / 2
    h, w = shape
    return max(0, int(cx - r)), max(0, int(cy - r)), min(w, int(cx + r)), min(h, int(cy + r))


def repair_previews(diagnosis: Diagnosis, source: Any, tracks: FaceTracks, settings: Settings, *,
                    count: int = 3, model: str | None = None, progress: bool = False) -> list[Preview]:
    """The worst frames of each track before and after the suggested repair, run through ``facefix.api.Session``
    with the embedded restorer (``realesrgan-face``, else ``passthrough`` where it cannot load)."""
    from ..analyse import working_rgb
    from ..api import Session
    from ..errors import ModelError

    wanted = [(d.id, n) for d in diagnosis.tracks for n in d.worst_frames(diagnosis.thresholds, count)]
    if not wanted:
        return []
    is_float = bool(getattr(source, "is_float", False))
    available = set(int(n) for n in source.frame_numbers)
    base = {"colorspace": "srgb", "device": settings.device, **diagnosis.controls}
    session = None
    for name in ([model] if model else ["realesrgan-face", "passthrough"]):
        try:
            session = Session({**base, "model": name}).warm()
            break
        except ModelError:
            continue
    if session is None:
        return []
    used = str(session.settings.model)
    out = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(wanted), unit="frame", desc=f"preview ({used})", dynamic_ncols=True)
    with session:
        k = session.lookahead
        for tid, n in wanted:
            track = next(t for t in tracks.tracks if t.id == tid)
            face = track.faces[n]
            nums = [m for m in range(n - k, n + k + 1) if m in available]
            imgs = [working_rgb(source.read(m).pixels, settings.colorspace, is_float) for m in nums]
            after_n = len([m for m in nums if m > n])
            session.reset()
            got = session.restore(imgs, tracks, nums, colorspace="srgb", lookahead=after_n)
            done = got[nums.index(n)].image
            x0, y0, x1, y1 = _face_region(face, imgs[0].shape[:2])
            before = imgs[nums.index(n)][y0:y1, x0:x1, :3]
            out.append(Preview(tid, n, np.clip(before, 0, 1), np.clip(done[y0:y1, x0:x1, :3], 0, 1), used))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
