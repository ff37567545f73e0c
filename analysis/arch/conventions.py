"""Why FLOP counters disagree: each tool's counting rule applied to the same per-layer table.

All counters agree on the conv + fc core (multiply-accumulates of the weights). They differ in what
else they count. The rules below are the tools' per-op rules (torchinfo 1.8, fvcore 0.1.5's jit
handles in eval mode, thop 0.1.1's module hooks, ptflops 0.7.5's PyTorch backend). The tests check
torchinfo live and the other three against totals those tools reported on torchvision's models
(tests/fixtures/counters.json, made by tools/make_fixtures.py); a version that changes a rule will
differ by that op's column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.arch.costs import exact_column, exact_sum, layer_table
from analysis.arch.specs import ResNetSpec


@dataclass(frozen=True)
class Convention:
    key: str  # short stable name the code looks totals up by: paper, torchinfo, fvcore, thop, ptflops, lens
    name: str
    unit: str
    rule: str
    # integer weights per column of the layer table: total = sum(weight * column), exact
    weights: tuple[tuple[str, int], ...]


CONVENTIONS: tuple[Convention, ...] = (
    Convention(
        "paper", "paper (He et al. 2015, Table 1)", "multiply-adds",
        "conv + fc multiply-adds only; the paper's 'FLOPs' are MACs. Its bottleneck is v1 (stride on "
        "the first 1x1), so compare with the v1 variant.",
        (("macs", 1),),
    ),
    Convention(
        "torchinfo", "torchinfo 1.8 (mult-adds)", "multiply-adds",
        "conv: params x output H x W; every other layer with parameters adds its parameter count "
        "once (fc weight + bias, BatchNorm gamma + beta). ReLU, pooling, add: 0.",
        (("macs", 1), ("bias_adds", 1), ("bn_params", 1)),
    ),
    Convention(
        "fvcore", "fvcore (eval mode)", "fused multiply-adds",
        "conv/linear: MACs (no bias); batch_norm in eval: 2 per element (affine); "
        "adaptive_avg_pool: 1 per input element; relu, max_pool and add are skipped.",
        (("macs", 1), ("bn_elems", 2), ("avgpool_in", 1)),
    ),
    Convention(
        "thop", "thop (module hooks)", "MACs",
        "conv/linear: MACs; BatchNorm: 2 x 2 per element (normalise, then affine doubles it); ReLU "
        "and MaxPool: 0; AdaptiveAvgPool: (kernel + 1) per output element; the functional add "
        "is invisible to module hooks.",
        (("macs", 1), ("bn_elems", 4), ("avgpool_thop", 1)),
    ),
    Convention(
        "ptflops", "ptflops 0.7 (PyTorch backend)", "MACs",
        "conv/linear: MACs + bias; BatchNorm: 2 per element (affine); ReLU and pooling: 1 per input "
        "element from the module hook and 1 more from the F.relu / F.max_pool2d hook that "
        "count_functional=True (the default) adds, so twice; the in-place residual add is not seen.",
        (("macs", 1), ("bias_adds", 1), ("bn_elems", 2), ("relu_elems", 2), ("pool_in_elems", 2)),
    ),
    Convention(
        "lens", "ResNet Lens FLOPs", "FLOPs",
        "every floating-point op: 2 per MAC, fc bias, BN 2 per element, ReLU 1, max-pool k*k-1 "
        "comparisons per output, avg-pool 1 per input, residual add 1 per element.",
        (("flops", 1),),
    ),
)


def _columns(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the two average-pool columns fvcore and thop need, as exact Python ints."""
    avg = [op == "avgpool" for op in df["op"].tolist()]
    pool_in, pool_out = df["pool_in_elems"].tolist(), df["pool_out_elems"].tolist()
    kernel_area = [math.prod(s[1:]) for s in df["in_shape"].tolist()]  # H x W, or L for a 1-D net
    return df.assign(
        avgpool_in=exact_column(int(n) if a else 0 for a, n in zip(avg, pool_in, strict=True)),
        avgpool_thop=exact_column((k + 1) * int(n) if a else 0
                                  for a, k, n in zip(avg, kernel_area, pool_out, strict=True)),
    )


BY_KEY: dict[str, Convention] = {c.key: c for c in CONVENTIONS}
if len(BY_KEY) != len(CONVENTIONS):
    raise RuntimeError("two counting conventions share a key")


