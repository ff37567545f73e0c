"""Transfer learning: a net trained on the digits 0-4 (or MNIST-1D's classes 0-4, or any checkpoint)
reused on the digits 5-9 (MNIST-1D's 5-9, or a local ImageFolder), mode by mode (from scratch, fixed
feature extractor, fine-tuning, the last or first k stages), with few or many labels, the input
normalisation and BatchNorm statistics varied, and a linear probe on each stage."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.core import stats
from analysis.core.errors import ConfigError, LensError
from analysis.core.meta import precision_text
from analysis.core.reporting import csv_bytes, machine_text
from analysis.data.data import Dataset
from analysis.store.checkpoints import Checkpoint
from analysis.store.runstore import RunStore, default_home
from analysis.studies import transfer as tl
from ui import cache, fmt, render, widgets
from ui.widgets import Metric, error_box, lazy_tabs, metric_row, range_label, table

ROOT = Path(__file__).resolve().parent.parent
# The default comparisons' results, recorded once by the CLI and shipped, so a fresh clone shows measured
# numbers without training; RESNET_LENS_TRANSFER_RESULTS (digits) and RESNET_LENS_TRANSFER_RESULTS_1D
# (MNIST-1D) point the page at other files.
RECORDED = {
    "digits": (Path(os.environ.get("RESNET_LENS_TRANSFER_RESULTS") or ROOT / "results" / "transfer_digits.json"),
               "python -m analysis transfer --default-setups --steps 200 --seeds 0 1 2 3 4 "
               "--out results/transfer_digits.json"),
    "mnist1d": (Path(os.environ.get("RESNET_LENS_TRANSFER_RESULTS_1D") or ROOT / "results" / "transfer_mnist1d.json"),
                "OMP_NUM_THREADS=1 python -m analysis transfer --source mnist1d04_resnet1d20 --default-setups "
                "--steps 200 --seeds 0 1 2 3 4 --out results/transfer_mnist1d.json"),
}
RECORDED_LABELS = {"digits": "digits 0–4 → 5–9 (2-D)", "mnist1d": "MNIST-1D 0–4 → 5–9 (1-D)"}
LABEL_CHOICES = ("1", "5", "10", "20", "all")  # labelled training examples per target class
# the shipped sources (checkpoints/transfer/<name>.pt) by choice, and any other checkpoint
SHIPPED_SOURCES = {"digits": "digits04_resnet20", "mnist1d": "mnist1d04_resnet1d20"}
SOURCES = {"digits": "shipped: digits 0–4 (cifar_resnet20)", "mnist1d": "shipped: MNIST-1D 0–4 (resnet1d_20)",
           "checkpoint": "another checkpoint (trained here or uploaded)"}
TARGETS = {"embedded": "embedded (the source's own kind of data, classes 5–9)", "folder": "a local ImageFolder"}
BN_LABELS = {"update": "running statistics updated", "frozen": "running statistics frozen"}
DEFAULT_MODES = ["scratch", "frozen", "finetune"]
NAMED = ("from scratch", "fixed feature extractor", "fine-tune everything")  # the headline modes


# ------------------------------------------------------------------ numbers as the page writes them
# one rule for the library, the CLI, the README and the page
labels_text, label_order, setting, accuracy_table = tl.labels_text, tl.label_order, tl.setting_text, tl.accuracy_table


def pct(mean: float, std: float = math.nan, n: int | None = None) -> str:
    """Accuracy in per cent with one decimal (one test image of 225 is 0.44 pp); given the ``n`` seeds
    it is a mean over, whose sample std is ``std``, its 95 % t-interval ('61.8 [55.0, 68.6]') or why
    there is none ('61.8 (one run)', '61.8 (2 seeds: no interval)')."""
    if mean is None:
        return "—"
    if n is None:
        return "—" if not math.isfinite(mean) else f"{100 * mean:.1f}"
    return stats.mean_interval(mean, std, n, digits=1, scale=100)


def with_half(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (mean, std, seeds) with ``half``: the 95 % t-interval's half width, what the charts'
    whiskers draw (NaN under 3 seeds: no interval)."""
    return frame.assign(half=[stats.t_half_width(int(n), float(sd)) for n, sd in zip(frame["seeds"], frame["std"],
                                                                                      strict=True)])


def points(delta: float) -> str:
    return "—" if not math.isfinite(delta) else f"{100 * delta:+.1f}"


def noun(meta: dict[str, Any]) -> str:
    """What one example of the comparison's target is: an image, or a sequence (a 1-D target)."""
    return "sequences" if meta.get("dims") == 1 else "images"


def target_words(meta: dict[str, Any]) -> str:
    """The comparison's target in words, from the name run_plan records ('digits16[5,6,7,8,9]',
    'mnist1d[5,6,7,8,9]', an ImageFolder's name); a file from before the name was recorded is digits."""
    name = str(meta.get("target") or "digits16[5,6,7,8,9]")
    test = f"{meta['test']:,} " if isinstance(meta.get("test"), int) else ""
    if name.startswith("mnist1d"):
        return f"MNIST-1D's classes 5–9 (all {test}of their test sequences)"
    if name.startswith("digits"):
        return f"the digits 5–9 (all {test}of their test images)"
    return f"the ImageFolder {name} ({meta.get('classes', '?')} classes, {test}test images)"


