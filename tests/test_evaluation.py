"""analysis.experiments.evaluation: the one place that decides which data a checkpoint is evaluated on (issue 22,
item 4), for the CLI's lesion and paths and the app's Lesion and Path pages alike."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.cli.main import main
from analysis.core.errors import ConfigError, DatasetError
from analysis.core.meta import DatasetInfo, Normalisation, RunMeta
from analysis.data.data import load_image_folder
from analysis.experiments import evaluation as E
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

NORM = Normalisation((0.5,), (0.25,))


def shipped(name: str):
    return load_checkpoint(shipped_checkpoints()[name])


def bare_2d(channels: int = 1, size: int = 16, classes: int = 10):
    return get_spec("cifar_resnet8").replace(in_channels=channels, input_size=size, num_classes=classes)


def folder(root: Path, classes: int = 2, images: int = 2) -> Path:
    """An ImageFolder of noisy 80×70 colour images (a resize then crop differs from a whole-image resize)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(images):
            Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


# ------------------------------------------------------------------ which data each kind of checkpoint gets
def test_a_digits_checkpoint_gets_its_own_digits_rebuilt_from_its_metadata():
    ck = shipped("digits_resnet20")
    choice = E.choose(ck.spec, ck.meta, seed=7)  # a split seed given is not the stored one: the stored wins
    assert (choice.kind, choice.origin, choice.size, choice.seed) == ("digits", "own", 16, 0)
    assert choice.own == ck.meta.dataset and choice.normalisation == ck.meta.normalisation
    data = E.load(choice)
    want = dataset_for(ck.meta)
    assert data.name == "digits16" and torch.equal(data.x_test, want.x_test) and torch.equal(data.y_test, want.y_test)
    assert E.offered_kinds(ck.spec, ck.meta) == ("digits",)


def test_a_mnist1d_checkpoint_gets_mnist1d_and_a_class_subset_its_classes():
    ck = shipped("mnist1d_resnet20")
    choice = E.choose(ck.spec, ck.meta)
    assert (choice.kind, choice.origin, choice.size) == ("mnist1d", "own", 40)
    subset = RunMeta(dataset=DatasetInfo("digits16[0,1,2,3,4]", 1, 1, 5, 1, 16, 3), normalisation=NORM)
    c = E.choose(bare_2d(classes=5), subset)
    assert (c.kind, c.origin, c.seed, c.own) == ("digits", "own", 3, subset.dataset)
    data = E.load(c)
    assert data.name == "digits16[0,1,2,3,4]" and data.num_classes == 5 and data.mean == [0.5]


@pytest.mark.parametrize("meta", [RunMeta(), RunMeta(dataset=DatasetInfo("waves", 1, 1, 10, 1, 40, 0))])
def test_a_1d_net_without_rebuildable_data_gets_mnist1d(meta):
    spec = get_spec("resnet1d_20")
    choice = E.choose(spec, meta)
    assert (choice.kind, choice.origin, choice.size, choice.path) == ("mnist1d", "default", 40, None)
    assert E.offered_kinds(spec, meta) == ("mnist1d",)
    assert E.choose(spec, meta, kind="mnist1d").origin == "given"
    with pytest.raises(ConfigError, match="is a 1-D net .*evaluated on MNIST-1D"):
        E.choose(spec, meta, kind="cifar10", path="/data")
    with pytest.raises(ConfigError, match="fixed length of 40 samples"):
        E.choose(spec, meta, size=32)


def test_a_bare_1_channel_10_class_net_of_digits_size_gets_the_digits_at_its_size():
    for size in (8, 16, 32):
        choice = E.choose(bare_2d(size=size), RunMeta(normalisation=NORM), seed=5)
        assert (choice.kind, choice.origin, choice.size, choice.seed) == ("digits", "default", size, 5)
    data = E.load(E.choose(bare_2d(size=8), RunMeta()))
    assert data.name == "digits8" and data.size == 8 and len(data.y_test) == 450


@pytest.mark.parametrize("spec,meta,offered", [
    (bare_2d(), RunMeta(), ("digits", "cifar10", "imagefolder")),
    (bare_2d(classes=5), RunMeta(), ("cifar10", "imagefolder", "digits")),
    (bare_2d(channels=3, size=32), RunMeta(), ("cifar10", "imagefolder")),
    (bare_2d(size=224), RunMeta(), ("cifar10", "imagefolder")),
    (bare_2d(size=12), RunMeta(), ("cifar10", "imagefolder")),
    # trained on a local folder: that kind first, and no silent default on the digits
    (bare_2d(), RunMeta(dataset=DatasetInfo("flowers", 1, 1, 10, 1, 16, 0)), ("imagefolder", "cifar10", "digits")),
    (bare_2d(channels=3, size=32), RunMeta(dataset=DatasetInfo("cifar10", 1, 1, 10, 3, 32, 0)),
     ("cifar10", "imagefolder")),
])
def test_the_kinds_offered_default_first(spec, meta, offered):
    assert E.offered_kinds(spec, meta) == offered


