"""Nets opened from an ONNX model (``.onnx``): converted to a torch module here, exported, read like a program.

An ONNX file is a protobuf graph of standard operators with its weights inside. It is read without
running anything of the file's: no custom operator domain is ever resolved (a node outside the
standard ``ai.onnx`` domain is refused by name), and a tensor whose data lives in an *external* file
is refused, so opening a model never reads another file of this machine. Sizes come first: the file
must fit the memory budget before it is parsed, and the bytes its tensors declare (dims x element
size, known before any tensor is made) must fit before anything is converted.

**Conversion.** Every input's shape is fixed (a free batch dimension becomes 1; any other free
dimension needs ``input_shape``). Shape arithmetic (``Shape``, ``Gather``, ``Concat`` ... feeding a
``Reshape`` or a ``Pad``, a causal mask built by ``Trilu``) is folded into constants with ONNX's own
reference evaluator, so every shape, axis and pad is a number when the graph is converted. Only
ops whose work is linear in their sizes are folded, each reading and writing at most ``FOLD_WORK``
elements and all of them ``FOLD_WORK_TOTAL``: a constant beyond that (a long context's causal mask) and
any other op over constants (a ``Conv`` or ``MaxPool`` over a ``ConstantOfShape``, a ``MatMul``) are
converted like the rest, so a small file cannot make opening it compute for long. Each remaining node
becomes one small torch module calling the functional op with those numbers (``Conv``
-> ``conv2d``, ``Gemm`` -> ``linear``, ``MatMul`` -> ``matmul``, ``LayerNormalization`` ->
``layer_norm``, ...); the module is exported with ``torch.export`` and read by
:func:`~analysis.arch.graphnet.open_program`, each node labelled with the module path its ONNX name
carries (``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``, as torch's exporter writes them).

**Parameters.** ONNX stores every tensor alike, as an *initializer*: nothing in the file says which
were torch parameters and which buffers. Every floating-point initializer counts as a learned
parameter here (and so does a floating-point value folded from one), except BatchNorm's running mean
and variance, which are buffers as in torch; integer and boolean initializers and the values of
``Constant`` nodes never count. So a floating-point buffer of the torch net (a causal mask, a fixed
sin-cos position table) counts as parameters when read from ONNX (a 272-parameter block with a 6x6
mask and a 6x16 position table as buffers: 272 from torch and its ``.pt2``, 404 = 272 + 36 + 96 from
ONNX). torch's exporter
folds what is computed from weights alone (``do_constant_folding``, its default): a weight-normed
layer is stored as the weight computed from its ``g`` and ``v`` and counts that weight, not ``g`` and
``v`` (288 parameters in torch, 272 from ONNX), and an eval-mode net's BatchNorms are folded into
its convolutions, whose parameters are then the folded ones.

**Why not a converter package.** onnx2torch and onnx2pytorch keep shapes, axes and pads as tensors
that their modules read while running (``shape.tolist()``), which ``torch.export`` cannot trace
(a data-dependent guard: every transformer and every option-A ResNet failed), and both import
torchvision, which this project does not install.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.export import ExportedProgram

from analysis.arch.budget import ENV_VAR, MODULE_OVERHEAD_BYTES, BudgetError, fmt_bytes, memory_budget, reserve
from analysis.arch.graphnet import GraphNet, ProgramError, export_module, open_program
from analysis.core.errors import LensError

__all__ = ["FOLD_LIMIT", "FOLD_WORK", "FOLD_WORK_TOTAL", "PEAK_FACTOR", "SUPPORTED_OPS", "OnnxError", "module_path",
           "onnx_program", "open_onnx", "read_onnx"]

DEFAULT_DOMAINS = ("", "ai.onnx")
FOLD_LIMIT = 1 << 20  # elements: a value computed only from constants is folded when at most this large
# Elements one evaluated fold reads and writes, and all of them together. Every op in _FOLD_OPS costs
# numpy time in proportion to these (measured: at most 2.5 ms for 2^18 elements, an integer Div), so one
# fold stays a few milliseconds and all of them well under a second, whatever the file asks for.
FOLD_WORK = 1 << 18
FOLD_WORK_TOTAL = 1 << 26
NODES_MAX = 20_000  # nodes in all graphs: ResNet-152 has about 500, a large transformer a few thousand
EXAMPLE_MAX = 256 << 20  # bytes of the example input the module is exported with
# Ops whose ONNX data propagation makes one record per element of their output, however few bytes ask
# for it (Range(0, 2**26) in a 164-byte file took 14.6 GB): shape inference propagates data only while
# each of them provably makes at most FOLD_LIMIT elements.
_GROWING_OPS = frozenset({"Range", "ConstantOfShape", "Expand", "Tile", "Pad", "Resize", "Upsample", "OneHot"})
FOLD_TOTAL = 256 << 20  # bytes of folded values in all (an eighth of the budget if less): folding stays inside it
# Peak memory of opening a model, per byte its tensors declare: the parsed file, the torch tensors made
# from it, torch.export's own working set. Measured: ResNet-50 (97 MiB of weights) peaked 219 MiB above
# the process before it (2.25x); rounded up.
PEAK_FACTOR = 2.4
# The ops folded into constants: shape arithmetic (and the masks and index tables built with it), each
# linear in the elements it reads and writes. Any other node is converted to torch however constant its
# inputs: the reference evaluator runs Conv and the pools in Python loops, an Einsum or a MatMul costs
# far more than its sizes show, and a ConstantOfShape makes a large operand from a few bytes (a 358-byte
# file's MaxPool over one took 328 s to fold). Random ops and control flow were never folded.
_FOLD_OPS = frozenset({
    "Constant", "Identity", "Shape", "Size", "ConstantOfShape", "Range", "Cast", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Concat", "Slice", "Gather", "Transpose", "Expand", "Tile", "Trilu", "Where", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs",
    "Max", "Min", "Floor", "Ceil", "Sqrt", "ReduceSum", "ReduceProd"})
_TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.FLOAT16: torch.float16, TensorProto.DOUBLE: torch.float64,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


class OnnxError(ProgramError):
    """An ONNX model that cannot be opened: not ONNX, unsafe, too large, or holding ops we cannot convert."""


class _Unsupported(Exception):
    """A node this converter has no torch equivalent for (the reason names what)."""


# --------------------------------------------------------------------------------------------- read
def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph its nodes hold (If / Loop / Scan bodies)."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the file stores: initializers (sparse ones too) and node attributes, in every graph."""
    graphs = list(_graphs(model.graph))
    for f in model.functions:
        graphs.append(onnx.GraphProto(node=f.node))
    for g in graphs:
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                for s in a.sparse_tensors:
                    yield s.values
                    yield s.indices


