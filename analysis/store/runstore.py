"""The run store: nets trained in the app and sweep results, kept across reloads, tabs and restarts.

One SQLite database (standard library) plus checkpoint files beside it, in one folder:
``$RESNET_LENS_HOME`` if set, else ``~/.resnet-lens``. Delete that folder (or use the pages'
Delete buttons) to forget everything. Runs are keyed by a hash of what determines them (spec,
recipe, dataset and seed), so asking again for a run that exists returns the stored one. Sweep
results are keyed by the net's *content* (:func:`net_key`: the sha256 of its weights and of the
spec they are read as, so a shipped
file remade, a run retrained under the same label or an upload renamed never shows another net's
numbers) and the sweep's settings; a stored run records its content key, so forgetting the run
forgets its sweeps. Checkpoint files are written atomically and referenced by path; the database
holds only small rows.

A run's per-epoch metrics are rows of their own (``metrics``, written with the run), so curves of
many runs are one query, also from the ``sqlite3`` shell. Experiment grids (:mod:`analysis.studies.grid`)
record which runs belong to them (``grids``, ``grid_runs``) and a run's gradient-flow records, when
training made them, are kept as a table (``gradients``), like sweep results.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.core.bounded import loads_json
from analysis.core.errors import LensError
from analysis.core.io import clean_stale_temps
from analysis.store.checkpoints import Checkpoint, load_checkpoint, save_checkpoint, spec_to_dict
from analysis.store.weights import state_dict_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, path TEXT NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, test_acc REAL, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, kind TEXT NOT NULL, settings TEXT NOT NULL,
    created REAL NOT NULL, csv TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sweeps_by_run ON sweeps (run);
CREATE TABLE IF NOT EXISTS metrics (
    run TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL,
    lr REAL, seconds REAL, PRIMARY KEY (run, epoch)
);
CREATE TABLE IF NOT EXISTS gradients (
    run TEXT PRIMARY KEY, created REAL NOT NULL, csv TEXT NOT NULL, dtypes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grids (
    id TEXT PRIMARY KEY, created REAL NOT NULL, definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grid_runs (
    grid TEXT NOT NULL, run TEXT NOT NULL, variant TEXT NOT NULL, depth INTEGER NOT NULL, seed INTEGER NOT NULL,
    outcome TEXT, PRIMARY KEY (grid, run)
);
"""
# Per-epoch numbers of a stored run, one row per finished epoch (what ``meta.history`` holds):
# train_loss/train_acc are the epoch's running numbers (augmented batches, train mode);
# train_loss_clean/train_acc_clean the clean pass after the last epoch (eval mode, the whole training
# set, no augmentation), NULL on other epochs and for runs trained before it existed.
METRIC_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "train_loss_clean",
                  "train_acc_clean")
# Columns added after the first release; a store made before them gains them when opened (NULL in
# the rows it already holds).
ADDED_COLUMNS = {"runs": {"content": "TEXT"}, "sweeps": {"dtypes": "TEXT"},
                 "metrics": {"train_loss_clean": "REAL", "train_acc_clean": "REAL"}}
TEXT_DTYPES = ("str", "string", "object")


#: how long a writer waits for another process's transaction before the store is called locked
LOCK_WAIT_S = 30.0


class StoreError(LensError):
    """The run store cannot be read or written (permissions, a corrupt database); says where."""


def default_home() -> Path:
    return Path(os.environ.get("RESNET_LENS_HOME") or Path.home() / ".resnet-lens").expanduser()