@pytest.mark.parametrize("spec,meta,said", [
    (bare_2d(classes=5), RunMeta(), "carries no dataset metadata .*give --data cifar10 or imagefolder and --data-path"),
    (bare_2d(channels=3, size=32), RunMeta(), "carries no dataset metadata"),
    (bare_2d(), RunMeta(dataset=DatasetInfo("flowers", 1, 1, 10, 1, 16, 0)),
     "was trained on flowers, read from a local path; give --data imagefolder or cifar10 and --data-path"),
])
def test_no_default_where_the_data_needs_a_path(spec, meta, said):
    with pytest.raises(DatasetError, match=said):
        E.choose(spec, meta, name="net.pt", options=E.Options("--data", "--data-path"))


def test_kinds_that_cannot_fit_are_refused_before_anything_is_read():
    ck = shipped("digits_resnet20")
    with pytest.raises(ConfigError) as exc:
        E.choose(ck.spec, ck.meta, kind="mnist1d", name="digits_resnet20", options=E.Options("--data"))
    assert str(exc.value) == ("--data mnist1d: digits_resnet20 was trained on digits16, not MNIST-1D; leave --data "
                              "out to evaluate it on its own data")
    with pytest.raises(ConfigError, match="trained on 16 px digits and is evaluated on those"):
        E.choose(ck.spec, ck.meta, size=8)
    with pytest.raises(ConfigError, match="2-D net .*MNIST-1D holds 1-D sequences"):
        E.choose(bare_2d(), RunMeta(), kind="mnist1d")
    with pytest.raises(ConfigError, match="3-channel 32 px images; the digits are 1-channel"):
        E.choose(bare_2d(channels=3, size=32), RunMeta(), kind="digits")
    with pytest.raises(ConfigError, match="applies to ImageFolder trees"):
        E.choose(ck.spec, ck.meta, resize=256)
    with pytest.raises(ConfigError, match="applies to ImageFolder trees"):
        E.choose(bare_2d(channels=3, size=32), RunMeta(), kind="cifar10", path="/d", max_per_class=2)
    with pytest.raises(ConfigError, match="say what it holds"):
        E.choose(bare_2d(), RunMeta(), path="/d")
    with pytest.raises(DatasetError, match="unknown"):
        E.choose(bare_2d(), RunMeta(), kind="svhn")


# ------------------------------------------------------------------ the resize rule
def test_the_resize_is_the_256_over_224_ratio_at_the_nets_size():
    assert E.eval_resize(224) == 256 and E.eval_resize(32) == 37 and E.eval_resize(64) == 73
    r18 = get_spec("resnet18", num_classes=2)
    at_224 = E.choose(r18, RunMeta(), kind="imagefolder", path="/val")
    assert (at_224.eval_transform, at_224.size, at_224.resize) == (True, 224, 256)
    at_32 = E.choose(r18.replace(input_size=32), RunMeta(), kind="imagefolder", path="/val")
    assert (at_32.size, at_32.resize) == (32, 37)
    assert E.choose(r18, RunMeta(), kind="imagefolder", path="/val", size=64).resize == 73
    assert E.choose(r18, RunMeta(), kind="imagefolder", path="/val", resize=300).resize == 300  # given: kept
    # a CIFAR-stem net sees whole images resized, as training here reads folders
    small = E.choose(bare_2d(channels=3, size=32), RunMeta(), kind="imagefolder", path="/val")
    assert (small.eval_transform, small.resize) == (False, None)


def test_an_imagenet_style_folder_is_loaded_with_that_resize_and_crop(tmp_path):
    root = folder(tmp_path / "val")
    r18 = get_spec("resnet18", num_classes=2).replace(input_size=64)
    choice = E.choose(r18, RunMeta(), kind="imagefolder", path=root, max_per_class=1)
    data = E.load(choice)
    want = load_image_folder(root, size=64, resize=73, normalise="imagenet", test_fraction=1.0, max_per_class=1)
    assert torch.equal(data.x_test, want.x_test) and len(data.y_test) == 2 and len(data.y_train) == 0
    other = load_image_folder(root, size=64, resize=256, normalise="imagenet", test_fraction=1.0, max_per_class=1)
    assert not torch.equal(data.x_test, other.x_test)  # the old CLI's fixed 256 gives other pixels


