"""The only place that caches: results with ``st.cache_data``, models with ``st.cache_resource``.

Cached objects are never mutated by callers (DataFrames are copied by Streamlit on each hit).
"""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.arch import blocks, conventions, costs, depth, diagrams, examples, graphnet, sources, theory
from analysis.arch.specs import ResNetSpec
from analysis.core.errors import LensError
from analysis.core.meta import Normalisation
from analysis.data import data
from analysis.experiments import evaluation, lesion, lesionstore, paths, programlesion
from analysis.store import checkpoints, runstore
from analysis.studies import grid, transfer


def variants_results_file() -> Path:
    """The recorded variants grid: ``results/variants_digits.json``, or the file RESNET_LENS_VARIANTS_RESULTS
    names (read on each call: tests point pages at their own files). The Variants lab shows it; the
    Training page reads its residual and plain rows, the degradation experiment over seeds."""
    return Path(os.environ.get("RESNET_LENS_VARIANTS_RESULTS")
                or Path(__file__).resolve().parent.parent / "results" / "variants_digits.json")


@st.cache_data(show_spinner=False, max_entries=64)
def layer_table(spec: ResNetSpec) -> pd.DataFrame:
    return costs.layer_table(spec)


@st.cache_data(show_spinner=False, max_entries=64)
def totals(spec: ResNetSpec) -> costs.Totals:
    return costs.totals(spec, costs.layer_table(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def convention_totals(spec: ResNetSpec) -> pd.DataFrame:
    return conventions.convention_totals(spec)


@st.cache_data(show_spinner=False, max_entries=64)
def explain_difference(spec: ResNetSpec) -> str:
    return conventions.explain_difference(spec)


@st.cache_data(show_spinner=False, max_entries=64)
def block_terms(cfg: blocks.BlockConfig) -> pd.DataFrame:
    return blocks.block_terms(cfg)


@st.cache_data(show_spinner=False, max_entries=16)
def depth_summary(names: tuple[str, ...], stride_on: str | None, plain: bool) -> pd.DataFrame:
    return depth.depth_summary(list(names), stride_on=stride_on, plain=plain)


@st.cache_data(show_spinner=False, max_entries=64)
def diagram(spec: ResNetSpec, level: str, show: str | None, color_by: str | None) -> str:
    return diagrams.diagram(spec, level, show=show, color_by=color_by)


@st.cache_data(show_spinner=False, max_entries=64)
def node_count(spec: ResNetSpec, level: str) -> int:
    return diagrams.build_graph(spec, level).number_of_nodes()


@st.cache_data(show_spinner=False, max_entries=64)
def shortcut_counts(spec: ResNetSpec) -> dict[str, int]:
    g = diagrams.block_graph(spec)
    return {k: len(diagrams.shortcut_edges(g, k)) for k in diagrams.SHORTCUT_KINDS}


@st.cache_data(show_spinner=False, max_entries=32)
def block_diagram(cfg: blocks.BlockConfig) -> str:
    return diagrams.block_diagram(cfg)


@st.cache_data(show_spinner=False, max_entries=16)
def block_internals(kind: str, projection: bool) -> str:
    return diagrams.block_internals(kind, projection=projection)


# ----------------------------------------------------------------------------- data and models
@st.cache_resource(show_spinner="Loading dataset…", max_entries=8)
def dataset(kind: str, path: str | None, size: int, seed: int,
            normalisation: Normalisation | None = None) -> data.Dataset:
    return data.load_dataset(kind, path, size=size, seed=seed, normalisation=normalisation)


def evaluation_dataset(choice: evaluation.Choice) -> data.Dataset:
    """The data :mod:`analysis.experiments.evaluation` chose, loaded once per choice and never mutated;
    ImageNet-style folders are kept apart, two at most (they are large)."""
    return _evaluation_images(choice) if choice.eval_transform else _evaluation_data(choice)


@st.cache_resource(show_spinner="Loading dataset…", max_entries=8)
def _evaluation_data(choice: evaluation.Choice) -> data.Dataset:
    return evaluation.load(choice)


@st.cache_resource(show_spinner="Loading images…", max_entries=2)
def _evaluation_images(choice: evaluation.Choice) -> data.Dataset:
    return evaluation.load(choice)


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=16)
def checkpoint_from_path(path: str, mtime: float) -> checkpoints.Checkpoint:
    """A checkpoint on disk (keyed by its modification time too, so a retrained file reloads)."""
    del mtime
    return checkpoints.load_checkpoint(path)


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=8)
def _checkpoint_from_bytes(blob: bytes, name: str, plain: bool | None = None,
                           settings: tuple[tuple[str, Any], ...] = ()) -> checkpoints.Checkpoint:
    return checkpoints.load_checkpoint(blob, name=name, plain=plain, settings=dict(settings) or None)


