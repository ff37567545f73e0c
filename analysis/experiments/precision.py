"""Arithmetic precision and memory layout of a computation: the one place training, evaluation,
lesion sweeps, path measurements and transfer probes get their autocast from.

* ``fp32``: no autocast; the numbers every stored result was made with.
* ``bf16``: ``torch.autocast(device, torch.bfloat16)``. Convolutions and matmuls run in bf16 (8-bit
  mantissa) with fp32 accumulation; weights, BatchNorm statistics and the optimiser stay fp32. On the
  CPU only where it has bf16 matrix units (:func:`analysis.core.machine.check_cpu_bf16`).
* ``fp16``: CUDA only, with a gradient scaler in training.

Channels-last (NHWC) applies to 2-D nets: oneDNN's convolutions run fastest on it, and with bf16 it
is what lets AMX tiles be fed without reordering every activation. A 1-D net's activations are
N x C x L, which has no channels-last layout in torch, so it is refused for 1-D nets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import Tensor, nn

from analysis.core.errors import ConfigError
from analysis.core.machine import check_cpu_bf16

M = TypeVar("M", bound=nn.Module)
#: Precisions a person can pick for evaluation (lesion sweeps, path measurements, transfer probes).
EVAL_PRECISIONS = ("fp32", "bf16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: str = "cpu") -> None:
    """Refuse a precision this device cannot run fast (before any work)."""
    if precision not in ("fp32", *DTYPES):
        raise ConfigError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("fp16 runs on CUDA only; the CPU computes in fp32 or bf16")
    if precision == "bf16" and not device.startswith("cuda"):
        check_cpu_bf16()


@contextlib.contextmanager
def autocast(precision: str, device: str = "cpu") -> Iterator[None]:
    """``torch.autocast`` for bf16/fp16 on ``device``'s type; nothing at all for fp32. The autocast
    state is thread-local in torch, so two sessions computing at once do not see each other's."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device.partition(":")[0], dtype=dtype):
        yield


def check_layout(channels_last: bool, dims: int) -> None:
    if channels_last and dims != 2:
        raise ConfigError(f"channels-last is a layout of 2-D images (N x H x W x C); a {dims}-D net's activations "
                          "(N x C x L) have none: train it without channels-last")


def to_layout(model: M, channels_last: bool) -> M:
    """The model, its 4-D weights converted in place to channels-last (or back to the default layout);
    values unchanged. (torch's stubs leave ``memory_format`` out of ``Module.to``; torch takes it.)"""
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # type: ignore[call-overload]
    return model


def batch_layout(x: Tensor, channels_last: bool) -> Tensor:
    """A 4-D batch in channels-last when asked; anything else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
