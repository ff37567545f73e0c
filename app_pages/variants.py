"""Variants lab: He et al. 2016's shortcut variants and activation placements trained here, measured
beside the paper's numbers, with their training curves and gradient flow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.core import stats
from analysis.core.errors import LensError
from analysis.core.meta import PRECISIONS, TrainConfig, recipe_precision
from analysis.core.reporting import csv_bytes, machine_text
from analysis.run import cluster
from analysis.run.executor import DataSpec, Executor, InProcessExecutor, make_executor
from analysis.store.runstore import RunStore, default_home
from analysis.studies import grid as g
from ui import cache, fmt, render, widgets
from ui.widgets import Metric, error_box, metric_row, range_label, table

ROOT = Path(__file__).resolve().parent.parent
# The default grid's results, recorded once by `python -m analysis grid ... --out` and shipped, so a fresh
# clone shows measured numbers without training; RESNET_LENS_VARIANTS_RESULTS points the page at another file.
RESULTS_FILE = cache.variants_results_file()
# other recorded grids beside it (results/variants_<data>.json: MNIST-1D's 1-D nets), offered as a choice
RECORDED = {"variants_digits.json": "digits (2-D CIFAR-style nets)",
            "variants_mnist1d.json": "MNIST-1D (1-D resnet1d nets)"}
# the gated variants at other initial gate biases (`grid --variants exclusive_gating@0 ...`), recorded beside the
# grid: gate_sweep_digits.json (depth 20) and any gate_sweep_digits_<more>.json (e.g. _56: another depth)
SWEEP_FILES = sorted(RESULTS_FILE.parent.glob("gate_sweep_digits*.json"))
DATA_CHOICES = {"digits": "digits (2-D images)", "mnist1d": "MNIST-1D (1-D sequences, 40 samples)"}
DEPTHS = [8, 14, 20, 32, 44, 56, 110]
DEFAULT_VARIANTS = ["original", "scaling_0.5"]
# digits: 1,347 training images in batches of 64 are 22 steps an epoch; k = 5 gives 5 snapshots an epoch
GRAD_EVERY = 5
GRAD_KINDS = {"input": "block inputs", "params": "block parameters"}
PAPER_COLUMN = "paper, ResNet-110 CIFAR-10 %"
TEST_COLUMN = "test error % [95 % CI]"  # the mean over seeds with its t-interval
AGREES_COLUMN = "agrees with He et al. 2016?"


WHERE = {"here": "This server", "ray": "Ray cluster"}




# ------------------------------------------------------------------ how a grid is described and shown
def describe(definition: dict[str, Any]) -> str:
    """What the numbers are: data, depths, seeds, epochs and recipe of a grid (its definition)."""
    data, recipe = definition.get("data", {}), definition.get("recipe", {})
    kind = data.get("kind", "digits")
    images = f", first {data['train_images']:,} training images" if data.get("train_images") else ""
    size = data.get("size")
    scaled = f" upsampled to {size} px" if isinstance(size, int) and size > 8 else ""
    nets = "CIFAR ResNets"
    if kind == "digits":
        where = (f"scikit-learn's 8×8 handwritten digits{scaled}{images} (test split: 450 images, so one image is "
                 f"0.22 pp)")
    elif kind == "mnist1d":
        where = (f"MNIST-1D (Greydanus 2020: sequences of 40 samples{images}; test split: 1,000 sequences, so one "
                 f"sequence is 0.1 pp)")
        nets = "1-D ResNets (resnet1d: the CIFAR recipe with Conv1d, 32/64/128 filters)"
    else:
        where = f"{kind} at {size} px{images}"
    seeds = definition.get("seeds", [])
    augment = "with" if recipe.get("augment", True) else "without"
    return (f"Measured on {where}; {nets} of depth {', '.join(str(d) for d in definition.get('depths', []))} "
            f"(6n+2 layers, option A shortcuts); {len(seeds)} seed{'s' * (len(seeds) != 1)} each "
            f"({', '.join(str(s) for s in seeds)}); {recipe.get('epochs')} epoch{'s' * (recipe.get('epochs') != 1)} of "
            f"SGD (batch "
            f"{recipe.get('batch_size')}, lr {recipe.get('lr')}, momentum {recipe.get('momentum')}, weight decay "
            f"{recipe.get('weight_decay')}, {recipe.get('schedule')} schedule, {recipe.get('warmup_epochs')} warm-up "
            f"epoch{'s' * (recipe.get('warmup_epochs') != 1)}, {augment} augmentation, "
            f"in {recipe_precision(recipe)}).")


def took(meta: dict[str, Any]) -> str:
    """How long recording the grid took, from the file's metadata (said when it is not there)."""
    return fmt.recording_time(meta, seconds_key="wall_seconds", what="grid")


