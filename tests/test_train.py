"""Training loop, schedule, cancel, determinism and the CLI."""

import dataclasses

import pytest
import torch

from analysis.arch.specs import get_spec
from analysis.cli.main import main
from analysis.core.errors import LensError
from analysis.data.data import load_digits
from analysis.experiments.train import TrainConfig, lr_at, predict, train
from analysis.store.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def small():
    d = load_digits(16)
    return dataclasses.replace(d, x_train=d.x_train[:256], y_train=d.y_train[:256],
                               x_test=d.x_test[:128], y_test=d.y_test[:128])


def spec8():
    return get_spec("cifar_resnet8").replace(in_channels=1, input_size=16)


def test_training_is_deterministic_and_learns(small):
    cfg = TrainConfig(epochs=2, batch_size=32, seed=3)
    a, b = train(spec8(), small, cfg), train(spec8(), small, cfg)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.history == [dict(h, seconds=a.history[i]["seconds"]) for i, h in enumerate(b.history)]
    assert len(a.history) == 2 and not a.cancelled
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    c = train(spec8(), small, dataclasses.replace(cfg, seed=4))
    assert not torch.equal(c.model.fc.weight, a.model.fc.weight)


def test_callback_cancels_and_keeps_finished_epochs(small):
    seen = []

    def cb(p):
        seen.append(p.phase)
        return not (p.phase == "batch" and p.epoch == 2 and p.step == 3)

    r = train(spec8(), small, TrainConfig(epochs=3, batch_size=32), cb)
    assert r.cancelled and len(r.history) == 1
    assert seen.count("epoch") == 1


def test_schedule():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert lr_at(cfg, 0.5) == pytest.approx(0.01)
    assert lr_at(cfg, 5) == pytest.approx(0.05)
    step = dataclasses.replace(cfg, schedule="step")
    assert [round(lr_at(step, e), 5) for e in (2, 5, 8)] == [0.1, 0.01, 0.001]


def test_bad_input(small):
    with pytest.raises(LensError, match="schedule"):
        train(spec8(), small, TrainConfig(schedule="linear"))
    with pytest.raises(LensError, match="3 channels"):
        train(get_spec("cifar_resnet8"), small, TrainConfig(epochs=1))
    if not torch.cuda.is_available():
        with pytest.raises(LensError, match="no CUDA device"):
            train(spec8(), small, TrainConfig(device="cuda"))


def test_predict_restores_mode(small):
    model = train(spec8(), small, TrainConfig(epochs=1)).model.train()
    predict(model, small.x_test[:4])
    assert model.training


def test_cli_train_writes_checkpoint_with_metadata(tmp_path, capsys):
    out = tmp_path / "r8.pt"
    assert main(["train", "--model", "cifar_resnet8", "--epochs", "1", "--out", str(out)]) == 0
    c = load_checkpoint(out)
    assert c.spec.name == "cifar_resnet8" and c.spec.in_channels == 1 and c.spec.input_size == 16
    m = c.meta
    assert m.dataset is not None and m.recipe is not None and m.normalisation is not None
    assert len(m.history) == 1 and m.final == m.history[-1] and m.versions["torch"].startswith("2.13")
    assert m.train_seconds and m.images_per_second and m.status == "complete"
    assert m.dataset.split_seed == 0 and m.recipe.epochs == 1
    assert "saved" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--model", "resnet19", "--epochs", "1", "--out", str(tmp_path / "x.pt")]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--epochs" in capsys.readouterr().out


def test_concurrent_runs_do_not_change_each_other(small):
    """Two trainings at once (two browser sessions) give the results each gives alone: weights,
    batch order and augmentation come from local generators, no global seed or flag is touched."""
    import threading

    cfgs = [TrainConfig(epochs=1, batch_size=32, seed=s) for s in (1, 2)]
    alone = [train(spec8(), small, c) for c in cfgs]
    global_state = torch.get_rng_state()
    flag = torch.are_deterministic_algorithms_enabled()
    together: list = [None, None]

    def run(i: int) -> None:
        together[i] = train(spec8(), small, cfgs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together, strict=True):
        for k, v in a.model.state_dict().items():
            assert torch.equal(v, b.model.state_dict()[k]), k
        assert [h["test_acc"] for h in a.history] == [h["test_acc"] for h in b.history]
    assert torch.equal(torch.get_rng_state(), global_state)  # the global generator was not used
    assert torch.are_deterministic_algorithms_enabled() == flag


def test_build_model_ignores_the_global_seed():
    from analysis.arch.models import build_model

    torch.manual_seed(1)
    a = build_model(spec8(), seed=5)
    torch.manual_seed(2)
    b = build_model(spec8(), seed=5)
    c = build_model(spec8(), seed=6)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_train_checkpoint_records_the_schema(small):
    from analysis.experiments.train import train_checkpoint

    ck = train_checkpoint(spec8(), small, TrainConfig(epochs=1, batch_size=64), command="test")
    m = ck.meta
    assert m.dataset == small.info() and m.normalisation == small.normalisation
    assert m.recipe == TrainConfig(epochs=1, batch_size=64) and m.status == "complete" and m.command == "test"
    assert m.final == m.history[-1] and len(m.history) == 1
    cancelled = train_checkpoint(spec8(), small, TrainConfig(epochs=2, batch_size=64),
                                 lambda p: not (p.phase == "epoch" and p.epoch == 1))
    assert cancelled.meta.status == "cancelled" and cancelled.meta.status_text == "cancelled after 1 epoch"


