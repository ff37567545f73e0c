"""Theory: identity mappings, the gradient's "1 +" term, scaled shortcuts, pre-activation."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.arch import theory
from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from analysis.experiments import bnstudy
from analysis.store import checkpoints
from ui import cache, render
from ui.fmt import fmt_float, fmt_int
from ui.widgets import Metric, metric_row, table

ROOT = Path(__file__).resolve().parent.parent
# RESNET_LENS_BN_STUDY points the page at another record (the tests' small or damaged ones)
BN_STUDY = Path(os.environ.get("RESNET_LENS_BN_STUDY") or ROOT / "results" / "bn_study.json")
DEFAULT_NET = "digits_resnet20"
NOTES = theory.sensitivity(6, 6.1, 6.2)  # the reference notes' numbers, beside which the nets' are read


def pct(v: Fraction | float) -> str:
    """A fraction as a percentage to 4 significant digits ('1.639 %', '100 %')."""
    return f"{fmt_float(100 * float(v), 4)} %"


def exact(v: Fraction) -> str:
    """A fraction as it is when it is short ('1/61'), else as a decimal."""
    return str(v) if v.denominator <= 10_000 else fmt_float(float(v), 6)


def block_chart(df: pd.DataFrame) -> go.Figure:
    """‖F‖/‖H‖ and ‖F‖/‖x‖ per block, in forward order."""
    fig = go.Figure()
    fig.add_bar(name="‖F‖ / ‖H‖ (branch / target, H = x + F)", x=df["block"], y=df["f_over_h"],
                hovertemplate="%{x}: %{y:.3f}<extra>‖F‖/‖H‖</extra>")
    fig.add_scatter(name="‖F‖ / ‖x‖ (branch / shortcut input)", x=df["block"], y=df["f_over_x"], mode="lines+markers",
                    hovertemplate="%{x}: %{y:.3f}<extra>‖F‖/‖x‖</extra>")
    fig.update_layout(yaxis_title="ratio of norms over the test set", xaxis_title="block", yaxis_rangemode="tozero")
    return render._finish(fig, 360, "How big a correction each block makes", legend=True)


def batch_chart(df: pd.DataFrame) -> go.Figure:
    """Test error with batch statistics per batch size, eval mode's as a line."""
    train = df[df["batch_size"] > 0]
    fig = go.Figure()
    fig.add_bar(name="train-mode BN (batch statistics)", x=[str(b) for b in train["batch_size"]],
                y=100 * train["error"], hovertemplate="batch %{x}: %{y:.2f} %<extra></extra>")
    eval_error = 100 * float(df[df["batch_size"] == 0]["error"].iloc[0])
    fig.add_scatter(name="eval mode (running statistics)", x=[str(b) for b in train["batch_size"]],
                    y=[eval_error] * len(train), mode="lines", line_dash="dot",
                    hovertemplate="%{y:.2f} %<extra>eval mode</extra>")
    fig.update_layout(yaxis_title="test error, %", xaxis_title="batch size", yaxis_rangemode="tozero",
                      xaxis_type="category")
    return render._finish(fig, 340, "Test error by the statistics BN normalises with", legend=True)


def layer_chart(df: pd.DataFrame) -> go.Figure:
    """Per BN layer: the test statistics' distance from the running ones."""
    fig = go.Figure()
    fig.add_scatter(name="|μ_test − μ_running| / σ_running", x=df["layer"], y=df["shift"], mode="lines+markers")
    fig.add_scatter(name="σ²_test / σ²_running", x=df["layer"], y=df["var_ratio"], mode="lines+markers")
    fig.update_layout(yaxis_title="mean over channels", xaxis_title="BN layer", yaxis_rangemode="tozero")
    return render._finish(fig, 340, "Test-set statistics against the running statistics, per BN layer", legend=True)


