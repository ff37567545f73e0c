"""Stored gradient-by-length measurements of the shipped nets (tools/make_path_results.py): present,
made on the files that ship, equal to a fresh measurement, and read back exactly."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from analysis import paths
from analysis.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.errors import CheckpointError, ConfigError

DEFAULT = paths.MeasureSettings()


def residual_shipped() -> dict:
    return {name: f for name, f in shipped_checkpoints().items() if load_checkpoint(f).spec.residual}


def test_every_shipped_residual_net_has_current_stored_results():
    nets = residual_shipped()
    assert set(nets) == {"digits_resnet20", "digits_resnet56"}
    for name, f in nets.items():
        doc = json.loads(paths.results_file(f).read_text())
        assert doc["sha256"] == paths.file_digest(f), f"{name}: stored results are stale; rerun tools/make_path_results.py"
        stored = paths.load_results(f)
        assert set(stored) >= {("trained", DEFAULT), ("initialisation", DEFAULT)}
        n = load_checkpoint(f).spec.num_blocks
        for df in stored.values():
            assert df["length"].tolist() == list(range(n + 1))
            assert df["total (rel.)"].max() == 1.0


def test_stored_results_equal_a_fresh_measurement():
    f = shipped_checkpoints()["digits_resnet20"]
    ck = load_checkpoint(f)
    data = dataset_for(ck.meta)
    stored = paths.load_results(f)
    for net, model in (("trained", ck.model), ("initialisation", paths.initialised(ck.model))):
        fresh = paths.measure(model, data.x_test, data.y_test, DEFAULT)
        pd.testing.assert_frame_equal(stored[(net, DEFAULT)], fresh, rtol=1e-4)


def test_save_and_load_round_trip_staleness_and_corruption(tmp_path):
    f = tmp_path / "net.pt"
    shutil.copy(shipped_checkpoints()["digits_resnet20"], f)
    assert paths.load_results(f) == {}
    ck = load_checkpoint(f)
    data = dataset_for(ck.meta)
    s = paths.MeasureSettings(samples=2, batch=16, seed=3)
    df = paths.measure(ck.model, data.x_test, data.y_test, s)
    out = paths.save_results(f, {("trained", s): df})
    assert out == tmp_path / "path_results" / "net.json"
    back = paths.load_results(f)
    assert list(back) == [("trained", s)]
    pd.testing.assert_frame_equal(back[("trained", s)], df, check_exact=True)

    f.write_bytes(f.read_bytes() + b"\0")  # another version of the checkpoint: its old results are not shown
    assert paths.load_results(f) == {}

    out.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        paths.load_results(f)
    out.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="unknown format"):
        paths.load_results(f)


@pytest.mark.parametrize("kw", [{"samples": 0}, {"batch": 0}, {"seed": -1}, {"samples": 2.5}, {"batch": True}])
def test_measure_settings_refuse_bad_values(kw):
    with pytest.raises(ConfigError):
        paths.MeasureSettings(**kw)


def test_measure_refuses_a_batch_larger_than_the_test_split():
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    with pytest.raises(ConfigError, match="larger than the test split"):
        paths.measure(ck.model, data.x_test, data.y_test, paths.MeasureSettings(batch=len(data.y_test) + 1))
