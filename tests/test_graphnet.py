"""Opened nets (issue 23): residual units found in exported graphs, their costs, and the archive's safety.

The cross-check exports every built-in net (on the meta device: no weights allocated) and reads it back
through the generic graph path: parameters, MACs, FLOPs and every unit must equal what the spec path
(the net plan and the cost tracer) says. The zoo (tests/zoo.py) holds nets no spec describes, each
with the units a reader of its code would name; torchinfo counts their parameters independently.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torchinfo

from analysis.arch.graphnet import (
    GraphNet,
    ProgramError,
    export_module,
    load_program,
    no_unit_reason,
    open_program,
    spec_net,
    summary,
)
from analysis.arch.models import ResNet
from analysis.arch.specs import MODELS, get_spec
from analysis.core.errors import ConfigError
from tests import zoo

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "plain": dict(residual=False), "option A": dict(shortcut="A"), "option C": dict(shortcut="C"),
    "preact": dict(preact=True), "gate": dict(shortcut_variant="gate"),
    "shortcut gate": dict(shortcut_variant="shortcut_gate"),
    "scale": dict(shortcut_variant="scale", shortcut_scale=0.3, scale_residual=True),
    "dropout": dict(shortcut_variant="dropout", shortcut_dropout=0.3),
    "BN after add": dict(activation="bn_after_add"), "ReLU before add": dict(activation="relu_before_add"),
    "ReLU-only preact": dict(activation="relu_preact"),
}


def exported(spec_name: str, **changes: object) -> tuple[GraphNet, GraphNet]:
    """(the spec path's record, the generic path's record of the same net exported on meta)."""
    spec = get_spec(spec_name).replace(**changes)
    with torch.device("meta"):
        model = ResNet(spec)
    ep = export_module(model, (torch.zeros(1, *spec.input_shape(), device="meta"),))
    return spec_net(spec), open_program(ep, name=spec.name)


def assert_same(ours: GraphNet, graph: GraphNet) -> None:
    assert (graph.params, graph.macs, graph.flops) == (ours.params, ours.macs, ours.flops)
    assert summary(graph.units) == summary(ours.units)
    # dropout on s(x) acts only while training: an eval-mode program cannot show it
    want = [dataclasses.replace(u, join=dataclasses.replace(u.join, dropout=0.0)).as_row() for u in ours.units]
    assert [u.as_row() for u in graph.units] == want


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_builtin_net_reads_the_same_through_its_graph(name: str) -> None:
    small = {"input_size": 64} if get_spec(name).stem == "imagenet" else {}
    assert_same(*exported(name, **small))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["cifar_resnet20", "resnet1d_8"])
def test_every_variant_reads_the_same_through_its_graph(name: str, variant: str) -> None:
    changes = dict(VARIANTS[variant])
    if changes.get("shortcut") == "A" or name == "resnet1d_8" and "preact" in changes:
        changes.setdefault("activation", "original")
    assert_same(*exported(name, **changes))


def test_the_cross_check_can_fail() -> None:
    """A different net through the graph path does not pass for the spec's."""
    ours, _ = exported("cifar_resnet20")
    _, other = exported("cifar_resnet20", shortcut="C")
    with pytest.raises(AssertionError):
        assert_same(ours, other)


def opened(model: torch.nn.Module, *example: torch.Tensor) -> GraphNet:
    return open_program(export_module(model, example), name=type(model).__name__)


def tokens() -> torch.Tensor:
    return torch.zeros(1, zoo.T, 8)


