"""One description of a residual block, derived from the spec: the single place a block's structure
is written down.

A :class:`BlockPlan` lists the ordered ops of the residual branch F and of the shortcut s (module
name, kind, kernel, stride, channels, groups, bias) and how the two combine: y = F(x) + s(x), then
whatever follows the add (a ReLU, BN + ReLU, or nothing). The builder (:mod:`analysis.models`), the cost tracer (:mod:`analysis.costs`), the
block-comparison terms (:mod:`analysis.blocks`), the diagrams (through the trace), the checkpoint
shape check and the lesion/path engines (through the built block's ``forward(x, keep_residual)`` and
``combine``) all read it. A new block variant changes :func:`block_ops` / :func:`shortcut_ops` /
:func:`after_add` here and nothing else.

He et al. 2016's variants are plan data too: the shortcut variant (``combine``: y = a * s(x) + b * F(x)
with a, b = 1, 1 for the identity; lambda, 1 or 1 - lambda for constant scaling; 1 - g, g for
exclusive gating and 1 - g, 1 for shortcut-only gating, g = sigmoid(gate(x)) from a 1x1 conv with
bias; dropout on s(x) at training time) and the activation placement (which ops end F and which
follow the add).

Names are torchvision's (``conv1``, ``bn1``, ``relu``, ``downsample.0``) because they are state_dict
keys, diagram node ids and lesion labels at once.

References: He et al. 2015 (Fig. 5 blocks; Sec. 3.3 shortcut options A/B/C), He et al. 2016 (Fig. 4e
full pre-activation: BN-ReLU-conv, nothing after the add), torchvision v1.5 (bottleneck stride on
the 3x3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from .specs import (
    EXPANSION,
    Activation,
    BlockType,
    Downsampling,
    ResNetSpec,
    ShortcutOption,
    ShortcutVariant,
    StridePlacement,
)

OpKind = Literal["conv", "bn", "relu", "pad", "maxpool"]
ShortcutKind = Literal["identity", "projection", "pad", "none"]


@dataclass(frozen=True)
class Op:
    """One operation inside a block. ``name`` is the module name inside the block (a key prefix)."""

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
        return self.kernel ** self.dims

    @property
    def kernel_label(self) -> str:
        """'3x3' or '3' (a 1-D kernel is its width)."""
        return "x".join([str(self.kernel)] * self.dims)

    @property
    def weight_count(self) -> int:
        """Learned values of this op: conv kernel (+ bias), BN gamma + beta; 0 for relu/pad/pool."""
        if self.kind == "conv":
            return self.kernel_elems * (self.cin // self.groups) * self.cout + (self.cout if self.bias else 0)
        if self.kind == "bn":
            return 2 * self.cout
        return 0


@dataclass(frozen=True)
class BlockPlan:
    """A residual block of a spec: where it sits, what its two paths do, how they join."""

    name: str  # torchvision module name, e.g. "layer2.0"
    stage: int  # 0-based stage index
    index: int  # 0-based position inside the stage
    block: BlockType
    cin: int
    cout: int
    stride: int  # of the block's convs (after ``entry``)
    residual_ops: tuple[Op, ...]
    shortcut_ops: tuple[Op, ...]  # empty: identity (residual) or no shortcut at all (plain)
    shortcut: ShortcutKind
    after_add: tuple[Op, ...]  # original: (relu,); BN after addition: (bn, relu); pre-activation: ()
    combine: ShortcutVariant = "identity"
    scale: float = 1.0  # a for "scale": y = scale * s(x) + F(x) (* (1 - scale) if scale_residual)
    scale_residual: bool = False
    gate: Op | None = None  # the gates' 1x1 conv (with bias) from x to one value per output channel
    gate_bias: float = 0.0  # its initial bias b_g
    dropout: float = 0.0  # drop ratio on s(x) while training ("dropout" variant)
    dims: int = 2
    # ops applied to the block input before both paths: VDCNN's max pool /2 at the start of a stage
    # (Conneau et al. 2017), so y = F(P(x)) + s(P(x)) and a deleted branch still halves the length
    entry: tuple[Op, ...] = ()

    @property
    def total_stride(self) -> int:
        """How much the block shrinks its input: its entry pool times its convs' stride."""
        return self.stride * math.prod(op.stride for op in self.entry)

    @property
    def activation_after_add(self) -> bool:
        """A ReLU follows the add (post-activation blocks)."""
        return any(op.kind == "relu" for op in self.after_add)

    @property
    def stage_name(self) -> str:
        return f"layer{self.stage + 1}"

    @property
    def residual(self) -> bool:
        """False for a plain-net block: y = F(x), no shortcut."""
        return self.shortcut != "none"

    @property
    def downsample(self) -> bool:
        """The block changes stride or width, so its shortcut (or its entry pool) cannot be an identity."""
        return changes_shape(self.cin, self.cout, self.total_stride)

    @property
    def ops(self) -> tuple[Op, ...]:
        """Every op of the block (branch, shortcut, gate, after the add); shared modules repeat."""
        return (self.entry + self.residual_ops + self.shortcut_ops + ((self.gate,) if self.gate else ())
                + self.after_add)


