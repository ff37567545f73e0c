"""Training: the degradation experiment (He et al. 2015, Fig. 1 / Fig. 6) on the embedded digits, and
in 1-D on MNIST-1D (Greydanus 2020) beside that dataset's published baselines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from analysis.arch.specs import get_spec
from analysis.core.errors import LensError
from analysis.core.meta import PRECISIONS, SCHEDULES, recipe_precision
from analysis.core.meta import precision_text as meta_precision_text
from analysis.core.reporting import csv_bytes
from analysis.data.data import MNIST1D_BASELINES
from analysis.experiments import gradflow
from analysis.experiments.train import Progress, TrainConfig, check_device, run_meta, train_checkpoint
from analysis.store.checkpoints import Checkpoint
from analysis.store.runstore import StoredRun, config_key, default_home, run_config
from analysis.studies import grid
from ui import cache, render, widgets
from ui.fmt import fmt_float
from ui.widgets import table

DEPTHS = [8, 14, 20, 32, 44, 56, 110]
# digits: 1,347 training images in batches of 64 are 22 steps an epoch, so 10 epochs record 44 snapshots
GRAD_EVERY = 5
GRAD_KINDS = {"input": "block inputs", "params": "block parameters"}


def precision_text(r: TrainConfig) -> str:
    """A recipe's arithmetic and layout as the grid and transfer pages say it ('fp32', 'bf16, channels-last')."""
    return meta_precision_text(r.precision, r.channels_last)


def run_record(label: str, ck: Checkpoint) -> dict:
    return {"label": label, "depth": ck.spec.depth, "residual": ck.spec.residual, "history": list(ck.meta.history)}


def seconds_text(ck: Checkpoint) -> str:
    """Training time in seconds; a run whose time was not recorded (a file written elsewhere, a run
    cancelled before its time was kept) shows an em dash, not 'None' (its status says why)."""
    s = ck.meta.train_seconds
    return "—" if s is None else f"{s:,.1f}"


def data_name(ck: Checkpoint) -> str:
    """The data a run was trained on, as its metadata names it ("digits16", "mnist1d", a folder)."""
    return ck.meta.dataset.name if ck.meta.dataset else "—"


def on_mnist1d(ck: Checkpoint) -> bool:
    return ck.meta.dataset is not None and ck.meta.dataset.is_mnist1d


# The two training errors a run has: the clean one, measured once after the last epoch (eval mode, the
# whole training set, no augmentation), and the running one of the last epoch, averaged over its
# augmented batches in train mode while the weights moved (all a run trained before the clean pass has)
CLEAN_TRAIN = "train error % (clean: eval mode, whole training set)"
RUNNING_TRAIN = "running train error % (augmented batches, train mode)"
# error percentages keep their two decimals (the Lesion lab's metrics write 12.34 % too), where the
# app's default of 3 significant digits would cut 12.34 to 12.3
ERROR_FORMATS = {CLEAN_TRAIN: "%.2f", RUNNING_TRAIN: "%.2f", "test error %": "%.2f"}
# a recipe's numbers as they are set: weight decay 0.0001 and 0.00015 (three significant digits, never
# rounded to one), a seed without separators
RECIPE_FORMATS = {**ERROR_FORMATS, "weight decay": "%.3g", "seed": "%d"}


def error(final: dict[str, Any], key: str) -> float:
    """An accuracy of a run's final metrics as an error %, two decimals; NaN where it was not measured
    (the clean one of a run trained before the clean pass existed)."""
    v = final.get(key)
    return float("nan") if v is None else round(100 * (1 - float(v)), 2)


TRAIN_NOTE = ("Two training errors: the clean one is one pass over the whole training set in eval mode without "
              "augmentation after the last epoch (empty for runs trained before it was measured); the running one "
              "is the last epoch's average over its augmented batches in train mode while the weights still moved, "
              "and is what the dashed curves draw for every epoch.")


