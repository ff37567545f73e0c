"""Structural checks on the generated shortcut diagrams."""

import dataclasses
import html
import re

import networkx as nx
import pytest

from analysis.arch.diagrams import (
    LEVELS,
    SHORTCUT_KINDS,
    block_internals,
    build_graph,
    diagram,
    has_dot,
    render,
    shortcut_edges,
    to_dot,
)
from analysis.arch.models import build_model
from analysis.arch.specs import MODELS, custom_spec, get_spec
from analysis.core.errors import LensError

# (identity, projection, zero-pad) shortcuts of every built-in net
EXPECTED = {
    "resnet18": (5, 3, 0), "resnet34": (13, 3, 0), "resnet50": (12, 4, 0), "resnet101": (29, 4, 0),
    "resnet152": (46, 4, 0), "wide_resnet50_2": (12, 4, 0), "wide_resnet101_2": (29, 4, 0),
    "resnext50_32x4d": (12, 4, 0), "resnext101_32x8d": (29, 4, 0), "resnext101_64x4d": (29, 4, 0),
    "cifar_resnet20": (7, 0, 2), "cifar_resnet32": (13, 0, 2), "cifar_resnet44": (19, 0, 2),
    "cifar_resnet56": (25, 0, 2), "cifar_resnet110": (52, 0, 2), "cifar_resnet1202": (598, 0, 2),
    # VDCNN: the max pool halves the length in front of layer2-4's first block, whose 1x1 projection
    # only widens the channels; layer1 keeps the stem's 64 channels
    "vdcnn9": (1, 3, 0), "vdcnn17": (5, 3, 0), "vdcnn29": (11, 3, 0), "vdcnn49": (21, 3, 0),
    "resnet1d_8": (1, 0, 2), "resnet1d_20": (7, 0, 2), "resnet1d_56": (25, 0, 2),
}


def changing_blocks(spec):
    """Blocks where the spec changes stride or width: the only places a shortcut may project."""
    out, cin = set(), spec.stem_width
    for i, s in enumerate(spec.stage_strides):
        cout = spec.out_channels[i]
        if s != 1 or cin != cout:
            out.add(f"layer{i + 1}.0")
        cin = cout
    return out


def test_expected_covers_every_builtin():
    assert set(EXPECTED) == set(MODELS)


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("level", ["block", "layer"])
def test_shortcut_counts_and_places(name, level):
    spec = get_spec(name)
    g = build_graph(spec, level)
    counts = tuple(len(shortcut_edges(g, k)) for k in SHORTCUT_KINDS)
    assert counts == EXPECTED[name]
    assert sum(counts) == spec.num_blocks
    # every dashed/dotted edge sits exactly where the spec changes stride or width
    non_identity = {g.nodes[v]["block"] for u, v in shortcut_edges(g) if g.edges[u, v]["kind"] != "identity"}
    assert non_identity == changing_blocks(spec)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_plain_twins_have_no_shortcuts(name):
    for level in LEVELS:
        g = build_graph(get_spec(name, plain=True), level)
        assert not [e for e in g.edges(data="kind") if e[2] != "main"]


@pytest.mark.parametrize("name,kw", [("resnet34", {}), ("resnet50", {"preact": True}), ("cifar_resnet20", {}),
                                     ("resnet18", {"shortcut": "C"}), ("resnext50_32x4d", {}), ("vdcnn29", {}),
                                     ("resnet1d_20", {})])
def test_node_ids_are_torchvision_module_names(name, kw):
    spec = get_spec(name, **kw)
    modules = {n for n, _ in build_model(spec).named_modules() if n}
    for level in LEVELS:
        g = build_graph(spec, level)
        for nid in g.nodes:
            assert nid.split("@")[0] in modules, (level, nid)


def test_option_c_projects_every_block():
    g = build_graph(get_spec("resnet18", shortcut="C"), "block")
    assert len(shortcut_edges(g, "projection")) == 8


def test_dot_styles_match_edge_kinds():
    g = build_graph(get_spec("resnet34"), "layer")
    dot = to_dot(g)
    # each projection is drawn as input -> downsample.0 -> downsample.1 -> add, all dashed
    assert dot.count("style=dashed") == 3 * 3
    assert dot.count("style=solid") == 13
    assert dot.count("style=dotted") == 0
    cifar = diagram(get_spec("cifar_resnet20"), "layer")
    assert cifar.count("style=dotted") == 2 * 2 and "zero-pad" in cifar
    block = diagram(get_spec("resnet34"), "block")
    assert block.count("style=dashed") == 3 and block.count("style=solid") == 13