def branch_modules(plan: BlockPlan) -> list[Op]:
    """The block's own modules (branch and after-add ops, each shared name once: the one ``relu``;
    "BN after addition" moves bn2/bn3 there) in torchvision's registration order: conv1, bn1, conv2,
    bn2, (conv3, bn3), relu. state_dict keys follow registration order; the shortcut's modules
    (``downsample``) and the gate come after these."""
    unique: dict[str, Op] = {}
    for op in plan.residual_ops + plan.after_add:
        unique.setdefault(op.name, op)

    def key(op: Op) -> tuple[int, int]:
        digits = "".join(ch for ch in op.name if ch.isdigit())
        return (int(digits) if digits else 99, {"conv": 0, "bn": 1}.get(op.kind, 2))

    return sorted(unique.values(), key=key)


def changes_shape(cin: int, cout: int, stride: int) -> bool:
    """A block whose output shape differs from its input's (stride or width): a "downsampling" block."""
    return stride != 1 or cin != cout


def shortcut_kind(option: ShortcutOption, residual: bool, cin: int, cout: int, stride: int) -> ShortcutKind:
    """He et al. 2015, Sec. 3.3: A zero-pads where the shape changes, B projects only there, C
    projects on every block. A plain net has none."""
    if not residual:
        return "none"
    changes = changes_shape(cin, cout, stride)
    if option == "A":
        return "pad" if changes else "identity"
    if option == "B" and not changes:
        return "identity"
    return "projection"


def shortcut_ops(kind: ShortcutKind, cin: int, cout: int, stride: int, preact: bool) -> tuple[Op, ...]:
    """The shortcut's ops. Pre-activation nets project the raw block input without a BN after it
    (the next block's BN-ReLU normalises it): He et al. 2016, Fig. 4e."""
    if kind == "pad":
        return (Op("downsample", "pad", cin, cout, stride=stride),)
    if kind == "projection":
        conv = Op("downsample.0", "conv", cin, cout, kernel=1, stride=stride)
        return (conv,) if preact else (conv, Op("downsample.1", "bn", cout, cout))
    return ()


def _unit(i: int, cin: int, cout: int, kernel: int, stride: int, groups: int, preact: bool,
          last: bool, activation: Activation = "original") -> list[Op]:
    """One conv with its BN and ReLU, placed as He et al. 2016, Fig. 4 says:
    original (a) conv-BN-ReLU, the last ReLU waits for the add; BN after addition (b) the same but the
    last BN waits for the add too; ReLU before addition (c) conv-BN-ReLU everywhere; ReLU-only
    pre-activation (d) ReLU-conv-BN; full pre-activation (e) BN-ReLU-conv (the BN sees the conv's
    *input* channels)."""
    conv = Op(f"conv{i}", "conv", cin, cout, kernel=kernel, stride=stride, groups=groups)
    if preact:
        return [Op(f"bn{i}", "bn", cin, cin), Op("relu", "relu", cin, cin), conv]
    bn, relu = Op(f"bn{i}", "bn", cout, cout), Op("relu", "relu", cout, cout)
    if activation == "relu_preact":
        return [Op("relu", "relu", cin, cin), conv, bn]
    if last and activation == "bn_after_add":
        return [conv]
    if last and activation == "original":
        return [conv, bn]
    return [conv, bn, relu]


def block_ops(block: BlockType, cin: int, width: int, cout: int, stride: int, *, groups: int = 1,
              stride_on: StridePlacement = "3x3", preact: bool = False,
              activation: Activation = "original") -> tuple[Op, ...]:
    """The residual branch F. BasicBlock: 3x3 (cin->width, stride), 3x3 (width->cout). Bottleneck:
    1x1 reduce (cin->width), 3x3 (width->width, grouped for ResNeXt), 1x1 expand (width->cout); the
    stride sits on the 3x3 (torchvision v1.5) or on the first 1x1 (the paper's v1)."""
    if block == "basic":
        units = [(cin, width, 3, stride, 1), (width, cout, 3, 1, 1)]
    else:
        s1, s3 = (1, stride) if stride_on == "3x3" else (stride, 1)
        units = [(cin, width, 1, s1, 1), (width, width, 3, s3, groups), (width, cout, 1, 1, 1)]
    ops: list[Op] = []
    for i, (a, b, k, s, g) in enumerate(units, start=1):
        ops += _unit(i, a, b, k, s, g, preact, last=i == len(units), activation=activation)
    return tuple(ops)


def after_add(block: BlockType, cout: int, preact: bool, activation: Activation = "original") -> tuple[Op, ...]:
    """What follows the add. Original blocks: ReLU; BN after addition: the branch's last BN, then
    ReLU; full pre-activation, ReLU before addition and ReLU-only pre-activation leave the sum
    untouched, so the identity path between blocks is clean (He et al. 2016, Sec. 4)."""
    if preact or activation in ("relu_before_add", "relu_preact"):
        return ()
    relu = Op("relu", "relu", cout, cout)
    if activation == "bn_after_add":
        return (Op("bn2" if block == "basic" else "bn3", "bn", cout, cout), relu)
    return (relu,)


