"""Block comparison, Table 1 and the counter conventions."""

import pytest
import torch

from analysis.arch.blocks import BlockConfig, block_terms, compare_blocks, formula, plan_for
from analysis.arch.conventions import components, convention_totals, explain_difference
from analysis.arch.costs import totals
from analysis.arch.depth import FAMILIES, FAMILY_DEFAULTS, depth_summary, input_note, paper_comparison, table1
from analysis.arch.models import Block, build_model
from analysis.arch.specs import get_spec
from analysis.core.errors import LensError
from tests.helpers import numel


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


# ----------------------------------------------------------------------------- 1-D (issue 13)
def test_1d_block_numbers():
    """Conv1d blocks at 256 in and out, width 64: a 3-wide kernel has 3 taps, a 1-wide one 1."""
    t = compare_blocks(256, 256, 64, 56, dims=1).set_index("block")
    assert t.loc["basic", "conv weights (residual)"] == 3 * 256 * 256 * 2 == 393_216
    assert t.loc["bottleneck", "conv weights (residual)"] == 256 * 64 + 3 * 64 * 64 + 64 * 256 == 45_056
    assert t.loc["basic", "formula"] == "3·256·256 + 3·256·256 = 393,216"
    assert t.loc["bottleneck", "formula"] == "1·256·64 + 3·64·64 + 1·64·256 = 45,056"
    # MACs: weights x output length (56 samples at stride 1), not x 56 x 56
    assert t.loc["basic", "MACs"] == 393_216 * 56 == 22_020_096
    assert t.loc["bottleneck", "MACs"] == 45_056 * 56 == 2_523_136
    assert t.loc["preact_basic", "conv weights (residual)"] == 393_216
    terms = block_terms(BlockConfig("basic", 256, 256, 64, 56, dims=1))
    assert set(terms.loc[terms["weights"] > 0, "kernel"]) == {"3"}


@pytest.mark.parametrize("cin,cout,width,stride,groups,length", [(256, 256, 64, 1, 1, 56), (64, 256, 64, 1, 1, 40),
                                                                 (256, 512, 128, 2, 1, 37), (256, 256, 128, 2, 32, 9)])
def test_1d_block_terms_equal_built_blocks(cin, cout, width, stride, groups, length):
    """The 1-D terms against the Conv1d modules the builder makes from the same plan: parameters,
    the output C x L and the MACs hooked on the real convs."""
    for kind in ("basic", "bottleneck", "preact_basic", "preact_bottleneck"):
        if groups > 1 and kind.endswith("basic"):
            continue
        cfg = BlockConfig(kind, cin, cout, width, length, stride, groups, dims=1)
        block = Block(plan_for(cfg))
        terms = block_terms(cfg)
        assert int(terms["weights"].sum() + terms["bn_params"].sum()) == sum(p.numel() for p in block.parameters())
        convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d)]
        assert convs and all(isinstance(m, torch.nn.Conv1d) for m in convs)
        macs: list[int] = []
        hooks = [m.register_forward_hook(lambda m, i, o, macs=macs: macs.append(m.weight.numel() * o.shape[-1]))
                 for m in convs]
        try:
            out = block(torch.zeros(1, cin, length))
        finally:
            for h in hooks:
                h.remove()
        assert out.shape == (1, cout, (length - 1) // stride + 1)
        assert int(terms["macs"].sum()) == sum(macs)


def test_1d_block_length_bounds():
    """A 1-D length goes up to a 1-D spec's longest input, past the 2-D side limit of 4,096 px."""
    t = compare_blocks(64, 64, 64, 100_000, dims=1).set_index("block")
    assert t.loc["basic", "MACs"] == 2 * 3 * 64 * 64 * 100_000
    with pytest.raises(LensError, match="sequence length must be an integer between 1 and 1048576"):
        BlockConfig("basic", size=(1 << 20) + 1, dims=1)
    with pytest.raises(LensError, match="spatial size must be an integer between 1 and 4096"):
        BlockConfig("basic", size=100_000)
    with pytest.raises(LensError, match="dims must be 1"):
        BlockConfig("basic", dims=3)


def test_table1_vdcnn():
    t = table1([get_spec(f"vdcnn{d}") for d in (9, 17, 29, 49)])
    assert list(t["layer"]) == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "head", "MACs (×10⁹)"]
    assert list(t["output size"][:6]) == ["1024", "1024", "512", "256", "128", "1"]  # lengths, not H×W
    assert t.loc[0, "vdcnn29"] == "3, 64, bias, no BN or ReLU (temporal conv)"
    assert t.loc[1, "vdcnn29"] == "[3, 64 | 3, 64] ×5"  # Conneau et al. Table 2: 10 conv layers at 64
    assert t.loc[2, "vdcnn29"] == "3 max pool, stride 2; [3, 128 | 3, 128] ×5"
    assert t.loc[4, "vdcnn49"] == "3 max pool, stride 2; [3, 512 | 3, 512] ×3"
    cells = " ".join(t[[f"vdcnn{d}" for d in (9, 17, 29, 49)]].to_numpy().ravel())
    assert "3×3" not in cells and "1×1" not in cells  # 1-D kernels are widths
    assert list(t.iloc[-1, 2:]) == [f"{totals(get_spec(f'vdcnn{d}')).macs / 1e9:.3f}" for d in (9, 17, 29, 49)]
    with pytest.raises(LensError, match="only 2-D"):
        table1([get_spec("cifar_resnet20"), get_spec("resnet1d_20")])


