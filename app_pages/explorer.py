"""Architecture explorer: totals, the per-layer cost table at stage/block/layer depth, charts; or the
reference notes' Conv1d block exactly as written (issue 13), with why it fails where it does and the fix."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.arch import netcosts
from analysis.arch.costs import arrow_safe, by_op, receptive_field_growth, rollup, summary_text
from analysis.arch.graphnet import GraphNet, summary
from analysis.arch.seed import (
    MAX_SEED_KERNEL,
    MAX_SEED_PADDING,
    MAX_SEED_STRIDE,
    Costs,
    SeedConfig,
    analyse,
    source,
)
from analysis.arch.specs import MAX_SEQUENCE_LENGTH, MAX_WIDTH
from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from ui import cache, render
from ui.fmt import fmt_bytes, fmt_count, fmt_int, fmt_si
from ui.widgets import Metric, error_box, lazy_tabs, metric_row, range_label, source_picker, spec_header, table

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
MAX_BATCH = 65_536
DEFAULT_GROUPS = ["shapes", "parameters", "MACs (conv + fc)", "FLOPs (all ops)", "receptive field / jump"]


def _shape(s: object) -> str:
    return "×".join(str(v) for v in s) if isinstance(s, tuple) else str(s)


# What act_bytes / activation_bytes count (analysis/arch/costs.py): one row per op of the forward pass,
# each row the op's output tensor at 4 bytes per value for a single image.
ACTIVATION_MEMORY = ("Activation memory: the outputs of every operation of the forward pass — each conv, "
                     "BatchNorm, ReLU, pooling, zero-pad shortcut, residual add and the fc — as float32 "
                     "(4 bytes per value) for one input (one image or sequence, batch size 1), summed; the "
                     "input is not counted. Every tensor counts once, as if none were freed or overwritten in place: "
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


def net_view() -> None:
    """A net from the model picker: a spec's totals, layer table, charts and FLOP counters, or a net of
    the user's own opened from a file or module."""
    src = source_picker("explorer")
    if src is None:
        return
    if src.spec is None:
        opened_view(src.net)
        return
    spec = src.spec
    layers = cache.layer_table(spec)
    t = cache.totals(spec)
    spec_header(spec)
    # every input of a batch costs the same: MACs, FLOPs and activation memory scale with it, the
    # parameters do not (torchinfo's mult-adds are shown at its batch-1 rule)
    batch = int(st.number_input(range_label("Batch size", 1, MAX_BATCH), 1, MAX_BATCH, 1, key="explorer_batch",
                                help="Scales the MACs, FLOPs and activation memory of the metrics and of the "
                                     "text summary; the tables below are per input."))
    per = f" (batch {fmt_int(batch)})" if batch > 1 else ""
    macs, flops, act = batch * t.macs, batch * t.flops, batch * t.activation_bytes
    params, mult_adds = fmt_count(t.params), fmt_count(t.torchinfo_mult_adds)
    metric_row([
        Metric("Parameters", params, exact(t.params, params)),
        Metric(f"MACs (conv + fc){per}", fmt_si(macs), f"Exactly {fmt_int(macs)} multiply-accumulates."),
        Metric(f"FLOPs (all ops){per}", fmt_si(flops), f"Exactly {fmt_int(flops)} floating-point operations."),
        Metric("torchinfo mult-adds" + (" (batch 1)" if per else ""), mult_adds,
               exact(t.torchinfo_mult_adds, mult_adds)),
    ])
    metric_row([
        Metric("Depth (weighted layers)", fmt_int(t.depth)),
        Metric("Residual blocks", fmt_int(t.num_blocks)),
        # named by the stage it is read after: the table's row of that stage says the same number, and its
        # head row the global pool's formula field (beyond the input: every output sees all of it)
        Metric(f"Receptive field after {t.receptive_field_stage}", f"{fmt_int(t.receptive_field)} {spec.size_unit}",
               f"The field of one output of {t.receptive_field_stage}, as its row in the table below. The head's "
               "global average pool then mixes every position: each output sees the whole input (the formula "
               "(k−1)·jump gives more than the input's size there)."),
        Metric(f"Activation memory{per}", fmt_bytes(act), f"{ACTIVATION_MEMORY} Exactly {fmt_int(act)} bytes."),
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
    st.download_button("Download the full layer table (CSV)", csv_bytes(shaped(layers)),
                       file_name=f"{spec.name}_layers.csv", mime="text/csv", on_click="ignore", key="explorer_csv")
    with st.expander("Text summary (copy it with the button at its corner)"):
        st.code(summary_text(spec, layers, batch), language=None)

    def costs() -> None:
        render.show(render.stage_costs(rollup(layers, "stage")), key="explorer_stage_chart")
        render.show(render.op_costs(by_op(layers)), key="explorer_op_chart")

    def field() -> None:
        rf = receptive_field_growth(layers)
        render.show(render.receptive_field(rf, spec.input_size, spec.size_unit), key="explorer_rf_chart")
        top = rf.sort_values("growth", ascending=False).head(3)
        st.caption("Largest single steps: " + "; ".join(
            f"`{r.id}` +{fmt_int(r.growth)} {spec.size_unit} (jump {fmt_int(r.jump)})" for r in top.itertuples()) +
            (". Each k×k op adds (k−1)×jump; the jump doubles at every stride-2 op, so late 3×3 convs grow "
             "the field most." if spec.dims == 2 else ". Each k-wide op adds (k−1)×jump samples; the jump doubles "
             "at every stride-2 op or max pool, so late 3-wide convs grow the field most."))

    def counters() -> None:
        table(shaped(cache.convention_totals(spec)))
        st.markdown(cache.explain_difference(spec).replace("\n", "  \n"))

    def units() -> None:
        units_section(src.net)

    # one section drawn at a time: the three charts and the counters' table drawn at once made the
    # page the slowest to open
    lazy_tabs({"Where the cost sits": costs, "Where the receptive field grows": field,
               "Why FLOP counters disagree": counters, "Residual units": units}, key="explorer_section")


def units_section(net: GraphNet) -> None:
    """The residual units, as every net has them (a spec's from its plan, an opened net's from its graph)."""
    note = netcosts.no_units_note(net)
    if note is not None:
        st.info(note)
        return
    kinds = summary(net.units)
    st.caption(f"{fmt_int(kinds['units'])} residual units: {fmt_int(kinds['identity'])} identity, "
               f"{fmt_int(kinds['projection'])} projection and {fmt_int(kinds['pad'])} zero-pad shortcuts. A unit "
               "is y = after(a·s(x) + b·F(x)): its owning module, shortcut s, join (the coefficients a and b), "
               "what follows the add, shapes without the batch, and what its branch F costs.")
    units = netcosts.unit_table(net.units)
    table(units)
    st.download_button("Download the residual units (CSV)", csv_bytes(units), file_name=f"{net.name}_units.csv",
                       mime="text/csv", on_click="ignore", key="explorer_units_csv")


OPENED_LEVELS = {"modules": "modules (cut at a depth)", "ops": "every op"}


def opened_view(net: GraphNet) -> None:
    """A net opened from a .pt2/.onnx file or a trusted module: its totals, cost tables by module depth
    and by op, its residual units and charts, all read off its graph without running it."""
    st.subheader(net.name)
    st.caption("Input " + " + ".join("×".join(map(str, s)) for s in net.input_shapes) + " (the example it was "
               "exported with, batch included: every MAC, FLOP and byte below is for it). " + CONVENTION)
    kinds = summary(net.units)
    params = fmt_count(net.params)
    act = netcosts.totals_row(net, "")["act_bytes"]
    metric_row([
        Metric("Parameters", params, exact(net.params, params)),
        Metric("MACs", fmt_si(net.macs), f"Exactly {fmt_int(net.macs)} multiply-accumulates."),
        Metric("FLOPs (all ops)", fmt_si(net.flops), f"Exactly {fmt_int(net.flops)} floating-point operations."),
        Metric("Activation memory", fmt_bytes(act), f"Every op's output, as its dtype stores it, summed (views "
               f"excluded). Exactly {fmt_int(act)} bytes."),
    ])
    metric_row([
        Metric("Residual units", fmt_int(kinds["units"])),
        Metric("Identity shortcuts", fmt_int(kinds["identity"])),
        Metric("Projection shortcuts", fmt_int(kinds["projection"])),
        Metric("Ops in the graph", fmt_int(len(net.nodes))),
    ])
    level = st.radio("Rows", list(OPENED_LEVELS), format_func=OPENED_LEVELS.__getitem__, horizontal=True,
                     key="explorer_net_level")
    deepest = netcosts.module_depth(net)
    if level == "modules":
        depth = 1  # a net whose modules are one level deep (or that has none) has one way to group them
        if deepest > 1:  # a slider needs two ends
            depth = int(st.slider("Module depth", 1, deepest, min(2, deepest), key="explorer_net_depth",
                                  help="How many components of a module path make a row: 1 groups by top-level "
                                       "module (layer1, blocks), 2 by its children (layer1.0, blocks.3), ..."))
        view = netcosts.module_table(net, depth)
    else:
        view = netcosts.node_table(net)
    table(view, height=min(560, 35 * (len(view) + 1) + 3))
    full = netcosts.node_table(net)
    st.download_button("Download every op's costs (CSV)", csv_bytes(full), file_name=f"{net.name}_ops.csv",
                       mime="text/csv", on_click="ignore", key="explorer_net_csv")

    def costs() -> None:
        top = netcosts.module_table(net, 1).rename(columns={"module": "id"})
        render.show(render.stage_costs(top, "top-level module"), key="explorer_net_module_chart")
        render.show(render.op_costs(netcosts.op_table(net)), key="explorer_net_op_chart")

    lazy_tabs({"Residual units": lambda: units_section(net), "Where the cost sits": costs},
              key="explorer_net_section")


# graphnet's convention, said where its numbers are shown
CONVENTION = ("MACs: convolutions, linear layers and matmuls (attention's QKᵀ and AV included); FLOPs: 2 per MAC, "
              "1 per bias add and per element of an element-wise op, 2 per BatchNorm element, 5 per LayerNorm "
              "element, 4 per softmax score.")


SEED = "The notes' seed block (Conv1d)"
SUBJECTS = ["A net", SEED]
SEED_COLUMNS = ["id", "op", "path", "in_shape", "out_shape", "kernel", "stride", "params", "macs", "flops", "rf"]


def seed_config() -> SeedConfig | None:
    """The notes' seven settings from the sidebar, under the notes' own argument names."""
    sb = st.sidebar
    sb.caption("The block the reference notes end with, run as written: `SeedBlock(input_dim, n_filters, "
                "kernel_size, padding, stride, shortcut)` on one sequence of length L.")
    # one input per line, as the model picker does: side by side leaves no room for the ranges
    cin = sb.number_input(range_label("input_dim (channels in)", 1, MAX_WIDTH), 1, MAX_WIDTH, 128,
                          key="explorer_seed_input_dim")
    cout = sb.number_input(range_label("n_filters (channels out)", 1, MAX_WIDTH), 1, MAX_WIDTH, 256,
                           key="explorer_seed_n_filters")
    k = sb.number_input(range_label("kernel_size", 1, MAX_SEED_KERNEL), 1, MAX_SEED_KERNEL, 3,
                        key="explorer_seed_kernel_size")
    p = sb.number_input(range_label("padding", 0, MAX_SEED_PADDING), 0, MAX_SEED_PADDING, 1,
                        key="explorer_seed_padding")
    s = sb.number_input(range_label("stride (on both convs, as written)", 1, MAX_SEED_STRIDE), 1, MAX_SEED_STRIDE,
                        1, key="explorer_seed_stride")
    shortcut = sb.checkbox("shortcut (out += x)", key="explorer_seed_shortcut")
    length = sb.number_input(range_label("Sequence length L", 1, MAX_SEQUENCE_LENGTH, "samples"), 1,
                             MAX_SEQUENCE_LENGTH, 128, key="explorer_seed_length")
    try:
        return SeedConfig(input_dim=int(cin), n_filters=int(cout), kernel_size=int(k), padding=int(p),
                          stride=int(s), shortcut=bool(shortcut), length=int(length))
    except LensError as exc:
        error_box(exc)
        return None


def seed_metrics(c: Costs, label: str = "") -> list[Metric]:
    params = fmt_count(c.params)
    return [
        Metric(f"Parameters{label}", params, exact(c.params, params)),
        Metric(f"MACs{label}", fmt_si(c.macs), f"Exactly {fmt_int(c.macs)} multiply-accumulates."),
        Metric(f"FLOPs{label}", fmt_si(c.flops), f"Exactly {fmt_int(c.flops)} floating-point operations."),
        Metric(f"Output shape{label}", _shape(c.output_shape), "Channels × samples of one sequence."),
        Metric(f"Receptive field{label}", f"{fmt_int(c.receptive_field)} samples",
               "Input samples one output sample sees: each k-wide conv adds (k − 1) × jump."),
    ]


def seed_table(df: pd.DataFrame, file_name: str, key: str) -> None:
    table(shaped(df[SEED_COLUMNS]))
    st.download_button("Download the layer table (CSV)", csv_bytes(shaped(df)), file_name=file_name,
                       mime="text/csv", on_click="ignore", key=key)


def seed_view() -> None:
    """The notes' block as written: its code, its exact costs where it runs, and where it does not,
    why (PyTorch's own message) and the standard fix with its costs."""
    cfg = seed_config()
    if cfg is None:
        return
    a = analyse(cfg)
    st.subheader(f"The notes' seed block — input {_shape(cfg.input_shape)} (channels × samples)")
    with st.expander("The code analysed (the notes' block, transcribed)", expanded=False):
        st.code(source(cfg), language="python")
    # analyse gives the block's own costs where it runs, the fixed block's where it does not
    if a.diagnosis is None and a.costs is not None and a.table is not None:
        metric_row(seed_metrics(a.costs))
        st.caption("One sequence (batch 1). MACs: the two convs' multiply-accumulates; FLOPs add their bias adds, "
                   "BatchNorm (2 per element), the ReLUs and the residual add. Tested equal to PyTorch's `numel()` "
                   "and torchinfo's mult-adds.")
        seed_table(a.table, "seed_block_layers.csv", "explorer_seed_csv")
    elif a.diagnosis is not None and a.fixed_costs is not None and a.fixed_table is not None:
        fixed = seed_metrics(a.fixed_costs, " (fixed block)")
        left, right = st.columns([3, 2])
        left.error(a.diagnosis.message)
        as_written = fmt_count(a.params)
        metric_row([Metric("Parameters (as written)", as_written,
                           f"{exact(a.params, as_written) or ''} Its weights exist (the constructor runs); only "
                           "forward fails.".strip()), fixed[0]], container=right)
        metric_row([fixed[3], fixed[4]], container=right)
        st.subheader("The fixed block")
        st.caption("Stride on conv1 only, 'same' padding, and a 1-wide projection with BatchNorm on the shortcut "
                   "where the shape changes (He et al. 2015, option B); the notes' conv biases kept. Its costs "
                   "for the same input:")
        metric_row(fixed[1:3])
        seed_table(a.fixed_table, "seed_block_fixed_layers.csv", "explorer_seed_fixed_csv")


st.title("Architecture explorer")
st.caption("Every number is computed from the spec, without building weights, and tested equal to "
           "PyTorch's `numel()` and torchinfo's mult-adds; a net of your own (Model source: Your net) is read "
           "from its exported graph, never run.")
if st.sidebar.radio("Analyse", SUBJECTS, key="explorer_analyse") == SEED:
    seed_view()
else:
    net_view()