def summary_table(runs: list[tuple[str, Checkpoint]], recipe: bool = False) -> pd.DataFrame:
    """One row per run; with ``recipe`` its hyperparameters side by side (learning rate, schedule,
    batch, weight decay, seed) and where it was made."""
    rows = []
    for label, ck in runs:
        f, r = ck.meta.final, ck.meta.recipe
        row = {"model": label, "data": data_name(ck), "depth": ck.spec.depth,
               "shortcuts": "yes" if ck.spec.residual else "no", "epochs": len(ck.meta.history),
               CLEAN_TRAIN: error(f, "train_acc_clean"), RUNNING_TRAIN: error(f, "train_acc"),
               "test error %": error(f, "test_acc"),
               "seconds": seconds_text(ck), "status": ck.meta.status_text}
        if recipe:
            row.update({"lr": r.lr if r else None, "schedule": r.schedule if r else "—",
                        "batch": r.batch_size if r else None, "weight decay": r.weight_decay if r else None,
                        "seed": r.seed if r else None, "precision": precision_text(r) if r else "—",
                        "made on": ck.meta.origin})
        rows.append(row)
    return pd.DataFrame(rows)


PUBLISHED = "published (Greydanus 2020)"
BASELINE_NAMES = {"human": "human expert"}
ACCURACY = "test accuracy %"


def baseline_table(shipped: dict[str, Checkpoint], trained: dict[str, Checkpoint]) -> pd.DataFrame:
    """MNIST-1D's published baselines beside the shipped 1-D nets and the runs trained here on it,
    one row each, best first: all are test accuracy on the same 1,000 test sequences (the mnist1d
    package's own split), so the numbers compare directly."""
    rows = [{"model": BASELINE_NAMES.get(name, name), "source": PUBLISHED, ACCURACY: round(100 * acc, 1)}
            for name, acc in MNIST1D_BASELINES.items()]
    for source, runs in (("shipped", shipped), ("trained here", trained)):
        rows += [{"model": label if ck.meta.status == "complete" else f"{label} ({ck.meta.status_text})",
                  "source": source, ACCURACY: round(100 * ck.meta.final.get("test_acc", float("nan")), 1)}
                 for label, ck in runs.items() if on_mnist1d(ck)]
    df = pd.DataFrame(rows)
    return df.sort_values(ACCURACY, ascending=False, kind="stable", ignore_index=True)


def mnist1d_comparison(shipped: dict[str, Checkpoint], trained: dict[str, Checkpoint]) -> None:
    st.subheader("MNIST-1D: published baselines and the nets here")
    df = baseline_table(shipped, trained)
    # the accuracy drawn as a bar in its cell: the table is the bar chart, labelled row by row
    bar = st.column_config.ProgressColumn(ACCURACY, format="%.1f", min_value=0, max_value=100)
    table(df, formats={ACCURACY: bar}, hide_index=True)
    cnn, human = (100 * MNIST1D_BASELINES[k] for k in ("CNN", "human"))
    st.caption(f"*{PUBLISHED}*: Greydanus (2020), *Scaling down deep learning* (arXiv:2011.14439), as the mnist1d "
               f"README tabulates them: a CNN reaches {cnn:.0f} %, a human expert {human:.0f} %. *shipped* and "
               "*trained here*: the nets of this app, tested on the same 1,000 test sequences of the package's "
               "own 4,000/1,000 split, so each row reads against every other.")
    if not any(on_mnist1d(ck) for ck in trained.values()):
        st.caption("No run of yours on MNIST-1D yet: train one above and it joins this table as *trained here*.")


def keep(label: str, ck: Checkpoint, gradients: pd.DataFrame | None = None) -> None:
    """Put a finished (or cancelled) run in the run store, with its gradient-flow records when it
    has them (also kept in the session, so they show even where the store cannot be written); a
    store that cannot be written is said."""
    if gradients is not None:
        st.session_state.setdefault("gradients", {})[label] = gradients
    try:
        run: StoredRun = cache.run_store().save_run(label, ck)
        if gradients is not None:
            cache.run_store().save_gradients(run.key, gradients)
    except LensError as exc:
        st.warning(f"{label} is kept for this session only: {exc}")


def gradient_records(label: str, ck: Checkpoint) -> pd.DataFrame | None:
    """A run's gradient-flow records: this session's, else the run store's (by the run's key, so a
    reload or a new tab finds them); None for a run trained without recording."""
    df = st.session_state.get("gradients", {}).get(label)
    if df is not None:
        return df
    try:
        return cache.run_store().gradients(config_key(run_config(ck)))
    except LensError:
        return None


