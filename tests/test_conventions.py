"""The counter conventions are looked up by key, never by position: each sentence of
explain_difference names a tool and must end with that tool's own total (torchinfo live, the other
three as the real tools reported them in tests/fixtures/counters.json)."""

import json
import re
from pathlib import Path

import pytest

from analysis.arch.conventions import BY_KEY, CONVENTIONS, convention_totals, explain_difference, totals_by_key
from analysis.arch.specs import get_spec

COUNTERS = json.loads((Path(__file__).parent / "fixtures" / "counters.json").read_text())
TORCHINFO_RESNET50 = 4_089_238_376  # torchinfo 1.8's total_mult_adds for torchvision's resnet50
CORE_RESNET50 = 4_089_184_256  # conv + fc MACs
# explain_difference: the sentence about each tool opens with the tool's name and ends with ": <total>."
SENTENCE = re.compile(r"^(?P<tool>\w+) .*: (?P<total>[\d,]+)\.$")


def expected_resnet50() -> dict[str, int]:
    return {"torchinfo": TORCHINFO_RESNET50, **{k: COUNTERS["resnet50"][k] for k in ("fvcore", "thop", "ptflops")}}


def tool_sentences(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        m = SENTENCE.match(line)
        if m and m["tool"] in BY_KEY:
            assert m["tool"] not in out, f"two sentences about {m['tool']}"
            out[m["tool"]] = int(m["total"].replace(",", ""))
    return out


def test_keys_are_unique_and_name_their_tool():
    keys = [c.key for c in CONVENTIONS]
    assert sorted(keys) == sorted({"paper", "torchinfo", "fvcore", "thop", "ptflops", "lens"})
    for c in CONVENTIONS:
        if c.key not in ("paper", "lens"):
            assert c.name.lower().startswith(c.key), (c.key, c.name)
    assert BY_KEY["lens"].weights == (("flops", 1),)


def test_every_sentence_carries_its_own_counters_total():
    text = explain_difference(get_spec("resnet50"))
    expected = expected_resnet50()
    assert len(set(expected.values())) == len(expected)  # distinct, so a swap cannot go unnoticed
    assert tool_sentences(text) == expected
    assert text.splitlines()[0] == f"All counters agree on the conv + fc core: {CORE_RESNET50:,} multiply-accumulates."
    for tool, total in expected.items():  # and no other sentence quotes that total
        others = [line for line in text.splitlines() if f"{total:,}" in line]
        assert len(others) == 1 and others[0].startswith(tool), (tool, others)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152"])
def test_totals_by_key_equal_the_real_tools_and_the_table(name):
    spec = get_spec(name)
    tot = totals_by_key(spec)
    for tool in ("fvcore", "thop", "ptflops"):
        assert tot[tool] == COUNTERS[name][tool], tool
    # the table shows the same numbers, row by row, in CONVENTIONS order
    table = convention_totals(spec)
    assert list(table["convention"]) == [c.name for c in CONVENTIONS]
    assert list(table["total"]) == [tot[c.key] for c in CONVENTIONS]
    assert tool_sentences(explain_difference(spec)) == {k: tot[k] for k in ("torchinfo", "fvcore", "thop", "ptflops")}


def test_explanation_does_not_depend_on_the_order_of_conventions(monkeypatch):
    import analysis.arch.conventions as conv

    before = explain_difference(get_spec("resnet50"))
    monkeypatch.setattr(conv, "CONVENTIONS", tuple(reversed(conv.CONVENTIONS)))
    assert explain_difference(get_spec("resnet50")) == before
    assert tool_sentences(before) == expected_resnet50()
