"""Plotly renderers: DataFrame in, figure out. No analysis happens here.

Every figure goes through one layout (:func:`_finish`) so the charts read alike:

- a title, when there is one, sits top-left; plotly's modebar shows at the top right on hover, so it
  does not cover it (and :data:`PLOTLY_CONFIG` keeps that modebar short);
- the legend is a horizontal block above the plot area, left-aligned, where it cannot cover an axis
  title (plotly's default horizontal legend sits under the x axis, on top of its title), with the
  figure's title as its first line; a figure with a legend has no subplot titles, which would sit in
  the same band: its panels are named by their axis titles instead;
- count axes (parameters, MACs) tick with SI suffixes ('1.5M', '4G') and hover with the exact number;
- log axes tick at whole decades only, written 10ⁿ (no '1μ' next to '10⁻¹⁸', no unlabelled minor
  ticks), over a range of whole decades so there are always ticks at both ends;
- a quantity compared by ratio is shown on a linear axis with the ratio written on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from analysis.core import stats
from analysis.experiments.gradflow import block_names
from ui.fmt import fmt_float, fmt_si

PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    # zoom, pan, reset and PNG download stay; the rest only widened the bar over the chart
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "zoomIn2d", "zoomOut2d"],
}
LEGEND_ABOVE: dict[str, Any] = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0)
TITLE_PX = 32  # the band a title takes at the top of a figure
LEGEND_PX = 34  # one legend row above the plot area; plotly widens the margin itself for more rows
MAX_DECADE_TICKS = 8
DECADE_STEPS = (1, 2, 3, 5, 10, 20, 25, 50, 100, 200, 500)  # decades between log ticks: 10⁰, 10²⁰, 10⁴⁰, ...
PALETTE = px.colors.qualitative.D3 + [c for c in px.colors.qualitative.Dark24 if c not in px.colors.qualitative.D3]
RESIDUAL_COLOURS = {True: "#1f77b4", False: "#d62728"}


def show(fig: go.Figure, key: str, container: Any = None) -> None:
    """``st.plotly_chart`` with the app's plotly config (short modebar, no logo)."""
    (container or st).plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


def _finish(fig: go.Figure, height: int, title: str | None = None, legend: bool = False) -> go.Figure:
    """The layout every figure shares (see the module docstring). With a legend, the title is the
    legend's own title, on the line above its entries: plotly sizes the top margin for the legend
    however many rows it wraps to, so the two can never overlap (a title at the top of the figure
    and a legend just above the plot met as soon as the legend wrapped on a half-width chart)."""
    if legend:
        fig.update_layout(legend=dict(**LEGEND_ABOVE, title=dict(text=title or "", side="top",
                                                                 font=dict(size=14))))
        top = 10 + LEGEND_PX + (TITLE_PX if title else 0)
    else:
        top = 10 + (TITLE_PX if title else 0) + (24 if fig.layout.annotations else 0)  # subplot titles
        if title:
            fig.update_layout(title=dict(text=title, x=0, xref="paper", xanchor="left", y=1, yref="container",
                                         yanchor="top", pad=dict(t=8), font=dict(size=15)))
    fig.update_layout(height=height, showlegend=legend, margin=dict(t=top, b=10, l=10, r=10))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _left_subplot_titles(fig: go.Figure) -> None:
    """Subplot titles at the left edge of their panel: centred, the right panel's title ran under
    the modebar on a half-width chart. A title is centred over its panel's x domain, which finds it."""
    domains = [tuple(axis["domain"]) for name, axis in fig.layout.to_plotly_json().items()
               if name.startswith("xaxis") and "domain" in axis]
    for ann in fig.layout.annotations:
        for lo, hi in domains:
            if ann.x is not None and abs(ann.x - (lo + hi) / 2) < 1e-9:
                ann.update(x=lo, xanchor="left")
                break


def count_axis() -> dict[str, Any]:
    """Parameters, MACs, FLOPs: SI ticks ('20M'), exact value on hover ('1,179,648')."""
    return dict(tickformat="~s", hoverformat=",d", rangemode="tozero")


def log_axis(values: Iterable[float]) -> dict[str, Any]:
    """A log axis over whole decades with ticks at decades only (every 2nd, 5th, 10th, ... decade
    when the range is wide, so at most ~8 labels), written 10ⁿ."""
    positive = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    lo = math.floor(math.log10(min(positive))) if positive else 0
    hi = math.ceil(math.log10(max(positive))) if positive else 1
    if hi <= lo:
        hi = lo + 1
    dtick = next((step for step in DECADE_STEPS if (hi - lo) / step <= MAX_DECADE_TICKS), DECADE_STEPS[-1])
    lo, hi = dtick * math.floor(lo / dtick), dtick * math.ceil(hi / dtick)  # a labelled tick at each end
    return dict(type="log", range=[lo, hi], tickmode="linear", tick0=0, dtick=dtick, exponentformat="power",
                showexponent="all", minor=dict(ticks="", showgrid=False))


