"""Hand fixtures: real photos (tests/hands/golden, see NOTICE there), MediaPipe's results on them, and
synthetic defects built from real hands' landmarks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

GOLDEN = Path(__file__).parent / "golden"
PHOTOS = ("hand_open", "hand_spread", "hand_clock")
VARIANTS = ("", "_mirror", "_rot90")


def load_photo(name: str) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]; ``name`` may end in _mirror or _rot90 (as the goldens were made)."""
    base = name.removesuffix("_mirror").removesuffix("_rot90")
    a = np.asarray(Image.open(GOLDEN / f"{base}.jpg").convert("RGB"))
    if name.endswith("_mirror"):
        a = a[:, ::-1]
    if name.endswith("_rot90"):
        a = np.rot90(a, 1)
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _rotate(points: torch.Tensor, origin: torch.Tensor, axis: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rodrigues' rotation of points (..., 3) about the line through ``origin`` along unit ``axis``."""
    t = math.radians(degrees)
    p = points - origin
    k = axis / axis.norm()
    cross = torch.cross(k.expand_as(p), p, dim=-1)
    return origin + p * math.cos(t) + cross * math.sin(t) + k * (p * k).sum(-1, keepdim=True) * (1 - math.cos(t))


def _palm_axes(world: torch.Tensor, right: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lateral index -> pinky, palm normal out of the palm) of one hand (21, 3), as the scorers define them."""
    lateral = world[17] - world[5]
    lateral = lateral / lateral.norm()
    n = torch.cross(world[5] - world[0], world[17] - world[0], dim=-1)
    n = n / n.norm()
    return lateral, n * (1.0 if right >= 0.5 else -1.0)


def collapse(world: torch.Tensor, finger: int) -> torch.Tensor:
    """The finger's PIP, DIP and tip (thumb: MCP, IP, tip) pulled onto its base: a missing finger."""
    w = world.clone()
    base = 1 + 4 * finger
    w[base + 1: base + 4] = w[base] + 0.05 * (w[base + 1: base + 4] - w[base])
    return w


def fuse(world: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Finger b's chain moved onto finger a's (1 mm apart): two fingers grown into one."""
    w = world.clone()
    sa, sb = 1 + 4 * a, 1 + 4 * b
    w[sb + 1: sb + 4] = w[sa + 1: sa + 4] + 0.001
    return w


def bend(world: torch.Tensor, right: float, finger: int, joint: int, degrees: float, sideways: bool = False
         ) -> torch.Tensor:
    """Set a joint (0 MCP, 1 PIP, 2 DIP) of a finger (1-4) to ``degrees``: the bone after it turned from
    the bone before it (the MCP's: the wrist -> MCP line) about the joint's hinge (towards the palm for
    > 0), or sideways within the plane of the hinge; everything past the joint moves rigidly."""
    w = world.clone()
    lateral, normal = _palm_axes(world, right)
    forward = world[9] - world[0]
    if float(torch.dot(torch.cross(forward, normal, dim=-1), lateral)) < 0:
        lateral = -lateral  # a positive turn about it takes the fingers towards the palm
    chain = [0] + [1 + 4 * finger + k for k in range(4)]  # wrist, MCP, PIP, DIP, tip
    j = chain[joint + 1]
    u = world[j] - world[chain[joint]]
    u = u / u.norm()
    hinge = lateral - torch.dot(lateral, u) * u
    hinge = hinge / hinge.norm()
    axis = torch.cross(u, hinge, dim=-1) if sideways else hinge
    target = _rotate(u, torch.zeros(3), axis, degrees)
    v = world[chain[joint + 2]] - world[j]
    v = v / v.norm()
    turn = torch.cross(v, target, dim=-1)
    angle = math.degrees(math.atan2(float(turn.norm()), float(torch.dot(v, target))))
    if float(turn.norm()) > 1e-9:
        last = chain[-1] + 1
        w[j + 1: last] = _rotate(w[j + 1: last], w[j], turn / turn.norm(), angle)
    return w


def stretch(world: torch.Tensor, finger: int, factor: float) -> torch.Tensor:
    """The finger's chain scaled about its base: an over-long (or stubby) finger."""
    w = world.clone()
    base = 1 + 4 * finger
    w[base + 1: base + 4] = w[base] + factor * (w[base + 1: base + 4] - w[base])
    return w


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((GOLDEN / "reference.json").read_text())["images"]


@pytest.fixture(scope="session")
def real_hands(reference: dict) -> list[tuple[str, torch.Tensor, float]]:
    """MediaPipe's world landmarks of the real photos: (name, world (21, 3), P(subject's right hand))."""
    out = []
    for name, r in reference.items():
        for h in r["hands"]:
            # MediaPipe labels a mirrored view: its "Left" is the subject's right hand.
            right = h["score"] if h["label"] == "Left" else 1.0 - h["score"]
            out.append((name, torch.tensor(h["world"]), right))
    return out


@pytest.fixture(scope="session")
def hands_kit() -> SimpleNamespace:
    """Helpers (conftest functions are not importable under importlib mode)."""
    return SimpleNamespace(photo=load_photo, photos=PHOTOS, variants=VARIANTS, collapse=collapse, fuse=fuse,
                           bend=bend, stretch=stretch, golden=GOLDEN)