def finish_interrupted_run() -> None:
    """A rerun (Cancel, or any widget) interrupts a training loop; keep what it finished."""
    active = st.session_state.pop("active_run", None)
    if active and active.get("model") is not None and active["history"]:
        model = active["model"].cpu().eval()
        meta = run_meta(active["data"], active["config"], history=active["history"], cancelled=True)
        ck = Checkpoint(model.spec, model, meta, False)
        st.session_state.setdefault("trained", {})[active["label"]] = ck
        rows = active.get("gradients")
        keep(active["label"], ck, gradflow.frame(rows) if rows else None)
        st.toast(f"{active['label']}: cancelled, {len(active['history'])} finished epochs kept")


def ratio_text(df: pd.DataFrame, kind: str) -> str:
    first = gradflow.depth_ratio(df, kind)
    last = gradflow.depth_ratio(df, kind, int(df["step"].max()))
    return f"{fmt_float(first)} → {fmt_float(last)}"


def gradient_flow(trained: dict[str, Checkpoint]) -> None:
    """The gradient-flow view of the runs that recorded it: a heatmap per run (one colour range for
    all, so a colour is one magnitude everywhere), the norms along the net at chosen steps, a CSV."""
    st.subheader("Gradient flow")
    records = {label: df for label, ck in trained.items()
               if (df := gradient_records(label, ck)) is not None and not df.empty}
    missing = [label for label in trained if label not in records]
    if missing:
        st.caption(f"No gradient-flow records (trained without recording): {', '.join(missing)}.")
    if not records:
        st.info("Train a net with *Record gradient flow* on to see how much gradient reaches each block.")
        return
    c = st.columns([1, 2])
    kind = c[0].radio("Gradient at", list(GRAD_KINDS), format_func=GRAD_KINDS.__getitem__, key="train_grad_kind",
                      horizontal=True)
    picks = c[1].multiselect("Runs", list(records), list(records)[:4], key="train_grad_runs")
    if not picks:
        return
    both = pd.concat([records[p].assign(run=p, residual=trained[p].spec.residual) for p in picks], ignore_index=True)
    shown = both[both["kind"] == kind]
    zrange = render.decade_range(shown["norm"])
    cols = st.columns(2)
    for i, label in enumerate(picks):
        render.show(render.gradient_heatmap(records[label], kind, label, zrange), key=f"grad_heat_{i}",
                    container=cols[i % 2])
    steps = sorted({int(s) for s in shown["step"]})
    chosen = st.multiselect("Steps to compare", steps, [steps[0], steps[-1]] if len(steps) > 1 else steps,
                            key="train_grad_steps", help="Step 0 is the first batch, at initialisation.")
    if chosen:
        render.show(render.gradient_lines(shown, chosen, kind), key="grad_lines")
    # a caption, not a table: the runs table stays the page's last one
    ratios = "; ".join(f"{p}: {ratio_text(records[p], kind)}" for p in picks)
    st.caption(f"First-block / last-block norm, first → last recorded step: {ratios}. Above 1, more gradient "
               "reaches the first block than the last.")
    st.caption("Input: the gradient of the batch's summed loss at each block's input, per image (L2), averaged "
               "over the batch. Parameters: the norm of the gradient the optimiser step uses. Records are kept "
               "in the run store with their run (and in this session), so a reload shows them again.")
    st.download_button("Download gradient records (CSV)", csv_bytes(both), file_name="gradient_flow.csv",
                       mime="text/csv", on_click="ignore", key="grad_csv")


@dataclass(frozen=True)
class Seeds:
    """The recorded grid's degradation experiment (:func:`analysis.studies.grid.degradation`)."""

    nets: pd.DataFrame
    contrasts: pd.DataFrame
    clean: bool  # its train errors are the clean ones (else the running ones, from before the clean pass)
    recipe: dict[str, Any]
    name: str


