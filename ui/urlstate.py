"""The URL follows the view: every page's settings live in its query string, so a view can be shared
as a link and survives a reload. Used from ``app.py`` only; the pages know nothing of it.

The scheme
    One query parameter per widget, named after the widget's session-state key without its page's
    prefix: ``explorer_model`` is ``model``, ``train_epochs`` is ``epochs``. A widget that exists once
    per model or per family (its key ends in the model's name) keeps that suffix:
    ``explorer_size_resnet50`` is ``size_resnet50``. A setting that several widgets show is kept by its
    page under one key of its own and mirrored like a widget: the lesion lab's ``lesion_deleted``, the
    names of the deleted blocks, is ``deleted``. Values are plain text, typed by the registry
    below: whole numbers (``epochs=10``), numbers (``lr=0.05``), ``true``/``false``, text as it is
    (``model=resnet152``), ``none`` for a selectbox's "none" choice, and lists as repeated
    parameters (``depths=20&depths=56``; an empty list is one empty value, ``columns=``, Streamlit's
    own convention). So ``/diagrams?model=resnet152&level=layer`` opens ResNet-152's layer-level
    diagram, as it always did.

When the URL is read
    Before the page runs, each parameter of that page whose widget has no value in this session yet
    (a new tab, a reload, a shared link) is decoded and put into ``st.session_state``; on the
    browser's back/forward buttons the URL wins over the session (and settings it does not name go
    back to their defaults). After the page has run, the page's current values are written back, and
    parameters of other pages are dropped. A page that ends early with ``st.stop()`` (the lesion lab
    waiting for an upload) cannot send anything after it, so its URL is brought up to date by its
    next complete run.

Bad values never show a traceback
    A value of the wrong type is refused before the page runs; a value the widget itself rejects
    (not among its options, out of range) is caught after the run or, where Streamlit raises, around
    it: the parameter is dropped, the widget shows its default, and one warning names what was ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import streamlit as st
from streamlit import config
from streamlit.errors import StreamlitAPIException
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner import get_script_run_ctx

Kind = Literal["str", "optstr", "int", "float", "bool", "strs", "ints", "floats", "pair"]
Encoded = str | list[str]

KIND_TEXT: dict[Kind, str] = {
    "str": "text", "optstr": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
    "strs": "a list of text values", "ints": "a list of whole numbers", "floats": "a list of numbers",
    "pair": "two whole numbers, low then high",
}
NONE = "none"  # a selectbox whose choices include None (e.g. "label nodes with: none")
_MISSING = object()  # a seeded key the page removed
_WARNINGS = "_urlstate_warnings"  # what a run that had to start over could not use, shown by the next run
_WRITTEN = "_urlstate_written"  # (page, query) last written: a page switch that keeps it brings no link
# A link is typed by hand or shared: bounded before anything walks it (a page's longest list, the
# lesion lab's deleted blocks of a 152-layer net, has 50 items; its longest text is a folder path)
MAX_VALUES = 500
MAX_TEXT = 4096
# Streamlit's own limits: a query string over either is dropped whole before any page sees it
# (streamlit.runtime.state.query_params.sanitize_query_string); said here, not dropped in silence
ST_MAX_FIELDS = 1000
ST_MAX_CHARS = 512 * 1024
# [0-9], not \d: \d is every script's digit, and int() reads '١٢' as 12 (found by tests/fuzz/shapes.py)
_INT = re.compile(r"[+-]?[0-9]{1,18}")  # 18 digits: no huge-number conversion from a hand-edited link
_FLOAT = re.compile(r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?")


class Invalid:
    """A query value that does not decode to its kind (a sentinel, not an exception)."""


INVALID = Invalid()


@dataclass(frozen=True)
class PageParams:
    """The widgets one page mirrors: their key prefix and, by short name, the kind of their value.
    A name ending in ``*`` matches any suffix (one widget per model, per family, per block count)."""

    prefix: str
    kinds: Mapping[str, Kind]
    _patterns: tuple[tuple[str, Kind], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple((n[:-1], k) for n, k in self.kinds.items() if n.endswith("*")))

    def kind(self, name: str) -> Kind | None:
        """The kind of the parameter ``name``, or None if this page has no such parameter."""
        if "*" in name:
            return None
        if name in self.kinds:
            return self.kinds[name]
        return next((k for stem, k in self._patterns if name.startswith(stem) and len(name) > len(stem)), None)

    def key(self, name: str) -> str:
        return self.prefix + name

    def name(self, key: str) -> str | None:
        """The parameter name of session-state ``key``, or None if this page does not mirror it."""
        if not key.startswith(self.prefix):
            return None
        name = key[len(self.prefix):]
        return name if self.kind(name) is not None else None


# Buttons, download buttons and file uploaders are left out on purpose: Streamlit refuses a value set
# for them through st.session_state (StreamlitAPIException), and a click or a file is no setting.
MODEL_PICKER: dict[str, Kind] = {
    "source": "str", "model": "str", "ckpt": "str", "shortcut_*": "str", "stride": "str", "plain": "bool",
    "preact": "bool", "size_*": "int",
    "cblock": "str", "cstem": "str", "clayers": "str", "cwidths": "str", "csize_*": "int", "cchan": "int",
    "cdims": "int", "csize1d_*": "int", "cchan1d": "int", "cbias": "bool", "cdown": "str",
    "cclasses": "int", "cshortcut": "str", "cgroups": "int", "cwpg": "int", "cstride": "str", "cplain": "bool",
    "cpreact": "bool", "head": "str", "chead": "str",
    # He et al. 2016 variants (ui.widgets.variant_picker)
    "variant": "str", "lambda": "float", "scale_residual": "bool", "gate_bias": "float", "dropout": "float",
    "activation": "str",
    # your own net (ui.widgets.source_picker): where it is opened from; the upload itself is no setting
    "net_from": "str", "net_path": "str", "net_module": "str", "net_shape": "str", "net_dtype": "str",
    "net_example": "str", "net_onnx_shape": "str",
}
REGISTRY: dict[str, PageParams] = {
    "explorer": PageParams("explorer_", {**MODEL_PICKER, "level": "str", "columns": "strs", "analyse": "str",
                                         "section": "str", "batch": "int", "net_level": "str",
                                         "net_depth": "int", "net_section": "str",
                                         "seed_input_dim": "int", "seed_n_filters": "int", "seed_kernel_size": "int",
                                         "seed_padding": "int", "seed_stride": "int", "seed_shortcut": "bool",
                                         "seed_length": "int"}),
    "blocks": PageParams("blocks_", {"cin": "int", "cout": "int", "width": "int", "size": "int", "stride": "int",
                                     "groups": "int", "kind": "str", "dims": "int", "size1d": "int",
                                     "pairing": "str"}),
    "depth": PageParams("depth_", {"family": "str", "models_*": "strs", "stride": "str", "your_models": "strs",
                                   "your_paths": "str", "your_modules": "strs", "your_shape": "str",
                                   "your_examples": "strs", "your_onnx_shape": "str"}),
    "diagrams": PageParams("diagrams_", {**MODEL_PICKER, "level": "str", "show": "optstr", "color": "optstr",
                                         "twin": "bool", "block": "str", "projection": "bool", "block_dims": "int",
                                         "block1d": "str", "node": "optstr", "net_level": "str",
                                         "net_depth": "int"}),
    "training": PageParams("train_", {"depths": "ints", "kinds": "strs", "epochs": "int", "data": "str",
                                      "size": "int", "path": "str", "img_size": "int", "lr": "float",
                                      "schedule": "str", "seed": "int", "device": "str", "download_pick": "str",
                                      "grad_record": "bool", "grad_every": "int", "grad_kind": "str",
                                      "grad_runs": "strs", "grad_steps": "ints", "batch": "int", "decay": "float",
                                      "augment": "bool", "runs_data_*": "str", "runs_origin": "strs",
                                      "runs_log": "bool", "runs_smooth": "float", "precision": "str",
                                      "channels_last": "bool"}),
    # the lesion lab's block checkboxes are keyed by the checkpoint's label; the page keeps the deleted
    # blocks' names under lesion_deleted (`deleted=layer1.0&deleted=layer2.3`) and sets the boxes from it
    "lesion": PageParams("lesion_", {"ckpt": "str", "data_kind": "str", "data_path": "str", "per_class": "int",
                                     "k_samples": "int",
                                     "k_seed": "int", "reorder_samples": "int", "reorder_seed": "int",
                                     "deleted": "strs", "tab": "str", "granularity": "str",
                                     "eval_precision": "str"}),
    "paths": PageParams("paths_", {"n": "int", "pick": "int", "net": "str", "blocks_*": "int", "range_*": "pair",
                                   "ckpt": "str", "data_kind": "str", "data_path": "str", "per_class": "int",
                                   "samples": "int", "batch": "int", "seed": "int", "mass": "float",
                                   "init": "bool", "eval_precision": "str"}),
    "variants": PageParams("variants_", {"variants": "strs", "combos": "str", "depths": "ints", "size": "int",
                                         "data": "str", "recorded": "str",
                                         "seeds": "int", "epochs": "int", "grad_record": "bool", "grad_every": "int",
                                         "curves": "strs", "grad_kind": "str", "grad_runs": "strs",
                                         "grad_steps": "ints", "precision": "str", "channels_last": "bool"}),
    "theory": PageParams("theory_", {"lambdas": "floats", "depth": "int", "rscale": "float", "x": "float",
                                     "h_before": "float", "h_after": "float", "net": "str"}),
    "painters": PageParams("painters_", {"data": "str"}),
    # the recorded comparison's charts (rec_) and the user's (yours_) have their own choices
    "transfer": PageParams("transfer_", {"recorded": "str", "source": "str", "ckpt": "str", "target": "str",
                                         "folder": "str", "folder_size": "int", "folder_resize": "int",
                                         "keep": "bool", "kept_pick": "str", "modes": "strs", "labels": "strs",
                                         "ks": "ints", "bn": "strs", "norms": "strs", "seeds": "int", "steps": "int",
                                         "rec_at": "str", "rec_curve_setups": "strs", "rec_curve_x": "str",
                                         "rec_threshold": "int", "rec_section": "str", "yours_section": "str",
                                         "yours_at": "str", "yours_curve_setups": "strs",
                                         "yours_curve_x": "str", "yours_threshold": "int", "precision": "str",
                                         "channels_last": "bool", "probe_eval_precision": "str"}),
}


# ------------------------------------------------------------------ values <-> text
def _number(v: object, kind: Kind) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) if kind in ("int", "ints", "pair") else math.isfinite(v)


def _num_text(v: int | float) -> str:
    if isinstance(v, int):
        return str(v)
    text = repr(float(v))  # the shortest text that reads back as the same float: 0.1, not 0.1000000000000000055
    return text[:-2] if text.endswith(".0") else text


def encode(value: object, kind: Kind) -> Encoded | None:
    """``value`` as query text, or None if it is not of ``kind`` (then it is not mirrored)."""
    if kind == "str":
        return value if isinstance(value, str) else None
    if kind == "optstr":
        return NONE if value is None else value if isinstance(value, str) else None
    if kind == "bool":
        return ("true" if value else "false") if isinstance(value, bool) else None
    if kind in ("int", "float"):
        return _num_text(value) if _number(value, kind) else None  # type: ignore[arg-type]
    if not isinstance(value, (list, tuple)):
        return None
    if kind == "pair" and (len(value) != 2 or value[0] > value[1]):
        return None
    if kind == "strs":
        items = [v for v in value if isinstance(v, str) and v]
    else:
        items = [_num_text(v) for v in value if _number(v, kind)]
    if len(items) != len(value):
        return None
    return items or [""]


ITEM_KIND: dict[Kind, Kind] = {"strs": "str", "ints": "int", "floats": "float", "pair": "int"}


def _scalar(text: str, kind: Kind) -> object:
    if kind == "str":
        return text
    if kind == "optstr":
        return None if text == NONE else text
    if kind == "bool":
        return {"true": True, "false": False}.get(text.lower(), INVALID)
    if kind == "int":
        return int(text) if _INT.fullmatch(text) else INVALID
    if not _FLOAT.fullmatch(text):
        return INVALID
    value = float(text)
    return value if math.isfinite(value) else INVALID


def decode(raw: Sequence[str], kind: Kind) -> object:
    """The typed value of a query parameter's values (repeated parameters give several), or INVALID."""
    if kind in ITEM_KIND:
        texts = [] if list(raw) in ([], [""]) else list(raw)
        items = [_scalar(t, ITEM_KIND[kind]) for t in texts]
        if any(v is INVALID for v in items) or (kind == "strs" and "" in texts):
            return INVALID
        if kind == "pair":
            if len(items) != 2 or items[0] > items[1]:  # type: ignore[operator]
                return INVALID
            return tuple(items)
        return items
    if not raw:
        return INVALID
    return _scalar(raw[-1], kind)  # a repeated single-valued parameter: the last one, as st.query_params reads it