def describe(meta: dict[str, Any], results: pd.DataFrame, source: str | None = None) -> str:
    """What the numbers are: source (``source``, or the net's name from the metadata), target, label
    settings, seeds and recipe (a results file's metadata)."""
    recipe = meta.get("recipe", {})
    seeds = meta.get("seeds", sorted({int(s) for s in results["seed"]}))
    labels = label_order(labels_text(v) for v in meta.get("labels", results["per_class"]))
    aug = "with" if recipe.get("augment", True) else "without"
    return (f"Source net: {source or meta.get('source', '?')}, {meta.get('stages', '?')} stages; target: "
            f"{target_words(meta)}; labelled training {noun(meta)} per class: {', '.join(labels)}; "
            f"{len(seeds)} seed{'s' * (len(seeds) != 1)} "
            f"({', '.join(str(s) for s in seeds)}), each drawing the labelled {noun(meta)} and every fresh weight. "
            f"Every run: {recipe.get('steps')} SGD steps whatever the number of {noun(meta)}, rounded up to whole "
            f"epochs (batch {recipe.get('batch_size')}, lr {recipe.get('lr')}, weight decay "
            f"{recipe.get('weight_decay')}, cosine schedule, {aug} augmentation, in {arithmetic(recipe)}); the head "
            f"is always new. The linear probe computes the source's features in {meta.get('probe_precision', 'fp32')}.")


def arithmetic(recipe: dict[str, Any]) -> str:
    """A transfer recipe's precision and layout in words; a file from before they were recorded is fp32."""
    return precision_text(str(recipe.get("precision", "fp32")), recipe.get("channels_last", False) is True)


def took(meta: dict[str, Any]) -> str:
    """How long recording the comparison took, from the file's metadata."""
    return fmt.recording_time(meta, seconds_key="seconds", what="comparison")


# ------------------------------------------------------------------ tables and chart frames
def setups_of(results: pd.DataFrame) -> pd.DataFrame:
    """One row per setup (plan order): its label and the rule it is (copied, frozen, bn, norm)."""
    return results.drop_duplicates("setup")[["setup", "copied", "frozen", "bn", "norm"]].reset_index(drop=True)


def main_setups(results: pd.DataFrame) -> list[str]:
    """The modes and the first-k sweep: source normalisation, BatchNorm statistics updated (the
    preprocessing and BatchNorm variants have their own sections)."""
    s = setups_of(results)
    keep = (s["norm"] == "source") & ((s["bn"] == "update") | (s["copied"] == s["frozen"]))
    return list(s.loc[keep, "setup"])


def colours(results: pd.DataFrame) -> dict[str, str]:
    """One colour per setup, the same in every chart of a comparison."""
    return {name: render.PALETTE[i % len(render.PALETTE)] for i, name in enumerate(setups_of(results)["setup"])}


def images_per_class(results: pd.DataFrame, classes: int = len(tl.TARGET_CLASSES)) -> dict[str, float]:
    """Where each label setting sits on the log axis: its number, and for 'all' the mean number of
    labelled examples per class it really is (``classes``: the target's)."""
    out: dict[str, float] = {}
    for n, g in results.groupby(results["per_class"].map(labels_text), sort=False):
        out[str(n)] = float(n) if n != "all" else float(g["train_images"].mean()) / classes
    return out


def vs_labels_frame(summary: pd.DataFrame, results: pd.DataFrame, stages: int,
                    classes: int = len(tl.TARGET_CLASSES)) -> tuple[pd.DataFrame, list[tuple[float, str]]]:
    """The chart's lines (the modes and the first-k sweep) and its x ticks."""
    xs = images_per_class(results, classes)
    shown = main_setups(results)
    s = summary[summary["setup"].isin(shown)].copy()
    s["x"] = s["labels"].map(xs)
    kinds = setups_of(results).set_index("setup")
    whole = s["setup"].map(lambda n: int(kinds.loc[n, "copied"]) in (0, stages))
    frozen = s["setup"].map(lambda n: int(kinds.loc[n, "frozen"]) == int(kinds.loc[n, "copied"]))
    # the named modes solid; the first-k sweep's partial transfers dashed (frozen) or dotted (fine-tuned)
    s["dash"] = ["solid" if w else "dash" if f else "dot" for w, f in zip(whole, frozen, strict=True)]
    s["colour"] = s["setup"].map(colours(results))
    s["labels"] = s["labels"].map(setting)
    s = s.rename(columns={"test_acc_mean": "mean", "test_acc_std": "std"})
    ticks = [(xs[n], n if n != "all" else f"all (≈{xs[n]:.0f})") for n in label_order(xs)]
    return with_half(s), ticks


def first_k_frame(summary: pd.DataFrame, stages: int, labels: str) -> pd.DataFrame:
    """The "transfer the first k stages" sweep at one label setting: k = 0 is from scratch, k = all
    frozen the feature extractor, k = all fine-tuned fine-tune everything (setup_label names them so)."""
    at = summary[summary["labels"] == labels].set_index("setup")
    rows = []
    for k in range(stages + 1):
        for mode, line in (("first_k_frozen", "frozen"), ("first_k_finetuned", "fine-tuned")):
            name = tl.setup_label(tl.mode_setup(mode, stages, k), stages)
            if name in at.index:
                r = at.loc[name]
                rows.append({"k": k, "line": line, "setup": name, "mean": float(r["test_acc_mean"]),
                             "std": float(r["test_acc_std"]), "seeds": int(r["seeds"])})
    return with_half(pd.DataFrame(rows, columns=["k", "line", "setup", "mean", "std", "seeds"]))