def study_chart(df: pd.DataFrame) -> go.Figure:
    """The recorded study: test error per arm and depth, 95 % intervals as error bars."""
    fig = go.Figure()
    for depth, rows in df.groupby("layers", sort=False):
        arms = [f"{n}, {b} BN" for n, b in zip(rows["net"], rows["BatchNorm"], strict=True)]
        fig.add_bar(name=f"{depth} layers", x=arms, y=100 * rows["error"],
                    error_y={"type": "data", "array": (100 * (rows["high"] - rows["error"])).tolist(),
                             "arrayminus": (100 * (rows["error"] - rows["low"])).tolist(), "visible": True},
                    hovertemplate="%{x}: %{y:.2f} %<extra>" + f"{depth} layers</extra>")
    fig.update_layout(barmode="group", yaxis_title="test error, % (mean over seeds, 95 % CI)", xaxis_title="")
    return render._finish(fig, 380, "Trained with and without BatchNorm", legend=True)


st.title("Why shortcuts work")

st.subheader("Identity mappings")
st.markdown("A residual block learns a correction to its input rather than a whole new mapping "
            "(He et al. 2015, Eq. 1). Stacking identity-shortcut blocks, any deeper feature is a shallower one "
            "plus a sum of residuals (He et al. 2016, Eq. 4), and the gradient keeps a term that bypasses every "
            "weight layer (Eq. 5):")
st.latex(r"y = F(x, \{W_i\}) + x")
st.latex(r"x_L = x_l + \sum_{i=l}^{L-1} F(x_i, W_i)")
st.latex(r"\frac{\partial \mathcal{E}}{\partial x_l} = \frac{\partial \mathcal{E}}{\partial x_L}"
         r"\Big(1 + \frac{\partial}{\partial x_l}\sum_{i=l}^{L-1} F(x_i, W_i)\Big)")
st.markdown("The **1** carries the gradient from the loss to every block directly; the sum would have to be "
            "exactly −1 for a whole mini-batch to cancel it, so the gradient does not vanish even when the "
            "weights are small.")

st.subheader("A small correction is a large relative change")
st.markdown("The reference notes' argument for learning the residual F(x) = H(x) − x rather than H(x): when "
            "the target H(x) moves, a plain layer must change its whole output, by (H′ − H) / H, while a "
            "residual branch changes by (F′ − F) / F — the same step divided by the much smaller F. Try "
            "the notes' numbers (x = 6, H from 6.1 to 6.2) or your own:")
cols = st.columns(3)
x_in = cols[0].number_input("Input x", value=6.0, step=0.1, format="%g", key="theory_x")
h_before = cols[1].number_input("Target H(x) before", value=6.1, step=0.1, format="%g", key="theory_h_before")
h_after = cols[2].number_input("Target H(x) after", value=6.2, step=0.1, format="%g", key="theory_h_after")
try:
    sens = theory.sensitivity(x_in, h_before, h_after)
except LensError as exc:
    st.error(str(exc))
else:
    metric_row([Metric("Plain layer: change of its output H", pct(sens.plain_change),
                       help=f"({exact(sens.h_after)} − {exact(sens.h_before)}) / {exact(sens.h_before)} = "
                            f"{exact(sens.plain_change)}"),
                Metric("Residual branch: change of F = H − x", pct(sens.residual_change),
                       help=f"({exact(sens.f_after)} − {exact(sens.f_before)}) / {exact(sens.f_before)} = "
                            f"{exact(sens.residual_change)}"),
                Metric("F's change over the plain one", f"{fmt_float(float(sens.ratio), 4)}×",
                       help=f"H / F = {exact(sens.h_before)} / {exact(sens.f_before)} = {exact(sens.ratio)}")])
    st.caption(f"Computed exactly from the decimals typed: F goes from {exact(sens.f_before)} to "
               f"{exact(sens.f_after)}; the plain change is {exact(sens.plain_change)} and the residual one "
               f"{exact(sens.residual_change)}, a factor H / F = {exact(sens.ratio)} apart.")