def integer_axis(values: Iterable[float], max_ticks: int = 10) -> dict[str, Any]:
    """Whole-number ticks (epochs, k): 1, 2, 3 — never 1, 1.5, 2 — thinned to 2, 5, 10, ... steps."""
    vals = [float(v) for v in values]
    span = (max(vals) - min(vals)) if vals else 1.0
    step = 1
    while span / step > max_ticks:
        step = _next_step(step)
    return dict(tickmode="linear", tick0=0, dtick=step, tickformat="d")


def _next_step(step: int) -> int:
    """1, 2, 5, 10, 20, 50, ..."""
    lead = int(str(step)[0])
    return step * 5 // 2 if lead == 2 else step * 2


def value_axis(values: Iterable[float]) -> dict[str, Any]:
    """Counts that span more than a factor of 20 get a log axis (decades), others a linear one from
    zero, where bar heights and distances keep their ratios."""
    positive = [float(v) for v in values if float(v) > 0]
    if positive and max(positive) / min(positive) > 20:
        return {**log_axis(positive), "hoverformat": ",d"}
    return count_axis()


# --------------------------------------------------------------------------- explorer
def stage_costs(stage_df: pd.DataFrame, per: str = "stage") -> go.Figure:
    """Parameters and MACs per stage (or per whatever the rows' ``id`` names: ``per``), side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"Parameters per {per}", f"MACs per {per}"))
    fig.add_bar(x=stage_df["id"], y=[int(v) for v in stage_df["params"]], name="params", row=1, col=1)
    fig.add_bar(x=stage_df["id"], y=[int(v) for v in stage_df["macs"]], name="MACs", row=1, col=2)
    fig.update_yaxes(**count_axis())
    _left_subplot_titles(fig)
    return _finish(fig, 330)


def op_costs(op_df: pd.DataFrame) -> go.Figure:
    """Parameters and MACs per layer type."""
    long = op_df.melt(id_vars="kind", value_vars=["params", "macs"], var_name="metric")
    long["value"] = [int(v) for v in long["value"]]
    fig = px.bar(long, x="kind", y="value", facet_col="metric", color="kind", height=330,
                 labels={"kind": "layer type", "value": ""})
    fig.update_yaxes(matches=None, showticklabels=True, **count_axis())
    fig.for_each_annotation(lambda a: a.update(text={"params": "Parameters per layer type",
                                                     "macs": "MACs per layer type"}.get(a.text.split("=")[-1],
                                                                                          a.text)))
    _left_subplot_titles(fig)
    return _finish(fig, 330)


def receptive_field(rf_df: pd.DataFrame, input_size: int, unit: str = "px") -> go.Figure:
    """Receptive field after each main-path op, with the input size as a reference line; ``unit``
    is px (2-D) or samples (1-D)."""
    fig = px.line(rf_df, x=rf_df.index, y="rf", color="stage", markers=True, hover_data=["id", "jump", "growth"],
                  labels={"x": "op index along the main path",
                          "rf": f"receptive field ({'pixels' if unit == 'px' else unit})"})
    fig.add_hline(y=input_size, line_dash="dot", annotation_text=f"input {input_size:,} {unit}",
                  annotation_position="bottom right")
    fig.update_xaxes(title_text="op index along the main path")
    fig.update_yaxes(tickformat=",d", rangemode="tozero")
    return _finish(fig, 340, legend=True)


# --------------------------------------------------------------------------- depth, blocks
def vs_depth(df: pd.DataFrame, y: str, title: str) -> go.Figure:
    """A count vs depth for residual and plain nets. Log axes only where the values span more than
    a factor of 20 (CIFAR 20 … 1202), with the depths themselves as ticks."""
    fig = go.Figure()
    for series, g in df.groupby("series", sort=False):
        colour = RESIDUAL_COLOURS[series != "plain"]
        fig.add_scatter(x=g["depth"], y=[int(v) for v in g[y]], mode="lines+markers", name=str(series),
                        text=g["model"], line=dict(color=colour, dash="dot" if series == "plain" else "solid"),
                        hovertemplate="%{text}<br>depth %{x}<br>" + y + " %{y:,d}<extra></extra>")
    depths = sorted({int(d) for d in df["depth"]})
    xaxis: dict[str, Any] = dict(title_text="depth (weighted layers)", tickmode="array", tickvals=depths,
                                 ticktext=[str(d) for d in depths])
    if depths and depths[-1] > 200:
        xaxis.update(type="log")
    fig.update_xaxes(**xaxis)
    fig.update_yaxes(title_text=y, **value_axis(int(v) for v in df[y]))
    return _finish(fig, 380, title=title, legend=True)


def block_bars(df: pd.DataFrame) -> go.Figure:
    """Parameters and MACs of each block on linear axes, every bar labelled with its value and its
    ratio to the smallest bar of its panel: on a log axis a 16.9× difference looked like 2×."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Parameters", "MACs"),
                        horizontal_spacing=0.1)
    colours = ["#1f77b4" if "basic" in str(b) else "#ff7f0e" for b in df["block"]]
    for col, column in enumerate(("total parameters", "MACs"), start=1):
        values = [int(v) for v in df[column]]
        smallest = min(values) if values else 0
        text = [f"{fmt_si(v, sig=3)}<br><b>{v / smallest:.1f}×</b>" if smallest > 0 else fmt_si(v, sig=3)
                for v in values]
        fig.add_bar(x=df["block"], y=values, text=text, textposition="outside", cliponaxis=False,
                    constraintext="none", textfont=dict(size=12),
                    marker_color=colours, name=column, row=1, col=col,
                    hovertemplate="%{x}<br>%{y:,d}<extra></extra>")
        fig.update_yaxes(type="linear", range=[0, 1.3 * max(values, default=1)], tickformat="~s",
                         hoverformat=",d", row=1, col=col)
    _left_subplot_titles(fig)
    return _finish(fig, 360)


