"""General sequences (issue: lesions, reordering and path ensembles on any residual net): a unit run twice,
two adjacent units swapped or run in parallel (y = h + F_i(h) + F_j(h), Sun et al. 2024), through a
program cut into units and through a spec-built ResNet, each equal to the net run by hand; sequences
whose shapes do not flow refused with both shapes; the swap / repeat / parallel plans; a plain net cut
at its layers, a deleted layer equal to the net with that layer replaced by the identity (Veit et al.)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.graphnet import export_module
from analysis.arch.models import ResNet, build_model
from analysis.arch.specs import custom_spec
from analysis.core.errors import ConfigError
from analysis.experiments import lesion
from analysis.experiments.chain import LayerChain, ProgramChain, Step, UnitChain, layer_candidates, run_step
from tests import zoo

D, T, IN, CLASSES = 16, 4, 6, 5  # width, tokens, input features, classes
Seq = Sequence[Step]


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, d // 2).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm (x + attn(ln(x)), x + mlp(ln(x))), or its plain twin without the two shortcuts."""

    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(D), Attention(), nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        return self.mlp(self.ln2(self.attn(self.ln1(x))))


class Net(nn.Module):
    def __init__(self, residual: bool = True, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(IN, D)
        self.blocks = nn.Sequential(*(Block(residual) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(1))


def transformer(residual: bool = True, seed: int = 0) -> tuple[Net, Tensor]:
    torch.manual_seed(seed)
    net = Net(residual).eval()
    x = torch.randn(32, T, IN, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():  # logits centred on these inputs: every class predicted, so a change shows
        net.head.bias -= net(x).mean(0)
    return net, x


def branches(net: Net) -> list[Callable[[Tensor], Tensor]]:
    """The units' branches by hand, in forward order: each block's attention, then its MLP."""
    out: list[Callable[[Tensor], Tensor]] = []
    for b in net.blocks:
        out += [lambda h, b=b: b.attn(b.ln1(h)), lambda h, b=b: b.mlp(b.ln2(h))]
    return out


def transformer_by_hand(net: Net, x: Tensor, seq: Seq) -> Tensor:
    fs = branches(net)
    with torch.inference_mode():
        h = net.embed(x)
        for i, keep in seq:
            if isinstance(i, tuple):
                h = h + fs[i[0]](h) + fs[i[1]](h)
            else:
                h = h + fs[i](h) if keep else h
        return net.head(net.norm(h).mean(1))


def through(chain: UnitChain, x: Tensor, seq: Seq) -> Tensor:
    with torch.inference_mode():
        h = chain.stem(x)
        for step in seq:
            h = run_step(chain, step, h)
        return chain.head(h)


# the sequences under test, on 6 units (3 blocks x attention, MLP)
SEQS6 = {
    "repeat 2": [(0, True), (1, True), (2, True), (2, True), (3, True), (4, True), (5, True)],
    "repeat last": [(i, True) for i in range(6)] + [(5, True)],
    "swap 1-2": [(0, True), (2, True), (1, True), (3, True), (4, True), (5, True)],
    "parallel 0-1": [((0, 1), True), (2, True), (3, True), (4, True), (5, True)],
    "parallel 3-4": [(0, True), (1, True), (2, True), ((3, 4), True), (5, True)],
    "parallel, repeat, delete": [(0, True), ((1, 2), True), ((1, 2), True), (3, False), (5, True), (5, True)],
    "shorter": [(0, True), (1, True), (2, True)],
}


@pytest.fixture(scope="module")
def program() -> tuple[Net, Tensor, ProgramChain]:
    net, x = transformer()
    return net, x, ProgramChain(export_module(net, (x,)))


@pytest.mark.parametrize("name", list(SEQS6))
def test_a_program_runs_repeats_swaps_and_parallel_pairs_as_the_net_by_hand(program, name: str) -> None:
    net, x, chain = program
    assert [u.name for u in chain.units] == [f"blocks.{b}[{k}]" for b in range(3) for k in (1, 2)]
    seq = SEQS6[name]
    ours, theirs = through(chain, x, seq), transformer_by_hand(net, x, seq)
    assert torch.equal(ours, theirs)
    with torch.inference_mode():
        assert not torch.equal(ours, net(x))  # the sequence changes the net: the test can tell
    preds = lesion.predict_sequences(chain, x, [seq], batch_size=32)
    assert torch.equal(preds[0], theirs.argmax(1))


# ---------------------------------------------------------------------------------- a ResNet
def preact_spec(preact: bool = True):
    return custom_spec(block="basic", layers=(3, 2), widths=(16, 32), stem="cifar", input_size=8, in_channels=3,
                       num_classes=4, preact=preact, shortcut="A")


def resnet(preact: bool = True, seed: int = 0) -> tuple[ResNet, Tensor]:
    model = build_model(preact_spec(preact), seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # statistics and affine BN parameters away from their initial 0 / 1
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
    x = torch.randn(48, 3, 8, 8, generator=g)
    with torch.no_grad():
        model.fc.bias -= model(x).mean(0)
    return model, x


def preact_branch(b: nn.Module, h: Tensor) -> Tensor:
    """A pre-activation basic block's F by hand: BN, ReLU, conv, BN, ReLU, conv (He et al. 2016)."""
    return b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(h))))))


