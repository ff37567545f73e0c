"""A zoo of nets in plain torch, each with the residual units it holds (or why it holds none).

Written for tests/test_graphnet.py: transformer blocks (pre-norm ViT, post-norm BERT, causal GPT),
ConvNeXt (layer scale, drop-path in eval), MobileNetV2's inverted residual, squeeze-and-excitation,
DenseNet, U-Net (concatenated and added skips), a highway layer, residual units nested inside other
units' branches (RoR), ``x + bias`` and a forward that branches on data. Small widths: the graph, not
the size, is under test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

D = 32  # transformer width
T = 5  # tokens


class Attention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention (causal for GPT)."""

    def __init__(self, d: int = D, heads: int = 4, causal: bool = False) -> None:
        super().__init__()
        self.qkv, self.proj, self.heads, self.causal = nn.Linear(d, 3 * d), nn.Linear(d, d), heads, causal

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def mlp(d: int = D) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class PreNormBlock(nn.Module):
    """ViT / GPT-2: x + attn(ln(x)), then x + mlp(ln(x)): two units, the stream never normalised."""

    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = nn.LayerNorm(D), Attention(causal=causal), nn.LayerNorm(D), mlp()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class PostNormBlock(nn.Module):
    """BERT: ln(x + attn(x)), then ln(x + mlp(x)): a LayerNorm after each add."""

    def __init__(self) -> None:
        super().__init__()
        self.attn, self.ln1, self.mlp, self.ln2 = Attention(), nn.LayerNorm(D), mlp(), nn.LayerNorm(D)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class Transformer(nn.Module):
    """A patch-free token net: embedding, ``depth`` blocks, a head on the mean token."""

    def __init__(self, block: type[nn.Module], depth: int = 2, **kw: bool) -> None:
        super().__init__()
        self.embed = nn.Linear(8, D)
        self.pos = nn.Parameter(torch.zeros(1, T, D))  # x + pos: an add of a weight, not a unit
        self.blocks = nn.Sequential(*(block(**kw) for _ in range(depth)))
        self.head = nn.Linear(D, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.embed(x) + self.pos).mean(1))


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm, MLP, layer scale gamma, drop-path (identity in eval). With
    ``nchw_scale`` gamma scales the N x C x H x W map through a view (timm's ``gamma.reshape(1, -1, 1, 1)``)."""

    def __init__(self, c: int = 16, nchw_scale: bool = False) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.pw1, self.act, self.pw2 = nn.LayerNorm(c), nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))
        self.drop_path = nn.Dropout(0.1)
        self.nchw_scale = nchw_scale

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw2(self.act(self.pw1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))))
        if self.nchw_scale:
            y = self.gamma.view(1, -1, 1, 1) * y.permute(0, 3, 1, 2)
        else:
            y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class InvertedResidual(nn.Module):
    """MobileNetV2: expand 1x1, depthwise 3x3, project 1x1; the add only at stride 1 with equal channels."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6) -> None:
        super().__init__()
        h = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
                                  nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                  nn.ReLU6(inplace=True), nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1),
                                      InvertedResidual(24, 32, 1), InvertedResidual(32, 32, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class SqueezeExcite(nn.Module):
    """Hu et al. 2018: x * sigmoid(fc(relu(fc(pool(x))))): a multiplicative gate, not a residual."""

    def __init__(self, c: int = 16, r: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class DenseBlock(nn.Module):
    """Huang et al. 2017: each layer sees the concatenation of all before it; nothing is added."""

    def __init__(self, c: int = 8, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(),
                                                  nn.Conv2d(c + i * growth, growth, 3, padding=1))
                                    for i in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class UNet(nn.Module):
    """One level of U-Net: down, up, then the encoder's map concatenated (the original) or added."""

    def __init__(self, additive: bool) -> None:
        super().__init__()
        self.additive = additive
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Conv2d(8 if additive else 16, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        e = F.relu(self.enc(x))
        u = self.up(F.relu(self.down(e)))
        return self.dec(e + u if self.additive else torch.cat([e, u], 1))


class Highway(nn.Module):
    """Srivastava et al. 2015: y = T(x) * H(x) + (1 - T(x)) * x with T a sigmoid gate."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        self.h, self.t = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.sigmoid(self.t(x))
        return t * F.relu(self.h(x)) + (1 - t) * x


class SubBlock(nn.Module):
    """z + conv(z): the innermost unit."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.conv(z)


class NestedBlock(nn.Module):
    """y + conv2(relu(sub(conv1(y)))): a residual block whose branch holds a residual sub-block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.sub, self.conv2 = nn.Conv2d(c, c, 1), SubBlock(c), nn.Conv2d(c, c, 1)

    def forward(self, y: Tensor) -> Tensor:
        return y + self.conv2(F.relu(self.sub(self.conv1(y))))


class ResidualOfResidual(nn.Module):
    """Zhang et al. 2017's RoR, one level deeper: x + group(x), the group two nested blocks, each
    block's branch a residual sub-block. Units three deep: each names the innermost unit around it."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.group = nn.Sequential(NestedBlock(c), NestedBlock(c))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.group(x)


class PlusBias(nn.Module):
    """x + b for a learned b: an add, but of a weight, not of a function of x."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bias = nn.Linear(D, D), nn.Parameter(torch.zeros(D))

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x) + self.bias


class DataDependent(nn.Module):
    """A forward that branches on the values: one graph cannot hold both paths."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            return self.lin(x)
        return x


class TanhGELUMLP(nn.Module):
    """An MLP with GELU written out (Hendrycks & Gimpel's tanh form): x + 0.044715·x³ is an add of
    a tensor and a function of it, but a function without weights: no residual unit."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        h = 0.5 * h * (1 + torch.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        return self.fc2(h)
