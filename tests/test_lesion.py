"""Lesion engine: identical to the straightforward loop, right semantics, residual vs plain."""

import dataclasses
import random

import pytest
import torch

from analysis.arch.models import build_model
from analysis.arch.specs import custom_spec
from analysis.cli.main import main
from analysis.core.errors import LensError
from analysis.experiments import lesion
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints


@pytest.fixture(scope="module")
def shipped():
    out = {}
    for name in ("digits_resnet20", "digits_plain20", "digits_resnet56", "digits_plain56"):
        c = load_checkpoint(shipped_checkpoints()[name])
        out[name] = (c, dataset_for(c.meta))
    return out


def random_sequences(n, infos, count=12, seed=0):
    rng = random.Random(seed)
    seqs = [lesion.identity_sequence(n)]
    for _ in range(count):
        seqs.append(lesion.deletion(n, rng.sample(range(n), rng.randint(1, n))))
    pairs = lesion.swappable_pairs(infos)
    for _ in range(count):
        order = list(range(n))
        for _ in range(rng.randint(1, 4)):
            a, b = rng.choice(pairs)
            pa, pb = order.index(a), order.index(b)
            order[pa], order[pb] = order[pb], order[pa]
        seqs.append([(i, rng.random() > 0.3) for i in order])
    return seqs


@pytest.mark.parametrize("name", ["digits_resnet20", "digits_plain20"])
def test_prefix_reuse_is_identical_to_straightforward_loop(shipped, name):
    c, d = shipped[name]
    infos = lesion.block_infos(c.model)
    seqs = random_sequences(len(infos), infos)
    fast = lesion.predict_sequences(c.model, d.x_test, seqs, batch_size=128)
    slow = lesion.predict_sequences(c.model, d.x_test, seqs, batch_size=128, reuse_prefix=False)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("kw", [dict(shortcut="B"), dict(shortcut="C"), dict(preact=True),
                                dict(block="bottleneck")])
def test_engine_on_other_variants(kw):
    base = dict(block="basic", layers=(3, 3, 3), widths=(8, 16, 32), stem="cifar", input_size=16, num_classes=5)
    base.update(kw)
    torch.manual_seed(0)
    model = build_model(custom_spec(**base))
    x = torch.randn(40, 3, 16, 16)
    infos = lesion.block_infos(model)
    seqs = random_sequences(len(infos), infos, count=6)
    assert torch.equal(lesion.predict_sequences(model, x, seqs, batch_size=16),
                       lesion.predict_sequences(model, x, seqs, batch_size=16, reuse_prefix=False))


def test_deleted_block_is_its_shortcut():
    torch.manual_seed(0)
    model = build_model(custom_spec(block="basic", layers=(1, 1), widths=(16, 32), stem="cifar", input_size=8,
                                    shortcut="B")).eval()
    infos = lesion.block_infos(model)
    assert [b.shortcut for b in infos] == ["identity", "projection"]
    x = torch.randn(2, 16, 8, 8)
    b0, b1 = (b for _, b in model.blocks())
    assert torch.equal(b0(x, keep_residual=False), torch.relu(x))
    with torch.no_grad():
        assert torch.equal(b1(x, keep_residual=False), torch.relu(b1.downsample(x)))


def test_nothing_deleted_gives_recorded_accuracy(shipped):
    for c, d in shipped.values():
        df = lesion.single_sweep(c.model, d.x_test, d.y_test)
        intact = df.loc[df["index"] == -1, "error"].item()
        assert abs((1 - intact) - c.meta.final["test_acc"]) <= 1 / len(d.y_test) + 1e-9


def test_residual_degrades_smoothly_plain_collapses(shipped):
    res, d = shipped["digits_resnet56"]
    plain, _ = shipped["digits_plain56"]
    r = lesion.single_sweep(res.model, d.x_test, d.y_test)
    p = lesion.single_sweep(plain.model, d.x_test, d.y_test)
    r_del, p_del = r[r["index"] >= 0], p[p["index"] >= 0]
    chance = 0.9
    # Veit et al.: most single deletions barely matter for the residual net
    assert (r_del["error"] < 0.1).mean() >= 0.8
    # the plain net is near chance after deleting almost any block
    assert (p_del["error"] > chance - 0.2).mean() >= 0.8
    ks = lesion.summarise(lesion.k_sweep(res.model, d.x_test, d.y_test, ks=[0, 1, 2, 4, 8], samples=3))
    # error rises with the number of blocks deleted
    assert ks["mean"].iloc[0] <= ks["mean"].iloc[1] < ks["mean"].iloc[-1]


