"""ONNX models in the lesion and path sweeps (issue 23): an ``.onnx`` file is converted to a torch program
(analysis.arch.onnxnet.onnx_program) and run as a ``.pt2`` is, in the CLI (``lesion``/``paths --checkpoint
x.onnx``) and on the Lesion lab's upload. A free batch axis is exported for the sweeps' batch; any other
free size needs an input shape and is otherwise refused in one sentence. Oracle: the same net exported
with ``torch.export`` (.pt2) through the same command or page, whose sweeps other tests check against
the net itself."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis.cli.main import main
from analysis.core.errors import ConfigError
from analysis.experiments import lesion, programlesion
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from tests import downloads
from tests.helpers import error_line

ROOT = Path(__file__).resolve().parent.parent
BATCH = 50  # the exported batch: the digits' 450 test images run in 9 whole pieces


class Block(nn.Module):
    """One residual unit, x + tanh(W x)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(x))


class TinyResidual(nn.Module):
    """A digits classifier of three residual units on a 24-wide stem, weights from seed 0: small enough
    for a sweep in well under a second, its deletions change the error."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Linear(256, 24)
        self.blocks = nn.Sequential(*(Block(24) for _ in range(3)))
        self.head = nn.Linear(24, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.flatten(1))))


def onnx_file(model: nn.Module, example: torch.Tensor, path: Path, **kw: Any) -> Path:
    """``model`` as torch's TorchScript exporter writes it (opset 17, no extra package)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, opset_version=17, input_names=["x"], **kw)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """TinyResidual as a .pt2 for a batch of 50 and as ONNX: fixed (batch 50), free batch, free height and width."""
    folder = tmp_path_factory.mktemp("onnx_lesion")
    model = TinyResidual().eval()
    x = dataset_for(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).meta).x_test[:BATCH]
    pt2 = folder / "tiny.pt2"
    torch.export.save(torch.export.export(model, (x,)), pt2)
    return {"pt2": pt2, "fixed": onnx_file(model, x, folder / "tiny.onnx"),
            "free batch": onnx_file(model, x, folder / "free_batch.onnx", dynamic_axes={"x": {0: "N"}}),
            "free sizes": onnx_file(model, x, folder / "free_sizes.onnx", dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})}


