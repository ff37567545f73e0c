"""The notes' sensitivity example (x = 6, H: 6.1 -> 6.2) and the same factor measured per block."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.arch.theory import sensitivity
from analysis.core.errors import ConfigError
from analysis.experiments.sensitivity import branch_sizes


def test_the_notes_example_gives_1_6_percent_and_100_percent():
    s = sensitivity(6, 6.1, 6.2)
    # by hand: plain (6.2 - 6.1) / 6.1 = 0.1 / 6.1 = 1/61; residual F = 0.1 -> 0.2: 0.1 / 0.1 = 1
    assert s.plain_change == Fraction(1, 61)
    assert 100 * float(s.plain_change) == pytest.approx(1.6393442622950820, rel=1e-15)
    assert s.residual_change == 1
    assert (s.f_before, s.f_after) == (Fraction(1, 10), Fraction(1, 5))
    assert s.ratio == 61  # 6.1 / 0.1


def test_other_numbers_and_a_falling_target():
    s = sensitivity(2.0, 3.0, 2.5)
    assert s.plain_change == Fraction(-1, 6)  # (2.5 - 3) / 3
    assert s.residual_change == Fraction(-1, 2)  # F: 1 -> 0.5
    assert s.ratio == 3
    assert sensitivity(Fraction(1, 3), 1, 2).residual_change == Fraction(3, 2)  # F: 2/3 -> 5/3


@pytest.mark.parametrize(("args", "match"), [
    ((6, 0.0, 1.0), "H\\(x\\) before is 0"),
    ((6, 6.0, 6.2), "equals x"),
    ((math.nan, 6.1, 6.2), "finite"),
    ((6, math.inf, 6.2), "finite"),
    ((6, "6.1", 6.2), "number"),
    ((True, 6.1, 6.2), "number"),
])
def test_impossible_input_is_refused(args, match):
    with pytest.raises(ConfigError, match=match):
        sensitivity(*args)


def tiny(residual: bool = True) -> nn.Module:
    spec = get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8, residual=residual)
    return build_model(spec, seed=3).eval()


def inputs(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_a_branch_that_adds_nothing_measures_zero():
    model = tiny()
    with torch.no_grad():
        model.layer2[0].bn2.weight.zero_()
        model.layer2[0].bn2.bias.zero_()
    df = branch_sizes(model, inputs()).set_index("block")
    row = df.loc["layer2.0"]
    assert row.norm_f == 0 and row.f_over_x == 0 and row.f_over_h == 0 and row.h_over_f == math.inf
    assert row.norm_h == row.norm_x > 0  # H = x
    assert (df.drop("layer2.0")["f_over_h"] > 0).all()


def test_constant_branches_give_norms_known_by_construction():
    """Every branch's last BN outputs 0.5 (weight 0, bias 0.5), so F = 0.5 everywhere and each block's x
    and H follow by hand: identity, then option A (every 2nd pixel, channels zero-padded) twice."""
    model = tiny()
    with torch.no_grad():
        for _, b in model.blocks():
            b.bn2.weight.zero_()
            b.bn2.bias.fill_(0.5)
    x = inputs()
    with torch.no_grad():
        h = model.stem(x)
    expected = []
    for i, cout in enumerate((16, 32, 64)):
        if i:  # option A: subsample by 2, zero channels added (where they go does not change a norm)
            h = h[:, :, ::2, ::2]
            h = torch.cat([h, torch.zeros(h.shape[0], cout - h.shape[1], *h.shape[2:])], 1)
        f = torch.full_like(h, 0.5)
        expected.append((float(h.double().norm()), float(f.double().norm()), float((h + f).double().norm())))
        h = torch.relu(h + f)
    df = branch_sizes(model, x, batch_size=4)  # two batches: the sums of squares add up over them
    for row, (nx, nf, nh) in zip(df.itertuples(), expected, strict=True):
        assert (row.norm_x, row.norm_f, row.norm_h) == pytest.approx((nx, nf, nh), rel=1e-6)
        assert row.f_over_h == pytest.approx(nf / nh, rel=1e-6) and row.h_over_f == pytest.approx(nh / nf, rel=1e-6)
    assert df["norm_f"].iloc[0] == pytest.approx(0.5 * math.sqrt(6 * 16 * 8 * 8), rel=1e-12)


def test_a_plain_block_is_its_own_branch():
    df = branch_sizes(tiny(residual=False), inputs())
    assert (df["f_over_h"] == 1.0).all() and (df["h_over_f"] == 1.0).all()
    assert (df["norm_f"] == df["norm_h"]).all() and not df["residual"].any()
    assert list(df["downsample"]) == [False, True, True]


def test_hooks_are_removed_and_the_mode_restored_however_it_ends():
    model = tiny().train()
    branch_sizes(model, inputs())
    assert model.training and all(not m._forward_pre_hooks for m in model.modules())
    model.eval()
    with pytest.raises(RuntimeError):  # 3 channels into a 1-channel stem
        branch_sizes(model, torch.zeros(2, 3, 8, 8))
    assert not model.training and all(not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ConfigError, match="no inputs"):
        branch_sizes(model, torch.zeros(0, 1, 8, 8))


def test_a_shipped_net_measured():
    """digits_resnet20 over its 450 test images (computed once here; eval mode, so deterministic up to
    the last float bits across thread counts)."""
    from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    df = branch_sizes(ck.model, dataset_for(ck.meta).x_test).set_index("block")
    assert len(df) == 9
    assert df.loc["layer1.0", "f_over_h"] == pytest.approx(0.648520, abs=1e-6)
    assert df.loc["layer3.0", "f_over_h"] == pytest.approx(0.688547, abs=1e-6)
    assert df.loc["layer1.2", "h_over_f"] == pytest.approx(1.940742, abs=1e-6)
