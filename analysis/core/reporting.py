"""Reporting measured numbers: one rule for "within noise", one writer for results files.

**The noise rule.** The grid and the transfer comparison both report a mean over seeds and the
*sample standard deviation* of the seeds (``std``, ``ddof=1``: the spread of one run's number
from seed to seed). A reading compares two such *means*, so the noise that matters is that of the
means, not of single runs: the standard error of a mean of ``n`` seeds is ``SE = std / √n``, and
the difference of two independent means has the standard error ``√(SE_a² + SE_b²)``. A difference
``Δ = mean_a − mean_b`` is *within noise* when

    |Δ| ≤ 2 · √(SE_a² + SE_b²)          (:data:`NOISE_FACTOR` = 2)

— the usual two-standard-error band, about 95 % under a normal approximation. One run (no sample
std) gives no noise estimate: the rule then says nothing (None), and the readings say "one seed".

What this rule is not: with two or three seeds the standard errors are themselves rough estimates
and a t quantile would be wider than 2 (4.3 for two seeds on each side), so "beyond noise" with
that few seeds is a suggestion worth a few more seeds, not a significance test. The rule is kept
this simple on purpose: one line a reader can check by hand from the numbers the page shows.

Before this module the grid called a difference noise when it was within 2 · max(std_a, std_b) and
the transfer readings within 2 · √(std_a² + std_b²), both on the seeds' std rather than on the
means' standard errors; with two seeds and equal stds the first equals this rule, the second is
√2 wider.

**The results writer.** :func:`write_json` and :func:`write_csv` write every results file (the
grid's, the transfer comparison's, the lesion and path CLI tables, the stored path measurements)
atomically (:func:`analysis.core.io.atomic_write`) under one policy for numbers that are not finite:
NaN means "not measured" and ±inf is a number neither JSON nor the loaders accept, so both are
written as *missing*: ``null`` in JSON (strict JSON: no ``NaN`` or ``Infinity`` tokens, which many
readers refuse) and an empty cell in CSV (what pandas writes for NaN). A finished run is never lost
to a value a format cannot hold. Numpy scalars are written as the Python numbers they are.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.core.errors import ConfigError
from analysis.core.io import atomic_write

#: how many standard errors of the difference a difference may be and still be noise
NOISE_FACTOR = 2.0


def standard_error(std: float, n: int) -> float:
    """The standard error of the mean of ``n`` seeds whose sample standard deviation (``ddof=1``)
    is ``std``: ``std / √n``. NaN when there is no estimate (fewer than two seeds, or a NaN std)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"a number of seeds is a whole number >= 0, got {n!r}")
    if n < 2 or math.isnan(std):
        return math.nan
    return float(std) / math.sqrt(int(n))


def difference_noise(se_a: float, se_b: float) -> float:
    """``NOISE_FACTOR`` standard errors of the difference of two independent means with standard
    errors ``se_a`` and ``se_b``: ``2 · √(se_a² + se_b²)``; NaN when either is unknown (NaN)."""
    if math.isnan(se_a) or math.isnan(se_b):
        return math.nan
    return NOISE_FACTOR * math.sqrt(se_a ** 2 + se_b ** 2)


def within_noise(mean_a: float, se_a: float, mean_b: float, se_b: float) -> bool | None:
    """Whether ``mean_a − mean_b`` is within :func:`difference_noise` of the two means' standard
    errors (boundary included); None when a standard error is unknown (one seed: nothing can be said)."""
    return Difference(float(mean_a) - float(mean_b), difference_noise(se_a, se_b)).within


@dataclass(frozen=True)
class Difference:
    """``mean_a − mean_b`` and its noise band (``NOISE_FACTOR`` standard errors of the difference,
    NaN without an estimate); ``within``: the rule's verdict, None when it cannot say."""

    diff: float
    noise: float

    @property
    def within(self) -> bool | None:
        return None if math.isnan(self.noise) else abs(self.diff) <= self.noise


def compare(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Difference:
    """Two means over seeds, each given with its seeds' sample std and count, compared by the rule.
    A missing mean (NaN: every seed diverged) leaves nothing to compare: the noise is then unknown."""
    if math.isnan(float(mean_a)) or math.isnan(float(mean_b)):
        return Difference(math.nan, math.nan)
    return Difference(float(mean_a) - float(mean_b),
                      difference_noise(standard_error(std_a, n_a), standard_error(std_b, n_b)))


# ---------------------------------------------------------------------------------- results files
def plain(value: Any) -> Any:
    """``value`` as a results file holds it: numpy scalars as Python ones, NaN, ±inf and pandas'
    missing markers as None, mappings and sequences element by element. Anything else is left for
    ``json`` to refuse (a type no results file should carry is a bug, not something to stringify)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Mapping):
        return {(k.item() if isinstance(k, np.generic) else k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as plain records (:func:`plain`), every number exact (not
    ``DataFrame.to_json``, which keeps 10 significant digits)."""
    return [{str(k): plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def json_bytes(payload: Any, *, indent: int | None = None) -> bytes:
    """``payload`` as strict JSON (:func:`plain` first, so no NaN or Infinity token can appear). An
    indented file ends with a newline; the compact form is one line without one."""
    text = json.dumps(plain(payload), indent=indent, allow_nan=False)
    return (text + "\n" if indent is not None else text).encode()


def finite_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ±inf as missing (NaN; in an object column, None); ``df`` itself when it holds none."""
    out = df
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        if pd.api.types.is_float_dtype(col.dtype):
            bad = np.isinf(col.to_numpy())
            if bad.any():
                out = out.copy() if out is df else out
                out.iloc[:, i] = col.where(~bad, np.nan)
        elif col.dtype == object:
            bad = np.array([isinstance(v, (float, np.floating)) and math.isinf(v) for v in col], dtype=bool)
            if bad.any():
                out = out.copy() if out is df else out
                out.iloc[:, i] = col.where(~bad, None)
    return out


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A table as CSV, without its index; missing and non-finite numbers as empty cells."""
    text: str = finite_frame(df).to_csv(index=False)
    return text.encode()


def write_json(path: str | os.PathLike[str], payload: Any, *, indent: int | None = None) -> Path:
    """Write ``payload`` as a JSON results file, atomically (:func:`json_bytes`)."""
    return atomic_write(Path(path), json_bytes(payload, indent=indent))


def write_csv(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write a table as a CSV results file, atomically (:func:`csv_bytes`)."""
    return atomic_write(Path(path), csv_bytes(df))


__all__ = ["NOISE_FACTOR", "Difference", "compare", "csv_bytes", "difference_noise", "finite_frame", "json_bytes",
           "plain", "records", "standard_error", "within_noise", "write_csv", "write_json"]
