"""Intervals over seeds: the t quantiles against published tables, a hand-computed interval, the paired
difference, one run labelled as one run, and refusals."""

from __future__ import annotations

import math

import pytest

from analysis.core.errors import ConfigError
from analysis.core.stats import detectable_difference, paired_difference, t_interval, t_quantile

# Student's t, two-sided 95 % (0.975 quantile), from printed tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
TABLE = {2: 12.706, 3: 4.303, 5: 2.776, 10: 2.262, 30: 2.045}


@pytest.mark.parametrize("n", sorted(TABLE))
def test_t_quantile_matches_the_printed_table(n):
    assert round(t_quantile(n), 3) == TABLE[n]


def test_an_interval_computed_by_hand():
    # 1..5: mean 3, s = sqrt(10 / 4) = 1.5811, s / sqrt(5) = 0.70711, half-width 2.7764451 * 0.70711
    iv = t_interval([1, 2, 3, 4, 5])
    assert iv.mean == 3 and iv.n == 5
    assert iv.sd == pytest.approx(math.sqrt(2.5), rel=1e-12)
    assert iv.low == pytest.approx(3 - 1.9632432, abs=1e-6) and iv.high == pytest.approx(3 + 1.9632432, abs=1e-6)
    assert iv.excludes(0) and not iv.excludes(3)
    assert iv.text() == "3.0 ± 2.0 (95 % CI, t, 5 seeds)"


def test_one_run_is_labelled_one_run():
    iv = t_interval([0.25])
    assert (iv.low, iv.high, iv.sd, iv.half_width) == (None, None, None, None)
    assert not iv.excludes(0)
    assert iv.text(scale=100, unit=" %") == "25.0 % (one run)"


def test_paired_difference_is_the_interval_of_the_differences():
    a, b = [0.10, 0.12, 0.11, 0.15, 0.09], [0.08, 0.08, 0.10, 0.09, 0.08]
    d = paired_difference(a, b)
    by_hand = t_interval([0.02, 0.04, 0.01, 0.06, 0.01])
    assert d.mean == pytest.approx(by_hand.mean) and d.low == pytest.approx(by_hand.low)
    assert d.excludes(0)  # every seed worse: distinguishable from no change
    assert not paired_difference([1, 2, 3], [2, 1, 3]).excludes(0)


def test_detectable_difference():
    # n = 5: (2.7764 + 0.9410) * sd / sqrt(5); t(0.8, 4) = 0.9410 from tables
    assert detectable_difference(1.0, 5) == pytest.approx((2.7764451 + 0.9409646) / math.sqrt(5), rel=1e-6)
    assert detectable_difference(0.0, 5) == 0.0


@pytest.mark.parametrize("call", [
    lambda: t_interval([]),
    lambda: t_interval([1.0, float("nan")]),
    lambda: t_quantile(1),
    lambda: t_quantile(5, level=1.0),
    lambda: paired_difference([1, 2], [1]),
    lambda: detectable_difference(-1.0, 5),
])
def test_refusals(call):
    with pytest.raises(ConfigError):
        call()
