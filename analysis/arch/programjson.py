"""A ``.pt2`` program's graph and shapes read straight from its JSON, without torch's deserializer.

``torch.export.save`` writes the program as JSON (``models/model.json`` in the zip archive) beside its
weights. Costs and residual units need only that graph and its shapes, so :func:`read_program` builds
from the JSON alone what :func:`~analysis.arch.graphnet.open_program` reads of an
:class:`~torch.export.ExportedProgram`: an ``fx.Graph`` of placeholders and ATen calls, each node's
output as a meta tensor (shape and dtype, no data), its ``nn_module_stack``, and the signature's
parameter names and user inputs. It mirrors torch's own deserializer
(``torch/_export/serde/serialize.py``: ``GraphModuleDeserializer``), so the graph is the one
``torch.export.load`` gives, getitem nodes for multi-output ops included, but:

- it is fast: torch's deserializer turns the JSON into schema dataclasses through
  ``typing.get_type_hints`` (~29k calls and 1.7 s for a ResNet-152), rebuilds every shape as a fake
  tensor and loads every weight; here the JSON is walked once and no weight file is read;
- it never unpickles, never evaluates text and never generates code: an op is looked up by name as
  ``torch.ops.aten.<op>.<overload>`` (attribute lookups only, nothing else accepted), node names must
  be plain identifiers, shapes plain integers. (``torch.export.load`` compiles the graph to Python,
  node names included, when it builds the program's GraphModule.)

The archive passes :func:`~analysis.arch.graphnet.load_program`'s checks first (memory budget, every
pickled part plain tensors, no script objects, no symbolic shapes), so an archive ``load_program``
refuses is refused here with the same sentence. Running a net still needs ``load_program``.
"""

from __future__ import annotations

import keyword
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import fx
from torch._export.serde.schema import SCHEMA_VERSION, ArgumentKind, Layout, MemoryFormat, ScalarType

from analysis.arch.graphnet import (
    ATEN_TARGET,
    ProgramError,
    _archive_prefix,
    open_archive,
    plain_name,
)

MODEL = "model"  # the program torch.export.save writes and torch.export.load returns: models/model.json

# the schema's codes for dtypes, layouts and memory formats, as torch's serializer writes them
# (torch/_export/serde/serialize.py: _TORCH_TO_SERIALIZE_DTYPE and its kin, which we do not import:
# that module pulls in sympy and the fake-tensor machinery, a second of imports)
DTYPES: dict[int, torch.dtype] = {
    ScalarType.BYTE: torch.uint8, ScalarType.CHAR: torch.int8, ScalarType.UINT16: torch.uint16,
    ScalarType.SHORT: torch.int16, ScalarType.INT: torch.int32, ScalarType.LONG: torch.int64,
    ScalarType.HALF: torch.float16, ScalarType.FLOAT: torch.float32, ScalarType.DOUBLE: torch.float64,
    ScalarType.COMPLEXHALF: torch.complex32, ScalarType.COMPLEXFLOAT: torch.complex64,
    ScalarType.COMPLEXDOUBLE: torch.complex128, ScalarType.BOOL: torch.bool, ScalarType.BFLOAT16: torch.bfloat16,
    ScalarType.FLOAT8E4M3FN: torch.float8_e4m3fn, ScalarType.FLOAT8E5M2: torch.float8_e5m2,
    ScalarType.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz, ScalarType.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
    ScalarType.FLOAT8E8M0FNU: torch.float8_e8m0fnu, ScalarType.UINT32: torch.uint32,
    ScalarType.UINT64: torch.uint64,
}
LAYOUTS: dict[int, torch.layout] = {
    Layout.SparseCoo: torch.sparse_coo, Layout.SparseCsr: torch.sparse_csr, Layout.SparseCsc: torch.sparse_csc,
    Layout.SparseBsr: torch.sparse_bsr, Layout.SparseBsc: torch.sparse_bsc,
    Layout._mkldnn: torch._mkldnn,  # type: ignore[attr-defined]
    Layout.Strided: torch.strided,
}
MEMORY_FORMATS: dict[int, torch.memory_format] = {
    MemoryFormat.ContiguousFormat: torch.contiguous_format, MemoryFormat.ChannelsLast: torch.channels_last,
    MemoryFormat.ChannelsLast3d: torch.channels_last_3d, MemoryFormat.PreserveFormat: torch.preserve_format,
}

