"""Plotly renderers: DataFrame in, figure out. No analysis happens here."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def stage_costs(stage_df: pd.DataFrame) -> go.Figure:
    """Parameters and MACs per stage, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Parameters per stage", "MACs per stage"))
    fig.add_bar(x=stage_df["id"], y=stage_df["params"], name="params", row=1, col=1)
    fig.add_bar(x=stage_df["id"], y=stage_df["macs"], name="MACs", row=1, col=2)
    fig.update_layout(showlegend=False, height=330, margin=dict(t=40, b=10, l=10, r=10))
    return fig


def op_costs(op_df: pd.DataFrame) -> go.Figure:
    """Parameters and MACs per layer type."""
    long = op_df.melt(id_vars="kind", value_vars=["params", "macs"], var_name="metric")
    fig = px.bar(long, x="kind", y="value", facet_col="metric", color="kind", height=330)
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(showlegend=False, margin=dict(t=40, b=10, l=10, r=10))
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("metric=", "")))
    return fig


def receptive_field(rf_df: pd.DataFrame, input_size: int) -> go.Figure:
    """Receptive field after each main-path op, with the input size as a reference line."""
    fig = px.line(rf_df, x=rf_df.index, y="rf", color="stage", markers=True, hover_data=["id", "jump", "growth"],
                  labels={"x": "op index along the main path", "rf": "receptive field (pixels)"}, height=340)
    fig.add_hline(y=input_size, line_dash="dot", annotation_text=f"input {input_size}px")
    fig.update_layout(margin=dict(t=30, b=10, l=10, r=10))
    return fig


def vs_depth(df: pd.DataFrame, y: str, title: str) -> go.Figure:
    fig = px.line(df, x="depth", y=y, color="series", markers=True, hover_name="model", log_y=True,
                  log_x=bool(df["depth"].max() > 200), title=title, height=360)
    fig.update_layout(margin=dict(t=40, b=10, l=10, r=10))
    return fig


