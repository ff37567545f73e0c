"""Exact per-layer costs of a ResNet, computed from its spec without allocating a single weight.

Every operation the forward pass performs becomes one row: output shape, parameters, multiply-
accumulates (MACs) of conv/linear layers, the element-wise work of BatchNorm, ReLU, pooling and
the residual add in separate columns, receptive field and jump (effective stride), and activation
memory. Rolling rows up gives block, stage and model totals; :mod:`analysis.arch.conventions` turns the
same rows into the totals of torchinfo, fvcore, thop, ptflops and the paper.

Row ids are torchvision module names (``layer1.0.conv1``); an op applied by a module more than once
(torchvision reuses ``relu`` inside a block) gets ``@k``, the residual add is ``<block>@add``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, SupportsInt

import numpy as np
import pandas as pd

from analysis.arch.blockplan import BlockPlan, NetPlan, net_plan
from analysis.arch.ops import Flow, Op, flow
from analysis.arch.specs import ResNetSpec, as_int, validate
from analysis.core.errors import ConfigError, SpecError

BYTES_PER_FLOAT32 = 4

COLUMNS = [
    "id", "module", "op", "stage", "block", "path", "in_shape", "out_shape", "kernel", "stride",
    "groups", "params", "bn_params", "macs", "bias_adds", "bn_elems", "relu_elems", "pool_in_elems",
    "pool_out_elems", "add_elems", "sigmoid_elems", "mul_elems", "in_elems", "out_elems", "rf", "jump", "act_bytes",
]

# Numeric columns that add up when rows are rolled up.
SUM_COLUMNS = ["params", "bn_params", "macs", "bias_adds", "bn_elems", "relu_elems",
               "pool_in_elems", "pool_out_elems", "add_elems", "sigmoid_elems", "mul_elems", "act_bytes",
               "flops", "flops_bn", "flops_relu", "flops_pool", "flops_add", "flops_gate"]

# Columns that count things (parameters, operations, elements, bytes). They hold Python ints in
# object columns, so every sum of them is exact at any size a spec allows: int64 would wrap past
# 9.2e18 without a word (a 65536-wide net at 4096 px has ~1e19 MACs). Shapes, kernel, stride, groups,
# receptive field and jump stay int64: they are small and never summed.
COUNT_COLUMNS = frozenset(SUM_COLUMNS) | {"in_elems", "out_elems"}

LEVELS = ("layer", "block", "stage", "model")


class _Tracer:
    """Rows of the cost table, one per op application, in forward order. What an op counts and how
    it changes the flow comes from its registry row (:mod:`analysis.arch.ops`); the tracer only adds the
    join's rows (gate sigmoid, weighting, add) and the row bookkeeping."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.uses: dict[str, int] = {}

    def _row(self, module: str, op: str, stage: str, block: str, path: str,
             cin: Flow, cout: Flow, **extra: int) -> None:
        n = self.uses.get(module, 0) + 1
        self.uses[module] = n
        row_id = module if op not in ("add", "sigmoid", "scale") else f"{module}@{op}"
        if op == "relu" and n > 1:
            row_id = f"{module}@{n}"
        row = {
            "id": row_id, "module": module, "op": op, "stage": stage, "block": block, "path": path,
            "in_shape": cin.shape, "out_shape": cout.shape, "kernel": 0, "stride": 1, "groups": 1,
            "params": 0, "bn_params": 0, "macs": 0, "bias_adds": 0, "bn_elems": 0,
            "relu_elems": 0, "pool_in_elems": 0, "pool_out_elems": 0, "add_elems": 0, "sigmoid_elems": 0,
            "mul_elems": 0,
            "in_elems": cin.numel, "out_elems": cout.numel, "rf": cout.rf, "jump": cout.jump,
            "act_bytes": cout.numel * BYTES_PER_FLOAT32,
        }
        row.update(extra)
        self.rows.append(row)

    def op(self, op: Op, module: str, stage: str, block: str, path: str, x: Flow) -> Flow:
        """One application of ``op`` (module name ``module``) to ``x``."""
        y = flow(op, x)
        self._row(module, op.kind, stage, block, path, x, y, **op.rule.counts(op, x, y))
        return y

    def sigmoid(self, module: str, stage: str, block: str, x: Flow) -> Flow:
        self._row(module, "sigmoid", stage, block, "gate", x, x, sigmoid_elems=x.numel)
        return x

    def scale(self, block: str, stage: str, x: Flow, elementwise_ops: int) -> None:
        """The join's weighting before the add (lambda * s, (1 - g) * s, g * F): ``elementwise_ops``
        multiplies or subtractions per output element. Shape and field are unchanged."""
        self._row(block, "scale", stage, block, "main", x, x, mul_elems=elementwise_ops * x.numel)

    def add(self, block: str, stage: str, main: Flow, short: Flow) -> Flow:
        if main.shape != short.shape:  # pragma: no cover - a builder bug, not user input
            raise RuntimeError(f"{block}: residual {main.shape} != shortcut {short.shape}")
        y = Flow(main.c, main.sizes, max(main.rf, short.rf), main.jump)
        self._row(block, "add", stage, block, "main", main, y, add_elems=y.numel)
        return y


