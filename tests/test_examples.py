"""The example nets beyond the spec table (analysis/arch/examples.py): published parameter counts and
hand-counted MACs, read through the same path as an uploaded program, with no weights allocated."""

from __future__ import annotations

import pytest

from analysis.arch.examples import example_net
from analysis.arch.graphnet import summary


@pytest.fixture(scope="module")
def vit():  # type: ignore[no-untyped-def]
    return example_net("vit_b16")


def test_vit_b16_has_torchvisions_parameter_count_and_24_identity_units(vit) -> None:  # type: ignore[no-untyped-def]
    assert vit.params == 86_567_656  # torchvision's vit_b_16 (and timm's vit_base_patch16_224)
    assert summary(vit.units) == {"units": 24, "identity": 24, "projection": 0, "pad": 0}
    assert [u.owner for u in vit.units[:2]] == ["blocks.0", "blocks.0"]
    assert {u.in_shape for u in vit.units} == {(197, 768)}  # 196 patches + the class token, width 768


def test_vit_b16_macs_by_hand(vit) -> None:  # type: ignore[no-untyped-def]
    t, w, h, heads = 197, 768, 3072, 12
    patch = 196 * w * (3 * 16 * 16)
    block = t * w * 3 * w + t * w * w + 2 * t * w * h + 2 * heads * t * t * (w // heads)  # qkv, proj, MLP, QK^T and AV
    assert vit.macs == patch + 12 * block + w * 1000  # 17.56 G, torchvision's "GFLOPS" for vit_b_16


def test_gpt2_small_counts_its_tied_embedding_once() -> None:
    gpt = example_net("gpt2_small")
    assert gpt.params == 124_439_808  # GPT-2 small: the unembedding shares wte's matrix
    assert summary(gpt.units)["units"] == 24 and all(u.shortcut == "identity" for u in gpt.units)


def test_an_unknown_example_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown example 'vit_h14'"):
        example_net("vit_h14")
