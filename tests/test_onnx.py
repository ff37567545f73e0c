"""ONNX files as a net source (issue 23): a file exported from torch reads as its original does (the
spec path's record for built-in nets, the program's for the zoo's transformers), and a file that is
not ONNX, keeps its data elsewhere, declares more than the budget or uses ops we cannot convert is
refused in one sentence, before anything is allocated for it.

Files come from torch's TorchScript exporter (``dynamo=False``: no extra package) for real nets, and
from ``onnx.helper`` for the hostile ones.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from analysis.arch import onnxnet, sources
from analysis.arch.budget import ENV_VAR
from analysis.arch.graphnet import GraphNet, ProgramError, export_module, open_program, spec_net, summary
from analysis.arch.models import ResNet
from analysis.arch.onnxnet import OnnxError, module_path, open_onnx
from analysis.arch.specs import get_spec
from tests import zoo

ROOT = Path(__file__).resolve().parent.parent


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor, *, keep_bn: bool = True, **kw: Any) -> bytes:
    """The model as torch's TorchScript exporter writes it (opset 17 unless given). ``keep_bn`` keeps
    BatchNorm nodes; without it torch folds them into the convolutions, as a default export does."""
    buf = io.BytesIO()
    kw.setdefault("opset_version", 17)
    if keep_bn:
        kw["training"] = torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, **kw)
    return buf.getvalue()


def spec_model(name: str, **changes: Any) -> tuple[Any, torch.nn.Module, torch.Tensor]:
    spec = get_spec(name).replace(**changes)
    torch.manual_seed(0)
    return spec, ResNet(spec), torch.zeros(1, *spec.input_shape())


def assert_same(ours: GraphNet, graph: GraphNet) -> None:
    assert (graph.params, graph.macs, graph.flops) == (ours.params, ours.macs, ours.flops)
    assert summary(graph.units) == summary(ours.units)
    # dropout on s(x) acts only in training: an inference graph cannot show it
    want = [dataclasses.replace(u, join=dataclasses.replace(u.join, dropout=0.0)).as_row() for u in ours.units]
    assert [u.as_row() for u in graph.units] == want


SPEC_CASES = {
    "cifar_resnet20 (option A: slice and pad)": ("cifar_resnet20", {}),
    "cifar_resnet20 option C": ("cifar_resnet20", dict(shortcut="C")),
    "cifar_resnet20 gate": ("cifar_resnet20", dict(shortcut_variant="gate")),
    "cifar_resnet20 scale": ("cifar_resnet20", dict(shortcut_variant="scale", shortcut_scale=0.3,
                                                    scale_residual=True)),
    "preact resnet1d_8": ("resnet1d_8", dict(preact=True, activation="original")),
    "resnet18": ("resnet18", dict(input_size=64)),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_a_builtin_net_reads_the_same_through_onnx(case: str) -> None:
    """Params, MACs, FLOPs and every unit (names, shortcut kinds, joins, shapes, branch costs) as the
    spec path gives them: module paths come back from the node names, constants fold to numbers."""
    name, changes = SPEC_CASES[case]
    spec, model, x = spec_model(name, **changes)
    assert_same(spec_net(spec), open_onnx(onnx_bytes(model, x), f"{name}.onnx"))


def test_a_default_export_folds_batchnorm_into_its_convolutions() -> None:
    """torch's default eval-mode export has no BatchNorm: each conv carries a bias instead of BN's
    scale and shift, so the file holds one parameter fewer per channel; units and MACs are unchanged."""
    spec, model, x = spec_model("resnet18", input_size=64)
    net, ours = open_onnx(onnx_bytes(model, x, keep_bn=False)), spec_net(spec)
    assert "batch_norm" not in " ".join(net.nodes["op"])
    channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.params == ours.params - channels
    assert net.macs == ours.macs
    assert summary(net.units) == summary(ours.units) == {"units": 8, "identity": 5, "projection": 3, "pad": 0}


def tokens() -> torch.Tensor:
    return torch.zeros(1, zoo.T, 8)


ZOO = {
    "ViT (pre-norm)": (lambda: zoo.Transformer(zoo.PreNormBlock), tokens),
    "GPT (causal: a Trilu mask, folded)": (lambda: zoo.Transformer(zoo.PreNormBlock, causal=True), tokens),
    "BERT (post-norm)": (lambda: zoo.Transformer(zoo.PostNormBlock), tokens),
    "ConvNeXt (layer scale)": (zoo.ConvNeXtBlock, lambda: torch.zeros(1, 16, 8, 8)),
    "highway (gates)": (zoo.Highway, lambda: torch.zeros(2, zoo.D)),
}


@pytest.mark.parametrize("case", sorted(ZOO))
def test_transformers_and_other_nets_read_as_their_programs(case: str) -> None:
    """LayerNorm, MatMul, Softmax and attention (exported as matmuls and a softmax) convert: the
    same parameters, MACs and units as the torch original's program."""
    make, example = ZOO[case]
    torch.manual_seed(0)
    model = make()
    ours = open_program(export_module(model, (example(),)), name=case)
    net = open_onnx(onnx_bytes(model, example()), "net.onnx")
    assert (net.params, net.macs) == (ours.params, ours.macs)

    def rows(n: GraphNet) -> list[tuple[object, ...]]:
        return [(u.name, u.shortcut, u.join.label, u.post, u.branch_params, u.branch_macs, u.parent) for u in n.units]

    assert rows(net) == rows(ours) and rows(net)


