"""torchvision compatibility helpers: deterministic weights for cross-library checks."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def deterministic_state_dict(shapes: Mapping[str, torch.Size | tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Weights that depend only on the key names and shapes, scaled so deep nets stay finite.

    Used to compare our models with torchvision's without shipping megabytes of weights: both load
    the same state_dict and must give the same outputs.
    """
    out: dict[str, torch.Tensor] = {}
    for i, (key, shape) in enumerate(shapes.items()):
        g = torch.Generator().manual_seed(1000 + i)
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:  # conv / fc weight: He-scaled, then damped so residual sums stay bounded
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in) * 0.5
        elif key.endswith("weight"):  # BN gamma
            out[key] = 0.5 + 0.5 * torch.rand(shape, generator=g)
        else:  # biases
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def deterministic_input(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))
