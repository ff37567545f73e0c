"""One builder: a :class:`ResNetSpec` becomes an ``nn.Module`` in torchvision's layout.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``) so torchvision state_dicts load with ``strict=True``. Variants torchvision lacks keep the
same scheme: option-A shortcuts are a parameterless ``downsample`` module, the pre-activation net
adds a final ``bn_final`` before pooling (He et al. 2016, Fig. 4e).

Blocks are built from their :class:`~analysis.blockplan.BlockPlan`: this module knows how to turn an
op into a layer and how to run a plan, not what any block looks like.

Weights are initialised from a local ``torch.Generator`` (the model is first built on the ``meta``
device, so construction draws nothing from the global RNG): two threads building models at once
cannot change each other's weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blockplan import BlockPlan, Op, block_plans, branch_modules
from .specs import ResNetSpec, validate


def subsample_pad(x: Tensor, cout: int, stride: int) -> Tensor:
    """Subsample by striding and zero-pad channels up to ``cout`` (option A's parameter-free map);
    ``x`` is N x C x L or N x C x H x W."""
    spatial = x.dim() - 2
    if stride > 1:
        x = x[(slice(None), slice(None)) + (slice(None, None, stride),) * spatial]
    extra = cout - x.shape[1]
    if extra > 0:
        # Pad equally on both sides of the channel axis as the reference CIFAR code does.
        x = F.pad(x, (0, 0) * spatial + (extra // 2, extra - extra // 2))
    return x


def conv_layer(dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
               bias: bool = False) -> nn.Module:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=bias)


def bn_layer(dims: int, c: int) -> nn.Module:
    return nn.BatchNorm1d(c) if dims == 1 else nn.BatchNorm2d(c)


def maxpool_layer(dims: int, kernel: int, stride: int, padding: int) -> nn.Module:
    return nn.MaxPool1d(kernel, stride, padding) if dims == 1 else nn.MaxPool2d(kernel, stride, padding)


CONVS = (nn.Conv1d, nn.Conv2d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class PadShortcut(nn.Module):
    """Option A (He et al. 2015): subsample by striding and zero-pad the new channels. No weights."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: Tensor) -> Tensor:
        return subsample_pad(x, self.cout, self.stride)

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def make_layer(op: Op) -> nn.Module:
    """The torch module for one op of a plan."""
    if op.kind == "conv":
        return conv_layer(op.dims, op.cin, op.cout, op.kernel, stride=op.stride, padding=op.padding,
                          groups=op.groups, bias=op.bias)
    if op.kind == "bn":
        return bn_layer(op.dims, op.cout)
    if op.kind == "relu":
        return nn.ReLU(inplace=True)
    if op.kind == "maxpool":
        return maxpool_layer(op.dims, op.kernel, op.stride, op.padding)
    return PadShortcut(op.cin, op.cout, op.stride)


class Block(nn.Module):
    """A residual block run from its plan: y = combine(F(x), s(x)) (He et al. 2015, Eq. 1).

    ``forward(x, keep_residual=False)`` is the block with its residual branch deleted, as lesion
    experiments need it (Veit et al. 2016): the shortcut alone through the block's own combine rule;
    a plain block has no shortcut, so it becomes a parameter-free pass-through instead."""

    downsample: nn.Module | None

    def __init__(self, plan: BlockPlan, noise: torch.Generator | None = None) -> None:
        super().__init__()
        self.plan = plan
        # the dropout shortcut's masks come from this local generator, never the global RNG
        self.noise = noise if noise is not None else torch.Generator().manual_seed(0)
        for op in plan.entry:  # parameterless (VDCNN's pool): no state_dict key moves
            self.add_module(op.name, make_layer(op))
        for op in branch_modules(plan):
            self.add_module(op.name, make_layer(op))
        if not plan.shortcut_ops:
            self.downsample = None
        elif plan.shortcut_ops[0].kind == "pad":
            self.downsample = make_layer(plan.shortcut_ops[0])
        else:
            self.downsample = nn.Sequential(*(make_layer(op) for op in plan.shortcut_ops))
        # no torchvision counterpart: registered last, so the torchvision keys keep their order
        self.gate = make_layer(plan.gate) if plan.gate is not None else None  # b_g: init_weights

    def enter(self, x: Tensor) -> Tensor:
        """What both paths see: the block input, or VDCNN's max pool of it. ``residual_branch``,
        ``shortcut`` and ``gate_value`` take the entered input."""
        for op in self.plan.entry:
            x = getattr(self, op.name)(x)
        return x

    def residual_branch(self, x: Tensor) -> Tensor:
        """F(x) alone: the plan's residual ops in order."""
        for i, op in enumerate(self.plan.residual_ops):
            if i == 0 and op.kind == "relu":
                # ReLU-only pre-activation starts F with the shared in-place ReLU, but its input is
                # the block input, which the shortcut still carries: work on a copy
                x = x.clone()
            x = getattr(self, op.name)(x)
        return x

    def shortcut(self, x: Tensor) -> Tensor:
        """s(x): identity, or the projection / zero-padding of a shape-changing block; the dropout
        variant drops elements of it while training (He et al. 2016, Fig. 2f), scaled by 1/(1-p)
        so that s(x) is unchanged in expectation and the identity at test time."""
        s = x if self.downsample is None else self.downsample(x)
        p = self.plan.dropout
        if p and self.training:
            keep = torch.rand(s.shape, generator=self.noise) >= p
            s = s * keep.to(device=s.device, dtype=s.dtype) / (1 - p)
        return s

    def gate_value(self, x: Tensor) -> Tensor | None:
        """g(x) = sigmoid(W_g x + b_g) for the gated variants (one value per output element), else None."""
        return None if self.gate is None else torch.sigmoid(self.gate(x))

    def combine(self, r: Tensor | None, s: Tensor | None, g: Tensor | None = None) -> Tensor:
        """Join the branch ``r`` = F(x) and the shortcut ``s`` (``None``: that path is removed):
        y = a * s + b * r with the plan's weights (1, 1; lambda, 1 or 1 - lambda; 1 - g, g; 1 - g, 1),
        then the ops after the add. ``g`` is the gate's value for the gated variants."""
        p = self.plan
        if p.gate is not None and g is None:
            raise RuntimeError(f"{p.name}: a gated block needs its gate value g(x)")
        given = s
        if s is not None:
            if p.combine == "scale":
                s = p.scale * s
            elif g is not None:
                s = (1 - g) * s
        if r is not None:
            if p.combine == "scale" and p.scale_residual:
                r = (1 - p.scale) * r
            elif p.combine == "gate" and g is not None:
                r = g * r
        if r is None:
            if s is None:
                raise RuntimeError(f"{p.name}: a block needs its branch, its shortcut or both")
            out = s
        else:
            out = r if s is None else r + s
        for op in p.after_add:
            if op.kind == "relu" and out is given:
                out = F.relu(out)  # a lone unscaled shortcut may be x itself: never modify it in place
            else:
                out = getattr(self, op.name)(out)
        return out

    def stand_in(self, x: Tensor) -> Tensor:
        """A deleted plain block (no shortcut to keep): strided subsample, zero-pad or cut channels
        to the output width, as Veit et al. delete a layer of a VGG-style net."""
        return subsample_pad(x, self.plan.cout, self.plan.stride)[:, :self.plan.cout]

    def forward(self, x: Tensor, keep_residual: bool = True) -> Tensor:
        x = self.enter(x)
        if not keep_residual and not self.plan.residual:
            return self.stand_in(x)
        r = self.residual_branch(x) if keep_residual else None
        s = self.shortcut(x) if self.plan.residual else None
        # a deleted branch keeps the gate: the shortcut is still weighted by 1 - g(x) (the gate
        # belongs to the join, not to F), as it would be in the intact net
        return self.combine(r, s, self.gate_value(x))

    def extra_repr(self) -> str:
        extra = "" if self.plan.combine == "identity" else f", variant={self.plan.combine}"
        return f"{self.plan.name}: {self.plan.block}, shortcut={self.plan.shortcut}{extra}"


class ResNet(nn.Module):
    """torchvision's ResNet layout, driven by a spec. ``stage_names`` lists ``layer1..layerN``."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        validate(spec)
        self.spec = spec
        d = spec.dims
        self.conv1: nn.Module | None = None
        self.bn1: nn.Module | None = None
        if spec.stem == "imagenet":
            self.conv1 = conv_layer(d, spec.in_channels, spec.stem_width, 7, stride=2, padding=3, bias=spec.conv_bias)
        elif spec.stem != "none":
            self.conv1 = conv_layer(d, spec.in_channels, spec.stem_width, 3, padding=1, bias=spec.conv_bias)
        if spec.stem_norm:  # VDCNN's first temporal conv has no BN or ReLU after it
            self.bn1 = bn_layer(d, spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = maxpool_layer(d, 3, 2, 1) if spec.stem == "imagenet" else None
        self.plans = block_plans(spec)
        # one local generator for the dropout shortcut's masks (train.py seeds it per run)
        self.noise = torch.Generator().manual_seed(0)
        self.stage_names: list[str] = []
        for i in range(len(spec.layers)):
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*(Block(p, self.noise) for p in self.plans if p.stage == i)))
            self.stage_names.append(name)
        cout = self.plans[-1].cout
        self.bn_final = bn_layer(d, cout) if spec.preact else None
        self.avgpool = nn.AdaptiveAvgPool1d(1) if d == 1 else nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cout, spec.num_classes)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self.stage_names]

    def blocks(self) -> list[tuple[str, Block]]:
        """Every residual block with its torchvision name, in forward order."""
        return [(f"{sn}.{j}", b) for sn in self.stage_names for j, b in enumerate(getattr(self, sn))]

    def stem(self, x: Tensor) -> Tensor:
        if self.conv1 is not None:
            x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
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


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """torchvision's initialisation, drawn from ``generator``: He (Kaiming) normal for convs
    (fan_out, ReLU gain), BN gamma 1 / beta 0 / running stats reset, PyTorch's default uniform for
    the fc layer and for conv biases. Every parameter and buffer is written."""
    for m in model.modules():
        if isinstance(m, CONVS):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                nn.init.uniform_(m.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
        elif isinstance(m, BATCHNORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    for m in model.modules():
        # the gates' bias starts at b_g (He et al. 2016, Table 1: -6 keeps the shortcut near identity)
        if isinstance(m, Block) and isinstance(m.gate, CONVS) and m.gate.bias is not None:
            nn.init.constant_(m.gate.bias, m.plan.gate_bias)


def build_model(spec: ResNetSpec | str, *, seed: int = 0, generator: torch.Generator | None = None) -> ResNet:
    """Build the network for a spec (or a built-in name), initialised from ``generator`` (default: a
    fresh one seeded with ``seed``). The global RNG is neither read nor advanced."""
    if isinstance(spec, str):
        from .specs import get_spec

        spec = get_spec(spec)
    with torch.device("meta"):
        model = ResNet(spec)
    model = model.to_empty(device="cpu")
    init_weights(model, generator if generator is not None else torch.Generator().manual_seed(seed))
    return model


def state_dict_shapes(spec: ResNetSpec) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of ``build_model(spec)`` with its shape, in order, from the plan alone
    (nothing allocated): what a checkpoint must hold to load into this spec."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> None:
        out[f"{prefix}.weight"] = (cout, cin // groups) + (k,) * spec.dims
        if bias:
            out[f"{prefix}.bias"] = (cout,)

    def bn(prefix: str, c: int) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{key}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    if spec.stem != "none":
        conv("conv1", spec.in_channels, spec.stem_width, 7 if spec.stem == "imagenet" else 3, bias=spec.conv_bias)
    if spec.stem_norm:
        bn("bn1", spec.stem_width)
    plans = block_plans(spec)
    for p in plans:
        for op in [*branch_modules(p), *p.shortcut_ops, *((p.gate,) if p.gate else ())]:
            if op.kind == "conv":
                conv(f"{p.name}.{op.name}", op.cin, op.cout, op.kernel, op.groups, op.bias)
            elif op.kind == "bn":
                bn(f"{p.name}.{op.name}", op.cout)
    cout = plans[-1].cout
    if spec.preact:
        bn("bn_final", cout)
    out["fc.weight"] = (spec.num_classes, cout)
    out["fc.bias"] = (spec.num_classes,)
    return out
