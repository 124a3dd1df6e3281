"""Write the hand goldens: MediaPipe 0.10.21's own hand results and LiteRT's raw outputs on real photos.

Run in a side environment, never the project's own:
    python3 -m venv /tmp/side-mp && /tmp/side-mp/bin/pip install mediapipe==0.10.21 ai-edge-litert
    /tmp/side-mp/bin/python tests/hands/make_goldens.py

Writes tests/hands/golden/reference.json (mediapipe.solutions.hands, static_image_mode, model_complexity
1, two hands, on each photo and on its mirror image and its 90-degree turn) and raw.npz (inputs and
outputs of the two .tflite files under the LiteRT interpreter).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
ASSETS = HERE.parents[1] / "core" / "facefix" / "assets" / "mediapipe"
PHOTOS = ("hand_open", "hand_spread", "hand_clock")
VARIANTS = {"": lambda a: a, "_mirror": lambda a: a[:, ::-1], "_rot90": lambda a: np.rot90(a, 1)}


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / f"{name}.jpg").convert("RGB"))


def solutions() -> dict:
    import mediapipe as mp

    out: dict = {}
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                  min_detection_confidence=0.5) as hands:
        for name in PHOTOS:
            base = load(name)
            for suffix, fn in VARIANTS.items():
                img = np.ascontiguousarray(fn(base))
                r = hands.process(img)
                found = []
                for lm, world, hd in zip(r.multi_hand_landmarks or [], r.multi_hand_world_landmarks or [],
                                         r.multi_handedness or []):
                    found.append({
                        "landmarks": [[p.x, p.y, p.z] for p in lm.landmark],
                        "world": [[p.x, p.y, p.z] for p in world.landmark],
                        "label": hd.classification[0].label,
                        "score": hd.classification[0].score,
                    })
                out[name + suffix] = {"size": [img.shape[1], img.shape[0]], "pixel_sum": int(img.sum()),
                                      "hands": found}
    return out


def litert_raw() -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    def run(model: str, x: np.ndarray) -> list[np.ndarray]:
        it = Interpreter(model_path=str(ASSETS / model))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        return [it.get_tensor(d["index"]).copy() for d in sorted(it.get_output_details(), key=lambda d: d["name"])]

    raw: dict[str, np.ndarray] = {}
    # Palm input: a photo letterboxed into 192 x 192, values in [0, 1] (as MediaPipe feeds this model).
    img = Image.open(GOLDEN / "hand_open.jpg").convert("RGB")
    side = max(img.size)
    box = Image.new("RGB", (side, side))
    box.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    palm_u8 = np.asarray(box.resize((192, 192), Image.BILINEAR))
    raw["palm_open_input"] = palm_u8
    for j, y in enumerate(run("palm_detection_full.tflite", palm_u8.astype(np.float32) / 255.0)):
        raw[f"palm_open_out{j}"] = y[0]
    # Landmark inputs: square crops around the hands.
    for key, name, crop in (("lm_open", "hand_open", (0, 0, 480, 480)), ("lm_spread", "hand_spread", (0, 0, 200, 200))):
        x = np.asarray(Image.open(GOLDEN / f"{name}.jpg").convert("RGB").crop(crop).resize((224, 224), Image.BILINEAR))
        raw[f"{key}_input"] = x
        for j, y in enumerate(run("hand_landmark_full.tflite", x.astype(np.float32) / 255.0)):
            raw[f"{key}_out{j}"] = y[0]
    return raw


def main() -> None:
    import mediapipe

    ref = {"mediapipe": mediapipe.__version__, "images": solutions()}
    (GOLDEN / "reference.json").write_text(json.dumps(ref, indent=0))
    np.savez_compressed(GOLDEN / "raw.npz", **litert_raw())


if __name__ == "__main__":
    main()
