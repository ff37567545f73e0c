"""A ``.pt2`` read from its JSON (analysis.arch.programjson) is the program torch.export.load gives.

Every case is saved with ``torch.export.save`` and opened both ways: ``read_program`` + ``open_program``
against ``open_program(torch.export.load(...))``. Equal means the same graph node by node (names,
targets, positional and keyword arguments, output shapes and dtypes, module stacks, users) and the
same GraphNet (every column of the node table, the units as dataclasses, the flow), as exported and
after ``run_decompositions()``. The nets: the zoo (tests/zoo.py), one built-in net of each kind (the
kinds cover all of ``MODELS``: :func:`test_the_builtin_cases_cover_every_kind_of_builtin_net`; the others
differ only in depth and width, and exporting all 23 twice would take minutes), a few variants, and
a net of mixed dtypes and list outputs. Then the hostile archives: each refused exactly as
``load_program`` refuses it, plus the ops and names only this reader refuses.
"""

from __future__ import annotations

import dataclasses
import io
import json
import operator
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.export import ExportedProgram

from analysis.arch import programjson
from analysis.arch.graphnet import GraphNet, ProgramError, export_module, load_program, open_program
from analysis.arch.models import ResNet
from analysis.arch.programjson import LightProgram, read_program
from analysis.arch.sources import open_file
from analysis.arch.specs import MODELS, ResNetSpec, get_spec
from tests.test_graphnet import VARIANTS, ZOO, _edited_json, _Payload, decomposed, rewritten, saved

ROOT = Path(__file__).resolve().parent.parent