def block_bars(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Parameters", "MACs"))
    fig.add_bar(x=df["block"], y=df["total parameters"], row=1, col=1, name="params")
    fig.add_bar(x=df["block"], y=df["MACs"], row=1, col=2, name="MACs")
    fig.update_yaxes(type="log")
    fig.update_layout(showlegend=False, height=320, margin=dict(t=40, b=10, l=10, r=10))
    return fig


def training_curves(runs: list[dict], title: str = "") -> go.Figure:
    """He et al. 2015, Fig. 6 style: error (%) vs epoch, plain nets left, residual nets right;
    training error dashed, test error solid, one colour per depth."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("plain", "residual"), shared_yaxes=True)
    depths = sorted({r["depth"] for r in runs})
    palette = px.colors.qualitative.D3
    for r in runs:
        col = 2 if r["residual"] else 1
        colour = palette[depths.index(r["depth"]) % len(palette)]
        epochs = [h["epoch"] for h in r["history"]]
        for key, dash, what in (("train_acc", "dash", "train"), ("test_acc", "solid", "test")):
            fig.add_scatter(x=epochs, y=[100 * (1 - h[key]) for h in r["history"]], mode="lines",
                            line=dict(color=colour, dash=dash), name=f"{r['label']} ({what})",
                            legendgroup=r["label"], row=1, col=col)
    fig.update_yaxes(title_text="error (%)", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, title=title or None, margin=dict(t=50, b=10, l=10, r=10))
    return fig


def per_class(df: pd.DataFrame) -> go.Figure:
    long = df.melt(id_vars="class", value_vars=["intact", "lesioned"], var_name="net", value_name="accuracy")
    fig = px.bar(long, x="class", y="accuracy", color="net", barmode="group", height=320,
                 title="Per-class accuracy", range_y=[0, 1])
    fig.update_layout(margin=dict(t=40, b=10, l=10, r=10))
    return fig


def confusion_delta(delta: np.ndarray, classes: list[str]) -> go.Figure:
    lim = max(1, int(abs(delta).max()))
    fig = px.imshow(delta, x=classes, y=classes, color_continuous_scale="RdBu_r", zmin=-lim, zmax=lim,
                    labels=dict(x="predicted", y="true", color="Δ count"), text_auto=True, height=320,
                    title="Confusion change (lesioned − intact)")
    fig.update_layout(margin=dict(t=40, b=10, l=10, r=10))
    return fig


def single_sweep(df: pd.DataFrame) -> go.Figure:
    """Error after deleting each block; downsampling blocks outlined; intact error as a line."""
    fig = go.Figure()
    colours = {True: "#1f77b4", False: "#d62728"}
    for net, g in df.groupby("net", sort=False):
        res = bool(g["residual"].iloc[0])
        bars = g[g["index"] >= 0]
        fig.add_bar(x=bars["deleted"], y=100 * bars["error"], name=net, marker_color=colours[res],
                    marker_line=dict(width=[3 if d else 0 for d in bars["downsample"]], color="black"),
                    opacity=0.85)
        fig.add_hline(y=100 * float(g.loc[g["index"] < 0, "error"].iloc[0]), line_dash="dot",
                      line_color=colours[res], annotation_text=f"{net} intact")
    fig.update_layout(barmode="group", height=380, yaxis_title="test error (%)", xaxis_title="deleted block",
                      margin=dict(t=30, b=10, l=10, r=10), legend=dict(orientation="h"))
    return fig


def k_sweep(df: pd.DataFrame, x: str, xlabel: str) -> go.Figure:
    """Mean error vs k with a ±std band, residual and plain on the same axes."""
    fig = go.Figure()
    colours = {True: "#1f77b4", False: "#d62728"}
    for net, g in df.groupby("net", sort=False):
        s = g.groupby(x)["error"].agg(["mean", "std"]).fillna(0.0).reset_index()
        c = colours[bool(g["residual"].iloc[0])]
        fig.add_scatter(x=s[x], y=100 * (s["mean"] + s["std"]), mode="lines", line=dict(width=0),
                        showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=s[x], y=100 * (s["mean"] - s["std"]).clip(lower=0), mode="lines", line=dict(width=0),
                        fill="tonexty", fillcolor=_rgba(c, 0.15), showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=s[x], y=100 * s["mean"], mode="lines+markers", name=net, line=dict(color=c))
        fig.add_scatter(x=g[x], y=100 * g["error"], mode="markers", marker=dict(color=c, size=4, opacity=0.35),
                        showlegend=False)
    fig.update_layout(height=380, xaxis_title=xlabel, yaxis_title="test error (%)",
                      margin=dict(t=30, b=10, l=10, r=10), legend=dict(orientation="h"))
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


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
    fig.update_layout(height=320, xaxis=dict(visible=False), yaxis=dict(visible=False, range=[-0.3, 1.35]),
                      margin=dict(t=10, b=10, l=10, r=10), legend=dict(orientation="h"))
    return fig


def length_distribution(df: pd.DataFrame, window: tuple[int, int]) -> go.Figure:
    inside = df["length"].between(*window)
    fig = px.bar(df, x="length", y="share", color=inside.map({True: "in range", False: "outside"}),
                 hover_data=["paths", "log10 paths"], height=330,
                 color_discrete_map={"in range": "#1f77b4", "outside": "#c6dbef"})
    fig.update_layout(yaxis_title="share of all paths", legend_title=None, margin=dict(t=10, b=10, l=10, r=10))
    return fig


def gradient_by_length(df: pd.DataFrame, effective: tuple[int, int]) -> go.Figure:
    """Mean gradient magnitude per path length (log scale) and the total per length."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("gradient magnitude of one path (log)",
                                                        "total gradient per length, C(n,k) × magnitude"))
    colours = {"trained": "#1f77b4", "initialisation": "#ff7f0e"}
    for net, g in df.groupby("net", sort=False):
        c = colours.get(net, "#444")
        fig.add_scatter(x=g["length"], y=g["mean"], mode="lines+markers", name=net, line=dict(color=c),
                        error_y=dict(type="data", array=g["std"], visible=True, thickness=0.8), row=1, col=1)
        fig.add_scatter(x=g["length"], y=g["total (rel.)"], mode="lines+markers", name=f"{net} (total)",
                        line=dict(color=c, dash="dot"), showlegend=False, row=1, col=2)
    fig.add_vrect(x0=effective[0] - 0.5, x1=effective[1] + 0.5, fillcolor="#2ca02c", opacity=0.12, line_width=0,
                  row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="relative to the peak", row=1, col=2)
    fig.update_xaxes(title_text="path length k")
    fig.update_layout(height=380, margin=dict(t=40, b=10, l=10, r=10), legend=dict(orientation="h"))
    return fig


def scaled_shortcuts(df: pd.DataFrame) -> go.Figure:
    """Gradient ratio vs number of blocks for each shortcut scale (log y), with lambda^blocks dotted."""
    fig = go.Figure()
    palette = px.colors.qualitative.D3
    for i, (lam, g) in enumerate(df.groupby("lambda")):
        c = palette[i % len(palette)]
        fig.add_scatter(x=g["blocks"], y=g["ratio"], mode="lines", name=f"λ = {lam:g}", line=dict(color=c))
        fig.add_scatter(x=g["blocks"], y=g["lambda^blocks"], mode="lines", line=dict(color=c, dash="dot"),
                        showlegend=False, hoverinfo="skip")
    fig.update_layout(height=380, yaxis_type="log", xaxis_title="blocks between the loss and x_l",
                      yaxis_title="‖∂E/∂x_l‖ / ‖∂E/∂x_L‖", margin=dict(t=20, b=10, l=10, r=10))
    return fig
