"""Exact per-layer costs of a ResNet, computed from its spec without allocating a single weight.

Every operation the forward pass performs becomes one row: output shape, parameters, multiply-
accumulates (MACs) of conv/linear layers, the element-wise work of BatchNorm, ReLU, pooling and
the residual add in separate columns, receptive field and jump (effective stride), and activation
memory. Rolling rows up gives block, stage and model totals; :mod:`analysis.conventions` turns the
same rows into the totals of torchinfo, fvcore, thop, ptflops and the paper.

Row ids are torchvision module names (``layer1.0.conv1``); an op applied by a module more than once
(torchvision reuses ``relu`` inside a block) gets ``@k``, the residual add is ``<block>@add``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .blockplan import BlockPlan, Op, block_plans
from .errors import ConfigError
from .specs import ResNetSpec, conv_out, validate

BYTES_PER_FLOAT32 = 4

COLUMNS = [
    "id", "module", "op", "stage", "block", "path", "in_shape", "out_shape", "kernel", "stride",
    "groups", "params", "bn_params", "macs", "bias_adds", "bn_elems", "relu_elems", "pool_in_elems",
    "pool_out_elems", "add_elems", "in_elems", "out_elems", "rf", "jump", "act_bytes",
]

# Numeric columns that add up when rows are rolled up.
SUM_COLUMNS = ["params", "bn_params", "macs", "bias_adds", "bn_elems", "relu_elems",
               "pool_in_elems", "pool_out_elems", "add_elems", "act_bytes", "flops",
               "flops_bn", "flops_relu", "flops_pool", "flops_add"]

LEVELS = ("layer", "block", "stage", "model")


@dataclass
class _Cursor:
    """The tensor flowing along the main path: shape plus receptive field and jump."""

    c: int
    h: int
    w: int
    rf: int = 1
    jump: int = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.c, self.h, self.w)

    @property
    def numel(self) -> int:
        return self.c * self.h * self.w


class _Tracer:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.uses: dict[str, int] = {}

    def _row(self, module: str, op: str, stage: str, block: str, path: str,
             cin: _Cursor, cout: _Cursor, **extra: int) -> None:
        n = self.uses.get(module, 0) + 1
        self.uses[module] = n
        row_id = module if op != "add" else f"{module}@add"
        if op == "relu" and n > 1:
            row_id = f"{module}@{n}"
        row = {
            "id": row_id, "module": module, "op": op, "stage": stage, "block": block, "path": path,
            "in_shape": cin.shape, "out_shape": cout.shape, "kernel": 0, "stride": 1, "groups": 1,
            "params": 0, "bn_params": 0, "macs": 0, "bias_adds": 0, "bn_elems": 0,
            "relu_elems": 0, "pool_in_elems": 0, "pool_out_elems": 0, "add_elems": 0,
            "in_elems": cin.numel, "out_elems": cout.numel, "rf": cout.rf, "jump": cout.jump,
            "act_bytes": cout.numel * BYTES_PER_FLOAT32,
        }
        row.update(extra)
        self.rows.append(row)

    def conv(self, module: str, stage: str, block: str, path: str, x: _Cursor, cout: int,
             k: int, s: int, p: int, groups: int = 1, bias: bool = False) -> _Cursor:
        h, w = conv_out(x.h, k, s, p), conv_out(x.w, k, s, p)
        y = _Cursor(cout, h, w, x.rf + (k - 1) * x.jump, x.jump * s)
        weights = k * k * (x.c // groups) * cout  # ResNet convs feed a BN, so they carry no bias
        biases = cout if bias else 0
        self._row(module, "conv", stage, block, path, x, y, kernel=k, stride=s, groups=groups,
                  params=weights + biases, macs=weights * h * w, bias_adds=biases * h * w)
        return y

    def bn(self, module: str, stage: str, block: str, path: str, x: _Cursor) -> _Cursor:
        y = _Cursor(x.c, x.h, x.w, x.rf, x.jump)
        self._row(module, "bn", stage, block, path, x, y, params=2 * x.c, bn_params=2 * x.c,
                  bn_elems=x.numel)
        return y

    def relu(self, module: str, stage: str, block: str, path: str, x: _Cursor) -> _Cursor:
        y = _Cursor(x.c, x.h, x.w, x.rf, x.jump)
        self._row(module, "relu", stage, block, path, x, y, relu_elems=x.numel)
        return y

    def maxpool(self, module: str, x: _Cursor, k: int = 3, s: int = 2, p: int = 1) -> _Cursor:
        h, w = conv_out(x.h, k, s, p), conv_out(x.w, k, s, p)
        y = _Cursor(x.c, h, w, x.rf + (k - 1) * x.jump, x.jump * s)
        self._row(module, "maxpool", "stem", "stem", "main", x, y, kernel=k, stride=s,
                  pool_in_elems=x.numel, pool_out_elems=y.numel)
        return y

    def avgpool(self, module: str, x: _Cursor) -> _Cursor:
        # Global average pooling: a kernel the size of the map, so the field grows by (H-1)*jump.
        y = _Cursor(x.c, 1, 1, x.rf + (max(x.h, x.w) - 1) * x.jump, x.jump * max(x.h, x.w))
        self._row(module, "avgpool", "head", "head", "main", x, y, kernel=max(x.h, x.w),
                  pool_in_elems=x.numel, pool_out_elems=y.numel)
        return y

    def fc(self, module: str, x: _Cursor, out: int) -> _Cursor:
        y = _Cursor(out, 1, 1, x.rf, x.jump)
        self._row(module, "fc", "head", "head", "main", x, y, params=x.c * out + out,
                  macs=x.c * out, bias_adds=out)
        return y

    def pad(self, module: str, stage: str, block: str, x: _Cursor, cout: int, s: int) -> _Cursor:
        h, w = -(-x.h // s), -(-x.w // s)  # x[:, :, ::s, ::s]
        y = _Cursor(cout, h, w, x.rf, x.jump * s)
        self._row(module, "pad", stage, block, "shortcut", x, y, stride=s)
        return y

    def add(self, block: str, stage: str, main: _Cursor, short: _Cursor) -> _Cursor:
        if main.shape != short.shape:  # pragma: no cover - a builder bug, not user input
            raise RuntimeError(f"{block}: residual {main.shape} != shortcut {short.shape}")
        y = _Cursor(main.c, main.h, main.w, max(main.rf, short.rf), main.jump)
        self._row(block, "add", stage, block, "main", main, y, add_elems=y.numel)
        return y


def _block(t: _Tracer, plan: BlockPlan, x: _Cursor) -> _Cursor:
    """Trace one block from its plan: the branch ops, the shortcut ops, the add, the activation."""
    b, stage = plan.name, plan.stage_name

    def run(op: Op, y: _Cursor, path: str) -> _Cursor:
        module = f"{b}.{op.name}"
        if op.kind == "conv":
            return t.conv(module, stage, b, path, y, op.cout, op.kernel, op.stride, op.padding, op.groups, op.bias)
        if op.kind == "bn":
            return t.bn(module, stage, b, path, y)
        if op.kind == "relu":
            return t.relu(module, stage, b, path, y)
        return t.pad(module, stage, b, y, op.cout, op.stride)

    y = x
    for op in plan.residual_ops:
        y = run(op, y, "main")
    if plan.residual:
        short = x
        for op in plan.shortcut_ops:
            short = run(op, short, "shortcut")
        y = t.add(b, stage, y, short)
    if plan.activation_after_add:
        y = t.relu(f"{b}.relu", stage, b, "main", y)
    return y


def trace(spec: ResNetSpec) -> list[dict]:
    """Every operation of the forward pass for one sample, in order, as plain dicts."""
    validate(spec)
    t = _Tracer()
    x = _Cursor(spec.in_channels, spec.input_size, spec.input_size)
    if spec.stem == "imagenet":
        x = t.conv("conv1", "stem", "stem", "main", x, spec.stem_width, 7, 2, 3)
    else:
        x = t.conv("conv1", "stem", "stem", "main", x, spec.stem_width, 3, 1, 1)
    x = t.bn("bn1", "stem", "stem", "main", x)
    x = t.relu("relu", "stem", "stem", "main", x)
    if spec.stem == "imagenet":
        x = t.maxpool("maxpool", x)
    for plan in block_plans(spec):
        x = _block(t, plan, x)
    if spec.preact:
        x = t.bn("bn_final", "head", "head", "main", x)
        x = t.relu("relu", "head", "head", "main", x)
    x = t.avgpool("avgpool", x)
    t.fc("fc", x, spec.num_classes)
    return t.rows


def layer_table(spec: ResNetSpec) -> pd.DataFrame:
    """The per-layer cost table (one row per op) with our FLOP convention added.

    FLOPs here count every floating-point operation of inference: 2 per MAC (multiply + add), 1 per
    fc bias add, 2 per BatchNorm element (eval-mode BN folds to one scale and one shift), 1 per ReLU
    element, 1 per residual-add element, k*k-1 comparisons per max-pool output and 1 add per
    average-pool input element.
    """
    df = pd.DataFrame(trace(spec), columns=COLUMNS)
    df["flops_bn"] = 2 * df["bn_elems"]
    df["flops_relu"] = df["relu_elems"]
    maxpool = df["op"] == "maxpool"
    df["flops_pool"] = df["pool_in_elems"].where(~maxpool, df["pool_out_elems"] * (df["kernel"] ** 2 - 1))
    df["flops_add"] = df["add_elems"]
    df["flops"] = (2 * df["macs"] + df["bias_adds"] + df["flops_bn"] + df["flops_relu"]
                   + df["flops_pool"] + df["flops_add"])
    return df


@dataclass(frozen=True)
class Totals:
    """Model-level totals for one sample."""

    params: int
    macs: int
    flops: int
    torchinfo_mult_adds: int
    activation_bytes: int
    output_shape: tuple[int, int, int]
    receptive_field: int
    num_blocks: int
    depth: int


def totals(spec: ResNetSpec, table: pd.DataFrame | None = None) -> Totals:
    df = layer_table(spec) if table is None else table
    return Totals(
        params=int(df["params"].sum()),
        macs=int(df["macs"].sum()),
        flops=int(df["flops"].sum()),
        torchinfo_mult_adds=torchinfo_mult_adds(df),
        activation_bytes=int(df["act_bytes"].sum()),
        output_shape=tuple(df["out_shape"].iloc[-1]),
        # The global pool makes the field "everything"; report the field of the last feature map.
        receptive_field=int(df.loc[~df["op"].isin(["avgpool", "fc"]), "rf"].max()),
        num_blocks=spec.num_blocks,
        depth=spec.depth,
    )


def torchinfo_mult_adds(df: pd.DataFrame) -> int:
    """torchinfo 1.8's rule: a conv adds (its params) x (output H*W); any other layer with
    parameters adds its parameter count once (fc weight + bias, BatchNorm gamma + beta)."""
    return int(df["macs"].sum() + df["bias_adds"].sum() + df["bn_params"].sum())


def rollup(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """Aggregate the layer table to ``layer`` (unchanged), ``block``, ``stage`` or ``model``."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "layer":
        return df.copy()
    key = {"block": "block", "stage": "stage", "model": None}[level]
    groups = [("model", df)] if key is None else list(df.groupby(key, sort=False))
    cols = [c for c in SUM_COLUMNS if c in df.columns]
    out = []
    for name, g in groups:
        row = {"id": name, "stage": g["stage"].iloc[0], "layers": len(g),
               "in_shape": g["in_shape"].iloc[0], "out_shape": g["out_shape"].iloc[-1],
               "rf": int(g["rf"].max()), "jump": int(g["jump"].iloc[-1])}
        row.update({c: int(g[c].sum()) for c in cols})
        if key == "block":
            row["downsample"] = bool((g["path"] == "shortcut").any())
        out.append(row)
    return pd.DataFrame(out)


def by_op(df: pd.DataFrame) -> pd.DataFrame:
    """Parameters and MACs per layer type (conv 1x1 / 3x3 / 7x7 split), for the charts."""
    kind = df["op"].where(df["op"] != "conv", "conv " + df["kernel"].astype(str) + "x" + df["kernel"].astype(str))
    kind = kind.where(df["path"] != "shortcut", kind + " (shortcut)")
    g = df.assign(kind=kind).groupby("kind", sort=False)[["params", "macs", "flops"]].sum()
    return g.reset_index()


def receptive_field_growth(df: pd.DataFrame) -> pd.DataFrame:
    """Receptive field and jump after each main-path conv/pool: where the field grows."""
    m = df[(df["path"] == "main") & df["op"].isin(["conv", "maxpool", "avgpool", "add"])]
    out = m[["id", "stage", "op", "rf", "jump"]].reset_index(drop=True)
    out["growth"] = out["rf"].diff().fillna(out["rf"]).astype(int)
    return out