def variant_frame(summary: pd.DataFrame, series: dict[str, str]) -> pd.DataFrame:
    """Rows of ``summary`` whose setup is a key of ``series`` (setup label -> its name in the chart),
    as accuracy_bars wants them: group (label setting), series, mean, std, seeds, half."""
    s = summary[summary["setup"].isin(series)]
    order = label_order(s["labels"])
    rows = [{"group": setting(r.labels), "series": series[r.setup], "mean": r.test_acc_mean,
             "std": r.test_acc_std, "seeds": r.seeds, "_order": order.index(r.labels)} for r in s.itertuples()]
    df = pd.DataFrame(rows, columns=["group", "series", "mean", "std", "seeds", "_order"])
    names = list(series.values())
    df["_series"] = df["series"].map(names.index)
    return with_half(df.sort_values(["_series", "_order"]).drop(columns=["_order", "_series"]).reset_index(drop=True))


def variant_table(frame: pd.DataFrame, base: str) -> pd.DataFrame:
    """One row per label setting: each series' accuracy and its difference from ``base`` in points
    ('Δ name'; short headers keep the table within a laptop's page width)."""
    rows = []
    for group, g in frame.groupby("group", sort=False):
        by = g.set_index("series")
        row: dict[str, Any] = {"labels": group}
        for name in dict.fromkeys(frame["series"]):
            row[f"{name} %"] = pct(by.loc[name, "mean"], by.loc[name, "std"], int(by.loc[name, "seeds"])) \
                if name in by.index else "—"
        for name in dict.fromkeys(frame["series"]):
            if name != base:
                diff = (by.loc[name, "mean"] - by.loc[base, "mean"]) if name in by.index and base in by.index \
                    else math.nan
                row[f"Δ {name}"] = points(float(diff))
        rows.append(row)
    return pd.DataFrame(rows)


def time_table(curves: pd.DataFrame, threshold: float, setups: list[str]) -> pd.DataFrame:
    """Per setup and label setting: the mean share of the run's SGD steps after which the test
    accuracy first reached ``threshold`` (every run takes the same steps, so this compares across
    setups and label settings as wall time on a shared machine cannot), over the seeds that reached
    it, how many did, and their mean seconds."""
    hits = tl.time_to(curves, threshold)
    hits["labels"] = hits["per_class"].map(labels_text)
    # a run's last epoch is always measured: the curve's largest epoch is the run's number of epochs
    last = curves.groupby(["setup", curves["per_class"].map(labels_text), "seed"], sort=False)["epoch"].max()
    hits["share"] = [e / last[(s, n, seed)] if math.isfinite(e) else math.nan
                     for s, n, seed, e in zip(hits["setup"], hits["labels"], hits["seed"], hits["epoch"], strict=True)]
    order = label_order(hits["labels"])
    rows = []
    for setup in setups:
        row: dict[str, Any] = {"setup": setup}
        for n in order:
            g = hits[(hits["setup"] == setup) & (hits["labels"] == n)]
            if not len(g):
                row[setting(n)] = "—"
                continue
            reached = g.dropna(subset=["share"])
            row[setting(n)] = (f"{reached['share'].mean():.0%} · {reached['seconds'].mean():.1f} s "
                               f"({len(reached)}/{len(g)})" if len(reached) else f"not reached (0/{len(g)})")
        rows.append(row)
    return pd.DataFrame(rows)


def keep_valid(key: str, options: list[Any], many: bool) -> None:
    """Drop a remembered choice that this comparison does not offer (another comparison's setups),
    before the widget is drawn: Streamlit refuses a value outside the options."""
    if key not in st.session_state:
        return
    value = st.session_state[key]
    if many and isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
    elif not many and value not in options:
        del st.session_state[key]


