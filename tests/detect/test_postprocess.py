"""The batched post-processing of BlazeFace (candidates, per-region and per-frame NMS on the CPU) gives
exactly what the straightforward per-region loop gives, whatever the crop batch size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facefix.demo import synth
from facefix.detect import BlazeFaceDetector
from facefix.detect.blazeface import (
    BlazeFace,
    Detections,
    _crop_grid,
    crop_rects,
    decode_raw,
    weighted_nms,
    weighted_nms_groups,
)

torch.set_num_threads(1)

# (x, y, eye distance px, roll degrees): faces of several sizes, so that tiles of every level find some.
FACES = ((60, 60, 7, 0), (200, 90, 10, 10), (380, 70, 14, -15), (540, 260, 22, 0), (150, 250, 35, 5),
         (380, 230, 50, 0))


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """Two 640x360 frames (the second mirrored) with faces of 7 to 50 px eye distance."""
    still, lm = synth.astronaut(), synth.ASTRONAUT_LANDMARKS
    c = lm.mean(0)
    eye = float(np.linalg.norm(lm[1] - lm[0]))
    frame = np.full((360, 640, 3), 0.45, np.float32)
    for x, y, d, rot in FACES:
        m = synth.similarity(d / eye, rot, x - c[0], y - c[1], center=(c[0], c[1]))
        frame = synth.warp_still(still, m, (360, 640), background=frame)
    x = torch.from_numpy(frame.transpose(2, 0, 1))[None].contiguous()
    return torch.cat([x, x.flip(-1)])


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    # min_face 16: tiles of 154, 307 and 614 px besides the whole frame (27 regions a frame).
    return BlazeFaceDetector(min_face=16, mesh=False)


# -- the straightforward way: one region at a time ---------------------------------------------------
def reference_detect_squares(net: BlazeFace, frames: torch.Tensor, index: torch.Tensor, center: torch.Tensor,
                             side: torch.Tensor, batch: int) -> list[Detections]:
    thr = net.spec.min_score
    s = net.spec.input_size
    out = []
    for k0 in range(0, len(index), batch):
        sl = slice(k0, k0 + batch)
        sides = side[sl]
        crops = crop_rects(frames, index[sl], center[sl], torch.stack([sides, sides], -1), torch.zeros_like(sides),
                           s, padding="zeros", quantize=net.quantize)
        boxes, kps, scores = decode_raw(*net.raw(crops * 2.0 - 1.0), net.anchors, s)
        for j in range(crops.shape[0]):
            keep = scores[j] >= thr
            det = weighted_nms(Detections(boxes[j][keep], kps[j][keep], scores[j][keep]), net.spec.iou_threshold)
            sd = sides[j]
            origin = center[k0 + j] - sd / 2
            out.append(Detections(det.boxes * sd + origin.repeat(2), det.keypoints * sd + origin, det.scores))
    return out


def reference_detect(det: BlazeFaceDetector, frames: torch.Tensor, batch: int) -> tuple[list[Detections], list[Detections]]:
    """Per-region detections, and per-frame merged ones."""
    n, _, h, w = frames.shape
    regs = det.regions(w, h)
    k = len(regs)
    reg = torch.tensor([r[:3] for r in regs], dtype=torch.float32).repeat(n, 1)
    squares = reference_detect_squares(det.detector, frames, torch.arange(n).repeat_interleave(k), reg[:, :2],
                                       reg[:, 2], batch)
    out = []
    for f in range(n):
        kept = []
        for j, (cx, cy, side, max_face) in enumerate(regs):
            d = squares[f * k + j]
            if len(d) == 0 or math.isinf(max_face):
                kept.append(d)
                continue
            margin = side * 0.125
            x0 = cx - side / 2 + (margin if cx - side / 2 > 0.5 else -math.inf)
            x1 = cx + side / 2 - (margin if cx + side / 2 < w - 0.5 else -math.inf)
            y0 = cy - side / 2 + (margin if cy - side / 2 > 0.5 else -math.inf)
            y1 = cy + side / 2 - (margin if cy + side / 2 < h - 0.5 else -math.inf)
            c = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2
            size = (d.boxes[:, 2:] - d.boxes[:, :2]).amax(-1)
            ok = (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1) & (size <= max_face)
            kept.append(d.select(ok))
        out.append(weighted_nms(Detections.cat(kept), det.detector.spec.iou_threshold))
    return squares, out


def assert_same(a: list[Detections], b: list[Detections]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert len(x) == len(y), i
        for u, v in ((x.boxes, y.boxes), (x.keypoints, y.keypoints), (x.scores, y.scores)):
            assert u.device.type == "cpu" and v.device.type == "cpu"
            assert torch.equal(u, v), (i, u, v)


# -- tests ------------------------------------------------------------------------------------------
def test_matches_region_by_region_reference(detector, frames):
    """Bit for bit what the per-region loop gives, per region and per frame; batches of 7 crops straddle
    the frames, so a crop assigned to the wrong region or frame shows."""
    batch = 7
    ref_squares, ref = reference_detect(detector, frames, batch)
    n, _, h, w = frames.shape
    regs = detector.regions(w, h)
    k = len(regs)
    reg = torch.tensor([r[:3] for r in regs], dtype=torch.float32).repeat(n, 1)
    squares = detector.detector.detect_squares(frames, torch.arange(n).repeat_interleave(k), reg[:, :2], reg[:, 2],
                                               None, batch)
    assert_same(squares, ref_squares)
    # The frames exercise the tiles: detections in regions of every size, several faces a frame.
    assert {float(reg[i, 2]) for i, d in enumerate(squares) if len(d)} == {float(s) for s in reg[:, 2]}
    assert all(len(d) >= 4 for d in ref)
    detector.batch = batch
    try:
        assert_same(detector.detect(frames), ref)
    finally:
        detector.batch = 64


def test_independent_of_batch_size(frames):
    one = BlazeFaceDetector(min_face=16, mesh=False, batch=1)
    many = BlazeFaceDetector(min_face=16, mesh=False, batch=64)
    a, c = one.detect(frames), many.detect(frames)
    # The network's own float rounding depends on its batch size (~1e-4 of a model pixel) ...
    assert [len(d) for d in a] == [len(d) for d in c] and all(len(d) >= 4 for d in a)
    for x, y in zip(a, c):
        assert torch.allclose(x.boxes, y.boxes, atol=1e-2) and torch.allclose(x.scores, y.scores, atol=1e-4)
    # ... so, to see the post-processing alone, run the network one crop at a time in batches of 64 too.
    net = many.detector
    net.raw = lambda x: tuple(torch.cat(t) for t in zip(*(BlazeFace.raw(net, crop[None]) for crop in x)))  # type: ignore[method-assign]
    assert_same(many.detect(frames), a)


def test_weighted_nms_groups_is_per_group_nms():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=g) * 5], 1)
    det = Detections(boxes, boxes[:, None, :2].repeat(1, 6, 1), torch.rand(40, generator=g))
    group = torch.tensor([0] * 10 + [2] * 25 + [5] * 5)
    out, out_group = weighted_nms_groups(det, group, 0.3)
    expect = [weighted_nms(det.select(group == i), 0.3) for i in range(6)]
    assert_same(out.split(torch.bincount(out_group, minlength=6).tolist()), expect)
    assert len(expect[2]) > 1  # a group that keeps several
    empty, empty_group = weighted_nms_groups(Detections.empty(), torch.zeros(0, dtype=torch.long))
    assert len(empty) == 0 and len(empty_group) == 0


def test_crop_rects_interleaved_frames():
    """Crops of interleaved frames come out in the order asked for, each as if sampled alone."""
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(3, 3, 40, 50, generator=g)
    index = torch.tensor([2, 0, 2, 1, 0, 2])
    center = torch.rand(6, 2, generator=g) * 40
    size = 8 + torch.rand(6, 2, generator=g) * 20
    angle = torch.rand(6, generator=g)
    crops = crop_rects(frames, index, center, size, angle, 12)
    for i, f in enumerate(index.tolist()):
        alone = crop_rects(frames[f:f + 1], torch.zeros(1, dtype=torch.long), center[i:i + 1], size[i:i + 1],
                           angle[i:i + 1], 12)
        assert torch.equal(crops[i], alone[0]), i


def _crop_one_by_one(frames, index, center, size, angle, out_size, padding, quantize):
    """Each crop on its own: one grid_sample of its frame with its own (S, S) grid (the formula an axis at a time)."""
    h, w = frames.shape[-2:]
    crops = []
    for i, f in enumerate(index.tolist()):
        one = slice(i, i + 1)
        grid = _grid_per_axis(center[one], size[one], angle[one], out_size, w, h, quantize).permute(1, 0, 2, 3)
        crop = torch.nn.functional.grid_sample(frames[f:f + 1], grid, mode="bilinear", padding_mode=padding,
                                               align_corners=False)[0]
        crops.append(torch.round(crop * 255) / 255 if quantize else crop)
    return torch.stack(crops)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("index", [[0, 0, 0, 1, 1, 2], [2, 0, 2, 1, 0, 2], [1], [], [1, 1, 2, 2, 2, 2, 2, 1]])
def test_crop_rects_is_each_crop_sampled_on_its_own(device, index):
    """Sorted by frame (the usual case), interleaved, one crop or none, sampled a frame's crops at a time or all in
    one call: every crop bit for bit what sampling it on its own gives, in both paddings, with and without
    MediaPipe's quantisation."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    g = torch.Generator().manual_seed(2)
    frames = torch.rand(3, 3, 40, 50, generator=g).to(device)
    k = len(index)
    center = (torch.rand(k, 2, generator=g) * 60 - 5).to(device)  # some crops reach past the frame's edges
    size = (8 + torch.rand(k, 2, generator=g) * 20).to(device)
    angle = torch.rand(k, generator=g).to(device)
    idx = torch.tensor(index, dtype=torch.long)
    for padding in ("zeros", "border"):
        for quantize in (False, True):
            want = _crop_one_by_one(frames, idx, center, size, angle, 12, padding, quantize) if k else None
            for one_call in (None, False, True):  # the device's choice, a frame's crops at a time, all at once
                got = crop_rects(frames, idx, center, size, angle, 12, padding=padding, quantize=quantize,
                                 one_call=one_call)
                assert got.shape == (k, 3, 12, 12) and got.is_contiguous()
                if k:
                    assert torch.equal(got, want), (padding, quantize, one_call)


