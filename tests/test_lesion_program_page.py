"""Lesion lab with a program uploaded (.pt2, with its weights): the same single sweep as the ResNet it
was exported from, its CSV offered; a file that is no program and data of another shape are said in
one sentence, never as a traceback. Oracle: the ResNet's own sweep (lesion.run_sweep on its blocks)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis.arch.graphnet import export_module
from analysis.experiments import lesion
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.store.runstore import RunStore
from tests import downloads

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_PROGRAM = "Upload a program (.pt2)"
pytestmark = pytest.mark.usefixtures("own_run_store")


@pytest.fixture(scope="module")
def r20() -> tuple[bytes, pd.DataFrame]:
    """digits_resnet20 exported for a batch of 150 (a third of the digits' test set, so the program runs
    whole pieces) as .pt2 bytes, and the single sweep of the ResNet itself."""
    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    d = dataset_for(c.meta)
    buf = io.BytesIO()
    torch.export.save(export_module(c.model, (d.x_test[:150],)), buf)
    return buf.getvalue(), lesion.run_sweep("single", c.model, d.x_test, d.y_test)


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def uploaded(name: str, blob: bytes) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=300).run()
    clean(at)
    at.selectbox(key="lesion_ckpt").select(UPLOAD_PROGRAM).run()
    clean(at)
    at.file_uploader(key="lesion_program_upload").set_value((name, blob, "application/octet-stream")).run()
    clean(at)
    return at


def test_an_uploaded_program_runs_the_single_sweep_of_its_resnet_and_offers_the_csv(r20) -> None:
    blob, theirs = r20
    with downloads.captured() as files:
        at = uploaded("r20.pt2", blob)
        assert at.selectbox(key="lesion_data_kind").value == "digits"  # its 1×16×16 input looks like the digits
        assert any("normalised with the dataset's own statistics" in c.value for c in at.caption)
        at.button(key="lesion_run_single").click().run()
        clean(at)
        csv = files.of({b.label: b for b in at.get("download_button")}["Download CSV"])
    assert csv.filename == "lesion_single_r20.csv"
    ours = pd.read_csv(io.BytesIO(csv.data))
    assert list(ours["deleted"]) == list(theirs["deleted"])
    assert ours["error"].tolist() == pytest.approx(theirs["error"].tolist(), abs=1e-12)
    assert len(set(ours["error"])) > 2  # deletions change the error: the comparison can tell nets apart
    # kept in the run store under the sha256 of the file's bytes
    (stored,) = RunStore().sweeps_of(f"program-sha256:{hashlib.sha256(blob).hexdigest()}")
    assert stored.kind == "single"


def test_a_file_that_is_no_program_is_one_sentence(r20) -> None:
    at = uploaded("junk.pt2", b"not a zip")
    assert [e.value for e in at.error] == ["junk.pt2: not a torch.export program (.pt2): not a complete zip archive"]


def test_data_of_another_shape_is_refused_naming_both(r20) -> None:
    at = uploaded("r20.pt2", r20[0])
    at.selectbox(key="lesion_data_kind").select("mnist1d").run()
    clean(at)
    assert [e.value for e in at.error] == ["uploaded: r20.pt2 takes inputs of shape 1×16×16; the test inputs of "
                                           "mnist1d are 1×40"]
    assert "lesion_run_single" not in [b.key for b in at.button]
