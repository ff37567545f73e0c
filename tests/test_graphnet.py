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
import logging
import pickle
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torchinfo
from torch.export import ExportedProgram

from analysis.arch.graphnet import (
    GraphNet,
    ProgramError,
    export_module,
    load_program,
    no_unit_reason,
    open_program,
    quiet_torch,
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


def exported_program(spec_name: str, **changes: object) -> tuple[GraphNet, ExportedProgram]:
    """(the spec path's record, the program of the same net exported on meta: no weights allocated)."""
    spec = get_spec(spec_name).replace(**changes)
    with torch.device("meta"):
        model = ResNet(spec)
    return spec_net(spec), export_module(model, (torch.zeros(1, *spec.input_shape(), device="meta"),))


def exported(spec_name: str, **changes: object) -> tuple[GraphNet, GraphNet]:
    """(the spec path's record, the generic path's record of the same net exported on meta)."""
    ours, ep = exported_program(spec_name, **changes)
    return ours, open_program(ep, name=ours.name)


def decomposed(ep: ExportedProgram) -> ExportedProgram:
    """``ep.run_decompositions()``: core ATen, as a user may have saved it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, not ours
        return ep.run_decompositions()


def assert_same(ours: GraphNet, graph: GraphNet) -> None:
    assert (graph.params, graph.macs, graph.flops) == (ours.params, ours.macs, ours.flops)
    assert summary(graph.units) == summary(ours.units)
    # dropout on s(x) acts only while training: an eval-mode program cannot show it
    want = [dataclasses.replace(u, join=dataclasses.replace(u.join, dropout=0.0)) for u in ours.units]
    assert [u.as_row() for u in graph.units] == [u.as_row() for u in want]
    # the whole join, the ops after the add included: the graph's post and after are one reading
    assert [u.join for u in graph.units] == [u.join for u in want]


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


def test_what_follows_the_add_is_one_record() -> None:
    """A unit's join.after is what follows its add (BERT's LayerNorm included, a registered op kind) and
    its post is read off it, for a graph's units and a spec's alike."""
    from analysis.arch.ops import Flow, Op, make_layer
    from analysis.core.errors import SpecError

    bert = opened(zoo.Transformer(zoo.PostNormBlock), tokens())
    assert [u.join.after for u in bert.units] == [(Op(f"ln{j}", "layer_norm", zoo.D, zoo.D, dims=1),)
                                                  for _ in range(2) for j in (1, 2)]
    assert [u.post for u in bert.units] == ["layer_norm"] * 4
    unit = dataclasses.replace(bert.units[0], join=dataclasses.replace(bert.units[0].join, after=()))
    assert unit.post == "" and unit.as_row()["after"] == ""
    ours, theirs = exported("cifar_resnet20", activation="bn_after_add")
    assert [u.post for u in ours.units] == [u.post for u in theirs.units] == ["bn,relu"] * 9
    assert theirs.units[0].join.after == ours.units[0].join.after == (Op("bn2", "bn", 16, 16), Op("relu", "relu", 16, 16))
    ln = Op("ln1", "layer_norm", zoo.D, zoo.D)
    layer = make_layer(ln)
    assert isinstance(layer, torch.nn.LayerNorm) and layer.normalized_shape == (zoo.D,)
    assert ln.weight_count == sum(p.numel() for p in layer.parameters()) == 2 * zoo.D
    assert ln.state_shapes() == [(k, tuple(v.shape)) for k, v in layer.state_dict().items()]
    with pytest.raises(SpecError, match="no column for a LayerNorm"):  # refused, never under-counted
        ln.rule.counts(ln, Flow(zoo.D, (zoo.T,)), ln.rule.out(ln, Flow(zoo.D, (zoo.T,))))


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
    "ConvNeXt (γ viewed)": (lambda: zoo.ConvNeXtBlock(nchw_scale=True), lambda: torch.zeros(1, 16, 8, 8),
                            [("(net)", "identity", "s + γ·F", "")], None),
    "MobileNetV2": (zoo.MobileNetTail, lambda: torch.zeros(1, 16, 8, 8),
                    [("features.1", "identity", "+", ""), ("features.3", "identity", "+", "")], None),
    "squeeze-excitation": (zoo.SqueezeExcite, lambda: torch.zeros(1, 16, 8, 8), [], "multiplicative gates"),
    "DenseNet": (zoo.DenseBlock, lambda: torch.zeros(1, 8, 8, 8), [], "concatenation"),
    "U-Net (concat)": (lambda: zoo.UNet(additive=False), lambda: torch.zeros(1, 3, 8, 8), [], "concatenation"),
    "U-Net (added)": (lambda: zoo.UNet(additive=True), lambda: torch.zeros(1, 3, 8, 8),
                      [("(net)", "identity", "+", "")], None),
    "highway": (zoo.Highway, lambda: torch.zeros(2, zoo.D), [("(net)", "identity", "(1−g)·s + g·F", "")], None),
    "RoR (nested)": (zoo.ResidualOfResidual, lambda: torch.zeros(1, 8, 6, 6),
                     [(n, "identity", "+", "") for n in ("group.0.sub", "group.0", "group.1.sub", "group.1", "(net)")],
                     None),
    "x + bias": (zoo.PlusBias, lambda: torch.zeros(2, zoo.D), [], "no add joins"),
    "GELU written out": (zoo.TanhGELUMLP, lambda: torch.zeros(2, zoo.D), [], "no add joins"),
}


# the innermost unit whose branch holds each unit's add (none elsewhere in the zoo: a transformer's MLP
# unit follows its attention unit, it does not sit inside it)
PARENTS = {"RoR (nested)": {"group.0.sub": "group.0", "group.0": "(net)", "group.1.sub": "group.1",
                            "group.1": "(net)", "(net)": None}}


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_units(case: str) -> None:
    make, example, units, reason = ZOO[case]
    model = make()
    net = opened(model, example())
    assert [(u.name, u.shortcut, u.join.label, u.post) for u in net.units] == units
    assert [u.parent for u in net.units] == [PARENTS.get(case, {}).get(u.name) for u in net.units]
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


def test_units_inside_another_units_branch_name_the_innermost_as_parent() -> None:
    """RoR three deep: a sub-block sits in its block's branch and in the group's; its parent is the block."""
    net = opened(zoo.ResidualOfResidual(), torch.zeros(1, 8, 6, 6))
    units = {u.name: u for u in net.units}
    assert {name: u.parent for name, u in units.items()} == PARENTS["RoR (nested)"]
    # each branch holds the units nested in it: a block's is its sub-block and two 1x1 convs, the group's both blocks
    conv1x1, conv3x3 = 8 * 8 + 8, 9 * 8 * 8 + 8
    assert units["group.0.sub"].branch_params == units["group.1.sub"].branch_params == conv3x3
    assert units["group.0"].branch_params == units["group.1"].branch_params == 2 * conv1x1 + conv3x3
    assert units["(net)"].branch_params == 2 * (2 * conv1x1 + conv3x3) == net.params


def test_a_transposed_conv_counts_its_macs() -> None:
    """U-Net's ConvTranspose2d(16, 8, 2, stride 2) on 16 x 4 x 4: every input element feeds 8 x 2 x 2
    outputs (its weight is C_in x C_out x k x k), in the exported and in the decomposed form."""
    ep = export_module(zoo.UNet(additive=True), (torch.zeros(1, 3, 8, 8),))
    for net in (open_program(ep), open_program(decomposed(ep))):
        up = net.by_module().set_index("module").loc["up"]
        assert (up["params"], up["macs"], up["flops"]) == (16 * 8 * 4 + 8, 16 * 16 * 8 * 4,
                                                         2 * 16 * 16 * 8 * 4 + 8 * 8 * 8)


# ------------------------------------------------------------------------- run_decompositions()
def attention_extra(causal: bool) -> int:
    """FLOPs a decomposed zoo transformer (2 blocks) shows beyond its exported program, by design:
    scaled_dot_product_attention counts 4 FLOPs per score for scale, max, exp and normalise; its
    math decomposition scales q and k by √scale each instead (B·H·(L+S)·E multiplies, counted as the
    muls they are), and a causal one builds its L x S mask (a subtraction per entry) and adds it to
    the scores (B·H·L·S). Every other op counts the same in both forms."""
    b, h, t, e = 1, 4, zoo.T, zoo.D // 4
    per_block = b * h * (t + t) * e + (t * t + b * h * t * t if causal else 0)
    return 2 * per_block


DECOMPOSED_EXTRA = {"ViT (pre-norm)": attention_extra(False), "BERT (post-norm)": attention_extra(False),
                    "GPT (causal)": attention_extra(True)}


def costed(net: GraphNet) -> dict[str, tuple[int, int]]:
    """(params, MACs) per module, modules with neither left out (a view's module may vanish)."""
    rows = net.by_module().itertuples()
    return {r.module: (int(r.params), int(r.macs)) for r in rows if r.params or r.macs}


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_nets_read_the_same_after_run_decompositions(case: str) -> None:
    """Batch norm as _native_batch_norm_legit_no_training + getitem, pooling as mean.dim, 1 − g as
    sub(1, g), linear as permute + addmm, LayerNorm as native_layer_norm, attention as bmm and _softmax."""
    make, example, _, reason = ZOO[case]
    ep = export_module(make(), (example(),))
    net, dec = open_program(ep, name=case), open_program(decomposed(ep), name=case)
    assert set(dec.nodes["op"]) != set(net.nodes["op"])  # the decomposition did change the graph
    assert (dec.params, dec.macs, dec.flops) == (net.params, net.macs, net.flops + DECOMPOSED_EXTRA.get(case, 0))
    assert costed(dec) == costed(net)
    assert dec.units == net.units  # every field: names, shortcuts, joins and what follows them, parents, costs
    if reason:
        assert reason in no_unit_reason(dec)


DECOMPOSED_BUILTINS = {
    "cifar_resnet20": ("cifar_resnet20", {}), "resnet18": ("resnet18", {}),
    "preact": ("cifar_resnet20", dict(preact=True)), "gate": ("cifar_resnet20", dict(shortcut_variant="gate")),
    "BN after add": ("cifar_resnet20", dict(activation="bn_after_add")),
    "option A": ("cifar_resnet20", dict(shortcut="A", activation="original")),
    "resnet1d_8": ("resnet1d_8", {}), "vdcnn9": ("vdcnn9", {}),
}


@pytest.mark.parametrize("case", sorted(DECOMPOSED_BUILTINS))
def test_builtin_nets_read_the_same_after_run_decompositions(case: str) -> None:
    """The decomposed program of a built-in (exported on meta) against the spec path itself."""
    name, changes = DECOMPOSED_BUILTINS[case]
    ours, ep = exported_program(name, **changes)
    dec = open_program(decomposed(ep), name=ours.name)
    assert "_native_batch_norm_legit_no_training" in set(dec.nodes["op"])
    assert_same(ours, dec)


# ---------------------------------------------------------------------------------- torch's noise
def test_data_dependent_control_flow_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"could not trace it .*branches on tensor values: rewrite the branch "
                                          r"with torch.cond"):
        export_module(zoo.DataDependent(), (torch.zeros(2, zoo.D),))