def config_key(config: Any) -> str:
    """A stable short hash of a JSON-able configuration (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def net_key(ck: Checkpoint) -> str:
    """The identity of a net: its weights (the ``sha256:`` content hash its file carries, or the same
    hash computed from the loaded weights: shipped files made before the hash existed, bare
    state_dicts, nets trained in this session) and the function they are read as (the spec without
    its name). The same weights can be two nets: a plain net and an option-A residual net, or a
    constant-scaling and an identity net, have identical state_dicts. Equal nets give equal keys
    whatever the label."""
    content = ck.meta.content_sha256 or state_dict_hash(ck.model.state_dict())
    arch = {k: v for k, v in spec_to_dict(ck.spec).items() if k not in ("name", "family", "description")}
    return f"{content}/{config_key(arch)}"


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


@dataclass(frozen=True)
class StoredSweep:
    """One stored sweep result: whose (``run``: a :func:`net_key`), which, with what settings, when."""

    key: str
    run: str
    kind: str
    settings: dict[str, Any]
    created: float


class RunStore:
    """Runs and sweep results in ``home`` (default: :func:`default_home`)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.db = self.home / "runs.sqlite"
        self.checkpoints = self.home / "checkpoints"
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use the run store at {self.home}: {exc.strerror or exc}") from exc
        clean_stale_temps(self.checkpoints)  # half-written files of a process killed mid-save
        with self._connect() as con:
            # a damaged page can hide in a table that reads back empty: check the file once, so a
            # damaged store is said as such instead of answering like a fresh one (it is small: ms)
            bad = [r[0] for r in con.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
            if bad:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {bad[0]}")
            con.executescript(SCHEMA)
            self._add_columns(con)

    @staticmethod
    def _add_columns(con: sqlite3.Connection) -> None:
        for table, columns in ADDED_COLUMNS.items():
            for name, kind in columns.items():
                have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                if name in have:
                    continue
                try:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:
                    # another process opening the same store added it between the two statements
                    if name not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                        raise

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """What went wrong with the database, and what to do: locked, full, damaged or unreadable.
        Never advice to delete it: a store that cannot be read now may hold runs worth hours."""
        text = " ".join(str(exc).split())[:200]
        low = text.lower()
        if "locked" in low or "busy" in low:
            return StoreError(f"the run store {self.db} is locked by another process (waited {LOCK_WAIT_S:.0f} s): "
                              "a training or sweep is writing to it; try again when it finishes")
        if "full" in low:
            return StoreError(f"the disk holding the run store {self.db} is full ({text}); free some space and "
                              "try again (nothing stored was lost)")
        if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in low or "not a database" in low
                                                        or "corrupt" in low):
            # the write-ahead log belongs to the file: moved with it, or a new store would replay it
            files = [self.db, *(self.db.with_name(self.db.name + x) for x in ("-wal", "-shm"))]
            moves = "; ".join(f"mv '{f}' '{f}.damaged'" for f in files if f == self.db or f.exists())
            return StoreError(f"the run store {self.db} is damaged ({text}). Keep it for recovery and start a new "
                              f"store by moving it aside: {moves} (its trained nets stay in {self.checkpoints} and open as checkpoints)")
        return StoreError(f"the run store {self.db} cannot be used ({text}); check that the file and its folder "
                          "are readable and writable")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.db, timeout=LOCK_WAIT_S)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            con.close()

    # ------------------------------------------------------------------ runs
    def save_run(self, label: str, ck: Checkpoint) -> StoredRun:
        """Keep a trained net (its checkpoint file and a row); the same configuration replaces the
        earlier run of it."""
        key = config_key(run_config(ck))
        content = net_key(ck)
        path = save_checkpoint(self.checkpoints / f"{key}.pt", ck.model, ck.meta)
        run = StoredRun(key, label, path, time.time(), ck.meta.status, ck.meta.final.get("test_acc"))
        with self._connect() as con:
            old = con.execute("SELECT content FROM runs WHERE key = ?", (key,)).fetchone()
            if old and old[0] and old[0] != content:  # the replaced weights' sweeps describe a net that is gone
                con.execute("DELETE FROM sweeps WHERE run = ?", (old[0],))
            con.execute("INSERT OR REPLACE INTO runs (key, label, path, created, status, test_acc, config, content) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (run.key, run.label, str(run.path), run.created, run.status, run.test_acc,
                         json.dumps(run_config(ck), sort_keys=True), content))
            # in the same transaction: a reader never sees a run without its curves, or stale ones
            con.execute("DELETE FROM metrics WHERE run = ?", (key,))
            con.executemany(f"INSERT INTO metrics (run, epoch, {', '.join(METRIC_COLUMNS)}) "
                            f"VALUES (?, ?, {', '.join('?' * len(METRIC_COLUMNS))})",
                            [(key, int(h["epoch"]), *(h.get(c) for c in METRIC_COLUMNS))
                             for h in ck.meta.history if "epoch" in h])
        return run

    def get(self, key: str) -> StoredRun | None:
        """The stored run with this key (whose checkpoint file exists), or None."""
        with self._connect() as con:
            row = con.execute("SELECT key, label, path, created, status, test_acc FROM runs WHERE key = ?",
                              (key,)).fetchone()
        if row is None:
            return None
        run = StoredRun(row[0], row[1], Path(row[2]), row[3], row[4], row[5])
        return run if run.path.is_file() else None

    def metrics(self, keys: list[str] | None = None) -> pd.DataFrame:
        """Per-epoch metrics (columns ``run``, ``epoch``, then :data:`METRIC_COLUMNS`) of the given
        runs, or of every run, ordered by run and epoch."""
        cols = ("run", "epoch", *METRIC_COLUMNS)
        query = f"SELECT {', '.join(cols)} FROM metrics"
        args: tuple[str, ...] = ()
        if keys is not None:
            query += f" WHERE run IN ({', '.join('?' * len(keys))})"
            args = tuple(keys)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY run, epoch", args).fetchall()
        # numbers as floats, NULL as NaN (a column of NULLs alone would otherwise read as objects)
        return pd.DataFrame(rows, columns=list(cols)).astype({"epoch": "int64", **dict.fromkeys(METRIC_COLUMNS,
                                                                                                  "float64")})

    # ------------------------------------------------------------------ gradient-flow records
    def save_gradients(self, run: str, df: pd.DataFrame) -> None:
        """Keep a run's gradient-flow records (any table; its column types are kept, as for sweeps)."""
        dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO gradients (run, created, csv, dtypes) VALUES (?, ?, ?, ?)",
                        (run, time.time(), df.to_csv(index=False), json.dumps(dtypes)))

    def gradients(self, run: str) -> pd.DataFrame | None:
        with self._connect() as con:
            row = con.execute("SELECT csv, dtypes FROM gradients WHERE run = ?", (run,)).fetchone()
        if row is None:
            return None
        try:
            return _read_frame(row[0], row[1])
        except StoreError as exc:  # what the reader raises for a damaged row; a bug in it propagates
            raise StoreError(f"the gradient records of run {run} in {self.db} cannot be read ({exc})") from exc

    # ------------------------------------------------------------------ experiment grids
    def save_grid(self, grid: str, definition: dict[str, Any], members: list[tuple[str, str, int, int]]) -> None:
        """Record a grid (its id, its definition) and its runs: (run key, variant, depth, seed) each.
        Recording the same grid again keeps the outcomes already noted."""
        with self._connect() as con:
            con.execute("INSERT OR IGNORE INTO grids (id, created, definition) VALUES (?, ?, ?)",
                        (grid, time.time(), json.dumps(definition, sort_keys=True, default=str)))
            con.executemany("INSERT OR IGNORE INTO grid_runs (grid, run, variant, depth, seed) VALUES (?, ?, ?, ?, ?)",
                            [(grid, *m) for m in members])

    def note_outcome(self, grid: str, run: str, outcome: str | None) -> None:
        """Note how a grid's run ended when it left no stored run (e.g. ``diverged: ...``), so asking
        again does not repeat a deterministic failure; None clears the note."""
        with self._connect() as con:
            con.execute("UPDATE grid_runs SET outcome = ? WHERE grid = ? AND run = ?", (outcome, grid, run))

    def grid_runs(self, grid: str) -> pd.DataFrame:
        """The runs of a grid: columns run, variant, depth, seed, outcome (None unless noted)."""
        cols = ["run", "variant", "depth", "seed", "outcome"]
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(cols)} FROM grid_runs WHERE grid = ? ORDER BY rowid",
                               (grid,)).fetchall()
        return pd.DataFrame(rows, columns=cols)

    def grids(self) -> dict[str, dict[str, Any]]:
        """Every recorded grid's definition, by id (oldest first)."""
        with self._connect() as con:
            rows = con.execute("SELECT id, definition FROM grids ORDER BY created").fetchall()
        return {g: loads_json(d, f"{self.db}: grid {g}", StoreError) for g, d in rows}

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
        """Forget a run: its row, its sweep results (stored under its content key, or under the run
        key itself) and its checkpoint file."""
        with self._connect() as con:
            row = con.execute("SELECT path, content FROM runs WHERE key = ?", (key,)).fetchone()
        content = row[1] if row else None
        if row and not content:  # a row from before the content column: ask the file
            with contextlib.suppress(LensError):
                content = net_key(load_checkpoint(row[0]))
        with self._connect() as con:
            con.execute("DELETE FROM runs WHERE key = ?", (key,))
            con.execute("DELETE FROM sweeps WHERE run IN (?, ?)", (key, content or key))
            con.execute("DELETE FROM metrics WHERE run = ?", (key,))
            con.execute("DELETE FROM gradients WHERE run = ?", (key,))
        if row:
            with contextlib.suppress(FileNotFoundError):
                Path(row[0]).unlink()

    # ------------------------------------------------------------------ sweep results
    def save_sweep(self, run: str, kind: str, settings: dict[str, Any], df: pd.DataFrame, *,
                   created: float | None = None) -> str:
        """Keep a sweep's result table, keyed by the net (``run``: its :func:`net_key`, or any
        stable name), the sweep kind and its settings. The column types are kept beside the CSV,
        so the table reads back equal (an empty string stays a string, not a NaN). ``created``: when
        it was measured (default: now), so a caller that shows the time before saving shows the
        time a later lookup reads back."""
        key = config_key({"run": run, "kind": kind, "settings": settings})
        dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO sweeps (key, run, kind, settings, created, csv, dtypes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, run, kind, json.dumps(settings, sort_keys=True),
                         time.time() if created is None else created, df.to_csv(index=False), json.dumps(dtypes)))
        return key

    def sweep(self, run: str, kind: str, settings: dict[str, Any]) -> pd.DataFrame | None:
        found = self.find_sweep(run, kind, settings)
        return None if found is None else found[1]

    def find_sweep(self, run: str, kind: str, settings: dict[str, Any]) -> tuple[StoredSweep, pd.DataFrame] | None:
        """A stored sweep with when it was measured, and its table; None if there is none."""
        key = config_key({"run": run, "kind": kind, "settings": settings})
        with self._connect() as con:
            row = con.execute("SELECT key, run, kind, settings, created, csv, dtypes FROM sweeps WHERE key = ?",
                              (key,)).fetchone()
        if row is None:
            return None
        try:  # a row edited or damaged outside the app: StoreError is all the two readers raise for it
            return _stored_sweep(row[:5]), _read_frame(row[5], row[6])
        except StoreError as exc:
            raise StoreError(f"the stored {kind} sweep {key} in {self.db} cannot be read ({exc}); forget this "
                             "net's stored sweeps to measure it again") from exc

    def sweeps_of(self, run: str, kinds: Iterable[str] | None = None) -> list[StoredSweep]:
        """Every stored sweep of one net (oldest first), without their tables; only those of ``kinds``
        when given (a page lists its own kinds: the Lesion lab's are not the Path ensemble's)."""
        with self._connect() as con:
            rows = con.execute("SELECT key, run, kind, settings, created FROM sweeps WHERE run = ? ORDER BY created",
                               (run,)).fetchall()
        wanted = None if kinds is None else set(kinds)
        return [_stored_sweep(r) for r in rows if wanted is None or r[2] in wanted]

    def delete_sweeps(self, run: str, kinds: Iterable[str] | None = None) -> int:
        """Forget the stored sweeps of one net (only those of ``kinds`` when given); returns how many."""
        with self._connect() as con:
            if kinds is None:
                return con.execute("DELETE FROM sweeps WHERE run = ?", (run,)).rowcount
            chosen = sorted(set(kinds))
            marks = ", ".join("?" * len(chosen))
            return con.execute(f"DELETE FROM sweeps WHERE run = ? AND kind IN ({marks})", (run, *chosen)).rowcount

    def clear(self) -> None:
        """Forget every run and sweep, their metrics and gradient records, and the grids (the folder
        stays, empty)."""
        for run in self.runs():
            self.delete_run(run.key)
        with self._connect() as con:
            for table in ("runs", "sweeps", "metrics", "gradients", "grids", "grid_runs"):
                con.execute(f"DELETE FROM {table}")