class Mixed(nn.Module):
    """Int64 ids, an embedding, dtype casts (a ScalarType keyword), chunk and unbind (list outputs),
    max-pool with indices (a tuple output), a memory-format and a device keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin = nn.Embedding(10, 8), nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        a, b = x.chunk(2, dim=-1)
        y = self.lin(a) + b.to(torch.float16).to(torch.float32)
        z = torch.stack(y.unbind(1), 0)
        pooled, _ = F.max_pool1d(z, 2, return_indices=True)
        ramp = torch.arange(pooled.shape[-1], device=ids.device, dtype=torch.float32)
        return pooled * ramp + torch.zeros_like(pooled, memory_format=torch.contiguous_format)


# name: (module factory, example input factory)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    f"zoo: {name}": (make, example) for name, (make, example, _, _) in ZOO.items()}
CASES["mixed dtypes and list outputs"] = (Mixed, lambda: torch.zeros(1, 5, dtype=torch.int64))

# one built-in net of each kind (stem, block, grouped or not, shortcut, dimensions ...)
BUILTINS = ("cifar_resnet20", "resnet18", "resnet50", "resnext50_32x4d", "resnet1d_8", "vdcnn9")
BUILTIN_VARIANTS = ("preact", "gate", "scale", "BN after add", "option C")


def _spec(name: str, **changes: object) -> ResNetSpec:
    small = {"input_size": 64} if get_spec(name).stem == "imagenet" else {}
    return get_spec(name).replace(**small, **changes)


def _program(case: str) -> ExportedProgram:
    if case in CASES:
        make, example = CASES[case]
        return export_module(make(), (example(),), name=case)
    name, _, variant = case.partition(" / ")
    spec = _spec(name, **VARIANTS.get(variant, {}))
    with torch.device("meta"):  # built-ins on meta: no weights allocated, the graph is the same
        model = ResNet(spec)
    return export_module(model, (torch.zeros(1, *spec.input_shape(), device="meta"),), name=case)


def _blob(ep: ExportedProgram) -> bytes:
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- comparing
def _norm(value: Any) -> Any:
    """An argument or value comparable across the two graphs: nodes by name, tensors by shape and dtype."""
    if isinstance(value, fx.Node):
        return ("node", value.name)
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return ("list" if isinstance(value, list) else "tuple", tuple(_norm(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _norm(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _node_record(node: fx.Node) -> tuple[Any, ...]:
    meta = node.meta
    return (node.name, node.op, node.target, _norm(node.args), _norm(node.kwargs), _norm(meta.get("val")),
            meta.get("nn_module_stack"), meta.get("stack_trace"), meta.get("torch_fn"),
            sorted(u.name for u in node.users))


def assert_same_graph(light: LightProgram, loaded: ExportedProgram) -> None:
    """Node by node, in order; the signature's maps and user inputs."""
    ours, theirs = list(light.graph.nodes), list(loaded.graph.nodes)
    assert [n.name for n in ours] == [n.name for n in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert _node_record(a) == _node_record(b), a.name
    sig, want = light.graph_signature, loaded.graph_signature
    assert dict(sig.inputs_to_parameters) == dict(want.inputs_to_parameters)
    assert dict(sig.inputs_to_buffers) == dict(want.inputs_to_buffers)
    assert dict(sig.inputs_to_lifted_tensor_constants) == dict(want.inputs_to_lifted_tensor_constants)
    assert tuple(sig.user_inputs) == tuple(want.user_inputs)
    assert tuple(sig.user_outputs) == tuple(want.user_outputs)


def assert_same_net(ours: GraphNet, theirs: GraphNet) -> None:
    """Every column of the node table, the units as dataclasses, every other field."""
    pd.testing.assert_frame_equal(ours.nodes, theirs.nodes, check_exact=True)
    assert ours.units == theirs.units
    assert (ours.name, ours.input_shapes, ours.edges, ours.inputs, ours.batched) == (
        theirs.name, theirs.input_shapes, theirs.edges, theirs.inputs, theirs.batched)


def check_both_ways(ep: ExportedProgram, label: str) -> GraphNet:
    blob = _blob(ep)
    light = read_program(blob, f"{label}.pt2")
    loaded = torch.export.load(io.BytesIO(blob))
    assert_same_graph(light, loaded)
    net = open_program(light, name=label)
    assert_same_net(net, open_program(loaded, name=label))
    return net


@pytest.mark.parametrize("case", sorted(CASES) + list(BUILTINS)
                         + [f"cifar_resnet20 / {v}" for v in BUILTIN_VARIANTS])
def test_a_program_read_from_its_json_is_the_one_torch_loads(case: str) -> None:
    ep = _program(case)
    net = check_both_ways(ep, case)
    dec = check_both_ways(decomposed(ep), case)
    assert set(dec.nodes["op"]) != set(net.nodes["op"])  # the decomposition did change the graph
    if case in BUILTINS:
        assert net.units and dec.units == net.units


def _edited_blob(blob: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The saved program with its models/model.json changed by ``edit``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
            dst.writestr(info, data)
    return out.getvalue()


def _sparse(doc: dict[str, Any]) -> None:
    """What older or sparser files hold: no node names (torch names a node after its one tensor output,
    else fx names it), no argument kinds (positional or keyword by the op's schema), a node without
    a module stack, a node whose one output is None."""
    graph = doc["graph_module"]["graph"]
    nodes = graph["nodes"]
    for node in nodes:
        node["name"] = None
        for arg in node["inputs"]:
            arg["kind"] = None
    nodes[0]["metadata"].pop("nn_module_stack")
    user = next(s["user_input"]["arg"]["as_tensor"]["name"] for s in doc["graph_module"]["signature"]["input_specs"]
                if "user_input" in s)
    relu = {"target": "torch.ops.aten.relu.default", "inputs": [{"name": "self", "arg": {"as_tensor": {"name": user}}}],
            "metadata": {}}
    nodes.insert(1, {**relu, "outputs": [{"as_none": True}], "name": "dead"})  # named: torch needs a name here


@pytest.mark.parametrize("case", ["mixed dtypes and list outputs", "cifar_resnet20"])
def test_older_and_sparser_files_read_as_torch_reads_them(case: str) -> None:
    ep = _program(case)
    for program in (ep, decomposed(ep)):
        blob = _edited_blob(_blob(program), _sparse)
        light, loaded = read_program(blob, "sparse.pt2"), torch.export.load(io.BytesIO(blob))
        assert_same_graph(light, loaded)
        assert "dead" not in {n.name for n in light.graph.nodes}  # renamed, as torch renames it
        assert_same_net(open_program(light), open_program(loaded))


def test_the_builtin_cases_cover_every_kind_of_builtin_net() -> None:
    """Every built-in net shares all but its depth and widths with one net the cases export."""
    sizes = {"name", "layers", "widths", "width_per_group", "num_classes", "input_size", "description",
             "stem_width", "family"}

    def kind(spec: ResNetSpec) -> tuple[tuple[str, Any], ...]:
        d = {k: v for k, v in dataclasses.asdict(spec).items() if k not in sizes}
        d["groups"] = d["groups"] > 1
        return tuple(sorted(d.items()))

    assert {kind(get_spec(n)) for n in MODELS} == {kind(get_spec(n)) for n in BUILTINS}


def test_the_checks_can_fail() -> None:
    """A different net does not pass for the same graph or the same GraphNet."""
    a, b = _program("cifar_resnet20"), _program("cifar_resnet20 / option C")
    light = read_program(_blob(a), "a.pt2")
    with pytest.raises(AssertionError):
        assert_same_graph(light, torch.export.load(io.BytesIO(_blob(b))))
    with pytest.raises(AssertionError):
        assert_same_net(open_program(light), open_program(b))


def test_multi_output_ops_get_the_getitems_torch_makes() -> None:
    """Batch norm (decomposed), max-pool with indices and unbind: a getitem per output, unused ones
    included, named after the output, each with its own shape; the op's value a tuple of them."""
    light = read_program(_blob(decomposed(_program("resnet18"))), "r18.pt2")
    bn = next(n for n in light.graph.nodes if n.target is torch.ops.aten._native_batch_norm_legit_no_training.default)
    items = sorted(bn.users, key=lambda u: u.args[1])
    assert [u.target for u in items] == [operator.getitem] * 3 and [u.args[1] for u in items] == [0, 1, 2]
    assert isinstance(bn.meta["val"], tuple) and len(bn.meta["val"]) == 3
    assert bn.meta["val"][0].shape == items[0].meta["val"].shape and bn.meta["val"][0].device.type == "meta"
    pool = next(n for n in light.graph.nodes if n.target is torch.ops.aten.max_pool2d_with_indices.default)
    assert pool.meta["val"][1].dtype == torch.int64  # the indices
    mixed = read_program(_blob(_program("mixed dtypes and list outputs")), "m.pt2")
    unbind = next(n for n in mixed.graph.nodes if n.target is torch.ops.aten.unbind.int)
    assert len(unbind.users) == len(unbind.meta["val"]) == 5


def test_module_stacks_are_split_as_torch_splits_them(tmp_path: Path) -> None:
    """Commas inside brackets stay in the path (torch's metadata_split); ';' separates the entries."""
    from torch._export.serde.serialize import GraphModuleDeserializer

    for text in ("L__self__,,tests.zoo.Net;L__self___a,a,torch.nn.Linear",
                 "k,layers[0,1],Seq;k2,f(a,b).c,torch.nn.modules.conv.Conv2d", "k,,"):
        want = GraphModuleDeserializer().deserialize_metadata({"nn_module_stack": text})
        assert programjson._metadata({"nn_module_stack": text}) == want

    def damage(doc: dict) -> None:  # type: ignore[type-arg]
        doc["graph_module"]["graph"]["nodes"][0]["metadata"]["nn_module_stack"] = "a,b"

    message = refusal(lambda: read_program(_edited_json(saved(tmp_path), "models/model.json", damage), "x.pt2"))
    assert "nn_module_stack entry that is not key,path,type" in message


def test_the_schema_codes_are_torchs() -> None:
    from torch._export.serde import serialize

    assert programjson.DTYPES == serialize._SERIALIZE_TO_TORCH_DTYPE
    assert programjson.LAYOUTS == serialize._SERIALIZE_TO_TORCH_LAYOUT
    assert programjson.MEMORY_FORMATS == serialize._SERIALIZE_TO_TORCH_MEMORY_FORMAT


# -------------------------------------------------------------------------------- what it never does
def test_no_weight_is_read_and_torch_never_deserializes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path)
    read: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torch.export.load was called")

    want = open_program(load_program(path), name="net.pt2")
    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    monkeypatch.setattr(torch.export, "load", refuse)
    assert_same_net(open_file(path), want)  # the app's way in: sources.open_file
    assert read and not [n for n in read if "/data/weights/" in n and not n.endswith(".json")]


def test_opening_a_file_never_imports_torchs_deserializer(tmp_path: Path) -> None:
    """In a fresh process: torch's serde module (sympy, fake tensors: a second of imports) stays out."""
    path = saved(tmp_path)
    code = ("import sys; from analysis.arch.sources import open_file; net = open_file(sys.argv[1]); "
            "assert [u.name for u in net.units] == ['(net)'], net.units; "
            "assert 'torch._export.serde.serialize' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


# ------------------------------------------------------------------------------------ hostile files
def refusal(fn: Callable[[], object]) -> str:
    with pytest.raises(ProgramError) as info:
        fn()
    return str(info.value)


def same_refusal(source: Path | bytes, label: str = "evil.pt2") -> str:
    """Both readers refuse, in the same words; the sentence is returned."""
    theirs = refusal(lambda: load_program(source, label))
    ours = refusal(lambda: read_program(source, label))
    assert ours == theirs
    return ours


def test_symbolic_shapes_are_refused_as_load_program_refuses_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = saved(tmp_path)

    def plant(doc: dict) -> None:  # type: ignore[type-arg]
        values = doc["graph_module"]["graph"]["tensor_values"]
        first = next(v for v in values.values() if len(v["sizes"]) > 1)
        first["sizes"][1] = {"as_expr": {"expr_str": f"__import__('pathlib').Path({str(marker)!r}).touch() or 16",
                                         "hint": {"as_int": 16}}}

    assert "symbolic shapes" in same_refusal(_edited_json(path, "models/model.json", plant))
    assert not marker.exists()


def test_pickled_payloads_and_script_objects_are_refused_as_load_program_refuses_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = saved(tmp_path)
    evil = rewritten(path, "sample_inputs/model.pt", pickle.dumps(_Payload(marker)))
    assert "sample_inputs/model.pt does not load as plain tensors" in same_refusal(evil)
    # a weight marked as pickled, its file a payload: the one weight file the checks do read
    marked = io.BytesIO(_edited_json(path, "model_weights_config.json",
                                     lambda d: next(iter(d["config"].values())).update(use_pickle=True,
                                                                                        path_name="weight_0")))
    out = io.BytesIO()
    with zipfile.ZipFile(marked) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, pickle.dumps(_Payload(marker)) if info.filename.endswith("/weights/weight_0")
                         else src.read(info))
    assert "weights/weight_0 does not load as plain tensors" in same_refusal(out.getvalue())
    assert not marker.exists()
    custom = _edited_json(path, "model_weights_config.json",
                          lambda d: next(iter(d["config"].values())).update(path_name="custom_obj_0"))
    assert "holds a script object" in same_refusal(custom)
    broken = _edited_json(path, "model_weights_config.json", lambda d: d.update(config=[1]))
    assert "not the layout torch.export.save writes" in same_refusal(broken)


def test_budget_and_foreign_files_are_refused_as_load_program_refuses_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path)
    with monkeypatch.context() as m:
        m.setattr("analysis.arch.graphnet.memory_budget", lambda: 4096)  # both readers open through open_archive
        assert "more than the memory budget of 4.0 KiB" in same_refusal(path)
        assert "more than the memory budget of 4.0 KiB" in same_refusal(path.read_bytes())
    assert "not a complete zip archive" in same_refusal(b"not a zip", "x.pt2")
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("a/b.txt", "hello")
    assert "no archive_format and models/ entries" in same_refusal(other.getvalue(), "x.pt2")
    assert "no such program file" in same_refusal(tmp_path / "missing.pt2")


