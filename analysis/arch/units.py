"""Residual units: one record for every residual join, whether a spec's plan says it or a graph shows it.

A :class:`Unit` is y = after(a · s(x) + b · F(x)) found somewhere in a net: where it sits (the owning
module path), what its shortcut s is (identity, a parameter-free zero-pad, or a projection with
weights), how the paths join (:class:`~analysis.arch.blockplan.Join`: the coefficients a and b and what
follows the add), its input and output shapes, and what its branch F costs. Units nest: a
transformer block's MLP unit sits after its attention unit, a unit found inside another's branch
names that unit as its ``parent``.

:func:`plan_units` reads a spec-built net's units off its :class:`~analysis.arch.blockplan.NetPlan` (and
the cost tracer's rows); :mod:`analysis.arch.graphnet` finds them in an exported program's graph. Both
give this record, so a table or diagram of units never asks where a net came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.arch.blockplan import Join, NetPlan, ShortcutKind
from analysis.arch.costs import trace_plan


@dataclass(frozen=True)
class Unit:
    """One residual unit (see the module docstring). Shapes leave out the batch axis; costs are for
    the input the shapes describe."""

    name: str  # unique within the net: the owning module path, with [k] when it holds several units
    owner: str  # the module whose forward performs the add ("" for the net itself)
    shortcut: ShortcutKind
    join: Join
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    branch_params: int
    branch_macs: int
    shortcut_params: int = 0
    parent: str | None = None  # the unit whose branch holds this one
    # where the unit sits in an opened program's graph (node names; '' for a spec's plan, which runs its
    # blocks as modules): its input x, the add, the add's operand on the shortcut side (a·s(x)), and
    # the last op that alone follows the add. Node names are the graph's, not the net's: two readings of
    # one net (decomposed or not) may name them differently, so they take no part in equality.
    entry_node: str = field(default="", compare=False)
    add_node: str = field(default="", compare=False)
    shortcut_node: str = field(default="", compare=False)
    exit_node: str = field(default="", compare=False)

    @property
    def post(self) -> str:
        """What alone consumes the sum, by kind: "relu", "bn,relu" (BN after addition), a post-norm
        transformer's "layer_norm", or "" (pre-activation, pre-norm: the stream stays clean). Read off
        ``join.after``, the one record of what follows the add."""
        return ",".join(op.kind for op in self.join.after)

    def as_row(self) -> dict[str, Any]:
        """The unit as a flat record (the CLI's JSON and the pages' tables)."""
        return {"unit": self.name, "owner": self.owner, "shortcut": self.shortcut, "join": self.join.label,
                "after": self.post, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "branch_params": self.branch_params,
                "branch_macs": self.branch_macs, "shortcut_params": self.shortcut_params, "parent": self.parent}


def plan_units(net: NetPlan) -> list[Unit]:
    """The residual units of a spec-built net, in forward order (a plain net has none): each residual
    block of the plan, with shapes and branch costs from the cost tracer's rows of that block."""
    rows = trace_plan(net)
    out: list[Unit] = []
    for plan in net.blocks:
        if not plan.residual:
            continue
        mine = [r for r in rows if r["block"] == plan.name]
        add = next(i for i, r in enumerate(mine) if r["op"] == "add")
        # the block's input is what its entry ops (VDCNN's pool) see, or its first branch op
        entered = mine[len(plan.entry):add]
        branch = [r for r in entered if r["path"] == "main" and r["op"] != "scale"]
        short = [r for r in entered if r["path"] == "shortcut"]
        out.append(Unit(name=plan.name, owner=plan.name, shortcut=plan.shortcut, join=plan.join,
                        in_shape=tuple(mine[len(plan.entry)]["in_shape"]), out_shape=tuple(mine[-1]["out_shape"]),
                        branch_params=sum(int(r["params"]) for r in branch),
                        branch_macs=sum(int(r["macs"]) for r in branch),
                        shortcut_params=sum(int(r["params"]) for r in short)))
    return out
