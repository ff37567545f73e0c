"""Why identity shortcuts matter, measured (He et al. 2016, "Identity Mappings in Deep Residual
Networks", Sec. 3): with x_{l+1} = lambda * x_l + F(x_l), the signal and the gradient between blocks
l and L carry a factor lambda^(L-l), which explodes for lambda > 1 and vanishes for lambda < 1;
with lambda = 1 the gradient keeps its "1 +" term and reaches every block undiminished.
"""

from __future__ import annotations

from collections.abc import Sequence

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