def _item_text(v: object, kind: Kind) -> str:
    """One list item as the URL writes it."""
    return _num_text(v) if _number(v, kind) else str(v)  # type: ignore[arg-type]


def _same(a: object, b: object) -> bool:
    """Equal as settings: a pair may come back from its widget as a tuple or a list; True is not 1."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def _shown(name: str, raw: Sequence[str]) -> str:
    text = "&".join(f"{name}={v}" for v in raw) or name
    return f"`{text[:60]}…`" if len(text) > 60 else f"`{text}`"


# ------------------------------------------------------------------ the page run
def _history_navigation() -> bool:
    """True when this run comes from the browser's back or forward button (the URL changed under us)."""
    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))


def _dropped_query() -> str | None:
    """What to say when Streamlit ignored the whole query string for being over its limits."""
    ctx = get_script_run_ctx()
    text = str(getattr(ctx, "query_string", "") or "")
    fields = text.count("&") + 1 if text else 0
    if len(text) > ST_MAX_CHARS or fields > ST_MAX_FIELDS:
        return (f"the whole query string ({fields:,} parameters, {len(text):,} characters) is over Streamlit's "
                f"limits of {ST_MAX_FIELDS:,} parameters and {ST_MAX_CHARS:,} characters, so none of it was read")
    return None


