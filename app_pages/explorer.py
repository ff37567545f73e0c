"""Architecture explorer: totals, the per-layer cost table at stage/block/layer depth, charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.costs import arrow_safe, by_op, receptive_field_growth, rollup
from ui import cache, render
from ui.widgets import fmt_int, fmt_si, model_picker

COLUMN_GROUPS = {
    "shapes": ["in_shape", "out_shape"],
    "parameters": ["params"],
    "MACs (conv + fc)": ["macs"],
    "FLOPs (all ops)": ["flops"],
    "FLOP breakdown (BN / ReLU / pool / add / bias)": ["flops_bn", "flops_relu", "flops_pool", "flops_add",
                                                      "bias_adds"],
    "BatchNorm parameters (torchinfo counts them)": ["bn_params"],
    "receptive field / jump": ["rf", "jump"],
    "activation memory (float32 bytes)": ["act_bytes"],
}
DEFAULT_GROUPS = ["shapes", "parameters", "MACs (conv + fc)", "FLOPs (all ops)", "receptive field / jump"]


def _shape(s: object) -> str:
    return "×".join(str(v) for v in s) if isinstance(s, tuple) else str(s)


def shaped(df: pd.DataFrame) -> pd.DataFrame:
    """Shapes as 'C×H×W' strings so they display and export as one cell; counts beyond int64 as
    exact Decimals, which Arrow can carry."""
    out = arrow_safe(df)
    for c in ("in_shape", "out_shape"):
        if c in out:
            out[c] = out[c].map(_shape)
    return out


st.title("Architecture explorer")
st.caption("Every number is computed from the spec, without building weights, and tested equal to "
           "PyTorch's `numel()` and torchinfo's mult-adds.")
spec = model_picker("explorer")
if spec is not None:
    table = cache.layer_table(spec)
    t = cache.totals(spec)
    st.subheader(f"{spec.name} — {spec.variant} — input {spec.in_channels}×{spec.input_size}×{spec.input_size}")
    c = st.columns(4)
    c[0].metric("Parameters", fmt_int(t.params))
    c[1].metric("MACs (conv + fc)", fmt_si(t.macs))
    c[2].metric("FLOPs (all ops)", fmt_si(t.flops))
    c[3].metric("torchinfo mult-adds", fmt_int(t.torchinfo_mult_adds))
    c = st.columns(4)
    c[0].metric("Depth (weighted layers)", t.depth)
    c[1].metric("Residual blocks", t.num_blocks)
    c[2].metric("Receptive field", f"{t.receptive_field} px")
    c[3].metric("Activation memory", f"{t.activation_bytes / 2**20:.2f} MiB")

    level = st.radio("Depth of the table", ["stage", "block", "layer"], horizontal=True, key="explorer_level")
    groups = st.multiselect("Columns", list(COLUMN_GROUPS), DEFAULT_GROUPS, key="explorer_columns")
    view = rollup(table, level)
    first = ["id", "module", "op", "stage", "path"] if level == "layer" else ["id", "stage", "layers"]
    if level == "block":
        first.append("downsample")
    cols = first + [c for g in groups for c in COLUMN_GROUPS[g] if c in view.columns]
    st.dataframe(shaped(view[cols]), hide_index=True, width="stretch", height=min(560, 35 * (len(view) + 1) + 3))
    st.download_button("Download the full layer table (CSV)", shaped(table).to_csv(index=False),
                       file_name=f"{spec.name}_layers.csv", mime="text/csv", key="explorer_csv")

    st.subheader("Where the cost sits")
    st.plotly_chart(render.stage_costs(rollup(table, "stage")), key="explorer_stage_chart")
    st.plotly_chart(render.op_costs(by_op(table)), key="explorer_op_chart")

    st.subheader("Where the receptive field grows")
    rf = receptive_field_growth(table)
    st.plotly_chart(render.receptive_field(rf, spec.input_size), key="explorer_rf_chart")
    top = rf.sort_values("growth", ascending=False).head(3)
    st.caption("Largest single steps: " + "; ".join(
        f"`{r.id}` +{r.growth} px (jump {r.jump})" for r in top.itertuples()) +
        ". Each k×k op adds (k−1)×jump; the jump doubles at every stride-2 op, so late 3×3 convs grow "
        "the field most.")

    st.subheader("Why FLOP counters disagree")
    conv = cache.convention_totals(spec)
    st.dataframe(shaped(conv), hide_index=True, width="stretch")
    st.markdown(cache.explain_difference(spec).replace("\n", "  \n"))
