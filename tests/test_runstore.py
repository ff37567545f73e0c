"""The run store keeps trained nets and sweep results across reloads, tabs and restarts."""

import threading

import pandas as pd
import pytest
import torch

from analysis.checkpoints import Checkpoint
from analysis.meta import RunMeta, TrainConfig
from analysis.models import build_model
from analysis.runstore import RunStore, StoreError, config_key
from analysis.specs import get_spec


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
    with pytest.raises(StoreError, match="delete it to start afresh|cannot use"):
        RunStore(tmp_path / "db").runs()


def test_config_key_is_stable():
    assert config_key({"b": 1, "a": [1, 2]}) == config_key({"a": [1, 2], "b": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