def train_label(results: pd.DataFrame) -> str:
    """The train error's column name: which training error the finished runs have (the clean one is
    measured after the last epoch by runs trained since it existed; older runs have the running one)."""
    done = results[results["status"] == "complete"]
    clean = [v is True or v == 1 for v in done["train_clean"]] if "train_clean" in done else []
    if clean and all(clean):
        return "train error % (clean: eval mode, whole training set)"
    if not any(clean):
        return "running train error % (augmented batches, train mode)"
    return "train error % (clean where measured, else running)"


def depth_table(summary: pd.DataFrame, depth: int, train: str = "train error %") -> pd.DataFrame:
    """One depth's rows as the page shows them: the measured numbers, the paper's beside them, the
    reading and whether it agrees with the paper. ``train``: the train error's column name (:func:`train_label`)."""
    rows = summary[summary["depth"] == depth]
    return pd.DataFrame({
        "variant": rows["label"],
        TEST_COLUMN: [stats.mean_interval(m, s, int(n)) for m, s, n in zip(rows["test_error_mean"],
                                                                           rows["test_error_std"], rows["runs"],
                                                                           strict=True)],
        f"{train} [95 % CI]": [stats.mean_interval(m, s, int(n)) for m, s, n in zip(rows["train_error_mean"],
                                                                                    rows["train_error_std"],
                                                                                    rows["runs"], strict=True)],
        "runs / diverged": [f"{r} / {d}" for r, d in zip(rows["runs"], rows["diverged"], strict=True)],
        PAPER_COLUMN: [p or "—" for p in rows["paper"]],
        "reading": rows["reading"],
        AGREES_COLUMN: rows["agrees"],
    })


def error_chart(summary: pd.DataFrame) -> go.Figure:
    """Mean test error over seeds per variant with its 95 % t-interval as whiskers, one bar colour per
    depth, the paper's
    ResNet-110 number as a marker (its "fail" drawn at the 20 % line it means). Linear y: the
    distances between variants are what is compared."""
    labels = list(dict.fromkeys(summary["label"]))
    fig = go.Figure()
    for i, (depth, rows) in enumerate(summary.groupby("depth", sort=True)):
        half = [stats.t_half_width(int(n), float(sd)) for n, sd in zip(rows["runs"], rows["test_error_std"], strict=True)]
        fig.add_bar(x=rows["label"].tolist(), y=rows["test_error_mean"].tolist(), name=f"depth {depth} (measured)",
                    marker_color=render.PALETTE[i % len(render.PALETTE)],
                    error_y=dict(type="data", array=[0.0 if math.isnan(h) else h for h in half], visible=True),
                    customdata=[render.spread_text(h, n, scale=1.0, digits=2) for h, n in zip(half, rows["runs"],
                                                                                              strict=True)],
                    hovertemplate=f"%{{x}}, depth {depth}<br>test error %{{y:.2f}} % %{{customdata}}<extra></extra>")
    paper = summary.drop_duplicates("label")
    fails = paper["paper"].str.startswith("fail")
    y = [g.FAIL_ERROR if f else p for f, p in zip(fails, paper["paper_error"], strict=True)]
    fig.add_scatter(x=paper["label"].tolist(), y=y, mode="markers", name="paper, ResNet-110 on CIFAR-10",
                    marker=dict(symbol="diamond", size=11, color="#222", line=dict(color="white", width=1)),
                    text=paper["paper"].tolist(), hovertemplate="%{x}<br>paper: %{text} %<extra></extra>")
    fig.update_layout(barmode="group", height=420, margin=dict(t=10 + render.LEGEND_PX, b=10, l=10, r=10),
                      legend=render.LEGEND_ABOVE)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, tickangle=-30, automargin=True)
    fig.update_yaxes(title_text="test error", ticksuffix=" %", rangemode="tozero", automargin=True)
    return fig


