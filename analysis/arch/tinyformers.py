"""Small pre-norm transformers for the embedded datasets, and their no-residual twins.

Two families, each one class with its sizes as arguments and a ``residual`` flag:

- :class:`TinyViT`: a ViT on the 16×16 digits (1 channel): p×p patches embedded by a strided conv,
  a class token, learned positions, pre-norm blocks, a final LayerNorm and a linear head on the
  class token (Dosovitskiy et al. 2021, at toy size);
- :class:`SeqTransformer`: MNIST-1D's 40 samples as 40 tokens, each sample embedded by one linear
  map (1 → width), learned positions, the same blocks, mean pooling over the tokens and a head.

A residual block is ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))`` (two residual units); its
plain twin is ``x = attn(norm1(x)); x = mlp(norm2(x))``: the same weights, no adds. Module names are
timm's (``blocks.N.norm1/attn/norm2/mlp``, ``attn.qkv``, ``mlp.fc1``), with the attention and MLP of
:mod:`analysis.arch.examples`, so these read as a user's exported timm-style net does.

The nets take inputs normalised as the ResNets' are: the Dataset's own per-channel mean/std is
applied to the data (and recorded in the metadata), not inside the net. Weights are drawn from a
local ``torch.Generator`` (:func:`build`), never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from analysis.arch.examples import Attention, Mlp
from analysis.core.errors import ConfigError

__all__ = ["FAMILIES", "Block", "SeqTransformer", "TinyViT", "build", "init_weights"]


class Block(nn.Module):
    """A pre-norm transformer block: with ``residual`` two residual units, without them none."""

    def __init__(self, width: int, heads: int, hidden: int, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads, causal=False)
        self.norm2, self.mlp = nn.LayerNorm(width), Mlp(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            x = x + self.attn(self.norm1(x))
            out: Tensor = x + self.mlp(self.norm2(x))
        else:
            out = self.mlp(self.norm2(self.attn(self.norm1(x))))
        return out


def _check(width: int, heads: int, depth: int) -> None:
    if width < 1 or heads < 1 or width % heads or depth < 1:
        raise ConfigError(f"a transformer needs depth >= 1 and a width divisible by its heads, got width {width}, "
                          f"{heads} heads, depth {depth}")


class TinyViT(nn.Module):
    """A small ViT: ``(N, channels, image, image)`` → ``(N, classes)`` logits."""

    def __init__(self, image: int = 16, patch: int = 4, channels: int = 1, width: int = 64, depth: int = 4,
                 heads: int = 4, hidden: int = 128, classes: int = 10, residual: bool = True) -> None:
        super().__init__()
        _check(width, heads, depth)
        if patch < 1 or image % patch:
            raise ConfigError(f"the image side {image} must be a multiple of the patch side {patch}")
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, width))
        self.blocks = nn.Sequential(*(Block(width, heads, hidden, residual) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        out: Tensor = self.head(self.norm(self.blocks(x))[:, 0])
        return out


class SeqTransformer(nn.Module):
    """A small transformer over a sequence's samples: ``(N, channels, length)`` → ``(N, classes)``."""

    def __init__(self, length: int = 40, channels: int = 1, width: int = 64, depth: int = 4, heads: int = 4,
                 hidden: int = 128, classes: int = 10, residual: bool = True) -> None:
        super().__init__()
        _check(width, heads, depth)
        self.embed = nn.Linear(channels, width)  # each sample (its channels) is one token
        self.pos_embed = nn.Parameter(torch.zeros(1, length, width))
        self.blocks = nn.Sequential(*(Block(width, heads, hidden, residual) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x.transpose(1, 2)) + self.pos_embed
        out: Tensor = self.head(self.norm(self.blocks(x)).mean(1))
        return out


FAMILIES: dict[str, type[nn.Module]] = {"vit": TinyViT, "seq_transformer": SeqTransformer}


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """ViT's initialisation from ``generator``: linear and patch weights, class token and positions
    N(0, 0.02²) (timm truncates at ±2σ: a plain normal is close enough at this size), biases 0,
    LayerNorms 1 and 0."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif ".norm" in f".{name}" and leaf == "weight":
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)


def build(arch: Mapping[str, Any], *, seed: int = 0) -> nn.Module:
    """The net an architecture record describes (``{"family": "vit", "width": 64, ...}``, as the
    metadata of a shipped program holds it), initialised from a generator seeded with ``seed``.
    Built on the meta device first, so the global RNG is neither read nor advanced."""
    if not isinstance(arch, Mapping) or arch.get("family") not in FAMILIES:
        got = arch.get("family") if isinstance(arch, Mapping) else arch
        raise ConfigError(f"unknown transformer family {got!r}; choose from {', '.join(FAMILIES)}")
    kwargs = {k: v for k, v in arch.items() if k != "family"}
    try:
        with torch.device("meta"):
            module = FAMILIES[str(arch["family"])](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {dict(arch)!r} does not fit its family: {exc}") from None
    module = module.to_empty(device="cpu")
    init_weights(module, torch.Generator().manual_seed(seed))
    return module