def resnet_by_hand(model: ResNet, x: Tensor, seq: Seq) -> Tensor:
    blocks = [model.layer1[0], model.layer1[1], model.layer1[2], model.layer2[0], model.layer2[1]]
    with torch.inference_mode():
        h = model.stem(x)
        for i, keep in seq:
            if isinstance(i, tuple):
                h = h + preact_branch(blocks[i[0]], h) + preact_branch(blocks[i[1]], h)
            elif i == 3:  # the zero-padding block: its own forward
                h = blocks[3](h, keep_residual=keep)
            else:
                h = h + preact_branch(blocks[i], h) if keep else h
        return model.head(h)


SEQS5 = {
    "repeat 1": [(0, True), (1, True), (1, True), (2, True), (3, True), (4, True)],
    "repeat last": [(0, True), (1, True), (2, True), (3, True), (4, True), (4, True)],
    "swap 0-1": [(1, True), (0, True), (2, True), (3, True), (4, True)],
    "parallel 0-1": [((0, 1), True), (2, True), (3, True), (4, True)],
    "parallel 1-2, deleted": [(0, False), ((1, 2), True), (3, True), (4, False)],
    "parallel twice, layer2.1 thrice": [((0, 2), True), ((1, 0), True), (3, True), (4, True), (4, True), (4, True)],
}


@pytest.mark.parametrize("name", list(SEQS5))
def test_a_preactivation_resnet_runs_repeats_swaps_and_parallel_pairs_as_by_hand(name: str) -> None:
    model, x = resnet()
    seq = SEQS5[name]
    chain = lesion.ResNetChain(model)
    ours, theirs = through(chain, x, seq), resnet_by_hand(model, x, seq)
    assert torch.equal(ours, theirs)
    with torch.inference_mode():
        assert not torch.equal(ours, model(x))
    for reuse in (True, False):
        preds = lesion.predict_sequences(model, x, [lesion.identity_sequence(5), seq], reuse_prefix=reuse)
        assert torch.equal(preds[1], theirs.argmax(1))


# ------------------------------------------------------------------------------------ refusals
def counting(model: ResNet) -> list[int]:
    calls: list[int] = []
    model.conv1.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(("seq", "message"), [
    ([(0, True), (3, True), (1, True), (4, True)],
     "block layer1.1 cannot run after layer2.0: it takes 16×8×8, gets 32×4×4"),
    ([(3, True), (4, True), (4, True), (0, True)], "block layer1.0 cannot run after layer2.1: it takes 16×8×8, gets 32×4×4"),
    ([(4, True)], "block layer2.1 cannot run first: it takes 32×4×4, gets 16×8×8 from the stem"),
    ([(0, True), (1, True)], "the sequence ends with 16×8×8 (after layer1.1), but the head takes 32×4×4"),
    ([(0, True), (3, True), ((4, 1), True)], "layer2.1 and layer1.1 cannot run in parallel: they take 32×4×4 and 16×8×8"),
    ([(0, True), (1, True), (2, True), (3, True), (5, True)], "block index 5 out of range: the net has blocks 0..4"),
    ([((0, 0), True), (3, True), (4, True)], "a parallel step runs two different blocks"),
    ([((0, 1), False), (3, True), (4, True)], "a parallel step is ((i, j), True)"),
    # a sequence of every position once keeps its older message, now with the shapes
    ([(0, True), (1, True), (3, True), (2, True), (4, True)],
     "block layer2.0 cannot take the place of layer1.2: shapes differ (16×8×8 → 32×4×4 and 16×8×8 → 16×8×8)"),
])
def test_a_resnet_sequence_whose_shapes_do_not_flow_is_refused_before_any_work(seq, message: str) -> None:
    model, x = resnet()
    calls = counting(model)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        lesion.predict_sequences(model, x, [lesion.identity_sequence(5), seq])
    assert calls == []
    lesion.predict_sequences(model, x[:2], [lesion.identity_sequence(5)])
    assert calls == [1]  # the hook counts: the refusal came before the stem ran