def show_results(summary: pd.DataFrame, key: str, results: pd.DataFrame) -> None:
    """The tables (one per depth) and the chart of a grid's summary (``results``: its runs)."""
    train = train_label(results)
    for depth in sorted({int(d) for d in summary["depth"]}):
        st.markdown(f"**Depth {depth}** ({(depth - 2) // 2} residual blocks)")
        table(depth_table(summary, depth, train))
    st.caption("Readings: each variant minus the original at the same depth, compared seed by seed (a grid's runs "
               "of one seed share the batch order and augmentation); with 3 seeds or more a 95 % t-interval of the "
               "difference and the smallest difference the design detects (power 0.8), in points and in test "
               "images; with fewer, no test. *Agrees with He et al. 2016?*: the paper's direction for the variant "
               f"(worse than the original, or about equal: within ±{g.SAME_BAND:.2f} pp, two single runs' spread "
               f"for their ResNet-110's {g.PAPER_RUN_SD} pp std over 5 runs, He et al. 2015 Table 6) against our "
               "interval; where ours disagrees or cannot tell, what the record shows that explains it.")
    render.show(error_chart(summary), key=f"{key}_chart")
    st.caption("Bars: measured mean test error, whiskers its 95 % t-interval over the seeds (none under 3 seeds: "
               "over 2 the interval is ±12.7 standard errors). Intervals are symmetric and not clipped, so a lower end "
               "below 0 % says the seeds spread widely beside a small mean. "
               "Diamonds: the paper's ResNet-110 on CIFAR-10 (\"fail\", above 20 %, drawn at 20 %).")