def test_sequences_must_keep_shapes(shipped):
    c, _ = shipped["digits_resnet20"]
    infos = lesion.block_infos(c.model)
    with pytest.raises(LensError, match="shapes differ"):
        lesion.check_sequence([(3, True), (1, True), (2, True), (0, True)] + [(i, True) for i in range(4, 9)], infos)
    pairs = lesion.swappable_pairs(infos)
    assert all(infos[a].stage == infos[b].stage and not infos[a].downsample for a, b in pairs)
    assert (1, 2) in pairs and (0, 1) in pairs and (3, 4) not in pairs


def test_sweeps_shapes_and_mode_restored(shipped):
    c, d = shipped["digits_resnet20"]
    c.model.train()
    k = lesion.k_sweep(c.model, d.x_test[:64], d.y_test[:64], samples=2)
    assert c.model.training
    c.model.eval()
    assert set(k["k"]) == set(range(0, 8))
    r = lesion.reorder_sweep(c.model, d.x_test[:64], d.y_test[:64], ks=[0, 1, 2], samples=2)
    assert list(r["k"]) == [0, 1, 1, 2, 2]
    cm = lesion.confusion(d.y_test, d.y_test, 10)
    assert int(cm.trace()) == len(d.y_test)


def test_cli_lesion(tmp_path, capsys):
    out = tmp_path / "single.csv"
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--experiment", "single", "--out", str(out)]) == 0
    text = out.read_text().splitlines()
    assert text[0].startswith("checkpoint,experiment,deleted") and len(text) == 1 + 10
    out2 = tmp_path / "k.csv"
    assert main(["lesion", "--checkpoint", "digits_plain20", "--experiment", "k", "--samples", "1",
                 "--out", str(out2)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["lesion", "--checkpoint", "missing.pt", "--out", str(out2)]) == 2


def test_cli_lesion_imagenet_style_checkpoint_on_image_folder(tmp_path):
    """A torchvision-layout ImageNet ResNet (bare state_dict) on an ImageFolder: ImageNet
    preprocessing (resize, center crop, ImageNet mean/std), eval-only split."""
    from PIL import Image

    from analysis.arch.specs import get_spec

    spec = get_spec("resnet18", num_classes=2)
    torch.manual_seed(0)
    ckpt = tmp_path / "r18.pth"
    torch.save(build_model(spec).state_dict(), ckpt)
    for c, colour in (("n01", (200, 30, 30)), ("n02", (30, 30, 200))):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80 + i, 70), colour).save(tmp_path / "val" / c / f"{i}.jpg")
    out = tmp_path / "r18.csv"
    assert main(["lesion", "--checkpoint", str(ckpt), "--data", "imagefolder", "--data-path",
                 str(tmp_path / "val"), "--size", "64", "--resize", "72", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 1 + 8
    three = tmp_path / "val3"
    for c in ("a", "b", "c"):
        (three / c).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(three / c / "0.png")
    assert main(["lesion", "--checkpoint", str(ckpt), "--data", "imagefolder", "--data-path", str(three),
                 "--size", "64", "--out", str(out)]) == 2


def reading_frame(errors, down=None, intact=0.01):
    """A single sweep's table by hand: row -1 intact, then block b<i> with its error."""
    import pandas as pd

    down = down or [False] * len(errors)
    rows = [{"deleted": "none", "index": -1, "downsample": False, "error": intact}]
    rows += [{"deleted": f"b{i}", "index": i, "downsample": d, "error": e}
             for i, (e, d) in enumerate(zip(errors, down, strict=True))]
    return pd.DataFrame(rows)


def test_single_reading_is_computed_from_the_numbers():
    def residual(errors, down):
        return lesion.single_reading(reading_frame(errors, down), residual=True, num_classes=10)

    text = residual([0.02, 0.5, 0.03], [False, True, False])
    assert "worst: b1, 50.0 %" in text and "is a downsampling block, as Veit et al. report" in text
    text = residual([0.77, 0.04, 0.02], [False, True, False])
    assert "worst: b0, 77.0 %" in text and "a non-downsampling block hurts most here" in text
    assert "median of 4.0 %" in text and "intact 1.0 %" in text
    assert "chance" not in text


def test_a_plain_nets_reading_compares_with_chance_not_with_downsampling():
    def plain(errors, down=None, classes=10):
        return lesion.single_reading(reading_frame(errors, down), residual=False, num_classes=classes)

    # every deletion within 10 pp of chance (90 %) or above it; a non-downsampling block is worst
    assert plain([0.85, 0.9, 0.97], [False, True, False]) == (
        "intact 1.0 %; deleting one block gives a median of 90.0 % (worst: b2, 97.0 %); every deletion leaves it "
        "at or near chance (90.0 %; within 10 pp or above), as Veit et al. report for plain nets.")
    # the margin's edge: 80 % is near, 79.9 % is not; then most, not every
    assert "every deletion" in plain([0.8, 0.9])
    assert plain([0.799, 0.9, 0.95]) == (
        "intact 1.0 %; deleting one block gives a median of 90.0 % (worst: b2, 95.0 %); 2 of 3 deletions leave it "
        "at or near chance (90.0 %; within 10 pp or above), as Veit et al. report for plain nets; the mildest, b0, "
        "gives 79.9 %.")
    assert plain([0.1, 0.2, 0.9]) == (
        "intact 1.0 %; deleting one block gives a median of 20.0 % (worst: b2, 90.0 %); only 1 of 3 deletions leave "
        "it at or near chance (90.0 %; within 10 pp or above): unlike Veit et al.'s plain nets, most deletions keep "
        "it better than chance; the mildest, b0, gives 10.0 %.")
    # chance follows the number of classes: 50 % for two
    assert "every deletion leaves it at or near chance (50.0 %;" in plain([0.45, 0.5], classes=2)


def test_the_shipped_plain20_reading(shipped):
    ck, data = shipped["digits_plain20"]
    df = lesion.run_sweep("single", ck.model, data.x_test, data.y_test)
    assert lesion.single_reading(df, residual=False, num_classes=data.num_classes) == (
        "intact 1.3 %; deleting one block gives a median of 90.2 % (worst: layer3.2, 99.8 %); 7 of 9 deletions "
        "leave it at or near chance (90.0 %; within 10 pp or above), as Veit et al. report for plain nets; the "
        "mildest, layer1.1, gives 59.6 %.")


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": -1}, {"batch_size": 1.5}, {"samples": 0, "kind": "k"},
                                {"samples": -1, "kind": "reorder"}, {"seed": -1, "kind": "k"}, {"seed": 2**63, "kind": "k"},
                                {"kind": "double"}, {"batch_size": True}])