def sweep(path: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert main(["lesion", "--checkpoint", str(path), "--data", "digits", "--batch-size", str(BATCH), *extra,
                 "--out", str(out)]) == 0
    return pd.read_csv(out).drop(columns="checkpoint")


@pytest.mark.parametrize("which", ["fixed", "free batch"])
def test_an_onnx_file_gives_the_single_sweep_of_its_pt2(files, which, tmp_path, capsys) -> None:
    theirs = sweep(files["pt2"], tmp_path / "p.csv")
    ours = sweep(files[which], tmp_path / "o.csv")
    assert f"{files[which]}: evaluated on digits16 (450 test images)" in capsys.readouterr().out
    assert list(ours["deleted"]) == ["none", "blocks.0", "blocks.1", "blocks.2"]
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["error"].nunique() > 2  # deletions change the error: the comparison can tell sweeps apart


def test_shards_get_the_program_converted_from_an_onnx_file(files, tmp_path) -> None:
    """Each shard is sent the converted program's .pt2 bytes under the .onnx file's name, and reads them as
    a program: three shards merge into the one-process table."""
    one = sweep(files["fixed"], tmp_path / "one.csv")
    assert sweep(files["fixed"], tmp_path / "three.csv", "--shards", "3").equals(one)


def test_a_free_batch_is_exported_for_the_sweeps_batch(files) -> None:
    chain = programlesion.open_chain(files["free batch"], "free_batch.onnx")
    assert chain.batch == programlesion.ONNX_BATCH
    assert programlesion.open_chain(files["fixed"], "tiny.onnx").batch == BATCH  # a fixed batch is the file's


def test_an_onnx_file_needs_its_data_named_before_it_is_read(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")  # never read: the refusals come first
    for command in ("lesion", "paths"):
        assert main([command, "--checkpoint", str(junk), "--out", str(tmp_path / "x.csv")]) == 2
        assert error_line(capsys) == (f"error: {junk} is an ONNX model, which carries no metadata to pick its data "
                                      "from: give --data digits, mnist1d, cifar10 or imagefolder")
    assert main(["lesion", "--checkpoint", str(junk), "--data", "digits", "--plain", "--out", str(tmp_path / "x.csv")]) == 2
    assert error_line(capsys) == (f"error: --plain/--residual is for a bare state_dict; {junk} is an ONNX model, whose "
                                  "graph says what it computes")
    assert main(["lesion", "--checkpoint", str(junk), "--data", "digits", "--out", str(tmp_path / "x.csv")]) == 2
    assert "not an ONNX model" in error_line(capsys)
    assert not (tmp_path / "x.csv").exists()


def test_free_sizes_need_an_input_shape(files, tmp_path, capsys) -> None:
    out = tmp_path / "x.csv"
    assert main(["lesion", "--checkpoint", str(files["free sizes"]), "--data", "digits", "--out", str(out)]) == 2
    assert error_line(capsys) == (f"error: {files['free sizes']}: its input 'x' has no fixed size on axis 2 (H); the "
                                  "sweeps run an ONNX model at one input shape: export it with fixed sizes (a free "
                                  "batch is fine), or give its input shape on the Lesion or Path page")
    assert not out.exists()
    d = dataset_for(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).meta)
    given = programlesion.open_chain(files["free sizes"].read_bytes(), "free_sizes.onnx", input_shape=(BATCH, 1, 16, 16))
    fixed = programlesion.open_chain(files["fixed"], "tiny.onnx")
    pd.testing.assert_frame_equal(lesion.run_sweep("single", given, d.x_test, d.y_test),
                                  lesion.run_sweep("single", fixed, d.x_test, d.y_test))
    with pytest.raises(ConfigError, match="a program's input shape is fixed when it is exported"):
        programlesion.load(files["pt2"], "tiny.pt2", input_shape=(BATCH, 1, 16, 16))


def test_paths_measures_an_onnx_file_as_its_pt2(files, tmp_path) -> None:
    common = ["paths", "--samples", "2", "--batch", "16", "--data", "digits"]
    assert main([*common, "--checkpoint", str(files["fixed"]), "--out", str(tmp_path / "o.csv")]) == 0
    assert main([*common, "--checkpoint", str(files["pt2"]), "--out", str(tmp_path / "p.csv")]) == 0
    ours, theirs = (pd.read_csv(tmp_path / f).drop(columns="checkpoint") for f in ("o.csv", "p.csv"))
    assert list(ours["length"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(ours, theirs)


def test_the_lesion_lab_runs_an_uploaded_onnx_file_as_its_pt2(files) -> None:
    """The page's upload: the .onnx gives the single sweep its .pt2 gives; a free-size file asks for its
    shape in one sentence, and runs once it is typed."""
    d = dataset_for(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).meta)
    theirs = lesion.run_sweep("single", programlesion.open_chain(files["pt2"], "tiny.pt2"), d.x_test, d.y_test)
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=300).run()
    at.selectbox(key="lesion_ckpt").select("Upload a program (.pt2 / .onnx)").run()
    blob = files["free sizes"].read_bytes()
    at.file_uploader(key="lesion_program_upload").set_value(("free_sizes.onnx", blob, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "free_sizes.onnx: its input 'x' has no fixed size on axis 2 (H); the sweeps run an ONNX model at one input "
        "shape: export it with fixed sizes (a free batch is fine), or give its input shape on the Lesion or Path page"]
    at.text_input(key="lesion_program_onnx_shape").input(f"{BATCH}, 1, 16, 16").run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert at.selectbox(key="lesion_data_kind").value == "digits"
    with downloads.captured() as saved:
        at.button(key="lesion_run_single").click().run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        csv = saved.of({b.label: b for b in at.get("download_button")}["Download CSV"])
    ours = pd.read_csv(io.BytesIO(csv.data))
    assert list(ours["deleted"]) == list(theirs["deleted"])
    assert ours["error"].tolist() == theirs["error"].tolist()
    # an .onnx given to the checkpoint uploader instead is read as a program too, not refused as a checkpoint
    at.selectbox(key="lesion_ckpt").select("Upload a checkpoint…").run()
    at.file_uploader(key="lesion_upload").set_value(("tiny.onnx", files["fixed"].read_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert at.selectbox(key="lesion_data_kind").value == "digits"  # a program's data choice: no checkpoint has one