def _block(t: _Tracer, plan: BlockPlan, x: Flow) -> Flow:
    """Trace one block from its plan: the branch ops, the shortcut ops, the join, what follows it."""
    b, stage = plan.name, plan.stage_name

    def run(ops: tuple[Op, ...], y: Flow, path: str) -> Flow:
        for op in ops:
            y = t.op(op, f"{b}.{op.name}", stage, b, path, y)
        return y

    x = run(plan.entry, x, "main")  # both paths start from the pooled input (VDCNN)
    y = run(plan.residual_ops, x, "main")
    if plan.residual:
        short = run(plan.shortcut_ops, x, "shortcut")
        if plan.gate is not None:  # g = sigmoid(W_g x + b_g), from the block input
            t.sigmoid(f"{b}.gate", stage, b, run((plan.gate,), x, "gate"))
        if plan.join.elementwise_ops:
            t.scale(b, stage, y, plan.join.elementwise_ops)
        y = t.add(b, stage, y, short)
    return run(plan.after_add, y, "main")


def trace(spec: ResNetSpec) -> list[dict[str, Any]]:
    """Every operation of the forward pass for one sample, in order, as plain dicts."""
    validate(spec)
    return trace_plan(net_plan(spec))


def trace_plan(net: NetPlan) -> list[dict[str, Any]]:
    """Every operation of a net plan's forward pass for one sample, in order, as plain dicts."""
    t = _Tracer()
    x = net.input
    for op in net.stem:
        x = t.op(op, op.name, "stem", "stem", "main", x)
    for plan in net.blocks:
        x = _block(t, plan, x)
    for op in net.head:
        x = t.op(op, op.name, "head", "head", "main", x)
    return t.rows


def exact_sum(values: pd.Series | np.ndarray | Iterable[SupportsInt]) -> int:
    """The sum of counts as a Python int: exact at any size (``Series.sum()`` on int64 wraps past
    2**63, and a NumPy integer inside an object column would too, so each value goes through ``int``)."""
    items = values.tolist() if isinstance(values, (pd.Series, np.ndarray)) else values
    return sum(int(v) for v in items)