def test_sweep_options_are_checked_before_any_work(kw):
    kind = kw.pop("kind", "single")
    with pytest.raises(LensError):
        lesion.check_sweep_options(kind, **kw)
    lesion.check_sweep_options("single", samples=0)  # samples and seed mean nothing to the single sweep (the page passes 0)


def test_run_sweep_honours_its_seed_and_checks_indexes(shipped):
    c, d = shipped["digits_resnet20"]
    x, y = d.x_test[:64], d.y_test[:64]
    a = lesion.run_sweep("k", c.model, x, y, samples=2, seed=0)
    b = lesion.run_sweep("k", c.model, x, y, samples=2, seed=0)
    other = lesion.run_sweep("k", c.model, x, y, samples=2, seed=1)
    assert a["deleted"].tolist() == b["deleted"].tolist() != other["deleted"].tolist()
    n = len(lesion.block_infos(c.model))
    with pytest.raises(LensError, match="out of range"):
        lesion.predict_sequences(c.model, x, [[(-1, True)] + [(i, True) for i in range(1, n)]])


def test_sweep_settings_name_the_data_and_the_sweeps_own_options():
    """The run store's key besides the weights: what the test data is, and samples/seed where they count."""
    from analysis.data.data import load_digits

    d16, d8 = load_digits(16), load_digits(8)
    k = lesion.sweep_settings("k", d16, samples=3, seed=7)
    assert k == {"dataset": "digits16", "split_seed": 0, "test_images": 450, "mean": d16.mean, "std": d16.std,
                 "samples": 3, "seed": 7}
    assert lesion.sweep_settings("single", d16, samples=3, seed=7) == {**k, "samples": 0, "seed": 0}
    assert lesion.sweep_settings("k", d8, samples=3, seed=7)["dataset"] == "digits8"
    fewer = dataclasses.replace(d16, x_test=d16.x_test[:100], y_test=d16.y_test[:100])
    assert lesion.sweep_settings("k", fewer, samples=3, seed=7)["test_images"] == 100
    assert lesion.describe_settings("k", k) == "3 samples per k, seed 7, on 450 test images of digits16"
    assert lesion.describe_settings("reorder", k).startswith("3 samples per number of swaps")
    assert lesion.describe_settings("single", k) == "450 test images of digits16"
    with pytest.raises(LensError, match="samples per k"):
        lesion.sweep_settings("k", d16, samples=0)