def checkpoint_from_bytes(blob: bytes, name: str, plain: bool | None = None,
                          settings: tuple[tuple[str, Any], ...] = ()) -> checkpoints.Checkpoint:
    """An uploaded file; ``plain`` answers the one question a bare state_dict's weights cannot
    (plain net or residual with option-A shortcuts: see ``AmbiguousCheckpointError``). Every loaded
    net counts against the process's memory budget while it lives (analysis.arch.budget), cached ones
    too: when a new upload does not fit, the cached uploads are let go once (a session that needs one
    again reloads it from its own upload) and the load is tried again."""
    try:
        return _checkpoint_from_bytes(blob, name, plain, settings)
    except checkpoints.OverBudgetError:
        pass
    _checkpoint_from_bytes.clear()
    gc.collect()  # the evicted nets' reservations end with them (weakref.finalize)
    return _checkpoint_from_bytes(blob, name, plain, settings)


# ------------------------------------------------------------------------ nets opened from files/modules
# A GraphNet is a table and its units (no weights: the program is let go once read), so results are
# cached as data; the bytes of an upload are its key, so two sessions uploading one file share it.
@st.cache_data(show_spinner=False, max_entries=64)
def spec_net(spec: ResNetSpec) -> graphnet.GraphNet:
    return graphnet.spec_net(spec)


@st.cache_data(show_spinner="Exporting the example…", max_entries=4)
def example_net(name: str) -> graphnet.GraphNet:
    return examples.example_net(name)


@st.cache_data(show_spinner="Reading the net's graph…", max_entries=16)
def opened_file(blob: bytes, name: str, input_shape: str | None = None) -> graphnet.GraphNet:
    """An uploaded .pt2 or .onnx file (read, never run); ``input_shape`` fixes an ONNX file's free sizes."""
    return sources.open_file(blob, name, input_shape=None if input_shape is None else sources.parse_shape(input_shape))


@st.cache_data(show_spinner="Reading the net's graph…", max_entries=16)
def opened_path(path: str, mtime: float, input_shape: str | None = None) -> graphnet.GraphNet:
    """A .pt2 or .onnx file on this server (keyed by its modification time too, so a rewritten file reloads)."""
    del mtime
    return sources.open_file(Path(path), input_shape=None if input_shape is None else sources.parse_shape(input_shape))


@st.cache_data(show_spinner="Exporting the module…", max_entries=16)
def opened_module(ref: str, input_shape: str, input_dtype: sources.InputDtype) -> graphnet.GraphNet:
    """A factory this server's starter trusts (``RESNET_LENS_MODULES``), exported for its example input."""
    return sources.open_module(ref, input_shape, input_dtype=input_dtype, allowed=sources.trusted_modules())


