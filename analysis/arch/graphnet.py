"""Nets opened from a ``torch.export`` program: residual units found in the graph, costs read off its shapes.

A program (``.pt2``, written by ``torch.export.save``) holds the ATen graph of a net's forward pass for
one example input, every node with its output's shape and the module path that called it
(``nn_module_stack``). Nothing of the user's code is in it, and nothing here runs any: the archive's
pickled parts must load with ``torch.load(weights_only=True)`` before torch opens it (torch itself
would fall back to full unpickling), and the graph is only read, never executed.

**Residual units.** A unit is an add whose two operands both flow from one tensor x: the node that
every path from the input to the add passes through last (the add's immediate dominator in the graph
of activations; parameters and buffers are not activations). One operand is x itself (an identity
shortcut) or a short path from it (a projection with weights, or a parameter-free zero-pad); the other
is the branch F, which must hold learned weights (so ``x + bias`` and an unrolled GELU's
``x + 0.044715·x³`` are not units). A multiply right before the add is the join's coefficient: a
constant (λ·x), a learned vector (layer scale γ·F), a gate g = sigmoid(...) or 1 − g (highway, He et
al. 2016's gating). A ReLU that alone consumes the sum is the unit's post-activation. Concatenations
(DenseNet, U-Net's skips) and multiplicative gates alone (squeeze-and-excitation) are not units.

**Costs** follow the cost table's convention for the ops a ResNet has (2 FLOPs per MAC, 1 per bias
add, 2 per BatchNorm element, 1 per element of an element-wise op, k^d − 1 per max-pool output, 1 per
average-pool input) and count a transformer's work as: matmuls and ``linear`` as MACs (m·k·n),
scaled dot-product attention as its two matmuls (L·S·E + L·S·Ev MACs per batch and head) plus 4
FLOPs per score (scale, max, exp, normalise: the softmax), LayerNorm 5 FLOPs per element, softmax 4.
Numbers are for the example input the program was exported with (its batch included).

**Decomposed programs** (``ep.run_decompositions()``, core ATen) read the same: the native norms'
tuples (``_native_batch_norm_legit_no_training``, ``native_layer_norm``) give their first element's
shape, a mean costs what the pool it replaces does (1 per input element), ``sub(1, g)`` is 1 − g, a
weight read through ``permute`` (``addmm``) or a view belongs to the node that reads it. Only
attention differs, by design: its decomposition is counted op by op (q and k each scaled, a causal
mask built and added) where ``scaled_dot_product_attention`` counts 4 FLOPs per score.
"""

from __future__ import annotations

import contextlib
import io
import json
import keyword
import logging
import math
import re
import sys
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import networkx as nx
import pandas as pd
import torch
from torch import fx
from torch.export import ExportedProgram

from analysis.arch.blockplan import Coef, Join, ShortcutKind, net_plan
from analysis.arch.budget import ENV_VAR, fmt_bytes, memory_budget
from analysis.arch.costs import layer_table
from analysis.arch.ops import Op, OpKind
from analysis.arch.specs import ResNetSpec
from analysis.arch.units import Unit, plan_units
from analysis.core.errors import CheckpointError, ConfigError

_log = logging.getLogger(__name__)
ATEN = torch.ops.aten
_ADDS = {ATEN.add.Tensor, ATEN.add_.Tensor}
_MULS = {ATEN.mul.Tensor, ATEN.mul_.Tensor, ATEN.mul.Scalar}
_RELUS = {ATEN.relu.default, ATEN.relu_.default}
_SIGMOIDS = {ATEN.sigmoid.default, ATEN.sigmoid_.default}
# 1 − g: an exported program writes rsub(g, 1); after run_decompositions() it is sub(1, g)
_RSUBS = {ATEN.rsub.Scalar, ATEN.rsub.Tensor}
_SUBS = {ATEN.sub.Tensor, ATEN.sub.Scalar}
# ops that only re-view or copy their input: no arithmetic, no new activation worth counting
_VIEWS = frozenset({"view", "reshape", "_unsafe_view", "flatten", "unflatten", "transpose", "permute", "t",
                    "contiguous", "clone", "expand", "squeeze", "unsqueeze", "select", "slice", "split",
                    "split_with_sizes", "chunk", "unbind", "getitem", "alias", "detach", "dropout", "pad",
                    "constant_pad_nd", "cat", "stack", "to", "_to_copy", "type_as", "identity", "lift_fresh_copy"})
# 1 FLOP per output element
_ELEMENTWISE = frozenset({"add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "relu", "relu_",
                          "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "neg",
                          "hardtanh", "hardtanh_", "hardswish", "hardswish_", "hardsigmoid", "leaky_relu",
                          "leaky_relu_", "elu", "elu_", "exp", "sqrt", "rsqrt", "pow", "abs", "clamp",
                          "clamp_min"})
# 1 FLOP per input element (n − 1 adds and a divide per output): a decomposed program writes global
# average pooling as mean.dim, so a mean costs what the pool it replaces does
_REDUCTIONS = frozenset({"mean", "sum"})
# the native forms (a tuple whose first element is the output) are what run_decompositions() leaves
PER_ELEMENT = {"batch_norm": 2, "_native_batch_norm_legit_no_training": 2, "_native_batch_norm_legit": 2,
               "native_batch_norm": 2, "layer_norm": 5, "native_layer_norm": 5, "group_norm": 5,
               "native_group_norm": 5, "softmax": 4, "_softmax": 4, "log_softmax": 4, "_log_softmax": 4}
