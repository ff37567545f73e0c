"""Path ensembles of programs (issue 24) outside the page: ``sharded_gradient_by_length`` on a program cut
into units (its archive's bytes travel to each shard) merges into the single-process table bit for bit;
``python -m analysis paths`` on a ``.pt2`` (its data named, both shapes said when they differ) gives the
numbers of the ResNet it was exported from, and on a shipped program by name measures it on its own
data; the stored results beside the shipped residual transformers are current and equal a fresh
measurement. Oracles: the single-process measurement, the ResNet's own blocks, a fresh measurement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.cli.main import main
from analysis.experiments import paths, programlesion
from analysis.experiments.chain import ProgramChain
from analysis.run import shard
from analysis.store import programs
from tests.helpers import error_line, program_file

DEFAULT = paths.MeasureSettings()
TRANSFORMERS = ("digits_vit", "mnist1d_transformer")


@pytest.fixture(scope="module")
def vit() -> tuple[ProgramChain, torch.Tensor, torch.Tensor]:
    """The shipped digits_vit cut into units (as the page and the CLI open it), and 24 of its own test images."""
    chain = programlesion.open_chain(programs.shipped_programs()["digits_vit"], "digits_vit")
    data = programs.dataset_for_program(programs.load_shipped("digits_vit")[1])
    return chain, data.x_test[:24], data.y_test[:24]


@pytest.fixture(scope="module")
def r20(tmp_path_factory) -> Path:
    """The shipped digits_resnet20 exported for a batch of 16 and saved as a .pt2 file."""
    return program_file(tmp_path_factory.mktemp("programs"), "digits_resnet20", 16, "r20.pt2")


# ------------------------------------------------------------------ shards
def test_shards_of_a_program_merge_into_the_single_process_table(vit, monkeypatch) -> None:
    chain, x, y = vit
    sent: list[object] = []
    real = shard.path_shard

    def spy(task: shard.PathShard) -> torch.Tensor:
        sent.append(task.model)
        return real(task)

    monkeypatch.setattr(shard, "path_shard", spy)
    one = paths.gradient_by_length(chain, x, y, samples=2, seed=1, batch_size=8)
    three = shard.sharded_gradient_by_length(chain, x, y, samples=2, seed=1, batch_size=8, shards=3,
                                             executor="local")
    pd.testing.assert_frame_equal(three, one, check_exact=True)
    assert len(sent) == 3 and all(isinstance(p, shard.ProgramPayload) for p in sent)
    assert sent[0].blob == programlesion.program_bytes(chain.program)  # the archive's bytes, rebuilt in the task
    assert one["mean"].nunique() == len(one)  # lengths differ: the comparison can tell tables apart


def test_shards_refuse_inputs_the_program_does_not_take(vit) -> None:
    chain, x, y = vit
    with pytest.raises(ValueError, match=r"takes inputs of shape"):
        shard.sharded_gradient_by_length(chain, x[:, :, :8], y, samples=1, shards=2)


# ------------------------------------------------------------------ the CLI
def test_a_program_gives_the_numbers_of_the_resnet_it_was_exported_from(r20, tmp_path, capsys) -> None:
    common = ["paths", "--samples", "2", "--batch", "16"]
    assert main([*common, "--checkpoint", str(r20), "--data", "digits", "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "r20.pt2: evaluated on digits16 (450 test images), normalised with the dataset's own statistics" in out
    assert "(of 9 units)" in out
    assert main([*common, "--checkpoint", "digits_resnet20", "--out", str(tmp_path / "c.csv")]) == 0
    ours, theirs = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "c.csv")
    assert set(ours["checkpoint"]) == {str(r20)} and set(theirs["checkpoint"]) == {"digits_resnet20"}
    cols = ["length", "samples", "exhaustive", "paths"]
    pd.testing.assert_frame_equal(ours[cols], theirs[cols])
    assert ours["mean"].tolist() == pytest.approx(theirs["mean"].tolist(), rel=1e-4)


def test_sharded_cli_on_a_program_equals_one_process(r20, tmp_path) -> None:
    common = ["paths", "--checkpoint", str(r20), "--data", "digits", "--samples", "1", "--batch", "24",
              "--batch-size", "8"]
    assert main([*common, "--out", str(tmp_path / "one.csv")]) == 0
    assert main([*common, "--shards", "3", "--out", str(tmp_path / "three.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "three.csv"), pd.read_csv(tmp_path / "one.csv"),
                                  check_exact=True)


def test_a_shipped_program_by_name_is_measured_on_its_own_data(vit, tmp_path, capsys) -> None:
    chain, _, _ = vit
    data = programs.dataset_for_program(programs.load_shipped("digits_vit")[1])
    assert main(["paths", "--checkpoint", "digits_vit", "--samples", "2", "--batch", "16",
                 "--out", str(tmp_path / "v.csv")]) == 0
    out = capsys.readouterr().out
    assert "digits_vit: measured on its own data, digits16 (450 test inputs)" in out
    assert "(of 8 units)" in out
    ours = pd.read_csv(tmp_path / "v.csv")
    assert set(ours["checkpoint"]) == {"digits_vit"} and set(ours["net"]) == {"trained"}
    want = paths.gradient_by_length(chain, data.x_test[:16], data.y_test[:16], samples=2)
    assert ours["length"].tolist() == list(range(9))
    assert ours["mean"].tolist() == pytest.approx(want["mean"].tolist(), rel=1e-9)
    # --data names other data: used, and checked to fit, as for a checkpoint
    assert main(["paths", "--checkpoint", "digits_vit", "--data", "mnist1d", "--out", str(tmp_path / "m.csv")]) == 2
    assert error_line(capsys) == "error: digits_vit takes inputs of shape 1×16×16; the test inputs of mnist1d are 1×40"


def test_a_bare_program_needs_its_data_named_and_fitting(tmp_path, capsys) -> None:
    copy = tmp_path / "t.pt2"
    shutil.copy(programs.shipped_programs()["mnist1d_transformer"], copy)  # a file, not a shipped name
    out = str(tmp_path / "x.csv")
    assert main(["paths", "--checkpoint", str(copy), "--out", out]) == 2
    assert error_line(capsys) == (f"error: {copy} is a program (.pt2 or .onnx), which carries no metadata to pick its data "
                                  "from: give --data digits, mnist1d, cifar10 or imagefolder")
    assert main(["paths", "--checkpoint", str(copy), "--data", "digits", "--out", out]) == 2
    assert error_line(capsys) == (f"error: {copy} takes inputs of shape 1×40; the test inputs of digits16 are "
                                  "1×16×16")
    assert not Path(out).exists()
    assert main(["paths", "--checkpoint", str(copy), "--data", "mnist1d", "--samples", "1", "--batch", "8",
                 "--out", out]) == 0
    assert len(pd.read_csv(out)) == 9


def test_a_plain_program_and_initialisation_are_refused_in_one_sentence(tmp_path, capsys) -> None:
    out = str(tmp_path / "x.csv")
    assert main(["paths", "--checkpoint", "digits_vit_plain", "--out", out]) == 2
    assert error_line(capsys) == ("error: digits_vit_plain is a plain net: it has no residual unit, so a single "
                                  "path; the path decomposition needs shortcuts")
    assert main(["paths", "--checkpoint", "digits_vit", "--net", "initialisation", "--out", out]) == 2
    assert "holds its trained weights only" in error_line(capsys)
    assert not Path(out).exists()


# ------------------------------------------------------------------ stored results
def test_the_shipped_residual_transformers_have_current_stored_results() -> None:
    shipped = programs.shipped_programs()
    residual = {name for name, f in shipped.items() if programs.load_shipped(f)[1].residual}
    assert residual == set(TRANSFORMERS)
    for name in TRANSFORMERS:
        f = shipped[name]
        doc = json.loads(paths.results_file(f).read_text())
        assert doc["checkpoint"] == f"{name}.pt2" and doc["sha256"] == paths.file_digest(f), f"{name}: stale"
        stored = paths.load_results(f)
        assert set(stored) == {("trained", DEFAULT)}  # a program file holds no initialiser
        assert stored[("trained", DEFAULT)]["length"].tolist() == list(range(9))  # 8 units: 2 per block
    for name in set(shipped) - residual:
        assert not paths.results_file(shipped[name]).exists()


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_stored_results_equal_a_fresh_measurement(name) -> None:
    f = programs.shipped_programs()[name]
    ep, meta = programs.load_shipped(f)
    data = programs.dataset_for_program(meta)
    fresh = paths.measure(ProgramChain(ep, name=name), data.x_test, data.y_test, DEFAULT)
    pd.testing.assert_frame_equal(paths.load_results(f)[("trained", DEFAULT)], fresh, rtol=1e-4)


def test_the_tool_stores_a_program_beside_it(tmp_path) -> None:
    from tools.make_path_results import store

    f = tmp_path / "vit.pt2"
    shutil.copy(programs.shipped_programs()["digits_vit"], f)
    ep, meta = programs.load_shipped(f)
    s = paths.MeasureSettings(samples=1, batch=8, seed=0)
    store("vit", f, programs.dataset_for_program(meta), {"trained": ProgramChain(ep, name="vit")}, s)
    back = paths.load_results(f)
    assert list(back) == [("trained", s)]
    data = programs.dataset_for_program(meta)
    want = paths.gradient_by_length(ProgramChain(ep), data.x_test[:8], data.y_test[:8], samples=1)
    assert back[("trained", s)]["mean"].tolist() == pytest.approx(want["mean"].tolist(), rel=1e-12)
