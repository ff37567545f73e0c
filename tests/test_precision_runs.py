"""The precision choice where runs are made (issue 25, items 1, 3 and 4): a transfer recipe's precision
and layout (fp32 keys untouched, bf16 refused only when it runs), the transfer probe in bf16, a bf16
grid giving the same numbers in this process, a process pool and on Ray, the CLI commands that train,
and the Training, Variants and Transfer pages with bf16 and channels-last picked.

Tests that need bf16 hardware skip where this CPU has no bf16 units; the refusal is tested by naming
flags without them (``RESNET_LENS_CPU_FLAGS``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis.cli.main import main
from analysis.core import machine
from analysis.core.errors import ConfigError
from analysis.core.meta import TrainConfig, precision_name, precision_text, recipe_precision
from analysis.experiments import train
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore, config_key, net_key
from analysis.studies import grid as g
from analysis.studies import transfer as T

ROOT = Path(__file__).resolve().parent.parent
DIGITS_SOURCE = ROOT / "checkpoints" / "transfer" / "digits04_resnet20.pt"
MNIST1D_SOURCE = ROOT / "checkpoints" / "transfer" / "mnist1d04_resnet1d20.pt"
needs_bf16 = pytest.mark.skipif(machine.bf16_unit() is None, reason="this CPU has no bf16 units")
NO_BF16 = "fpu sse2 avx2 fma avx512f"
TINY_DATA = DataSpec(size=8, train_images=128)
BF16 = TrainConfig(epochs=1, batch_size=64, warmup_epochs=0, amp="bf16", channels_last=True)


@pytest.fixture(scope="module")
def digits_source():
    return load_checkpoint(DIGITS_SOURCE)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ the transfer recipe
def test_an_fp32_transfer_recipe_keeps_its_keys_and_bf16_gets_its_own():
    setup = T.Setup(3, 3)
    # the settings every stored fp32 run was keyed by before precision was a choice, written out
    before = {"setup": {"copied": 3, "frozen": 3, "bn": "update", "norm": "source"}, "per_class": 5, "seed": 1,
              "recipe": {"steps": 300, "batch_size": 32, "lr": 0.02, "weight_decay": 1e-4, "augment": True,
                         "device": "cpu"}, "target": "digits16[5,6,7,8,9]", "code": 2}
    fp32 = T.run_settings(setup, 5, 1, T.Recipe(), "digits16[5,6,7,8,9]")
    assert fp32 == before and list(fp32["recipe"]) == list(before["recipe"])
    bf16 = T.run_settings(setup, 5, 1, T.Recipe(precision="bf16"), "digits16[5,6,7,8,9]")
    cl = T.run_settings(setup, 5, 1, T.Recipe(channels_last=True), "digits16[5,6,7,8,9]")
    assert bf16["recipe"] == {**before["recipe"], "precision": "bf16"}
    assert cl["recipe"] == {**before["recipe"], "channels_last": True}
    assert len({config_key(s) for s in (fp32, bf16, cl)}) == 3  # a bf16 run never answers for an fp32 one
    # every run trains with the recipe's arithmetic
    cfg = T.Recipe(steps=10, batch_size=5, precision="bf16", channels_last=True).config(25, 4)
    assert (cfg.amp, cfg.channels_last, cfg.epochs, cfg.seed) == ("bf16", True, 2, 4)
    # 25 images in batches of 32 are one step an epoch: 300 epochs of the default's 300 steps
    assert T.Recipe().config(25, 4).to_dict() == TrainConfig(epochs=300, batch_size=32, lr=0.02, warmup_epochs=0,
                                                             seed=4).to_dict()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"precision": "int8"}, "precision must be one of fp32, bf16, fp16, got 'int8'"),
    ({"precision": "fp16"}, "fp16 is for training on CUDA"),
    ({"channels_last": 1}, "channels_last must be true or false"),
])
def test_bad_transfer_recipes_are_refused_when_made(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        T.Recipe(**kwargs)


def test_a_bf16_transfer_recipe_loads_anywhere_and_is_refused_before_any_run(monkeypatch, digits_source):
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    recipe = T.Recipe(steps=2, precision="bf16")  # made (read from a file) on a CPU without bf16 units
    fits: list[int] = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: fits.append(1))
    plan = T.Plan((T.mode_setup("scratch", 3),), (1,), (0,), recipe)
    with pytest.raises(ConfigError, match=r"bf16 on the CPU needs bf16 matrix units"):
        T.run_plan(digits_source, plan)
    probe = T.Plan((T.mode_setup("scratch", 3),), (1,), (0,), T.Recipe(steps=2), probe_precision="bf16")
    with pytest.raises(ConfigError, match=r"bf16 on the CPU needs bf16 matrix units"):
        T.check_plan(digits_source, probe)
    with pytest.raises(ConfigError, match="the probe's precision must be one of fp32, bf16, got 'fp16'"):
        T.check_plan(digits_source, T.Plan(plan.setups, (1,), (0,), T.Recipe(steps=2), probe_precision="fp16"))
    assert fits == []
    one_d = load_checkpoint(MNIST1D_SOURCE)
    with pytest.raises(ConfigError, match="channels-last is a layout of 2-D images"):
        T.check_plan(one_d, T.Plan(plan.setups, (1,), (0,), T.Recipe(steps=2, channels_last=True)))


@needs_bf16
def test_a_bf16_transfer_plan_trains_and_probes_in_bf16_and_is_stored_apart(tmp_path, digits_source, monkeypatch):
    seen: list[tuple[torch.dtype, bool]] = []  # what each training conv computed in, and its input's layout
    real = torch.nn.Conv2d.forward

    def spy(self, x):
        out = real(self, x)
        if self.training:  # (fit measures its test accuracy in fp32, eval mode: not this recipe's business)
            seen.append((out.dtype, x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous()))
        return out

    store = RunStore(tmp_path)
    setup = T.mode_setup("finetune", 3)
    recipe = T.Recipe(steps=2, precision="bf16", channels_last=True)
    kept: list = []
    with monkeypatch.context() as m:
        m.setattr(torch.nn.Conv2d, "forward", spy)
        r = T.run_plan(digits_source, T.Plan((setup,), (1,), (0,), recipe, probe_precision="bf16"), store=store,
                       keep=kept.append)
    assert r.trained == 1 and seen and {d for d, _ in seen} == {torch.bfloat16}
    assert any(cl for _, cl in seen)  # training fed channels-last batches
    assert r.meta["recipe"]["precision"] == "bf16" and r.meta["recipe"]["channels_last"] is True
    assert r.meta["probe_precision"] == "bf16"
    (sweep,) = store.sweeps_of(net_key(digits_source))
    assert sweep.settings["recipe"]["precision"] == "bf16"
    (ck,) = kept
    assert (ck.meta.recipe.amp, ck.meta.recipe.channels_last) == ("bf16", True)
    assert ck.spec.name.endswith("_seed0_bf16_channels_last")
    # the fp32 comparison of the same setup is not answered by the bf16 run: it trains
    fp32 = T.run_plan(digits_source, T.Plan((setup,), (1,), (0,), T.Recipe(steps=2)), store=store)
    assert (fp32.trained, fp32.reused) == (1, 0) and "probe_precision" not in fp32.meta
    assert "precision" not in fp32.meta["recipe"]


@needs_bf16
def test_the_probe_reads_bf16_features_as_float32_and_fp32_as_it_always_did(digits_source):
    model = digits_source.model
    x = T.digits_target(None, 0, "source", T.source_statistics(digits_source)).x_test[:40]
    # the oracle: each stage's output caught by a hook on a plain forward pass, pooled by hand
    outs: list[torch.Tensor] = []
    hooks = [s.register_forward_hook(lambda m, i, o: outs.append(o.detach().mean(dim=(2, 3))))
             for s in model.stages]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    fp32 = T.stage_features(model, x)
    assert all(torch.equal(a, b) for a, b in zip(fp32, outs, strict=True))  # bit for bit
    bf16 = T.stage_features(model, x, precision="bf16")
    assert all(f.dtype == torch.float32 for f in bf16)
    assert not all(torch.equal(a, b) for a, b in zip(fp32, bf16, strict=True))  # really computed in bf16
    assert all(torch.allclose(a, b, rtol=0.05, atol=0.05 * float(a.abs().max())) for a, b in zip(fp32, bf16,
                                                                                                  strict=True))
    assert model.training is False and not torch.is_autocast_enabled("cpu")


# ------------------------------------------------------------------ a bf16 grid on every executor
def bf16_grid() -> g.Grid:
    # dropout: the run's random draws must match too
    return g.Grid(("original", "dropout_shortcut"), depths=(8,), seeds=(0,), recipe=BF16, data=TINY_DATA)


@pytest.fixture(scope="module")
def in_process_bf16(tmp_path_factory) -> dict:
    """The bf16 grid's weights and per-epoch numbers trained here with one thread (the reference)."""
    store = RunStore(tmp_path_factory.mktemp("here"))
    res = g.run_grid(bf16_grid(), store, InProcessExecutor(threads=1))
    assert list(res.results["status"]) == ["complete", "complete"]
    return g.fingerprints(store, res)


