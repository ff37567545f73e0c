"""The store-through runner (analysis.store.storethrough): found results are read, missing ones computed
once and stored, lookup_only computes nothing, a store that cannot be written is said in the outcome,
and a cancel or an error inside compute stores nothing, not even the jobs of its batch that finished."""

import sqlite3

import pandas as pd
import pytest

from analysis.core.errors import ConfigError
from analysis.store import storethrough
from analysis.store.runstore import RunStore, StoreError
from analysis.store.storethrough import Job, get_or_run, get_or_run_all

RUN, KIND, SETTINGS = "net-a", "single", {"samples": 0, "seed": 0, "dataset": "digits16"}
TABLE = pd.DataFrame({"block": ["layer1.0", "layer1.1"], "error": [0.125, 0.5]})


class Counted:
    """A compute function that counts its calls and records the progress callback it was given."""

    def __init__(self, frame: pd.DataFrame = TABLE) -> None:
        self.frame, self.calls, self.progress = frame, 0, []

    def __call__(self, progress):
        self.calls += 1
        self.progress.append(progress)
        return self.frame.copy()


def never(progress):
    raise AssertionError("computed a result the store holds")


def test_a_stored_result_is_returned_and_compute_is_not_called(tmp_path):
    store = RunStore(tmp_path)
    store.save_sweep(RUN, KIND, SETTINGS, TABLE, created=1234.5)
    got = get_or_run(store, RUN, KIND, SETTINGS, never)
    assert got.from_store is True and got.created == 1234.5 and got.note is None
    pd.testing.assert_frame_equal(got.frame, TABLE)


def test_a_missing_result_is_computed_once_stored_and_read_back_with_the_same_time(tmp_path):
    store, compute = RunStore(tmp_path), Counted()
    first = get_or_run(store, RUN, KIND, SETTINGS, compute)
    assert compute.calls == 1 and first.from_store is False and first.note is None
    pd.testing.assert_frame_equal(first.frame, TABLE)
    (row,) = store.sweeps_of(RUN)
    assert (row.kind, row.settings, row.created) == (KIND, SETTINGS, first.created)
    # a second call (another session, tab or server on the same store) reads it: nothing computed
    second = get_or_run(RunStore(tmp_path), RUN, KIND, SETTINGS, compute)
    assert compute.calls == 1 and second.from_store is True and second.created == first.created
    pd.testing.assert_frame_equal(second.frame, first.frame)
    # other settings are another result
    get_or_run(store, RUN, KIND, {**SETTINGS, "seed": 1}, compute)
    assert compute.calls == 2 and len(store.sweeps_of(RUN)) == 2


def test_lookup_only_returns_none_and_neither_computes_nor_stores(tmp_path):
    store, compute = RunStore(tmp_path), Counted()
    assert get_or_run(store, RUN, KIND, SETTINGS, compute, lookup_only=True) is None
    assert compute.calls == 0 and store.sweeps_of(RUN) == []
    store.save_sweep(RUN, KIND, SETTINGS, TABLE, created=99.0)
    hit = get_or_run(store, RUN, KIND, SETTINGS, compute, lookup_only=True)
    assert hit is not None and hit.from_store is True and hit.created == 99.0 and compute.calls == 0


def test_a_store_that_cannot_be_written_is_said_in_the_note_and_the_result_is_kept(tmp_path, monkeypatch):
    store, compute = RunStore(tmp_path), Counted()

    def full(*args, **kwargs):
        raise StoreError("the disk holding the run store is full")

    monkeypatch.setattr(store, "save_sweep", full)
    got = get_or_run(store, RUN, KIND, SETTINGS, compute)
    assert compute.calls == 1 and got.from_store is False
    assert got.note == "the disk holding the run store is full"
    pd.testing.assert_frame_equal(got.frame, TABLE)
    monkeypatch.undo()
    assert store.sweeps_of(RUN) == []


def test_a_cancel_inside_compute_propagates_and_stores_nothing(tmp_path):
    store = RunStore(tmp_path)

    def cancelled(progress):
        raise KeyboardInterrupt  # Ctrl-C, or Streamlit's rerun/stop exception: not an Exception either

    with pytest.raises(KeyboardInterrupt):
        get_or_run(store, RUN, KIND, SETTINGS, cancelled)
    assert store.sweeps_of(RUN) == []