ZOO = {
    # name: (model, example input, [(unit, shortcut, join, post)], no-unit words)
    "ViT (pre-norm)": (lambda: zoo.Transformer(zoo.PreNormBlock), tokens,
                       [(f"blocks.{i}[{j}]", "identity", "+", "") for i in range(2) for j in (1, 2)], None),
    "BERT (post-norm)": (lambda: zoo.Transformer(zoo.PostNormBlock), tokens,
                         [(f"blocks.{i}[{j}]", "identity", "+", "layer_norm") for i in range(2) for j in (1, 2)], None),
    "GPT (causal)": (lambda: zoo.Transformer(zoo.PreNormBlock, causal=True), tokens,
                     [(f"blocks.{i}[{j}]", "identity", "+", "") for i in range(2) for j in (1, 2)], None),
    "ConvNeXt": (zoo.ConvNeXtBlock, lambda: torch.zeros(1, 16, 8, 8), [("(net)", "identity", "s + γ·F", "")], None),
    "MobileNetV2": (zoo.MobileNetTail, lambda: torch.zeros(1, 16, 8, 8),
                    [("features.1", "identity", "+", ""), ("features.3", "identity", "+", "")], None),
    "squeeze-excitation": (zoo.SqueezeExcite, lambda: torch.zeros(1, 16, 8, 8), [], "multiplicative gates"),
    "DenseNet": (zoo.DenseBlock, lambda: torch.zeros(1, 8, 8, 8), [], "concatenation"),
    "U-Net (concat)": (lambda: zoo.UNet(additive=False), lambda: torch.zeros(1, 3, 8, 8), [], "concatenation"),
    "U-Net (added)": (lambda: zoo.UNet(additive=True), lambda: torch.zeros(1, 3, 8, 8),
                      [("(net)", "identity", "+", "")], None),
    "highway": (zoo.Highway, lambda: torch.zeros(2, zoo.D), [("(net)", "identity", "(1−g)·s + g·F", "")], None),
    "x + bias": (zoo.PlusBias, lambda: torch.zeros(2, zoo.D), [], "no add joins"),
    "GELU written out": (zoo.TanhGELUMLP, lambda: torch.zeros(2, zoo.D), [], "no add joins"),
}


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_units(case: str) -> None:
    make, example, units, reason = ZOO[case]
    model = make()
    net = opened(model, example())
    assert [(u.name, u.shortcut, u.join.label, u.post) for u in net.units] == units
    assert net.params == torchinfo.summary(model, input_data=example(), verbose=0).total_params
    if reason:
        assert reason in no_unit_reason(net)


def test_transformer_branch_costs_count_attention() -> None:
    """The attention unit's MACs: qkv (T·D·3D) + scores and mix (2·T·T·D over the heads) + proj (T·D·D)."""
    net = opened(zoo.Transformer(zoo.PreNormBlock), tokens())
    t, d = zoo.T, zoo.D
    assert net.units[0].branch_macs == t * d * 3 * d + 2 * t * t * d + t * d * d
    assert net.units[1].branch_macs == 2 * t * d * 4 * d
    assert net.units[0].branch_params == (d * 3 * d + 3 * d) + (d * d + d) + 2 * d  # qkv, proj, LayerNorm


def test_data_dependent_control_flow_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"could not trace it .*branches on tensor values: rewrite the branch "
                                          r"with torch.cond"):
        export_module(zoo.DataDependent(), (torch.zeros(2, zoo.D),))


# ---------------------------------------------------------------------------------------- archives
def saved(tmp_path: Path) -> Path:
    ep = export_module(zoo.ConvNeXtBlock(), (torch.zeros(1, 16, 8, 8),))
    path = tmp_path / "net.pt2"
    torch.export.save(ep, path)
    return path