class TinyGPT(torch.nn.Module):
    """Token ids in, a head tied to the embedding (``F.linear(x, wte.weight)``), as GPT-2 has it."""

    def __init__(self, vocab: int = 100) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, zoo.D)
        self.blocks = torch.nn.Sequential(*(zoo.PreNormBlock(causal=True) for _ in range(2)))
        self.ln = torch.nn.LayerNorm(zoo.D)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.ln(self.blocks(self.wte(ids))), self.wte.weight)


def test_a_tied_head_stored_twice_counts_once() -> None:
    """torch's exporter stores the tied head as a transposed copy of the embedding: the file holds the
    weight twice, the net once (the record says what torch says)."""
    torch.manual_seed(0)
    model, ids = TinyGPT(), torch.zeros(1, zoo.T, dtype=torch.long)
    blob = onnx_bytes(model, ids)
    stored = {tuple(t.dims) for t in onnx.load_from_string(blob).graph.initializer}
    assert {(100, zoo.D), (zoo.D, 100)} <= stored  # the embedding and its transposed copy
    ours, net = open_program(export_module(model, (ids,)), name="gpt"), open_onnx(blob, "gpt.onnx")
    assert (net.params, net.macs, net.input_shapes) == (ours.params, ours.macs, ((1, zoo.T),))
    assert [u.name for u in net.units] == [u.name for u in ours.units] == [f"blocks.{i}[{j}]" for i in (0, 1) for j in (1, 2)]


def test_a_free_batch_becomes_one_and_other_free_sizes_need_a_shape() -> None:
    spec, model, x = spec_model("cifar_resnet20")
    batch_free = onnx_bytes(model, x, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    dims = onnx.load_from_string(batch_free).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
    net = open_onnx(batch_free)
    assert net.input_shapes == ((1, 3, 32, 32),)
    assert_same(spec_net(spec), net)

    torch.manual_seed(0)
    vit = zoo.Transformer(zoo.PreNormBlock)
    free_tokens = onnx_bytes(vit, tokens(), input_names=["x"], dynamic_axes={"x": {0: "N", 1: "T"}})
    with pytest.raises(OnnxError, match=r"input 'x' has no fixed size on axis 1 \(T\); give the input's full shape"):
        open_onnx(free_tokens)
    assert open_onnx(free_tokens, input_shape=(1, zoo.T, 8)).input_shapes == ((1, zoo.T, 8),)
    with pytest.raises(OnnxError, match=r"input shape \[1, 5\] does not fit its input 'x' of shape \['N', 'T', 8\]"):
        open_onnx(free_tokens, input_shape=(1, 5))


# ------------------------------------------------------------------------------------------ hostile
def tiny(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, opsets: dict[str, int] | None = None,
         shape: tuple[int, ...] = (1, 4)) -> onnx.ModelProto:
    """x (1x4 unless given) -> nodes -> y, opset 17 (plus ``opsets``)."""
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    graph.output[0].type.tensor_type.shape.SetInParent()  # a shape of unknown rank: the checker wants the field
    imports = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, v) for d, v in (opsets or {}).items()]
    return helper.make_model(graph, opset_imports=imports)


