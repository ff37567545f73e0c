"""One description of a net, derived from the spec: the single place its structure is written down.

A :class:`NetPlan` is the stem's ops, the residual blocks' plans and the head's ops. A :class:`BlockPlan` lists the ordered ops of the residual branch F and of the shortcut s (module
name, kind, kernel, stride, channels, groups, bias) and how the two combine: y = F(x) + s(x), then
whatever follows the add (a ReLU, BN + ReLU, or nothing). The builder (:mod:`analysis.arch.models`), the cost tracer (:mod:`analysis.arch.costs`), the
block-comparison terms (:mod:`analysis.arch.blocks`), the diagrams (through the trace), the checkpoint
shape check and the lesion/path engines (through the built block's ``forward(x, keep_residual)`` and
``combine``) all read it. A new block variant changes :func:`block_ops` / :func:`shortcut_ops` /
:func:`after_add` here and nothing else.

He et al. 2016's variants are plan data too: the shortcut variant (a :class:`Join`: y = a * s(x) + b * F(x)
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

from torch import Tensor

from analysis.arch.ops import Flow, Op, flow
from analysis.arch.specs import (
    EXPANSION,
    KMAX_FC,
    KMAX_K,
    Activation,
    BlockType,
    Downsampling,
    Head,
    ResNetSpec,
    ShortcutOption,
    ShortcutVariant,
    StemType,
    StridePlacement,
)

ShortcutKind = Literal["identity", "projection", "pad", "none"]


CoefKind = Literal["one", "const", "learned", "gate", "one_minus_gate"]


@dataclass(frozen=True)
class Coef:
    """What multiplies one path at the add: 1, a constant, a learned vector (ConvNeXt's and CaiT's
    layer scale gamma, found in opened graphs), the gate g(x) or 1 - g(x)."""

    kind: CoefKind = "one"
    value: float = 1.0  # the constant of "const"

    @property
    def gated(self) -> bool:
        return self.kind in ("gate", "one_minus_gate")

    @property
    def elementwise_ops(self) -> int:
        """Element-wise operations per output element: a multiply, and for 1 - g the subtraction too."""
        return {"one": 0, "const": 1, "learned": 1, "gate": 1, "one_minus_gate": 2}[self.kind]

    def label(self, path: str) -> str:
        """'s', '0.3·s', 'g·F', '(1−g)·s'."""
        return {"one": path, "const": f"{self.value:g}·{path}", "learned": f"γ·{path}", "gate": f"g·{path}",
                "one_minus_gate": f"(1−g)·{path}"}[self.kind]

    def times(self, t: Tensor, g: Tensor | None) -> Tensor:
        """``t`` weighted by this coefficient (``g``: the gate's value, needed by the gated kinds)."""
        if self.kind == "one":
            return t
        if self.kind == "const":
            return self.value * t
        if self.kind == "learned":  # the vector is a weight of the opened net, run by its own graph
            raise RuntimeError("a learned coefficient is applied by the net that holds it")
        if g is None:
            raise RuntimeError("a gated join needs its gate value g(x)")
        return g * t if self.kind == "gate" else (1 - g) * t


@dataclass(frozen=True)
class Join:
    """How a residual unit's two paths meet: y = after(a · s(x) + b · F(x)).

    ``shortcut`` and ``branch`` are the coefficients a and b (He et al. 2015: 1 and 1; He et al. 2016,
    Fig. 2: constant scaling lambda and 1 or 1 - lambda, exclusive gating 1 - g and g, shortcut-only
    gating 1 - g and 1), ``dropout`` the drop ratio on s(x) while training (Fig. 2f), ``after`` the
    ops that follow the add (a ReLU, BN + ReLU, or nothing for pre-activation). The forward pass,
    the join's FLOP count and its diagram label all derive from these fields; nothing in them is
    ResNet-specific, so a unit found in any traced graph fills the same record."""

    shortcut: Coef = Coef()
    branch: Coef = Coef()
    dropout: float = 0.0
    after: tuple[Op, ...] = ()

    @property
    def gated(self) -> bool:
        """Either coefficient reads the gate g(x)."""
        return self.shortcut.gated or self.branch.gated

    @property
    def elementwise_ops(self) -> int:
        """Multiplies and subtractions per output element before the add: lambda * s (+ (1 - lambda) * F);
        1 - g, (1 - g) * s (+ g * F)."""
        return self.shortcut.elementwise_ops + self.branch.elementwise_ops

    @property
    def label(self) -> str:
        """The add node's label: '+', or the weighted sum (He et al. 2016, Fig. 2)."""
        if self.dropout and self.shortcut.kind == "const":  # the paper's: kept values not rescaled
            return f"{self.shortcut.label('s')} + F (s dropped {self.dropout:.0%} in training, not rescaled)"
        if self.dropout:
            return f"+ (s dropped {self.dropout:.0%} in training)"
        if self.shortcut.kind == self.branch.kind == "one":
            return "+"
        return f"{self.shortcut.label('s')} + {self.branch.label('F')}"

    @property
    def activation_after_add(self) -> bool:
        """A ReLU follows the add (post-activation units)."""
        return any(op.kind == "relu" for op in self.after)

    def add(self, r: Tensor | None, s: Tensor | None, g: Tensor | None) -> Tensor:
        """a · s + b · r before the ops after the add; ``None``: that path is removed (a lesion).
        A lone, unweighted shortcut is returned as it is (it may be the block input itself)."""
        if s is not None:
            s = self.shortcut.times(s, g)
        if r is not None:
            r = self.branch.times(r, g)
        if r is None:
            if s is None:
                raise RuntimeError("a residual unit needs its branch, its shortcut or both")
            return s
        return r if s is None else r + s


def variant_join(variant: ShortcutVariant, after: tuple[Op, ...], *, scale: float = 1.0,
                 scale_residual: bool = False, dropout: float = 0.0) -> Join:
    """He et al. 2016's shortcut variants as joins: the one place a variant name is read."""
    if variant == "scale":
        return Join(Coef("const", scale), Coef("const", 1 - scale) if scale_residual else Coef(), after=after)
    if variant == "gate":
        return Join(Coef("one_minus_gate"), Coef("gate"), after=after)
    if variant == "shortcut_gate":
        return Join(Coef("one_minus_gate"), Coef(), after=after)
    if variant == "dropout":
        return Join(dropout=dropout, after=after)
    if variant == "dropout_paper":
        # mask * s(x), not rescaled (He et al. 2016, Fig. 2f: E = (1 - p) s(x)), written as (1 - p) times the
        # inverted dropout: mask * s / (1 - p) * (1 - p) in training, (1 - p) s(x) at test time, so both
        # modes have the same expectation and the eval-mode join is constant scaling by 1 - p
        return Join(Coef("const", 1 - dropout), dropout=dropout, after=after)
    return Join(after=after)


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
    join: Join = Join()  # coefficients, dropout and the ops after the add
    gate: Op | None = None  # the gates' 1x1 conv (with bias) from x to one value per output channel
    gate_bias: float = 0.0  # its initial bias b_g
    dims: int = 2
    # ops applied to the block input before both paths: VDCNN's max pool /2 at the start of a stage
    # (Conneau et al. 2017), so y = F(P(x)) + s(P(x)) and a deleted branch still halves the length
    entry: tuple[Op, ...] = ()

    @property
    def after_add(self) -> tuple[Op, ...]:
        """What follows the add. Original: (relu,); BN after addition: (bn, relu); pre-activation: ()."""
        return self.join.after

    @property
    def total_stride(self) -> int:
        """How much the block shrinks its input: its entry pool times its convs' stride."""
        return self.stride * math.prod(op.stride for op in self.entry)

    @property
    def activation_after_add(self) -> bool:
        """A ReLU follows the add (post-activation blocks)."""
        return self.join.activation_after_add

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
        join=dataclasses.replace(plan.join, after=tuple(adapt(op) for op in plan.after_add)),
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
        shortcut=kind,
        join=variant_join(variant if residual else "identity", after_add(block, cout, preact, activation),
                          scale=scale, scale_residual=scale_residual, dropout=dropout),
        # the gate sees the block input and must match the output's shape: stride like the block
        gate=Op("gate", "conv", cin, cout, kernel=1, stride=stride, bias=True) if gated else None,
        gate_bias=gate_bias if gated else 0.0,
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


@dataclass(frozen=True)
class NetPlan:
    """A whole net as data: the stem's ops, the residual blocks in forward order and the head's ops,
    on an input of ``in_channels`` x ``input_size`` (x ``input_size`` in 2-D). Stem and head op
    names are module names of the net itself (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``bn_final``, ``avgpool``, ``fc``); an op may be applied more than once (the shared ``relu``)."""

    stem: tuple[Op, ...]
    blocks: tuple[BlockPlan, ...]
    head: tuple[Op, ...]
    in_channels: int
    input_size: int
    dims: int = 2

    @property
    def input(self) -> Flow:
        return Flow(self.in_channels, (self.input_size,) * self.dims)

    @property
    def stage_names(self) -> list[str]:
        return list(dict.fromkeys(b.stage_name for b in self.blocks))

    @property
    def feature_head(self) -> tuple[Op, ...]:
        """The head's ops before its pooling (a pre-activation net's final BN and ReLU): they belong
        to the features, not to the classifier."""
        ops: list[Op] = []
        for op in self.head:
            if op.kind in ("avgpool", "kmax", "fc"):
                break
            ops.append(op)
        return tuple(ops)

    def modules(self) -> list[tuple[str, Op]]:
        """Every module with its full name, each once, in the builder's registration order (which is
        the state_dict's order): stem, each block (entry, branch, shortcut, gate), head."""
        out: dict[str, Op] = {}
        for op in self.stem:
            out.setdefault(op.name, op)
        for b in self.blocks:
            for op in [*b.entry, *branch_modules(b)]:
                out.setdefault(f"{b.name}.{op.name}", op)
            for op in [*b.shortcut_ops, *((b.gate,) if b.gate else ())]:
                out.setdefault(f"{b.name}.{op.name}", op)
        for op in self.head:
            out.setdefault(op.name, op)
        return list(out.items())

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every state_dict key of the built net with its shape, in order (nothing allocated)."""
        return {f"{name}.{key}": shape for name, op in self.modules() for key, shape in op.state_shapes()}

    @property
    def params(self) -> int:
        """Learned values of the whole net."""
        return sum(op.weight_count for _, op in self.modules())

    @property
    def total_stride(self) -> int:
        """How much stem and blocks shrink the input before the head."""
        return math.prod(op.stride for op in self.stem) * math.prod(b.total_stride for b in self.blocks)

    def feature_sizes(self) -> dict[str, int]:
        """Side of the feature map (or length) leaving the stem and each stage, following every op of
        the main path (``{"stem": 56, "layer1": 56, ...}`` for resnet50 at 224 px)."""
        x = self.input
        for op in self.stem:
            x = flow(op, x)
        sizes = {"stem": x.side}
        for b in self.blocks:
            for op in b.entry + b.residual_ops:
                x = flow(op, x)
            sizes[b.stage_name] = x.side
        return sizes


def stem_ops(spec: ResNetSpec) -> tuple[Op, ...]:
    """The stem of ``spec`` (see :func:`stem_of`)."""
    return stem_of(spec.stem, spec.in_channels, spec.stem_width, dims=spec.dims, bias=spec.conv_bias)


def stem_of(stem: StemType, cin: int, width: int, *, dims: int = 2, bias: bool = False) -> tuple[Op, ...]:
    """ImageNet: 7-wide conv /2, BN, ReLU, 3-wide max pool /2; CIFAR (and 1-D conv stems): 3-wide
    conv, BN, ReLU; VDCNN: a 3-wide temporal conv alone, no BN or ReLU (Conneau et al. 2017); none:
    nothing, the first block sees the input."""
    if stem == "none":
        return ()
    wide = stem == "imagenet"
    ops = [Op("conv1", "conv", cin, width, kernel=7 if wide else 3, stride=2 if wide else 1, bias=bias, dims=dims)]
    if stem != "vdcnn":
        ops += [Op("bn1", "bn", width, width, dims=dims), Op("relu", "relu", width, width, dims=dims)]
    if wide:
        ops.append(Op("maxpool", "maxpool", width, width, kernel=3, stride=2, dims=dims))
    return tuple(ops)


def head_ops(spec: ResNetSpec, cout: int) -> tuple[Op, ...]:
    """The head of ``spec`` on ``cout`` features (see :func:`head_of`)."""
    return head_of(cout, spec.num_classes, preact=spec.preact, dims=spec.dims, head=spec.head)


def head_of(cout: int, classes: int, *, preact: bool = False, dims: int = 2, head: Head = "gap") -> tuple[Op, ...]:
    """Full pre-activation nets end with BN + ReLU (He et al. 2016, Fig. 4e: the last block leaves
    its sum un-normalised); every net then pools globally and classifies with a biased fc, or
    (``head="kmax"``, Conneau et al. 2017, Sec. 3) k-max pools (k = 8) and classifies with fc 2048, ReLU,
    fc 2048, ReLU, fc: the last fc keeps the name ``fc``, so the classifier is ``fc`` either way."""
    final = (Op("bn_final", "bn", cout, cout, dims=dims), Op("relu", "relu", cout, cout, dims=dims)) if preact else ()
    if head == "kmax":
        relu = Op("relu", "relu", KMAX_FC, KMAX_FC, dims=dims)
        return final + (Op("kmax", "kmax", cout, cout * KMAX_K, kernel=KMAX_K, dims=dims),
                        Op("fc1", "fc", cout * KMAX_K, KMAX_FC, bias=True, dims=dims), relu,
                        Op("fc2", "fc", KMAX_FC, KMAX_FC, bias=True, dims=dims), relu,
                        Op("fc", "fc", KMAX_FC, classes, bias=True, dims=dims))
    return final + (Op("avgpool", "avgpool", cout, cout, dims=dims), Op("fc", "fc", cout, classes, bias=True, dims=dims))


def head_difference(cout: int, classes: int) -> int:
    """Parameters the paper's k-max head (k-max pooling + fc 2048 + fc 2048 + fc) has beyond the global
    pooling head (+ one fc) on ``cout`` features for ``classes`` classes: read off the two heads' ops
    (neither depends on the sequence length, so no length is needed)."""
    def params(head: Head) -> int:
        return sum(op.weight_count for op in head_of(cout, classes, dims=1, head=head))

    return params("kmax") - params("gap")


def head_choice(head: Head, cout: int, classes: int) -> str:
    """A head as a picker offers it, the global pooling head labelled with what it leaves out of the
    paper's (its parameter difference, computed)."""
    if head == "kmax":
        return f"the paper's: {KMAX_K}-max pool, fc {KMAX_FC:,}, fc {KMAX_FC:,}, fc (Conneau et al. 2017)"
    return f"ours: global avg pool, fc ({head_difference(cout, classes):,} parameters fewer than the paper's)"


def net_plan(spec: ResNetSpec) -> NetPlan:
    """The whole net of ``spec`` as a plan."""
    blocks = tuple(block_plans(spec))
    return NetPlan(stem=stem_ops(spec), blocks=blocks, head=head_ops(spec, blocks[-1].cout),
                   in_channels=spec.in_channels, input_size=spec.input_size, dims=spec.dims)


def total_stride(spec: ResNetSpec) -> int:
    """How much the stem and the stages shrink the input, read off the net plan's ops."""
    return net_plan(spec).total_stride


def feature_sizes(spec: ResNetSpec) -> dict[str, int]:
    """Side of the square feature map (or length) leaving the stem and each stage (``{"stem": 56,
    "layer1": 56, ...}`` for resnet50 at 224 px), traced through the net plan's ops."""
    return net_plan(spec).feature_sizes()


def _stages_on_one_pixel(spec: ResNetSpec) -> list[str]:
    """The stages that get a 1x1 map as input (the last stage getting a 1x1 map out is normal)."""
    entries = list(feature_sizes(spec).items())
    return [stage for (_, before), (stage, _) in zip(entries, entries[1:], strict=False) if before == 1]


def small_input_note(spec: ResNetSpec) -> str | None:
    """A sentence for an input so small that whole stages work on single pixels, else ``None``.
    Such a net runs, and every cost of it is exact; it is just not the net anyone trains. The note
    names the smallest input at which no stage starts from a 1x1 map."""
    stages = _stages_on_one_pixel(spec)
    if not stages:
        return None
    # Each stride-s step takes n to ceil(n / s), so the last stage's input is ceil(n / S) with S the
    # stride before it: larger than 1x1 exactly when n > S.
    smallest = total_stride(spec) // spec.stage_strides[-1] + 1
    which = stages[0] if len(stages) == 1 else ", ".join(stages[:-1]) + f" and {stages[-1]}"
    if spec.dims == 1:
        return (f"At {spec.input_size} samples the sequence is down to 1 sample before {stages[0]}, so {which} "
                f"{'works' if len(stages) == 1 else 'work'} on single samples (each 3-wide conv sees one sample "
                f"and its zero padding). The net runs and every number here is exact for it; from {smallest} "
                f"samples on, every stage gets more than one.")
    return (f"At {spec.input_size} px the feature map is down to 1×1 before {stages[0]}, so {which} "
            f"{'works' if len(stages) == 1 else 'work'} on single pixels (each 3×3 conv sees one pixel and "
            f"its zero padding) and the classifier sees one pixel per channel. The net runs and every "
            f"number here is exact for it; from {smallest} px on, every stage gets a map larger than 1×1.")
