"""Diagrams: any net drawn as in He et al. 2015, Fig. 3: identity shortcuts solid, projections dashed.

A spec (built-in, custom, checkpoint) is drawn from its spec at stage, block or layer level; a net of
your own (an opened .pt2 / .onnx, a trusted module, an example) from its graph at units, modules or
ops level. Both through one diagram writer (analysis.arch.diagrams.to_dot) and one viewer (ui.viewer).
"""

from __future__ import annotations

import streamlit as st

from analysis.arch import diagrams
from ui import cache, viewer
from ui.fmt import fmt_int
from ui.widgets import DIMS_HELP, Metric, metric_row, source_picker, spec_header

METRIC_LABELS = viewer.METRIC_LABELS
BLOCK_LABELS = {"basic": "basic", "bottleneck": "bottleneck", "preact_basic": "preact_basic",
                "preact_bottleneck": "preact_bottleneck", "vdcnn": "VDCNN (bias, max pool)"}

st.title("Shortcut diagrams")
st.caption("Identity shortcuts solid (blue), projection shortcuts (1×1 conv + BN, or any shortcut with weights) "
           "dashed (red), zero-padding shortcuts dotted (green). A spec is drawn as in He et al. 2015, Fig. 3, "
           "node ids its torchvision module names; a net of your own (sidebar: *Your net*) from its graph, node "
           "ids its module paths. 1-D nets show shapes as channels × samples; VDCNN's max pool sits before its "
           "stage's first block, and both paths start after it. Drag to pan, wheel to zoom, search by name, "
           "click a node for its details.")
source = source_picker("diagrams", default="resnet34")
spec = source.spec if source is not None else None
if source is not None and spec is None:
    st.subheader(f"{source.label} — input " + ", ".join("×".join(map(str, s)) for s in source.net.input_shapes))
    viewer.net_view(source.net, "diagrams")
if spec is not None:
    spec_header(spec)  # node shapes hold at this input size
    c = st.columns(4)
    level = c[0].radio("Level of detail", diagrams.LEVELS, index=1, key="diagrams_level",
                       help="Block level is readable for every net; layer level shows every conv/BN/ReLU/add.")
    show = c[1].selectbox("Label nodes with", list(METRIC_LABELS), format_func=METRIC_LABELS.__getitem__,
                          key="diagrams_show")
    color_by = c[2].selectbox("Colour nodes by", list(METRIC_LABELS), format_func=METRIC_LABELS.__getitem__,
                              key="diagrams_color")
    twin = c[3].checkbox("Plain twin beside it", key="diagrams_twin", disabled=not spec.residual)

    counts = cache.shortcut_counts(spec)
    metric_row([
        Metric("Residual blocks", fmt_int(spec.num_blocks)),
        Metric("Identity shortcuts (solid)", fmt_int(counts["identity"])),
        Metric("Projection shortcuts (dashed)", fmt_int(counts["projection"])),
        Metric("Zero-pad shortcuts (dotted)", fmt_int(counts["pad"])),
    ])

    dot = cache.diagram(spec, level, show, color_by)
    nodes = cache.node_count(spec, level)
    too_big = nodes > diagrams.MAX_DRAW_NODES
    if too_big:
        st.warning(f"{spec.name} at {level} level has {nodes:,} nodes — too many to lay out interactively "
                   f"(limit {diagrams.MAX_DRAW_NODES:,}). Choose a coarser level, or download the DOT below and "
                   "render it with Graphviz.")
    elif twin and spec.residual:
        left, right = st.columns(2)
        plain = spec.plain_twin()
        viewer.show(dot, diagrams.build_graph(spec, level), container=left)
        viewer.show(cache.diagram(plain, level, show, color_by), diagrams.build_graph(plain, level), container=right)
    else:
        viewer.show(dot, diagrams.build_graph(spec, level), key="diagrams_node")
    viewer.downloads(dot, f"{spec.name}_{level}", "diagrams", rendered=not too_big)

st.subheader("Block internals")
# the chosen net's dimensionality on the first visit; after that the reader's own choice
dims = int(st.radio("Dimensions", (2, 1), index=1 if spec is not None and spec.dims == 1 else 0, horizontal=True,
                    format_func=DIMS_HELP.__getitem__, key="diagrams_block_dims"))
if dims == 2:
    st.caption("A typical block of each kind, whatever model is chosen above: BasicBlock at 64 channels, "
               "Bottleneck at 256 in and out (width 64), at 56×56; the downsampling version halves the size with a "
               "stride-2 projection. Block comparison draws any channels, width, stride and size.")
else:
    st.caption("A typical 1-D block of each kind, whatever model is chosen above: Conv1d and BatchNorm1d, shapes "
               "channels × samples. BasicBlock at 64 channels, Bottleneck at 256 in and out (width 64), at 56 "
               "samples; the downsampling version halves the length with a stride-2 projection. VDCNN's block "
               "(Conneau et al. 2017) has convs with bias, at 64 channels and 1,024 samples; its downsampling "
               "version is VDCNN's layer2.0: a 3-wide max pool /2 before both paths, then 128 channels.")
k = st.columns(2)
# one radio per dimensionality: their options differ (VDCNN's block is 1-D only)
kind = k[0].radio("Block", diagrams.INTERNAL_KINDS[dims], horizontal=True, format_func=BLOCK_LABELS.__getitem__,
                  key="diagrams_block" if dims == 2 else "diagrams_block1d")
projection = k[1].checkbox("Downsampling block (projection shortcut)", key="diagrams_projection")
st.graphviz_chart(diagrams.block_internals(kind, projection=projection, dims=dims))  # a dozen nodes: no cache
