"""How reproducible a recorded number is, measured: runs of a recorded grid trained again, in a fresh
run store, with the same thread count (expected bit-identical: the CPU kernels are deterministic for
a given thread count) and with another (a changed reduction order, as another machine or core count
gives), each set beside the recorded number seed by seed.

The README's reproducibility statement quotes the file this writes (``results/reproducibility.json``,
``tools/make_reproducibility.py``), not a belief.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.core.errors import ConfigError
from analysis.core.io import read_bounded
from analysis.core.meta import TrainConfig
from analysis.core.reporting import write_json
from analysis.run.executor import DataSpec, InProcessExecutor
from analysis.store.runstore import RunStore
from analysis.studies import grid as g

FORMAT = "resnet-lens-reproducibility/1"
MAX_BYTES = 1 << 20
#: Columns of :func:`table`
COLUMNS = ["threads", "seed", "recorded", "rerun", "diff", "images", "identical"]


def regrid(definition: Mapping[str, Any], variant: str, depth: int, seeds: Sequence[int]) -> g.Grid:
    """The part of a recorded grid (its file's ``grid`` definition) that is ``variant`` at ``depth``
    for ``seeds``: the same recipe and data, so the same run-store keys."""
    try:
        recipe = {k: v for k, v in definition["recipe"].items() if k != "seed"}
        return g.Grid((variant,), (int(depth),), tuple(int(s) for s in seeds), TrainConfig(**recipe),
                      DataSpec(**definition["data"]))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not a grid definition this version can train again: {exc}") from None


def rerun(definition: Mapping[str, Any], variant: str, depth: int, seeds: Sequence[int], threads: int,
          store_dir: Path, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train the runs again with ``threads`` torch threads each, in the fresh store ``store_dir`` (so
    nothing is found and reused): the grid's results table."""
    if store_dir.is_dir() and any(store_dir.iterdir()):
        raise ConfigError(f"{store_dir}: give an empty folder, so that every run trains again")
    grid = regrid(definition, variant, depth, seeds)

    def said(p: g.GridProgress) -> None:
        if progress is not None and p.finished is not None:
            f = p.finished
            progress(f"{threads} thread(s): {f['variant']} depth {f['depth']} seed {f['seed']}: test error "
                     f"{f['test_error']:.2f} %")

    return g.run_grid(grid, RunStore(store_dir), InProcessExecutor(threads), progress=said).results


def table(record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per rerun seed and thread count: the recorded test error, the rerun's, their
    difference in points and in test examples, and whether the two are the same number."""
    size = int(record["test_size"])
    recorded = {int(r["seed"]): float(r["test_error"]) for r in record["recorded"]}
    rows = []
    for rr in record["reruns"]:
        for r in rr["runs"]:
            s, new = int(r["seed"]), float(r["test_error"])
            old = recorded.get(s, math.nan)
            diff = new - old  # NaN where either side has no number (a diverged run, a seed not recorded)
            rows.append({"threads": int(rr["threads"]), "seed": s, "recorded": old, "rerun": new, "diff": diff,
                         "images": math.nan if math.isnan(diff) else round(abs(diff) * size / 100),
                         "identical": new == old})
    return pd.DataFrame(rows, columns=COLUMNS)


def statement(record: Mapping[str, Any]) -> list[str]:
    """The measured reproducibility, one sentence per thread count rerun."""
    t = table(record)
    rec_threads = int(record["recorded_threads"])
    out = []
    for threads, rows in t.groupby("threads", sort=True):
        same = int(rows["identical"].sum())
        where = "the recorded thread count" if threads == rec_threads else f"{threads} threads instead of {rec_threads}"
        said = f"{where}: {same} of {len(rows)} seeds give the recorded test error exactly"
        moved = rows[~rows["identical"] & rows["diff"].notna()]
        if len(moved):
            said += (f"; {len(moved)} move{'s' * (len(moved) == 1)} by {moved['diff'].abs().min():.2f} to "
                     f"{moved['diff'].abs().max():.2f} pp ({int(moved['images'].min())} to "
                     f"{int(moved['images'].max())} test images of {int(record['test_size']):,})")
        lost = len(rows) - same - len(moved)
        if lost:
            said += f"; {lost} without a number on one side (diverged, or not recorded)"
        out.append(said)
    return out


def save(path: Path, record: Mapping[str, Any]) -> None:
    write_json(path, {"format": FORMAT, **record}, indent=1)


def load(path: Path) -> dict[str, Any]:
    import json

    data = read_bounded(path, MAX_BYTES, "reproducibility record", ConfigError)
    if data is None:
        raise ConfigError(f"{path}: no reproducibility record there (tools/make_reproducibility.py writes it)")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a reproducibility record ({FORMAT})")
    return raw
