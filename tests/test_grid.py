"""Experiment grids (issue 12): He et al. 2016's variants trained as independent runs, stored as they
finish, never retrained, the same numbers in any executor, and readings computed from the numbers."""

import contextlib
import json
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.arch.theory import ACTIVATION_PLACEMENT, SHORTCUT_VARIANTS
from analysis.cli.main import main
from analysis.core.errors import ConfigError, LensError, SpecError
from analysis.core.meta import RunMeta, TrainConfig
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor, run_task
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore, config_key, run_config
from analysis.studies import grid as g

ROOT = Path(__file__).resolve().parent.parent
TINY_DATA = DataSpec(size=8, train_images=128)
TINY_RECIPE = TrainConfig(epochs=1, batch_size=64, warmup_epochs=0)


def tiny(variants=("original", "exclusive_gating"), seeds=(0,), epochs=1) -> g.Grid:
    return g.Grid(tuple(variants), depths=(8,), seeds=tuple(seeds),
                  recipe=TrainConfig(epochs=epochs, batch_size=64, warmup_epochs=0), data=TINY_DATA)


class Counting(InProcessExecutor):
    """An in-process executor that remembers which tasks it was given."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.submitted: list[str] = []

    def submit(self, task) -> None:
        self.submitted.append(task.key)
        super().submit(task)


# ------------------------------------------------------------------ the variants table
def test_variants_carry_the_papers_numbers():
    # the same numbers the theory page quotes from He et al. 2016 Tables 1 and 2
    table1 = [r[2] for r in SHORTCUT_VARIANTS]
    ours1 = [g.VARIANTS[n].paper.split(" ")[0] for n in ("original", "scaling_0.5", "scaling_0.5_0.5",
                                                        "exclusive_gating", "shortcut_gating", "conv_shortcut",
                                                        "dropout_shortcut")]
    assert ours1 == table1
    ours2 = [g.VARIANTS[n].paper for n in ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")]
    assert ours2 == [r[1] for r in ACTIVATION_PLACEMENT]
    # Table 1's dropout shortcut twice: PyTorch's inverted dropout and the paper's, not rescaled
    assert len(g.PAPER_VARIANTS) == 12 and "plain" not in g.PAPER_VARIANTS
    assert g.VARIANTS["dropout_shortcut_paper"].paper == g.VARIANTS["dropout_shortcut"].paper == "fail (> 20 %)"


def test_variant_specs():
    s = g.variant_spec(g.VARIANTS["scaling_0.5_0.5"], 20, channels=1, size=16)
    assert (s.shortcut_variant, s.shortcut_scale, s.scale_residual, s.layers, s.in_channels) == ("scale", 0.5, True,
                                                                                                (3, 3, 3), 1)
    assert g.variant_spec(g.VARIANTS["conv_shortcut"], 8).shortcut == "C"
    assert g.variant_spec(g.VARIANTS["full_preact"], 8).preact
    assert g.variant_spec(g.variant("full_preact+exclusive_gating"), 8).shortcut_variant == "gate"


def test_a_gate_start_after_at():
    """'exclusive_gating@-2': the same variant with b_g = -2 (the b_g sweep); at the paper's -6 it is
    the paper's row itself (same spec, so the same store key), with the paper's verdict."""
    v = g.variant("exclusive_gating@-2")
    assert (v.name, v.label, v.changes["gate_bias"], v.changes["shortcut_variant"]) == (
        "exclusive_gating@-2", "exclusive gating (b_g = -2)", -2.0, "gate")
    # He et al. 2016, Table 1: exclusive gating "fail" from b_g = 0 to -5, 9.81 % at -7; shortcut-only
    # gating 12.86 % at 0; no number at the other starts
    assert (v.table, v.paper_error, v.paper) == ("Table 1", None, "fail (> 20 %)")
    assert g.variant("exclusive_gating@-7").paper == "9.81" and g.variant("shortcut_gating@0").paper == "12.86"
    assert g.variant("exclusive_gating@-5").paper_fail and not g.variant("exclusive_gating@-8").paper_fail
    other = g.variant("shortcut_gating@-2")
    assert (other.table, other.paper_error, other.paper) == ("", None, "")
    assert g.variant_spec(v, 8).gate_bias == -2.0
    assert g.variant("shortcut_gating@0").changes["gate_bias"] == 0.0
    assert g.variant("shortcut_gating@-0").label == "shortcut-only gating (b_g = 0)"
    # one name per net, whatever the spelling
    assert {g.variant(n).name for n in ("exclusive_gating@-2.0", "exclusive_gating@-2e0", " exclusive_gating@-2")} == {
        "exclusive_gating@-2"}
    assert g.variant("shortcut_gating@-0").name == "shortcut_gating@0"
    assert g.variant("full_preact + exclusive_gating@-2.0").name == "full_preact+exclusive_gating@-2"
    assert g.Grid(("exclusive_gating@-2.0", "original"), (8,)).variants == ("exclusive_gating@-2", "original")
    for twice in (("exclusive_gating", "exclusive_gating@-6"), ("exclusive_gating@0", "exclusive_gating@-0"),
                  ("full_preact+exclusive_gating", "exclusive_gating+full_preact")):
        with pytest.raises(ConfigError, match="are the same net"):
            g.Grid(twice, (8,))
    assert g.variant("exclusive_gating@-6") is g.VARIANTS["exclusive_gating"]
    assert g.variant_spec(g.variant("full_preact+shortcut_gating@-3"), 8).gate_bias == -3.0
    assert g.paper_direction("exclusive_gating@-6") == "worse" and g.paper_direction("exclusive_gating@-3") == "worse"
    assert g.paper_direction("shortcut_gating@0") == "worse" and g.paper_direction("shortcut_gating@-3") is None
    assert g.agreement("shortcut_gating@-3", 20, None) == (
        "— (another gate start: the paper reports this gate at b_g = 0, -6 only)")
    assert g.agreement("full_preact+exclusive_gating@-2", 20, None) == "— (not in the paper's tables)"
    for name, words in (("original@-2", "only exclusive_gating, shortcut_gating have a gate"),
                        ("exclusive_gating@x", "must be a number"), ("exclusive_gating@nan", "finite"),
                        ("nope@-2", "unknown variant 'nope'"),
                        ("exclusive_gating@-2+exclusive_gating", "gate_bias")):
        with pytest.raises(ConfigError, match=words):
            g.variant(name)
    with pytest.raises(SpecError, match="gate_bias must be between"):
        g.Grid(("exclusive_gating@-25",), (8,))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, err, words", [
    ({"variants": ("original", "nope")}, ConfigError, "unknown variant 'nope'"),
    ({"variants": ("plain+exclusive_gating",)}, SpecError, "plain net has no shortcut"),
    ({"variants": ("original",), "seeds": ()}, ConfigError, "at least one seed"),
    ({"variants": ("original", "original")}, ConfigError, "listed twice"),
    ({"variants": ("original",), "depths": (21,)}, SpecError, "6n+2"),
    ({"variants": ("original",), "seeds": (-1,)}, ConfigError, "seed"),
    ({"variants": ("exclusive_gating+shortcut_gating",)}, ConfigError, "shortcut_variant"),
])
def test_bad_grids_are_refused(kwargs, err, words):
    with pytest.raises(err, match=words.replace("+", r"\+")) as exc:
        g.Grid(**kwargs)
    assert isinstance(exc.value, LensError)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    for argv, words in ((["--variants", "nope"], "unknown variant"), (["--seeds", "0"], "--seeds"),
                        (["--variants", "plain+exclusive_gating"], "plain net has no shortcut"),
                        (["--out", str(tmp_path / "r.txt")], ".json or .csv")):
        assert main(["grid", "--store", str(tmp_path / "s"), *argv]) == 2
        err = capsys.readouterr().err
        assert [ln for ln in err.splitlines() if ln.startswith("error:")] and words in err and "Traceback" not in err
    assert main(["grid", "--list-variants"]) == 0
    assert "shortcut-only gating (b_g = -6)" in capsys.readouterr().out


# ------------------------------------------------------------------ keys, store, no retraining
def test_run_keys_are_the_stores_keys_and_nothing_is_trained_twice(tmp_path):
    store = RunStore(tmp_path)
    grid = tiny()
    ex = Counting()
    first = run_grid_ok(grid, store, ex)
    runs = grid.runs()
    assert ex.submitted == [r.key for r in runs] and first.trained == 2 and first.reused == 0
    for r in runs:  # the key computed before training is the one the store derives from the checkpoint
        stored = store.get(r.key)
        assert stored is not None and config_key(run_config(load_checkpoint(stored.path))) == r.key
    again = Counting()
    second = g.run_grid(grid, store, again)
    assert again.submitted == [] and second.trained == 0 and second.reused == 2
    cols = ["variant", "depth", "seed", "status", "train_error", "test_error", "epochs"]
    pd.testing.assert_frame_equal(first.results[cols], second.results[cols])
    assert list(second.results["reused"]) == [True, True]
    # a wider grid trains only what is new
    third = Counting()
    g.run_grid(tiny(seeds=(0, 1)), store, third)
    assert len(third.submitted) == 2 and set(third.submitted).isdisjoint(ex.submitted)


def run_grid_ok(grid, store, ex, **kw):
    res = g.run_grid(grid, store, ex, **kw)
    assert list(res.results["status"]) == ["complete"] * len(res.results), res.results
    return res


def test_metrics_and_grid_membership_are_queryable(tmp_path):
    store = RunStore(tmp_path)
    grid = tiny(variants=("original",), epochs=2)
    res = run_grid_ok(grid, store, InProcessExecutor(threads=1))
    key = res.results["key"][0]
    m = store.metrics([key])
    assert list(m["epoch"]) == [1, 2] and list(m["run"]) == [key, key]
    ck = load_checkpoint(store.get(key).path)
    assert list(m["test_acc"]) == [h["test_acc"] for h in ck.meta.history]
    members = store.grid_runs(grid.id)
    assert list(members["run"]) == [key] and list(members["variant"]) == ["original"]
    assert store.grids()[grid.id]["variants"] == ["original"]
    con = sqlite3.connect(store.db)  # a user can read the same with standard tools
    assert con.execute("SELECT COUNT(*) FROM metrics WHERE run = ?", (key,)).fetchone() == (2,)
    con.close()
    store.delete_run(key)
    assert store.metrics([key]).empty


def test_gradient_flow_is_recorded_and_stored_by_run_key(tmp_path):
    from analysis.experiments.gradflow import COLUMNS
    from analysis.experiments.train import train

    store = RunStore(tmp_path)
    grid = tiny(variants=("original",))
    plain = run_grid_ok(grid, store, InProcessExecutor(threads=1))
    key = plain.results["key"][0]
    assert store.gradients(key) is None
    ex = Counting()
    recorded = run_grid_ok(grid, store, ex, grad_every=1)
    assert ex.submitted == [key]  # stored without records: trained again, same key, same numbers
    cols = ["train_error", "test_error", "epochs"]
    pd.testing.assert_frame_equal(plain.results[cols], recorded.results[cols])
    got = store.gradients(key)
    (r,) = grid.runs()
    # the grid trained with one intra-op thread (InProcessExecutor(threads=1)); a sum over another
    # number of threads rounds differently, so the reference run takes one too, whatever the process
    # has (the suite's xdist workers have one, a plain `pytest` run the machine's cores)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = train(r.spec, r.data.load(), r.config, grad_every=1).gradients
    finally:
        torch.set_num_threads(before)
    assert list(got.columns) == list(COLUMNS) and len(got) == len(want) == 2 * 2 * 3  # 2 steps x 2 kinds x 3 blocks
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    again = Counting()
    g.run_grid(grid, store, again, grad_every=1)
    assert again.submitted == []
    with pytest.raises(ConfigError, match="grad_every"):
        g.run_grid(grid, store, again, grad_every=-1)


def test_gradient_records_round_trip(tmp_path):
    store = RunStore(tmp_path)
    df = pd.DataFrame({"step": [0, 10], "block": ["layer1.0", "layer1.0"], "grad_norm": [1e-3, 2.5e-4]})
    store.save_gradients("k", df)
    pd.testing.assert_frame_equal(store.gradients("k"), df)
    assert store.gradients("other") is None


# ------------------------------------------------------------------ cancel, executors, concurrency, kill
def test_cancel_keeps_finished_runs(tmp_path):
    store = RunStore(tmp_path)
    grid = tiny(variants=("original", "exclusive_gating", "shortcut_gating"))
    finished = []

    def progress(p):
        if p.finished is not None:
            finished.append(p.finished["key"])

    res = g.run_grid(grid, store, InProcessExecutor(threads=1), progress=progress, cancel=lambda: bool(finished))
    assert res.cancelled and list(res.results["status"]) == ["complete", "cancelled", "cancelled"]
    assert [r.key for r in store.runs()] == finished == [res.results["key"][0]]
    rest = Counting()
    again = run_grid_ok(grid, store, rest)
    assert rest.submitted == list(res.results["key"][1:]) and again.reused == 1


def test_the_stored_grid_is_read_without_training_or_writing(tmp_path):
    """grid.stored_grid (a page opened again): the stored runs' rows, the others 'not run', nothing
    trained or written; None when the store holds none of the grid's runs."""
    store = RunStore(tmp_path)
    grid = tiny(variants=("original", "exclusive_gating", "shortcut_gating"))
    assert g.stored_grid(grid, store) is None
    finished = []

    def progress(p):
        if p.finished is not None:
            finished.append(p.finished["key"])

    ran = g.run_grid(grid, store, InProcessExecutor(threads=1), progress=progress, cancel=lambda: bool(finished))
    before = (tmp_path / "runs.sqlite").stat().st_mtime_ns if (tmp_path / "runs.sqlite").exists() else None
    shown = g.stored_grid(grid, store)
    assert shown is not None and shown.trained == 0 and shown.reused == 1 and shown.cancelled
    assert list(shown.results["status"]) == ["complete", "not run", "not run"]
    assert shown.results["test_error"][0] == ran.results["test_error"][0]
    assert len(store.runs()) == 1
    if before is not None:
        assert (tmp_path / "runs.sqlite").stat().st_mtime_ns == before  # read, never written


