"""Block comparison: BasicBlock vs Bottleneck (and pre-activation), term by term."""

from __future__ import annotations

import streamlit as st

from analysis.blocks import BLOCK_KINDS, BlockConfig, compare_blocks, formula
from analysis.errors import LensError
from ui import cache, render

st.title("Block comparison")
st.caption("He et al. 2015, Fig. 5: the bottleneck replaces two 3×3 convs at full width by 1×1 reduce, "
           "3×3 at a quarter width, 1×1 expand. Pre-activation (He et al. 2016) moves BN–ReLU before "
           "each conv: same weights, BN on different channels.")
c = st.columns(6)
cin = c[0].number_input("Input channels", 1, 65536, 256, key="blocks_cin")
cout = c[1].number_input("Output channels", 1, 65536, 256, key="blocks_cout")
width = c[2].number_input("Bottleneck width", 1, 65536, 64, key="blocks_width")
size = c[3].number_input("Spatial size (H = W)", 1, 4096, 56, key="blocks_size")
stride = c[4].selectbox("Stride", [1, 2], key="blocks_stride")
groups = c[5].number_input("Groups (ResNeXt)", 1, 1024, 1, key="blocks_groups")

try:
    table = compare_blocks(int(cin), int(cout), int(width), int(size), int(stride), int(groups))
except LensError as exc:
    st.error(str(exc))
else:
    basic = table.set_index("block").loc["basic"]
    bottle = table.set_index("block").loc["bottleneck"]
    m = st.columns(3)
    m[0].metric("BasicBlock conv weights", f"{basic['conv weights (residual)']:,}")
    m[1].metric("Bottleneck conv weights", f"{bottle['conv weights (residual)']:,}")
    ratio = basic["conv weights (residual)"] / bottle["conv weights (residual)"]
    m[2].metric("BasicBlock / Bottleneck", f"{ratio:.1f}×")
    st.markdown(f"**BasicBlock:** {basic['formula']}  \n**Bottleneck:** {bottle['formula']}")
    st.dataframe(table, hide_index=True, width="stretch")
    st.plotly_chart(render.block_bars(table), key="blocks_chart")

    kind = st.radio("Term by term", BLOCK_KINDS, horizontal=True, key="blocks_kind")
    cfg = BlockConfig(kind, int(cin), int(cout), int(width), int(size), int(stride), int(groups))
    terms = cache.block_terms(cfg)
    left, right = st.columns([2, 1])
    left.dataframe(terms, hide_index=True, width="stretch")
    right.graphviz_chart(cache.block_diagram(cfg))  # the same plan as the table, at the chosen sizes
    st.markdown(f"Residual path: {formula(terms)}")
    if (terms["path"] != "residual").any():
        st.markdown(f"Projection shortcut (shape changes, option B): {formula(terms, 'projection shortcut')}")
    st.caption(f"MACs = weights × output H × W at {size}×{size} input, stride {stride} on the 3×3 "
               "(torchvision v1.5).")
    st.download_button("Download the comparison (CSV)", table.to_csv(index=False),
                       file_name="block_comparison.csv", mime="text/csv", key="blocks_csv")
