"""Fuzz: reference DAGs, deep nesting, header bombs, damaged run stores, other scripts' digits and
link values (issue 27; generators in tests/fuzz/shapes.py). Every case is bad input and must be
refused with one of our errors within the deadline."""

from __future__ import annotations

import pytest

from tests.fuzz import shapes
from tests.fuzz.harness import Case, assert_no_failures, no_hang, run_cases

DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return shapes.categories(tmp_path_factory.mktemp("shapes"))


def bounded(case: Case) -> Case:
    return Case(case.name, lambda: no_hang(case.run, seconds=DEADLINE_S), case.expect, case.check)


@pytest.mark.parametrize("category", ["reference-dags", "deep-nesting", "header-bombs", "damaged-sqlite",
                                      "other-digits", "link-values"])
def test_shapes_fuzz(built, category, monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_LENS_HOME", str(tmp_path))
    monkeypatch.setenv("RESNET_LENS_MEMORY_BUDGET", "2G")  # the header bombs are judged against this budget
    cases = built[category]
    assert len(cases) >= 8
    report = run_cases(f"shapes-{category}", [bounded(c) for c in cases])
    assert_no_failures(report)