def test_cancel_stops_a_pool_and_keeps_finished_runs(tmp_path):
    store = RunStore(tmp_path)
    # every training image: runs long enough (seconds) that the cancel reaches the second mid-run
    grid = g.Grid(("original", "exclusive_gating", "shortcut_gating"), depths=(8,), seeds=(0,),
                  recipe=TrainConfig(epochs=3, batch_size=64, warmup_epochs=0), data=DataSpec(size=8))
    finished = []

    def progress(p):
        if p.finished is not None:
            finished.append(p.finished["key"])

    with PoolExecutor(workers=1) as pool:  # the second task is queued in the worker, the third not yet sent
        res = g.run_grid(grid, store, pool, progress=progress, cancel=lambda: bool(finished))
    assert res.cancelled and list(res.results["status"]) == ["complete", "cancelled", "cancelled"]
    assert [r.key for r in store.runs()] == [res.results["key"][0]] == finished[:1]


def test_same_numbers_in_a_pool_and_in_process():
    runs = tiny(variants=("original", "dropout_shortcut")).runs()
    with PoolExecutor(workers=2) as pool:
        for r in runs:
            pool.submit(r.task())
        pooled = {res.key: res for res in pool.results()}
    for r in runs:
        here = InProcessExecutor(threads=1)
        here.submit(r.task())
        (local,) = list(here.results())
        a, b = load_checkpoint(local.checkpoint), load_checkpoint(pooled[r.key].checkpoint)
        assert a.meta.content_sha256 == b.meta.content_sha256  # identical weights, bit for bit
        timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in ck.meta.history] for ck in (a, b)]
        assert timeless[0] == timeless[1] and len(timeless[0]) == 1