def linear_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    return tiny([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], [w])


def test_a_tiny_model_opens() -> None:
    """The hostile files below are this one, changed: it opens, so each refusal is the change's."""
    net = open_onnx(linear_model().SerializeToString(), "tiny.onnx")
    assert (net.params, net.macs, net.input_shapes) == (16, 16, ((1, 4),))


def test_what_is_not_onnx_is_one_sentence(tmp_path: Path) -> None:
    good = linear_model().SerializeToString()
    pt2 = b"PK\x03\x04" + bytes(range(256)) * 4
    for blob in (b"", b"hello, not a model\n" * 10, good[: len(good) // 2], pt2, bytes(range(256)) * 8):
        with pytest.raises(OnnxError, match=r"^bad\.onnx: not (an|a valid) ONNX model \(") as info:
            open_onnx(blob, "bad.onnx")
        assert isinstance(info.value, ProgramError) and isinstance(info.value, ValueError)
        assert "\n" not in str(info.value)
    with pytest.raises(OnnxError, match="no such ONNX file"):
        open_onnx(tmp_path / "missing.onnx")


def test_external_data_is_refused_and_never_read(tmp_path: Path) -> None:
    model = linear_model()
    path = tmp_path / "split.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(OnnxError, match=r"its tensor 'w' keeps its data in an external file \(weights\.bin\); .* "
                                        r"never reads files a model names"):
        open_onnx(path)
    # a location anywhere on the machine: refused by its declaration, the path never opened
    model = linear_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../../../etc/shadow")
    with pytest.raises(OnnxError, match=r"external file \(\.\./\.\./\.\./\.\./etc/shadow\)"):
        open_onnx(model.SerializeToString(), "evil.onnx")


def test_tensors_beyond_the_budget_are_refused_before_any_is_made(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """An initializer declared at 2^28 floats (1 GiB) with no data: a file of a few bytes. The budget
    refuses it from its declared size; no tensor is read, the checker never runs."""
    big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 1 << 26])
    model = tiny([helper.make_node("MatMul", ["x", "w"], ["y"])], [big])
    blob = model.SerializeToString()
    assert len(blob) < 200

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("touched before the budget refused the file")

    monkeypatch.setattr(numpy_helper, "to_array", forbidden)
    monkeypatch.setattr(onnx.checker, "check_model", forbidden)
    monkeypatch.setenv(ENV_VAR, "64M")
    with pytest.raises(OnnxError, match=r"its tensors declare 1\.0 GiB; opening it takes about 2\.4 GiB, more than "
                                        r"the memory budget of 64\.0 MiB \(set RESNET_LENS_MEMORY_BUDGET"):
        open_onnx(blob, "big.onnx")
    # and a file too large to read at all, by its size on disk
    monkeypatch.setenv(ENV_VAR, "1M")
    path = tmp_path / "large.onnx"
    path.write_bytes(b"\0" * (600 << 10))
    with pytest.raises(OnnxError, match=r"it is 600\.0 KiB; reading it takes about 1\.2 MiB, more than the memory "
                                        r"budget of 1\.0 MiB"):
        open_onnx(path)