_CONVS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution"})
_CONV_TRANSPOSES = frozenset({"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})


class ProgramError(CheckpointError):
    """A program that cannot be opened: not a ``torch.export`` archive, unsafe, or too large."""


# --------------------------------------------------------------------------------------------- load
def _archive_prefix(names: list[str]) -> str:
    """The folder every member sits in (``torch.export.save`` names it after the file)."""
    tops = {n.split("/", 1)[0] for n in names}
    return tops.pop() + "/" if len(tops) == 1 else ""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a node name as fx writes them
# an ATen op and overload by name ('_to_copy', 'dim_IntList'); never a dunder, so a lookup by these
# names can only reach op packets and overloads, not Python's own attributes ('__class__')
ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z][A-Za-z0-9_]*|_[A-Za-z0-9][A-Za-z0-9_]*)"
                         r"\.([A-Za-z][A-Za-z0-9_]*|_[A-Za-z0-9][A-Za-z0-9_]*)")
_FQN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # a module or parameter path: layer1.0.conv1.weight
_FQN_KEYS = ("parameter_name", "buffer_name", "tensor_constant_name", "fqn")


def plain_name(text: str) -> bool:
    """A name torch pastes into Python source may be an identifier and nothing else."""
    return bool(NAME.fullmatch(text)) and not keyword.iskeyword(text)


# every key the screen below looks at: the texts torch pastes into source or resolves as attribute
# paths, and the symbolic parts sympy would evaluate
_SYMBOLIC_KEYS = frozenset({"range_constraints", "guards_code"})
_SCREENED = frozenset({"name", "target", "tensor_values", "as_expr", *_SYMBOLIC_KEYS, *_FQN_KEYS})


@dataclass(frozen=True)
class Screened:
    """What :func:`screen` found in a program's JSON: a symbolic part, and the first foreign text."""

    symbolic: bool
    foreign: str | None


def screen(doc: object) -> Screened:
    """One walk over a program's JSON (as ``json.loads`` gives it) for the two things torch.export.load
    would run as code:

    - a symbolic size, float or bool (an ``as_expr``, or shape constraints): torch rebuilds those with
      ``sympy.sympify``, which evaluates its string as Python;
    - the first text torch would paste into the Python source of the program's GraphModule or resolve
      as an attribute path that is not what torch writes there: node and argument names must be
      identifiers, targets ATen ops, module and parameter paths dotted names without dunders (a review
      found ``x=print(...)`` as a name ran on load).

    A symbolic part ends the walk (it is refused first, whatever else the JSON holds)."""
    todo: list[object] = [doc]
    pop, push = todo.pop, todo.append
    foreign: str | None = None
    plain: set[str] = set()  # names already found plain: a tensor's name recurs at each of its uses
    while todo:
        item = pop()
        if type(item) is list:
            for value in item:
                if type(value) is dict or type(value) is list:
                    push(value)
            continue
        if type(item) is not dict:
            continue  # the document itself a bare value
        for key, value in item.items():
            kind = type(value)
            if key in _SCREENED:
                if key == "as_expr":
                    if value is not None:
                        return Screened(True, None)
                elif key in _SYMBOLIC_KEYS:
                    if value:
                        return Screened(True, None)
                elif foreign is not None:
                    pass  # the first foreign text is the one said; the walk goes on for symbolic parts
                elif kind is str:
                    if key == "name":
                        if value not in plain:
                            if not plain_name(value):
                                foreign = value
                            else:
                                plain.add(value)
                    elif key == "target":
                        if not ATEN_TARGET.fullmatch(value):
                            foreign = value
                    elif key in _FQN_KEYS and value and (not _FQN.fullmatch(value) or "__" in value):
                        foreign = value
                elif key == "tensor_values" and kind is dict:
                    for k in value:
                        if k not in plain:
                            if not plain_name(str(k)):
                                foreign = str(k)
                                break
                            plain.add(k)
            if kind is dict or kind is list:
                push(value)
    return Screened(False, foreign)


# torch.export's serialized ScalarType codes (torch/_export/serde/schema.py) -> bytes per element; an
# unknown code counts as the widest (complex128), so a declared size is never under-counted
_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2}
_WIDEST = 16


def _declared_bytes(meta: object, what: str) -> int:
    """The bytes a serialized tensor's storage must hold: torch.export.load makes a tensor of this
    size when its data file is empty (torch.zeros of the declared size), so it is what loading costs."""
    if not isinstance(meta, dict):
        raise ProgramError(f"{what}: its tensor description is not the layout torch.export.save writes")
    device = meta.get("device")
    if isinstance(device, dict) and device.get("type") == "meta":
        return 0  # a program exported on the meta device holds shapes only (the README's recipe)

    def ints(items: object) -> list[int]:
        if not isinstance(items, list) or not all(isinstance(i, dict) and type(i.get("as_int")) is int
                                                  for i in items):
            raise ProgramError(f"{what}: its tensor sizes are not fixed whole numbers")
        return [int(i["as_int"]) for i in items]

    sizes, strides = ints(meta.get("sizes")), ints(meta.get("strides"))
    offset = ints([meta.get("storage_offset", {"as_int": 0})])[0]
    if len(sizes) != len(strides) or any(v < 0 for v in (*sizes, *strides, offset)):
        raise ProgramError(f"{what}: its tensor sizes, strides or offset are not a tensor's")
    if 0 in sizes:
        return 0
    dtype = meta.get("dtype")
    itemsize = _ITEMSIZE.get(dtype, _WIDEST) if isinstance(dtype, int) else _WIDEST
    return itemsize * (offset + 1 + sum((n - 1) * st for n, st in zip(sizes, strides, strict=True)))


