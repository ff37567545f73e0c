"""Training loop, schedule, cancel, determinism and the CLI."""

import dataclasses

import pytest
import torch

from analysis.__main__ import main
from analysis.checkpoints import load_checkpoint
from analysis.data import load_digits
from analysis.specs import get_spec
from analysis.train import TrainConfig, lr_at, predict, train


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
    with pytest.raises(ValueError, match="schedule"):
        train(spec8(), small, TrainConfig(schedule="linear"))
    with pytest.raises(ValueError, match="3 channels"):
        train(get_spec("cifar_resnet8"), small, TrainConfig(epochs=1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
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
