"""The committed checkpoints: present, loadable with weights_only, and as accurate as recorded."""

import pytest

from analysis.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.train import evaluate

NAMES = ["digits_plain20", "digits_plain56", "digits_resnet20", "digits_resnet56"]


def test_all_shipped():
    assert sorted(shipped_checkpoints()) == NAMES


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