# A program opened with its weights for the lesion lab: a resource (its segments hold the weights),
# keyed by its bytes, so sessions uploading one file share it; the sweeps only run it, never change it.
# It is cut each way that applies (by its units, at its repeated layers) once, here.
@st.cache_resource(show_spinner="Opening the program…", max_entries=4)
def program_cuts(blob: bytes, name: str, input_shape: str | None = None) -> programlesion.Cuts:
    """An uploaded .pt2 checked, or an uploaded .onnx converted (at ``input_shape``, '16,1,16,16', where
    the file leaves sizes free), opened with its weights and cut into units and layers where each
    applies (analysis.experiments.programlesion.cut)."""
    shape = None if input_shape is None else tuple(int(n) for n in input_shape.split(","))
    return programlesion.open_cuts(blob, name, input_shape=shape)


@st.cache_resource(show_spinner="Opening the program…", max_entries=8)
def shipped_program(path: str, mtime: float) -> tuple[str, programlesion.Cuts, data.Dataset, Any]:
    """A shipped program (analysis.store.programs) by path and modification time: its run-store key (the
    sha256 of its file's bytes), the program cut into units and layers, its own test data and its
    metadata (a ProgramMeta: what finds its plain twin)."""
    del mtime
    from analysis.store import programs

    ep, meta = programs.load_shipped(Path(path))
    blob = Path(path).read_bytes()
    return (programlesion.program_key(blob), programlesion.cut(ep, Path(path).name),
            programs.dataset_for_program(meta), meta)


@st.cache_data(show_spinner=False, max_entries=32)
def lesion_predictions(_model: Any, net: str, data_key: str, deleted: tuple[int, ...], _x: Any,
                       precision: str = "fp32") -> Any:
    """Predicted classes of the intact net (row 0) and with ``deleted`` blocks removed (row 1), kept
    across sessions: every visitor of the Lesion lab starts with the same net, data and no deletion.
    ``net`` (the weights' hash) and ``data_key`` say what the unhashed model and images are; ``precision``
    (fp32 or bf16) is part of the key, so a bf16 prediction never answers for fp32."""
    n = len(lesion.block_infos(_model))
    return lesion.predict_sequences(_model, _x, [lesion.identity_sequence(n), lesion.deletion(n, list(deleted))],
                                    precision=precision)


@st.cache_resource(show_spinner=False)
def run_store() -> runstore.RunStore:
    """The run store of this server ($RESNET_LENS_HOME, default ~/.resnet-lens)."""
    return runstore.RunStore()


def stored_runs() -> dict[str, checkpoints.Checkpoint]:
    """Nets trained in the app and kept in the run store (any session, any earlier server), by label.
    A stored file that no longer loads is skipped, not shown as an error on every page."""
    out: dict[str, checkpoints.Checkpoint] = {}
    try:
        runs = run_store().runs()
    except LensError:  # an unusable store: the pages still work, the Training page says why
        return out
    for run in runs:
        try:
            out[run.label] = checkpoint_from_path(str(run.path), run.path.stat().st_mtime)
        except (LensError, OSError):
            continue
    return out


def shipped() -> dict[str, checkpoints.Checkpoint]:
    """The committed checkpoints, loaded once per process."""
    return {name: checkpoint_from_path(str(p), p.stat().st_mtime)
            for name, p in checkpoints.shipped_checkpoints().items()}


@st.cache_data(show_spinner=False, max_entries=32)
def length_distribution(n: int) -> paths.LengthDistribution:
    return paths.length_distribution(n)


@st.cache_data(show_spinner="Measuring gradients…", max_entries=32)
def scaled_shortcut_gradients(lambdas: tuple[float, ...], depth: int, residual_scale: float) -> pd.DataFrame:
    return theory.scaled_shortcut_gradients(lambdas, depth, residual_scale=residual_scale)


