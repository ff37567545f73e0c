"""The CUDA path (issue 15): what can be checked without a GPU, and the rest when one is there.

Without a GPU (this machine, CI): AMP refused on the CPU and left out of stored keys at its default,
the cuDNN determinism flags set only while CUDA work runs and restored after, the training data moved
to the device once (counted on the CPU and on torch's ``meta`` device), predictions copied back to
the CPU once. With a GPU (skipped otherwise): training repeatable run to run, AMP training, sharded
lesion and path evaluation on CUDA equal to one process on CUDA."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.arch.specs import get_spec
from analysis.core.errors import ConfigError
from analysis.core.meta import RunMeta, TrainConfig
from analysis.data.data import augment_batch, load_digits
from analysis.experiments import lesion, paths
from analysis.experiments import train as tr
from analysis.run import shard
from analysis.run.executor import DataSpec
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.studies import grid as g

ROOT = Path(__file__).resolve().parent.parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = TrainConfig(epochs=2, batch_size=64, warmup_epochs=1)


def tiny_spec():
    return get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8)


# ------------------------------------------------------------------ AMP: a recipe field; fp16 refused on the CPU
def test_amp_is_checked_and_fp16_refused_on_the_cpu():
    with pytest.raises(ConfigError, match="fp16 is for training on CUDA"):
        TrainConfig(device="cpu", amp="fp16")
    with pytest.raises(ConfigError, match="amp must be one of off, bf16, fp16"):
        TrainConfig(device="cuda", amp="fp32")
    for mode in ("bf16", "fp16"):  # a recipe, not a run: valid on a machine without a GPU
        assert TrainConfig(device="cuda:0", amp=mode).amp == mode
    # bf16 on the CPU is a valid recipe everywhere; whether this CPU has bf16 units is checked at training
    assert TrainConfig(amp="bf16").precision == "bf16"


def test_cli_train_refuses_bf16_on_a_cpu_without_bf16_units_before_any_work(tmp_path, capsys, monkeypatch):
    from analysis.cli.main import main

    monkeypatch.setenv("RESNET_LENS_CPU_FLAGS", "fpu sse2 avx2 avx512f")
    out = tmp_path / "c.pt"
    assert main(["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "1", "--precision", "bf16",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "needs bf16 matrix units" in err and not out.exists()


def test_amp_and_layout_are_left_out_of_the_recipe_dict_at_their_defaults():
    assert "amp" not in TrainConfig().to_dict() and "channels_last" not in TrainConfig().to_dict()
    assert list(TrainConfig().to_dict()) == [f.name for f in dataclasses.fields(TrainConfig)
                                             if f.name not in ("amp", "channels_last")]
    cfg = TrainConfig(device="cuda", amp="fp16")
    assert cfg.to_dict()["amp"] == "fp16"
    assert TrainConfig(amp="bf16", channels_last=True).to_dict()["channels_last"] is True
    back = RunMeta.from_dict(RunMeta(recipe=cfg).to_dict())  # a checkpoint's metadata keeps it
    assert back.recipe == cfg


def test_stored_keys_are_unchanged():
    """The shipped variants grid's id and every run's store key, recomputed now, are the stored
    ones; the shipped checkpoints' recipes serialise to the dicts their files hold."""
    for path in (ROOT / "results" / "variants_digits.json",
                 ROOT / "tests" / "fixtures" / "variants_digits_2seeds_6epochs.json"):  # the grid recorded before
        stored = json.loads(path.read_text())
        d = stored["grid"]
        grid = g.Grid(tuple(d["variants"]), tuple(d["depths"]), tuple(d["seeds"]), TrainConfig(**d["recipe"]),
                      DataSpec(**d["data"]))
        assert grid.id == stored["grid_id"]
        keys = {(r["variant"], r["depth"], r["seed"]): r["key"] for r in stored["results"]}
        assert {(r.variant, r.depth, r.seed): r.key for r in grid.runs()} == keys
    for name, f in shipped_checkpoints().items():
        raw = torch.load(f, map_location="cpu", weights_only=True)["meta"]["recipe"]
        assert load_checkpoint(f).meta.recipe.to_dict() == raw, name


