"""``python -m analysis lesion`` on a torch.export program (.pt2, with its weights) and sharded sweeps of
one: the shipped digits_resnet20 exported gives the CSV numbers of the checkpoint itself; the data must
be named and must fit the program (both shapes said); shards in this process merge into the
single-process table. Oracle: the checkpoint's own sweep, through its blocks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.arch.graphnet import export_module
from analysis.cli.main import main
from analysis.experiments import lesion, programlesion
from analysis.run import shard
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from tests.helpers import error_line, program_file

BATCH = 150  # the program's exported batch and the sweeps': a third of the digits' 450 test images


@pytest.fixture(scope="module")
def r20(tmp_path_factory) -> Path:
    """The shipped digits_resnet20 exported (for a batch of 150) and saved as a .pt2 file."""
    return program_file(tmp_path_factory.mktemp("programs"), "digits_resnet20", BATCH, "r20.pt2")


def test_a_program_gives_the_single_sweep_of_its_checkpoint(r20, tmp_path, capsys) -> None:
    common = ["lesion", "--batch-size", str(BATCH)]
    assert main([*common, "--checkpoint", str(r20), "--data", "digits", "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "r20.pt2: evaluated on digits16 (450 test images), normalised with the dataset's own statistics" in out
    assert main([*common, "--checkpoint", "digits_resnet20", "--out", str(tmp_path / "c.csv")]) == 0
    ours, theirs = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "c.csv")
    assert set(ours["checkpoint"]) == {str(r20)} and set(theirs["checkpoint"]) == {"digits_resnet20"}
    pd.testing.assert_frame_equal(ours.drop(columns="checkpoint"), theirs.drop(columns="checkpoint"))
    assert ours["error"].nunique() > 2  # deletions change the error: the comparison can tell sweeps apart


def test_a_program_needs_its_data_named_before_it_is_read(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")  # never read: the refusal comes first
    assert main(["lesion", "--checkpoint", str(junk), "--out", str(tmp_path / "x.csv")]) == 2
    assert error_line(capsys) == (f"error: {junk} is a program (.pt2 or .onnx), which carries no metadata to pick its data "
                                  "from: give --data digits, mnist1d, cifar10 or imagefolder")
    assert main(["lesion", "--checkpoint", str(junk), "--data", "digits", "--out", str(tmp_path / "x.csv")]) == 2
    assert "not a complete zip archive" in error_line(capsys)
    assert not (tmp_path / "x.csv").exists()


def test_data_that_does_not_fit_the_program_is_refused_naming_both_shapes(r20, tmp_path, capsys) -> None:
    assert main(["lesion", "--checkpoint", str(r20), "--data", "mnist1d", "--out", str(tmp_path / "x.csv")]) == 2
    assert error_line(capsys) == f"error: {r20} takes inputs of shape 1×16×16; the test inputs of mnist1d are 1×40"
    assert main(["lesion", "--checkpoint", str(r20), "--data", "digits", "--size", "8",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert error_line(capsys) == f"error: {r20} takes inputs of shape 1×16×16; the test inputs of digits8 are 1×8×8"
    assert main(["lesion", "--checkpoint", str(r20), "--data", "digits", "--assume", "activation=bn_after_add",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "--assume is for a bare state_dict" in error_line(capsys)
    assert not (tmp_path / "x.csv").exists()


class _NestedDigits(torch.nn.Module):
    """A digits classifier whose second residual unit sits inside the first's branch: h + f(h + g(h))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.f, self.g, self.head = (torch.nn.Linear(256, 16), torch.nn.Linear(16, 16),
                                                torch.nn.Linear(16, 16), torch.nn.Linear(16, 10))

    def forward(self, x):
        h = torch.tanh(self.stem(x.flatten(1)))
        return self.head(h + torch.tanh(self.f(h + torch.tanh(self.g(h)))))


