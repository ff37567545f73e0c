"""The op registry: what each kind of op is, written once.

An :class:`Op` is one operation of a net (a conv, a BatchNorm, a ReLU, a pool, option A's zero-pad
shortcut, the fc layer). Everything a consumer needs to know about a kind sits in one
:class:`KindRule` row of :data:`REGISTRY`: the torch module that runs it, how it maps an input
:class:`Flow` (channels, sizes, receptive field, jump) to its output, what it counts (parameters,
MACs and element-wise work, the columns of the cost table), its label in diagrams and its state_dict
keys with their shapes. The builder, the cost tracer, the diagrams, the block comparison and the
checkpoint shape list read these rows and never switch on a kind themselves, so a new kind
(GroupNorm, SiLU, a squeeze-and-excitation gate) is one new row here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.specs import conv_out
from analysis.core.errors import SpecError

OpKind = Literal["conv", "bn", "relu", "pad", "maxpool", "avgpool", "fc", "layer_norm", "kmax"]


@dataclass(frozen=True)
class Op:
    """One operation. ``name`` is its module name inside its owner (a block, or the net for the stem
    and head ops): a state_dict key prefix and a diagram node id."""

    name: str
    kind: OpKind
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False
    dims: int = 2  # 1: Conv1d / BatchNorm1d / MaxPool1d over C x L; 2: over C x H x W
    pad: int | None = None  # zero padding per side; None: 'same' padding (kernel // 2)

    @property
    def padding(self) -> int:
        # 'same' padding for odd kernels: a 3x3 keeps the size at stride 1, a 1x1 needs none
        return self.kernel // 2 if self.pad is None else self.pad

    @property
    def kernel_elems(self) -> int:
        """Taps of one kernel: k (1-D) or k x k (2-D)."""
        return math.prod((self.kernel,) * self.dims)

    @property
    def kernel_label(self) -> str:
        """'3x3' or '3' (a 1-D kernel is its width)."""
        return "x".join([str(self.kernel)] * self.dims)

    @property
    def rule(self) -> KindRule:
        return REGISTRY[self.kind]

    @property
    def weight_count(self) -> int:
        """Learned values of this op (conv kernel + bias, BN gamma + beta, fc weight + bias)."""
        return sum(math.prod(shape) for _, shape, learned in self.rule.state(self) if learned)

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The op's state_dict entries (key suffix, shape), in torch's order."""
        return [(key, shape) for key, shape, _ in self.rule.state(self)]


@dataclass(frozen=True)
class Flow:
    """The tensor leaving an op, for one sample: channels, sizes (L, or H and W), receptive field
    and jump (effective stride), both in input samples or pixels along one axis."""

    c: int
    sizes: tuple[int, ...]
    rf: int = 1
    jump: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.c, *self.sizes)

    @property
    def numel(self) -> int:
        return self.c * math.prod(self.sizes)

    @property
    def positions(self) -> int:
        """Output positions per channel: L or H x W."""
        return math.prod(self.sizes)

    @property
    def side(self) -> int:
        return max(self.sizes)


def _windowed(op: Op, x: Flow, c: int) -> Flow:
    """A sliding window (conv or pool) of ``op``'s kernel, stride and padding: floor-mode sizes;
    the field grows by (k - 1) jumps (Araujo et al. 2019)."""
    return Flow(c, tuple(conv_out(n, op.kernel, op.stride, op.padding) for n in x.sizes),
                x.rf + (op.kernel - 1) * x.jump, x.jump * op.stride)


def _same(op: Op, x: Flow) -> Flow:
    return x


# ------------------------------------------------------------------------------------------- counts
def _conv_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    # ResNet convs feed a BN, so they carry no bias; the notes' Conv1d and VDCNN's do
    weights = op.kernel_elems * (op.cin // op.groups) * op.cout
    biases = op.cout if op.bias else 0
    return {"kernel": op.kernel, "stride": op.stride, "groups": op.groups, "params": weights + biases,
            "macs": weights * y.positions, "bias_adds": biases * y.positions}


def _bn_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"params": 2 * x.c, "bn_params": 2 * x.c, "bn_elems": x.numel}


def _relu_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"relu_elems": x.numel}


def _maxpool_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"kernel": op.kernel, "stride": op.stride, "pool_in_elems": x.numel, "pool_out_elems": y.numel}


