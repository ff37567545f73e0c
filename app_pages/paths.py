"""Path ensemble: unroll a residual net into its 2^n paths and measure which paths carry the gradient."""

from __future__ import annotations

import math
import time
from dataclasses import astuple, dataclass
from typing import Literal

import pandas as pd
import streamlit as st

from analysis.arch.reference import VEIT_EFFECTIVE_PATHS
from analysis.arch.specs import MODELS
from analysis.core.errors import DatasetError, LensError
from analysis.core.reporting import csv_bytes
from analysis.data.data import Dataset
from analysis.experiments import lesion, paths, programlesion
from analysis.experiments.chain import ProgramChain
from analysis.store import storethrough
from analysis.store.checkpoints import Checkpoint
from analysis.store.runstore import RunStore, net_key
from ui import cache, render, widgets
from ui.fmt import fmt_count, fmt_int
from ui.widgets import (
    Metric,
    Picked,
    PickedProgram,
    checkpoint_picker,
    error_box,
    metric_row,
    progress_reporter,
    table,
)

st.title("Path ensemble")
st.caption("Veit, Wilber & Belongie 2016: x₍ᵢ₊₁₎ = xᵢ + fᵢ(xᵢ) unrolls into 2ⁿ paths. Their lengths are "
           "binomial, and the gradient comes mostly from the short ones.")

# ------------------------------------------------------------------ 1. the unrolled view
st.subheader("1 · The unrolled view")
c1, c2 = st.columns([1, 2])
n = c1.slider("Blocks to unroll (n)", 1, 6, 3, key="paths_n")
all_paths = paths.enumerate_paths(n)
labels = [paths.path_label(p) for p in all_paths]
choice = c1.selectbox(f"Highlight one of the {2 ** n} paths", range(len(all_paths)),
                      format_func=lambda i: f"length {sum(all_paths[i])}: {labels[i]}", key="paths_pick")
chosen = all_paths[choice]
table(pd.DataFrame({"path": labels, "length": [sum(p) for p in all_paths]}), container=c1, hide_index=True,
      height=220)
# above the graph it draws, not in the narrow left column, where its label was cut to '…' at 820 px
metric_row([Metric("Path length (residual branches passed)", fmt_int(sum(chosen)))], container=c2)
render.show(render.unrolled(paths.unrolled_graph(n), paths.path_nodes(chosen)), key="paths_graph", container=c2)
with st.expander("The algebra", expanded=True):
    for line in paths.algebra(n):
        st.latex(line)

# ------------------------------------------------------------------ 2. path-length distribution
st.subheader("2 · Path-length distribution")
c1, c2 = st.columns([1, 2])
net = c1.selectbox("For the net", [m for m in MODELS], index=list(MODELS).index("cifar_resnet110"),
                   key="paths_net")