# ------------------------------------------------------------------ one comparison, shown
def show_comparison(result: tl.PlanResult, prefix: str, name: str) -> None:
    """Every table and chart of a comparison (the recorded one or the user's): accuracy vs labels per
    mode, the first-k sweep, learning curves, time to a target accuracy, preprocessing, BatchNorm,
    the linear probe, the readings and the CSV downloads. ``prefix`` keys its widgets."""
    results, curves, probe = result.results, result.curves, result.probe
    stages = int(result.meta.get("stages") or (results["copied"].max() if len(results) else 0))
    done = results[results["status"] == "complete"]
    if not len(done):
        st.info("No finished runs in this comparison.")
        return
    summary = tl.summarise(results)
    order = label_order(summary["labels"])
    fewest = order[0]
    acc = summary.set_index(["setup", "labels"])
    def spread(mode: str) -> str:
        n, sd = int(acc.loc[(mode, fewest), "seeds"]), float(acc.loc[(mode, fewest), "test_acc_std"])
        return f"target test accuracy, mean of {n} seed{'s' * (n != 1)}" + (
            f" (95 % t-interval ± {100 * half:.1f} points)" if math.isfinite(half := stats.t_half_width(n, sd))
            else "")

    headline = [Metric(f"{mode}, {setting(fewest)}", pct(acc.loc[(mode, fewest), "test_acc_mean"]) + " %",
                       help=spread(mode)) for mode in NAMED if (mode, fewest) in acc.index]
    metric_row([Metric("Runs", f"{len(done)}"), Metric("Setups", f"{summary['setup'].nunique()}"),
                Metric("Seeds", f"{results['seed'].nunique()}"), *headline])

    st.markdown(f"**Target test accuracy (%) by labelled {noun(result.meta)} per class** — mean over seeds [95 % t-interval]")
    table(accuracy_table(summary), height="content")  # every setup in view, no scrolling inside
    frame, ticks = vs_labels_frame(summary, results, stages, int(result.meta.get("classes") or len(tl.TARGET_CLASSES)))
    render.show(render.accuracy_vs_labels(frame, ticks), key=f"{prefix}_labels_chart")
    st.caption("Solid: the named modes; dashed: the first k stages transferred and frozen; dotted: transferred and "
               "fine-tuned. Whiskers and brackets: the 95 % t-interval over seeds (none under 3 seeds; symmetric, not "
               "clipped to 0–100 %). 'all' sits at the mean "
               "number of labelled images per class it is.")

    test = result.meta.get("test")
    readings = tl.readings(summary, stages, probe, results=results, test_size=test if isinstance(test, int) else None)
    if readings:
        st.markdown("**Readings**\n\n" + "\n".join(f"- {line}" for line in readings))
        st.caption("Each difference is compared seed by seed (runs of one seed share their labelled images, initial "
                   "weights and batch order): from 3 seeds on with its 95 % t-interval and the smallest difference "
                   "the design detects (power 0.8), in points and test images; with fewer seeds, no test. "
                   + machine_text(result.meta.get("machine")))

    # the charts at one label setting
    at_key = f"{prefix}_at"
    keep_valid(at_key, order, many=False)
    at = st.columns([1, 2])[0].selectbox(f"Labelled {noun(result.meta)} per class for the charts below", order,
                                         key=at_key,
                                         format_func=setting)

    # one tab open at a time, and only the open tab is drawn: the page drew every section's chart
    # (18 Plotly figures with the user's comparison) and took over 4 s to open (issue 21 item 10)
    def first_k() -> None:
        k_frame = first_k_frame(summary, stages, at)
        if k_frame["k"].nunique() >= 2:
            render.show(render.first_k_transfer(k_frame, stages), key=f"{prefix}_k_chart")
            st.caption("Yosinski et al. 2014's experiment: the first k stages (the stem with the first) come from the "
                       "source, the rest is freshly initialised; frozen or fine-tuned. k = 0 is training from scratch, "
                       f"k = {stages} frozen the fixed feature extractor and k = {stages} fine-tuned fine-tuning "
                       "everything. Where the frozen line falls, the features may stop serving the new task — or the "
                       "fresh head and stages are undertrained by the one recipe every mode shares: the linear probe "
                       "(its tab), trained to convergence on the same frozen features, tells which.")
        else:
            st.info("This comparison has no first-k sweep at this setting: run the modes *first k stages, frozen* and "
                    "*fine-tuned* with several k.")


    def learning_curves() -> None:
        have = list(dict.fromkeys(curves["setup"])) if len(curves) else []
        if have:
            cols = st.columns([3, 1])
            setups_key = f"{prefix}_curve_setups"
            keep_valid(setups_key, have, many=True)
            picks = cols[0].multiselect("Setups", have, [s for s in NAMED if s in have] or have[:3], key=setups_key)
            x = cols[1].radio("x axis", ["epoch", "seconds"], key=f"{prefix}_curve_x", horizontal=True)
            c = curves[(curves["per_class"].map(labels_text) == at) & curves["setup"].isin(picks)].copy()
            if len(c):
                c["colour"] = c["setup"].map(colours(results))
                render.show(render.transfer_curves(c, x), key=f"{prefix}_curves_chart")
                st.caption(f"Test accuracy during training, {setting(at)}, one line per seed; it is "
                           f"measured {tl.EVALUATIONS} times per run. Every run takes the same number of SGD steps, so "
                           "fewer images make more (shorter) epochs. Seconds are this run's wall time on the machine "
                           "that recorded it.")
            else:
                st.info("Choose setups to draw their learning curves.")

            st.markdown("#### Time to reach a target accuracy")
            goal = st.slider("Target accuracy (%)", 20, 100, 80, 5, key=f"{prefix}_threshold")
            table(time_table(curves, goal / 100, have), height="content")  # every setup in view
            st.caption(f"When the test accuracy first reached {goal} %: the share of the run's SGD steps done by then "
                       "(the same steps for every run, up to the rounding to whole epochs, so shares compare across setups "
                       "and label settings) and the "
                       "seconds, each a mean over the seeds that reached it (how many in brackets). It is measured at "
                       f"the {tl.EVALUATIONS} test evaluations of a run, so a run reaching it between two of them is "
                       "counted at the next. Seconds are wall time on the machine that recorded the runs, taken while "
                       "it did other work: read them within one setup, not between setups.")
        else:
            st.info("This comparison holds no learning curves.")


    def preprocessing() -> None:
        norm_series = {tl.setup_label(tl.mode_setup("frozen", stages, norm=n), stages): tl.NORM_LABELS[n]
                       for n in tl.NORMS}
        nf = variant_frame(summary, norm_series)
        if nf["series"].nunique() >= 2:
            table(variant_table(nf, tl.NORM_LABELS["source"]))
            st.caption(f"Δ: the difference from {tl.NORM_LABELS['source']} in points (mean over seeds).")
            render.show(render.accuracy_bars(nf, "labelled images per class"), key=f"{prefix}_norm_chart")
            st.caption("The fixed feature extractor with the target's inputs normalised with the statistics the source "
                       "net was trained with (what it expects), the target's own labelled images' statistics, or "
                       "none: the differences are what wrong preprocessing costs.")
        else:  # say what the comparison has: one normalisation of the frozen net, or none at all
            ran = nf["series"].nunique()
            st.info(("This comparison has the fixed feature extractor under one normalisation only" if ran else
                     "This comparison has no fixed-feature-extractor run") + ": run the fixed feature extractor "
                    "with several input normalisations to see what preprocessing costs.")


    def batchnorm() -> None:
        bn_series = {tl.setup_label(tl.mode_setup("finetune", stages, bn=b), stages): BN_LABELS[b] for b in tl.BN_MODES}
        bf = variant_frame(summary, bn_series)
        if bf["series"].nunique() >= 2:
            table(variant_table(bf, BN_LABELS["update"]))
            st.caption(f"Δ: the difference from {BN_LABELS['update']} in points (mean over seeds).")
            render.show(render.accuracy_bars(bf, "labelled images per class"), key=f"{prefix}_bn_chart")
            st.caption("Fine-tuning everything with the copied BatchNorm layers' running statistics updated by the "
                       "target's batches, or kept as the source left them (their scale and shift still learn).")
        else:
            st.info(("This comparison fine-tunes everything with one BatchNorm mode only" if bf["series"].nunique() else
                     "This comparison has no fine-tune-everything run") + ": run fine-tune everything with both "
                    "BatchNorm modes to compare them.")


    def linear_probe() -> None:
        if len(probe):
            p = probe.assign(labels=probe["per_class"].map(labels_text))
            p = p.assign(_o=p["labels"].map(label_order(p["labels"]).index)).sort_values(["_o"], kind="stable")
            render.show(render.probe_by_stage(p.drop(columns="_o").assign(labels=p["labels"].map(setting))),
                        key=f"{prefix}_probe_chart")
            wide = p.pivot_table(index=["stage", "features"], columns="labels", values="test_acc", sort=False)
            wide = wide[label_order(wide.columns)]
            table(pd.DataFrame({"stage": [i[0] for i in wide.index], "features": [int(i[1]) for i in wide.index],
                                **{f"{setting(n)} %": [pct(v) for v in wide[n]] for n in wide.columns}}))
            st.caption("A logistic regression on each stage's globally pooled output of the frozen source net (seed 0's "
                       "labelled examples), scored on the target's test examples: how linearly the target's classes can be "
                       "read from the features at each depth.")
        else:
            st.info("No linear probe in this comparison (it is measured once every run has finished).")


    lazy_tabs({"Transfer the first k stages": first_k, "Learning curves": learning_curves,
               "Preprocessing": preprocessing, "BatchNorm while fine-tuning": batchnorm,
               "Linear probe by stage": linear_probe}, key=f"{prefix}_section")

    with st.expander("Every run"):
        table(results.assign(per_class=results["per_class"].map(labels_text)),
              formats={"train_acc": "%.3f", "test_acc": "%.3f"})
    dl = st.columns(4)
    for col, (what, df) in zip(dl, (("runs", results), ("summary", summary), ("curves", curves), ("probe", probe)),
                               strict=True):
        col.download_button(f"Download {what} (CSV)", csv_bytes(df), file_name=f"{name}_{what}.csv",
                            mime="text/csv", on_click="ignore", key=f"{prefix}_{what}_csv")