def exact_column(values: Iterable[int]) -> np.ndarray:
    """Python ints as an object array (not int64), so a DataFrame column keeps them exact."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


_INT64 = range(-(2**63), 2**63)


def arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` for a display that goes through Arrow (``st.dataframe``): an object column holding an
    int beyond int64 becomes ``Decimal`` (Arrow's decimal128 keeps all 38 digits and sorts as a
    number); every other column is left as it is. Exact either way; the input is not changed."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and any(type(v) is int and v not in _INT64 for v in out[c].tolist()):
            out[c] = [Decimal(v) if type(v) is int else v for v in out[c].tolist()]
    return out


def layer_table(spec: ResNetSpec) -> pd.DataFrame:
    """The per-layer cost table (one row per op) with our FLOP convention added.

    FLOPs here count every floating-point operation of inference: 2 per MAC (multiply + add), 1 per
    fc bias add, 2 per BatchNorm element (eval-mode BN folds to one scale and one shift), 1 per ReLU
    element, 1 per residual-add element, k*k-1 (2-D) or k-1 (1-D) comparisons per max-pool output and 1 add per
    average-pool input element, k*L - k*(k+1)/2 comparisons per channel for k-max pooling over L samples
    (:func:`kmax_comparisons`); for He et al. 2016's variants, 1 per sigmoid element of a gate and 1
    per elementwise multiply or subtraction of the join (lambda * s, 1 - g, (1 - g) * s, g * F).

    The count columns (:data:`COUNT_COLUMNS`) hold Python ints (object dtype): sums are exact.
    """
    return _with_flops(trace(spec))


def _with_flops(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Traced rows as the layer table, FLOP columns added (the convention of :func:`layer_table`)."""
    cols: dict[str, list[Any]] = {c: [r[c] for r in rows] for c in COLUMNS}
    cols["flops_bn"] = [2 * n for n in cols["bn_elems"]]
    cols["flops_relu"] = list(cols["relu_elems"])
    # a k-wide max pool compares k - 1 times per output, a k x k one k*k - 1 times
    cols["flops_pool"] = [out * (k ** (len(shape) - 1) - 1) if op == "maxpool"
                          else kmax_comparisons(n_in, out, k) if op == "kmax" else n
                          for op, n, out, k, shape, n_in in
                          zip(cols["op"], cols["pool_in_elems"], cols["pool_out_elems"], cols["kernel"],
                              cols["out_shape"], cols["in_elems"], strict=True)]
    cols["flops_add"] = list(cols["add_elems"])
    cols["flops_gate"] = [sg + mu for sg, mu in zip(cols["sigmoid_elems"], cols["mul_elems"], strict=True)]
    cols["flops"] = [2 * m + b + bn + r + p + a + gt for m, b, bn, r, p, a, gt in
                     zip(cols["macs"], cols["bias_adds"], cols["flops_bn"], cols["flops_relu"],
                         cols["flops_pool"], cols["flops_add"], cols["flops_gate"], strict=True)]
    return pd.DataFrame({c: exact_column(v) if c in COUNT_COLUMNS else v for c, v in cols.items()})


def kmax_comparisons(in_elems: int, out_elems: int, k: int) -> int:
    """Our FLOP convention for k-max pooling of C channels of L samples (``in_elems`` = C*L, ``out_elems``
    = C*k): the comparisons of k successive maxima, the j-th over the L - j + 1 values left, L - j
    comparisons; k*L - k*(k+1)/2 per channel (k = 1: a global max pool's L - 1), exact in integers.
    What an implementation spends (a sort, a heap) differs; the hook counters count none."""
    channels = out_elems // k
    return k * in_elems - channels * k * (k + 1) // 2


class _PlanTracer(_Tracer):
    """The tracer for one plan at a shape the caller chose: a plan built from a spec is checked by
    the spec, but here an input too short for a conv, or a branch and shortcut that end in different
    shapes, is bad input, so it says which op and what to change instead of tracing nonsense."""

    def _row(self, module: str, op: str, stage: str, block: str, path: str,
             cin: Flow, cout: Flow, **extra: int) -> None:
        if min(cout.sizes) < 1:
            k, s = extra.get("kernel", 0), extra.get("stride", 1)
            raise SpecError(f"{module} ({op}, kernel {k}, stride {s}) leaves no output: its input "
                            f"{'×'.join(map(str, cin.shape))} is shorter than its kernel even after padding "
                            f"(output size {'×'.join(map(str, cout.sizes))}); use a longer input, a smaller "
                            "kernel or more padding")
        super()._row(module, op, stage, block, path, cin, cout, **extra)

    def add(self, block: str, stage: str, main: Flow, short: Flow) -> Flow:
        if main.shape != short.shape:
            raise SpecError(f"{block}: the residual branch ends in {'×'.join(map(str, main.shape))} but the "
                            f"shortcut in {'×'.join(map(str, short.shape))}; the add needs equal shapes "
                            "(a projection shortcut, or the stride on one conv only)")
        return super().add(block, stage, main, short)