def recorded_seeds() -> Seeds | LensError | None:
    """The residual and plain rows of the recorded variants grid under one recipe, the file's error,
    or None when there is no file or it lacks either net at two depths."""
    path = cache.variants_results_file()
    if not path.is_file():
        return None
    try:
        results, _, meta = cache.grid_results(str(path), path.stat().st_mtime)
    except LensError as exc:
        return exc
    nets, contrasts = grid.degradation(results)
    if nets.empty:
        return None
    picked = results[results["variant"].isin(list(grid.DEGRADATION_NETS.values()))
                     & (results["status"] == "complete")]
    clean = bool(len(picked)) and bool(picked["train_clean"].fillna(False).astype(bool).all())
    return Seeds(nets, contrasts, clean, dict(meta.get("grid", {}).get("recipe", {})), path.name)


def show_seeds(found: Seeds) -> None:
    """The degradation experiment over seeds under one recipe, with intervals and paired tests."""
    st.subheader("The same experiment over seeds, one recipe")
    recipe, runs = found.recipe, sorted({int(n) for n in found.nets["runs"]})
    seeds = " to ".join(str(n) for n in (runs[0], runs[-1]) if runs) if len(runs) > 1 else str(runs[0])
    epochs = recipe.get("epochs")
    st.caption(f"The residual and plain rows of the recorded variants grid ({found.name}; the Variants lab shows "
               f"all of it): {seeds} finished seeds per net and depth, every net trained with one recipe "
               f"({epochs} epoch{'s' * (epochs != 1)}, batch {recipe.get('batch_size')}, lr {recipe.get('lr')}, "
               f"{recipe.get('warmup_epochs')} warm-up epochs at lr/10, {recipe.get('schedule')} schedule, "
               f"{recipe_precision(recipe)}). Whiskers: 95 % t-intervals over the seeds.")
    render.show(render.degradation_chart(found.nets, clean=found.clean), key="training_degradation_seeds")
    table(pd.DataFrame({"comparison": found.contrasts["what"], "error": found.contrasts["error"],
                        "reading": found.contrasts["reading"]}))
    st.caption("Differences in percentage points, paired by seed (runs of one seed share batch order and "
               "augmentation); a t-interval that excludes 0 is a difference; one that holds it is not a proof of "
               "none (its width says what the seeds could have found)."
               + ("" if found.clean else " Training errors: the running ones (the grid predates the clean pass)."))
    st.download_button("Download these nets and comparisons (CSV)",
                       csv_bytes(pd.concat([found.nets.assign(kind="net"), found.contrasts.assign(kind="comparison")])),
                       file_name="degradation_seeds.csv", mime="text/csv", on_click="ignore",
                       key="training_degradation_csv")


st.title("Training: the degradation problem")
st.caption("He et al. 2015, Fig. 1 and Fig. 6: a deeper *plain* net has higher training error than a "
           "shallower one, while a deeper *residual* net trains as well or better.")
finish_interrupted_run()

DATA_LABELS = {"digits": "embedded digits", "mnist1d": "MNIST-1D (embedded, 1-D sequences)",
               "cifar10": "CIFAR-10 (local path)", "imagefolder": "ImageFolder (local path)"}
# The data chosen below decide which shipped nets open the page: the 1-D ones for MNIST-1D, else the
# digits' (read from the widget's state, which holds the choice of the previous run or the URL's)
one_d = st.session_state.get("train_data") == "mnist1d"
shipped_all = cache.shipped()
shipped = {n: c for n, c in shipped_all.items() if on_mnist1d(c) == one_d}
seeds_view = None if one_d else recorded_seeds()
if shipped:
    # a subheader, as over *Your runs*: the legend says which line is which, so the chart needs no title
    st.subheader("Shipped runs")
    if one_d:
        st.caption("CIFAR-style nets in 1-D (32/64/128 filters, 3-sample convolutions, option A) trained on MNIST-1D "
                   "with the command line (recipe in checkpoints/README.md); their test accuracy is set beside the "
                   "published baselines below. No gradient-flow records (none are made up): train a net below to "
                   "see its gradient flow.")
    else:
        st.caption("CIFAR-style nets (16/32/64 filters, option A) trained on the embedded digits, upsampled to "
                   "16×16. They were trained before gradient recording existed, so they have no gradient-flow "
                   "records (none are made up): train a net below to see its gradient flow.")
    runs = [run_record(n, c) for n, c in shipped.items()]
    render.show(render.training_curves(runs), key="training_shipped")
    table(summary_table(list(shipped.items())), formats=ERROR_FORMATS, hide_index=True)
    st.caption(TRAIN_NOTE + (" Each shipped net is one run (seed 0)." if one_d else
                             " Each shipped net is one run (seed 0), and the pairs' recipes differ (the 20-layer nets "
                             "at lr 0.1, the 56-layer ones at lr 0.05)"
                             + (": the seeds below share one recipe." if isinstance(seeds_view, Seeds) else ".")))