def test_json_nested_too_deeply_is_one_sentence(tmp_path: Path) -> None:
    deep = rewritten(saved(tmp_path), "models/model.json", b"[" * 100_000 + b"]" * 100_000)
    assert "models/model.json is not valid JSON" in same_refusal(deep, "deep.pt2")


def _retargeted(path: Path, target: str) -> bytes:
    def edit(doc: dict) -> None:  # type: ignore[type-arg]
        doc["graph_module"]["graph"]["nodes"][0]["target"] = target

    return _edited_json(path, "models/model.json", edit)


@pytest.mark.parametrize("target", ["torch.ops.evil.op.default", "os.system", "torch.ops.higher_order.cond",
                                    "_operator.getitem", "builtins.eval", "torch.ops.aten.__class__.__init__",
                                    "torch.ops.aten.conv2d.default.__call__", "#custom:op"])
def test_an_op_outside_aten_is_refused_in_one_sentence_and_nothing_is_imported(tmp_path: Path, target: str) -> None:
    path = saved(tmp_path)
    evil = _retargeted(path, target)
    read_program(_retargeted(path, "torch.ops.aten.conv2d.default"), "warm.pt2")  # the checks' own imports
    before = set(sys.modules)
    message = refusal(lambda: read_program(evil, "evil.pt2"))
    assert set(sys.modules) == before
    # refused by the archive checks load_program shares (graphnet.screen), before the reader's own
    assert message.startswith("evil.pt2: its program names") and "an ATen operator" in message
    assert "\n" not in message and message.count(". ") == 0