MAX_RATIO = 1000  # unpacked / packed: what deflate reaches on real archives is far below (zeros ~1000)
JSON_FACTOR = 32  # parsed JSON takes ~20-28x its text in Python objects (measured): so much counts


def read_member(z: zipfile.ZipFile, member: str, name: str) -> bytes:
    """One member's bytes, read no further than its directory says (a member whose stream inflates past
    its declared size is refused, never unpacked whole), its compression within :data:`MAX_RATIO`."""
    info = z.getinfo(member)
    short = member.split("/", 1)[-1]
    if info.compress_size and info.file_size > MAX_RATIO * info.compress_size and info.file_size > 1 << 20:
        raise ProgramError(f"{name}: its entry {short} unpacks {info.file_size // info.compress_size:,} times its "
                           "size, as no archive torch.export.save writes does")
    try:
        with z.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise ProgramError(f"{name}: its entry {short} cannot be read ({type(exc).__name__})") from None
    if len(data) != info.file_size:
        raise ProgramError(f"{name}: its entry {short} is not the size its archive declares")
    return data


def _check_payloads(z: zipfile.ZipFile, name: str, parsed: dict[str, Any] | None = None) -> int:
    """Nothing in the archive may run code when torch opens it:

    - every pickled part must load with ``torch.load(weights_only=True)``: torch's own loader
      unpickles weights, constants and sample inputs with ``weights_only=False`` (a payload there
      would run), so each is tried here first with the safe unpickler;
    - script and opaque objects (code by definition) are refused outright;
    - the program's JSON may hold fixed shapes only: a symbolic one is rebuilt by ``sympy.sympify``,
      which runs its string as Python (ResNet Lens reads programs exported with fixed shapes).

    Returns the bytes that loading would make beyond the archive's own: a tensor whose data file is
    shorter than its declared storage is made at the declared size (a 6 KB file can declare gigabytes).
    ``parsed``, if given, gets each program JSON as checked (member name -> parsed document), so a
    reader of the program parses it once and reads exactly what was checked."""
    names = z.namelist()
    extra = 0
    prefix = _archive_prefix(names)
    if f"{prefix}archive_format" not in names or not any(n.startswith(f"{prefix}models/") for n in names):
        raise ProgramError(f"{name}: not a torch.export program (.pt2): no archive_format and models/ entries; "
                           "write one with torch.export.save")
    pickled: list[str] = [n for n in names if n.endswith((".pt", ".pkl"))]
    budget = memory_budget()
    for n in names:
        # the JSON torch reads: the programs and the weight and constant lists (any other member is
        # never parsed, by torch or here)
        inner = n.removeprefix(prefix)
        if not n.endswith(".json") or not (inner.startswith("models/") or
                                           inner.startswith("data/") and inner.endswith("_config.json")):
            continue
        declared = z.getinfo(n).file_size
        if declared * JSON_FACTOR > budget:
            raise ProgramError(f"{name}: its entry {inner} is {fmt_bytes(declared)} of JSON, about "
                               f"{fmt_bytes(declared * JSON_FACTOR)} once parsed, more than the memory budget of "
                               f"{fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
        try:
            doc = json.loads(read_member(z, n, name))
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
            raise ProgramError(f"{name}: its entry {n.removeprefix(prefix)} is not valid JSON") from exc
        if "/data/" not in n or not n.endswith("_config.json"):
            found = screen(doc)  # one walk for both refusals (a symbolic part is said first)
            if found.symbolic:
                raise ProgramError(f"{name}: its program has symbolic shapes ({n.removeprefix(prefix)}), which torch "
                                   "would rebuild by evaluating their text as Python; export it with fixed input "
                                   "shapes (no dynamic_shapes)")
            if found.foreign is not None:
                raise ProgramError(f"{name}: its program names {found.foreign[:60]!r} where torch writes an identifier, an "
                                   "ATen operator or a module path; torch would paste it into Python source when "
                                   "opening the file, so it is refused (ResNet Lens reads programs of ATen ops "
                                   "only)")
            if parsed is not None:
                parsed[n] = doc
            continue
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict) or not all(isinstance(e, dict) for e in config.values()):
            raise ProgramError(f"{name}: its payload list {n.removeprefix(prefix)} is not the layout "
                               "torch.export.save writes")
        folder = n.rsplit("/", 1)[0]
        for fqn, entry in config.items():
            path = str(entry.get("path_name", ""))
            if path.startswith(("custom_obj", "opaque_obj")):
                raise ProgramError(f"{name}: it holds a script object ({fqn}), which loading would run as code; "
                                   "export the net without custom classes")
            if entry.get("use_pickle"):
                pickled.append(f"{folder}/{path}")
                continue
            member = f"{folder}/{path}"
            stored = z.getinfo(member).file_size if member in names else 0
            extra += max(0, _declared_bytes(entry.get("tensor_meta"), f"{name}: {fqn}") - stored)
    for n in pickled:
        data = read_member(z, n, name)
        try:
            torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:  # anything the safe unpickler refuses: the part is not plain tensors
            raise ProgramError(f"{name}: its pickled part {n.removeprefix(prefix)} does not load as plain tensors "
                               f"({type(exc).__name__}); it could run code when opened, so it is refused") from None
    return extra