st.subheader("How big a correction the shipped nets' blocks make")
st.markdown("The same factor, measured: for every block of a trained net, over its test inputs in eval mode, "
            "the norm of what the branch adds (F), of what the shortcut adds (x) and of their sum H = x + F "
            "(before the ReLU after the add). ‖H‖ / ‖F‖ is how many times larger F's relative change is than "
            f"H's when the block's target moves; in the notes' example it is {exact(NOTES.ratio)}. A plain net "
            "has no shortcut: its branch is the whole block, so H = F and the factor is 1, and its x is the "
            "block input as an option-A shortcut would carry it.")
shipped_files = checkpoints.shipped_checkpoints()
names = list(shipped_files)
net = st.selectbox("Shipped net", names, index=names.index(DEFAULT_NET) if DEFAULT_NET in names else 0,
                   key="theory_net")
measured = None
if net is not None:
    file = shipped_files[net]
    try:
        measured = cache.notes_measurements(str(file), file.stat().st_mtime)
    except LensError as exc:
        st.error(f"{net} cannot be measured: {exc}")
if measured is not None:
    blocks_df, batch_df, layers_df = measured
    render.show(block_chart(blocks_df), key="theory_blocks_chart")
    residual = bool(blocks_df["residual"].all())
    if residual:
        fh = blocks_df["f_over_h"]
        lo, hi = blocks_df.loc[fh.idxmin()], blocks_df.loc[fh.idxmax()]
        st.caption(f"{net}: ‖F‖ / ‖H‖ runs from {fmt_float(lo.f_over_h)} ({lo.block}) to {fmt_float(hi.f_over_h)} "
                   f"({hi.block}), median {fmt_float(fh.median())}: when a block's target moves, F changes "
                   f"{fmt_float(blocks_df['h_over_f'].min())}× to {fmt_float(blocks_df['h_over_f'].max())}× as much, "
                   f"relatively, as H ({exact(NOTES.ratio)}× in the notes' example). Norms over all "
                   f"{fmt_int(int(batch_df['n'].iloc[0]))} test inputs.")
    else:
        st.caption(f"{net} is plain: ‖F‖ / ‖H‖ is 1 in every block, and each block's output is "
                   f"{fmt_float(blocks_df['f_over_x'].min())}× to {fmt_float(blocks_df['f_over_x'].max())}× "
                   f"the size of its input (‖F‖ / ‖x‖). Norms over all {fmt_int(int(batch_df['n'].iloc[0]))} "
                   "test inputs.")
    shown = blocks_df.rename(columns={"norm_x": "‖x‖", "norm_f": "‖F‖", "norm_h": "‖H‖", "f_over_x": "‖F‖/‖x‖",
                                      "f_over_h": "‖F‖/‖H‖", "h_over_f": "‖H‖/‖F‖"})
    table(shown)
    st.download_button("Download the blocks (CSV)", csv_bytes(blocks_df), file_name=f"branch_sizes_{net}.csv",
                       mime="text/csv", key="theory_blocks_csv", on_click="ignore")

st.subheader("Scaled shortcuts explode or vanish")
st.markdown("Replace the identity by λ·x (He et al. 2016, Eq. 6–8): the gradient picks up λ^(L−l).")
st.latex(r"x_{l+1} = \lambda x_l + F(x_l) \;\Rightarrow\; x_L = \lambda^{L-l} x_l + \sum_i \hat F(x_i), \quad "
         r"\frac{\partial \mathcal{E}}{\partial x_l} = \frac{\partial \mathcal{E}}{\partial x_L}"
         r"\Big(\lambda^{L-l} + \frac{\partial}{\partial x_l}\sum_i \hat F(x_i)\Big)")
# the scales get a row of their own: in a third of an 820-px page the chips read '1…'
lams = st.multiselect("Shortcut scales λ", [0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5], [0.8, 0.9, 1.0, 1.1, 1.2],
                      key="theory_lambdas")
