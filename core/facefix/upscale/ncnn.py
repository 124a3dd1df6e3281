"""A small reader of ncnn models: the text ``.param`` graph and the ``.bin`` weights.

Only what the shipped Real-ESRGAN models need. The ``.param`` text format is::

    7767517                                 magic
    <layer_count> <blob_count>
    <Type> <name> <n_in> <n_out> <in blobs...> <out blobs...> <id>=<value> ...

where ``<id>=<value>`` is an int, a float (written with ``.`` or an exponent), or, for ids
``<= -23300``, an array ``-23300-k=<count>,v0,v1,...`` stored under id ``k``.

The ``.bin`` holds the weights of the weight-bearing layers in graph order, with no header:

* Convolution: ``weight_data_size`` weights as a *tagged* blob, then ``num_output`` fp32 biases
  (raw, untagged) when ``bias_term`` (param 5) is set.
* PReLU: ``num_slope`` (param 0) raw fp32 slopes.

A tagged blob starts with a 4-byte tag: ``0x01306B47`` = fp16 values (padded to 4 bytes),
``0`` = raw fp32 values. Other encodings (int8, codebook-quantised) are rejected.

Convolution weights are laid out (out_channels, in_channels, kh, kw), the PyTorch order.
Everything here is a pure function of the file contents; nothing is executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError

__all__ = [
    "NCNN_MAGIC",
    "FP16_TAG",
    "ParamValue",
    "NcnnLayer",
    "NcnnGraph",
    "NcnnWeights",
    "parse_param",
    "read_param",
    "parse_bin",
    "read_model",
]

NCNN_MAGIC = 7767517
FP16_TAG = 0x01306B47
_ARRAY_BASE = -23300

ParamValue = int | float | tuple[int | float, ...]

# Layer types that carry no weights in the .bin (and that these models use or could use).
_WEIGHTLESS = frozenset(
    {
        "Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
        "ReLU", "LeakyReLU", "Sigmoid", "Crop", "Padding", "Reshape", "Permute", "Flatten",
        "UnaryOp", "Noop", "Clip",
    }
)  # fmt: skip


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file: type, name, input/output blob names and the param dict."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: Mapping[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)

    def int_param(self, key: int, default: int) -> int:
        v = self.params.get(key, default)
        if isinstance(v, tuple):
            raise ModelError(f"ncnn layer {self.name}: param {key} is an array, expected an int")
        return int(v)

    def float_param(self, key: int, default: float) -> float:
        v = self.params.get(key, default)
        if isinstance(v, tuple):
            raise ModelError(f"ncnn layer {self.name}: param {key} is an array, expected a number")
        return float(v)

    def array_param(self, key: int) -> tuple[int | float, ...]:
        v = self.params.get(key, ())
        return v if isinstance(v, tuple) else (v,)


@dataclass(frozen=True)
class NcnnGraph:
    """A parsed ``.param``: layers in file (topological) order and the declared blob count."""

    layers: tuple[NcnnLayer, ...]
    blob_count: int
    origin: str = "<param>"

    def of_type(self, *types: str) -> tuple[NcnnLayer, ...]:
        return tuple(layer for layer in self.layers if layer.type in types)


@dataclass(frozen=True)
class NcnnWeights:
    """Arrays read from a ``.bin``: ``arrays[layer name]`` is a tuple (weight[, bias]) of float32.

    ``fp16`` lists the layers whose weights were stored as fp16 (exactly representable in fp32).
    ``nbytes`` is the number of bytes consumed, which equals the file size for a valid pair.
    """

    arrays: Mapping[str, tuple[np.ndarray, ...]]
    fp16: frozenset[str]
    nbytes: int


def _number(text: str, origin: str, line_no: int) -> int | float:
    try:
        if any(c in text for c in ".eE") or text.lower() in ("nan", "inf", "-inf"):
            return float(text)
        return int(text)
    except ValueError:
        raise ModelError(f"{origin}:{line_no}: bad ncnn param value {text!r}") from None


def parse_param(text: str, origin: str = "<param>") -> NcnnGraph:
    """Parse the text of an ncnn ``.param`` file. ``origin`` names the file in error messages."""
    lines = [ln.strip() for ln in text.splitlines()]
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln]
    if not numbered or numbered[0][1] != str(NCNN_MAGIC):
        raise ModelError(f"{origin}: not an ncnn text .param file (magic {NCNN_MAGIC} missing)")
    if len(numbered) < 2:
        raise ModelError(f"{origin}: truncated ncnn .param (no layer/blob counts)")
    try:
        layer_count, blob_count = (int(v) for v in numbered[1][1].split())
    except ValueError:
        raise ModelError(f"{origin}:{numbered[1][0]}: bad layer/blob count line") from None

    layers: list[NcnnLayer] = []
    for line_no, line in numbered[2:]:
        tok = line.split()
        if len(tok) < 4:
            raise ModelError(f"{origin}:{line_no}: truncated layer line")
        typ, name = tok[0], tok[1]
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
        except ValueError:
            raise ModelError(f"{origin}:{line_no}: bad blob counts in layer {name}") from None
        if len(tok) < 4 + n_in + n_out:
            raise ModelError(f"{origin}:{line_no}: layer {name} lists fewer blobs than declared")
        bottoms = tuple(tok[4 : 4 + n_in])
        tops = tuple(tok[4 + n_in : 4 + n_in + n_out])
        params: dict[int, ParamValue] = {}
        for item in tok[4 + n_in + n_out :]:
            key_text, sep, value_text = item.partition("=")
            if not sep:
                raise ModelError(f"{origin}:{line_no}: layer {name}: param {item!r} has no '='")
            try:
                key = int(key_text)
            except ValueError:
                raise ModelError(f"{origin}:{line_no}: layer {name}: bad param id {key_text!r}") from None
            if key <= _ARRAY_BASE:
                parts = value_text.split(",")
                count = int(_number(parts[0], origin, line_no))
                values = tuple(_number(p, origin, line_no) for p in parts[1:])
                if len(values) != count:
                    raise ModelError(f"{origin}:{line_no}: layer {name}: array param {key} length mismatch")
                params[_ARRAY_BASE - key] = values
            else:
                params[key] = _number(value_text, origin, line_no)
        layers.append(NcnnLayer(typ, name, bottoms, tops, params))

    if len(layers) != layer_count:
        raise ModelError(f"{origin}: declares {layer_count} layers but lists {len(layers)}")
    return NcnnGraph(layers=tuple(layers), blob_count=blob_count, origin=origin)


def read_param(path: str | Path) -> NcnnGraph:
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ModelError(f"{p}: ncnn .param file not found") from None
    except UnicodeDecodeError:
        raise ModelError(f"{p}: not a text ncnn .param file") from None
    return parse_param(text, origin=str(p))


class _Reader:
    def __init__(self, data: bytes, origin: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.origin = origin

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelError(f"{self.origin}: truncated .bin while reading {what} at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def raw_f32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> tuple[np.ndarray, bool]:
        tag = int(np.frombuffer(self.take(4, what), dtype="<u4")[0])
        if tag == FP16_TAG:
            padded = (2 * count + 3) // 4 * 4  # fp16 blobs are padded to a 4-byte boundary
            half = np.frombuffer(self.take(padded, what), dtype="<f2")[:count]
            return half.astype(np.float32), True
        if tag == 0:
            return self.raw_f32(count, what), False
        raise ModelError(f"{self.origin}: {what}: unsupported ncnn weight encoding (tag 0x{tag:08X})")


def parse_bin(data: bytes, graph: NcnnGraph, origin: str = "<bin>") -> NcnnWeights:
    """Read the weights of ``graph`` from ``data``; the bytes must be consumed exactly.

    Convolution weights are reshaped to (out, in, kh, kw) and biases to (out,); PReLU slopes to
    (num_slope,). Raises ModelError on unknown weight-bearing layers, truncation or leftover bytes.
    """
    reader = _Reader(data, origin)
    arrays: dict[str, tuple[np.ndarray, ...]] = {}
    fp16: set[str] = set()
    for layer in graph.layers:
        if layer.type == "Convolution":
            out_ch = layer.int_param(0, 0)
            kw = layer.int_param(1, 0)
            kh = layer.int_param(11, kw)
            size = layer.int_param(6, 0)
            if out_ch <= 0 or kw <= 0 or size <= 0 or size % (out_ch * kw * kh):
                raise ModelError(f"{origin}: convolution {layer.name}: inconsistent shape params")
            if layer.int_param(8, 0):
                raise ModelError(f"{origin}: convolution {layer.name}: int8 models are not supported")
            in_ch = size // (out_ch * kw * kh)
            w, is_half = reader.tagged(size, f"convolution {layer.name} weights")
            tensors: tuple[np.ndarray, ...] = (w.reshape(out_ch, in_ch, kh, kw),)
            if layer.int_param(5, 0):
                tensors += (reader.raw_f32(out_ch, f"convolution {layer.name} bias"),)
            arrays[layer.name] = tensors
            if is_half:
                fp16.add(layer.name)
        elif layer.type == "PReLU":
            n = layer.int_param(0, 0)
            if n <= 0:
                raise ModelError(f"{origin}: PReLU {layer.name}: bad num_slope")
            arrays[layer.name] = (reader.raw_f32(n, f"PReLU {layer.name} slopes"),)
        elif layer.type not in _WEIGHTLESS:
            raise ModelError(f"{origin}: ncnn layer type {layer.type!r} ({layer.name}) is not supported")
    if reader.pos != len(data):
        raise ModelError(f"{origin}: {len(data) - reader.pos} bytes left over after the last layer")
    return NcnnWeights(arrays=arrays, fp16=frozenset(fp16), nbytes=reader.pos)


def read_model(param_path: str | Path, bin_path: str | Path) -> tuple[NcnnGraph, NcnnWeights]:
    """Read a ``.param``/``.bin`` pair from disk."""
    graph = read_param(param_path)
    b = Path(bin_path)
    try:
        data = b.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{b}: ncnn .bin file not found") from None
    return graph, parse_bin(data, graph, origin=str(b))