# ------------------------------------------------------------------ cuDNN determinism, scoped
def test_cuda_determinism_is_set_only_while_cuda_work_runs():
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark)
    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        with tr.cuda_determinism("cpu"):  # the CPU path touches nothing
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with tr.cuda_determinism("cuda:0"):
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
            with tr.cuda_determinism("cuda"):  # nested: still set, and still set after the inner one ends
                assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with pytest.raises(RuntimeError, match="boom"), tr.cuda_determinism("cuda"):
            raise RuntimeError("boom")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)  # restored however the work ends
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def test_cuda_determinism_overlapping_sessions_restore_after_the_last():
    """Two threads' CUDA work overlapping (A starts, B starts, A ends, B ends): the flags stay set
    until B ends, then the values from before A come back."""
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with tr.cuda_determinism("cuda"):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with tr.cuda_determinism("cuda"):
            b_in.set()
            a_out.wait(5)
            seen["b after a ended"] = (cudnn.deterministic, cudnn.benchmark)

    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        threads = [threading.Thread(target=f) for f in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == {"b after a ended": (True, False)}
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


# ------------------------------------------------------------------ data moved once, predictions back once
@pytest.fixture(scope="module")
def digits8():
    return load_digits(size=8)


def counting_moves(monkeypatch) -> list[tuple[int, ...]]:
    moves = []
    real = tr._move

    def move(t, device):
        moves.append(tuple(t.shape))
        return real(t, device)

    monkeypatch.setattr(tr, "_move", move)
    return moves


def test_training_on_the_cpu_moves_nothing_per_batch(digits8, monkeypatch):
    moves = counting_moves(monkeypatch)
    tr.train(tiny_spec(), digits8, TINY)
    assert moves == []


def test_data_are_moved_to_a_device_once_when_they_fit(digits8, monkeypatch):
    """torch's meta device stands in for a GPU: every tensor moved once, and nothing moved when
    they do not fit or their augmentation cannot run there."""
    moves = counting_moves(monkeypatch)
    placed = tr.place(digits8, "meta", augment=True)  # the digits' "shift" runs on any device
    assert placed.resident and {t.device.type for t in (placed.x_train, placed.y_train, placed.x_test,
                                                         placed.y_test)} == {"meta"}
    assert moves == [tuple(digits8.x_train.shape), tuple(digits8.y_train.shape), tuple(digits8.x_test.shape),
                     tuple(digits8.y_test.shape)]
    moves.clear()
    cifar_like = dataclasses.replace(digits8, augment="crop_flip")
    assert tr.place(cifar_like, "meta", augment=True).resident  # the flip mask follows the batch's device
    moves.clear()
    monkeypatch.setattr(tr, "DEVICE_AUGMENTS", frozenset({"none"}))  # an augmentation that cannot run there
    assert not tr.place(digits8, "meta", augment=True).resident
    assert tr.place(digits8, "meta", augment=False).resident
    monkeypatch.undo()
    moves = counting_moves(monkeypatch)
    monkeypatch.setattr(tr, "_fits", lambda device, nbytes: False)
    kept = tr.place(digits8, "meta", augment=False)
    assert not kept.resident and kept.x_train is digits8.x_train and moves == []


@pytest.mark.parametrize("mode,shape", [("shift", (4, 1, 8, 8)), ("shift1d", (4, 1, 40)), ("none", (4, 3, 8, 8)),
                                        ("crop_flip", (4, 3, 8, 8))])
def test_device_augmentations_run_on_a_tensor_off_the_cpu(mode, shape):
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(torch.empty(shape, device="meta"), mode, gen)
    assert out.device.type == "meta" and out.shape == shape
    assert mode in tr.DEVICE_AUGMENTS


def test_batches_of_data_left_on_the_cpu_move_one_by_one_to_the_same_numbers(digits8, monkeypatch):
    resident = tr.train(tiny_spec(), digits8, TINY)
    moves = counting_moves(monkeypatch)
    real_place = tr.place
    monkeypatch.setattr(tr, "place", lambda data, device, augment: dataclasses.replace(
        real_place(data, device, augment), resident=False))
    moved = tr.train(tiny_spec(), digits8, TINY)
    steps = -(-len(digits8.y_train) // TINY.batch_size)
    assert len(moves) == 2 * steps * TINY.epochs  # images and labels of every batch
    assert all(torch.equal(a, b) for a, b in zip(resident.model.state_dict().values(),
                                                  moved.model.state_dict().values(), strict=True))


def counting_cpu_copies(monkeypatch) -> list[int]:
    copies = []
    real = torch.Tensor.cpu

    def cpu(self, *a, **kw):
        copies.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    return copies


def test_predictions_come_back_to_the_cpu_in_one_copy(monkeypatch):
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    x = dataset_for(ck.meta).x_test[:40]
    y = dataset_for(ck.meta).y_test[:40]
    seqs = lesion.single_plan(ck.model).sequences
    copies = counting_cpu_copies(monkeypatch)
    lesion.predict_sequences(ck.model, x, seqs, batch_size=16)  # 3 batches x 10 sequences
    assert len(copies) == 1
    copies.clear()
    tr.predict(ck.model, x, batch_size=16)
    assert len(copies) == 1
    copies.clear()
    paths.example_norms(ck.model, x, y, [set(), {1}, {2, 3}], batch_size=16)
    assert len(copies) == 1


# ------------------------------------------------------------------ on a GPU (skipped here)
@cuda
def test_cuda_training_is_repeatable_and_amp_trains(digits8):
    cfg = dataclasses.replace(TINY, device="cuda")
    a, b = tr.train(tiny_spec(), digits8, cfg), tr.train(tiny_spec(), digits8, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                 strict=True))
    assert a.history == [dict(h, seconds=a.history[i]["seconds"]) for i, h in enumerate(b.history)]
    for mode in ("bf16", "fp16"):
        r = tr.train(tiny_spec(), digits8, dataclasses.replace(cfg, amp=mode))
        assert next(r.model.parameters()).device.type == "cpu" and 0 < r.final["test_acc"] <= 1


@cuda
def test_sharded_evaluation_on_cuda_equals_one_process_on_cuda():
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    x, y = data.x_test[:96], data.y_test[:96]
    whole = lesion.run_sweep("k", ck.model.to("cuda"), x, y, samples=2, batch_size=32, device="cuda")
    assert shard.sharded_sweep("k", ck.model.cpu(), x, y, samples=2, batch_size=32, device="cuda",
                               shards=3).equals(whole)
    one = paths.gradient_by_length(ck.model.to("cuda"), x[:24], y[:24], samples=2, batch_size=8)
    parts = shard.sharded_gradient_by_length(ck.model.cpu(), x[:24], y[:24], samples=2, batch_size=8,
                                             device="cuda", shards=3)
    pd.testing.assert_frame_equal(parts, one, check_exact=True)