def test_ops_it_cannot_convert_are_named() -> None:
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    model = tiny([helper.make_node("MatMul", ["x", "w"], ["h"]),
                  helper.make_node("Hardmax", ["h"], ["s"]),
                  helper.make_node("LpNormalization", ["s"], ["y"])], [w])
    with pytest.raises(OnnxError, match=r"^odd\.onnx: it uses ops ResNet Lens cannot convert: Hardmax, "
                                        r"LpNormalization; it reads the standard ONNX ops"):
        open_onnx(model.SerializeToString(), "odd.onnx")
    custom = tiny([helper.make_node("RunShell", ["x"], ["y"], domain="com.example")], [], opsets={"com.example": 1})
    with pytest.raises(OnnxError, match=r"cannot convert: com\.example:RunShell \(a custom domain, never run\)"):
        open_onnx(custom.SerializeToString(), "custom.onnx")
    # refused while the graph is traced: SAME padding of a 3x3 map by a 2x2 window pads one side only,
    # which an average that leaves padding out of its count cannot do in torch
    pool = tiny([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER")], [],
                shape=(1, 1, 3, 3))
    with pytest.raises(OnnxError, match=r"^pool\.onnx: it uses ops ResNet Lens cannot convert: AveragePool "
                                        r"\(asymmetric padding that is not counted\)$"):
        open_onnx(pool.SerializeToString(), "pool.onnx")


def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The op type of every node the converter folds with ONNX's reference evaluator, as it happens."""
    seen: list[str] = []
    evaluate = onnxnet._Converter._evaluate

    def spy(self: onnxnet._Converter, node: onnx.NodeProto) -> list[np.ndarray]:
        seen.append(node.op_type)
        return evaluate(self, node)

    monkeypatch.setattr(onnxnet._Converter, "_evaluate", spy)
    return seen


def filled(shape: list[int], fill: float = 1.0) -> list[onnx.NodeProto]:
    """``c`` = a ConstantOfShape of ``shape``: a constant of any size from a few bytes of file."""
    return [helper.make_node("Constant", [], ["s"], value=helper.make_tensor("sv", TensorProto.INT64, [len(shape)], shape)),
            helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("f", TensorProto.FLOAT, [1], [fill]))]


BOMBS = {  # op over ConstantOfShape operands: a few hundred bytes that the reference evaluator ran for minutes
    "MaxPool": lambda: [helper.make_node("MaxPool", ["c"], ["e"], kernel_shape=[3, 3], pads=[1] * 4)],
    "Conv": lambda: [helper.make_node("Conv", ["c", "c"], ["e"], pads=[1] * 4)],
    "Einsum": lambda: [helper.make_node("Einsum", ["c", "c"], ["e"], equation="ijkl,mnop->")],
    "MatMul": lambda: [helper.make_node("MatMul", ["c", "c"], ["e"])],
}


@pytest.mark.parametrize("op", sorted(BOMBS))
def test_constant_folding_never_runs_convolutions_pools_or_products(monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    """Only shape arithmetic is folded: an op whose work is more than its sizes (a 63x63 max pool over a
    512x512 ConstantOfShape: 358 bytes, 328 s to fold) is converted to torch instead, and costed."""
    seen = evaluated(monkeypatch)
    nodes = [*filled([1, 1, 3, 3]), *BOMBS[op](), helper.make_node("ReduceSum", ["e"], ["r"], keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    net = open_onnx(tiny(nodes, [], shape=(1,)).SerializeToString(), "bomb.onnx")
    assert op not in seen and "ConstantOfShape" in seen  # the small operand is folded, the op is not
    assert net.params == 0 and net.macs == (81 if op == "Conv" else 27 if op == "MatMul" else 0)


@pytest.mark.parametrize("limit, value, folds", [("FOLD_LIMIT", 8, 0), ("FOLD_WORK", 16, 0),
                                                  ("FOLD_WORK_TOTAL", 30, 1), ("FOLD_WORK", 1 << 18, 2)])
def test_constants_too_large_to_fold_are_made_by_torch(monkeypatch: pytest.MonkeyPatch, limit: str, value: int,
                                                       folds: int) -> None:
    """Two 4x4 ConstantOfShape (16 elements out, 2 in): each is folded only within the size of a folded
    value (FOLD_LIMIT), the work of one fold (FOLD_WORK) and of all of them (FOLD_WORK_TOTAL); the
    others are made by torch as the module runs. The net reads the same either way."""
    monkeypatch.setattr(onnxnet, limit, value)
    seen = evaluated(monkeypatch)
    nodes = [*filled([4, 4]), helper.make_node("ConstantOfShape", ["s"], ["d"]),  # zeros, the default fill
             helper.make_node("Add", ["x", "c"], ["h"]), helper.make_node("Mul", ["h", "d"], ["y"])]
    net = open_onnx(tiny(nodes, [], shape=(4, 4)).SerializeToString(), "filled.onnx")
    assert seen.count("ConstantOfShape") == folds
    assert (net.params, net.macs, list(net.nodes["op"]).count("full")) == (0, 0, 2 - folds)


def test_a_range_too_large_to_fold_is_made_by_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxnet, "FOLD_WORK", 4)
    bounds = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n + "v", TensorProto.INT64, [], [v]))
              for n, v in (("a", 0), ("b", 4), ("d", 1))]
    nodes = [*bounds, helper.make_node("Range", ["a", "b", "d"], ["r"]),
             helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "f"], ["y"])]
    net = open_onnx(tiny(nodes, []).SerializeToString(), "range.onnx")
    assert "arange" in set(net.nodes["op"]) and net.params == 0


