"""The one number format of the app, for metrics, captions, tables and chart labels alike.

- Integers (counts of parameters, MACs, paths) are exact, with thousands separators: ``1,179,648``.
- Large counts in a metric are shortened with SI prefixes: ``4.089 G`` (the exact value goes in the
  metric's help or a table); bytes in binary units: ``19.64 GiB``.
- Floats get 3 significant digits. Between 10⁻³ and 10⁶ they are written plainly (``0.107``,
  ``6.19``, ``1,230``); outside that range in scientific notation ``2.00e-11`` / ``6.90e+15``. That
  is exactly what Streamlit's table formatter writes for the printf formats :func:`column_formats`
  chooses (sprintf-js: ``%.2e`` gives ``2.00e-11``, exponent without a leading zero; ``%,.3g``
  gives ``1,230``), so a number reads the same in a caption and in a table.
- Counts too long to read (``2**1000`` has 302 digits) become ``1.07e+301 (302 digits)``; the exact
  value stays in a tooltip and the CSV download.

Chart axes follow the same rules through :mod:`ui.render`: SI suffixes on count axes, and decade
ticks on log axes (``10⁻¹¹`` is a decade's label, not a measured value, so it has no mantissa).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

SIG_DIGITS = 3
PLAIN_RANGE = (1e-3, 1e6)  # |x| in [lo, hi): plain notation; outside: scientific
# fmt_count writes up to 20 digits exactly: 26 characters with separators, ~410 px in st.metric's
# value font (~15.8 px a character, measured), which fits the ~490 px main area of an 820 px wide
# browser with the sidebar open; longer counts are shortened.
LONG_COUNT_DIGITS = 20
JS_SAFE_INT = 2**53  # a browser holds integers exactly only up to here

SI_PREFIXES = ((10**24, "Y"), (10**21, "Z"), (10**18, "E"), (10**15, "P"), (10**12, "T"), (10**9, "G"),
               (10**6, "M"), (10**3, "k"))
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

_EXPONENT = re.compile(r"e([+-])0*(\d)")


def _strip_exponent_zeros(text: str) -> str:
    """'2.00e-05' -> '2.00e-5': the exponent as JavaScript's toExponential (Streamlit's tables) writes it."""
    return _EXPONENT.sub(r"e\1\2", text)


def fmt_int(n: int | np.integer | Decimal) -> str:
    """Exact, with thousands separators: 1179648 -> '1,179,648'."""
    return f"{int(n):,}"


def fmt_float(x: float, digits: int = SIG_DIGITS) -> str:
    """``digits`` significant digits: plain between 10⁻³ and 10⁶ with thousands separators and no
    trailing zeros (0.107, 6.19, 1, 1,230), scientific outside it (2.00e-11, 6.90e+15)."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if not PLAIN_RANGE[0] <= abs(x) < PLAIN_RANGE[1]:
        return _strip_exponent_zeros(f"{x:.{digits - 1}e}")
    rounded = float(f"{x:.{digits}g}")  # the value at `digits` significant digits
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_si(n: float, unit: str = "", sig: int | None = None) -> str:
    """'4.089 G', '9.728 E' (exact integers stay exact until the one division that formats them);
    with ``sig`` that many significant digits instead of three decimals ('218 M', '3.70 G': chart
    labels); beyond the last prefix (10²⁷ and more) scientific: '1.00e+27'."""
    if abs(n) >= 1000 * SI_PREFIXES[0][0]:
        return f"{fmt_float(n)} {unit}".strip()
    for div, suffix in SI_PREFIXES:
        if abs(n) >= div:
            scaled = n / div
            decimals = 3 if sig is None else max(0, sig - 1 - math.floor(math.log10(abs(scaled))))
            if round(abs(scaled), decimals) >= 1000:  # 999,999 rounds up to the next prefix: '1.00 M'
                return fmt_si(math.copysign(1000 * div, n), unit, sig)
            return f"{scaled:.{decimals}f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def fmt_bytes(n: int | float) -> str:
    """Binary units with two decimals: 21085686579 -> '19.64 GiB' (never '20108.95 MiB')."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(BINARY_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value):,} B" if unit == 0 else f"{value:,.2f} {BINARY_UNITS[unit]}"


def fmt_count(n: int | np.integer | Decimal) -> str:
    """An exact count short enough to read: up to 20 digits with separators, longer ones as
    '1.07e+301 (302 digits)' (the mantissa rounded exactly, however long the number)."""
    n = int(n)
    digits = len(str(abs(n)))
    if digits <= LONG_COUNT_DIGITS:
        return fmt_int(n)
    return f"{_strip_exponent_zeros(format(Decimal(n), f'.{SIG_DIGITS - 1}e'))} ({digits} digits)"


# --------------------------------------------------------------------------- tables
def _is_int(v: object) -> bool:
    if isinstance(v, Decimal):  # arrow_safe's carrier for counts beyond int64
        return v.is_finite() and v == v.to_integral_value()
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def column_formats(df: pd.DataFrame, digits: int = SIG_DIGITS) -> dict[str, str]:
    """A printf format (Streamlit's table formatter is sprintf-js) for every number column, so
    tables read as :func:`fmt_int` / :func:`fmt_float` write: integers '%,d' (1,179,648); floats
    '%,.3g' when every value is in the plain range, else '%.2e' for the whole column (one notation
    per column keeps magnitudes comparable). Whole-number float columns (ints with a gap, NaN) count
    as integers. Integers a browser cannot hold exactly (2**53 and more) bypass the format: Streamlit
    shows them digit for digit (measured in chromium), so a count column stays exact at any size."""
    out: dict[str, str] = {}
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_bool_dtype(col):
            continue
        values = col.dropna().tolist()
        if pd.api.types.is_integer_dtype(col) or (col.dtype == object and values and all(map(_is_int, values))):
            out[str(name)] = "%,d"
        elif pd.api.types.is_float_dtype(col):
            finite = [float(v) for v in values if math.isfinite(v)]
            if finite and all(v.is_integer() for v in finite) and max(map(abs, finite)) < JS_SAFE_INT:
                out[str(name)] = "%,d"
            elif any(v != 0 and not PLAIN_RANGE[0] <= abs(v) < PLAIN_RANGE[1] for v in finite):
                out[str(name)] = f"%.{digits - 1}e"
            else:
                out[str(name)] = f"%,.{digits}g"
    return out


def column_config(df: pd.DataFrame, digits: int = SIG_DIGITS,
                  overrides: Mapping[str, Any] | None = None,
                  inferred: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``st.dataframe(df, column_config=column_config(df))``: every number column formatted as
    :func:`column_formats` says; ``overrides`` (column name -> a column config or format string)
    win over the inferred ones."""
    import streamlit as st

    formats = column_formats(df, digits) if inferred is None else inferred  # a caller's own, read once
    config: dict[str, Any] = {name: st.column_config.NumberColumn(format=fmt) for name, fmt in formats.items()}
    for name, value in (overrides or {}).items():
        config[name] = st.column_config.NumberColumn(format=value) if isinstance(value, str) else value
    return config


_PRINTF = re.compile(r"%(,?)(?:\.(\d+))?([dfeg])")


def printf(fmt: str, x: Any) -> str:
    """One number written as Streamlit's grid writes it with the printf format ``fmt`` (the formats
    :func:`column_formats` chooses, and the pages' own '%.3f' / '%,.1f'), for tables drawn as HTML;
    a missing value is an empty cell, as in the grid."""
    if x is None or (not isinstance(x, str) and bool(pd.isna(x))):
        return ""
    m = _PRINTF.fullmatch(fmt)
    if m is None or isinstance(x, str):
        return str(x)
    comma, decimals, kind = m.group(1), m.group(2), m.group(3)
    if kind == "d":
        return f"{round(float(x)) if not _is_int(x) else int(x):{comma}d}"
    if kind == "g":
        return fmt_float(float(x), int(decimals or 6))
    if kind == "e":
        return _strip_exponent_zeros(f"{float(x):.{int(decimals or 6)}e}")
    return f"{float(x):{comma}.{int(decimals or 6)}f}"


def recording_time(meta: dict, *, seconds_key: str, what: str) -> str:
    """How long recording a shipped results file took, with how many runs were trained and how many
    found in the run store, from the file's metadata ('' when it does not say)."""
    seconds = meta.get(seconds_key)
    if not isinstance(seconds, (int, float)):
        return f"The file does not say how long the {what} took to record."
    trained, reused = meta.get("trained"), meta.get("reused")
    counts = (f" ({trained} runs trained, {reused} found already in the run store)"
              if isinstance(trained, int) and isinstance(reused, int) else "")
    partial = f" The {what} was cancelled before every run finished." if meta.get("cancelled") else ""
    return f"Recording it took {seconds:,.1f} s wall time{counts}.{partial}"
