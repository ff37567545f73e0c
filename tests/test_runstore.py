"""The run store keeps trained nets and sweep results across reloads, tabs and restarts."""

import dataclasses
import sqlite3
import threading
import time

import pandas as pd
import pytest
import torch

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.core.meta import RunMeta, TrainConfig
from analysis.store.checkpoints import Checkpoint, save_checkpoint
from analysis.store.runstore import RunStore, StoreError, config_key, net_key, run_config
from analysis.store.weights import state_dict_hash


def net(seed: int = 0, epochs: int = 1) -> Checkpoint:
    spec = get_spec("cifar_resnet8").replace(in_channels=1, input_size=8)
    meta = RunMeta(recipe=TrainConfig(epochs=epochs, seed=seed), final={"test_acc": 0.5})
    return Checkpoint(spec, build_model(spec, seed=seed), meta, False)


def test_runs_survive_a_new_store_object(tmp_path):
    a = RunStore(tmp_path)
    ck = net()
    run = a.save_run("r8 seed 0", ck)
    b = RunStore(tmp_path)  # a reload / new tab / server restart opens the same folder
    (got,) = b.runs()
    assert got == run and got.test_acc == 0.5 and got.status == "complete"
    loaded = b.load(got)
    for k, v in ck.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert loaded.meta.recipe == ck.meta.recipe


def test_same_configuration_replaces_different_adds(tmp_path):
    s = RunStore(tmp_path)
    s.save_run("first", net(0))
    s.save_run("again", net(0))
    s.save_run("other seed", net(1))
    assert [r.label for r in s.runs()] == ["again", "other seed"]
    assert s.find(net(1)).label == "other seed" and s.find(net(2)) is None


def test_sweeps_and_deletion(tmp_path):
    s = RunStore(tmp_path)
    run = s.save_run("r8", net())
    df = pd.DataFrame({"deleted": ["none", "layer1.0"], "error": [0.1, 0.25]})
    s.save_sweep(run.key, "single", {"samples": 0, "seed": 0}, df)
    pd.testing.assert_frame_equal(s.sweep(run.key, "single", {"samples": 0, "seed": 0}), df)
    assert s.sweep(run.key, "single", {"samples": 1, "seed": 0}) is None
    s.delete_run(run.key)
    assert s.runs() == [] and s.sweep(run.key, "single", {"samples": 0, "seed": 0}) is None
    assert not run.path.exists()


def test_concurrent_writers(tmp_path):
    s = RunStore(tmp_path)
    errors = []

    def write(i):
        try:
            RunStore(tmp_path).save_sweep(f"net{i}", "k", {"i": i}, pd.DataFrame({"error": [i / 10]}))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(s.sweep(f"net{i}", "k", {"i": i})["error"][0] == i / 10 for i in range(8))


def test_unusable_store_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot use the run store"):
        RunStore(tmp_path / "file")
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "runs.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=r"runs\.sqlite is damaged \(file is not a database\)\. Keep it .*: mv '.*runs\.sqlite' '.*runs\.sqlite\.damaged'") as exc:
        RunStore(tmp_path / "db").runs()
    assert "delete" not in str(exc.value)