# ------------------------------------------------------------------ the source, the target, the kept nets
def open_store() -> RunStore | None:
    return widgets.open_store("The run store cannot be used", error=True)


def pick_source(box: Any) -> tuple[Checkpoint | None, str]:
    """The source net (a shipped one, or any checkpoint: trained here or uploaded, a torchvision
    state_dict included) and its name; errors are shown, not raised."""
    kind = box.radio("Source net", list(SOURCES), format_func=SOURCES.__getitem__, key="transfer_source")
    if kind in SHIPPED_SOURCES:
        try:
            return cache.transfer_source(SHIPPED_SOURCES[kind]), SOURCES[kind].removeprefix("shipped: ")
        except LensError as exc:
            error_box(exc)
            return None, ""
    picked = widgets.checkpoint_picker("transfer", container=box)
    box.caption("Opened programs (.pt2, ONNX, modules) are not offered as transfer sources: their head and stages "
                "are not known to the transfer engine, only a ResNet checkpoint's are.")
    return (picked.checkpoint, picked.label) if picked is not None else (None, "")


WAITING = "waiting"  # pick_target: the folder target has no root yet


def pick_target(box: Any, source: Checkpoint) -> tl.Target | None | str:
    """The embedded target that fits the source (None: run_plan's default), a local ImageFolder read
    once per tree and crop, or WAITING while no root is given. An unusable tree raises (the caller
    shows it)."""
    kind = box.radio("Target data", list(TARGETS), format_func=TARGETS.__getitem__, key="transfer_target",
                     horizontal=True)
    if kind == "embedded":
        return None
    cols = box.columns([3, 1, 1])
    root = cols[0].text_input("ImageFolder root (train/ + val/ class folders, or one set of class folders)",
                              key="transfer_folder", placeholder="/data/flowers",
                              help="Read from this machine's disk; nothing is downloaded. Without train/ and val/ "
                                   "the images are split by a seeded stratified split.")
    size = cols[1].number_input(range_label("Crop", 8, 512, "px"), 8, 512, 224, key="transfer_folder_size",
                                help="Center crop after the resize (torchvision's eval transform: 256 → 224)")
    resize = cols[2].number_input(range_label("Resize", 8, 1024, "px"), 8, 1024, 256, key="transfer_folder_resize",
                                  help="Shorter side before the crop")
    if not root.strip():  # nothing typed yet: a prompt, not an error
        box.info("Give the ImageFolder's root folder to use it as the target.")
        return WAITING
    if int(resize) < int(size):
        raise ConfigError(f"the resize ({int(resize)} px) must be at least the crop ({int(size)} px)")
    path = Path(root.strip()).expanduser()
    mtime = path.stat().st_mtime if path.is_dir() else 0.0
    raw = cache.transfer_folder(str(path), source.spec.in_channels, int(size), int(resize), mtime)
    return tl.raw_target(source, raw)


