"""An interactive diagram viewer: Graphviz's SVG with pan, zoom, search and node details, all offline.

The DOT is rendered to SVG on the server (Graphviz's ``dot``, cached by its text) and shown in an iframe
(``st.iframe``: Streamlit 1.67 deprecates ``components.v1.html`` for it, same srcdoc iframe) with a
hand-written script and nothing fetched from anywhere: drag to pan, the wheel or the buttons to zoom,
*Fit* for the whole diagram, a search box that marks every node whose name or label holds the text
and centres the first (Enter steps to the next), and a click on a node opens a panel with its module
path, shapes and costs. Where ``dot`` is missing the diagram falls back to ``st.graphviz_chart``
(drawn in the browser, no pan or search). A "Node" selectbox under the diagram shows the same
details as a table on the Streamlit side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import networkx as nx
import pandas as pd
import streamlit as st

from analysis.arch import diagrams
from analysis.arch.graphnet import GraphNet, no_unit_reason
from ui import cache
from ui.fmt import fmt_int
from ui.widgets import Metric, metric_row, table

HEIGHT = 620  # px: a block-level ResNet-50 is readable at its top, the rest a drag or a Fit away

_STYLE = """
html, body { margin: 0; height: 100%; font: 13px -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
#bar { display: flex; gap: 6px; align-items: center; height: 32px; padding: 0 6px; box-sizing: border-box;
       border-bottom: 1px solid #ddd; background: #fafafa; }
#bar input { width: 220px; padding: 3px 6px; }
#bar button { min-width: 30px; padding: 2px 8px; cursor: pointer; }
#count { color: #555; min-width: 76px; }
#hint { color: #888; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
#stage { position: absolute; top: 32px; left: 0; right: 0; bottom: 0; overflow: hidden; cursor: grab;
         background: #fff; touch-action: none; }
#stage.dragging { cursor: grabbing; }
#stage svg { width: 100%; height: 100%; display: block; }
g.node { cursor: pointer; }
g.node.hit polygon, g.node.hit ellipse, g.node.hit path { stroke: #ff7f0e; stroke-width: 4px; }
g.node.picked polygon, g.node.picked ellipse, g.node.picked path { stroke: #d62728; stroke-width: 4px; }
#panel { position: absolute; top: 40px; right: 8px; max-width: 46%; max-height: calc(100% - 56px); overflow: auto;
         background: #fff; border: 1px solid #bbb; border-radius: 6px; box-shadow: 0 2px 8px rgba(0,0,0,.18);
         padding: 6px 8px; display: none; }
#panel table { border-collapse: collapse; margin-top: 4px; }
#panel td { padding: 2px 6px; vertical-align: top; border-bottom: 1px solid #eee; word-break: break-word; }
#panel td:first-child { color: #555; white-space: nowrap; }
#close { float: right; cursor: pointer; }
"""

# Hand-written (no library, no network): the viewBox is the camera. With the SVG's default
# preserveAspectRatio (xMidYMid meet) one viewBox unit is max(w / stage width, h / stage height) px.
_SCRIPT = """
(function () {
  var details = JSON.parse(document.getElementById('details').textContent);
  var stage = document.getElementById('stage');
  var svg = stage.querySelector('svg');
  var search = document.getElementById('search'), count = document.getElementById('count');
  var panel = document.getElementById('panel'), ptitle = document.getElementById('ptitle'),
      ptable = document.getElementById('ptable');
  if (!svg) { return; }
  svg.removeAttribute('width'); svg.removeAttribute('height');
  var b = svg.viewBox.baseVal;
  var home = {x: b.x, y: b.y, w: b.width, h: b.height};
  var vb = {x: home.x, y: home.y, w: home.w, h: home.h};
  function apply() { svg.setAttribute('viewBox', vb.x + ' ' + vb.y + ' ' + vb.w + ' ' + vb.h); }
  function box() { return stage.getBoundingClientRect(); }
  function unit() { var r = box(); return Math.max(vb.w / r.width, vb.h / r.height); }
  function toSvg(cx, cy) {
    var r = box(), k = unit();
    var ox = (r.width - vb.w / k) / 2, oy = (r.height - vb.h / k) / 2;
    return {x: vb.x + (cx - r.left - ox) * k, y: vb.y + (cy - r.top - oy) * k};
  }
  function zoom(f, cx, cy) {
    var r = box();
    if (cx === undefined) { cx = r.left + r.width / 2; cy = r.top + r.height / 2; }
    var w = vb.w / f, h = vb.h / f;
    if (w < home.w / 400 || w > home.w * 40) { return; }
    var p = toSvg(cx, cy);
    vb = {x: p.x - (p.x - vb.x) / f, y: p.y - (p.y - vb.y) / f, w: w, h: h};
    apply();
  }
  function fit() { vb = {x: home.x, y: home.y, w: home.w, h: home.h}; apply(); }
  function start() {
    // a tall diagram opens at its top, as wide as the stage or the diagram, whichever is wider
    var r = box(), aspect = r.height / r.width, w = Math.max(home.w, r.width);
    if (w * aspect >= home.h) { fit(); return; }
    vb = {x: home.x + (home.w - w) / 2, y: home.y, w: w, h: w * aspect};
    apply();
  }
  function centre(n) {
    var g = n.g.getBoundingClientRect();
    var p = toSvg(g.left + g.width / 2, g.top + g.height / 2);
    var k = unit(), w = vb.w, h = vb.h;
    if (k > 1.25) { w = vb.w / k; h = vb.h / k; }  // close enough to read its label: one unit per pixel
    vb = {x: p.x - w / 2, y: p.y - h / 2, w: w, h: h};
    apply();
  }
  var nodes = Array.prototype.map.call(svg.querySelectorAll('g.node'), function (g) {
    var t = g.querySelector('title'), id = t ? t.textContent : '';
    var text = Array.prototype.map.call(g.querySelectorAll('text'), function (x) { return x.textContent; });
    return {g: g, id: id, hay: (id + ' ' + text.join(' ')).toLowerCase()};
  });
  var hits = [], at = 0;
  function find() {
    var q = search.value.trim().toLowerCase();
    nodes.forEach(function (n) { n.g.classList.remove('hit'); });
    hits = q ? nodes.filter(function (n) { return n.hay.indexOf(q) >= 0; }) : [];
    hits.forEach(function (n) { n.g.classList.add('hit'); });
    at = 0;
    count.textContent = q ? hits.length + (hits.length === 1 ? ' match' : ' matches') : '';
    if (hits.length) { centre(hits[0]); }
  }
  search.addEventListener('input', find);
  search.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && hits.length) {
      at = (at + 1) % hits.length;
      count.textContent = (at + 1) + ' of ' + hits.length;
      centre(hits[at]);
    }
  });
  function pick(n) {
    nodes.forEach(function (m) { m.g.classList.remove('picked'); });
    n.g.classList.add('picked');
    var d = details[n.id] || {node: n.id};
    ptitle.textContent = n.id;
    while (ptable.firstChild) { ptable.removeChild(ptable.firstChild); }
    Object.keys(d).forEach(function (k) {
      var tr = document.createElement('tr'), a = document.createElement('td'), v = document.createElement('td');
      a.textContent = k; v.textContent = d[k];
      tr.appendChild(a); tr.appendChild(v); ptable.appendChild(tr);
    });
    panel.style.display = 'block';
  }
  var drag = null, moved = false;
  stage.addEventListener('pointerdown', function (e) {
    if (e.button !== 0) { return; }
    drag = {x: e.clientX, y: e.clientY, vb: {x: vb.x, y: vb.y, w: vb.w, h: vb.h}, k: unit()};
    moved = false;
  });
  window.addEventListener('pointermove', function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!moved && Math.abs(dx) + Math.abs(dy) < 4) { return; }  // a click, not a drag, so far
    moved = true;
    stage.classList.add('dragging');
    vb = {x: drag.vb.x - dx * drag.k, y: drag.vb.y - dy * drag.k, w: drag.vb.w, h: drag.vb.h};
    apply();
  });
  window.addEventListener('pointerup', function () { drag = null; stage.classList.remove('dragging'); });
  nodes.forEach(function (n) {
    n.g.addEventListener('click', function (e) { if (!moved) { pick(n); } e.stopPropagation(); });
  });
  stage.addEventListener('wheel', function (e) {
    e.preventDefault();
    zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX, e.clientY);
  }, {passive: false});
  document.getElementById('zin').addEventListener('click', function () { zoom(1.4); });
  document.getElementById('zout').addEventListener('click', function () { zoom(1 / 1.4); });
  document.getElementById('fit').addEventListener('click', fit);
  document.getElementById('close').addEventListener('click', function () {
    panel.style.display = 'none';
    nodes.forEach(function (m) { m.g.classList.remove('picked'); });
  });
  start();
})();
"""


def _svg_element(svg: str) -> str:
    """The ``<svg>`` element alone: dot's XML declaration and DOCTYPE may not stand inside HTML."""
    at = svg.find("<svg")
    return svg[at:] if at >= 0 else svg


