"""Training and Path ensemble pages (issue 11, item 10): only the devices this machine has, nothing of
a finished run left on screen (Cancel, progress bar), a cancelled run's time, ranges in the labels;
(items 7, 8) the app's chart layout and number format: every chart with the app's plotly config,
metrics in wrapping rows, long counts shortened with the exact one in the help, tables formatted."""

from __future__ import annotations

import json
import math
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


def charts(at: AppTest) -> dict[str, dict]:
    """The page's plotly charts by key, each with its figure and its plotly config."""
    return {c.proto.id.rsplit("-", 1)[-1]: {"figure": json.loads(c.proto.spec), "config": json.loads(c.proto.config)}
            for c in at.get("plotly_chart")}


def metric_rows(at: AppTest) -> list[list[str]]:
    """The labels of the metrics in each wrapping horizontal row (ui.widgets.metric_row); a metric
    anywhere else (an st.columns column, the page itself) comes as a row of its own, marked '!'."""
    rows: list[list[str]] = []

    def walk(node: object) -> None:  # in page order
        children = list(getattr(node, "children", {}).values())
        flex = node.proto.flex_container if getattr(node, "type", None) == "flex_container" else None
        if flex is not None and flex.wrap and flex.direction == flex.Direction.HORIZONTAL and children and \
                all(getattr(c, "type", None) == "metric" for c in children):
            rows.append([c.label for c in children])
            return
        for c in children:
            if getattr(c, "type", None) == "metric":
                rows.append([f"!{c.label}"])
            else:
                walk(c)

    walk(at._tree)
    return rows


def column_formats(at: AppTest, i: int) -> dict[str, str]:
    """The number format of every column of the page's i-th table, as the browser gets it."""
    return {name: col["type_config"]["format"] for name, col in json.loads(at.dataframe[i].proto.columns).items()
            if "format" in col.get("type_config", {})}


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
    from analysis.core.errors import ConfigError
    from analysis.experiments import train

    def diverge(*args, **kwargs):
        raise ConfigError("loss became NaN at epoch 1 step 1: training diverged, lower the learning rate")

    monkeypatch.setattr(train, "train", diverge)
    at = train_one(page("training.py"))
    clean(at)
    assert "training diverged" in at.error[0].value
    assert leftovers(at, "train_cancel") == ([], 0) and not at.success


