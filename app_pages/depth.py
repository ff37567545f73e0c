"""Depth comparison: Table 1 regenerated from the specs, costs vs depth, the paper beside us."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.arch.depth import ACTIVATION_COLUMN, FAMILIES, FAMILY_DEFAULTS, input_note, paper_comparison, table1
from analysis.arch.examples import EXAMPLES
from analysis.arch.graphnet import GraphNet
from analysis.arch.netcosts import compare
from analysis.arch.sources import MODULES_ENV, net_file, trusted_modules
from analysis.arch.specs import MODELS, STRIDE_PLACEMENTS, StridePlacement, get_spec
from analysis.core.errors import LensError
from analysis.core.reporting import csv_bytes
from ui import cache, render
from ui.widgets import NET_FILE_HELP, error_box, table

YOURS = "yours"  # any set of nets side by side: built-ins and the user's own files and modules

LABELS = {"imagenet": "ImageNet (18–152)", "cifar": "CIFAR (20–1202)", "vdcnn": "VDCNN (9–49, 1-D text)",
          "resnet1d": "MNIST-1D ResNets (8–110, 1-D)", YOURS: "Any nets, yours too"}

st.title("Depth comparison")
family = st.radio("Family", [*FAMILIES, YOURS], horizontal=True, key="depth_family", format_func=LABELS.__getitem__)


def opened_nets() -> list[tuple[GraphNet, str]]:
    """The nets chosen for the side-by-side table: built-ins by name, files uploaded or on this server,
    trusted modules. A file that cannot be opened is said and left out; the others still show."""
    nets: list[tuple[GraphNet, str]] = []
    builtins = st.multiselect("Built-in nets", list(MODELS), ["resnet18", "resnet50"], key="depth_your_models")
    nets += [(cache.spec_net(get_spec(n)), "built-in") for n in builtins]
    shown = st.multiselect("Examples beyond the spec table", list(EXAMPLES), key="depth_your_examples",
                           format_func=lambda n: EXAMPLES[n].label)
    nets += [(cache.example_net(n), "example") for n in shown]
    ups = st.file_uploader("Your nets (.pt2 / .onnx)", accept_multiple_files=True, key="depth_your_upload",
                           help=NET_FILE_HELP)
    paths = st.text_area("…or paths of .pt2 / .onnx files on this server, one per line", key="depth_your_paths")
    onnx = st.text_input("ONNX files' input shape, where a file leaves sizes free", "", key="depth_your_onnx_shape",
                         placeholder="each file's own, e.g. 1,128",
                         help="Whole numbers separated by commas, batch first; a .pt2's shapes are fixed when "
                              "exported. A free batch alone is read as 1.").strip() or None
    try:
        refs = trusted_modules()
    except LensError as exc:
        error_box(exc)
        refs = ()
    chosen = st.multiselect("Trusted modules", refs, key="depth_your_modules", disabled=not refs,
                            help=f"Factories the server's starter listed in {MODULES_ENV}.")
    shape = st.text_input("Their example input (with its batch)", "1,3,224,224", key="depth_your_shape",
                          disabled=not chosen)
    for up in ups or []:
        try:
            shape_of = onnx if up.name.lower().endswith(".onnx") else None
            nets.append((cache.opened_file(up.getvalue(), up.name, shape_of), "upload"))
        except (LensError, OSError) as exc:
            error_box(exc)
    for line in paths.splitlines():
        if not line.strip():
            continue
        try:
            path = net_file(line)
            shape_of = onnx if path.suffix.lower() == ".onnx" else None
            nets.append((cache.opened_path(str(path), path.stat().st_mtime, shape_of), "file"))
        except (LensError, OSError) as exc:
            error_box(exc)
    for ref in chosen:
        try:
            nets.append((cache.opened_module(ref, shape, "float32"), "module"))
        except LensError as exc:
            error_box(exc)
    return nets


def side_by_side() -> None:
    """Any nets' totals in one table: the residual units and costs every net has, whatever its source."""
    st.caption("Every net in one record (analysis.arch.graphnet): built-ins from their specs, your files and "
               "modules from their exported graphs, never run. Costs are for each net's own example input, "
               "batch included; activation memory sums every op's output at its dtype.")
    nets = opened_nets()
    if not nets:
        st.info("Choose built-in nets or add your own.")
        return
    both = compare(nets)
    table(both, formats={"act_bytes": "%,d"})
    st.download_button("Download (CSV)", csv_bytes(both), file_name="nets_side_by_side.csv", mime="text/csv",
                       on_click="ignore", key="depth_your_csv")
    render.show(render.stage_costs(both.rename(columns={"net": "id"}), "net"), key="depth_your_chart")