def sweep_chart(sweep: pd.DataFrame, base: Mapping[str, Any] | None) -> go.Figure:
    """Test error (mean, 95 % t-interval whiskers) against the initial gate bias b_g, one line per
    gated variant; the original's mean and interval at the same depth as a band (it has no gate); the
    paper's ResNet-110 numbers where it reports them as diamonds ('fail' at 20 %). b_g runs from 0 (gate half open) to the
    right, where the shortcut starts near an identity."""
    fig = go.Figure()
    if base is not None and int(base["runs"]):
        n, mean, std = int(base["runs"]), float(base["test_error_mean"]), float(base["test_error_std"])
        half = stats.t_half_width(n, std)
        half = 0.0 if math.isnan(half) else half  # under 3 seeds no interval: the band is its line
        fig.add_hrect(y0=mean - half, y1=mean + half, fillcolor="#999", opacity=0.2, line_width=0)
        fig.add_hline(y=mean, line_dash="dot", line_color="#555",
                      annotation_text=f"original (no gate): {mean:.2f} %", annotation_position="top left")
    for i, (label, rows) in enumerate(sweep.groupby("label", sort=False)):
        colour = render.PALETTE[i % len(render.PALETTE)]
        fig.add_scatter(x=rows["b_g"].tolist(), y=rows["test_error_mean"].tolist(), mode="lines+markers",
                        name=f"{label} (measured)", line=dict(color=colour),
                        error_y=dict(type="data", symmetric=False, visible=True,
                                     array=(rows["test_high"] - rows["test_error_mean"]).fillna(0.0).tolist(),
                                     arrayminus=(rows["test_error_mean"] - rows["test_low"]).fillna(0.0).tolist()),
                        customdata=list(zip(rows["gate_start"], rows["runs"], strict=True)),
                        hovertemplate=f"{label}<br>b_g = %{{x:g}}, σ(b_g) = %{{customdata[0]:.3g}}<br>test error "
                                      "%{y:.2f} %<br>%{customdata[1]} seeds<extra></extra>")
        paper = rows[rows["paper"].str.len() > 0]
        if not paper.empty:  # the paper's "fail" (above 20 %) drawn at the 20 % it means
            fails = paper["paper"].str.startswith("fail")
            fig.add_scatter(x=paper["b_g"].tolist(),
                            y=[g.FAIL_ERROR if f else p for f, p in zip(fails, paper["paper_error"], strict=True)],
                            mode="markers", name=f"{label}: paper, ResNet-110 on CIFAR-10", text=paper["paper"].tolist(),
                            marker=dict(symbol="diamond", size=11, color=colour, line=dict(color="#222", width=1)),
                            hovertemplate=f"{label}<br>paper at b_g = %{{x:g}}: %{{text}} %<extra></extra>")
    fig.update_layout(height=400, margin=dict(t=10 + render.LEGEND_PX, b=10, l=10, r=10), legend=render.LEGEND_ABOVE)
    fig.update_xaxes(title_text="initial gate bias b_g", autorange="reversed", dtick=1)
    fig.update_yaxes(title_text="test error", ticksuffix=" %", rangemode="tozero", automargin=True)
    return fig


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep as the page shows it: one row per gate and b_g."""
    return pd.DataFrame({
        "gate": sweep["label"], "depth": sweep["depth"], "b_g": [f"{b:g}" for b in sweep["b_g"]],
        "σ(b_g) at init": [f"{v:.3g}" for v in sweep["gate_start"]],
        TEST_COLUMN: [stats.bracket(m, lo, hi, n=int(n)) for m, lo, hi, n in zip(
            sweep["test_error_mean"], sweep["test_low"], sweep["test_high"], sweep["runs"], strict=True)],
        "runs / diverged": [f"{r} / {d}" for r, d in zip(sweep["runs"], sweep["diverged"], strict=True)],
        PAPER_COLUMN: [p or "—" for p in sweep["paper"]],
        "reading": sweep["reading"],
        AGREES_COLUMN: [a or "—" for a in sweep["agrees"]],
    })


def open_store() -> RunStore | None:
    return widgets.open_store("The run store cannot be used", error=True)


def runs_of(results: pd.DataFrame, source: str) -> dict[str, dict[str, Any]]:
    """The finished runs of a grid by store key, with the label they are picked by."""
    done = results[results["status"] == "complete"]
    return {str(r["key"]): {"label": f"{source} · {r['variant']} · depth {r['depth']} · seed {r['seed']}",
                            "variant": str(r["variant"])} for _, r in done.iterrows()}


def residual(name: str) -> bool:
    return bool(g.variant(name).changes.get("residual", True))


def gradient_records(store: RunStore, keys: list[str]) -> dict[str, pd.DataFrame]:
    out = {}
    for k in keys:
        df = store.gradients(k)
        if df is not None and not df.empty:
            out[k] = df
    return out


# ------------------------------------------------------------------ the page
st.title("Variants lab")
st.caption("He et al. 2016 (*Identity Mappings in Deep Residual Networks*), Table 1 (shortcut variants) and "
           "Table 2 (activation placement), trained here instead of quoted: each variant's test error measured over "
           "several seeds, the paper's number beside it, and a one-line reading computed from the numbers.")

# ------------------------------------------------------------------ 1. the shipped grid
st.subheader("1 · The recorded grid")
shipped_results: pd.DataFrame | None = None
others = [RESULTS_FILE.parent / n for n in RECORDED if (RESULTS_FILE.parent / n).is_file()
          and RESULTS_FILE.parent / n != RESULTS_FILE]
if others:
    # file names as the options: plain strings, so the choice can sit in the URL
    picked = st.radio("Recorded grid", [RESULTS_FILE.name, *(p.name for p in others)], key="variants_recorded",
                      horizontal=True, format_func=lambda n: RECORDED.get(n, n))
    RESULTS_FILE = RESULTS_FILE.parent / picked
if not RESULTS_FILE.is_file():
    st.info(f"No recorded grid: `{RESULTS_FILE.relative_to(ROOT) if RESULTS_FILE.is_relative_to(ROOT) else RESULTS_FILE}` "
            "is not there. Record it with `python -m analysis grid --out results/variants_digits.json` (see the "
            "README), or run a grid below.")
else:
    try:
        shipped_results, file_summary, shipped_meta = cache.grid_results(str(RESULTS_FILE), RESULTS_FILE.stat().st_mtime)
        # the readings are recomputed from the runs, so they follow the paper's table as the app has it
        shipped_test = shipped_meta.get("test_size")
        shipped_summary = (g.summarise(shipped_results, shipped_test if isinstance(shipped_test, int) else
                                       g.test_size(shipped_meta.get("grid", {})))
                           if len(shipped_results) else file_summary)
    except LensError as exc:
        error_box(exc)
        shipped_results = None
    else:
        st.caption(describe(shipped_meta.get("grid", {})) + " The paper's numbers are ResNet-110 (54 blocks) on "
                   "CIFAR-10 with its own recipe, so only the ordering of the variants and which of them fail can be "
                   "compared, not the percentages. " + took(shipped_meta) + " " + machine_text(shipped_meta.get("machine")))
        show_results(shipped_summary, "variants_shipped", shipped_results)
        dl = st.columns(2)
        dl[0].download_button("Download the recorded runs (CSV)", csv_bytes(shipped_results),
                             file_name=f"{RESULTS_FILE.stem}_runs.csv", mime="text/csv", on_click="ignore", key="variants_shipped_runs_csv")
        dl[1].download_button("Download the recorded summary (CSV)", csv_bytes(shipped_summary),
                             file_name=f"{RESULTS_FILE.stem}_summary.csv", mime="text/csv",
                             on_click="ignore", key="variants_shipped_summary_csv")

# ------------------------------------------------------------------ 1b. the gate's start
def show_sweep(path: Path) -> None:
    """One recorded b_g sweep file: its chart and table per depth, the readings' caption, a CSV download."""
    heading = "#### Where the gate starts: a b_g sweep" + ("" if path.name == "gate_sweep_digits.json"
                                                           else f" ({path.name})")
    sweep = pd.DataFrame()
    try:
        sweep_results, _, sweep_meta = cache.grid_results(str(path), path.stat().st_mtime)
        sweep_test = sweep_meta.get("test_size")
        sweep_summary = g.summarise(sweep_results, sweep_test if isinstance(sweep_test, int) else
                                    g.test_size(sweep_meta.get("grid", {})))
        sweep = g.gate_sweep(sweep_summary)
    except LensError as exc:
        st.markdown(heading)
        error_box(exc)
    if sweep.empty:  # a file without gated variants is no sweep: nothing to show
        return
    st.markdown(heading)
    starts = sorted(set(sweep["b_g"]), reverse=True)
    st.caption(f"The gated variants with the gate's bias b_g initialised from {starts[0]:g} to {starts[-1]:g}: "
               "the gate g = σ(b_g) at the start (a 1×1 conv's bias), the shortcut weighted 1 − g; exclusive "
               "gating also scales F by g, so a large negative b_g starts with the shortcut an identity and F "
               "nearly shut, while shortcut-only gating leaves F whole. Diamonds: He et al. 2016's ResNet-110 on "
               "CIFAR-10 at the starts they report (\"fail\", above 20 %, drawn at 20 %). "
               + describe(sweep_meta.get("grid", {})) + " " + took(sweep_meta) + " "
               + machine_text(sweep_meta.get("machine")))
    for depth in sorted({int(d) for d in sweep["depth"]}):
        here = sweep[sweep["depth"] == depth]
        render.show(sweep_chart(here, g.baseline(sweep_summary, depth)),
                    key=f"variants_sweep_chart_{path.stem}_{depth}")
        table(sweep_table(here))
    has_base = bool((sweep_summary["variant"] == g.BASELINE).any())
    st.caption("Whiskers and brackets: the 95 % t-interval of the mean over the seeds"
               + ("; the grey band: the original's (no gate) at the same depth and recipe. Readings as in the "
                  "grid above (each gate start against the original, paired by seed)." if has_base else
                  ". The sweep file has no original runs to compare with."))
    st.download_button("Download the sweep (CSV)", csv_bytes(sweep), file_name=f"{path.stem}.csv",
                       mime="text/csv", on_click="ignore", key=f"variants_sweep_csv_{path.stem}")


