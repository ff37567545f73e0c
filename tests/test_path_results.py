"""Stored gradient-by-length measurements of the shipped nets (tools/make_path_results.py): present,
made on the files that ship, equal to a fresh measurement, and read back exactly. Measurements made
in the app: kept in the run store by the net's weights and the test data, shown in a new session
without measuring, never for other weights under the same label, nothing of a cancelled one; the
gradient table's formats."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis.core.errors import CheckpointError, ConfigError
from analysis.experiments import paths
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

DEFAULT = paths.MeasureSettings()
ROOT = Path(__file__).resolve().parent.parent


def residual_shipped() -> dict:
    return {name: f for name, f in shipped_checkpoints().items() if load_checkpoint(f).spec.residual}


def test_every_shipped_residual_net_has_current_stored_results():
    nets = residual_shipped()
    assert set(nets) == {"digits_resnet20", "digits_resnet56", "mnist1d_resnet20", "mnist1d_resnet56"}
    for name, f in nets.items():
        doc = json.loads(paths.results_file(f).read_text())
        assert doc["sha256"] == paths.file_digest(f), f"{name}: stored results are stale; rerun tools/make_path_results.py"
        stored = paths.load_results(f)
        assert set(stored) >= {("trained", DEFAULT), ("initialisation", DEFAULT)}
        n = load_checkpoint(f).spec.num_blocks
        for df in stored.values():
            assert df["length"].tolist() == list(range(n + 1))
            assert df["total (rel.)"].max() == 1.0


@pytest.mark.parametrize("name", ["digits_resnet20", "mnist1d_resnet20"])
def test_stored_results_equal_a_fresh_measurement(name):
    f = shipped_checkpoints()[name]
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
    with pytest.raises(CheckpointError, match="corrupt|not valid JSON"):
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


# ------------------------------------------------------------------ measurements kept in the run store
def test_store_settings_are_the_measure_settings_and_the_test_data():
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    s = paths.MeasureSettings(samples=3, batch=16, seed=2)
    key = paths.store_settings(s, data)
    assert key == {"samples": 3, "batch": 16, "seed": 2, "dataset": data.name, "split_seed": data.split_seed,
                   "test_images": len(data.y_test), "mean": [float(v) for v in data.mean],
                   "std": [float(v) for v in data.std]}
    assert json.loads(json.dumps(key)) == key  # the run store keys by its JSON
    assert paths.settings_of(key) == s
    assert paths.data_identity(key) == paths.data_identity(paths.store_settings(DEFAULT, data))
    assert "samples" not in paths.data_identity(key)
    # other statistics or another split are other images: another key
    assert paths.store_settings(s, dataclasses.replace(data, mean=[0.5])) != key
    assert paths.store_settings(s, dataclasses.replace(data, split_seed=data.split_seed + 1)) != key
    with pytest.raises(ConfigError, match="no 'batch' setting"):
        paths.settings_of({"samples": 3, "seed": 2})


def paths_page(trained: dict | None = None) -> AppTest:
    """A new session of the Path ensemble page (a reload, a new tab), with nets trained in it."""
    at = AppTest.from_file(str(ROOT / "app_pages" / "paths.py"), default_timeout=120)
    if trained is not None:
        at.session_state["trained"] = trained
    return at.run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def small_settings(at: AppTest, label: str, init: bool = True) -> AppTest:
    """The given net with 1 sample per length on 8 images (seed 0): a measurement of a second or two."""
    at.selectbox(key="paths_ckpt").select(label).run()
    at.number_input(key="paths_samples").set_value(1).run()
    at.number_input(key="paths_batch").set_value(8).run()
    if not init:
        at.checkbox(key="paths_init").uncheck().run()
    clean(at)
    return at


SMALL = paths.MeasureSettings(samples=1, batch=8, seed=0)
STAMP = r"stored, measured \d{4}-\d\d-\d\d \d\d:\d\d"


def refuse(*args, **kwargs):
    raise AssertionError("the page measured without Measure being pressed")


@pytest.mark.usefixtures("own_run_store")
def test_a_measurement_made_in_the_app_is_shown_in_a_new_session_without_measuring(monkeypatch):
    from analysis.store.runstore import net_key
    from ui import cache

    real, made = paths.measure, []

    def measure(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(paths, "measure", measure)
    at = small_settings(paths_page(), "shipped: digits_resnet20")
    at.button(key="paths_run").click().run()
    clean(at)
    assert len(made) == 2  # trained, then at initialisation
    assert any(c.value.startswith("Measured in this session (1 samples per length, batch 8, seed 0)")
               for c in at.caption)
    # in the run store by the net's weights + spec, one kind per net, keyed by the settings and the test data
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    key = paths.store_settings(SMALL, dataset_for(ck.meta))
    assert sorted((s.kind, s.settings == key) for s in cache.run_store().sweeps_of(net_key(ck))) == \
        [("paths-initialisation", True), ("paths-trained", True)]

    monkeypatch.setattr(paths, "measure", refuse)
    again = small_settings(paths_page(), "shipped: digits_resnet20")
    assert again.session_state["paths_results"] == {}
    assert [c.value for c in again.caption if re.fullmatch(
        rf"Stored results, shown without measuring \(1 samples per length, batch 8, seed 0\) — "
        rf"trained: {STAMP}; initialisation: {STAMP}\.", c.value)]
    expected = pd.concat([made[0].assign(net="trained"), made[1].assign(net="initialisation")], ignore_index=True)
    shown = again.dataframe[-1].value
    pd.testing.assert_frame_equal(shown.drop(columns="paths"), expected.drop(columns="paths"))
    assert shown["paths"].tolist() == expected["paths"].tolist()  # C(9, k) < 1,000: no separators
    # other settings: the stored ones are offered (not the shipped 10-sample results), said to be other settings
    again.number_input(key="paths_samples").set_value(2).run()
    clean(again)
    assert again.info[0].value.startswith("Showing the results for 1 samples per length, batch 8, seed 0")
    assert any(re.search(rf"trained: {STAMP}", c.value) for c in again.caption)


@pytest.mark.usefixtures("own_run_store")
def test_measure_measures_again_what_the_run_store_holds_and_replaces_it(monkeypatch):
    """Measure is "measure again" (issue 22 item 5 kept it so when the store-through runner took over
    storing): stored results for the settings above are measured anew, shown as this session's, and
    the stored row replaced."""
    from ui import cache

    real, calls = paths.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    at = small_settings(paths_page(), "shipped: digits_resnet20", init=False)
    at.button(key="paths_run").click().run()
    key = net_key_of("digits_resnet20")
    (before,) = cache.run_store().sweeps_of(key)
    monkeypatch.setattr(paths, "measure", measure)
    again = small_settings(paths_page(), "shipped: digits_resnet20", init=False)
    assert any(c.value.startswith("Stored results, shown without measuring") for c in again.caption) and calls == []
    again.button(key="paths_run").click().run()
    clean(again)
    assert calls == [1]
    assert "Measured in this session (1 samples per length, batch 8, seed 0)." in again.caption.values
    (after,) = cache.run_store().sweeps_of(key)
    assert after.key == before.key and after.created > before.created
    created = again.session_state["paths_origin"][("shipped: digits_resnet20", "trained", SMALL)][1]
    assert created == after.created  # the session's time is the stored row's


@pytest.mark.usefixtures("own_run_store")
def test_a_measurement_the_run_store_cannot_keep_is_shown_and_said_kept_for_this_session(monkeypatch):
    from analysis.store.runstore import RunStore, StoreError
    from ui import cache

    def full(*args, **kwargs):
        raise StoreError("the disk holding the run store is full")

    monkeypatch.setattr(RunStore, "save_sweep", full)
    at = small_settings(paths_page(), "shipped: digits_resnet20", init=False)
    at.button(key="paths_run").click().run()
    clean(at)
    assert [w.value for w in at.warning] == [
        "The trained measurement of shipped: digits_resnet20 is kept for this session only: the disk holding the "
        "run store is full"]
    assert "Measured in this session (1 samples per length, batch 8, seed 0)." in at.caption.values
    assert list(at.session_state["paths_results"]) == [("shipped: digits_resnet20", "trained", SMALL)]
    assert cache.run_store().sweeps_of(net_key_of("digits_resnet20")) == []


def net_key_of(name: str) -> str:
    from analysis.store.runstore import net_key

    return net_key(load_checkpoint(shipped_checkpoints()[name]))


@pytest.mark.usefixtures("own_run_store")
def test_a_net_retrained_under_the_same_label_never_shows_the_old_numbers(monkeypatch):
    from analysis.store.checkpoints import checkpoint_bytes
    from analysis.store.runstore import net_key

    first = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    model = copy.deepcopy(first.model)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    second = load_checkpoint(checkpoint_bytes(model, first.meta), name="retrained")
    assert net_key(second) != net_key(first)
    label = "trained here: mine"
    missing = f"{label} has not been measured with 1 samples per length, batch 8, seed 0"

    at = small_settings(paths_page({"mine": first}), label, init=False)
    at.button(key="paths_run").click().run()
    clean(at)
    assert "Residual blocks n" in [m.label for m in at.metric]
    monkeypatch.setattr(paths, "measure", refuse)
    # retrained in this session under the same label: the session's numbers were of the old weights
    at.session_state["trained"] = {"mine": second}
    at.run()
    clean(at)
    assert at.info and at.info[0].value.startswith(missing) and "Residual blocks n" not in [m.label for m in at.metric]
    # a new session: the run store's numbers were of the old weights too
    later = small_settings(paths_page({"mine": second}), label, init=False)
    assert later.info and later.info[0].value.startswith(missing)
    # while the old weights, under any label, find theirs
    old = small_settings(paths_page({"old": first}), "trained here: old", init=False)
    assert any(re.fullmatch(rf"Stored results, shown without measuring \(.*\) — trained: {STAMP}\.", c.value)
               for c in old.caption)


@pytest.mark.usefixtures("own_run_store")
def test_a_cancelled_measurement_keeps_nothing_in_the_run_store(monkeypatch):
    """Cancel reruns the page while it measures; the rerun ends the script inside the measurement
    (here: st.stop() after the trained net finished, before the one at initialisation)."""
    import streamlit as st

    from analysis.store.runstore import net_key
    from ui import cache

    real, calls = paths.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            st.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(paths, "measure", measure)
    at = small_settings(paths_page(), "shipped: digits_resnet20")
    at.button(key="paths_run").click().run()
    assert len(calls) == 2 and at.session_state["paths_results"] == {}
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    assert cache.run_store().sweeps_of(net_key(ck)) == []
    at.run()
    assert "nothing of it was kept" in at.warning[0].value


@pytest.mark.usefixtures("own_run_store")
def test_gradient_table_counts_with_separators_and_the_relative_total_in_three_digits():
    at = paths_page()  # the shipped 56-layer net (27 blocks) with its stored results
    clean(at)
    shown = at.dataframe[-1].value
    trained = shown[shown["net"] == "trained"].set_index("length")
    assert trained.loc[13, "paths"] == "20,058,300"  # C(27, 13), was '20058300' left-aligned
    assert trained.loc[0, "paths"] == "1" and trained.loc[4, "paths"] == "17,550"
    columns = json.loads(at.dataframe[-1].proto.columns)
    assert columns["paths"]["alignment"] == "right"
    # in [0, 1]: '%.3g' per value (0.0333, 1.2e-20), not the whole column in scientific notation
    assert columns["total (rel.)"]["type_config"]["format"] == "%.3g"
    assert columns["mean"]["type_config"]["format"] == "%.2e"  # 1e-23 to 6e-5: scientific stays
