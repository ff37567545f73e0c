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
from analysis.experiments import lesion, lesionreadings
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.store.runstore import RunStore
from tests import downloads
from tests.test_training_paths_pages import charts

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_PROGRAM = "Upload a program (.pt2 / .onnx)"
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


# ------------------------------------------------------------------ shipped transformers: units or layers
VIT, VIT_PLAIN = "shipped: digits_vit", "shipped: digits_vit_plain"


def shipped_page(label: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=600).run()
    clean(at)
    at.selectbox(key="lesion_ckpt").select(label).run()
    clean(at)
    return at


@pytest.fixture(scope="module")
def vit_layers() -> dict[str, pd.DataFrame]:
    """The oracle: lesion.run_sweep on the shipped ViT and its plain twin cut at blocks.0 .. blocks.3,
    on their own data, for the swap and parallel sweeps (the plain twin refuses every parallel pair)."""
    from analysis.experiments import programlesion
    from analysis.store import programs

    out = {}
    for name in ("digits_vit", "digits_vit_plain"):
        ep, meta = programs.load_shipped(name)
        chain = programlesion.cut(ep, f"{name}.pt2").chains["layers"]
        d = programs.dataset_for_program(meta)
        out[f"{name} swap"] = lesion.run_sweep("swap", chain, d.x_test, d.y_test)
        if name == "digits_vit":
            out[f"{name} parallel"] = lesion.run_sweep("parallel", chain, d.x_test, d.y_test)
    return out


def test_the_shipped_vit_offers_units_and_layers_and_sweeps_its_layers_beside_its_plain_twin(vit_layers) -> None:
    at = shipped_page(VIT)
    radio = at.radio(key="lesion_granularity")
    assert radio.options == ["Units (8)", "Layers (blocks.0 … blocks.3)"] and radio.value == "units"
    assert len(at.dataframe[0].value) == 8  # the units' table: each block's attention and MLP
    # at units, the twin (no units) is not beside it, and the page says where it is
    assert any("plain twin shipped: digits_vit_plain has no residual units" in c.value for c in at.caption)
    radio.set_value("layers").run()
    clean(at)
    assert not any("pick **Layers**" in c.value for c in at.caption)
    assert list(at.dataframe[0].value["layer"]) == [f"blocks.{i}" for i in range(4)]
    with downloads.captured() as files:
        for kind, tab in (("swap", "Swapping"), ("parallel", "Parallel")):
            at.session_state["lesion_tab"] = tab
            at.run()
            clean(at)
            at.button(key=f"lesion_run_{kind}").click().run()
            clean(at)
            fig = charts(at)[f"lesion_{kind}_chart"]["figure"]
            bars = {t["name"]: t for t in fig["data"] if t["type"] == "bar"}
            lines = [t["name"] for t in fig["data"] if t["type"] == "scatter"]
            assert any(name.startswith(f"{VIT}: intact, ") for name in lines)  # the reference line
            # one bar per change run, named by the units it moved (the intact row is the line)
            assert list(bars[f"{VIT}: " + lesionreadings.MOVED[kind]]["x"]) == list(
                vit_layers[f"digits_vit {kind}"]["units"])[1:]
            csv = files.of({b.label: b for b in at.get("download_button")}["Download CSV"])
            assert csv.filename == f"lesion_{kind}_digits_vit_layers.csv"
            ours = pd.read_csv(io.BytesIO(csv.data))
            mine = ours[ours["net"] == VIT]
            assert mine["error"].tolist() == pytest.approx(vit_layers[f"digits_vit {kind}"]["error"].tolist(),
                                                           abs=1e-12)
            assert list(mine["units"]) == list(vit_layers[f"digits_vit {kind}"]["units"])
            readings = [m.value for m in at.markdown if m.value.startswith(f"**{VIT}**: intact")]
            assert len(readings) == 1
            if kind == "swap":  # the twin swept beside it, on the same axes
                twin = ours[ours["net"] == VIT_PLAIN]
                assert twin["error"].tolist() == pytest.approx(vit_layers["digits_vit_plain swap"]["error"].tolist(),
                                                               abs=1e-12)
                assert set(ours["residual"]) == {True, False}
            else:  # the plain twin has no layer that adds onto its input: said under the chart, not run
                assert set(ours["net"]) == {VIT}
                (skipped,) = [c.value for c in at.caption if c.value.startswith("Skipped — ")]
                assert f"{VIT_PLAIN} not run: no two adjacent units of this net can run in parallel" in skipped
    # kept apart from the units' sweeps in the run store: the archive's sha256 and the layers' container
    stored = {s.kind for s in RunStore().sweeps_of(f"{vit_key()}|layers:blocks")}
    assert stored == {"swap", "parallel"} and RunStore().sweeps_of(vit_key()) == []


def vit_key() -> str:
    from analysis.store.programs import shipped_programs

    return f"program-sha256:{hashlib.sha256(shipped_programs()['digits_vit'].read_bytes()).hexdigest()}"


def test_the_plain_twin_offers_layers_only_and_says_why() -> None:
    at = shipped_page(VIT_PLAIN)
    assert "lesion_granularity" not in [r.key for r in at.radio]
    (why,) = [c.value for c in at.caption if c.value.startswith("Layers (blocks.0 … blocks.3) only: ")]
    assert "has no residual units" in why and "lesioned by its layers only" in why
    assert "lesion_run_single" in [b.key for b in at.button]