def _json_in_script(data: object) -> str:
    """JSON that cannot end its ``<script>`` early: every '<' written as \\u003c (a module path or a
    name from an opened file could hold '</script>'), and '&' as well for the HTML parser's sake."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(svg: str | bytes, details: Mapping[str, Mapping[str, str]]) -> str:
    """The viewer's HTML document for one rendered diagram: toolbar, the SVG, the details panel, the
    details of every node as JSON keyed by node id (the SVG's node ``<title>``), and the script."""
    text = svg.decode() if isinstance(svg, bytes) else svg
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>" + _STYLE + "</style></head><body>"
            "<div id=\"bar\"><input id=\"search\" type=\"search\" placeholder=\"Search nodes by name…\" "
            "aria-label=\"Search nodes by name\"><span id=\"count\"></span>"
            "<button id=\"zin\" title=\"Zoom in\">+</button><button id=\"zout\" title=\"Zoom out\">−</button>"
            "<button id=\"fit\" title=\"Show the whole diagram\">Fit</button>"
            "<span id=\"hint\">drag to pan · wheel to zoom · click a node for its details</span></div>"
            "<div id=\"stage\">" + _svg_element(text) + "</div>"
            "<div id=\"panel\"><button id=\"close\" title=\"Close\">×</button><b id=\"ptitle\"></b>"
            "<table id=\"ptable\"></table></div>"
            "<script type=\"application/json\" id=\"details\">" + _json_in_script(details) + "</script>"
            "<script>" + _SCRIPT + "</script></body></html>")


