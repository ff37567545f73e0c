"""One comparison for grid and transfer readings (a t-test over seeds, issue 26), one results writer
(analysis/core/reporting.py) and its machine sentence, the parse guards that catch only what parsing
raises, and the executor modules without an import cycle (issue 22, items 5 and 6)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.core import meta, reporting
from analysis.core.errors import CheckpointError, ConfigError, DatasetError
from analysis.core.meta import RunMeta
from analysis.experiments import paths
from analysis.store import runstore
from analysis.studies import grid as g
from analysis.studies import transfer as T

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ one comparison for both readings
def _reading(mean: float, std: float, base_mean: float, base_std: float, runs: int = 3) -> str:
    row = {"variant": "relu_preact", "runs": runs, "diverged": 0, "test_error_mean": mean, "test_error_std": std,
           "paper": "", "paper_error": math.nan}
    return g.reading(row, {"runs": runs, "test_error_mean": base_mean, "test_error_std": base_std})


def test_grid_and_transfer_read_the_same_numbers_the_same_way():
    """The same means, stds and seed counts (no per-seed values): both readings take Welch's interval,
    and both find a difference exactly where scipy's unequal-variance test excludes 0. Stds of 1 point
    over 3 seeds: ν = 4, the interval ±t(0.975, 4)·√(2/3) = ±2.27 points: 2.0 is no finding, 2.5 is
    (the old rule, 2 standard errors = 1.63 points, called 2.0 a difference)."""
    from scipy import stats

    def transfer_finds(diff_points: float) -> bool:
        s = pd.DataFrame([{"setup": "from scratch", "labels": "1", "test_acc_mean": 0.5, "test_acc_std": 0.01,
                           "seeds": 3},
                          {"setup": "fine-tune everything", "labels": "1", "test_acc_mean": 0.5 + diff_points / 100,
                           "test_acc_std": 0.01, "seeds": 3}])
        return "no difference detected" not in T.readings(s, 3)[0]

    for diff, found in ((2.0, False), (2.5, True)):
        three = [5.0 + diff - 1, 5.0 + diff, 5.0 + diff + 1]  # sample std 1 exactly
        ci = stats.ttest_ind(three, [4.0, 5.0, 6.0], equal_var=False).confidence_interval(0.95)
        assert bool(ci.low > 0) is found
        assert transfer_finds(diff) is found
        assert _reading(5.0 + diff, 1.0, 5.0, 1.0).startswith("worse than the original") is found
        assert f"95 % CI {ci.low:+.2f} to {ci.high:+.2f} pp, Welch t, 3 and 3 seeds" in _reading(5.0 + diff, 1.0, 5.0,
                                                                                                    1.0)


def test_two_seeds_are_no_test_in_either_reading():
    """The audit's case: 2 seeds each, a difference of 0.44 pp is 2 test images of 450, and no verdict."""
    assert _reading(2.55, 0.1, 2.11, 0.1, runs=2) == "+0.44 pp vs the original (2 seeds: no test)"
    s = pd.DataFrame([{"setup": "from scratch", "labels": "1", "test_acc_mean": 0.5, "test_acc_std": 0.01, "seeds": 2},
                      {"setup": "fine-tune everything", "labels": "1", "test_acc_mean": 0.6, "test_acc_std": 0.01,
                       "seeds": 2}])
    assert T.readings(s, 3)[0].endswith("1: +10.0 (at every setting: 2 seeds: no test).")
    assert _reading(2.55, math.nan, 2.11, math.nan, runs=1) == "+0.44 pp vs the original (one run)"


def test_the_machine_sentence():
    from analysis.core.machine import describe

    m = describe(1)
    said = reporting.machine_text(m)
    assert said.startswith(f"Measured on {m['cpu'] or 'an unnamed CPU'} ({m['cpus']} logical CPUs) with 1 torch "
                           f"thread per run, torch {m['torch']}")
    assert "same machine and thread count" in said
    assert reporting.machine_text(None) == "Machine not recorded (the file predates machine records)."
    assert reporting.machine_text({**m, "threads": 4, "executor": "the Ray cluster"}).endswith(
        "The runs trained on the Ray cluster.")