@pytest.mark.parametrize("kw", [
    {"lr": float("nan")}, {"lr": float("inf")}, {"lr": 1e30}, {"lr": 0.0}, {"lr": 10.01}, {"lr": True}, {"lr": "0.1"},
    {"momentum": 1.0}, {"momentum": -0.1}, {"momentum": float("nan")},
    {"weight_decay": float("nan")}, {"weight_decay": float("inf")}, {"weight_decay": -1e-9}, {"weight_decay": 1.5},
    {"epochs": 0}, {"epochs": True}, {"epochs": 2.0}, {"batch_size": 0}, {"batch_size": -1},
    {"warmup_epochs": -1}, {"warmup_epochs": 31}, {"seed": -1}, {"seed": 2**63}, {"seed": 1.0},
    {"device": "gpu"}, {"device": "cuda:"}, {"device": "cuda:x"}, {"device": 0}, {"augment": 1},
])
def test_train_config_refuses_meaningless_settings(kw):
    with pytest.raises(LensError):
        TrainConfig(**kw)


def test_train_config_accepts_the_edges():
    TrainConfig(lr=10, momentum=0, weight_decay=1, epochs=1, warmup_epochs=1, seed=2**63 - 1, device="cuda:1")
    TrainConfig(lr=1e-8, weight_decay=0, batch_size=1, warmup_epochs=0)


def test_divergence_raises_instead_of_returning_nan_weights(small):
    """Each setting in range, together they blow up: a DivergedError (a ConfigError) naming where, no NaN model."""
    from analysis.core.errors import DivergedError

    with pytest.raises(DivergedError, match=r"(loss became (NaN|infinite) at epoch 1 step \d+|non-finite).*lower the learning rate"):
        train(spec8(), small, TrainConfig(epochs=2, batch_size=16, lr=10, momentum=0.99, weight_decay=1,
                                           warmup_epochs=0))


def test_non_finite_training_images_are_a_dataset_error(small):
    x = small.x_train.clone()
    x[5, 0, 3, 3] = float("inf")
    with pytest.raises(LensError, match="NaN or infinite"):
        train(spec8(), dataclasses.replace(small, x_train=x), TrainConfig(epochs=1, batch_size=32, augment=False))


def test_the_recipe_seed_draws_the_initial_weights(small):
    """With a learning rate too small to move them, trained weights are the initial ones: those of
    build_model(spec, seed=recipe seed), a different seed giving different ones."""
    from analysis.arch.models import build_model

    for seed in (3, 4):
        r = train(spec8(), small, TrainConfig(epochs=1, batch_size=128, lr=1e-12, weight_decay=0.0, seed=seed))
        init = build_model(spec8().replace(input_size=small.size), seed=seed)
        torch.testing.assert_close(r.model.conv1.weight, init.conv1.weight, rtol=0, atol=1e-9)
        torch.testing.assert_close(r.model.fc.weight, init.fc.weight, rtol=0, atol=1e-9)
    assert not torch.equal(build_model(spec8(), seed=3).conv1.weight, build_model(spec8(), seed=4).conv1.weight)


def test_the_clean_training_accuracy_after_the_last_epoch(small):
    """After the last epoch (only), the history has the clean training numbers: one pass over the whole
    training set in eval mode without augmentation. They equal an evaluation of the returned net done
    here by hand, and the pass changes nothing: the weights, BatchNorm's running statistics and the
    dropout shortcut's generator are as the last optimiser step left them (a pass in train mode would
    move the statistics and draw masks)."""
    spec = spec8().replace(shortcut_variant="dropout", shortcut_dropout=0.1)
    data = dataclasses.replace(small, x_train=small.x_train[:64], y_train=small.y_train[:64])
    seen: dict[str, object] = {}

    def last_step(p):
        if p.phase == "batch" and p.epoch == p.epochs and p.step == p.steps_per_epoch:
            seen["state"] = {k: v.clone() for k, v in p.model.state_dict().items()}
            seen["noise"] = p.model.noise.get_state().clone()

    r = train(spec, data, TrainConfig(epochs=2, batch_size=32, seed=1), last_step)
    first, last = r.history
    assert "train_acc_clean" not in first and "train_loss_clean" not in first
    after = r.model.state_dict()
    assert after.keys() == seen["state"].keys()
    assert all(torch.equal(after[k], v) for k, v in seen["state"].items())  # running_mean/var included
    assert torch.equal(r.model.noise.get_state(), seen["noise"])
    with torch.no_grad():  # the oracle: eval mode, every training image, no augmentation
        model = r.model.eval()
        logits = model(data.x_train)  # one batch, as the pass reads them
    assert last["train_acc_clean"] == float((logits.argmax(1) == data.y_train).float().mean())
    assert last["train_loss_clean"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, data.y_train)),
                                                     rel=1e-5)


def test_the_clean_pass_leaves_the_training_bit_identical(small, monkeypatch):
    """The same run with the clean pass removed (evaluate on the training set skipped) has the same
    weights and the same running numbers: the pass comes after the last step and reads only."""
    from analysis.experiments import train as train_module

    cfg = TrainConfig(epochs=2, batch_size=32, seed=2)
    data = dataclasses.replace(small, x_train=small.x_train[:64], y_train=small.y_train[:64])
    with_pass = train(spec8(), data, cfg)
    real = train_module.evaluate

    def test_split_only(model, x, y, *args, **kwargs):
        if x is data.x_train:  # the clean pass: skipped, a placeholder result
            return {"loss": 0.0, "acc": 0.0, "correct": 0, "n": len(y)}
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", test_split_only)
    without = train(spec8(), data, cfg)
    assert all(torch.equal(v, without.model.state_dict()[k]) for k, v in with_pass.model.state_dict().items())
    keep = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[h[k] for k in keep] for h in with_pass.history] == [[h[k] for k in keep] for h in without.history]