def test_one_walk_finds_both_refusals_and_says_a_symbolic_part_first() -> None:
    """graphnet.screen, the one walk over a program's JSON: the first foreign text, and a symbolic part
    wherever it sits (refused first, even after a foreign text was found); a name found plain once is
    not taken for every other name."""
    from analysis.arch.graphnet import Screened, screen

    bad = "x=print(1)"
    nodes = [{"name": "x"}, {"name": "x"}, {"inputs": [{"name": bad}, {"as_int": 3}]}]
    assert screen({"nodes": nodes}) == Screened(False, bad)
    assert screen({"graph": {"tensor_values": {"x": {}, bad: {}}}}) == Screened(False, bad)
    symbolic = [[{"as_expr": {"expr_str": "1"}}]]
    for doc in ({"nodes": nodes, "tail": symbolic}, {"head": symbolic, "nodes": nodes}):  # met before or after
        assert screen(doc) == Screened(True, None)
    assert screen({"range_constraints": {"s0": {}}}).symbolic and not screen({"range_constraints": {}}).symbolic
    assert screen({"a": [{"guards_code": ["x > 2"]}]}).symbolic and not screen({"as_expr": None}).symbolic
    assert screen({"target": "torch.ops.aten.add.Tensor", "parameter_name": "layer1.0.weight"}) == Screened(False, None)
    assert screen({"target": "os.system"}) == Screened(False, "os.system")
    assert screen({"parameter_name": "a.__class__"}) == Screened(False, "a.__class__")
    assert screen(7) == Screened(False, None)  # a document that is a bare value holds neither