def test_stage_level_labels():
    g = build_graph(get_spec("resnet50"), "stage")
    assert list(g.nodes) == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert g.nodes["layer3"]["label"].startswith("layer3: 6 × Bottleneck")
    assert "5 identity, 1 projection shortcuts" in g.nodes["layer3"]["label"]
    assert g.nodes["layer4"]["out_shape"] == (2048, 7, 7)


def test_metric_labels_and_legend():
    dot = diagram(get_spec("resnet18"), "block", show="params", color_by="macs")
    assert "params: " in dot and "cluster_legend" in dot and "macs (log scale)" in dot
    with pytest.raises(LensError, match="metric"):
        diagram(get_spec("resnet18"), "block", show="latency")
    with pytest.raises(LensError, match="level"):
        build_graph(get_spec("resnet18"), "atom")


def test_custom_spec_every_level():
    spec = custom_spec(block="bottleneck", layers=(1, 2, 1), widths=(16, 32, 64), input_size=64)
    for level in LEVELS:
        # the graphviz package quotes an id only when DOT needs it: `custom` here, `"my net"` otherwise
        assert diagram(spec, level).startswith("digraph custom {")


@pytest.mark.parametrize("kind", ["basic", "bottleneck", "preact_basic", "preact_bottleneck"])
def test_block_internals(kind):
    identity = block_internals(kind)
    proj = block_internals(kind, projection=True)
    assert identity.count("style=solid") == 1 and "style=dashed" not in identity
    assert "style=dashed" in proj and "downsample.0" in proj
    n_convs = 2 if kind.endswith("basic") else 3
    assert sum('label="conv' in line for line in identity.splitlines()) == n_convs


@pytest.mark.skipif(not has_dot(), reason="Graphviz dot not installed (CI installs it)")
def test_svg_and_png_export():
    dot = diagram(get_spec("resnet34"), "layer")
    svg = render(dot, "svg")
    assert svg.startswith(b"<?xml") and b"stroke-dasharray" in svg
    assert render(dot, "png").startswith(b"\x89PNG")
    with pytest.raises(LensError):
        render(dot, "gif")


# Names a user can give a net (an uploaded checkpoint's file name): DOT must quote and escape them all.
AWKWARD_NAMES = [
    'my "best" net',
    r"C:\models\net",  # backslashes that are not our \n line breaks
    "ends in a backslash\\",  # would eat the closing quote if left single
    r"literal \n \l \N",  # DOT escapes typed by the user stay text
    'quote after backslash \\"',
    "braces {x}; a -> b; // c",
    "two\nlines",
    "<b>not html</b>",
    "× ↓ ünïcode",
    "strict",  # a DOT keyword
    "port:like:id",
]


def _svg_texts(svg: bytes) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg.decode())]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_awkward_names_are_quoted_in_dot(name):
    spec = dataclasses.replace(get_spec("resnet18"), name=name)
    dot = diagram(spec, "stage")
    head = dot.split(" {\n\tgraph [", 1)[0]
    assert head.startswith('digraph "') and head.endswith('"'), head
    # every quote inside the graph name is escaped: an odd run of backslashes before it
    inner = head[len('digraph "'):-1]
    assert all(len(m.group(1)) % 2 == 1 for m in re.finditer(r'(\\*)"', inner)), head
    assert not re.search(r'(?<!\\)(\\\\)*\\$', inner), head  # no backslash left to escape the closing quote


@pytest.mark.skipif(not has_dot(), reason="Graphviz dot not installed (CI installs it)")
@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_awkward_names_render_at_every_level(name):
    spec = dataclasses.replace(get_spec("resnet18"), name=name)
    for level in LEVELS:
        for show, color_by in ((None, None), ("params", "macs"), ("macs", "params")):
            svg = render(diagram(spec, level, show=show, color_by=color_by), "svg")
            assert svg.startswith(b"<?xml"), (level, show, color_by)
            # the title shows the name as typed; a newline in it is a line break
            texts = _svg_texts(svg)
            title = "\n".join(texts[:name.count("\n") + 1])
            assert title == f"{name} ({spec.variant})", (level, texts[:3])


@pytest.mark.skipif(not has_dot(), reason="Graphviz dot not installed (CI installs it)")
def test_node_ids_and_labels_of_any_string():
    ids = ["a:b", "c\\", '"q"', "e{f}", "g;h", "i -> j", "k\nl", "<m>", "n\\", "n\\\\"]
    g = nx.DiGraph(name='x"y\\')
    for nid in ids:  # an add node's label is the bare id: "<m>" must not become an HTML-like label
        g.add_node(nid, op="add" if nid == "<m>" else "conv", label=nid.replace("\n", " "), out_shape=(1, 2, 2),
                   params=1, macs=1)
    for u, v in zip(ids, ids[1:], strict=False):
        g.add_edge(u, v, kind="identity" if u == "a:b" else "main")
    svg = render(to_dot(g, title="t\\itle", show="params"), "svg").decode()
    # one drawn node per id and one edge per pair: no id read as a port, merged, split or dropped
    assert svg.count('class="node"') == len(ids) and svg.count('class="edge"') == len(ids) - 1
    texts = _svg_texts(svg.encode())
    assert texts[0] == "t\\itle"
    for nid in ids:
        assert nid.replace("\n", " ") in texts, nid
    # labels keep "\n" as a line break: each node shows its id, shape and params on three lines
    assert texts.count("1×2×2") == len(ids) - 1 and texts.count("params: 1") == len(ids) - 1


