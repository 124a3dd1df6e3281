"""A small converter of TFLite flatbuffers into PyTorch modules that execute the same graph.

Only float graphs are supported (float32 activations; weights stored as float32, float16 through
``DEQUANTIZE``, or sparse through ``DENSIFY``). Constant sub-graphs (``DEQUANTIZE``/``DENSIFY`` of a
weight) are folded at load time, so the module holds plain float32 weights.

Ops: CONV_2D, DEPTHWISE_CONV_2D, PAD, ADD, MUL, PRELU, RELU, RELU6, LOGISTIC, MAX_POOL_2D,
AVERAGE_POOL_2D, RESHAPE, CONCATENATION, RESIZE_BILINEAR, DEPTH_TO_SPACE, DEQUANTIZE, DENSIFY,
MEAN, FULLY_CONNECTED (the MediaPipe hand landmark model's pooled heads).
The three shipped MediaPipe face models use: CONV_2D, DEPTHWISE_CONV_2D, PAD, ADD, PRELU, RELU,
MAX_POOL_2D, RESHAPE, CONCATENATION, RESIZE_BILINEAR, DEPTH_TO_SPACE, DEQUANTIZE, DENSIFY (plus the
fused RELU activation of CONV_2D/ADD).

Convention: TFLite graphs are NHWC. The module runs in NCHW: it takes its 4-D image inputs as
(N, C, H, W) and keeps 4-D activations in NCHW, converting only where the graph's semantics depend on
the memory layout (RESHAPE, axis arguments). Its outputs are returned in the graph's own layout
(4-D outputs as NHWC, others as they are), with the batch size of the input in place of the graph's 1.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cuda_graphs import CudaGraphs
from ..errors import ChecksumError, ModelError, SettingsError

__all__ = ["TFLiteModule", "load_tflite", "read_verified", "densify", "same_padding", "SUPPORTED_OPS"]

SUPPORTED_OPS = frozenset(
    {
        "CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "ADD", "MUL", "PRELU", "RELU", "RELU6", "LOGISTIC",
        "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "CONCATENATION", "RESIZE_BILINEAR",
        "DEPTH_TO_SPACE", "DEQUANTIZE", "DENSIFY", "MEAN", "FULLY_CONNECTED",
    }
)  # fmt: skip

# tflite.TensorType values -> numpy dtypes (only those float graphs carry as constants).
_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}
# NHWC axis -> NCHW axis for 4-D activations.
_AXIS_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


def read_verified(path: str | Path, sha256: str | None) -> bytes:
    """The bytes of a model file, after checking its sha256 (``None`` skips the check)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ModelError(f"{p}: cannot read model file ({err.strerror or err})") from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256.lower():
            raise ChecksumError(f"{p}: sha256 {got[:16]}... does not match the expected {sha256[:16]}...")
    return data


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow 'SAME' padding (before, after) along one axis: the extra pixel goes after."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def densify(values: np.ndarray, shape: Sequence[int], sparsity: object) -> np.ndarray:
    """Expand a TFLite sparse tensor (``SparsityParameters``) into its dense array.

    ``values`` holds the stored (non-zero) values in traversal order. Dimension metadata is listed in
    traversal order; block dimensions (``block_map``) follow the tensor's own dimensions.
    """
    import tflite

    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]  # type: ignore[attr-defined]
    bmap = sparsity.BlockMapAsNumpy()  # type: ignore[attr-defined]
    block_map = [] if isinstance(bmap, int) else [int(v) for v in bmap]
    rank = len(shape)
    n_levels = sparsity.DimMetadataLength()  # type: ignore[attr-defined]
    if len(order) != n_levels or n_levels != rank + len(block_map):
        raise ModelError("sparse tensor: traversal order and dimension metadata disagree")
    idx = np.zeros(1, dtype=np.int64)  # position in the current level's storage
    coords = np.zeros((1, n_levels), dtype=np.int64)  # expanded coordinates, by expanded dim
    sizes = [0] * n_levels
    for level in range(n_levels):
        meta = sparsity.DimMetadata(level)  # type: ignore[attr-defined]
        dim = order[level]
        if meta.Format() == 0:  # DENSE
            size = int(meta.DenseSize())
            sizes[dim] = size
            idx = (idx[:, None] * size + np.arange(size)[None]).reshape(-1)
            coords = np.repeat(coords, size, axis=0)
            coords[:, dim] = np.tile(np.arange(size), len(coords) // size)
        else:  # SPARSE_CSR
            seg = _index_vector(meta.ArraySegmentsType(), meta.ArraySegments(), tflite)
            ind = _index_vector(meta.ArrayIndicesType(), meta.ArrayIndices(), tflite)
            counts = seg[idx + 1] - seg[idx]
            starts = np.repeat(seg[idx], counts)
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            idx = starts + offsets
            coords = np.repeat(coords, counts, axis=0)
            coords[:, dim] = ind[idx]
    dense_coords = coords[:, :rank].copy()
    for k, d in enumerate(block_map):
        bs = sizes[rank + k]
        dense_coords[:, d] = dense_coords[:, d] * bs + coords[:, rank + k]
    out = np.zeros(tuple(shape), dtype=values.dtype)
    if len(idx) != values.size:
        raise ModelError(f"sparse tensor: {values.size} stored values for {len(idx)} positions")
    out[tuple(dense_coords.T)] = values[idx]
    return out


def _index_vector(kind: int, table: object, tflite: object) -> np.ndarray:
    classes = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}
    if kind not in classes or table is None:
        raise ModelError(f"sparse tensor: unsupported index vector type {kind}")
    vec = getattr(tflite, classes[kind])()
    vec.Init(table.Bytes, table.Pos)  # type: ignore[attr-defined]
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None  # constant value (graph layout), or None for activations