def test_a_causal_mask_too_large_to_fold_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long context's mask (Expand, Trilu, Equal, Where over tokens x tokens) is past FOLD_WORK: it is
    converted instead (1024 tokens: 2^20 elements), and the net reads as its program still does."""
    monkeypatch.setattr(onnxnet, "FOLD_WORK", zoo.T * zoo.T)  # the mask's Trilu reads and writes twice this
    seen = evaluated(monkeypatch)
    torch.manual_seed(0)
    model = zoo.Transformer(zoo.PreNormBlock, causal=True)
    net = open_onnx(onnx_bytes(model, tokens()), "gpt.onnx")
    assert "Trilu" not in seen and "tril" in set(net.nodes["op"])
    ours = open_program(export_module(model, (tokens(),)), name="gpt")
    assert (net.params, net.macs) == (ours.params, ours.macs)
    assert [u.as_row() for u in net.units] == [u.as_row() for u in ours.units]


def test_weights_that_are_each_others_transposes_are_found_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tied weights are looked up by a digest of their values: each stored weight is read a bounded number
    of times, not once per weight of the mirrored shape (200 pairs: 80,000 reads)."""
    rng = np.random.default_rng(0)
    pairs = 200
    inits = [numpy_helper.from_array(rng.random(shape, dtype=np.float32), f"{c}{i}")
             for i in range(pairs) for c, shape in (("a", (2, 3)), ("b", (3, 2)))]
    nodes = [helper.make_node("Concat", [f"{c}{i}" for i in range(pairs)], [f"{c}s"], axis=0) for c in "ab"]
    nodes += [helper.make_node("ReduceSum", [f"{c}s"], [f"{c}r"], keepdims=0) for c in "ab"]
    nodes += [helper.make_node("Add", ["x", "ar"], ["h"]), helper.make_node("Add", ["h", "br"], ["y"])]
    reads = []
    read = onnxnet._Converter._read

    def counted(self: onnxnet._Converter, name: str) -> np.ndarray:
        reads.append(name)
        return read(self, name)

    monkeypatch.setattr(onnxnet._Converter, "_read", counted)
    open_onnx(tiny(nodes, inits, shape=(1,)).SerializeToString(), "many.onnx")
    assert max(reads.count(n) for n in set(reads)) <= 2


def test_constant_weights_are_never_taken_for_tied_ones() -> None:
    """All-ones matrices are each other's transposes by accident; two random ones stored as a weight and
    its transpose are one weight (as torch's exporter writes a tied head)."""

    def net(b: np.ndarray, a: np.ndarray) -> GraphNet:
        inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(a, "a")]
        nodes = [helper.make_node("MatMul", ["x", "b"], ["h"]), helper.make_node("MatMul", ["h", "a"], ["y"])]
        return open_onnx(tiny(nodes, inits, shape=(1, 3)).SerializeToString(), "pair.onnx")

    assert net(np.ones((3, 2), np.float32), np.ones((2, 3), np.float32)).params == 12
    b = np.random.default_rng(0).random((3, 2), dtype=np.float32)
    assert net(b, np.ascontiguousarray(b.T)).params == 6