blocks = MODELS[net].num_blocks
override = c1.slider("…or any number of residual blocks", 1, 1000, blocks, key=f"paths_blocks_{net}")
dist = cache.length_distribution(override)
lo, hi = c1.slider("Length range", 0, override, (max(0, override // 2 - int(math.sqrt(override))),
                                                 min(override, override // 2 + int(math.sqrt(override)))),
                   key=f"paths_range_{override}")
share = dist.share(lo, hi)
# up to 20 digits the metric is the exact count; longer ones (2^67 and up; 2^1000 has 302 digits) are
# shortened, and the help gives the count in full, where a caption printing it wrapped over many lines
metric_row([
    Metric("Paths", fmt_count(dist.total), f"2^{override} = {fmt_int(dist.total)} paths."),
    Metric("Mean length", f"{dist.mean:g}"),
    Metric("Std of length", f"{dist.std:.3f}"),
    Metric(f"Share with length {lo}–{hi}", f"{100 * float(share):.2f} %"),
])
frame = dist.frame()
render.show(render.length_distribution(frame, (lo, hi)), key="paths_dist", container=c2)
st.download_button("Download the distribution (CSV, exact counts)", csv_bytes(frame),
                   file_name=f"path_lengths_n{override}.csv", mime="text/csv", on_click="ignore", key="paths_dist_csv")

# ------------------------------------------------------------------ 3. gradient by path length
st.subheader("3 · Gradient by path length")
st.caption("Forward a batch through the whole net; in the backward pass send the gradient through the "
           "residual branch of k sampled blocks and through the skip of the other n−k; record the gradient "
           "norm at the input (Veit et al. 2016, Sec. 5). Total per length = C(n, k) × mean magnitude.")


@dataclass(frozen=True)
class Found:
    """A measurement to show and where it comes from: this session, the run store (measured in an
    earlier session, tab or server, at ``created``) or the results shipped beside the checkpoint."""

    frame: pd.DataFrame
    source: Literal["session", "store", "shipped"]
    created: float | None = None

    def describe(self) -> str:
        if self.source == "session":
            return "measured in this session"
        if self.source == "store":
            return f"stored, measured {when(self.created or 0.0)}"
        return "stored with the checkpoint"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def key_of(net: Picked) -> str:
    """The net's run-store key (its weights' hash and spec, whatever the label), computed once per
    session and checkpoint: a net retrained under the same label is another checkpoint, another key."""
    kept: dict[str, tuple[Checkpoint, str]] = st.session_state.setdefault("paths_net_keys", {})
    hit = kept.get(net.label)
    if hit is None or hit[0] is not net.checkpoint:
        hit = kept[net.label] = (net.checkpoint, net_key(net.checkpoint))
    return hit[1]


def open_store() -> RunStore | None:
    return widgets.open_store("Path measurements are kept for this session only")


# a program without residual units (the shipped transformers' plain twins) is told as a plain checkpoint is
PLAIN_PROGRAM = ("is a plain net (no residual units forming one chain): it has a single path; pick a residual net "
                 "to decompose the gradient.")
picked = checkpoint_picker("paths", container=st, programs=True, plain_program=PLAIN_PROGRAM)
if picked is not None:
    label = picked.label
    # what is measured: a checkpoint's ResNet (n: its residual blocks), or a program's residual units (two per
    # transformer block; the picker gives only programs that have them)
    ck = picked.checkpoint if isinstance(picked, Picked) else None
    trained: paths.PathNet = picked.checkpoint.model if isinstance(picked, Picked) else picked.chain
    n_blocks = picked.checkpoint.spec.num_blocks if isinstance(picked, Picked) else picked.chain.n
    noun = "block" if ck is not None else "unit"
    if ck is not None and not ck.spec.residual:
        st.info(f"{label} is a plain net: it has exactly one path, of length {ck.spec.num_blocks}; pick a "
                "residual net to decompose the gradient.")
    else:
        c = st.columns(5)
        samples = c[0].number_input("Samples per length (1–100)", 1, 100, 10, key="paths_samples")
        batch = c[1].number_input("Batch size (8–512)", 8, 512, 64, key="paths_batch")
        seed = c[2].number_input("Seed (0–10,000)", 0, 10_000, 0, key="paths_seed",
                                 help="Which random sets of blocks are sampled.")
        mass = c[3].slider("Effective range holds", 0.5, 0.99, 0.9, key="paths_mass")
        if ck is not None:
            compare_init = c[4].checkbox("Also at initialisation", value=True, key="paths_init")
        else:
            compare_init = False
            c[4].caption("No comparison at initialisation: a program file holds its trained weights only, "
                         "with no initialiser to draw fresh ones from.")
        settings = paths.MeasureSettings(int(samples), int(batch), int(seed))
        # fp32 or bf16 (offered where the CPU has bf16 units): part of every key below, so a bf16
        # measurement never answers for fp32, and the fp32 results shipped with a net show for fp32 only
        precision = widgets.eval_precision(st, "paths")
        in_precision = "" if precision == "fp32" else f", in {precision}"
        nets = [net for net in paths.NETS if net == "trained" or compare_init]
        # this session's measurements, by (label, net, settings); beside each, the net key and test data
        # it was measured on (a label can later name other weights: a run retrained under it) and when
        results: dict = st.session_state.setdefault("paths_results", {})
        origin: dict = st.session_state.setdefault("paths_origin", {})
        last: dict = st.session_state.setdefault("paths_last", {})
        last_key = label if precision == "fp32" else (label, precision)

        def skey(net: str, s: paths.MeasureSettings) -> tuple:
            """This session's key of a measurement; a bf16 one's ends with its precision (fp32's is as it was)."""
            return (label, net, s) + (() if precision == "fp32" else (precision,))

        stopped = st.session_state.pop("paths_active", None)  # left behind by a measurement a rerun interrupted
        if stopped is not None:
            st.warning(f"The measurement of {stopped[0]} ({stopped[1].describe()}) was stopped before it finished "
                       "(Cancel, or another click while it ran); nothing of it was kept.")
        try:  # measured in fp32: never shown for another precision
            shipped = (cache.stored_path_results(picked.name, program=ck is None)
                       if picked.origin == "shipped" and precision == "fp32" else {})
        except LensError as exc:
            error_box(exc)
            shipped = {}
        # stored results can still be shown without data; Measure says it has none
        data = (widgets.evaluation_data(ck, label, "paths", verb="measured") if ck is not None
                else widgets.program_data(picked, "paths", verb="measured") if isinstance(picked, PickedProgram)
                else None)
        if data is not None:
            try:  # a 1-D net and images (or the reverse), a program's other shape: said here, before Measure
                if ck is not None:
                    lesion.check_data(ck.spec, data)
                elif isinstance(trained, ProgramChain):
                    programlesion.check_fits(trained, data, label)
            except LensError as exc:
                error_box(exc)
                st.stop()  # nothing below can be measured or looked up on data the net cannot take
        # without the test data there is nothing to key a stored measurement by (nor to measure on)
        run_store = open_store() if data is not None else None
        net_id = key_of(picked) if isinstance(picked, Picked) else picked.key  # a program's: its file's sha256

        warned: set[str] = set()

        def unreadable(exc: LensError) -> None:
            """Say once per run (lookups repeat for every candidate setting) that the store failed."""
            if str(exc) not in warned:
                warned.add(str(exc))
                st.warning(f"The run store cannot be read: {exc}")

        def identity(s: paths.MeasureSettings) -> tuple[str, dict | None]:
            return net_id, None if data is None else paths.store_settings(s, data, precision)

        def lookup(net: str, s: paths.MeasureSettings) -> Found | None:
            """This session's measurement of this net with these settings, else the run store's, else
            the one shipped beside the checkpoint, else None."""
            key = skey(net, s)
            if key in results and key in origin and origin[key][0] == identity(s):
                return Found(results[key], "session", origin[key][1])
            if run_store is not None and data is not None:
                try:
                    hit = storethrough.lookup(run_store, net_id, paths.STORE_KINDS[net],
                                              paths.store_settings(s, data, precision))
                except LensError as exc:
                    unreadable(exc)
                    hit = None
                if hit is not None:
                    return Found(hit.frame, "store", hit.created)
            if (net, s) in shipped:
                return Found(shipped[(net, s)], "shipped")
            return None

        def stored_settings() -> list[paths.MeasureSettings]:
            """The settings this net was measured with (trained) in the run store on this test data, newest first."""
            if run_store is None or data is None:
                return []
            try:
                sweeps = run_store.sweeps_of(net_id)
            except LensError as exc:
                unreadable(exc)
                return []
            here = paths.data_identity(paths.store_settings(settings, data, precision))
            out = []
            for sw in reversed(sweeps):
                if sw.kind == paths.STORE_KINDS["trained"] and paths.data_identity(sw.settings) == here:
                    try:
                        out.append(paths.settings_of(sw.settings))
                    except LensError:  # a row written by another version: not offered
                        continue
            return out

        if st.button("Measure", type="primary", key="paths_run",
                     help="Measure with the settings above (trained net, and at initialisation if ticked)."):
            st.session_state["paths_active"] = (label, settings)
            # placeholders: the button and the bar are there while it measures, and gone when it ends
            cancel_slot, bar_slot = st.empty(), st.empty()
            cancel_slot.button("Cancel", key="paths_cancel", help="Stops the measurement; nothing of it is kept.")

            def job(net: str, data: Dataset) -> storethrough.Job:
                """One net's measurement for the library's store-through runner, keyed as lookup() finds it."""

                def compute(progress: storethrough.ProgressFn | None) -> pd.DataFrame:
                    model = paths.initialised(ck.model) if net == "initialisation" and ck is not None else trained
                    return paths.measure(model, data.x_test, data.y_test, settings, progress=progress,
                                         precision=precision)

                return storethrough.Job(net_id, paths.STORE_KINDS[net], paths.store_settings(settings, data, precision),
                                        compute, label=net)

            def start(j: storethrough.Job) -> storethrough.ProgressFn:
                """Each net's own bar, drawn as its measurement starts."""
                return progress_reporter(bar_slot.progress(0.0, text=f"{j.label}: measuring…"), f"{j.label}: paths")

            try:
                if data is None:
                    # this page asks for the data itself (widgets.evaluation_data, as the Lesion lab does)
                    raise DatasetError(f"{label} has no test data yet: choose the data it is measured on, and give "
                                       "its local path, in the sidebar")
                # Measure measures again (refresh): what is stored for these settings is replaced. The
                # runner stores only when every net finished: a cancel or an error leaves nothing partial
                done = storethrough.get_or_run_all(run_store, [job(net, data) for net in nets], on_start=start,
                                                   refresh=True)
            except LensError as exc:
                error_box(exc)
            else:
                for net, outcome in zip(nets, done, strict=True):
                    results[skey(net, settings)] = outcome.frame
                    origin[skey(net, settings)] = (identity(settings), outcome.created)
                    if outcome.note is not None:
                        st.warning(f"The {net} measurement of {label} is kept for this session only: {outcome.note}")
                last[last_key] = settings
            finally:  # finished or refused: neither the button nor the bar stays on screen
                cancel_slot.empty()
                bar_slot.empty()
            st.session_state.pop("paths_active", None)

        # the settings above if measured (here, in the run store, or shipped with the checkpoint); else
        # the latest measured here, the run store's newest, the shipped ones (their defaults first)
        shipped_settings = sorted({s for _, s in shipped}, key=lambda s: (s != paths.MeasureSettings(), astuple(s)))
        candidates = [settings, last.get(last_key), *stored_settings(), *shipped_settings]
        shown = next((s for s in candidates if s is not None and lookup("trained", s)), None)
        if shown is None:
            st.info(f"{label} has not been measured with {settings.describe()}{in_precision}: press **Measure** (the "
                    f"{n_blocks}-{noun} net takes a while; a progress bar and a Cancel button show).")
        else:
            if shown != settings:
                st.info(f"Showing the results for {shown.describe()}: the settings above "
                        f"({settings.describe()}) have not been measured — press **Measure** to measure them.")
            found = {net: hit for net in nets if (hit := lookup(net, shown)) is not None}
            sources = {hit.source for hit in found.values()}
            if sources == {"shipped"}:
                st.caption(f"Stored results: measured once with `tools/make_path_results.py` and shipped beside "
                           f"the checkpoint ({shown.describe()}). **Measure** measures again here.")
            elif sources == {"session"}:
                st.caption(f"Measured in this session ({shown.describe()}{in_precision}).")
            elif sources == {"store"}:
                st.caption(f"Stored results, shown without measuring ({shown.describe()}{in_precision}) — "
                           + "; ".join(f"{net}: {hit.describe()}" for net, hit in found.items()) + ".")
            else:
                st.caption(" · ".join(f"{net}: {hit.describe()}" for net, hit in found.items())
                           + f" ({shown.describe()}{in_precision}).")
            if precision != "fp32":  # beside bf16 numbers: how many predictions bf16 changes on this net, measured
                try:
                    st.caption(cache.bf16_sentence(picked.name if picked.origin == "shipped" else None,
                                                   program=ck is None))
                except LensError as exc:
                    st.warning(f"The measured bf16 counts are not shown: {exc}")
            if compare_init and "initialisation" not in found:
                st.caption("Press **Measure** to add the net at initialisation.")
            frames = [hit.frame.assign(net=net) for net, hit in found.items()]
            res = pd.concat(frames, ignore_index=True)
            lo_k, hi_k = paths.effective_range(frames[0], mass)
            metric_row([
                Metric(f"Residual {noun}s n", fmt_int(n_blocks)),
                Metric(f"Effective paths ({mass:.0%} of total gradient)", f"{lo_k}–{hi_k}"),
                Metric("Paper, ResNet-110 (54 blocks)", f"{VEIT_EFFECTIVE_PATHS[0]}–{VEIT_EFFECTIVE_PATHS[1]}"),
            ])
            render.show(render.gradient_by_length(res, (lo_k, hi_k)), key="paths_grad")
            # the exact share of the net's own 2^n paths (n its blocks or units) that lie in the effective range
            among = cache.length_distribution(n_blocks).share(lo_k, hi_k)
            st.caption(f"Effective range on the trained net: lengths {lo_k}–{hi_k} out of 0–{n_blocks} "
                       f"(mean path length {n_blocks / 2:g}), {100 * float(among):.2f} % of its 2^{n_blocks} paths. "
                       "Short paths are few but carry orders of magnitude more gradient each.")
            # gradient magnitudes span many decades (1e-23 to 6e-5 on the shipped 56-layer net): the app's
            # format writes those columns in scientific notation, where 0.00000000002 was shown. The total
            # relative to its peak lies in [0, 1]: three significant digits per value (0.5, 0.000123,
            # 1.2e-20), not the whole column in scientific notation because its tail is tiny. C(n, k) is
            # kept as exact decimal strings (it can exceed int64), shown with separators, right-aligned.
            table(res.assign(paths=[fmt_int(int(p)) for p in res["paths"]]), hide_index=True,
                  formats={"paths": st.column_config.TextColumn(alignment="right", help="C(n, k), exact"),
                           "total (rel.)": "%.3g", "log10 paths": "%.2f", "log10 total": "%.2f"})
            st.download_button("Download (CSV)", csv_bytes(res), file_name="gradient_by_length.csv",
                               mime="text/csv", on_click="ignore", key="paths_grad_csv")
