"""Training 1-D nets on MNIST-1D (issue 13): the library, the checks that refuse a net the data do not
fit, rebuilding a checkpoint's MNIST-1D from its metadata, the grid's worker, and the command line.

MNIST-1D is generated once per test process (tests/conftest.py shares one dataset cache)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from analysis.arch.specs import get_spec
from analysis.cli.main import main
from analysis.core.errors import ConfigError, DatasetError
from analysis.core.meta import DatasetInfo, RunMeta
from analysis.data.data import Dataset, load_digits, load_mnist1d
from analysis.experiments.train import TrainConfig, evaluate, train, train_checkpoint
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor, Task
from analysis.store.checkpoints import dataset_for, load_checkpoint, save_checkpoint

TINY = TrainConfig(epochs=1, batch_size=256)


@pytest.fixture(scope="module")
def mnist1d() -> Dataset:
    return load_mnist1d()


def subset(data: Dataset, n: int) -> Dataset:
    """The first ``n`` training sequences, the whole test split (as the grid's train_images does)."""
    return dataclasses.replace(data, name=f"{data.name}[:{n}]", x_train=data.x_train[:n], y_train=data.y_train[:n])


@pytest.fixture(scope="module")
def tiny_run(mnist1d):
    """One epoch of resnet1d_8 on 512 training sequences: seconds."""
    return train_checkpoint(get_spec("resnet1d_8"), subset(mnist1d, 512), TINY)


# ------------------------------------------------------------------ training
def test_one_epoch_of_a_1d_net_on_mnist1d(tiny_run):
    ck = tiny_run
    assert ck.spec.dims == 1 and ck.spec.input_shape() == (1, 40) and ck.spec.name == "resnet1d_8"
    assert [h["epoch"] for h in ck.meta.history] == [1] and ck.meta.status == "complete"
    assert ck.meta.dataset == DatasetInfo(name="mnist1d[:512]", train=512, test=1000, classes=10, channels=1,
                                          size=40, split_seed=0, source=load_mnist1d().source)
    assert ck.meta.dataset.embedded == "mnist1d"
    out = ck.model(torch.zeros(3, 1, 40))
    assert out.shape == (3, 10)


def test_same_seed_same_weights_other_seed_other_weights(mnist1d, tiny_run):
    again = train(get_spec("resnet1d_8"), subset(mnist1d, 512), TINY)
    other = train(get_spec("resnet1d_8"), subset(mnist1d, 512), dataclasses.replace(TINY, seed=1))
    ref = tiny_run.model.state_dict()
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in ref.items())
    assert not torch.equal(ref["fc.weight"], other.model.state_dict()["fc.weight"])
    assert again.history[0]["test_acc"] == tiny_run.meta.final["test_acc"]


def test_a_plain_1d_twin_trains(mnist1d):
    r = train(get_spec("resnet1d_8", plain=True), subset(mnist1d, 256), TINY)
    assert not r.model.spec.residual and r.model.spec.dims == 1 and len(r.history) == 1


# ------------------------------------------------------------------ nets the data do not fit
def test_a_2d_net_on_sequences_is_refused_naming_both_shapes(mnist1d, monkeypatch):
    from analysis.experiments import train as train_module

    def never(*args, **kwargs):  # refused before any model is built
        raise AssertionError("a model was built")

    monkeypatch.setattr(train_module, "build_model", never)
    spec = get_spec("cifar_resnet8").replace(in_channels=1)
    with pytest.raises(ConfigError) as e:
        train(spec, mnist1d, TINY)
    assert str(e.value) == (
        "cifar_resnet8 takes 1x32x32 (channels x height x width) inputs, mnist1d holds 1x40 (channels x samples): "
        "a 2-D net cannot train on 1-D data; a 1-D net (resnet1d_<6n+2>, vdcnn...) trains on sequences such as "
        "MNIST-1D")


