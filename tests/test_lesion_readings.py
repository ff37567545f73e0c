"""Readings in words of the swap, repeat and parallel sweeps (analysis.experiments.lesionreadings),
computed from their tables, and a program cut by units or layers (programlesion.cut): a plain shipped
twin has layers only and says why; a residual shipped program finds its twin by metadata. Oracle: the
numbers of hand-made tables, the shipped programs' metadata."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.experiments import lesionreadings, programlesion


def table(units: list[str], errors: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"units": ["none", *units], "index": list(range(-1, len(units))), "error": errors})


def test_a_repeat_reading_names_the_costliest_and_the_mildest_change() -> None:
    df = table(["blocks.0 x2", "blocks.1 x2", "blocks.2 x2"], [0.04, 0.20, 0.05, 0.10])
    assert lesionreadings.position_reading(df, "repeat") == (
        "intact 4.0 %; repeating blocks.0 costs the most: +16.0 pp (20.0 %); the least, repeating blocks.1: "
        "+1.0 pp; median +6.0 pp over 3 changes.")


def test_swap_and_parallel_readings_say_the_pair_and_a_change_that_costs_nothing() -> None:
    swap = table(["a<->b"], [0.10, 0.30])
    assert lesionreadings.position_reading(swap, "swap") == (
        "intact 10.0 %; swapping a and b costs the most: +20.0 pp (30.0 %).")
    parallel = table(["a || b", "b || c"], [0.10, 0.08, 0.10])
    assert lesionreadings.position_reading(parallel, "parallel") == (
        "intact 10.0 %; no change raises the error (the costliest, running b and c in parallel: +0.0 pp); the "
        "least, running a and b in parallel: -2.0 pp; median -1.0 pp over 2 changes.")


def test_the_skipped_caption_is_one_line_or_none() -> None:
    assert lesionreadings.skipped_caption({"r": ()}, {}) is None
    assert lesionreadings.skipped_caption({"r": ("a<->b: shapes differ", "b<->c: no")}, {"p": "no pair"}) == (
        "Skipped — r: a<->b: shapes differ; b<->c: no | p not run: no pair.")


@pytest.fixture(scope="module")
def shipped() -> dict[str, tuple[object, object]]:
    from analysis.store import programs

    return {name: programs.load_shipped(name) for name in programs.shipped_programs()}


def test_a_plain_program_is_cut_into_layers_only_and_a_residual_one_both_ways(shipped) -> None:
    vit = programlesion.cut(shipped["digits_vit"][0], "digits_vit")
    assert list(vit.chains) == ["units", "layers"] and vit.residual and vit.units.n == 8
    assert vit.layers == ("blocks.0", "blocks.1", "blocks.2", "blocks.3") and vit.chain("layers").n == 4
    plain = programlesion.cut(shipped["digits_vit_plain"][0], "digits_vit_plain")
    assert list(plain.chains) == ["layers"] and not plain.residual and plain.chain() is plain.chains["layers"]
    assert plain.refused["units"].startswith("digits_vit_plain has no residual units")
    with pytest.raises(programlesion.ChainError, match="has no residual units"):
        plain.chain("units")


def test_a_residual_program_finds_its_plain_twin_by_metadata(shipped) -> None:
    metas = {name: meta for name, (_, meta) in shipped.items()}
    others = {k: v for k, v in metas.items() if k != "digits_vit"}
    assert programlesion.program_twin(metas["digits_vit"], others) == "digits_vit_plain"
    assert programlesion.program_twin(metas["mnist1d_transformer"], metas) == "mnist1d_transformer_plain"
    assert programlesion.program_twin(metas["digits_vit_plain"], metas) is None  # a plain net has no plain twin


def test_a_position_reading_says_it_is_one_net_and_what_one_input_weighs() -> None:
    df = pd.DataFrame({"units": ["none", "a<->b", "b<->c"], "index": [-1, 0, 1], "error": [0.1, 0.2, 0.1]})
    assert lesionreadings.position_reading(df, "swap", 450).endswith(
        "; one trained net, one run: one test input is 0.22 pp.")
    assert "one trained net" not in lesionreadings.position_reading(df, "swap")
