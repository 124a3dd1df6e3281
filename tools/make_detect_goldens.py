"""Build the golden fixtures of tests/detect/golden/ (development only; not part of the package).

Two stages, one file:

1. In the project's environment (torch, facefix.synth): build test images from real photos shipped in
   scikit-image (the astronaut, the cameraman) with known transforms: a crop, a small face in a wide
   frame, rotations of +-20 degrees, a mirror image, four faces in one frame. Written as PNG (uint8),
   with the true 5 landmarks of the astronaut in each.
2. In a side environment with ``mediapipe==0.10.21`` and ``ai-edge-litert`` (numpy < 2), run on the
   same PNGs: (a) each .tflite through the LiteRT interpreter (raw outputs), (b) MediaPipe's own
   solutions API (face_detection model_selection 0 and 1, face_mesh static_image_mode with
   refine_landmarks=False). Results go to reference.json / raw.npz.

Usage (from the repository root)::

    python3.11 -m venv /tmp/mpvenv
    /tmp/mpvenv/bin/pip install "numpy<2" mediapipe==0.10.21 ai-edge-litert pillow
    .venv/bin/python tools/make_detect_goldens.py --mpvenv /tmp/mpvenv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "detect" / "golden"
ASSETS = ROOT / "core" / "facefix" / "assets" / "mediapipe"


def build_images() -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    from facefix.demo import synth

    GOLDEN.mkdir(parents=True, exist_ok=True)
    still = synth.astronaut()
    lm = synth.ASTRONAUT_LANDMARKS
    c = lm.mean(axis=0)
    items: dict[str, dict] = {}

    def put(name: str, img: np.ndarray, landmarks: np.ndarray | None) -> None:
        u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(u8).save(GOLDEN / f"{name}.png", optimize=True)
        items[name] = {"size": [int(u8.shape[1]), int(u8.shape[0])],
                       "landmarks": None if landmarks is None else np.round(landmarks, 3).tolist()}

    def frame(size: tuple[int, int], scale: float, angle: float, at: tuple[float, float]) -> None:
        m = synth.similarity(scale, angle, at[0] - c[0], at[1] - c[1], center=(c[0], c[1]))
        return synth.warp_still(still, m, size, np.full((*size, 3), 0.45, np.float32)), synth.apply_affine(m, lm)

    img, pts = frame((288, 288), 1.0, 0.0, (144, 150))
    put("astro_crop", img, pts)
    img, pts = frame((360, 640), 0.45, 0.0, (420, 150))
    put("astro_small_wide", img, pts)
    img, pts = frame((288, 288), 1.0, 20.0, (144, 150))
    put("astro_rot_p20", img, pts)
    img, pts = frame((288, 288), 1.0, -20.0, (144, 150))
    put("astro_rot_m20", img, pts)
    img, pts = frame((288, 288), 1.0, 0.0, (144, 150))
    mirrored = pts.copy()
    mirrored[:, 0] = 288 - pts[:, 0]
    put("astro_mirror", img[:, ::-1].copy(), mirrored[[1, 0, 2, 4, 3]])
    crowd, crowd_lm = synth.crowd_frame((360, 640), 4, face_px=110.0)
    put("astro_crowd", crowd, None)
    items["astro_crowd"]["landmarks_all"] = np.round(crowd_lm, 3).tolist()
    cam = data.camera()[96:352, 160:416].astype(np.float32) / 255.0
    put("camera", np.repeat(cam[..., None], 3, axis=-1), None)
    (GOLDEN / "images.json").write_text(json.dumps(items, indent=1))


def reference() -> None:
    """Runs inside the side environment (mediapipe, LiteRT)."""
    import mediapipe as mp
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    items = json.loads((GOLDEN / "images.json").read_text())
    out: dict[str, dict] = {"mediapipe": mp.__version__, "images": {}}
    fd = {k: mp.solutions.face_detection.FaceDetection(min_detection_confidence=0.5, model_selection=k)
          for k in (0, 1)}
    fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=8, refine_landmarks=False,
                                         min_detection_confidence=0.5)
    for name in items:
        rgb = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"))
        rec: dict[str, object] = {}
        for k, det in fd.items():
            res = det.process(rgb)
            dets = []
            for d in res.detections or []:
                bb = d.location_data.relative_bounding_box
                kps = [[p.x, p.y] for p in d.location_data.relative_keypoints]
                dets.append({"score": float(d.score[0]), "box": [bb.xmin, bb.ymin, bb.width, bb.height],
                             "keypoints": kps})
            rec[f"detection_model{k}"] = dets
        res = fm.process(rgb)
        rec["mesh"] = [[[p.x, p.y, p.z] for p in f.landmark] for f in (res.multi_face_landmarks or [])]
        out["images"][name] = rec
    (GOLDEN / "reference.json").write_text(json.dumps(out, separators=(",", ":")))

    # Raw network outputs on fixed inputs cut from the photos (uint8, so they are reproducible).
    raw: dict[str, np.ndarray] = {}

    def run(model: str, key: str, x_u8: np.ndarray, lo: float, hi: float) -> None:
        it = Interpreter(model_path=str(ASSETS / model))
        it.allocate_tensors()
        x = (x_u8.astype(np.float32) / 255.0 * (hi - lo) + lo)[None]
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        raw[f"{key}_input"] = x_u8
        for j, o in enumerate(it.get_output_details()):
            raw[f"{key}_out{j}"] = it.get_tensor(o["index"]).astype(np.float32)

    def img(name: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
        im = Image.open(GOLDEN / f"{name}.png").convert("RGB").crop(box)
        return np.asarray(im.resize((size, size), Image.BILINEAR))

    run("face_detection_short_range.tflite", "short_astro", img("astro_crop", (0, 0, 288, 288), 128), -1, 1)
    run("face_detection_short_range.tflite", "short_crowd", img("astro_crowd", (0, 0, 360, 360), 128), -1, 1)
    run("face_detection_full_range_sparse.tflite", "full_wide",
        img("astro_small_wide", (0, -140, 640, 500), 192), -1, 1)
    run("face_landmark.tflite", "mesh_astro", img("astro_crop", (54, 50, 234, 230), 192), 0, 1)
    run("face_landmark.tflite", "mesh_rot", img("astro_rot_p20", (44, 40, 244, 240), 192), 0, 1)
    run("face_landmark.tflite", "mesh_camera", img("camera", (60, 0, 200, 140), 192), 0, 1)
    np.savez_compressed(GOLDEN / "raw.npz", **raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpvenv", type=Path, help="side venv with mediapipe==0.10.21 and ai-edge-litert")
    ap.add_argument("--reference", action="store_true", help="(internal) run stage 2 in this interpreter")
    args = ap.parse_args()
    if args.reference:
        reference()
        return
    build_images()
    if args.mpvenv is not None:
        subprocess.run([str(args.mpvenv / "bin" / "python"), __file__, "--reference"], check=True)
    else:
        print("images built; run again with --mpvenv to compute the references", file=sys.stderr)


if __name__ == "__main__":
    main()
