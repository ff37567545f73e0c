"""Lesion sweeps measured once on a shipped program and stored beside it, so the Lesion lab opens with data.

``tools/make_lesion_results.py`` runs every sweep kind (:data:`~analysis.experiments.lesion.SWEEP_KINDS`)
at each granularity that applies (:data:`~analysis.experiments.programlesion.GRANULARITIES`) with the
page's default settings (:data:`PAGE_SAMPLES`, :data:`PAGE_SEED`) on a shipped program's own data, and
writes them to ``<folder>/lesion_results/<stem>.json`` (:func:`results_file`) with the SHA-256 of the
program's file: results made on another version of the file are ignored, as the stored path
measurements are (:func:`analysis.experiments.paths.load_results`). Each sweep keeps its full settings
(:func:`~analysis.experiments.lesion.sweep_settings`, the run store's key) and the names of the units
it was planned over, so a lookup finds it only for the same data, settings and cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.core.bounded import Column, check_table, loads_json, short_repr
from analysis.core.errors import CheckpointError
from analysis.core.io import read_bounded
from analysis.core.meta import now, versions
from analysis.core.reporting import records, write_json
from analysis.experiments.lesion import SWEEP_KINDS
from analysis.experiments.paths import file_digest
from analysis.experiments.programlesion import GRANULARITIES

FORMAT = "resnet-lens-lesion/1"
MADE_BY = "tools/make_lesion_results.py"
#: the Lesion lab's default settings of the random sweeps (its number inputs start here), which the
#: stored sweeps are measured with
PAGE_SAMPLES = 5
PAGE_SEED = 0
#: a stored file of ours is a few tens of KB; far more is not one of ours
MAX_BYTES = 8 << 20

# a column's kind, read from its first value: every row must then agree
_KINDS: dict[type, Column] = {bool: ("bool", 0, 1, False), int: ("whole", -1e12, 1e12, False),
                              float: ("number", -1e300, 1e300, True), str: ("text", 0, 0, True)}
_ERROR: Column = ("number", 0.0, 1.0, False)  # an error rate


def settings_key(settings: Mapping[str, Any]) -> str:
    """A sweep's settings as one comparable string (key order does not matter)."""
    return json.dumps(settings, sort_keys=True, allow_nan=False)


@dataclass(frozen=True)
class StoredSweep:
    """One stored sweep: at which granularity, of which kind, with which settings, over which units
    (their names, in order), and its table (``attrs["skipped"]`` where its plan skipped any)."""

    granularity: str
    kind: str
    settings: Mapping[str, Any]
    units: tuple[str, ...]
    frame: pd.DataFrame


@dataclass(frozen=True)
class Stored:
    """The sweeps stored for one version of a program file (its ``sha256``), when they were made
    (``created``, UTC text) and with which library versions."""

    sha256: str
    created: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    sweeps: tuple[StoredSweep, ...] = ()

    def find(self, granularity: str, kind: str, settings: Mapping[str, Any],
             units: Sequence[str]) -> pd.DataFrame | None:
        """The stored table of this sweep (a copy, so a caller may change it), or None: only for the
        same granularity, kind, settings and units (a cut that names its units otherwise is another net)."""
        want = settings_key(settings)
        for s in self.sweeps:
            if (s.granularity, s.kind, s.units) == (granularity, kind, tuple(units)) and settings_key(s.settings) == want:
                out = s.frame.copy()
                out.attrs = {k: list(v) for k, v in s.frame.attrs.items()}
                return out
        return None


def results_file(program: Path) -> Path:
    """Where the stored sweeps of a program file live: ``<folder>/lesion_results/<stem>.json``."""
    return program.parent / "lesion_results" / f"{program.stem}.json"


def save_results(program: Path, sweeps: Sequence[StoredSweep]) -> Path:
    """Write ``sweeps`` of ``program`` beside it (:func:`results_file`), atomically, with the file's
    SHA-256 so that sweeps of an older version of the program are never shown for a newer one. The
    document is read back with :func:`load_results` first: a file this module could not read is not written."""
    doc = {"format": FORMAT, "program": program.name, "sha256": file_digest(program), "made_by": MADE_BY,
           "created": now(), "versions": versions(),
           "sweeps": [{"granularity": s.granularity, "kind": s.kind, "settings": dict(s.settings),
                       "units": list(s.units), "columns": [str(c) for c in s.frame.columns],
                       "rows": records(s.frame), "skipped": list(s.frame.attrs.get("skipped", []))}
                      for s in sweeps]}
    parse(json.dumps(doc, allow_nan=False), str(results_file(program)))
    return write_json(results_file(program), doc, indent=1)