for sweep_file in SWEEP_FILES:
    show_sweep(sweep_file)

# ------------------------------------------------------------------ 2. the user's grid
st.subheader("2 · Run a grid")
st.caption("Every run is kept in the run store as soon as it finishes, keyed by its spec, recipe, data and seed: "
           "asking again for a run that is there shows it without training.")
# a row of its own: in half a row the chip 'constant scaling 0.5 (F not scaled)' was cut to '…'
chosen = st.multiselect("Variants", list(g.VARIANTS), DEFAULT_VARIANTS, key="variants_variants",
                        format_func=lambda n: g.VARIANTS[n].label)
combos = st.text_input("Combinations (optional)", key="variants_combos", placeholder="full_preact+exclusive_gating",
                       help="Variant names joined by '+', several separated by commas, e.g. "
                            f"full_preact+exclusive_gating. Names: {', '.join(g.VARIANTS)}.")
grid_cols = st.columns(3)
depths = grid_cols[0].multiselect("Depths (6n+2)", DEPTHS, [8], key="variants_depths",
                          help="Depth 8 trains in seconds; the paper's ResNet-110 is depth 110.")
data_kind = grid_cols[1].radio("Data", list(DATA_CHOICES), format_func=DATA_CHOICES.__getitem__, key="variants_data",
                         help="Digits train CIFAR-style 2-D nets; MNIST-1D (Greydanus 2020) trains the same recipe "
                              "in 1-D (resnet1d_<depth>: 32/64/128 filters on 1 × 40 sequences).")
if data_kind == "digits":
    size = grid_cols[2].select_slider("Digits size (pixels)", [8, 16, 32], 16, key="variants_size")
else:
    size = 40
    grid_cols[2].caption("MNIST-1D: 4,000 training and 1,000 test sequences of 40 samples, generated locally "
                   "by the mnist1d package.")
opts = st.columns(4)
seeds = opts[0].number_input(range_label("Seeds", 1, 3), 1, 3, 2, key="variants_seeds",
                             help="Seeds 0, 1, …: the mean and its 95 % t-interval are over them.")
epochs = opts[1].number_input(range_label("Epochs", 1, 200), 1, 200, 5, key="variants_epochs",
                              help="SGD, lr 0.1, cosine schedule, 1 warm-up epoch, shift augmentation (the CLI's defaults).")
record = opts[2].checkbox("Record gradient flow", True, key="variants_grad_record",
                          help="The gradient norm reaching each block's input and each block's parameters, every k steps.")
grad_every = opts[3].number_input(range_label("every k steps", 1, 1000), 1, 1000, GRAD_EVERY,
                                  key="variants_grad_every", disabled=not record)