def _incoming() -> dict[str, list[str]]:
    return {name: st.query_params.get_all(name) for name in st.query_params}


def _seed(params: PageParams, incoming: Mapping[str, list[str]], problems: list[str]) -> dict[str, tuple[str, Any]]:
    """Put the URL's values into session state; returns what was put, by key: (parameter, value)."""
    history = _history_navigation()
    seeded: dict[str, tuple[str, Any]] = {}
    for name, raw in incoming.items():
        kind = params.kind(name)
        if kind is None:
            problems.append(f"{_shown(name, raw)} is not a setting of this page")
            continue
        key = params.key(name)
        if key in st.session_state and not history:
            continue  # the session's own value is newer than the link it came from
        if len(raw) > MAX_VALUES or any(len(v) > MAX_TEXT for v in raw):
            problems.append(f"{_shown(name, raw[:2])} is too long ({len(raw):,} values, the longest "
                            f"{max(map(len, raw)):,} characters; at most {MAX_VALUES:,} values of "
                            f"{MAX_TEXT:,} characters are read)")
            continue
        value = decode(raw, kind)
        if value is INVALID:
            problems.append(f"{_shown(name, raw)} is not {KIND_TEXT[kind]}")
            continue
        st.session_state[key] = value
        seeded[key] = (name, value)
    if history:  # back/forward: what the URL does not name goes back to its default
        for key in [k for k in st.session_state if params.name(k) not in (None, *incoming)]:
            del st.session_state[key]
    return seeded