def test_a_negative_dimension_is_refused_before_it_offsets_a_large_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor declaring -2^28 floats would cancel one declaring 2^28 in the budget's sum."""
    big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 1 << 26])
    neg = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[-4, 1 << 26])
    model = tiny([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "v"], ["y"])], [big, neg])

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("touched before the file was refused")

    monkeypatch.setattr(numpy_helper, "to_array", forbidden)
    monkeypatch.setattr(onnx.checker, "check_model", forbidden)
    monkeypatch.setenv(ENV_VAR, "64M")
    with pytest.raises(OnnxError, match=r"^neg\.onnx: its tensor 'v' declares a negative dimension \[-4, 67108864\]$"):
        open_onnx(model.SerializeToString(), "neg.onnx")


def test_long_name_scopes_are_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's scopes are parsed only when short: a 5 MB literal took 2.35 GB to parse. The name says
    where the node is instead."""

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("parsed")

    node = helper.make_node("Relu", ["a"], ["b"], name="/layer1/conv1/Relu")
    helper.set_metadata_props(node, {"pkg.torch.onnx.name_scopes": "['" + "a', '" * 300_000 + "']"})
    monkeypatch.setattr(ast, "literal_eval", forbidden)
    monkeypatch.setattr(json, "loads", forbidden)
    assert module_path(node) == "layer1.conv1"


def test_module_paths_come_from_either_exporters_names() -> None:
    node = helper.make_node("Relu", ["a"], ["b"], name="/layer1/layer1.0/relu_1/Relu")
    assert module_path(node) == "layer1.0.relu_1"
    assert module_path(helper.make_node("Relu", ["a"], ["b"], name="Relu_3")) == ""
    scoped = helper.make_node("Relu", ["a"], ["b"], name="node_relu_1")
    # as torch writes it (repr of a list): each module's path, then the graph node's own name
    helper.set_metadata_props(scoped, {"pkg.torch.onnx.name_scopes": "['', 'blocks', 'blocks.0', 'attn', 'linear_2']"})
    assert module_path(scoped) == "blocks.0.attn"
    helper.set_metadata_props(scoped, {"pkg.torch.onnx.name_scopes": '["", "blocks", "0", "mlp", "relu"]'})  # JSON
    assert module_path(scoped) == "blocks.0.mlp"


def test_a_folded_option_a_net_keeps_its_zero_pad_units() -> None:
    """With BN folded, a basic branch (conv, relu, conv) is as long as option A's shortcut (slice, slice,
    pad): the tie goes to the path without weights as the shortcut (it went the other way: 7 units of 9)."""
    spec, model, x = spec_model("cifar_resnet20")
    net = open_onnx(onnx_bytes(model, x, keep_bn=False), "r20_folded.onnx")
    assert summary(net.units) == {"units": 9, "identity": 7, "projection": 0, "pad": 2}


def test_cli_units_of_an_onnx_file(tmp_path: Path) -> None:
    spec, model, x = spec_model("cifar_resnet20")
    path = tmp_path / "r20.onnx"
    path.write_bytes(onnx_bytes(model, x))
    out = subprocess.run([sys.executable, "-m", "analysis", "units", "--model", str(path), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    doc = json.loads(out.stdout)
    assert (doc["params"], doc["macs"]) == (269_722, 40_551_040)
    assert [u["shortcut"] for u in doc["units"]].count("pad") == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(OnnxError, match="bad.onnx: not an ONNX model"):
        sources.open_net(str(bad))  # what the CLI calls: its errors are LensErrors, shown as one line


def test_the_converter_covers_what_it_says() -> None:
    assert {"Conv", "BatchNormalization", "Relu", "Add", "Gemm", "MatMul", "Softmax", "LayerNormalization",
            "MaxPool", "GlobalAveragePool", "Reshape", "Transpose", "Pad", "Slice"} <= onnxnet.SUPPORTED_OPS


def data_props(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The data_prop flag of every shape inference the converter runs."""
    seen: list[bool] = []
    real = onnx.shape_inference.infer_shapes

    def spy(model: onnx.ModelProto, *args: Any, **kwargs: Any) -> onnx.ModelProto:
        seen.append(bool(kwargs.get("data_prop")))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    return seen


