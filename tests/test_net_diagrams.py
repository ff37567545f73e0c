"""Diagrams of any net (issue 23, item 4): a GraphNet drawn from its flow by diagrams.net_graph, written by
the one DOT writer (diagrams.to_dot), shown in the interactive viewer (ui/viewer.py) on the Diagrams page.

The proof: every built-in net exported (on the meta device) and drawn from its graph has the shortcut
arcs its spec's own diagram has, kind by kind, at every level, one per residual unit, and at units level
the very same arcs between the same node ids. Nets no spec describes (tests/zoo.py) show their units:
a transformer block's two side by side in the block's cluster, a unit inside another unit's branch
inside that unit's cluster, none in a DenseNet.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import Tensor, nn

from analysis.arch import diagrams
from analysis.arch.diagrams import NET_LEVELS, SHORTCUT_KINDS, build_graph, net_graph, shortcut_edges, to_dot
from analysis.arch.graphnet import GraphNet, export_module, open_program, spec_net
from analysis.arch.models import ResNet
from analysis.arch.specs import MODELS, ResNetSpec, get_spec
from analysis.core.errors import LensError
from tests import downloads, zoo

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("own_run_store")  # the page tests' run store is their own


def small(name: str) -> ResNetSpec:
    """The built-in at 64 px where it has an ImageNet stem (shapes, not sizes, are under test; as test_graphnet)."""
    spec = get_spec(name)
    return spec.replace(input_size=64) if spec.stem == "imagenet" else spec


@functools.cache
def opened(name: str) -> GraphNet:
    """The built-in exported on the meta device (no weights) and read back as a program, once per worker."""
    spec = small(name)
    with torch.device("meta"):
        model = ResNet(spec)
    return open_program(export_module(model, (torch.zeros(1, *spec.input_shape(), device="meta"),)), name=name)


def counts(g) -> tuple[int, ...]:
    return tuple(len(shortcut_edges(g, k)) for k in SHORTCUT_KINDS)


def arcs(g, rename: dict[str, str] | None = None) -> set[tuple[str, str, str]]:
    """The shortcut arcs of a diagram, (tail, head, kind), input ids renamed."""
    rename = rename or {}
    return {(rename.get(u, u), v, g.edges[u, v]["kind"]) for u, v in shortcut_edges(g)}


def net_of(model: nn.Module, *example: Tensor) -> GraphNet:
    return open_program(export_module(model, example), name=type(model).__name__)


def tokens() -> Tensor:
    return torch.zeros(1, zoo.T, 8)


# ------------------------------------------------------------------------------ the built-in proof
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_builtin_opened_program_has_its_spec_diagrams_shortcuts(name: str) -> None:
    spec = small(name)
    net = opened(name)
    want = counts(build_graph(spec, "block"))
    assert counts(build_graph(spec, "layer")) == want
    assert len(net.units) == sum(want) == spec.num_blocks
    for level in NET_LEVELS:
        g = net_graph(net, level, depth=2 if level == "modules" else None)
        assert not g.graph["unplaced"], level
        assert counts(g) == want, level
    # at units level the very arcs of the spec's block diagram: from the same node to the same add
    units = net_graph(net, "units")
    assert arcs(units, {net.inputs[0]: "input"}) == arcs(build_graph(spec, "block"))


@pytest.mark.parametrize("name", ["resnet18", "cifar_resnet20", "vdcnn9", "resnet1d_8", "resnet50"])
def test_a_spec_record_draws_as_its_opened_program(name: str) -> None:
    """spec_net's flow (the spec's layer diagram) and the exported graph give the same units diagram."""
    ours, theirs = net_graph(spec_net(small(name)), "units"), net_graph(opened(name), "units")
    rename = {opened(name).inputs[0]: "input"}
    assert {(u, v, k) for u, v, k in ours.edges(data="kind")} == \
        {(rename.get(u, u), v, k) for u, v, k in theirs.edges(data="kind")}
    for level in NET_LEVELS:
        assert counts(net_graph(spec_net(small(name)), level)) == counts(build_graph(small(name), "block"))


def test_spec_flow_puts_the_scale_rows_back_between_branch_and_add() -> None:
    spec = get_spec("cifar_resnet20").replace(shortcut_variant="scale", shortcut_scale=0.3, scale_residual=True)
    net = spec_net(spec)
    edges = set(net.edges)
    assert ("layer1.0.bn2", "layer1.0@scale") in edges and ("layer1.0@scale", "layer1.0@add") in edges
    assert ("layer1.0.bn2", "layer1.0@add") not in edges
    assert set(net.nodes["id"]) <= {v for _, v in net.edges}  # every row is reached
    assert counts(net_graph(net, "ops")) == (7, 0, 2)


# ------------------------------------------------------------------------ the opened ResNet-18 in DOT
def test_opened_resnet18_dot_dashes_its_three_projections() -> None:
    net = opened("resnet18")
    dot = diagrams.net_dot(net, "units")
    assert dot.count("style=dashed") == 3 and dot.count("style=solid") == 5 and "style=dotted" not in dot
    dashed = {line.split(" -> ")[1].split(" [")[0].strip('"') for line in dot.splitlines() if "style=dashed" in line}
    assert dashed == {"layer2.0@add", "layer3.0@add", "layer4.0@add"}
    # every op drawn: x -> conv -> BN -> add, all three dashed, as the spec's layer diagram draws them
    ops = diagrams.net_dot(net, "ops")
    assert ops.count("style=dashed") == 3 * 3 == diagrams.diagram(small("resnet18"), "layer").count("style=dashed")
    g = net_graph(net, "modules", depth=3)
    assert g.nodes["layer2.0.downsample"]["path"] == "shortcut"
    assert g.edges["layer2.0.downsample", "layer2.0@add"]["kind"] == "projection"


def test_units_level_labels_shapes_and_costs() -> None:
    net = opened("resnet18")
    g = net_graph(net, "units")
    assert list(g.nodes)[:4] == [net.inputs[0], "conv1", "layer1.0", "layer1.0@add"]
    stem, head = g.nodes["conv1"], g.nodes["avgpool"]
    assert stem["label"] == "conv1 … maxpool\\n4 ops" and stem["out_shape"] == (64, 16, 16)  # 64 px input
    assert head["out_shape"] == (1000,) and head["params"] == 512 * 1000 + 1000
    unit = g.nodes["layer2.0"]
    assert unit["label"] == "layer2.0 ↓" and unit["downsample"] and unit["in_shape"] == (64, 16, 16)
    assert unit["params"] == next(u for u in net.units if u.name == "layer2.0").branch_params + \
        next(u for u in net.units if u.name == "layer2.0").shortcut_params
    assert sum(d["params"] for _, d in g.nodes(data=True)) == net.params  # every weight drawn once
    assert sum(d["macs"] for _, d in g.nodes(data=True)) == net.macs
    assert sum(d["flops"] for _, d in g.nodes(data=True)) == net.flops  # the add's and ReLU's FLOPs in the unit's node
    assert g.nodes["layer2.0@add"]["op"] == "add" and g.nodes["layer2.0@add"]["params"] == 0
    details = diagrams.node_details(g, "layer2.0")
    assert details["module path"] == "layer2.0" and details["shortcut"] == "projection"
    assert details["output shape"] == "128×8×8" and details["parameters"] == f"{unit['params']:,}"


# ----------------------------------------------------------------------------------- nets of the zoo
class Nested(nn.Module):
    """x + inner(x), inner a pre-norm transformer block (two units) then a linear: units in a unit's branch."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(zoo.PreNormBlock(), nn.Linear(zoo.D, zoo.D))
        self.head = nn.Linear(zoo.D, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x + self.inner(x))


