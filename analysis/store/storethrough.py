"""Store-through runs: a result table looked up in the run store, computed only when it is missing,
and stored once it is complete. The one place that decides what the Lesion lab's sweeps and the Path
ensemble's measurements do on a hit, a miss, a cancel, an error and a store that cannot be written.

The contract (:func:`get_or_run`, :func:`get_or_run_all`):

* **Found**: a (net, kind, settings) the store holds is returned as it was stored (its table and the
  time it was measured), ``from_store=True``; nothing is computed.
* **Missing**: ``compute(progress)`` is called once; its table is saved under the same key with the
  time it finished, and returned (``from_store=False``) with that same time, so a later lookup
  reads back an equal :class:`Outcome` but for ``from_store``.
* **lookup_only**: a miss is None; nothing is computed or written.
* **Cancel** (a ``KeyboardInterrupt``, Streamlit's rerun or stop exception: a ``BaseException``
  raised inside ``compute``) and **errors** (our :class:`~analysis.core.errors.LensError` subclasses, or
  any other exception) propagate unchanged, and nothing is stored: a batch is saved only when every
  missing job of it finished, so a cancel in the second leaves not even the first stored.
* **Store write fails** (its :class:`~analysis.store.runstore.StoreError`: a full disk, a locked or
  read-only store): said in :attr:`Outcome.note`, never raised; the computed result is still
  returned, for the caller to keep for its session.
* **Store read fails** while computing is allowed: treated as a miss (the caller asked for a result,
  and the save then replaces the unreadable row); with ``lookup_only`` (and :func:`lookup`) the
  StoreError is raised, as there is nothing else to say it with.
* **No store** (``store=None``: the caller could not open one and has said so): computed every time,
  never stored, no note.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import pandas as pd

from analysis.store.runstore import StoreError

if TYPE_CHECKING:
    from analysis.store.runstore import RunStore

#: the (done, total) callback the library's sweeps and measurements take
ProgressFn = Callable[[int, int], None]
#: computes one result table, reporting to the progress callback it is given (None: nobody listens)
Compute = Callable[[ProgressFn | None], pd.DataFrame]


@dataclass(frozen=True)
class Outcome:
    """One result: its table, when it was measured (seconds since the epoch), whether it came from
    the run store (measured in an earlier session, tab or server) rather than computed by this call,
    and ``note``: why a computed result could not be stored (the store's error message), else None."""

    frame: pd.DataFrame
    created: float
    from_store: bool
    note: str | None = None


@dataclass(frozen=True)
class Job:
    """One store-through result of a batch: whose (``run``: the net's :func:`~analysis.store.runstore.net_key`),
    which ``kind``, with what ``settings`` (the store's key), and how to compute it. ``label`` is the
    caller's name for it (a progress bar's text); the runner only hands it back through ``on_start``."""

    run: str
    kind: str
    settings: dict[str, Any]
    compute: Compute
    label: str = ""


def lookup(store: RunStore | None, run: str, kind: str, settings: dict[str, Any]) -> Outcome | None:
    """The stored result of (run, kind, settings), or None (also without a store). A store that
    cannot be read raises its StoreError: the caller says it."""
    if store is None:
        return None
    found = store.find_sweep(run, kind, settings)
    if found is None:
        return None
    meta, frame = found
    return Outcome(frame, meta.created, from_store=True)


@overload
def get_or_run(store: RunStore | None, run: str, kind: str, settings: dict[str, Any], compute: Compute, *,
               progress: ProgressFn | None = ..., lookup_only: Literal[False] = ..., refresh: bool = ...) -> Outcome: ...
@overload
def get_or_run(store: RunStore | None, run: str, kind: str, settings: dict[str, Any], compute: Compute, *,
               progress: ProgressFn | None = ..., lookup_only: bool, refresh: bool = ...) -> Outcome | None: ...
def get_or_run(store: RunStore | None, run: str, kind: str, settings: dict[str, Any], compute: Compute, *,
               progress: ProgressFn | None = None, lookup_only: bool = False, refresh: bool = False) -> Outcome | None:
    """The stored result of (run, kind, settings); else, unless ``lookup_only`` (then None),
    ``compute(progress)`` saved and returned. ``refresh`` skips the lookup: computed again and the
    stored row replaced (a page's "measure again"). See the module's docstring for cancel, errors and
    a store that cannot be read or written."""
    if lookup_only:
        return lookup(store, run, kind, settings)
    (outcome,) = get_or_run_all(store, [Job(run, kind, settings, compute)],
                                on_start=None if progress is None else lambda job: progress, refresh=refresh)
    return outcome


def get_or_run_all(store: RunStore | None, jobs: Sequence[Job], *,
                   on_start: Callable[[Job], ProgressFn | None] | None = None, refresh: bool = False) -> list[Outcome]:
    """Every job's result, in order: the stored ones as they are, the missing ones computed one
    after another and then saved, all of them or none (an exception from any ``compute`` propagates
    before anything is written). ``on_start(job)`` is called as a missing job starts computing; what
    it returns is the progress callback that job's ``compute`` gets (a page draws its bar there).
    ``refresh``: nothing is looked up, every job is computed and replaces its stored row."""
    found: list[Outcome | None] = [None if refresh else _found(store, j) for j in jobs]
    computed: dict[int, Outcome] = {}
    for i, job in enumerate(jobs):
        if found[i] is not None:
            continue
        frame = job.compute(on_start(job) if on_start is not None else None)
        # the time it finished, saved as the row's own time: a later lookup reads back the same moment
        computed[i] = Outcome(frame, time.time(), from_store=False)
    # only here, after every compute returned: a cancel or an error above has written nothing
    for i, outcome in computed.items():
        computed[i] = _save(store, jobs[i], outcome)
    return [computed[i] if hit is None else hit for i, hit in enumerate(found)]


def _found(store: RunStore | None, job: Job) -> Outcome | None:
    """A job's stored result; a store that cannot be read is a miss here, as the caller wants a
    result either way (and the save replaces the unreadable row, or says why it cannot)."""
    try:
        return lookup(store, job.run, job.kind, job.settings)
    except StoreError:
        return None


def _save(store: RunStore | None, job: Job, outcome: Outcome) -> Outcome:
    """The outcome, stored; with the store's reason in ``note`` where it could not be (never raised:
    the caller still has the result, for its session)."""
    if store is None:
        return outcome
    try:
        store.save_sweep(job.run, job.kind, job.settings, outcome.frame, created=outcome.created)
    except StoreError as exc:
        return Outcome(outcome.frame, outcome.created, from_store=False, note=str(exc))
    return outcome


__all__ = ["Compute", "Job", "Outcome", "ProgressFn", "get_or_run", "get_or_run_all", "lookup"]
