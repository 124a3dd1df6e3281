"""BlazeFace: anchors, decoding, weighted NMS, crops, and the port against MediaPipe's own results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facefix.detect.blazeface import (
    FULL_RANGE,
    SHORT_RANGE,
    Detections,
    crop_rects,
    decode_raw,
    load_blazeface,
    ssd_anchors,
    weighted_nms,
)
from facefix.errors import InputError

torch.set_num_threads(1)
IMAGES = ("astro_crop", "astro_small_wide", "astro_rot_p20", "astro_rot_m20", "astro_mirror", "astro_crowd",
          "camera")


@pytest.fixture(scope="module")
def nets():
    return {0: load_blazeface("short"), 1: load_blazeface("full")}


def test_anchor_layout():
    short = ssd_anchors(SHORT_RANGE.anchors)
    full = ssd_anchors(FULL_RANGE.anchors)
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    # Short range: 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors; row-major, anchors innermost.
    assert torch.allclose(short[0], torch.tensor([0.5 / 16, 0.5 / 16, 1, 1]))
    assert torch.allclose(short[1], short[0])
    assert torch.allclose(short[2], torch.tensor([1.5 / 16, 0.5 / 16, 1, 1]))
    assert torch.allclose(short[512], torch.tensor([0.5 / 8, 0.5 / 8, 1, 1]))
    assert torch.allclose(short[512 + 6], torch.tensor([1.5 / 8, 0.5 / 8, 1, 1]))
    assert torch.allclose(full[48], torch.tensor([0.5 / 48, 1.5 / 48, 1, 1]))


def test_decode_by_hand():
    anchors = torch.tensor([[0.25, 0.5, 1.0, 1.0]])
    raw = torch.zeros(1, 1, 16)
    raw[0, 0, :4] = torch.tensor([12.8, -25.6, 64.0, 32.0])  # in 128 px input units
    raw[0, 0, 4:6] = torch.tensor([6.4, 6.4])
    boxes, kps, scores = decode_raw(raw, torch.tensor([[[0.0]]]), anchors, 128)
    # centre (0.25 + 0.1, 0.5 - 0.2), size (0.5, 0.25)
    assert torch.allclose(boxes[0, 0], torch.tensor([0.1, 0.175, 0.6, 0.425]))
    assert torch.allclose(kps[0, 0, 0], torch.tensor([0.3, 0.55]))
    assert torch.allclose(kps[0, 0, 1], torch.tensor([0.25, 0.5]))
    assert scores.item() == pytest.approx(0.5)
    _, _, s = decode_raw(raw, torch.tensor([[[1e6]]]), anchors, 128)  # clipped, not inf/nan
    assert s.item() == pytest.approx(1.0)


def test_weighted_nms_blends_overlaps():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 12.0]])
    kps = boxes[:, None, :2].repeat(1, 6, 1)
    scores = torch.tensor([0.9, 0.6, 0.8, 0.3])
    out = weighted_nms(Detections(boxes, kps, scores), 0.3)
    assert len(out) == 2
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])
    # First cluster: boxes 0, 1, 3 (IoU with box 0: 0.68, 0.83) weighted by 0.9, 0.6, 0.3.
    w = torch.tensor([0.9, 0.6, 0.3])
    expect = (boxes[[0, 1, 3]] * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(out.boxes[0], expect)
    assert torch.allclose(out.keypoints[0, 0], expect[:2])
    assert torch.allclose(out.boxes[1], boxes[2])


def test_crop_rects_positions():
    # A frame whose value is x + 100 y (pixel centres at integers, MediaPipe/OpenCV style).
    h, w = 40, 60
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    frame = (xs + 100 * ys)[None, None].repeat(2, 3, 1, 1) / 10000
    idx = torch.tensor([1, 0])
    center = torch.tensor([[30.0, 20.0], [30.0, 20.0]])
    size = torch.tensor([[16.0, 16.0], [16.0, 16.0]])
    angle = torch.tensor([0.0, math.pi / 2])
    crops = crop_rects(frame, idx, center, size, angle, 8) * 10000
    # Unrotated: crop pixel d samples 22 + 2 d along both axes.
    assert crops[0, 0, 0, 0].item() == pytest.approx(22 + 100 * 12, abs=1e-2)
    assert crops[0, 0, 3, 5].item() == pytest.approx((22 + 10) + 100 * (12 + 6), abs=1e-2)
    # Rotated by +90 degrees: the crop's x axis runs along the frame's +y.
    assert crops[1, 0, 0, 5].item() == pytest.approx(38 + 100 * (12 + 10), abs=1e-2)


@pytest.mark.parametrize("name", IMAGES)
def test_matches_mediapipe_detection(nets, reference, gold, name):
    """Boxes IoU >= 0.95 and keypoints within 1 px of the model input, both models, vs mediapipe 0.10.21."""
    x = gold.png(name)
    h, w = x.shape[-2:]
    for model, net in nets.items():
        boxes, kps, scores = gold.detections(reference, name, model, w, h)
        det = net.detect_frames(x)[0]
        assert len(det) == len(boxes), (name, model)
        if not len(boxes):
            continue
        iou = gold.iou(boxes, det.boxes.numpy())
        match = iou.argmax(1)
        assert len(set(match.tolist())) == len(boxes)
        assert iou.max(1).min() >= 0.95, (name, model, iou.max(1))
        px_per_input = max(w, h) / net.spec.input_size
        kp_err = np.abs(det.keypoints.numpy()[match] - kps).max() / px_per_input
        assert kp_err < 1.0, (name, model, kp_err)
        assert np.abs(det.scores.numpy()[match] - scores).max() < 0.02


def test_bad_frames(nets):
    with pytest.raises(InputError):
        nets[0].detect_frames(torch.zeros(1, 1, 32, 32))
    assert len(nets[0].detect_frames(torch.zeros(2, 3, 64, 96))[1]) == 0
