"""Shortcut diagrams generated from a spec, drawn the way He et al. 2015, Fig. 3 draws them.

Pure functions: a spec becomes a networkx graph (node ids are torchvision module names, with
``@k`` for the k-th call of a reused module and ``<block>@add`` for the residual add), and a graph
becomes DOT source. Identity shortcuts are solid arcs, projection shortcuts (1x1 conv + BN) dashed,
option-A zero-padding shortcuts dotted and labelled. Rendering to SVG/PNG needs Graphviz's ``dot``.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import networkx as nx

from .costs import trace
from .specs import ResNetSpec

LEVELS = ("stage", "block", "layer")
# Beyond this many nodes a browser takes tens of seconds to lay a graph out: offer the DOT instead.
MAX_DRAW_NODES = 2500
METRICS = ("params", "macs")
SHORTCUT_KINDS = ("identity", "projection", "pad")

EDGE_STYLE = {
    "main": 'color="#444444"',
    "identity": 'style=solid color="#1f77b4" penwidth=1.6 tailport=e headport=e constraint=false',
    "projection": 'style=dashed color="#d62728" penwidth=1.6',
    "pad": 'style=dotted color="#2ca02c" penwidth=1.8 label=" zero-pad" fontcolor="#2ca02c"',
}
NODE_STYLE = {
    "conv": 'shape=box style="rounded,filled"',
    "bn": 'shape=box style="filled" height=0.3',
    "relu": 'shape=box style="filled" height=0.3',
    "add": 'shape=circle style="filled" width=0.35 fixedsize=true',
    "pad": 'shape=box style="dotted,filled"',
    "maxpool": 'shape=box style="filled"',
    "avgpool": 'shape=box style="filled"',
    "fc": 'shape=box style="rounded,filled"',
    "block": 'shape=box style="rounded,filled"',
    "stage": 'shape=box style="rounded,filled"',
}
# Blues, light to dark, for colouring nodes by a metric on a log scale.
PALETTE = ("#eff3ff", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c")
BLOCK_NAMES = {"basic": "BasicBlock", "bottleneck": "Bottleneck"}


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
    for r in trace(spec):
        nid = r["id"]
        op = r["op"]
        label = {"add": "+", "pad": "zero-pad"}.get(op, nid)
        g.add_node(nid, op=op, label=label, module=r["module"], stage=r["stage"], block=r["block"],
                   out_shape=r["out_shape"], params=r["params"], macs=r["macs"],
                   kernel=r["kernel"], stride=r["stride"], path=r["path"])
        if r["block"] != current:
            current, block_in, short_last, short_kind = r["block"], prev, None, "identity"
        if r["path"] == "shortcut":
            short_kind = "pad" if op == "pad" else "projection"
            g.add_edge(short_last or block_in, nid, kind=short_kind)
            short_last = nid
            continue
        if prev is not None:
            g.add_edge(prev, nid, kind="main")
        if op == "add":
            g.add_edge(short_last or block_in, nid, kind=short_kind if short_last else "identity")
        prev = nid
    return g


def block_graph(spec: ResNetSpec) -> nx.DiGraph:
    """One node per residual block (F), one per add; shortcut arcs from the block input to its add."""
    g = nx.DiGraph(name=spec.name, level="block", residual=spec.residual)
    rows = trace(spec)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["block"], []).append(r)
    prev: str | None = None
    for b, rs in groups.items():
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
        short = [r for r in rs if r["path"] == "shortcut"]
        stride = max(r["stride"] for r in rs)
        down = stride > 1 or rs[0]["in_shape"][0] != out[0]
        g.add_node(b, op="block", label=f"{b} {BLOCK_NAMES[spec.block]}" + (" ↓" if down else ""),
                   module=b, stage=rs[0]["stage"], block=b, out_shape=out, params=params, macs=macs,
                   downsample=down, stride=stride)
        g.add_edge(prev, b, kind="main")
        if any(r["op"] == "add" for r in rs):
            add = f"{b}@add"
            g.add_node(add, op="add", label="+", module=b, stage=rs[0]["stage"], block=b, out_shape=out,
                       params=0, macs=0, downsample=False)
            g.add_edge(b, add, kind="main")
            kind = "identity" if not short else ("pad" if short[0]["op"] == "pad" else "projection")
            g.add_edge(prev, add, kind=kind)
            prev = add
        else:
            prev = b
    return g


def stage_graph(spec: ResNetSpec) -> nx.DiGraph:
    """conv1 (stem), layer1..layerN and the head, each with its block count and output shape."""
    g = nx.DiGraph(name=spec.name, level="stage", residual=spec.residual)
    bg = block_graph(spec)
    prev = None
    stages: dict[str, list[dict]] = {}
    for nid, d in bg.nodes(data=True):
        stages.setdefault(d["stage"], []).append({"id": nid, **d})
    for stage, nodes in stages.items():
        nid = {"stem": "conv1", "head": "fc"}.get(stage, stage)
        blocks = [n for n in nodes if n["op"] == "block"]
        label = stage if stage in ("stem", "head") else f"{stage}: {len(blocks)} × {BLOCK_NAMES[spec.block]}"
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
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
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


def to_dot(g: nx.DiGraph, *, show: str | None = None, color_by: str | None = None,
           title: str | None = None) -> str:
    """DOT source: a top-to-bottom column, shortcuts as arcs, optional metric labels and colours."""
    for m in (show, color_by):
        if m is not None and m not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {m!r}")
    lines = [f'digraph "{g.graph.get("name", "resnet")}" {{',
             '  graph [rankdir=TB nodesep=0.35 ranksep=0.22 fontname="Helvetica" fontsize=11];',
             '  node [fontname="Helvetica" fontsize=10 fillcolor="#ffffff" margin="0.08,0.03"];',
             '  edge [arrowsize=0.6];']
    if title:
        lines.append(f'  labelloc=t; label="{title}";')
    bins = _bins([d[color_by] for _, d in g.nodes(data=True)]) if color_by else []
    for nid, d in g.nodes(data=True):
        text = d["label"]
        if d["op"] != "add":
            text += f"\\n{_shape(d['out_shape'])}"
            if show and d[show]:
                text += f"\\n{show}: {_si(d[show])}"
        fill = _colour(d[color_by], bins) if color_by else ("#ffffff" if d["op"] != "add" else "#f0f0f0")
        font = ' fontcolor="#ffffff"' if fill in PALETTE[4:] else ""
        pen = " penwidth=2" if d.get("downsample") else ""
        # group keeps the main path in one straight column; shortcut nodes sit beside it
        group = ' group="main"' if d.get("path", "main") == "main" else ""
        lines.append(f'  "{nid}" [{NODE_STYLE[d["op"]]} label="{text}" fillcolor="{fill}"{font}{pen}{group}];')
    for u, v, kind in g.edges(data="kind"):
        lines.append(f'  "{u}" -> "{v}" [{EDGE_STYLE[kind]}];')
    if color_by and bins:
        lines += _legend(color_by, [d[color_by] for _, d in g.nodes(data=True)], bins)
    lines.append("}")
    return "\n".join(lines)


def _legend(metric: str, values: list[int], bins: list[float]) -> list[str]:
    pos = [v for v in values if v > 0]
    bounds = [min(pos)] + [int(10 ** b) for b in bins] + [max(pos)]
    out = ['  subgraph cluster_legend {', f'    label="{metric} (log scale)"; fontsize=10; style=rounded; color="#999999";']
    prev = None
    for i in range(len(bounds) - 1):
        nid = f"legend_{i}"
        fill = PALETTE[1 + i]
        font = ' fontcolor="#ffffff"' if fill in PALETTE[4:] else ""
        out.append(f'    "{nid}" [shape=box style=filled fillcolor="{fill}"{font} '
                   f'label="{_si(bounds[i])} – {_si(bounds[i + 1])}"];')
        if prev:
            out.append(f'    "{prev}" -> "{nid}" [style=invis];')
        prev = nid
    out.append("  }")
    return out


def diagram(spec: ResNetSpec, level: str = "block", *, show: str | None = None,
            color_by: str | None = None) -> str:
    """DOT source of ``spec`` at ``level`` (stage, block or layer)."""
    return to_dot(build_graph(spec, level), show=show, color_by=color_by, title=f"{spec.name} ({spec.variant})")


def block_internals(kind: str, *, projection: bool = False) -> str:
    """DOT of one block's internals: BasicBlock, Bottleneck or their pre-activation versions,
    with an identity shortcut or (``projection=True``) the 1x1 projection of a downsampling block."""
    from .specs import custom_spec

    if kind not in ("basic", "bottleneck", "preact_basic", "preact_bottleneck"):
        raise ValueError(f"unknown block kind {kind!r}")
    block = "basic" if kind.endswith("basic") else "bottleneck"
    # A tiny two-stage net: layer2.0 strides (projection shortcut), layer2.1 keeps its shape (identity).
    spec = custom_spec(block=block, layers=(1, 2), widths=(64, 64), stem="cifar", stem_width=64,
                       preact=kind.startswith("preact"), input_size=56)
    g = layer_graph(spec)
    target = "layer2.0" if projection else "layer2.1"
    keep = [n for n, d in g.nodes(data=True) if d["block"] == target]
    sub = g.subgraph(keep).copy()
    for n in keep:  # "layer2.1.conv1" -> "conv1": the block on its own
        if sub.nodes[n]["op"] != "add":
            sub.nodes[n]["label"] = sub.nodes[n]["label"].removeprefix(f"{target}.")
    source = next(u for u in g.predecessors(keep[0]))
    sub.add_node("x", op="stage", label="x", out_shape=g.nodes[source]["out_shape"], params=0, macs=0)
    for u, v, k in g.edges(data="kind"):
        if v in keep and u not in keep:
            sub.add_edge("x", v, kind=k)
    sub.graph["name"] = kind
    return to_dot(sub)


def has_dot() -> bool:
    return shutil.which("dot") is not None


def render(dot_source: str, fmt: str = "svg", timeout: float = 120) -> bytes:
    """Render DOT with Graphviz's ``dot`` (SVG or PNG). Raises RuntimeError if dot is missing."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"format must be svg or png, got {fmt!r}")
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz's dot program is not installed (apt-get install graphviz)")
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.decode(errors='replace')[:500]}")
    return proc.stdout