# ------------------------------------------------------------------ one writer, one NaN/inf policy
def strict(raw: bytes) -> object:
    """JSON as a strict reader takes it: NaN, Infinity and -Infinity refused."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in a results file")

    return json.loads(raw, parse_constant=refuse)


def test_json_writes_every_non_finite_number_as_null(tmp_path):
    payload = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "f32": np.float32(1.5), "i64": np.int64(3),
               "list": [math.nan, 1.0, (np.float64(np.inf), 2)], "na": pd.NA, "ok": 0.1, "text": "x", "none": None}
    out = reporting.write_json(tmp_path / "r.json", payload)
    raw = out.read_bytes()
    assert raw == (b'{"nan": null, "inf": null, "-inf": null, "f32": 1.5, "i64": 3, "list": [null, 1.0, [null, 2]], '
                   b'"na": null, "ok": 0.1, "text": "x", "none": null}')  # compact: one line, no newline
    assert strict(raw)["list"] == [None, 1.0, [None, 2]]
    indented = reporting.write_json(tmp_path / "i.json", {"a": [math.inf]}, indent=1).read_bytes()
    assert indented == b'{\n "a": [\n  null\n ]\n}\n'


def test_json_refuses_what_it_cannot_hold_and_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        reporting.write_json(tmp_path / "r.json", {"a": object()})  # no longer stringified by default=str
    assert list(tmp_path.iterdir()) == []


def test_csv_writes_non_finite_numbers_as_empty_cells(tmp_path):
    df = pd.DataFrame({"x": [1.5, math.nan, math.inf, -math.inf], "o": ["a", math.inf, None, 2],
                       "n": [1, 2, 3, 4]})
    before = df.copy()
    text = reporting.write_csv(tmp_path / "r.csv", df).read_text()
    assert text == "x,o,n\n1.5,a,1\n,,2\n,,3\n,2,4\n"
    pd.testing.assert_frame_equal(df, before)  # the caller's table is not changed
    plain = pd.DataFrame({"a": [1.0, 2.5], "b": ["x", ""]})
    assert reporting.csv_bytes(plain) == plain.to_csv(index=False).encode()  # finite tables: pandas' own bytes


def _grid_result() -> g.GridResult:
    grid = g.Grid(variants=("original",), depths=(8,), seeds=(0, 1))
    base = {"variant": "original", "label": "", "depth": 8, "reused": False, "epochs": 1, "message": ""}
    results = pd.DataFrame([{**base, "seed": 0, "status": "complete", "train_error": 1.0, "test_error": 2.0,
                             "seconds": math.inf, "key": "k0"},
                            {**base, "seed": 1, "status": "diverged", "train_error": math.nan,
                             "test_error": math.nan, "seconds": 3.0, "key": "k1"}], columns=g.RESULT_COLUMNS)
    return g.GridResult(grid, results, g.summarise(results), 1.0, 1, 0, False)


def test_grid_results_files_hold_no_nan_or_infinity_and_read_back(tmp_path):
    f = tmp_path / "grid.json"
    g.write_results(str(f), _grid_result())
    raw = f.read_bytes()
    assert raw.endswith(b"}\n") and b'\n "grid": {' in raw  # the format as before: indent 1, a final newline
    doc = strict(raw)
    assert doc["results"][0]["seconds"] is None and doc["results"][1]["test_error"] is None
    results, summary, _ = g.load_results(str(f))
    assert math.isnan(results["seconds"][0]) and math.isnan(results["test_error"][1])
    assert summary["test_error_mean"][0] == 2.0
    csv = tmp_path / "grid.csv"
    g.write_results(str(csv), _grid_result())
    assert "inf" not in csv.read_text()
    assert math.isnan(pd.read_csv(csv)["seconds"][0])


def test_transfer_results_with_an_infinite_number_are_written_not_refused(tmp_path):
    row = {"setup": "from scratch", "copied": 0, "frozen": 0, "bn": "update", "norm": "source", "per_class": 1,
           "seed": 0, "train_images": 5, "steps": 10, "epochs": 1, "train_acc": 0.5, "test_acc": math.nan,
           "seconds": math.inf, "status": "complete"}
    result = T.PlanResult(pd.DataFrame([row], columns=T.RESULT_COLUMNS), pd.DataFrame(columns=T.CURVE_COLUMNS),
                          pd.DataFrame(columns=T.PROBE_COLUMNS), 1, 0, False, 2.0, {"stages": 3})
    f = tmp_path / "t.json"
    T.write_results(str(f), result)  # before: ValueError (json's allow_nan=False) after the whole plan had run
    doc = strict(f.read_bytes())
    assert doc["results"][0]["seconds"] is None and doc["results"][0]["test_acc"] is None
    back = T.load_results(str(f))
    assert pd.isna(back.results["seconds"][0]) and back.trained == 1 and back.meta["stages"] == 3


def test_the_stored_files_are_written_byte_for_byte_as_before():
    """What the writer makes of the recorded results' contents is the recorded bytes."""
    for name, indent in (("variants_digits.json", 1), ("transfer_digits.json", None)):
        raw = (ROOT / "results" / name).read_bytes()
        assert reporting.json_bytes(json.loads(raw), indent=indent) == raw
    raw = (ROOT / "checkpoints" / "path_results" / "digits_resnet20.json").read_bytes()
    assert reporting.json_bytes(json.loads(raw), indent=1) == raw


