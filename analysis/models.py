"""One builder: a :class:`ResNetSpec` becomes an ``nn.Module`` in torchvision's layout.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``) so torchvision state_dicts load with ``strict=True``. Variants torchvision lacks keep the
same scheme: option-A shortcuts are a parameterless ``downsample`` module, the pre-activation net
adds a final ``bn_final`` before pooling (He et al. 2016, Fig. 4e).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .specs import ResNetSpec, validate


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def subsample_pad(x: Tensor, cout: int, stride: int) -> Tensor:
    """Subsample by striding and zero-pad channels up to ``cout`` (option A's parameter-free map)."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = cout - x.shape[1]
    if extra > 0:
        # Pad equally on both sides of the channel axis as the reference CIFAR code does.
        x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x


class PadShortcut(nn.Module):
    """Option A (He et al. 2015): subsample by striding and zero-pad the new channels. No weights."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: Tensor) -> Tensor:
        return subsample_pad(x, self.cout, self.stride)

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def make_shortcut(spec: ResNetSpec, cin: int, cout: int, stride: int) -> nn.Module | None:
    """The shortcut of one block, or None for an identity (or for a plain net)."""
    if not spec.residual:
        return None
    needs_change = stride != 1 or cin != cout
    if spec.shortcut == "A":
        return PadShortcut(cin, cout, stride) if needs_change else None
    if spec.shortcut == "B" and not needs_change:
        return None
    if spec.preact:
        # Pre-activation nets project the already normalised input: no BN on the shortcut.
        return nn.Sequential(conv1x1(cin, cout, stride))
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class ResidualBlock(nn.Module):
    """y = F(x) + s(x) (He et al. 2015, Eq. 1); post-activation blocks apply ReLU after the add,
    pre-activation blocks do not (He et al. 2016). A plain block drops the shortcut: y = F(x).
    Subclasses define ``residual_branch`` (F) and the modules it uses; module registration order
    stays theirs, so state_dict keys keep torchvision's order."""

    residual: bool
    preact: bool
    relu: nn.ReLU
    downsample: nn.Module | None

    def residual_branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual_branch(x)
        if self.residual:
            out = out + self.shortcut(x)
        return out if self.preact else self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs. Post-activation: y = relu(bn2(conv2(relu(bn1(conv1 x)))) + s(x)).
    Pre-activation: y = conv2(relu(bn2(conv1(relu(bn1 x))))) + s(x)."""

    def __init__(self, spec: ResNetSpec, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes
        self.residual, self.preact = spec.residual, spec.preact
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(cin if spec.preact else planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, cout)
        self.bn2 = nn.BatchNorm2d(planes if spec.preact else cout)
        self.downsample = make_shortcut(spec, cin, cout, stride)
        self.stride = stride

    def residual_branch(self, x: Tensor) -> Tensor:
        """F(x) alone (what lesion and path experiments switch on and off)."""
        if self.preact:
            out = self.conv1(self.relu(self.bn1(x)))
            return self.conv2(self.relu(self.bn2(out)))
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand x4. ``stride_on='3x3'`` is torchvision's
    v1.5; ``'1x1'`` is the paper's v1 (stride 2 on the first 1x1)."""

    expansion = 4

    def __init__(self, spec: ResNetSpec, cin: int, planes: int, stride: int, width: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.residual, self.preact = spec.residual, spec.preact
        s1, s3 = (1, stride) if spec.stride_on == "3x3" else (stride, 1)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(cin if spec.preact else width)
        self.conv2 = conv3x3(width, width, s3, spec.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(width if spec.preact else cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(spec, cin, cout, stride)
        self.stride = stride

    def residual_branch(self, x: Tensor) -> Tensor:
        if self.preact:
            out = self.conv1(self.relu(self.bn1(x)))
            out = self.conv2(self.relu(self.bn2(out)))
            return self.conv3(self.relu(self.bn3(out)))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


Block = BasicBlock | Bottleneck


class ResNet(nn.Module):
    """torchvision's ResNet layout, driven by a spec. ``stages`` lists ``layer1..layerN``."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        validate(spec)
        self.spec = spec
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(spec.in_channels, spec.stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(spec.in_channels, spec.stem_width)
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if spec.stem == "imagenet" else None
        cin = spec.stem_width
        self.stage_names: list[str] = []
        for i, (n, planes, stride) in enumerate(zip(spec.layers, spec.widths, spec.stage_strides, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n):
                s = stride if j == 0 else 1
                if spec.block == "basic":
                    blocks.append(BasicBlock(spec, cin, planes, s))
                else:
                    blocks.append(Bottleneck(spec, cin, planes, s, spec.inner_width(i)))
                cin = planes * spec.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.bn_final = nn.BatchNorm2d(cin) if spec.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He (Kaiming) normal init as in torchvision; BN gamma=1, beta=0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self.stage_names]

    def blocks(self) -> list[tuple[str, Block]]:
        """Every residual block with its torchvision name, in forward order."""
        return [(f"{sn}.{j}", b) for sn in self.stage_names for j, b in enumerate(getattr(self, sn))]

    def stem(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x) if self.maxpool is not None else x

    def head(self, x: Tensor) -> Tensor:
        if self.bn_final is not None:
            x = self.relu(self.bn_final(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def build_model(spec: ResNetSpec | str) -> ResNet:
    """Build the network for a spec (or a built-in name)."""
    if isinstance(spec, str):
        from .specs import get_spec

        spec = get_spec(spec)
    return ResNet(spec)
