"""Issue 26, item 5: the papers' own options beside ours. VDCNN with Conneau et al. 2017's head (k-max
pooling, k = 8, then fc 2048, fc 2048, fc), the dropout shortcut as He et al. 2016 define it (a Bernoulli
mask on s(x), not rescaled) beside PyTorch's inverted dropout, and the Block comparison's Fig. 5 pairing
(He et al. 2015) beside the notes'. Every expected number is written out by hand here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from analysis.arch.blockplan import head_choice, head_difference, make_plan
from analysis.arch.blocks import PAIRINGS, compare_blocks, paired_config, pairings
from analysis.arch.costs import layer_table, totals
from analysis.arch.depth import depth_summary, table1
from analysis.arch.diagrams import build_graph, to_dot
from analysis.arch.models import Block, build_model
from analysis.arch.ops import KMaxPool
from analysis.arch.specs import MODELS, custom_spec, get_spec
from analysis.core.errors import SpecError
from analysis.store.checkpoints import load_checkpoint, save_checkpoint, spec_to_dict
from analysis.studies import grid as g
from tests.helpers import numel, torchinfo_mult_adds

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ VDCNN's k-max head
def vdcnn29_body() -> int:
    """VDCNN-29's conv body as specified here (tests/test_blocks_depth.py counts it the same way):
    the stem conv with bias, 5-5-2-2 blocks of two 3-wide convs with bias and BN, projections into
    layer2-4."""
    def block(cin: int, c: int) -> int:
        return 3 * cin * c + c + 3 * c * c + c + 2 * 2 * c

    def stage(cin: int, c: int, n: int, projection: bool) -> int:
        return block(cin, c) + (n - 1) * block(c, c) + ((cin * c + 2 * c) if projection else 0)

    return (3 * 16 * 64 + 64 + stage(64, 64, 5, False) + stage(64, 128, 5, True) + stage(128, 256, 2, True)
            + stage(256, 512, 2, True))


def test_vdcnn29_with_the_papers_head_counted_by_hand():
    """512 channels x 8 kept samples -> fc 2048 -> fc 2048 -> fc 4 (AG's News), every fc with bias."""
    paper_head = 512 * 8 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 4 + 4
    gap_head = 512 * 4 + 4
    spec = get_spec("vdcnn29_kmax")
    assert (spec.name, spec.head, spec.layers) == ("vdcnn29_kmax", "kmax", (5, 5, 2, 2))
    assert totals(spec).params == vdcnn29_body() + paper_head == 16_817_604 == numel(build_model(spec))
    assert totals(get_spec("vdcnn29")).params == vdcnn29_body() + gap_head == 4_224_452
    assert head_difference(512, 4) == paper_head - gap_head == 12_593_152
    assert head_choice("gap", 512, 4) == "ours: global avg pool, fc (12,593,152 parameters fewer than the paper's)"
    # the plain twin drops the same three projections either way
    projections = (64 * 128 + 256) + (128 * 256 + 512) + (256 * 512 + 1024)
    assert totals(get_spec("plain_vdcnn29_kmax")).params == 16_817_604 - projections
    # the paper counts convolutional layers only: the head does not change the depth
    assert spec.depth == get_spec("vdcnn29").depth == 29


def test_the_kmax_head_costs_exactly_and_runs_as_traced():
    spec = get_spec("vdcnn29_kmax")
    df = layer_table(spec).set_index("id")
    head = df[df["stage"] == "head"]
    assert list(head.index) == ["kmax", "fc1", "relu", "fc2", "relu@2", "fc"]
    assert head.loc["kmax", "in_shape"] == (512, 128) and head.loc["kmax", "out_shape"] == (512 * 8, 1)
    assert [int(head.loc[n, "macs"]) for n in ("fc1", "fc2", "fc")] == [4096 * 2048, 2048 * 2048, 2048 * 4]
    # k successive maxima over L = 128 samples: 127 + 126 + ... + 120 comparisons per channel
    assert int(head.loc["kmax", "flops"]) == 512 * sum(range(120, 128)) == 505_856
    assert int(head.loc["kmax", "pool_in_elems"]) == 0  # the hook counters' pool columns leave it out
    model = build_model(spec)
    assert totals(spec).torchinfo_mult_adds == torchinfo_mult_adds(model, spec)
    # every traced op's output has the size of the module's real output, in the same order
    seen: list[tuple[str, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: seen.append((n, o[0].numel())))
             for name, m in model.named_modules() if name and not list(m.children())]
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 16, 1024, generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    traced = [(r["module"], r["out_elems"]) for r in layer_table(spec).to_dict("records")
              if r["op"] not in ("add", "scale", "sigmoid")]
    assert seen == traced and out.shape == (2, 4)
    # the field is the body's: the head's pooling sees everything, as the global pool does
    assert totals(spec).receptive_field == totals(get_spec("vdcnn29")).receptive_field


def test_kmax_pooling_keeps_the_k_largest_in_their_order():
    x = torch.tensor([[[3.0, 1, 4, 1, 5, 9, 2, 6, 5, 3],
                       [0.0, 0, 0, 2, 0, 0, 0, 0, 0, 0]]])
    # channel 0: the largest three are 9 (at 5), 6 (at 7) and the first 5 (at 4): in order 5, 9, 6;
    # channel 1: 2 and, of the tied zeros, the earliest (at 0): 0, 2
    assert KMaxPool(3)(x).flatten().tolist() == [5.0, 9.0, 6.0, 0.0, 0.0, 2.0]
    assert KMaxPool(2)(x[:, 1:]).flatten().tolist() == [0.0, 2.0]
    assert KMaxPool(3)(x).shape == (1, 6, 1)


def test_the_kmax_head_is_an_option_not_a_builtin():
    """Not in MODELS: the graph reader (the cross-check of every built-in) counts no FLOPs for the
    exported sort and gather. Stored keys keep their fields: 'head' is written only when it is not 'gap'."""
    assert "vdcnn29_kmax" not in MODELS and all(s.head == "gap" for s in MODELS.values())
    assert "head" not in spec_to_dict(get_spec("vdcnn29"))
    assert spec_to_dict(get_spec("vdcnn29_kmax"))["head"] == "kmax"
    assert get_spec("vdcnn29_kmax").with_head("gap") == get_spec("vdcnn29")
    assert get_spec("resnet1d_20_kmax").head == "kmax"
    # a custom 1-D net: a 3-wide conv stem (1 -> 8, BN), one BasicBlock of 8, the head on 8 channels x 8
    spec = custom_spec(block="basic", layers=(1,), widths=(8,), stem="cifar", stem_width=8, dims=1, in_channels=1,
                       input_size=8, num_classes=3, head="kmax")
    body = 3 * 1 * 8 + 2 * 8 + 2 * (3 * 8 * 8 + 2 * 8)
    assert totals(spec).params == body + 8 * 8 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 3 + 3 == numel(
        build_model(spec))


def test_a_kmax_checkpoint_keeps_its_head(tmp_path: Path) -> None:
    spec = get_spec("vdcnn9_kmax", input_size=64)
    path = save_checkpoint(tmp_path / "k.pt", build_model(spec, seed=1))
    ck = load_checkpoint(path)
    assert ck.spec == spec and list(ck.model.state_dict())[-6:] == [
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc.weight", "fc.bias"]


@pytest.mark.parametrize("make,message", [
    (lambda: get_spec("resnet18_kmax"), "temporal axis of a 1-D net"),
    (lambda: get_spec("vdcnn29", input_size=56).with_head("kmax"),  # ceil(56 / 8) = 7 samples left
     "the 8 largest of the last stage's 7 samples .* at least 57 samples"),
    (lambda: get_spec("vdcnn29").replace(head="max"), "head must be one of"),
])
def test_impossible_kmax_heads_are_refused(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_the_kmax_head_at_its_shortest_sequence():
    spec = get_spec("vdcnn29", input_size=57).with_head("kmax")  # ceil(57 / 8) = 8: exactly k
    assert layer_table(spec).set_index("id").loc["kmax", "in_shape"] == (512, 8)
    assert build_model(spec)(torch.zeros(1, 16, 57)).shape == (1, 4)


def test_table1_depth_and_diagrams_show_the_head():
    t = table1([get_spec("vdcnn29"), get_spec("vdcnn29_kmax")]).set_index("layer")
    assert t.loc["head", "vdcnn29"] == "average pool, 4-d fc, softmax"
    assert t.loc["head", "vdcnn29_kmax"] == "8-max pool, 2048-d fc, 2048-d fc, 4-d fc, softmax"
    summary = depth_summary(["vdcnn29", "vdcnn29_kmax"]).set_index("model")
    assert summary.loc["vdcnn29_kmax", "params"] - summary.loc["vdcnn29", "params"] == 12_593_152
    spec = get_spec("vdcnn9_kmax")
    layer = build_graph(spec, "layer")
    chain = ["layer4.0@add", "layer4.0.relu@2", "kmax", "fc1", "relu", "fc2", "relu@2", "fc"]
    assert all(layer.has_edge(a, b) and layer.edges[a, b]["kind"] == "main" for a, b in zip(chain, chain[1:], strict=False))
    assert layer.nodes["kmax"]["out_shape"] == (4096, 1)
    assert 'fc [label="head\\n4×1"' in to_dot(build_graph(spec, "stage"))
    assert 'fc [label="head: kmax·fc1·relu·fc2·relu@2·fc\\n4×1"' in to_dot(build_graph(spec, "block"))


# --------------------------------------------------------------- the dropout shortcut, two definitions
R20 = get_spec("cifar_resnet20")


def identity_block(variant: str, seed: int = 0) -> Block:
    """layer1.1 of cifar_resnet20 (16 channels, identity shortcut) with ``variant``; its masks come from
    the model's own generator, seeded here (the global RNG is not touched)."""
    model = build_model(R20.replace(shortcut_variant=variant), seed=seed)
    model.noise.manual_seed(seed)
    block = model.blocks()[1][1]
    assert block.plan.name == "layer1.1" and block.downsample is None
    return block


def weighted_shortcut(b: Block, x: torch.Tensor) -> torch.Tensor:
    """What the shortcut adds at the join: a · (masked) s(x), before F(x) and the ReLU."""
    return b.plan.join.add(None, b.shortcut(x), None)


@pytest.mark.parametrize("variant,keep_value,expectation", [("dropout_paper", 1.0, 0.5), ("dropout", 2.0, 1.0)])
def test_the_dropout_shortcuts_expectations(variant, keep_value, expectation):
    """Training: each element is 0 or ``keep_value``·x (the paper's: x itself; PyTorch's: 2x), and the
    mean over 4,000 seeded masks is ``expectation``·x within 0.05 (the standard error is 0.5/√4000 =
    0.008 for the paper's, 0.016 for the inverted). Eval: exactly ``expectation``·x."""
    b = identity_block(variant).train()
    x = torch.ones(4000, 16, 4, 4)
    with torch.no_grad():
        s = weighted_shortcut(b, x)
    assert set(s.unique().tolist()) == {0.0, keep_value}
    assert torch.allclose(s.mean(0), torch.full((16, 4, 4), expectation), atol=0.05)
    b.eval()
    x = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(weighted_shortcut(b, x), expectation * x)


def test_the_papers_dropout_block_at_test_time_and_its_join():
    b = identity_block("dropout_paper").eval()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))
        assert torch.allclose(b(x), F.relu(0.5 * x + f))
        assert torch.equal(b(x, keep_residual=False), F.relu(0.5 * x))  # a deleted branch passes 0.5·s(x)
    assert b.plan.join.label == "0.5·s + F (s dropped 50% in training, not rescaled)"
    # the eval-mode multiply is costed: one per element of each block's output, 9 blocks of cifar_resnet20
    per_block = 3 * 16 * 32 * 32 + 3 * 32 * 16 * 16 + 3 * 64 * 8 * 8
    assert per_block == 86_016
    paper, inverted = (totals(R20.replace(shortcut_variant=v)) for v in ("dropout_paper", "dropout"))
    assert paper.flops - inverted.flops == per_block and paper.params == inverted.params == totals(R20).params


def test_a_bare_state_dict_can_be_read_as_the_papers_dropout_net():
    """Neither dropout shortcut has weights, so a bare state_dict may be either: the paper's is offered
    beside the inverted one with its ratio, and read so its test-time join is (1 - p)·s + F."""
    import io

    from analysis.store.checkpoints import untold_settings

    buf = io.BytesIO()
    torch.save(build_model(R20, seed=0).state_dict(), buf)
    assert "dropout_paper" in untold_settings(load_checkpoint(buf.getvalue(), name="r20.pth", plain=False).spec)[
        "shortcut_variant"]
    ck = load_checkpoint(buf.getvalue(), name="r20.pth", plain=False,
                         settings={"shortcut_variant": "dropout_paper", "shortcut_dropout": 0.2})
    assert (ck.spec.shortcut_variant, ck.spec.shortcut_dropout) == ("dropout_paper", 0.2)
    assert untold_settings(ck.spec)["shortcut_dropout"] == (0.2,)
    assert ck.model.layer1[0].plan.join.label.startswith("0.8·s + F")


def test_the_papers_dropout_shortcut_has_its_drop_ratio_in_the_sidebar():
    at = AppTest.from_file(str(ROOT / "app_pages" / "explorer.py"), default_timeout=120).run()
    at.sidebar.selectbox(key="explorer_model").set_value("cifar_resnet20").run()
    at.sidebar.selectbox(key="explorer_variant").set_value("dropout_paper").run()
    ratio = at.sidebar.slider(key="explorer_dropout")
    assert ratio.label == "Drop ratio (s(x) × (1 − p) at test time)"
    ratio.set_value(0.3).run()
    assert not at.exception and not at.error
    assert "0.3, not rescaled" in at.subheader[0].value


def test_both_dropout_shortcuts_in_the_variants_table():
    paper, inverted = g.VARIANTS["dropout_shortcut_paper"], g.VARIANTS["dropout_shortcut"]
    assert dict(inverted.changes) == {"shortcut_variant": "dropout", "shortcut_dropout": 0.5}  # as before
    assert dict(paper.changes) == {"shortcut_variant": "dropout_paper", "shortcut_dropout": 0.5}
    assert paper.label != inverted.label and "not rescaled" in paper.label
    assert (paper.table, paper.paper) == (inverted.table, inverted.paper) == ("Table 1", "fail (> 20 %)")
    spec = g.variant_spec(paper, 20)
    assert spec.variant_label == "dropout shortcut as in the paper (0.5, not rescaled: E = 0.5·s)"
    assert spec_to_dict(g.variant_spec(inverted, 20))["shortcut_variant"] == "dropout"
    # the inverted variant's numbers: the identity at test time, exactly as the original net
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        ident = build_model(R20, seed=4).eval()
        drop = build_model(g.variant_spec(inverted, 20), seed=4).eval()
        assert torch.equal(drop(x), ident(x))


# ------------------------------------------------------------------- the Block comparison's pairings
def test_fig5_and_the_notes_pairings_by_hand():
    fig5_basic = 3 * 3 * 64 * 64 + 3 * 3 * 64 * 64
    bottleneck = 1 * 1 * 256 * 64 + 3 * 3 * 64 * 64 + 1 * 1 * 64 * 256
    notes_basic = 3 * 3 * 256 * 256 + 3 * 3 * 256 * 256
    assert (fig5_basic, bottleneck, notes_basic) == (73_728, 69_632, 1_179_648)
    both = pairings().set_index("BasicBlock")
    assert list(both.index) == ["64-d", "256-d"] and PAIRINGS == ("fig5", "notes")
    assert both.loc["64-d", "BasicBlock conv weights"] == fig5_basic
    assert both.loc["256-d", "BasicBlock conv weights"] == notes_basic
    assert list(both["Bottleneck conv weights"]) == [bottleneck, bottleneck]
    assert list(both["pairing"]) == ["the paper's Fig. 5 (64-d BasicBlock, 256-d bottleneck)",
                                     "the notes' (both 256-d)"]
    fig5 = compare_blocks(pairing="fig5").set_index("block")
    assert fig5.loc["basic", "formula"] == "3·3·64·64 + 3·3·64·64 = 73,728"
    assert fig5.loc["preact_basic", "channels"] == "64-d" and fig5.loc["bottleneck", "channels"] == "256-d"
    assert fig5.loc["basic", "MACs"] == fig5_basic * 56 * 56
    assert compare_blocks().set_index("block").loc["basic", "conv weights (residual)"] == notes_basic
    # a downsampling bottleneck 256 -> 512 of width 128: Fig. 5's BasicBlock is 128 -> 128 with the stride
    cfg = paired_config("basic", "fig5", 256, 512, 128, 56, 2)
    assert (cfg.cin, cfg.cout, cfg.stride) == (128, 128, 2)
    with pytest.raises(SpecError, match="pairing must be one of"):
        compare_blocks(pairing="paper")


def test_a_fig5_basic_block_is_the_plan_the_builder_makes():
    cfg = paired_config("basic", "fig5")
    with torch.device("meta"):  # shapes only: no weights drawn
        block = Block(make_plan(name="b", stage=0, index=0, block="basic", cin=cfg.cin, width=cfg.cout,
                                cout=cfg.cout, stride=1))
    convs = sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs == 73_728


# --------------------------------------------------------------------------------- the picker
def test_the_explorer_offers_vdcnns_head():
    at = AppTest.from_file(str(ROOT / "app_pages" / "explorer.py"), default_timeout=120).run()
    at.selectbox(key="explorer_model").select("vdcnn29").run()
    assert not at.exception, [e.value for e in at.exception]
    head = at.radio(key="explorer_head")
    assert head.value == "gap" and head.options[0] == (
        "ours: global avg pool, fc (12,593,152 parameters fewer than the paper's)")
    head.set_value("kmax").run()
    assert not at.exception and not at.error
    m = {x.label: x.value for x in at.metric}
    assert m["Parameters"] == "16,817,604"
    assert at.subheader[0].value.startswith("vdcnn29_kmax — 1-D, residual, shortcut B, 8-max head (fc 2,048 × 2)")


def test_the_papers_dropout_reads_the_same_through_its_graph():
    """An eval-mode export of the paper's dropout shortcut is constant scaling of s by 0.5: the graph reader
    finds the same units, join and costs as the spec path (the dropout itself acts only in training)."""
    from tests.test_graphnet import assert_same, exported

    ours, graph = exported("cifar_resnet20", shortcut_variant="dropout_paper")
    assert_same(ours, graph)
    assert graph.units[1].join.shortcut.value == 0.5


@pytest.mark.parametrize("level", ["stage", "block", "layer"])
def test_the_kmax_head_is_drawn_at_every_level(level):
    from analysis.arch import diagrams
    from analysis.arch.specs import get_spec as spec_of

    dot = diagrams.diagram(spec_of("vdcnn9_kmax"), level)
    assert "digraph" in dot and (level != "layer" or "kmax" in dot.lower() or "k-max" in dot.lower())