def clusters_of(g, nid: str) -> list[str]:
    """The labels of the clusters around a node, outermost first."""
    return [g.graph["clusters"][c] for c in g.nodes[nid]["cluster"]]


def test_a_pre_norm_vit_block_is_two_units_in_its_blocks_cluster() -> None:
    net = net_of(zoo.Transformer(zoo.PreNormBlock), tokens())
    g = net_graph(net, "units")
    assert counts(g) == (4, 0, 0) and not g.graph["unplaced"]
    for i in range(2):
        first, second = f"blocks.{i}[1]", f"blocks.{i}[2]"
        for nid in (first, f"{first}@add", second, f"{second}@add"):
            assert clusters_of(g, nid) == [f"blocks.{i}"], nid
        # the MLP unit reads the attention unit's sum: its shortcut leaves the first add
        assert g.edges[f"{first}@add", f"{second}@add"]["kind"] == "identity"
        assert g.nodes[first]["params"] == net.units[2 * i].branch_params
    assert [g.nodes[n]["op"] for n in ("embed", "head")] == ["stage", "stage"]
    dot = diagrams.net_dot(net, "units")
    assert dot.count("subgraph cluster_") == 2 and 'label="blocks.0"' in dot
    # every level shows the block's cluster, with one cluster per unit inside it below units level
    for level in ("modules", "ops"):
        lg = net_graph(net, level, depth=2 if level == "modules" else None)
        assert counts(lg) == (4, 0, 0)
        assert clusters_of(lg, "blocks.0[2]@add" if level == "modules" else "add_2") == ["blocks.0", "blocks.0[2]"]