def test_graph_label_line_breaks_stay_line_breaks():
    dot = diagram(get_spec("resnet50"), "stage")
    assert r'label="layer3: 6 × Bottleneck\n5 identity, 1 projection shortcuts\n1024×14×14"' in dot
    g = nx.DiGraph(name="n")
    g.add_node("a", op="conv", label=r"one\ntwo", out_shape=(1,), params=0, macs=0)
    g.add_node("b", op="conv", label="back\\slash", out_shape=(1,), params=0, macs=0)
    dot = to_dot(g, title="two\r\nlines")
    assert r'a [label="one\ntwo\n1"' in dot and r'b [label="back\\slash\n1"' in dot
    assert r'label="two\nlines"' in dot  # a typed newline becomes DOT's line break, one statement per line


def test_render_errors(monkeypatch, tmp_path):
    with pytest.raises(LensError, match="svg or png"):
        render("digraph { a }", "gif")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on the PATH
    assert not has_dot()
    with pytest.raises(LensError, match="not installed"):
        render("digraph { a }", "svg")


@pytest.mark.skipif(not has_dot(), reason="Graphviz dot not installed (CI installs it)")
def test_render_reports_dot_syntax_errors():
    with pytest.raises(RuntimeError, match="dot failed.*syntax error"):
        render('digraph "a" b" { }', "svg")


def test_block_diagram_follows_the_inputs():
    """The block-comparison diagram is drawn from the same plan as its table: channels, stride and
    size show in the node shapes, and no internal id (relu@2, relu#2) leaks into a label."""
    from analysis.arch.blocks import BlockConfig
    from analysis.arch.diagrams import block_diagram

    dot = block_diagram(BlockConfig("basic", 64, 128, 64, 32, 2))
    assert "x\\n64×32×32" in dot and "128×16×16" in dot and "style=dashed" in dot
    dot = block_diagram(BlockConfig("bottleneck", 96, 96, 24, 20, 1, 3))
    assert "x\\n96×20×20" in dot and "conv2 3×3, 24, groups 3" in dot and "style=dashed" not in dot
    labels = [line for line in dot.splitlines() if "label=" in line]
    assert not any("@" in line.split("label=")[1] or "#" in line.split("label=")[1].split('"')[1] for line in labels)
    pre = block_diagram(BlockConfig("preact_basic", 16, 16, 16, 8, 1))
    assert "out [" not in pre  # nothing after the add in a pre-activation block


# ----------------------------------------------------------------------------- 1-D nets (issue 13)
ONE_D = [name for name, spec in MODELS.items() if spec.dims == 1]


@pytest.mark.parametrize("name", ONE_D)
def test_1d_shapes_are_channels_by_length(name):
    """Every node of a 1-D net's diagram is C x L at every level, and no 1-D conv is labelled 3×3."""
    spec = get_spec(name)
    for level in LEVELS:
        g = build_graph(spec, level)
        assert all(len(d["out_shape"]) == 2 for _, d in g.nodes(data=True)), level
        assert "3×3" not in diagram(spec, level) and "1×1" not in diagram(spec, level)
    layer = build_graph(spec, "layer")
    assert layer.nodes["layer1.0.conv1"]["out_shape"] == (spec.widths[0], spec.input_size)


@pytest.mark.parametrize("level", ["block", "layer"])
def test_vdcnn_pool_comes_before_both_paths(level):
    """VDCNN's max pool /2 sits in front of layer2-4's first block: the branch and the (projection)
    shortcut both start after it, so the shortcut arc leaves the pool, not the previous add."""
    g = build_graph(get_spec("vdcnn29"), level)
    previous = {2: "layer1.4", 3: "layer2.4", 4: "layer3.1"}  # the last block before each pool (5-5-2-2 blocks)
    for i, (cin, c, length) in enumerate([(64, 128, 512), (128, 256, 256), (256, 512, 128)], start=2):
        pool, add = f"layer{i}.0.pool", f"layer{i}.0@add"
        assert g.nodes[pool]["op"] == "maxpool" and g.nodes[pool]["out_shape"] == (cin, length)
        assert list(g.predecessors(pool)) == [previous[i] + (".relu@2" if level == "layer" else "@add")]
        starts = {v: k for _, v, k in g.out_edges(pool, data="kind")}
        branch = f"layer{i}.0.conv1" if level == "layer" else f"layer{i}.0"
        short = f"layer{i}.0.downsample.0" if level == "layer" else add
        assert starts == {branch: "main", short: "projection"}
        assert g.nodes[add]["out_shape"] == (c, length)
    assert len(shortcut_edges(g, "projection")) == 3 and len(shortcut_edges(g, "identity")) == 11