# --------------------------------------------------------------------------- training
def smoothed(values: list[float], weight: float) -> list[float]:
    """An exponential moving average, as TensorBoard's smoothing slider: each point is ``weight`` times
    the previous smoothed point plus (1 − weight) times its own value; the first point is its own."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else weight * out[-1] + (1 - weight) * v)
    return out


def training_curves(runs: list[dict], title: str = "", *, log_y: bool = False, smooth: float = 0.0) -> go.Figure:
    """He et al. 2015, Fig. 6 style: error (%) vs epoch, plain nets left, residual nets right (only
    the panels that have runs); one colour per run, training error dashed, test error solid, both
    explained in the legend. A run with fewer than two epochs gets markers: a one-point line is
    not drawn at all. ``smooth`` (0–1) draws each curve's exponential moving average (:func:`smoothed`);
    ``log_y`` a logarithmic error axis (small differences between good runs show)."""
    kinds = [k for k in (False, True) if any(bool(r["residual"]) == k for r in runs)] or [True]
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.06)
    for dash, what in (("solid", "test error (solid)"),
                       ("dash", "running training error (dashed; augmented batches, train mode)")):
        fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="#555", dash=dash), name=what,
                        legendgroup="style", hoverinfo="skip", row=1, col=1)
    epochs_seen: list[float] = []
    for i, r in enumerate(runs):
        col = kinds.index(bool(r["residual"])) + 1
        colour = PALETTE[i % len(PALETTE)]
        epochs = [h["epoch"] for h in r["history"]]
        epochs_seen += epochs
        # a line needs two points: a run of one epoch (or cancelled after one) is drawn as markers
        mode = "lines" if len(epochs) >= 2 else "lines+markers"
        for key, dash, what in (("test_acc", "solid", "test"), ("train_acc", "dash", "running training")):
            errors = smoothed([100 * (1 - h[key]) for h in r["history"]], smooth)
            fig.add_scatter(x=epochs, y=errors, mode=mode,
                            line=dict(color=colour, dash=dash), name=r["label"], legendgroup=r["label"],
                            showlegend=what == "test", row=1, col=col,
                            hovertemplate=f"{r['label']}<br>epoch %{{x}}<br>{what} error %{{y:.2f}} %<extra></extra>")
    names = {False: "plain nets", True: "residual nets"}
    for col, kind in enumerate(kinds, start=1):
        fig.update_xaxes(title_text=f"epoch — {names[kind]}", **integer_axis(epochs_seen or [1]), row=1, col=col)
    if log_y:
        fig.update_yaxes(showticklabels=True, type="log", ticksuffix=" %")
    else:
        fig.update_yaxes(showticklabels=True, rangemode="tozero", ticksuffix=" %")
    fig.update_yaxes(title_text="error" + (" (smoothed)" if smooth else ""), row=1, col=1)
    return _finish(fig, 400, title=title or None, legend=True)


# --------------------------------------------------------------------------- gradient flow
GRADIENT_KIND_LABELS = {"input": "‖∂ℓ/∂x‖ at the block's input (per image)",
                        "params": "‖∂L/∂θ‖ of the block's parameters"}
STEP_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(n: int) -> str:
    """10ⁿ as a log axis writes it: 10⁻³, 10⁰, 10²."""
    return "10" + str(n).translate(SUPERSCRIPTS)


def decade_range(values: Iterable[float]) -> tuple[int, int]:
    """The whole decades around the positive finite values (a colour range that several heatmaps
    can share, so one colour is one magnitude in all of them)."""
    axis = log_axis(values)
    return int(axis["range"][0]), int(axis["range"][1])


def gradient_heatmap(df: pd.DataFrame, kind: str = "input", title: str | None = None,
                     zrange: tuple[int, int] | None = None) -> go.Figure:
    """Gradient norm per block (rows, the first block on top) and recorded step (columns) on a log
    colour scale with decade ticks; ``zrange`` (decades, e.g. from :func:`decade_range`) fixes the
    colours so that two runs' heatmaps read alike. ``df``: analysis.experiments.gradflow's records of one run."""
    sub = df[df["kind"] == kind]
    blocks = block_names(sub) if len(sub) else []
    grid = sub.pivot_table(index="block", columns="step", values="norm", aggfunc="first").reindex(blocks)
    steps = [int(s) for s in grid.columns]
    epochs = sub.groupby("step")["epoch"].first().reindex(steps).tolist() if steps else []
    values = grid.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
    lo, hi = zrange if zrange is not None else decade_range(values.ravel())
    dtick = next((d for d in DECADE_STEPS if (hi - lo) / d <= MAX_DECADE_TICKS), DECADE_STEPS[-1])
    ticks = list(range(lo, hi + 1, dtick))
    text = [[f"{b}<br>step {s} (epoch {ep})<br>{fmt_float(v)}" for s, ep, v in zip(steps, epochs, row, strict=True)]
            for b, row in zip(blocks, values, strict=True)]
    fig = go.Figure(go.Heatmap(
        z=z, x=steps, y=blocks, zmin=lo, zmax=hi, colorscale="Viridis", text=text, hoverongaps=False,
        hovertemplate="%{text}<extra></extra>",
        colorbar=dict(title=dict(text="norm", side="right"), tickmode="array", tickvals=ticks,
                      ticktext=[decade_label(t) for t in ticks], thickness=14)))
    fig.update_xaxes(title_text="training step", **integer_axis(steps or [0]))
    # every block named (one row each), the input side on top as the net is drawn on the other pages
    fig.update_yaxes(title_text="block", type="category", autorange="reversed",
                     tickfont=dict(size=10 if len(blocks) > 30 else 12))
    return _finish(fig, min(900, max(300, 90 + 16 * len(blocks))), title=title or GRADIENT_KIND_LABELS[kind])


def gradient_lines(df: pd.DataFrame, steps: Iterable[int], kind: str = "input", title: str | None = None) -> go.Figure:
    """Gradient norm vs block (forward order, log y with decade ticks) at the chosen steps: one
    colour per run (``df['run']``; residual nets blue and plain red when the runs are one pair),
    one dash per step. Blocks share a category axis, so nets of different depth line up by name."""
    sub = df[df["kind"] == kind]
    if "run" not in sub.columns:
        sub = sub.assign(run="run")
    wanted = [int(s) for s in steps]
    sub = sub[sub["step"].isin(wanted)]
    blocks = block_names(sub) if len(sub) else []
    runs = list(dict.fromkeys(str(r) for r in sub["run"]))
    pair = "residual" in sub.columns and len(runs) == 2 and sub.groupby("run")["residual"].first().nunique() == 2
    fig = go.Figure()
    for i, (run, g) in enumerate(sub.groupby("run", sort=False)):
        colour = RESIDUAL_COLOURS[bool(g["residual"].iloc[0])] if pair else PALETTE[i % len(PALETTE)]
        for j, step in enumerate(s for s in wanted if s in set(g["step"])):
            at = g[g["step"] == step].set_index("block")["norm"]
            order = [b for b in blocks if b in at.index]
            fig.add_scatter(x=order, y=[float(at[b]) for b in order], mode="lines+markers", name=f"{run} · step {step}",
                            line=dict(color=colour, dash=STEP_DASHES[j % len(STEP_DASHES)]), marker=dict(size=5),
                            legendgroup=str(run),
                            hovertemplate=f"{run}<br>step {step}<br>%{{x}}: %{{y:.3g}}<extra></extra>")
    fig.update_xaxes(title_text="block (input → output)", type="category", categoryorder="array",
                     categoryarray=blocks, tickangle=-45)
    fig.update_yaxes(title_text=GRADIENT_KIND_LABELS[kind], **log_axis(sub["norm"]))
    return _finish(fig, 420, title=title, legend=True)


# --------------------------------------------------------------------------- lesion
def per_class(df: pd.DataFrame) -> go.Figure:
    long = df.melt(id_vars="class", value_vars=["intact", "lesioned"], var_name="net", value_name="accuracy")
    fig = px.bar(long, x="class", y="accuracy", color="net", barmode="group", range_y=[0, 1])
    fig.update_xaxes(type="category")  # class names such as '0'…'9' are labels, every one shown
    fig.update_yaxes(tickformat=".0%")
    return _finish(fig, 340, title="Per-class accuracy", legend=True)


def confusion_delta(delta: np.ndarray, classes: list[str]) -> go.Figure:
    lim = max(1, int(abs(delta).max()))
    fig = px.imshow(delta, x=classes, y=classes, color_continuous_scale="RdBu_r", zmin=-lim, zmax=lim,
                    labels=dict(x="predicted", y="true", color="Δ count"), text_auto=True)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return _finish(fig, 340, title="Confusion change (lesioned − intact)")


def single_sweep(df: pd.DataFrame) -> go.Figure:
    """Error after deleting each block; downsampling blocks outlined; the intact error of each net a
    dotted line named in the legend (a label on the line hid behind the bars)."""
    fig = go.Figure()
    for net, g in df.groupby("net", sort=False):
        res = bool(g["residual"].iloc[0])
        bars = g[g["index"] >= 0]
        fig.add_bar(x=bars["deleted"], y=100 * bars["error"], name=f"{net}: one block deleted", legendgroup=str(net),
                    marker_color=RESIDUAL_COLOURS[res], opacity=0.85,
                    marker_line=dict(width=[3 if d else 0 for d in bars["downsample"]], color="black"),
                    hovertemplate="%{x}<br>test error %{y:.2f} %<extra>" + str(net) + "</extra>")
        intact = 100 * float(g.loc[g["index"] < 0, "error"].iloc[0])
        fig.add_scatter(x=list(bars["deleted"]), y=[intact] * len(bars), mode="lines",
                        line=dict(color=RESIDUAL_COLOURS[res], dash="dot", width=2), legendgroup=str(net),
                        name=f"{net}: intact, {intact:.2f} %", hoverinfo="skip")
    fig.update_xaxes(title_text="deleted block (outlined: downsampling)", tickangle=-45, type="category")
    fig.update_yaxes(title_text="test error", ticksuffix=" %", rangemode="tozero")
    fig.update_layout(barmode="group")
    return _finish(fig, 420, legend=True)


def position_sweep(df: pd.DataFrame, moved: str, xlabel: str) -> go.Figure:
    """Error after each change by position (a swap, repeat or parallel sweep: ``units`` names the
    change, ``index`` its position, -1 the intact net), residual net and plain twin on the same axes,
    each net's intact error a dotted line named in the legend, as in :func:`single_sweep`. ``moved``:
    what one bar did ("pair swapped")."""
    fig = go.Figure()
    order = list(dict.fromkeys(df.loc[df["index"] >= 0].sort_values("index", kind="stable")["units"]))
    for net, g in df.groupby("net", sort=False):
        c = RESIDUAL_COLOURS[bool(g["residual"].iloc[0])]
        bars = g[g["index"] >= 0]
        intact = 100 * float(g.loc[g["index"] < 0, "error"].iloc[0])
        fig.add_bar(x=bars["units"], y=100 * bars["error"], name=f"{net}: {moved}", legendgroup=str(net),
                    marker_color=c, opacity=0.85, customdata=100 * bars["error"] - intact,
                    hovertemplate="%{x}<br>test error %{y:.2f} % (%{customdata:+.2f} pp)<extra>" + str(net)
                                  + "</extra>")
        fig.add_scatter(x=order, y=[intact] * len(order), mode="lines", line=dict(color=c, dash="dot", width=2),
                        legendgroup=str(net), name=f"{net}: intact, {intact:.2f} %", hoverinfo="skip")
    fig.update_xaxes(title_text=xlabel, tickangle=-45, type="category", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text="test error", ticksuffix=" %", rangemode="tozero")
    fig.update_layout(barmode="group")
    return _finish(fig, 420, legend=True)


def k_sweep(df: pd.DataFrame, x: str, xlabel: str) -> go.Figure:
    """Mean error vs k with a ±std band, residual and plain on the same axes."""
    fig = go.Figure()
    for net, g in df.groupby("net", sort=False):
        s = g.groupby(x)["error"].agg(["mean", "std"]).fillna(0.0).reset_index()
        c = RESIDUAL_COLOURS[bool(g["residual"].iloc[0])]
        fig.add_scatter(x=s[x], y=100 * (s["mean"] + s["std"]), mode="lines", line=dict(width=0),
                        showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=s[x], y=100 * (s["mean"] - s["std"]).clip(lower=0), mode="lines", line=dict(width=0),
                        fill="tonexty", fillcolor=_rgba(c, 0.15), showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=s[x], y=100 * s["mean"], mode="lines+markers", name=f"{net}: mean ± std",
                        line=dict(color=c))
        fig.add_scatter(x=g[x], y=100 * g["error"], mode="markers", marker=dict(color=c, size=4, opacity=0.35),
                        showlegend=False, hovertemplate=f"{x} = %{{x}}<br>%{{y:.2f}} %<extra>{net}</extra>")
    fig.update_xaxes(title_text=xlabel, **integer_axis(df[x] if len(df) else [0]))
    fig.update_yaxes(title_text="test error", ticksuffix=" %", rangemode="tozero")
    return _finish(fig, 400, legend=True)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# --------------------------------------------------------------------------- paths
def unrolled(g: nx.DiGraph, highlight: list[str]) -> go.Figure:
    """The layered graph of paths: residual branches on top, skips below; one path highlighted."""
    pos = {}
    for node, d in g.nodes(data=True):
        y = {"input": 0.5, "output": 0.5, "residual": 1.0, "skip": 0.0}[d["kind"]]
        pos[node] = (d["layer"], y)
    on = set(zip(highlight, highlight[1:], strict=False))
    fig = go.Figure()
    for u, v in g.edges:
        hot = (u, v) in on
        fig.add_scatter(x=[pos[u][0], pos[v][0]], y=[pos[u][1], pos[v][1]], mode="lines", hoverinfo="skip",
                        line=dict(color="#d62728" if hot else "#c8c8c8", width=4 if hot else 1.2), showlegend=False)
    for kind, colour in (("input", "#444"), ("output", "#444"), ("residual", "#1f77b4"), ("skip", "#2ca02c")):
        nodes = [n for n, d in g.nodes(data=True) if d["kind"] == kind]
        fig.add_scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text",
                        text=nodes, textposition="top center", name=kind, hovertext=nodes,
                        marker=dict(size=[18 if n in highlight else 12 for n in nodes], color=colour,
                                    line=dict(width=2, color="#d62728")))
    fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False, range=[-0.3, 1.35]))
    return _finish(fig, 340, legend=True)


def length_distribution(df: pd.DataFrame, window: tuple[int, int]) -> go.Figure:
    inside = df["length"].between(*window)
    fig = px.bar(df, x="length", y="share", color=inside.map({True: "in range", False: "outside"}),
                 hover_data=["paths", "log10 paths"],
                 color_discrete_map={"in range": "#1f77b4", "outside": "#c6dbef"})
    fig.update_xaxes(title_text="path length k (residual branches passed)")
    fig.update_yaxes(title_text="share of all paths", tickformat=".1%")
    return _finish(fig, 340, legend=True)


def gradient_by_length(df: pd.DataFrame, effective: tuple[int, int]) -> go.Figure:
    """Mean gradient magnitude per path length (log scale, decades) and the total per length.

    The error bars of the log panel are asymmetric: +std above the mean, and below it std clipped
    to 0.999 x mean. A symmetric bar reaches zero or below wherever std >= mean, which a log axis
    draws as a bar running off the bottom of the chart; the clipped bar ends three decades under
    the mean instead. The exact mean ± std is in the hover."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    colours = {"trained": "#1f77b4", "initialisation": "#ff7f0e"}
    for net, g in df.groupby("net", sort=False):
        c = colours.get(str(net), "#444")
        below = [max(0.0, min(float(sd), 0.999 * float(m))) for sd, m in zip(g["std"], g["mean"], strict=True)]
        fig.add_scatter(x=g["length"], y=g["mean"], mode="lines+markers", name=str(net), line=dict(color=c),
                        legendgroup=str(net), customdata=g["std"],
                        hovertemplate=f"{net}<br>length %{{x}}<br>mean %{{y:.3g}} ± std %{{customdata:.3g}}"
                                      "<extra></extra>",
                        error_y=dict(type="data", symmetric=False, array=g["std"], arrayminus=below, visible=True,
                                     thickness=0.8), row=1, col=1)
        fig.add_scatter(x=g["length"], y=g["total (rel.)"], mode="lines+markers", name=f"{net} (total)",
                        line=dict(color=c, dash="dot"), legendgroup=str(net), showlegend=False, row=1, col=2)
    fig.add_vrect(x0=effective[0] - 0.5, x1=effective[1] + 0.5, fillcolor="#2ca02c", opacity=0.12, line_width=0,
                  row=1, col=2)
    fig.update_yaxes(title_text="one path's gradient magnitude", **log_axis(df["mean"]), row=1, col=1)
    fig.update_yaxes(title_text="C(n,k) × magnitude, rel. to peak", row=1, col=2)
    fig.update_xaxes(title_text="path length k", **integer_axis(df["length"] if len(df) else [0]))
    return _finish(fig, 400, legend=True)