def test_a_longer_sequence_that_flows_runs() -> None:
    """Every position once is no longer required: layer2.0 may run first (it takes the stem's 16×8×8)."""
    model, x = resnet()
    seq = [(3, True), (4, True), (4, True)]
    with torch.inference_mode():
        theirs = model.head(model.layer2[1](model.layer2[1](model.layer2[0](model.stem(x)))))
    assert torch.equal(lesion.predict_sequences(model, x, [seq])[0], theirs.argmax(1))


def test_a_program_sequence_whose_shapes_do_not_flow_names_both() -> None:
    model, x = resnet(preact=False)
    chain = ProgramChain(export_module(model, (x[:2],)))
    with pytest.raises(ConfigError, match="^unit layer1.0 cannot run after layer2.0: it takes 16×8×8, gets 32×4×4$"):
        chain.check_sequence([(3, True), (0, True), (4, True)])
    with pytest.raises(ConfigError, match="^unit layer2.1 cannot run first: it takes 32×4×4, gets 16×8×8 from the stem"):
        chain.check_sequence([(4, True)])
    # every position once: the older message, both shapes named
    with pytest.raises(ConfigError, match=r"^unit layer2.0 cannot take the place of layer1.2: shapes \(16, 8, 8\)"):
        chain.check_sequence([(0, True), (1, True), (3, True), (2, True), (4, True)])
    chain.check_sequence([(0, True), (3, True), (4, True), (4, False)])  # flows: accepted


POST = re.escape("applies relu after its add (post-activation: y = relu(x + F(x))), so summing two branches onto "
                 "one input is undefined")


def test_parallel_is_refused_for_post_activation_units() -> None:
    model, x = resnet(preact=False)
    seq = [((0, 1), True), (2, True), (3, True), (4, True)]
    with pytest.raises(ConfigError, match=f"^layer1.0 and layer1.1 cannot run in parallel: layer1.0 {POST}"):
        lesion.predict_sequences(model, x, [seq])
    chain = ProgramChain(export_module(model, (x[:2],)))
    with pytest.raises(ConfigError, match=f"^layer1.0 and layer1.1 cannot run in parallel: layer1.0 {POST}"):
        chain.check_sequence(seq)
    with pytest.raises(ConfigError, match=f"^no two adjacent units of this net can run in parallel: .*{POST}"):
        lesion.plan_sweep("parallel", model)
    # a post-norm transformer: its LayerNorm follows each add
    post = ProgramChain(export_module(zoo.Transformer(zoo.PostNormBlock, depth=1).eval(), (torch.zeros(2, zoo.T, 8),)))
    with pytest.raises(ConfigError, match="cannot run in parallel: blocks.0.1. applies layer_norm after its add"):
        post.check_sequence([((0, 1), True)])
    # a shape-changing (zero-padding) block of a pre-activation net
    with pytest.raises(ConfigError, match="layer2.0 has a pad shortcut, not the identity"):
        lesion.ResNetChain(resnet()[0]).check_sequence([(0, True), (1, True), ((2, 3), True), (4, True)])
    # a pre-activation net whose shortcut is scaled (He et al. 2016's constant scaling): the paths are weighed
    scaled = build_model(preact_spec().replace(shortcut_variant="scale", shortcut_scale=0.5), seed=0).eval()
    with pytest.raises(ConfigError, match=r"layer1.0 weighs its paths \(0.5·s \+ F\)"):
        lesion.ResNetChain(scaled).check_sequence([((0, 1), True), (2, True), (3, True), (4, True)])


