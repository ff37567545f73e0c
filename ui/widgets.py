"""Widgets shared by several pages. They read the spec table; no channel numbers live here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import pandas as pd
import streamlit as st

from analysis.arch.blockplan import head_choice, small_input_note
from analysis.arch.examples import EXAMPLES
from analysis.arch.graphnet import GraphNet
from analysis.arch.sources import INPUT_DTYPES, MODULES_ENV, net_file, trusted_modules
from analysis.arch.specs import (
    ACTIVATION_LABELS,
    ACTIVATIONS,
    BLOCK_TYPES,
    DOWNSAMPLINGS,
    EXPANSION,
    HEADS,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_GATE_BIAS,
    MAX_INPUT_SIZE,
    MAX_SEQUENCE_LENGTH,
    MAX_SHORTCUT_SCALE,
    MODELS,
    SHORTCUT_OPTIONS,
    SHORTCUT_VARIANT_LABELS,
    SHORTCUT_VARIANTS,
    STEM_TYPES,
    STRIDE_PLACEMENTS,
    Downsampling,
    ResNetSpec,
    ShortcutOption,
    StemType,
    StridePlacement,
    choice,
    custom_spec,
    get_spec,
    parse_int_list,
)
from analysis.core.errors import ConfigError, LensError
from analysis.experiments import evaluation, programlesion
from analysis.experiments.chain import ProgramChain
from analysis.store.checkpoints import AmbiguousCheckpointError, Checkpoint
from analysis.store.runstore import RunStore
from ui.fmt import column_config, column_formats, printf
from ui.fmt import fmt_int as fmt_int  # moved to ui.fmt; re-exported so callers keep importing them from here
from ui.fmt import fmt_si as fmt_si

SHORTCUT_HELP: dict[ShortcutOption, str] = {
    "A": "A: identity, zero-padded where channels grow (no parameters)",
    "B": "B: identity, 1×1 projection only where the shape changes",
    "C": "C: 1×1 projection on every block",
}
STEM_HELP: dict[StemType, str] = {"imagenet": "ImageNet (7×7/2 + max pool)", "cifar": "CIFAR / conv stem (3×3/1)",
                                   "vdcnn": "VDCNN temporal conv (3-wide, bias, no BN)", "none": "none (blocks see the input)"}
DIMS_HELP = {2: "2-D (images, C×H×W)", 1: "1-D (sequences, C×L)"}
DOWNSAMPLING_HELP: dict[Downsampling, str] = {"stride": "strided first conv (ResNet)",
                                              "maxpool": "max pool /2 before the stage (VDCNN)"}


def size_widget(container: Any, label: str, *, dims: int, default: int, key: str) -> int:
    """The input-size number input: pixels (2-D, up to 4,096) or samples (1-D, up to a million)."""
    most = MAX_INPUT_SIZE if dims == 2 else MAX_SEQUENCE_LENGTH
    unit = "px" if dims == 2 else "samples"
    return int(container.number_input(range_label(label, 1, most, unit), 1, most, min(max(default, 1), most),
                                      key=key))
STRIDE_HELP: dict[StridePlacement, str] = {"3x3": "v1.5 (torchvision): stride on the 3×3", "1x1": "v1 (paper): stride on the first 1×1"}


@dataclass(frozen=True)
class Metric:
    """One st.metric: a short value (fmt_si, fmt_bytes) with the exact or long form in ``help``."""

    label: str
    value: str
    help: str | None = None
    delta: str | None = None
    delta_color: Literal["normal", "inverse", "off"] = "normal"


def metric_row(metrics: list[Metric], container: Any = None) -> None:
    """Metrics side by side that wrap onto the next line instead of being cut to '…'.

    ``st.columns(4)`` gives each metric a quarter of the page whatever its value: at 1,366 px with
    the sidebar open that is ~215 px (about 10 digits of the ~36 px value font) and at 820 px only
    ~110 px, so '4,089,238,376' became '4,08…'. Here each metric is as wide as its label and value
    and a row that does not fit wraps (a horizontal flex container)."""
    row = (container or st).container(horizontal=True, gap="medium")
    for m in metrics:
        row.metric(m.label, m.value, delta=m.delta, delta_color=m.delta_color, help=m.help, width="content")


# A grid (st.dataframe) draws on a canvas and sizes a column to its header and first ten cells, at
# most 500 px, dropping cells twice the mean: a longer cell is cut with no way to read it (issue 21:
# "why they differ", "rule", "reading"). Text columns get a width from their longest text (8 px a
# character of the grid's 14 px font is an upper bound for text, measured in chromium), and a table
# whose text would pass the widest column a grid allows (1,000 px) is drawn as HTML, which wraps.
TEXT_PX_PER_CHAR = 8
GRID_CELL_PADDING_PX = 16 + 28  # both sides, and the header's type icon
GRID_MAX_COLUMN_PX = 1000


def _text_width(df: Any, name: Any) -> int:
    """Pixels a text column needs in a grid: its longest cell or header."""
    longest = max([len(str(name))] + [len(str(v)) for v in df[name].tolist()])
    return TEXT_PX_PER_CHAR * longest + GRID_CELL_PADDING_PX


def table(df: Any, container: Any = None, digits: int = 3, formats: dict[str, Any] | None = None,
          **kwargs: Any) -> None:
    """``st.dataframe`` in the app's number format (ui.fmt.column_config): thousands separators,
    3 significant digits, scientific notation for tiny or huge floats; ``formats`` overrides columns.
    Text is never cut: text columns are as wide as their text, and a table with text too long for
    any grid column is drawn as a wrapping HTML table in the same number format."""
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    numbers = column_formats(df, digits)
    config = column_config(df, digits, formats, inferred=numbers)
    label = {str(c): c for c in df.columns}  # the formats are keyed by text; a frame may have int labels
    text = [c for c in df.columns if str(c) not in numbers and not pd.api.types.is_bool_dtype(df[c])]
    widths = {str(c): _text_width(df, c) for c in text}
    where = container or st
    printfs = {**numbers, **{k: v for k, v in (formats or {}).items() if isinstance(v, str) and k in label}}
    if any(w > GRID_MAX_COLUMN_PX for w in widths.values()):
        shown = df.copy()
        for name, fmt in printfs.items():
            shown[label[name]] = [printf(fmt, v) for v in df[label[name]].tolist()]
        where.table(shown, hide_index=kwargs["hide_index"])
        return
    for name, px in widths.items():  # a page's own text column config keeps its settings, gains the width
        own = config.get(name)
        config[name] = {**own, "width": own.get("width") or px} if isinstance(own, dict) else \
            st.column_config.TextColumn(width=px)
    # a scientific column's exact zeros read '0', not '0.00e+0' (issue 21): a printf format is one per
    # column, so such a table is written cell by cell through a Styler, every number column in the
    # format the grid would use (a Styler writes the others '0.000000' otherwise)
    zeros = [name for name, fmt in printfs.items() if fmt.endswith("e") and bool((df[label[name]] == 0).any())]
    data: Any = df
    if zeros:
        for name in zeros:
            config.pop(name, None)
        data = df.style.format({label[name]: (lambda v, f=fmt: "0" if _is_zero(v) and f.endswith("e") else printf(f, v))
                                for name, fmt in printfs.items()})
    where.dataframe(data, column_config=config, **kwargs)


def _is_zero(v: Any) -> bool:
    """An exact zero (a missing value, pd.NA included, is not one)."""
    return not pd.isna(v) and bool(v == 0)


def lazy_tabs(sections: dict[str, Callable[[], None]], key: str) -> None:
    """One tab per section, only the open one drawn: a keyed tab bar keeps its tab across reruns (a
    finished sweep used to jump back to the first tab) and its choice in ``st.session_state[key]``
    (the URL mirrors it), and the closed sections cost nothing (issue 21: pages that drew every
    section's charts took over 4 s to open)."""
    for tab, draw in zip(st.tabs(list(sections), key=key, on_change="rerun"), sections.values(), strict=True):
        if tab.open:
            with tab:
                draw()


def spec_header(spec: ResNetSpec, container: Any = None) -> None:
    """The net and its input as a subheader: every page that shows costs or shapes says at which
    input size they hold (issue 11: numbers silently at another size were wrong numbers)."""
    shape = "×".join(str(n) for n in spec.input_shape())
    unit = "" if spec.dims == 2 else " (channels × samples)"
    (container or st).subheader(f"{spec.name} — {spec.variant} — input {shape}{unit}")


def range_label(label: str, low: float, high: float, unit: str = "") -> str:
    """'Input size (1–4,096 px)': the allowed range in the label, where it is seen before typing,
    not only in the tooltip of a red outline after a wrong value."""

    def num(v: float) -> str:
        return fmt_int(int(v)) if float(v).is_integer() else f"{v:g}"

    return f"{label} ({num(low)}–{num(high)}{' ' + unit if unit else ''})"


def small_input_warning(spec: ResNetSpec, container: Any = None) -> None:
    """Inputs so small that whole stages see 1×1 maps are allowed (the net runs) but said."""
    note = small_input_note(spec)
    if note is not None:
        (container or st).warning(note, icon="⚠️")


def open_store(unavailable: str, *, error: bool = False) -> RunStore | None:
    """The app's run store, or None with ``unavailable`` and the reason shown (a warning where the
    page can go on without it, an error where it cannot)."""
    from ui import cache

    try:
        return cache.run_store()
    except LensError as exc:
        (st.error if error else st.warning)(f"{unavailable}: {exc}")
        return None


def error_box(exc: Exception) -> None:
    """Bad input is shown, never raised: the page keeps running."""
    st.error(f"{exc}")


EVAL_DATA = {"digits": "embedded digits", "cifar10": "CIFAR-10 (local path)",
             "imagefolder": "ImageFolder (local path)"}


def local_data_path(key: str, kind_label: str, label: str, verb: str) -> str:
    """The sidebar's local dataset path for data of ``kind_label`` ('CIFAR-10 (local path)'); until one is
    given, a line under the page says what ``label`` waits for ('' is returned)."""
    path = str(st.sidebar.text_input("Local dataset path", key=f"{key}_data_path",
                                     help="cifar-10-batches-py, or an ImageFolder root (train/ and val/ or one "
                                          "folder per class); nothing is downloaded"))
    if not path:
        st.info(f"Give the local path of the {kind_label.removesuffix(' (local path)')} data {label} is {verb} on "
                "(sidebar).")
    return path


def evaluation_data(ck: Checkpoint, label: str, key: str, verb: str = "evaluated") -> Any:
    """The data a page evaluates ``ck`` on, as :mod:`analysis.experiments.evaluation` decides for every page and
    the CLI: its own (the digits and MNIST-1D rebuilt from its metadata, normalised with its training
    statistics); MNIST-1D for a 1-D net of unknown data; for a 2-D net of other data, what the sidebar
    chooses among the kinds it is offered (the embedded digits first for a bare 1-channel 10-class
    net). None, said on the page, until there is data; bad input is said."""
    from ui import cache

    try:
        kinds = evaluation.offered_kinds(ck.spec, ck.meta)
        if len(kinds) == 1:  # its own data, or MNIST-1D for a 1-D net: nothing to choose
            choice = evaluation.choose(ck.spec, ck.meta, name=label)
            if choice.origin == "default":
                st.caption(f"{label}'s metadata names no dataset the app can rebuild: it is {verb} on the test split "
                           "of MNIST-1D (Greydanus 2020), the app's dataset of sequences.")
            return cache.evaluation_dataset(choice)
        if ck.meta.dataset is None:
            st.caption(f"{label}'s file does not say what data it was trained on (a bare state_dict holds weights "
                       f"only): choose the data it is {verb} on in the sidebar.")
        kind = st.sidebar.selectbox("Dataset", list(kinds), key=f"{key}_data_kind", format_func=EVAL_DATA.__getitem__)
        if kind in evaluation.EMBEDDED_KINDS:
            return cache.evaluation_dataset(evaluation.choose(ck.spec, ck.meta, kind=kind, name=label))
        path = local_data_path(key, EVAL_DATA[kind], label, verb)
        if not path:
            return None
        per_class = None
        if evaluation.uses_eval_transform(ck.spec, kind):
            # torchvision-style ImageNet nets: their own eval transform, a bounded number of images
            per_class = int(st.sidebar.number_input("Images per class (1–50)", 1, 50, 2, key=f"{key}_per_class",
                                                    help="ImageNet val has 50 per class; 2 keeps memory near 1 GB"))
        return cache.evaluation_dataset(evaluation.choose(ck.spec, ck.meta, kind=kind, path=path,
                                                          max_per_class=per_class, name=label))
    except LensError as exc:
        error_box(exc)
        return None


UPLOAD = "Upload a checkpoint…"
Origin = Literal["shipped", "trained", "uploaded"]
ORIGIN_PREFIX: dict[Origin, str] = {"shipped": "shipped", "trained": "trained here", "uploaded": "uploaded"}


@dataclass(frozen=True, eq=False)
class Picked:
    """A checkpoint chosen in a picker, with where it came from (typed, not parsed from its label)."""

    origin: Origin
    name: str
    checkpoint: Checkpoint

    @property
    def label(self) -> str:
        return f"{ORIGIN_PREFIX[self.origin]}: {self.name}"


def available_checkpoints() -> dict[str, Picked]:
    """Shipped checkpoints and the nets trained in the app (this session's and the run store's), by label."""
    from ui import cache

    entries = [Picked("shipped", n, c) for n, c in cache.shipped().items()]
    trained = {**cache.stored_runs(), **st.session_state.get("trained", {})}  # kept across reloads
    entries += [Picked("trained", n, c) for n, c in trained.items()]
    return {e.label: e for e in entries}


@overload
def checkpoint_picker(key: str, container: Any = None, default: str = "shipped: digits_resnet56",
                      programs: Literal[False] = False) -> Picked | None: ...


@overload
def checkpoint_picker(key: str, container: Any = None, default: str = "shipped: digits_resnet56", *,
                      programs: Literal[True], plain_program: str | None = None) -> Picked | PickedProgram | None: ...


def checkpoint_picker(key: str, container: Any = None, default: str = "shipped: digits_resnet56",
                      programs: bool = False, plain_program: str | None = None) -> Picked | PickedProgram | None:
    """Shipped checkpoints, nets trained in this session, or an uploaded file (our format or a
    torchvision-style state_dict, loaded with weights_only=True); with ``programs``, also the shipped
    programs and an uploaded one (.pt2, with its weights: :func:`program_picker`; ``plain_program``: what a
    program without residual units is told, see there). Errors are shown, not raised."""
    box = container or st.sidebar
    from ui import cache

    try:
        options = available_checkpoints()
    except (LensError, OSError) as exc:
        error_box(exc)
        options = {}
    shipped_programs = program_labels(options) if programs else {}
    labels = [*options, UPLOAD, *shipped_programs, *([UPLOAD_PROGRAM] if programs else [])]
    choice = box.selectbox("Checkpoint", labels, index=labels.index(default) if default in labels else 0,
                           key=f"{key}_ckpt")
    if programs and (choice in shipped_programs or choice == UPLOAD_PROGRAM):
        return program_picker(box, key, shipped_programs.get(choice), plain_program)
    if choice != UPLOAD:
        return options[choice]
    # no type filter: the browser listed a rejected .txt beside the file still in use (issue 21); every
    # file is read here instead, and one that is no checkpoint is said (analysis.store.checkpoints)
    up = box.file_uploader("PyTorch checkpoint (.pt / .pth)", key=f"{key}_upload",
                           help="A file saved by torch.save: this app's checkpoints, or a bare state_dict such as "
                                "torchvision's resnet50.pth (.pt, .pth, .bin, .tar).")
    if up is None:
        box.info("Upload a ResNet state_dict, e.g. torchvision's resnet50.pth; its architecture is inferred.")
        return None
    plain: bool | None = None
    try:
        if programs and programlesion.is_program(up.name):  # a program or ONNX model here: read as one
            return _uploaded_program(box, key, up, plain_program)
        ck = cache.checkpoint_from_bytes(up.getvalue(), up.name)
        return Picked("uploaded", up.name, _untold(box, key, up, ck, plain))
    except AmbiguousCheckpointError:
        # Plain and option-A residual nets have identical weights: the user says which, nothing is guessed.
        box.warning("This state_dict fits both a plain net and a residual net with option-A (zero-padding) "
                    "shortcuts: their weights have the same names and shapes. Every result depends on which "
                    "it is, so choose:")
        kind = box.radio("This net is", ["residual (option-A shortcuts)", "plain (no shortcuts)"], index=None,
                         key=f"{key}_upload_plain")
        if kind is None:
            return None
        plain = kind.startswith("plain")
        try:
            ck = cache.checkpoint_from_bytes(up.getvalue(), up.name, plain=plain)
            return Picked("uploaded", up.name, _untold(box, key, up, ck, plain))
        except LensError as exc2:
            error_box(exc2)
            return None
    except LensError as exc:
        error_box(exc)
        return None


UPLOAD_PROGRAM = "Upload a program (.pt2 / .onnx)"
PROGRAM_DATA = {"digits": "embedded digits", "mnist1d": "MNIST-1D (embedded sequences)",
                "cifar10": "CIFAR-10 (local path)", "imagefolder": "ImageFolder (local path)"}


@dataclass(frozen=True, eq=False)
class PickedProgram:
    """A torch.export program (with its weights) chosen in a picker, cut into its residual units and its
    repeated layers where each applies; ``own``: a shipped program's test data, rebuilt from its
    metadata (None: the user picks), and ``meta`` that metadata (a ProgramMeta)."""

    origin: Literal["shipped", "uploaded"]
    name: str
    key: str  # the run store's key: the sha256 of the archive's bytes (programlesion.program_key)
    cuts: programlesion.Cuts
    own: Any = None  # a Dataset for a shipped program
    meta: Any = None

    @property
    def label(self) -> str:
        return f"{ORIGIN_PREFIX[self.origin]}: {self.name}"

    @property
    def chain(self) -> ProgramChain:
        """Its residual units as one chain (a ChainError where it has none: ``cuts`` says why and has
        its layers)."""
        return self.cuts.units


def program_labels(taken: dict[str, Any]) -> dict[str, str]:
    """The shipped programs (analysis.store.programs: .pt2 files with their metadata) by label, each
    'shipped: <name>' ('shipped: <name>.pt2' where a checkpoint has that label already), to their path."""
    try:
        from analysis.store.programs import shipped_programs
    except ImportError:  # the shipped programs' module is optional: no shipped program then
        return {}
    out: dict[str, str] = {}
    for name, path in shipped_programs().items():
        label = f"shipped: {name}"
        out[label if label not in taken else f"{label}.pt2"] = str(path)
    return out


def program_picker(box: Any, key: str, shipped: str | None, plain: str | None = None) -> PickedProgram | None:
    """A shipped program (its path) or, for None, an uploaded .pt2 or .onnx, opened with its weights
    (cached per content, never mutated: ui.cache) and cut into units and layers where each applies; an
    ONNX model is converted to a program first (a free batch is fixed by the sweeps, other free sizes
    by the input shape typed here); a bad file is said in one sentence. ``plain`` given: a program
    without residual units is not picked, and '<label> <plain>' is said instead."""
    from pathlib import Path

    from ui import cache

    try:
        if shipped is not None:
            path = Path(shipped)
            key_, cuts, own, meta = cache.shipped_program(str(path), path.stat().st_mtime)
            return _unless_plain(box, PickedProgram("shipped", path.stem, key_, cuts, own, meta), plain)
        up = box.file_uploader("Program (.pt2 with its weights, or an ONNX model .onnx)", key=f"{key}_program_upload",
                               help="A torch.export program saved with torch.export.save (its graph and weights), or "
                                    "an ONNX model, converted here (read, never run). The lesion sweeps run it cut "
                                    "at its residual units or its repeated layers.")
        if up is None:
            box.info("Upload a .pt2 saved by torch.export.save or an .onnx model (the README's 'Your own net' shows "
                     "how); its residual units are deleted and reordered as a ResNet's blocks are.")
            return None
        return _uploaded_program(box, key, up, plain)
    except (LensError, OSError) as exc:
        error_box(exc)
        return None


def _uploaded_program(box: Any, key: str, up: Any, plain: str | None) -> PickedProgram | None:
    """An uploaded .pt2 or .onnx (``up``, a file_uploader's file) opened and cut (see
    :func:`program_picker`); LensError and OSError are the caller's to say."""
    from ui import cache

    blob = up.getvalue()
    shape = _program_shape(box, key, up.name)
    if shape is None:
        picked = PickedProgram("uploaded", up.name, programlesion.program_key(blob), cache.program_cuts(blob, up.name))
    else:  # the same file at another input shape is another program: its results are kept apart
        picked = PickedProgram("uploaded", up.name, f"{programlesion.program_key(blob)}@input={shape}",
                               cache.program_cuts(blob, up.name, shape))
    return _unless_plain(box, picked, plain)


def _program_shape(box: Any, key: str, name: str) -> str | None:
    """The input shape typed for an uploaded ONNX model whose sizes are free (a .pt2's are fixed when
    exported, so only an ONNX file asks), normalised ('1, 3,32,32' -> '1,3,32,32'); None: the file's own."""
    if not programlesion.is_onnx(name):
        return None
    from analysis.arch.sources import parse_shape

    text = str(box.text_input("Input shape (ONNX, where the file leaves sizes free)", "",
                              key=f"{key}_program_onnx_shape", placeholder="the file's own, e.g. 16,1,16,16",
                              help="Whole numbers separated by commas, batch first: the sweeps run the model in "
                                   f"pieces of this batch. A free batch alone is read as {programlesion.ONNX_BATCH}."))
    text = text.strip()
    return ",".join(map(str, parse_shape(text))) if text else None


def _unless_plain(box: Any, p: PickedProgram, plain: str | None) -> PickedProgram | None:
    """``p``, or None where ``plain`` is given and ``p`` has no residual units (then '<label> <plain>' is said)."""
    if plain is not None and not p.cuts.residual:
        box.info(f"{p.label} {plain}")
        return None
    return p


def program_data(p: PickedProgram, key: str, verb: str = "evaluated") -> Any:
    """The data a program is evaluated on: a shipped program's own; for an upload, what the sidebar
    chooses (a program carries no metadata), the kind its input looks like first, normalised with the
    dataset's own statistics. None, said on the page, until there is data; bad input is said."""
    from ui import cache

    if p.own is not None:
        st.caption(f"{p.label} is {verb} on its own data, {p.own.name}, rebuilt from the metadata it ships with.")
        return p.own
    st.caption(f"A program file holds no metadata: choose the data {p.label} is {verb} on in the sidebar. Its "
               "inputs are normalised with the dataset's own statistics (a program file stores none).")
    kinds = list(PROGRAM_DATA)
    guess = programlesion.likely_kind(p.cuts.first)
    kind = st.sidebar.selectbox("Dataset", kinds, index=kinds.index(guess), key=f"{key}_data_kind",
                                format_func=PROGRAM_DATA.__getitem__)
    path = None
    if kind in evaluation.LOCAL_KINDS:
        path = local_data_path(key, PROGRAM_DATA[kind], p.label, verb)
        if not path:
            return None
    try:
        return cache.evaluation_dataset(programlesion.choose(p.cuts.first, kind, path=path, name=p.label))
    except LensError as exc:
        error_box(exc)
        return None


UNTOLD_LABELS = {"shortcut_variant": "Shortcut", "activation": "BN and ReLU around the add",
                 "stride_on": "Bottleneck stride on", "downsampling": "Downsampling (1-D)"}


def _untold(box: Any, key: str, up: Any, ck: Checkpoint, plain: bool | None) -> Checkpoint:
    """A bare state_dict's settings that its weights cannot tell (analysis.store.checkpoints.untold_settings),
    shown with the values assumed and asked: changing one reloads the net with it."""
    if not ck.assumed:
        return ck
    from analysis.arch.specs import ACTIVATION_LABELS, SHORTCUT_VARIANT_LABELS
    from analysis.store.checkpoints import untold_settings
    from ui import cache

    choices = untold_settings(ck.spec)
    assumed = dict(ck.assumed)
    labels: dict[str, Callable[[Any], str]] = {
        "shortcut_variant": lambda v: SHORTCUT_VARIANT_LABELS.get(v, v),
        "activation": lambda v: ACTIVATION_LABELS.get(v, v),
        "stride_on": lambda v: {"3x3": "3x3 (torchvision v1.5)", "1x1": "first 1x1 (the paper's v1)"}.get(v, v),
    }
    with box.expander("Settings these weights cannot tell", expanded=False):
        st.caption("They change what the net computes but not its weights' names or shapes, so they are assumed "
                   "(the first choice: torchvision's conventions) and every number below holds for them. "
                   "Change any that your net was built with otherwise.")
        chosen: dict[str, Any] = {}
        for field, options in choices.items():
            if field not in UNTOLD_LABELS or len(options) < 2:
                continue
            chosen[field] = st.selectbox(UNTOLD_LABELS[field], options, key=f"{key}_untold_{field}",
                                         format_func=labels.get(field, str))
        if chosen.get("shortcut_variant") == "scale":
            chosen["shortcut_scale"] = st.number_input("λ (shortcut scale)", 0.05, 4.0, 0.5, 0.05,
                                                       key=f"{key}_untold_lambda")
            chosen["scale_residual"] = st.checkbox("F scaled by 1 − λ", key=f"{key}_untold_scale_f")
        if chosen.get("shortcut_variant") in ("dropout", "dropout_paper"):
            chosen["shortcut_dropout"] = st.number_input("dropout ratio", 0.05, 0.95, 0.5, 0.05,
                                                         key=f"{key}_untold_dropout")
        st.caption("Stage strides " + ", ".join(map(str, assumed["strides"])) + " are assumed too.")
    settings = tuple((k, v) for k, v in chosen.items() if assumed.get(k, None) != v)
    if not settings:
        return ck
    return cache.checkpoint_from_bytes(up.getvalue(), up.name, plain=plain, settings=settings)


SPEC_SOURCES = ["Built-in", "Custom spec", "Checkpoint"]
YOUR_NET = "Your net"
NET_FROM = {"upload": "Upload a file (.pt2 / .onnx)", "path": "A file on this server", "module": "A trusted module",
            "example": "An example (ViT, GPT)"}
NET_FILE_HELP = ("A torch.export program (torch.export.save, .pt2) or an ONNX model (.onnx): read as a graph, "
                 "never run. The README's 'Your own net' shows how to export a timm or torchvision net.")


@dataclass(frozen=True)
class Source:
    """A net chosen in the sidebar: a spec (built-in, custom, or inferred from a checkpoint) or a net opened
    from a file or a trusted module. Both are one :class:`~analysis.arch.graphnet.GraphNet` (``net``)."""

    spec: ResNetSpec | None = None
    opened: GraphNet | None = None

    @property
    def net(self) -> GraphNet:
        from ui import cache

        if self.opened is not None:
            return self.opened
        if self.spec is None:
            raise ConfigError("a source is a spec or an opened net")
        return cache.spec_net(self.spec)

    @property
    def label(self) -> str:
        return self.spec.name if self.spec is not None else self.net.name


def source_picker(key: str, default: str = "resnet50") -> Source | None:
    """Any net: a spec (built-in, custom, or inferred from a checkpoint) or your own, opened from a .pt2/.onnx file (uploaded
    or on this server) or a factory the server's starter trusts. ``None`` (with the reason shown) until
    there is one."""
    source = st.sidebar.radio("Model source", [*SPEC_SOURCES, YOUR_NET], key=f"{key}_source", horizontal=True)
    if source == YOUR_NET:
        return _opened_picker(key)
    spec = _spec_picker(key, source, default)
    return None if spec is None else Source(spec=spec)


def onnx_shape(box: Any, key: str, name: str) -> str | None:
    """An ONNX file's input shape where its sizes are free (a transformer's sequence axis): a program's
    are fixed when exported, so only an ONNX file asks. None: the file's own."""
    if not name.lower().endswith(".onnx"):
        return None
    text = box.text_input("Input shape (ONNX, where the file leaves sizes free)", "", key=f"{key}_net_onnx_shape",
                          placeholder="the file's own, e.g. 1,128",
                          help="Whole numbers separated by commas, batch first. A free batch alone is read as 1.")
    return str(text).strip() or None


def _opened_picker(key: str) -> Source | None:
    """A net of the user's own (see :mod:`analysis.arch.sources`), errors said in one sentence."""
    from ui import cache

    sb = st.sidebar
    how = sb.radio("Open", list(NET_FROM), format_func=NET_FROM.__getitem__, key=f"{key}_net_from")
    try:
        if how == "upload":
            up = sb.file_uploader("Net file (.pt2 / .onnx)", key=f"{key}_net_upload", help=NET_FILE_HELP)
            if up is None:
                sb.info("Upload a .pt2 (torch.export.save) or .onnx file of your net.")
                return None
            return Source(opened=cache.opened_file(up.getvalue(), up.name, onnx_shape(sb, key, up.name)))
        if how == "path":
            text = sb.text_input("Path of a .pt2 or .onnx file", key=f"{key}_net_path", help=NET_FILE_HELP).strip()
            if not text:
                sb.info("Type the path of a .pt2 or .onnx file on the machine that runs this app.")
                return None
            path = net_file(text)
            return Source(opened=cache.opened_path(str(path), path.stat().st_mtime, onnx_shape(sb, key, path.name)))
        if how == "example":
            name = sb.selectbox("Example", list(EXAMPLES), format_func=lambda n: EXAMPLES[n].label,
                                key=f"{key}_net_example",
                                help="Written in plain torch (analysis/arch/examples.py), exported here on the meta "
                                     "device and read like an uploaded .pt2: shapes only, no weights.")
            return Source(opened=cache.example_net(name))
        refs = trusted_modules()
        if not refs:
            sb.info(f"This server trusts no module. Whoever starts it can list factories (functions returning an "
                    f"nn.Module) in {MODULES_ENV}, comma-separated: `{MODULES_ENV}=mypkg.nets:small_vit make run`.")
            return None
        ref = sb.selectbox("Module", refs, key=f"{key}_net_module")
        shape = sb.text_input("Example input (with its batch)", "1,3,224,224", key=f"{key}_net_shape",
                              help="Whole numbers separated by commas, e.g. 1,3,224,224 for one RGB image.")
        dtype = sb.radio("Input dtype", list(INPUT_DTYPES), key=f"{key}_net_dtype", horizontal=True,
                         help="float32 for images and signals; int64 for a token model's ids.")
        return Source(opened=cache.opened_module(ref, shape, dtype))
    except (LensError, OSError) as exc:
        error_box(exc)
        return None


def _spec_picker(key: str, source: str, default: str) -> ResNetSpec | None:
    """The spec of one of :data:`SPEC_SOURCES` from sidebar widgets; ``None`` (with an error shown) if invalid."""
    sb = st.sidebar
    try:
        if source == "Checkpoint":
            picked = checkpoint_picker(key)
            if picked is None:
                return None
            ck = picked.checkpoint
            if ck.inferred:
                sb.caption(f"Architecture inferred from the state_dict: {ck.spec.name} ({ck.spec.variant}); "
                           "the input size is not stored in weights and defaults to the stem's usual size (a 1-D "
                           "net: MNIST-1D's 40 samples). What else the weights cannot tell is listed above.")
            return ck.spec
        if source == "Built-in":
            names = list(MODELS)
            name = sb.selectbox("Model", names, index=names.index(default), key=f"{key}_model")
            base = MODELS[name]
            shortcut = sb.radio("Shortcut option", SHORTCUT_OPTIONS, index=SHORTCUT_OPTIONS.index(base.shortcut),
                                format_func=SHORTCUT_HELP.__getitem__, key=f"{key}_shortcut_{base.family}")
            stride_on: StridePlacement | None = None
            if base.block == "bottleneck":
                stride_on = sb.radio("Bottleneck stride", STRIDE_PLACEMENTS, format_func=STRIDE_HELP.__getitem__,
                                     key=f"{key}_stride")
            plain = sb.checkbox("Plain twin (no shortcuts)", key=f"{key}_plain")
            preact = sb.checkbox("Pre-activation variant", key=f"{key}_preact")
            head = HEADS[0]
            if base.family == "vdcnn":  # Conneau et al. 2017's own head (k-max pooling, fc 2048 x 2), or ours
                head = choice(sb.radio("Head", HEADS, key=f"{key}_head", format_func=lambda h: head_choice(
                    h, base.out_channels[-1], base.num_classes)), HEADS, "head")
            # one size widget per model: switching model restores that model's own input size (a
            # CIFAR net keeps 32 px after resnet50's 224) unless the user changed it for that model
            # Streamlit forgets a widget's value when it is not drawn, so the user's sizes live here
            sizes: dict[str, int] = st.session_state.setdefault(f"{key}_sizes", {})
            size = size_widget(sb, "Input size" if base.dims == 2 else "Sequence length", dims=base.dims,
                               default=sizes.get(name, base.input_size), key=f"{key}_size_{name}")
            sizes[name] = size
            spec = get_spec(name, plain=plain, preact=preact, shortcut=shortcut, input_size=int(size),
                            stride_on=stride_on).replace(**variant_picker(key, residual=not plain, preact=preact))
            spec = spec.with_head(head) if head != HEADS[0] else spec
            small_input_warning(spec)
            return spec
        dims = int(sb.radio("Dimensions", (2, 1), format_func=DIMS_HELP.__getitem__, key=f"{key}_cdims",
                            horizontal=True))
        block = sb.selectbox("Block", BLOCK_TYPES, key=f"{key}_cblock")
        stem = choice(sb.selectbox("Stem", STEM_TYPES, key=f"{key}_cstem", format_func=STEM_HELP.__getitem__),
                      STEM_TYPES, "stem")
        layers = parse_int_list(sb.text_input("Blocks per stage", "2, 2, 2, 2", key=f"{key}_clayers"),
                                "blocks per stage")
        widths = parse_int_list(sb.text_input("Widths (planes) per stage", "64, 128, 256, 512",
                                              key=f"{key}_cwidths"), "widths")
        # one input per line: three side by side in the sidebar leave no room for their ranges
        if dims == 2:
            size = size_widget(sb, "Input size", dims=2, default=224 if stem == "imagenet" else 32,
                               key=f"{key}_csize_{stem}")
        else:  # MNIST-1D's 40 samples, VDCNN's 1,024 characters
            size = size_widget(sb, "Sequence length", dims=1, default=1024 if stem == "vdcnn" else 40,
                               key=f"{key}_csize1d_{stem}")
        c1, c2 = sb.columns(2)
        chans = c1.number_input(range_label("Channels", 1, MAX_CHANNELS), 1, MAX_CHANNELS, 3 if dims == 2 else 1,
                                key=f"{key}_cchan{'' if dims == 2 else '1d'}")
        classes = c2.number_input(range_label("Classes", 1, MAX_CLASSES), 1, MAX_CLASSES,
                                  1000 if stem == "imagenet" else 10, key=f"{key}_cclasses")
        shortcut = sb.radio("Shortcut option", SHORTCUT_OPTIONS, index=1, format_func=SHORTCUT_HELP.__getitem__,
                            key=f"{key}_cshortcut")
        groups, wpg, stride_on = 1, 64, "3x3"
        if block == "bottleneck":
            g1, g2 = sb.columns(2)
            groups = int(g1.number_input(range_label("Groups", 1, 1024), 1, 1024, 1, key=f"{key}_cgroups",
                                         help="ResNeXt's cardinality; 1 = an ordinary ResNet"))
            wpg = int(g2.number_input(range_label("Width per group", 1, 4096), 1, 4096, 64, key=f"{key}_cwpg",
                                      help="64 = standard; 128 = wide_resnet50_2; groups 32 × 4 = resnext50_32x4d"))
            stride_on = sb.radio("Bottleneck stride", STRIDE_PLACEMENTS, format_func=STRIDE_HELP.__getitem__,
                                 key=f"{key}_cstride")
        plain = sb.checkbox("Plain (no shortcuts)", key=f"{key}_cplain")
        preact = sb.checkbox("Pre-activation", key=f"{key}_cpreact")
        d1, d2 = sb.columns(2)
        conv_bias = d1.checkbox("Conv bias", key=f"{key}_cbias",
                                help="Every block conv and the stem conv carry a bias (the notes' Conv1d block, VDCNN)")
        downsampling = choice(d2.selectbox("Downsampling", DOWNSAMPLINGS, format_func=DOWNSAMPLING_HELP.__getitem__,
                                           key=f"{key}_cdown"), DOWNSAMPLINGS, "downsampling")
        head = HEADS[0]
        if dims == 1:  # VDCNN's k-max head pools along the sequence (Conneau et al. 2017), or ours
            head = choice(sb.radio("Head", HEADS, key=f"{key}_chead", format_func=lambda h: head_choice(
                h, widths[-1] * EXPANSION[block], int(classes))), HEADS, "head")
        spec = custom_spec(block=block, layers=layers, widths=widths, input_size=int(size),
                           dims=dims, conv_bias=conv_bias, downsampling=downsampling,
                           in_channels=int(chans), num_classes=int(classes), stem=stem,
                           shortcut=shortcut, residual=not plain, preact=preact, groups=groups,
                           width_per_group=wpg, stride_on=choice(stride_on, STRIDE_PLACEMENTS, "stride_on"),
                           head=head).replace(**variant_picker(key, residual=not plain, preact=preact))
        small_input_warning(spec)
        return spec
    except LensError as exc:
        error_box(exc)
        return None


def variant_picker(key: str, *, residual: bool, preact: bool) -> dict[str, Any]:
    """He et al. 2016's shortcut variant and activation placement (spec fields) from sidebar widgets,
    folded in an expander: the original block unless the user opens it. Shared by the built-in and
    custom model sources, so every page that shows a spec handles the variants."""
    box = st.sidebar.expander("He et al. 2016 variants", expanded=False)
    out: dict[str, Any] = {}
    if residual:
        variant = box.selectbox("Shortcut variant", SHORTCUT_VARIANTS, key=f"{key}_variant",
                                format_func=SHORTCUT_VARIANT_LABELS.__getitem__,
                                help="Fig. 2 of the paper; the 1×1 conv shortcut is shortcut option C above")
        out["shortcut_variant"] = variant
        if variant == "scale":
            out["shortcut_scale"] = float(box.number_input(
                range_label("λ (shortcut scale)", 0.01, MAX_SHORTCUT_SCALE), 0.01, MAX_SHORTCUT_SCALE, 0.5, 0.05,
                key=f"{key}_lambda"))
            out["scale_residual"] = box.checkbox("Scale F by 1 − λ as well", key=f"{key}_scale_residual")
        elif variant in ("gate", "shortcut_gate"):
            out["gate_bias"] = float(box.number_input(
                range_label("Initial gate bias b_g", -MAX_GATE_BIAS, MAX_GATE_BIAS), -MAX_GATE_BIAS, MAX_GATE_BIAS,
                -6.0, 1.0, key=f"{key}_gate_bias", help="−6: g ≈ 0.0025 at the start, shortcut near identity"))
        elif variant in ("dropout", "dropout_paper"):
            # the inverted dropout acts in training only; the paper's keeps the (1 - p) scale at test time
            out["shortcut_dropout"] = float(box.slider(
                "Drop ratio (training only)" if variant == "dropout" else "Drop ratio (s(x) × (1 − p) at test time)",
                0.05, 0.95, 0.5, 0.05, key=f"{key}_dropout"))
    else:
        box.caption("A plain net has no shortcut to vary.")
    if preact:
        box.caption("Full pre-activation fixes where BN and ReLU sit (Fig. 4e).")
    else:
        out["activation"] = box.selectbox("Activation placement", ACTIVATIONS, key=f"{key}_activation",
                                          format_func=ACTIVATION_LABELS.__getitem__,
                                          help="Fig. 4 (a)–(d); (e) is the pre-activation checkbox")
    return out


def progress_reporter(bar: Any, label: str) -> Callable[[int, int], None]:
    """A (done, total) callback for a progress bar that redraws only when the percentage changes,
    so thousands of small steps do not flood the browser with messages."""
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct != last[0]:
            last[0] = pct
            bar.progress(done / max(total, 1), text=f"{label}: {done}/{total}")

    return report


# ---------------------------------------------------------------------------- precision (issue 25)
def _bf16_help() -> tuple[bool, str]:
    """Whether bf16 can run on this server's CPU, and the sentence that says what it has."""
    from analysis.core.machine import bf16_unit

    unit = bf16_unit()
    if unit:
        return True, f"bf16: autocast on this CPU's {unit}; weights, statistics and the optimiser stay fp32"
    return False, "bf16 needs a CPU with bf16 matrix units (AMX-BF16 or AVX-512 BF16); this server's CPU has none"


def precision_widgets(container: Any, key: str, *, dims: int = 2) -> tuple[str, bool]:
    """A recipe's precision and memory layout: ("fp32" | "bf16", channels_last), the precision by its
    name, as the CLI's --precision (``PRECISIONS[name]`` is the recipe's ``amp``). fp32 in the default
    layout is what every stored result was made with; the other choices are recipes of their own
    (their own run-store keys). bf16 is offered only where this CPU has bf16 units."""
    ok, help_text = _bf16_help()
    options = ["fp32", "bf16"] if ok else ["fp32"]
    precision = container.selectbox("Precision", options, key=f"{key}_precision",
                                    help=f"fp32: the stored results' arithmetic. {help_text}.")
    channels_last = False
    if dims == 2:
        channels_last = container.checkbox(
            "Channels-last memory", key=f"{key}_channels_last",
            help="weights and batches in NHWC order, which oneDNN's convolutions (and AMX, with bf16) run "
                 "fastest on; the numbers differ from the default layout's in the last bits")
    return str(precision), bool(channels_last)


def eval_precision(container: Any, key: str) -> str:
    """The precision an evaluation (lesion sweep, path measurement, transfer probe) computes in:
    "fp32" or "bf16" (offered only where this CPU has bf16 units)."""
    ok, help_text = _bf16_help()
    if not ok:  # drawn, disabled: a link asking for bf16 is then warned about, not silently run in fp32
        return str(container.radio("Evaluate in", ["fp32"], key=f"{key}_eval_precision", horizontal=True,
                                   disabled=True, help=help_text))
    return str(container.radio("Evaluate in", ["fp32", "bf16"], key=f"{key}_eval_precision", horizontal=True,
                               help=f"{help_text}. Predictions may differ from fp32's: the measured number "
                                    "of changed test predictions of the shipped nets is shown with the results"))