def test_vdcnn_block_and_stage_labels():
    g = build_graph(get_spec("vdcnn29"), "block")
    assert g.nodes["layer2.0.pool"]["label"] == "layer2.0.pool: max pool 3 /2"
    assert g.nodes["layer2.0"]["stride"] == 1  # the pool halves the length, the block's convs do not
    stages = build_graph(get_spec("vdcnn29"), "stage")
    assert stages.nodes["layer1"]["label"] == "layer1: 5 × BasicBlock\\n5 identity shortcuts"
    assert stages.nodes["layer3"]["label"] == ("layer3: max pool 3 /2, then 2 × BasicBlock\\n1 identity, "
                                               "1 projection shortcuts")
    assert stages.nodes["layer4"]["out_shape"] == (512, 128)
    dot = diagram(get_spec("vdcnn29"), "stage")
    assert r'label="layer2: max pool 3 /2, then 5 × BasicBlock\n4 identity, 1 projection shortcuts\n128×512"' in dot
    plain = build_graph(get_spec("plain_vdcnn29"), "block")  # the plain twin keeps the pools, not the arcs
    assert list(plain.successors("layer2.0.pool")) == ["layer2.0"]


def test_1d_block_internals():
    basic = block_internals("basic", dims=1)
    assert 'label="conv1 3, 64\\n64×56"' in basic and "3×3" not in basic
    proj = block_internals("bottleneck", projection=True, dims=1)
    assert 'label="conv2 3, 64 /2\\n64×28"' in proj and 'label="downsample.0 1, 256 /2\\n256×28"' in proj
    vdcnn = block_internals("vdcnn", dims=1)
    assert 'label="conv1 3, 64, bias\\n64×1024"' in vdcnn and "pool" not in vdcnn
    assert "x -> add" in vdcnn and "style=dashed" not in vdcnn
    down = block_internals("vdcnn", projection=True, dims=1)
    assert 'pool [label="max pool 3 /2\\n64×512"' in down and 'label="conv1 3, 128, bias\\n128×512"' in down
    assert "x -> pool" in down and "pool -> conv1" in down and 'pool -> "downsample.0"' in down
    assert 'label="downsample.0 1, 128\\n128×512"' in down  # the projection has no bias
    assert "x -> conv1" not in down and 'x -> "downsample.0"' not in down
    with pytest.raises(LensError, match="unknown 2-D block kind 'vdcnn'"):
        block_internals("vdcnn")
    with pytest.raises(LensError, match="dims must be 1"):
        block_internals("basic", dims=3)


def test_to_dot_nests_the_clusters_a_graph_names():
    """An opened net's graph puts nodes in clusters (a unit, the units of one module), named in
    g.graph["clusters"] and listed outermost first on each node; a spec's graph has none."""
    g = nx.DiGraph(name="n", clusters={"cluster_a": "outer <a>", "cluster_b": 'inner "b"'})
    g.add_node("x", op="stage", label="x", out_shape=(4,), params=0, macs=0)
    g.add_node("y", op="conv", label="y", out_shape=(4,), params=1, macs=1, cluster=("cluster_a",))
    g.add_node("z:1", op="add", label="+", out_shape=(4,), params=0, macs=0, cluster=("cluster_a", "cluster_b"))
    g.add_edge("x", "y", kind="main")
    g.add_edge("y", "z:1", kind="main")
    g.add_edge("x", "z:1", kind="identity")
    dot = to_dot(g)
    # cluster_b inside cluster_a, each node in its innermost cluster, the edges after both are closed
    assert re.search(r'\tx \[.*\n\tsubgraph cluster_a \{\n\t\tgraph \[.*label="outer <a>".*\n\t\ty \[.*\n'
                     r'\t\tsubgraph cluster_b \{\n\t\t\tgraph \[.*\n\t\t\t"z:1" \[.*\n\t\t\}\n\t\}\n\tx -> y', dot), dot
    assert "subgraph" not in diagram(get_spec("resnet18"), "layer")
    if has_dot():
        svg = render(dot, "svg").decode()
        assert svg.count('class="cluster"') == 2 and svg.count('class="node"') == 3
        assert 'outer <a>' in _svg_texts(svg.encode()) and 'inner "b"' in _svg_texts(svg.encode())