def make_plan(*, name: str, stage: int, index: int, block: BlockType, cin: int, width: int, cout: int,
              stride: int, groups: int = 1, stride_on: StridePlacement = "3x3", preact: bool = False,
              option: ShortcutOption = "B", residual: bool = True, activation: Activation = "original",
              variant: ShortcutVariant = "identity", scale: float = 1.0, scale_residual: bool = False,
              gate_bias: float = 0.0, dropout: float = 0.0, dims: int = 2, conv_bias: bool = False,
              downsampling: Downsampling = "stride") -> BlockPlan:
    """A block from its numbers (the block-comparison page uses this directly). ``dims`` makes every
    op 1-D or 2-D; ``conv_bias`` gives the branch's convs a bias; ``downsampling="maxpool"`` halves
    the input with a 3-wide max pool in front of the block, whose convs then keep stride 1."""
    entry: tuple[Op, ...] = ()
    if downsampling == "maxpool" and stride > 1:
        entry, stride = (Op("pool", "maxpool", cin, cin, kernel=3, stride=stride),), 1
    plan = _make_plan(name=name, stage=stage, index=index, block=block, cin=cin, width=width, cout=cout,
                      stride=stride, groups=groups, stride_on=stride_on, preact=preact, option=option,
                      residual=residual, activation=activation, variant=variant, scale=scale,
                      scale_residual=scale_residual, gate_bias=gate_bias, dropout=dropout)
    if dims == 2 and not conv_bias and not entry:
        return plan

    def adapt(op: Op, branch: bool = False) -> Op:
        return dataclasses.replace(op, dims=dims, bias=op.bias or (branch and conv_bias and op.kind == "conv"))

    return dataclasses.replace(
        plan, dims=dims, entry=tuple(adapt(op) for op in entry),
        residual_ops=tuple(adapt(op, branch=True) for op in plan.residual_ops),
        shortcut_ops=tuple(adapt(op) for op in plan.shortcut_ops),
        after_add=tuple(adapt(op) for op in plan.after_add),
        gate=None if plan.gate is None else adapt(plan.gate))


def _make_plan(*, name: str, stage: int, index: int, block: BlockType, cin: int, width: int, cout: int,
               stride: int, groups: int, stride_on: StridePlacement, preact: bool, option: ShortcutOption,
               residual: bool, activation: Activation, variant: ShortcutVariant, scale: float,
               scale_residual: bool, gate_bias: float, dropout: float) -> BlockPlan:
    kind = shortcut_kind(option, residual, cin, cout, stride)
    gated = residual and variant in ("gate", "shortcut_gate")
    return BlockPlan(
        name=name, stage=stage, index=index, block=block, cin=cin, cout=cout, stride=stride,
        residual_ops=block_ops(block, cin, width, cout, stride, groups=groups, stride_on=stride_on,
                               preact=preact, activation=activation),
        shortcut_ops=shortcut_ops(kind, cin, cout, stride, preact),
        shortcut=kind, after_add=after_add(block, cout, preact, activation),
        combine=variant if residual else "identity",
        scale=scale if residual and variant == "scale" else 1.0,
        scale_residual=residual and variant == "scale" and scale_residual,
        # the gate sees the block input and must match the output's shape: stride like the block
        gate=Op("gate", "conv", cin, cout, kernel=1, stride=stride, bias=True) if gated else None,
        gate_bias=gate_bias if gated else 0.0,
        dropout=dropout if residual and variant == "dropout" else 0.0,
    )


def block_plans(spec: ResNetSpec) -> list[BlockPlan]:
    """Every residual block of ``spec`` in forward order. The first block of a stage takes the
    stage's stride and the change of width; the rest keep the shape."""
    plans: list[BlockPlan] = []
    cin = spec.stem_width
    for i, (n, planes, stride) in enumerate(zip(spec.layers, spec.widths, spec.stage_strides, strict=True)):
        cout = planes * EXPANSION[spec.block]
        for j in range(n):
            plans.append(make_plan(
                name=f"layer{i + 1}.{j}", stage=i, index=j, block=spec.block, cin=cin,
                width=spec.inner_width(i), cout=cout, stride=stride if j == 0 else 1, groups=spec.groups,
                stride_on=spec.stride_on, preact=spec.preact, option=spec.shortcut, residual=spec.residual,
                activation=spec.activation, variant=spec.shortcut_variant, scale=spec.shortcut_scale,
                scale_residual=spec.scale_residual, gate_bias=spec.gate_bias, dropout=spec.shortcut_dropout,
                dims=spec.dims, conv_bias=spec.conv_bias, downsampling=spec.downsampling,
            ))
            cin = cout
    return plans