def test_a_unit_inside_another_units_branch_is_drawn_inside_it() -> None:
    net = net_of(Nested(), torch.zeros(1, zoo.T, zoo.D))
    assert [(u.name, u.parent) for u in net.units] == [("inner.0[1]", "(net)"), ("inner.0[2]", "(net)"),
                                                       ("(net)", None)]
    spans, lost = diagrams.unit_spans(net)
    assert not lost and [s.parent for s in spans] == [u.parent for u in net.units]
    g = net_graph(net, "units")
    assert counts(g) == (3, 0, 0)
    assert "(net)" not in g  # the outer unit holds units: a cluster, not one node
    assert clusters_of(g, "inner.0[1]") == ["(net)", "inner.0"] and clusters_of(g, "inner.1") == ["(net)"]
    assert clusters_of(g, "(net)@add") == ["(net)"] and clusters_of(g, "head") == []
    assert g.edges[net.inputs[0], "(net)@add"]["kind"] == "identity"
    if diagrams.has_dot():  # nested clusters are valid DOT
        assert diagrams.render(diagrams.net_dot(net, "modules", depth=3), "svg").count(b'class="cluster"') == 4


def test_residual_of_residual_nests_three_deep() -> None:
    ror = getattr(zoo, "ResidualOfResidual", None)
    if ror is None:
        pytest.skip("tests/zoo.py has no ResidualOfResidual")
    net = net_of(ror(), torch.zeros(1, 8, 8, 8))
    spans, lost = diagrams.unit_spans(net)
    assert not lost and [s.parent for s in spans] == [u.parent for u in net.units]
    for level in NET_LEVELS:
        g = net_graph(net, level)
        assert counts(g) == (len(net.units), 0, 0), level
    deepest = max(len(d["cluster"]) for _, d in net_graph(net, "ops").nodes(data=True))
    assert deepest >= 3