def test_config_key_is_stable():
    assert config_key({"b": 1, "a": [1, 2]}) == config_key({"a": [1, 2], "b": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_net_key_is_the_hash_of_the_weights_whatever_the_label(tmp_path):
    ck = net(0)
    assert ck.meta.content_sha256 == ""  # trained here: no hash until saved
    assert net_key(ck).split("/")[0] == state_dict_hash(ck.model.state_dict())
    s = RunStore(tmp_path)
    loaded = s.load(s.save_run("any label", ck))
    assert loaded.meta.content_sha256 == net_key(loaded).split("/")[0]  # the file's hash is the same key
    assert net_key(loaded) == net_key(ck)
    assert net_key(net(1)) != net_key(ck)
    renamed = dataclasses.replace(ck, spec=ck.spec.replace(name="another name"))
    assert net_key(renamed) == net_key(ck)


def test_net_key_tells_apart_two_nets_with_the_same_weights():
    """A plain net and an option-A residual net (or a scaled-shortcut and an identity net) share a
    state_dict; their sweeps must not be mixed up."""
    ck = net(0)
    for other in (ck.spec.plain_twin(), ck.spec.replace(shortcut_variant="scale")):
        assert net_key(dataclasses.replace(ck, spec=other)) != net_key(ck)


def test_sweeps_of_a_net_are_listed_found_and_deleted(tmp_path):
    s = RunStore(tmp_path)
    single = pd.DataFrame({"deleted": ["none", "layer1.0"], "downsample": [False, True], "error": [0.1, 0.25]})
    before = time.time()
    s.save_sweep("sha256:a", "single", {"samples": 0}, single)
    s.save_sweep("sha256:a", "k", {"samples": 5, "seed": 1}, pd.DataFrame({"k": [0], "error": [0.1]}))
    s.save_sweep("sha256:b", "single", {"samples": 0}, single)
    after = time.time()
    assert [(w.kind, w.settings) for w in s.sweeps_of("sha256:a")] == [("single", {"samples": 0}),
                                                                        ("k", {"samples": 5, "seed": 1})]
    row, frame = s.find_sweep("sha256:a", "single", {"samples": 0})
    assert (row.run, row.kind) == ("sha256:a", "single") and before <= row.created <= after
    pd.testing.assert_frame_equal(frame, single)
    assert s.find_sweep("sha256:a", "single", {"samples": 1}) is None
    assert s.delete_sweeps("sha256:a") == 2
    assert s.sweeps_of("sha256:a") == [] and s.delete_sweeps("sha256:a") == 0
    assert [w.kind for w in s.sweeps_of("sha256:b")] == ["single"]  # another net's stay


def test_tables_read_back_as_saved(tmp_path):
    """Column types are kept: an empty string stays a string (a CSV alone reads it as NaN), a bool a bool."""
    df = pd.DataFrame({"stage": ["", "layer1"], "swaps": ["", "layer1.0<->layer1.1"], "downsample": [False, True],
                       "index": [-1, 0], "error": [1 / 3, float("nan")]})
    s = RunStore(tmp_path)
    s.save_sweep("n", "single", {}, df)
    back = s.sweep("n", "single", {})
    pd.testing.assert_frame_equal(back, df)
    assert back["stage"][0] == "" and back["error"][0] == 1 / 3


def test_deleting_a_run_deletes_the_sweeps_of_its_weights(tmp_path):
    s = RunStore(tmp_path)
    ck, other = net(0), net(1)
    run = s.save_run("r8", ck)
    s.save_sweep(net_key(ck), "single", {"samples": 0}, pd.DataFrame({"error": [0.1]}))
    s.save_sweep(net_key(other), "single", {"samples": 0}, pd.DataFrame({"error": [0.2]}))
    s.delete_run(run.key)
    assert s.sweeps_of(net_key(ck)) == []
    assert len(s.sweeps_of(net_key(other))) == 1


def test_a_run_replaced_by_other_weights_forgets_the_old_weights_sweeps(tmp_path):
    s = RunStore(tmp_path)
    first = net(0)
    s.save_run("r8", first)
    s.save_sweep(net_key(first), "single", {}, pd.DataFrame({"error": [0.1]}))
    s.save_run("r8 again", first)  # the same weights again: their sweeps still describe them
    assert len(s.sweeps_of(net_key(first))) == 1
    # the same configuration (spec, recipe, data) with other weights, as a rerun on another machine gives
    again = Checkpoint(first.spec, build_model(first.spec, seed=7), first.meta, False)
    assert config_key(run_config(again)) == config_key(run_config(first)) and net_key(again) != net_key(first)
    s.save_run("r8 retrained", again)
    assert s.sweeps_of(net_key(first)) == []


def test_a_store_from_before_content_keys_is_upgraded(tmp_path):
    """A store made before runs recorded their content key (and sweeps their column types) opens, gains
    the columns, and still forgets a run's sweeps with the run (the key is read from its file)."""
    ck = net(0)
    path = save_checkpoint(tmp_path / "checkpoints" / "old.pt", ck.model, ck.meta)
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    con.executescript("""
        CREATE TABLE runs (key TEXT PRIMARY KEY, label TEXT NOT NULL, path TEXT NOT NULL, created REAL NOT NULL,
                           status TEXT NOT NULL, test_acc REAL, config TEXT NOT NULL);
        CREATE TABLE sweeps (key TEXT PRIMARY KEY, run TEXT NOT NULL, kind TEXT NOT NULL, settings TEXT NOT NULL,
                             created REAL NOT NULL, csv TEXT NOT NULL);
    """)
    con.execute("INSERT INTO runs VALUES ('old', 'r8', ?, 1.0, 'complete', 0.5, '{}')", (str(path),))
    sweep_key = config_key({"run": net_key(ck), "kind": "single", "settings": {}})
    con.execute("INSERT INTO sweeps VALUES (?, ?, 'single', '{}', 2.0, ?)", (sweep_key, net_key(ck), "error\n0.5\n"))
    con.commit()
    con.close()
    s = RunStore(tmp_path)
    assert [r.key for r in s.runs()] == ["old"]
    pd.testing.assert_frame_equal(s.sweep(net_key(ck), "single", {}), pd.DataFrame({"error": [0.5]}))
    s.delete_run("old")
    assert s.runs() == [] and s.sweeps_of(net_key(ck)) == [] and not path.exists()
    RunStore(tmp_path)  # opening it again adds nothing twice


def test_a_store_from_before_the_clean_training_numbers_is_upgraded(tmp_path):
    """A metrics table without the clean training columns opens, gains them (its rows read as not
    measured) and keeps a new run's clean numbers, which only its last epoch has."""
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    con.executescript("""
        CREATE TABLE metrics (run TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL,
                              test_loss REAL, test_acc REAL, lr REAL, seconds REAL, PRIMARY KEY (run, epoch));
        INSERT INTO metrics VALUES ('old', 1, 2.0, 0.25, 2.1, 0.2, 0.1, 3.0);
    """)
    con.commit()
    con.close()
    s = RunStore(tmp_path)
    old = s.metrics(["old"])
    assert list(old.columns) == ["run", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
                                 "train_loss_clean", "train_acc_clean"]
    assert old["train_acc"].tolist() == [0.25] and old["train_acc_clean"].isna().all()
    ck = net(1, epochs=2)
    history = ({"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "test_acc": 0.5},
               {"epoch": 2, "train_loss": 1.0, "train_acc": 0.6, "test_acc": 0.7, "train_loss_clean": 0.9,
                "train_acc_clean": 0.75})
    run = s.save_run("r8", dataclasses.replace(ck, meta=dataclasses.replace(ck.meta, history=history)))
    m = RunStore(tmp_path).metrics([run.key])  # opened again: nothing added twice
    assert m["train_acc_clean"].isna().tolist() == [True, False] and m["train_acc_clean"].iloc[1] == 0.75
    assert m["train_loss_clean"].iloc[1] == 0.9 and m["train_acc"].tolist() == [0.4, 0.6]


def test_a_damaged_sweep_row_is_a_store_error(tmp_path):
    s = RunStore(tmp_path)
    key = s.save_sweep("n", "single", {}, pd.DataFrame({"error": [0.5]}))
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    con.execute("UPDATE sweeps SET csv = 'error\nnot a number\n' WHERE key = ?", (key,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=f"the stored single sweep {key} .* cannot be read"):
        s.sweep("n", "single", {})


# ------------------------------------------------------------------ damaged, locked, full, two processes
def test_a_damaged_page_is_said_never_read_as_an_empty_store(tmp_path):
    """Zero each page of a store in turn: opening it either reads the run back or says the file is
    damaged and how to move it aside. Before the store checked itself, 5 of 14 pages read as a
    store without the run (a grid then retrained it silently)."""
    RunStore(tmp_path / "good").save_run("r8", net())
    blob = (tmp_path / "good" / "runs.sqlite").read_bytes()
    page = 4096
    outcomes = {"read": 0, "damaged": 0}
    for i in range(1, len(blob) // page):
        home = tmp_path / f"p{i}"
        home.mkdir()
        (home / "runs.sqlite").write_bytes(blob[: i * page] + bytes(page) + blob[(i + 1) * page:])
        try:
            RunStore(home)  # opening it checks it
            with sqlite3.connect(home / "runs.sqlite") as con:
                rows = con.execute("SELECT key FROM runs").fetchall()
        except (StoreError, sqlite3.DatabaseError) as exc:
            assert isinstance(exc, StoreError) and "is damaged" in str(exc) and "mv '" in str(exc), exc
            assert "delete" not in str(exc)
            outcomes["damaged"] += 1
            continue
        assert len(rows) == 1, f"page {i} zeroed: the store opened without its run"
        outcomes["read"] += 1
    assert outcomes["damaged"] >= 1


def test_a_locked_or_full_store_is_said_as_such(tmp_path, monkeypatch):
    import analysis.store.runstore as rs

    s = RunStore(tmp_path)
    monkeypatch.setattr(rs, "LOCK_WAIT_S", 0.2)
    holder = sqlite3.connect(tmp_path / "runs.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        with pytest.raises(StoreError, match=r"is locked by another process \(waited 0 s\).*try again") as exc:
            s.save_run("r8", net())
        assert "damaged" not in str(exc.value) and "delete" not in str(exc.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    full = s._error(sqlite3.OperationalError("database or disk is full"))
    assert "is full" in str(full) and "nothing stored was lost" in str(full) and "delete" not in str(full)


WRITER = """
import sys
from tests.test_runstore import net
from analysis.store.runstore import RunStore
s = RunStore(sys.argv[1])
for seed in range(int(sys.argv[2]), int(sys.argv[2]) + 4):
    s.save_run(f"seed {seed}", net(seed))
    s.save_sweep(f"net{seed}", "lesion", {"seed": seed}, __import__("pandas").DataFrame({"a": [seed]}))
"""


def test_two_processes_writing_at_once_keep_the_store_consistent(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(start)], cwd=root,
                              stderr=subprocess.PIPE, text=True) for start in (0, 100)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s = RunStore(tmp_path)
    runs = s.runs()
    assert sorted(r.label for r in runs) == sorted(f"seed {i}" for i in (*range(4), *range(100, 104)))
    for r in runs:  # every row has its file, its weights and its curves
        assert s.load(r).meta.recipe.seed == int(r.label.split()[1])
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0] == 8


def test_temp_files_of_a_killed_write_are_cleaned_on_the_next_start(tmp_path):
    """Issue 28, item 6: a 0-byte .tmp was left in checkpoints/ after kill -9 mid-save."""
    import os

    s = RunStore(tmp_path)
    stale = s.checkpoints / ".abc.pt.0123456789ab.tmp"
    fresh = s.checkpoints / ".def.pt.ba9876543210.tmp"  # a writer in another process, still at work
    other = s.checkpoints / "notes.tmp"  # not ours
    for f in (stale, fresh, other):
        f.write_bytes(b"")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    RunStore(tmp_path)
    assert not stale.exists() and fresh.exists() and other.exists()
    from analysis.core.io import atomic_write

    target = tmp_path / "out" / "run.pt"
    target.parent.mkdir()
    left = target.parent / ".run.pt.00112233aabb.tmp"
    left.write_bytes(b"partial")
    os.utime(left, (old, old))
    atomic_write(target, b"data")  # writing the same file again cleans what a killed write of it left
    assert not left.exists() and target.read_bytes() == b"data"


def test_forgetting_a_nets_lesion_sweeps_keeps_its_path_measurements(tmp_path):
    """Issue 21, item 2: the Lesion lab's 'Forget stored sweeps of this net (8)' also deleted the 4
    Path-ensemble measurements of that net."""
    from analysis.experiments.lesion import SWEEP_KINDS

    s = RunStore(tmp_path)
    for kind in ("single", "k", "paths-trained", "paths-init"):
        s.save_sweep("sha256:n", kind, {"seed": 0}, pd.DataFrame({"a": [1]}))
    assert [w.kind for w in s.sweeps_of("sha256:n", SWEEP_KINDS)] == ["single", "k"]
    assert s.delete_sweeps("sha256:n", SWEEP_KINDS) == 2
    assert sorted(w.kind for w in s.sweeps_of("sha256:n")) == ["paths-init", "paths-trained"]