def stored_path_results(name: str, program: bool = False) -> paths.Results:
    """The gradient-by-length measurements stored beside a shipped checkpoint (``program``: a shipped
    program, analysis.store.programs) (empty if none, or if they were made on another version of the
    file); reloaded when either file changes."""
    from analysis.store import programs

    file = (programs.shipped_programs() if program else checkpoints.shipped_checkpoints()).get(name)
    if file is None:
        return {}
    stored = paths.results_file(file)
    return _stored_path_results(str(file), file.stat().st_mtime, stored.stat().st_mtime if stored.is_file() else 0.0)


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_path_results(path: str, mtime: float, results_mtime: float) -> paths.Results:
    del mtime, results_mtime
    return paths.load_results(Path(path))


def stored_lesion_results(name: str) -> lesionstore.Stored | None:
    """The lesion sweeps stored beside a shipped program (analysis.experiments.lesionstore; None if
    none, or if they were made on another version of the file); reloaded when either file changes.
    A damaged file is its CheckpointError (not cached: it is read again once mended)."""
    from analysis.store import programs

    file = programs.shipped_programs().get(name)
    if file is None:
        return None
    stored = lesionstore.results_file(file)
    return _stored_lesion_results(str(file), file.stat().st_mtime, stored.stat().st_mtime if stored.is_file() else 0.0)


def bf16_sentence(name: str | None, program: bool = False) -> str:
    """What the Lesion lab and the Path ensemble say beside bf16 results: the measured number of test
    predictions bf16 changes on the shipped net ``name`` (a checkpoint's stem, or a program's with
    ``program``), from results/bf16_eval.json and only for the version of the file measured; for any other
    net (None: uploaded, trained in the app) that it is not measured. A damaged results file is its
    CheckpointError."""
    from analysis.experiments import precisioneval
    from analysis.store import programs

    shipped = programs.shipped_programs() if program else checkpoints.shipped_checkpoints()
    file = None if name is None else shipped.get(name)
    if file is None:
        return precisioneval.sentence(None)
    results = precisioneval.RESULTS
    found = _bf16_results(str(results), results.stat().st_mtime if results.is_file() else 0.0).get(file.stem)
    if found is None or found.kind != ("program" if program else "checkpoint"):
        return precisioneval.sentence(None)
    return precisioneval.sentence(found, _file_sha256(str(file), file.stat().st_mtime))


@st.cache_data(show_spinner=False, max_entries=2)
def _bf16_results(path: str, mtime: float) -> dict[str, Any]:
    """results/bf16_eval.json read once per version of it (a damaged file raises, and is not cached)."""
    from analysis.experiments import precisioneval

    del mtime
    return dict(precisioneval.load_results(Path(path)))


@st.cache_data(show_spinner=False, max_entries=32)
def _file_sha256(path: str, mtime: float) -> str:
    """A file's sha256, once per version of it."""
    del mtime
    return paths.file_digest(Path(path))


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_lesion_results(path: str, mtime: float, results_mtime: float) -> lesionstore.Stored | None:
    del mtime, results_mtime
    return lesionstore.load_results(Path(path))



