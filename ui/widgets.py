"""Widgets shared by several pages. They read the spec table; no channel numbers live here."""

from __future__ import annotations

import streamlit as st

from analysis.specs import (
    BLOCK_TYPES,
    MODELS,
    SHORTCUT_OPTIONS,
    ResNetSpec,
    custom_spec,
    get_spec,
    parse_int_list,
)

SHORTCUT_HELP = {
    "A": "A: identity, zero-padded where channels grow (no parameters)",
    "B": "B: identity, 1×1 projection only where the shape changes",
    "C": "C: 1×1 projection on every block",
}
STRIDE_HELP = {"3x3": "v1.5 (torchvision): stride on the 3×3", "1x1": "v1 (paper): stride on the first 1×1"}


def error_box(exc: Exception) -> None:
    """Bad input is shown, never raised: the page keeps running."""
    st.error(f"{exc}")


def from_query(param: str, widget_key: str, allowed: list | tuple) -> None:
    """Seed a widget from the URL (``?model=resnet152&level=layer``) once, so views can be shared."""
    value = st.query_params.get(param)
    if value in allowed and widget_key not in st.session_state:
        st.session_state[widget_key] = value


def model_picker(key: str, default: str = "resnet50") -> ResNetSpec | None:
    """Built-in or custom spec from sidebar widgets; ``None`` (with an error shown) if invalid."""
    sb = st.sidebar
    from_query("model", f"{key}_model", list(MODELS))
    source = sb.radio("Model source", ["Built-in", "Custom spec"], key=f"{key}_source", horizontal=True)
    try:
        if source == "Built-in":
            names = list(MODELS)
            name = sb.selectbox("Model", names, index=names.index(default), key=f"{key}_model")
            base = MODELS[name]
            shortcut = sb.radio("Shortcut option", SHORTCUT_OPTIONS, index=SHORTCUT_OPTIONS.index(base.shortcut),
                                format_func=SHORTCUT_HELP.get, key=f"{key}_shortcut_{base.family}")
            stride_on = None
            if base.block == "bottleneck":
                stride_on = sb.radio("Bottleneck stride", ["3x3", "1x1"], format_func=STRIDE_HELP.get,
                                     key=f"{key}_stride")
            plain = sb.checkbox("Plain twin (no shortcuts)", key=f"{key}_plain")
            preact = sb.checkbox("Pre-activation variant", key=f"{key}_preact")
            size = sb.number_input("Input size (pixels)", 1, 4096, base.input_size, key=f"{key}_size")
            return get_spec(name, plain=plain, preact=preact, stride_on=stride_on,  # type: ignore[arg-type]
                            shortcut=shortcut, input_size=int(size))  # type: ignore[arg-type]
        block = sb.selectbox("Block", BLOCK_TYPES, key=f"{key}_cblock")
        stem = sb.selectbox("Stem", ["imagenet", "cifar"], key=f"{key}_cstem",
                            format_func={"imagenet": "ImageNet (7×7/2 + max pool)", "cifar": "CIFAR (3×3/1)"}.get)
        layers = parse_int_list(sb.text_input("Blocks per stage", "2, 2, 2, 2", key=f"{key}_clayers"),
                                "blocks per stage")
        widths = parse_int_list(sb.text_input("Widths (planes) per stage", "64, 128, 256, 512",
                                              key=f"{key}_cwidths"), "widths")
        c1, c2, c3 = sb.columns(3)
        size = c1.number_input("Input", 1, 4096, 224 if stem == "imagenet" else 32, key=f"{key}_csize")
        chans = c2.number_input("Channels", 1, 4096, 3, key=f"{key}_cchan")
        classes = c3.number_input("Classes", 1, 1_000_000, 1000 if stem == "imagenet" else 10,
                                  key=f"{key}_cclasses")
        shortcut = sb.radio("Shortcut option", SHORTCUT_OPTIONS, index=1, format_func=SHORTCUT_HELP.get,
                            key=f"{key}_cshortcut")
        plain = sb.checkbox("Plain (no shortcuts)", key=f"{key}_cplain")
        preact = sb.checkbox("Pre-activation", key=f"{key}_cpreact")
        return custom_spec(block=block, layers=layers, widths=widths, input_size=int(size),
                           in_channels=int(chans), num_classes=int(classes), stem=stem,
                           shortcut=shortcut, residual=not plain, preact=preact)
    except ValueError as exc:
        error_box(exc)
        return None


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_si(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()
