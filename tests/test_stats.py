"""Intervals over seeds: the t quantiles against published tables, a hand-computed interval, the paired
difference, Welch's unpaired interval against scipy's own test, the smallest detectable difference,
one run labelled as one run, and refusals."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from analysis.core.errors import ConfigError
from analysis.core.stats import (
    bracket,
    detectable_difference,
    paired_contrast,
    paired_difference,
    t_half_width,
    t_interval,
    t_quantile,
    welch_from_summary,
    welch_interval,
)

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


def test_a_half_width_from_a_summary_is_the_hand_computed_one():
    # the same 1..5 as mean, std, count: 2.7764451 * sqrt(2.5) / sqrt(5) = 1.9632432
    assert t_half_width(5, math.sqrt(2.5)) == pytest.approx(1.9632432, abs=1e-6)
    assert t_half_width(3, 1.0) == pytest.approx(4.3026527 / math.sqrt(3), abs=1e-6)
    # under 3 seeds no interval is shown (t = 12.7 over 2), nor for an undefined spread
    assert math.isnan(t_half_width(2, 1.0)) and math.isnan(t_half_width(1, 0.0)) and math.isnan(t_half_width(3, math.nan))
    with pytest.raises(ConfigError, match="a spread must be"):
        t_half_width(5, -1.0)


def test_a_bracket_says_why_a_mean_has_no_interval():
    assert bracket(1.96, 1.72, 2.19, n=5) == "1.96 [1.72, 2.19]"
    assert bracket(3.0, math.nan, math.nan, n=1) == "3.00 (one run)"
    assert bracket(3.0, 1.0, 5.0, n=2) == "3.00 (2 seeds: no interval)"
    assert bracket(61.8, math.nan, math.nan, digits=1, n=4) == "61.8 (no interval)"
    assert bracket(math.nan, 1.0, 2.0, n=5) == "—"


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


A5, B5 = [2.1, 3.4, 1.9, 4.0, 2.7], [3.0, 4.4, 3.8, 5.9, 3.1, 4.6]


def test_welch_matches_scipys_unequal_variance_test():
    """scipy.stats.ttest_ind(equal_var=False): the same degrees of freedom, interval and p-value."""
    ref = scipy_stats.ttest_ind(A5, B5, equal_var=False)
    ci = ref.confidence_interval(0.95)
    c = welch_interval(A5, B5)
    assert not c.paired and (c.n_a, c.n_b, c.n) == (5, 6, 5)
    assert c.diff == pytest.approx(sum(A5) / 5 - sum(B5) / 6, rel=1e-12)
    assert c.df == pytest.approx(float(ref.df), rel=1e-10)
    assert (c.low, c.high) == (pytest.approx(float(ci.low), rel=1e-10), pytest.approx(float(ci.high), rel=1e-10))
    assert c.p == pytest.approx(float(ref.pvalue), rel=1e-10)
    assert c.excludes(0) is (float(ref.pvalue) < 0.05)
    # the same from a table's means, stds and counts
    m = welch_from_summary(sum(A5) / 5, t_interval(A5).sd, 5, sum(B5) / 6, t_interval(B5).sd, 6)
    assert (m.low, m.high, m.df) == (pytest.approx(c.low), pytest.approx(c.high), pytest.approx(c.df))


def test_welch_by_hand():
    """a = 1, 2, 3 and b = 2, 4, 6: means 2 and 4, s² = 1 and 4; SE² = 1/3 + 4/3 = 5/3;
    ν = (5/3)² / ((1/3)²/2 + (4/3)²/2) = (25/9) / (17/18) = 50/17."""
    c = welch_interval([1, 2, 3], [2, 4, 6])
    assert c.diff == -2.0 and c.se == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert c.df == pytest.approx(50 / 17, rel=1e-12)
    half = float(scipy_stats.t.ppf(0.975, 50 / 17)) * math.sqrt(5 / 3)
    assert c.low == pytest.approx(-2 - half, rel=1e-12) and c.high == pytest.approx(-2 + half, rel=1e-12)
    # detectable with power 0.8: (t(0.975, ν) + t(0.8, ν)) · SE
    want = (float(scipy_stats.t.ppf(0.975, 50 / 17)) + float(scipy_stats.t.ppf(0.8, 50 / 17))) * math.sqrt(5 / 3)
    assert c.detectable() == pytest.approx(want, rel=1e-12)


def test_a_paired_contrast_is_scipys_paired_test():
    a, b = [0.10, 0.12, 0.11, 0.15, 0.09], [0.08, 0.08, 0.10, 0.09, 0.08]
    ref = scipy_stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    c = paired_contrast(a, b)
    assert c.paired and c.n == 5 and c.df == 4
    assert (c.low, c.high) == (pytest.approx(float(ci.low), rel=1e-10), pytest.approx(float(ci.high), rel=1e-10))
    assert c.p == pytest.approx(float(ref.pvalue), rel=1e-10)
    # its detectable difference is the paired design's, from the differences' sd
    sd = t_interval([0.02, 0.04, 0.01, 0.06, 0.01]).sd
    assert c.detectable() == pytest.approx(detectable_difference(sd, 5), rel=1e-12)


def test_one_run_has_no_test():
    c = welch_from_summary(0.5, math.nan, 1, 0.4, 0.01, 3)
    assert (c.low, c.high, c.se, c.p, c.detectable()) == (None, None, None, None, None)
    assert c.diff == pytest.approx(0.1) and not c.excludes(0) and c.n == 1
    one = paired_contrast([0.5], [0.4])
    assert one.paired and one.low is None and one.detectable() is None
    # no spread at all on either side: a zero-width interval, not a division by zero
    flat = welch_from_summary(0.5, 0.0, 3, 0.4, 0.0, 3)
    assert flat.low == flat.high == pytest.approx(0.1) and flat.p == 0.0


@pytest.mark.parametrize("call", [
    lambda: welch_from_summary(0.5, 0.1, 0, 0.4, 0.1, 3),
    lambda: welch_from_summary(0.5, -0.1, 3, 0.4, 0.1, 3),
    lambda: welch_from_summary(math.nan, 0.1, 3, 0.4, 0.1, 3),
    lambda: welch_interval([1.0, 2.0], []),
    lambda: welch_interval([1.0, 2.0], [1.0, 3.0]).detectable(power=1.0),
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
