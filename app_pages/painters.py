"""Layers as painters: the recorded comparison of trained ResNets and transformers under deleted, swapped,
repeated and parallel layers, over seeds, read against Veit et al. 2016, Sun et al. 2024 and Lad et al.
2024 (analysis/studies/painters.py; recorded by tools/make_painters.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from analysis.studies import painters
from ui import cache, render
from ui.widgets import error_box, table

ROOT = Path(__file__).resolve().parent.parent
# RESNET_LENS_PAINTERS_RESULTS points the page at another record (the tests' small ones)
RESULTS_FILE = Path(os.environ.get("RESNET_LENS_PAINTERS_RESULTS") or ROOT / "results" / "painters.json")
DATASETS = {"digits16": "digits (16 px images)", "mnist1d": "MNIST-1D (sequences of 40 samples)"}
VERDICT = {True: "agrees", False: "disagrees", None: "cannot tell"}


def bars(df: pd.DataFrame, chance: float) -> go.Figure:
    """Test error per condition, one bar per net, the 95 % interval as error bars, chance as a line."""
    fig = go.Figure()
    for net, rows in df.groupby("net", sort=False):
        up = (100 * (rows["high"] - rows["error"])).tolist()
        down = (100 * (rows["error"] - rows["low"])).tolist()
        fig.add_bar(name=str(net), x=rows["condition"], y=100 * rows["error"],
                    error_y={"type": "data", "array": up, "arrayminus": down, "visible": True},
                    hovertemplate="%{x}: %{y:.1f} %<extra>" + str(net) + "</extra>")
    fig.add_hline(y=100 * chance, line_dash="dot", annotation_text=f"chance {100 * chance:.0f} %")
    fig.update_layout(barmode="group", yaxis_title="test error, % (mean over seeds, 95 % CI)", xaxis_title="")
    return render._finish(fig, 420, legend=True)


def summary_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: numbers as text with their intervals, 'n/a: why' where refused."""
    def pp(m: float, lo: float, hi: float, sign: bool = False) -> str:
        if math.isnan(m):
            return ""
        fmt = "+.1f" if sign else ".1f"
        return f"{100 * m:{fmt}} [{100 * lo:{fmt}}, {100 * hi:{fmt}}]" if not math.isnan(lo) else f"{100 * m:{fmt}}"

    out = pd.DataFrame({
        "net": df["net"], "condition": df["condition"],
        "test error %": [pp(r.error, r.low, r.high) for r in df.itertuples()],
        "change vs intact, pp": ["" if r.condition == "intact" else pp(r.change, r.change_low, r.change_high, True)
                                 for r in df.itertuples()],
        "accuracy kept %": ["" if r.condition == "intact" else pp(r.kept, r.kept_low, r.kept_high)
                            for r in df.itertuples()],
        "note": [("n/a: " + r.note) if r.note else "" for r in df.itertuples()],
    })
    return out


def per_seed(rec: dict) -> pd.DataFrame:
    """Every seed's wrong count per net and condition (the record itself, long format)."""
    rows = [{"net": name, "dataset": net["dataset"], "seed": run["seed"], "condition": cond, "wrong": w,
             "test_size": net["test_size"], "error": w / net["test_size"]}
            for name, net in rec["nets"].items() for run in net["runs"] for cond, w in run["wrong"].items()]
    return pd.DataFrame(rows)


st.title("Layers as painters")
st.caption("Trained nets run with a layer deleted, two swapped, one repeated or two in parallel: Veit et al. 2016 "
           "did it to ResNets, Sun et al. 2024 (\"Transformer Layers as Painters\") and Lad et al. 2024 (\"The "
           "Remarkable Robustness of LLMs\") to transformers. Here both kinds side by side, each trained from "
           "several seeds, with 95 % intervals.")
try:
    rec = cache.painters_record(str(RESULTS_FILE), RESULTS_FILE.stat().st_mtime if RESULTS_FILE.exists() else 0.0)
except LensError as exc:
    error_box(exc)
    st.stop()
seeds = rec["seeds"]
with st.expander("What was measured", expanded=False):
    st.markdown(
        f"- **Seeds**: {len(seeds)} per net ({', '.join(map(str, seeds))}), each trained with the shipped recipe "
        "(ResNets: checkpoints/README.md; transformers: the shipped transformers' AdamW recipe); the numbers "
        "are their test errors, the interval a Student-t 95 % interval over the seeds, the change against the "
        "intact net paired seed by seed.\n"
        "- **A layer**: a ResNet's residual block; a transformer's block `blocks.k` (attention and MLP together), "
        "as Sun et al. and Lad et al. move whole layers. Deleted, a residual layer keeps its shortcut; a plain "
        "net's layer passes its input on (Veit et al.).\n"
        "- **Middle**: layer ⌊(n − 1)/2⌋ of n and the next one ("
        + "; ".join(f"{name}: `{net['runs'][0].get('middle', '?')}` and `{net['runs'][0].get('next', '?')}` of "
                    f"{net['runs'][0].get('layers', '?')}" for name, net in rec["nets"].items() if net["residual"])
        + "). *Repeat*: the middle layer runs twice. *Parallel*: "
        "the middle pair reads one input and both changes are added, y = h + F₁(h) + F₂(h); it needs layers "
        "that are their input plus a change (pre-norm transformer blocks), not a ResNet-20 block with its ReLU "
        "after the add.\n"
        f"- **Recorded** by `{rec.get('command', 'tools/make_painters.py')}` on {rec.get('threads', '?')} thread(s)"
        + (f": {rec['seconds']:.0f} s to measure the trained nets of its cache folder" if "seconds" in rec else "")
        + "; the command trains any net its cache lacks first (all of them: about 50 minutes of one core here).")

present = [d for d in DATASETS if any(n["dataset"] == d for n in rec["nets"].values())]
if not present:
    st.info("The record holds no nets.")
    st.stop()
dataset = st.radio("Data", present, format_func=DATASETS.__getitem__, horizontal=True, key="painters_data")
full = painters.table(rec)
df = full[full["dataset"] == dataset].reset_index(drop=True)
classes = next(n["classes"] for n in rec["nets"].values() if n["dataset"] == dataset)
render.show(bars(df, 1 - 1 / classes), key="painters_bars")
table(summary_rows(df))

st.subheader("Against the papers")
read = [r for r in painters.readings(rec) if rec["nets"][r.net]["dataset"] == dataset]
table(pd.DataFrame([{"paper": r.paper, "net": r.net, "claim": r.claim, "measured": r.measured,
                     "agrees?": VERDICT[r.agrees]} for r in read]))
plain_at_chance = [name for name, net in rec["nets"].items() if net["dataset"] == dataset and not net["residual"]
                   and painters.mean_error(net, "intact") >= (1 - 1 / net["classes"]) - 0.10]
if plain_at_chance:
    st.caption(f"{', '.join(plain_at_chance)}: already at or near chance intact (the net did not train), so its "
               "deletions cannot show a collapse; its row says nothing about Veit et al.'s claim either way.")
c1, c2 = st.columns(2)
c1.download_button("Download the table (CSV)", csv_bytes(df), file_name=f"painters_{dataset}.csv", mime="text/csv",
                   key="painters_csv", on_click="ignore")
c2.download_button("Download every seed's counts (CSV)", csv_bytes(per_seed(rec)), file_name="painters_seeds.csv",
                   mime="text/csv", key="painters_seeds_csv", on_click="ignore")
