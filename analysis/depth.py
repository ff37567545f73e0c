"""Several depths side by side: the paper's Table 1 regenerated from the specs, totals vs depth,
and the published numbers beside ours."""

from __future__ import annotations

import pandas as pd

from .costs import layer_table, totals
from .errors import ConfigError
from .reference import PAPER_TABLE1_GFLOPS, PAPER_TABLE6, TORCHVISION
from .specs import STRIDE_PLACEMENTS, ResNetSpec, choice, get_spec

# activation_bytes / 2**20: binary megabytes (not 10**6 bytes, which "MB" would say), for one image
ACTIVATION_COLUMN = "activation MiB (batch 1)"


def _stage_cell(spec: ResNetSpec, i: int) -> str:
    """'[3×3, 64 | 3×3, 64] ×2' (a Table 1 cell) for stage i."""
    planes, cout = spec.widths[i], spec.out_channels[i]
    if spec.block == "basic":
        inner = f"3×3, {planes} | 3×3, {cout}"
    else:
        w = spec.inner_width(i)
        g = f", C={spec.groups}" if spec.groups > 1 else ""
        inner = f"1×1, {w} | 3×3, {w}{g} | 1×1, {cout}"
    return f"[{inner}] ×{spec.layers[i]}"


def table1(specs: list[ResNetSpec]) -> pd.DataFrame:
    """The layout of He et al. 2015 Table 1 for any list of specs sharing a stage count."""
    if not specs:
        raise ConfigError("choose at least one model")
    n = len(specs[0].layers)
    if any(len(s.layers) != n for s in specs):
        raise ConfigError("Table 1 lines up stages: choose models with the same number of stages")
    # output sizes come from the same trace as every cost, not from a second copy of the arithmetic
    first = layer_table(specs[0])
    shapes = first.groupby("stage", sort=False)["out_shape"].last()
    conv1 = first["out_shape"].iloc[0]
    rows = [{"layer": "conv1", "output size": f"{conv1[1]}×{conv1[2]}",
             **{s.name: f"7×7, {s.stem_width}, stride 2" if s.stem == "imagenet"
                else f"3×3, {s.stem_width}" for s in specs}}]
    for i in range(n):
        label = f"conv{i + 2}_x"
        cells = {}
        for s in specs:
            cell = _stage_cell(s, i)
            if i == 0 and s.stem == "imagenet":
                cell = "3×3 max pool, stride 2; " + cell
            cells[s.name] = cell
        h, w = shapes[f"layer{i + 1}"][1:]
        rows.append({"layer": label, "output size": f"{h}×{w}", **cells})
    rows.append({"layer": "head", "output size": "1×1",
                 **{s.name: f"average pool, {s.num_classes}-d fc, softmax" for s in specs}})
    rows.append({"layer": "MACs (×10⁹)", "output size": "",
                 **{s.name: f"{totals(s).macs / 1e9:.3f}" for s in specs}})
    return pd.DataFrame(rows)


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
