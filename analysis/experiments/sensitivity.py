"""How big a correction each block of a trained net makes: the notes' sensitivity argument measured.

The reference notes argue (x = 6, H(x) = 6.1 -> 6.2, :func:`analysis.arch.theory.sensitivity`) that a
residual block learns a small correction F(x) = H(x) - x, so when the block's target H moves by some
amount, F must change by H/F times more, relatively, than a plain layer's whole output would. On a
trained net the ratio is measured per block, over the test inputs, in eval mode:

- x: what the shortcut adds (the block input, or its option-A subsampled and zero-padded copy, or
  its projection; scaled or gated as the variant's join weighs it);
- F: what the residual branch adds (weighted by the join as well);
- H = x + F: the block's target mapping, the sum before the ReLU that follows the add.

For a plain block (no shortcut) the branch is the whole block, so H = F and ``f_over_h`` is exactly 1;
its x is the input as an option-A shortcut would carry it (subsampled and zero-padded), so that
``f_over_x`` says how large the block's output is next to its input.

Norms are taken over the whole test set (the root of the sum of squares over every input and
element), so ``h_over_f`` is exactly the reciprocal of ``f_over_h``: the factor by which F's relative
change exceeds H's when H's target moves (1 for a plain block). The parts are recomputed from each
block's input by a forward pre-hook (the same ops as the block's own forward); the hooks are removed
and the model's train/eval mode is restored however the measurement ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from analysis.arch.models import Block, ResNet
from analysis.core.errors import ConfigError

PreHook = Callable[[Any, tuple[Tensor, ...]], None]

__all__ = ["COLUMNS", "block_parts", "branch_sizes"]

COLUMNS = ["block", "stage", "downsample", "residual", "norm_x", "norm_f", "norm_h", "f_over_x", "f_over_h",
           "h_over_f"]


def block_parts(block: Block, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(x, F, H) of ``block`` for its input ``x``, as the join adds them (see the module docstring)."""
    e = block.enter(x)
    g = block.gate_value(e)
    join = block.plan.join
    f = join.branch.times(block.residual_branch(e), g)
    if not block.plan.residual:
        return block.stand_in(e), f, f
    s = join.shortcut.times(block.shortcut(e), g)
    return s, f, s + f


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def eval_pass_with_pre_hooks(model: nn.Module, hooks: Sequence[tuple[nn.Module, PreHook]], x: Tensor,
                             batch_size: int) -> None:
    """Run ``x`` through ``model`` in eval mode, in batches, with each ``(module, hook)`` registered as a
    forward pre-hook for the pass only: the hooks are removed and the model's train/eval mode restored
    however the pass ends (what the measurements of this module and of bnstudy read their inputs with)."""
    was_training = model.training
    handles = []
    try:
        model.eval()
        handles = [m.register_forward_pre_hook(h) for m, h in hooks]
        for k in range(0, len(x), batch_size):
            model(x[k:k + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def branch_sizes(model: ResNet, x: Tensor, batch_size: int = 256) -> pd.DataFrame:
    """One row per block (:data:`COLUMNS`): the norms of x, F and H over the inputs ``x`` and their
    ratios, measured in eval mode."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if len(x) == 0:
        raise ConfigError("no inputs to measure the blocks on")
    blocks = model.blocks()
    sums = [[0.0, 0.0, 0.0] for _ in blocks]

    def recorder(i: int, block: Block) -> Any:
        def pre(_module: Any, args: tuple[Tensor, ...]) -> None:
            for j, t in enumerate(block_parts(block, args[0])):
                sums[i][j] += float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2  # summed in float64
        return pre

    eval_pass_with_pre_hooks(model, [(b, recorder(i, b)) for i, (_, b) in enumerate(blocks)], x, batch_size)
    rows = []
    for (name, b), (sx, sf, sh) in zip(blocks, sums, strict=True):
        nx, nf, nh = math.sqrt(sx), math.sqrt(sf), math.sqrt(sh)
        rows.append({"block": name, "stage": b.plan.stage_name, "downsample": b.plan.downsample,
                     "residual": b.plan.residual, "norm_x": nx, "norm_f": nf, "norm_h": nh,
                     "f_over_x": _ratio(nf, nx), "f_over_h": _ratio(nf, nh), "h_over_f": _ratio(nh, nf)})
    return pd.DataFrame(rows, columns=COLUMNS)