# --------------------------------------------------------------------------- theory
def scaled_shortcuts(df: pd.DataFrame) -> go.Figure:
    """Gradient ratio vs number of blocks for each shortcut scale (log y, decades), with lambda^blocks
    dotted."""
    fig = go.Figure()
    for i, (lam, g) in enumerate(df.groupby("lambda")):
        c = PALETTE[i % len(PALETTE)]
        fig.add_scatter(x=g["blocks"], y=g["ratio"], mode="lines", name=f"λ = {lam:g}", line=dict(color=c),
                        hovertemplate="%{x} blocks: ×%{y:.3g}<extra>λ = " + f"{lam:g}" + "</extra>")
        fig.add_scatter(x=g["blocks"], y=g["lambda^blocks"], mode="lines", line=dict(color=c, dash="dot"),
                        showlegend=False, hoverinfo="skip")
    fig.update_xaxes(title_text="blocks between the loss and x_l", **integer_axis(df["blocks"] if len(df) else [1]))
    fig.update_yaxes(title_text="‖∂E/∂x_l‖ / ‖∂E/∂x_L‖",
                     **log_axis(list(df["ratio"]) + list(df["lambda^blocks"])))
    return _finish(fig, 400, legend=True)


# --------------------------------------------------------------------------- transfer learning
def _accuracy_axis() -> dict[str, Any]:
    """Test accuracy in per cent, from 0 to 100: a transfer gain is read as a distance on this scale."""
    return dict(title_text="target test accuracy", ticksuffix=" %", range=[0, 102])