# MNIST-1D trains 1-D nets, which have no channels-last layout: the box is offered for images only
precision, channels_last = widgets.precision_widgets(st.columns(4)[0], "variants", dims=1 if data_kind == "mnist1d" else 2)

names = [*chosen, *(p.strip() for p in combos.split(",") if p.strip())]
grid: g.Grid | None = None
if not names:
    st.error("Choose at least one variant (or type a combination).")
else:
    try:
        grid = g.Grid(tuple(names), tuple(int(d) for d in depths), tuple(range(int(seeds))),
                      TrainConfig(epochs=int(epochs), amp=PRECISIONS[precision], channels_last=channels_last),
                      DataSpec(data_kind, int(size)))
    except LensError as exc:
        error_box(exc)
store = open_store()

# A Ray cluster is offered only when the server was started with its address ($RESNET_LENS_RAY_ADDRESS)
where = "here"
ray_address: str | None = None
try:
    ray_address = cluster.address_from_env()
except LensError as exc:
    error_box(exc)
if ray_address is not None:
    where = st.radio("Train on", list(WHERE), format_func=WHERE.__getitem__, horizontal=True, key="variants_executor",
                     help="This server: one run after another in this process. Ray cluster: every run a Ray task "
                          "with one CPU, as many at once as the cluster has CPUs; the trained nets come back to "
                          "this server's run store. Same numbers either way.")
    st.caption(f"Ray cluster: {ray_address} (from ${cluster.ADDRESS_ENV}).")


def grid_executor() -> Executor:
    """Where the grid trains: this process, or the configured Ray cluster (connected once per server)."""
    if where == "ray" and ray_address is not None:
        cache.ray_connection(ray_address)
        return make_executor(None, kind="ray", address=ray_address)
    return InProcessExecutor()


def show_grid(result: g.GridResult, store: RunStore) -> None:
    """The user's grid: what it is, the same tables and chart as the recorded one, and downloads."""
    res = result.results
    status = res["status"].value_counts()
    unfinished = int(status.get("cancelled", 0)) + int(status.get("not run", 0))
    if result.trained == 0 and result.wall_seconds == 0.0:  # read from the store (g.stored_grid), not run now
        metric_row([Metric("Runs", f"{len(res)}"), Metric("In the run store", f"{result.reused}"),
                    Metric("Not run yet", f"{unfinished}")])
        st.caption("Shown from the run store: nothing was trained now."
                   + (" Press **Run grid** to train the runs it does not hold." if unfinished else ""))
    else:
        metric_row([Metric("Runs", f"{len(res)}"), Metric("Trained now", f"{result.trained}"),
                    Metric("Found in the run store", f"{result.reused}"),
                    Metric("Not finished (cancelled)", f"{unfinished}"),
                    Metric("Wall time", f"{result.wall_seconds:,.1f} s")])
    # a grid read back from the store measured nothing now: no machine to name
    st.caption(describe(result.grid.definition) + (" " + machine_text(result.machine) if result.machine else ""))
    show_results(result.summary, "variants_yours", res)
    with st.expander("Every run"):
        table(res[["variant", "depth", "seed", "status", "reused", "train_error", "train_clean", "test_error", "epochs",
                   "seconds", "key", "message"]], formats={"train_error": "%.2f", "test_error": "%.2f"})
        st.caption("train_clean: the train error is the clean one (eval mode, whole training set, after the last "
                   "epoch); unticked, the running one (augmented batches, train mode).")
    keys = [str(k) for k in res.loc[res["status"] == "complete", "key"]]
    dl = st.columns(3)
    dl[0].download_button("Download runs (CSV)", csv_bytes(res), file_name="variants_runs.csv",
                         mime="text/csv", on_click="ignore", key="variants_runs_csv")
    dl[1].download_button("Download summary (CSV)", csv_bytes(result.summary),
                         file_name="variants_summary.csv", mime="text/csv", on_click="ignore", key="variants_summary_csv")
    try:
        records = gradient_records(store, keys)
    except LensError as exc:
        st.warning(f"The gradient records cannot be read: {exc}")
        records = {}
    if records:
        rows = res.set_index("key")
        both = pd.concat([df.assign(variant=rows.loc[k, "variant"], depth=rows.loc[k, "depth"],
                                    seed=rows.loc[k, "seed"], run=k) for k, df in records.items()], ignore_index=True)
        dl[2].download_button("Download gradient records (CSV)", csv_bytes(both),
                             file_name="variants_gradient_flow.csv", mime="text/csv", on_click="ignore", key="variants_grad_csv")
    else:
        dl[2].caption("No gradient-flow records for this grid's runs.")