c = st.columns(2)
depth = c[0].slider("Blocks", 1, 200, 50, key="theory_depth")
rscale = c[1].slider("Residual branch strength", 0.0, 0.5, 0.1, key="theory_rscale",
                     help="0 removes F: the ratio is then exactly λ^blocks")
if lams:
    df = cache.scaled_shortcut_gradients(tuple(sorted(lams)), int(depth), float(rscale))
    render.show(render.scaled_shortcuts(df), key="theory_chart")
    last = df[df["blocks"] == depth].set_index("lambda")["ratio"]
    st.caption("Measured with autograd on a chain of random two-layer residual branches (64 dims): "
               + "; ".join(f"λ = {lam:g}: ×{fmt_float(v)}" for lam, v in last.items())
               + f" after {depth} blocks. Dotted: λ^blocks alone.")
else:
    st.info("Choose at least one λ.")

st.subheader("What the experiments say (He et al. 2016, ResNet-110 on CIFAR-10)")
c1, c2 = st.columns(2)
c1.markdown("**Shortcut variants** (test error %)")
table(pd.DataFrame(theory.SHORTCUT_VARIANTS, columns=["shortcut", "setting", "error %"]), container=c1)
c2.markdown("**Activation placement** (test error %)")
table(pd.DataFrame(theory.ACTIVATION_PLACEMENT, columns=["placement", "ResNet-110", "ResNet-164"]), container=c2)
st.markdown("Anything that gets in the way of the identity — scaling, gating, a 1×1 conv, dropout — makes "
            "optimisation harder. Moving BN and ReLU *before* the convolutions (full pre-activation) leaves "
            "a clean identity path from block to block and trains best.")
# a Page of this file's neighbour, not the path "app_pages/variants.py": that resolves against the entry point,
# which is app.py when routed but this file when the page runs alone (its tests)
st.page_link(st.Page(Path(__file__).with_name("variants.py")), icon=":material/science:",
             label="Variants lab: these variants trained here, measured beside the paper's numbers, with their "
                   "gradient flow")
c1, c2 = st.columns(2)
c1.markdown("**Original** (post-activation): ReLU after the add")
c1.graphviz_chart(cache.block_internals("basic", False))
c2.markdown("**Full pre-activation**: BN → ReLU → conv, nothing after the add")
c2.graphviz_chart(cache.block_internals("preact_basic", False))

st.subheader("BatchNorm, measured")
st.markdown("BatchNorm normalises each channel with the statistics of the batch while training and with "
            "running averages of them in eval mode. The net chosen above, evaluated on its test inputs both "
            "ways: with its BatchNorms in train mode (consecutive test inputs in their stored order as "
            "batches) and in eval mode. *Shift* is |μ_batch − μ_running| / σ_running and *variance ratio* "
            "σ²_batch / σ²_running, averaged over every BN layer, channel and batch; the net's own running "
            "statistics are left as trained.")
