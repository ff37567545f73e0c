"""Readings in words of the lesion sweeps that move units by position (swap, repeat, parallel:
:mod:`analysis.experiments.lesion`), computed from their tables so a page never claims more than the
numbers show, and the one line that says which candidates a sweep left out and why.

A row's ``units`` is written by :mod:`analysis.experiments.lesion`'s plans: "a<->b" (swap), "a x2"
(repeat), "a || b" (parallel); the readings turn it back into words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

#: The sweeps a reading here applies to: each row one position, the intact net at index -1.
POSITION_SWEEPS = ("swap", "repeat", "parallel")
#: What one row of each sweep did, for legends and readings.
MOVED = {"swap": "pair swapped", "repeat": "run twice", "parallel": "pair run in parallel"}


def move_text(kind: str, units: str) -> str:
    """'swapping blocks.1 and blocks.2', 'repeating blocks.2', 'running blocks.1 and blocks.2 in parallel'."""
    if kind == "swap":
        return "swapping " + " and ".join(units.split("<->"))
    if kind == "repeat":
        return f"repeating {units.removesuffix(' x2')}"
    if kind == "parallel":
        return "running " + " and ".join(units.split(" || ")) + " in parallel"
    return units


def position_reading(df: pd.DataFrame, kind: str, inputs: int = 0) -> str:
    """What one net's swap, repeat or parallel sweep shows: its intact error, the change that costs the
    most and the one that costs the least (in percentage points of test error against intact), and
    the median cost over the changes run. With ``inputs`` (the test set's size) it says that this is
    one trained net and what one test input weighs, so a ranking within that step is not read as more."""
    intact = float(df.loc[df["index"] == -1, "error"].iloc[0])
    rows = df[df["index"] >= 0]
    head = f"intact {100 * intact:.1f} %"
    if rows.empty:
        return f"{head}; no change was run."
    cost = 100 * (rows["error"] - intact)
    worst, least = rows.loc[cost.idxmax()], rows.loc[cost.idxmin()]
    top = float(cost.max())
    parts = [head]
    if top > 0:
        parts.append(f"{move_text(kind, str(worst['units']))} costs the most: {top:+.1f} pp "
                     f"({100 * float(worst['error']):.1f} %)")
    else:
        parts.append(f"no change raises the error (the costliest, {move_text(kind, str(worst['units']))}: "
                     f"{top:+.1f} pp)")
    if len(rows) > 1:
        parts.append(f"the least, {move_text(kind, str(least['units']))}: {float(cost.min()):+.1f} pp; median "
                     f"{float(cost.median()):+.1f} pp over {len(rows)} changes")
    if inputs > 0:
        parts.append(f"one trained net, one run: one test input is {100 / inputs:.2f} pp")
    return "; ".join(parts) + "."


def skipped_caption(skipped: Mapping[str, Sequence[str]], refused: Mapping[str, str]) -> str | None:
    """One line naming, per net, the candidates its chain refused (``skipped``: "label: reason" lines,
    a sweep's ``SweepPlan.skipped``) and the nets not run at all (``refused``: the reason); None when
    nothing was left out."""
    parts = [f"{net}: " + "; ".join(lines) for net, lines in skipped.items() if lines]
    parts += [f"{net} not run: {why}" for net, why in refused.items()]
    return ("Skipped — " + " | ".join(parts) + ".") if parts else None