def plan_table(plan: BlockPlan, input_shape: tuple[int, ...]) -> pd.DataFrame:
    """The per-layer cost table of one block on its own, for an input of ``input_shape`` (C, L) or
    (C, H, W) and batch 1: the columns and FLOP convention of :func:`layer_table`. For blocks that no
    spec describes (the notes' Conv1d block, :mod:`analysis.arch.seed`); raises ``SpecError`` when the
    shape does not fit the plan or the block cannot run at it."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != plan.dims + 1:
        raise SpecError(f"input_shape must be {plan.dims + 1} whole numbers (channels and "
                        f"{'length' if plan.dims == 1 else 'height, width'}), got {input_shape!r}")
    ints = [n for n in map(as_int, input_shape) if n is not None and n >= 1]
    if len(ints) != len(input_shape):
        raise SpecError(f"input_shape must hold whole numbers of at least 1, got {input_shape!r}")
    c, *sizes = ints
    if c != plan.cin:
        raise SpecError(f"{plan.name} takes {plan.cin} channels, the input has {c}")
    t = _PlanTracer()
    _block(t, plan, Flow(c, tuple(sizes)))
    return _with_flops(t.rows)


@dataclass(frozen=True)
class Totals:
    """Model-level totals for one sample."""

    params: int
    macs: int
    flops: int
    torchinfo_mult_adds: int
    activation_bytes: int
    output_shape: tuple[int, ...]
    receptive_field: int
    num_blocks: int
    depth: int
    receptive_field_stage: str = ""  # the stage whose last output has that field (its row in a rollup)


def totals(spec: ResNetSpec, table: pd.DataFrame | None = None) -> Totals:
    df = layer_table(spec) if table is None else table
    # the rows before the head's pooling: the global (or k-max) pool makes the field "everything"
    ops = df["op"].tolist()
    pool = next((i for i, op in enumerate(ops) if op in ("avgpool", "kmax")), len(ops))
    features = df.iloc[:pool]
    return Totals(
        params=exact_sum(df["params"]),
        macs=exact_sum(df["macs"]),
        flops=exact_sum(df["flops"]),
        torchinfo_mult_adds=torchinfo_mult_adds(df),
        activation_bytes=exact_sum(df["act_bytes"]),
        output_shape=tuple(df["out_shape"].iloc[-1]),
        receptive_field=int(features["rf"].max()),
        num_blocks=spec.num_blocks,
        depth=spec.depth,
        receptive_field_stage=str(features["stage"].iloc[-1]),
    )


def torchinfo_mult_adds(df: pd.DataFrame) -> int:
    """torchinfo 1.8's rule: a conv adds (its params) x (output H*W); any other layer with
    parameters adds its parameter count once (fc weight + bias, BatchNorm gamma + beta)."""
    return exact_sum(df["macs"]) + exact_sum(df["bias_adds"]) + exact_sum(df["bn_params"])


def summary_text(spec: ResNetSpec, df: pd.DataFrame | None = None, batch: int = 1) -> str:
    """A plain-text summary to paste into an issue or a paper's appendix, laid out as torchinfo's:
    one line per op (its id, kind, output shape with the batch, parameters, MACs), then the totals.
    MACs, FLOPs and activation memory scale with ``batch`` (every input costs the same); parameters
    do not; the torchinfo figure is its batch-1 rule (torchinfo_mult_adds)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SpecError(f"batch must be a whole number >= 1, got {batch!r}")
    df = layer_table(spec) if df is None else df
    t = totals(spec, df)
    rows = [(f"{r.id} ({r.op})", "[" + ", ".join(str(v) for v in (batch, *r.out_shape)) + "]",
             f"{int(r.params):,}" if r.params else "--", f"{batch * int(r.macs):,}" if r.macs else "--")
            for r in df.itertuples()]
    head = ("Layer (op)", "Output shape", "Param #", f"MACs (batch {batch})")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True)))

    rule = "=" * len(line(head))
    shape = "x".join(str(v) for v in (batch, *spec.input_shape()))
    return "\n".join([
        f"{spec.name} ({spec.variant}), input {shape}", rule, line(head), rule, *map(line, rows), rule,
        f"Total params: {t.params:,}",
        f"Trainable params: {t.params:,} (every parameter of a net built here trains; BatchNorm's running "
        "statistics are buffers, not parameters)",
        f"MACs (conv + fc), batch {batch}: {batch * t.macs:,}",
        f"FLOPs (all ops), batch {batch}: {batch * t.flops:,}",
        f"torchinfo mult-adds, batch 1: {t.torchinfo_mult_adds:,}",
        f"Activation memory (float32, every op's output), batch {batch}: {batch * t.activation_bytes:,} bytes",
        rule])