@dataclass(frozen=True)
class _Step:
    op: str
    inputs: tuple[int, ...]
    output: int
    fn: Callable[..., Tensor]


def _act(code: int, op: str) -> Callable[[Tensor], Tensor]:
    """An op's fused activation, applied in place: it always runs on the op's own, fresh result."""
    if code == 0:
        return lambda x: x
    if code == 1:
        return torch.relu_
    if code == 3:
        return lambda x: x.clamp_(0.0, 6.0)
    if code == 2:
        return lambda x: x.clamp_(-1.0, 1.0)
    raise ModelError(f"tflite: {op} has an unsupported fused activation {code}")


def _options(op: object, cls_name: str) -> object:
    import tflite

    opt = getattr(tflite, cls_name)()
    table = op.BuiltinOptions()  # type: ignore[attr-defined]
    if table is None:
        raise ModelError(f"tflite: operator is missing its {cls_name}")
    opt.Init(table.Bytes, table.Pos)
    return opt


class TFLiteModule(nn.Module):
    """A TFLite float graph as a PyTorch module; see the module docstring for layouts."""

    def __init__(self, data: bytes, origin: str = "model", *, fuse: bool = True) -> None:
        super().__init__()
        try:
            import tflite
            from tflite.BuiltinOperator import BuiltinOperator
        except ImportError:  # pragma: no cover - declared dependency
            raise ModelError(f"{origin}: the 'tflite' package is needed to read .tflite files") from None
        self.origin = origin
        # On the CPU, oneDNN runs these depthwise/pointwise stacks ~1.7x faster channels-last (BlazeFace,
        # 64 tiles of 192 px on 2 cores: 1.33 -> 0.79 s); convolutions keep the layout they are given, so
        # converting the inputs is enough. Same results within float rounding (the kernels differ).
        self.channels_last_on_cpu = True
        # On CUDA, pointwise (1x1) convolutions run as matrix products: for them cuDNN compiles kernels at run
        # time for every new batch shape, ~2.6 s (BlazeFace) and ~1.5 s (face mesh) on an H100 (cuDNN 9.19),
        # which a shot's analysis met on each of its batch shapes; through cuBLAS a new shape costs ~15 ms.
        self.pointwise_matmul_on_cuda = True
        # On CUDA, planar (NCHW). Channels-last runs the depthwise convolutions through cuDNN instead of PyTorch's own
        # NCHW kernel (40 of the analysis's 175 ms of kernels, 96 frames of 1080p with one face on an H100) and made
        # BlazeFace's calls 0.88x the time, the mesh's about even (benchmarks/detector_layout.py); but cuDNN's
        # channels-last kernels are compiled at run time for each new batch shape, as its 1x1 ones were: a process's
        # first analysis of a shot took 31.6 s at 1 face on an H200 (553bb3a) against 1.9 s planar on an H100
        # (5a7932d), for ~10 ms a later pass. A command-line run is a process's first pass.
        self.channels_last_on_cuda = False
        # On CUDA a call is replayed from a CUDA graph per input shape (callers pad batches to a few shapes): one
        # launch instead of ~300 kernel launches, which otherwise kept the analysis thread busy longer than the
        # GPU. The lock: detectors are shared by a process's threads, and a graph has one static input.
        self.cuda_graphs = True
        self._graphs: CudaGraphs | None = None
        self._graph_lock = threading.Lock()
        try:
            model = tflite.Model.GetRootAsModel(data, 0)
            graph = model.Subgraphs(0)
        except Exception as err:  # noqa: BLE001 - flatbuffers raise assorted errors on garbage
            raise ModelError(f"{origin}: not a TFLite flatbuffer ({type(err).__name__})") from None
        if graph is None or model.SubgraphsLength() != 1:
            raise ModelError(f"{origin}: expected a TFLite model with exactly one subgraph")
        op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}

        tensors: list[_Tensor] = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            if t.Type() not in _NP_TYPES:
                raise ModelError(f"{origin}: tensor {t.Name().decode()!r} has unsupported type {t.Type()}")
            dtype = np.dtype(_NP_TYPES[t.Type()])
            buf = model.Buffers(t.Buffer())
            raw = buf.DataAsNumpy() if buf is not None and buf.DataLength() else None
            value = None
            if raw is not None and not isinstance(raw, int):
                flat = np.frombuffer(raw.tobytes(), dtype=dtype)
                if t.Sparsity() is not None:
                    value = densify(flat, shape, t.Sparsity())
                else:
                    value = flat.reshape(shape).copy()
            tensors.append(_Tensor(t.Name().decode(errors="replace"), shape, dtype, value))
        self._consts: dict[int, np.ndarray] = {i: t.data for i, t in enumerate(tensors) if t.data is not None}
        self._shapes = {i: t.shape for i, t in enumerate(tensors)}
        self.input_ids = tuple(int(graph.Inputs(i)) for i in range(graph.InputsLength()))
        self.output_ids = tuple(int(graph.Outputs(i)) for i in range(graph.OutputsLength()))
        self.input_shapes = tuple(self._shapes[i] for i in self.input_ids)
        self.output_names = tuple(tensors[i].name for i in self.output_ids)
        self.ops_used: set[str] = set()
        self._nchw: set[int] = {i for i in self.input_ids if len(self._shapes[i]) == 4}
        self._steps: list[_Step] = []
        self._n_params = 0
        self._channel_pads: dict[int, int] = {}  # PAD output -> its input, for zero channels appended
        self._spatial_pads: dict[int, tuple[int, tuple[int, int, int, int]]] = {}  # PAD output -> input, pads
        self._conv_steps: dict[int, tuple[Any, ...]] = {}  # convolution output -> its padding and parameters
        self._add_acts: dict[int, Callable[[Tensor], Tensor]] = {}  # ADD of two live tensors -> activation

        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if name not in SUPPORTED_OPS:
                raise ModelError(f"{origin}: unsupported TFLite op {name}")
            self.ops_used.add(name)
            ins = tuple(int(v) for v in op.InputsAsNumpy() if v >= 0)
            out = int(op.Outputs(0))
            if name in ("DEQUANTIZE", "DENSIFY"):
                src = self._consts.get(ins[0])
                if src is None:
                    if name == "DEQUANTIZE":  # a runtime cast: float16 activations to float32
                        self._add(name, ins, out, lambda x: x.float())
                        continue
                    raise ModelError(f"{origin}: DENSIFY of a non-constant tensor is not supported")
                # Sparse tensors were densified on read; both ops fold to a float constant here.
                self._consts[out] = src.astype(np.float32 if name == "DEQUANTIZE" else src.dtype)
                continue
            getattr(self, f"_build_{name.lower()}")(op, ins, out)
        # Explicit PAD ops copy whole activations; fold them into the convolutions and additions that read
        # them (BlazeFace full-range on 2 CPU cores: the whole analysis pass 0.79x the time).
        self.fused_pad_adds = self._fuse_channel_pad_adds() if fuse else 0
        self.folded_pads = self._fold_pads_into_convolutions() if fuse else 0
        for i in self.output_ids:
            if i not in self._producers and i not in self._consts:
                raise ModelError(f"{origin}: output tensor {tensors[i].name!r} is never computed")

    # -- building ----------------------------------------------------------------------------------
    @property
    def _producers(self) -> set[int]:
        return {s.output for s in self._steps} | set(self.input_ids)

    def _add(self, op: str, ins: tuple[int, ...], out: int, fn: Callable[..., Tensor], nchw: bool = True) -> None:
        self._steps.append(_Step(op, ins, out, fn))
        if nchw and len(self._shapes[out]) == 4:
            self._nchw.add(out)

    def _param(self, value: np.ndarray) -> Callable[[], Tensor]:
        """Register a constant as a buffer; return a getter that looks it up at call time, so the
        graph's closures follow ``.to(device, dtype)`` (which replaces buffers)."""
        name = f"w{self._n_params}"
        self._n_params += 1
        self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
        return lambda: getattr(self, name)

    def _const(self, idx: int, what: str) -> np.ndarray:
        if idx not in self._consts:
            raise ModelError(f"{self.origin}: {what} must be a constant tensor")
        return self._consts[idx]

    def _pad_fn(self, pads: tuple[int, int, int, int], value: float = 0.0) -> Callable[[Tensor], Tensor]:
        """F.pad order (left, right, top, bottom); a no-op when all are zero."""
        if not any(pads):
            return lambda x: x
        return lambda x: F.pad(x, pads, value=value)

    def _conv_common(self, ins: tuple[int, ...], out: int, weight: np.ndarray, opt: object, groups: int,
                     op: str) -> None:
        stride = (int(opt.StrideH()), int(opt.StrideW()))  # type: ignore[attr-defined]
        dil = (int(opt.DilationHFactor()), int(opt.DilationWFactor()))  # type: ignore[attr-defined]
        _, h, w, _ = self._shapes[ins[0]]
        kh, kw = weight.shape[2:]
        if opt.Padding() == 0:  # type: ignore[attr-defined]
            pt, pb = same_padding(h, kh, stride[0], dil[0])
            pl, pr = same_padding(w, kw, stride[1], dil[1])
        else:
            pt = pb = pl = pr = 0
        wt = self._param(weight)
        bias = self._param(self._const(ins[2], f"{op} bias")) if len(ins) > 2 else None
        act = _act(opt.FusedActivationFunction(), op)  # type: ignore[attr-defined]
        self._conv_steps[out] = ((pl, pr, pt, pb), wt, bias, stride, dil, groups, act)
        self._add(op, ins[:1], out, self._conv_fn((pl, pr, pt, pb), wt, bias, stride, dil, groups, act))

    def _conv_fn(self, pads: tuple[int, int, int, int], wt: Callable[[], Tensor], bias: Callable[[], Tensor] | None,
                 stride: tuple[int, int], dil: tuple[int, int], groups: int, act: Callable[[Tensor], Tensor]
                 ) -> Callable[[Tensor], Tensor]:
        """The convolution with zero padding ``pads`` (left, right, top, bottom): through the convolution's
        own padding where it is symmetric (no padded copy of the input), else padded first."""
        pl, pr, pt, pb = pads
        if pt == pb and pl == pr:
            pad_in, conv_pad = self._pad_fn((0, 0, 0, 0)), (pt, pl)
        else:
            pad_in, conv_pad = self._pad_fn((pl, pr, pt, pb)), (0, 0)

        pointwise = wt().shape[2:] == (1, 1) and groups == 1 and stride == (1, 1) and not any(pads)

        def fn(x: Tensor) -> Tensor:
            if pointwise and x.is_cuda and self.pointwise_matmul_on_cuda:
                return act(_pointwise(x, wt(), None if bias is None else bias()))
            return act(F.conv2d(pad_in(x), wt(), None if bias is None else bias(), stride, conv_pad, dil, groups))

        return fn

    def _build_conv_2d(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "Conv2DOptions")
        w = self._const(ins[1], "CONV_2D filter").transpose(0, 3, 1, 2)  # OHWI -> OIHW
        groups = self._shapes[ins[0]][3] // w.shape[1]
        self._conv_common(ins, out, w, opt, groups, "CONV_2D")

    def _build_depthwise_conv_2d(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "DepthwiseConv2DOptions")
        w = self._const(ins[1], "DEPTHWISE_CONV_2D filter").transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
        groups = self._shapes[ins[0]][3]
        self._conv_common(ins, out, w, opt, groups, "DEPTHWISE_CONV_2D")

    def _build_pad(self, op: object, ins: tuple[int, ...], out: int) -> None:
        p = self._const(ins[1], "PAD paddings").astype(np.int64)
        if p.shape != (4, 2) or p[0].any():
            raise ModelError(f"{self.origin}: PAD supports 4-D tensors without batch padding")
        pads = (int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1]))
        self._add("PAD", ins[:1], out, lambda x: F.pad(x, pads))
        if not any(pads[:5]) and pads[5] > 0:  # zero channels appended: a residual's shortcut widened
            self._channel_pads[out] = ins[0]
        if not any(pads[4:]):
            self._spatial_pads[out] = (ins[0], pads[:4])

    def _binary(self, op: str, ins: tuple[int, ...], out: int, fn2: Callable[[Tensor, Tensor], Tensor],
                act: Callable[[Tensor], Tensor]) -> None:
        a, b = ins
        consts = {i: self._param(self._to_layout(self._consts[i], out)) for i in (a, b) if i in self._consts}
        live = tuple(i for i in (a, b) if i not in consts)

        def fn(*xs: Tensor) -> Tensor:
            it = iter(xs)
            va = consts[a]() if a in consts else next(it)
            vb = consts[b]() if b in consts else next(it)
            return act(fn2(va, vb))

        self._add(op, live, out, fn)

    def _to_layout(self, value: np.ndarray, out: int) -> np.ndarray:
        """A constant operand that broadcasts against an NHWC 4-D tensor, re-laid for NCHW."""
        if len(self._shapes[out]) != 4:
            return value
        v = value.reshape((1,) * (4 - value.ndim) + value.shape)
        return v.transpose(0, 3, 1, 2)

    def _build_add(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "AddOptions")
        act = _act(opt.FusedActivationFunction(), "ADD")  # type: ignore[attr-defined]
        self._binary("ADD", ins, out, torch.add, act)
        if not any(i in self._consts for i in ins):
            self._add_acts[out] = act

    def _readers(self) -> tuple[dict[int, int], set[int]]:
        """How many steps read each tensor, and the tensors the graph's caller sees (never rewritten)."""
        uses: dict[int, int] = {}
        for step in self._steps:
            for i in step.inputs:
                uses[i] = uses.get(i, 0) + 1
        return uses, set(self.input_ids) | set(self.output_ids)

    def _fold_pads_into_convolutions(self) -> int:
        """``CONV(PAD(x))`` -> ``CONV(x)`` with the pad as the convolution's own (zero) padding when the
        two together are symmetric: models exported with explicit PAD ops before VALID convolutions then
        make no padded copy of every activation. Returns how many PAD ops were folded."""
        uses, keep = self._readers()
        dropped: set[int] = set()
        steps = []
        for step in self._steps:
            src = step.inputs[0] if step.inputs else -1
            if step.output in self._conv_steps and src in self._spatial_pads and uses.get(src) == 1 and src not in keep:
                x, (l1, r1, t1, b1) = self._spatial_pads[src]
                own, wt, bias, stride, dil, groups, act = self._conv_steps[step.output]
                total = (own[0] + l1, own[1] + r1, own[2] + t1, own[3] + b1)
                if total[0] == total[1] and total[2] == total[3]:
                    fn = self._conv_fn(total, wt, bias, stride, dil, groups, act)
                    step = _Step(step.op, (x,), step.output, fn)
                    dropped.add(src)
            steps.append(step)
        self._steps = [step for step in steps if step.output not in dropped]
        return len(dropped)

    def _fuse_channel_pad_adds(self) -> int:
        """``ADD(x, PAD_channels(y))`` -> ``x`` with ``y`` added into its first channels: the residual
        blocks of BlazeFace-like networks widen their shortcut with zero channels, and the padded copy
        cost more than the addition (the zero channels add exactly nothing). ``x`` is added into in place
        when it is a fresh convolution output read by nothing else. Returns how many were fused."""
        uses, keep = self._readers()
        producer = {step.output: step.op for step in self._steps}
        dropped: set[int] = set()
        steps = []
        for step in self._steps:
            padded = [i for i in step.inputs if i in self._channel_pads and uses.get(i) == 1 and i not in keep]
            if step.op == "ADD" and step.output in self._add_acts and len(step.inputs) == 2 and padded:
                pad_out = padded[0]
                other = step.inputs[1] if step.inputs[0] == pad_out else step.inputs[0]
                inplace = (uses.get(other) == 1 and other not in keep
                           and producer.get(other) in ("CONV_2D", "DEPTHWISE_CONV_2D"))
                act = self._add_acts[step.output]

                def fused(x: Tensor, y: Tensor, act: Callable[[Tensor], Tensor] = act, inplace: bool = inplace
                          ) -> Tensor:
                    out = x if inplace else x.clone()
                    out[:, : y.shape[1]] += y
                    return act(out)

                step = _Step("ADD", (other, self._channel_pads[pad_out]), step.output, fused)
                dropped.add(pad_out)
            elif step.op == "ADD" and step.output in self._add_acts and len(step.inputs) == 2:
                # A plain residual addition: into the convolution output it is given, when nothing else reads it.
                fresh = [i for i in step.inputs if uses.get(i) == 1 and i not in keep
                         and producer.get(i) in ("CONV_2D", "DEPTHWISE_CONV_2D")
                         and self._shapes[i] == self._shapes[step.output]]
                if fresh:
                    other = step.inputs[1] if step.inputs[0] == fresh[0] else step.inputs[0]
                    act = self._add_acts[step.output]

                    def add_into(x: Tensor, y: Tensor, act: Callable[[Tensor], Tensor] = act) -> Tensor:
                        return act(x.add_(y))

                    step = _Step("ADD", (fresh[0], other), step.output, add_into)
            steps.append(step)
        self._steps = [step for step in steps if step.output not in dropped]
        return len(dropped)

    def _build_mul(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "MulOptions")
        self._binary("MUL", ins, out, torch.mul, _act(opt.FusedActivationFunction(), "MUL"))  # type: ignore[attr-defined]

    def _build_prelu(self, op: object, ins: tuple[int, ...], out: int) -> None:
        alpha = self._param(self._to_layout(self._const(ins[1], "PRELU alpha"), out))
        self._add("PRELU", ins[:1], out, lambda x: torch.where(x >= 0, x, x * alpha()))

    def _build_relu(self, op: object, ins: tuple[int, ...], out: int) -> None:
        self._add("RELU", ins[:1], out, F.relu)

    def _build_relu6(self, op: object, ins: tuple[int, ...], out: int) -> None:
        self._add("RELU6", ins[:1], out, lambda x: x.clamp(0.0, 6.0))

    def _build_logistic(self, op: object, ins: tuple[int, ...], out: int) -> None:
        self._add("LOGISTIC", ins[:1], out, torch.sigmoid)

    def _pool(self, op: object, ins: tuple[int, ...], out: int, kind: str) -> None:
        opt = _options(op, "Pool2DOptions")
        k = (int(opt.FilterHeight()), int(opt.FilterWidth()))  # type: ignore[attr-defined]
        s = (int(opt.StrideH()), int(opt.StrideW()))  # type: ignore[attr-defined]
        _, h, w, _ = self._shapes[ins[0]]
        if opt.Padding() == 0:  # type: ignore[attr-defined]
            pt, pb = same_padding(h, k[0], s[0])
            pl, pr = same_padding(w, k[1], s[1])
        else:
            pt = pb = pl = pr = 0
        act = _act(opt.FusedActivationFunction(), kind)  # type: ignore[attr-defined]
        if kind == "MAX_POOL_2D":
            # Padded cells never win a TFLite max pool.
            pad = self._pad_fn((pl, pr, pt, pb), value=float("-inf"))
            self._add(kind, ins[:1], out, lambda x: act(F.max_pool2d(pad(x), k, s)))
        else:
            if any((pt, pb, pl, pr)):
                raise ModelError(f"{self.origin}: AVERAGE_POOL_2D with SAME padding is not supported")
            self._add(kind, ins[:1], out, lambda x: act(F.avg_pool2d(x, k, s)))

    def _build_max_pool_2d(self, op: object, ins: tuple[int, ...], out: int) -> None:
        self._pool(op, ins, out, "MAX_POOL_2D")

    def _build_average_pool_2d(self, op: object, ins: tuple[int, ...], out: int) -> None:
        self._pool(op, ins, out, "AVERAGE_POOL_2D")

    def _build_reshape(self, op: object, ins: tuple[int, ...], out: int) -> None:
        src_nchw = ins[0] in self._nchw
        shape = self._shapes[out]
        tail = tuple(shape[1:])
        to_nchw = len(shape) == 4

        def fn(x: Tensor) -> Tensor:
            if src_nchw:
                x = x.permute(0, 2, 3, 1)
            y = x.reshape((x.shape[0],) + tail)
            return y.permute(0, 3, 1, 2) if to_nchw else y

        self._add("RESHAPE", ins[:1], out, fn, nchw=to_nchw)

    def _build_concatenation(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "ConcatenationOptions")
        rank = len(self._shapes[out])
        axis = int(opt.Axis()) % rank  # type: ignore[attr-defined]
        if rank == 4:
            if not all(i in self._nchw for i in ins):
                raise ModelError(f"{self.origin}: CONCATENATION of mixed-layout tensors")
            axis = _AXIS_NCHW[axis]
        act = _act(opt.FusedActivationFunction(), "CONCATENATION")  # type: ignore[attr-defined]
        self._add("CONCATENATION", ins, out, lambda *xs: act(torch.cat(xs, dim=axis)), nchw=rank == 4)

    def _build_resize_bilinear(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "ResizeBilinearOptions")
        hw = self._const(ins[1], "RESIZE_BILINEAR size")
        size = (int(hw[0]), int(hw[1]))
        align, half = bool(opt.AlignCorners()), bool(opt.HalfPixelCenters())  # type: ignore[attr-defined]
        if align or half:
            self._add("RESIZE_BILINEAR", ins[:1], out,
                      lambda x: _interpolate(x, size, align))
        else:
            self._add("RESIZE_BILINEAR", ins[:1], out, lambda x: _resize_legacy(x, size))

    def _build_depth_to_space(self, op: object, ins: tuple[int, ...], out: int) -> None:
        bs = int(_options(op, "DepthToSpaceOptions").BlockSize())  # type: ignore[attr-defined]

        def fn(x: Tensor) -> Tensor:
            # TF's NHWC DepthToSpace takes channel (i * bs + j) * C + c to offset (i, j) of channel c.
            n, cin, h, w = x.shape
            c = cin // (bs * bs)
            y = x.reshape(n, bs, bs, c, h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(n, c, h * bs, w * bs)

        self._add("DEPTH_TO_SPACE", ins[:1], out, fn)

    def _build_mean(self, op: object, ins: tuple[int, ...], out: int) -> None:
        axes = sorted({int(a) % len(self._shapes[ins[0]]) for a in self._const(ins[1], "MEAN axes").reshape(-1)})
        keep = bool(_options(op, "ReducerOptions").KeepDims())  # type: ignore[attr-defined]
        src_nchw = ins[0] in self._nchw
        if src_nchw and (keep or axes == [1, 2]):
            # Keeping dims, or pooling H and W away: the NCHW result is laid out as the graph expects.
            dims = [_AXIS_NCHW[a] for a in axes]
            self._add("MEAN", ins[:1], out, lambda x: x.mean(dim=dims, keepdim=keep), nchw=keep)
        else:
            to_nhwc = src_nchw

            def fn(x: Tensor) -> Tensor:
                return (x.permute(0, 2, 3, 1) if to_nhwc else x).mean(dim=axes, keepdim=keep)

            self._add("MEAN", ins[:1], out, fn, nchw=False)

    def _build_fully_connected(self, op: object, ins: tuple[int, ...], out: int) -> None:
        opt = _options(op, "FullyConnectedOptions")
        if opt.WeightsFormat() != 0:  # type: ignore[attr-defined]
            raise ModelError(f"{self.origin}: FULLY_CONNECTED with shuffled weights is not supported")
        weight = self._param(self._const(ins[1], "FULLY_CONNECTED weights"))  # (out, in)
        bias = self._param(self._const(ins[2], "FULLY_CONNECTED bias")) if len(ins) > 2 else None
        act = _act(opt.FusedActivationFunction(), "FULLY_CONNECTED")  # type: ignore[attr-defined]
        src_nchw = ins[0] in self._nchw
        shape = self._shapes[out]
        if not shape or shape[0] != 1:
            raise ModelError(f"{self.origin}: FULLY_CONNECTED output must have a batch of 1, got {shape}")
        tail = tuple(shape[1:])

        def fn(x: Tensor) -> Tensor:
            if src_nchw:
                x = x.permute(0, 2, 3, 1)
            y = F.linear(x.reshape(x.shape[0], -1, x.shape[-1]), weight(), None if bias is None else bias())
            return act(y.reshape((x.shape[0],) + tail))

        self._add("FULLY_CONNECTED", ins[:1], out, fn, nchw=False)

    # -- running -----------------------------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run the graph on NCHW image inputs; returns the outputs in graph layout (see module doc)."""
        if len(inputs) != len(self.input_ids):
            raise ModelError(f"{self.origin}: expects {len(self.input_ids)} input(s), got {len(inputs)}")
        # Graphs only under inference mode (the analysis pass): their static tensors are inference tensors.
        if self.cuda_graphs and len(inputs) == 1 and inputs[0].is_cuda and torch.is_inference_mode_enabled():
            with self._graph_lock:
                if self._graphs is None:
                    self._graphs = CudaGraphs(self.origin, lambda _, x, __: self.run_eager(x), False, limit=8)
                try:
                    return self._graphs(self, inputs[0], 0.0)  # type: ignore[no-any-return]
                except SettingsError:  # cannot be captured here: run as it is from now on
                    self.cuda_graphs = False
        return self.run_eager(*inputs)

    def _channels_last(self, x: Tensor) -> bool:
        return self.channels_last_on_cuda if x.is_cuda else x.device.type == "cpu" and self.channels_last_on_cpu

    def run_eager(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """:meth:`forward` op by op."""
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and self._channels_last(x)
                       else x for x in inputs)
        env: dict[int, Tensor] = dict(zip(self.input_ids, inputs))
        for step in self._steps:
            env[step.output] = step.fn(*(env[i] for i in step.inputs))
        outs = []
        for i in self.output_ids:
            y = env[i]
            outs.append(y.permute(0, 2, 3, 1) if i in self._nchw else y)
        return tuple(outs)


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1, stride-1 convolution of ``x`` (N, C, H, W) as one matrix product (cuBLAS on CUDA), in the layout
    ``x`` has: channels-last as (N*H*W, C) rows times the weights, else batched (C_out, C) x (C, H*W)."""
    n, c, h, w = x.shape
    wm = weight.reshape(weight.shape[0], c)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        rows = torch.matmul(x.permute(0, 2, 3, 1).reshape(n * h * w, c), wm.t())
        if bias is not None:
            rows.add_(bias)
        return rows.view(n, h, w, -1).permute(0, 3, 1, 2)
    y = torch.matmul(wm, x.reshape(n, c, h * w)).reshape(n, -1, h, w)
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1))


def _interpolate(x: Tensor, size: tuple[int, int], align: bool) -> Tensor:
    """Bilinear resize; on CUDA through the channels-last kernel (the NCHW one loops over batch and channels in
    each thread: 4.3 ms for one of BlazeFace's resizes at 256 crops on an H100)."""
    if x.is_cuda:
        y = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                          align_corners=align)
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align)


def _resize_legacy(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1 bilinear resize without half-pixel centres: source = dst * (in / out)."""
    n, c, h, w = x.shape
    oh, ow = size
    ys = torch.arange(oh, device=x.device, dtype=x.dtype) * (h / oh)
    xs = torch.arange(ow, device=x.device, dtype=x.dtype) * (w / ow)
    y0 = ys.floor().long().clamp(max=h - 1)
    x0 = xs.floor().long().clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    fy = (ys - y0.to(x.dtype)).view(1, 1, oh, 1)
    fx = (xs - x0.to(x.dtype)).view(1, 1, 1, ow)
    top = x[:, :, y0][..., x0] * (1 - fx) + x[:, :, y0][..., x1] * fx
    bot = x[:, :, y1][..., x0] * (1 - fx) + x[:, :, y1][..., x1] * fx
    return top * (1 - fy) + bot * fy


def load_tflite(path: str | Path, sha256: str | None = None) -> TFLiteModule:
    """Read, verify and convert a ``.tflite`` file into an eval-mode :class:`TFLiteModule` (CPU)."""
    data = read_verified(path, sha256)
    return TFLiteModule(data, origin=str(path)).eval()
