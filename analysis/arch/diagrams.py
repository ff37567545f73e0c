"""Shortcut diagrams generated from a spec, drawn the way He et al. 2015, Fig. 3 draws them.

Pure functions: a spec becomes a networkx graph (node ids are torchvision module names, with
``@k`` for the k-th call of a reused module and ``<block>@add`` for the residual add), and a graph
becomes DOT source. Identity shortcuts are solid arcs, projection shortcuts (1x1 conv + BN) dashed,
option-A zero-padding shortcuts dotted and labelled. Rendering to SVG/PNG needs Graphviz's ``dot``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import graphviz
import networkx as nx
from graphviz.quoting import attr_list, quote

from analysis.arch.blockplan import BlockPlan, block_plans, changes_shape, make_plan
from analysis.arch.blocks import BLOCK_KINDS, BlockConfig, plan_for
from analysis.arch.costs import trace
from analysis.arch.ops import Flow, Op, flow
from analysis.arch.specs import ResNetSpec
from analysis.core.errors import ConfigError, LensError

LEVELS = ("stage", "block", "layer")
# Beyond this many nodes a browser takes tens of seconds to lay a graph out: offer the DOT instead.
MAX_DRAW_NODES = 2500
METRICS = ("params", "macs")
SHORTCUT_KINDS = ("identity", "projection", "pad")

# Graphviz attributes (all values strings, as the graphviz package wants them) per edge kind / node op.
EDGE_STYLE: dict[str, dict[str, str]] = {
    "main": {"color": "#444444"},
    "identity": {"style": "solid", "color": "#1f77b4", "penwidth": "1.6", "tailport": "e", "headport": "e",
                 "constraint": "false"},
    "projection": {"style": "dashed", "color": "#d62728", "penwidth": "1.6"},
    "pad": {"style": "dotted", "color": "#2ca02c", "penwidth": "1.8", "label": " zero-pad", "fontcolor": "#2ca02c"},
    # He et al. 2016's gates: g(x) = sigmoid(1x1 conv(x) + b_g) weights the join (purple, dash-dot)
    "gate": {"style": "dashed", "color": "#9467bd", "penwidth": "1.4", "arrowhead": "diamond"},
}
_BOX = {"shape": "box", "style": "filled"}
_ROUNDED = {"shape": "box", "style": "rounded,filled"}
_THIN = {**_BOX, "height": "0.3"}
NODE_STYLE: dict[str, dict[str, str]] = {
    "conv": _ROUNDED,
    "bn": _THIN,
    "relu": _THIN,
    "add": {"shape": "circle", "style": "filled", "width": "0.35", "fixedsize": "true"},
    "pad": {"shape": "box", "style": "dotted,filled"},
    "sigmoid": _THIN,
    "maxpool": _BOX,
    "avgpool": _BOX,
    "fc": _ROUNDED,
    "block": _ROUNDED,
    "stage": _ROUNDED,
}
# Blues, light to dark, for colouring nodes by a metric on a log scale.
PALETTE = ("#eff3ff", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c")
BLOCK_NAMES = {"basic": "BasicBlock", "bottleneck": "Bottleneck"}


def join_label(plan: BlockPlan) -> str:
    """The add node's label: '+', or the join's weighted sum (He et al. 2016, Fig. 2)."""
    return plan.join.label


def _shape(s: tuple[int, ...]) -> str:
    return "×".join(str(v) for v in s)


def _si(n: int) -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suf}"
    return str(n)


def layer_graph(spec: ResNetSpec) -> nx.DiGraph:
    """Every op of the forward pass a node; main-path and shortcut edges with their kind."""
    g = nx.DiGraph(name=spec.name, level="layer", residual=spec.residual)
    prev: str | None = None
    block_in: str | None = None
    short_last: str | None = None
    short_kind = "identity"
    current = None
    gate_last: str | None = None
    plans = {p.name: p for p in block_plans(spec)}
    if spec.stem == "none":  # the first block's shortcut starts at the input itself
        g.add_node("input", op="stage", label="input", module="input", stage="stem", block="stem",
                   out_shape=spec.input_shape(), params=0, macs=0, kernel=0, stride=1, path="main")
        prev = "input"
    for r in trace(spec):
        nid = r["id"]
        op = r["op"]
        if op == "scale":  # the variant's weighting is drawn as the add's label, not as a node
            continue
        label = {"add": join_label(plans[r["block"]]) if op == "add" else "+", "pad": "zero-pad",
                 "sigmoid": "σ"}.get(op, nid)
        g.add_node(nid, op=op, label=label, module=r["module"], stage=r["stage"], block=r["block"],
                   out_shape=r["out_shape"], params=r["params"], macs=r["macs"],
                   kernel=r["kernel"], stride=r["stride"], path=r["path"])
        if r["block"] != current:
            current, block_in, short_last, short_kind, gate_last = r["block"], prev, None, "identity", None
        if r["path"] == "gate":
            g.add_edge(gate_last or block_in, nid, kind="main" if gate_last else "gate")
            gate_last = nid
            continue
        if r["path"] == "shortcut":
            short_kind = "pad" if op == "pad" else "projection"
            g.add_edge(short_last or block_in, nid, kind=short_kind)
            short_last = nid
            continue
        if prev is not None:
            g.add_edge(prev, nid, kind="main")
        if op == "maxpool" and r["block"] in plans:  # VDCNN's pool: both paths start after it
            block_in = nid
        if op == "add":
            g.add_edge(short_last or block_in, nid, kind=short_kind if short_last else "identity")
            if gate_last:
                g.add_edge(gate_last, nid, kind="gate")
        prev = nid
    return g


def block_graph(spec: ResNetSpec) -> nx.DiGraph:
    """One node per residual block (F), one per add; shortcut arcs from the block input to its add."""
    g = nx.DiGraph(name=spec.name, level="block", residual=spec.residual)
    rows = trace(spec)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["block"], []).append(r)
    plans = {p.name: p for p in block_plans(spec)}
    prev: str | None = None
    if spec.stem == "none":
        g.add_node("input", op="stage", label="input", module="input", stage="stem", block="stem",
                   out_shape=spec.input_shape(), params=0, macs=0, downsample=False)
        prev = "input"
    for b, rs in groups.items():
        if b in plans and plans[b].entry:
            # VDCNN's max pool in front of a stage: drawn before the block, as at layer level, so the
            # shortcut arc starts after it (both paths see the pooled input)
            entry = {f"{b}.{op.name}": op for op in plans[b].entry}
            for r in rs[:len(entry)]:
                op = entry[r["module"]]
                g.add_node(r["id"], op=op.kind, label=f"{r['id']}: {_op_label(op)}", what=_op_label(op),
                           module=r["module"], stage=r["stage"], block=b, out_shape=r["out_shape"],
                           params=r["params"], macs=r["macs"], downsample=False)
                g.add_edge(prev, r["id"], kind="main")
                prev = r["id"]
            rs = rs[len(entry):]
        params = sum(r["params"] for r in rs)
        macs = sum(r["macs"] for r in rs)
        out = rs[-1]["out_shape"]
        if b in ("stem", "head"):
            nid = "conv1" if b == "stem" else "fc"
            ops = "·".join(r["id"] for r in rs)
            g.add_node(nid, op="stage", label=f"{b}: {ops}", module=nid, stage=b, block=b, out_shape=out,
                       params=params, macs=macs, downsample=False)
            if prev:
                g.add_edge(prev, nid, kind="main")
            prev = nid
            continue
        plan = plans[b]  # the block's own description says whether it downsamples and how it joins
        # after a drawn entry pool the block itself changes only what its convs change
        changes = changes_shape(plan.cin, plan.cout, plan.stride)
        g.add_node(b, op="block", label=f"{b} {BLOCK_NAMES[spec.block]}" + (" ↓" if changes else ""),
                   module=b, stage=plan.stage_name, block=b, out_shape=out, params=params, macs=macs,
                   downsample=changes, stride=plan.stride)
        g.add_edge(prev, b, kind="main")
        if plan.residual:
            add = f"{b}@add"
            g.add_node(add, op="add", label=join_label(plan), module=b, stage=plan.stage_name, block=b,
                       out_shape=out, params=0, macs=0, downsample=False)
            g.add_edge(b, add, kind="main")
            g.add_edge(prev, add, kind=plan.shortcut)
            prev = add
        else:
            prev = b
    return g


def stage_graph(spec: ResNetSpec) -> nx.DiGraph:
    """conv1 (stem), layer1..layerN and the head, each with its block count and output shape."""
    g = nx.DiGraph(name=spec.name, level="stage", residual=spec.residual)
    bg = block_graph(spec)
    prev = None
    stages: dict[str, list[dict[str, Any]]] = {}
    for nid, d in bg.nodes(data=True):
        stages.setdefault(d["stage"], []).append({"id": nid, **d})
    for stage, nodes in stages.items():
        nid = {"stem": "conv1", "head": "fc"}.get(stage, stage)
        blocks = [n for n in nodes if n["op"] == "block"]
        label = stage if stage in ("stem", "head") else f"{stage}: {len(blocks)} × {BLOCK_NAMES[spec.block]}"
        pools = [n for n in nodes if n["op"] == "maxpool"]
        if pools and blocks:  # VDCNN: the stage starts with its max pool, before any block
            label = f"{stage}: {pools[0]['what']}, then {len(blocks)} × {BLOCK_NAMES[spec.block]}"
        if blocks and spec.residual:
            kinds = [bg.edges[e]["kind"] for e in bg.edges if e[1].startswith(f"{stage}.") and
                     bg.edges[e]["kind"] in SHORTCUT_KINDS]
            parts = [f"{kinds.count(k)} {k}" for k in SHORTCUT_KINDS if kinds.count(k)]
            label += "\\n" + ", ".join(parts) + " shortcuts"
        g.add_node(nid, op="stage", label=label, module=nid, stage=stage, block=stage,
                   out_shape=nodes[-1]["out_shape"], params=sum(n["params"] for n in nodes),
                   macs=sum(n["macs"] for n in nodes), blocks=len(blocks))
        if prev:
            g.add_edge(prev, nid, kind="main")
        prev = nid
    return g


def build_graph(spec: ResNetSpec, level: str) -> nx.DiGraph:
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    return {"stage": stage_graph, "block": block_graph, "layer": layer_graph}[level](spec)


def shortcut_edges(g: nx.DiGraph, kind: str | None = None) -> list[tuple[str, str]]:
    """Edges that carry the shortcut (into the add), optionally of one kind."""
    kinds = SHORTCUT_KINDS if kind is None else (kind,)
    return [(u, v) for u, v, k in g.edges(data="kind") if k in kinds and g.nodes[v]["op"] == "add"]


def _bins(values: list[int]) -> list[float]:
    pos = [v for v in values if v > 0]
    if not pos:
        return []
    lo, hi = math.log10(min(pos)), math.log10(max(pos))
    n = len(PALETTE) - 1
    return [lo + (hi - lo) * i / n for i in range(1, n)] if hi > lo else []


def _colour(v: int, edges: list[float]) -> str:
    if v <= 0:
        return "#ffffff"
    x = math.log10(v)
    return PALETTE[1 + sum(x > e for e in edges)]


def _literal(text: str) -> str:
    """``text`` as a piece of a DOT escString that reads exactly as typed: graphviz.escape doubles its
    backslashes (so no ``\\l``, ``\\N``... escapes), quoting later escapes its quotes, newlines become line breaks."""
    return cast(str, graphviz.escape(text)).replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def _label(*lines: str) -> str:
    """A DOT label of literal text lines, one under the other; never read as an HTML-like ``<...>`` label."""
    return cast(str, graphviz.nohtml("\\n".join(_literal(line) for line in lines)))  # a str subclass: keep it


def _id(name: str) -> str:
    """A node or graph id for any string: backslashes doubled (a trailing one would eat the closing
    quote), never HTML-like; the graphviz package adds the quotes and escapes the quotes inside."""
    return cast(str, graphviz.escape(name))  # graphviz's NoHtml str subclass: str() would drop the marker


def _edge(dot: graphviz.Digraph, u: str, v: str, attrs: dict[str, str]) -> None:
    tail, head = _id(u), _id(v)
    if ":" in tail or ":" in head:  # Digraph.edge would read "a:b" as node a, port b: quote the whole id
        dot.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(attributes=attrs)}\n")
    else:
        dot.edge(tail, head, _attributes=attrs)


def to_dot(g: nx.DiGraph, *, show: str | None = None, color_by: str | None = None,
           title: str | None = None) -> str:
    """DOT source: a top-to-bottom column, shortcuts as arcs, optional metric labels and colours.

    Names, ids and the title may be any string (quotes, backslashes, braces, ``<...>``, newlines): the
    graphviz package quotes them. In node labels of ``g`` the two characters ``\\n`` mark a line break
    (stage labels use it); every other character of a label is literal text."""
    for m in (show, color_by):
        if m is not None and m not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {m!r}")
    graph_attr = {"rankdir": "TB", "nodesep": "0.35", "ranksep": "0.22", "fontname": "Helvetica", "fontsize": "11"}
    if title:
        graph_attr |= {"labelloc": "t", "label": _label(title)}
    dot = graphviz.Digraph(name=_id(g.graph.get("name", "resnet")), graph_attr=graph_attr,
                           node_attr={"fontname": "Helvetica", "fontsize": "10", "fillcolor": "#ffffff",
                                      "margin": "0.08,0.03"},
                           edge_attr={"arrowsize": "0.6"})
    values = [d[color_by] for _, d in g.nodes(data=True)] if color_by else []
    bins = _bins(values) if color_by else []
    for nid, d in g.nodes(data=True):
        lines = d["label"].split("\\n")
        if d["op"] != "add":
            lines.append(_shape(d["out_shape"]))
            if show and d[show]:
                lines.append(f"{show}: {_si(d[show])}")
        fill = _colour(d[color_by], bins) if color_by else ("#ffffff" if d["op"] != "add" else "#f0f0f0")
        attrs = {**NODE_STYLE[d["op"]], "fillcolor": fill}
        if d["op"] == "add" and d["label"] != "+":  # a variant's weighted sum does not fit the small circle
            attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": fill}
        if fill in PALETTE[4:]:
            attrs["fontcolor"] = "#ffffff"
        if d.get("downsample"):
            attrs["penwidth"] = "2"
        if d.get("path", "main") == "main":  # keeps the main path in one straight column; shortcut nodes sit beside it
            attrs["group"] = "main"
        # hovering shows the label, not the node id (ids such as "relu#2" are internal; on layer-level
        # diagrams the label starts with the torchvision module name anyway)
        attrs["tooltip"] = " · ".join(lines)
        dot.node(_id(nid), label=_label(*lines), _attributes=attrs)
    for u, v, kind in g.edges(data="kind"):
        _edge(dot, u, v, EDGE_STYLE[kind])
    if color_by and bins:
        dot.subgraph(_legend(color_by, values, bins))
    return str(dot.source)


def _legend(metric: str, values: list[int], bins: list[float]) -> graphviz.Digraph:
    """The colour key: a cluster of one box per colour bin, stacked by invisible edges."""
    pos = [v for v in values if v > 0]
    bounds = [min(pos)] + [int(10 ** b) for b in bins] + [max(pos)]
    legend = graphviz.Digraph(name="cluster_legend", graph_attr={
        "label": _label(f"{metric} (log scale)"), "fontsize": "10", "style": "rounded", "color": "#999999"})
    prev = None
    for i in range(len(bounds) - 1):
        nid = f"legend_{i}"
        fill = PALETTE[1 + i]
        attrs = {"shape": "box", "style": "filled", "fillcolor": fill}
        if fill in PALETTE[4:]:
            attrs["fontcolor"] = "#ffffff"
        legend.node(nid, label=_label(f"{_si(bounds[i])} – {_si(bounds[i + 1])}"), _attributes=attrs)
        if prev:
            legend.edge(prev, nid, style="invis")
        prev = nid
    return legend


def diagram(spec: ResNetSpec, level: str = "block", *, show: str | None = None,
            color_by: str | None = None) -> str:
    """DOT source of ``spec`` at ``level`` (stage, block or layer)."""
    return to_dot(build_graph(spec, level), show=show, color_by=color_by, title=f"{spec.name} ({spec.variant})")


def _op_label(op: Op) -> str:
    """What a reader needs of an op: 'conv2 3×3, 128 /2', 'bn1 (BN)', 'ReLU', 'zero-pad to 128 /2'."""
    return op.rule.label(op)


def plan_graph(plan: BlockPlan, size: int) -> nx.DiGraph:
    """One block drawn from its plan at input ``size`` x ``size`` (or ``size`` samples for a 1-D
    plan): the input x, the branch ops, the shortcut ops (dashed projection, dotted zero-pad, solid
    identity), the add and what follows it. Shapes are computed along each path, so they follow the
    chosen channels, stride and size."""
    g = nx.DiGraph(name=plan.name, level="layer", residual=plan.residual)
    g.add_node("x", op="stage", label="x", out_shape=(plan.cin,) + (size,) * plan.dims, params=0, macs=0)
    seen: dict[str, int] = {}

    def run(ops: tuple[Op, ...], start: str, kind: str, path: str) -> str:
        prev = start
        c, *sizes = g.nodes[start]["out_shape"]
        x = Flow(c, tuple(sizes))
        for op in ops:
            seen[op.name] = seen.get(op.name, 0) + 1
            nid = op.name if seen[op.name] == 1 else f"{op.name}#{seen[op.name]}"  # ids never shown
            y = flow(op, x)
            counts = op.rule.counts(op, x, y)
            g.add_node(nid, op=op.kind, label=_op_label(op), out_shape=y.shape, params=counts.get("params", 0),
                       macs=counts.get("macs", 0), path=path)
            x = y
            g.add_edge(prev, nid, kind=kind)
            prev = nid
        return prev

    start = run(plan.entry, "x", "main", "main") if plan.entry else "x"
    last = run(plan.residual_ops, start, "main", "main")
    if plan.residual:
        short = run(plan.shortcut_ops, start, plan.shortcut, "shortcut") if plan.shortcut_ops else start
        g.add_node("add", op="add", label=join_label(plan), out_shape=g.nodes[last]["out_shape"], params=0,
                   macs=0)
        g.add_edge(last, "add", kind="main")
        g.add_edge(short, "add", kind=plan.shortcut)
        if plan.gate is not None:  # x -> 1x1 conv (+ b_g) -> sigmoid -> weights of the join
            gate = run((plan.gate,), start, "gate", "gate")
            g.add_node("sigmoid", op="sigmoid", label="σ", out_shape=g.nodes[gate]["out_shape"], params=0,
                       macs=0, path="gate")
            g.add_edge(gate, "sigmoid", kind="main")
            g.add_edge("sigmoid", "add", kind="gate")
        last = "add"
    for i, op in enumerate(plan.after_add):
        nid = "out" if i == len(plan.after_add) - 1 else f"after_add{i}"
        label = "ReLU" if op.kind == "relu" else f"{_op_label(op)} after the add"
        g.add_node(nid, op=op.kind, label=label, out_shape=g.nodes[last]["out_shape"],
                   params=op.weight_count, macs=0)
        g.add_edge(last, nid, kind="main")
        last = nid
    return g


def block_diagram(cfg: BlockConfig) -> str:
    """DOT of the block the block-comparison page describes (same plan as its table)."""
    return to_dot(plan_graph(plan_for(cfg), cfg.size))


# the blocks "Block internals" offers: the four of block comparison in 2-D and in 1-D, and in 1-D
# also VDCNN's (Conneau et al. 2017: convs with bias, a max pool in front of a stage's first block)
INTERNAL_KINDS: dict[int, tuple[str, ...]] = {2: BLOCK_KINDS, 1: BLOCK_KINDS + ("vdcnn",)}
VDCNN_LENGTH = 1024  # VDCNN's first stage sees the whole text: 64 channels x 1,024 samples


def block_internals(kind: str, *, projection: bool = False, dims: int = 2) -> str:
    """DOT of a typical block: BasicBlock (64 channels), Bottleneck (256 in and out, width 64) or
    their pre-activation versions, with an identity shortcut or (``projection=True``) the stride-2
    1x1 projection of a downsampling block, at 56x56 (``dims=1``: their Conv1d versions at 56
    samples). ``kind="vdcnn"`` (1-D only) is VDCNN's block at 64 channels and 1,024 samples; its
    downsampling version is VDCNN's layer2.0: a 3-wide max pool /2 before both paths, then convs
    with bias from 64 to 128 channels and a 1-wide projection."""
    if dims not in INTERNAL_KINDS:
        raise ConfigError(f"dims must be 1 (Conv1d) or 2 (Conv2d), got {dims!r}")
    if kind not in INTERNAL_KINDS[dims]:
        raise ConfigError(f"unknown {dims}-D block kind {kind!r}; choose one of {', '.join(INTERNAL_KINDS[dims])}")
    if kind == "vdcnn":
        cout = 128 if projection else 64
        plan = make_plan(name="vdcnn", stage=0, index=0, block="basic", cin=64, width=cout, cout=cout,
                         stride=2 if projection else 1, option="B", dims=1, conv_bias=True, downsampling="maxpool")
        return to_dot(plan_graph(plan, VDCNN_LENGTH))
    c = 64 if kind.endswith("basic") else 256
    return block_diagram(BlockConfig(kind, c, c, 64, 56, 2 if projection else 1, dims=dims))


def has_dot() -> bool:
    """Whether Graphviz's ``dot`` program runs (``render`` needs it; the DOT source does not)."""
    try:
        graphviz.version()
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, RuntimeError, OSError):
        return False
    return True


def render(dot_source: str, fmt: str = "svg") -> bytes:
    """Render DOT with Graphviz's ``dot`` (SVG or PNG) through the graphviz package.

    Raises ConfigError for another format, LensError when dot is not installed, RuntimeError (with
    dot's message) when dot rejects the source. The page offers renders only below MAX_DRAW_NODES,
    which dot lays out in seconds (graphviz 0.21's ``pipe`` takes no timeout)."""
    if fmt not in ("svg", "png"):
        raise ConfigError(f"format must be svg or png, got {fmt!r}")
    try:
        return bytes(graphviz.Source(dot_source).pipe(format=fmt, quiet=True))
    except graphviz.ExecutableNotFound as e:
        raise LensError("Graphviz's dot program is not installed (apt-get install graphviz); "
                        "download the DOT source instead and render it elsewhere") from e
    except graphviz.CalledProcessError as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr or "")
        raise RuntimeError(f"dot failed (exit {e.returncode}): {err[:500]}") from e