def rollup(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """Aggregate the layer table to ``layer`` (unchanged), ``block``, ``stage`` or ``model``.

    Sums are exact Python ints (object columns, as in the layer table)."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "layer":
        return df.copy()
    key = {"block": "block", "stage": "stage", "model": None}[level]
    n = len(df)
    names: list[object] = ["model"] * n if key is None else df[key].tolist()
    groups: dict[object, list[int]] = {}  # first-appearance order, as groupby(sort=False)
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    sums = [c for c in SUM_COLUMNS if c in df.columns]
    col = {c: df[c].tolist() for c in ["stage", "in_shape", "out_shape", "rf", "jump", "path", *sums]
           if c in df.columns}
    out: dict[str, list[Any]] = {c: [] for c in ["id", "stage", "layers", "in_shape", "out_shape", "rf", "jump"]}
    out.update({c: [] for c in sums})
    if key == "block":
        out["downsample"] = []
    for name, idx in groups.items():
        first, last = idx[0], idx[-1]
        out["id"].append(name)
        out["stage"].append(col["stage"][first])
        out["layers"].append(len(idx))
        out["in_shape"].append(col["in_shape"][first])
        out["out_shape"].append(col["out_shape"][last])
        out["rf"].append(max(int(col["rf"][i]) for i in idx))
        out["jump"].append(int(col["jump"][last]))
        for c in sums:
            values = col[c]
            out[c].append(sum(int(values[i]) for i in idx))
        if key == "block":
            out["downsample"].append(any(col["path"][i] == "shortcut" for i in idx))
    return pd.DataFrame({c: exact_column(v) if c in COUNT_COLUMNS else v for c, v in out.items()})


def by_op(df: pd.DataFrame) -> pd.DataFrame:
    """Parameters, MACs and FLOPs per layer type (conv 1x1 / 3x3 / 7x7 split, or conv 1 / 3 for 1-D;
    shortcut convs apart),
    for the charts; exact Python-int sums, layer types in order of first appearance."""
    # a 1-D conv's kernel is its width ("conv 3"), a 2-D one's k x k
    kinds = [("conv " + "x".join([str(k)] * (len(shape) - 1))) if op == "conv" else op for op, k, shape in
             zip(df["op"].tolist(), df["kernel"].tolist(), df["out_shape"].tolist(), strict=True)]
    kinds = [f"{kind} (shortcut)" if path == "shortcut" else kind
             for kind, path in zip(kinds, df["path"].tolist(), strict=True)]
    metrics = ("params", "macs", "flops")
    values = {m: df[m].tolist() for m in metrics}
    acc: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        row = acc.setdefault(kind, [0, 0, 0])
        for j, m in enumerate(metrics):
            row[j] += int(values[m][i])
    return pd.DataFrame({"kind": list(acc), **{m: exact_column([row[j] for row in acc.values()])
                                                 for j, m in enumerate(metrics)}})


def receptive_field_growth(df: pd.DataFrame) -> pd.DataFrame:
    """Receptive field and jump after each main-path conv/pool: where the field grows."""
    m = df[(df["path"] == "main") & df["op"].isin(["conv", "maxpool", "avgpool", "add"])]
    out = m[["id", "stage", "op", "rf", "jump"]].reset_index(drop=True)
    out["growth"] = out["rf"].diff().fillna(out["rf"]).astype(int)
    return out
