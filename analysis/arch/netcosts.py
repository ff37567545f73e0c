"""Tables of any net, spec-built or opened (one :class:`~analysis.arch.graphnet.GraphNet` each): totals,
costs per module depth and per op type, and the residual units, for the Explorer, Depth comparison
and their CSV files. Every number here is a sum of the net's node table; nothing is recounted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from analysis.arch.graphnet import GraphNet, no_unit_reason, summary
from analysis.arch.units import Unit
from analysis.core.errors import ConfigError

NODE_COLUMNS = ["id", "module", "op", "out_shape", "params", "macs", "flops", "act_bytes"]
UNIT_COLUMNS = ["unit", "owner", "shortcut", "join", "after", "in_shape", "out_shape", "branch_params",
                "branch_macs", "shortcut_params", "parent"]


def module_depth(net: GraphNet) -> int:
    """The deepest module path's number of components (``layer1.0.conv1`` is 3); 0 for a net whose
    every op runs in its own forward."""
    return max((len(m.split(".")) for m in net.nodes["module"] if m), default=0)


def module_table(net: GraphNet, depth: int | None) -> pd.DataFrame:
    """Parameters, MACs, FLOPs and activation bytes per module path cut at ``depth`` components (None:
    every module as it is), in order of first use; ops the net's own forward runs are ``(net)``."""
    if depth is not None and depth < 1:
        raise ConfigError(f"a module depth is a whole number >= 1, got {depth}")
    acc: dict[str, list[int]] = {}
    for row in net.nodes.itertuples(index=False):
        parts = str(row.module).split(".") if row.module else []
        key = ".".join(parts if depth is None else parts[:depth]) or "(net)"
        sums = acc.setdefault(key, [0, 0, 0, 0, 0])
        sums[0] += 1
        sums[1] += int(row.params)
        sums[2] += int(row.macs)
        sums[3] += int(row.flops)
        sums[4] += int(row.act_bytes)
    return pd.DataFrame([{"module": k, "ops": v[0], "params": v[1], "macs": v[2], "flops": v[3], "act_bytes": v[4]}
                         for k, v in acc.items()], columns=["module", "ops", "params", "macs", "flops", "act_bytes"])


def op_table(net: GraphNet) -> pd.DataFrame:
    """Parameters, MACs and FLOPs per op type (``conv2d``, ``linear``, ``layer_norm``, ...), in order of
    first appearance: where a net's cost sits."""
    acc: dict[str, list[int]] = {}
    for row in net.nodes.itertuples(index=False):
        sums = acc.setdefault(str(row.op), [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += int(row.params)
        sums[2] += int(row.macs)
        sums[3] += int(row.flops)
    return pd.DataFrame([{"kind": k, "count": v[0], "params": v[1], "macs": v[2], "flops": v[3]}
                         for k, v in acc.items()], columns=["kind", "count", "params", "macs", "flops"])


def unit_table(units: Iterable[Unit]) -> pd.DataFrame:
    """The residual units as rows (shapes as 'C×H×W' text, so a row is one CSV line)."""
    rows: list[dict[str, Any]] = []
    for u in units:
        row = u.as_row()
        row["in_shape"] = "×".join(map(str, u.in_shape))
        row["out_shape"] = "×".join(map(str, u.out_shape))
        rows.append(row)
    return pd.DataFrame(rows, columns=UNIT_COLUMNS)


def node_table(net: GraphNet) -> pd.DataFrame:
    """Every compute node, shapes as text."""
    out = net.nodes[NODE_COLUMNS].copy()
    out["out_shape"] = ["×".join(map(str, s)) for s in out["out_shape"]]
    return out


def totals_row(net: GraphNet, source: str) -> dict[str, Any]:
    """One net's totals as a row of the side-by-side comparison."""
    kinds = summary(net.units)
    return {"net": net.name, "source": source, "input": " + ".join("×".join(map(str, s)) for s in net.input_shapes),
            "params": net.params, "macs": net.macs, "flops": net.flops,
            "act_bytes": sum(int(v) for v in net.nodes["act_bytes"]), "units": kinds["units"],
            "identity": kinds["identity"], "projection": kinds["projection"], "zero-pad": kinds["pad"]}


def compare(nets: Sequence[tuple[GraphNet, str]]) -> pd.DataFrame:
    """Any set of nets side by side: one row of totals each (``source`` says where it came from)."""
    return pd.DataFrame([totals_row(net, source) for net, source in nets])


def no_units_note(net: GraphNet) -> str | None:
    """The sentence a net without residual units gets, or None when it has some."""
    return None if net.units else no_unit_reason(net)
