"""Several depths side by side: the paper's Table 1 regenerated from the specs, totals vs depth,
and the published numbers beside ours."""

from __future__ import annotations

import pandas as pd

from analysis.arch.blockplan import NetPlan, net_plan
from analysis.arch.costs import layer_table, totals
from analysis.arch.ops import Op
from analysis.arch.reference import PAPER_TABLE1_GFLOPS, PAPER_TABLE6, TORCHVISION
from analysis.arch.specs import (
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    KMAX_FC,
    KMAX_K,
    MODELS,
    STRIDE_PLACEMENTS,
    VDCNN_LAYERS,
    ResNetSpec,
    choice,
    get_spec,
)
from analysis.core.errors import ConfigError

# activation_bytes / 2**20: binary megabytes (not 10**6 bytes, which "MB" would say), for one input
ACTIVATION_COLUMN = "activation MiB (batch 1)"

# The families the depth comparison offers, each a list of names get_spec knows. The 1-D ResNets
# for MNIST-1D take any 6n+2 depth, so they get the CIFAR nets' depths (and 8 and 14, which their
# 40 samples make cheap); the built-in ones are selected first.
FAMILIES: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_DEPTHS,
    "cifar": CIFAR_DEPTHS,
    "vdcnn": tuple(f"vdcnn{d}" for d in VDCNN_LAYERS),
    "resnet1d": tuple(f"resnet1d_{6 * n + 2}" for n in (1, 2, 3, 5, 7, 9, 18)),
}
FAMILY_DEFAULTS: dict[str, tuple[str, ...]] = {
    **FAMILIES, "resnet1d": tuple(name for name, s in MODELS.items() if s.family == "resnet1d")}


def _kernel(op: Op) -> str:
    """A Table 1 kernel: '3×3' for a 2-D op, '3' (its width) for a 1-D one."""
    return op.kernel_label.replace("x", "×")


def _size(shape: tuple[int, ...]) -> str:
    """'56×56' or '512' (a length) from a traced C×H×W or C×L shape."""
    return "×".join(str(v) for v in shape[1:])


def _pool_cell(op: Op) -> str:
    return f"{_kernel(op)} max pool, stride {op.stride}; "


def _stem_cell(plan: NetPlan) -> str:
    """The conv1 row, read off the net plan's stem: its conv (a stride above 1, a bias, and no BN
    after it said), or what stands in for it."""
    conv = next((op for op in plan.stem if op.kind == "conv"), None)
    if conv is None:
        return f"none: the blocks see the {plan.in_channels}-channel input"
    stride = f", stride {conv.stride}" if conv.stride > 1 else ""
    bias = ", bias" if conv.bias else ""
    bare = "" if any(op.kind == "bn" for op in plan.stem) else ", no BN or ReLU" + (
        " (temporal conv)" if plan.dims == 1 else "")
    return f"{_kernel(conv)}, {conv.cout}{stride}{bias}{bare}"


def _stage_cell(plan: NetPlan, i: int) -> str:
    """'[3×3, 64 | 3×3, 64] ×2' (a Table 1 cell) for stage i, from its first block's convs; '[3, 64 |
    3, 64] ×2' in 1-D; after '3 max pool, stride 2; ' where a pool precedes the stage (the ImageNet
    stem's, or VDCNN's in front of the block)."""
    blocks = [b for b in plan.blocks if b.stage == i]
    first = blocks[0]
    cells = [f"{_kernel(op)}, {op.cout}" + (f", C={op.groups}" if op.groups > 1 else "")
             for op in first.residual_ops if op.kind == "conv"]
    cell = f"[{' | '.join(cells)}] ×{len(blocks)}"
    pools = [op for op in first.entry if op.kind == "maxpool"]
    if i == 0:  # the paper draws the stem's max pool at the top of conv2_x
        pools = [op for op in plan.stem if op.kind == "maxpool"] + pools
    return "".join(_pool_cell(op) for op in pools) + cell


def _head_cell(spec: ResNetSpec) -> str:
    """The head row: the paper's 'average pool, 1000-d fc, softmax', or VDCNN's k-max head (Conneau et al.
    2017, Sec. 3: '8-max pool, 2048-d fc, 2048-d fc, 4-d fc, softmax')."""
    if spec.head == "kmax":
        return f"{KMAX_K}-max pool, {KMAX_FC}-d fc, {KMAX_FC}-d fc, {spec.num_classes}-d fc, softmax"
    return f"average pool, {spec.num_classes}-d fc, softmax"


