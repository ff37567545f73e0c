"""Statistics over seeds: a mean with its 95 % interval, a paired difference between two conditions
measured on the same seeds, and the smallest difference such a design can detect.

The intervals are Student-t intervals, mean ± t(1 - α/2, n - 1) · s / √n, with s the sample standard
deviation (n - 1 in the denominator). Over 5 seeds t = 2.776, so the half-width is 1.24 s: a run-to-run
spread of 1 point gives an interval about ±1.2 points wide. One run has no interval; it is labelled as
one run, never given a spread.

Two conditions measured on the same trained nets (a net intact and the same net with a unit deleted)
are compared pair by pair: the interval of the per-seed differences says whether the change is
distinguishable from zero (it is when the interval excludes 0: a paired t-test at level α), which is
the reading pages and the README give.

Two conditions measured on different runs (no seed shared, or seeds that share nothing) are compared
unpaired, by Welch's interval: the difference of the means ± t(1 - α/2, ν) · √(s_a²/n_a + s_b²/n_b),
with the Welch–Satterthwaite degrees of freedom ν (the two spreads are not assumed equal). Either way
a :class:`Contrast` also gives the smallest true difference the design detects with power 0.8, which
readings state so that "no difference found" is never read as "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

from analysis.core.errors import ConfigError

LEVEL = 0.95


def _values(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ConfigError(f"{what}: no values to summarise")
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{what}: a value is not a finite number ({out})")
    return out


def t_quantile(n: int, level: float = LEVEL) -> float:
    """t(1 - α/2, n - 1): the multiplier of the standard error for a two-sided ``level`` interval."""
    if n < 2:
        raise ConfigError(f"an interval needs at least 2 values, got {n}")
    if not 0 < level < 1:
        raise ConfigError(f"the interval's level must be between 0 and 1, got {level}")
    return float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1))


#: Fewer values than this get no interval shown: over 2 seeds t = 12.7, so the interval spans about 18
#: standard deviations and says nothing a reader can use ("2 seeds: no interval", as readings say "no test")
MIN_INTERVAL_SEEDS = 3


def t_half_width(n: int, sd: float, level: float = LEVEL) -> float:
    """The ``level`` t-interval's half width of a mean over ``n`` values whose sample std is ``sd``
    (from a summary that kept only mean, std and count), as the pages, CLIs and tables show it; NaN
    under :data:`MIN_INTERVAL_SEEDS` values or for an undefined std (no interval shown)."""
    if sd < 0:
        raise ConfigError(f"a spread must be a finite number >= 0, got {sd}")
    return t_quantile(n, level) * sd / math.sqrt(n) if n >= MIN_INTERVAL_SEEDS and math.isfinite(sd) else math.nan


def no_interval(n: int | None) -> str:
    """Why a mean over ``n`` values shows no interval: 'one run', '2 seeds: no interval' (under
    :data:`MIN_INTERVAL_SEEDS`), else 'no interval' (an undefined spread)."""
    if n is None or n <= 1:
        return "one run"
    return f"{n} seeds: no interval" if n < MIN_INTERVAL_SEEDS else "no interval"


def bracket(mean: float, low: float, high: float, digits: int = 2, n: int | None = None) -> str:
    """A mean over ``n`` seeds with its interval as tables print it: '1.96 [1.72, 2.19]'; without an
    interval (NaN bounds, or fewer than :data:`MIN_INTERVAL_SEEDS` seeds) the mean and why
    (:func:`no_interval`): '3.00 (one run)', '3.00 (2 seeds: no interval)'; '—' without a mean."""
    if not math.isfinite(mean):
        return "—"
    if (n is not None and 1 < n < MIN_INTERVAL_SEEDS) or not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f} ({no_interval(n)})"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def mean_interval(mean: float, sd: float, n: int, digits: int = 2, scale: float = 1.0) -> str:
    """:func:`bracket` of a summary's mean over ``n`` seeds with sample std ``sd`` (its
    :func:`t_half_width`), all scaled by ``scale`` (100: fractions as per cent)."""
    half = t_half_width(n, sd)
    return bracket(scale * mean, scale * (mean - half), scale * (mean + half), digits=digits, n=n)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its two-sided ``level`` t-interval (``low``/``high`` are None for
    one value: one run has no interval)."""

    mean: float
    n: int
    sd: float | None
    low: float | None
    high: float | None
    level: float = LEVEL

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of ``value`` (never, for one run)."""
        return self.low is not None and self.high is not None and (self.low > value or self.high < value)

    def text(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """'12.3 ± 1.4 % (95 % CI, t, 5 seeds)' or '12.3 % (one run)'."""
        m = f"{scale * self.mean:.{digits}f}{unit}"
        if self.half_width is None:
            return f"{m} (one run)"
        return f"{m} ± {scale * self.half_width:.{digits}f}{unit} ({round(100 * self.level)} % CI, t, {self.n} seeds)"


def t_interval(values: Sequence[float], level: float = LEVEL, what: str = "values") -> Interval:
    """The mean of ``values`` with its Student-t interval (see the module docstring)."""
    v = _values(values, what)
    n = len(v)
    mean = math.fsum(v) / n
    if n == 1:
        return Interval(mean, 1, None, None, None, level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(n, level) * sd / math.sqrt(n)
    return Interval(mean, n, sd, mean - half, mean + half, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                      what: str = "paired values") -> Interval:
    """The mean of ``a[i] - b[i]`` (the same seed's net in two conditions) with its t-interval: a paired
    t-test at 1 - ``level`` rejects "no difference" exactly when the interval excludes 0."""
    av, bv = _values(a, what), _values(b, what)
    if len(av) != len(bv):
        raise ConfigError(f"{what}: a paired comparison needs the same seeds on both sides, got {len(av)} and {len(bv)}")
    return t_interval([x - y for x, y in zip(av, bv, strict=True)], level, what)


def detectable_difference(sd: float, n: int, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true mean difference a paired design of ``n`` seeds whose differences spread by
    ``sd`` detects with probability ``power`` at two-sided ``level``: (t(1-α/2) + t(power)) · sd / √n,
    both quantiles with n - 1 degrees of freedom (the usual normal-approximation formula with t's)."""
    if not 0 < power < 1:
        raise ConfigError(f"power must be between 0 and 1, got {power}")
    if sd < 0 or not math.isfinite(sd):
        raise ConfigError(f"a spread must be a finite number >= 0, got {sd}")
    t_power = float(_scipy_stats.t.ppf(power, n - 1)) if n >= 2 else math.inf
    return (t_quantile(n, level) + t_power) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Contrast:
    """``a − b`` over seeds: the difference of the means, its two-sided ``level`` interval, its
    standard error and degrees of freedom, paired (by seed) or not (Welch). ``low``/``high``/``se``/
    ``df`` are None where there is no spread to estimate (one run on a side, or one pair)."""

    diff: float
    low: float | None
    high: float | None
    se: float | None
    df: float | None
    n_a: int
    n_b: int
    paired: bool
    level: float = LEVEL

    @property
    def n(self) -> int:
        """Seeds behind the comparison: the pairs, or the smaller side of an unpaired one."""
        return min(self.n_a, self.n_b)

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of ``value`` (a t-test at 1 - level rejects it)."""
        return self.low is not None and self.high is not None and (self.low > value or self.high < value)

    @property
    def p(self) -> float | None:
        """The two-sided p-value of "no difference" (None without a spread; 1 or 0 for no spread at all)."""
        if self.se is None or self.df is None:
            return None
        if self.se == 0:
            return 1.0 if self.diff == 0 else 0.0
        return float(2 * _scipy_stats.t.sf(abs(self.diff) / self.se, self.df))

    def detectable(self, power: float = 0.8) -> float | None:
        """The smallest true difference this design detects with probability ``power`` at its level:
        (t(1-α/2, ν) + t(power, ν)) · SE; for a paired design :func:`detectable_difference` itself."""
        if self.se is None or self.df is None:
            return None
        if self.paired:
            return detectable_difference(self.se * math.sqrt(self.n), self.n, self.level, power)
        if not 0 < power < 1:
            raise ConfigError(f"power must be between 0 and 1, got {power}")
        t_alpha = float(_scipy_stats.t.ppf(0.5 + self.level / 2, self.df))
        return (t_alpha + float(_scipy_stats.t.ppf(power, self.df))) * self.se


def paired_contrast(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                    what: str = "paired values") -> Contrast:
    """``a[i] - b[i]`` pair by pair (the same seed in two conditions): :func:`paired_difference` as a
    :class:`Contrast`."""
    d = paired_difference(a, b, level, what)
    se = None if d.sd is None else d.sd / math.sqrt(d.n)
    return Contrast(d.mean, d.low, d.high, se, None if se is None else float(d.n - 1), d.n, d.n, True, level)


def welch_from_summary(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                       level: float = LEVEL) -> Contrast:
    """Welch's interval of ``mean_a - mean_b`` from each side's mean, sample std (``ddof=1``) and count:
    what a table of means and stds allows. A side of one run (or a NaN std) leaves no interval."""
    for n in (n_a, n_b):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"a number of seeds is a whole number >= 1, got {n!r}")
    if not (math.isfinite(mean_a) and math.isfinite(mean_b)):
        raise ConfigError(f"a mean to compare is not a finite number ({mean_a}, {mean_b})")
    diff = float(mean_a) - float(mean_b)
    if n_a < 2 or n_b < 2 or not (math.isfinite(sd_a) and math.isfinite(sd_b)):
        return Contrast(diff, None, None, None, None, n_a, n_b, False, level)
    if sd_a < 0 or sd_b < 0:
        raise ConfigError(f"a spread must be >= 0, got {sd_a} and {sd_b}")
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = math.sqrt(va + vb)
    # Welch–Satterthwaite; with no spread on either side any ν gives a zero-width interval
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if se > 0 else float(n_a + n_b - 2)
    if not 0 < level < 1:
        raise ConfigError(f"the interval's level must be between 0 and 1, got {level}")
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, df)) * se
    return Contrast(diff, diff - half, diff + half, se, df, n_a, n_b, False, level)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                   what: str = "values") -> Contrast:
    """Welch's interval of mean(a) - mean(b) for two sets of independent runs (see the module docstring)."""
    ia, ib = t_interval(a, level, what), t_interval(b, level, what)
    return welch_from_summary(ia.mean, math.nan if ia.sd is None else ia.sd, ia.n,
                              ib.mean, math.nan if ib.sd is None else ib.sd, ib.n, level)
