"""Lesion lab: delete and reorder blocks of a trained net and watch accuracy degrade (Veit et al. 2016)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from analysis.data.data import Dataset
from analysis.experiments import lesion, lesionreadings, lesionstore, programlesion
from analysis.store import storethrough
from analysis.store.checkpoints import Checkpoint, find_twin
from analysis.store.runstore import RunStore, net_key
from analysis.store.storethrough import Outcome
from ui import cache, render, widgets
from ui.widgets import (
    Metric,
    Picked,
    PickedProgram,
    available_checkpoints,
    checkpoint_picker,
    error_box,
    lazy_tabs,
    metric_row,
    program_labels,
    progress_reporter,
)

st.title("Lesion lab")
st.caption("Veit, Wilber & Belongie 2016 report that deleting a block of a trained residual net at test time "
           "barely changes its error, except at the downsampling blocks, while deleting a layer of a plain net "
           "drops it to chance. Deleting block *i* of a residual net removes its residual branch F and keeps the "
           "shortcut; a plain net has none, so its deleted block becomes a parameter-free pass-through. The "
           "sweeps below measure what happens on the net you pick.")

# left behind by a sweep that a rerun interrupted (Cancel, or any click while it ran); read before
# anything can stop the page, shown with the sweeps
stopped = st.session_state.pop("lesion_active", None)

# ------------------------------------------------------------------ sweeps
@dataclass(frozen=True, eq=False)
class Net:
    """What the sweeps run on: a checkpoint's ResNet or a program cut into units or layers, with its
    label, its run-store key and the stem of its CSV's file name; ``cut``: "layers" for a program cut
    into layers (its sweeps are kept apart from its units'), "" otherwise."""

    label: str
    key: str  # a checkpoint: its weights' hash (key_of); a program: the sha256 of its archive's bytes
    model: Any  # a ResNet, a ProgramChain or a LayerChain: lesion.run_sweep runs each
    residual: bool
    stem: str
    program: bool = False
    cut: str = ""
    keys: tuple[str, ...] = ()  # every run-store key of the net (a program's: one per cut), for Forget


def key_of(net: Picked) -> str:
    """The net's content key (sha256 of its weights: the run store's key, whatever the label),
    computed once per session and checkpoint; shipped files and bare state_dicts carry none."""
    kept: dict[str, tuple[Checkpoint, str]] = st.session_state.setdefault("lesion_net_keys", {})
    hit = kept.get(net.label)
    if hit is None or hit[0] is not net.checkpoint:
        hit = kept[net.label] = (net.checkpoint, net_key(net.checkpoint))
    return hit[1]


def net_of(net: Picked) -> Net:
    """A picked checkpoint as the sweeps see it (an upload's name without its extension names its CSV)."""
    return Net(net.label, key_of(net), net.checkpoint.model, net.checkpoint.spec.residual,
               Path(net.name).stem if net.origin == "uploaded" else net.name)


def program_key(key: str, cuts: programlesion.Cuts, granularity: str) -> str:
    """A program's run-store key at a granularity: its archive's sha256 for its units (the key its
    sweeps have always had), that and the layers' container for its layers."""
    return key if granularity == "units" else f"{key}|layers:{cuts.layers[0].rpartition('.')[0]}"


def program_net(p: PickedProgram, granularity: str) -> Net:
    """A picked program cut at ``granularity`` (one of p.cuts.chains) as the sweeps see it."""
    keys = tuple(program_key(p.key, p.cuts, g) for g in p.cuts.chains)
    return Net(p.label, program_key(p.key, p.cuts, granularity), p.cuts.chains[granularity], p.cuts.residual,
               Path(p.name).stem, program=True, cut="" if granularity == "units" else granularity, keys=keys)


def twin_of(picked: Picked) -> Picked | None:
    """The plain twin of a residual net (same layers, same data split) among the shipped and trained
    nets, found by spec, for side-by-side sweeps."""
    pool = {k: v for k, v in available_checkpoints().items() if v.checkpoint is not picked.checkpoint}
    key = find_twin(picked.checkpoint, {k: v.checkpoint for k, v in pool.items()})
    return pool[key] if key is not None else None


def open_store() -> RunStore | None:
    return widgets.open_store("Sweep results are kept for this session only")


def session_key(net: Net, experiment: str, settings: dict[str, Any]) -> tuple:
    """The session's key of a sweep; a bf16 sweep's ends with its precision (an fp32 key is as it was), so
    one never answers for the other."""
    return (net.label, data.name, data.split_seed, experiment, settings["samples"], settings["seed"]) + (
        (net.cut,) if net.cut else ()) + ((settings["precision"],) if "precision" in settings else ())


def remember(net: Net, experiment: str, settings: dict[str, Any], result: Outcome) -> None:
    """Keep a result for this session: the table under its session key, and beside it the weights
    and full settings it belongs to (a label can later name other weights: a run retrained under
    it; the same data name other images: another ImageFolder subset)."""
    skey = session_key(net, experiment, settings)
    st.session_state.setdefault("lesion_results", {})[skey] = result.frame
    st.session_state.setdefault("lesion_origin", {})[skey] = (net.key, settings, result.created,
                                                              result.from_store)


@dataclass(frozen=True)
class Shipped(Outcome):
    """A sweep stored beside a shipped program (tools/make_lesion_results.py), not measured here."""


def shipped_sweep(net: Net, experiment: str, settings: dict[str, Any]) -> Shipped | None:
    """The sweep stored beside a shipped program for these settings, at the net's cut and over its
    units, when the file stored is the net's (same sha256: an upload of other bytes under a shipped
    name finds nothing); a damaged stored file is said once and shows nothing."""
    if not net.program:
        return None
    try:
        stored = cache.stored_lesion_results(net.stem)
    except LensError as exc:
        st.warning(f"The lesion sweeps stored with {net.label} are not shown: {exc}")
        return None
    if stored is None or net.key.split("|")[0] != f"program-sha256:{stored.sha256}":
        return None
    frame = stored.find(net.cut or "units", experiment, settings, [u.name for u in lesion.infos_of(net.model)])
    return None if frame is None else Shipped(frame, 0.0, from_store=True)


def lookup(net: Net, experiment: str, settings: dict[str, Any], store: RunStore | None) -> Outcome | None:
    """This session's result for the net and settings, else the run store's, else the one stored
    beside a shipped program (:class:`Shipped`, never kept for the session: Run measures it anew),
    else None."""
    skey = session_key(net, experiment, settings)
    results: dict = st.session_state.setdefault("lesion_results", {})
    origin = st.session_state.setdefault("lesion_origin", {}).get(skey)
    if skey in results and origin is not None and origin[:2] == (net.key, settings):
        return Outcome(results[skey], origin[2], origin[3])
    try:
        result = storethrough.lookup(store, net.key, experiment, settings)
    except LensError as exc:
        st.warning(f"The run store cannot be read: {exc}")
        result = None
    if result is not None:
        remember(net, experiment, settings, result)
        return result
    return shipped_sweep(net, experiment, settings)


def measure(nets: list[Net], experiment: str, title: str, settings: dict[str, Any],
            store: RunStore | None) -> dict[str, Outcome]:
    """Sweep each net with a progress bar and a Cancel button, both cleared when it ends; the library's
    store-through runner (analysis.store.storethrough) takes what the store holds, computes the rest and
    stores it only when every net finished: nothing partial. Cancel (or any click) reruns the page,
    which interrupts the sweep; the marker set here then survives and the next run says so."""
    st.session_state["lesion_active"] = (nets[0].label, title, lesion.describe_settings(experiment, settings, data.dims))
    cancel_slot, bar_slot = st.empty(), st.empty()
    cancel_slot.button("Cancel", key=f"lesion_cancel_{experiment}", help="Stops the sweep; nothing of it is kept.")

    def job(net: Net) -> storethrough.Job:
        """One net's sweep for the library's store-through runner, keyed as lookup() finds it."""
        model = net.model
        return storethrough.Job(net.key, experiment, settings, label=f"{title} sweep on {net.label}",
                                compute=lambda progress: lesion.run_sweep(
                                    experiment, model, data.x_test, data.y_test, samples=settings["samples"],
                                    seed=settings["seed"], progress=progress, precision=precision))

    def start(j: storethrough.Job) -> storethrough.ProgressFn:
        """Each net's own bar, drawn as its sweep starts."""
        return progress_reporter(bar_slot.progress(0.0, text=f"{j.label}…"), j.label)

    out: dict[str, Outcome] = {}
    try:
        outcomes = storethrough.get_or_run_all(store, [job(net) for net in nets], on_start=start)
    except LensError as exc:  # the runner stored nothing: neither is anything kept for the session
        error_box(exc)
    else:
        out = {net.label: result for net, result in zip(nets, outcomes, strict=True)}
    # reached only when the sweeps ended or failed: an interrupting rerun raises through here, leaving the marker
    st.session_state.pop("lesion_active", None)
    cancel_slot.empty()
    bar_slot.empty()
    for net in nets:
        if (result := out.get(net.label)) is None:
            continue
        remember(net, experiment, settings, result)
        if result.note is not None:
            st.warning(f"The {title} sweep of {net.label} is kept for this session only: {result.note}")
    return out


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def provenance(found: dict[str, Outcome], describe: str) -> str:
    """Where the shown numbers come from, per net: the run store (and when), this session, or the
    file stored beside a shipped program."""
    if all(isinstance(r, Shipped) for r in found.values()):
        return (f"Stored results: measured once with `{lesionstore.MADE_BY}` and shipped beside the checkpoint "
                f"({describe}). **Run** measures again here.")
    parts = [f"{lab}: stored with the checkpoint" if isinstance(r, Shipped) else
             f"{lab}: {'stored, measured' if r.from_store else 'measured in this session,'} {when(r.created)}"
             for lab, r in found.items()]
    lead = ("Stored results, shown without running" if all(r.from_store for r in found.values()) else "Results")
    return f"{lead} ({describe}) — " + "; ".join(parts) + "."


def plans(nets: list[Net], experiment: str, samples: int,
          seed: int) -> tuple[list[Net], dict[str, tuple[str, ...]], dict[str, LensError]]:
    """The nets a sweep can run on, what each one's chain skipped (its plan's reasons, as the table's
    attrs["skipped"] holds them: a table read back from the run store has lost its attrs, and a plan
    is cheap) and why a net cannot run the sweep at all."""
    runnable: list[Net] = []
    skipped: dict[str, tuple[str, ...]] = {}
    refused: dict[str, LensError] = {}
    for net in nets:
        try:
            plan = lesion.plan_sweep(experiment, net.model, samples=samples, seed=seed)
        except LensError as exc:
            refused[net.label] = exc
            continue
        runnable.append(net)
        skipped[net.label] = plan.skipped
    return runnable, skipped, refused


def sweep_tab(experiment: str, title: str, caption: str, xlabel: str, main: Net, twin: Net | None,
              store: RunStore | None) -> None:
    """One sweep: its settings and a Run button; the chart, reading and CSV of whatever is measured
    for these settings (this session or the run store) show without pressing Run, which measures
    only what is missing. A net whose chain refuses every candidate of the sweep is not run (said
    under the chart), nor are the candidates it skips."""
    samples = seed = 0
    if experiment in lesion.RANDOM_SWEEPS:
        c = st.columns(2)
        per = "k" if experiment == "k" else "number of swaps"
        samples = int(c[0].number_input(f"Samples per {per} (1–50)", 1, 50, lesionstore.PAGE_SAMPLES, key=f"lesion_{experiment}_samples"))
        seed = int(c[1].number_input("Seed (0–10,000)", 0, 10_000, lesionstore.PAGE_SEED, key=f"lesion_{experiment}_seed"))
    st.caption(caption)
    try:
        settings = lesion.sweep_settings(experiment, data, samples=samples, seed=seed, precision=precision)
    except LensError as exc:
        error_box(exc)
        return
    nets, skipped, refused = plans([main] + ([twin] if twin else []), experiment, samples, seed)
    if main.label in refused:  # nothing of this sweep applies to the picked net
        error_box(refused[main.label])
        return
    pressed = st.button(f"Run the {title} sweep", key=f"lesion_run_{experiment}",
                        help="Measures the nets that have no stored result for these settings; a progress bar and a "
                             "Cancel button show while it runs.")
    found = {net.label: lookup(net, experiment, settings, store) for net in nets}
    if pressed:
        # a sweep shipped beside the program is measured anew: Run means measure
        missing = [net for net in nets if found[net.label] is None or isinstance(found[net.label], Shipped)]
        if missing:
            found.update(measure(missing, experiment, title, settings, store))
    shown = {lab: r for lab, r in found.items() if r is not None}
    describe = lesion.describe_settings(experiment, settings, data.dims)
    if main.label not in shown:
        st.info(f"{main.label} has no {title} sweep for {describe} yet: press **Run the {title} sweep**.")
        return
    st.caption(provenance(shown, describe))
    if bf16_note is not None:  # beside bf16 numbers: how many predictions bf16 changes on this net, measured
        st.caption(bf16_note)
    if twin is not None and twin.label not in shown and twin.label not in refused:
        st.caption(f"Press **Run the {title} sweep** to add the plain twin {twin.label} beside it.")
    residual = {net.label: net.residual for net in nets}
    df = pd.concat([r.frame.assign(net=lab, residual=residual[lab]) for lab, r in shown.items()], ignore_index=True)
    key = f"lesion_{experiment}_chart"
    if experiment == "single":
        render.show(render.single_sweep(df), key=key)
    elif experiment in lesionreadings.POSITION_SWEEPS:  # error after each change by position
        render.show(render.position_sweep(df, lesionreadings.MOVED[experiment], xlabel), key=key)
        gone = lesionreadings.skipped_caption({lab: skipped[lab] for lab in shown},
                                              {lab: str(exc) for lab, exc in refused.items()})
        if gone is not None:  # what was left out, and why, under the chart
            st.caption(gone)
    elif "k" in df.columns:  # the random sweeps: error against how many blocks are deleted or swapped
        render.show(render.k_sweep(df, "k", xlabel), key=key)
    # a program's units are named by its graph, so its rows say which is which; a kind the engine gains
    # before it has a chart shows its rows too
    if main.program or experiment not in ("single", "k", "reorder", *lesionreadings.POSITION_SWEEPS):
        widgets.table(df, key=f"lesion_{experiment}_table")
    # a reading computed from the numbers above, per net
    for net_label, part in df.groupby("net", sort=False):
        if experiment == "single":
            reading = lesion.single_reading(part, residual=residual[str(net_label)], num_classes=data.num_classes)
        elif experiment in lesionreadings.POSITION_SWEEPS:
            reading = lesionreadings.position_reading(part, experiment, len(data.y_test))
        else:
            continue
        st.markdown(f"**{net_label}**: {reading}")
    # the file names the picked net (an upload's name without its extension), and its cut
    stem = cache.download_name(main.stem + (f"_{main.cut}" if main.cut else ""), "")
    st.download_button("Download CSV", csv_bytes(df), file_name=f"lesion_{experiment}_{stem}.csv",
                       mime="text/csv", on_click="ignore", key=f"lesion_{experiment}_csv")


def forget(net_label: str, keys: tuple[str, ...]) -> None:
    """Forget the stored sweeps of one net, every cut of a program (button callback: runs before the
    page redraws)."""
    try:  # the Path ensemble's measurements stay
        count = sum(cache.run_store().delete_sweeps(key, lesion.SWEEP_KINDS) for key in keys)
    except LensError as exc:
        st.session_state["lesion_forgot"] = f"The stored sweeps of {net_label} could not be deleted: {exc}"
        return
    results: dict = st.session_state.get("lesion_results", {})
    for skey in [k for k in results if k[0] == net_label]:
        del results[skey]
        st.session_state.get("lesion_origin", {}).pop(skey, None)
    st.session_state["lesion_forgot"] = f"Forgot {count} stored sweep{'s' * (count != 1)} of {net_label}."

# tab title, the sweep's name in messages, caption, x axis; by kind (lesion.SWEEP_KINDS lists them)
SWEEP_TABS = {
    "single": ("Single-block deletion", "single-block", "Error after deleting each block in turn; the dotted lines "
               "are the intact errors; downsampling blocks are outlined.", "single-block"),
    "k": ("k-block deletion", "k-block", "Random subsets of the non-downsampling blocks; mean ± std over the "
          "samples.", "blocks deleted"),
    "reorder": ("Reordering", "reordering", "Swap k random pairs of blocks of the same shape (same stage, not "
                "downsampling).", "pairs swapped"),
    "swap": ("Swapping", "swap", "Each pair of adjacent blocks of one shape swapped, one pair at a time.", "pair"),
    "repeat": ("Repeating", "repeat", "Each block that keeps its input's shape run twice in place.", "block"),
    "parallel": ("Parallel", "parallel", "Each pair of adjacent blocks run side by side on one input: "
                 "y = h + F_i(h) + F_j(h).", "pair"),
}


def program_view(p: PickedProgram) -> Dataset:
    """A program's data (its own, or what the sidebar picks), checked to fit it; the page stops here
    until there is data that fits."""
    loaded: Dataset | None = widgets.program_data(p, "lesion")
    if loaded is None:
        st.stop()
    fitted: Dataset = loaded
    try:  # another input shape or number of classes: both sides named, not a traceback
        programlesion.check_fits(p.cuts.first, fitted, p.label)
    except LensError as exc:
        error_box(exc)
        st.stop()
    return fitted


GRANULARITY_HELP = ("Units: each residual unit (a transformer block's attention and its MLP apart), deleted by "
                    "removing its branch. Layers: each module of the program's outermost repeated container, "
                    "deleted by passing its input on unchanged; a plain twin has layers only.")


def granularity_of(p: PickedProgram) -> str:
    """How the sweeps cut the program: a choice where both its units and its layers apply, else the
    one that does, with one sentence why the other does not."""
    cuts = p.cuts
    names = {"units": f"Units ({len(cuts.chains['units'].units) if cuts.residual else 0})",
             "layers": f"Layers ({programlesion.layers_text(cuts.layers)})" if cuts.layers else "Layers"}
    offered = list(cuts.chains)
    if len(offered) > 1:
        return str(st.radio("Granularity", offered, format_func=names.__getitem__, horizontal=True,
                            key="lesion_granularity", help=GRANULARITY_HELP))
    (only,) = offered
    st.caption(f"{names[only]} only: {next(iter(cuts.refused.values()))}.")
    return only


def program_twin(p: PickedProgram) -> PickedProgram | None:
    """A shipped residual program's plain twin among the shipped programs (same architecture but the
    shortcuts, same data split: found by metadata), for side-by-side sweeps at layers granularity."""
    if p.origin != "shipped" or p.meta is None or not p.meta.residual:
        return None
    found: dict[str, PickedProgram] = {}
    for path in program_labels(available_checkpoints()).values():
        if Path(path).stem == p.name:
            continue
        try:
            key, cuts, own, meta = cache.shipped_program(path, Path(path).stat().st_mtime)
        except (LensError, OSError):  # a shipped file that does not open is no twin; the picker says why
            continue
        found[path] = PickedProgram("shipped", Path(path).stem, key, cuts, own, meta)
    twin = programlesion.program_twin(p.meta, {k: v.meta for k, v in found.items()})
    return None if twin is None else found[twin]


def program_nets(p: PickedProgram) -> tuple[Net, Net | None]:
    """The program at the granularity picked (and its plain twin beside it where it has one and the
    layers are swept), after a table of what each unit or layer is."""
    granularity = granularity_of(p)
    twin = program_twin(p)
    chain = p.cuts.chains[granularity]
    infos = lesion.infos_of(chain)
    shape = lesion.shape_text(programlesion.input_shape(chain))
    what = "residual units" if granularity == "units" else f"layers of {infos[0].stage}"
    st.markdown(f"**{p.label}** — a torch.export program taking {shape} inputs, swept over its {len(infos)} {what}, "
                f"evaluated on {len(data.y_test)} test {lesion.inputs_noun(data.dims)} of {data.name}.")
    if granularity == "units":
        st.caption("Its graph is cut at its residual units' inputs and outputs. Deleting unit *i* replaces its add by "
                   "the shortcut operand: the residual branch is removed, the shortcut and what follows the add are "
                   "kept (Veit et al. 2016). ↓ marks a unit whose output shape is not its input's.")
    else:
        st.caption("Its graph is cut at the outputs of its layers. Deleting layer *i* passes its input on unchanged, "
                   "as Veit et al. 2016 delete a layer of a plain net; a layer whose residual units carry its input "
                   "through (shortcut: identity) can also run in parallel with another. ↓ marks a layer whose output "
                   "shape is not its input's.")
    noun = "unit" if granularity == "units" else "layer"
    widgets.table(pd.DataFrame([{noun: f"{u.name}{' ↓' if u.downsample else ''}", "stage": u.stage,
                                 "shortcut": u.shortcut} for u in infos]), key="lesion_program_units")
    main = program_net(p, granularity)
    if twin is None:
        return main, None
    if granularity not in twin.cuts.chains:
        st.caption(f"Its plain twin {twin.label} has no residual units: pick **Layers** to sweep it beside "
                   f"{p.label}.")
        return main, None
    return main, program_net(twin, granularity)


def sweeps(main: Net, twin: Net | None) -> None:
    """The sweep tabs of one net (and its plain twin beside it), one per kind the lesion engine has
    (lesion.SWEEP_KINDS), and what the run store keeps of them."""
    if stopped is not None:
        st.warning(f"The {stopped[1]} sweep of {stopped[0]} ({stopped[2]}) was stopped before it finished (Cancel, "
                   "or another click while it ran); nothing of it was kept.")
    if (forgot := st.session_state.pop("lesion_forgot", None)) is not None:
        st.info(forgot)
    sweep_store = open_store()
    # the stored-sweep count is written after the tabs have run: a sweep that has just finished is counted
    # (it used to lag one rerun behind, and its appearance on the next click redrew the tabs)
    count_slot = st.empty()
    # only the open tab's sweep runs, and a finished or cancelled one keeps its tab
    tabs: dict[str, Callable[[], None]] = {}
    for kind in lesion.SWEEP_KINDS:  # a kind the engine gains gets a tab of its own, its rows as a table
        title, short, caption, xlabel = SWEEP_TABS.get(kind, (f"{kind} sweep", kind, f"The {kind} sweep.", kind))
        tabs[title] = functools.partial(sweep_tab, kind, short, caption, xlabel, main, twin, sweep_store)
    lazy_tabs(tabs, key="lesion_tab")
    if sweep_store is not None:
        try:
            mine = [w for key in main.keys or (main.key,) for w in sweep_store.sweeps_of(key, lesion.SWEEP_KINDS)]
        except LensError as exc:
            st.warning(f"The run store cannot be read: {exc}")
            mine = []
        counted = count_slot.container()
        counted.caption(f"Finished sweeps are kept in the run store at `{sweep_store.home}` (set RESNET_LENS_HOME to "
                        "move it), keyed by the net's weights (their sha256, not its label; a program's: its file's), "
                        "the test data and the settings: a reload, a new tab or a server restart shows them without running. "
                        f"{main.label} has {len(mine)} stored sweep{'s' * (len(mine) != 1)}.")
        if mine:
            counted.button(f"Forget stored sweeps of this net ({len(mine)})", key="lesion_forget", on_click=forget,
                           args=(main.label, main.keys or (main.key,)), help="Deletes them from the run store; its plain twin keeps "
                                                              "its own.")


chosen = checkpoint_picker("lesion", programs=True)
# fp32 or bf16 (offered where the CPU has bf16 units); every result and memo below is keyed by it
precision = widgets.eval_precision(st.sidebar, "lesion")
if chosen is None:
    st.stop()
bf16_note: str | None = None
if precision != "fp32":
    try:  # a shipped net's measured count of changed predictions; another net is said to have none
        bf16_note = cache.bf16_sentence(chosen.name if chosen.origin == "shipped" else None,
                                        program=isinstance(chosen, PickedProgram))
    except LensError as exc:
        st.warning(f"The measured bf16 counts are not shown: {exc}")
data: Dataset
if isinstance(chosen, PickedProgram):  # a program: its data, units or layers, then the same sweeps
    data = program_view(chosen)
    program_main, program_plain = program_nets(chosen)
    st.subheader("Sweeps")
    sweeps(program_main, program_plain)
else:  # a checkpoint (no st.stop() above: a stopped run would not mirror its settings into the URL)
    picked: Picked = chosen  # narrowed once here, so the functions below see a Picked
    label, ck = picked.label, picked.checkpoint

    loaded: Dataset | None = widgets.evaluation_data(ck, label, "lesion")
    if loaded is None:
        st.stop()
    data = loaded
    try:  # a 1-D net and images (or a 2-D net and sequences), other channels or classes: said, not a traceback
        lesion.check_data(ck.spec, data)
    except LensError as exc:
        error_box(exc)
        st.stop()
    noun = lesion.inputs_noun(data.dims)  # "sequences" for a 1-D dataset, "images" otherwise

    infos = lesion.block_infos(ck.model)
    n = len(infos)
    shapes = lesion.block_shapes(ck.spec, data.size)  # per block (input, output), for this data's size
    st.markdown(f"**{label}** — {ck.spec.name}, {n} blocks, evaluated on {len(data.y_test)} test {noun} of "
                f"{data.name}.")

    # ------------------------------------------------------------------ toggles
    st.subheader("Delete blocks")
    pooled = any(b.plan.entry for _, b in ck.model.blocks())
    st.caption("↓ marks a downsampling block: deleting it keeps its shortcut — "
               + {"pad": "strided zero-padding (option A)",
                  "projection": "the 1×1 projection + BN" if ck.spec.dims == 2 else "the width-1 projection + BN",
                  "none": "for a plain net, a parameter-free subsample and zero-pad",
                  "identity": "identity"}[next((b.shortcut for b in infos if b.downsample), "identity")]
               + (" after the block's max pool, which a deleted block keeps" if pooled else "")
               + f" — so the shape still fits the next block. Each stage is headed by its output shape "
               f"({lesion.shape_legend(data.dims)}); a block's box says its input and output shapes.")
    DELETED_JOIN = {  # He et al. 2016's variants: what a block with its residual branch deleted still computes
        "scale": "each deleted block still scales its shortcut by λ (y = λ·s(x)), so deletions multiply the signal by λ",
        "gate": "a deleted block keeps its gate: y = (1 − g(x))·s(x), the shortcut as the intact net weights it",
        "shortcut_gate": "a deleted block keeps its gate: y = (1 − g(x))·s(x), the shortcut as the intact net weights it",
        "dropout": "the dropout on the shortcut acts only in training: at test time a deleted block passes s(x) on",
        "dropout_paper": "the paper's dropout shortcut keeps its expectation at test time: a deleted block passes "
                         "(1 − p)·s(x) on, so deletions multiply the signal by 1 − p",
    }
    if ck.spec.residual and ck.spec.shortcut_variant in DELETED_JOIN:
        st.caption(f"{ck.spec.variant_label}: {DELETED_JOIN[ck.spec.shortcut_variant]}; what follows the add "
                   "(ReLU, or BN + ReLU) is applied as in the intact block.")
    prefix = f"lesion_{label}"
    box_keys = {b.index: f"{prefix}_{b.name}" for b in infos}
    stages = sorted({b.stage_index for b in infos})


    def tick(keys: list[str], value: bool) -> None:
        """Set block checkboxes from a button: its callback runs before the script draws them, the only
        moment Streamlit lets a widget's value be set through session_state."""
        for k in keys:
            st.session_state[k] = value


    # the deleted blocks by name: the page's own setting, which ui/urlstate mirrors as `deleted` (the
    # checkboxes' keys name the checkpoint, a link names only blocks). It was set from a link, a reload
    # or back/forward when it differs from what this page last drew: then it sets every box; otherwise
    # the boxes are the newer truth (a click, a button) and it only fills boxes this session has not
    # drawn yet (a net just picked keeps the deleted names it has)
    wanted: list[str] = st.session_state.get("lesion_deleted", [])
    from_link = wanted != st.session_state.get("lesion_deleted_drawn")
    for b in infos:
        if from_link or box_keys[b.index] not in st.session_state:
            st.session_state[box_keys[b.index]] = b.name in wanted

    # one wrapping row of buttons as wide as their labels: st.columns([1, 1, 6]) cut them to 'S…' at 820 px
    quick = st.container(horizontal=True)
    quick.button("Select all", key=f"{prefix}_select_all", on_click=tick, args=(list(box_keys.values()), True),
                 help="Delete every block", width="content")
    quick.button("Clear", key=f"{prefix}_clear", on_click=tick, args=(list(box_keys.values()), False),
                 help="Keep every block", width="content")
    cols = st.columns(len(stages))
    deleted = []
    for col, stage in zip(cols, stages, strict=True):
        members = [b for b in infos if b.stage_index == stage]
        col.markdown(f"**{members[0].stage}** · {lesion.shape_text(shapes[members[-1].index][1])}")
        col.button(f"Delete all of {members[0].stage}", key=f"{prefix}_stage_{stage}", on_click=tick,
                   args=([box_keys[b.index] for b in members], True), help=f"Delete the {len(members)} blocks of this stage")
        for b in members:
            shape_in, shape_out = (lesion.shape_text(v) for v in shapes[b.index])
            if col.checkbox(f"{b.name}{' ↓' if b.downsample else ''}", key=box_keys[b.index],
                            help=f"{shape_in} → {shape_out} ({lesion.shape_legend(data.dims)})"):
                deleted.append(b.index)
    # written here, before anything below can stop the run, so the URL names what the boxes show;
    # a link's own order is kept, and a name this net lacks is dropped (urlstate then warns about it)
    drawn = [infos[i].name for i in deleted]
    if set(drawn) != set(wanted):
        if drawn:
            st.session_state["lesion_deleted"] = drawn
        else:
            st.session_state.pop("lesion_deleted", None)  # nothing deleted: no `deleted=` in the URL
    st.session_state["lesion_deleted_drawn"] = list(st.session_state.get("lesion_deleted", []))


    # the same for every visitor until blocks are deleted: cached across sessions by weights and data
    data_key = repr(lesion.sweep_settings("single", data))
    preds = cache.lesion_predictions(ck.model, key_of(picked), data_key, tuple(deleted), data.x_test, precision)
    y = data.y_test
    base_err, les_err = [(p != y).float().mean().item() for p in preds]
    metric_row([
        Metric("Test error, intact", f"{100 * base_err:.2f} %"),
        # no delta with nothing deleted: a red "+0.00 pp" would claim a change
        Metric(f"Test error, {len(deleted)} deleted", f"{100 * les_err:.2f} %",
               delta=f"{100 * (les_err - base_err):+.2f} pp" if deleted else None, delta_color="inverse"),
        Metric("Chance", f"{100 * (1 - 1 / data.num_classes):.1f} %"),
    ])
    if bf16_note is not None:
        st.caption(f"Evaluated in bf16. {bf16_note}")
    c1, c2 = st.columns(2)
    pc = pd.DataFrame({"class": data.classes,
                       "intact": lesion.per_class_accuracy(y, preds[0], data.num_classes),
                       "lesioned": lesion.per_class_accuracy(y, preds[1], data.num_classes)})
    render.show(render.per_class(pc), key="lesion_per_class", container=c1)
    delta = lesion.confusion(y, preds[1], data.num_classes) - lesion.confusion(y, preds[0], data.num_classes)
    render.show(render.confusion_delta(delta.numpy(), data.classes), key="lesion_confusion", container=c2)

    st.subheader("Sweeps")
    sweeps(net_of(picked), None if (twin := twin_of(picked)) is None else net_of(twin))