MAX_NODES = 50_000  # ops in one program: ResNet-152 has ~500, ResNet-1202 ~4,000 (1e5 took 9.5 s to read)
MAX_RANK = 16  # dimensions of one tensor (exported nets use at most 5 or so; torch allows 10,000 on meta)
_ST_DELIMITER = ";"  # torch's separator between the entries of a serialized nn_module_stack
_FLOAT_WORDS = {"Infinity", "-Infinity", "NaN"}  # how torch's JSON encoder writes non-finite floats


class _Bad(Exception):
    """The JSON is not what torch.export.save writes; the message completes 'its program ...'."""


# ------------------------------------------------------------------------------------ the program
@dataclass(frozen=True)
class LightSignature:
    """What :class:`torch.export.ExportGraphSignature` tells of the graph's inputs, as plain maps."""

    inputs_to_parameters: Mapping[str, str]  # placeholder -> parameter name ('layer1.0.conv1.weight')
    inputs_to_buffers: Mapping[str, str]  # placeholder -> buffer name ('bn1.running_mean')
    inputs_to_lifted_tensor_constants: Mapping[str, str]
    # the user inputs' placeholder names, in order; a constant input (a non-tensor forward argument
    # fixed at export) by its value, as ExportGraphSignature.user_inputs gives it
    user_inputs: tuple[str | int | float | bool | None, ...]
    user_outputs: tuple[str | int | float | bool | None, ...] = ()


@dataclass(frozen=True)
class LightGraphModule:
    graph: fx.Graph


@dataclass(frozen=True)
class LightProgram:
    """The part of an :class:`~torch.export.ExportedProgram` that reading a net needs: its graph (every
    node with ``meta['val']`` on the meta device and ``meta['nn_module_stack']``) and its signature.
    No weights: it cannot run."""

    graph_module: LightGraphModule
    graph_signature: LightSignature
    schema_version: tuple[int, int] = field(default=(0, 0))

    @property
    def graph(self) -> fx.Graph:
        return self.graph_module.graph


# ------------------------------------------------------------------------------------- the archive
def read_program(source: str | Path | bytes, name: str = "program") -> LightProgram:
    """The program of a ``.pt2`` (a path or its bytes) as a :class:`LightProgram`, for
    :func:`~analysis.arch.graphnet.open_program`. The archive is checked as
    :func:`~analysis.arch.graphnet.load_program` checks it (budget, pickled parts, symbolic shapes);
    its weights are never read. Every failure is one :class:`ProgramError` sentence."""
    # one handle for the checks and the reading: the JSON read is the JSON checked (parsed once, by
    # the checks), and the weights (most of the file) are never read at all
    parsed: dict[str, Any] = {}
    z, name, _ = open_archive(source, name, whole=False, parsed=parsed)
    with z:
        member = f"{_archive_prefix(z.namelist())}models/{MODEL}.json"
    if member not in parsed:
        raise ProgramError(f"{name}: it holds no models/{MODEL}.json, the program torch.export.save writes")
    return _program(parsed[member], name)


def program_from_json(text: bytes | str, name: str = "program") -> LightProgram:
    """The :class:`LightProgram` of a serialized program's JSON (``models/model.json``). The JSON is
    not checked here for what :func:`read_program` checks first (use that for a file)."""
    import json

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProgramError(f"{name}: its models/{MODEL}.json is not valid JSON") from exc
    return _program(doc, name)