def _avgpool_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"kernel": x.side, "pool_in_elems": x.numel, "pool_out_elems": y.numel}


def _fc_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"params": x.c * op.cout + op.cout, "macs": x.c * op.cout, "bias_adds": op.cout}


def _pad_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    return {"stride": op.stride}


def _layer_norm_counts(op: Op, x: Flow, y: Flow) -> dict[str, int]:
    # no spec builds a LayerNorm, and the spec cost table has no column for its work: it is costed where
    # it is found, by the graph reader (analysis.arch.graphnet: 5 FLOPs per element). Refused, not
    # under-counted, should a plan ever hold one.
    raise SpecError(f"{op.name}: the spec cost table has no column for a LayerNorm's work; open the net as a "
                    "program to cost it")


# -------------------------------------------------------------------------------------------- state
State = list[tuple[str, tuple[int, ...], bool]]  # (key suffix, shape, learned: a parameter, not a buffer)


def _conv_state(op: Op) -> State:
    out: State = [("weight", (op.cout, op.cin // op.groups) + (op.kernel,) * op.dims, True)]
    return out + [("bias", (op.cout,), True)] if op.bias else out


def _bn_state(op: Op) -> State:
    c = (op.cout,)
    return [("weight", c, True), ("bias", c, True), ("running_mean", c, False), ("running_var", c, False),
            ("num_batches_tracked", (), False)]


def _norm_state(op: Op) -> State:
    """An affine LayerNorm over ``cout`` features: its scale and shift, no running statistics."""
    return [("weight", (op.cout,), True), ("bias", (op.cout,), True)]


def _fc_state(op: Op) -> State:
    return [("weight", (op.cout, op.cin), True), ("bias", (op.cout,), True)]


def _stateless(op: Op) -> State:
    return []


# ------------------------------------------------------------------------------------------ modules
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


class PadShortcut(nn.Module):
    """Option A (He et al. 2015): subsample by striding and zero-pad the new channels. No weights."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: Tensor) -> Tensor:
        return subsample_pad(x, self.cout, self.stride)

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def conv_layer(dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
               bias: bool = False) -> nn.Module:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=bias)


def bn_layer(dims: int, c: int) -> nn.Module:
    return nn.BatchNorm1d(c) if dims == 1 else nn.BatchNorm2d(c)


def maxpool_layer(dims: int, kernel: int, stride: int, padding: int) -> nn.Module:
    return nn.MaxPool1d(kernel, stride, padding) if dims == 1 else nn.MaxPool2d(kernel, stride, padding)


def _conv_module(op: Op) -> nn.Module:
    return conv_layer(op.dims, op.cin, op.cout, op.kernel, stride=op.stride, padding=op.padding,
                      groups=op.groups, bias=op.bias)


def _avgpool_module(op: Op) -> nn.Module:
    return nn.AdaptiveAvgPool1d(1) if op.dims == 1 else nn.AdaptiveAvgPool2d((1, 1))


def _call(module: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = module(x)
    return out


def _fc_apply(module: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = module(torch.flatten(x, 1))  # N x C x 1 (x 1) -> N x C
    return out


class KMaxPool(nn.Module):
    """k-max pooling over the last (temporal) axis, order kept (Kalchbrenner et al. 2014, VDCNN's
    head): the k largest values of each channel in their original order; among equal values the
    earliest wins (ReLU leaves many zeros, and topk alone breaks such ties arbitrarily). N x C x L ->
    N x (C * k) x 1, channel by channel: the flat vector the fc layers read."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        order = torch.sort(x, dim=-1, descending=True, stable=True).indices[..., :self.k]
        picked = torch.gather(x, -1, torch.sort(order, dim=-1).values)
        return picked.flatten(1).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"


# ------------------------------------------------------------------------------------------- labels
def _down(op: Op) -> str:
    return f" /{op.stride}" if op.stride > 1 else ""


def _conv_label(op: Op) -> str:
    groups = f", groups {op.groups}" if op.groups > 1 else ""
    bias = ", bias" if op.bias and op.name != "gate" else ""
    return f"{op.name} {op.kernel_label.replace('x', '×')}, {op.cout}{groups}{bias}{_down(op)}"


@dataclass(frozen=True)
class KindRule:
    """Everything about one kind of op. ``out`` maps the input flow to the output flow; ``counts``
    gives the op's cost-table columns; ``state`` its state_dict entries; ``module`` builds its torch
    module and ``apply`` runs it; ``label`` is what a diagram writes on it."""

    out: Callable[[Op, Flow], Flow]
    counts: Callable[[Op, Flow, Flow], dict[str, int]]
    module: Callable[[Op], nn.Module]
    label: Callable[[Op], str]
    state: Callable[[Op], State] = _stateless
    apply: Callable[[nn.Module, Tensor], Tensor] = field(default=_call)


REGISTRY: dict[str, KindRule] = {
    "conv": KindRule(out=lambda op, x: _windowed(op, x, op.cout), counts=_conv_counts, module=_conv_module,
                     label=_conv_label, state=_conv_state),
    "bn": KindRule(out=_same, counts=_bn_counts, module=lambda op: bn_layer(op.dims, op.cout),
                   label=lambda op: f"{op.name} (BN)", state=_bn_state),
    "relu": KindRule(out=_same, counts=_relu_counts, module=lambda op: nn.ReLU(inplace=True),
                     label=lambda op: "ReLU"),
    "maxpool": KindRule(out=lambda op, x: _windowed(op, x, x.c), counts=_maxpool_counts,
                        module=lambda op: maxpool_layer(op.dims, op.kernel, op.stride, op.padding),
                        label=lambda op: f"max pool {op.kernel_label.replace('x', '×')}{_down(op)}"),
    # option A: x[:, :, ::s, ::s] (ceil(n / s) positions) with zero channels added; the field does not grow
    "pad": KindRule(out=lambda op, x: Flow(op.cout, tuple(-(-n // op.stride) for n in x.sizes), x.rf,
                                           x.jump * op.stride),
                    counts=_pad_counts, module=lambda op: PadShortcut(op.cin, op.cout, op.stride),
                    label=lambda op: f"zero-pad to {op.cout}{_down(op)}"),
    # global average pooling: a kernel the size of the map, so the field grows by (side - 1) jumps
    "avgpool": KindRule(out=lambda op, x: Flow(x.c, (1,) * len(x.sizes), x.rf + (x.side - 1) * x.jump,
                                               x.jump * x.side),
                        counts=_avgpool_counts, module=_avgpool_module, label=lambda op: "global avg pool"),
    "fc": KindRule(out=lambda op, x: Flow(op.cout, (1,) * len(x.sizes), x.rf, x.jump), counts=_fc_counts,
                   module=lambda op: nn.Linear(op.cin, op.cout), label=lambda op: f"fc, {op.cout}",
                   state=_fc_state, apply=_fc_apply),
    # what a post-norm transformer's unit applies after its add (BERT's ln(x + F(x))): read off graphs as a
    # unit's Join.after, normalising the last axis of ``cout`` features
    "layer_norm": KindRule(out=_same, counts=_layer_norm_counts, module=lambda op: nn.LayerNorm(op.cout),
                           label=lambda op: f"{op.name} (LayerNorm)", state=_norm_state),
    # VDCNN's k-max pooling (k = op.kernel) over the whole sequence, flattened for the fc: C x L -> C*k x 1
    # (op.cout = C * k); the field becomes the whole input, as for global pooling. Its comparisons are
    # costed from in_elems and pool_out_elems (analysis.arch.costs), not as pool_in_elems, which the
    # hook counters' conventions read as an average or max pool's input.
    "kmax": KindRule(out=lambda op, x: Flow(op.cout, (1,) * len(x.sizes), x.rf + (x.side - 1) * x.jump,
                                            x.jump * x.side),
                     counts=lambda op, x, y: {"kernel": op.kernel, "pool_out_elems": y.numel},
                     module=lambda op: KMaxPool(op.kernel), label=lambda op: f"{op.kernel}-max pool"),
}


def make_layer(op: Op) -> nn.Module:
    """The torch module for one op."""
    return op.rule.module(op)


def run_op(op: Op, module: nn.Module, x: Tensor) -> Tensor:
    """Run ``op``'s ``module`` on ``x`` (the fc layer flattens its pooled input first)."""
    return op.rule.apply(module, x)


def flow(op: Op, x: Flow) -> Flow:
    """The flow leaving ``op`` for input ``x``."""
    return op.rule.out(op, x)
