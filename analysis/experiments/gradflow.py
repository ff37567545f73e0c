"""Gradient flow: how much gradient reaches each residual block while a net trains.

He et al. 2016 (Sec. 3) argue that the identity shortcut lets the gradient of the loss reach every
block undiminished (the "1 +" term), where a plain net multiplies it by one layer's Jacobian after
another. :class:`GradientRecorder` measures that on a real training run: every ``every`` optimiser
steps it records, for each block,

- ``kind == "input"``: the gradient reaching the block's input, ‖∂ℓ/∂x_i‖₂ per image, averaged
  over the batch. ℓ is the batch's *summed* loss (B times the mean loss the optimiser minimises), so
  with a one-image batch this is exactly that image's gradient, and the number does not shrink as
  the batch grows. (BatchNorm in training mode couples the images, so it is the gradient the image
  received within its batch.)
- ``kind == "params"``: ‖∂L/∂θ‖₂ over all of the block's parameters (branch convs and BNs, a
  projection shortcut, a gate) with L the batch's *mean* loss: the gradient the optimiser step
  uses, before momentum and weight decay. It is the mean of the per-image gradients, so it is on the
  same per-image scale as the input norm; the two kinds are compared across blocks and steps, never
  with each other.

Records are a :class:`pandas.DataFrame` with the columns of :data:`COLUMNS`, one row per
(recorded step, kind, block), blocks in forward order:

======  =====================================================================================
step    the global optimiser step, 0-based (0: the first batch, at initialisation); recorded
        when ``step % every == 0``, before that step's update
epoch   the 1-based epoch the step belongs to
block   the block's torchvision name, e.g. ``layer2.0``
stage   the block's stage, 1-based (``layer2`` -> 2)
kind    ``"input"`` or ``"params"``
norm    the gradient norm described above (float, >= 0; NaN where no gradient reached a
        block's input, e.g. behind a frozen stem)
======  =====================================================================================

So a run has ``snapshots × blocks × 2`` rows. Recording reads gradients and never writes them: a run
trained with and without recording has identical weights and history (tests/test_gradflow.py).
The hooks exist only inside the ``with`` block and are removed on the way out, whatever happens.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from analysis.arch.models import ResNet
from analysis.core.errors import ConfigError

__all__ = ["COLUMNS", "KINDS", "GradientRecorder", "block_names", "check_every", "depth_ratio", "empty_frame",
           "frame", "snapshot_steps"]

COLUMNS = ("step", "epoch", "block", "stage", "kind", "norm")
KINDS = ("input", "params")
DTYPES = {"step": "int64", "epoch": "int64", "block": "object", "stage": "int64", "kind": "object",
          "norm": "float64"}
MAX_EVERY = 1_000_000


def check_every(every: object) -> int:
    """A recording interval: 0 (off) or a whole number of steps >= 1."""
    if isinstance(every, bool) or not isinstance(every, numbers.Integral):
        raise ConfigError(f"the gradient recording interval must be a whole number of steps, got {every!r}")
    if not 0 <= int(every) <= MAX_EVERY:
        raise ConfigError(f"the gradient recording interval must be between 0 (off) and {MAX_EVERY:,} steps, "
                          f"got {every}")
    return int(every)


def snapshot_steps(total_steps: int, every: int) -> list[int]:
    """The steps a run of ``total_steps`` optimiser steps records at: 0, every, 2·every, ..."""
    return list(range(0, total_steps, every)) if every > 0 else []


def _stage(name: str) -> int:
    """``layer3.4`` -> 3."""
    return int(name.split(".")[0].removeprefix("layer"))


def block_names(df: pd.DataFrame) -> list[str]:
    """The blocks of a record table in forward order (stage, then position in the stage), whatever
    order the rows come in (a CSV sorted by hand, a store)."""
    names = {str(b) for b in df["block"]}
    return sorted(names, key=lambda n: (_stage(n), int(n.split(".")[1])))


def empty_frame() -> pd.DataFrame:
    return frame([])


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Record rows (dicts with the keys of :data:`COLUMNS`) as the documented table."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return df.astype(DTYPES)


class GradientRecorder:
    """Records block gradient norms every ``every`` steps of a training loop::

        with GradientRecorder(model, every=10) as rec:
            for step, (x, y) in enumerate(batches):
                rec.arm(step, epoch)          # a recorded step?
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(); loss.backward()
                rec.collect()                 # after backward, before opt.step()
                opt.step()
        df = rec.frame()

    A forward pre-hook on each block registers, on recorded steps only, a tensor hook on the
    block's input that takes the norm of the gradient arriving there; :meth:`collect` reads the
    parameter gradients and writes the rows. On other steps the pre-hooks return at once, so the
    cost is a Python call per block. ``rows`` is the live list of records (a caller that is stopped
    mid-run keeps what was recorded); a step interrupted between :meth:`arm` and :meth:`collect`
    adds nothing, so every recorded step has all its rows.
    """

    def __init__(self, model: ResNet, every: int) -> None:
        self.model = model
        self.every = check_every(every)
        if self.every == 0:
            raise ConfigError("a GradientRecorder needs an interval of at least 1 step (0 means: do not record)")
        self.blocks = model.blocks()
        self.rows: list[dict[str, Any]] = []
        self._handles: list[RemovableHandle] = []
        self._armed: tuple[int, int] | None = None
        self._inputs: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> GradientRecorder:
        try:
            for name, block in self.blocks:
                self._handles.append(block.register_forward_pre_hook(self._pre_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def remove(self) -> None:
        """Take every hook off the model (the tensor hooks die with their step's graph)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._armed = None
        self._inputs.clear()

    # ------------------------------------------------------------------ per step
    def arm(self, step: int, epoch: int) -> bool:
        """Get ready for global step ``step`` (0-based) of ``epoch`` (1-based); True if it is recorded."""
        self._inputs.clear()
        self._armed = (step, epoch) if step % self.every == 0 else None
        return self._armed is not None

    def _pre_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if self._armed is None or not args or not torch.is_grad_enabled():
                return
            x = args[0]
            if isinstance(x, Tensor) and x.requires_grad:
                x.register_hook(self._tensor_hook(name))

        return hook

    def _tensor_hook(self, name: str) -> Any:
        def hook(grad: Tensor) -> None:
            # per-image norms of the summed loss's gradient: B x the mean loss's (module docstring);
            # kept as a tensor, read once in collect(), so the backward pass is not synchronised
            # once per block on a GPU
            self._inputs[name] = grad.detach().flatten(1).norm(dim=1).mean() * grad.shape[0]

        return hook

    def collect(self) -> None:
        """After ``backward()`` (before the optimiser step): write the armed step's rows."""
        if self._armed is None:
            return
        step, epoch = self._armed
        self._armed = None
        rows: list[dict[str, Any]] = []
        for name, _ in self.blocks:
            # NaN, not 0, where no gradient reached the input (a frozen stem): nothing was measured
            norm = float(self._inputs[name]) if name in self._inputs else math.nan
            rows.append(self._row(step, epoch, name, "input", norm))
        for name, block in self.blocks:
            squares = [p.grad.detach().float().pow(2).sum() for p in block.parameters() if p.grad is not None]
            norm = math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0
            rows.append(self._row(step, epoch, name, "params", norm))
        self._inputs.clear()
        self.rows.extend(rows)

    @staticmethod
    def _row(step: int, epoch: int, name: str, kind: str, norm: float) -> dict[str, Any]:
        return {"step": step, "epoch": epoch, "block": name, "stage": _stage(name), "kind": kind, "norm": norm}

    def frame(self) -> pd.DataFrame:
        return frame(self.rows)


def depth_ratio(df: pd.DataFrame, kind: str = "input", step: int | None = None) -> float:
    """Gradient norm at the first block over that at the last, at ``step`` (default: the first
    recorded step). Below 1 the gradient shrinks on its way down to the early blocks."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    sub = df[df["kind"] == kind]
    if sub.empty:
        raise ConfigError(f"no {kind} gradient records")
    at = int(sub["step"].min()) if step is None else step
    sub = sub[sub["step"] == at].set_index("block")["norm"]
    if sub.empty:
        raise ConfigError(f"no {kind} gradient records at step {at}")
    names = block_names(sub.reset_index())
    return float(sub[names[0]] / sub[names[-1]])