def range_model(limit: int) -> onnx.ModelProto:
    bounds = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("a", 0), ("b", limit), ("d", 1))]
    nodes = [helper.make_node("Range", ["a", "b", "d"], ["r"]),
             helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT), helper.make_node("Add", ["f", "x"], ["y"])]
    return tiny(nodes, bounds, shape=(1,))


def test_a_long_range_is_never_data_propagated(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX's data propagation makes a record per element of a Range (2^26 of them took 14.6 GB): a
    Range past FOLD_LIMIT is inferred without it; a short one keeps it."""
    seen = data_props(monkeypatch)
    try:
        open_onnx(range_model(1 << 26).SerializeToString(), "range.onnx")
    except OnnxError:
        pass  # refused is as good as converted: what matters is that nothing was propagated
    assert seen and not any(seen)
    seen.clear()
    open_onnx(range_model(8).SerializeToString(), "short.onnx")
    assert seen and all(seen)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Pad"])
def test_other_ops_that_grow_propagated_data_are_bounded(monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    seen = data_props(monkeypatch)
    big = numpy_helper.from_array(np.array([1 << 26], dtype=np.int64), "s")
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "c")
    node = (helper.make_node(op, ["s"], ["e"]) if op == "ConstantOfShape" else
            helper.make_node(op, ["c", "s"], ["e"]) if op != "Pad" else
            helper.make_node(op, ["c", "p"], ["e"]))
    pads = numpy_helper.from_array(np.array([0, 1 << 26], dtype=np.int64), "p")
    nodes = [node, helper.make_node("Cast", ["e"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "x"], ["y"])]
    try:
        open_onnx(tiny(nodes, [big, one, pads], shape=(1,)).SerializeToString(), f"{op}.onnx")
    except OnnxError:
        pass
    assert seen and not any(seen)


def test_a_range_from_a_long_input_is_never_data_propagated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Position ids, Range(0, Shape(x)[1]), with a long sequence given as the input shape."""
    seen = data_props(monkeypatch)
    i64 = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
             helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
             helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "posf"], ["y"])]
    model = tiny(nodes, i64)
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "seq"
    try:
        open_onnx(model.SerializeToString(), "pos.onnx", input_shape=(1, 1 << 21))
    except OnnxError:
        pass
    assert seen and not any(seen)


def test_too_many_nodes_are_refused_before_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxnet, "NODES_MAX", 3)
    monkeypatch.setattr(onnx.checker, "check_model", lambda *a, **k: pytest.fail("checked"))
    nodes = [helper.make_node("Relu", ["x" if k == 0 else f"h{k}"], [f"h{k + 1}" if k < 3 else "y"]) for k in range(4)]
    with pytest.raises(OnnxError, match=r"it has 4 nodes, more than the 3 ResNet Lens opens$"):
        open_onnx(tiny(nodes, []).SerializeToString(), "many.onnx")


def test_an_input_too_large_to_make_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example input is a real tensor: one past EXAMPLE_MAX bytes is refused before conversion."""
    monkeypatch.setattr(onnxnet, "EXAMPLE_MAX", 8)  # the 1x4 float input takes 16 bytes
    monkeypatch.setattr(onnxnet, "_Converter", lambda *a, **k: pytest.fail("converted"))
    with pytest.raises(OnnxError, match=r"its input \(\[1, 4\]\) takes 16 B?, more than the 8 B? ResNet Lens makes"):
        open_onnx(linear_model().SerializeToString(), "big.onnx")
