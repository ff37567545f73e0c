"""The checkpoint metadata schema refuses what it does not know instead of dropping it."""

import pytest

from analysis.core.errors import CheckpointError
from analysis.core.meta import RunMeta


def test_unknown_dataset_fields_are_refused():
    d = {"name": "digits16", "train": 1, "test": 1, "classes": 10, "channels": 1, "size": 16, "split_seed": 0}
    assert RunMeta.from_dict({"dataset": d}).dataset.size == 16
    with pytest.raises(CheckpointError, match="unknown DatasetInfo fields in checkpoint metadata: colour"):
        RunMeta.from_dict({"dataset": {**d, "colour": "blue"}})
    with pytest.raises(CheckpointError):
        RunMeta.from_dict({"dataset": ["digits16"]})


@pytest.mark.parametrize("command,origin", [
    ("", "Training page"), ("python -m analysis grid (abc123)", "grid"),
    ("transfer: cifar_resnet20, 1 per class, seed 0", "transfer"),
    ("python -m analysis train --depth 20", "command line")])
def test_a_runs_origin_is_read_from_its_command(command, origin):
    from analysis.core.meta import RunMeta

    assert RunMeta(command=command).origin == origin