def _write_runs(home: str, seed: int, n: int) -> None:
    """One writer process: n runs (with metrics), a grid record and outcome notes."""
    import torch

    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.store.checkpoints import Checkpoint

    torch.set_num_threads(1)
    store = RunStore(home)
    spec = get_spec("cifar_resnet8").replace(in_channels=1, input_size=8)
    keys = []
    for i in range(n):
        meta = RunMeta(recipe=TrainConfig(epochs=2, seed=seed * 1000 + i), final={"test_acc": 0.5},
                       history=({"epoch": 1, "test_acc": 0.4}, {"epoch": 2, "test_acc": 0.5}))
        run = store.save_run(f"w{seed} r{i}", Checkpoint(spec, build_model(spec, seed=i), meta, False))
        keys.append(run.key)
        store.save_grid(f"grid{seed}", {"writer": seed}, [(run.key, "original", 8, i)])
        store.note_outcome(f"grid{seed}", run.key, f"ok {i}")


def test_two_processes_write_the_store_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_runs, args=(str(tmp_path), s, 6)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = RunStore(tmp_path)
    assert sorted(r.label for r in store.runs()) == sorted(f"w{s} r{i}" for s in (1, 2) for i in range(6))
    assert len(store.metrics()) == 24
    for s in (1, 2):
        assert list(store.grid_runs(f"grid{s}")["outcome"]) == [f"ok {i}" for i in range(6)]
    con = sqlite3.connect(store.db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


KILL_VARIANTS = ["original", "exclusive_gating", "shortcut_gating", "bn_after_add"]


def start_grid_and_wait_for_a_run(store_dir: Path, *extra: str) -> subprocess.Popen:
    """A CLI grid in a subprocess, returned once its first run is in the store."""
    cmd = [sys.executable, "-m", "analysis", "grid", "--variants", *KILL_VARIANTS, "--depths", "8", "--seeds", "1",
           "--epochs", "2", "--warmup", "0", "--size", "8", "--train-images", "128", "--store", str(store_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (store_dir / "runs.sqlite").exists():
            try:
                with sqlite3.connect(store_dir / "runs.sqlite", timeout=30) as con:
                    if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                        break
            except sqlite3.OperationalError:
                pass  # the file exists a moment before the child has created its tables
        time.sleep(0.02)
    return proc


def test_ctrl_c_keeps_finished_runs_and_says_so(tmp_path):
    out = tmp_path / "r.json"
    proc = start_grid_and_wait_for_a_run(tmp_path / "store", "--out", str(out))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the grid finished before the signal")
    assert proc.returncode == 130 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    kept = len(RunStore(tmp_path / "store").runs())
    assert f"grid cancelled; {kept} of 4 runs finished and kept in" in line and "not created" in line
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_resume_after_a_killed_process(tmp_path):
    variants = KILL_VARIANTS
    store_dir = tmp_path / "store"
    proc = start_grid_and_wait_for_a_run(store_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    store = RunStore(store_dir)
    kept = {r.key: r.created for r in store.runs()}
    assert 1 <= len(kept) < len(variants), "the kill came after every run had finished"
    ex = Counting()
    res = run_grid_ok(tiny(variants=variants, epochs=2), store, ex)
    assert set(ex.submitted).isdisjoint(kept) and len(ex.submitted) == len(variants) - len(kept)
    assert res.reused == len(kept) and all(store.get(k).created == c for k, c in kept.items())


# ------------------------------------------------------------------ readings
def frame(rows):
    return pd.DataFrame([{"label": "", "reused": False, "seconds": 1.0, "key": f"k{i}", "message": "", "epochs": 1,
                          "status": "complete", **r} for i, r in enumerate(rows)], columns=g.RESULT_COLUMNS)


def _runs(variant, depth, errors, status="complete", seeds=None, train=None):
    seeds = range(len(errors)) if seeds is None else seeds
    train = [e / 2 for e in errors] if train is None else train
    return [{"variant": variant, "depth": depth, "seed": s, "test_error": e, "train_error": t, "status": status}
            for s, e, t in zip(seeds, errors, train, strict=True)]


def _paired(a, b):
    """scipy's paired t-test of a - b: (mean, 95 % CI low, high), and the detectable difference with
    power 0.8 by its formula, (t(0.975, n-1) + t(0.8, n-1)) · sd / √n."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    sd = float(pd.Series(d).std(ddof=1))
    found = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    return sum(d) / n, float(ci.low), float(ci.high), float(found)


ORIGINAL_20 = [2.0, 3.0, 2.5]


def test_readings_follow_a_test_over_the_seeds():
    """Each wording of a reading, its numbers from scipy's paired t-test (a grid's seeds share their
    batch order, so a variant is compared with the original seed by seed), differences also in test
    images of the 450."""
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("conv_shortcut", 20, [4.0, 5.2, 4.4])
                    + _runs("full_preact", 20, [0.5, 1.0, 0.4]) + _runs("relu_preact", 20, [2.2, 3.1, 2.4])
                    + _runs("shortcut_gating", 20, [2.4, 3.0]) + _runs("scaling_0.5", 20, [30.0])
                    + _runs("dropout_shortcut", 20, [math.nan] * 3, "diverged")
                    + _runs("bn_after_add", 20, [3.5, 4.0, 2.9], seeds=[3, 4, 5])
                    + _runs("relu_before_add", 56, [3.0]))
    s = g.summarise(results, 450).set_index(["variant", "depth"])
    r = s["reading"]
    half = 4.302652729911275 * 0.5 / math.sqrt(3)  # t(0.975, 2) · s / √3 with s = 0.5
    assert r[("original", 20)] == f"the baseline: 2.50 ± {half:.2f} % (95 % CI, t, 3 seeds); paper: 6.61 %"
    m, lo, hi, found = _paired([4.0, 5.2, 4.4], ORIGINAL_20)
    assert r[("conv_shortcut", 20)] == (
        f"worse than the original by {m:.2f} pp = {m * 4.5:.1f} test images of 450 (95 % CI {lo:+.2f} to {hi:+.2f} "
        f"pp, paired t over 3 seeds; detectable ≥ {found:.2f} pp = {found * 4.5:.1f} test images of 450); "
        "paper: +5.61 pp vs the original")
    m, lo, hi, found = _paired([0.5, 1.0, 0.4], ORIGINAL_20)
    assert hi < 0 and r[("full_preact", 20)].startswith(f"better than the original by {-m:.2f} pp = ")
    m, lo, hi, found = _paired([2.2, 3.1, 2.4], ORIGINAL_20)
    assert lo < 0 < hi and r[("relu_preact", 20)] == (
        f"no difference from the original detected ({m:+.2f} pp; 95 % CI {lo:+.2f} to {hi:+.2f} pp, paired t over "
        f"3 seeds; detectable ≥ {found:.2f} pp = {found * 4.5:.1f} test images of 450); paper: +0.10 pp vs the original")
    # two seeds (seeds 0 and 1 of both): no test, and it says so
    assert r[("shortcut_gating", 20)] == ("+0.20 pp vs the original = 0.9 test images of 450 (2 seeds: no test); "
                                          "paper: +0.30 pp vs the original")
    assert r[("scaling_0.5", 20)] == "fails to train (test error 30.00 % (one run), above 20 %); paper: fails"
    assert r[("dropout_shortcut", 20)] == "fails to train: diverged in every seed (3); paper: fails"
    # no seed in common with the original: unpaired, Welch's interval (scipy's unequal-variance test)
    from scipy import stats

    ci = stats.ttest_ind([3.5, 4.0, 2.9], ORIGINAL_20, equal_var=False).confidence_interval(0.95)
    assert f"95 % CI {ci.low:+.2f} to {ci.high:+.2f} pp, Welch t, 3 and 3 seeds" in r[("bn_after_add", 20)]
    assert r[("relu_before_add", 56)] == ("3.00 % (one run); no finished original at this depth to compare with; "
                                          "paper: +1.23 pp vs the original")
    m, lo, hi, _ = _paired([4.0, 5.2, 4.4], ORIGINAL_20)
    assert (s.loc[("conv_shortcut", 20), "diff"], s.loc[("conv_shortcut", 20), "diff_low"],
            s.loc[("conv_shortcut", 20), "diff_high"]) == (pytest.approx(m), pytest.approx(lo), pytest.approx(hi))
    assert s.loc[("conv_shortcut", 20), "diff_test"] == "paired t"
    assert s.loc[("shortcut_gating", 20), "diff_test"] == "" and math.isnan(s.loc[("shortcut_gating", 20), "diff_low"])
    assert s.loc[("dropout_shortcut", 20), "diverged"] == 3 and s.loc[("dropout_shortcut", 20), "runs"] == 0
    # without a test size, points only
    assert g.summarise(results).set_index(["variant", "depth"])["reading"][("shortcut_gating", 20)] == (
        "+0.20 pp vs the original (2 seeds: no test); paper: +0.30 pp vs the original")


def test_the_papers_direction_for_each_variant():
    """He et al. 2016 against their original's 6.61 %: 'about equal' within 2·√2·0.16 = 0.45 pp (two
    single runs of ResNet-110, whose std over 5 runs is 0.16 pp, He et al. 2015 Table 6)."""
    assert g.SAME_BAND == pytest.approx(0.4525, abs=1e-4)
    worse = ["scaling_0.5", "scaling_0.5_0.5", "exclusive_gating", "conv_shortcut", "dropout_shortcut",
             "dropout_shortcut_paper", "bn_after_add", "relu_before_add"]  # +5.74, +2.09, +5.61, +1.56, +1.23 pp or "fail"
    equal = ["shortcut_gating", "relu_preact", "full_preact"]  # +0.30, +0.10, -0.24 pp
    assert {n: g.paper_direction(n) for n in g.PAPER_VARIANTS if n != "original"} == {
        **dict.fromkeys(worse, "worse"), **dict.fromkeys(equal, "about equal")}
    assert [g.paper_direction(n) for n in ("original", "plain", "full_preact+exclusive_gating")] == [None] * 3


def test_agreement_with_the_paper_and_the_measured_reasons():
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("conv_shortcut", 20, [4.0, 5.2, 4.4])
                    + _runs("full_preact", 20, [0.5, 1.0, 0.4]) + _runs("relu_preact", 20, [2.2, 3.1, 2.4])
                    + _runs("bn_after_add", 20, [2.05, 3.0, 2.5]) + _runs("relu_before_add", 20, [2.0, 5.0, 2.6])
                    + _runs("shortcut_gating", 20, [2.4, 3.0])
                    + _runs("exclusive_gating", 20, [70.0, 88.0], train=[70.0, 85.0])
                    + _runs("dropout_shortcut", 20, [math.nan] * 3, "diverged") + _runs("plain", 20, [2.0, 3.0, 2.5])
                    + _runs("original", 56, [2.0, 60.0, 3.0], train=[1.0, 82.0, 1.0])
                    + _runs("relu_preact", 56, [2.1, 3.0, 3.1])
                    + _runs("scaling_0.5", 20, [4.0, 5.0, 4.5]) + _runs("dropout_shortcut_paper", 20, [55.0, 60.0, 65.0]))
    a = g.summarise(results, 450).set_index(["variant", "depth"])["agrees"]
    # the paper's "fail" rows: worse and failing agrees; worse but training is the direction only
    assert a[("dropout_shortcut_paper", 20)] == "agrees"
    assert a[("scaling_0.5", 20)] == ("agrees in direction (worse), not in size: 4.50 % where the paper's fails "
                                      "(> 20 %)")
    assert a[("original", 20)] == "— (the reference)" and a[("plain", 20)] == "— (not in the paper's tables)"
    assert a[("conv_shortcut", 20)] == "agrees"  # paper worse, ours worse: the interval above 0
    assert a[("relu_preact", 20)] == "agrees"  # paper about equal, ours within ±0.45 pp
    assert a[("full_preact", 20)] == "disagrees"  # paper about equal, ours better beyond the band
    assert a[("bn_after_add", 20)] == "disagrees"  # paper worse by 1.56 pp, ours within ±0.45 pp
    _, _, _, found = _paired([2.0, 5.0, 2.6], ORIGINAL_20)
    assert a[("relu_before_add", 20)] == f"cannot tell (3 seeds; detectable ≥ {found:.2f} pp)"
    assert a[("shortcut_gating", 20)] == "cannot tell (2 seeds: no test)"
    # what the record shows: the runs that did not train, and the gate's start from the spec's b_g
    assert a[("exclusive_gating", 20)] == (
        "cannot tell (2 seeds: no test) — did not train: training error ≥ 80 % at the last epoch in 1 of 2 seeds "
        "— recipe length (1 epoch); gate starts at σ(b_g) = 0.0025 (b_g = -6)")
    assert a[("dropout_shortcut", 20)] == "agrees (diverged in every seed)"
    _, _, _, found = _paired([2.1, 3.0, 3.1], [2.0, 60.0, 3.0])
    assert a[("relu_preact", 56)] == (f"cannot tell (3 seeds; detectable ≥ {found:.2f} pp) — the original did not "
                                      "train: training error ≥ 80 % at the last epoch in 1 of 3 seeds — recipe "
                                      "length (1 epoch)")


def test_the_gate_start_is_computed_from_the_spec(monkeypatch):
    """σ(b_g) follows the variant's gate bias: at b_g = -4 the gate starts at 1/(1 + e⁴) = 0.018."""
    monkeypatch.setitem(g.VARIANTS, "exclusive_gating",
                        g.Variant("exclusive_gating", "exclusive gating (b_g = -4)",
                                  {"shortcut_variant": "gate", "gate_bias": -4.0}, "Table 1", 8.70))
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("exclusive_gating", 20, [3.0, 9.0, 3.5]))
    assert g.reasons(results, "exclusive_gating", 20) == ["gate starts at σ(b_g) = 0.018 (b_g = -4)"]
    assert g.reasons(results, "conv_shortcut", 20) == []


def test_an_old_results_file_still_reads_with_the_running_train_error():
    """The grid recorded before the clean training error, the machine record and the new summary
    columns (2 seeds, 6 epochs; kept as a fixture): it loads, its train error is marked as the running
    number, the summary recomputed from its runs has the new columns, and no machine is invented for it."""
    results, summary, rest = g.load_results(str(ROOT / "tests" / "fixtures" / "variants_digits_2seeds_6epochs.json"))
    assert not results["train_clean"].any() and "machine" not in rest and "test_size" not in rest
    assert summary["agrees"].isna().all()  # not in the file
    again = g.summarise(results, g.test_size(rest["grid"]))
    assert g.test_size(rest["grid"]) == 450 and again["agrees"].str.len().gt(0).all()


# ------------------------------------------------------------------ the command line, end to end
def test_tiny_grid_through_the_cli(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["grid", "--variants", "original", "exclusive_gating", "--depths", "8", "--seeds", "1", "--epochs", "2",
            "--warmup", "0", "--size", "8", "--train-images", "128", "--store", str(tmp_path / "s"), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 runs trained, 0 found in the store" in printed
    # the summary says the paper's verdict beside ours: one seed, so no test
    assert "agrees with He et al. 2016?" in printed and "cannot tell (one run)" in printed
    results, summary, rest = g.load_results(str(out))
    # the summary table: one seed, so each mean is labelled one run (over seeds: mean [95 % t-interval])
    assert "test error % [95 % CI, t]" in printed
    assert f"{results['test_error'].iloc[0]:.2f} (one run)" in printed.split("readings (")[0]
    assert list(results["variant"]) == ["original", "exclusive_gating"] and list(results["status"]) == ["complete"] * 2
    # the machine the runs trained on (the CLI's one thread per run), and the test split's size
    from analysis.core.machine import describe

    assert rest["machine"] == describe(1) and rest["test_size"] == 450
    assert results["train_clean"].all()  # trained now: the clean training error, not the running one
    store = RunStore(tmp_path / "s")
    finals = [load_checkpoint(store.get(k).path).meta.final for k in results["key"]]
    assert list(results["train_error"]) == [round(100 * (1 - f["train_acc_clean"]), 4) for f in finals]
    assert list(results["epochs"]) == [2, 2] and rest["grid"]["recipe"]["epochs"] == 2
    assert list(summary["paper"]) == ["6.61", "8.70"] and all(summary["reading"].str.len() > 0)
    assert main([*argv[:-1], str(tmp_path / "r.csv")]) == 0
    assert "0 runs trained, 2 found in the store" in capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "r.csv")
    assert list(csv["test_error"]) == list(results["test_error"]) and "reading" in csv
    assert json.loads(out.read_text())["trained"] == 2
    # every run found in the store: trained earlier, maybe elsewhere, so no machine is named for them
    assert main([*argv[:-1], str(tmp_path / "again.json")]) == 0
    assert "machine" not in g.load_results(str(tmp_path / "again.json"))[2]


def test_run_task_reports_bad_data_as_an_error():
    bad = g.RunSpec("original", 8, 0, g.variant_spec(g.VARIANTS["original"], 8, channels=1, size=8), TINY_RECIPE,
                    DataSpec(size=8, train_images=10**6), "k")
    res = run_task(bad.task())
    assert res.status == "error" and "training images" in res.message


def test_a_run_is_diverged_by_the_error_type_not_its_words(monkeypatch):
    """Issue 22: divergence was recognised by matching 'diverged' in a message; now by DivergedError.
    Another error that happens to say 'diverged' is an error."""
    from analysis.core.errors import DivergedError
    from analysis.experiments import train as train_module

    spec = g.RunSpec("original", 8, 0, g.variant_spec(g.VARIANTS["original"], 8, channels=1, size=8), TINY_RECIPE,
                     DataSpec(size=8), "k")
    for raised, status in ((DivergedError("loss became NaN"), "diverged"),
                           (ConfigError("the data diverged from its header"), "error")):
        def fail(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(train_module, "train", fail)
        res = run_task(spec.task())
        assert (res.status, res.message) == (status, str(raised))


def test_a_grid_on_sequence_data_trains_1d_nets(tmp_path):
    """MNIST-1D (N x 1 x 40) makes the grid train resnet1d_<depth>, the CIFAR recipe in 1-D."""
    grid = g.Grid(("original", "scaling_0.5"), depths=(8,), seeds=(0,), recipe=TINY_RECIPE,
                  data=DataSpec(kind="mnist1d", train_images=64))
    runs = grid.runs()
    assert [(r.spec.dims, r.spec.input_shape(), r.spec.family) for r in runs] == [(1, (1, 40), "resnet1d")] * 2
    assert runs[1].spec.shortcut_variant == "scale"
    res = run_grid_ok(grid, RunStore(tmp_path), InProcessExecutor(threads=1))
    ck = load_checkpoint(RunStore(tmp_path).get(res.results["key"][0]).path)
    assert ck.spec.dims == 1 and ck.spec == runs[0].spec
    with pytest.raises(ConfigError, match="1-D or 2-D"):
        g.base_spec(8, dims=3)


def test_fingerprints_compare_two_grids_run_by_run(tmp_path):
    """grid.fingerprints (what the benchmarks compare executors with): equal for the same grid trained
    twice into two stores; another seed's weights differ; a run missing from the store is said."""
    grid = tiny(variants=("original",))
    a_store, b_store = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    a = run_grid_ok(grid, a_store, InProcessExecutor(threads=1))
    b = run_grid_ok(grid, b_store, InProcessExecutor(threads=1))
    fa = g.fingerprints(a_store, a)
    assert fa == g.fingerprints(b_store, b) and len(fa) == 1
    (key,) = fa
    assert fa[key][0] == load_checkpoint(a_store.get(key).path).meta.content_sha256
    other = run_grid_ok(tiny(variants=("original",), seeds=(1,)), b_store, InProcessExecutor(threads=1))
    assert next(iter(g.fingerprints(b_store, other).values()))[0] != fa[key][0]
    with pytest.raises(ConfigError, match="is not in the run store"):
        g.fingerprints(RunStore(tmp_path / "empty"), a)


def test_fingerprints_of_runs_with_epochs_before_the_clean_pass(tmp_path):
    """Only the last epoch has the clean training numbers; the others' empty cells must not make two
    identical grids differ (NaN != NaN)."""
    grid = tiny(variants=("original",), epochs=2)
    a_store, b_store = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    a = run_grid_ok(grid, a_store, InProcessExecutor(threads=1))
    b = run_grid_ok(grid, b_store, InProcessExecutor(threads=1))
    m = a_store.metrics()
    assert m["train_acc_clean"].isna().tolist() == [True, False]
    assert g.fingerprints(a_store, a) == g.fingerprints(b_store, b)


def _session(sid: int) -> list[int]:
    """Pids of the processes in session ``sid`` (a child started with start_new_session=True)."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_kill_9_of_a_pool_grid_leaves_no_process_behind(tmp_path):
    """Issue 28, item 6: after kill -9 of the driver, the forkserver, the resource tracker and both
    workers lived on (seen 50 minutes later, ~600 MB each). Workers now watch their driver."""
    cmd = [sys.executable, "-m", "analysis", "grid", "--variants", "original", "full_preact", "--depths", "8",
           "--seeds", "1", "--epochs", "500", "--warmup", "0", "--size", "8", "--executor", "pool", "--workers", "2",
           "--store", str(tmp_path / "s"), "--out", str(tmp_path / "g.json")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_session(proc.pid)) < 5 and time.monotonic() < deadline:  # driver, tracker, server, 2 workers
            time.sleep(0.2)
        assert len(_session(proc.pid)) >= 5, "the pool did not start"
        time.sleep(2)  # the workers are training
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _session(proc.pid) == []
    finally:
        for pid in _session(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_gate_sweep_table():
    """One row per gated variant and b_g, the gate's opening σ(b_g) and the test error's 95 % interval
    from scipy's t, the contrast with the original paired by seed; other variants left out."""
    from scipy import stats

    ex0, ex6, sh2 = [10.0, 14.0, 12.0], [3.0, 4.0, 3.5], [2.5, 3.5, 2.0]
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("exclusive_gating@0", 20, ex0)
                    + _runs("exclusive_gating", 20, ex6) + _runs("shortcut_gating@-2", 20, sh2)
                    + _runs("conv_shortcut", 20, [4.0, 5.2, 4.4]))
    sweep = g.gate_sweep(g.summarise(results, 450))
    assert list(sweep.columns) == g.SWEEP_COLUMNS
    assert [(r.gate, r.b_g) for r in sweep.itertuples()] == [("exclusive_gating", 0.0), ("exclusive_gating", -6.0),
                                                            ("shortcut_gating", -2.0)]
    assert sweep["gate_start"].tolist() == pytest.approx([0.5, 0.0024726, 0.1192029], abs=1e-6)
    low, high = stats.t.interval(0.95, 2, loc=12.0, scale=stats.sem(ex0))
    assert (sweep.loc[0, "test_low"], sweep.loc[0, "test_high"]) == pytest.approx((low, high))
    d, lo, hi, _ = _paired(ex0, ORIGINAL_20)
    assert (sweep.loc[0, "diff"], sweep.loc[0, "diff_low"], sweep.loc[0, "diff_high"]) == pytest.approx((d, lo, hi))
    # the paper's numbers where it reports them: exclusive gating "fail" at 0, 8.70 at -6; none at -2 for shortcut-only
    assert sweep.loc[1, "paper_error"] == 8.70 and math.isnan(sweep.loc[0, "paper_error"])
    assert sweep["paper"].tolist() == ["fail (> 20 %)", "8.70", ""]
    assert sweep["label"].tolist() == ["exclusive gating", "exclusive gating", "shortcut-only gating"]
    assert g.gate_sweep(g.summarise(frame(_runs("original", 20, ORIGINAL_20)))).empty
    assert g.gate_start("full_preact+exclusive_gating") is None and g.gate_start("original") is None
    assert g.gate_start("exclusive_gating@-2+full_preact") is None and g.gate_start("nope") is None
    assert g.gate_start(" exclusive_gating@-2.0") == ("exclusive_gating", -2.0)


def test_the_degradation_experiment_from_a_grid():
    """Residual and plain nets at two depths under one recipe: each net's errors with scipy's t-interval,
    and the contrasts (deeper minus shallower, plain minus residual) paired by seed."""
    from scipy import stats

    r20, r56, p20, p56 = [1.0, 0.8, 1.2], [1.4, 1.0, 1.6], [1.5, 1.6, 1.6], [12.0, 9.0, 30.0]
    train = {"r20": [0.1, 0.0, 0.2], "r56": [0.2, 0.2, 0.3], "p20": [0.5, 0.7, 0.4], "p56": [10.0, 8.0, 29.0]}
    results = frame(_runs("original", 20, r20, train=train["r20"]) + _runs("original", 56, r56, train=train["r56"])
                    + _runs("plain", 20, p20, train=train["p20"]) + _runs("plain", 56, p56, train=train["p56"])
                    + _runs("conv_shortcut", 20, [4.0, 5.2, 4.4]))
    nets, contrasts = g.degradation(results)
    assert list(nets.columns) == g.DEGRADATION_COLUMNS
    assert [(r.net, r.depth, r.runs) for r in nets.itertuples()] == [("residual", 20, 3), ("residual", 56, 3),
                                                                     ("plain", 20, 3), ("plain", 56, 3)]
    p56_row = nets.iloc[3]
    low, high = stats.t.interval(0.95, 2, loc=17.0, scale=stats.sem(p56))
    assert (p56_row["test_error_mean"], p56_row["test_low"], p56_row["test_high"]) == pytest.approx((17.0, low, high))
    assert p56_row["train_error_mean"] == pytest.approx(sum(train["p56"]) / 3)
    c = contrasts.set_index(["what", "error"])
    assert list(contrasts["what"].drop_duplicates()) == ["residual: depth 56 − depth 20", "plain: depth 56 − depth 20",
                                                         "plain − residual at depth 20", "plain − residual at depth 56"]
    ci = stats.ttest_rel(p56, r56).confidence_interval(0.95)
    row = c.loc[("plain − residual at depth 56", "test")]
    assert (row["diff"], row["low"], row["high"]) == pytest.approx((sum(p56) / 3 - sum(r56) / 3, ci.low, ci.high))
    assert ci.low < 0 and row["reading"].startswith("no difference detected (+15.67 pp; 95 % CI")
    ci = stats.ttest_rel(p20, r20).confidence_interval(0.95)
    assert ci.low > 0 and c.loc[("plain − residual at depth 20", "test"), "reading"] == (
        f"higher by 0.57 pp (95 % CI {ci.low:+.2f} to {ci.high:+.2f}, paired t over 3 seeds)")
    ci = stats.ttest_rel(train["r56"], train["r20"]).confidence_interval(0.95)
    row = c.loc[("residual: depth 56 − depth 20", "train")]
    assert (row["low"], row["high"]) == pytest.approx((ci.low, ci.high)) and row["seeds"] == 3
    assert ci.low < 0 and row["reading"] == (f"no difference detected (+0.13 pp; 95 % CI {ci.low:+.2f} to "
                                             f"{ci.high:+.2f}, paired t over 3 seeds)")
    # two seeds: no test; one depth only: nothing to read
    two = frame(_runs("original", 20, r20[:2]) + _runs("original", 56, r56[:2]) + _runs("plain", 20, p20[:2])
                + _runs("plain", 56, p56[:2]))
    assert g.degradation(two)[1]["reading"].str.endswith("(2 seeds: no test)").all()
    nets, contrasts = g.degradation(frame(_runs("original", 20, r20) + _runs("plain", 20, p20)))
    assert nets.empty and contrasts.empty
    # both nets must have both depths: plain at 20 and 56, the original at 20 only, is no experiment
    nets, contrasts = g.degradation(frame(_runs("original", 20, r20) + _runs("plain", 20, p20)
                                          + _runs("plain", 56, p56)))
    assert nets.empty and contrasts.empty
    # a plain net that diverged in every seed is counted, and its comparisons say why they are missing
    gone = frame(_runs("original", 20, r20) + _runs("original", 56, r56) + _runs("plain", 20, p20)
                 + _runs("plain", 56, [math.nan] * 3, "diverged"))
    nets, contrasts = g.degradation(gone)
    assert nets[["runs", "diverged"]].dtypes.tolist() == [int, int]
    assert nets.set_index(["net", "depth"]).loc[("plain", 56), ["runs", "diverged"]].tolist() == [0, 3]
    assert contrasts.set_index(["what", "error"]).loc[("plain − residual at depth 56", "test"), "reading"] == (
        "no seed finished on both sides: nothing to compare")


def test_the_cli_prints_the_degradation_experiment_when_the_grid_has_both_nets(tmp_path, capsys):
    rc = main(["grid", "--variants", "original", "plain", "--depths", "8", "14", "--seeds", "3", "--size", "8",
               "--train-images", "64", "--epochs", "1", "--warmup", "0", "--store", str(tmp_path / "s"),
               "--out", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert rc == 0
    _, degraded = g.degradation(g.load_results(str(tmp_path / "g.json"))[0])
    lines = out.split("the degradation experiment (residual vs plain, one recipe; paired by seed):\n")[1].splitlines()
    assert lines[:8] == [f"  {r.what}, {r.error} error: {r.reading}" for r in degraded.itertuples()]
    assert lines[0].startswith("  residual: depth 14 − depth 8, train error: ")


def test_a_depth_of_the_summary_as_a_markdown_table():
    from scipy import stats

    conv = [4.0, 5.2, 4.4]
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("conv_shortcut", 20, conv)
                    + _runs("shortcut_gating", 20, [2.4, 3.0]) + _runs("original", 56, [3.0]))
    md = g.markdown(g.summarise(results, 450), 20).splitlines()
    assert md[0].startswith("| variant | test error % [95 % CI] | seeds | paper (ResNet-110, CIFAR-10) % |")
    low, high = stats.t.interval(0.95, 2, loc=2.5, scale=stats.sem(ORIGINAL_20))
    assert md[2] == f"| original (identity shortcut) | 2.50 [{low:.2f}, {high:.2f}] | 3 | 6.61 | — | — (the reference) |"
    d, lo, hi, _ = _paired(conv, ORIGINAL_20)
    assert md[3].startswith("| 1×1 conv shortcut | 4.53 [") and f"| 12.22 | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | agrees |" in md[3]
    # 2 seeds: t(1) = 12.7 would give [-1.11, 6.51]; no interval is shown, and why
    assert md[4] == ("| shortcut-only gating (b_g = -6) | 2.70 (2 seeds: no interval) | 2 | 6.91 | +0.20 (no test) | "
                     "cannot tell (2 seeds: no test) |")
    assert g.markdown(g.summarise(results, 450), 56).splitlines()[2] == (
        "| original (identity shortcut) | 3.00 (one run) | 1 | 6.61 | — | — (the reference) |")


def test_the_cli_summary_table_gives_the_t_interval_or_why_there_is_none():
    from analysis.cli.grid import summary_table

    # 3 seeds 2.0, 3.0, 4.0: sd 1, half width 4.302653 / sqrt(3) = 2.484138 -> 3.00 [0.52, 5.48]
    results = frame(_runs("original", 20, [2.0, 3.0, 4.0]) + _runs("full_preact", 20, [1.0, 2.0])
                    + _runs("conv_shortcut", 20, [5.0]))
    shown = summary_table(g.summarise(results, 450)).set_index("label")["test error % [95 % CI, t]"]
    assert shown["original (identity shortcut)"] == "3.00 [0.52, 5.48]"
    assert shown["full pre-activation"] == "1.50 (2 seeds: no interval)"
    assert shown["1×1 conv shortcut"] == "5.00 (one run)"


def test_the_sweep_and_the_degradation_as_markdown():
    results = frame(_runs("original", 20, ORIGINAL_20) + _runs("exclusive_gating@0", 20, [10.0, 14.0, 12.0])
                    + _runs("exclusive_gating", 20, [3.0])
                    + _runs("original", 56, [1.4, 1.0, 1.6]) + _runs("plain", 20, [1.5, 1.6, 1.6])
                    + _runs("plain", 56, [12.0, 9.0, 30.0]))
    sweep = g.gate_sweep(g.summarise(results, 450))
    md = g.sweep_markdown(sweep).splitlines()
    r = sweep.iloc[0]
    assert md[2] == (f"| exclusive gating | 20 | 0 | 0.5 | 12.00 [{r.test_low:.2f}, {r.test_high:.2f}] | 3 | "
                     f"+9.50 [{r.diff_low:+.2f}, {r.diff_high:+.2f}] | fail (> 20 %) | agrees in direction (worse), "
                     "not in size: 12.00 % where the paper's fails (> 20 %) |")
    assert md[3] == ("| exclusive gating | 20 | -6 | 0.00247 | 3.00 (one run) | 1 | +1.00 (no test) | 8.70 | "
                     "cannot tell (one run) — gate starts at σ(b_g) = 0.0025 (b_g = -6) |")
    nets, contrasts = g.degradation(results)
    md = g.degradation_markdown(nets, contrasts).splitlines()
    p56 = nets.iloc[3]
    assert md[5] == (f"| plain | 56 | 3 / 0 | {p56.train_error_mean:.2f} [{p56.train_low:.2f}, {p56.train_high:.2f}] | "
                     f"17.00 [{p56.test_low:.2f}, {p56.test_high:.2f}] |")
    assert md[7:] == [f"- {c.what}, {c.error} error: {c.reading}" for c in contrasts.itertuples()] and md[6] == ""
