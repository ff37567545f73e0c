"""Block comparison: BasicBlock vs Bottleneck (and pre-activation), term by term, in 2-D or 1-D."""

from __future__ import annotations

import streamlit as st

from analysis.arch.blocks import BLOCK_KINDS, PAIRINGS, compare_blocks, formula, paired_config, pairing_label, pairings
from analysis.arch.specs import MAX_WIDTH
from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from ui import cache, render
from ui.fmt import fmt_int
from ui.widgets import DIMS_HELP, Metric, metric_row, range_label, size_widget, table

st.title("Block comparison")
dims = int(st.radio("Dimensions", (2, 1), format_func=DIMS_HELP.__getitem__, horizontal=True, key="blocks_dims"))
if dims == 2:
    st.caption("He et al. 2015, Fig. 5: the bottleneck replaces two 3×3 convs at full width by 1×1 reduce, "
               "3×3 at a quarter width, 1×1 expand. Pre-activation (He et al. 2016) moves BN–ReLU before "
               "each conv: same weights, BN on different channels.")
else:
    st.caption("The same blocks with Conv1d and BatchNorm1d over C×L (signals, text: Conneau et al. 2017's "
               "VDCNN): a 3-wide kernel has 3 taps where a 3×3 has 9, so a BasicBlock holds a third of its "
               "2-D weights and a bottleneck's 1-wide convs keep theirs. MACs are weights × output length.")
# two rows of three: six inputs side by side left no room for the ranges in their labels
c = st.columns(3) + st.columns(3)
cin = c[0].number_input(range_label("Input channels", 1, MAX_WIDTH), 1, MAX_WIDTH, 256, key="blocks_cin")
cout = c[1].number_input(range_label("Output channels", 1, MAX_WIDTH), 1, MAX_WIDTH, 256, key="blocks_cout")
width = c[2].number_input(range_label("Bottleneck width", 1, MAX_WIDTH), 1, MAX_WIDTH, 64, key="blocks_width")
# a length and a side have different ranges and units: one widget each, so neither clips the other
size = size_widget(c[3], "Spatial size H = W" if dims == 2 else "Length L", dims=dims, default=56,
                   key="blocks_size" if dims == 2 else "blocks_size1d")
stride = c[4].selectbox("Stride", [1, 2], key="blocks_stride")
groups = c[5].number_input(range_label("Groups (ResNeXt)", 1, 1024), 1, 1024, 1, key="blocks_groups")

try:
    # Fig. 5 sets a BasicBlock as wide as the bottleneck's 3x3 beside it; the notes keep both at the same channels
    pairing = st.radio("Pairing", PAIRINGS, format_func=lambda p: pairing_label(p, int(cin), int(cout), int(width)),
                       horizontal=True, key="blocks_pairing",
                       help="He et al. 2015, Fig. 5 pairs ResNet-34's block with ResNet-50's bottleneck: similar "
                            "cost, the bottleneck four times wider. The notes compare both at the same channels.")
    both = pairings(int(cin), int(cout), int(width), size, int(stride), int(groups), dims=dims)
    comparison = compare_blocks(int(cin), int(cout), int(width), size, int(stride), int(groups), dims=dims,
                                pairing=pairing)
except LensError as exc:
    st.error(str(exc))
else:
    basic = comparison.set_index("block").loc["basic"]
    bottle = comparison.set_index("block").loc["bottleneck"]
    ratio = basic["conv weights (residual)"] / bottle["conv weights (residual)"]
    metric_row([
        Metric("BasicBlock conv weights", fmt_int(basic["conv weights (residual)"])),
        Metric("Bottleneck conv weights", fmt_int(bottle["conv weights (residual)"])),
        Metric("BasicBlock / Bottleneck", f"{ratio:.1f}×"),
    ])
    st.markdown(f"**BasicBlock ({basic['channels']}):** {basic['formula']}  \n"
                f"**Bottleneck ({bottle['channels']}):** {bottle['formula']}")
    table(comparison)
    st.caption("Both pairings side by side (residual conv weights at these settings):")
    table(both, formats={"BasicBlock / Bottleneck": "%.3f×"})
    render.show(render.block_bars(comparison), key="blocks_chart")
    st.caption("Linear scales, so bar heights keep their ratios; each bar is labelled with its value and its "
               "multiple of the smallest bar in its panel.")

    kind = st.radio("Term by term", BLOCK_KINDS, horizontal=True, key="blocks_kind")
    cfg = paired_config(kind, pairing, int(cin), int(cout), int(width), size, int(stride), int(groups), dims)
    terms = cache.block_terms(cfg)
    left, right = st.columns([2, 1])
    table(terms, container=left)
    right.graphviz_chart(cache.block_diagram(cfg))  # the same plan as the table, at the chosen sizes
    st.markdown(f"Residual path: {formula(terms)}")
    if (terms["path"] != "residual").any():
        st.markdown(f"Projection shortcut (shape changes, option B): {formula(terms, 'projection shortcut')}")
    if dims == 2:
        st.caption(f"MACs = weights × output H × W at {size}×{size} input, stride {stride} on the 3×3 "
                   "(torchvision v1.5).")
    else:
        st.caption(f"MACs = weights × output length L at {size:,} samples in, stride {stride} on the 3-wide "
                   "conv (torchvision v1.5's placement); shapes in the diagram are channels × samples.")
    st.download_button("Download the comparison (CSV)", csv_bytes(comparison),
                       file_name="block_comparison_1d.csv" if dims == 1 else "block_comparison.csv",
                       mime="text/csv", on_click="ignore", key="blocks_csv")