# ------------------------------------------------------------------ missing data
def test_a_missing_dataset_path_is_a_dataset_error(tmp_path):
    spec = bare_2d(channels=3, size=32)
    with pytest.raises(DatasetError, match="CIFAR-10: give --data-path, its local folder"):
        E.choose(spec, RunMeta(), kind="cifar10", options=E.Options(path="--data-path"))
    with pytest.raises(DatasetError, match="an ImageFolder tree: give the dataset path"):
        E.choose(spec, RunMeta(), kind="imagefolder", path="  ")
    for kind in ("cifar10", "imagefolder"):
        choice = E.choose(spec, RunMeta(), kind=kind, path=tmp_path / "nowhere")
        with pytest.raises(DatasetError, match="nowhere: no such directory"):
            E.load(choice)


def test_a_folder_with_the_wrong_number_of_classes_says_how_classes_are_counted(tmp_path):
    r18 = get_spec("resnet18", num_classes=3).replace(input_size=32)
    choice = E.choose(r18, RunMeta(), kind="imagefolder", path=folder(tmp_path / "val"))
    with pytest.raises(DatasetError, match="3 outputs; val has 2 classes .*sorted folder order"):
        E.check_fits(r18, E.load(choice), choice)


# ------------------------------------------------------------------ the CLI follows the same rules
def bare_file(tmp_path: Path, spec) -> Path:
    path = tmp_path / "bare.pt"
    buf = io.BytesIO()
    torch.save(build_model(spec, seed=0).state_dict(), buf)
    path.write_bytes(buf.getvalue())
    return path


def test_the_cli_evaluates_a_bare_1d_net_on_mnist1d_and_says_so(tmp_path, capsys):
    f = bare_file(tmp_path, get_spec("resnet1d_8"))
    out = tmp_path / "l.csv"
    assert main(["lesion", "--checkpoint", str(f), "--residual", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert (f"{f}: its metadata names no dataset that can be rebuilt; evaluated on the test split of MNIST-1D "
            "(Greydanus 2020), the embedded sequences (1,000 test sequences)") in said
    assert out.read_text().splitlines()[1].startswith(f"{f},single,none,")  # the intact net first


def test_the_cli_evaluates_a_bare_digits_net_on_the_digits_and_says_so(tmp_path, capsys):
    f = bare_file(tmp_path, bare_2d(size=8))
    assert main(["lesion", "--checkpoint", str(f), "--residual", "--size", "8", "--out", str(tmp_path / "l.csv")]) == 0
    assert "evaluated on the embedded digits at 8 px (450 test images); give --data and --data-path for other data" \
        in capsys.readouterr().out


def test_the_cli_resizes_an_imagenet_folder_by_the_same_rule(tmp_path, capsys):
    f = bare_file(tmp_path, get_spec("resnet18", num_classes=2).replace(input_size=64))
    root = folder(tmp_path / "val")
    assert main(["lesion", "--checkpoint", str(f), "--data", "imagefolder", "--data-path", str(root), "--size", "64",
                 "--out", str(tmp_path / "l.csv")]) == 0
    assert (f"{f}: evaluated on val (4 test images, shorter side resized to 73 then center-cropped to 64, "
            "ImageNet's statistics)") in capsys.readouterr().out
    assert main(["lesion", "--checkpoint", str(f), "--data", "imagefolder", "--data-path", str(tmp_path / "none"),
                 "--size", "64", "--out", str(tmp_path / "l.csv")]) == 2
    assert "none: no such directory" in capsys.readouterr().err


@pytest.mark.parametrize("extra,said", [
    (["--data-path", "/data"], "--data-path /data: say what it holds with --data cifar10 or imagefolder"),
    (["--data", "digits", "--resize", "37"], "--resize applies to ImageFolder trees; the digits have none"),
    (["--data", "cifar10", "--data-path", "/d", "--max-per-class", "2"], "--max-per-class applies to ImageFolder"),
])
def test_the_cli_refuses_data_options_that_cannot_apply_before_reading_the_checkpoint(tmp_path, capsys, extra, said):
    for command in ("lesion", "paths"):
        rc = main([command, "--checkpoint", str(tmp_path / "missing.pt"), *extra, "--out", str(tmp_path / "o.csv")])
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "missing.pt" not in err, err
