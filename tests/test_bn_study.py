"""BatchNorm measured: batch vs running statistics on a trained net, and the recorded with/without-BN study."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.core.errors import CheckpointError, ConfigError
from analysis.experiments import bnstudy


def tiny(residual: bool = True) -> nn.Module:
    spec = get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8, residual=residual)
    return build_model(spec, seed=2).eval()


def data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def calibrated(x: torch.Tensor) -> tuple[nn.Module, list[int]]:
    """A net whose running statistics are exactly the statistics of ``x`` at every BN layer, as one
    train-mode forward of the whole of ``x`` sees them (momentum 1: running = this batch's; the variance
    unbiased, as BN stores it), and each layer's count of values per channel (N·H·W)."""
    model = tiny()
    counts: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: counts.append(a[0].numel() // a[0].shape[1])) for m in bns(model)]
    for m in bns(model):
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for m in bns(model):
        m.momentum = 0.1
    return model.eval(), counts


def test_batch_statistics_at_the_calibrating_batch_match_the_running_ones():
    x, y = data()
    model, counts = calibrated(x)
    assert counts[:2] == [16 * 8 * 8, 16 * 8 * 8] and counts[-1] == 16 * 2 * 2  # the stem's BN, ..., layer3's
    with torch.no_grad():
        wrong = int((model(x).argmax(1) != y).sum())
    df = bnstudy.batch_size_errors(model, x, y, [16])
    ev, tr = df.iloc[0], df.iloc[1]
    assert (ev["mode"], ev["batch_size"], ev["wrong"], ev["n"], ev["shift"], ev["var_ratio"]) == \
        ("eval (running statistics)", 0, wrong, 16, 0.0, 1.0)
    assert tr["batch_size"] == 16 and tr["shift"] < 1e-5
    # the same batch's biased variance against the stored unbiased one: (n - 1) / n per layer, averaged
    assert tr["var_ratio"] == pytest.approx(sum((n - 1) / n for n in counts) / len(counts), rel=1e-5)


def test_the_measured_net_is_never_changed_and_batch_sizes_do_not_leak_into_each_other():
    x, y = data()
    model, _ = calibrated(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    both = bnstudy.batch_size_errors(model, x, y, [1, 16])
    alone = bnstudy.batch_size_errors(model, x, y, [16])
    # the batch-1 pass must not move the copy's running statistics under the batch-16 one
    assert both.iloc[2].to_dict() == alone.iloc[1].to_dict()
    assert not model.training and all(not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list(both["batch_size"]) == [0, 1, 16] and (both["n"] == 16).all()


def test_batch_sizes_and_inputs_are_checked():
    x, y = data()
    for bad in ([], [0], [2.5], [True]):
        with pytest.raises(ConfigError, match="batch sizes"):
            bnstudy.batch_size_errors(tiny(), x, y, bad)
    with pytest.raises(ConfigError, match="labels"):
        bnstudy.batch_size_errors(tiny(), x, y[:3])


def test_running_statistics_against_the_test_set_per_layer():
    x, _ = data()
    model, counts = calibrated(x)
    model.train()
    df = bnstudy.statistics_gap(model, x, batch_size=5)  # 4 batches: the moments add up over them
    assert model.training and all(not m._forward_pre_hooks for m in model.modules())
    assert list(df["layer"]) == [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert list(df["channels"]) == [m.num_features for m in bns(model)]
    # the stem's BN sees the same input in eval mode as when calibrated (nothing normalised before it)
    first = df.iloc[0]
    assert first["shift"] < 1e-5 and first["var_ratio"] == pytest.approx((counts[0] - 1) / counts[0], rel=1e-6)


def test_without_bn_removes_every_batchnorm_and_nothing_else():
    model = tiny()
    n_bn = sum(p.numel() for m in bns(model) for p in m.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    stripped = bnstudy.without_bn(tiny())
    assert not bns(stripped)
    assert sum(p.numel() for p in stripped.parameters()) == n_all - n_bn
    assert stripped(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_a_seed_starts_every_arm_from_the_same_conv_weights():
    arms = [bnstudy.study_model(8, net, bn, seed=3) for net, bn in bnstudy.ARMS]
    convs = [{k: v for k, v in m.state_dict().items() if "conv" in k} for m in arms]
    assert len(convs[0]) == 7 and all(c.keys() == convs[0].keys() for c in convs)  # stem + 3 blocks x 2
    assert all(torch.equal(c[k], convs[0][k]) for c in convs for k in c)
    assert [len(bns(m)) for m in arms] == [7, 0, 7, 0]  # the stem's BN and two per block, or none
    other = bnstudy.study_model(8, "residual", True, seed=4).state_dict()
    assert not torch.equal(other["conv1.weight"], convs[0]["conv1.weight"])
    with pytest.raises(ConfigError, match="plain"):
        bnstudy.study_model(8, "gated", True, seed=0)


def record(wrong: dict[tuple[int, str, bool], list[int | None]], seeds=(0, 1, 2)) -> dict:
    return {"format": bnstudy.FORMAT, "data": "d", "recipe": {"epochs": 10, "batch_size": 32, "lr": 0.1}, "depths": sorted({k[0] for k in wrong}),
            "seeds": list(seeds), "machine": {},
            "runs": [{"depth": d, "net": n, "bn": b, "seed": s, "wrong": w, "n": 450, "seconds": 1.0}
                     for (d, n, b), ws in wrong.items() for s, w in zip(seeds, ws, strict=True)]}


def test_intervals_and_paired_differences_by_hand(tmp_path):
    rec = record({(8, "residual", True): [9, 12, 15], (8, "residual", False): [18, 18, 27],
                  (8, "plain", True): [9, 9, 9], (8, "plain", False): [450, None, 300]})
    path = bnstudy.save(tmp_path / "bn.json", rec)
    rec = bnstudy.load(path)
    t2 = 4.302652729911275  # t(0.975, 2 degrees of freedom), from a table
    tab = bnstudy.table(rec).set_index(["net", "BatchNorm"])
    r = tab.loc[("residual", "with")]
    # errors 2, 2.667, 3.333 %: mean 2.667 %, s = 0.667 %, half width t2 * s / sqrt(3)
    assert r["error"] == pytest.approx(12 / 450) and r["high"] - r["error"] == pytest.approx(t2 * (3 / 450) / math.sqrt(3))
    assert r[bnstudy.ERROR_COLUMN] == f"2.67 ± {100 * t2 * (3 / 450) / math.sqrt(3):.2f}"
    assert tab.loc[("plain", "with"), bnstudy.ERROR_COLUMN] == "2.00 ± 0.00"
    p = tab.loc[("plain", "without")]
    assert (p["wrong per seed"], p["diverged"]) == ("450, diverged, 300", 1)
    cmp = bnstudy.comparisons(rec).set_index("comparison")
    d = cmp.loc["without BN − with BN, residual"]  # differences 9, 6, 12 images: mean 9, s = 3
    assert d[bnstudy.DIFFERENCE_COLUMN] == f"2.00 ± {100 * t2 * (3 / 450) / math.sqrt(3):.2f}"
    assert d["reading"] == "differs (excludes 0)"
    # 80 % power at 5 %: (t(0.975, 2) + t(0.8, 2)) * s / sqrt(n), s = 3 images; t(0.8, 2) = 1.060660 (table)
    assert d["detectable (test images)"] == pytest.approx(round((t2 + 1.0606601717798212) * 3 / math.sqrt(3), 1))
    assert cmp.loc["without BN − with BN, plain", "seeds"] == 2  # seed 1 diverged without BN
    one = record({(8, n, b): [7] for n, b in bnstudy.ARMS}, seeds=(0,))
    assert set(bnstudy.table(one)[bnstudy.ERROR_COLUMN]) == {"1.56 (one run)"}  # 7 / 450
    assert set(bnstudy.comparisons(one)["reading"]) == {""}


def test_a_record_that_is_not_ours_or_not_whole_is_refused(tmp_path):
    good = record({(8, n, b): [1, 2, 3] for n, b in bnstudy.ARMS})
    cases = {
        "not a BatchNorm study record": {**good, "format": "other"},
        "not every arm": {**good, "runs": good["runs"][:-1]},
        "wrong of": {**good, "runs": [{**good["runs"][0], "wrong": 451}] + good["runs"][1:]},
        "not a complete": {**good, "runs": [{"depth": 8}]},
        "without depths": {**good, "depths": [], "runs": []},
        "recipe or data": {**good, "recipe": {"epochs": 10, "batch_size": 32, "lr": "fast"}},
    }
    for match, rec in cases.items():
        (tmp_path / "r.json").write_text(json.dumps(rec))
        with pytest.raises(CheckpointError, match=match):
            bnstudy.load(tmp_path / "r.json")
    (tmp_path / "r.json").write_text("{")
    with pytest.raises(CheckpointError, match="not a readable"):
        bnstudy.load(tmp_path / "r.json")


def small_digits(n_train: int = 64, n_test: int = 40):
    from analysis.data.data import load_digits

    ds = load_digits(size=8, seed=0)
    return dataclasses.replace(ds, x_train=ds.x_train[:n_train], y_train=ds.y_train[:n_train],
                               x_test=ds.x_test[:n_test], y_test=ds.y_test[:n_test])


def test_one_seed_of_one_arm_trains_or_says_it_diverged(monkeypatch):
    monkeypatch.setitem(bnstudy.RECIPE, "epochs", 1)
    run = bnstudy.seed_run(8, "plain", False, 0, small_digits())
    assert (run["depth"], run["net"], run["bn"], run["seed"], run["n"]) == (8, "plain", False, 0, 40)
    assert isinstance(run["wrong"], int) and 0 <= run["wrong"] <= 40
    from analysis.core.errors import DivergedError
    from analysis.experiments import train

    def blows_up(*args, **kwargs):
        raise DivergedError("the loss became NaN")

    monkeypatch.setattr(train, "fit", blows_up)  # divergence itself is the recipe's; its record is ours
    run = bnstudy.seed_run(8, "plain", False, 0, small_digits())
    assert run["wrong"] is None and run["n"] == 40


def test_the_record_holds_every_arm_its_recipe_and_machine(tmp_path, monkeypatch):
    def fake(depth, net, bn, seed, data):
        return {"depth": depth, "net": net, "bn": bn, "seed": seed, "wrong": seed + 10 * bn, "n": len(data.y_test),
                "seconds": 0.0}

    monkeypatch.setattr(bnstudy, "seed_run", fake)
    said: list[str] = []
    rec = bnstudy.load(bnstudy.save(tmp_path / "bn.json", bnstudy.record([8, 14], [0, 1], progress=said.append)))
    assert said[:5] == ["residual, with BN, 8 layers, seed 0", "residual, with BN, 8 layers, seed 1",
                        "residual, without BN, 8 layers, seed 0", "residual, without BN, 8 layers, seed 1",
                        "plain, with BN, 8 layers, seed 0"] and len(said) == 16
    assert rec["recipe"] == {**rec["recipe"], "epochs": 10, "batch_size": 32, "lr": 0.1, "schedule": "cosine"}
    assert "seed" not in rec["recipe"] and set(rec["machine"]) >= {"cpu", "threads", "torch"}
    assert all(r["n"] == 450 for r in rec["runs"]) and rec["data"] == "digits 8×8 px, split seed 0"
    with pytest.raises(ConfigError, match="distinct"):
        bnstudy.record([8], [0, 0])


def test_the_recorded_study_is_whole():
    from pathlib import Path

    rec = bnstudy.load(Path(__file__).resolve().parent.parent / "results" / "bn_study.json")
    assert rec["seeds"] == [0, 1, 2, 3, 4] and rec["depths"] == [8, 20] and rec["machine"]["threads"] == 1


def test_a_shipped_net_with_batch_statistics():
    """digits_resnet20 on its 450 test images: wrong counts at each batch size (measured once here)."""
    from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    ds = dataset_for(ck.meta)
    df = bnstudy.batch_size_errors(ck.model, ds.x_test, ds.y_test, [8, 128])  # the page adds 1 (164) and 32 (9)
    assert list(df["batch_size"]) == [0, 8, 128]
    assert list(df["wrong"]) == [5, 18, 7]
