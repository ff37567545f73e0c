"""Lesion sweeps stored beside the shipped transformers (tools/make_lesion_results.py,
analysis.experiments.lesionstore): current for the shipped files, equal to a fresh sweep, shown by the
Lesion lab at once without measuring; a damaged file is one sentence, a stale one (other sha256) ignored.
Oracle: lesion.run_sweep on the same chain and data."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.errors import CheckpointError
from analysis.data.data import Dataset
from analysis.experiments import lesion, lesionstore, programlesion
from analysis.store import programs
from analysis.store.runstore import RunStore
from tests import downloads
from tests.test_training_paths_pages import charts

ROOT = Path(__file__).resolve().parent.parent
VIT, VIT_PLAIN = "shipped: digits_vit", "shipped: digits_vit_plain"
pytestmark = pytest.mark.usefixtures("own_run_store")


@pytest.fixture(scope="module")
def vit() -> tuple[programlesion.Cuts, Dataset]:
    """The shipped ViT cut each way, and its own data (what the page and the tool sweep)."""
    ep, meta = programs.load_shipped("digits_vit")
    return programlesion.cut(ep, "digits_vit.pt2"), programs.dataset_for_program(meta)


def units_of(chain: programlesion.ProgramCut) -> list[str]:
    return [b.name for b in lesion.infos_of(chain)]


def test_the_stored_sweeps_of_digits_vit_are_current_and_equal_a_fresh_sweep(vit) -> None:
    file = programs.shipped_programs()["digits_vit"]
    stored = lesionstore.load_results(file)
    assert stored is not None, f"{lesionstore.results_file(file)} is missing or stale: run tools/make_lesion_results.py"
    assert stored.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    cuts, data = vit
    # every kind at both granularities, with the page's defaults
    assert {(s.granularity, s.kind) for s in stored.sweeps} == {(g, k) for g in ("units", "layers")
                                                                 for k in lesion.SWEEP_KINDS}
    assert {s.units for s in stored.sweeps} == {tuple(units_of(c)) for c in cuts.chains.values()}
    for kind, granularity in (("k", "units"), ("single", "layers")):  # a random sweep and a plain one
        chain = cuts.chains[granularity]
        settings = lesion.sweep_settings(kind, data, samples=lesionstore.PAGE_SAMPLES, seed=lesionstore.PAGE_SEED)
        ours = stored.find(granularity, kind, settings, units_of(chain))
        fresh = lesion.run_sweep(kind, chain, data.x_test, data.y_test, samples=lesionstore.PAGE_SAMPLES,
                                 seed=lesionstore.PAGE_SEED)
        assert ours is not None
        pd.testing.assert_frame_equal(ours, fresh, check_exact=True)
        assert len(set(ours["error"])) > 2  # the table can tell one lesion from another
    # other settings, another cut's units: not this sweep
    k = lesion.sweep_settings("k", data, samples=6, seed=0)
    assert stored.find("units", "k", k, units_of(cuts.chains["units"])) is None
    assert stored.find("units", "single", lesion.sweep_settings("single", data), ["blocks.0"]) is None


def test_the_plain_twin_stores_its_layers_without_the_parallel_sweep_it_refuses() -> None:
    stored = lesionstore.load_results(programs.shipped_programs()["digits_vit_plain"])
    assert stored is not None
    assert {(s.granularity, s.kind) for s in stored.sweeps} == {("layers", k) for k in lesion.SWEEP_KINDS
                                                                 if k != "parallel"}


# ------------------------------------------------------------------ damaged and stale files
@pytest.fixture
def copied(tmp_path) -> Path:
    """The shipped ViT and its stored sweeps copied to a folder of their own, to damage at will."""
    src = programs.shipped_programs()["digits_vit"]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    lesionstore.results_file(dst).parent.mkdir()
    shutil.copy(lesionstore.results_file(src), lesionstore.results_file(dst))
    return dst


def rewrite(program: Path, change) -> None:
    f = lesionstore.results_file(program)
    doc = json.loads(f.read_text())
    change(doc)
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage, words", [
    (lambda f: f.write_bytes(b'{"format": "resnet-lens-lesion/1", "sha'), "is not valid JSON"),
    (lambda f: f.write_text("[1, 2]"), "a list, not a record"),
    (lambda f: f.write_text('{"format": "something-else/3"}'), "not stored lesion sweeps of this version"),
])
def test_a_damaged_or_foreign_file_is_one_sentence(copied, damage, words) -> None:
    damage(lesionstore.results_file(copied))
    with pytest.raises(CheckpointError, match=words):
        lesionstore.load_results(copied)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["sweeps"][0]["rows"][1].update(error=1.5), "error = 1.5 is outside"),
    (lambda d: d["sweeps"][0]["rows"][1].update(index=1.0), "index = 1.0 is not of the first row's type"),
    (lambda d: d["sweeps"][0]["rows"][2].pop("stage"), "row 3 has no 'stage'"),
    (lambda d: d["sweeps"][1].update(kind="explode"), "unknown granularity or kind"),
    (lambda d: d.update(sha256=None), "no sha256"),
])
def test_damaged_rows_are_refused_naming_what(copied, change, words) -> None:
    rewrite(copied, change)
    with pytest.raises(CheckpointError, match=words):
        lesionstore.load_results(copied)


def test_a_stale_file_is_ignored_and_a_missing_one_is_none(copied) -> None:
    assert lesionstore.load_results(copied) is not None  # the copy itself is current
    rewrite(copied, lambda d: d.update(sha256="0" * 64))
    assert lesionstore.load_results(copied) is None
    lesionstore.results_file(copied).unlink()
    assert lesionstore.load_results(copied) is None


def test_save_then_load_gives_the_same_tables(copied) -> None:
    stored = lesionstore.load_results(copied)
    assert stored is not None
    lesionstore.save_results(copied, stored.sweeps)
    again = lesionstore.load_results(copied)
    assert again is not None and len(again.sweeps) == len(stored.sweeps)
    for a, b in zip(stored.sweeps, again.sweeps, strict=True):
        pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
        assert a.frame.attrs == b.frame.attrs and (a.kind, a.granularity, a.units) == (b.kind, b.granularity, b.units)


# ------------------------------------------------------------------ the page


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def no_sweeps(monkeypatch) -> list[str]:
    """lesion.run_sweep refused: a page that shows a table did not measure it."""
    calls: list[str] = []

    def refuse(kind: str, *args, **kwargs):
        calls.append(kind)
        raise AssertionError(f"run_sweep({kind!r}) called: the page measured")

    monkeypatch.setattr(lesion, "run_sweep", refuse)
    return calls


def shipped_page(label: str = VIT) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=600).run()
    clean(at)
    at.selectbox(key="lesion_ckpt").select(label).run()
    clean(at)
    return at


def csv_of(at: AppTest, files: downloads.Captured) -> downloads.File:
    return files.of({b.label: b for b in at.get("download_button")}["Download CSV"])


def test_the_page_shows_the_stored_single_sweep_without_running(no_sweeps) -> None:
    stored = lesionstore.load_results(programs.shipped_programs()["digits_vit"])
    assert stored is not None
    (single,) = [s.frame for s in stored.sweeps if (s.granularity, s.kind) == ("units", "single")]
    with downloads.captured() as files:
        at = shipped_page()
        assert at.radio(key="lesion_granularity").value == "units"
        assert "lesion_single_chart" in charts(at)
        csv = csv_of(at, files)
    assert csv.filename == "lesion_single_digits_vit.csv"
    ours = pd.read_csv(io.BytesIO(csv.data), keep_default_na=False)
    assert list(ours["deleted"]) == list(single["deleted"]) and set(ours["net"]) == {VIT}
    assert ours["error"].tolist() == single["error"].tolist()
    (said,) = [c.value for c in at.caption if c.value.startswith("Stored results: measured once with")]
    assert "`tools/make_lesion_results.py` and shipped beside the checkpoint" in said
    assert not [i.value for i in at.info if "press **Run" in i.value]
    assert no_sweeps == []  # nothing was measured ...
    assert RunStore().sweeps_of(vit_key()) == []  # ... nor stored in the run store


def test_the_stored_layer_sweeps_show_the_plain_twin_beside_it(no_sweeps) -> None:
    at = shipped_page()
    at.radio(key="lesion_granularity").set_value("layers").run()
    clean(at)
    at.session_state["lesion_tab"] = "Swapping"
    with downloads.captured() as files:
        at.run()
        clean(at)
        ours = pd.read_csv(io.BytesIO(csv_of(at, files).data), keep_default_na=False)
    assert set(ours["net"]) == {VIT, VIT_PLAIN} and no_sweeps == []
    assert any(c.value.startswith("Stored results: measured once with") for c in at.caption)


def test_run_measures_anew_and_says_so(monkeypatch) -> None:
    calls: list[str] = []
    original = lesion.run_sweep

    def counted(kind: str, *args, **kwargs):
        calls.append(kind)
        return original(kind, *args, **kwargs)

    monkeypatch.setattr(lesion, "run_sweep", counted)
    at = shipped_page()
    assert calls == []
    at.button(key="lesion_run_single").click().run()
    clean(at)
    assert calls == ["single"]
    assert any(c.value.startswith("Results (") and "measured in this session" in c.value for c in at.caption)
    assert [s.kind for s in RunStore().sweeps_of(vit_key())] == ["single"]


def vit_key() -> str:
    return f"program-sha256:{hashlib.sha256(programs.shipped_programs()['digits_vit'].read_bytes()).hexdigest()}"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Iterator[Path]:
    """The stored sweeps read from a copy in ``tmp_path`` (the shipped one stays untouched), the cache emptied."""
    from ui import cache

    folder = tmp_path / "lesion_results"
    folder.mkdir()
    for name in ("digits_vit", "digits_vit_plain"):
        shutil.copy(lesionstore.results_file(programs.shipped_programs()[name]), folder / f"{name}.json")
    monkeypatch.setattr(lesionstore, "results_file", lambda program: folder / f"{Path(program).stem}.json")
    cache._stored_lesion_results.clear()
    yield folder / "digits_vit.json"
    cache._stored_lesion_results.clear()


def test_a_damaged_stored_file_is_one_warning_and_shows_nothing(elsewhere, no_sweeps) -> None:
    elsewhere.write_text('{"format": "resnet-lens-lesion/1", "sha256": [')
    at = shipped_page()
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith(f"The lesion sweeps stored with {VIT} are not shown: ") and "not valid JSON" in warning
    assert "lesion_single_chart" not in charts(at)
    assert any("has no single-block sweep" in i.value for i in at.info) and no_sweeps == []


def test_a_stale_stored_file_is_ignored(elsewhere, no_sweeps) -> None:
    doc = json.loads(elsewhere.read_text())
    doc["sha256"] = "0" * 64
    elsewhere.write_text(json.dumps(doc))
    at = shipped_page()
    assert not at.warning
    assert "lesion_single_chart" not in charts(at)
    assert any("has no single-block sweep" in i.value for i in at.info) and no_sweeps == []