def _program(doc: Any, name: str) -> LightProgram:
    """The :class:`LightProgram` of a parsed program JSON; every failure one :class:`ProgramError`."""
    try:
        return _Builder(doc).program()
    except ProgramError as exc:  # a refusal with its own words (an op we do not read)
        raise ProgramError(f"{name}: {exc}") from None
    except _Bad as exc:
        raise ProgramError(f"{name}: its program {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError, RuntimeError) as exc:
        # a field missing or of the wrong kind, a size torch refuses: not the layout torch writes
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ProgramError(f"{name}: its program is not the layout torch.export.save writes "
                           f"({type(exc).__name__}: {first})") from None


# ---------------------------------------------------------------------------------------- the JSON
def _union(doc: Any) -> tuple[str, Any]:
    """A schema union (Argument, InputSpec ...) is an object of one field: (its name, its value)."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise _Bad(f"has a value that is not one tagged field ({str(doc)[:80]})")
    ((kind, value),) = doc.items()
    return str(kind), value


def _int(value: Any) -> int:
    # the schema's integers are int64: anything wider (Python reads JSON integers of any length) is no
    # value torch wrote, and would make the cost formulas compute with thousand-digit numbers
    if type(value) is not int or not -(1 << 63) <= value < 1 << 63:
        raise _Bad(f"has a non-integer where torch writes an integer ({str(value)[:40]})")
    return value


def _float(value: Any) -> float:
    # torch reads every float field with float(): its encoder writes inf and nan as words
    if isinstance(value, bool) or not isinstance(value, (int, float)) and value not in _FLOAT_WORDS:
        raise _Bad(f"has a non-number where torch writes a float ({str(value)[:40]})")
    return float(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"has a non-string where torch writes a string ({str(value)[:40]})")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"has a non-boolean where torch writes a boolean ({str(value)[:40]})")
    return value


def _name(value: Any) -> str:
    """A node name: the identifiers fx writes. torch.export.load pastes names into the Python source
    of the program's GraphModule, so anything else is refused here before it goes anywhere."""
    if not isinstance(value, str) or not plain_name(value):
        raise _Bad(f"names a node {str(value)[:60]!r}, which is not a plain identifier as torch writes them")
    return value


def _aten(target: Any, cache: dict[str, torch._ops.OpOverload]) -> torch._ops.OpOverload:
    """``torch.ops.aten.<op>.<overload>`` by attribute lookups on torch.ops.aten alone: nothing is
    imported or called. Anything else (a custom namespace, a higher-order op, a Python function)
    is refused: exported nets call ATen ops only."""
    text = str(target)
    if text in cache:
        return cache[text]
    match = ATEN_TARGET.fullmatch(text)
    if match is None:
        raise ProgramError(f"its graph calls {text[:80]!r}, which is not an ATen operator "
                           "(torch.ops.aten.<op>.<overload>); ResNet Lens reads programs of ATen ops only: "
                           "export the net without custom or higher-order ops")
    op_name, overload = match.groups()
    try:
        op = getattr(getattr(torch.ops.aten, op_name), overload)
    except (AttributeError, RuntimeError):
        op = None
    if not isinstance(op, torch._ops.OpOverload) or op.namespace != "aten":
        raise ProgramError(f"its graph calls {text[:80]!r}, which this torch ({torch.__version__}) does not "
                           "have; re-export the net with this version")
    cache[text] = op
    return op


def _split_stack_entry(entry: str) -> tuple[str, str, str]:
    """'key,path,type' split at its top-level commas: torch's metadata_split (a path such as
    ``layers[0,1]`` keeps its commas inside brackets)."""
    if not any(c in entry for c in "[]()"):  # the common entry: every comma is a top-level one
        parts = entry.split(",")
        if len(parts) != 3:
            raise _Bad(f"has an nn_module_stack entry that is not key,path,type ({entry[:80]!r})")
        return parts[0], parts[1], parts[2]
    out: list[str] = []
    start = depth = 0
    for end, c in enumerate(entry):
        if c in "[(":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(entry[start:end])
            start = end + 1
    out.append(entry[start:])
    if len(out) != 3:
        raise _Bad(f"has an nn_module_stack entry that is not key,path,type ({entry[:80]!r})")
    return out[0], out[1], out[2]


def _metadata(doc: Any, stacks: dict[str, dict[str, tuple[str, str]]] | None = None) -> dict[str, Any]:
    """The node metadata graphnet reads, as torch's deserialize_metadata gives it: the module stack
    {key: (path, type)}, the stack trace, torch_fn. (source_fn_stack is left out: torch resolves
    its targets by attribute lookups on any module, and nothing here reads it.) ``stacks`` keeps each
    module stack's text parsed (every op of a module carries the same one)."""
    if not isinstance(doc, dict):
        raise _Bad("has node metadata that is not an object")
    out: dict[str, Any] = {}
    if trace := doc.get("stack_trace"):
        out["stack_trace"] = _str(trace)
    if stack := doc.get("nn_module_stack"):
        stack = _str(stack)
        parsed = None if stacks is None else stacks.get(stack)
        if parsed is None:
            entries = (_split_stack_entry(e) for e in _str(stack).split(_ST_DELIMITER))
            parsed = {key: (path, ty) for key, path, ty in entries}
            if stacks is not None:
                stacks[stack] = parsed
        out["nn_module_stack"] = dict(parsed)  # each node its own dict, as torch's loader gives it
    if torch_fn := doc.get("torch_fn"):
        out["torch_fn"] = tuple(_str(torch_fn).split(_ST_DELIMITER))
    return out


class _Builder:
    """torch's GraphModuleDeserializer.deserialize_graph, step by step, on the JSON itself."""

    def __init__(self, doc: Any) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
            raise _Bad("is not the layout torch.export.save writes (no graph_module)")
        version = doc.get("schema_version") or {}
        self.version = (_int(version.get("major", 0)), _int(version.get("minor", 0)))
        # torch.export.load refuses another major version of the schema (0.0 is its "unknown")
        if self.version[0] != SCHEMA_VERSION[0] and self.version != (0, 0):
            raise _Bad(f"was written in schema version {self.version[0]}.{self.version[1]}; this torch "
                       f"({torch.__version__}) reads {SCHEMA_VERSION[0]}.x: re-export the net with it")
        self.doc = doc["graph_module"]
        self.graph = fx.Graph()
        self.nodes: dict[str, fx.Node] = {}
        self.meta: dict[str, Any] = {}
        self.ops: dict[str, torch._ops.OpOverload] = {}
        self.stacks: dict[str, dict[str, tuple[str, str]]] = {}

    # ------------------------------------------------------------------------------------- values
    def _tensor_meta(self, doc: Any) -> torch.Tensor:
        """A node's output as a tensor on the meta device: its shape and dtype, no data."""
        sizes = []
        if not isinstance(doc["sizes"], list) or len(doc["sizes"]) > MAX_RANK:
            raise _Bad(f"has a tensor of more than {MAX_RANK} dimensions, which no exported net has")
        for s in doc["sizes"]:
            kind, value = _union(s)
            if kind != "as_int":
                raise _Bad("has a symbolic size; export it with fixed input shapes (no dynamic_shapes)")
            size = _int(value)
            if not 0 <= size < 1 << 62:  # what a tensor's size can be (torch.empty takes a C long)
                raise _Bad(f"has a tensor size {size}, which no tensor has")
            sizes.append(size)
        dtype = DTYPES.get(_int(doc["dtype"]))
        if dtype is None:
            raise _Bad(f"has a tensor of dtype code {doc['dtype']}, which torch's schema does not define")
        return torch.empty(sizes, dtype=dtype, device="meta")

    def _sym(self, doc: Any, number: type) -> int | float | bool:
        kind, value = _union(doc)
        if kind == "as_int" and number is int:
            return _int(value)
        if kind == "as_float" and number is float:
            return _float(value)
        if kind == "as_bool" and number is bool:
            return _bool(value)
        raise _Bad("has a symbolic value; export it with fixed input shapes (no dynamic_shapes)")

    def _metas(self, graph: Any) -> None:
        for key, number in (("sym_int_values", int), ("sym_float_values", float), ("sym_bool_values", bool)):
            for name, value in (graph.get(key) or {}).items():
                self.meta[name] = self._sym(value, number)
        if graph.get("custom_obj_values"):
            raise _Bad("holds a script object, which loading would run as code; export the net without "
                       "custom classes")
        for name, value in graph["tensor_values"].items():
            self.meta[name] = self._tensor_meta(value)

    def _sync(self, name: Any, node: fx.Node) -> None:
        """torch's sync_fx_node: the node takes the serialized name and its value's meta."""
        name = _name(name)
        if name in self.nodes:
            raise _Bad(f"defines {name} twice")
        if name not in self.meta:
            raise _Bad(f"gives no shape for {name}")
        node.name = name
        self.nodes[name] = node
        node.meta["val"] = self.meta[name]

    def _node(self, name: Any) -> fx.Node:
        node = self.nodes.get(_name(name))
        if node is None:
            raise _Bad(f"uses {name} before any node defines it")
        return node

    def _sym_arg(self, doc: Any) -> Any:
        """A SymInt/SymFloat/SymBool argument: a plain number, or a reference to the node making it."""
        kind, value = _union(doc)
        if kind == "as_name":
            return self._node(value)
        if kind == "as_int":
            return _int(value)
        if kind == "as_float":
            return _float(value)
        if kind == "as_bool":
            return _bool(value)
        raise _Bad(f"has a symbolic argument of kind {kind}")

    def _arg(self, doc: Any) -> Any:
        """torch's deserialize_input: one argument of a call, as the loaded graph holds it."""
        kind, value = _union(doc)
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return self._node(value["name"])
        if kind == "as_scalar_type":
            if _int(value) not in DTYPES:
                raise _Bad(f"has a dtype code {value}, which torch's schema does not define")
            return DTYPES[value]
        if kind == "as_memory_format":
            if _int(value) not in MEMORY_FORMATS:
                raise _Bad(f"has a memory format code {value}, which torch's schema does not define")
            return MEMORY_FORMATS[value]
        if kind == "as_layout":
            if _int(value) not in LAYOUTS:
                raise _Bad(f"has a layout code {value}, which torch's schema does not define")
            return LAYOUTS[value]
        if kind == "as_device":
            index = value.get("index")
            kind_ = _str(value["type"])
            return torch.device(kind_) if index is None else torch.device(kind_, _int(index))
        if kind == "as_int":
            return _int(value)
        if kind == "as_float":
            return _float(value)
        if kind == "as_bool":
            return _bool(value)
        if kind == "as_string":
            return _str(value)
        if kind == "as_complex":
            return complex(_float(value["real"]), _float(value["imag"]))
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return self._sym_arg(value)
        if kind == "as_string_to_argument":
            if not isinstance(value, dict):
                raise _Bad("has a mapping argument that is not an object")
            return {_str(k): self._arg(v) for k, v in value.items()}
        if kind in ("as_graph", "as_custom_obj", "as_operator"):
            raise ProgramError(f"its graph passes a {kind.removeprefix('as_').replace('_', ' ')} as an argument "
                               "(a higher-order op or a script object), which ResNet Lens does not read: "
                               "export the net without control-flow ops or custom classes")
        if not isinstance(value, list):
            raise _Bad(f"has an argument of unknown kind {kind}")
        if not value:
            return []  # torch: any empty list is []
        if kind == "as_tensors":
            return [self._node(t["name"]) for t in value]
        if kind == "as_ints":
            return [_int(v) for v in value]
        if kind == "as_floats":
            return [_float(v) for v in value]
        if kind == "as_bools":
            return [_bool(v) for v in value]
        if kind == "as_strings":
            return [_str(v) for v in value]
        if kind == "as_int_lists":
            return [tuple(_int(v) for v in inner) for inner in value]
        if kind == "as_float_lists":
            return [[_float(v) for v in inner] for inner in value]
        if kind == "as_nested_tensors":
            return [[self._node(t["name"]) for t in inner] for inner in value]
        if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return [self._sym_arg(v) for v in value]
        if kind == "as_optional_tensors":
            out: list[fx.Node | None] = []
            for v in value:
                k, t = _union(v)
                if k not in ("as_none", "as_tensor"):
                    raise _Bad(f"has an optional tensor of kind {k}")
                out.append(None if k == "as_none" else self._node(t["name"]))
            return out
        raise _Bad(f"has an argument of kind {kind}, which torch's loader does not read either")

    # --------------------------------------------------------------------------------- signature
    def _signature(self) -> tuple[LightSignature, list[str | None]]:
        """The signature's maps, and each input's name as torch's loader names a constant one."""
        sig = self.doc["signature"]
        params: dict[str, str] = {}
        buffers: dict[str, str] = {}
        constants: dict[str, str] = {}
        users: list[str | int | float | bool | None] = []
        names: list[str | None] = []
        for spec in sig["input_specs"]:
            kind, value = _union(spec)
            if kind == "parameter":
                arg_name = _name(value["arg"]["name"])
                names.append(arg_name)
                params[arg_name] = _str(value["parameter_name"])
            elif kind == "buffer":
                arg_name = _name(value["arg"]["name"])
                names.append(arg_name)
                buffers[arg_name] = _str(value["buffer_name"])
            elif kind == "tensor_constant":
                arg_name = _name(value["arg"]["name"])
                names.append(arg_name)
                constants[arg_name] = _str(value["tensor_constant_name"])
            elif kind == "user_input":
                arg_kind, arg = _union(value["arg"])
                if arg_kind == "as_tensor":
                    names.append(_name(arg["name"]))
                    users.append(names[-1])
                elif arg_kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
                    names.append(_name(_union(arg)[1]))
                    users.append(names[-1])
                elif arg_kind == "as_custom_obj":
                    raise _Bad("takes a script object as input, which loading would run as code")
                else:  # a constant: ExportGraphSignature lists its value, and it has no name
                    names.append(None)
                    users.append(self._arg(value["arg"]))
            elif kind == "constant_input":
                names.append(_name(value["name"]) if value.get("name") else None)
                users.append(self._arg(value["value"]))
            elif kind == "token":
                names.append(_name(value["arg"]["name"]))
            elif kind == "custom_obj":
                raise _Bad("takes a script object as input, which loading would run as code")
            else:
                raise _Bad(f"has an input of unknown kind {kind}")
        outputs: list[str | int | float | bool | None] = []
        for spec in sig["output_specs"]:
            kind, value = _union(spec)
            if kind == "user_output":
                arg_kind, arg = _union(value["arg"])
                outputs.append(_name(arg["name"]) if arg_kind == "as_tensor" else None)
        return LightSignature(inputs_to_parameters=params, inputs_to_buffers=buffers,
                              inputs_to_lifted_tensor_constants=constants, user_inputs=tuple(users),
                              user_outputs=tuple(outputs)), names

    # ------------------------------------------------------------------------------------- nodes
    def _inputs(self, op: torch._ops.OpOverload, inputs: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """torch's deserialize_inputs: each schema argument positional or keyword as serialized."""
        kinds = {_str(i["name"]): i.get("kind") for i in inputs}
        actual = {_str(i["name"]): self._arg(i["arg"]) for i in inputs}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for schema_arg in op._schema.arguments:
            arg_name = schema_arg.name
            if arg_name in actual:
                kind = kinds[arg_name]
                if kind == ArgumentKind.POSITIONAL:
                    args.append(actual[arg_name])
                    continue
                if kind == ArgumentKind.KEYWORD and not keyword.iskeyword(arg_name):
                    kwargs[arg_name] = actual[arg_name]
                    continue
            # no kind recorded (older files): torch's fallback by the schema
            if not schema_arg.has_default_value() and not schema_arg.kwarg_only:
                if arg_name not in actual:
                    raise _Bad(f"calls {op} without its argument {arg_name}")
                args.append(actual[arg_name])
            elif keyword.iskeyword(arg_name):
                # a Python keyword cannot be a keyword argument: torch passes it (and drops the
                # keywords gathered before it, as torch's loader does) positionally
                kwargs = {}
                args.append(actual[arg_name])
            elif arg_name in actual:
                kwargs[arg_name] = actual[arg_name]
        return tuple(args), kwargs

    def _getitem(self, values: list[Any], parent: fx.Node, name: Any, index: int, meta: dict[str, Any]) -> None:
        """torch's generate_getitem: ``getitem(parent, index)`` named after the output it takes."""
        item = self.graph.create_node("call_function", operator.getitem, (parent, index), name=_name(name))
        self._sync(name, item)
        values.append(self.meta[item.name])
        item.meta.update(meta)

    def _getitems(self, values: list[Any], parent: fx.Node, outputs: list[Any], tensors: bool,
                  meta: dict[str, Any]) -> None:
        """torch's generate_getitems: one getitem per output; a list output a getitem of getitems."""
        for index, out in enumerate(outputs):
            if tensors:  # the elements of an as_tensors list: TensorArguments themselves
                self._getitem(values, parent, out["name"], index, meta)
                continue
            kind, value = _union(out)
            if kind == "as_tensor":
                self._getitem(values, parent, value["name"], index, meta)
            elif kind in ("as_sym_int", "as_sym_float"):
                self._getitem(values, parent, _union(value)[1], index, meta)
            elif kind == "as_tensors":
                inner = self.graph.create_node("call_function", operator.getitem, (parent, index))
                values.append([])
                self._getitems(values[-1], inner, value, True, meta)
                inner.meta.update(meta)
                inner.meta["val"] = values[-1]
            elif kind == "as_none":
                item = self.graph.create_node("call_function", operator.getitem, (parent, index), name="as_none")
                values.append(None)
                item.meta["val"] = None
                item.meta.update(meta)
            else:
                raise _Bad(f"has an output of kind {kind}, which torch's loader does not read either")

    def _outputs(self, doc: Any, node: fx.Node) -> None:
        """torch's deserialize_outputs: a single output names the node; several become getitems."""
        outputs = doc["outputs"]
        if not outputs:
            return
        if len(outputs) == 1:
            kind, value = _union(outputs[0])
            if kind == "as_tensor":
                self._sync(value["name"], node)
                return
            if kind in ("as_sym_int", "as_sym_bool", "as_sym_float"):
                sym_kind, sym_name = _union(value)
                if sym_kind != "as_name":
                    raise _Bad(f"names an output by a {sym_kind}")
                self._sync(sym_name, node)
                return
            if kind == "as_none":
                node.meta["val"] = None
                node._rename(f"{self.graph._target_to_str(node.target)}_unused")
                return
            if kind != "as_tensors" or not value or not isinstance(value[0], dict) or "name" not in value[0]:
                raise _Bad(f"has an output of kind {kind}, which torch's loader does not read either")
            values: list[Any] = []
            self._getitems(values, node, value, True, _metadata(doc.get("metadata") or {}, self.stacks))
        else:
            values = []
            self._getitems(values, node, outputs, False, _metadata(doc.get("metadata") or {}, self.stacks))
        node.meta["val"] = tuple(values)
        self.nodes[node.name] = node

    def _call(self, doc: Any) -> None:
        """torch's deserialize_node for an OpOverload target."""
        op = _aten(doc["target"], self.ops)
        name = doc.get("name")
        if not name:
            returns = op._schema.returns
            # named after its one tensor output, else by fx (torch's BC path for files without names)
            single = len(returns) == 1 and isinstance(returns[0].real_type, torch.TensorType)
            name = _union(doc["outputs"][0])[1]["name"] if single else None
        args, kwargs = self._inputs(op, doc["inputs"])
        node = self.graph.create_node("call_function", op, args, kwargs, _name(name) if name else None)
        self._outputs(doc, node)
        node.meta.update(_metadata(doc.get("metadata") or {}, self.stacks))
        if "nn_module_stack" not in node.meta:  # torch's serializer drops an empty stack
            node.meta["nn_module_stack"] = {}

    def _graph_output(self, doc: Any) -> Any:
        kind, value = _union(doc)
        if kind == "as_tensor":
            return self._node(value["name"])
        if kind in ("as_sym_int", "as_sym_bool", "as_sym_float"):
            return self._node(_union(value)[1])
        if kind == "as_int":
            return _int(value)
        if kind == "as_float":
            return _float(value)
        if kind == "as_bool":
            return _bool(value)
        if kind == "as_none":
            return None
        raise _Bad(f"returns a value of kind {kind}, which torch's loader does not read either")

    def program(self) -> LightProgram:
        signature, names = self._signature()
        graph = self.doc["graph"]
        self._metas(graph)
        for i, inp in enumerate(graph["inputs"]):
            kind, value = _union(inp)
            if kind == "as_tensor":
                node = self.graph.placeholder(_name(value["name"]))
                self._sync(value["name"], node)
            elif kind == "as_sym_int":
                sym_kind, sym_name = _union(value)
                if sym_kind != "as_name":
                    raise _Bad("takes a constant symbolic integer as an input")
                node = self.graph.placeholder(_name(sym_name))
                self._sync(sym_name, node)
            elif kind in ("as_int", "as_float", "as_bool", "as_none", "as_string"):
                label = names[i] if i < len(names) and names[i] else f"arg{i}"
                node = self.graph.placeholder(cast(str, label))
                node.meta["val"] = self._arg(inp)
            elif kind == "as_custom_obj":
                raise _Bad("takes a script object as input, which loading would run as code")
            else:
                raise _Bad(f"has an input of kind {kind}, which torch's loader does not read either")
        if len(graph["nodes"]) > MAX_NODES:
            raise _Bad(f"has {len(graph['nodes']):,} nodes, more than the {MAX_NODES:,} ResNet Lens reads "
                       "(ResNet-152 has about 500)")
        for doc in graph["nodes"]:
            self._call(doc)
        if graph.get("is_single_tensor_return"):
            # (a higher-order op's subgraph may return one bare tensor; torch's verifier refuses it here)
            raise _Bad("returns a bare tensor where torch's loader expects a tuple of outputs")
        outs = tuple(self._graph_output(o) for o in graph["outputs"])
        out = self.graph.output(outs)
        out.meta["val"] = tuple(o.meta.get("val") if isinstance(o, fx.Node) else o for o in outs)
        return LightProgram(graph_module=LightGraphModule(self.graph), graph_signature=signature,
                            schema_version=self.version)