def load_results(program: Path) -> Stored | None:
    """The stored sweeps of ``program``: None when there are none, or when they were made on another
    version of the file (its SHA-256 differs). A damaged or foreign file is a :class:`CheckpointError`."""
    f = results_file(program)
    raw = read_bounded(f, MAX_BYTES, "stored lesion sweeps", CheckpointError)
    if raw is None:
        return None
    stored = parse(raw, str(f))
    try:
        digest = file_digest(program)
    except OSError as exc:
        raise CheckpointError(f"{program}: cannot be read ({exc})") from exc
    return stored if stored.sha256 == digest else None


def _corrupt(what: str, why: str) -> CheckpointError:
    return CheckpointError(f"{what}: damaged stored lesion sweeps ({why})")


def parse(raw: str | bytes, what: str) -> Stored:
    """A stored-sweeps document checked field by field; a :class:`CheckpointError` naming ``what``
    and the first problem."""
    doc = loads_json(raw, what, CheckpointError)
    if not isinstance(doc, dict):
        raise _corrupt(what, f"a {type(doc).__name__}, not a record")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{what}: format {short_repr(doc.get('format'), 40)}, expected {FORMAT!r}: not "
                              "stored lesion sweeps of this version")
    sha = doc.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
        raise _corrupt(what, "no sha256 of the program they were made on")
    entries = doc.get("sweeps")
    if not isinstance(entries, list):
        raise _corrupt(what, "no list of sweeps")
    vers = doc.get("versions", {})
    if not isinstance(vers, dict) or not all(isinstance(v, str) for v in vers.values()):
        raise _corrupt(what, "its library versions are not a record of names")
    created = doc.get("created", "")
    return Stored(sha, created if isinstance(created, str) else "", dict(vers),
                  tuple(_sweep(e, i, what) for i, e in enumerate(entries)))


def _sweep(e: object, i: int, what: str) -> StoredSweep:
    """One entry of the document as a :class:`StoredSweep`; its rows checked column by column, each
    value of the type of the first row's (a table read back must have the dtypes it was written with)."""
    if not isinstance(e, dict) or not {"granularity", "kind", "settings", "units", "columns", "rows"} <= set(e):
        raise _corrupt(what, f"sweep {i + 1} is not a record of granularity, kind, settings, units, columns and rows")
    if e["granularity"] not in GRANULARITIES or e["kind"] not in SWEEP_KINDS:
        raise _corrupt(what, f"sweep {i + 1}: unknown granularity or kind ({short_repr(e['granularity'], 20)}, "
                             f"{short_repr(e['kind'], 20)})")
    name = f"sweep {i + 1} ({e['kind']} at {e['granularity']})"
    settings, units, columns, rows = e["settings"], e["units"], e["columns"], e["rows"]
    if not isinstance(settings, dict) or not {"samples", "seed", "dataset"} <= set(settings):
        raise _corrupt(what, f"{name}: its settings are not a sweep's (samples, seed, dataset, ...)")
    if not isinstance(units, list) or not units or not all(isinstance(u, str) for u in units):
        raise _corrupt(what, f"{name}: its units are not a list of names")
    if (not isinstance(columns, list) or "error" not in columns or not all(isinstance(c, str) for c in columns)
            or len(set(columns)) != len(columns)):
        raise _corrupt(what, f"{name}: its columns are not a list of distinct names with an error")
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise _corrupt(what, f"{name}: no rows")
    schema: dict[str, Column] = {}
    for c in columns:
        kind = _KINDS.get(type(rows[0].get(c)))
        if kind is None:
            raise _corrupt(what, f"{name}: column {c!r} holds {short_repr(rows[0].get(c), 30)}, not a number, "
                                 "flag or text")
        schema[c] = kind
    schema["error"] = _ERROR
    check_table(rows, schema, f"{what}: {name}", CheckpointError)
    for j, r in enumerate(rows):
        if set(r) != set(columns):
            raise _corrupt(what, f"{name}: row {j + 1} has other columns than {', '.join(columns)}")
        odd = [c for c in columns if type(r[c]) is not type(rows[0][c]) and not (r[c] is None and schema[c][3])]
        if odd:
            raise _corrupt(what, f"{name}: row {j + 1}, {odd[0]} = {short_repr(r[odd[0]], 30)} is not of the "
                                 "first row's type")
    skipped = e.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
        raise _corrupt(what, f"{name}: its skipped candidates are not a list of sentences")
    frame = pd.DataFrame(rows, columns=columns)
    if skipped:
        frame.attrs["skipped"] = list(skipped)
    return StoredSweep(e["granularity"], e["kind"], dict(settings), tuple(units), frame)


__all__ = ["FORMAT", "PAGE_SAMPLES", "PAGE_SEED", "Stored", "StoredSweep", "load_results", "parse", "results_file",
           "save_results", "settings_key"]