def test_a_1d_net_on_images_is_refused_naming_both_shapes():
    with pytest.raises(ConfigError) as e:
        train(get_spec("resnet1d_8"), load_digits(8), TINY)
    assert str(e.value) == (
        "resnet1d_8 takes 1x40 (channels x samples) inputs, digits8 holds 1x8x8 (channels x height x width): "
        "a 1-D net cannot train on 2-D data; a 2-D net (cifar_resnet<6n+2>, resnet18...) trains on images such "
        "as the digits")


def test_other_input_channels_are_refused_naming_both_shapes(mnist1d):
    with pytest.raises(ConfigError) as e:
        train(get_spec("resnet1d_8").replace(in_channels=3), mnist1d, TINY)
    assert str(e.value) == ("resnet1d_8 takes 3x40 (channels x samples) inputs, mnist1d holds 1x40 (channels x "
                            "samples): the net takes 3 channels, the data have 1; adapt the spec's in_channels")


def test_other_class_counts_are_refused(mnist1d):
    with pytest.raises(ConfigError, match="resnet1d_8 has 4 outputs, mnist1d has 10 classes"):
        train(get_spec("resnet1d_8").replace(num_classes=4), mnist1d, TINY)


def test_the_sequence_length_is_the_datas():
    """Not a mismatch: training builds the net at the data's length, as it does at the images' size."""
    spec = get_spec("resnet1d_8").replace(input_size=64)
    data = load_mnist1d()
    r = train(spec, subset(data, 64), TINY)
    assert r.model.spec.input_size == 40


# ------------------------------------------------------------------ a checkpoint's data, rebuilt
def test_dataset_for_rebuilds_mnist1d_with_the_stored_statistics(tiny_run, tmp_path):
    path = save_checkpoint(tmp_path / "net.pt", tiny_run.model, tiny_run.meta)
    ck = load_checkpoint(path)
    data = dataset_for(ck.meta)
    assert data.name == "mnist1d" and data.dims == 1 and data.info().test == 1000
    assert data.normalisation == ck.meta.normalisation  # the stored statistics, not recomputed
    # the same test sequences on the same input scale: exactly the accuracy recorded at training time
    assert evaluate(ck.model, data.x_test, data.y_test)["acc"] == ck.meta.final["test_acc"]
    # statistics that differ from the data's own are the ones used
    shifted = dataclasses.replace(ck.meta, normalisation=dataclasses.replace(
        ck.meta.normalisation, mean=(ck.meta.normalisation.mean[0] + 1.0,)))
    moved = dataset_for(shifted)
    assert torch.allclose(moved.x_test, data.x_test - 1.0 / ck.meta.normalisation.std[0], atol=1e-5)


@pytest.mark.parametrize(("name", "kind"), [("digits16", "digits"), ("mnist1d", "mnist1d"),
                                            ("mnist1d[:512]", "mnist1d"), ("mnist1d_png", None), ("cifar10", None),
                                            ("cats", None)])
def test_which_embedded_dataset_a_checkpoint_names(name, kind):
    info = DatasetInfo(name=name, train=1, test=1, classes=10, channels=1, size=40, split_seed=0)
    assert info.embedded == kind
    if kind is None:
        with pytest.raises(DatasetError, match=f"trained on {name}; give its local path"):
            dataset_for(RunMeta(dataset=info))


# ------------------------------------------------------------------ the grid's worker
def mnist1d_task(key: str = "t") -> Task:
    from analysis.store.checkpoints import spec_to_dict

    return Task(key, spec_to_dict(get_spec("resnet1d_8")), TINY.to_dict(), DataSpec("mnist1d", train_images=64))


def test_a_mnist1d_descriptor_has_the_one_length():
    assert DataSpec("mnist1d") == DataSpec("mnist1d", 40) == DataSpec("mnist1d", 16)
    assert DataSpec("mnist1d").to_dict()["size"] == 40 and DataSpec("digits").size == 16
    data = DataSpec("mnist1d", train_images=64).load()
    assert (data.name, len(data.y_train), len(data.y_test), data.dims) == ("mnist1d[:64]", 64, 1000, 1)