def _itemsize(data_type: int) -> int:
    try:
        return int(helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 0


def _numel(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def _digest(a: np.ndarray) -> bytes:
    """A digest of a 2-D array's values in row order (its dtype too), a block of rows at a time: the
    transpose of a large weight is never copied whole."""
    h = hashlib.blake2b(str(a.dtype).encode(), digest_size=16)
    rows = max(1, (1 << 20) // max(1, a.shape[1]))
    for i in range(0, a.shape[0], rows):
        h.update(np.ascontiguousarray(a[i:i + rows]).tobytes())
    return h.digest()


def _attr_int(node: onnx.NodeProto, key: str) -> int | None:
    return next((int(a.i) for a in node.attribute if a.name == key and a.type == onnx.AttributeProto.INT), None)


def _declared_bytes(model: onnx.ModelProto, name: str) -> int:
    """Bytes the file's tensors declare (their dims times their element size), before any is made.
    A tensor kept in an external file is refused here: reading it would open a path the file names."""
    total = 0
    for t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            where = next((e.value for e in t.external_data if e.key == "location"), "another file")
            raise OnnxError(f"{name}: its tensor {t.name!r} keeps its data in an external file ({where}); ResNet "
                            "Lens opens single-file ONNX models only and never reads files a model names (save it "
                            "with onnx.save_model(..., save_as_external_data=False))")
        if any(d < 0 for d in t.dims):
            raise OnnxError(f"{name}: its tensor {t.name!r} declares a negative dimension {list(t.dims)}")
        size = _itemsize(t.data_type)
        if not size:
            raise OnnxError(f"{name}: its tensor {t.name!r} has an element type ResNet Lens cannot read "
                            f"({t.data_type})")
        total += _numel(t.dims) * size
    return total


def _skeleton(model: onnx.ModelProto, inputs: Sequence[onnx.ValueInfoProto], nodes: Sequence[onnx.NodeProto],
              values: Mapping[str, np.ndarray] | None = None, *, floats: bool = True) -> onnx.ModelProto:
    """A copy of the model without its weights: each initializer over 4096 elements (and every
    floating-point one unless ``floats``) becomes a graph input of its type and shape, which is all the
    checker and shape inference read of it; ``values`` adds folded constants (integers by value)."""
    values = values or {}
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.name = model.graph.name
    g.input.extend(inputs)
    names = {v.name for v in inputs}
    for t in model.graph.initializer:
        if t.name in values or t.name in names:
            continue
        if _numel(t.dims) > 4096 or (not floats and t.data_type in _FLOATS):
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    for n, v in values.items():
        if v.dtype.kind in "iub":
            g.initializer.append(numpy_helper.from_array(v, n))
        else:
            g.input.append(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
    g.node.extend(nodes)
    g.output.extend(model.graph.output)
    return light


def read_onnx(source: str | Path | bytes, name: str = "model.onnx") -> tuple[onnx.ModelProto, int]:
    """The parsed model and the bytes opening it holds (its parsed tensors, their torch copies, and the
    caller's bytes), checked before anything is converted: within the memory budget, single-file (no
    external data), a valid ONNX graph. Failures are one :class:`OnnxError` sentence."""
    budget = memory_budget()
    held = 0  # bytes the caller keeps while the model is opened
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise OnnxError(f"{path}: no such ONNX file")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise OnnxError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    else:
        size = held = len(source)
    if 2 * size > budget:  # the file's bytes and their parsed copy, both held while it is read
        raise OnnxError(f"{name}: it is {fmt_bytes(size)}; reading it takes about {fmt_bytes(2 * size)}, more than "
                        f"the memory budget of {fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
    try:
        blob = path.read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    except OSError as exc:
        raise OnnxError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    model = onnx.ModelProto()
    try:
        model.ParseFromString(blob)  # protobuf only: nothing is resolved, no other file is opened
    except Exception as exc:  # protobuf's DecodeError (or its C++ twin's error type)
        raise OnnxError(f"{name}: not an ONNX model (its bytes do not parse as one: {type(exc).__name__})") from None
    del blob  # read from a path, the bytes are ours: only the parsed model is held from here on
    if not model.HasField("graph") or not model.graph.node or not model.ir_version:
        raise OnnxError(f"{name}: not an ONNX model (it holds no graph of nodes)")
    nodes = sum(len(g.node) for g in _graphs(model.graph)) + sum(len(f.node) for f in model.functions)
    if nodes > NODES_MAX:
        raise OnnxError(f"{name}: it has {nodes} nodes, more than the {NODES_MAX} ResNet Lens opens")
    declared = _declared_bytes(model, name)
    # its tensors (parsed, then torch's), one module per node, and the caller's bytes if it holds them
    need = held + math.ceil(PEAK_FACTOR * declared) + len(model.graph.node) * MODULE_OVERHEAD_BYTES
    if need > budget:
        raise OnnxError(f"{name}: its tensors declare {fmt_bytes(declared)}; opening it takes about {fmt_bytes(need)}, "
                        f"more than the memory budget of {fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
    try:
        onnx.checker.check_model(_skeleton(model, model.graph.input, model.graph.node))
    except Exception as exc:  # onnx.checker.ValidationError, or a C++ error for a damaged graph
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise OnnxError(f"{name}: not a valid ONNX model ({first})") from None
    return model, need


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Input:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


SHAPE_HELP = "give the input's full shape (input_shape)"  # what a free size is told by default


def _inputs(model: onnx.ModelProto, name: str, input_shape: Sequence[int] | None, batch: int = 1,
            shape_help: str = SHAPE_HELP) -> list[_Input]:
    """The graph's inputs (initializers listed as inputs aside) with fixed shapes: a free first
    dimension (the batch) becomes ``batch``; any other free dimension needs ``input_shape`` (else it is
    refused, the sentence ending with ``shape_help``)."""
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in inits]
    if not graph_inputs:
        raise OnnxError(f"{name}: its graph has no input")
    if input_shape is not None and len(graph_inputs) != 1:
        raise OnnxError(f"{name}: it has {len(graph_inputs)} inputs; an input shape can be given for a one-input "
                        "model only")
    out: list[_Input] = []
    for v in graph_inputs:
        kind = v.type.WhichOneof("value")
        if kind != "tensor_type" or v.type.tensor_type.elem_type not in _TORCH_DTYPES:
            raise OnnxError(f"{name}: its input {v.name!r} is not a tensor of a type ResNet Lens can make "
                            f"({kind or 'no type'})")
        tt = v.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else None
        if input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
            if any(d < 1 for d in shape):
                raise OnnxError(f"{name}: an input shape holds whole numbers >= 1, got {list(shape)}")
            fixed = [(i, d.dim_value) for i, d in enumerate(dims or []) if d.HasField("dim_value")]
            if dims is not None and (len(dims) != len(shape) or any(shape[i] != n for i, n in fixed)):
                want = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
                raise OnnxError(f"{name}: the input shape {list(shape)} does not fit its input {v.name!r} of shape {want}")
        else:
            if dims is None:
                raise OnnxError(f"{name}: its input {v.name!r} has no declared shape; {shape_help}")
            sizes: list[int] = []
            for i, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0:
                    sizes.append(int(d.dim_value))
                elif i == 0:
                    sizes.append(batch)  # the batch: one example, as a program is exported, unless told
                else:
                    raise OnnxError(f"{name}: its input {v.name!r} has no fixed size on axis {i} "
                                    f"({d.dim_param or 'unnamed'}); {shape_help}")
            shape = tuple(sizes)
        out.append(_Input(v.name, shape, _TORCH_DTYPES[tt.elem_type]))
    return out


# ------------------------------------------------------------------------------------------- labels
SCOPES_MAX = 4096  # characters: a node's name scopes longer than this are not parsed (no net nests so deep)


def _scopes(text: str) -> list[str] | None:
    """The list of strings ``text`` writes, or None: JSON when it is, else a Python list literal (torch
    writes ``repr(list)``), parsed only when short: parsing a 5 MB literal took 2.35 GB."""
    if len(text) > SCOPES_MAX:
        return None
    try:
        scopes = json.loads(text)
    except (ValueError, RecursionError):  # not JSON: torch's single-quoted strings
        try:
            scopes = ast.literal_eval(text)  # a literal; literal_eval evaluates nothing else
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return scopes if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes) else None


def module_path(node: onnx.NodeProto) -> str:
    """The torch module path an exporter wrote into a node: torch's dynamo exporter keeps its name
    scopes in ``pkg.torch.onnx.name_scopes`` (``['', 'blocks.0', 'blocks.0.attn', 'linear_2']``: each
    module's path, then the graph node's own name); its TorchScript exporter names nodes by scope
    (``/layer1/layer1.0/conv1/Conv``, the op last). A scope either repeats the path so far
    (``layer1.0`` inside ``layer1``) or adds one name to it (``conv1``). '' when the name has none."""
    parts: list[str] = []
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = _scopes(prop.value)
            if scopes is not None:
                parts = [s for s in scopes[:-1] if s]  # the node's own name last, as the op is in a scope name
                break
    else:
        if "/" in node.name:
            parts = [p for p in node.name.split("/")[:-1] if p]
    path = ""
    for p in parts:
        path = p if not path or p.startswith(path + ".") else f"{path}.{p}"
    return path


# ---------------------------------------------------------------------------------------- converter
class _Op(nn.Module):
    """One ONNX node: the torch function it became, with its shapes and attributes bound."""

    def __init__(self, fn: Callable[..., Any], op_type: str) -> None:
        super().__init__()
        self.fn = fn
        self.op_type = op_type

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


# ("env", value name), ("attr", attribute of the weights container) or ("attr.T", the same, transposed)
Ref = tuple[str, str]


class OnnxModule(nn.Module):
    """The converted net: its ONNX nodes in graph order, each a :class:`_Op` named ``n<index>``."""

    def __init__(self, inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.weights = nn.Module()
        self.input_names, self.output_names = inputs, outputs
        self.steps: list[tuple[str, list[Ref], list[str]]] = []
        self.paths: dict[str, str] = {}  # n<index> -> the torch module path of the ONNX node

    def forward(self, *xs: torch.Tensor) -> Any:
        env: dict[str, Any] = dict(zip(self.input_names, xs, strict=True))
        for module, refs, outs in self.steps:
            args = [env[v] if kind == "env" else getattr(self.weights, v) if kind == "attr" else
                    getattr(self.weights, v).t() for kind, v in refs]
            result = getattr(self, module)(*args)
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for o, r in zip(outs, result, strict=False):
                    if o:
                        env[o] = r
        found = [env[o] for o in self.output_names]
        return found[0] if len(found) == 1 else tuple(found)


@dataclass
class _Node:
    """What a builder sees of one node: its attributes, the values known for its inputs, its opset."""

    proto: onnx.NodeProto
    known: list[np.ndarray | None]  # per input: its value when fixed at conversion, else None
    learned: list[bool]  # per input: a learned weight (passed as a parameter, never baked in as a number)
    opset: int

    def attr(self, key: str, default: Any = None) -> Any:
        for a in self.proto.attribute:
            if a.name == key:
                return helper.get_attribute_value(a)
        return default

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int] | None:
        v = self.attr(key)
        return [int(i) for i in v] if v is not None else (list(default) if default is not None else None)

    def static(self, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as a number array fixed at conversion (None when the input is absent)."""
        if i >= len(self.proto.input) or not self.proto.input[i]:
            return None
        value = self.known[i]
        if value is None:
            raise _Unsupported(f"its {what} is computed from the data")
        return value

    def static_ints(self, i: int, what: str) -> list[int] | None:
        v = self.static(i, what)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]


Builder = Callable[[_Node], tuple[Callable[..., Any], list[int]]]


def _all_inputs(node: _Node) -> list[int]:
    return [i for i, v in enumerate(node.proto.input) if v]


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Builder:
    return lambda node: (fn, [0])


def _scalar(value: np.ndarray) -> float | int | bool:
    item = np.asarray(value).reshape(-1)[0]
    return bool(item) if item.dtype == np.bool_ else int(item) if item.dtype.kind in "iu" else float(item)


def _binary(fn: Callable[[Any, Any], torch.Tensor], reverse: Callable[[Any, Any], torch.Tensor] | None = None) -> Builder:
    """An element-wise op of two inputs. A one-element constant becomes a Python number (``x * 0.5``
    as torch writes it, so a constant join coefficient reads as one), reshaped back if it carried more
    dimensions than the tensor; ``reverse(x, c)`` computes ``c op x``."""

    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        for i in (1, 0):
            value = node.known[i] if i < len(node.known) else None
            if value is not None and np.asarray(value).size == 1 and not node.learned[i]:
                return _with_scalar(fn if i == 1 else reverse or _reversed(fn), _scalar(value), np.asarray(value).ndim), \
                    [1 - i]
        return fn, [0, 1]

    return build


def _reversed(fn: Callable[[Any, Any], torch.Tensor]) -> Callable[[Any, Any], torch.Tensor]:
    return lambda x, c: fn(torch.full_like(x, c), x)


def _with_scalar(fn: Callable[[Any, Any], torch.Tensor], c: float | int | bool, rank: int) -> Callable[..., Any]:
    return lambda x: _lift(fn(x, c), rank)


def _lift(y: torch.Tensor, rank: int) -> torch.Tensor:
    return y.reshape((1,) * (rank - y.ndim) + tuple(y.shape)) if y.ndim < rank else y


def _div(a: torch.Tensor, b: Any) -> torch.Tensor:
    """ONNX's Div: true division for floats, truncating for integers."""
    ints = not a.is_floating_point() and not (isinstance(b, torch.Tensor) and b.is_floating_point()) \
        and not isinstance(b, float)
    return torch.div(a, b, rounding_mode="trunc") if ints else torch.div(a, b)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mean: bool = False) -> Builder:
    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        def run(*xs: torch.Tensor) -> torch.Tensor:
            out = xs[0]
            for x in xs[1:]:
                out = fn(out, x)
            return out / len(xs) if mean else out
        return run, _all_inputs(node)
    return build


def _same_pads(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
               mode: str) -> list[int]:
    """ONNX's SAME_UPPER / SAME_LOWER padding as [begins..., ends...] for the input sizes."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _window(node: _Node, kernel: list[int], x: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads as [begins..., ends...]) of a conv or pool node for input ``x``."""
    k = len(kernel)
    strides = node.ints("strides", [1] * k) or [1] * k
    dilations = node.ints("dilations", [1] * k) or [1] * k
    auto = node.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(list(x.shape[2:]), kernel, strides, dilations, auto)
    elif auto == "VALID":
        pads = [0] * (2 * k)
    else:
        pads = node.ints("pads", [0] * (2 * k)) or [0] * (2 * k)
    return strides, dilations, pads


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] over the last axes as F.pad's (b_last, e_last, ...)."""
    k = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(k)):
        out += [int(pads[i]), int(pads[i + k])]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_GAP = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_GMP = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _conv(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    group = int(node.attr("group", 1))

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        kernel = list(w.shape[2:])
        strides, dilations, pads = _window(node, kernel, x)
        k = len(kernel)
        if k not in _CONV:
            raise _Unsupported(f"a {k}-d convolution")
        if pads[:k] != pads[k:]:  # asymmetric: pad first (torch pads both sides alike)
            x, padding = F.pad(x, _torch_pad(pads)), [0] * k
        else:
            padding = pads[:k]
        return _CONV[k](x, w, b, strides, padding, dilations, group)

    return run, _all_inputs(node)


def _conv_transpose(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if node.attr("output_shape") is not None:
        raise _Unsupported("an output_shape attribute")
    group = int(node.attr("group", 1))

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        k = w.ndim - 2
        strides = node.ints("strides", [1] * k) or [1] * k
        dilations = node.ints("dilations", [1] * k) or [1] * k
        pads = node.ints("pads", [0] * (2 * k)) or [0] * (2 * k)
        extra = node.ints("output_padding", [0] * k) or [0] * k
        if pads[:k] != pads[k:] or k not in _CONV_T:
            raise _Unsupported("asymmetric padding")
        return _CONV_T[k](x, w, b, strides, pads[:k], extra, group, dilations)

    return run, _all_inputs(node)


def _batch_norm(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if int(node.attr("training_mode", 0)):
        raise _Unsupported("training mode")
    eps = float(node.attr("epsilon", 1e-5))

    def run(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
            var: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)

    return run, [0, 1, 2, 3, 4]


def _layer_norm(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axis, eps = int(node.attr("axis", -1)), float(node.attr("epsilon", 1e-5))

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        shape = list(x.shape[axis % x.ndim:])
        if list(w.shape) == shape and (b is None or list(b.shape) == shape):
            return F.layer_norm(x, shape, w, b, eps)
        y = F.layer_norm(x, shape, None, None, eps) * w  # a broadcast scale: normalise, then scale
        return y + b if b is not None else y

    return run, _all_inputs(node)


def _instance_norm(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    eps = float(node.attr("epsilon", 1e-5))
    return (lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=eps)), [0, 1, 2]


def _gemm(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    """``alpha * A' B' + beta * C``: a linear layer when B is stored transposed (torch's layout),
    else a matmul and an add (the same MACs)."""
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))

    def run(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.t() if ta else a
        if tb and alpha == 1.0 and beta == 1.0 and (c is None or c.ndim <= 1):
            return F.linear(a, b, c)
        y = torch.matmul(a, b.t() if tb else b)
        y = y * alpha if alpha != 1.0 else y
        return y if c is None else y + (c * beta if beta != 1.0 else c)

    return run, _all_inputs(node)


def _pool(node: _Node, kind: str) -> tuple[Callable[..., Any], list[int]]:
    kernel = node.ints("kernel_shape")
    if not kernel:
        raise _Unsupported("no kernel_shape")
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise _Unsupported("an Indices output")
    ceil = bool(node.attr("ceil_mode", 0))
    include = bool(node.attr("count_include_pad", 0))
    k = len(kernel)
    if k not in _MAXPOOL:
        raise _Unsupported(f"a {k}-d window")

    def run(x: torch.Tensor) -> torch.Tensor:
        strides, dilations, pads = _window(node, kernel, x)
        if kind == "max":
            if pads[:k] != pads[k:] or any(p > kk // 2 for p, kk in zip(pads[:k], kernel, strict=True)):
                x, padding = F.pad(x, _torch_pad(pads), value=-math.inf), [0] * k
            else:
                padding = pads[:k]
            return _MAXPOOL[k](x, kernel, strides, padding, dilations, ceil)
        if any(d != 1 for d in dilations):
            raise _Unsupported("a dilated average pool")
        if pads[:k] != pads[k:]:
            if not include and any(pads):
                raise _Unsupported("asymmetric padding that is not counted")
            x, padding = F.pad(x, _torch_pad(pads)), [0] * k
        else:
            padding = pads[:k]
        return _AVGPOOL[k](x, kernel, strides, padding, ceil, include)

    return run, [0]


def _global_pool(table: Mapping[int, Callable[..., torch.Tensor]]) -> Builder:
    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        def run(x: torch.Tensor) -> torch.Tensor:
            k = x.ndim - 2
            if k not in table:
                raise _Unsupported(f"a {k}-d global pool")
            return table[k](x, 1)
        return run, [0]
    return build


def _softmax(fn: Callable[..., torch.Tensor]) -> Builder:
    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        old = node.opset < 13  # before opset 13: softmax over every axis from ``axis`` on, flattened
        axis = int(node.attr("axis", 1 if old else -1))

        def run(x: torch.Tensor) -> torch.Tensor:
            a = axis % x.ndim
            if not old or a == x.ndim - 1:
                return fn(x, a)
            return fn(x.reshape(math.prod(x.shape[:a]), -1), -1).reshape(x.shape)
        return run, [0]
    return build


def _flatten(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axis = int(node.attr("axis", 1))

    def run(x: torch.Tensor) -> torch.Tensor:
        a = axis % x.ndim if x.ndim else 0
        return torch.flatten(x, 1) if a == 1 and x.ndim >= 2 else x.reshape(math.prod(x.shape[:a]), -1)

    return run, [0]


def _reshape(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    shape = node.static_ints(1, "target shape") if node.opset >= 5 else node.ints("shape")
    if shape is None:
        raise _Unsupported("no target shape")
    allowzero = int(node.attr("allowzero", 0))

    def run(x: torch.Tensor) -> torch.Tensor:
        dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
        return torch.reshape(x, dims)

    return run, [0]


def _transpose(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    perm = node.ints("perm")
    return (lambda x: x.permute(perm if perm is not None else list(reversed(range(x.ndim))))), [0]


def _axes(node: _Node, since: int, what: str = "axes") -> list[int] | None:
    """Axes given as an attribute (before opset ``since``) or as input 1 (from it on)."""
    return node.static_ints(1, what) if node.opset >= since else node.ints("axes")


def _squeeze(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axes = _axes(node, 13)

    def run(x: torch.Tensor) -> torch.Tensor:
        dims = sorted({a % x.ndim for a in axes}) if axes else [i for i, n in enumerate(x.shape) if n == 1]
        for d in reversed(dims):
            x = x.squeeze(d)
        return x

    return run, [0]


def _unsqueeze(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axes = _axes(node, 13)
    if not axes:
        raise _Unsupported("no axes")

    def run(x: torch.Tensor) -> torch.Tensor:
        rank = x.ndim + len(axes)
        for d in sorted(a % rank for a in axes):
            x = x.unsqueeze(d)
        return x

    return run, [0]


def _concat(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axis = int(node.attr("axis", 0))
    return (lambda *xs: torch.cat(xs, axis)), _all_inputs(node)


def _split(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axis = int(node.attr("axis", 0))
    sizes = _axes(node, 13, "split sizes") if node.opset >= 13 else node.ints("split")
    parts = len(node.proto.output)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[axis]
        chunks = sizes or ([math.ceil(n / parts)] * (parts - 1) + [n - math.ceil(n / parts) * (parts - 1)])
        return tuple(torch.split(x, chunks, axis))

    return run, [0]


def _slice(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if node.opset >= 10:
        starts, ends = node.static_ints(1, "starts"), node.static_ints(2, "ends")
        axes, steps = node.static_ints(3, "axes"), node.static_ints(4, "steps")
    else:
        starts, ends, axes, steps = node.ints("starts"), node.ints("ends"), node.ints("axes"), None
    if starts is None or ends is None:
        raise _Unsupported("no starts or ends")
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)

    def run(x: torch.Tensor) -> torch.Tensor:
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            a = axis % x.ndim
            lo, hi, st = slice(start, end, step).indices(x.shape[a])
            if st > 0:
                index = [slice(None)] * a + [slice(lo, hi, st)]
                x = x[tuple(index)]
            else:
                x = x.index_select(a, torch.tensor(list(range(lo, hi, st)), dtype=torch.long))
        return x

    return run, [0]


def _gather(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    axis = int(node.attr("axis", 0))
    known = node.known[1]
    if known is not None:
        idx = np.asarray(known).astype(np.int64)

        def run_static(x: torch.Tensor) -> torch.Tensor:
            a = axis % x.ndim
            fixed = np.where(idx < 0, idx + x.shape[a], idx)
            if fixed.ndim == 0:
                return x.select(a, int(fixed))
            flat = torch.tensor(fixed.reshape(-1).tolist(), dtype=torch.long)
            return x.index_select(a, flat).reshape(*x.shape[:a], *fixed.shape, *x.shape[a + 1:])
        return run_static, [0]

    def run(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        a = axis % x.ndim
        i = torch.where(i < 0, i + x.shape[a], i).long()
        if a == 0 and x.ndim == 2 and x.is_floating_point():
            return F.embedding(i, x)  # a token lookup, as torch's nn.Embedding writes it
        return x.index_select(a, i.reshape(-1)).reshape(*x.shape[:a], *i.shape, *x.shape[a + 1:])

    return run, [0, 1]


def _pad(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    mode = node.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if node.opset >= 11:
        pads = node.static_ints(1, "pads")
        value_arr = node.static(2, "pad value")
        value = _scalar(value_arr) if value_arr is not None and np.asarray(value_arr).size else 0.0
        axes = node.static_ints(3, "axes")
    else:
        pads, value, axes = node.ints("pads"), float(node.attr("value", 0.0)), None
    if pads is None:
        raise _Unsupported("no pads")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise _Unsupported(f"mode {mode}")

    def run(x: torch.Tensor) -> torch.Tensor:
        ax = [a % x.ndim for a in axes] if axes is not None else list(range(x.ndim))
        k = len(ax)
        full = [0] * (2 * x.ndim)
        for j, a in enumerate(ax):
            full[a], full[a + x.ndim] = pads[j], pads[j + k]
        first = next((i for i in range(x.ndim) if full[i] or full[i + x.ndim]), x.ndim)
        spec = _torch_pad(full[first:x.ndim] + full[x.ndim + first:])
        if torch_mode == "constant":
            return F.pad(x, spec, "constant", value)
        return F.pad(x, spec, torch_mode)

    return run, [0]


def _expand(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    shape = node.static_ints(1, "shape")
    if shape is None:
        raise _Unsupported("no shape")
    return (lambda x: x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))), [0]


def _tile(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    repeats = node.static_ints(1, "repeats")
    if repeats is None:
        raise _Unsupported("no repeats")
    return (lambda x: x.repeat(repeats)), [0]


def _reduce(fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor], since: int = 18) -> Builder:
    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        axes = _axes(node, since)
        keep = bool(node.attr("keepdims", 1))
        noop = bool(node.attr("noop_with_empty_axes", 0))

        def run(x: torch.Tensor) -> torch.Tensor:
            if not axes and noop:
                return x
            dims = [a % x.ndim for a in axes] if axes else list(range(x.ndim))
            return fn(x, dims, keep)
        return run, [0]
    return build


def _arg(fn: Callable[..., torch.Tensor]) -> Builder:
    def build(node: _Node) -> tuple[Callable[..., Any], list[int]]:
        if int(node.attr("select_last_index", 0)):
            raise _Unsupported("select_last_index")
        axis, keep = int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
        return (lambda x: fn(x, axis, keep)), [0]
    return build


def _clip(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if node.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
        return (lambda x: torch.clamp(x, lo, hi)), [0]
    bounds: list[float | int | None] = []
    for i in (1, 2):
        value = node.static(i, "bounds")
        bounds.append(None if value is None else _scalar(value))
    return (lambda x: torch.clamp(x, bounds[0], bounds[1])), [0]


def _cast(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    to = int(node.attr("to"))
    if to not in _TORCH_DTYPES:
        raise _Unsupported(f"a cast to type {to}")
    dtype = _TORCH_DTYPES[to]
    return (lambda x: x.to(dtype)), [0]


def _gelu(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    approx = node.attr("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    return (lambda x: F.gelu(x, approximate=approx)), [0]


def _hard_sigmoid(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return (lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)), [0]


def _with_alpha(fn: Callable[[torch.Tensor, float], torch.Tensor], default: float) -> Builder:
    return lambda node: ((lambda x: fn(x, float(node.attr("alpha", default)))), [0])


def _prelu(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    return (lambda x, slope: torch.where(x >= 0, x, x * slope)), [0, 1]


def _trilu(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    k_arr = node.static(1, "diagonal offset")
    k = int(_scalar(k_arr)) if k_arr is not None else 0
    upper = bool(node.attr("upper", 1))
    return (lambda x: torch.triu(x, k) if upper else torch.tril(x, k)), [0]


def _constant_of_shape(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    """A filled tensor too large to fold (a big mask): made by torch when the module runs."""
    shape = node.static_ints(0, "shape")
    t = node.attr("value")
    fill = numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else np.zeros(1, dtype=np.float32)
    dtype = _TORCH_DTYPES.get(helper.np_dtype_to_tensor_dtype(fill.dtype)) if fill.size == 1 else None
    if shape is None or dtype is None:
        raise _Unsupported("no shape, or a fill value that is not one number")
    value = _scalar(fill)
    return (lambda: torch.full(shape, value, dtype=dtype)), []


def _range(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    """A range too large to fold (positions), made by torch when the module runs."""
    bounds = [node.static(i, "bounds") for i in range(3)]
    arrays = [np.asarray(b) for b in bounds if b is not None]
    if len(arrays) != 3 or any(a.size != 1 for a in arrays):
        raise _Unsupported("bounds that are not three numbers")
    dtype = _TORCH_DTYPES.get(helper.np_dtype_to_tensor_dtype(arrays[0].dtype))
    if dtype is None:
        raise _Unsupported(f"a range of {arrays[0].dtype}")
    start, limit, delta = (_scalar(a) for a in arrays)
    return (lambda: torch.arange(start, limit, delta, dtype=dtype)), []


def _einsum(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    eq = node.attr("equation", b"")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    return (lambda *xs: torch.einsum(eq, *xs)), _all_inputs(node)


def _where(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    return torch.where, [0, 1, 2]


def _cumsum(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if int(node.attr("exclusive", 0)) or int(node.attr("reverse", 0)):
        raise _Unsupported("exclusive or reverse sums")
    axis = node.static_ints(1, "axis")
    return (lambda x: torch.cumsum(x, axis[0] if axis else 0)), [0]


def _identity(node: _Node) -> tuple[Callable[..., Any], list[int]]:
    if node.proto.op_type == "Dropout" and len(node.proto.output) > 1 and node.proto.output[1]:
        raise _Unsupported("a mask output")
    return (lambda x: x), [0]


def _div_rev(x: Any, c: Any) -> torch.Tensor:
    return torch.reciprocal(x) * c if x.is_floating_point() else torch.div(torch.full_like(x, c), x, rounding_mode="trunc")


BUILDERS: dict[str, Builder] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm, "InstanceNormalization": _instance_norm, "Gemm": _gemm,
    "MatMul": lambda node: (torch.matmul, [0, 1]),
    "MaxPool": lambda node: _pool(node, "max"), "AveragePool": lambda node: _pool(node, "avg"),
    "GlobalAveragePool": _global_pool(_GAP), "GlobalMaxPool": _global_pool(_GMP),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil), "Round": _unary(torch.round),
    "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Sign": _unary(torch.sign), "Not": _unary(torch.logical_not),
    "Softplus": _unary(F.softplus), "Softsign": _unary(F.softsign), "HardSwish": _unary(F.hardswish),
    "Mish": _unary(F.mish), "Selu": _unary(torch.selu), "Gelu": _gelu, "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": _with_alpha(F.leaky_relu, 0.01), "Elu": _with_alpha(F.elu, 1.0), "Celu": _with_alpha(F.celu, 1.0),
    "PRelu": _prelu, "Clip": _clip, "Identity": _identity, "Dropout": _identity,
    "Add": _binary(torch.add), "Sub": _binary(torch.sub, lambda x, c: torch.rsub(x, c)),
    "Mul": _binary(torch.mul), "Div": _binary(_div, _div_rev), "Pow": _binary(torch.pow, lambda x, c: torch.pow(c, x)),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "LessOrEqual": _binary(torch.le),
    "Greater": _binary(torch.gt), "GreaterOrEqual": _binary(torch.ge), "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or), "Xor": _binary(torch.logical_xor),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Mean": _variadic(torch.add, mean=True), "Where": _where,
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "Split": _split, "Slice": _slice, "Gather": _gather,
    "Pad": _pad, "Expand": _expand, "Tile": _tile, "Cast": _cast, "Einsum": _einsum, "Trilu": _trilu,
    "CumSum": _cumsum, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "ReduceMean": _reduce(lambda x, d, k: torch.mean(x, d, k)),
    "ReduceSum": _reduce(lambda x, d, k: torch.sum(x, d, k), since=13),
    "ReduceMax": _reduce(lambda x, d, k: torch.amax(x, d, k)),
    "ReduceMin": _reduce(lambda x, d, k: torch.amin(x, d, k)),
    "ReduceProd": _reduce(lambda x, d, k: _prod(x, d, k)),
    "ReduceL2": _reduce(lambda x, d, k: torch.sqrt(torch.sum(x * x, d, k))),
    "ReduceSumSquare": _reduce(lambda x, d, k: torch.sum(x * x, d, k)),
    "ArgMax": _arg(torch.argmax), "ArgMin": _arg(torch.argmin),
}
SUPPORTED_OPS = frozenset(BUILDERS) | {"Constant", "Shape", "Size"}


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keep)
    return x


# ------------------------------------------------------------------------------------------ folding
class _Converter:
    """One model's conversion: constants folded, learned tensors registered, nodes built."""

    def __init__(self, model: onnx.ModelProto, inputs: list[_Input], name: str) -> None:
        self.model, self.name, self.inputs = model, name, inputs
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.known: dict[str, np.ndarray] = {}
        self.learned: set[str] = {n for n, t in self.inits.items() if t.data_type in _FLOATS}
        self.shapes: dict[str, tuple[int, ...]] = {i.name: i.shape for i in inputs}
        for n, t in self.inits.items():
            self.shapes[n] = tuple(int(d) for d in t.dims)
        self.folded: set[int] = set()  # indices of nodes replaced by their values
        self.uses = Counter(i for n in self.graph.node for i in n.input if i)
        self.folded_bytes = 0
        self.fold_work = 0  # elements the evaluated folds have read and written (FOLD_WORK_TOTAL at most)
        self.fold_total = min(FOLD_TOTAL, memory_budget() // 8)
        # refusals made while torch traces the module (kept here: torch restores a module's own
        # attributes after tracing, so a list on the module would come back empty)
        self.failures: list[str] = []

    # values -------------------------------------------------------------------------------------
    def foldable(self, name: str) -> bool:
        """``name`` is fixed at conversion and small enough to fold (a folded value, or a small initializer)."""
        t = self.inits.get(name)
        return name in self.known or (t is not None and _numel(t.dims) <= FOLD_LIMIT)

    def value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when :meth:`foldable`, read from the file once."""
        if name in self.known:
            return self.known[name]
        if not self.foldable(name):
            return None
        self.known[name] = arr = self._read(name)
        return arr

    def _read(self, name: str) -> np.ndarray:
        try:
            return numpy_helper.to_array(self.inits[name])
        except Exception as exc:  # a tensor whose stored data does not fit its dims or type
            raise OnnxError(f"{self.name}: its tensor {name!r} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None

    def _infer(self) -> None:
        """Static shapes of every value, by ONNX shape inference over a skeleton of the graph: weights
        appear by their shapes alone; integer constants (what shape arithmetic reads) keep their values."""
        inputs = [helper.make_tensor_value_info(i.name, next(e for e, d in _TORCH_DTYPES.items() if d == i.dtype),
                                                list(i.shape)) for i in self.inputs]
        nodes = [nd for k, nd in enumerate(self.graph.node) if k not in self.folded]
        light = _skeleton(self.model, inputs, nodes, self.known, floats=False)
        # data propagation only while no op can make more than FOLD_LIMIT elements of propagated data
        data_prop = all(self._grows_at_most(nd) <= FOLD_LIMIT for nd in nodes if nd.op_type in _GROWING_OPS)
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False,
                                                         data_prop=data_prop)
        except Exception as exc:  # onnx.shape_inference.InferenceError and C++ errors for an inconsistent graph
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise OnnxError(f"{self.name}: its shapes do not work out ({first})") from None
        for v in [*inferred.graph.value_info, *inferred.graph.output]:
            tt = v.type.tensor_type
            if v.type.WhichOneof("value") == "tensor_type" and tt.HasField("shape") and \
                    all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[v.name] = tuple(int(d.dim_value) for d in tt.shape.dim)

    def _peek(self, name: str) -> np.ndarray | None:
        """A small fixed value (a folded one, or an initializer of at most 4096 elements), not cached."""
        if name in self.known:
            return self.known[name]
        t = self.inits.get(name)
        if t is None or _numel(t.dims) > 4096:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # unreadable: unknown here, refused when read for conversion
            return None

    def _grows_at_most(self, node: onnx.NodeProto) -> int:
        """An upper bound on the elements ``node`` (one of _GROWING_OPS) makes, from its fixed inputs and
        known shapes; beyond any limit (2**63) when they do not bound it."""
        unknown = 1 << 63
        ins = list(node.input)
        try:
            if node.op_type == "Range" and len(ins) == 3:
                vals = [self._peek(i) for i in ins]
                if any(v is None or v.size != 1 for v in vals):
                    return unknown
                start, limit, delta = (float(np.asarray(v).reshape(())) for v in vals if v is not None)
                if not all(math.isfinite(x) for x in (start, limit, delta)) or delta == 0:
                    return unknown
                return max(math.ceil((limit - start) / delta), 0)
            if node.op_type == "ConstantOfShape" and ins:
                shape = self._peek(ins[0])
                return unknown if shape is None else _numel([abs(int(d)) for d in shape.reshape(-1)])
            if node.op_type in ("Expand", "Tile") and len(ins) >= 2:
                x, v = self.shapes.get(ins[0]), self._peek(ins[1])
                if x is None or v is None:
                    return unknown
                other = [int(d) for d in v.reshape(-1)]
                if node.op_type == "Tile":
                    return _numel(x) * _numel([abs(d) for d in other])
                rank = max(len(x), len(other))
                a, b = [1] * (rank - len(x)) + list(x), [1] * (rank - len(other)) + other
                return _numel([max(abs(p), abs(q)) for p, q in zip(a, b, strict=True)])
            if ins:  # Pad, Resize, Upsample, OneHot: data is propagated for shape-like (1-D) values only
                x = self.shapes.get(ins[0])
                return 0 if x is not None and len(x) + (node.op_type == "OneHot") > 1 else unknown
        except (ValueError, TypeError, OverflowError):
            return unknown
        return unknown

    def fold(self) -> None:
        """Fold every node computed from constants alone (rounds of shape inference between, since a
        folded value can fix a shape further on)."""
        for _ in range(8):
            self._infer()
            if not self._fold_round():
                return

    def _fold_round(self) -> int:
        count = 0
        for k, node in enumerate(self.graph.node):
            if k in self.folded or node.domain not in DEFAULT_DOMAINS or node.op_type not in _FOLD_OPS:
                continue
            values = self._fold_node(node)
            if values is None:
                continue
            self.folded.add(k)
            count += 1
            learned = any(i in self.learned for i in node.input if i)
            for out, v in zip(node.output, values, strict=False):
                if out:
                    self.known[out] = v
                    self.shapes[out] = tuple(v.shape)
                    self.folded_bytes += v.nbytes
                    if learned and v.dtype.kind == "f":
                        self.learned.add(out)
        return count

    def _fold_node(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        if node.op_type in ("Shape", "Size"):
            shape = self.shapes.get(node.input[0])
            if shape is None:
                return None
            if node.op_type == "Size":
                return [np.array(math.prod(shape), dtype=np.int64)]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            start, end = int(attrs.get("start", 0)), attrs.get("end")
            return [np.array(shape[slice(start, None if end is None else int(end))], dtype=np.int64)]
        if node.op_type != "Constant":
            if not node.input or not all(self.foldable(i) for i in node.input if i):
                return None
            # a weight read by other nodes too (a tied embedding and its transposed head) stays one
            # weight: folding this use would count a copy. Identity is the exception: torch's exporter
            # writes one for each parameter whose values equal another's, and each is a parameter.
            if node.op_type != "Identity" and any(i in self.learned and self.uses[i] > 1 for i in node.input):
                return None
            # a result's size is known before it is made: shape inference gave it (or it is not folded)
            sizes = [self.shapes.get(o) for o in node.output if o]
            if any(s is None or _numel(s) > FOLD_LIMIT for s in sizes):
                return None
            if self.folded_bytes + sum(8 * _numel(s) for s in sizes if s is not None) > self.fold_total:
                return None
            if node.op_type == "Identity":  # a copy, as the reference evaluator makes it: nothing to compute
                value = self.value(node.input[0])
                return None if value is None else [np.array(value, copy=True)]
            # what the evaluator will read and write, known before any of it is made
            inputs = [self._fold_input(i) for i in node.input if i]
            if any(dtype not in _TORCH_DTYPES for dtype, _ in inputs):
                return None  # shape arithmetic is numbers: no strings, no exotic types
            if node.op_type == "Cast" and _attr_int(node, "to") not in _TORCH_DTYPES:
                return None
            work = sum(n for _, n in inputs) + sum(_numel(s) for s in sizes if s is not None)
            if work > FOLD_WORK or self.fold_work + work > FOLD_WORK_TOTAL:
                return None  # converted instead: torch computes it when the module runs, costs counted
            self.fold_work += work
        return self._evaluate(node)

    def _fold_input(self, name: str) -> tuple[int, int]:
        """(ONNX element type, element count) of a value :meth:`foldable` says is fixed, unread."""
        if name in self.known:
            v = self.known[name]
            try:
                return helper.np_dtype_to_tensor_dtype(v.dtype), int(v.size)
            except (KeyError, TypeError, ValueError):
                return TensorProto.UNDEFINED, int(v.size)
        t = self.inits[name]
        return t.data_type, _numel(t.dims)

    def _evaluate(self, node: onnx.NodeProto) -> list[np.ndarray]:
        """The node's outputs by ONNX's reference evaluator (numpy, the standard ops' own definitions)."""
        from onnx.reference import ReferenceEvaluator  # imported only when something is folded

        feeds = {i: v for i in node.input if i and (v := self.value(i)) is not None}
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
             for n, v in feeds.items()],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
        try:
            out = ReferenceEvaluator(model).run(None, feeds)
        except Exception as exc:  # the reference ops raise numpy's and their own errors for bad operands
            raise OnnxError(f"{self.name}: its node {node.name or node.op_type!r} ({node.op_type}) fails on its "
                            f"constant inputs ({type(exc).__name__}: {str(exc)[:200]})") from None
        return [np.asarray(v) for v in out]

    # conversion ---------------------------------------------------------------------------------
    def unsupported(self) -> dict[str, str]:
        """Op type -> why, for every node left to convert that has no torch equivalent here."""
        bad: dict[str, str] = {}
        for k, node in enumerate(self.graph.node):
            if k in self.folded:
                continue
            op = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}:{node.op_type}"
            if node.domain not in DEFAULT_DOMAINS:
                bad.setdefault(op, "a custom domain, never run")
            elif node.op_type in ("Shape", "Size"):
                bad.setdefault(op, "its value is not fixed in the file")
            elif node.op_type not in BUILDERS:
                bad.setdefault(op, "")
        return bad

    def build(self) -> OnnxModule:
        bad = self.unsupported()
        if bad:
            raise OnnxError(self._unsupported_message(bad))
        inputs = [i.name for i in self.inputs]
        outputs = [v.name for v in self.graph.output]
        net = OnnxModule(inputs, outputs)
        stats = {n.input[i] for n in self.graph.node if n.op_type == "BatchNormalization"
                 for i in (3, 4) if len(n.input) > i}
        attrs: dict[str, str] = {}
        tied = self._tied()
        live = set(inputs)
        for k, node in enumerate(self.graph.node):
            if k in self.folded:
                continue
            # a fixed input's value, for what must be a number (a shape, an axis, a scalar); a learned
            # weight's only when tiny (a clip bound stored as an initializer): weights stay tensors
            known = [None if not i or i in live or (i in self.learned and not self._tiny(i)) else self.value(i)
                     for i in node.input]
            learned = [i in self.learned for i in node.input]
            # a copy: a builder's function keeps its node, and a part of the parsed file would keep all of it
            proto = onnx.NodeProto()
            proto.CopyFrom(node)
            try:
                fn, used = BUILDERS[node.op_type](_Node(proto, known, learned, self.opset))
            except _Unsupported as exc:
                raise OnnxError(self._unsupported_message({node.op_type: str(exc)})) from None
            except (ValueError, TypeError, IndexError, KeyError) as exc:  # an attribute or constant of the wrong kind
                raise OnnxError(f"{self.name}: its node {node.name or node.op_type!r} ({node.op_type}) has inputs or "
                                f"attributes it cannot take ({type(exc).__name__}: {str(exc)[:200]})") from None
            refs: list[Ref] = []
            for i in used:
                src = node.input[i] if i < len(node.input) else ""
                if not src:
                    break  # an optional input left out: the function's default takes its place
                if src in live:
                    refs.append(("env", src))
                    continue
                if src in tied:  # a transposed copy of a weight used elsewhere: that weight, transposed
                    src, kind = tied[src], "attr.T"
                else:
                    kind = "attr"
                if src not in attrs:
                    attrs[src] = self._register(net, src, len(attrs), buffer=src in stats)
                refs.append((kind, attrs[src]))
            module = f"n{k}"
            net.add_module(module, _Op(_guard(fn, node.op_type, self.name, self.failures), node.op_type))
            net.steps.append((module, refs, list(node.output)))
            net.paths[module] = module_path(node)
            live.update(o for o in node.output if o)
        missing = [o for o in outputs if o not in live]
        if missing:
            raise OnnxError(f"{self.name}: its output {missing[0]!r} is a constant, not computed from its input")
        return net

    def _tied(self) -> dict[str, str]:
        """Copy -> original, for each stored weight that is another one transposed: torch's exporter
        writes a tied head (``F.linear(x, embedding.weight)``) as a transposed copy of the embedding,
        one weight in torch, two in the file. Non-square and not constant, so no two weights that
        merely start out alike are taken for one."""
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for n, t in self.inits.items():
            if t.data_type in _FLOATS and len(t.dims) == 2 and t.dims[0] != t.dims[1] and self.uses[n]:
                by_shape.setdefault(tuple(int(d) for d in t.dims), []).append(n)
        out: dict[str, str] = {}
        for shape, names in by_shape.items():
            copies = by_shape.get(shape[::-1], [])
            if shape[0] < shape[1] or not copies:  # each pair of shapes once, from the originals' (taller) side
                continue
            # originals by the digest of their transposes, so each copy looks its original up: one read of
            # each weight, where comparing every pair took 41 s for a 92 KB file of 1000 small ones
            index: dict[bytes, str] = {}
            for original in names:
                index.setdefault(_digest(self._read(original).T), original)
            for copy in copies:
                a = self._read(copy)
                match = index.get(_digest(a))
                # the same bytes: compared once more all the same (a digest could collide)
                if match is not None and a.size and np.ptp(a) > 0 and np.array_equal(a, self._read(match).T):
                    out[copy] = match
        return out

    def _tiny(self, name: str) -> bool:
        shape = self.shapes.get(name)
        return shape is not None and _numel(shape) <= 1

    def _register(self, net: OnnxModule, src: str, index: int, *, buffer: bool) -> str:
        """A stored value as the converted module's parameter (a learned weight) or buffer."""
        if src in self.known:
            arr = self.known.pop(src) if src in self.learned else self.known[src]
        elif src in self.inits:
            arr = self._read(src)
        else:
            raise OnnxError(f"{self.name}: its value {src!r} is used before any node makes it")
        # to_array may return a read-only view of the file's bytes; torch needs its own, writable copy
        tensor = torch.from_numpy(arr if arr.flags.writeable else np.array(arr, copy=True))
        attr = f"w{index}"
        if src in self.learned and not buffer and tensor.is_floating_point():
            net.weights.register_parameter(attr, nn.Parameter(tensor, requires_grad=False))
        else:
            net.weights.register_buffer(attr, tensor)
        return attr

    def _unsupported_message(self, bad: dict[str, str]) -> str:
        ops = ", ".join(f"{op} ({why})" if why else op for op, why in sorted(bad.items()))
        return (f"{self.name}: it uses ops ResNet Lens cannot convert: {ops}; it reads the standard ONNX ops of "
                "convolutional and transformer nets, with every shape fixed in the file")


def _guard(fn: Callable[..., Any], op_type: str, name: str, failures: list[str]) -> Callable[..., Any]:
    """The node's function; a refusal it makes while torch traces it (an attribute value that depends on
    the input's shape) is kept, so the caller reports it instead of torch's wrapping of it."""

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except _Unsupported as exc:
            failures.append(f"{name}: it uses ops ResNet Lens cannot convert: {op_type} ({exc})")
            raise

    return run


def _relabel(ep: ExportedProgram, paths: dict[str, str]) -> None:
    """Each graph node's module: the path its ONNX node's name carries, not the converter's ``n<index>``."""
    for node in ep.graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        inner = str(list(stack.values())[-1][0])
        if inner in paths:
            path = paths[inner]
            node.meta["nn_module_stack"] = {f"onnx:{path}": (path, "onnx")} if path else {}


def open_onnx(source: str | Path | bytes, name: str = "model.onnx", *,
              input_shape: Sequence[int] | None = None) -> GraphNet:
    """An ONNX model (a path or its bytes) as a :class:`GraphNet`: the cost rows and residual units of
    its graph, the same record its torch original gives. ``input_shape`` fixes the shape of a
    one-input model whose dimensions are not all fixed (a free batch alone becomes 1). Every failure
    is one :class:`OnnxError` sentence."""
    if isinstance(source, (str, Path)):
        name = Path(source).name
    return open_program(onnx_program(source, name, input_shape=input_shape), name=name)


def onnx_program(source: str | Path | bytes, name: str = "model.onnx", *, input_shape: Sequence[int] | None = None,
                 batch: int = 1, shape_help: str = SHAPE_HELP) -> ExportedProgram:
    """An ONNX model (a path or its bytes) converted to torch and exported with its weights: the
    program :func:`open_onnx` reads, and what the lesion and path sweeps run. ``input_shape`` fixes the
    shape of a one-input model whose dimensions are not all fixed; without it a free first dimension
    (the batch) becomes ``batch`` and any other free one is refused (the sentence ending with
    ``shape_help``: how the caller's user gives a shape). Every failure is one :class:`OnnxError` sentence."""
    if isinstance(source, (str, Path)):
        name = Path(source).name
    model, need = read_onnx(source, name)
    label = name if not isinstance(source, (str, Path)) else str(source)
    inputs = _inputs(model, label, input_shape, batch, shape_help)
    if not any(o.domain in DEFAULT_DOMAINS for o in model.opset_import):
        raise OnnxError(f"{label}: it imports no standard ONNX opset")
    example_bytes = sum(math.prod(i.shape) * torch.empty((), dtype=i.dtype).element_size() for i in inputs)
    if example_bytes > EXAMPLE_MAX:
        shapes = ", ".join(str(list(i.shape)) for i in inputs)
        raise OnnxError(f"{label}: its input ({shapes}) takes {fmt_bytes(example_bytes)}, more than the "
                        f"{fmt_bytes(EXAMPLE_MAX)} ResNet Lens makes an example input of")
    try:
        with reserve(need + example_bytes, f"{label}: opening it"):
            conv = _Converter(model, inputs, label)
            conv.fold()
            module = conv.build()
            failures = conv.failures
            del conv, model  # the parsed file is done with once its tensors are torch's: export holds the module alone
            example = tuple(torch.zeros(i.shape, dtype=i.dtype) for i in inputs)
            try:
                ep = export_module(module, example, name=label)
            except LensError as exc:
                raise OnnxError(failures[0] if failures else str(exc)) from None
            _relabel(ep, module.paths)
            return ep
    except BudgetError as exc:
        raise OnnxError(str(exc)) from None