def rewritten(path: Path, member_suffix: str, data: bytes) -> bytes:
    """The archive with the member ending in ``member_suffix`` replaced by ``data``."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith(member_suffix) else src.read(info))
    return out.getvalue()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_a_saved_program_opens_to_the_same_units(tmp_path: Path) -> None:
    path = saved(tmp_path)
    net = open_program(load_program(path), name="net.pt2")
    assert [(u.name, u.join.label) for u in net.units] == [("(net)", "s + γ·F")]


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = saved(tmp_path)
    evil = rewritten(path, "sample_inputs/model.pt", pickle.dumps(_Payload(marker)))
    with pytest.raises(ProgramError, match=r"sample_inputs/model.pt does not load as plain tensors .* refused"):
        load_program(evil, "evil.pt2")
    assert not marker.exists()


def test_archives_beyond_the_budget_and_foreign_files_are_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path)
    with monkeypatch.context() as m:
        m.setattr("analysis.arch.graphnet.memory_budget", lambda: 4096)
        with pytest.raises(ProgramError, match=r"unpacks to .* more than the memory budget of 4.0 KiB"):
            load_program(path)
    with pytest.raises(ProgramError, match="not a complete zip archive"):
        load_program(b"not a zip", "x.pt2")
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("a/b.txt", "hello")
    with pytest.raises(ProgramError, match=r"not a torch.export program \(.pt2\): no archive_format"):
        load_program(other.getvalue(), "x.pt2")
    with pytest.raises(ProgramError, match="no such program file"):
        load_program(tmp_path / "missing.pt2")


# ---------------------------------------------------------------------------------------------- CLI
def units_cli(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "analysis", "units", *args, "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_cli_units_of_a_builtin_name_and_of_its_exported_program_agree(tmp_path: Path) -> None:
    spec = get_spec("cifar_resnet20")
    from analysis.arch.models import build_model

    path = tmp_path / "r20.pt2"
    torch.export.save(export_module(build_model(spec), (torch.zeros(1, *spec.input_shape()),)), path)
    ours, theirs = units_cli("--model", "cifar_resnet20"), units_cli("--model", str(path))
    assert (ours["params"], ours["macs"]) == (theirs["params"], theirs["macs"]) == (269_722, 40_551_040)
    assert ours["units"] == theirs["units"]
    assert [u["shortcut"] for u in ours["units"]].count("pad") == 2  # type: ignore[union-attr, index]


def test_cli_units_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"junk")
    for args, words in ((["--model", str(bad)], "not a complete zip archive"),
                        (["--model", "resnet9000"], "neither a built-in net"),
                        (["--module", "os:getcwd"], "needs --input-shape")):
        out = subprocess.run([sys.executable, "-m", "analysis", "units", *args], capture_output=True, text=True,
                             cwd=ROOT)
        assert out.returncode != 0 and words in out.stderr and "Traceback" not in out.stderr


def _edited_json(path: Path, suffix: str, edit) -> bytes:  # type: ignore[no-untyped-def]
    """The archive with the JSON member ending in ``suffix`` changed by ``edit``."""
    with zipfile.ZipFile(path) as z:
        (member,) = [n for n in z.namelist() if n.endswith(suffix)]
        doc = json.loads(z.read(member))
    edit(doc)
    return rewritten(path, suffix, json.dumps(doc).encode())


def test_a_symbolic_shape_is_refused_before_sympy_can_evaluate_it(tmp_path: Path) -> None:
    """torch rebuilds a symbolic size with sympy.sympify, which runs its text as Python: review finding."""
    marker = tmp_path / "ran"
    path = saved(tmp_path)

    def plant(doc: dict) -> None:  # type: ignore[type-arg]
        values = doc["graph_module"]["graph"]["tensor_values"]
        first = next(v for v in values.values() if len(v["sizes"]) > 1)
        first["sizes"][1] = {"as_expr": {"expr_str": f"__import__('pathlib').Path({str(marker)!r}).touch() or 16",
                                         "hint": {"as_int": 16}}}

    evil = _edited_json(path, "models/model.json", plant)
    with pytest.raises(ProgramError, match=r"symbolic shapes .* export it with fixed input shapes"):
        load_program(evil, "evil.pt2")
    assert not marker.exists()


def test_pickled_weights_and_script_objects_are_checked(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        weights = [n for n in z.namelist() if "/data/weights/weight_" in n]
    # a weight marked as pickled, whose file (no .pt suffix) carries a payload
    evil = io.BytesIO(_edited_json(path, "model_weights_config.json",
                                   lambda d: next(iter(d["config"].values())).update(use_pickle=True,
                                                                                      path_name="weight_0")))
    with zipfile.ZipFile(evil) as src:
        infos = src.infolist()
        blobs = {i.filename: src.read(i) for i in infos}
    target = next(n for n in weights if n.endswith("/weight_0"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in infos:
            dst.writestr(info, pickle.dumps(_Payload(marker)) if info.filename == target else blobs[info.filename])
    with pytest.raises(ProgramError, match=r"weights/weight_0 does not load as plain tensors"):
        load_program(out.getvalue(), "evil.pt2")
    assert not marker.exists()
    custom = _edited_json(path, "model_weights_config.json",
                          lambda d: next(iter(d["config"].values())).update(path_name="custom_obj_0"))
    with pytest.raises(ProgramError, match="holds a script object"):
        load_program(custom, "custom.pt2")
    broken = _edited_json(path, "model_weights_config.json", lambda d: d.update(config=[1]))
    with pytest.raises(ProgramError, match="not the layout torch.export.save writes"):
        load_program(broken, "broken.pt2")