def cancelled_run(at: AppTest, history: list[dict]) -> None:
    """What a Cancel click leaves behind: the interrupted loop's run, picked up by the next run."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.data.data import load_digits
    from analysis.experiments.train import TrainConfig

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
    from analysis.arch.specs import get_spec
    from analysis.data.data import load_digits
    from analysis.experiments.train import TrainConfig, train_checkpoint

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
    from analysis.core.errors import DatasetError
    from analysis.experiments import paths

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


# ------------------------------------------------------------------ one layout, one number format
def test_training_charts_tables_and_titles_in_the_apps_format():
    from ui.render import PLOTLY_CONFIG

    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    cancelled_run(at, [dict(EPOCH, seconds=12.345)])  # a run of the user's, without training one
    at.run()
    clean(at)
    shown = charts(at)
    # the recorded grid's residual and plain rows sit under the shipped runs (their own test checks them)
    assert list(shown) == ["training_shipped", "training_degradation_seeds", "training_mine"]
    assert all(c["config"] == PLOTLY_CONFIG for c in shown.values())
    # the legend explains dashed and solid; the section is named by a subheader, not a chart title
    assert [s.value for s in at.subheader] == ["Shipped runs", "The same experiment over seeds, one recipe",
                                               "Run it yourself", "Your runs", "Gradient flow"]
    for c in (shown["training_shipped"], shown["training_mine"]):  # the training curves
        layout = c["figure"]["layout"]
        assert "title" not in layout and layout["legend"]["title"]["text"] == ""
        assert [d["name"] for d in c["figure"]["data"][:2]] == ["test error (solid)",
                                                                 "running training error (dashed; augmented batches, train mode)"]
    # both run tables: error percentages with two decimals (12.10, not the default 12.1), counts '%,d'
    errors = {"depth": "%,d", "epochs": "%,d", "train error % (clean: eval mode, whole training set)": "%.2f",
              "running train error % (augmented batches, train mode)": "%.2f", "test error %": "%.2f"}
    assert column_formats(at, 0) == errors
    # the user's runs with their recipes side by side: weight decay as set (1e-4), seeds without separators
    # weight decay in three significant digits (one digit read 1.5e-4 as 2e-4)
    # (dataframe 1 is the recorded grid's comparisons, under the shipped runs)
    assert column_formats(at, 2) == {**errors, "lr": "%,.3g", "batch": "%,d", "weight decay": "%.3g", "seed": "%d"}
    mine = at.dataframe[2].value.set_index("model").loc["cifar_resnet8 (cancelled)"]
    assert mine["test error %"] == 75.0
    # a cancelled run never reached its last epoch: no clean pass, only the running number, both labelled
    assert math.isnan(mine["train error % (clean: eval mode, whole training set)"])
    assert mine["running train error % (augmented batches, train mode)"] == round(100 * (1 - EPOCH["train_acc"]), 2)
    assert any("Two training errors: the clean one" in c.value for c in at.caption)


def test_path_ensemble_charts_metrics_and_tables_in_the_apps_format():
    from ui.render import PLOTLY_CONFIG

    at = page("paths.py")  # the shipped 56-layer net's stored gradient measurement is shown
    clean(at)
    shown = charts(at)
    assert list(shown) == ["paths_graph", "paths_dist", "paths_grad"]
    assert all(c["config"] == PLOTLY_CONFIG for c in shown.values())
    # the path length above the graph, not in the left third where its label was cut at 820 px
    assert metric_rows(at) == [["Path length (residual branches passed)"],
                               ["Paths", "Mean length", "Std of length", "Share with length 20–34"],
                               ["Residual blocks n", "Effective paths (90% of total gradient)",
                                "Paper, ResNet-110 (54 blocks)"]]
    # 2^54 paths (cifar_resnet110's 54 blocks) has 17 digits: shown exactly, and as 2^54 in the help
    paths = {m.label: m for m in at.metric}["Paths"]
    assert (paths.value, paths.proto.help) == ("18,014,398,509,481,984", "2^54 = 18,014,398,509,481,984 paths.")
    # gradient magnitudes from ~1e-23 to ~6e-5: scientific notation for the whole column
    # (a plain format showed 0.00000000002); the counts and sample sizes with separators; log10 with
    # two decimals in every row (not '-3.2' beside '-3.65'). The std column has an exact zero (length 0
    # has one path): written cell by cell, '0' beside '2.26e-6' (tests/test_render_fmt.py)
    assert column_formats(at, -1) == {"length": "%,d", "mean": "%.2e", "samples": "%,d",
                                      "log10 paths": "%.2f", "log10 total": "%.2f", "total (rel.)": "%.3g"}
    assert min(at.dataframe[-1].value["mean"]) < 1e-11  # the tiny values that need it are there
    assert column_formats(at, 0) == {"length": "%,d"}  # the unrolled view's list of paths


def test_a_302_digit_path_count_is_shortened_and_exact_in_the_help_and_the_csv():
    from tests import downloads

    with downloads.captured() as files:
        at = page("paths.py")
        at.slider(key="paths_blocks_cifar_resnet110").set_value(1000).run()
        clean(at)
        paths = {m.label: m for m in at.metric}["Paths"]
        assert paths.value == "1.07e+301 (302 digits)"
        assert paths.proto.help == f"2^1000 = {2 ** 1000:,} paths."
        assert not any(f"{2 ** 1000:,}" in c.value for c in at.caption)  # no 400-character caption
        (csv,) = [b for b in at.get("download_button") if b.label.startswith("Download the distribution")]
        counts = [int(line.split(",")[1]) for line in files.of(csv).data.decode().splitlines()[1:]]
    assert len(counts) == 1001 and sum(counts) == 2 ** 1000  # every C(1000, k), exact


# ------------------------------------------------------------------ Training: gradient flow (issue 12)
def test_a_run_trained_here_shows_its_gradient_flow_and_keeps_it_across_a_reload():
    """Recording is on by default (every 5 steps): one epoch of digits is 22 steps, so steps 0, 5, 10,
    15, 20 are recorded for the 3 blocks of cifar_resnet8, in both kinds: 5 x 3 x 2 rows."""
    from tests import downloads

    with downloads.captured() as files:
        at = train_one(page("training.py"))
        clean(at)
        (label, df), = at.session_state["gradients"].items()
        assert label.startswith("plain_cifar_resnet8") and len(df) == 5 * 3 * 2
        assert sorted(df["step"].unique()) == [0, 5, 10, 15, 20]
        shown = charts(at)
        assert {"grad_heat_0", "grad_lines"} <= set(shown)
        heat = shown["grad_heat_0"]["figure"]["data"][0]
        assert heat["type"] == "heatmap" and heat["y"] == ["layer1.0", "layer2.0", "layer3.0"]
        assert heat["x"] == [0, 5, 10, 15, 20]
        assert shown["grad_heat_0"]["config"]["displaylogo"] is False
        lines = shown["grad_lines"]["figure"]["data"]
        assert [t["name"] for t in lines] == [f"{label} · step 0", f"{label} · step 20"]
        csv = files.of(next(b for b in at.get("download_button") if b.label == "Download gradient records (CSV)"))
        assert csv.filename == "gradient_flow.csv"
        assert csv.data.decode().splitlines()[0] == "step,epoch,block,stage,kind,norm,run,residual"
        assert len(csv.data.decode().splitlines()) == 1 + 30
        assert at.dataframe[-1].value["model"].tolist() == [label]  # the runs table is still the last table

        fresh = page("training.py")  # a new session: the records come from the run store
        clean(fresh)
        assert "gradients" not in fresh.session_state
        assert charts(fresh)["grad_heat_0"]["figure"]["data"][0]["x"] == [0, 5, 10, 15, 20]


def test_a_run_trained_without_recording_says_so_and_shows_no_gradient_charts():
    at = page("training.py")
    at.checkbox(key="train_grad_record").uncheck()
    at = train_one(at)
    clean(at)
    assert "gradients" not in at.session_state
    label = next(iter(at.session_state["trained"]))
    assert f"No gradient-flow records (trained without recording): {label}." in [c.value for c in at.caption]
    assert not [k for k in charts(at) if k.startswith("grad_")]
    assert any("Record gradient flow" in i.value for i in at.info)


def test_the_shipped_runs_are_said_to_have_no_gradient_records():
    at = page("training.py")
    clean(at)
    assert any("no gradient-flow records (none are made up)" in c.value for c in at.caption)
    assert not [k for k in charts(at) if k.startswith("grad_")]


def test_your_runs_are_filtered_by_data_and_where_they_were_made():
    """Issue 21 item 5: 'Your runs' drew every stored run on one set of axes (digits, MNIST-1D and
    Variants-lab runs together) whatever data was chosen. It opens on the form's data; a filter
    shows all data, and one the page the run was made on; the table lists each recipe."""
    from dataclasses import replace

    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.data.data import load_digits
    from analysis.experiments.train import TrainConfig, run_meta
    from analysis.store.checkpoints import Checkpoint

    def run(name: str, data: str, command: str, lr: float) -> Checkpoint:
        meta = run_meta(load_digits(16), TrainConfig(epochs=1, lr=lr), history=[EPOCH], cancelled=False)
        meta = replace(meta, dataset=replace(meta.dataset, name=data), command=command)
        return Checkpoint(get_spec(name), build_model(get_spec(name)), meta, False)

    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    at.session_state["trained"] = {
        "mine": run("cifar_resnet8", "digits16", "", 0.1),
        "grid run": run("cifar_resnet14", "digits16", "python -m analysis grid (abc)", 0.05),
        "sequences": run("resnet1d_8", "mnist1d", "python -m analysis train --data mnist1d", 0.2)}
    at.run()
    clean(at)
    mine = at.dataframe[-1].value
    assert mine["model"].tolist() == ["mine", "grid run"]  # the form's data: digits at 16 px
    assert mine["made on"].tolist() == ["Training page", "grid"]
    assert mine["lr"].tolist() == [0.1, 0.05] and mine["batch"].tolist() == [64, 64]
    curves = {d["name"] for d in charts(at)["training_mine"]["figure"]["data"]}
    assert "sequences" not in curves and {"mine", "grid run"} <= curves
    at.selectbox(key="train_runs_data_digits").select("all data").run()
    assert at.dataframe[-1].value["model"].tolist() == ["mine", "grid run", "sequences"]
    at.pills(key="train_runs_origin").set_value(["Training page"]).run()
    assert at.dataframe[-1].value["model"].tolist() == ["mine"]
    # the curves' view, as TensorBoard's: a log-scale error axis and an exponential moving average
    at.toggle(key="train_runs_log").set_value(True).run()
    at.slider(key="train_runs_smooth").set_value(0.5).run()
    fig = charts(at)["training_mine"]["figure"]
    assert fig["layout"]["yaxis"]["type"] == "log" and fig["layout"]["yaxis"]["title"]["text"] == "error (smoothed)"
    at.pills(key="train_runs_origin").set_value([]).run()
    assert "No run matches these filters." in [i.value for i in at.info]


def test_a_run_of_a_new_origin_is_shown_and_a_switched_off_origin_stays_off():
    """Review of issue 21 item 5: with only grid runs stored, a net trained on the page was hidden from
    'Your runs' (the origin filter kept its old selection)."""
    from dataclasses import replace

    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.data.data import load_digits
    from analysis.experiments.train import TrainConfig, run_meta
    from analysis.store.checkpoints import Checkpoint

    def run(command: str) -> Checkpoint:
        meta = replace(run_meta(load_digits(16), TrainConfig(epochs=1), history=[EPOCH], cancelled=False),
                       command=command)
        return Checkpoint(get_spec("cifar_resnet8"), build_model(get_spec("cifar_resnet8")), meta, False)

    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    at.session_state["trained"] = {"grid run": run("python -m analysis grid (x)")}
    at.run()
    assert at.dataframe[-1].value["model"].tolist() == ["grid run"]
    at.session_state["trained"]["mine"] = run("")  # trained on the page: a new origin
    at.run()
    clean(at)
    assert at.dataframe[-1].value["model"].tolist() == ["grid run", "mine"]
    at.pills(key="train_runs_origin").set_value(["Training page"]).run()  # grid switched off
    at.session_state["trained"]["cli"] = run("python -m analysis train --depth 8")
    at.run()
    assert at.dataframe[-1].value["model"].tolist() == ["mine", "cli"]  # grid stays off, the new one shows


def test_the_degradation_experiment_over_seeds_from_the_recorded_grid(monkeypatch, tmp_path):
    """The recorded grid's residual and plain rows (one recipe, several seeds) under the shipped runs:
    a chart of train and test error against depth with 95 % whiskers and the paired readings."""
    from analysis.core.meta import TrainConfig
    from analysis.run.executor import DataSpec, InProcessExecutor
    from analysis.store.runstore import RunStore
    from analysis.studies import grid as g

    result = g.run_grid(g.Grid(("original", "plain"), (8, 14), (0, 1, 2), TrainConfig(epochs=1),
                               DataSpec("digits", 8)), RunStore(tmp_path / "store"), InProcessExecutor())
    path = tmp_path / "variants_digits.json"
    g.write_results(str(path), result)
    monkeypatch.setenv("RESNET_LENS_VARIANTS_RESULTS", str(path))
    at = page("training.py")
    clean(at)
    assert "The same experiment over seeds, one recipe" in [s.value for s in at.subheader]
    fig = charts(at)["training_degradation_seeds"]["figure"]
    nets, contrasts = g.degradation(result.results)
    plain_test = [d for d in fig["data"] if d["name"] == "plain" and d["xaxis"] == "x2"][0]
    assert plain_test["x"] == ["8", "14"]
    assert plain_test["y"] == pytest.approx(nets.loc[nets["net"] == "plain", "test_error_mean"].tolist())
    plain = nets[nets["net"] == "plain"]
    assert plain_test["error_y"]["array"] == pytest.approx((plain["test_high"] - plain["test_error_mean"]).tolist())
    assert plain_test["error_y"]["arrayminus"] == pytest.approx((plain["test_error_mean"] - plain["test_low"]).tolist())
    # trained now: the clean training error, and the chart says so
    assert fig["layout"]["annotations"][0]["text"] == "Training error (clean, eval mode)"
    shown = next(t.value for t in [*at.table, *at.dataframe] if "comparison" in t.value.columns)
    assert list(shown["reading"]) == list(contrasts["reading"]) and len(shown) == 8
    assert any("3 finished seeds per net and depth, every net trained with one recipe (1 epoch, batch" in c.value
               for c in at.caption)
    assert any("the seeds below share one recipe" in c.value for c in at.caption)