else:
    what = "MNIST-1D checkpoints (mnist1d_*.pt)" if one_d else "digits checkpoints"
    st.warning(f"No shipped {what} found in checkpoints/; train some below or with `python -m analysis train`.")
if isinstance(seeds_view, LensError):
    widgets.error_box(seeds_view)
elif seeds_view is not None:
    show_seeds(seeds_view)

st.subheader("Run it yourself")
# the two multiselects get half a row each: in a quarter of an 820-px page their chips showed only "×"
nets_row = st.columns(2)
depths = nets_row[0].multiselect("Depths (6n+2)", DEPTHS, [20, 56], key="train_depths")
kinds = nets_row[1].multiselect("Nets", ["residual", "plain"], ["residual", "plain"], key="train_kinds")
run_row = st.columns(2)
epochs = run_row[0].number_input("Epochs (1–200)", 1, 200, 10, key="train_epochs")
source = run_row[1].selectbox("Data", list(DATA_LABELS), key="train_data", format_func=DATA_LABELS.__getitem__)
path: str | None = None
if source == "digits":
    size = st.select_slider("Digits size (pixels)", [8, 16, 32], 16, key="train_size")
elif source == "mnist1d":
    size = 40  # the one length the package's default template makes
    st.caption("MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test sequences of 40 samples, 10 classes, "
               "generated on this machine by the mnist1d package (nothing downloaded). The depths train the 1-D "
               "twins of the CIFAR-style nets, `resnet1d_<depth>` (32/64/128 filters).")
else:
    d1, d2 = st.columns([3, 1])
    path = d1.text_input("Local dataset path", key="train_path",
                         help="cifar-10-batches-py (or its parent), or an ImageFolder root; nothing is downloaded")
    size = 32 if source == "cifar10" else d2.number_input("Image size (8–256 px)", 8, 256, 32, key="train_img_size")
c = st.columns(4)
lr = c[0].number_input("Learning rate (0.001–1)", 0.001, 1.0, 0.1, format="%.3f", key="train_lr")
schedule = c[1].selectbox("Schedule", SCHEDULES, key="train_schedule")
seed = c[2].number_input("Seed (0–10,000)", 0, 10_000, 0, key="train_seed")
# only what this machine has: a GPU is offered when PyTorch sees one
has_cuda = torch.cuda.is_available()
device = c[3].selectbox("Device", ["cpu", "cuda"] if has_cuda else ["cpu"], key="train_device")
if not has_cuda:
    c[3].caption("CPU only: PyTorch finds no CUDA GPU on this machine.")
DEFAULT = TrainConfig()
c = st.columns(4)
batch = c[0].number_input("Batch size (1–1,024)", 1, 1024, DEFAULT.batch_size, key="train_batch")
decay = c[1].number_input("Weight decay (0–0.1)", 0.0, 0.1, DEFAULT.weight_decay, format="%.2e", step=1e-4,
                          key="train_decay", help="He et al. 2015 (Sec. 3.4) use 0.0001.")
augment = c[2].checkbox("Augment", DEFAULT.augment, key="train_augment",
                        help="Random shifts (and flips for images where they keep the class), as the paper's "
                             "CIFAR recipe: see `analysis/experiments/train.py`.")
# MNIST-1D trains 1-D nets, which have no channels-last layout: the box is offered for images only
precision, channels_last = widgets.precision_widgets(c[3], "train", dims=1 if source == "mnist1d" else 2)
c = st.columns(4)
record = c[0].checkbox("Record gradient flow", True, key="train_grad_record",
                       help="The gradient norm reaching each block's input and each block's parameters, every k "
                            "steps; it reads the gradients only, so the run trains exactly as without it.")
