"""The Layers-as-painters page: the shipped record shown with its numbers recomputed here from the
per-seed counts (an oracle that does not call the page's own table code), the data switch, downloads,
and a damaged record as one message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "painters.py")
RECORD = ROOT / "results" / "painters.json"


def page(monkeypatch, record: Path | None = None) -> AppTest:
    if record is not None:
        monkeypatch.setenv("RESNET_LENS_PAINTERS_RESULTS", str(record))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, column: str):
    """The shown table that has ``column`` (long text makes a table HTML instead of a grid)."""
    (found,) = [t.value for t in (*at.dataframe, *at.table) if column in t.value.columns]
    return found


def interval(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    h = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return m, m - h, m + h


def test_the_shipped_record_shows_every_net_with_intervals(monkeypatch):
    rec = json.loads(RECORD.read_text())
    assert len(rec["seeds"]) >= 5  # evidence, not one run
    at = page(monkeypatch)
    shown = frame(at, "condition")
    digits = {k: v for k, v in rec["nets"].items() if v["dataset"] == "digits16"}
    assert set(shown["net"]) == set(digits) and len(shown) == 7 * len(digits)
    name, net = next(iter(digits.items()))
    errs = [run["wrong"]["delete middle"] / net["test_size"] for run in net["runs"]]
    m, lo, hi = interval(errs)
    row = shown[(shown["net"] == name) & (shown["condition"] == "delete middle")].iloc[0]
    assert row["test error %"] == f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    verdicts = frame(at, "agrees?")
    assert set(verdicts["agrees?"]) <= {"agrees", "disagrees", "cannot tell"} and len(verdicts) >= 4
    assert {b.label for b in at.get("download_button")} == {"Download the table (CSV)",
                                                           "Download every seed's counts (CSV)"}
    at.radio(key="painters_data").set_value("mnist1d").run()
    assert not at.exception
    assert set(frame(at, "condition")["net"]) == {k for k, v in rec["nets"].items() if v["dataset"] == "mnist1d"}


def test_a_refused_condition_says_why(monkeypatch):
    at = page(monkeypatch)
    shown = frame(at, "condition")
    resnet = shown[(shown["condition"] == "parallel middle") & shown["net"].str.contains("resnet")]
    assert len(resnet) and all(n.startswith("n/a: ") and "post-activation" in n for n in resnet["note"])
    assert (resnet["test error %"] == "").all()


@pytest.mark.parametrize("text", ["{}", "not json", json.dumps({"format": "resnet-lens-painters/1", "nets": {
    "x": {"dataset": "digits16", "family": "F", "residual": True, "test_size": 10, "classes": 10,
          "runs": [{"seed": 0, "wrong": {"intact": 11}, "refused": {}}]}}})])
def test_a_damaged_record_is_one_message(monkeypatch, tmp_path, text):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    at = page(monkeypatch, bad)
    assert len(at.error) == 1 and "bad.json" in at.error[0].value
    assert not at.dataframe and not at.table