# ------------------------------------------------------------------ parse guards: bad input vs bugs
def bug(*args: object, **kwargs: object) -> None:
    raise TypeError("a bug, not a bad file")


def test_a_bug_in_the_grid_results_reader_is_not_called_a_bad_file(tmp_path, monkeypatch):
    f = tmp_path / "grid.json"
    g.write_results(str(f), _grid_result())
    monkeypatch.setattr(g, "check_table", bug)
    with pytest.raises(TypeError, match="a bug"):
        g.load_results(str(f))
    with pytest.raises(ConfigError, match="none.json: not a grid results file"):  # what reading raises still is one
        g.load_results(str(tmp_path / "none.json"))


def test_a_bug_in_the_transfer_results_reader_is_not_called_a_damaged_file(monkeypatch):
    monkeypatch.setattr(T, "PlanResult", bug)
    with pytest.raises(TypeError, match="a bug"):
        T.load_results(str(ROOT / "results" / "transfer_digits.json"))


def test_bad_transfer_meta_is_still_a_damaged_file(tmp_path):
    doc = json.loads((ROOT / "results" / "transfer_digits.json").read_text())
    for meta_value, said in (({**doc["meta"], "trained": "many"}, "meta trained"),
                             ({**doc["meta"], "seconds": [1]}, "meta seconds"), ([1, 2], "its meta is a list")):
        f = tmp_path / "t.json"
        f.write_text(json.dumps({**doc, "meta": meta_value}))
        with pytest.raises(DatasetError, match=f"a damaged transfer results file \\({said}"):
            T.load_results(str(f))


def test_a_bug_in_the_path_results_reader_is_not_called_corrupt(monkeypatch):
    from analysis.store.checkpoints import shipped_checkpoints

    ck = shipped_checkpoints()["digits_resnet20"]
    assert paths.load_results(ck)
    monkeypatch.setattr(paths, "_with_totals", bug)
    with pytest.raises(TypeError, match="a bug"):
        paths.load_results(ck)