def _grid_per_axis(center, size, angle, s, w, h, quantize):
    """crop_rects' grid worked out an axis at a time, as the formula reads."""
    steps = torch.arange(s, device=center.device, dtype=torch.float32) / s - 0.5
    u = steps[None, None, :] * size[None, :, 0, None]
    v = steps[:, None, None] * size[None, :, 1, None]
    cos, sin = torch.cos(angle)[None, :, None], torch.sin(angle)[None, :, None]
    x = center[None, :, 0, None] + cos * u - sin * v
    y = center[None, :, 1, None] + sin * u + cos * v
    if quantize:
        x, y = torch.round(x * 32) / 32, torch.round(y * 32) / 32
    return torch.stack([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1], dim=-1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_crop_grid_is_the_formula_an_axis_at_a_time(device):
    """The grid made for x and y together is, bit for bit, the formula worked out an axis at a time: rotated
    crops, upright ones (angle None against angle 0), quantised or not, at frame sizes whose reciprocals round,
    in float32 and float64."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    g = torch.Generator().manual_seed(5)
    for w, h in ((1920, 1080), (777, 333), (50, 40)):
        for s, dtype in ((12, torch.float32), (128, torch.float32), (192, torch.float32), (128, torch.float64)):
            k = 9
            center = (torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h]) * 1.2 - 20).to(device)
            size = (4 + torch.rand(k, 2, generator=g, dtype=dtype) * min(w, h)).to(device)
            angle = ((torch.rand(k, generator=g, dtype=dtype) - 0.5) * 7).to(device)
            zero = torch.zeros(k, device=device, dtype=dtype)
            for quantize in (False, True):
                got = _crop_grid(center, size, angle, s, w, h, quantize, dtype)
                want = _grid_per_axis(center, size, angle, s, w, h, quantize)
                assert got.dtype == want.dtype and torch.equal(got, want), (w, s, dtype, quantize)
                upright = _crop_grid(center, size, None, s, w, h, quantize, dtype)
                want = _grid_per_axis(center, size, zero, s, w, h, quantize)
                assert torch.equal(upright, want), (w, s, dtype, quantize)
                assert upright.shape == (s, k, s, 2)


def test_upright_crops_are_the_crops_at_angle_zero():
    g = torch.Generator().manual_seed(6)
    frames = torch.rand(2, 3, 40, 50, generator=g)
    index = torch.tensor([1, 0, 1])
    center = torch.rand(3, 2, generator=g) * 40
    size = 8 + torch.rand(3, 2, generator=g) * 20
    for one_call in (False, True):
        assert torch.equal(crop_rects(frames, index, center, size, None, 12, one_call=one_call),
                           crop_rects(frames, index, center, size, torch.zeros(3), 12, one_call=one_call))


def test_held_outputs_give_the_same_detections(detector, frames):
    """Raw outputs held over several batches before their candidates are read (as on a GPU) give bit for bit
    the detections read a batch at a time."""
    net = detector.detector
    table, _ = detector.region_table(frames.shape[-1], frames.shape[-2])
    k = table.shape[0]
    index = torch.arange(2).repeat_interleave(k)
    reg = table[torch.arange(k).repeat(2)]
    one = net.detect_regions(frames, index, reg[:, :2], reg[:, 2], batch=7, hold=0)
    for hold in (20, 10_000):
        det, region = net.detect_regions(frames, index, reg[:, :2], reg[:, 2], batch=7, hold=hold)
        assert torch.equal(region, one[1])
        assert_same([det], [one[0]])
    assert len(one[0]) >= 6