stopped = st.session_state.pop("variants_active", None)  # left behind by a grid a rerun interrupted
if stopped is not None and store is not None:
    try:
        # nothing is trained here: cancel() is True from the start, so only the stored runs come back
        partial = g.run_grid(stopped, store, InProcessExecutor(), cancel=lambda: True)
    except LensError as exc:
        error_box(exc)
    else:
        kept = int((partial.results["status"] == "complete").sum())
        st.warning(f"The grid was stopped before it finished (Cancel, or another click while it ran). The "
                   f"{kept} of {len(partial.results)} runs that had finished are kept in the run store and shown "
                   "below; the run in progress was dropped. Run the same grid again to train only the rest.")
        st.session_state["variants_result"] = partial

go_run = st.button("Run grid", type="primary", key="variants_run", disabled=grid is None or store is None,
                   help="Train every run of the grid the run store does not hold yet, "
                        + ("as Ray tasks on the cluster." if where == "ray" else "one after another in this server."))
if go_run and grid is not None and store is not None:  # the button is disabled otherwise
    st.session_state["variants_active"] = grid
    # placeholders: the button and the bars are there while the grid runs, and gone when it ends
    cancel_slot, grid_slot, run_slot = st.empty(), st.empty(), st.empty()
    cancel_slot.button("Cancel", key="variants_cancel",
                       help="Stops the grid: the runs that finished stay in the run store; the one running is dropped.")
    grid_bar = grid_slot.progress(0.0, text="grid: starting…")
    shown: dict[str, int] = {}

    def progress(p: g.GridProgress) -> None:
        grid_bar.progress(min(p.done / max(p.total, 1), 1.0),
                          text=f"grid: {p.done} of {p.total} runs finished ({p.reused} found in the run store)")
        for key, e in p.running.items():
            frac = min(max(((e.epoch - 1) * e.steps + e.step) / max(e.epochs * e.steps, 1), 0.0), 1.0)
            if shown.get(key) == int(1000 * frac):
                continue  # redraw at most 1000 times per run
            shown[key] = int(1000 * frac)
            run_slot.progress(frac, text=f"{p.labels.get(key, key)}: epoch {e.epoch}/{e.epochs}, loss {e.loss:.3f}")

    executor: Executor | None = None
    try:
        executor = grid_executor()
        result = g.run_grid(grid, store, executor, progress=progress, grad_every=int(grad_every) if record else 0)
    except LensError as exc:
        error_box(exc)
    else:
        st.session_state["variants_result"] = result
        st.success(f"Grid finished: {result.trained} runs trained, {result.reused} found in the run store, "
                   f"{result.wall_seconds:,.1f} s.")
    finally:  # finished, refused or cancelled (a rerun stops the script here): nothing keeps running
        if executor is not None:
            executor.close()
        cancel_slot.empty()
        grid_slot.empty()
        run_slot.empty()
    st.session_state.pop("variants_active", None)

yours: g.GridResult | None = st.session_state.get("variants_result")
if grid is not None and store is not None and (yours is None or yours.grid.id != grid.id):
    # a reload (or a grid chosen again) shows what the run store holds of the grid set above, without
    # training: a grid just run used to vanish on reload until Run was pressed again
    try:
        found = g.stored_grid(grid, store)
    except LensError as exc:
        error_box(exc)
        found = None
    if found is not None:
        yours = found
        st.session_state["variants_result"] = found
if yours is not None and store is not None:
    st.markdown("#### Your grid")
    show_grid(yours, store)

# ------------------------------------------------------------------ 3. training curves
st.subheader("3 · Training curves")
runs: dict[str, dict[str, Any]] = {}
if yours is not None:
    # the user's runs say their arithmetic when it is not the recorded grid's fp32
    arithmetic = recipe_precision(yours.grid.definition["recipe"])
    runs.update(runs_of(yours.results, "yours" if arithmetic == "fp32" else f"yours ({arithmetic})"))
if shipped_results is not None:
    runs.update({k: v for k, v in runs_of(shipped_results, "recorded").items() if k not in runs})
if not runs:
    st.info("No finished runs yet: run a grid above.")