if measured is not None:
    eval_row = batch_df[batch_df["batch_size"] == 0].iloc[0]
    train_rows = batch_df[batch_df["batch_size"] > 0]
    render.show(batch_chart(batch_df), key="theory_batch_chart")
    smallest = train_rows.iloc[0]
    st.caption(f"{net}: with batch statistics at batch size {int(smallest.batch_size)}, "
               f"{fmt_int(int(smallest.wrong))} of {fmt_int(int(smallest.n))} test inputs are wrong "
               f"({pct(smallest.error)}); in eval mode {fmt_int(int(eval_row.wrong))} ({pct(eval_row.error)}). "
               "A prediction made with batch statistics depends on the other inputs of its batch; the running "
               "statistics make it a function of the input alone.")
    shown_batch = batch_df.assign(error=100 * batch_df["error"]).rename(
        columns={"batch_size": "batch size (0: any)", "error": "test error (%)", "shift": "shift",
                 "var_ratio": "variance ratio"})
    table(shown_batch)
    st.download_button("Download the batch sizes (CSV)", csv_bytes(batch_df), file_name=f"bn_batch_sizes_{net}.csv",
                       mime="text/csv", key="theory_batch_csv", on_click="ignore")
    st.markdown("**Running statistics against the test set's**, per BN layer in eval mode: the mean and "
                "variance of each layer's input over all test inputs, against the running ones the net "
                "normalises with.")
    render.show(layer_chart(layers_df), key="theory_layers_chart")
    worst = layers_df.loc[layers_df["shift"].idxmax()]
    st.caption(f"{net}: {len(layers_df)} BN layers; the largest mean shift is {fmt_float(worst['shift'])} "
               f"running standard deviations ({worst['layer']}); the variance ratio runs from "
               f"{fmt_float(layers_df['var_ratio'].min())} to {fmt_float(layers_df['var_ratio'].max())}.")
    st.download_button("Download the BN layers (CSV)", csv_bytes(layers_df), file_name=f"bn_layers_{net}.csv",
                       mime="text/csv", key="theory_layers_csv", on_click="ignore")

st.markdown("**Trained with and without BatchNorm** (recorded by `tools/make_bn_study.py`): the CIFAR ResNets "
            "and their plain twins on the 8×8 digits, with their BatchNorms and with every BatchNorm replaced "
            "by the identity (nothing else changed: for one seed the four arms start from the same conv "
            "weights and see the same batches, so differences are paired by seed).")
try:
    rec = bnstudy.load(BN_STUDY)
except LensError as exc:
    st.info(f"No BatchNorm study to show: {exc}")
else:
    study = bnstudy.table(rec)
    render.show(study_chart(study), key="theory_study_chart")
    machine = rec.get("machine", {})
    recipe = rec["recipe"]
    st.caption(f"{rec['data']}; {recipe['epochs']} epochs, batch {recipe['batch_size']}, lr {recipe['lr']:g} "
               f"({recipe.get('schedule', '?')} schedule, {recipe.get('warmup_epochs', '?')} warm-up epoch(s), "
               f"momentum {recipe.get('momentum', '?')}, weight decay {recipe.get('weight_decay', '?')}, "
               f"augmentation {'on' if recipe.get('augment') else 'off'}), seeds "
               f"{', '.join(str(s) for s in rec['seeds'])}; test error as mean "
               f"± 95 % t-interval over the seeds, on {fmt_int(max(r['n'] for r in rec['runs']))} test images. "
               f"Recorded with `{rec.get('command', 'tools/make_bn_study.py')}` "
               f"on {machine.get('cpu', 'an unrecorded CPU')}, {machine.get('threads', '?')} thread(s), torch "
               f"{machine.get('torch', '?')}.")
    if (study["low"] < 0).any():
        st.caption("An interval reaching below 0 % is a t-interval over seeds that spread widely (see the wrong "
                   "counts per seed below); the error itself cannot be negative.")
    table(study.drop(columns=["error", "low", "high", "test images"]))
    st.markdown("Paired differences (same seed in both arms), with the smallest true difference this many seeds "
                "would detect (80 % power, 5 % level):")
    table(bnstudy.comparisons(rec))
    st.download_button("Download every run (CSV)", csv_bytes(pd.DataFrame(rec["runs"])), file_name="bn_study.csv",
                       mime="text/csv", key="theory_study_csv", on_click="ignore")

st.subheader("Transfer learning")
st.markdown(
    "A net trained on one dataset keeps its features; replace the classifier and "
    "fine-tune. With this library: load torchvision weights into `build_model('resnet50')` (`strict=True`), "
    "then `model.fc = torch.nn.Linear(2048, n_classes)`; `get_spec('resnet50', num_classes=n)` gives the "
    "matching spec for the cost tables and diagrams.")