# ----------------------------------------------------------------------------- variant grids, Ray
@st.cache_data(show_spinner=False, max_entries=4)
def grid_results(path: str, mtime: float) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A grid results file, read once per version of it (``mtime``: a file recorded again is read again)."""
    del mtime
    return grid.load_results(path)


@st.cache_resource(show_spinner="Connecting to the Ray cluster…")
def ray_connection(address: str) -> Any:
    """One Ray connection per server process and address, kept: Ray's connection is process-wide, so a
    grid ending in one session must not disconnect a grid running in another."""
    from analysis.run import cluster

    return cluster.connect(address)


# ----------------------------------------------------------------------------- transfer learning
@st.cache_data(show_spinner=False, max_entries=4)
def transfer_results(path: str, mtime: float) -> transfer.PlanResult:
    """A transfer results file, read once per version of it (``mtime``: a file recorded again is read again)."""
    del mtime
    return transfer.load_results(path)


def transfer_source(name: str = "digits04_resnet20") -> checkpoints.Checkpoint:
    """A shipped source net of the embedded transfer tasks (checkpoints/transfer/<name>.pt: a
    residual net trained on the digits 0-4 or on MNIST-1D's classes 0-4), loaded once per version of
    the file."""
    path = checkpoints.SHIPPED_DIR / "transfer" / f"{name}.pt"
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise checkpoints.CheckpointError(f"the shipped transfer source {path} cannot be read ({exc})") from exc
    return checkpoint_from_path(str(path), mtime)


@st.cache_resource(show_spinner="Reading the image folder…", max_entries=2)
def transfer_folder(root: str, channels: int, size: int, resize: int | None, mtime: float) -> data.Dataset:
    """An ImageFolder target's pixels (unnormalised), read once per tree, channels, crop and folder
    version (``mtime`` of the root: a tree changed on disk is read again); never mutated, every run
    subsets and normalises a copy."""
    del mtime
    return transfer.read_folder(root, channels=channels, size=size, resize=resize)


# ----------------------------------------------------------------------------- downloads
# Download buttons get their bytes, never a callable: Streamlit forgets a deferred callable when the
# session reruns (any other click does that), and a later click on the old button then fails with
# "MediaFileStorageError: Deferred file ... not found". Bytes are stored by content, so the same file
# keeps its URL across reruns.
@st.cache_data(show_spinner="Rendering the diagram…", max_entries=16)
def rendered_diagram(dot: str, fmt: str) -> bytes:
    """The DOT source rendered by Graphviz's ``dot`` as SVG or PNG, keyed by the DOT text."""
    return diagrams.render(dot, fmt)


def checkpoint_file(label: str, ck: checkpoints.Checkpoint) -> bytes:
    """A run's checkpoint file, serialised once and kept with the run in this session (a run's label
    is per session, so this is not a process-wide cache); a new run under the same label replaces it."""
    files: dict[str, tuple[checkpoints.Checkpoint, bytes]] = st.session_state.setdefault("trained_files", {})
    kept = files.get(label)
    if kept is None or kept[0] is not ck:
        kept = files[label] = (ck, checkpoints.checkpoint_bytes(ck.model, ck.meta))
    return kept[1]


def download_name(label: str, suffix: str) -> str:
    """A file name made from a run's label: 'cifar_resnet20 (10 ep, lr 0.1, seed 0)' ->
    'cifar_resnet20_10ep_lr0.1_seed0.pt'."""
    words = re.findall(r"[A-Za-z0-9_.+-]+", label.replace(" ep", "ep").replace("lr ", "lr").replace("seed ", "seed"))
    stem = "_".join(words).strip("._-")[:120] or "resnet_lens_run"
    return f"{stem}{suffix}"


@st.cache_data(show_spinner=False, max_entries=4)
def painters_record(path: str, mtime: float) -> dict:
    """The recorded painters comparison (``mtime`` makes a rewritten file a new entry)."""
    from analysis.studies import painters

    return painters.load(Path(path))


@st.cache_data(show_spinner="Measuring the net's blocks and its BatchNorm…", max_entries=8)
def notes_measurements(path: str, mtime: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The Theory page's measurements of a shipped net over its test data (``mtime``: a retrained
    file is measured again): each block's branch size (analysis.experiments.sensitivity), test error
    with batch vs running statistics and each BN layer's running vs test statistics
    (analysis.experiments.bnstudy). The net is loaded afresh, not taken from the shared resource
    cache: the measurements hook its modules, which another session's forward must never meet."""
    del mtime
    from analysis.experiments import bnstudy, sensitivity

    ck = checkpoints.load_checkpoint(path)
    data = checkpoints.dataset_for(ck.meta)
    return (sensitivity.branch_sizes(ck.model, data.x_test),
            bnstudy.batch_size_errors(ck.model, data.x_test, data.y_test),
            bnstudy.statistics_gap(ck.model, data.x_test))