def _error_bars(half: Iterable[float]) -> dict[str, Any]:
    """The 95 % t-interval over seeds (``half``: its half widths, fractions), none where it is undefined
    (under 3 seeds, or one seed)."""
    return dict(type="data", array=[0.0 if not math.isfinite(float(s)) else 100 * float(s) for s in half],
                visible=True, thickness=1.2)


def spread_text(half: float, seeds: int, scale: float = 100.0, digits: int = 1) -> str:
    """What a hover says after a mean: '± 2.1 (95 % CI, t, 5 seeds)', or why there is no interval."""
    n = int(seeds)
    if n <= 1 or not math.isfinite(float(half)):
        return f"({stats.no_interval(n)})"
    return f"± {scale * float(half):.{digits}f} (95 % CI, t, {n} seeds)"


def accuracy_vs_labels(df: pd.DataFrame, ticks: list[tuple[float, str]]) -> go.Figure:
    """Target test accuracy (mean over seeds, whiskers its 95 % t-interval) vs labelled images per class,
    log x, one line per setup. ``df``: setup, x (images per class), labels (in words), mean, half (the
    interval's half width), seeds, colour, dash.
    ``ticks``: (x, text) of the label settings, so 'all' sits at its real number of images."""
    fig = go.Figure()
    for setup, g in df.groupby("setup", sort=False):
        g = g.sort_values("x")
        fig.add_scatter(x=g["x"].tolist(), y=(100 * g["mean"]).tolist(), mode="lines+markers", name=str(setup),
                        line=dict(color=g["colour"].iloc[0], dash=g["dash"].iloc[0]),
                        error_y=_error_bars(g["half"]),
                        customdata=list(zip(g["labels"], [spread_text(h, n) for h, n in zip(g["half"], g["seeds"],
                                                                                             strict=True)], strict=True)),
                        hovertemplate=f"{setup}<br>%{{customdata[0]}}<br>%{{y:.1f}} % %{{customdata[1]}}<extra></extra>")
    fig.update_xaxes(title_text="labelled training images per class (log scale)", type="log",
                     tickmode="array", tickvals=[t[0] for t in ticks], ticktext=[t[1] for t in ticks],
                     minor=dict(ticks="", showgrid=False))
    fig.update_yaxes(**_accuracy_axis())
    return _finish(fig, 440, legend=True)