def _stored_sweep(row: tuple[Any, ...]) -> StoredSweep:
    key, run, kind, settings, created = row
    return StoredSweep(key, run, kind, loads_json(settings, f"stored sweep {key}", StoreError), created)


def _read_frame(text: str, dtypes_json: str | None) -> pd.DataFrame:
    """A stored CSV back as the table that was saved: text columns read as text (an empty string
    is not a missing value), the others converted to their recorded types. A row that cannot be
    read that way (edited or damaged outside the app) is a :class:`StoreError` saying why; the
    caller says which row. Only the parsing is guarded: anything else raised here is a bug."""
    if not isinstance(text, str):
        raise StoreError(f"its table is a {type(text).__name__}, not CSV text")
    if not dtypes_json:
        try:
            return pd.read_csv(io.StringIO(text))
        except ValueError as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
            raise StoreError(str(exc)) from exc
    dtypes = loads_json(dtypes_json, "a stored table's column types", StoreError)
    if not isinstance(dtypes, dict) or not all(isinstance(v, str) for v in dtypes.values()):
        raise StoreError("its column types are not a record of type names")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise StoreError(f"no column {missing[0]!r}")
    for col, kind in dtypes.items():
        if kind in TEXT_DTYPES:
            continue
        if kind == "bool":  # astype(bool) would call every non-empty string, "False" included, True
            df[col] = df[col].map({"True": True, "False": False}).astype(bool)
            continue
        try:
            converted = df[col].mask(df[col] == "").astype(kind)
        except (ValueError, TypeError, OverflowError) as exc:  # a value not of the type, or no such type
            raise StoreError(f"{col}: {exc}") from exc
        df[col] = converted
    return df