def all_details(g: nx.DiGraph) -> dict[str, dict[str, str]]:
    """:func:`analysis.arch.diagrams.node_details` of every node, keyed by node id."""
    return {str(n): diagrams.node_details(g, n) for n in g.nodes}


def show(dot: str, g: nx.DiGraph, *, key: str | None = None, height: int = HEIGHT, container: Any = None) -> str | None:
    """Draw ``dot`` (the DOT of ``g``) in the viewer, or with ``st.graphviz_chart`` where ``dot`` is not
    installed; with ``key``, a "Node" selectbox below it whose choice's details show as a table.
    Returns the chosen node id (None when none is chosen)."""
    where = container or st
    details = all_details(g)
    if diagrams.has_dot():
        svg = cache.rendered_diagram(dot, "svg")  # keyed by the DOT text: a rerun renders nothing again
        # the frame's title (alt) names the diagram for screen readers, and for a browser test to find it
        where.iframe(viewer_html(svg, details), height=height, alt=f"Interactive diagram of {g.graph.get('name', 'the net')}")
    else:
        where.graphviz_chart(dot, width="content")
    if key is None:
        return None
    if st.session_state.get(key) not in (None, *details):  # a node of the diagram drawn before this one
        st.session_state[key] = None
    labels = {n: d["label"] for n, d in details.items()}
    chosen = where.selectbox("Node", list(details), index=None, key=key, placeholder="Choose a node to see its details",
                             format_func=lambda n: n if labels[n] in (n, "") or labels[n].startswith(n) else
                             f"{n} — {labels[n]}",
                             help="The same details as a click on the node in the diagram; type to search.")
    if chosen is not None:
        table(pd.DataFrame({"": list(details[chosen]), "value": list(details[chosen].values())}), container=where)
    return None if chosen is None else str(chosen)


METRIC_LABELS = {None: "none", "params": "parameters", "macs": "MACs"}
NET_LEVEL_HELP = ("Units: one node per residual unit and per add, the stretches between units one node each. "
                  "Modules: ops grouped by module path, cut at the module depth. Ops: every node of the graph.")