@needs_bf16
def test_a_bf16_grid_gives_the_same_numbers_in_this_process_and_a_pool(tmp_path, in_process_bf16):
    here = in_process_bf16
    pool_store = RunStore(tmp_path / "pool")
    with PoolExecutor(workers=2) as pool:
        res = g.run_grid(bf16_grid(), pool_store, pool)
    assert g.fingerprints(pool_store, res) == here and len(here) == 2  # weights and per-epoch numbers, bit for bit
    ck = load_checkpoint(pool_store.get(res.results["key"][0]).path)
    assert (ck.meta.recipe.amp, ck.meta.recipe.channels_last) == ("bf16", True)
    assert res.grid.definition["recipe"]["amp"] == "bf16"
    # the same grid in fp32 is other runs with other weights
    fp32 = g.Grid(("original",), depths=(8,), seeds=(0,), recipe=TrainConfig(epochs=1, batch_size=64,
                                                                             warmup_epochs=0), data=TINY_DATA)
    (run,) = fp32.runs()
    assert run.key not in here and "amp" not in fp32.definition["recipe"]
    fp32_store = RunStore(tmp_path / "fp32")
    g.run_grid(fp32, fp32_store, InProcessExecutor(threads=1))
    bf16_weights = here[res.results["key"][0]][0]
    assert load_checkpoint(fp32_store.get(run.key).path).meta.content_sha256 != bf16_weights