def first_k_transfer(df: pd.DataFrame, stages: int) -> go.Figure:
    """Yosinski et al. 2014, Fig. 2 style: target accuracy vs the number k of leading stages
    transferred, frozen and fine-tuned, whiskers the 95 % t-interval over seeds. ``df``: k, line ('frozen' /
    'fine-tuned'), setup, mean, half (the interval's half width), seeds."""
    fig = go.Figure()
    colours = {"frozen": "#1f77b4", "fine-tuned": "#ff7f0e"}
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values("k")
        fig.add_scatter(x=g["k"].tolist(), y=(100 * g["mean"]).tolist(), mode="lines+markers",
                        name=f"first k stages {line}", line=dict(color=colours.get(str(line), "#444")),
                        marker=dict(size=9), error_y=_error_bars(g["half"]),
                        customdata=list(zip(g["setup"], [spread_text(h, n) for h, n in zip(g["half"], g["seeds"],
                                                                                            strict=True)], strict=True)),
                        hovertemplate="k = %{x}: %{customdata[0]}<br>%{y:.1f} % %{customdata[1]}<extra></extra>")
    fig.update_xaxes(title_text=f"k: leading stages copied from the source (0 = from scratch, {stages} = all)",
                     range=[-0.3, stages + 0.3], **integer_axis(range(stages + 1)))
    fig.update_yaxes(**_accuracy_axis())
    return _finish(fig, 400, legend=True)