def net_view(net: GraphNet, key: str) -> None:
    """The diagrams of an opened net (``key`` prefixes the widgets' keys): level, module depth, labels
    and colours, its shortcut counts, the viewer and the DOT / SVG / PNG downloads."""
    c = st.columns(4)
    level = c[0].radio("Level of detail", diagrams.NET_LEVELS, key=f"{key}_net_level", help=NET_LEVEL_HELP)
    deepest = max((len(str(m).split(".")) for m in net.nodes["module"] if m), default=1)
    depth: int | None = None
    if level == "modules":
        depth = 1
        if deepest > 1:  # a slider needs two values; a net of top-level modules only has one depth
            if st.session_state.get(f"{key}_net_depth", 1) > deepest:  # a deeper net's depth, kept from before
                st.session_state[f"{key}_net_depth"] = deepest
            depth = int(c[3].slider("Module depth", 1, deepest, min(2, deepest), key=f"{key}_net_depth",
                                    help="Module paths cut after this many components: at 2, layer1.0.conv1 "
                                         "and layer1.0.bn1 are one node, layer1.0."))
    label_by = c[1].selectbox("Label nodes with", list(METRIC_LABELS), format_func=METRIC_LABELS.__getitem__,
                          key=f"{key}_show")
    color_by = c[2].selectbox("Colour nodes by", list(METRIC_LABELS), format_func=METRIC_LABELS.__getitem__,
                              key=f"{key}_color")
    g = diagrams.net_graph(net, level, depth)
    counts = {k: len(diagrams.shortcut_edges(g, k)) for k in diagrams.SHORTCUT_KINDS}
    metric_row([
        Metric("Residual units", fmt_int(len(net.units))),
        Metric("Identity shortcuts (solid)", fmt_int(counts["identity"])),
        Metric("Projection shortcuts (dashed)", fmt_int(counts["projection"])),
        Metric("Zero-pad shortcuts (dotted)", fmt_int(counts["pad"])),
        Metric("Nodes drawn", fmt_int(g.number_of_nodes())),
    ])
    if not net.units:
        st.info(no_unit_reason(net))
    if g.graph["unplaced"]:
        st.warning(f"{len(g.graph['unplaced'])} residual unit(s) could not be placed in the drawing (this source "
                   f"records no data flow): {', '.join(g.graph['unplaced'][:5])}.")
    dot = diagrams.to_dot(g, show=label_by, color_by=color_by,
                          title=f"{net.name} ({level}" + (f" to depth {depth})" if level == "modules" else ")"))
    too_big = g.number_of_nodes() > diagrams.MAX_DRAW_NODES
    if too_big:
        st.warning(f"{net.name} at {level} level has {g.number_of_nodes():,} nodes — too many to lay out "
                   f"interactively (limit {diagrams.MAX_DRAW_NODES:,}). Choose a coarser level, or download the DOT "
                   "below and render it with Graphviz.")
    else:
        show(dot, g, key=f"{key}_node")
    downloads(dot, cache.download_name(f"{net.name}_{level}", ""), key, rendered=not too_big)


def downloads(dot: str, stem: str, key: str, *, rendered: bool = True) -> None:
    """DOT always; SVG and PNG where ``dot`` is installed and the diagram was small enough to draw. Bytes
    made before the buttons (cached by DOT text), never a deferred callable: see ui/cache.py."""
    d = st.columns(3)
    d[0].download_button("Download DOT", dot, file_name=f"{stem}.dot", mime="text/vnd.graphviz",
                         on_click="ignore", key=f"{key}_dot")
    if rendered and diagrams.has_dot():
        d[1].download_button("Download SVG", cache.rendered_diagram(dot, "svg"), file_name=f"{stem}.svg",
                             mime="image/svg+xml", on_click="ignore", key=f"{key}_svg")
        d[2].download_button("Download PNG", cache.rendered_diagram(dot, "png"), file_name=f"{stem}.png",
                             mime="image/png", on_click="ignore", key=f"{key}_png")
    elif rendered:
        d[1].info("SVG/PNG export needs Graphviz's `dot` (apt-get install graphviz).")