@needs_bf16
@pytest.mark.xdist_group("ray")
def test_a_bf16_grid_on_ray_gives_the_numbers_of_one_process(tmp_path, in_process_bf16):
    if importlib.util.find_spec("ray") is None:  # (importing it here would start it off the loopback address)
        pytest.skip("Ray is not installed")
    from analysis.run.ray_executor import RayExecutor

    store = RunStore(tmp_path / "ray")
    with RayExecutor(workers=2) as ex:
        res = g.run_grid(bf16_grid(), store, ex)
    assert list(res.results["status"]) == ["complete", "complete"]
    assert g.fingerprints(store, res) == in_process_bf16


def test_a_channels_last_grid_of_1d_nets_is_refused_when_made(monkeypatch):
    monkeypatch.setattr(DataSpec, "load", lambda self: pytest.fail("the data were read"))
    with pytest.raises(ConfigError, match="channels-last is a layout of 2-D images"):
        g.Grid(("original",), depths=(8,), seeds=(0,), recipe=TrainConfig(epochs=1, channels_last=True),
               data=DataSpec("mnist1d"))
    # the same on images is a grid; a bf16 one too, here whether or not this CPU could train it
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    assert g.Grid(("original",), recipe=BF16, data=DataSpec("digits")).recipe.channels_last
    assert DataSpec("mnist1d").dims == 1 and DataSpec("cifar10", path="x").dims == 2


