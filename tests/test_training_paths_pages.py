"""Training and Path ensemble pages (issue 11, item 10): only the devices this machine has, nothing of
a finished run left on screen (Cancel, progress bar), a cancelled run's time, ranges in the labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("own_run_store")


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=120).run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def leftovers(at: AppTest, cancel_key: str) -> tuple[list[str], int]:
    """The Cancel buttons and progress bars on screen."""
    return [b.key for b in at.button if b.key == cancel_key], len(at.get("progress"))


# ------------------------------------------------------------------ Training
@pytest.mark.parametrize("has_cuda", [False, True])
def test_the_device_choice_is_what_this_machine_has(monkeypatch, has_cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    at = page("training.py")
    clean(at)
    assert at.selectbox(key="train_device").options == (["cpu", "cuda"] if has_cuda else ["cpu"])
    said = any("no CUDA GPU" in c.value for c in at.caption)
    assert said is not has_cuda


def train_one(at: AppTest) -> AppTest:
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["plain"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    return at.button(key="train_go").click().run()


def test_a_finished_training_leaves_no_cancel_button_or_progress_bar():
    at = train_one(page("training.py"))
    clean(at)
    assert len(at.session_state["trained"]) == 1
    assert leftovers(at, "train_cancel") == ([], 0)
    assert [s.value for s in at.success] == ["Trained 1 of 1 net: see *Your runs* below."]
    row = at.dataframe[-1].value.iloc[0]
    assert row["status"] == "complete" and float(row["seconds"].replace(",", "")) > 0


def test_a_refused_training_leaves_no_cancel_button_either(monkeypatch):
    from analysis import train
    from analysis.errors import ConfigError

    def diverge(*args, **kwargs):
        raise ConfigError("loss became NaN at epoch 1 step 1: training diverged, lower the learning rate")

    monkeypatch.setattr(train, "train", diverge)
    at = train_one(page("training.py"))
    clean(at)
    assert "training diverged" in at.error[0].value
    assert leftovers(at, "train_cancel") == ([], 0) and not at.success


def cancelled_run(at: AppTest, history: list[dict]) -> None:
    """What a Cancel click leaves behind: the interrupted loop's run, picked up by the next run."""
    from analysis.data import load_digits
    from analysis.models import build_model
    from analysis.specs import get_spec
    from analysis.train import TrainConfig

    model = build_model(get_spec("cifar_resnet8").replace(in_channels=1, input_size=16))
    at.session_state["active_run"] = {"label": "cifar_resnet8 (cancelled)", "history": history, "model": model,
                                      "data": load_digits(16), "config": TrainConfig(epochs=3)}


EPOCH = {"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_loss": 2.1, "test_acc": 0.25, "lr": 0.1}


def test_a_cancelled_run_shows_the_seconds_of_its_finished_epochs():
    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    cancelled_run(at, [dict(EPOCH, seconds=12.345), dict(EPOCH, epoch=2, seconds=24.567)])
    at.run()
    clean(at)
    kept = at.session_state["trained"]["cifar_resnet8 (cancelled)"]
    assert kept.meta.train_seconds == 24.57  # the two finished epochs, not the one it was stopped in
    assert kept.meta.images_per_second == round(2 * 1347 / 24.567, 1)
    row = at.dataframe[-1].value.set_index("model").loc["cifar_resnet8 (cancelled)"]
    assert (row["seconds"], row["status"]) == ("24.6", "cancelled after 2 epochs")


def test_a_run_without_recorded_time_shows_a_dash_not_none():
    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    cancelled_run(at, [EPOCH])  # a history without times (as files written elsewhere may have)
    at.run()
    clean(at)
    kept = at.session_state["trained"]["cifar_resnet8 (cancelled)"]
    assert kept.meta.train_seconds is None and kept.meta.images_per_second is None  # not a made-up 0 s
    row = at.dataframe[-1].value.set_index("model").loc["cifar_resnet8 (cancelled)"]
    assert (row["seconds"], row["status"]) == ("—", "cancelled after 1 epoch")


def test_a_run_cancelled_by_its_callback_counts_only_finished_epochs():
    """The library side: train() stopped by its callback in epoch 2 records epoch 1's time."""
    from analysis.data import load_digits
    from analysis.specs import get_spec
    from analysis.train import TrainConfig, train_checkpoint

    data = load_digits(8)
    spec = get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8)
    ck = train_checkpoint(spec, data, TrainConfig(epochs=3, batch_size=256),
                          lambda p: not (p.phase == "batch" and p.epoch == 2 and p.step == 2))
    assert ck.meta.status == "cancelled" and len(ck.meta.history) == 1
    assert ck.meta.train_seconds == round(ck.meta.history[0]["seconds"], 2)


# ------------------------------------------------------------------ Path ensemble
def measure(at: AppTest) -> AppTest:
    at.selectbox(key="paths_ckpt").select("shipped: digits_resnet20").run()
    at.number_input(key="paths_samples").set_value(1).run()
    at.number_input(key="paths_batch").set_value(8).run()
    at.checkbox(key="paths_init").uncheck().run()
    return at.button(key="paths_run").click().run()


def test_a_finished_measurement_leaves_no_cancel_button_or_progress_bar():
    at = measure(page("paths.py"))
    clean(at)
    assert len(at.session_state["paths_results"]) == 1
    assert leftovers(at, "paths_cancel") == ([], 0)
    assert any(c.value.startswith("Measured in this session (1 samples") for c in at.caption)


def test_a_refused_measurement_leaves_no_cancel_button_or_progress_bar(monkeypatch):
    from analysis import paths
    from analysis.errors import DatasetError

    def refuse(*args, **kwargs):
        raise DatasetError("no test images")

    monkeypatch.setattr(paths, "measure", refuse)
    at = measure(page("paths.py"))
    clean(at)
    assert at.error[0].value == "no test images"
    assert leftovers(at, "paths_cancel") == ([], 0)
    assert at.session_state["paths_results"] == {}


# ------------------------------------------------------------------ ranges in the labels
def shown_range(low: float, high: float) -> str:
    def num(v: float) -> str:
        return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

    return f"({num(low)}–{num(high)}"


@pytest.mark.parametrize(("name", "setup"), [("training.py", None), ("training.py", "imagefolder"),
                                             ("paths.py", None)])
def test_every_number_input_shows_its_range_in_its_label(name, setup):
    at = page(name)
    if setup:
        at.selectbox(key="train_data").select(setup).run()
    clean(at)
    boxes = at.number_input
    assert len(boxes) >= 3
    for box in boxes:
        assert box.min is not None and box.max is not None, box.key
        assert shown_range(box.min, box.max) in box.label, (box.key, box.label)
    labels = {b.key: re.sub(r"\s+", " ", b.label) for b in boxes}
    if name == "paths.py":
        assert labels["paths_samples"] == "Samples per length (1–100)"
        assert labels["paths_seed"] == "Seed (0–10,000)"
    else:
        assert labels["train_epochs"] == "Epochs (1–200)" and labels["train_lr"] == "Learning rate (0.001–1)"
