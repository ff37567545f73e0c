"""The README quotes only what the result files hold: every table tools/readme_tables.py prints from
results/ (the variants grid per depth, the degradation experiment, the b_g sweep, the measured
reproducibility, the two transfer comparisons) sits in the README between its markers exactly as printed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "tools" / "readme_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
TABLES = TOOL.tables(ROOT)
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_recorded_table_is_there():
    expected = {"variants_digits depth 20", "variants_digits depth 56", "degradation_digits"}
    for name, table in (("gate_sweep_digits.json", "gate_sweep_digits"), ("reproducibility.json", "reproducibility"),
                        ("transfer_digits.json", "transfer_digits"), ("transfer_mnist1d.json", "transfer_mnist1d")):
        if (ROOT / "results" / name).is_file():
            expected.add(table)
    expected |= {f.stem for f in (ROOT / "results").glob("gate_sweep_digits*.json")}
    assert expected <= set(TABLES)
    # and the README has no table block that no file fills
    assert {part.split(" -->")[0] for part in README.split("<!-- table: ")[1:]} == set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_readme_quotes_the_file(name):
    assert f"<!-- table: {name} -->\n{TABLES[name]}\n<!-- /table -->" in README, (
        f"README.md does not hold the {name} table as results/ has it: run tools/readme_tables.py --write")


def test_filling_replaces_only_the_named_blocks():
    text = "a\n<!-- table: x -->\nold\n<!-- /table -->\nb <!-- table: y -->keep<!-- /table -->"
    assert TOOL.fill(text, {"x": "NEW"}) == ("a\n<!-- table: x -->\nNEW\n<!-- /table -->\n"
                                             "b <!-- table: y -->keep<!-- /table -->")
    assert TOOL.fill(README, TABLES) == README  # nothing left to fill
