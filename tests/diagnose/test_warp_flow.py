"""The flow part of the warp score: a transient local warp of a feature is flagged, a blink and speech are not,
on aligned crops with known truth and through the embedded detector and tracker."""

from __future__ import annotations

import functools

import numpy as np
import torch

from facefix.demo import synth
from facefix.diagnose import scores as sc

N = 9


def _aligned(stills: list[np.ndarray]) -> torch.Tensor:
    """The stills (H, W, 3) as aligned crops at the analysis size, drifting by about a pixel a frame."""
    from facefix.geometry import crop_from_frame_matrix, warp_affine

    imgs = torch.from_numpy(np.ascontiguousarray(np.stack(stills).transpose(0, 3, 1, 2)))
    lms = np.stack([synth.ASTRONAUT_LANDMARKS + np.array([0.6 * t, -0.4 * t]) for t in range(len(stills))])
    mats = crop_from_frame_matrix(lms, sc.ANALYSIS_SIZE)
    idx = np.arange(len(stills), dtype=np.int64)
    return warp_affine(imgs, mats, (sc.ANALYSIS_SIZE, sc.ANALYSIS_SIZE), src_index=idx).clamp(0, 1)


def _iod() -> float:
    lm = synth.ASTRONAUT_LANDMARKS
    return float(np.linalg.norm(lm[1] - lm[0]))


def _expressive(n: int = N) -> list[np.ndarray]:
    """A blink from frame 1 and speech-like mouth motion (period 6 frames), as the accuracy clips have."""
    still, lm = synth.astronaut(), synth.ASTRONAUT_LANDMARKS
    closure = np.zeros(n)
    closure[1:8] = (0.45, 0.9, 1.0, 1.0, 0.7, 0.35, 0.1)[: n - 1]
    mouth = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / 6.0)
    return [synth.mouth_open(synth.blink(still, lm, closure[t]), lm, mouth[t]) for t in range(n)]


@functools.lru_cache(maxsize=1)
def _expressive_warp() -> np.ndarray:
    """The flow warp score of the expressive frames (no warp)."""
    return sc.motion_scores(_aligned(_expressive()), list(range(N)))[1]


def test_a_blink_and_speech_are_not_a_warp():
    warp = _expressive_warp()
    assert warp[3:-3].max() < sc.THRESHOLDS["warp"]
    assert np.all(warp[:3] == 0) and np.all(warp[-3:] == 0)  # clipped windows: no score


def test_a_transient_warp_of_a_mouth_corner_is_flagged_and_its_neighbours_are_not():
    lm = synth.ASTRONAUT_LANDMARKS
    stills = _expressive()
    for t, amount in ((3, 0.6), (4, 1.0), (5, 0.6)):
        stills[t], _ = synth.local_warp(stills[t], lm[3], (-8.0 * amount, -5.0 * amount), 0.3 * _iod())
    _, warp = sc.motion_scores(_aligned(stills), list(range(N)))
    assert warp[4] > sc.THRESHOLDS["warp"]
    assert warp[4] > _expressive_warp()[4] + sc.THRESHOLDS["warp"]


def test_flow_warp_score_reads_only_what_articulation_cannot_explain():
    h = sc.ANALYSIS_SIZE
    m = sc.face_masks(h)
    px = 512 / h
    flow = torch.zeros(3, 2, h, h)
    bump = sc._ellipse(h, 256, 420, 30, 14).float()  # on the jaw, below the lip line
    flow[0, 1] = 20.0 / px * bump  # speech: the jaw opens vertically
    flow[1, 0] = 20.0 / px * bump  # the same bump sideways: no articulation moves the jaw like that
    eye = sc._ellipse(h, 193, 240, 30, 12).float()
    flow[2, 1] = 20.0 / px * eye  # a lid closing
    got = sc.flow_warp_score(flow)
    assert got[0] == 0.0 and got[2] == 0.0
    assert got[1] > sc.THRESHOLDS["warp"]
    assert m["jaw"][int(420 / px), int(256 / px)] and m["eyes"][int(240 / px), int(193 / px)]


def test_a_warp_through_the_embedded_detector_is_flagged():
    """The repair clip's warp (an eye or mouth corner drifting ~10 px for 3 frames) found from the detector's
    own tracks; the same clip without the warp (motion, a blink, speech) is not flagged."""
    from facefix.analyse import track_clip
    from facefix.diagnose.clips import ArraySource
    from facefix.diagnose.run import score_track
    from facefix.diagnose.samples import collect_samples
    from facefix.params import Settings

    settings = Settings.from_mapping({"colorspace": "srgb", "device": "cpu"})
    got = {}
    for kind in ("warp", "clean"):
        clip = synth.repair_clip(kind, 10, (192, 192), seed=2, scale=1.2, at=3)
        src = ArraySource(clip.frames)
        tracks = track_clip(src, src.frame_numbers, settings, device="cpu", progress=False)
        samples = [s for s in collect_samples(enumerate(clip.frames), tracks).values() if s.numbers]
        assert len(samples) == 1
        got[kind] = score_track(samples[0])
    warp = got["warp"]
    assert bool(warp.flags["warp"][warp.numbers.index(4)])
    assert not got["clean"].flags["warp"].any()