def table1(specs: list[ResNetSpec]) -> pd.DataFrame:
    """The layout of He et al. 2015 Table 1 for any list of specs sharing a stage count and a
    dimensionality (output sizes are H×W in 2-D, lengths in 1-D)."""
    if not specs:
        raise ConfigError("choose at least one model")
    n = len(specs[0].layers)
    if any(len(s.layers) != n for s in specs):
        raise ConfigError("Table 1 lines up stages: choose models with the same number of stages")
    if len({s.dims for s in specs}) > 1:
        raise ConfigError("Table 1 lines up output sizes: choose only 2-D (H×W) or only 1-D (length) models")
    # output sizes come from the same trace as every cost, not from a second copy of the arithmetic
    first = layer_table(specs[0])
    shapes = first.groupby("stage", sort=False)["out_shape"].last()
    # conv1's own output (before the ImageNet stem's max pool); without a stem, the input itself
    conv1 = specs[0].input_shape() if specs[0].stem == "none" else first["out_shape"].iloc[0]
    plans = {s.name: net_plan(s) for s in specs}
    rows = [{"layer": "conv1", "output size": _size(conv1), **{k: _stem_cell(p) for k, p in plans.items()}}]
    for i in range(n):
        rows.append({"layer": f"conv{i + 2}_x", "output size": _size(shapes[f"layer{i + 1}"]),
                     **{k: _stage_cell(p, i) for k, p in plans.items()}})
    rows.append({"layer": "head", "output size": "×".join(["1"] * specs[0].dims),
                 **{s.name: _head_cell(s) for s in specs}})
    # the paper's unit, unless every net is so small (MNIST-1D's, a few million) that it would read 0.00x
    macs = {s.name: totals(s).macs for s in specs}
    scale, unit = (1e9, "10⁹") if max(macs.values()) >= 1e8 else (1e6, "10⁶")
    rows.append({"layer": f"MACs (×{unit})", "output size": "", **{k: f"{v / scale:.3f}" for k, v in macs.items()}})
    return pd.DataFrame(rows)


def input_note(specs: list[ResNetSpec]) -> str:
    """The caption saying at which input every cost holds: 'one image at each model's own input
    size: 224×224 px ...' for 2-D nets; for 1-D nets each model's C×L input, e.g. '16×1024
    (channels × samples) for vdcnn9, vdcnn17'."""
    if not specs:
        raise ConfigError("choose at least one model")
    if all(s.dims == 2 for s in specs):
        sizes = sorted({s.input_size for s in specs})
        return ("Every cost on this page is for one image at each model's own input size: "
                + ", ".join(f"{sz}×{sz} px" for sz in sizes)
                + (" (the ImageNet nets' 224 px as in the paper)" if 224 in sizes else " (the CIFAR nets' 32 px)")
                + ".")
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for s in specs:
        by_shape.setdefault(s.input_shape(), []).append(s.name)
    inputs = "; ".join(f"{'×'.join(map(str, shape))} ({'channels × samples' if len(shape) == 2 else 'C×H×W'}) "
                       f"for {', '.join(names)}" for shape, names in by_shape.items())
    return f"Every cost on this page is for one input at each model's own size: {inputs}."


def depth_summary(names: list[str], *, stride_on: str | None = None, plain: bool = False) -> pd.DataFrame:
    """Totals per model, with published numbers and our difference to them."""
    placement = choice(stride_on, STRIDE_PLACEMENTS, "stride_on") if stride_on else None
    rows = []
    for name in names:
        spec = get_spec(name, plain=plain, stride_on=placement if get_spec(name).block == "bottleneck" else None)
        t = totals(spec, layer_table(spec))
        row = {"model": spec.name, "depth": spec.depth, "blocks": spec.num_blocks,
               "params": t.params, "MACs": t.macs, "FLOPs": t.flops,
               "torchinfo mult-adds": t.torchinfo_mult_adds,
               ACTIVATION_COLUMN: t.activation_bytes / 2**20}
        base = name.removeprefix("plain_")
        if base in TORCHVISION and not plain:
            row["torchvision params"] = TORCHVISION[base]["params"]
            row["torchvision GMACs"] = TORCHVISION[base]["gmacs"]
        if base in PAPER_TABLE1_GFLOPS:
            row["paper GFLOPs (Table 1)"] = PAPER_TABLE1_GFLOPS[base]
        if base in PAPER_TABLE6:
            row["paper params M (Table 6)"] = PAPER_TABLE6[base]["params_m"]
            row["paper error % (Table 6)"] = PAPER_TABLE6[base]["error"]
        rows.append(row)
    return pd.DataFrame(rows)


def paper_comparison(names: list[str]) -> pd.DataFrame:
    """Ours vs the paper, with the reason for each difference in words."""
    rows = []
    for name in names:
        base = get_spec(name)
        if name in PAPER_TABLE1_GFLOPS:
            v1 = base.replace(stride_on="1x1") if base.block == "bottleneck" else base
            ours_v1 = totals(v1).macs / 1e9
            ours = totals(base).macs / 1e9
            paper = PAPER_TABLE1_GFLOPS[name]
            ref = ours_v1
            how = ("rounds" if round(ref, 1) == paper else
                   "truncates" if int(ref * 10) / 10 == paper else "reports")
            why = f"the paper {how} {ref:.3f} to one decimal"
            if base.block == "bottleneck":
                why += (f"; its v1 bottleneck strides the first 1x1, torchvision's v1.5 strides the "
                        f"3x3, which then runs at twice the resolution: {ours:.3f}")
            rows.append({"model": name, "quantity": "GMACs (Table 1)", "paper": paper,
                         "ours (paper variant)": round(ours_v1, 3), "ours (torchvision v1.5)": round(ours, 3),
                         "why they differ": why})
        if name in PAPER_TABLE6:
            ours = totals(base).params / 1e6
            paper = PAPER_TABLE6[name]["params_m"]
            rows.append({"model": name, "quantity": "params M (Table 6)", "paper": paper,
                         "ours (paper variant)": round(ours, 4), "ours (torchvision v1.5)": None,
                         "why they differ": "the paper rounds to two significant digits; option A "
                                            "shortcuts add no parameters, so the plain twin has the same count"})
    # CIFAR nets have no torchvision v1.5 counterpart: no column of empty cells for them
    return pd.DataFrame(rows).dropna(axis=1, how="all")