def test_an_aten_op_this_torch_lacks_is_refused(tmp_path: Path) -> None:
    message = refusal(lambda: read_program(_retargeted(saved(tmp_path), "torch.ops.aten.no_such_op.default"), "x.pt2"))
    assert "which this torch" in message and "does not have" in message


def test_a_name_torch_would_compile_into_python_is_refused(tmp_path: Path) -> None:
    """torch.export.load writes node names into the source of the program's GraphModule and runs it;
    a name that is not a plain identifier is refused here before anything reads it."""
    marker = tmp_path / "ran"
    path = saved(tmp_path)
    evil_name = f"x=__import__('pathlib').Path({str(marker)!r}).touch()"
    with zipfile.ZipFile(path) as z:
        (member,) = [n for n in z.namelist() if n.endswith("models/model.json")]
        text = z.read(member).decode()
    text = text.replace('"name": "x"', f'"name": {json.dumps(evil_name)}').replace('"x": {', f"{json.dumps(evil_name)}: {{")
    assert evil_name in text
    message = refusal(lambda: read_program(rewritten(path, "models/model.json", text.encode()), "evil.pt2"))
    assert "where torch writes an identifier" in message and "\n" not in message
    assert not marker.exists()


def test_damaged_json_is_one_sentence(tmp_path: Path) -> None:
    path = saved(tmp_path)
    for edit, words in ((lambda d: d["graph_module"].pop("graph"), "not the layout torch.export.save writes"),
                        (lambda d: d["graph_module"]["graph"]["nodes"][0]["inputs"][0].update(
                            arg={"as_tensor": {"name": "nowhere"}}), "uses nowhere before any node defines it"),
                        (lambda d: d.update(schema_version={"major": 99, "minor": 0}), "schema version 99.0"),
                        (lambda d: d["graph_module"]["graph"]["tensor_values"]["x"].update(dtype=99),
                         "dtype code 99"),
                        (lambda d: d["graph_module"]["graph"].update(is_single_tensor_return=True),
                         "returns a bare tensor")):
        message = refusal(lambda e=edit: read_program(_edited_json(path, "models/model.json", e), "bad.pt2"))  # type: ignore[misc]
        assert words in message and "\n" not in message, message