def test_parallel_is_refused_for_a_block_that_pools_its_input() -> None:
    """VDCNN's pooling block: its identity shortcut and its branch both start from the pooled input, so
    its branch does not add onto the input h a parallel pair shares."""
    spec = custom_spec(block="basic", layers=(2, 2), widths=(8, 8), stem="vdcnn", stem_width=8, input_size=16,
                       in_channels=1, num_classes=4, shortcut="A", dims=1, conv_bias=True, downsampling="maxpool",
                       preact=True)
    chain = lesion.ResNetChain(build_model(spec, seed=0).eval())
    assert [u.shortcut for u in chain.units] == ["identity"] * 4
    with pytest.raises(ConfigError, match="^layer1.1 and layer2.0 cannot run in parallel: layer2.0 pools its input "
                                          "before both paths"):
        chain.check_sequence([(0, True), ((1, 2), True), (3, True)])
    chain.check_sequence([((0, 1), True), (2, True), (3, True)])


# --------------------------------------------------------------------------------------- plans
def test_the_swap_repeat_and_parallel_plans_of_a_resnet() -> None:
    model, _ = resnet()
    swap = lesion.plan_sweep("swap", model, samples=0, seed=-1)  # neither read by a deterministic sweep
    assert swap.rows == [
        {"experiment": "swap", "units": "none", "index": -1, "stage": ""},
        {"experiment": "swap", "units": "layer1.0<->layer1.1", "index": 0, "stage": "layer1"},
        {"experiment": "swap", "units": "layer1.1<->layer1.2", "index": 1, "stage": "layer1"}]
    assert swap.sequences[1:] == [[(1, True), (0, True), (2, True), (3, True), (4, True)],
                                  [(0, True), (2, True), (1, True), (3, True), (4, True)]]
    assert [s.split(":")[0] for s in swap.skipped] == ["layer1.2<->layer2.0", "layer2.0<->layer2.1"]
    repeat = lesion.plan_sweep("repeat", model)
    assert [(r["units"], r["index"], r["stage"]) for r in repeat.rows] == [
        ("none", -1, ""), ("layer1.0 x2", 0, "layer1"), ("layer1.1 x2", 1, "layer1"), ("layer1.2 x2", 2, "layer1"),
        ("layer2.1 x2", 4, "layer2")]
    assert repeat.sequences[2] == [(0, True), (1, True), (1, True), (2, True), (3, True), (4, True)]
    assert repeat.sequences[4] == [(0, True), (1, True), (2, True), (3, True), (4, True), (4, True)]
    assert repeat.skipped == ("layer2.0 x2: block layer2.0 cannot run after layer2.0: it takes 16×8×8, gets 32×4×4",)
    par = lesion.plan_sweep("parallel", model)
    assert [(r["experiment"], r["units"], r["index"]) for r in par.rows] == [
        ("parallel", "none", -1), ("parallel", "layer1.0 || layer1.1", 0), ("parallel", "layer1.1 || layer1.2", 1)]
    assert par.sequences[2] == [(0, True), ((1, 2), True), (3, True), (4, True)]
    assert [s.split(":")[0] for s in par.skipped] == ["layer1.2 || layer2.0", "layer2.0 || layer2.1"]
    assert all("pad shortcut, not the identity" in s for s in par.skipped)


def test_the_new_sweeps_are_listed_and_checked_like_the_single_sweep() -> None:
    assert lesion.SWEEP_KINDS == ("single", "k", "reorder", "swap", "repeat", "parallel")
    assert set(lesion.PLANS) == set(lesion.SWEEPS) == set(lesion.SWEEP_KINDS)
    for kind in ("swap", "repeat", "parallel"):
        lesion.check_sweep_options(kind, samples=0, seed=-1)
        with pytest.raises(ConfigError, match="batch size"):
            lesion.check_sweep_options(kind, batch_size=0)
    with pytest.raises(ConfigError, match="samples per k"):
        lesion.check_sweep_options("reorder", samples=0)


