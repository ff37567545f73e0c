"""Shared test helpers: run a built model and record what PyTorch itself reports."""

from __future__ import annotations

import torch
import torchinfo
from torch import nn

from analysis.models import build_model
from analysis.specs import ResNetSpec


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchinfo_mult_adds(model: nn.Module, spec: ResNetSpec) -> int:
    s = torchinfo.summary(model, input_size=(1, *spec.input_shape()),
                          verbose=0, device="cpu")
    return int(s.total_mult_adds)


def hooked_shapes(spec: ResNetSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output C×H×W) of every leaf-module call, in execution order."""
    model = build_model(spec).eval()
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            handles.append(mod.register_forward_hook(
                lambda m, i, o, name=name: seen.append((name, tuple(o.shape[1:]) if o.dim() == 4
                                                        else (o.shape[1], 1, 1)))))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.input_shape()))
    finally:
        for h in handles:
            h.remove()
    return seen
