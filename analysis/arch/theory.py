"""Why identity shortcuts matter, measured (He et al. 2016, "Identity Mappings in Deep Residual
Networks", Sec. 3): with x_{l+1} = lambda * x_l + F(x_l), the signal and the gradient between blocks
l and L carry a factor lambda^(L-l), which explodes for lambda > 1 and vanishes for lambda < 1;
with lambda = 1 the gradient keeps its "1 +" term and reaches every block undiminished.

:func:`sensitivity` is the reference notes' argument for residual learning in numbers: for input
x = 6, when the target mapping H(x) moves from 6.1 to 6.2, a plain layer's output must change by
1/61 (1.64 %), while the residual F(x) = H(x) - x must change from 0.1 to 0.2, by 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd
import torch
from torch import nn

from analysis.core.errors import ConfigError

# He et al. 2016, Table 1 (ResNet-110 on CIFAR-10, test error %; "fail" = above 20 %).
SHORTCUT_VARIANTS = [
    ("original (identity)", "1", "6.61"),
    ("constant scaling", "0.5 shortcut, 1 F", "fail"),
    ("constant scaling", "0.5 shortcut, 0.5 F", "12.35"),
    ("exclusive gating", "b_g = -6", "8.70"),
    ("shortcut-only gating", "b_g = -6", "6.91"),
    ("1×1 conv shortcut", "", "12.22"),
    ("dropout shortcut", "ratio 0.5", "fail"),
]
# He et al. 2016, Table 2: activation placement, test error % (ResNet-110 / ResNet-164).
ACTIVATION_PLACEMENT = [
    ("original", "6.61", "5.93"),
    ("BN after addition", "8.17", "6.50"),
    ("ReLU before addition", "7.84", "6.14"),
    ("ReLU-only pre-activation", "6.71", "5.91"),
    ("full pre-activation", "6.37", "5.46"),
]


Number = int | float | Fraction


@dataclass(frozen=True)
class Sensitivity:
    """How much a plain layer's output and a residual branch must change when the target mapping
    H(x) moves from ``h_before`` to ``h_after`` for the input ``x``, as exact fractions."""

    x: Fraction
    h_before: Fraction
    h_after: Fraction

    @property
    def f_before(self) -> Fraction:
        """The residual the branch learns: F(x) = H(x) - x."""
        return self.h_before - self.x

    @property
    def f_after(self) -> Fraction:
        return self.h_after - self.x

    @property
    def plain_change(self) -> Fraction:
        """Relative change of a plain layer's output, which is H itself: (H' - H) / H."""
        return (self.h_after - self.h_before) / self.h_before

    @property
    def residual_change(self) -> Fraction:
        """Relative change of the residual branch: (F' - F) / F."""
        return (self.f_after - self.f_before) / self.f_before

    @property
    def ratio(self) -> Fraction:
        """How many times larger F's relative change is: H / F (the same absolute change divided by
        the smaller quantity)."""
        return self.h_before / self.f_before


def _exact(value: Number, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number, got {value}")
        # the shortest decimal that reads back as this float: what a person typed (6.1, not
        # 6.0999999999999996447...), so 6 -> 6.1 -> 6.2 gives exactly 1/61 and exactly 1
        return Fraction(repr(value))
    return Fraction(value)


def sensitivity(x: Number, h_before: Number, h_after: Number) -> Sensitivity:
    """The notes' example for any numbers: plain and residual relative changes when H(x) moves from
    ``h_before`` to ``h_after``. Refuses a target of 0 (no relative change of a plain output that is
    0) and a target equal to the input (F = 0: the residual's relative change is undefined)."""
    s = Sensitivity(_exact(x, "x"), _exact(h_before, "H(x) before"), _exact(h_after, "H(x) after"))
    if s.h_before == 0:
        raise ConfigError("H(x) before is 0, so a plain layer's relative change is undefined: choose a nonzero H(x)")
    if s.f_before == 0:
        raise ConfigError("H(x) before equals x, so the residual F(x) = H(x) − x is 0 and its relative change "
                          "is undefined: choose H(x) different from x")
    return s


class _ToyBlock(nn.Module):
    """F(x) = W2 relu(W1 x), He-initialised and damped, in a d-dimensional space."""

    def __init__(self, d: int, scale: float, g: torch.Generator) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(d, d, generator=g, dtype=torch.float64) * (2.0 / d) ** 0.5)
        self.w2 = nn.Parameter(torch.randn(d, d, generator=g, dtype=torch.float64) * (1.0 / d) ** 0.5 * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1.T) @ self.w2.T


def scaled_shortcut_gradients(lambdas: Sequence[float], depth: int, *, residual_scale: float = 0.1,
                              width: int = 64, batch: int = 32, seed: int = 0) -> pd.DataFrame:
    """Gradient norm ratio ||dE/dx_0|| / ||dE/dx_L|| through L blocks x_{l+1} = lambda x_l + F(x_l),
    at every depth 1..L, for each lambda. With F = 0 (``residual_scale=0``) it is exactly lambda^l."""
    if depth < 1 or depth > 1000:
        raise ConfigError(f"depth must be between 1 and 1000, got {depth}")
    if any(lam <= 0 for lam in lambdas):
        raise ConfigError("shortcut scales must be positive")
    g = torch.Generator().manual_seed(seed)
    blocks = [_ToyBlock(width, residual_scale, g) for _ in range(depth)]
    x0 = torch.randn(batch, width, generator=g, dtype=torch.float64)
    rows = []
    for lam in lambdas:
        xs = [x0.clone().requires_grad_(True)]
        h = xs[0]
        for b in blocks:
            h = lam * h + b(h)
            h.retain_grad()
            xs.append(h)
        # E = <h, v> for a fixed random v: dE/dx_L = v, so the ratio isolates the chain's Jacobian
        v = torch.randn(h.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        (h * v).sum().backward()
        top = float(v.norm())
        for layer in range(depth + 1):
            # gradient that reaches x_{L-layer} from the top, i.e. through `layer` blocks
            grad = xs[depth - layer].grad
            if grad is None:  # pragma: no cover - every x_i retained its gradient above
                raise RuntimeError(f"no gradient reached block {depth - layer}")
            rows.append({"lambda": lam, "blocks": layer, "ratio": float(grad.norm()) / top,
                         "lambda^blocks": lam ** layer})
    return pd.DataFrame(rows)