def keep_net(ck: Checkpoint) -> None:
    """A net trained now, kept in the run store under its name (the other pages list it under
    *Checkpoint → trained here*) and remembered for the download below; a store that cannot be
    written keeps it for this session only."""
    label = ck.spec.name
    st.session_state.setdefault("transfer_kept", {})[label] = ck
    try:
        cache.run_store().save_run(label, ck)
        st.session_state.setdefault("trained", {})[label] = ck
    except LensError as exc:
        st.warning(f"{label} is kept for this session only: {exc}")


def show_kept() -> None:
    """The nets kept from comparisons on this page: where they are, and one download."""
    kept: dict[str, Checkpoint] = st.session_state.get("transfer_kept", {})
    if not kept:
        return
    st.markdown("#### Nets kept from your comparisons")
    st.caption(f"{len(kept)} net{'s' * (len(kept) != 1)} trained on this page and kept: each opens on every other "
               "page under *Checkpoint → trained here* (its metadata rebuilds its target data and the normalisation "
               "its inputs had).")
    keep_valid("transfer_kept_pick", list(kept), many=False)
    cols = st.columns([3, 1])
    pick = cols[0].selectbox("Download a kept net", list(kept), key="transfer_kept_pick")
    cols[1].download_button("Download .pt", cache.checkpoint_file(pick, kept[pick]),
                            file_name=cache.download_name(pick, ".pt"), mime="application/octet-stream",
                            on_click="ignore", key="transfer_kept_download")


# ------------------------------------------------------------------ the page
st.title("Transfer learning")
st.caption("A net trained on one task reused on another: a residual net trained on the digits 0–4 (or on MNIST-1D's "
           "classes 0–4, or any checkpoint) as the source, and classes 5–9 with few labelled examples (or a local "
           "ImageFolder) as the target. Each mode is trained with the same recipe and seeds and tested on the same "
           "examples: from scratch, the source as a fixed feature extractor (frozen body, new linear head), "
           "fine-tuning everything or the last k stages, and Yosinski et al. 2014's \"transfer the first k "
           "stages\"; with the source's, the target's or no input normalisation (\"mind the other model's "
           "preprocessing\") and with BatchNorm's statistics updated or frozen.")

# ------------------------------------------------------------------ 1. the recorded comparisons
st.subheader("1 · The recorded comparison")
which = st.radio("Recorded on", list(RECORDED), format_func=RECORDED_LABELS.__getitem__, key="transfer_recorded",
                 horizontal=True)
results_file, record_cmd = RECORDED[which]
if not results_file.is_file():
    where = results_file.relative_to(ROOT) if results_file.is_relative_to(ROOT) else results_file
    st.info(f"No recorded comparison: `{where}` is not there. Record it with `{record_cmd}` (see the README), or run "
            "a comparison below.")
else:
    try:
        recorded = cache.transfer_results(str(results_file), results_file.stat().st_mtime)
    except LensError as exc:
        error_box(exc)
    else:
        st.caption(describe(recorded.meta, recorded.results) + " " + took(recorded.meta))
        show_comparison(recorded, "transfer_rec", results_file.stem)  # one set of choices for either file

# ------------------------------------------------------------------ 2. the user's comparison
st.subheader("2 · Run a comparison")
st.caption("Every run is kept in the run store as soon as it finishes, keyed by the source net's weights, the setup, "
           "the labels, the seed, the recipe and the target: asking again for a run that is there shows it without "
           "training.")
