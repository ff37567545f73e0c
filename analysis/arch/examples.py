"""Example nets beyond the spec table, written in plain torch and opened like a user's own file: a
ViT-B/16 (Dosovitskiy et al. 2021, 86,567,656 parameters) and a GPT-2-small-sized decoder, each
exported on the meta device (shapes only: no weights are allocated) and read through
:func:`~analysis.arch.graphnet.open_program`, exactly as an uploaded ``.pt2`` is.

Module names follow timm's (``blocks.3.attn.qkv``, ``blocks.3.mlp.fc1``), so a user's exported timm
ViT and this one read the same. Attention runs through ``scaled_dot_product_attention`` (the op
an exported timm or Hugging Face model carries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.graphnet import GraphNet, export_module, open_program
from analysis.core.errors import ConfigError


class Attention(nn.Module):
    """Multi-head self-attention: one qkv projection, SDPA, an output projection."""

    def __init__(self, width: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: two residual units, x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, hidden: int, causal: bool = False) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads, causal)
        self.norm2, self.mlp = nn.LayerNorm(width), Mlp(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT: 16×16 patches embedded by a strided conv, a class token, learned positions, pre-norm
    blocks, a final LayerNorm and a linear head on the class token."""

    def __init__(self, image: int = 224, patch: int = 16, width: int = 768, depth: int = 12, heads: int = 12,
                 hidden: int = 3072, classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, width))
        self.blocks = nn.Sequential(*(Block(width, heads, hidden) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class GPT(nn.Module):
    """A decoder-only language model: token and position embeddings, causal pre-norm blocks, a final
    LayerNorm and an unembedding tied to the token embedding (GPT-2's weight tying)."""

    def __init__(self, vocab: int = 50257, context: int = 1024, width: int = 768, depth: int = 12,
                 heads: int = 12) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads, 4 * width, causal=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix, counted once

    def forward(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.lm_head(self.norm(self.blocks(self.wte(ids) + self.wpe(pos))))


@dataclass(frozen=True)
class Example:
    label: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32


EXAMPLES: dict[str, Example] = {
    "vit_b16": Example("ViT-B/16 (86.6 M parameters, 224×224)", VisionTransformer, (1, 3, 224, 224)),
    "gpt2_small": Example("GPT-2-small-sized decoder (124 M parameters, 128 tokens)", GPT, (1, 128), torch.int64),
}


def example_net(name: str) -> GraphNet:
    """An example exported on the meta device (no weights allocated) and read as a program."""
    if name not in EXAMPLES:
        raise ConfigError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    ex = EXAMPLES[name]
    with torch.device("meta"):
        module = ex.make().eval()
    example = torch.zeros(ex.input_shape, dtype=ex.dtype, device="meta")
    return open_program(export_module(module, (example,), name=name), name=name)
