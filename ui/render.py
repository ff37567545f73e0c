"""Plotly renderers: DataFrame in, figure out. No analysis happens here."""

from __future__ import annotations

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
