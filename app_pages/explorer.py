"""Architecture explorer: totals, the per-layer cost table at stage/block/layer depth, charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.costs import arrow_safe, by_op, receptive_field_growth, rollup
from ui import cache, render
from ui.fmt import fmt_bytes, fmt_count, fmt_int, fmt_si
from ui.widgets import Metric, metric_row, model_picker, spec_header, table

COLUMN_GROUPS = {
    "shapes": ["in_shape", "out_shape"],
    "parameters": ["params"],
    "MACs (conv + fc)": ["macs"],
    "FLOPs (all ops)": ["flops"],
    "FLOP breakdown (BN / ReLU / pool / add / bias / gates)": ["flops_bn", "flops_relu", "flops_pool",
                                                              "flops_add", "bias_adds", "flops_gate"],
    "BatchNorm parameters (torchinfo counts them)": ["bn_params"],
    "receptive field / jump": ["rf", "jump"],
    "activation memory (float32 bytes, batch 1)": ["act_bytes"],
}
DEFAULT_GROUPS = ["shapes", "parameters", "MACs (conv + fc)", "FLOPs (all ops)", "receptive field / jump"]


def _shape(s: object) -> str:
    return "×".join(str(v) for v in s) if isinstance(s, tuple) else str(s)


# What act_bytes / activation_bytes count (analysis/costs.py): one row per op of the forward pass,
# each row the op's output tensor at 4 bytes per value for a single image.
ACTIVATION_MEMORY = ("Activation memory: the outputs of every operation of the forward pass — each conv, "
                     "BatchNorm, ReLU, pooling, zero-pad shortcut, residual add and the fc — as float32 "
                     "(4 bytes per value) for one image (batch size 1), summed; the input image is not "
                     "counted. Every tensor counts once, as if none were freed or overwritten in place: "
                     "roughly what a training step keeps for the backward pass. Multiply by the batch size "
                     "for a batch.")


def exact(n: int, short: str) -> str | None:
    """The exact count as a metric's help, where the metric shows a shortened form."""
    return f"Exactly {fmt_int(n)}." if short != fmt_int(n) else None


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
    layers = cache.layer_table(spec)
    t = cache.totals(spec)
    spec_header(spec)
    params, mult_adds = fmt_count(t.params), fmt_count(t.torchinfo_mult_adds)
    metric_row([
        Metric("Parameters", params, exact(t.params, params)),
        Metric("MACs (conv + fc)", fmt_si(t.macs), f"Exactly {fmt_int(t.macs)} multiply-accumulates."),
        Metric("FLOPs (all ops)", fmt_si(t.flops), f"Exactly {fmt_int(t.flops)} floating-point operations."),
        Metric("torchinfo mult-adds", mult_adds, exact(t.torchinfo_mult_adds, mult_adds)),
    ])
    metric_row([
        Metric("Depth (weighted layers)", str(t.depth)),
        Metric("Residual blocks", str(t.num_blocks)),
        Metric("Receptive field", f"{t.receptive_field} px"),
        Metric("Activation memory", fmt_bytes(t.activation_bytes),
               f"{ACTIVATION_MEMORY} Exactly {fmt_int(t.activation_bytes)} bytes."),
    ])
    st.caption(f"{ACTIVATION_MEMORY} MACs and FLOPs: G = 10⁹, T = 10¹², …; the ? beside a metric gives the exact "
               "count.")

    level = st.radio("Depth of the table", ["stage", "block", "layer"], horizontal=True, key="explorer_level")
    groups = st.multiselect("Columns", list(COLUMN_GROUPS), DEFAULT_GROUPS, key="explorer_columns")
    view = rollup(layers, level)
    first = ["id", "module", "op", "stage", "path"] if level == "layer" else ["id", "stage", "layers"]
    if level == "block":
        first.append("downsample")
    cols = first + [c for g in groups for c in COLUMN_GROUPS[g] if c in view.columns]
    table(shaped(view[cols]), height=min(560, 35 * (len(view) + 1) + 3))
    st.download_button("Download the full layer table (CSV)", shaped(layers).to_csv(index=False),
                       file_name=f"{spec.name}_layers.csv", mime="text/csv", on_click="ignore", key="explorer_csv")

    st.subheader("Where the cost sits")
    render.show(render.stage_costs(rollup(layers, "stage")), key="explorer_stage_chart")
    render.show(render.op_costs(by_op(layers)), key="explorer_op_chart")

    st.subheader("Where the receptive field grows")
    rf = receptive_field_growth(layers)
    render.show(render.receptive_field(rf, spec.input_size), key="explorer_rf_chart")
    top = rf.sort_values("growth", ascending=False).head(3)
    st.caption("Largest single steps: " + "; ".join(
        f"`{r.id}` +{r.growth} px (jump {r.jump})" for r in top.itertuples()) +
        ". Each k×k op adds (k−1)×jump; the jump doubles at every stride-2 op, so late 3×3 convs grow "
        "the field most.")

    st.subheader("Why FLOP counters disagree")
    conv = cache.convention_totals(spec)
    table(shaped(conv))
    st.markdown(cache.explain_difference(spec).replace("\n", "  \n"))
