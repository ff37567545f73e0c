"""Depth comparison: Table 1 regenerated from the specs, costs vs depth, the paper beside us."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.depth import ACTIVATION_COLUMN, paper_comparison, table1
from analysis.specs import CIFAR_DEPTHS, IMAGENET_DEPTHS, STRIDE_PLACEMENTS, StridePlacement, get_spec
from ui import cache, render
from ui.widgets import table

FAMILIES = {"imagenet": IMAGENET_DEPTHS, "cifar": CIFAR_DEPTHS}
LABELS = {"imagenet": "ImageNet (18–152)", "cifar": "CIFAR (20–1202)"}

st.title("Depth comparison")
family = st.radio("Family", list(FAMILIES), horizontal=True, key="depth_family", format_func=LABELS.__getitem__)
# one multiselect per family: its options differ, so its selection must not carry over
names = st.multiselect("Models", FAMILIES[family], list(FAMILIES[family]), key=f"depth_models_{family}")
STRIDE_LABELS: dict[StridePlacement, str] = {"3x3": "v1.5 (torchvision)", "1x1": "v1 (paper)"}
stride_on: StridePlacement | None = None
if family == "imagenet":
    stride_on = st.radio("Bottleneck stride", STRIDE_PLACEMENTS, horizontal=True, key="depth_stride",
                         format_func=STRIDE_LABELS.__getitem__)

if not names:
    st.info("Choose at least one model.")
else:
    specs = [get_spec(n, stride_on=stride_on if get_spec(n).block == "bottleneck" else None) for n in names]
    st.subheader("Table 1, regenerated from the specs")
    sizes = sorted({s.input_size for s in specs})
    st.caption("Every cost on this page is for one image at each model's own input size: "
               + ", ".join(f"{sz}×{sz} px" for sz in sizes)
               + (" (the ImageNet nets' 224 px as in the paper)" if 224 in sizes else " (the CIFAR nets' 32 px)") + ".")
    table(table1(specs))

    residual = cache.depth_summary(tuple(names), stride_on, False).assign(series="residual")
    plain = cache.depth_summary(tuple(names), stride_on, True).assign(series="plain")
    both = pd.concat([residual, plain], ignore_index=True)
    st.subheader("Residual vs plain")
    table(both, formats={ACTIVATION_COLUMN: "%,.1f", "torchvision GMACs": "%.3f", "paper GFLOPs (Table 1)": "%.1f"})
    st.caption(f"{ACTIVATION_COLUMN}: the float32 outputs of every operation of the forward pass for one image, "
               "summed (as on the Architecture explorer).")
    st.download_button("Download (CSV)", both.to_csv(index=False), file_name="depth_comparison.csv",
                       mime="text/csv", on_click="ignore", key="depth_csv")
    c1, c2 = st.columns(2)
    render.show(render.vs_depth(both, "params", "Parameters vs depth"), key="depth_params", container=c1)
    render.show(render.vs_depth(both, "MACs", "MACs vs depth"), key="depth_macs", container=c2)
    if family == "cifar":
        st.caption("Option A shortcuts carry no weights: residual and plain twins have identical parameter "
                   "counts and MACs; only the residual add (in FLOPs) differs.")
    else:
        st.caption("Option B projections add weights only at the first block of each stage; a plain twin "
                   "drops them and the add.")

    st.subheader("The paper's numbers beside ours")
    table(paper_comparison(names), digits=4)  # the paper's numbers have up to 4 significant digits