class SharedWeights(nn.Module):
    """Two units that read one tensor computed from a weight alone (a mask, a tied table): tanh(W)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(zoo.D, zoo.D))
        self.f1, self.f2 = nn.Linear(zoo.D, zoo.D), nn.Linear(zoo.D, zoo.D)

    def forward(self, x: Tensor) -> Tensor:
        m = torch.tanh(self.w)
        x = x + self.f1(x) @ m
        return x + self.f2(x) @ m


def test_a_tensor_made_of_weights_alone_belongs_to_no_unit() -> None:
    """tanh(W) flows from no input: it is neither a path around a unit's input (both units are placed)
    nor part of either unit's body (one node of its own, read by both)."""
    net = net_of(SharedWeights(), torch.zeros(2, zoo.D))
    g = net_graph(net, "units")
    assert not g.graph["unplaced"] and counts(g) == (2, 0, 0)
    assert g.nodes["tanh"]["kind"] == "stretch" and set(g.successors("tanh")) == {"(net)[1]", "(net)[2]"}
    assert [g.nodes[u.name]["params"] for u in net.units] == [u.branch_params for u in net.units]
    assert net_graph(net, "ops").nodes["tanh"]["cluster"] == ()


def test_a_densenet_has_no_shortcut() -> None:
    net = net_of(zoo.DenseBlock(), torch.zeros(1, 8, 8, 8))
    for level in NET_LEVELS:
        g = net_graph(net, level)
        assert counts(g) == (0, 0, 0) and not [n for n, op in g.nodes(data="op") if op == "add"], level
        assert {k for *_, k in g.edges(data="kind")} == {"main"}
    assert net_graph(net, "ops").number_of_nodes() == len(net.nodes) + 1  # and the input


@pytest.mark.parametrize("case,make,example,want", [
    ("ConvNeXt", zoo.ConvNeXtBlock, lambda: torch.zeros(1, 16, 8, 8), (1, 0, 0)),
    ("highway", zoo.Highway, lambda: torch.zeros(2, zoo.D), (1, 0, 0)),
    ("MobileNetV2", zoo.MobileNetTail, lambda: torch.zeros(1, 16, 8, 8), (2, 0, 0)),
    ("U-Net (added)", lambda: zoo.UNet(additive=True), lambda: torch.zeros(1, 3, 8, 8), (1, 0, 0)),
    ("BERT", lambda: zoo.Transformer(zoo.PostNormBlock), tokens, (4, 0, 0)),
])
def test_zoo_units_are_placed_at_every_level(case, make, example, want) -> None:
    net = net_of(make(), example())
    for level in NET_LEVELS:
        g = net_graph(net, level)
        assert not g.graph["unplaced"] and counts(g) == want, (case, level)
    joins = [n for n, d in net_graph(net, "units").nodes(data=True) if d["op"] == "add"]
    assert [net_graph(net, "units").nodes[j]["label"] for j in joins] == [u.join.label for u in net.units]


def test_a_post_norm_unit_keeps_its_layer_norm() -> None:
    """BERT's LayerNorm after the add is the unit's post: drawn with the add, not as a stretch between units."""
    net = net_of(zoo.Transformer(zoo.PostNormBlock), tokens())
    g = net_graph(net, "units")
    assert g.number_of_nodes() == 1 + 1 + 4 * 2 + 1  # input, embedding, two nodes per unit, head
    assert net.nodes.set_index("id").loc[g.nodes["blocks.0[1]@add"]["last"], "op"] == "layer_norm"


def test_a_12_block_vit_stays_readable() -> None:
    """24 units: 51 nodes at units level, 53 with modules cut at depth 2 (≈ 30–80, as the issue asks)."""
    net = net_of(zoo.Transformer(zoo.PreNormBlock, depth=12), tokens())
    assert 30 <= net_graph(net, "units").number_of_nodes() <= 80
    assert 30 <= net_graph(net, "modules", depth=2).number_of_nodes() <= 80
    assert counts(net_graph(net, "modules", depth=2)) == (24, 0, 0)


def test_a_source_without_a_flow_is_drawn_in_order_and_says_so() -> None:
    net = dataclasses.replace(opened("resnet18"), edges=(), inputs=())
    g = net_graph(net, "units")
    assert g.graph["flow"] == "assumed" and g.graph["unplaced"] == [u.name for u in net.units]
    assert counts(g) == (0, 0, 0) and g.number_of_nodes() == 1  # one stretch: nothing splits it
    assert net_graph(net, "ops").number_of_edges() == len(net.nodes) - 1