grad_every = c[1].number_input("every k steps (1–1,000)", 1, 1000, GRAD_EVERY, key="train_grad_every",
                               disabled=not record,
                               help="An epoch is 22 steps on the digits and 63 on MNIST-1D: k = 5 records 44 or 126 "
                                    "snapshots in 10 epochs.")

go = st.button("Train", type="primary", key="train_go", disabled=not (depths and kinds))
if go:
    try:
        data = cache.dataset(source, path or None, int(size), 0)
        config = TrainConfig(epochs=int(epochs), lr=float(lr), schedule=schedule, seed=int(seed), device=device,
                             batch_size=int(batch), weight_decay=float(decay), augment=bool(augment),
                             amp=PRECISIONS[precision], channels_last=channels_last)
        check_device(device)
    except LensError as exc:
        st.error(str(exc))
    else:
        # placeholders: the button and the bar are there while training runs, and gone when it ends
        cancel_slot, bar_slot, curve_slot = st.empty(), st.empty(), st.empty()
        cancel_slot.button("Cancel", key="train_cancel", help="Stops after the current batch; finished epochs are kept.")
        jobs = [(d, k) for d in sorted(depths) for k in kinds]
        bar = bar_slot.progress(0.0, text="starting…")
        finished = 0
        this_press: dict[str, Checkpoint] = {}  # the runs this press has finished, drawn in the live curve
        for i, (d, kind) in enumerate(jobs):
            # a 1-D net for sequences, the CIFAR-style 2-D net for images; both are 6n+2 deep
            family = "resnet1d_" if data.dims == 1 else "cifar_resnet"
            spec = get_spec(f"{family}{d}", plain=kind == "plain").replace(
                in_channels=data.channels, num_classes=data.num_classes, input_size=data.size)
            # what differs from the default recipe is in the label, so two recipes never share one
            extra = "".join(f", {name} {value}" for name, value, default in (
                ("batch", config.batch_size, DEFAULT.batch_size), ("wd", f"{config.weight_decay:g}",
                                                                    f"{DEFAULT.weight_decay:g}"),
                ("augment", "off" if not config.augment else "on", "on"),
                ("in", precision_text(config), precision_text(DEFAULT))) if value != default)
            label = f"{spec.name} ({epochs} ep, lr {lr}, seed {seed}{extra})"
            active: dict[str, Any] = {"label": label, "history": [], "model": None, "data": data, "config": config,
                                      "gradients": []}
            st.session_state["active_run"] = active

            def progress(p: Progress, i: int = i, label: str = label, active: dict = active,
                         residual: bool = spec.residual, depth: int = spec.depth) -> None:
                active["model"], active["history"], active["gradients"] = p.model, list(p.history), p.gradients
                frac = (i + p.fraction) / len(jobs)
                if p.phase == "batch" and int(1000 * frac) == active.get("permille"):
                    return  # redraw at most 1000 times per run
                active["permille"] = int(1000 * frac)
                last = p.history[-1] if p.history else None
                extra = f" · test acc {last['test_acc']:.3f}" if last else ""
                bar.progress(min(frac, 1.0), text=f"{label}: epoch {p.epoch}/{p.epochs}, loss {p.loss:.3f}{extra}")
                if len(p.history) != active.get("drawn_epochs"):  # a new epoch: the live curve grows
                    active["drawn_epochs"] = len(p.history)
                    live = [run_record(n, c) for n, c in this_press.items()]
                    live.append({"label": label, "depth": depth, "residual": residual,
                                 "history": list(p.history)})
                    render.show(render.training_curves(live, title="While training"),
                                key=f"training_live_{i}_{len(p.history)}", container=curve_slot)

            try:
                ck = train_checkpoint(spec, data, config, progress, grad_every=int(grad_every) if record else 0)
            except LensError as exc:  # e.g. the loss diverged: say so, keep the runs that finished
                st.session_state.pop("active_run", None)
                st.error(f"{label}: {exc}")
                break
            st.session_state.pop("active_run", None)
            st.session_state.setdefault("trained", {})[label] = ck
            keep(label, ck, gradflow.frame(active["gradients"]) if record else None)
            this_press[label] = ck
            finished += 1
        cancel_slot.empty()
        bar_slot.empty()
        curve_slot.empty()
        if finished:
            st.success(f"Trained {finished} of {len(jobs)} net{'s' * (len(jobs) != 1)}: see *Your runs* below.")