def _check_unpacked(infos: list[zipfile.ZipInfo], name: str, budget: int, declared: int = 0) -> None:
    """The archive's members, as its directory declares them, and the tensors its weight list declares
    beyond them (``declared``), must fit the budget."""
    total = sum(i.file_size for i in infos) + declared
    if total > budget:
        what = "unpacks to" if not declared else f"declares tensors of {fmt_bytes(declared)} beyond its files: it needs"
        raise ProgramError(f"{name}: it {what} {fmt_bytes(total)}, more than the memory budget of "
                           f"{fmt_bytes(budget)} (set {ENV_VAR} to raise it)")


def _zip(source: Path | io.BytesIO, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ProgramError(f"{name}: not a torch.export program (.pt2): not a complete zip archive") from exc
    except OSError as exc:
        raise ProgramError(f"{name}: cannot be read ({exc.strerror or exc})") from exc


def open_archive(source: str | Path | bytes, name: str, *, whole: bool,
                 parsed: dict[str, Any] | None = None) -> tuple[zipfile.ZipFile, str, bytes | None]:
    """A ``.pt2`` (a path or its bytes) opened and checked as every reader of programs needs it: a zip
    archive of ``torch.export.save``'s layout whose directory, size on disk and declared tensors fit
    the memory budget (a path's directory is read before anything else of it), every pickled part plain
    tensors, its JSON what torch writes. Returns the open archive, the name to say and, with ``whole``,
    the bytes that were checked (what torch is then given: read once); without it, a path stays a file
    handle, so what is never read (the weights) is never loaded. ``parsed`` gets the program JSONs as
    checked (see :func:`_check_payloads`). Every failure is one :class:`ProgramError` sentence."""
    budget = memory_budget()
    blob: bytes | None = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ProgramError(f"{path}: no such program file")
        z = _zip(path, name)
        try:
            _check_unpacked(z.infolist(), name, budget)
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise ProgramError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
            if size > budget:
                raise ProgramError(f"{name}: it is {fmt_bytes(size)} on disk, more than the memory budget of "
                                   f"{fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
            if whole:
                try:
                    blob = path.read_bytes()
                except OSError as exc:
                    raise ProgramError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        except BaseException:
            z.close()
            raise
        if whole:
            z.close()
            z = _zip(io.BytesIO(cast(bytes, blob)), name)
    else:
        blob = bytes(source)
        z = _zip(io.BytesIO(blob), name)
    try:
        _check_unpacked(z.infolist(), name, budget)
        _check_unpacked(z.infolist(), name, budget, _check_payloads(z, name, parsed))
    except BaseException:
        z.close()
        raise
    return z, name, blob if whole else None


def load_program(source: str | Path | bytes, name: str = "program", *,
                 extra_files: dict[str, Any] | None = None) -> ExportedProgram:
    """An exported program from a ``.pt2`` path or its bytes, checked before torch opens it
    (:func:`open_archive`), every member within its declared size. Every failure is one
    :class:`ProgramError` sentence. ``extra_files`` (names to any value) is filled as
    ``torch.export.load`` fills it: each name found in the archive's extra files gets their text
    (read, never parsed or run, by torch; checked for size like every other member)."""
    z, name, blob = open_archive(source, name, whole=True)
    with z:
        for info in z.infolist():  # torch reads every member whole: none may inflate past its declared size
            read_member(z, info.filename, name)
    try:
        return torch.export.load(io.BytesIO(cast(bytes, blob)), extra_files=extra_files)
    except Exception as exc:  # torch's deserializer raises many types for a damaged or foreign archive
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ProgramError(f"{name}: torch could not read the program ({type(exc).__name__}: {first})") from None


class _ThreadStderr:
    """``sys.stderr`` while one thread exports: that thread's writes are kept, every other thread's
    go through (a server's other sessions keep their output)."""

    def __init__(self, real: TextIO, thread: int) -> None:
        self.real, self.thread, self.kept = real, thread, io.StringIO()

    def write(self, text: str) -> int:
        if threading.get_ident() == self.thread:
            return self.kept.write(text)
        return self.real.write(text)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, attr: str) -> Any:  # encoding, isatty, fileno ...: the real stream's
        return getattr(self.real, attr)


class _DropThread(logging.Filter):
    """Drops the records torch's loggers make in one thread (their handlers hold the stderr of the
    time they were made, so swapping ``sys.stderr`` does not reach them)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread and record.name.split(".", 1)[0] == "torch")


_QUIET_LOCK = threading.Lock()  # one export at a time: each swap below is undone before the next


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Torch's own output while it exports, kept from the terminal: a failed export logs warnings
    (symbolic_shapes), prints the partial graph to stderr and may warn, all before our one-sentence
    error. For the owner of the process only (the command line): it swaps process-wide slots, so
    library code and the app's page threads never call it (a server's log keeps torch's output).
    The slots are touched for this thread only and restored exactly in ``finally``:
    ``sys.stderr``, ``warnings.showwarning`` and a filter on every handler of torch's loggers (and
    on logging's last resort). What was kept goes to this module's logger at DEBUG."""
    with _QUIET_LOCK:
        me = threading.get_ident()
        stderr, showwarning = sys.stderr, warnings.showwarning
        quiet = _ThreadStderr(stderr, me)
        drop = _DropThread(me)
        loggers = [logging.getLogger()] + [lg for name, lg in logging.Logger.manager.loggerDict.items()
                                           if isinstance(lg, logging.Logger) and name.split(".", 1)[0] == "torch"]
        handlers = {id(h): h for lg in loggers for h in lg.handlers}
        if logging.lastResort is not None:
            handlers[id(logging.lastResort)] = logging.lastResort

        def hide(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if threading.get_ident() != me:
                showwarning(message, category, filename, lineno, file, line)

        try:
            for h in handlers.values():
                h.addFilter(drop)
            sys.stderr = cast(TextIO, quiet)
            warnings.showwarning = hide
            yield
        finally:
            if sys.stderr is quiet:  # whatever replaced it since is left to whoever did
                sys.stderr = stderr
            if warnings.showwarning is hide:
                warnings.showwarning = showwarning
            for h in handlers.values():
                h.removeFilter(drop)
            if quiet.kept.getvalue():
                _log.debug("torch.export printed:\n%s", quiet.kept.getvalue())


def export_module(module: torch.nn.Module, example: tuple[torch.Tensor, ...], name: str = "module") -> ExportedProgram:
    """``torch.export.export`` of a trusted module in eval mode, its failure one sentence: a forward
    whose control flow depends on the data cannot be exported as one graph (the command line keeps
    torch's own printouts off the terminal with :func:`quiet_torch`)."""
    was_training = module.training
    module.eval()
    try:
        return torch.export.export(module, example)
    except Exception as exc:  # torch.export raises its own error types for untraceable code
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        hint = (" Its forward branches on tensor values: rewrite the branch with torch.cond, or export the "
                "path you want with fixed inputs." if "data-dependent" in str(exc).lower()
                or "guard" in str(exc).lower() else "")
        raise ConfigError(f"{name}: torch.export could not trace it ({type(exc).__name__}: {first}).{hint}") from None
    finally:
        module.train(was_training)


# -------------------------------------------------------------------------------------------- graph
def _op_name(node: fx.Node) -> str:
    """'conv2d' for aten.conv2d.default."""
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return str(getattr(packet, "__name__", getattr(target, "__name__", str(target))))


def _value(node: object) -> torch.Tensor | None:
    """The node's output tensor; for an op returning a tuple, its first element: the native forms a
    decomposed program holds (batch norm, layer norm, max pool with indices) return the output there
    and statistics or indices after it."""
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(val, (tuple, list)) and val:
        val = val[0]
    return val if isinstance(val, torch.Tensor) else None


def _shape(node: object) -> tuple[int, ...]:
    val = _value(node)
    return tuple(int(d) for d in val.shape) if val is not None else ()


def _module(node: fx.Node) -> str:
    """The innermost module path whose forward ran the node ('' for the net itself)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


@dataclass(frozen=True)
class GraphNet:
    """An opened program: one row per compute node (module path, op, output shape, parameters used
    first here, MACs, FLOPs, activation bytes) and its residual units."""

    name: str
    input_shapes: tuple[tuple[int, ...], ...]
    nodes: pd.DataFrame
    units: tuple[Unit, ...]
    # the data flow, (producer id, consumer id) in graph order: between rows of ``nodes`` and from the
    # user inputs (named in ``inputs``, in the order of ``input_shapes``) to the rows that read them;
    # () where a source records no flow. Diagrams (analysis.arch.diagrams.net_graph) are drawn from it.
    edges: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()
    # whether ``nodes``' shapes carry the example input's batch axis, as a program's do (1×64×56×56);
    # a spec's cost table leaves it out (64×56×56); ``input_shapes`` always have it
    batched: bool = True

    @property
    def params(self) -> int:
        return sum(int(v) for v in self.nodes["params"])

    @property
    def macs(self) -> int:
        return sum(int(v) for v in self.nodes["macs"])

    @property
    def flops(self) -> int:
        return sum(int(v) for v in self.nodes["flops"])

    def by_module(self, depth: int | None = None) -> pd.DataFrame:
        """Parameters, MACs and FLOPs per module path, cut at ``depth`` path components."""
        def cut(path: str) -> str:
            parts = path.split(".") if path else []
            return ".".join(parts[:depth]) if depth is not None else path

        keys = [cut(m) for m in self.nodes["module"]]
        acc: dict[str, list[int]] = {}
        for key, p, m, f in zip(keys, self.nodes["params"], self.nodes["macs"], self.nodes["flops"], strict=True):
            row = acc.setdefault(key, [0, 0, 0])
            row[0] += int(p)
            row[1] += int(m)
            row[2] += int(f)
        return pd.DataFrame([{"module": k or "(net)", "params": v[0], "macs": v[1], "flops": v[2]}
                             for k, v in acc.items()])


class _Reader:
    """What the graph holds: activations (nodes that flow from the user's inputs), parameters."""

    def __init__(self, ep: ExportedProgram) -> None:
        self.ep = ep
        self.graph = ep.graph_module.graph
        sig = ep.graph_signature
        self.params: dict[str, str] = dict(sig.inputs_to_parameters)  # placeholder -> parameter name
        users = set(sig.user_inputs)  # (a property that rebuilds its list on every read)
        self.user_inputs = [n for n in self.graph.nodes if n.op == "placeholder" and n.name in users]
        self.live: set[fx.Node] = set(self.user_inputs)
        for n in self.graph.nodes:
            if n.op == "call_function" and any(a in self.live for a in n.all_input_nodes):
                self.live.add(n)
        self.dag = nx.DiGraph()
        self.dag.add_node("")
        for n in self.user_inputs:
            self.dag.add_edge("", n.name)
        for n in self.graph.nodes:
            if n in self.live:
                for a in n.all_input_nodes:
                    if a in self.live:
                        self.dag.add_edge(a.name, n.name)
        self.by_name = {n.name: n for n in self.graph.nodes}


def _macs(op: str, node: fx.Node) -> int:
    """Multiply-accumulates of a conv, linear, matmul or attention node, from its shapes."""
    args = [a for a in node.args]
    out = _shape(node)
    if op in _CONVS | _CONV_TRANSPOSES and len(args) > 1:
        w = _shape(args[1])
        # a transposed conv's weight is C_in x C_out/groups x k...: every input element feeds
        # C_out/groups x k... outputs (aten.convolution says which it is in its 7th argument)
        transposed = op in _CONV_TRANSPOSES or op in ("convolution", "_convolution") and len(args) > 6 and bool(args[6])
        return math.prod(_shape(args[0]) if transposed else out) * math.prod(w[1:]) if w and out else 0
    if op in ("linear", "addmm", "mm", "bmm", "matmul", "baddbmm") and args:
        a = _shape(args[1] if op in ("addmm", "baddbmm") else args[0])
        return math.prod(out) * a[-1] if a and out else 0
    if op == "scaled_dot_product_attention" and len(args) >= 3:
        q, k, v = _shape(args[0]), _shape(args[1]), _shape(args[2])
        if q and k and v:
            batch = math.prod(q[:-2])
            return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]
    return 0


def _flops(op: str, node: fx.Node, macs: int) -> int:
    out = _shape(node)
    n = math.prod(out) if out else 0
    args = node.args
    if macs:
        bias = 0
        if op in _CONVS | _CONV_TRANSPOSES | {"linear"} and len(args) > 2 and args[2] is not None:
            bias = n
        elif op in ("addmm", "baddbmm"):
            bias = n
        extra = 0
        if op == "scaled_dot_product_attention":
            q, k = _shape(args[0]), _shape(args[1])
            extra = 4 * math.prod(q[:-1]) * k[-2]  # scale, max, exp, normalise per score
        return 2 * macs + bias + extra
    if op in PER_ELEMENT:
        return PER_ELEMENT[op] * n
    if op in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
              "max_pool3d_with_indices"):
        # the kernel argument lists one size per axis, or one size for every axis
        kernel = [int(k) for k in cast(list[int], args[1])] if len(args) > 1 else [1]
        axes = max(len(out) - 2, 1)
        taps = math.prod(kernel) if len(kernel) > 1 else kernel[0] ** min(axes, 3)  # pools are 1- to 3-D
        return (taps - 1) * n
    if op.startswith(("adaptive_avg_pool", "_adaptive_avg_pool", "avg_pool")) or op in _REDUCTIONS:
        return math.prod(_shape(args[0]))
    if op in _ELEMENTWISE:
        return n
    return 0


def _weights_read(r: _Reader, node: fx.Node) -> list[fx.Node]:
    """The parameters an activation node reads, directly or through nodes that only transform weights:
    a decomposed linear reads its weight through permute (addmm(b, x, wᵀ)), a class token reaches its
    cat through expand. Those nodes are not activations, so a unit's branch, made of activations,
    would otherwise leave its weights out."""
    out: list[fx.Node] = []
    todo, seen = list(node.all_input_nodes), set()
    while todo:
        a = todo.pop()
        if a in seen:
            continue
        seen.add(a)
        if a.name in r.params:
            out.append(a)
        elif a.op == "call_function" and a not in r.live:
            todo.extend(a.all_input_nodes)
    return out


def _cost_rows(r: _Reader) -> list[dict[str, Any]]:
    reads = {n: _weights_read(r, n) for n in r.graph.nodes if n.op == "call_function" and n in r.live}
    # a weight no activation reads (one only returned, say) counts where it is used
    claimed = {a.name for found in reads.values() for a in found}
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for node in r.graph.nodes:
        if node.op != "call_function":
            continue
        op = _op_name(node)
        params = 0
        used = reads[node] if node in reads else [a for a in node.all_input_nodes
                                                  if a.name in r.params and a.name not in claimed]
        for a in used:
            pname = r.params[a.name]
            if pname not in seen:  # a shared weight counts once, where it is first used
                seen.add(pname)
                params += math.prod(_shape(a))
        macs = _macs(op, node)
        out = _shape(node)
        rows.append({"id": node.name, "module": _module(node), "op": op, "out_shape": out, "params": params,
                     "macs": macs, "flops": _flops(op, node, macs),
                     "act_bytes": 0 if op in _VIEWS or not out else math.prod(out) * _itemsize(node)})
    return rows


def _itemsize(node: fx.Node) -> int:
    val = _value(node)
    return int(val.element_size()) if val is not None else 0


# -------------------------------------------------------------------------------------------- units
def _coefficient(r: _Reader, operand: fx.Node) -> tuple[Coef, fx.Node]:
    """A multiply right before the add (re-views such as ConvNeXt's permute back to N x C x H x W, or
    an eval-mode drop-path, may sit between): (its coefficient, the path it scales); else (1, operand)."""
    mul = operand
    while mul.target not in _MULS and _op_name(mul) in _VIEWS and mul.args and isinstance(mul.args[0], fx.Node):
        mul = mul.args[0]
    if mul.target not in _MULS or len(mul.args) != 2:
        return Coef(), operand
    a, b = mul.args
    for factor, path in ((a, b), (b, a)):
        if not isinstance(path, fx.Node) or path not in r.live:
            continue
        if isinstance(factor, (int, float)):
            return Coef("const", float(factor)), path
        if not isinstance(factor, fx.Node):
            continue
        if factor.name in r.params or factor not in r.live and _weights_read(r, factor):
            return Coef("learned"), path  # γ itself, or γ re-viewed to broadcast
        if factor.target in _SIGMOIDS:
            return Coef("gate"), path
        if _one_minus_gate(factor):
            return Coef("one_minus_gate"), path
    return Coef(), operand


def _one_minus_gate(node: fx.Node) -> bool:
    """1 − g for a sigmoid gate g: rsub(g, 1) as exported, sub(1, g) after run_decompositions()."""
    args = node.args
    if len(args) < 2 or node.kwargs.get("alpha", 1) != 1:
        return False
    if node.target in _RSUBS:
        gate, one = args[0], args[1]
    elif node.target in _SUBS:
        one, gate = args[0], args[1]
    else:
        return False
    return isinstance(gate, fx.Node) and gate.target in _SIGMOIDS and isinstance(one, (int, float)) and one == 1


def _path_nodes(r: _Reader, start: str, end: fx.Node) -> set[str]:
    """The nodes strictly after ``start`` on some path to ``end`` (``end`` included). ``start``
    dominates ``end``, so walking back from ``end`` without passing ``start`` visits exactly them
    (any other ancestor would give a path around ``start``); the walk costs the unit's size, not the net's."""
    if end.name == start:
        return set()
    seen = {end.name}
    todo = [end.name]
    while todo:
        for p in r.dag.predecessors(todo.pop()):
            if p != start and p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


# what may follow a unit's add, by its op kind in the registry (analysis.arch.ops): a ReLU, or a
# BatchNorm or LayerNorm in its plain or native (decomposed) form
_POST_KIND: dict[str, OpKind] = {"relu": "relu", "relu_": "relu", "batch_norm": "bn",
                                 "_native_batch_norm_legit_no_training": "bn", "_native_batch_norm_legit": "bn",
                                 "native_batch_norm": "bn", "layer_norm": "layer_norm",
                                 "native_layer_norm": "layer_norm"}


def _post_nodes(add: fx.Node) -> list[tuple[OpKind, fx.Node]]:
    """What alone consumes the sum inside the unit's own module, in order, as (kind, node): a ReLU
    (He et al. 2015's blocks), BN then ReLU (BN after addition), a post-norm transformer's LayerNorm,
    or nothing (the stream stays clean; a pre-activation net's final BN belongs to the head, not to
    its last unit). The one reading of it: the unit's join's ``after`` (and so its ``post``) derives from it."""
    owner = _module(add)
    out: list[tuple[OpKind, fx.Node]] = []
    node = add
    while len(out) < 2 and len(node.users) == 1:
        (user,) = node.users
        if _op_name(user) == "getitem" and user.args[1:2] == (0,):
            node = user  # a native norm's output, taken from its tuple: no op of its own
            continue
        kind = _POST_KIND.get(_op_name(user))
        inside = not owner or _module(user) == owner or _module(user).startswith(owner + ".")
        if kind is None or not inside:
            break
        out.append((kind, user))
        node = user
        if kind == "relu":
            break
    return out


def _after(add: fx.Node) -> tuple[Op, ...]:
    """The join's ``after``: the ops of :func:`_post_nodes`, named by their module inside the unit's, as a
    spec's plan names them; a norm over its features (a BN's channels, axis 1; a LayerNorm's, the last)."""
    shape = _shape(add)
    owner = _module(add)
    ops: list[Op] = []
    for kind, node in _post_nodes(add):
        c = (shape[-1] if kind == "layer_norm" else shape[1]) if len(shape) > 1 else 0
        inner = _module(node).removeprefix(owner).lstrip(".") if owner else _module(node)
        ops.append(Op(inner or kind, kind, c, c, dims=1 if len(shape) == 3 else 2))
    return tuple(ops)


def find_units(ep: ExportedProgram) -> list[Unit]:
    """Every residual unit of the program's graph, in graph order (see the module docstring)."""
    r = _Reader(ep)
    return _units(r, {row["id"]: row for row in _cost_rows(r)})


def _units(r: _Reader, rows: Mapping[str, Mapping[str, Any]]) -> list[Unit]:
    idom = nx.immediate_dominators(r.dag, "")
    gates = {n.name for n in r.live if n.target in _SIGMOIDS}  # the gate's own work is the join's, not F's
    found: list[tuple[fx.Node, str, ShortcutKind, Join, set[str], set[str], fx.Node]] = []
    for node in r.graph.nodes:
        if node.target not in _ADDS or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and a in r.live and b in r.live) or a is b:
            continue
        x = idom.get(node.name, "")
        if x == "" or _shape(a) != _shape(b):
            continue
        (ca, pa), (cb, pb) = _coefficient(r, a), _coefficient(r, b)
        na, nb = _path_nodes(r, x, pa), _path_nodes(r, x, pb)
        short_params = sum(int(rows[n]["params"]) for n in na if n in rows)
        branch_params = sum(int(rows[n]["params"]) for n in nb if n in rows)
        # the shortcut: x itself, else the shorter path, on a tie the one with fewer weights (a BN-folded
        # conv-relu-conv branch is as long as option A's slice-slice-pad); F is the other and must hold weights
        short_arg = a  # the add's operand on the shortcut side
        if (len(nb), branch_params) < (len(na), short_params):
            (ca, pa, na), (cb, pb, nb) = (cb, pb, nb), (ca, pa, na)
            short_params, branch_params = branch_params, short_params
            short_arg = b
        if not nb or branch_params == 0:
            continue
        kind: ShortcutKind = "identity" if not na else "projection" if short_params else "pad"
        join = Join(shortcut=ca, branch=cb, after=_after(node))
        found.append((node, x, kind, join, nb - gates, na, short_arg))
    owners: dict[str, int] = {}
    for node, *_ in found:
        owners[_module(node)] = owners.get(_module(node), 0) + 1
    names: dict[str, str] = {}
    count: dict[str, int] = {}
    units: list[Unit] = []
    for node, x, kind, join, branch, short, operand in found:
        owner = _module(node)
        post = _post_nodes(node)
        exit_node = post[-1][1] if post else node
        if len(exit_node.users) == 1 and _op_name(next(iter(exit_node.users))) == "getitem":
            exit_node = next(iter(exit_node.users))  # a native norm's tensor, taken from its tuple
        count[owner] = count.get(owner, 0) + 1
        label = owner or "(net)"
        names[node.name] = label if owners[owner] == 1 else f"{label}[{count[owner]}]"
        units.append(Unit(
            name=names[node.name], owner=owner, shortcut=kind, join=join,
            in_shape=_shape(r.by_name[x])[1:], out_shape=_shape(node)[1:],
            branch_params=sum(int(rows[n]["params"]) for n in branch if n in rows),
            branch_macs=sum(int(rows[n]["macs"]) for n in branch if n in rows),
            shortcut_params=sum(int(rows[n]["params"]) for n in short if n in rows),
            entry_node=x, add_node=node.name, shortcut_node=operand.name, exit_node=exit_node.name))
    # nesting: the innermost unit whose branch holds this unit's add
    branches = {names[node.name]: br for node, _, _, _, br, _, _ in found}
    out: list[Unit] = []
    for (node, *_), unit in zip(found, units, strict=True):
        holders = [n for n, br in branches.items() if node.name in br]
        parent = min(holders, key=lambda n: len(branches[n])) if holders else None
        out.append(Unit(**{**unit.__dict__, "parent": parent}))
    return out


