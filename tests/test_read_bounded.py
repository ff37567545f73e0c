"""core.io.read_bounded: what the stored lesion sweeps and the bf16 counts are read with."""

from __future__ import annotations

import pytest

from analysis.core.errors import CheckpointError
from analysis.core.io import read_bounded
from analysis.experiments import precisioneval


def test_a_missing_file_is_none_and_a_small_one_its_bytes(tmp_path):
    assert read_bounded(tmp_path / "none.json", 10, "bf16 counts", CheckpointError) is None
    (tmp_path / "a.json").write_bytes(b"0123456789")
    assert read_bounded(tmp_path / "a.json", 10, "bf16 counts", CheckpointError) == b"0123456789"


def test_a_file_over_the_bound_is_refused_before_it_is_read(tmp_path):
    f = tmp_path / "big.json"
    f.write_bytes(b"x" * 11)
    with pytest.raises(CheckpointError, match=r"big\.json: 11 bytes, more than bf16 counts ever are"):
        read_bounded(f, 10, "bf16 counts", CheckpointError)


def test_a_folder_reads_as_missing(tmp_path):
    folder = tmp_path / "dir.json"
    folder.mkdir()
    (folder / "x").write_text("x")
    # is_file() is False for a folder: it reads as missing, as it did before the helper
    assert read_bounded(folder, 10, "bf16 counts", CheckpointError) is None


def test_the_bf16_counts_loader_keeps_its_bound(tmp_path, monkeypatch):
    f = tmp_path / "bf16_eval.json"
    f.write_bytes(b" " * 50)
    monkeypatch.setattr(precisioneval, "MAX_BYTES", 40)
    with pytest.raises(CheckpointError, match="50 bytes, more than bf16 counts ever are"):
        precisioneval.load_results(f)