def test_net_graph_refuses_unknown_levels_and_depths() -> None:
    with pytest.raises(LensError, match="level"):
        net_graph(opened("resnet18"), "layers")
    with pytest.raises(LensError, match="depth"):
        net_graph(opened("resnet18"), "modules", depth=0)


def test_modules_depth_collapses_paths() -> None:
    net = opened("resnet50")
    shallow, middle, deep = (net_graph(net, "modules", depth=d) for d in (1, 2, 3))
    # depth 1 folds every bottleneck (owned by layer1.0 ..., two components deep) into its stage: by hand,
    # the input, the stem's four modules, the four stages, the pool, the net's own flatten and fc
    assert list(shallow) == [net.inputs[0], "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                             "avgpool", "(net)", "fc"]
    assert counts(shallow) == (0, 0, 0) and {k for *_, k in shallow.edges(data="kind")} == {"main"}
    assert sum(d["params"] for _, d in shallow.nodes(data=True)) == net.params  # folded, not dropped
    # depth 2 keeps the 16 units (owned at depth 2): each its block's node and its add, the 4 projections'
    # downsample beside them, around the 5 nodes before (input and stem) and the 3 after
    assert middle.number_of_nodes() == 5 + 16 * 2 + 4 + 3 and counts(middle) == (12, 4, 0)
    assert {"layer1.0", "layer1.0@2", "layer1.0@add"} <= set(middle)
    assert "layer1.0.conv1" in deep and "layer1.0.conv1" not in middle and "layer1" not in deep
    # a module called twice is two nodes: a Bottleneck's ReLU after bn1 and after bn2
    assert {"layer1.0.relu", "layer1.0.relu@2"} <= set(deep)


def test_a_vit_at_module_depth_1_is_a_handful_of_nodes() -> None:
    """The example ViT-B/16: its 24 units are owned by blocks.0 … blocks.11 (two components), so depth 1
    folds them into one blocks node and depth 2 draws each."""
    from analysis.arch.examples import example_net

    net = example_net("vit_b16")
    one, two = net_graph(net, "modules", depth=1), net_graph(net, "modules", depth=2)
    # by hand: the input, the patch embedding, the net's own flatten / class token / positions, the blocks,
    # the final norm, the net's own class-token select, the head
    assert list(one) == [net.inputs[0], "patch_embed", "(net)", "blocks", "norm", "(net)@2", "head"]
    assert counts(one) == (0, 0, 0) and not one.graph["clusters"]
    assert one.nodes["blocks"]["params"] == 12 * 7_087_872  # per block: 2 LayerNorms, qkv, proj, fc1, fc2
    # by hand: the same 3 nodes before and 3 after, each block's two units as a node and an add apiece
    assert two.number_of_nodes() == 3 + 12 * 2 * 2 + 3 and counts(two) == (24, 0, 0)
    # a unit owned by the net itself stays a unit at every depth; the units inside its branch fold
    nested = net_graph(net_of(Nested(), torch.zeros(1, zoo.T, zoo.D)), "modules", depth=1)
    assert counts(nested) == (1, 0, 0) and list(nested.graph["clusters"].values()) == ["(net)"]


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(zoo.D, zoo.D)

    def forward(self, h: Tensor) -> Tensor:
        return h + torch.tanh(self.fc(h))


class _Borrower(nn.Module):
    """x + fc(inner(x)) with ``inner`` a module registered elsewhere (at depth 1): a unit owned at depth 1
    inside the branch of this one, owned at depth 2."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(zoo.D, zoo.D)
        object.__setattr__(self, "borrowed", inner)  # not a submodule: its ops keep the path "inner"

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc(self.borrowed(x))


class Borrowing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Inner()
        self.a = nn.Sequential(_Borrower(self.inner))
        self.head = nn.Linear(zoo.D, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x + self.a(x))


def test_a_unit_kept_inside_a_folded_units_branch_sits_in_its_nearest_kept_holder() -> None:
    net = net_of(Borrowing().eval(), torch.zeros(1, zoo.D))
    assert [(u.name, u.parent) for u in net.units] == [("inner", "a.0"), ("a.0", "(net)"), ("(net)", None)]
    g = net_graph(net, "modules", depth=1)  # a.0 (depth 2) folds into a; inner (depth 1) and (net) stay
    assert list(g) == [net.inputs[0], "inner", "inner@add", "a", "(net)@add", "head"] and counts(g) == (2, 0, 0)
    assert clusters_of(g, "inner@add") == ["(net)", "inner"] and clusters_of(g, "a") == ["(net)"]


class SequenceFirst(nn.Module):
    """nn.MultiheadAttention called sequence first, as torch's own encoder layers call it: the batch moves
    to axis 1 and back."""

    def __init__(self) -> None:
        super().__init__()
        self.attn, self.head = nn.MultiheadAttention(64, 4), nn.Linear(64, 3)

    def forward(self, x: Tensor) -> Tensor:
        s = x.transpose(0, 1)
        return self.head(x + self.attn(s, s, s, need_weights=False)[0].transpose(0, 1))


def test_node_shapes_drop_the_batch_only_where_it_is_axis_0() -> None:
    from ui.viewer import all_details

    net = net_of(SequenceFirst().eval(), torch.zeros(2, 10, 64))  # a batch of 2, 10 tokens of 64
    g = net_graph(net, "ops")
    details = all_details(g)
    assert details["transpose"]["output shape"] == "10×2×64" and details["transpose"]["input shape"] == "10×64"
    assert details["linear"]["output shape"] == "10×2×192"
    assert details["transpose_5"]["output shape"] == "10×64"  # the batch back at axis 0
    assert details["add"]["output shape"] == "10×64" and details["linear_2"]["output shape"] == "10×3"
    assert "10×2×64" in to_dot(g)  # the box's label too
    unit = all_details(net_graph(net, "units"))["(net)"]
    assert (unit["input shape"], unit["output shape"]) == ("10×64", "10×64")


# ----------------------------------------------------------------------------------------- the viewer
def test_viewer_html_holds_the_nodes_and_its_script() -> None:
    from ui.viewer import all_details, viewer_html

    g = net_graph(opened("resnet18"), "units")
    svg = '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg viewBox="0 0 10 10"><g class="node"><title>conv1</title></g></svg>'
    html = viewer_html(svg, all_details(g))
    assert html.startswith("<!DOCTYPE html>") and "<?xml" not in html and "<svg viewBox" in html
    details = json.loads(re.search(r'id="details">(.*?)</script>', html, re.S).group(1))
    assert set(details) == set(g.nodes) and details["layer2.0"]["shortcut"] == "projection"
    for part in ('id="search"', 'id="zin"', 'id="zout"', 'id="fit"', "'wheel'", "viewBox", "pointerdown", "pick(n)"):
        assert part in html, part
    assert "http" not in html.split("<script>", 1)[1]  # nothing fetched: all inline
    # a name from an opened file cannot end the script early
    evil = viewer_html(svg, {"</script><script>alert(1)</script>": {"node": "<!--<b>&"}})
    assert evil.count("</script>") == 2 and "alert(1)" in evil
    assert "<" not in re.search(r'id="details">(.*?)</script>', evil, re.S).group(1)  # no tag, no comment opens


@pytest.mark.skipif(not diagrams.has_dot(), reason="Graphviz dot not installed (CI installs it)")
def test_viewer_pans_zooms_searches_and_shows_details_in_chromium() -> None:
    from ui.server import CHROMIUM, CHROMIUM_ARGS
    from ui.viewer import all_details, viewer_html

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    g = net_graph(opened("resnet18"), "units")
    html = viewer_html(diagrams.render(to_dot(g)), all_details(g))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_content(html)

            def box() -> list[float]:
                return [float(v) for v in page.locator("#stage svg").get_attribute("viewBox").split()]

            page.click("#fit")
            whole = box()
            page.click("#zin")
            zoomed_in = box()
            assert zoomed_in[2] < whole[2]  # narrower: zoomed in
            page.mouse.move(450, 300)
            page.mouse.wheel(0, 300)
            page.wait_for_timeout(100)
            zoomed_out = box()
            assert zoomed_out[2] > zoomed_in[2]  # the wheel towards the user zooms out
            page.mouse.move(450, 300)
            page.mouse.down()
            page.mouse.move(520, 360, steps=4)
            page.mouse.up()
            moved = box()
            assert moved[0] < zoomed_out[0] and moved[1] < zoomed_out[1] and moved[2] == zoomed_out[2]
            page.click("#zout")
            assert box()[2] > moved[2]
            page.click("#fit")
            assert box() == whole
            page.fill("#search", "layer3.1")
            assert page.text_content("#count") == "2 matches" and page.locator("g.node.hit").count() == 2
            page.click("#fit")
            page.locator("g.node", has_text="layer2.0").first.click()
            assert page.is_visible("#panel") and page.text_content("#ptitle") == "layer2.0"
            assert "projection" in page.text_content("#ptable")
            assert not errors, errors
        finally:
            browser.close()


# ------------------------------------------------------------------------------------ the Diagrams page
def page(**state: object) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "diagrams.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def viewers(at: AppTest) -> list[str]:
    """The srcdoc of every viewer on the page."""
    return [e.proto.srcdoc for e in at.get("iframe")]


@pytest.mark.skipif(not diagrams.has_dot(), reason="the viewer needs Graphviz's dot (CI installs it)")
def test_page_draws_a_builtin_in_the_viewer_with_node_details() -> None:
    at = page()
    clean(at)
    m = metrics(at)
    assert (m["Identity shortcuts (solid)"], m["Projection shortcuts (dashed)"]) == ("13", "3")
    assert len(viewers(at)) == 1 and len(at.get("graphviz_chart")) == 1  # the net; the block internals
    assert "layer2.0@add" in viewers(at)[0] and 'id="search"' in viewers(at)[0]
    at.selectbox(key="diagrams_node").select("layer2.0").run()
    clean(at)
    rows = dict(zip(at.dataframe[0].value.iloc[:, 0], at.dataframe[0].value.iloc[:, 1], strict=True))
    assert rows["module path"] == "layer2.0" and rows["output shape"] == "128×28×28"
    at.radio(key="diagrams_level").set_value("layer").run()
    clean(at)
    assert at.selectbox(key="diagrams_node").value is None  # layer2.0 is no node at layer level
    assert "layer2.0.downsample.0" in viewers(at)[0]
    at.checkbox(key="diagrams_twin").check().run()
    clean(at)
    assert len(viewers(at)) == 2 and "stroke-dasharray" not in viewers(at)[1]  # the plain twin: no dashes
    assert [e.proto.alt for e in at.get("iframe")] == ["Interactive diagram of resnet34",
                                                       "Interactive diagram of plain_resnet34"]
    at.selectbox(key="diagrams_model").select("cifar_resnet20").run()
    m = metrics(at)
    assert (m["Identity shortcuts (solid)"], m["Zero-pad shortcuts (dotted)"]) == ("7", "2")
    at.radio(key="diagrams_block").set_value("bottleneck").run()
    at.checkbox(key="diagrams_projection").check().run()
    clean(at)
    assert "downsample.0" in at.get("graphviz_chart")[-1].proto.spec  # the block internals stay a chart


def test_page_falls_back_to_graphviz_chart_without_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagrams, "has_dot", lambda: False)
    at = page()
    clean(at)
    assert not viewers(at) and len(at.get("graphviz_chart")) == 2
    assert at.get("graphviz_chart")[0].proto.spec.count("style=dashed") == 3
    assert {b.label for b in at.get("download_button")} == {"Download DOT"}


@pytest.mark.skipif(not diagrams.has_dot(), reason="the viewer needs Graphviz's dot (CI installs it)")
def test_page_downloads_are_the_diagram() -> None:
    with downloads.captured() as files:
        at = page()
        clean(at)
        buttons = {b.label: b for b in at.get("download_button")}
        dot = files.of(buttons["Download DOT"])
        assert dot.filename == "resnet34_block.dot" and dot.data.decode() == diagrams.diagram(get_spec("resnet34"))
        svg = files.of(buttons["Download SVG"])
        assert svg.filename == "resnet34_block.svg" and svg.data.decode()[svg.data.find(b"<svg"):] in viewers(at)[0]
        assert files.of(buttons["Download PNG"]).data.startswith(b"\x89PNG")
        # a rerun (what any click does) keeps the same files: content-addressed, nothing to forget
        at.checkbox(key="diagrams_projection").check().run()
        assert {b.label: b.proto.url for b in at.get("download_button")} == \
            {label: b.proto.url for label, b in buttons.items()}


def test_page_refuses_to_lay_out_huge_graphs() -> None:
    at = page(diagrams_model="cifar_resnet1202", diagrams_level="layer")
    clean(at)
    assert "too many to lay out" in at.warning[0].value and not viewers(at)
    assert len(at.get("graphviz_chart")) == 1  # only the block internals


@pytest.mark.skipif(not diagrams.has_dot(), reason="the viewer needs Graphviz's dot (CI installs it)")
def test_page_opens_a_program_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "vit.pt2"
    torch.export.save(export_module(zoo.Transformer(zoo.PreNormBlock), (tokens(),)), path)
    at = page(diagrams_source="Your net", diagrams_net_from="path", diagrams_net_path=str(path))
    clean(at)
    m = metrics(at)
    assert (m["Residual units"], m["Identity shortcuts (solid)"], m["Nodes drawn"]) == ("4", "4", "11")
    assert "blocks.0[2]@add" in viewers(at)[0] and at.subheader[0].value.startswith("vit.pt2")
    at.radio(key="diagrams_net_level").set_value("modules").run()
    clean(at)
    assert at.slider(key="diagrams_net_depth").value == 2 and metrics(at)["Nodes drawn"] == "13"
    at.slider(key="diagrams_net_depth").set_value(4).run()
    assert int(metrics(at)["Nodes drawn"]) > 13
    at.radio(key="diagrams_net_level").set_value("ops").run()
    clean(at)
    assert metrics(at)["Identity shortcuts (solid)"] == "4"
    at.selectbox(key="diagrams_node").select("add_1").run()
    rows = dict(zip(at.dataframe[0].value.iloc[:, 0], at.dataframe[0].value.iloc[:, 1], strict=True))
    assert rows["module path"] == "blocks.0" and rows["shortcut in"].endswith("(identity)")


def _net_view_app() -> None:
    import torch

    from analysis.arch.graphnet import export_module, open_program
    from tests import zoo
    from ui import viewer

    net = open_program(export_module(zoo.DenseBlock(), (torch.zeros(1, 8, 8, 8),)), name="dense")
    viewer.net_view(net, "t")


def test_net_view_of_a_graphnet_without_units() -> None:
    at = AppTest.from_function(_net_view_app, default_timeout=120).run()
    clean(at)
    m = metrics(at)
    assert (m["Residual units"], m["Identity shortcuts (solid)"], m["Projection shortcuts (dashed)"]) == ("0", "0", "0")
    assert "concatenation" in at.info[0].value
    assert {b.label for b in at.get("download_button")} >= {"Download DOT"}