elif store is not None:
    # the first runs (the user's grid's first) whenever another grid is shown, and never an empty
    # choice left over from options that are gone (the chart stayed empty after a grid)
    first_runs = list(runs)[:4]
    shown_grid = yours.grid.id if yours is not None else None
    before = st.session_state.get("variants_curves")
    still = [k for k in before or [] if k in runs]
    # reset when another grid is shown, on the first draw, or when every chosen run is gone; a choice the
    # user cleared stays clear (on the session's first draw a link's choice stands)
    reset = (st.session_state.get("variants_curves_grid", shown_grid) != shown_grid or before is None
             or (before and not still))
    st.session_state["variants_curves"] = first_runs if reset else still
    st.session_state["variants_curves_grid"] = shown_grid
    picks = st.multiselect("Runs (variant · depth · seed)", list(runs), key="variants_curves",
                           format_func=lambda k: runs[k]["label"])
    try:
        metrics = store.metrics(picks) if picks else pd.DataFrame(columns=["run"])
    except LensError as exc:
        error_box(exc)
        metrics = pd.DataFrame(columns=["run"])
    if not picks:
        st.info("Choose runs to draw their training curves.")
    with_curves = [k for k in picks if k in set(metrics["run"])]
    missing = [k for k in picks if k not in with_curves]
    if with_curves:
        render.show(render.training_curves([
            {"label": runs[k]["label"], "residual": residual(runs[k]["variant"]),
             "history": metrics[metrics["run"] == k].to_dict(orient="records")} for k in with_curves]),
            key="variants_curves_chart")
        st.caption("Dashed: the running training error of each epoch (augmented batches, train mode, weights "
                   "moving); solid: the test error.")
    if missing:
        st.info("No per-epoch history on this machine for: " + "; ".join(runs[k]["label"] for k in missing)
                + ". The recorded file keeps each run's final numbers only; the curves are in the run store of "
                  "whoever trained the runs. Run the same grid here (or `python -m analysis grid`) to have them.")

# ------------------------------------------------------------------ 4. gradient flow
st.subheader("4 · Gradient flow")
if runs and store is not None:
    try:
        records = gradient_records(store, list(runs))
    except LensError as exc:
        error_box(exc)
        records = {}
    if not records:
        st.info("No gradient-flow records for these runs: run a grid with *Record gradient flow* on to see how much "
                "gradient reaches each block.")
    else:
        head = st.columns([1, 2])
        kind = head[0].radio("Gradient at", list(GRAD_KINDS), format_func=GRAD_KINDS.__getitem__,
                          key="variants_grad_kind", horizontal=True)
        # one run per variant by default (the first two variants): plain vs residual, λ vs identity
        first: dict[str, str] = {}
        for k in records:
            first.setdefault(runs[k]["variant"], k)
        one_each = list(first.values())[:2]
        picks = head[1].multiselect("Runs", list(records), one_each, key="variants_grad_runs",
                                 format_func=lambda k: runs[k]["label"])
        no_records = [runs[k]["label"] for k in runs if k not in records]
        if no_records:  # a count and a list on demand: 44 labels in a caption were a wall of text
            with st.expander(f"{len(no_records)} of {len(runs)} runs have no gradient-flow records"):
                st.caption("Trained without recording, or recorded in another run store (the recorded file keeps "
                           "final numbers only).")
                table(pd.DataFrame({"run": no_records}))
        if picks:
            both = pd.concat([records[k].assign(run=runs[k]["label"], residual=residual(runs[k]["variant"]))
                              for k in picks], ignore_index=True)
            shown_kind = both[both["kind"] == kind]
            zrange = render.decade_range(shown_kind["norm"])
            cols = st.columns(2)
            for i, k in enumerate(picks):
                render.show(render.gradient_heatmap(records[k], kind, runs[k]["label"], zrange),
                            key=f"variants_grad_heat_{i}", container=cols[i % 2])
            steps = sorted({int(s) for s in shown_kind["step"]})
            at_steps = st.multiselect("Steps to compare", steps, [steps[0], steps[-1]] if len(steps) > 1 else steps,
                                      key="variants_grad_steps", help="Step 0 is the first batch, at initialisation.")
            if at_steps:
                render.show(render.gradient_lines(shown_kind, at_steps, kind), key="variants_grad_lines")
            st.caption("Input: the gradient of the batch's summed loss at each block's input, per image (L2), "
                       "averaged over the batch. Parameters: the norm of the gradient the optimiser step uses. "
                       "Without shortcuts the gradient is multiplied by each block's Jacobian: in the plain 56-layer "
                       "digits net it grows toward the input at initialisation (explosion, not vanishing); λ < 1 "
                       "shrinks and λ > 1 grows the gradient with depth.")
            st.download_button("Download these gradient records (CSV)", csv_bytes(both),
                               file_name="variants_gradient_flow_shown.csv", mime="text/csv",
                               on_click="ignore", key="variants_grad_shown_csv")
elif store is None:
    st.info("Gradient-flow records live in the run store, which cannot be used here (see above).")
else:
    st.info("No finished runs yet: run a grid above.")
st.caption(f"Runs are kept in the run store at `{default_home()}` (set RESNET_LENS_HOME to move it).")