def test_precision_in_words():
    assert precision_text("fp32", False) == "fp32" and precision_text("bf16", True) == "bf16, channels-last"
    assert recipe_precision({"epochs": 3}) == "fp32"  # a recipe from before precision was a choice
    assert recipe_precision({"amp": "bf16", "channels_last": True}) == "bf16, channels-last"
    assert [precision_name(a) for a in ("off", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


# ------------------------------------------------------------------ the CLI commands that train
@needs_bf16
def test_the_grid_cli_trains_in_bf16_and_says_so(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["grid", "--variants", "original", "--depths", "8", "--seeds", "1", "--epochs", "1", "--warmup", "0",
            "--size", "8", "--train-images", "128", "--precision", "bf16", "--channels-last",
            "--store", str(tmp_path / "s"), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "every run trains in bf16, channels-last" in printed.out
    assert "test error % over seeds, every run in bf16, channels-last:" in printed.out
    definition = json.loads(out.read_text())["grid"]["recipe"]
    assert (definition["amp"], definition["channels_last"]) == ("bf16", True)


@pytest.mark.parametrize(("command", "argv", "words"), [
    ("grid", ["--precision", "bf16"], "bf16 on the CPU needs bf16 matrix units"),
    ("grid", ["--data", "mnist1d", "--channels-last"], "channels-last is a layout of 2-D images"),
    ("train", ["--precision", "bf16"], "bf16 on the CPU needs bf16 matrix units"),
    ("train", ["--model", "resnet1d_8", "--data", "mnist1d", "--channels-last"], "channels-last is a layout"),
    ("transfer", ["--precision", "bf16"], "bf16 on the CPU needs bf16 matrix units"),
    ("transfer", ["--probe-precision", "bf16"], "bf16 on the CPU needs bf16 matrix units"),
    ("transfer", ["--source", "mnist1d04_resnet1d20", "--channels-last"], "channels-last is a layout"),
    ("transfer", ["--precision", "fp16"], "fp16 is for training on CUDA"),
])
def test_a_precision_the_cpu_cannot_run_is_one_line_before_any_work(command, argv, words, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    calls: list[int] = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(1))
    out = tmp_path / ("r.pt" if command == "train" else "r.json")
    more = ["--store", str(tmp_path / "s")] if command != "train" else []
    assert main([command, *argv, *more, "--out", str(out)]) == 2
    assert words in error_line(capsys)
    assert calls == [] and not out.exists() and not (tmp_path / "s").exists()


@needs_bf16
def test_the_transfer_and_train_clis_train_in_bf16(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["transfer", "--modes", "scratch", "--labels", "1", "--seeds", "0", "--steps", "2", "--precision",
                 "bf16", "--channels-last", "--probe-precision", "bf16", "--store", str(tmp_path / "s"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 run of 2 SGD steps in bf16, channels-last" in printed
    assert "linear probe on each stage's pooled output of the frozen source, computed in bf16" in printed
    meta = json.loads(out.read_text())["meta"]
    assert meta["recipe"]["precision"] == "bf16" and meta["probe_precision"] == "bf16"
    ck = tmp_path / "n.pt"
    assert main(["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "1", "--precision", "bf16",
                 "--channels-last", "--out", str(ck)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("images/s in bf16, channels-last")
    recipe = load_checkpoint(ck).meta.recipe
    assert (recipe.amp, recipe.channels_last) == ("bf16", True)


# ------------------------------------------------------------------ the pages
def app(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=300).run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_the_training_page_trains_in_bf16_channels_last_and_says_so():
    at = app("training.py")
    clean(at)
    assert at.selectbox(key="train_precision").options == ["fp32", "bf16"]
    at.multiselect(key="train_depths").set_value([8])
    at.multiselect(key="train_kinds").set_value(["plain"])
    at.number_input(key="train_epochs").set_value(1)
    at.select_slider(key="train_size").set_value(8)
    at.selectbox(key="train_precision").set_value("bf16")
    at.checkbox(key="train_channels_last").check().run()
    at.button(key="train_go").click().run()
    clean(at)
    ((label, ck),) = at.session_state["trained"].items()
    assert (ck.meta.recipe.amp, ck.meta.recipe.channels_last) == ("bf16", True)
    assert label == "plain_cifar_resnet8 (1 ep, lr 0.1, seed 0, in bf16, channels-last)"
    runs = at.dataframe[-1].value
    assert list(runs["precision"]) == ["bf16, channels-last"] and list(runs["model"]) == [label]
    # a 1-D net has no channels-last layout: the box is not offered for MNIST-1D
    at.selectbox(key="train_data").set_value("mnist1d").run()
    clean(at)
    assert not [c for c in at.checkbox if c.key == "train_channels_last"]
    assert at.selectbox(key="train_precision").value == "bf16"


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_the_variants_page_runs_a_bf16_grid_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_LENS_VARIANTS_RESULTS", str(tmp_path / "none.json"))
    at = app("variants.py")
    at.multiselect(key="variants_variants").set_value(["original"])
    at.multiselect(key="variants_depths").set_value([8])
    at.select_slider(key="variants_size").set_value(8)
    at.number_input(key="variants_seeds").set_value(1)
    at.number_input(key="variants_epochs").set_value(1)
    at.selectbox(key="variants_precision").set_value("bf16")
    at.checkbox(key="variants_channels_last").check().run()
    at.button(key="variants_run").click().run()
    clean(at)
    result = at.session_state["variants_result"]
    assert result.trained == 1 and result.grid.recipe.amp == "bf16" and result.grid.recipe.channels_last
    from ui import cache

    (run,) = cache.run_store().runs()
    recipe = load_checkpoint(run.path).meta.recipe
    assert (recipe.amp, recipe.channels_last) == ("bf16", True)
    caption = " ".join(c.value for c in at.caption)
    assert "with augmentation, in bf16, channels-last)." in caption
    picks = at.multiselect(key="variants_curves")
    assert [picks.format_func(k) for k in picks.value] == ["yours (bf16, channels-last) · original · depth 8 · seed 0"]
    at.radio(key="variants_data").set_value("mnist1d").run()
    clean(at)
    assert not [c for c in at.checkbox if c.key == "variants_channels_last"]


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_the_transfer_page_runs_a_bf16_comparison_and_probe_and_says_so(monkeypatch, tmp_path, digits_source):
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS", str(tmp_path / "none.json"))
    at = app("transfer.py")
    clean(at)
    at.multiselect(key="transfer_modes").set_value(["scratch"])
    at.multiselect(key="transfer_labels").set_value(["1"])
    at.number_input(key="transfer_steps").set_value(3)
    at.selectbox(key="transfer_precision").set_value("bf16")
    at.checkbox(key="transfer_channels_last").check()
    at.radio(key="transfer_probe_eval_precision").set_value("bf16").run()
    at.button(key="transfer_run").click().run()
    clean(at)
    result, _ = at.session_state["transfer_result"]
    assert result.trained == 1 and result.meta["recipe"]["precision"] == "bf16"
    assert result.meta["recipe"]["channels_last"] is True and result.meta["probe_precision"] == "bf16"
    from ui import cache

    (sweep,) = cache.run_store().sweeps_of(net_key(digits_source))
    assert sweep.settings["recipe"]["precision"] == "bf16" and sweep.settings["recipe"]["channels_last"] is True
    caption = " ".join(c.value for c in at.caption)
    assert "with augmentation, in bf16, channels-last); the head is always new" in caption
    assert "The linear probe computes the source's features in bf16." in caption
    # another checkpoint as the source: the picker says why opened programs are not among them
    at.radio(key="transfer_source").set_value("checkpoint").run()
    clean(at)
    assert any("Opened programs (.pt2, ONNX, modules) are not offered as transfer sources" in c.value
               for c in at.caption)