def test_randomly_damaged_json_is_refused_in_one_sentence_or_read() -> None:
    """Seeded damage (fields dropped, values swapped for others of any kind): a ProgramError sentence
    or a program open_program reads; never another exception."""
    import copy
    import random

    blob = _blob(decomposed(_program("zoo: MobileNetV2")))
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        (member,) = [n for n in z.namelist() if n.endswith("models/model.json")]
        doc = json.loads(z.read(member))

    def paths(d: Any, pre: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
        return [p for k, v in items for p in [(*pre, k), *paths(v, (*pre, k))]]

    every = paths(doc)
    junk = [None, 0, -1, 1.5, "x", "", [], {}, True, {"as_int": 3}, {"as_tensor": {"name": "x"}}, [{"as_int": -5}],
            10**30, "Infinity", "NaN"]
    rng = random.Random(0)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        d = copy.deepcopy(doc)
        for _ in range(rng.randint(1, 3)):
            *head, last = rng.choice(every)
            parent = d
            try:
                for k in head:
                    parent = parent[k]
                if rng.random() < 0.3 and isinstance(parent, dict):
                    parent.pop(last, None)
                else:
                    parent[last] = rng.choice(junk)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit removed the way there
        try:
            open_program(programjson.program_from_json(json.dumps(d), "f.pt2"))
            outcomes["read"] += 1
        except ProgramError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("f.pt2: "), str(exc)
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]


# ------------------------------------------------------------------ second review: work and memory bounds
def _first_node(doc: dict) -> dict:  # type: ignore[type-arg]
    return doc["graph_module"]["graph"]["nodes"][0]  # type: ignore[no-any-return]


def test_integers_wider_than_int64_and_tensors_of_absurd_rank_are_refused(tmp_path: Path) -> None:
    """A 4,000-digit kernel size over a 10,000-dimensional output kept a core busy for a minute."""
    path = saved(tmp_path)

    def wide(doc: dict) -> None:  # type: ignore[type-arg]
        values = doc["graph_module"]["graph"]["tensor_values"]
        first = next(iter(values.values()))
        first["sizes"][0] = {"as_int": 1 << 63}

    assert "non-integer where torch writes an integer" in refusal(
        lambda: read_program(_edited_json(path, "models/model.json", wide), "x.pt2"))

    def deep(doc: dict) -> None:  # type: ignore[type-arg]
        values = doc["graph_module"]["graph"]["tensor_values"]
        first = next(iter(values.values()))
        first["sizes"] = [{"as_int": 1}] * (programjson.MAX_RANK + 1)
        first["strides"] = [{"as_int": 1}] * (programjson.MAX_RANK + 1)

    assert f"more than {programjson.MAX_RANK} dimensions" in refusal(
        lambda: read_program(_edited_json(path, "models/model.json", deep), "x.pt2"))


def test_a_program_of_too_many_nodes_is_refused_before_it_is_built(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path)
    monkeypatch.setattr(programjson, "MAX_NODES", 3)
    assert "more than the 3 ResNet Lens reads" in refusal(lambda: read_program(path, "x.pt2"))


def test_json_is_counted_at_what_it_takes_once_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed JSON takes ~20-28x its text: a 300 KiB list of empty lists peaked at 8 GB."""
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        size = max(i.file_size for i in z.infolist() if i.filename.endswith("models/model.json"))
    monkeypatch.setattr("analysis.arch.graphnet.memory_budget", lambda: size * 16)
    assert "of JSON, about" in refusal(lambda: read_program(path, "x.pt2"))


def test_a_member_that_inflates_past_its_declared_size_is_never_unpacked(tmp_path: Path) -> None:
    """The directory says 16 bytes; the stream inflates to 64 MiB: read no further than declared."""
    import zlib

    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        (weights,) = [n for n in z.namelist() if n.endswith("weights/model_weights_config.json")]
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, b"x" * (64 << 20) if info.filename == weights else src.read(info))
    blob = bytearray(out.getvalue())
    # shrink the declared size in the central directory and the local header of that member
    with zipfile.ZipFile(io.BytesIO(bytes(blob))) as z:
        info = z.getinfo(weights)
    assert info.file_size == 64 << 20 and zlib  # the member is really large
    lied = bytes(blob).replace((64 << 20).to_bytes(4, "little"), (16).to_bytes(4, "little"))
    for reader in (read_program, load_program):
        message = refusal(lambda: reader(lied, "x.pt2"))  # noqa: B023 (called at once)
        assert "cannot be read" in message or "not the size its archive declares" in message or \
            "is not valid JSON" in message, message