@pytest.mark.parametrize("kind", ["swap", "repeat", "parallel"])
def test_a_sweep_frame_and_its_prefix_reuse(program, kind: str) -> None:
    """Columns experiment, units, index, stage, error; reusing the intact prefix predicts as running
    every sequence from the stem (repeats and parallel pairs diverge later or earlier than deletions)."""
    net, x, chain = program
    y = net(x).argmax(1)
    df = lesion.run_sweep(kind, chain, x, y, batch_size=32)
    assert list(df.columns) == ["experiment", "units", "index", "stage", "error"]
    assert df["index"].tolist() == [-1, *range(6 if kind == "repeat" else 5)]
    assert df["error"].iloc[0] == 0.0 and df["error"].iloc[1:].max() > 0
    plan = lesion.plan_sweep(kind, chain)
    model, xr = resnet()
    for net_, xs in ((chain, x), (model, xr)):
        seqs = lesion.plan_sweep(kind, net_).sequences
        fast = lesion.predict_sequences(net_, xs, seqs, batch_size=16)
        slow = lesion.predict_sequences(net_, xs, seqs, batch_size=16, reuse_prefix=False)
        assert torch.equal(fast, slow)
        assert all(not torch.equal(fast[0], row) for row in fast[1:])  # each sequence changes a prediction
    assert plan.frame(torch.zeros(len(plan.sequences), dtype=torch.long), 4).attrs == {}


@pytest.mark.parametrize(("seq", "at"), [
    ([(0, True), (1, True), (2, True)], 3), ([(0, True), (1, True), (1, True), (2, True)], 2),
    ([(0, True), (1, True), (2, True), (2, True)], 3), ([(0, True), ((1, 2), True)], 1), ([(0, True)], 1),
    ([], 0), ([(1, True), (0, True), (2, True)], 0)])
def test_the_intact_prefix_ends_where_a_sequence_leaves_the_intact_chain(seq, at: int) -> None:
    assert lesion._divergence(seq) == at


# ------------------------------------------------------------------------------ plain nets
def without(net: Net, deleted: int) -> Net:
    twin = copy.deepcopy(net)
    twin.blocks[deleted] = nn.Identity()
    return twin


