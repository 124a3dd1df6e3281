"""The hand models against LiteRT's raw outputs and mediapipe 0.10.21's own hands solution (goldens)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.detect.assets import MEDIAPIPE_DIR
from facefix.detect.tflite_torch import load_tflite
from facefix.errors import ChecksumError, InputError, ModelError
from facefix.hands import HandAnalyser
from facefix.hands.models import (
    HAND_SHA256,
    LANDMARK_INPUT,
    HandLandmarker,
    PalmDetector,
    dedupe_rois,
    hand_asset,
    palm_rois,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def raw(hands_kit) -> dict[str, np.ndarray]:
    with np.load(hands_kit.golden / "raw.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def analyser() -> HandAnalyser:
    return HandAnalyser("cpu")


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "planar"])
def test_raw_outputs_match_litert(raw, analyser, channels_last):
    """Palm detector and hand landmark model (MEAN, FULLY_CONNECTED, LOGISTIC heads) give LiteRT's outputs."""
    cases = [(analyser.palms.net, "palm_open"), (analyser.landmarks.net, "lm_open"), (analyser.landmarks.net, "lm_spread")]
    for net, key in cases:
        x = torch.from_numpy(raw[f"{key}_input"].astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        net.channels_last_on_cpu = channels_last
        try:
            with torch.no_grad():
                outs = net(x)
        finally:
            net.channels_last_on_cpu = True
        # LiteRT lists outputs by name; so does the converter (Identity, Identity_1, ...).
        order = np.argsort(net.output_names)
        for j, k in enumerate(order):
            ref = raw[f"{key}_out{j}"]
            y = outs[k][0].numpy()
            assert y.shape == ref.shape
            # float32 vs XNNPACK: rounding only (measured max 4.4e-4 on outputs up to ~220).
            assert np.abs(y - ref).max() < 1e-3 * max(1.0, np.abs(ref).max() / 100), (key, j)


def test_op_sets(analyser):
    assert {"MEAN", "FULLY_CONNECTED", "LOGISTIC"} <= analyser.landmarks.net.ops_used
    assert analyser.palms.net.ops_used == {"ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
                                            "MAX_POOL_2D", "PAD", "PRELU", "RESHAPE", "RESIZE_BILINEAR"}


def test_matches_mediapipe_hands(analyser, reference, hands_kit):
    """Every hand of the 9 golden images (3 photos, mirrored, turned): same count, the 21 points within
    1 px at the model's 224 px input scale, world points within 2 mm, MediaPipe's handedness (swapped to
    the subject's own hand)."""
    for name, ref in reference.items():
        x = hands_kit.photo(name)
        h, w = x.shape[-2:]
        assert [w, h] == ref["size"] and int((x * 255).round().double().sum()) == ref["pixel_sum"]
        found = analyser.detect(x)[0]
        assert len(found) == len(ref["hands"]) >= 1, name
        for gold in ref["hands"]:
            g = np.array(gold["landmarks"]) * [w, h, w]
            errs = [np.abs(f.landmarks.numpy()[:, :2] - g[:, :2]).max() for f in found]
            hand = found[int(np.argmin(errs))]
            side = (hand.box[2] - hand.box[0] + hand.box[3] - hand.box[1]) / 2
            # The ROI is ~2x the landmarks' extent: error at the model's input scale, bounded generously.
            assert min(errs) * LANDMARK_INPUT / (2 * side) < 1.0, (name, min(errs))
            assert np.abs(hand.landmarks.numpy()[:, 2] - g[:, 2]).max() < 3.0, name
            assert np.abs(hand.world.numpy() - np.array(gold["world"])).max() < 2e-3, name
            # MediaPipe labels a mirrored view: its "Left" is the subject's right hand.
            assert hand.handedness == {"Left": "right", "Right": "left"}[gold["label"]], name
            assert hand.handedness_score == pytest.approx(gold["score"], abs=0.01)
            assert hand.presence > 0.9


def test_batched_frames_equal_single(analyser, hands_kit):
    x = hands_kit.photo("hand_open")
    both = torch.cat([x, x.flip(-1)])
    batched = analyser.detect(both)
    single = [analyser.detect(both[i:i + 1])[0] for i in range(2)]
    for a, b in zip(batched, single):
        assert len(a) == len(b) == 1
        # On 2 threads the CPU's convolutions round a batch of two otherwise than one frame: 0.0105 px apart on
        # this ~520 px hand (within 1e-2 on one thread).
        assert torch.allclose(a[0].landmarks, b[0].landmarks, atol=2.5e-2)
    # The mirror image's hand is the other hand, mirrored (the network is not exactly symmetric: within
    # 2 % of the hand's width).
    w = x.shape[-1]
    a, b = batched[0][0], batched[1][0]
    assert a.handedness != b.handedness
    assert np.allclose(a.landmarks[:, 0], w - 1 - b.landmarks[:, 0], atol=0.02 * (a.box[2] - a.box[0]))


def test_no_hand_and_bad_input(analyser):
    blank = torch.full((2, 3, 64, 96), 0.5)
    assert analyser.detect(blank) == [[], []]
    for bad in (torch.zeros(3, 64, 64), torch.zeros(1, 4, 64, 64), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)):
        with pytest.raises(InputError) as err:
            analyser.detect(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        HandAnalyser(max_hands=0)


def test_roi_from_palm_by_hand():
    """Wrist below the middle MCP (hand upright): no turn; centre shifted up by half the box height."""
    boxes = torch.tensor([[100.0, 100.0, 140.0, 150.0]])
    kps = torch.zeros(1, 7, 2)
    kps[0, 0] = torch.tensor([120.0, 150.0])
    kps[0, 2] = torch.tensor([120.0, 100.0])
    r = palm_rois(torch.tensor([0]), boxes, kps)
    assert r.angle.item() == pytest.approx(0.0, abs=1e-6)
    assert r.center.tolist() == [[120.0, 100.0]]  # 125 - 0.5 * 50
    assert r.side.item() == pytest.approx(50 * 2.6)
    # Hand pointing right: turned by +90 degrees, shifted towards +x.
    kps[0, 2] = torch.tensor([170.0, 150.0])
    r = palm_rois(torch.tensor([0]), boxes, kps)
    assert r.angle.item() == pytest.approx(np.pi / 2)
    assert r.center[0].tolist() == pytest.approx([145.0, 125.0])
    # A second ROI overlapping the first replaces it; one in another frame stays.
    both = palm_rois(torch.tensor([0, 0, 1]), boxes.repeat(3, 1), kps.repeat(3, 1, 1))
    kept, keep = dedupe_rois(both)
    assert keep.tolist() == [1, 2] and kept.index.tolist() == [0, 1]


def test_shipped_files_and_checksums(tmp_path):
    sources = (MEDIAPIPE_DIR / "SOURCES").read_text()
    notice = (MEDIAPIPE_DIR / "NOTICE").read_text()
    for name, sha in HAND_SHA256.items():
        assert f"{sha}  {name}" in sources and name in notice
        p, expect = hand_asset(name)
        assert expect == sha and p.is_file()
    with pytest.raises(ModelError):
        hand_asset("hand_landmark_lite.tflite")
    src, sha = hand_asset("hand_landmark_full.tflite")
    data = bytearray(src.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "hand_landmark_full.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_tflite(bad, sha)
    with pytest.raises(ModelError):  # a palm detector is not a landmark model
        HandLandmarker(hand_asset("palm_detection_full.tflite")[0])
    with pytest.raises(ModelError):
        PalmDetector(hand_asset("hand_landmark_full.tflite")[0])


@pytest.mark.gpu
def test_cuda_matches_cpu(analyser, hands_kit):
    """The same hands on the GPU (network, crops and evidence there; decoding on the CPU)."""
    x = torch.cat([hands_kit.photo("hand_spread"), hands_kit.photo("hand_spread_mirror")])
    gpu = HandAnalyser("cuda").detect(x.cuda())
    cpu = analyser.detect(x)
    for a, b in zip(gpu, cpu):
        assert len(a) == len(b) == 1
        assert torch.allclose(a[0].landmarks, b[0].landmarks, atol=0.5)
        assert a[0].handedness == b[0].handedness