def test_units_that_are_not_one_chain_get_deletions_and_one_sentence_for_the_rest(tmp_path, capsys) -> None:
    path = tmp_path / "nested.pt2"
    torch.export.save(export_module(_NestedDigits().eval(), (torch.zeros(1, 1, 16, 16),)), path)
    out = tmp_path / "x.csv"
    assert main(["lesion", "--checkpoint", str(path), "--data", "digits", "--size", "16", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3  # intact and each of the two units deleted
    assert main(["lesion", "--checkpoint", str(path), "--data", "digits", "--size", "16", "--experiment", "swap",
                 "--out", str(tmp_path / "y.csv")]) == 2
    line = error_line(capsys)
    assert "inside another unit's branch, so the units are not one chain" in line
    assert "deleting units applies to it; reordering, repeating or running units in parallel" in line
    assert not (tmp_path / "y.csv").exists()


@pytest.mark.parametrize("kind", ["single", "k"])
def test_shards_of_a_program_merge_into_the_single_process_table(r20, kind, monkeypatch) -> None:
    """Each shard rebuilds the program from its archive's bytes (ProgramPayload), cut into the same
    units: three shards, merged, give the table run_sweep gives, ==."""
    d = dataset_for(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).meta)
    chain = programlesion.open_chain(r20, r20.name)
    tasks: list[int] = []
    real = shard.lesion_shard

    def counted(task):
        assert isinstance(task.model, shard.ProgramPayload)  # what travels: the archive, not the chain
        tasks.append(len(task.y))
        return real(task)

    monkeypatch.setattr(shard, "lesion_shard", counted)
    merged = shard.sharded_sweep(kind, chain, d.x_test, d.y_test, samples=1, seed=2, batch_size=BATCH, shards=3,
                                 executor="local")
    assert tasks == [150, 150, 150]
    single = lesion.run_sweep(kind, chain, d.x_test, d.y_test, samples=1, seed=2, batch_size=BATCH)
    pd.testing.assert_frame_equal(merged, single)


def test_every_program_chain_travels_with_its_program(r20) -> None:
    """A ProgramChain keeps the program it was cut from (no subclass needed): that is what a shard is sent."""
    from analysis.arch.graphnet import load_program
    from analysis.experiments.chain import ProgramChain

    chain = ProgramChain(load_program(r20, r20.name), name="bare")
    payload = shard.ProgramPayload.of(chain)
    assert payload.name == "bare" and payload.blob == programlesion.program_bytes(chain.program)
    opened = programlesion.open_chain(r20.read_bytes(), "r20")
    assert type(opened) is ProgramChain and shard.ProgramPayload.of(opened).blob[:2] == b"PK"


# ------------------------------------------------------------------ shipped programs, units or layers
def test_a_shipped_program_by_name_sweeps_its_layers_on_its_own_data(tmp_path, capsys) -> None:
    """Oracle: lesion.run_sweep on the shipped ViT cut at blocks.0 .. blocks.3 (LayerChain), on the data
    its metadata names."""
    from analysis.experiments.chain import LayerChain, layer_candidates
    from analysis.store import programs

    out = tmp_path / "r.csv"
    assert main(["lesion", "--checkpoint", "digits_vit", "--experiment", "repeat", "--granularity", "layers",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "digits_vit: evaluated on its own data, digits16 (450 test images, split seed 0)" in printed
    assert "digits_vit: swept over its 4 layers, blocks.0 … blocks.3" in printed
    ep, meta = programs.load_shipped("digits_vit")
    d = programs.dataset_for_program(meta)
    theirs = lesion.run_sweep("repeat", LayerChain(ep, layer_candidates(ep)["blocks"]), d.x_test, d.y_test)
    ours = pd.read_csv(out)
    assert set(ours["checkpoint"]) == {"digits_vit"}
    assert list(ours["units"]) == list(theirs["units"]) == ["none"] + [f"blocks.{i} x2" for i in range(4)]
    assert ours["error"].tolist() == pytest.approx(theirs["error"].tolist(), abs=1e-12)
    assert ours["error"].nunique() > 2  # repeats change the error: the comparison can tell sweeps apart
    worst = theirs.loc[theirs["error"].idxmax(), "units"].removesuffix(" x2")
    assert f"repeating {worst} costs the most" in printed


def test_a_plain_program_is_swept_over_its_layers_and_says_why(tmp_path, capsys) -> None:
    out = tmp_path / "p.csv"
    assert main(["lesion", "--checkpoint", "digits_vit_plain", "--experiment", "swap", "--out", str(out)]) == 0
    assert "digits_vit_plain: swept over its 4 layers, blocks.0 … blocks.3: digits_vit_plain has no residual " \
           "units" in capsys.readouterr().out
    assert list(pd.read_csv(out)["units"]) == ["none", "blocks.0<->blocks.1", "blocks.1<->blocks.2",
                                               "blocks.2<->blocks.3"]
    assert main(["lesion", "--checkpoint", "digits_vit_plain", "--granularity", "units",
                 "--out", str(out.with_name("u.csv"))]) == 2
    assert "digits_vit_plain has no residual units" in error_line(capsys)


@pytest.mark.parametrize(("extra", "said"), [
    (["--size", "8"], "--size goes with --data: digits_vit is evaluated on its own data"),
])
def test_a_shipped_program_refuses_what_does_not_apply(extra, said, tmp_path, capsys) -> None:
    assert main(["lesion", "--checkpoint", "digits_vit", *extra, "--out", str(tmp_path / "x.csv")]) == 2
    assert said in error_line(capsys)
    assert not (tmp_path / "x.csv").exists()


def test_layers_in_shards_equal_layers_in_one_process(tmp_path) -> None:
    """A program cut at its layers travels to the shards with its modules and is cut there the same way."""
    one, three = tmp_path / "one.csv", tmp_path / "three.csv"
    common = ["lesion", "--checkpoint", "digits_vit", "--granularity", "layers", "--experiment", "parallel",
              "--batch-size", "100"]
    assert main([*common, "--out", str(one)]) == 0
    assert main([*common, "--shards", "3", "--out", str(three)]) == 0
    a, b = pd.read_csv(one), pd.read_csv(three)
    assert list(a["units"]) == ["none", "blocks.0 || blocks.1", "blocks.1 || blocks.2", "blocks.2 || blocks.3"]
    pd.testing.assert_frame_equal(a, b)


def test_a_checkpoint_has_no_layers_granularity(tmp_path, capsys) -> None:
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--granularity", "layers",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "--granularity layers cuts a program (.pt2)" in error_line(capsys)


def test_samples_help_names_the_random_sweeps(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["lesion", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "read by the random sweeps k and reorder only; single, swap, repeat and parallel ignore it" in text
    assert "--granularity {units,layers}" in text


class _Outputs(torch.nn.Module):
    """A digits net of two residual units whose output is reshaped as asked: (batch, 1, 10) or (batch,)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.out = out
        self.stem, self.f, self.g, self.head = (torch.nn.Linear(256, 8), torch.nn.Linear(8, 8),
                                                torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))

    def forward(self, x):
        h = self.stem(x.flatten(1))
        h = h + self.f(h)
        y = self.head(h + self.g(h))
        return y[:, None, :] if self.out == "3d" else y.sum(1) if self.out == "1d" else y


@pytest.mark.parametrize(("out", "batch", "said"), [
    ("3d", 2, "returns 2×1×10 for a batch of 2; lesions and paths score a classifier"),
    ("1d", 10, "returns 10 for a batch of 10; lesions and paths score a classifier"),
    ("2d", 0, "was exported for a batch of 0; the engine runs it in pieces of that batch"),
])
@pytest.mark.parametrize("command", ["lesion", "paths"])
def test_a_program_that_is_no_classifier_or_has_no_batch_is_one_sentence(out, batch, said, command, tmp_path,
                                                                         capsys) -> None:
    path = tmp_path / f"{out}.pt2"
    torch.export.save(torch.export.export(_Outputs(out).eval(), (torch.zeros(batch, 1, 16, 16),)), path)
    csv = tmp_path / "x.csv"
    assert main([command, "--checkpoint", str(path), "--data", "digits", "--size", "16", "--out", str(csv)]) == 2
    assert said in error_line(capsys)
    assert not csv.exists()


class _Tokens(torch.nn.Module):
    """Integer inputs (token ids shaped like a digit image), two residual units, ``classes`` outputs."""

    def __init__(self, classes: int = 10, tokens: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tokens = tokens
        self.embed, self.stem = torch.nn.Embedding(17, 8), torch.nn.Linear(256, 8)
        self.f, self.g, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, classes)

    def forward(self, x):
        h = self.embed(x.flatten(1)).mean(1) if self.tokens else self.stem(x.flatten(1))
        h = h + self.f(h)
        return self.head(h + self.g(h))


@pytest.mark.parametrize(("net", "example", "said"), [
    (_Tokens(), torch.zeros(2, 1, 16, 16, dtype=torch.long), "takes int64 inputs; the test inputs of digits16 are "
                                                              "float32"),
    (_Tokens(classes=7, tokens=False), torch.zeros(2, 1, 16, 16), "has 7 outputs per input; digits16 has 10 classes"),
])
def test_data_of_another_kind_or_count_of_classes_is_refused(net, example, said, tmp_path, capsys) -> None:
    path = tmp_path / "n.pt2"
    torch.export.save(torch.export.export(net.eval(), (example,)), path)
    assert main(["lesion", "--checkpoint", str(path), "--data", "digits", "--size", "16",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert said in error_line(capsys)