@pytest.mark.parametrize("residual", [False, True])
def test_a_layer_chain_deletes_a_layer_as_the_net_with_it_replaced_by_the_identity(residual: bool) -> None:
    """A transformer and its twin without shortcuts, cut at their blocks: the same units, and deleting
    block i is running the net with block i an identity (Veit et al. 2016 delete a plain net's layers so)."""
    net, x = transformer(residual, seed=3)
    ep = export_module(net, (x,))
    assert layer_candidates(ep)["blocks"] == ["blocks.0", "blocks.1", "blocks.2"]
    chain = LayerChain(ep, layer_candidates(ep)["blocks"], name="twin")
    # a pre-norm block carries its input through (two identity units): the layer's shortcut is the identity
    kind = "identity" if residual else "none"
    assert [(u.name, u.shortcut, u.in_shape, u.out_shape) for u in chain.units] == [
        (f"blocks.{i}", kind, (T, D), (T, D)) for i in range(3)]
    assert chain.units[0].branch_params == sum(p.numel() for p in net.blocks[0].parameters())
    with torch.inference_mode():
        for i in range(3):
            ours = through(chain, x, lesion.deletion(3, [i]))
            assert torch.equal(ours, without(net, i)(x)) and not torch.equal(ours, net(x))
        b = net.blocks
        order = {"swap": ([(1, True), (0, True), (2, True)], lambda h: b[2](b[0](b[1](h)))),
                 "repeat": ([(0, True), (1, True), (1, True), (2, True)], lambda h: b[2](b[1](b[1](b[0](h))))),
                 "two deleted": ([(0, False), (1, True), (2, False)], lambda h: b[1](h))}
        for seq, by_hand in order.values():
            assert torch.equal(through(chain, x, seq), net.head(net.norm(by_hand(net.embed(x))).mean(1)))
    y = net(x).argmax(1)
    df = lesion.run_sweep("single", chain, x, y, batch_size=32)
    assert df["deleted"].tolist() == ["none", "blocks.0", "blocks.1", "blocks.2"]
    assert df["shortcut"].tolist() == ["", kind, kind, kind] and df["error"].iloc[0] == 0.0
    for sweep in ("swap", "repeat"):
        fast = lesion.predict_sequences(chain, x, lesion.plan_sweep(sweep, chain).sequences)
        slow = lesion.predict_sequences(chain, x, lesion.plan_sweep(sweep, chain).sequences, reuse_prefix=False)
        assert torch.equal(fast, slow)
    if residual:  # whole pre-norm layers run in parallel as their changes L(h) - h summed onto h
        plan = lesion.plan_sweep("parallel", chain)
        with torch.inference_mode():
            h = net.embed(x)
            h = h + (b[0](h) - h) + (b[1](h) - h)
            want = net.head(net.norm(b[2](h)).mean(1))
        assert torch.equal(through(chain, x, plan.sequences[1]), want)
    else:
        with pytest.raises(ConfigError, match="blocks.0 has no shortcut .a plain layer."):
            lesion.plan_sweep("parallel", chain)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(IN, D), nn.Linear(D, D), nn.Tanh(), nn.Linear(D, CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def test_a_layer_that_changes_the_shape_cannot_be_deleted() -> None:
    torch.manual_seed(0)
    net = MLP().eval()
    x = torch.randn(8, IN)
    ep = export_module(net, (x,))
    assert layer_candidates(ep) == {"layers": ["layers.0", "layers.1", "layers.2", "layers.3"]}
    chain = LayerChain(ep, ["layers.1", "layers.0", "layers.2"])  # any order given: the forward order kept
    assert [u.name for u in chain.units] == ["layers.0", "layers.1", "layers.2"]
    with pytest.raises(ConfigError, match=f"^layer layers.0 cannot be deleted: it takes {IN} and gives {D}, "):
        chain.check_sequence([(0, False), (1, True), (2, True)])
    with torch.inference_mode():
        h = net.layers[0](x)
        assert torch.equal(through(chain, x, [(0, True), (1, False), (2, True)]), net.layers[3](torch.tanh(h)))
    df = lesion.run_sweep("k", chain, x, net(x).argmax(1), samples=1, seed=0)  # k leaves out shape changes
    assert df["k"].tolist() == [0, 1, 2]


def test_a_layer_chain_refuses_modules_that_are_not_one_chain() -> None:
    net, x = transformer(False)
    ep = export_module(net, (x,))
    with pytest.raises(ConfigError, match="blocks.0.mlp sits inside blocks.0"):
        LayerChain(ep, ["blocks.0", "blocks.0.mlp"])
    with pytest.raises(ConfigError, match="no op of nothing.here runs on the input .repeated modules: blocks: "):
        LayerChain(ep, ["nothing.here"])
    with pytest.raises(ConfigError, match="name the modules to cut it at"):
        LayerChain(ep, [])
    rnet, rx = transformer(True)
    with pytest.raises(ConfigError, match="a long skip"):  # an attention branch reads nothing but its input, yet
        LayerChain(export_module(rnet, (rx,)), ["blocks.0.mlp", "blocks.1.mlp"])  # the add after it reads h


def test_parallel_is_refused_where_ops_run_between_a_units_input_and_its_shortcut() -> None:
    """A tanh between two blocks belongs to the next unit's segment: that unit's output is not its
    segment's input plus its branch, so it cannot join a parallel pair; the units before it can."""
    torch.manual_seed(0)
    net = Net(depth=2).eval()
    b0, b1 = net.blocks
    net.blocks = nn.Sequential(b0, nn.Tanh(), b1)
    x = torch.randn(4, T, IN)
    chain = ProgramChain(export_module(net, (x,)))
    assert [u.name for u in chain.units] == ["blocks.0[1]", "blocks.0[2]", "blocks.2[1]", "blocks.2[2]"]
    why = re.escape("cannot run in parallel: ops run between blocks.2[1]'s input and its shortcut or after its add")
    for seq in ([(0, True), ((1, 2), True), (3, True)], [(0, True), (1, True), ((2, 3), True)]):
        with pytest.raises(ConfigError, match=why):
            chain.check_sequence(seq)
    with torch.inference_mode():
        h = net.embed(x)
        h = h + b0.attn(b0.ln1(h)) + b0.mlp(b0.ln2(h))
        h = torch.tanh(h)
        h = h + b1.attn(b1.ln1(h))
        by_hand = net.head(net.norm(h + b1.mlp(b1.ln2(h))).mean(1))
        assert torch.equal(through(chain, x, [((0, 1), True), (2, True), (3, True)]), by_hand)