if family == YOURS:
    side_by_side()
else:
    # one multiselect per family: its options differ, so its selection must not carry over
    names = st.multiselect("Models", FAMILIES[family], list(FAMILY_DEFAULTS[family]), key=f"depth_models_{family}")
    STRIDE_LABELS: dict[StridePlacement, str] = {"3x3": "v1.5 (torchvision)", "1x1": "v1 (paper)"}
    stride_on: StridePlacement | None = None
    if family == "imagenet":
        stride_on = st.radio("Bottleneck stride", STRIDE_PLACEMENTS, horizontal=True, key="depth_stride",
                             format_func=STRIDE_LABELS.__getitem__)

    if not names:
        st.info("Choose at least one model.")
    else:
        specs = [get_spec(n, stride_on=stride_on if get_spec(n).block == "bottleneck" else None) for n in names]
        st.subheader("Table 1, regenerated from the specs")
        st.caption(input_note(specs))
        table(table1(specs))
        if family == "vdcnn":
            st.caption("Conneau et al. 2017, Table 2: two 3-wide convs per block after a 3-wide temporal conv on "
                       "16-d character embeddings; a 3-wide max pool halves the length before layer2–4. Depth counts "
                       "the convolutional layers, as the paper does; the head (average pool, one fc) is ours.")

        residual = cache.depth_summary(tuple(names), stride_on, False).assign(series="residual")
        plain = cache.depth_summary(tuple(names), stride_on, True).assign(series="plain")
        both = pd.concat([residual, plain], ignore_index=True)
        st.subheader("Residual vs plain")
        table(both, formats={ACTIVATION_COLUMN: "%,.1f", "torchvision GMACs": "%.3f", "paper GFLOPs (Table 1)": "%.1f"})
        st.caption(f"{ACTIVATION_COLUMN}: the float32 outputs of every operation of the forward pass for one input, "
                   "summed (as on the Architecture explorer).")
        st.download_button("Download (CSV)", csv_bytes(both), file_name="depth_comparison.csv",
                           mime="text/csv", on_click="ignore", key="depth_csv")
        c1, c2 = st.columns(2)
        render.show(render.vs_depth(both, "params", "Parameters vs depth"), key="depth_params", container=c1)
        render.show(render.vs_depth(both, "MACs", "MACs vs depth"), key="depth_macs", container=c2)
        if all(s.shortcut == "A" for s in specs):
            st.caption("Option A shortcuts carry no weights: residual and plain twins have identical parameter "
                       "counts and MACs; only the residual add (in FLOPs) differs.")
        else:
            st.caption("Option B projections add weights only at the first block of a stage that changes the shape; a plain twin "
                       "drops them and the add."
                       + (" VDCNN's max pools are not shortcuts: the plain twin keeps them." if family == "vdcnn" else ""))

        st.subheader("The paper's numbers beside ours")
        published = paper_comparison(names)
        if published.empty:
            st.info("No published parameter or FLOP counts for these nets are recorded here (He et al. 2015's "
                    "Tables 1 and 6 cover the ImageNet and CIFAR nets): the table above is the only count.")
        else:
            table(published, digits=4)  # the paper's numbers have up to 4 significant digits
