"""The reproducibility measurement (analysis/studies/repro.py): a recorded run trained again with the
same thread count gives the same number; the table and the statement say what the record holds."""

from __future__ import annotations

import pytest

from analysis.core.errors import ConfigError, LensError
from analysis.core.meta import TrainConfig
from analysis.run.executor import DataSpec, InProcessExecutor
from analysis.store.runstore import RunStore
from analysis.studies import grid as g
from analysis.studies import repro


def test_a_recorded_run_trained_again_with_its_thread_count_is_the_same_number(tmp_path):
    grid = g.Grid(("original",), (8,), (0, 1), TrainConfig(epochs=1, warmup_epochs=0), DataSpec("digits", 8, train_images=64))
    first = g.run_grid(grid, RunStore(tmp_path / "a"), InProcessExecutor(1))
    again = repro.rerun(grid.definition, "original", 8, (0, 1), 1, tmp_path / "b")
    assert again["test_error"].tolist() == first.results["test_error"].tolist()
    assert again["key"].tolist() == first.results["key"].tolist()  # the same recipe: the same store keys
    with pytest.raises(ConfigError, match="give an empty folder"):
        repro.rerun(grid.definition, "original", 8, (0,), 1, tmp_path / "b")
    with pytest.raises(LensError, match="not a grid definition"):
        repro.regrid({"recipe": {}}, "original", 8, (0,))


RECORD = {"test_size": 450, "recorded_threads": 1,
          "recorded": [{"seed": 0, "test_error": 2.0}, {"seed": 1, "test_error": 1.5555555555555556},
                       {"seed": 2, "test_error": 1.0}],
          "reruns": [{"threads": 1, "runs": [{"seed": 0, "test_error": 2.0},
                                              {"seed": 1, "test_error": 1.5555555555555556}]},
                     {"threads": 2, "runs": [{"seed": 0, "test_error": 2.4},  # 0.4 pp: 1.8 images, said as 2
                                              {"seed": 1, "test_error": 1.5555555555555556},
                                              {"seed": 2, "test_error": 1.6666666666666667},
                                              {"seed": 3, "test_error": 3.0}]}]}  # seed 3 not recorded


def test_the_table_and_the_statement_say_what_the_record_holds(tmp_path):
    import math

    t = repro.table(RECORD)
    assert list(t.columns) == repro.COLUMNS
    assert t["identical"].tolist() == [True, True, False, True, False, False]
    assert t["images"].tolist()[:5] == [0, 0, 2, 0, 3] and math.isnan(t["images"].iloc[5])
    assert t.loc[2, "diff"] == pytest.approx(0.4) and math.isnan(t.loc[5, "diff"])
    assert repro.statement(RECORD) == [
        "the recorded thread count: 2 of 2 seeds give the recorded test error exactly",
        "2 threads instead of 1: 1 of 4 seeds give the recorded test error exactly; 2 move by 0.40 to 0.67 pp "
        "(2 to 3 test images of 450); 1 without a number on one side (diverged, or not recorded)"]
    path = tmp_path / "r.json"
    repro.save(path, RECORD)
    assert repro.load(path)["reruns"] == RECORD["reruns"]
    path.write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a reproducibility record"):
        repro.load(path)
    with pytest.raises(ConfigError, match="no reproducibility record there"):
        repro.load(tmp_path / "missing.json")