def _culprits(tb: TracebackType | None, seeded: Mapping[str, object]) -> list[str]:
    """The seeded keys of the widgets in whose calls an exception was raised: every Streamlit widget
    function has its ``key`` argument as a local variable."""
    found = []
    while tb is not None:
        key = tb.tb_frame.f_locals.get("key")
        if isinstance(key, str) and key in seeded and key not in found:
            found.append(key)
        tb = tb.tb_next
    return found


def _current(params: PageParams) -> dict[str, Encoded]:
    out: dict[str, Encoded] = {}
    for key in sorted(k for k in st.session_state if isinstance(k, str)):
        name = params.name(key)
        if name is not None:
            kind = params.kind(name)
            text = encode(st.session_state[key], kind) if kind is not None else None
            if text is not None:
                out[name] = text
    return out


def _write(params: PageParams, name: str) -> None:
    """Mirror the page's values into the URL (only when they changed: each write is a history entry)."""
    want = {n: v if isinstance(v, list) else [v] for n, v in _current(params).items()}
    if want != _incoming():
        st.query_params.from_dict(want)
    st.session_state[_WRITTEN] = (name, want)


def run(page: StreamlitPage, name: str) -> None:
    """Run ``page`` (registered as ``name``) with its settings read from and written to the URL."""
    params = REGISTRY.get(name)
    if params is None:
        page.run()
        return
    slot = st.empty()  # above the page: where the warning about a bad link goes
    problems: list[str] = st.session_state.pop(_WARNINGS, [])
    incoming = _incoming()
    last_page, last_query = st.session_state.get(_WRITTEN, (name, None))
    if last_page != name and incoming == last_query:
        incoming = {}  # switched page with the previous page's query still attached: not a link to this one
    if not incoming:
        dropped = _dropped_query()
        if dropped:
            problems.append(dropped)
    seeded = _seed(params, incoming, problems)
    try:
        page.run()
    except StreamlitAPIException as exc:
        culprits = _culprits(exc.__traceback__, seeded)
        if not culprits:
            raise  # not caused by the link: a bug, shown as one
        reason = (str(exc).strip().splitlines() or ["refused"])[0].rstrip(".")
        for key in culprits:
            link_name, _ = seeded[key]
            problems.append(f"{_shown(link_name, incoming[link_name])}: {reason}")
            del st.session_state[key]
            if link_name in st.query_params:
                del st.query_params[link_name]
        st.session_state[_WARNINGS] = problems
        st.rerun()
    emptied = []
    for key, (link_name, value) in seeded.items():
        # a key the page dropped (the lesion lab drops deleted blocks its net lacks) was not taken either
        now = st.session_state.get(key, _MISSING)
        if _same(now, value):
            continue
        kind = params.kind(link_name)
        why = "one of its choices" if kind in ("str", "optstr", "strs") else "within its range or choices"
        taken = [v for v in value if isinstance(now, (list, tuple)) and any(_same(v, n) for n in now)] \
            if kind in ITEM_KIND and isinstance(value, list) else []
        if taken:
            # a list the widget took in part: name the link's items left out and those it kept (what
            # the widget holds besides, a page's own default, is no part of the link)
            item = ITEM_KIND[kind]  # type: ignore[index]
            left = [_item_text(v, item) for v in value if v not in taken]
            kept = ", ".join(_item_text(v, item) for v in taken)
            problems.append(f"{_shown(link_name, left)} is not {why} (kept: {kept})")
            continue
        problems.append(f"{_shown(link_name, incoming[link_name])} is not {why}")
        if kind in ITEM_KIND and value and not now:
            emptied.append((key, link_name))
    if emptied:
        # a list the widget emptied falls back to the page's default (a Train button left disabled by
        # `depths=7` was a dead end): forget the value and the parameter, run again, say why then
        for key, link_name in emptied:
            st.session_state.pop(key, None)
            if link_name in st.query_params:
                del st.query_params[link_name]
        st.session_state[_WARNINGS] = list(dict.fromkeys(problems))
        st.rerun()
    if problems:
        problems = list(dict.fromkeys(problems))  # a run that started over finds a bad value twice
        slot.warning("This link has settings the page cannot use; they were left out: " + "; ".join(problems) + ".",
                     icon=":material/link_off:")
    _write(params, name)


# ------------------------------------------------------------------ unknown addresses
def requested_path() -> str | None:
    """The path the browser asked for, relative to the app's root ('' for the root), or None outside
    a browser. ``st.navigation`` runs the default page for a path it does not know; this tells them apart."""
    url = st.context.url
    if not url:
        return None
    path = urlsplit(url).path.strip("/")
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    if base and (path == base or path.startswith(base + "/")):
        path = path[len(base):].strip("/")
    return path


def unknown_path(page: StreamlitPage, aliases: Sequence[str] = ()) -> str | None:
    """The requested path if no page has it (``page`` is what ``st.navigation`` chose instead), else None.
    ``aliases`` are other paths of ``page`` (the default page answers at the root and at its own name)."""
    path = requested_path()
    if path is None or path == page.url_path or path in aliases:
        return None
    return path


def show_pages(missing: str, pages: Sequence[StreamlitPage]) -> None:
    """The page for an address that does not exist: say so and list the pages."""
    st.title("Page not found")
    st.error(f"No page called `/{missing}` — here are the pages:", icon=":material/search_off:")
    for p in pages:
        st.page_link(p, label=p.title)