trained: dict[str, Checkpoint] = {**cache.stored_runs(), **st.session_state.get("trained", {})}
if source == "mnist1d":
    mnist1d_comparison({n: c for n, c in shipped_all.items() if on_mnist1d(c)}, trained)
if trained:
    st.subheader("Your runs")
    st.caption(f"Kept in the run store at `{default_home()}` (set RESNET_LENS_HOME to move it), so a "
               "reload, a new tab or a server restart shows them again; delete that folder or use *Forget* below.")
    # runs of different data (and pages) on one set of axes read as one experiment: filtered, by
    # default to the data chosen in the form above
    by_data = sorted({data_name(ck) for ck in trained.values()})
    form_data = {"digits": f"digits{size}", "mnist1d": "mnist1d"}.get(source)
    f = st.columns(2)
    data_pick = f[0].selectbox("Runs on", ["all data", *by_data],
                               index=1 + by_data.index(form_data) if form_data in by_data else 0,
                               key=f"train_runs_data_{source}", help="The data the runs were trained on.")
    origins = sorted({ck.meta.origin for ck in trained.values()})
    # what is remembered is what the user switched off: an origin seen for the first time (a run just
    # trained here, after only grid runs were stored) is shown, never hidden by an older selection
    before = st.session_state.get("train_runs_origin")
    known = st.session_state.get("train_runs_known", origins)  # a link's choice: every other origin is off
    off = [] if before is None else [o for o in known if o not in before]
    st.session_state["train_runs_origin"] = [o for o in origins if o not in off]
    st.session_state["train_runs_known"] = origins
    made = f[1].pills("Made on", origins, selection_mode="multi", key="train_runs_origin",
                      help="The Training page, a grid (Variants lab or `python -m analysis grid`), the Transfer "
                           "page, or the command line.")
    shown_runs = {n: ck for n, ck in trained.items()
                  if data_pick in ("all data", data_name(ck)) and ck.meta.origin in (made or [])}
    if not shown_runs:
        st.info("No run matches these filters.")
    else:
        view = st.columns([1, 2])
        log_y = view[0].toggle("Log-scale error", key="train_runs_log", help="Small differences between good "
                                                                           "runs show on a logarithmic axis.")
        smooth = view[1].slider("Smoothing (0–0.95)", 0.0, 0.95, 0.0, 0.05, key="train_runs_smooth",
                                help="An exponential moving average, as TensorBoard's: each point is this share "
                                     "of the previous smoothed point plus the rest of its own value.")
        render.show(render.training_curves([run_record(n, c) for n, c in shown_runs.items()], log_y=log_y,
                                           smooth=smooth), key="training_mine")
        table(summary_table(list(shown_runs.items()), recipe=True), formats=RECIPE_FORMATS, hide_index=True)
        st.caption(TRAIN_NOTE)
    st.caption("These nets are also available on the other pages under *Checkpoint → trained here*.")
    pick = st.selectbox("Download a checkpoint", list(trained), key="train_download_pick")
    # serialised once per run and kept with it (ui/cache.py): bytes, never a deferred callable
    st.download_button("Download .pt", cache.checkpoint_file(pick, trained[pick]),
                       file_name=cache.download_name(pick, ".pt"), mime="application/octet-stream",
                       on_click="ignore", key="train_download")
    try:
        stored = cache.run_store().find(trained[pick])
    except LensError as exc:
        st.warning(f"The run store cannot be used: {exc}")
        stored = None
    if stored is not None and st.button(f"Forget {pick}", key="train_forget",
                                        help="Deletes the run, its sweep results and its gradient records from the run store."):
        cache.run_store().delete_run(stored.key)
        st.session_state.get("trained", {}).pop(pick, None)
        st.session_state.get("gradients", {}).pop(pick, None)
        st.rerun()
    gradient_flow(trained)