def transfer_curves(df: pd.DataFrame, x: str) -> go.Figure:
    """Test accuracy during training (``x``: 'epoch' or 'seconds'), one colour per setup and one
    line per seed. ``df``: setup, seed, epoch, seconds, test_acc, colour."""
    fig = go.Figure()
    shown: set[str] = set()
    for (setup, seed), g in df.groupby(["setup", "seed"], sort=False):
        g = g.sort_values("epoch")
        fig.add_scatter(x=g[x].tolist(), y=(100 * g["test_acc"]).tolist(),
                        mode="lines" if len(g) >= 2 else "lines+markers", name=str(setup),
                        legendgroup=str(setup), showlegend=setup not in shown, line=dict(color=g["colour"].iloc[0]),
                        hovertemplate=f"{setup}, seed {seed}<br>{x} %{{x:.3g}}<br>test %{{y:.1f}} %<extra></extra>")
        shown.add(str(setup))
    if x == "epoch":
        fig.update_xaxes(title_text="epoch", **integer_axis(df["epoch"] if len(df) else [1]))
    else:
        fig.update_xaxes(title_text="seconds of training (test evaluations included)", rangemode="tozero")
    fig.update_yaxes(**_accuracy_axis())
    return _finish(fig, 400, legend=True)


def accuracy_bars(df: pd.DataFrame, x_title: str) -> go.Figure:
    """Grouped bars of target accuracy (mean over seeds, whiskers its 95 % t-interval): x = the label
    setting, one bar colour per ``series`` (a normalisation, a BatchNorm mode). ``df``: group, series,
    mean, half (the interval's half width), seeds."""
    fig = go.Figure()
    groups = list(dict.fromkeys(str(v) for v in df["group"]))
    for i, (series, g) in enumerate(df.groupby("series", sort=False)):
        fig.add_bar(x=[str(v) for v in g["group"]], y=(100 * g["mean"]).tolist(), name=str(series),
                    marker_color=PALETTE[i % len(PALETTE)], error_y=_error_bars(g["half"]),
                    customdata=[spread_text(h, n) for h, n in zip(g["half"], g["seeds"], strict=True)],
                    hovertemplate=f"{series}<br>%{{x}}: %{{y:.1f}} % %{{customdata}}<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text=x_title, type="category", categoryorder="array", categoryarray=groups)
    fig.update_yaxes(**_accuracy_axis())
    return _finish(fig, 360, legend=True)


def probe_by_stage(df: pd.DataFrame) -> go.Figure:
    """Linear-probe accuracy on each stage's pooled output of the frozen source net, one line per
    label setting. ``df``: stage, labels (in words), test_acc."""
    fig = go.Figure()
    stages = list(dict.fromkeys(str(s) for s in df["stage"]))
    for i, (labels, g) in enumerate(df.groupby("labels", sort=False)):
        fig.add_scatter(x=[str(s) for s in g["stage"]], y=(100 * g["test_acc"]).tolist(), mode="lines+markers",
                        name=str(labels), line=dict(color=PALETTE[i % len(PALETTE)]),
                        hovertemplate=f"{labels}<br>%{{x}}: %{{y:.1f}} %<extra></extra>")
    fig.update_xaxes(title_text="stage whose pooled output the probe reads (input → output)", type="category",
                     categoryorder="array", categoryarray=stages)
    fig.update_yaxes(**{**_accuracy_axis(), "title_text": "probe test accuracy"})
    return _finish(fig, 360, legend=True)


def degradation_chart(nets: pd.DataFrame, clean: bool = True) -> go.Figure:
    """He et al. 2015's Fig. 1 / 6 as measured over seeds: training and test error against depth, one
    line per net (residual / plain, the residual colours), whiskers the 95 % t-intervals over the seeds.
    ``clean``: the training errors are the clean ones (eval mode, whole set), else the running ones."""
    train = "Training error (clean, eval mode)" if clean else "Running training error (augmented, train mode)"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(train, "Test error"))
    for col, (what, short) in enumerate((("train_error", "train"), ("test_error", "test")), start=1):
        for net, rows in nets.groupby("net", sort=False):
            colour = RESIDUAL_COLOURS[net == "residual"]
            mean = rows[f"{what}_mean"]
            fig.add_scatter(x=[str(d) for d in rows["depth"]], y=mean.tolist(), mode="lines+markers", name=str(net),
                            line=dict(color=colour, dash="solid" if net == "residual" else "dash"),
                            legendgroup=str(net), showlegend=col == 1,
                            error_y=dict(type="data", symmetric=False, visible=True,
                                         array=(rows[f"{short}_high"] - mean).fillna(0.0).tolist(),
                                         arrayminus=(mean - rows[f"{short}_low"]).fillna(0.0).tolist()),
                            customdata=rows["runs"].tolist(),
                            hovertemplate=f"{net}, depth %{{x}}<br>{short} error %{{y:.2f}} %"
                                          "<br>%{customdata} seeds<extra></extra>", row=1, col=col)
        fig.update_yaxes(ticksuffix=" %", rangemode="tozero", row=1, col=col)
        fig.update_xaxes(title_text="depth (layers)", type="category", row=1, col=col)
    fig.update_layout(height=360, margin=dict(t=40 + LEGEND_PX, b=10, l=10, r=10), legend=LEGEND_ABOVE)
    return fig
