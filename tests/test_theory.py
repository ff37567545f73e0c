"""Scaled shortcuts: the gradient factor lambda^(L-l) (He et al. 2016, Eq. 8)."""

import pytest

from analysis.arch.theory import scaled_shortcut_gradients
from analysis.core.errors import LensError


def test_without_residual_branch_the_ratio_is_exactly_lambda_power():
    df = scaled_shortcut_gradients([0.5, 1.0, 1.5], 20, residual_scale=0.0)
    for row in df.itertuples():
        assert row.ratio == pytest.approx(row._4, rel=1e-12)  # lambda^blocks
    assert df[(df["lambda"] == 1.5) & (df["blocks"] == 20)]["ratio"].item() == pytest.approx(1.5 ** 20)


def test_identity_keeps_gradient_scaled_ones_explode_or_vanish():
    df = scaled_shortcut_gradients([0.8, 1.0, 1.2], 60, residual_scale=0.1)
    end = df[df["blocks"] == 60].set_index("lambda")["ratio"]
    assert end[0.8] < 1e-3 < 0.5 < end[1.0] < 20 < 1e3 < end[1.2]
    assert (df[df["blocks"] == 0]["ratio"] == 1.0).all()


def test_bad_input():
    with pytest.raises(LensError, match="depth"):
        scaled_shortcut_gradients([1.0], 0)
    with pytest.raises(LensError, match="positive"):
        scaled_shortcut_gradients([0.0], 5)