def torch_handlers() -> dict[logging.Handler, list[object]]:
    loggers = [lg for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger) and name.split(".", 1)[0] == "torch"]
    return {h: list(h.filters) for lg in [logging.getLogger(), *loggers] for h in lg.handlers}


def test_cli_export_failure_is_one_sentence() -> None:
    """The command line owns its process: torch's partial graph and warnings stay off its stderr."""
    out = subprocess.run([sys.executable, "-m", "analysis", "units", "--module", "tests.zoo:DataDependent",
                          "--input-shape", f"2,{zoo.D}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "could not trace it" in out.stderr, out.stderr


def test_a_failed_export_prints_nothing_of_torchs_and_restores_what_it_silenced(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """torch logs a symbolic-shapes warning and prints the partial graph to stderr before raising;
    only our one-sentence error remains, and stderr, showwarning and torch's handlers are as before."""
    shapes = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    shapes.addHandler(caplog.handler)  # torch's loggers do not propagate: listen where torch logs
    try:
        stderr, showwarning, handlers = sys.stderr, warnings.showwarning, torch_handlers()
        capfd.readouterr()
        with pytest.raises(ConfigError, match="could not trace it"), quiet_torch():
            export_module(zoo.DataDependent(), (torch.zeros(2, zoo.D),))
        out, err = capfd.readouterr()
        assert (out, err) == ("", "")
        assert [r.getMessage() for r in caplog.records if r.name.startswith("torch")] == []
        assert sys.stderr is stderr and warnings.showwarning is showwarning
        assert torch_handlers() == handlers
    finally:
        shapes.removeHandler(caplog.handler)


def testquiet_torch_silences_its_own_thread_only() -> None:
    """Process-wide streams, touched for the exporting thread alone: a server's other sessions still
    print and warn while one exports."""
    real = io.StringIO()
    stderr = sys.stderr
    sys.stderr = real
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_torch():
                print("mine", file=sys.stderr)
                warnings.warn("my warning", UserWarning, stacklevel=1)
                other = threading.Thread(target=lambda: (print("theirs", file=sys.stderr),
                                                         warnings.warn("their warning", UserWarning, stacklevel=1)))
                other.start()
                other.join()
            assert sys.stderr is real
    finally:
        sys.stderr = stderr
    assert real.getvalue() == "theirs\n"
    assert [str(w.message) for w in seen] == ["their warning"]


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


def test_a_weight_file_emptied_to_declare_a_huge_tensor_is_refused_before_loading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.export.load makes torch.zeros(declared size) for an empty weight file: a 6 KB archive could
    declare gigabytes (review finding). The declared storage counts against the budget first."""
    path = tmp_path / "lin.pt2"
    torch.export.save(export_module(torch.nn.Linear(4, 4), (torch.zeros(1, 4),)), path)
    with zipfile.ZipFile(path) as z:
        (weight,) = [n for n in z.namelist() if n.endswith("weights/weight_0")]
    emptied = tmp_path / "emptied.pt2"
    emptied.write_bytes(rewritten(path, weight, b""))

    def declare(doc: dict) -> None:  # type: ignore[type-arg]
        meta = doc["config"]["weight"]["tensor_meta"]
        meta["sizes"], meta["strides"] = [{"as_int": 2**27}], [{"as_int": 1}]

    evil = _edited_json(emptied, "model_weights_config.json", declare)
    loaded = []
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr("analysis.arch.graphnet.memory_budget", lambda: 64 * 2**20)
    with pytest.raises(ProgramError, match=r"declares tensors of 512.0 MiB beyond its files"):
        load_program(evil, "evil.pt2")
    assert not loaded
    # the same file within a budget that holds it is not refused for it (an honest weight file counts once)
    monkeypatch.setattr("analysis.arch.graphnet.memory_budget", lambda: 2**30)
    load_program(evil, "evil.pt2")
    assert loaded == [1]


@pytest.mark.parametrize("field, planted", [
    ("name", "x=__import__('pathlib').Path(MARKER).touch()"),  # torch pastes node names into Python source
    ("target", "torch.os.system"),
    ("parameter_name", "__class__.__init__"),
])
def test_a_program_naming_code_where_torch_writes_names_is_refused(tmp_path: Path, field: str, planted: str) -> None:
    marker = tmp_path / "ran"
    path = saved(tmp_path)
    planted = planted.replace("MARKER", repr(str(marker)))

    def plant(doc: dict) -> None:  # type: ignore[type-arg]
        todo: list[object] = [doc]
        while todo:  # the first occurrence of the field gets the planted text
            item = todo.pop(0)
            if isinstance(item, dict):
                if isinstance(item.get(field), str):
                    item[field] = planted
                    return
                todo.extend(item.values())
            elif isinstance(item, list):
                todo.extend(item)

    evil = _edited_json(path, "models/model.json", plant)
    with pytest.raises(ProgramError, match="where torch writes an identifier, an ATen operator or a module path"):
        load_program(evil, "evil.pt2")
    assert not marker.exists()


def test_json_nested_past_the_parsers_stack_is_one_sentence(tmp_path: Path) -> None:
    deep = rewritten(saved(tmp_path), "models/model.json", b"[" * 200_000)
    with pytest.raises(ProgramError, match="is not valid JSON"):
        load_program(deep, "deep.pt2")


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
