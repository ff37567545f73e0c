"""Block comparison, Table 1 and the counter conventions."""

import pytest
import torch

from analysis.blocks import BlockConfig, block_terms, compare_blocks, formula, plan_for
from analysis.conventions import components, convention_totals, explain_difference
from analysis.depth import depth_summary, paper_comparison, table1
from analysis.errors import LensError
from analysis.models import Block
from analysis.specs import get_spec


def test_seed_block_numbers():
    t = compare_blocks(256, 256, 64, 56).set_index("block")
    assert t.loc["basic", "conv weights (residual)"] == 3 * 3 * 256 * 256 * 2 == 1_179_648
    assert t.loc["bottleneck", "conv weights (residual)"] == 1 * 1 * 256 * 64 + 3 * 3 * 64 * 64 + 1 * 1 * 64 * 256
    assert t.loc["bottleneck", "conv weights (residual)"] == 69_632
    assert t.loc["basic", "formula"] == "3·3·256·256 + 3·3·256·256 = 1,179,648"
    assert t.loc["bottleneck", "formula"] == "1·1·256·64 + 3·3·64·64 + 1·1·64·256 = 69,632"
    assert t.loc["basic", "MACs"] == 1_179_648 * 56 * 56
    assert t.loc["bottleneck", "MACs"] == 69_632 * 56 * 56


@pytest.mark.parametrize("cin,cout,width,stride,groups", [(256, 256, 64, 1, 1), (64, 256, 64, 1, 1),
                                                          (256, 512, 128, 2, 1), (256, 256, 128, 2, 32)])
def test_block_terms_equal_built_blocks(cin, cout, width, stride, groups):
    """The page's terms (analytic) against the torch modules the builder makes from the same plan."""
    for preact in (False, True):
        kinds = ["preact_bottleneck" if preact else "bottleneck"]
        if groups == 1:
            kinds.append("preact_basic" if preact else "basic")
        for kind in kinds:
            cfg = BlockConfig(kind, cin, cout, width, 56, stride, groups)
            block = Block(plan_for(cfg))
            terms = block_terms(cfg)
            assert int(terms["weights"].sum() + terms["bn_params"].sum()) == sum(p.numel() for p in block.parameters())
            out = block(torch.zeros(1, cin, 56, 56))
            assert out.shape == (1, cout, (56 - 1) // stride + 1, (56 - 1) // stride + 1)
            # MACs from hooks on the real convs
            macs = []
            hooks = [m.register_forward_hook(lambda m, i, o, macs=macs: macs.append(m.weight.numel() * o.shape[-1] ** 2))
                     for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
            try:
                block(torch.zeros(1, cin, 56, 56))
            finally:
                for h in hooks:
                    h.remove()
            assert int(terms["macs"].sum()) == sum(macs)


def test_projection_shortcut_formula():
    t = block_terms(BlockConfig("bottleneck", 64, 256, 64, 56))
    assert formula(t, "projection shortcut") == "1·1·64·256 = 16,384"


def test_bad_block_config():
    with pytest.raises(LensError, match="multiple of groups"):
        block_terms(BlockConfig("bottleneck", 256, 256, 64, 56, 1, 3))
    with pytest.raises(LensError, match="output channels"):
        block_terms(BlockConfig("basic", 256, 0))


def test_table1_layout():
    t = table1([get_spec(n) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")])
    assert list(t["layer"]) == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "head", "MACs (×10⁹)"]
    assert list(t["output size"][:5]) == ["112×112", "56×56", "28×28", "14×14", "7×7"]
    assert t.loc[1, "resnet50"] == "3×3 max pool, stride 2; [1×1, 64 | 3×3, 64 | 1×1, 256] ×3"
    assert t.loc[3, "resnet152"] == "[1×1, 256 | 3×3, 256 | 1×1, 1024] ×36"
    assert t.loc[2, "resnet18"] == "[3×3, 128 | 3×3, 128] ×2"
    assert list(t.iloc[-1, 2:]) == ["1.814", "3.664", "4.089", "7.801", "11.514"]
    with pytest.raises(LensError, match="same number of stages"):
        table1([get_spec("resnet18"), get_spec("cifar_resnet20")])


def test_paper_comparison_explains_v1():
    p = paper_comparison(["resnet50", "resnet34"]).set_index("model")
    assert p.loc["resnet50", "paper"] == 3.8
    assert p.loc["resnet50", "ours (paper variant)"] == 3.858
    assert p.loc["resnet50", "ours (torchvision v1.5)"] == 4.089
    assert "truncates 3.858" in p.loc["resnet50", "why they differ"]
    assert "truncates 3.664" in p.loc["resnet34", "why they differ"]


def test_depth_summary_plain_vs_residual():
    res = depth_summary(["cifar_resnet20", "cifar_resnet56"]).set_index("model")
    plain = depth_summary(["cifar_resnet20", "cifar_resnet56"], plain=True).set_index("model")
    assert res.loc["cifar_resnet56", "params"] == plain.loc["plain_cifar_resnet56", "params"] == 853_018
    assert res.loc["cifar_resnet56", "paper params M (Table 6)"] == 0.85


def test_convention_totals_resnet50():
    c = convention_totals(get_spec("resnet50")).set_index("convention")["total"]
    assert c["paper (He et al. 2015, Table 1)"] == 4_089_184_256
    assert c["torchinfo 1.8 (mult-adds)"] == 4_089_238_376
    # the reference's "about 4.11 G" (fvcore) and "4.13-4.14 G" (thop, ptflops)
    assert round(c["fvcore (eval mode)"] / 1e9, 2) == 4.11
    assert round(c["thop (module hooks)"] / 1e9, 2) == 4.13
    assert round(c["ptflops 0.7 (PyTorch backend)"] / 1e9, 2) == 4.13
    comp = components(get_spec("resnet50"))
    assert comp["BatchNorm parameters"] == 53_120
    text = explain_difference(get_spec("resnet50"))
    assert "4,089,184,256" in text and "3,857,973,248" in text
