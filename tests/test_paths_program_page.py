"""Path ensemble page on programs (issue 24): a shipped residual transformer shows the measurement stored
beside it without measuring (8 residual units, no comparison at initialisation, said why); its plain twin
is one sentence, never a traceback; an uploaded program is measured on the data chosen in the sidebar
and kept in the run store under its file's sha256. Oracles: the stored file, gradient_by_length on the
program itself."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.experiments import evaluation, paths, programlesion
from analysis.store import programs
from analysis.store.runstore import RunStore
from tests import downloads

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_PROGRAM = "Upload a program (.pt2 / .onnx)"
pytestmark = pytest.mark.usefixtures("own_run_store")


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def page(label: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "paths.py"), default_timeout=300).run()
    at.selectbox(key="paths_ckpt").select(label).run()
    clean(at)
    return at


def shown_csv(at: AppTest, files: downloads.Captured) -> pd.DataFrame:
    csv = files.of({b.label: b for b in at.get("download_button")}["Download (CSV)"])
    return pd.read_csv(io.BytesIO(csv.data))


def test_a_shipped_transformer_shows_its_stored_result_without_measuring(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(paths, "gradient_by_length", lambda *a, **k: calls.append(1))  # never measured here
    with downloads.captured() as files:
        at = page("shipped: digits_vit")
        res = shown_csv(at, files)
    assert calls == []
    assert any(c.value.startswith("Stored results: measured once with `tools/make_path_results.py`")
               for c in at.caption)
    assert "No comparison at initialisation: a program file holds its trained weights only, with no initialiser " \
           "to draw fresh ones from." in at.caption.values
    assert not [c for c in at.checkbox if c.key == "paths_init"]
    assert {m.label: m.value for m in at.metric}["Residual units n"] == "8"
    stored = paths.load_results(programs.shipped_programs()["digits_vit"])[("trained", paths.MeasureSettings())]
    assert set(res["net"]) == {"trained"} and res["length"].tolist() == list(range(9))
    assert res["mean"].tolist() == pytest.approx(stored["mean"].tolist(), rel=1e-12)
    assert any("of its 2^8 paths" in c.value for c in at.caption)  # the exact distribution of its 8 units


@pytest.mark.parametrize("twin", ["digits_vit_plain", "mnist1d_transformer_plain"])
def test_a_plain_twin_has_a_single_path_in_one_sentence(twin) -> None:
    at = page(f"shipped: {twin}")
    assert [i.value for i in at.info] == [f"shipped: {twin} is a plain net (no residual units forming one chain): "
                                          "it has a single path; pick a residual net to decompose the gradient."]
    assert not [b for b in at.button if b.key == "paths_run"] and not at.number_input  # nothing to measure


def test_an_uploaded_program_is_measured_and_kept_under_its_files_sha256() -> None:
    blob = programs.shipped_programs()["mnist1d_transformer"].read_bytes()
    at = page(UPLOAD_PROGRAM)
    at.file_uploader(key="paths_program_upload").set_value(("t.pt2", blob, "application/octet-stream")).run()
    clean(at)
    assert at.selectbox(key="paths_data_kind").value == "mnist1d"  # its 1×40 input looks like MNIST-1D
    assert any("normalised with the dataset's own statistics" in c.value for c in at.caption)
    at.number_input(key="paths_samples").set_value(1).run()
    at.number_input(key="paths_batch").set_value(8).run()
    assert at.info and "has not been measured" in at.info[0].value  # nothing stored for an upload
    with downloads.captured() as files:
        at.button(key="paths_run").click().run()
        clean(at)
        res = shown_csv(at, files)
    assert "Measured in this session (1 samples per length, batch 8, seed 0)." in at.caption.values
    chain = programlesion.open_chain(blob, "t.pt2")
    data = evaluation.load(programlesion.choose(chain, "mnist1d"))
    want = paths.gradient_by_length(chain, data.x_test[:8], data.y_test[:8], samples=1)
    assert res["mean"].tolist() == pytest.approx(want["mean"].tolist(), rel=1e-9)
    (stored,) = RunStore().sweeps_of(f"program-sha256:{hashlib.sha256(blob).hexdigest()}")
    assert stored.kind == "paths-trained"
