"""Shortcut diagrams generated from a spec, drawn the way He et al. 2015, Fig. 3 draws them.

Pure functions: a spec becomes a networkx graph (node ids are torchvision module names, with
``@k`` for the k-th call of a reused module and ``<block>@add`` for the residual add), and a graph
becomes DOT source. Identity shortcuts are solid arcs, projection shortcuts (1x1 conv + BN) dashed,
option-A zero-padding shortcuts dotted and labelled. Rendering to SVG/PNG needs Graphviz's ``dot``.

Any net (issue 23): :func:`net_graph` draws a :class:`~analysis.arch.graphnet.GraphNet` (an opened
``torch.export`` program, or a spec's record) from its data flow and residual units, with the same node
and edge attributes, so :func:`to_dot` and :func:`shortcut_edges` read it as they read a spec's graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import graphviz
import networkx as nx
from graphviz.quoting import attr_list, quote

from analysis.arch.blockplan import BlockPlan, block_plans, changes_shape, make_plan
from analysis.arch.blocks import BLOCK_KINDS, BlockConfig, plan_for
from analysis.arch.costs import trace
from analysis.arch.ops import Flow, Op, flow
from analysis.arch.specs import ResNetSpec
from analysis.core.errors import ConfigError, LensError

if TYPE_CHECKING:  # graphnet imports this module (spec_net's flow): the record's types only, never at run time
    from analysis.arch.graphnet import GraphNet
    from analysis.arch.units import Unit

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
    "kmax": _BOX,
    "fc": _ROUNDED,
    "block": _ROUNDED,
    "stage": _ROUNDED,
    "op": _THIN,  # an opened net's other ops (views, GELU, softmax, an add that joins no unit...)
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
    # an opened net's graph may nest units (and the units of one module) in clusters: each node names
    # its chain of clusters, outermost first, and the graph their labels
    clusters = {cid: graphviz.Digraph(name=cid, graph_attr={
        "label": _label(text), "style": "rounded", "color": "#b0b0b0", "fontsize": "9", "labeljust": "l"})
        for cid, text in (g.graph.get("clusters") or {}).items()}
    outer: dict[str, str | None] = {}
    for nid, d in g.nodes(data=True):
        lines = d["label"].split("\\n")
        if d["op"] != "add" and d["out_shape"]:  # a tuple-valued op (unbind) has no shape to show
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
        chain = tuple(d.get("cluster") or ())
        for i, cid in enumerate(chain):
            outer[cid] = chain[i - 1] if i else None
        (clusters[chain[-1]] if chain else dot).node(_id(nid), label=_label(*lines), _attributes=attrs)

    def depth(cid: str) -> int:
        up = outer.get(cid)
        return 0 if up is None else 1 + depth(up)

    # innermost first: graphviz copies a subgraph's lines when it is attached, so a cluster is complete
    # (its nodes and inner clusters) before it goes into the one around it
    for cid in sorted(outer, key=depth, reverse=True):
        up = outer[cid]
        (clusters[up] if up is not None else dot).subgraph(clusters[cid])
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


# ------------------------------------------------------------------------------ any net (issue 23)
NET_LEVELS = ("units", "modules", "ops")
_ROOT = "\x00root"  # the dominator tree's virtual source: no node id holds a NUL
# ATen's names (and the cost table's) for the ops a diagram gives a shape of its own; the rest are "op"
_STYLE_PREFIXES = (
    (("conv", "_conv"), "conv"),
    (("linear", "addmm", "mm", "bmm", "matmul", "baddbmm", "scaled_dot_product_attention", "fc"), "fc"),
    (("batch_norm", "_native_batch_norm", "native_batch_norm", "bn", "layer_norm", "native_layer_norm",
      "group_norm", "native_group_norm"), "bn"),
    (("relu", "gelu", "silu", "hardtanh", "hardswish", "leaky_relu", "elu", "tanh"), "relu"),
    (("sigmoid", "hardsigmoid"), "sigmoid"),
    (("max_pool", "maxpool"), "maxpool"),
    (("avg_pool", "adaptive_avg_pool", "avgpool", "mean"), "avgpool"),
    (("constant_pad_nd", "pad"), "pad"),
)
_TAIL_SKIP = {"getitem"}  # a native norm's output taken from its tuple: no op of its own


def op_style(op: str) -> str:
    """The NODE_STYLE key an op is drawn with: 'conv2d' -> 'conv', 'layer_norm' -> 'bn', 'view' -> 'op'."""
    for prefixes, style in _STYLE_PREFIXES:
        if op.startswith(prefixes):
            return style
    return "op"


def spec_flow(spec: ResNetSpec) -> tuple[tuple[str, str], ...]:
    """The data flow of ``spec``'s cost-table rows as (producer, consumer) ids, from ``"input"``: the
    edges of its layer diagram, with the rows that diagram folds into a label put back in the flow (a
    variant's ``<block>@scale`` sits between the branch and the add)."""
    g = layer_graph(spec)
    out = nx.DiGraph()
    out.add_nodes_from(g.nodes)
    out.add_edges_from(g.edges)
    if "input" not in out:  # a stem's first op reads the input (a stem-less net's diagram draws it)
        for nid in [n for n in g.nodes if g.in_degree(n) == 0]:
            out.add_edge("input", nid)
    rows = trace(spec)
    adds = {r["block"]: r["id"] for r in rows if r["op"] == "add"}
    for r in rows:
        if r["op"] != "scale":
            continue
        add = adds[r["block"]]
        for u in [u for u in g.predecessors(add) if g.edges[u, add]["kind"] == "main"]:
            out.remove_edge(u, add)
            out.add_edge(u, r["id"])
        out.add_edge(r["id"], add)
    return tuple((str(u), str(v)) for u, v in out.edges)


@dataclass(frozen=True)
class UnitSpan:
    """Where a residual unit sits in a net's flow: the node it reads (x), its add, every node after x
    up to the add (the add included: branch F, shortcut s, any gate), the shortcut's own nodes (none
    for an identity), what alone follows the add inside the unit (its ``post``: a ReLU, BN then ReLU, a
    LayerNorm) and the innermost unit whose branch holds it."""

    unit: Unit
    x: str
    add: str
    body: frozenset[str]
    shortcut: frozenset[str]
    tail: tuple[str, ...]
    parent: str | None = None

    @property
    def name(self) -> str:
        return self.unit.name


class _Flow:
    """A GraphNet's rows by id, its flow as a graph (user inputs included) and shapes as drawn."""

    def __init__(self, net: GraphNet) -> None:
        self.net = net
        records = net.nodes.to_dict("records")
        self.rows: dict[str, dict[str, Any]] = {str(r["id"]): r for r in records}
        names = list(net.inputs)
        if not names and net.edges:  # a source that names no inputs: what is read but never computed
            names = list(dict.fromkeys(u for u, _ in net.edges if u not in self.rows))
        # input_shapes always hold the batch axis (analysis.arch.graphnet.GraphNet)
        self.input_shapes = {n: tuple(s[1:]) for n, s in zip(names, net.input_shapes, strict=False)}
        # the example's batch, where the rows' shapes carry it (a spec's rows leave it out)
        self.batch = int(net.input_shapes[0][0]) if net.batched and net.input_shapes and net.input_shapes[0] else None
        self.inputs = names
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(names)
        self.graph.add_nodes_from(self.rows)
        ids = list(self.rows)
        self.recorded = bool(net.edges)
        # without a recorded flow the rows are drawn in their (graph) order: a chain, and no unit placed
        self.graph.add_edges_from(net.edges if self.recorded else zip(ids, ids[1:], strict=False))
        self.order = {n: i for i, n in enumerate(self.graph.nodes)}

    def shape(self, nid: str) -> tuple[int, ...]:
        """The node's output shape without the batch axis (1×64×56×56 is drawn 64×56×56)."""
        if nid in self.input_shapes:
            return self.input_shapes[nid]
        row = self.rows.get(nid)
        shape = tuple(int(v) for v in row["out_shape"]) if row is not None else ()
        return shape[1:] if self.net.batched and shape else shape

    def drawn(self, nid: str) -> tuple[int, ...]:
        """The node's output shape as a reader is shown it: without the batch axis where its axis 0 is
        the example's batch (1×64×56×56 is drawn 64×56×56), whole where an op moved the batch elsewhere
        (attention's sequence-first (L, N, E): 10×2×64 for a batch of 2 stays 10×2×64)."""
        if nid in self.input_shapes:
            return self.input_shapes[nid]
        row = self.rows.get(nid)
        shape = tuple(int(v) for v in row["out_shape"]) if row is not None else ()
        if self.net.batched and shape and (self.batch is None or shape[0] == self.batch):
            return shape[1:]  # (a net that names no input shape: axis 0 is taken for the batch, as before)
        return shape

    def params(self, nids: Iterable[str]) -> int:
        return sum(int(self.rows[n]["params"]) for n in nids if n in self.rows)

    def back(self, end: str, start: str) -> set[str]:
        """``end`` and every node before it on a path that does not pass ``start``."""
        if end == start:
            return set()
        seen, todo = {end}, [end]
        while todo:
            for p in self.graph.predecessors(todo.pop()):
                if p != start and p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    def dominators(self) -> dict[str, str]:
        """Immediate dominators over the nodes that flow from the inputs (a row computed from weights
        alone, such as a mask, is no path around a unit's input)."""
        dag = nx.DiGraph()
        starts = [n for n in self.inputs if n in self.graph] or \
            [n for n in self.graph if self.graph.in_degree(n) == 0]
        live = set(starts)
        for n in starts:
            live |= nx.descendants(self.graph, n)
        dag.add_edges_from((u, v) for u, v in self.graph.edges if u in live and v in live)
        dag.add_edges_from((_ROOT, n) for n in starts)
        return cast(dict[str, str], nx.immediate_dominators(dag, _ROOT))

    def span(self, add: str, unit: Unit, idom: dict[str, str]) -> UnitSpan | None:
        """The unit at ``add`` if the flow shows it there: two operands, an input x other than the
        net's start, the unit's shapes, and weights after x (its branch F holds them)."""
        preds = list(self.graph.predecessors(add))
        x = idom.get(add, _ROOT)
        if len(preds) != 2 or x == _ROOT or self.shape(add) != tuple(unit.out_shape) or \
                self.shape(x) != tuple(unit.in_shape):
            return None
        before = self.back(add, x)
        # after x: what x reaches inside ``before`` (a row computed from weights alone, such as a
        # broadcast γ, may feed the branch without flowing from x)
        body = before & nx.descendants(self.graph.subgraph(before | {x}), x)
        if not self.params(body - {add}):
            return None
        paths = [self.back(p, x) & body for p in preds]
        short = min(paths, key=len)  # the shortcut is the shorter path (empty: x itself is the operand)
        return UnitSpan(unit=unit, x=x, add=add, body=frozenset(body), shortcut=frozenset(short),
                        tail=self.tail(add, unit))

    def tail(self, add: str, unit: Unit) -> tuple[str, ...]:
        """The nodes of the unit's ``post`` after its add: each the only reader of the one before, inside
        the unit's module (a norm's getitem passed through)."""
        want = len([k for k in unit.post.split(",") if k])
        out: list[str] = []
        node, done = add, 0
        while done < want:
            after = list(self.graph.successors(node))
            if len(after) != 1 or after[0] not in self.rows:
                break
            node = after[0]
            module = str(self.rows[node]["module"])
            if unit.owner and module != unit.owner and not module.startswith(unit.owner + "."):
                break
            out.append(node)
            done += str(self.rows[node]["op"]) not in _TAIL_SKIP
        return tuple(out)


def unit_spans(net: GraphNet) -> tuple[list[UnitSpan], list[Unit]]:
    """Each unit of ``net`` placed in its flow, and the units it could not place (a source without a
    recorded flow). A unit is at an add of its owner's module with its shapes, its input the add's
    immediate dominator and weights after it; units of one module take its adds in graph order."""
    return _spans(_Flow(net))


def _spans(f: _Flow) -> tuple[list[UnitSpan], list[Unit]]:
    net = f.net
    idom = f.dominators() if f.recorded else {}
    adds: dict[str, list[str]] = {}
    for nid, row in f.rows.items():
        if str(row["op"]) in ("add", "add_"):
            adds.setdefault(str(row["module"]), []).append(nid)
    start: dict[str, int] = {}
    spans: list[UnitSpan] = []
    lost: list[Unit] = []
    for unit in net.units:
        found = None
        candidates = adds.get(unit.owner, [])
        for i in range(start.get(unit.owner, 0), len(candidates)):
            found = f.span(candidates[i], unit, idom)
            if found is not None:
                start[unit.owner] = i + 1
                break
        if found is None:
            lost.append(unit)
        else:
            spans.append(found)
    # nesting: the innermost unit whose body holds this unit's add (as graphnet names a unit's parent)
    holders: dict[str, list[int]] = {}
    for i, s in enumerate(spans):
        for n in s.body:
            holders.setdefault(n, []).append(i)
    out = []
    for i, s in enumerate(spans):
        around = [j for j in holders.get(s.add, []) if j != i]
        parent = min(around, key=lambda j: len(spans[j].body)) if around else None
        out.append(UnitSpan(**{**s.__dict__, "parent": spans[parent].name if parent is not None else None}))
    return out, lost


def _cut(module: str, depth: int | None) -> str:
    """A module path cut at ``depth`` components: 'layer1.0.conv1' at 2 is 'layer1.0'."""
    return ".".join(module.split(".")[:depth]) if depth is not None and module else module


def _owner_depth(owner: str) -> int:
    """A module path's depth in components: '' (the net itself) 0, 'blocks.3' 2."""
    return len(owner.split(".")) if owner else 0


def _kept(spans: list[UnitSpan], depth: int) -> list[UnitSpan]:
    """The units drawn as units when modules are cut at ``depth``: those owned at that depth or above;
    a deeper unit is folded into its module's node (it is inside the cut). Each kept unit's parent is
    its nearest kept holder."""
    by_name = {s.name: s for s in spans}
    keep = {s.name for s in spans if _owner_depth(s.unit.owner) <= depth}
    out = []
    for s in spans:
        if s.name not in keep:
            continue
        parent = s.parent
        while parent is not None and parent not in keep:
            parent = by_name[parent].parent
        out.append(s if parent == s.parent else UnitSpan(**{**s.__dict__, "parent": parent}))
    return out


def _distinct(values: Iterable[str]) -> list[str]:
    return [v for v in dict.fromkeys(values) if v]


class DiagramError(LensError):
    """A diagram that cannot be drawn as recorded (its units and its data flow disagree)."""


def _spanned(span: UnitSpan | None, nid: str) -> UnitSpan:
    """The unit a unit or join node stands for: every such node is made from a found span."""
    if span is None:
        raise DiagramError(f"node {nid} stands for a unit that was not found in the net's data flow")
    return span


def net_graph(net: GraphNet, level: str = "units", depth: int | None = None) -> nx.DiGraph:
    """``net`` drawn from its flow, with the node and edge attributes of the spec diagrams.

    - ``"units"``: one node per residual unit (its branch F) and one per add, the stretches between
      units (stem, head, a transformer's embedding) one node each; a unit that holds units is a
      cluster with its inner units drawn inside it. 35 nodes for a ResNet-34 (input, stem, 16 units and
      their adds, head), 51 for a 12-block ViT.
    - ``"modules"``: ops grouped by module path cut at ``depth`` components (``None``: the full path),
      a module called twice two nodes (``<path>@2``), each unit's add its own node, each unit a cluster;
      a unit owned deeper than ``depth`` (a ViT's ``blocks.3`` at depth 1) is folded into its module's
      node, add and shortcut included, so depth 1 of a 12-block ViT is a handful of nodes.
    - ``"ops"``: every compute node, ids as the source names them (a program's fx names).

    At every level each placed unit (drawn, not folded) has one shortcut edge into its add: from its input, or along its
    shortcut's own nodes where they are drawn apart from the branch; its kind (identity, projection,
    pad) is the unit's, so :func:`shortcut_edges` counts a net's units by kind. The units of one module
    (a transformer block's two) sit in a cluster named after it. ``g.graph["unplaced"]`` lists units the
    flow could not place (none where the source records its flow)."""
    if level not in NET_LEVELS:
        raise ConfigError(f"level must be one of {NET_LEVELS}, got {level!r}")
    if depth is not None and depth < 1:
        raise ConfigError(f"module depth must be 1 or more path components, got {depth}")
    f = _Flow(net)
    spans, lost = _spans(f)
    if level == "modules" and depth is not None:
        spans = _kept(spans, depth)  # units inside a cut module are folded into its node
    by_name = {s.name: s for s in spans}
    children: dict[str | None, list[UnitSpan]] = {}
    for s in spans:
        children.setdefault(s.parent, []).append(s)
    inner: dict[str, UnitSpan] = {}
    for s in sorted(spans, key=lambda s: len(s.body), reverse=True):  # the innermost unit is written last
        for n in (*s.body, *s.tail):
            inner[n] = s
    joins = {} if level == "ops" else {n: s for s in spans for n in (s.add, *s.tail)}
    adds = {s.add: s for s in spans}
    on_shortcut = {n: s for s in spans for n in s.shortcut}

    # what each node is drawn as: a key, and for stretches and modules the connected run of one key
    key: dict[str, tuple[str, ...]] = {}
    for n in f.graph.nodes:
        holder = inner.get(n)
        region = holder.name if holder is not None else ""
        if n not in f.rows:
            key[n] = ("input", n)
        elif n in joins:
            key[n] = ("join", joins[n].name)
        elif level == "ops":
            key[n] = ("op", n)
        elif level == "units":
            leaf = holder is not None and not children.get(holder.name)
            key[n] = ("unit", region) if leaf else ("stretch", region)
        else:
            key[n] = ("module", region, _cut(str(f.rows[n]["module"]), depth))
    root = {n: n for n in key}

    def find(n: str) -> str:
        while root[n] != n:
            root[n] = root[root[n]]
            n = root[n]
        return n

    for u, v in f.graph.edges:
        if key[u] == key[v] and key[u][0] in ("stretch", "module"):
            root[find(u)] = find(v)
    members: dict[tuple[str, ...], list[str]] = {}
    for n in f.graph.nodes:
        k = key[n]
        members.setdefault((*k, find(n)) if k[0] in ("stretch", "module") else k, []).append(n)

    # ids: fixed ones first (inputs, units, adds, ops), then stretches and modules, made unique with @k
    ids: dict[tuple[str, ...], str] = {}
    taken: set[str] = set()
    fixed = ("input", "join", "unit", "op")
    for k in members:
        if k[0] in fixed:
            ids[k] = f"{k[1]}@add" if k[0] == "join" else k[1]
            taken.add(ids[k])
    for k, ms in members.items():
        if k[0] in fixed:
            continue
        rows = [f.rows[n] for n in ms]
        if k[0] == "stretch":
            names = _distinct(str(r["module"]) for r in rows) or _distinct(str(r["op"]) for r in rows)
            base = names[0]
        else:
            base = k[2] or "(net)"
        nid, i = base, 1
        while nid in taken:
            i += 1
            nid = f"{base}@{i}"
        ids[k] = nid
        taken.add(nid)
    disp = {n: ids[k] for k, ms in members.items() for n in ms}

    # clusters: a unit drawn as more than one node, and the units of one module side by side
    clusters: dict[str, str] = {}
    own: dict[str, str] = {}
    for s in spans:
        if level != "units" or children.get(s.name):
            own[s.name] = f"cluster_u{len(clusters)}"
            clusters[own[s.name]] = s.name
    mates: dict[tuple[str | None, str], list[UnitSpan]] = {}
    for s in spans:
        mates.setdefault((s.parent, s.unit.owner), []).append(s)
    shared: dict[str, str] = {}
    for (_, owner), group in mates.items():
        if len(group) > 1:
            cid = f"cluster_o{len(clusters)}"
            clusters[cid] = owner or "(net)"
            shared.update({s.name: cid for s in group})
    chains: dict[str, tuple[str, ...]] = {}

    def chain(s: UnitSpan | None) -> tuple[str, ...]:
        if s is None:
            return ()
        if s.name not in chains:
            up = chain(by_name[s.parent]) if s.parent else ()
            chains[s.name] = up + tuple(c for c in (shared.get(s.name), own.get(s.name)) if c)
        return chains[s.name]

    g = nx.DiGraph(name=net.name, level=level, residual=bool(net.units), depth=depth, clusters=clusters,
                   unplaced=[u.name for u in lost], flow="recorded" if f.recorded else "assumed")
    whole = level == "units"  # a unit's node carries all of it, its add none (as block_graph counts)
    for k, ms in members.items():
        nid = ids[k]
        kind = k[0]
        rows = [f.rows[n] for n in ms if n in f.rows]
        span = by_name.get(k[1]) if kind in ("unit", "join") else inner.get(ms[0])
        costed = [f.rows[n] for n in (*span.body, *span.tail)] if whole and kind == "unit" and span else rows
        if whole and kind == "join":
            costed = []
        cost = {m: sum(int(r[m]) for r in costed) for m in ("params", "macs", "flops")}
        outside = [p for p in f.graph.predecessors(ms[0]) if disp.get(p) != nid]
        in_shape = f.drawn(outside[0]) if outside else ()
        out_shape = f.drawn(ms[-1])
        ops = [str(r["op"]) for r in rows]
        modules = _distinct(str(r["module"]) for r in rows)
        attrs: dict[str, Any] = {"kind": kind, "module": modules[0] if len(modules) == 1 else "", "ops": len(rows)}
        if kind == "input":
            op, label = "stage", ["input" if len(f.inputs) <= 1 else f"input {nid}"]
            out_shape = f.drawn(nid)
        elif kind == "join":
            span = _spanned(span, nid)
            op, label = "add", [span.unit.join.label]
            attrs |= {"module": span.unit.owner, "unit": span.name, "shortcut": span.unit.shortcut}
        elif kind == "unit":
            span = _spanned(span, nid)
            in_shape, out_shape = f.drawn(span.x), f.drawn(span.add)  # the unit's x and sum, as drawn
            down = tuple(span.unit.in_shape) != tuple(span.unit.out_shape)
            op, label = "block", [span.name + (" ↓" if down else "")]
            attrs |= {"module": span.unit.owner, "unit": span.name, "shortcut": span.unit.shortcut,
                      "downsample": down, "ops": len(span.body) + len(span.tail)}
        elif kind == "stretch":
            names = modules or _distinct(ops)
            op, label = "stage", [names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"]
            if len(rows) > 1:
                label.append(f"{len(rows)} ops")
        elif kind == "module":
            styles = {op_style(o) for o in ops}
            op = styles.pop() if len(styles) == 1 else "block"
            if op == "op" and len(rows) > 1:
                op = "block"
            seen = _distinct(ops)
            label = [nid, ", ".join(seen[:3]) + (" …" if len(seen) > 3 else "")]
            attrs["module"] = k[2]
        else:
            row = rows[0]
            op = "add" if ms[0] in adds else op_style(str(row["op"]))
            label = [adds[ms[0]].unit.join.label] if ms[0] in adds else [str(row["module"]) or "(net)", str(row["op"])]
            attrs |= {"module": str(row["module"]), "op_name": str(row["op"])}
        if kind in ("module", "op") and all(n in on_shortcut for n in ms) and \
                len({on_shortcut[n].name for n in ms}) == 1:
            attrs["path"] = "shortcut"  # a shortcut's own node sits beside the main column
        attrs |= {"first": ms[0], "last": ms[-1]}
        g.add_node(nid, op=op, label="\\n".join(label), out_shape=out_shape, in_shape=in_shape,
                   cluster=chain(span) if kind != "input" else (), **cost, **attrs)

    # edges: the flow between drawn nodes; along a unit's shortcut (from x through its own nodes to the
    # add) the unit's kind, where the nodes it joins are drawn apart from the branch
    kinds: dict[tuple[str, str], str] = {}
    for a, b in f.graph.edges:
        da, db = disp[a], disp[b]
        if da == db:
            continue
        kind = "main"
        on = adds.get(b) or on_shortcut.get(b)
        if on is not None and (a == on.x or a in on.shortcut) and \
                (da == disp[on.x] or g.nodes[da].get("path") == "shortcut") and \
                (db == disp[on.add] or g.nodes[db].get("path") == "shortcut"):
            kind = on.unit.shortcut
        if kinds.get((da, db), "main") == "main":
            kinds[(da, db)] = kind
    for s in spans:  # a shortcut drawn inside its unit's node (or a module's) is the arc from x to the add
        join = disp[s.add]
        if not any(kinds.get((u, join)) in SHORTCUT_KINDS for u in g.nodes):
            kinds[(disp[s.x], join)] = s.unit.shortcut
    for (u, v), kind in kinds.items():
        g.add_edge(u, v, kind=kind)
    return g


def net_dot(net: GraphNet, level: str = "units", depth: int | None = None, *, show: str | None = None,
            color_by: str | None = None) -> str:
    """DOT source of ``net`` at ``level`` (units, modules or ops; ``depth`` cuts module paths)."""
    cut = f" to depth {depth}" if level == "modules" and depth is not None else ""
    return to_dot(net_graph(net, level, depth), show=show, color_by=color_by, title=f"{net.name} ({level}{cut})")


def node_details(g: nx.DiGraph, nid: str) -> dict[str, str]:
    """What a reader wants of one drawn node, as text: its id, module path, shapes, costs, and for a
    unit its shortcut and join. Works on the spec diagrams' graphs too."""
    d = g.nodes[nid]
    out = {"node": str(nid), "label": str(d.get("label", "")).replace("\\n", " · ")}
    for name, text in (("kind", "drawn as"), ("module", "module path")):
        if d.get(name) not in (None, ""):
            out[text] = str(d[name])
    op = d.get("op_name") or (d.get("op") if "kind" not in d else None)  # a spec graph's op is its op's kind
    if op:
        out["op"] = str(op)
    if d.get("in_shape"):
        out["input shape"] = _shape(d["in_shape"])
    if d.get("out_shape"):
        out["output shape"] = _shape(d["out_shape"])
    for name, text in (("params", "parameters"), ("macs", "MACs"), ("flops", "FLOPs"), ("ops", "ops")):
        if isinstance(d.get(name), int):
            out[text] = f"{d[name]:,}"
    for name in ("unit", "shortcut", "stage", "block"):
        if d.get(name) not in (None, ""):
            out[name] = str(d[name])
    if d.get("first") and d.get("last") and d["first"] != d["last"]:
        out["graph nodes"] = f"{d['first']} … {d['last']}"
    ins = [f"{u} ({k})" for u, _, k in g.in_edges(nid, data="kind") if k != "main"]
    if ins:
        out["shortcut in"] = ", ".join(ins)
    return out