@pytest.mark.parametrize("pool", [False, True])
def test_grid_workers_train_on_mnist1d(pool):
    """A worker process loads MNIST-1D by kind, as it loads the digits; both executors give a net."""
    ex = PoolExecutor(1) if pool else InProcessExecutor(threads=1)
    try:
        ex.submit(mnist1d_task())
        (res,) = list(ex.results())
    finally:
        ex.close()
    assert res.status == "complete", res.message
    ck = load_checkpoint(res.checkpoint)
    assert ck.spec.dims == 1 and ck.meta.dataset.name == "mnist1d[:64]" and ck.meta.dataset.test == 1000


# ------------------------------------------------------------------ the command line
def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("args", "said"), [
    (["--model", "cifar_resnet20"], "error: --model cifar_resnet20 is a 2-D net (3x32x32 images) and --data mnist1d "
                                    "holds 1-D sequences (1x40 samples); train a 1-D net on it, e.g. --model "
                                    "resnet1d_20"),
    (["--model", "resnet1d_20", "--size", "16"], "error: --size 16: MNIST-1D sequences have a fixed length of 40 "
                                                 "samples; leave --size out"),
    (["--model", "resnet1d_20", "--data-path", "/tmp"], "error: --data-path is for cifar10 and imagefolder; "
                                                        "MNIST-1D is generated locally and embedded"),
])
def test_cli_refuses_what_mnist1d_cannot_take(tmp_path, capsys, args, said):
    out = tmp_path / "net.pt"
    assert main(["train", "--data", "mnist1d", *args, "--epochs", "1", "--out", str(out)]) == 2
    assert error_line(capsys) == said
    assert not out.exists()


def test_cli_refuses_a_1d_net_on_the_digits(tmp_path, capsys):
    assert main(["train", "--model", "resnet1d_8", "--epochs", "1", "--out", str(tmp_path / "n.pt")]) == 2
    assert error_line(capsys) == ("error: --model resnet1d_8 is a 1-D net (1x40 samples) and --data digits holds "
                                  "2-D images; train it with --data mnist1d, or give a 2-D net such as cifar_resnet20")


def test_cli_trains_on_mnist1d_and_lesions_the_net_on_its_own_data(tmp_path, capsys):
    """End to end on a tiny budget: train writes a 1-D checkpoint whose metadata says MNIST-1D; lesion
    rebuilds MNIST-1D from that metadata (no --data given), evaluates the intact net and deletes each
    of its 3 blocks."""
    out = tmp_path / "net.pt"
    assert main(["train", "--data", "mnist1d", "--model", "resnet1d_8", "--plain", "--epochs", "1",
                 "--batch-size", "512", "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    assert ck.spec.name == "plain_resnet1d_8" and ck.spec.dims == 1 and not ck.spec.residual
    assert ck.meta.dataset.name == "mnist1d" and ck.meta.dataset.train == 4000
    assert ck.meta.command == ("python -m analysis train --data mnist1d --model resnet1d_8 --plain --epochs 1 "
                               f"--batch-size 512 --out {out}")
    assert f"saved {out}" in capsys.readouterr().out
    csv = tmp_path / "lesion.csv"
    assert main(["lesion", "--checkpoint", str(out), "--out", str(csv)]) == 0
    df = pd.read_csv(csv)
    assert df["deleted"].tolist() == ["none", "layer1.0", "layer2.0", "layer3.0"]
    # the intact net on the rebuilt 1,000 test sequences: exactly the error recorded at training time
    intact = df.set_index("deleted").loc["none", "error"]
    assert round(1000 * intact) == 1000 - round(1000 * ck.meta.final["test_acc"])
    assert main(["lesion", "--checkpoint", str(out), "--size", "16", "--out", str(csv)]) == 2
    assert error_line(capsys) == (f"error: --size 16: {out} was trained on MNIST-1D's 40-sample sequences and is "
                                  "evaluated on those; leave --size out")


def test_cli_lesion_refuses_mnist1d_for_a_digits_checkpoint(tmp_path, capsys):
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--data", "mnist1d", "--out",
                 str(tmp_path / "l.csv")]) == 2
    assert error_line(capsys) == ("error: --data mnist1d: digits_resnet20 was trained on digits16, not MNIST-1D; "
                                  "leave --data out to evaluate it on its own data")
