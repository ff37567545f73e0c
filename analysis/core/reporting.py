"""Reporting measured numbers: one writer for results files, and one sentence for the machine a
result was measured on.

**Comparisons.** The grid's and the transfer comparison's readings compare conditions by a t-test
over the seeds (:mod:`analysis.core.stats`: paired by seed where one seed's runs share their batch
order, else Welch's interval), say the 95 % interval of the difference and the smallest difference
the design detects, and give no verdict with one or two seeds. The rule this module held before
(a difference "within noise" when inside two standard errors of the difference of the means) is
gone: with two seeds its standard errors had one degree of freedom each, and "beyond 2 SE" read as
a finding what was 2 test images of 450 (issue 26).

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.core.io import atomic_write


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


def machine_text(machine: Any) -> str:
    """Where a result was measured, in one sentence, from the ``machine`` record a results file
    carries (:func:`analysis.core.machine.describe`); files written before results recorded it say
    so, and nothing is guessed for them."""
    if not isinstance(machine, Mapping):
        return "Machine not recorded (the file predates machine records)."
    threads = machine.get("threads")
    where = f" The runs trained on {machine['executor']}." if machine.get("executor") else ""
    return (f"Measured on {machine.get('cpu') or 'an unnamed CPU'} ({machine.get('cpus')} logical CPUs) with "
            f"{threads} torch thread{'s' * (threads != 1)} per run, torch {machine.get('torch')}: bit-identical "
            f"numbers are expected only on the same machine and thread count.{where}")


def write_json(path: str | os.PathLike[str], payload: Any, *, indent: int | None = None) -> Path:
    """Write ``payload`` as a JSON results file, atomically (:func:`json_bytes`)."""
    return atomic_write(Path(path), json_bytes(payload, indent=indent))


def write_csv(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write a table as a CSV results file, atomically (:func:`csv_bytes`)."""
    return atomic_write(Path(path), csv_bytes(df))


__all__ = ["csv_bytes", "finite_frame", "json_bytes", "machine_text", "plain", "records", "write_csv", "write_json"]
