"""One builder: a :class:`ResNetSpec` becomes an ``nn.Module`` in torchvision's layout.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``) so torchvision state_dicts load with ``strict=True``. Variants torchvision lacks keep the
same scheme: option-A shortcuts are a parameterless ``downsample`` module, the pre-activation net
adds a final ``bn_final`` before pooling (He et al. 2016, Fig. 4e).

Blocks are built from their :class:`~analysis.arch.blockplan.BlockPlan`: this module knows how to turn an
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

from analysis.arch.blockplan import BlockPlan, NetPlan, branch_modules, net_plan
from analysis.arch.ops import PadShortcut, bn_layer, conv_layer, make_layer, maxpool_layer, run_op, subsample_pad
from analysis.arch.specs import ResNetSpec, validate

__all__ = ["BATCHNORMS", "CONVS", "Block", "PadShortcut", "ResNet", "bn_layer", "build_model", "conv_layer",
           "init_weights", "maxpool_layer", "state_dict_shapes", "subsample_pad"]


CONVS = (nn.Conv1d, nn.Conv2d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


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
            x = run_op(op, getattr(self, op.name), x)
        return x

    def residual_branch(self, x: Tensor) -> Tensor:
        """F(x) alone: the plan's residual ops in order."""
        for i, op in enumerate(self.plan.residual_ops):
            if i == 0 and op.kind == "relu":
                # ReLU-only pre-activation starts F with the shared in-place ReLU, but its input is
                # the block input, which the shortcut still carries: work on a copy
                x = x.clone()
            x = run_op(op, getattr(self, op.name), x)
        return x

    def shortcut(self, x: Tensor) -> Tensor:
        """s(x): identity, or the projection / zero-padding of a shape-changing block; the dropout
        variant drops elements of it while training (He et al. 2016, Fig. 2f), scaled by 1/(1-p)
        so that s(x) is unchanged in expectation and the identity at test time. The paper's variant
        ("dropout_paper") is the same mask here, then (1 - p) at the join (its coefficient): mask * s(x)
        in training, (1 - p) * s(x) at test time."""
        s = x if self.downsample is None else self.downsample(x)
        p = self.plan.join.dropout
        if p and self.training:
            keep = torch.rand(s.shape, generator=self.noise) >= p
            s = s * keep.to(device=s.device, dtype=s.dtype) / (1 - p)
        return s

    def gate_value(self, x: Tensor) -> Tensor | None:
        """g(x) = sigmoid(W_g x + b_g) for the gated variants (one value per output element), else None."""
        return None if self.gate is None else torch.sigmoid(self.gate(x))

    def combine(self, r: Tensor | None, s: Tensor | None, g: Tensor | None = None) -> Tensor:
        """Join the branch ``r`` = F(x) and the shortcut ``s`` (``None``: that path is removed) by the
        plan's :class:`~analysis.arch.blockplan.Join`: y = a * s + b * r, then the ops after the add.
        ``g`` is the gate's value for the gated variants."""
        join = self.plan.join
        if join.gated and g is None:
            raise RuntimeError(f"{self.plan.name}: a gated block needs its gate value g(x)")
        out = join.add(r, s, g)
        for op in join.after:
            if op.kind == "relu" and out is s:
                out = F.relu(out)  # a lone unscaled shortcut may be x itself: never modify it in place
            else:
                out = run_op(op, getattr(self, op.name), out)
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
        join = self.plan.join.label
        extra = "" if join == "+" else f", join={join}"
        return f"{self.plan.name}: {self.plan.block}, shortcut={self.plan.shortcut}{extra}"


class ResNet(nn.Module):
    """torchvision's ResNet layout, built from the spec's :class:`~analysis.arch.blockplan.NetPlan`:
    the stem's modules, ``layer1..layerN`` of blocks, the head's modules, registered in that order
    (the state_dict's order). ``stage_names`` lists ``layer1..layerN``."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        validate(spec)
        self.spec = spec
        self.plan: NetPlan = net_plan(spec)
        self.plans = list(self.plan.blocks)
        # one local generator for the dropout shortcut's masks (train.py seeds it per run)
        self.noise = torch.Generator().manual_seed(0)
        for op in self.plan.stem:
            if op.name not in self._modules:
                self.add_module(op.name, make_layer(op))
        self.stage_names: list[str] = self.plan.stage_names
        for i, name in enumerate(self.stage_names):
            self.add_module(name, nn.Sequential(*(Block(p, self.noise) for p in self.plans if p.stage == i)))
        for op in self.plan.head:
            if op.name not in self._modules:
                self.add_module(op.name, make_layer(op))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self.stage_names]

    def blocks(self) -> list[tuple[str, Block]]:
        """Every residual block with its torchvision name, in forward order."""
        return [(f"{sn}.{j}", b) for sn in self.stage_names for j, b in enumerate(getattr(self, sn))]

    def stem(self, x: Tensor) -> Tensor:
        for op in self.plan.stem:
            x = run_op(op, getattr(self, op.name), x)
        return x

    def head(self, x: Tensor) -> Tensor:
        for op in self.plan.head:
            x = run_op(op, getattr(self, op.name), x)
        return x

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
        from analysis.arch.specs import get_spec

        spec = get_spec(spec)
    with torch.device("meta"):
        model = ResNet(spec)
    model = model.to_empty(device="cpu")
    init_weights(model, generator if generator is not None else torch.Generator().manual_seed(seed))
    return model


def state_dict_shapes(spec: ResNetSpec) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of ``build_model(spec)`` with its shape, in order, from the plan alone
    (nothing allocated): what a checkpoint must hold to load into this spec."""
    return net_plan(spec).state_shapes()
