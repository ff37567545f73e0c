"""The committed checkpoints: present, loadable with weights_only, and as accurate as recorded."""

import pytest

from analysis.data.data import MNIST1D_BASELINES
from analysis.experiments.train import evaluate
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

NAMES = ["digits_plain20", "digits_plain56", "digits_resnet20", "digits_resnet56"]
# 1-D nets on MNIST-1D (issue 13): residual and plain twins at two depths, recipe in checkpoints/README.md
MNIST1D_NAMES = ["mnist1d_plain20", "mnist1d_plain56", "mnist1d_resnet20", "mnist1d_resnet56"]


def test_all_shipped():
    assert sorted(shipped_checkpoints()) == sorted(NAMES + MNIST1D_NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recorded_accuracy_reproduces(name):
    c = load_checkpoint(shipped_checkpoints()[name])
    data = dataset_for(c.meta)
    assert c.meta.dataset is not None and c.meta.dataset.split_seed == 0 and data.info().test == 450
    # evaluated with the normalisation stored at training time, equal to the one the split gives
    assert data.normalisation == c.meta.normalisation
    got = evaluate(c.model, data.x_test, data.y_test)
    recorded = c.meta.final["test_acc"]
    # the same computation as at training time; allow one borderline image for a different CPU's
    # float summation order
    assert abs(got["correct"] - round(recorded * got["n"])) <= 1, (got, recorded)
    m = c.meta
    assert m.recipe is not None and m.recipe.epochs == len(m.history) == 40 and m.status == "complete"
    assert m.versions["torch"] and m.train_seconds
    assert c.spec.residual == ("resnet" in name)
    assert c.spec.depth == int(name[-2:])


@pytest.mark.parametrize("name", ["digits_resnet20", "digits_resnet56"])
def test_residual_nets_reach_97_percent(name):
    assert load_checkpoint(shipped_checkpoints()[name]).meta.final["test_acc"] >= 0.97


@pytest.mark.parametrize("name", MNIST1D_NAMES)
def test_mnist1d_nets_reproduce_their_recorded_accuracy(name):
    """Rebuilt from the metadata alone (dataset_for: MNIST-1D, the stored statistics), the net classifies
    as many of the 1,000 test sequences correctly as recorded at the end of training (within one)."""
    c = load_checkpoint(shipped_checkpoints()[name])
    ds = c.meta.dataset
    assert ds is not None and (ds.name, ds.train, ds.test, ds.channels, ds.size) == ("mnist1d", 4000, 1000, 1, 40)
    data = dataset_for(c.meta)
    assert data.dims == 1 and data.normalisation == c.meta.normalisation
    got = evaluate(c.model, data.x_test, data.y_test)
    # within one sequence, as for the digits nets: another CPU's summation order may flip one borderline case
    assert got["n"] == 1000 and abs(got["correct"] - round(1000 * c.meta.final["test_acc"])) <= 1, got
    m = c.meta
    assert m.recipe is not None and m.recipe.epochs == len(m.history) == 30 and m.status == "complete"
    assert (m.recipe.batch_size, m.recipe.lr, m.recipe.schedule, m.recipe.seed) == (64, 0.1, "cosine", 0)
    assert m.command.startswith("python -m analysis train --data mnist1d --model resnet1d_")
    assert c.spec.dims == 1 and c.spec.family == "resnet1d" and c.spec.residual == ("resnet" in name)
    assert c.spec.depth == int(name[-2:]) and c.spec.input_shape() == (1, 40)


@pytest.mark.parametrize("name", ["mnist1d_resnet20", "mnist1d_resnet56"])
def test_the_shipped_1d_residual_nets_beat_the_published_cnn_and_the_human_expert(name):
    """Greydanus (2020): a CNN reaches 94 % on MNIST-1D, a human expert 96 %."""
    acc = load_checkpoint(shipped_checkpoints()[name]).meta.final["test_acc"]
    assert acc > MNIST1D_BASELINES["human"] > MNIST1D_BASELINES["CNN"]


def test_the_deeper_plain_1d_net_degrades():
    """He et al. 2015's degradation in 1-D, with one recipe for all four nets: the 56-layer plain net
    trains worse than the 20-layer one (higher training error) and falls far behind its residual twin."""
    final = {n: load_checkpoint(shipped_checkpoints()[n]).meta.final for n in MNIST1D_NAMES}
    assert final["mnist1d_plain56"]["train_acc"] < final["mnist1d_plain20"]["train_acc"]
    assert final["mnist1d_resnet56"]["test_acc"] - final["mnist1d_plain56"]["test_acc"] > 0.2
