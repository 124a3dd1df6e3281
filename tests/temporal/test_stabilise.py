"""Temporal stabilisation: measured on real-face clips with known ground truth (see conftest.py).

- boiling: flicker (motion-compensated, true flows) must drop by at least 50 %;
- (real motion and blinks: test_stabilise_motion.py);
- chunk safety, batch-composition invariance, determinism, strength 0 = identity.
"""

from __future__ import annotations

import pytest
import torch

from facefix.errors import InputError, SettingsError
from facefix.temporal import TrackHistory, flicker, preroll_frames, stabilise_window

torch.set_num_threads(1)

STRENGTH = 0.5  # the schema's default for --temporal


def _region_error(out: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame mean absolute error inside ``mask``."""
    return ((out - truth).abs() * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * out.shape[1])


@pytest.mark.parametrize("grain", [0.0, 1.0])
def test_boiling_flicker_drops_by_half(aligned_clip, boil_clip, run_track, grain):
    clip = aligned_clip(12, 256, drift=(0.4, 0.2), rotate_deg=0.1, jitter=0.5, seed=1)
    restored = boil_clip(clip, amplitude=0.06, grain_sigma=grain)
    out = run_track(clip.inputs, restored, STRENGTH)
    flows = clip.consecutive_flows()  # from the known transforms, not from the code under test
    before = flicker(restored, clip.mask, flows)
    after = flicker(out, clip.mask, flows)
    floor = flicker(clip.clean, clip.mask, flows)  # resampling residue of the clean clip itself
    assert before > 5 * floor
    assert after <= 0.5 * before, f"flicker {before:.4f} -> {after:.4f}"


def test_chunks_with_preroll_are_bit_identical(aligned_clip, boil_clip, run_track):
    clip = aligned_clip(30, 64, drift=(1.5, 0.5), rotate_deg=0.4, jitter=0.8, occlude=(13, 3), seed=3)
    restored = boil_clip(clip, amplitude=0.05, seed=11)
    one_pass = run_track(clip.inputs, restored, STRENGTH, batch=30)
    first = run_track(clip.inputs, restored, STRENGTH, frames=range(0, 15), batch=4)
    second = run_track(clip.inputs, restored, STRENGTH, frames=range(15, 30), batch=3)
    assert torch.equal(one_pass, torch.cat([first, second]))
    # Without pre-roll the second chunk would differ: the test can tell.
    no_preroll = TrackHistory(preroll_frames(STRENGTH))
    for f in range(15, 18):
        no_preroll.push(1, f, clip.inputs[f], restored[f])
    ins, rs, ok = no_preroll.window(1, 17)
    assert not torch.equal(stabilise_window(ins[None], rs[None], ok[None], STRENGTH)[0], one_pass[17])


def test_batch_composition_and_repeat_runs_are_identical(aligned_clip, boil_clip, run_track):
    clip = aligned_clip(7, 256, drift=(2.0, 1.0), rotate_deg=0.5, seed=4)
    restored = boil_clip(clip, amplitude=0.05)
    k = preroll_frames(STRENGTH)
    hist = TrackHistory(k)
    other = TrackHistory(k)  # a second track, mirrored, mixed into the batch
    for f in range(7):
        hist.push(1, f, clip.inputs[f], restored[f])
        other.push(2, f, clip.inputs[f].flip(-1), restored[f].flip(-1))
    ins, rs, ok = hist.windows([(1, 6)])
    ins2, rs2, ok2 = other.windows([(2, 6)])
    alone = stabilise_window(ins, rs, ok, STRENGTH)
    mixed = stabilise_window(torch.cat([ins2, ins, ins2]), torch.cat([rs2, rs, rs2]), torch.cat([ok2, ok, ok2]),
                             STRENGTH)
    again = stabilise_window(ins, rs, ok, STRENGTH)
    assert torch.equal(alone[0], mixed[1])
    assert torch.equal(alone, again)
    assert not torch.equal(alone[0], rs[0, -1])  # it did something


def test_strength_zero_and_missing_history_return_the_restored_crop(aligned_clip, boil_clip, run_track):
    clip = aligned_clip(5, 64, drift=(1.0, 0.0))
    restored = boil_clip(clip, amplitude=0.05)
    ins, rs = clip.inputs[None], restored[None]
    ok = torch.ones(1, 5, dtype=torch.bool)
    assert torch.equal(stabilise_window(ins, rs, ok, 0.0)[0], restored[-1])
    none_valid = ok.clone()
    none_valid[:, :-1] = False
    assert torch.equal(stabilise_window(ins, rs, none_valid, 1.0)[0], restored[-1])
    assert torch.equal(stabilise_window(ins[:, -1:], rs[:, -1:], ok[:, -1:], 1.0)[0], restored[-1])


def test_an_occluder_appearing_is_not_blended_with_the_past(aligned_clip, boil_clip, run_track):
    clip = aligned_clip(6, 128, drift=(1.0, 0.5), seed=6)
    restored = boil_clip(clip, amplitude=0.04)
    inputs = clip.inputs.clone()
    blocks = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    patch = torch.nn.functional.interpolate(blocks, size=(30, 30), mode="nearest")[0]
    inputs[5, :, 70:100, 30:60] = patch  # a hand in front of the cheek, in the last frame only
    restored[5, :, 70:100, 30:60] = patch
    out = run_track(inputs, restored, 1.0)[5]
    inner = (slice(None), slice(74, 96), slice(34, 56))
    assert float((out[inner] - patch[:, 4:26, 4:26]).abs().mean()) < 0.01


def test_static_face_is_a_fixed_point(aligned_clip):
    clip = aligned_clip(1, 128)
    frames = clip.clean.expand(5, -1, -1, -1)
    out = stabilise_window(frames[None], frames[None], torch.ones(1, 5, dtype=torch.bool), 1.0)
    assert float((out[0] - clip.clean[0]).abs().max()) < 1e-5


def test_preroll_frames_and_strength_validation():
    assert preroll_frames(0.0) == 0
    assert preroll_frames(0.5) == 4
    assert preroll_frames(1.0) == 6
    assert all(preroll_frames(s / 10) <= preroll_frames((s + 1) / 10) for s in range(10))
    with pytest.raises(SettingsError):
        preroll_frames(1.5)
    with pytest.raises(SettingsError):
        stabilise_window(torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 2, 3, 8, 8), torch.ones(1, 2, dtype=torch.bool),
                         -0.1)


def test_window_shape_errors():
    x = torch.zeros(1, 3, 3, 8, 8)
    with pytest.raises(InputError):
        stabilise_window(x, x[:, :2], torch.ones(1, 3, dtype=torch.bool), 0.5)
    with pytest.raises(InputError):
        stabilise_window(x, x, torch.ones(1, 3), 0.5)  # not bool
    with pytest.raises(InputError):
        stabilise_window(x[0], x[0], torch.ones(3, dtype=torch.bool), 0.5)


def test_track_history_windows_gaps_and_pruning():
    hist = TrackHistory(3)
    crop = lambda v: torch.full((3, 4, 4), float(v))  # noqa: E731
    for f in (10, 11, 13, 14):  # frame 12 missing (not detected)
        hist.push(5, f, crop(f), crop(-f))
    ins, rs, ok = hist.window(5, 14)
    assert ok.tolist() == [True, False, True, True]
    assert ins[:, 0, 0, 0].tolist() == [11.0, 0.0, 13.0, 14.0]
    assert rs[:, 0, 0, 0].tolist() == [-11.0, 0.0, -13.0, -14.0]
    assert len(hist) == 3  # frame 10 dropped: no later window can read it
    with pytest.raises(InputError, match="track 5 frame 15"):
        hist.window(5, 15)
    with pytest.raises(InputError):
        hist.window(6, 14)
    with pytest.raises(InputError):
        hist.push(5, 15, crop(1), torch.zeros(4, 4))  # not (C, h, w)
    with pytest.raises(InputError):
        hist.push(5, 15, crop(1), torch.zeros(1, 4, 4))  # another channel count
    hist.drop(5)
    assert len(hist) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_is_chunk_safe(aligned_clip, boil_clip, run_track):
    clip = aligned_clip(12, 256, drift=(1.5, 0.5), rotate_deg=0.4, jitter=0.8, seed=5)
    restored = boil_clip(clip, amplitude=0.05)
    cpu = run_track(clip.inputs, restored, STRENGTH)
    gi, gr = clip.inputs.cuda(), restored.cuda()
    one = run_track(gi, gr, STRENGTH, batch=12)
    two = torch.cat([run_track(gi, gr, STRENGTH, frames=range(0, 6), batch=4),
                     run_track(gi, gr, STRENGTH, frames=range(6, 12), batch=5)])
    assert torch.equal(one, two)
    assert float((one.cpu() - cpu).abs().mean()) < 1e-3


def test_pipeline_stabiliser_equals_full_size_windows(aligned_clip, boil_clip, run_track):
    """ClipStabiliser keeps past inputs at the flow's resolution only: the same output, bit for bit, as
    windows of full-size crops (run_track), for two tracks batched together, one with a missing frame."""
    import numpy as np

    from facefix.faces import Face, FaceBatch
    from facefix.temporal import ClipStabiliser

    clip = aligned_clip(10, 256, drift=(1.0, 0.5), jitter=0.5, seed=11)
    restored = boil_clip(clip, amplitude=0.05)
    gap = 6  # track 2 is not seen on this frame
    lm = np.array([[60.0, 80], [120, 80], [90, 110], [65, 140], [115, 140]])
    stab = ClipStabiliser(STRENGTH)
    got: dict[int, list[torch.Tensor]] = {1: [], 2: []}
    for start in range(0, 10, 4):
        numbers = list(range(start, min(10, start + 4)))
        faces = [[Face(box=(0, 0, 1, 1), landmarks=lm, track_id=t) for t in (1, 2) if not (t == 2 and n == gap)]
                 for n in numbers]
        batch = FaceBatch.build(faces, 256)
        rows = [(n, f.track_id) for n, fs in zip(numbers, faces) for f in fs]
        # Track 2 sees the clip mirrored: a different face history, in the same batches.
        pick = lambda x, n, t: x[n] if t == 1 else x[n].flip(-1)  # noqa: E731
        out = stab.stabilise(batch, numbers, torch.stack([pick(clip.inputs, n, t) for n, t in rows]),
                             torch.stack([pick(restored, n, t) for n, t in rows]))
        for (_, t), crop in zip(rows, out):
            got[t].append(crop)
    assert torch.equal(torch.stack(got[1]), run_track(clip.inputs, restored, STRENGTH))
    ins2, rs2 = clip.inputs.flip(-1), restored.flip(-1)
    keep = [n for n in range(10) if n != gap]
    expected2 = []
    hist = TrackHistory(preroll_frames(STRENGTH))
    for n in keep:
        hist.push(2, n, ins2[n], rs2[n])
        w_in, w_rs, ok = hist.window(2, n)
        expected2.append(stabilise_window(w_in[None], w_rs[None], ok[None], STRENGTH)[0])
    assert torch.equal(torch.stack(got[2]), torch.stack(expected2))


def _pipeline_stabiliser(clip, restored, per_batch, device, compile=False):
    """ClipStabiliser over a clip's frames in batches of ``per_batch``, as the pipeline feeds it: two tracks
    (the second sees the clip mirrored) in each batch; returns the stabilised crops in frame order."""
    import numpy as np

    from facefix.faces import Face, FaceBatch
    from facefix.temporal import ClipStabiliser

    lm = np.array([[60.0, 80], [120, 80], [90, 110], [65, 140], [115, 140]])
    stab = ClipStabiliser(STRENGTH, compile=compile)
    frames = clip.inputs.shape[0]
    out = []
    for start in range(0, frames, per_batch):
        numbers = list(range(start, min(frames, start + per_batch)))
        faces = [[Face(box=(0, 0, 1, 1), landmarks=lm, track_id=t) for t in (1, 2)] for _ in numbers]
        pick = lambda x, n, t: (x[n] if t == 1 else x[n].flip(-1)).to(device)  # noqa: E731
        rows = [(n, t) for n in numbers for t in (1, 2)]
        out.append(stab.stabilise(FaceBatch.build(faces, 256), numbers,
                                  torch.stack([pick(clip.inputs, n, t) for n, t in rows]),
                                  torch.stack([pick(restored, n, t) for n, t in rows])))
    return torch.cat(out)


def test_flow_weights_trace_as_one_graph(aligned_clip, boil_clip):
    """What compiled_flow_weights compiles is one graph (no break falls back to small launches), and tracing
    it changes nothing: torch.compile's eager backend gives the eager result bit for bit."""
    from facefix.temporal.stabilise import flow_weights, reduce_for_flow

    clip = aligned_clip(4, 256, drift=(1.0, 0.5), jitter=0.5, seed=2)
    lo = reduce_for_flow(clip.inputs)
    ref, past, prior = lo[1:], lo[:-1], torch.tensor([0.5, 0.0, 1.0]).view(3, 1, 1, 1)
    traced = torch.compile(flow_weights, backend="eager", fullgraph=True)
    for got, want in zip(traced(ref, past, prior), flow_weights(ref, past, prior)):
        assert torch.equal(got, want)


def test_the_flow_is_compiled_only_with_compile_on_cuda():
    from facefix import Settings
    from facefix.engine import Engine
    from facefix.temporal.stabilise import flow_weights

    engine = Engine(Settings(model="passthrough", device="cpu"), compile=True)
    assert engine.stabiliser(STRENGTH)._weights is flow_weights
    assert engine.stabiliser(STRENGTH).preroll == preroll_frames(STRENGTH)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_flow_on_cuda_is_batch_safe_and_close_to_eager(aligned_clip, boil_clip):
    """The pipeline's stabiliser with its flow compiled (--compile on CUDA): the same bits however the frames
    are batched, and within the GPU/CPU tolerance of the eager steps."""
    from facefix.temporal.stabilise import compiled_flow_weights

    clip = aligned_clip(10, 256, drift=(1.5, 0.5), rotate_deg=0.4, jitter=0.8, seed=5)
    restored = boil_clip(clip, amplitude=0.05)
    runs = [_pipeline_stabiliser(clip, restored, per_batch, "cuda", compile=True) for per_batch in (4, 3, 10)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    eager = _pipeline_stabiliser(clip, restored, 4, "cuda")
    diff = (runs[0] - eager).abs()
    print(f"compiled vs eager stabiliser on CUDA: mean {float(diff.mean()):.2e}, max {float(diff.max()):.2e}")
    assert float((runs[0] - eager).abs().mean()) < 1e-4 and float((runs[0] - eager).abs().max()) < 2e-2
    assert compiled_flow_weights.cache_info().currsize == 1  # one compiled function for every batch
