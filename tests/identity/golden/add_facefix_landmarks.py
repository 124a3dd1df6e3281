"""Add FaceFix's own 5 landmarks (BlazeFace + face mesh, frame pixels, centres at +0.5) of each golden region
to ``dlib_descriptors.json`` (run after ``make_golden.py``, in the project's environment):

    .venv/bin/python tests/identity/golden/add_facefix_landmarks.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefix.detect import load_detector

HERE = Path(__file__).parent


def main() -> None:
    golden = json.loads((HERE / "dlib_descriptors.json").read_text())
    detector = load_detector("blazeface")
    for name, face in golden["faces"].items():
        img = np.asarray(Image.open(HERE / f"{name}.jpg").convert("RGB"), np.float32) / 255
        found = detector(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())[0].faces
        best = max(found, key=lambda f: f.score)
        face["facefix_landmarks"] = np.round(best.landmarks, 3).tolist()
        print(name, face["facefix_landmarks"])
    (HERE / "dlib_descriptors.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