def test_table1_mnist1d_resnets_in_millions():
    t = table1([get_spec("resnet1d_8"), get_spec("resnet1d_56")])
    assert list(t["output size"][:4]) == ["40", "40", "20", "10"]
    assert t.loc[0, "resnet1d_8"] == "3, 32" and t.loc[3, "resnet1d_56"] == "[3, 128 | 3, 128] ×9"
    # a few million MACs would read 0.001 in 10^9
    assert t.iloc[-1]["layer"] == "MACs (×10⁶)" and t.iloc[-1]["resnet1d_8"] == "1.357"
    assert totals(get_spec("resnet1d_8")).macs == 1_356_800


def test_depth_families_and_input_notes():
    assert FAMILIES["vdcnn"] == ("vdcnn9", "vdcnn17", "vdcnn29", "vdcnn49")
    assert FAMILY_DEFAULTS["resnet1d"] == ("resnet1d_8", "resnet1d_20", "resnet1d_56")
    assert set(FAMILY_DEFAULTS["resnet1d"]) < set(FAMILIES["resnet1d"])
    for names in FAMILIES.values():
        for name in names:
            assert get_spec(name).name == name
    assert all(get_spec(n).dims == 1 for n in FAMILIES["vdcnn"] + FAMILIES["resnet1d"])
    note = input_note([get_spec("vdcnn9"), get_spec("vdcnn29")])
    assert note == ("Every cost on this page is for one input at each model's own size: 16×1024 (channels × "
                    "samples) for vdcnn9, vdcnn29.")
    assert "1×40 (channels × samples) for resnet1d_8" in input_note([get_spec("resnet1d_8")])
    assert input_note([get_spec("resnet18")]).endswith("224×224 px (the ImageNet nets' 224 px as in the paper).")


def test_depth_summary_vdcnn_residual_vs_plain():
    """VDCNN-29 (Conneau et al. 2017, Table 2), counted by hand: the stem conv with bias, 14 blocks of
    two 3-wide convs with bias and BN, projections (1-wide conv + BN) into layer2-4, the fc."""
    res = depth_summary(["vdcnn29"]).set_index("model")
    plain = depth_summary(["vdcnn29"], plain=True).set_index("model")

    def block(cin, c):
        return 3 * cin * c + c + 3 * c * c + c + 2 * 2 * c

    def stage(cin, c, n, projection):
        return block(cin, c) + (n - 1) * block(c, c) + ((cin * c + 2 * c) if projection else 0)

    projections = (64 * 128 + 256) + (128 * 256 + 512) + (256 * 512 + 1024)
    by_hand = (3 * 16 * 64 + 64 + stage(64, 64, 5, False) + stage(64, 128, 5, True) + stage(128, 256, 2, True)
               + stage(256, 512, 2, True) + 512 * 4 + 4)
    assert res.loc["vdcnn29", "params"] == by_hand == 4_224_452 == numel(build_model(get_spec("vdcnn29")))
    assert plain.loc["plain_vdcnn29", "params"] == by_hand - projections == 4_050_628
    assert res.loc["vdcnn29", "depth"] == 29 and res.loc["vdcnn29", "blocks"] == 14
    assert paper_comparison(["vdcnn29", "resnet1d_20"]).empty  # no published counts to set beside ours