src_cols = st.columns([1, 2])
source, source_name = pick_source(src_cols[0])
target: tl.Target | None = None
usable = False
stages = 3
if source is not None:
    full: Dataset | None = None  # the whole target, once it is known and fits the source
    try:
        picked_target = pick_target(st, source)
        if not isinstance(picked_target, str):  # WAITING: no folder given yet, nothing to check
            target = picked_target
            # what cannot adapt (dimensions, channels) is refused here, before any setting is read
            whole = tl.target_maker(source, target)(None, 0, "none")
            tl.check_compatible(source, whole)
            full = whole
    except LensError as exc:
        error_box(exc)
    if full is not None:
        usable = True
        stages = len(source.model.stage_names)
        unit = "samples" if full.dims == 1 else "px"
        said = "; ".join(tl.adaptation_notes(source, full, folder=target is not None))
        src_cols[1].caption(f"{source.spec.name}: {stages} stages ({', '.join(source.model.stage_names)}); target: "
                            f"{full.name}, {full.num_classes} classes at {full.size} {unit}, "
                            f"{len(full.y_train):,} training and {len(full.y_test):,} test examples. "
                            f"{said[0].upper() + said[1:]}.")
        overlap = tl.overlap_note(source, full)
        if overlap:
            st.warning(overlap[0].upper() + overlap[1:] + ". Pick a source trained on other classes (the shipped "
                       "sources saw classes 0–4 only) to measure transfer.")

modes = st.multiselect("Modes", list(tl.MODES), DEFAULT_MODES, key="transfer_modes",
                       format_func=tl.MODE_LABELS.__getitem__)  # a row of its own: long names stay whole
# two choices a row: in a quarter of the page the chip 'running statistics updated' was cut to '…'
opts = st.columns(2) + st.columns(2)
labels = opts[0].multiselect("Labelled examples per class", list(LABEL_CHOICES), ["1", "20"], key="transfer_labels",
                             format_func=setting)
keep_valid("transfer_ks", list(range(stages + 1)), many=True)  # another source may have fewer stages
ks = opts[1].multiselect(f"k (stages, 0–{stages})", list(range(stages + 1)), [1],
                         key="transfer_ks", help="For the last-k and first-k modes: fine-tune the last k stages; "
                                                 "transfer the first k stages. Several k sweep them.")
bns = opts[2].multiselect("BatchNorm while fine-tuning", list(tl.BN_MODES), ["update"], key="transfer_bn",
                          format_func=BN_LABELS.__getitem__,
                          help="Applies to copied stages that are fine-tuned; frozen stages keep their statistics.")
norms = opts[3].multiselect("Input normalisation", list(tl.NORMS), ["source"], key="transfer_norms",
                            format_func=tl.NORM_LABELS.__getitem__,
                            help="The target's inputs normalised with the source net's statistics (what it was "
                                 "trained with), the target's own labelled examples' statistics, or not at all; for "
                                 "every chosen mode, from scratch included.")
nums = st.columns([1, 1, 2])
seeds = nums[0].number_input(range_label("Seeds", 1, 5), 1, 5, 1, key="transfer_seeds",
                             help="Seeds 0, 1, …: each draws the labelled examples and the fresh weights; the "
                                  "mean and its 95 % t-interval are over them.")
steps = nums[1].number_input(range_label("SGD steps per run", 5, 3000), 5, 3000, 150, key="transfer_steps",
                             help="The same number of steps for every mode and label setting (batch 32, lr 0.02, "
                                  "cosine schedule); the recorded comparison's recipe is above.")
keep = nums[2].checkbox("Keep every net trained now", False, key="transfer_keep",
                        help="Saves each fine-tuned net in the run store (about 1 MB each for a ResNet-20): it opens "
                             "on every other page and can be downloaded below. A run taken from the store is not "
                             "trained again, so its net is kept only if it was kept when it was trained.")
arith = st.columns([1, 1, 2])
# a 1-D source's nets have no channels-last layout: the box is offered for 2-D sources only
precision, channels_last = widgets.precision_widgets(arith[0], "transfer",
                                               dims=source.spec.dims if source is not None else 2)
probe_precision = widgets.eval_precision(arith[1], "transfer_probe")

plan: tl.Plan | None = None
problems = []
if not modes:
    problems.append("Choose at least one mode.")
if not labels:
    problems.append("Choose at least one number of labelled examples per class.")
if any(m in tl.K_MODES for m in modes) and not ks:
    problems.append("Choose at least one k for the last-k and first-k modes.")
if not bns:
    problems.append("Choose at least one BatchNorm mode.")
if not norms:
    problems.append("Choose at least one input normalisation.")
if problems:
    st.error(" ".join(problems))
elif usable and source is not None:
    try:
        setups = tl.choose_setups(modes, [int(k) for k in ks], bns, norms, stages)
        plan = tl.Plan(setups, tuple(None if n == "all" else int(n) for n in labels),
                       tuple(range(int(seeds))),
                       tl.Recipe(steps=int(steps), precision=precision, channels_last=channels_last),
                       probe_precision=probe_precision)
        tl.check_plan(source, plan, target)  # everything run_plan would refuse, refused before the button
    except LensError as exc:
        error_box(exc)
        plan = None
    else:
        st.caption(f"{len(setups)} setup{'s' * (len(setups) != 1)} × {len(labels)} label setting"
                   f"{'s' * (len(labels) != 1)} × {int(seeds)} seed{'s' * (int(seeds) != 1)} = "
                   f"{len(plan.items())} runs: " + "; ".join(tl.setup_label(s, stages) for s in setups) + ".")
store = open_store()