def _total(c: Convention, df: pd.DataFrame) -> int:
    """``c``'s total over a layer table that already has the derived columns of :func:`_columns`:
    integer weights times exact column sums, so a Python int at any size."""
    return sum(w * exact_sum(df[col]) for col, w in c.weights)


def totals_by_key(spec: ResNetSpec, table: pd.DataFrame | None = None) -> dict[str, int]:
    """Each convention's total, looked up by its key (``"torchinfo"``, ``"fvcore"``, ...), so no caller
    depends on the order of :data:`CONVENTIONS`."""
    df = _columns(layer_table(spec) if table is None else table)
    return {c.key: _total(c, df) for c in CONVENTIONS}


def convention_totals(spec: ResNetSpec, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per counting convention: its total, its part beyond the conv+fc core, its rule."""
    df = _columns(layer_table(spec) if table is None else table)
    core = exact_sum(df["macs"])
    totals = [_total(c, df) for c in CONVENTIONS]
    return pd.DataFrame({  # exact totals: Python ints in object columns, never int64
        "convention": [c.name for c in CONVENTIONS], "unit": [c.unit for c in CONVENTIONS],
        "total": exact_column(totals), "GMACs/GFLOPs": [t / 1e9 for t in totals],
        "beyond conv+fc": exact_column(t - core for t in totals), "rule": [c.rule for c in CONVENTIONS],
    })


def components(spec: ResNetSpec, table: pd.DataFrame | None = None) -> dict[str, int]:
    """The separately counted pieces every convention draws from."""
    df = layer_table(spec) if table is None else table
    return {
        "conv + fc MACs": exact_sum(df["macs"]),
        # the fc's biases, and a conv's bias once per output position where convs carry one (VDCNN,
        # the notes' Conv1d block): torchinfo counts both as the layer's parameters x positions
        "bias adds": exact_sum(df["bias_adds"]),
        "BatchNorm parameters": exact_sum(df["bn_params"]),
        "BatchNorm elements": exact_sum(df["bn_elems"]),
        "ReLU elements": exact_sum(df["relu_elems"]),
        "pooling input elements": exact_sum(df["pool_in_elems"]),
        "residual-add elements": exact_sum(df["add_elems"]),
    }


def _bias_story(spec: ResNetSpec) -> str:
    """Where the bias adds come from: the fc's biases, plus the conv biases per output position."""
    if spec.conv_bias:
        return f"the fc's {spec.num_classes:,} and each conv bias once per output position"
    return f"the fc's {spec.num_classes:,} biases"


def explain_difference(spec: ResNetSpec) -> str:
    """A paragraph saying in words why the counters disagree for this net."""
    df = layer_table(spec)
    comp = components(spec, df)
    tot = totals_by_key(spec, df)
    core = comp["conv + fc MACs"]
    lines = [
        f"All counters agree on the conv + fc core: {core:,} multiply-accumulates.",
        f"torchinfo adds the {comp['BatchNorm parameters']:,} BatchNorm parameters once each and "
        f"{comp['bias adds']:,} bias adds ({_bias_story(spec)}): {tot['torchinfo']:,}.",
        f"fvcore counts BatchNorm per element (2 x {comp['BatchNorm elements']:,}) and the global "
        f"average pool: {tot['fvcore']:,}.",
        f"thop doubles BatchNorm again (4 per element) but ignores ReLU and max-pool: {tot['thop']:,}.",
        f"ptflops adds ReLU ({comp['ReLU elements']:,} elements) and both poolings, each twice (module "
        f"hook plus functional hook): {tot['ptflops']:,}.",
        f"None of the hook-based counters sees the residual add ({comp['residual-add elements']:,} "
        "elements): it is a tensor operation, not a module.",
    ]
    if spec.block == "bottleneck":
        other = spec.replace(stride_on="1x1" if spec.stride_on == "3x3" else "3x3")
        other_core = exact_sum(layer_table(other)["macs"])
        v1, v15 = (other_core, core) if spec.stride_on == "3x3" else (core, other_core)
        lines.append(
            f"The paper's Table 1 uses v1 bottlenecks (stride 2 on the first 1x1 conv): {v1:,} MACs. "
            f"torchvision's v1.5 moves the stride to the 3x3, which then runs at the higher "
            f"resolution: {v15:,} MACs (+{(v15 - v1) / v1:.1%}), for better accuracy."
        )
    return "\n".join(lines)