def test_a_cancel_in_the_second_job_leaves_not_even_the_first_stored(tmp_path):
    store, first = RunStore(tmp_path), Counted()

    def cancelled(progress):
        raise KeyboardInterrupt

    jobs = [Job(RUN, KIND, SETTINGS, first), Job("net-b", KIND, SETTINGS, cancelled)]
    with pytest.raises(KeyboardInterrupt):
        get_or_run_all(store, jobs)
    assert first.calls == 1  # it finished before the cancel
    assert store.sweeps_of(RUN) == [] and store.sweeps_of("net-b") == []


def test_our_errors_propagate_unchanged_and_store_nothing(tmp_path):
    store, first = RunStore(tmp_path), Counted()
    refused = ConfigError("batch 512 is larger than the test split (450 images)")

    def fails(progress):
        raise refused

    with pytest.raises(ConfigError) as caught:
        get_or_run_all(store, [Job(RUN, KIND, SETTINGS, first), Job("net-b", KIND, SETTINGS, fails)])
    assert caught.value is refused
    assert store.sweeps_of(RUN) == [] and store.sweeps_of("net-b") == []


def test_a_batch_computes_only_what_is_missing_and_hands_each_its_progress(tmp_path):
    store, a, b = RunStore(tmp_path), Counted(), Counted(TABLE.assign(error=[0.9, 0.9]))
    store.save_sweep(RUN, KIND, SETTINGS, TABLE, created=5.0)
    started, bars = [], {"b": lambda done, total: None}

    def start(job):
        started.append(job.label)
        return bars[job.label]

    got = get_or_run_all(store, [Job(RUN, KIND, SETTINGS, a, label="a"), Job("net-b", KIND, SETTINGS, b, label="b")],
                         on_start=start)
    assert [o.from_store for o in got] == [True, False] and got[0].created == 5.0
    assert (a.calls, b.calls, started) == (0, 1, ["b"]) and b.progress == [bars["b"]]
    pd.testing.assert_frame_equal(got[1].frame, b.frame)
    assert store.sweep("net-b", KIND, SETTINGS).equals(b.frame)
    # the single call hands its progress callback straight to compute
    c = Counted()
    report = lambda done, total: None  # noqa: E731
    get_or_run(store, "net-c", KIND, SETTINGS, c, progress=report)
    assert c.progress == [report]


def test_refresh_computes_again_and_replaces_the_stored_row(tmp_path):
    store, compute = RunStore(tmp_path), Counted(TABLE.assign(error=[0.0, 0.25]))
    store.save_sweep(RUN, KIND, SETTINGS, TABLE, created=5.0)
    got = get_or_run(store, RUN, KIND, SETTINGS, compute, refresh=True)
    assert compute.calls == 1 and got.from_store is False and got.created > 5.0
    (row,) = store.sweeps_of(RUN)
    assert row.created == got.created and store.sweep(RUN, KIND, SETTINGS).equals(compute.frame)


def test_an_unreadable_row_is_computed_again_and_replaced_but_raised_by_a_lookup(tmp_path):
    store, compute = RunStore(tmp_path), Counted()
    store.save_sweep(RUN, KIND, SETTINGS, TABLE)
    with sqlite3.connect(store.db) as con:  # damaged outside the app
        con.execute("UPDATE sweeps SET dtypes = 'not json'")
    with pytest.raises(StoreError):
        get_or_run(store, RUN, KIND, SETTINGS, compute, lookup_only=True)
    got = get_or_run(store, RUN, KIND, SETTINGS, compute)
    assert compute.calls == 1 and got.from_store is False and got.note is None
    assert storethrough.lookup(store, RUN, KIND, SETTINGS).created == got.created


def test_without_a_store_every_call_computes_and_nothing_is_noted():
    compute = Counted()
    assert storethrough.lookup(None, RUN, KIND, SETTINGS) is None
    first, second = (get_or_run(None, RUN, KIND, SETTINGS, compute) for _ in range(2))
    assert compute.calls == 2 and not first.from_store and first.note is None and second.note is None