stopped = st.session_state.pop("transfer_active", None)  # left behind by a comparison a rerun interrupted
if stopped is not None and store is not None:
    was_source, was_plan, was_name, was_target, was_trained = stopped
    try:
        # nothing is kept from training here: cancel() is True from the start, so only stored runs come back
        partial = tl.run_plan(was_source, was_plan, store=store, target=was_target, cancel=lambda: True)
    except LensError as exc:
        error_box(exc)
    else:
        kept = len(partial.results)
        if kept:
            st.warning(f"The comparison was stopped before it finished (Cancel, or another click while it ran). The "
                       f"{kept} of {len(was_plan.items())} runs that had finished are kept in the run store and shown "
                       "below; the run in progress was dropped. Run the same comparison again to train only the "
                       "rest.")
            # the counts of the interrupted comparison, not of this look into the store
            trained_now = min(was_trained["n"], kept)
            # its wall time until it was stopped, not the look into the store's
            ran = time.perf_counter() - was_trained["started"] if "started" in was_trained else partial.seconds
            st.session_state["transfer_result"] = (
                dataclasses.replace(partial, trained=trained_now, reused=kept - trained_now, seconds=ran), was_name)
        else:
            st.warning("The comparison was stopped (Cancel, or another click while it ran) before its first run "
                       "finished: nothing was kept.")
            st.session_state.pop("transfer_result", None)

go_run = st.button("Run comparison", type="primary", key="transfer_run", disabled=plan is None or store is None,
                   help="Train every run the run store does not hold yet, one after another in this server.")
if go_run and plan is not None and store is not None and source is not None:  # the button is disabled otherwise
    # runs trained (not taken from the store) so far, and when it started: said if the comparison is stopped
    trained_count = {"n": 0, "started": time.perf_counter()}
    st.session_state["transfer_active"] = (source, plan, source_name, target, trained_count)
    # placeholders: the button and the bars are there while the comparison runs, and gone when it ends
    cancel_slot, plan_slot, run_slot = st.empty(), st.empty(), st.empty()
    cancel_slot.button("Cancel", key="transfer_cancel",
                       help="Stops the comparison: the runs that finished stay in the run store; the one running is "
                            "dropped.")
    plan_bar = plan_slot.progress(0.0, text="starting…")
    drawn = {"plan": -1, "run": -1}

    def progress(p: tl.PlanProgress) -> None:
        # a run's last call says it finished (fraction 1 with done counting it); before that, done
        # counts the runs before it and fraction is how far this one is
        finished = p.fraction >= 1.0
        if p.finished is not None and not p.reused:
            trained_count["n"] += 1
        overall = p.done / max(p.total, 1) if finished else (p.done + p.fraction) / max(p.total, 1)
        if int(1000 * overall) > drawn["plan"]:
            drawn["plan"] = int(1000 * overall)
            plan_bar.progress(min(overall, 1.0), text=f"run {p.done if finished else p.done + 1} of {p.total}")
        if int(1000 * p.fraction) != drawn["run"]:  # redraw at most 1000 times per run
            drawn["run"] = int(1000 * p.fraction)
            run_slot.progress(min(p.fraction, 1.0), text=f"{p.label}: {p.fraction:.0%}")

    try:
        result = tl.run_plan(source, plan, store=store, target=target, progress=progress,
                             keep=keep_net if keep else None)
    except LensError as exc:
        error_box(exc)
    else:
        st.session_state["transfer_result"] = (result, source_name)
        st.session_state.pop("transfer_result_from_store", None)
        st.success(f"Comparison finished: {result.trained} runs trained, {result.reused} found in the run store, "
                   f"{result.seconds:,.1f} s.")
    finally:  # finished or refused: neither the button nor the bars stay on screen
        cancel_slot.empty()
        plan_slot.empty()
        run_slot.empty()
    st.session_state.pop("transfer_active", None)

yours = st.session_state.get("transfer_result")
if yours is None and plan is not None and store is not None and source is not None:
    # a reload (a new session) shows what the run store holds of the comparison set above, training
    # nothing: a comparison just run used to vanish on reload until Run was pressed again
    try:
        found = tl.run_plan(source, plan, store=store, target=target, stored_only=True)
    except LensError as exc:
        error_box(exc)
    else:
        if len(found.results):
            yours = (dataclasses.replace(found, trained=0, seconds=0.0), source_name)
            st.session_state["transfer_result"] = yours
            st.session_state["transfer_result_from_store"] = len(plan.items())
if yours is not None:
    mine, mine_name = yours
    st.markdown("#### Your comparison")
    planned = st.session_state.get("transfer_result_from_store")
    if mine.trained == 0 and mine.seconds == 0.0 and planned:  # read from the store, nothing trained now
        metric_row([Metric("Runs in the run store", f"{mine.reused} of {planned}")])
        st.caption("Shown from the run store: nothing was trained now."
                   + (" Press **Run comparison** to train the runs it does not hold." if mine.reused < planned
                      else ""))
    else:
        metric_row([Metric("Trained now", f"{mine.trained}"), Metric("Found in the run store", f"{mine.reused}"),
                    Metric("Wall time", f"{mine.seconds:,.1f} s")])
    st.caption(describe(mine.meta, mine.results, mine_name))
    show_comparison(mine, "transfer_yours", "transfer")
show_kept()
st.caption(f"Runs are kept in the run store at `{default_home()}` (set RESNET_LENS_HOME to move it).")
