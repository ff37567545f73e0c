"""The run store: nets trained in the app and sweep results, kept across reloads, tabs and restarts.

One SQLite database (standard library) plus checkpoint files beside it, in one folder:
``$RESNET_LENS_HOME`` if set, else ``~/.resnet-lens``. Delete that folder (or use the pages'
Delete buttons) to forget everything. Runs are keyed by a hash of what determines them (spec,
recipe, dataset and seed), so asking again for a run that exists returns the stored one; sweep
results are keyed by the checkpoint's key and the sweep's settings. Checkpoint files are written
atomically and referenced by path; the database holds only small rows.

Every call opens its own connection (Streamlit runs each session in its own thread), with WAL so
readers never wait for a writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint, spec_to_dict
from .errors import LensError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, path TEXT NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, test_acc REAL, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, kind TEXT NOT NULL, settings TEXT NOT NULL,
    created REAL NOT NULL, csv TEXT NOT NULL
);
"""


class StoreError(LensError):
    """The run store cannot be read or written (permissions, a corrupt database); says where."""


def default_home() -> Path:
    return Path(os.environ.get("RESNET_LENS_HOME") or Path.home() / ".resnet-lens").expanduser()


def config_key(config: Any) -> str:
    """A stable short hash of a JSON-able configuration (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_config(ck: Checkpoint) -> dict[str, Any]:
    """What determines a trained run: spec, recipe, dataset (the recipe holds the seed)."""
    meta = ck.meta.to_dict()
    return {"spec": spec_to_dict(ck.spec), "recipe": meta["recipe"], "dataset": meta["dataset"]}


@dataclass(frozen=True)
class StoredRun:
    key: str
    label: str
    path: Path
    created: float
    status: str
    test_acc: float | None


class RunStore:
    """Runs and sweep results in ``home`` (default: :func:`default_home`)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.db = self.home / "runs.sqlite"
        self.checkpoints = self.home / "checkpoints"
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use the run store at {self.home}: {exc}") from exc

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.db, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.db}: {exc}") from exc
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the run store {self.db} is unreadable ({exc}); delete it to start afresh") from exc
        finally:
            con.close()

    # ------------------------------------------------------------------ runs
    def save_run(self, label: str, ck: Checkpoint) -> StoredRun:
        """Keep a trained net (its checkpoint file and a row); the same configuration replaces the
        earlier run of it."""
        key = config_key(run_config(ck))
        path = save_checkpoint(self.checkpoints / f"{key}.pt", ck.model, ck.meta)
        run = StoredRun(key, label, path, time.time(), ck.meta.status, ck.meta.final.get("test_acc"))
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (run.key, run.label, str(run.path), run.created, run.status, run.test_acc,
                         json.dumps(run_config(ck), sort_keys=True)))
        return run

    def runs(self) -> list[StoredRun]:
        """Every stored run whose checkpoint file still exists, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT key, label, path, created, status, test_acc FROM runs ORDER BY created").fetchall()
        out = [StoredRun(k, lab, Path(p), c, s, a) for k, lab, p, c, s, a in rows]
        return [r for r in out if r.path.is_file()]

    def find(self, ck: Checkpoint) -> StoredRun | None:
        """The stored run of the same configuration as ``ck``, if any."""
        key = config_key(run_config(ck))
        return next((r for r in self.runs() if r.key == key), None)

    def load(self, run: StoredRun) -> Checkpoint:
        return load_checkpoint(run.path)

    def delete_run(self, key: str) -> None:
        """Forget a run: its row, its sweep results and its checkpoint file."""
        with self._connect() as con:
            row = con.execute("SELECT path FROM runs WHERE key = ?", (key,)).fetchone()
            con.execute("DELETE FROM runs WHERE key = ?", (key,))
            con.execute("DELETE FROM sweeps WHERE run = ?", (key,))
        if row:
            with contextlib.suppress(FileNotFoundError):
                Path(row[0]).unlink()

    # ------------------------------------------------------------------ sweep results
    def save_sweep(self, run: str, kind: str, settings: dict[str, Any], df: pd.DataFrame) -> str:
        """Keep a sweep's result table, keyed by the net (``run``: a run key or a checkpoint's
        stable name), the sweep kind and its settings."""
        key = config_key({"run": run, "kind": kind, "settings": settings})
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?, ?, ?, ?)",
                        (key, run, kind, json.dumps(settings, sort_keys=True), time.time(),
                         df.to_csv(index=False)))
        return key

    def sweep(self, run: str, kind: str, settings: dict[str, Any]) -> pd.DataFrame | None:
        key = config_key({"run": run, "kind": kind, "settings": settings})
        with self._connect() as con:
            row = con.execute("SELECT csv FROM sweeps WHERE key = ?", (key,)).fetchone()
        return None if row is None else pd.read_csv(io.StringIO(row[0]))

    def clear(self) -> None:
        """Forget every run and sweep (the folder stays, empty)."""
        for run in self.runs():
            self.delete_run(run.key)
        with self._connect() as con:
            con.execute("DELETE FROM runs")
            con.execute("DELETE FROM sweeps")