def open_program(ep: ExportedProgram, name: str = "program") -> GraphNet:
    """The cost rows and residual units of an exported program (read from its graph and shapes)."""
    r = _Reader(ep)
    rows = _cost_rows(r)
    table = pd.DataFrame(rows, columns=["id", "module", "op", "out_shape", "params", "macs", "flops", "act_bytes"])
    units = _units(r, {row["id"]: row for row in rows})
    # every input a compute node reads that is itself a compute node or a user input: the live flow of
    # r.dag, and also the rows computed from weights alone (a ViT's class token expanded to the batch,
    # a causal mask from arange), which would otherwise float unconnected in a diagram of every op
    computed = {row["id"] for row in rows}
    inputs = tuple(n.name for n in r.user_inputs)
    sources = computed | set(inputs)
    edges = tuple((a.name, n.name) for n in r.graph.nodes if n.name in computed
                  for a in n.all_input_nodes if a.name in sources)
    return GraphNet(name=name, input_shapes=tuple(_shape(n)[:] for n in r.user_inputs), nodes=table,
                    units=tuple(units), edges=edges, inputs=inputs)


def no_unit_reason(net: GraphNet) -> str:
    """One sentence for a net without residual units: what joins its paths instead, if anything."""
    ops = set(net.nodes["op"])
    joins = []
    if ops & {"cat", "stack"}:
        joins.append("concatenation (DenseNet- or U-Net-style skips keep both tensors side by side)")
    if "mul" in ops and ops & {"sigmoid", "hardsigmoid"}:
        joins.append("multiplicative gates (a squeeze-and-excitation gate rescales a path; it adds nothing to it)")
    how = "; its paths meet by " + " and ".join(joins) if joins else ""
    return (f"{net.name} has no residual unit: no add joins a tensor with a weighted function of it{how}.")


def summary(units: Iterable[Unit]) -> dict[str, int]:
    """How many units, and how many with each shortcut kind."""
    out = {"units": 0, "identity": 0, "projection": 0, "pad": 0}
    for u in units:
        out["units"] += 1
        out[u.shortcut] += 1
    return out


# ------------------------------------------------------------------------------------ every source
def spec_net(spec: ResNetSpec) -> GraphNet:
    """A spec-built net in the same record as an opened one: its cost table's rows, its plan's units."""
    table = layer_table(spec)
    nodes = pd.DataFrame({"id": table["id"], "module": table["module"], "op": table["op"],
                          "out_shape": table["out_shape"], "params": table["params"], "macs": table["macs"],
                          "flops": table["flops"], "act_bytes": table["act_bytes"]})
    # the flow of the spec's layer diagram, so an opened net and a built-in one are drawn alike (diagrams
    # names GraphNet for type checking only: this arrow, graphnet -> diagrams, makes no import cycle)
    from analysis.arch.diagrams import spec_flow

    return GraphNet(name=spec.name, input_shapes=((1, *spec.input_shape()),), nodes=nodes,
                    units=tuple(plan_units(net_plan(spec))), edges=spec_flow(spec), inputs=("input",),
                    batched=False)