def test_path_results_with_no_paths_of_a_length_are_corrupt(tmp_path):
    import shutil

    from analysis.store.checkpoints import shipped_checkpoints

    src = shipped_checkpoints()["digits_resnet20"]
    ck = tmp_path / src.name
    shutil.copy(src, ck)
    doc = json.loads(paths.results_file(src).read_text())
    doc["measurements"][0]["rows"][1]["paths"] = "0"  # math.log10(0) raised ValueError, called corrupt by accident
    paths.results_file(ck).parent.mkdir()
    paths.results_file(ck).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="corrupt stored path measurements .*row 2: paths = '0'"):
        paths.load_results(ck)
    doc["measurements"][0]["samples"] = 0
    doc["measurements"][0]["rows"][1]["paths"] = "1"
    paths.results_file(ck).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="corrupt stored path measurements .*samples must be"):
        paths.load_results(ck)


def test_a_bug_in_the_metadata_reader_is_not_called_malformed_metadata(monkeypatch):
    assert RunMeta.from_dict({"versions": {"torch": "2"}}).versions == {"torch": "2"}
    monkeypatch.setattr(meta, "_texts", bug)
    with pytest.raises(TypeError, match="a bug"):
        RunMeta.from_dict({"versions": {"torch": "2"}})


def test_malformed_metadata_is_still_one_checkpoint_error():
    ds = {"name": "digits16", "train": 1, "test": 1, "classes": 10, "channels": 1, "size": 16, "split_seed": 0}
    with pytest.raises(CheckpointError, match="DatasetInfo lacks size, split_seed"):
        RunMeta.from_dict({"dataset": {k: v for k, v in ds.items() if k not in ("size", "split_seed")}})
    with pytest.raises(CheckpointError, match="recipe: learning rate must be a finite number"):
        RunMeta.from_dict({"recipe": {"lr": 10**400}})  # float() overflows: was caught as OverflowError
    with pytest.raises(CheckpointError, match="normalisation: a number beyond the float range"):
        RunMeta.from_dict({"normalisation": {"mean": [10**400], "std": [1.0]}})
    with pytest.raises(CheckpointError, match="final must be a mapping"):
        RunMeta.from_dict({"final": []})


def test_a_bug_in_the_run_store_readers_is_not_called_a_damaged_row(tmp_path, monkeypatch):
    s = runstore.RunStore(tmp_path)
    s.save_sweep("n", "single", {}, pd.DataFrame({"error": [0.5]}))
    s.save_gradients("r", pd.DataFrame({"norm": [1.0]}))
    with monkeypatch.context() as m:
        m.setattr(runstore, "_stored_sweep", lambda row: (_ for _ in ()).throw(ValueError("a bug")))
        with pytest.raises(ValueError, match="a bug") as exc:
            s.sweep("n", "single", {})
        assert not isinstance(exc.value, runstore.StoreError)
    with monkeypatch.context() as m:
        m.setattr(runstore, "_read_frame", bug)
        with pytest.raises(TypeError, match="a bug"):
            s.gradients("r")
    assert s.gradients("r")["norm"].tolist() == [1.0]


@pytest.mark.parametrize("csv,dtypes,said", [
    ("error\nnot a number\n", '{"error": "float64"}', "could not convert"),
    ("error\n0.5\n", '{"other": "float64"}', "no column 'other'"),
    ("error\n0.5\n", '{"error": "no such type"}', "not understood"),
    ("error\n99999999999999999999999\n", '{"error": "int64"}', "too large"),
    ("error\n0.5\n", '["error"]', "not a record of type names"),
])
def test_a_damaged_stored_table_is_a_store_error(tmp_path, csv, dtypes, said):
    s = runstore.RunStore(tmp_path)
    key = s.save_sweep("n", "single", {}, pd.DataFrame({"error": [0.5]}))
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    con.execute("UPDATE sweeps SET csv = ?, dtypes = ? WHERE key = ?", (csv, dtypes, key))
    con.commit()
    con.close()
    with pytest.raises(runstore.StoreError, match=f"the stored single sweep {key} .* cannot be read .*{said}"):
        s.sweep("n", "single", {})
