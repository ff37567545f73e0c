"""The checkpoint metadata schema refuses what it does not know instead of dropping it."""

import pytest

from analysis.errors import CheckpointError
from analysis.meta import RunMeta


def test_unknown_dataset_fields_are_refused():
    d = {"name": "digits16", "train": 1, "test": 1, "classes": 10, "channels": 1, "size": 16, "split_seed": 0}
    assert RunMeta.from_dict({"dataset": d}).dataset.size == 16
    with pytest.raises(CheckpointError, match="unknown DatasetInfo fields in checkpoint metadata: colour"):
        RunMeta.from_dict({"dataset": {**d, "colour": "blue"}})
    with pytest.raises(CheckpointError):
        RunMeta.from_dict({"dataset": ["digits16"]})
