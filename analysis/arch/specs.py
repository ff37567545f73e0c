"""Architectures as data: one frozen dataclass per ResNet and one table of the built-in ones.

Everything else (the builder, the cost analysis, the dropdowns, the diagrams and the tests) reads
these specs; no module holds channel numbers of its own.

References: He et al. 2015 (Table 1 for ImageNet, Sec. 4.2 for CIFAR 6n+2 nets and shortcut options
A/B/C), He et al. 2016 (pre-activation), Zagoruyko & Komodakis 2016 (wide), Xie et al. 2017 (ResNeXt).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsIndex, TypeVar, get_args

from analysis.core.bounded import short_repr
from analysis.core.errors import SpecError

BlockType = Literal["basic", "bottleneck"]
# imagenet: 7-wide conv /2 + 3-wide max pool /2; cifar: 3-wide conv + BN + ReLU (the "conv stem" of
# 1-D nets too); vdcnn: Conneau et al. 2017's first temporal conv (3-wide, with bias, no BN or ReLU);
# none: the first block sees the input itself (the notes' seed block).
StemType = Literal["imagenet", "cifar", "vdcnn", "none"]
# How a later stage halves its size: a strided first conv (ResNet) or a 3-wide max pool /2 in front of
# the stage's first block, whose convs then keep stride 1 (VDCNN, Conneau et al. 2017, Sec. 3).
Downsampling = Literal["stride", "maxpool"]
StridePlacement = Literal["3x3", "1x1"]
ShortcutOption = Literal["A", "B", "C"]
# He et al. 2016, Fig. 2 / Table 1: what multiplies the shortcut (and the branch) at the add. The
# "1x1 conv shortcut" variant is shortcut option C; the others are:
# "dropout" is PyTorch's inverted dropout (kept values scaled by 1/(1 - p): s(x) in expectation, the
# identity at test time); "dropout_paper" is Fig. 2f as the paper argues about it: s(x) times a
# Bernoulli mask, not rescaled, so (1 - p)·s(x) in expectation, and (1 - p)·s(x) at test time.
ShortcutVariant = Literal["identity", "scale", "gate", "shortcut_gate", "dropout", "dropout_paper"]
# He et al. 2016, Fig. 4 / Table 2: where BN and ReLU sit around the add, for post-activation blocks.
# Full pre-activation (Fig. 4e) is the separate ``preact`` flag, as before.
Activation = Literal["original", "bn_after_add", "relu_before_add", "relu_preact"]
# What follows the last stage: global average pooling + one fc (ours, torchvision's), or Conneau et al.
# 2017's VDCNN head (Sec. 3): k-max pooling over the temporal axis (k = 8), then fc 2048, ReLU, fc 2048,
# ReLU, fc to the classes. 1-D nets only: k-max pooling picks along the sequence.
Head = Literal["gap", "kmax"]

# The runtime choices are read off the Literal types, so the two can never disagree.
BLOCK_TYPES: tuple[BlockType, ...] = get_args(BlockType)
STEM_TYPES: tuple[StemType, ...] = get_args(StemType)
SHORTCUT_OPTIONS: tuple[ShortcutOption, ...] = get_args(ShortcutOption)
STRIDE_PLACEMENTS: tuple[StridePlacement, ...] = get_args(StridePlacement)
SHORTCUT_VARIANTS: tuple[ShortcutVariant, ...] = get_args(ShortcutVariant)
ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)
DOWNSAMPLINGS: tuple[Downsampling, ...] = get_args(Downsampling)
HEADS: tuple[Head, ...] = get_args(Head)
KMAX_K = 8  # Conneau et al. 2017, Sec. 3: "k-max pooling ... with k = 8"
KMAX_FC = 2048  # their classifier's hidden units (two fc layers of 2048, ReLU between)
DIMS = (1, 2)  # Conv1d nets (signals, text: C x L) and Conv2d nets (images: C x H x W)

T = TypeVar("T", bound=str)


def choice(value: object, options: tuple[T, ...], what: str) -> T:
    """``value`` as one of ``options`` (e.g. a widget's or argparse's string narrowed to a Literal);
    raises ``SpecError`` naming the choices otherwise."""
    for option in options:
        if isinstance(value, str) and value == option:
            return option
    raise SpecError(f"{what} must be one of {options}, got {value!r}")


EXPANSION = {"basic": 1, "bottleneck": 4}

# Bounds that keep a custom spec analysable in well under a second; beyond them a spec is a typo,
# not an experiment.
MAX_STAGES = 8
MAX_BLOCKS_PER_STAGE = 2000
MAX_WIDTH = 1 << 16
MAX_INPUT_SIZE = 4096
MAX_SEQUENCE_LENGTH = 1 << 20  # 1-D inputs: a million samples (VDCNN reads 1,024 characters)
MAX_CHANNELS = 4096
MAX_CLASSES = 1_000_000
MAX_SHORTCUT_SCALE = 4.0  # lambda beyond this is no experiment: lambda^54 overflows float32 at 110 layers
MAX_GATE_BIAS = 20.0  # sigmoid(20) = 1 - 2e-9: further out the gate is saturated either way


@dataclass(frozen=True)
class ResNetSpec:
    """A residual network, fully described.

    ``widths`` are the per-stage *planes* in torchvision's sense: a Bottleneck stage of planes p
    outputs 4p channels, its inner 3x3 conv has ``int(p * width_per_group / 64) * groups`` channels.
    """

    name: str
    block: BlockType
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    stem: StemType = "imagenet"
    stem_width: int = 64
    strides: tuple[int, ...] | None = None  # per stage; default 1 then 2 for every later stage
    groups: int = 1
    width_per_group: int = 64
    stride_on: StridePlacement = "3x3"  # "3x3" = torchvision v1.5, "1x1" = paper v1
    shortcut: ShortcutOption = "B"
    residual: bool = True  # False: the plain twin (same layers, no shortcuts)
    preact: bool = False  # He et al. 2016 full pre-activation (BN-ReLU-conv)
    # He et al. 2016's variants (defaults: the original block). The scale, gate bias and dropout
    # ratio are read only by their own variant.
    shortcut_variant: ShortcutVariant = "identity"
    shortcut_scale: float = 0.5  # lambda of "scale": y = lambda * s(x) + F(x)
    scale_residual: bool = False  # "scale" with F(x) * (1 - lambda) as well (the paper's 0.5/0.5)
    gate_bias: float = -6.0  # initial b_g of the gates; the paper's best (shortcut near identity)
    shortcut_dropout: float = 0.5  # drop ratio of the "dropout" shortcut (training only)
    activation: Activation = "original"
    # 1-D nets (Conv1d, BatchNorm1d; input C x L with L = input_size samples) and what they need
    dims: int = 2
    conv_bias: bool = False  # the stem conv and the block's own convs carry a bias (the notes' Conv1d)
    downsampling: Downsampling = "stride"
    head: Head = "gap"  # "kmax": VDCNN's k-max pooling + fc 2048 + fc 2048 (1-D nets)
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224
    family: str = field(default="custom", compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        """Every way of making a spec (the constructor, ``dataclasses.replace``, ``replace``, JSON
        metadata) passes here: sequences become tuples, types are checked, then the architecture is
        checked. A ``ResNetSpec`` that exists can be built."""
        _coerce(self)
        _check(self)

    # ----------------------------------------------------------------- derived facts
    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    @property
    def stage_strides(self) -> tuple[int, ...]:
        if self.strides is not None:
            return self.strides
        return (1,) + (2,) * (len(self.layers) - 1)

    @property
    def num_blocks(self) -> int:
        return sum(self.layers)

    @property
    def depth(self) -> int:
        """Weighted layers as the papers count them: stem conv + convs in blocks + fc (He et al.);
        VDCNN counts convolutional layers only (Conneau et al. 2017, Table 2: 9, 17, 29, 49)."""
        per_block = 2 if self.block == "basic" else 3
        stem = 0 if self.stem == "none" else 1
        head = 0 if self.stem == "vdcnn" else 3 if self.head == "kmax" else 1
        return stem + per_block * self.num_blocks + head

    @property
    def size_unit(self) -> str:
        """What one step of ``input_size`` is: pixels (2-D) or samples (1-D)."""
        return "px" if self.dims == 2 else "samples"

    def input_shape(self) -> tuple[int, ...]:
        """One input without the batch axis: C x H x W, or C x L for a 1-D net."""
        return (self.in_channels,) + (self.input_size,) * self.dims

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(w * self.expansion for w in self.widths)

    def inner_width(self, stage: int) -> int:
        """Channels of a bottleneck's 3x3 conv: torchvision's ``int(planes * (base_width / 64.0)) *
        groups`` in exact integer arithmetic (floor division equals the float formula wherever the
        float is exact, and stays exact where it would round)."""
        if self.block == "basic":
            return self.widths[stage]
        return self.widths[stage] * self.width_per_group // 64 * self.groups

    @property
    def variant(self) -> str:
        parts = ["residual" if self.residual else "plain"]
        if self.dims == 1:
            parts.insert(0, "1-D")
        if self.preact:
            parts.append("pre-activation")
        if self.activation != "original":
            parts.append(ACTIVATION_LABELS[self.activation])
        if self.block == "bottleneck":
            parts.append("v1.5 (stride on 3x3)" if self.stride_on == "3x3" else "v1 (stride on 1x1)")
        if self.residual:
            parts.append(f"shortcut {self.shortcut}")
        if self.residual and self.shortcut_variant != "identity":
            parts.append(self.variant_label)
        if self.head == "kmax":
            parts.append(f"{KMAX_K}-max head (fc {KMAX_FC:,} × 2)")
        return ", ".join(parts)

    @property
    def variant_label(self) -> str:
        """The shortcut variant in the paper's words, with its setting."""
        v = self.shortcut_variant
        if v == "scale":
            return (f"constant scaling {self.shortcut_scale:g}/{1 - self.shortcut_scale:g}" if self.scale_residual
                    else f"constant scaling {self.shortcut_scale:g}")
        if v in ("gate", "shortcut_gate"):
            return f"{SHORTCUT_VARIANT_LABELS[v]} (b_g = {self.gate_bias:g})"
        if v == "dropout":
            return f"dropout shortcut ({self.shortcut_dropout:g})"
        if v == "dropout_paper":
            return (f"dropout shortcut as in the paper ({self.shortcut_dropout:g}, not rescaled: "
                    f"E = {1 - self.shortcut_dropout:g}·s)")
        return SHORTCUT_VARIANT_LABELS[v]

    def with_head(self, head: Head) -> ResNetSpec:
        """A copy with ``head``, its name saying the paper's head ('vdcnn29_kmax'; back to 'vdcnn29')."""
        base = self.name.removesuffix(KMAX_SUFFIX)
        return self.replace(head=head, name=base + KMAX_SUFFIX if head == "kmax" else base)

    def replace(self, **changes: Any) -> ResNetSpec:
        """A validated copy with some fields changed (``name`` is kept unless given)."""
        return dataclasses.replace(self, **changes)  # __post_init__ validates the copy

    def plain_twin(self) -> ResNetSpec:
        """Same layers, shortcuts removed (He et al. 2015, Sec. 4.1 'plain networks')."""
        name = self.name if self.name.startswith("plain") else f"plain_{self.name}"
        # no shortcut, so no shortcut variant (scaling, gates, dropout act on the shortcut); the
        # activation placement stays: it is part of the layers
        return self.replace(name=name, residual=False, shortcut_variant="identity", scale_residual=False)

    def preact_variant(self) -> ResNetSpec:
        name = self.name if "preact" in self.name else f"preact_{self.name}"
        return self.replace(name=name, preact=True)


def validate(spec: ResNetSpec) -> ResNetSpec:
    """``spec``, checked again (it was checked when made); raises ``SpecError`` saying what to change.

    Kept for callers: since ``ResNetSpec.__post_init__`` validates, every spec that exists passes.
    """
    if not isinstance(spec, ResNetSpec):
        raise SpecError(f"expected a ResNetSpec, got {type(spec).__name__}")
    _coerce(spec)
    _check(spec)
    return spec


_INT_FIELDS = ("stem_width", "groups", "width_per_group", "num_classes", "in_channels", "input_size", "dims")
_BOOL_FIELDS = ("residual", "preact", "scale_residual", "conv_bias")
_STR_FIELDS = ("name", "family", "description")
KMAX_SUFFIX = "_kmax"  # a spec name's mark of the paper's VDCNN head
_FLOAT_FIELDS = ("shortcut_scale", "gate_bias", "shortcut_dropout")
# He et al. 2016's variant fields: at their defaults (the original block) metadata may leave them out
VARIANT_FIELDS = ("shortcut_variant", "shortcut_scale", "scale_residual", "gate_bias", "shortcut_dropout",
                  "activation")
# Fields metadata may leave out at their defaults (the 2-D nets written before 1-D nets existed), so
# stored runs keep the keys they were hashed with
OPTIONAL_FIELDS = VARIANT_FIELDS + ("dims", "conv_bias", "downsampling", "head")
SHORTCUT_VARIANT_LABELS: dict[ShortcutVariant, str] = {
    "identity": "identity shortcut", "scale": "constant scaling", "gate": "exclusive gating",
    "shortcut_gate": "shortcut-only gating", "dropout": "dropout shortcut",
    "dropout_paper": "dropout shortcut as in the paper (not rescaled)"}
ACTIVATION_LABELS: dict[Activation, str] = {
    "original": "original (ReLU after add)", "bn_after_add": "BN after addition",
    "relu_before_add": "ReLU before addition", "relu_preact": "ReLU-only pre-activation"}



def as_int(x: object) -> int | None:
    """``x`` as a plain ``int`` if it is a whole number (``int``, a NumPy integer: anything with
    ``__index__``) and not a bool; ``None`` for floats, strings, bools and everything else."""
    if isinstance(x, bool) or not isinstance(x, SupportsIndex):
        return None
    try:
        return operator.index(x)
    except TypeError:  # e.g. a float tensor: has __index__, refuses it
        return None


#: An int given for a float field beyond this is refused before float() (which overflows past
#: 1e308); a finite float goes on to the real ranges (e.g. |gate_bias| <= 20)
MAX_FLOAT_FIELD = 10**9


def _int_tuple(spec: ResNetSpec, name: str, what: str) -> tuple[int, ...]:
    value = getattr(spec, name)
    if not isinstance(value, (tuple, list)):
        raise SpecError(f"{name} must be a tuple or list of integers, one per stage; got {short_repr(value)}")
    out = []
    for i, x in enumerate(value):
        n = as_int(x)
        if n is None:
            raise SpecError(
                f"stage {i + 1} of {name} is {short_repr(x)} ({type(x).__name__}); {what} must be whole "
                f"numbers (int)"
            )
        out.append(n)
    return tuple(out)


def _coerce(spec: ResNetSpec) -> None:
    """Sequences to tuples of plain ints and type checks, so a spec from JSON or widgets is hashable
    and equal to the same spec written with tuples. Raises ``SpecError`` on a wrong type."""
    set_ = object.__setattr__  # the dataclass is frozen; this runs before anyone sees the instance
    set_(spec, "layers", _int_tuple(spec, "layers", "blocks per stage"))
    set_(spec, "widths", _int_tuple(spec, "widths", "widths"))
    if spec.strides is not None:
        set_(spec, "strides", _int_tuple(spec, "strides", "strides"))
    for name in _INT_FIELDS:
        value = getattr(spec, name)
        n = as_int(value)
        if n is None:
            raise SpecError(f"{name} must be an integer, got {short_repr(value)} ({type(value).__name__})")
        set_(spec, name, n)
    for name in _BOOL_FIELDS:
        value = getattr(spec, name)
        if not isinstance(value, bool):
            raise SpecError(f"{name} must be True or False, got {short_repr(value)} ({type(value).__name__})")
    for name in _FLOAT_FIELDS:
        value = getattr(spec, name)
        # the range before any float arithmetic: math.isfinite(10**400) raises OverflowError
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
                or (isinstance(value, int) and abs(value) > MAX_FLOAT_FIELD)):
            raise SpecError(f"{name} must be a finite number, got {short_repr(value, 30)} ({type(value).__name__})")
        set_(spec, name, float(value))
    for name in _STR_FIELDS:
        value = getattr(spec, name)
        if not isinstance(value, str):
            raise SpecError(f"{name} must be a string, got {short_repr(value)} ({type(value).__name__})")
    # the choices as the plain strings of their Literal (a NumPy or other str subclass becomes str)
    set_(spec, "block", choice(spec.block, BLOCK_TYPES, "block"))
    set_(spec, "stem", choice(spec.stem, STEM_TYPES, "stem"))
    set_(spec, "shortcut", choice(spec.shortcut, SHORTCUT_OPTIONS, "shortcut"))
    set_(spec, "stride_on", choice(spec.stride_on, STRIDE_PLACEMENTS, "stride_on"))
    set_(spec, "shortcut_variant", choice(spec.shortcut_variant, SHORTCUT_VARIANTS, "shortcut_variant"))
    set_(spec, "activation", choice(spec.activation, ACTIVATIONS, "activation"))
    set_(spec, "downsampling", choice(spec.downsampling, DOWNSAMPLINGS, "downsampling"))
    set_(spec, "head", choice(spec.head, HEADS, "head"))


def _check(spec: ResNetSpec) -> None:
    """The architecture checks proper, on a coerced spec; raises ``SpecError`` saying what to change."""
    if spec.block not in BLOCK_TYPES:
        raise SpecError(f"block must be one of {BLOCK_TYPES}, got {spec.block!r}")
    if spec.stem not in STEM_TYPES:
        raise SpecError(f"stem must be one of {STEM_TYPES}, got {spec.stem!r}")
    if spec.shortcut not in SHORTCUT_OPTIONS:
        raise SpecError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {spec.shortcut!r}")
    if spec.stride_on not in STRIDE_PLACEMENTS:
        raise SpecError(f"stride_on must be one of {STRIDE_PLACEMENTS}, got {spec.stride_on!r}")
    if spec.dims not in DIMS:
        raise SpecError(f"dims must be 1 (Conv1d: signals, text) or 2 (Conv2d: images), got {spec.dims}")
    if spec.stem == "none" and spec.stem_width != spec.in_channels:
        raise SpecError(f"without a stem the first block sees the input itself: stem_width must equal the "
                        f"input channels ({spec.in_channels}), got {spec.stem_width}")
    n = len(spec.layers)
    if n == 0:
        raise SpecError("a ResNet needs at least one stage: give blocks per stage, e.g. (2, 2, 2, 2)")
    if n > MAX_STAGES:
        raise SpecError(f"{n} stages is more than the {MAX_STAGES} supported; merge stages")
    if len(spec.widths) != n:
        raise SpecError(
            f"{n} stages need {n} widths, got {len(spec.widths)}: give one width per stage"
        )
    for i, b in enumerate(spec.layers):
        if not isinstance(b, int) or b < 1:
            raise SpecError(f"stage {i + 1} has {b!r} blocks; every stage needs at least 1 block")
        if b > MAX_BLOCKS_PER_STAGE:
            raise SpecError(f"stage {i + 1} has {b} blocks; at most {MAX_BLOCKS_PER_STAGE} per stage")
    for i, w in enumerate(spec.widths):
        if not isinstance(w, int) or w < 1:
            raise SpecError(f"stage {i + 1} width is {w!r}; widths must be positive integers")
        if w > MAX_WIDTH:
            raise SpecError(f"stage {i + 1} width {w} exceeds the maximum {MAX_WIDTH}")
    if spec.strides is not None:
        if len(spec.strides) != n:
            raise SpecError(f"{n} stages need {n} strides, got {len(spec.strides)}")
        if any(s not in (1, 2) for s in spec.strides):
            raise SpecError(f"stage strides must be 1 or 2, got {spec.strides}")
    if not 1 <= spec.stem_width <= MAX_WIDTH:
        raise SpecError(f"stem width must be between 1 and {MAX_WIDTH}, got {spec.stem_width}")
    if spec.groups < 1 or spec.width_per_group < 1:
        raise SpecError("groups and width_per_group must be positive")
    if spec.groups > 1 and spec.block == "basic":
        raise SpecError("grouped convolutions (ResNeXt) need the bottleneck block; set groups=1")
    if spec.width_per_group != 64 and spec.block == "basic":
        raise SpecError("width_per_group only applies to bottleneck blocks; leave it at 64")
    for i in range(n):
        inner = spec.inner_width(i)
        if inner < spec.groups or inner % spec.groups:
            raise SpecError(
                f"stage {i + 1}: bottleneck width {inner} is not a positive multiple of "
                f"groups={spec.groups}; raise the stage width or width_per_group"
            )
        if inner > MAX_WIDTH:
            raise SpecError(
                f"stage {i + 1}: bottleneck width {inner} (= {spec.widths[i]} x {spec.width_per_group} "
                f"// 64 x {spec.groups} groups) exceeds the maximum {MAX_WIDTH}; lower width_per_group "
                f"or groups"
            )
    if spec.shortcut == "A" and spec.residual:
        # Option A pads channels with zeros: the output may never have fewer channels than the input.
        prev = spec.stem_width
        for i, c in enumerate(spec.out_channels):
            if c < prev:
                raise SpecError(
                    f"shortcut option A (zero padding) cannot shrink channels ({prev} -> {c} in "
                    f"stage {i + 1}); use option B or widen the stage"
                )
            prev = c
    _check_variant(spec)
    if not 1 <= spec.in_channels <= MAX_CHANNELS:
        raise SpecError(f"input channels must be between 1 and {MAX_CHANNELS}, got {spec.in_channels}")
    if not 1 <= spec.num_classes <= MAX_CLASSES:
        raise SpecError(f"classes must be between 1 and {MAX_CLASSES}, got {spec.num_classes}")
    # No other size is refused: every conv and pool pads (k - 1) // 2, so a map of n >= 1 pixels
    # leaves it with floor((n + 2p - k) / s) + 1 >= 1 pixels and the net runs at any size from 1
    # (tested against the built model). Sizes that leave whole stages on 1x1 maps are legal but
    # unusual: small_input_note says so, and the pages show it as a warning.
    if spec.dims == 2 and not 1 <= spec.input_size <= MAX_INPUT_SIZE:
        raise SpecError(f"input size must be between 1 and {MAX_INPUT_SIZE} pixels, got {spec.input_size}")
    if spec.dims == 1:
        if not 1 <= spec.input_size <= MAX_SEQUENCE_LENGTH:
            raise SpecError(f"sequence length must be between 1 and {MAX_SEQUENCE_LENGTH:,} samples, got "
                            f"{spec.input_size:,}")
        # A 1-D net is not run on sequences its strides cannot divide down: each stage would see
        # its own zero padding more than the signal (the 2-D nets keep the old rule for ImageNet
        # nets at tiny sizes, with a warning)
        stride = stride_product(spec)
        if spec.input_size < stride:
            raise SpecError(f"a sequence of {spec.input_size} samples is shorter than the net's total stride "
                            f"{stride} ({_stride_story(spec)}): the last stages would see less than one "
                            f"sample per step. Give at least {stride} samples or remove a stride")
    _check_head(spec)


def _check_head(spec: ResNetSpec) -> None:
    """The k-max head picks k samples along a sequence: a 1-D net whose last stage keeps at least k."""
    if spec.head != "kmax":
        return
    if spec.dims != 1:
        raise SpecError("the k-max head (Conneau et al. 2017) pools over the temporal axis of a 1-D net; a 2-D "
                        "net keeps head='gap'")
    # every stride-2 step (a 3-wide conv or pool padded by 1, or the 7-wide stem conv padded by 3) takes
    # n samples to ceil(n / 2), and ceil(ceil(n / a) / b) = ceil(n / ab)
    stride = stride_product(spec)
    last = -(-spec.input_size // stride)
    if last < KMAX_K:
        raise SpecError(f"the k-max head keeps the {KMAX_K} largest of the last stage's {last} samples "
                        f"({spec.input_size:,} samples / total stride {stride}); give at least "
                        f"{stride * (KMAX_K - 1) + 1:,} samples or use head='gap'")


def _check_variant(spec: ResNetSpec) -> None:
    """He et al. 2016's variants: each needs a shortcut, and their numbers must make sense."""
    v = spec.shortcut_variant
    if v != "identity" and not spec.residual:
        raise SpecError(f"a plain net has no shortcut for the {SHORTCUT_VARIANT_LABELS[v]} variant; "
                        "use shortcut_variant='identity' for the plain twin")
    if spec.scale_residual and v != "scale":
        raise SpecError("scale_residual (F scaled by 1 - lambda) belongs to the 'scale' variant; set "
                        "shortcut_variant='scale' or scale_residual=False")
    if not 0 < spec.shortcut_scale <= MAX_SHORTCUT_SCALE:
        raise SpecError(f"shortcut_scale (lambda) must be in (0, {MAX_SHORTCUT_SCALE:g}], got {spec.shortcut_scale:g}")
    if not -MAX_GATE_BIAS <= spec.gate_bias <= MAX_GATE_BIAS:
        raise SpecError(f"gate_bias must be between -{MAX_GATE_BIAS:g} and {MAX_GATE_BIAS:g}, got {spec.gate_bias:g}")
    if not 0 < spec.shortcut_dropout < 1:
        raise SpecError(f"shortcut_dropout must be between 0 and 1 (exclusive), got {spec.shortcut_dropout:g}")
    if spec.preact and spec.activation != "original":
        raise SpecError(f"full pre-activation (preact=True) already fixes where BN and ReLU sit; use "
                        f"activation='original' with it, or preact=False for {ACTIVATION_LABELS[spec.activation]}")


def conv_out(size: int, k: int, s: int, p: int) -> int:
    """Spatial size after a conv/pool (floor mode, no dilation)."""
    return (size + 2 * p - k) // s + 1


def stride_product(spec: ResNetSpec) -> int:
    """Stem stride (4 for the ImageNet stem: conv /2 and max pool /2) times the stages' strides: what
    the 1-D length check needs while the spec is being made, before any plan exists. The net plan
    reads the same number off its ops (``NetPlan.total_stride``); tests/test_netplan.py checks that
    the two agree for every built-in and random spec."""
    return (4 if spec.stem == "imagenet" else 1) * math.prod(spec.stage_strides)


def _stride_story(spec: ResNetSpec) -> str:
    """Where a net's total stride comes from, e.g. 'stem 4 x stages 1 x 2 x 2 x 2'."""
    stem = "stem 4 x " if spec.stem == "imagenet" else ""
    return stem + "stages " + " x ".join(str(s) for s in spec.stage_strides)


# --------------------------------------------------------------------------- the table
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


def imagenet(name: str, block: BlockType, layers: tuple[int, ...], *, groups: int = 1,
             width_per_group: int = 64, description: str = "") -> ResNetSpec:
    """He et al. 2015 Table 1 layout: ImageNet stem, 64/128/256/512 planes."""
    return ResNetSpec(name=name, block=block, layers=layers, widths=IMAGENET_WIDTHS, groups=groups,
                      width_per_group=width_per_group, family="imagenet", description=description)


MAX_CIFAR_DEPTH = 6 * MAX_BLOCKS_PER_STAGE + 2


def cifar(n: int, shortcut: ShortcutOption = "A", *, description: str = "") -> ResNetSpec:
    """He et al. 2015 Sec. 4.2: 6n+2 layers, 3 stages of n BasicBlocks, 16/32/64 filters."""
    blocks = as_int(n)
    if blocks is None:
        raise SpecError(f"CIFAR ResNets need a whole number n of blocks per stage, got {n!r} ({type(n).__name__})")
    n = blocks
    if n < 1:
        raise SpecError(f"CIFAR ResNets need n >= 1 blocks per stage, got {n}")
    if n > MAX_BLOCKS_PER_STAGE:
        raise SpecError(f"CIFAR ResNets go up to n = {MAX_BLOCKS_PER_STAGE} blocks per stage "
                        f"({MAX_CIFAR_DEPTH} layers), got n = {n} ({6 * n + 2} layers)")
    return ResNetSpec(
        name=f"cifar_resnet{6 * n + 2}", block="basic", layers=(n, n, n), widths=CIFAR_WIDTHS,
        stem="cifar", stem_width=16, shortcut=shortcut, num_classes=10, input_size=32,
        family="cifar", description=description,
    )


MNIST1D_WIDTHS = (32, 64, 128)
MAX_RESNET1D_DEPTH = MAX_CIFAR_DEPTH


def resnet1d(n: int, shortcut: ShortcutOption = "A", *, description: str = "") -> ResNetSpec:
    """The CIFAR recipe in one dimension, sized for MNIST-1D (Greydanus 2020: 40 samples, 1 channel,
    10 classes): 6n+2 layers, 3 stages of n BasicBlocks, 32/64/128 filters, a 3-wide conv stem; the
    40 samples leave the last stage with 10. Option-A shortcuts, so the plain twin has the same
    parameters."""
    base = cifar(n, shortcut)
    return base.replace(name=f"resnet1d_{6 * base.layers[0] + 2}", dims=1, widths=MNIST1D_WIDTHS,
                        stem_width=MNIST1D_WIDTHS[0], in_channels=1, input_size=40, family="resnet1d",
                        description=description)


# Conneau et al. 2017, Table 2: convolutional layers per stage at 64-128-256-512 filters, two per
# block, after the first temporal conv (3-wide, 64 filters) on 16-d character embeddings of 1,024
# characters; a max pool /2 between stages. The embedding lookup is not part of a spec (its input
# here is the 16 x 1,024 embedded text). The built-in head is ours (global average pool + one fc on 4
# classes, AG's News); head="kmax" (named 'vdcnn29_kmax') is VDCNN's k-max pooling and three fc layers.
VDCNN_LAYERS = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}


def vdcnn(depth: int) -> ResNetSpec:
    return ResNetSpec(
        name=f"vdcnn{depth}", block="basic", layers=VDCNN_LAYERS[depth], widths=IMAGENET_WIDTHS, stem="vdcnn",
        stem_width=64, strides=(1, 2, 2, 2), shortcut="B", conv_bias=True, downsampling="maxpool", dims=1,
        in_channels=16, input_size=1024, num_classes=4, family="vdcnn",
        description=f"Conneau et al. 2017, Table 2 (depth {depth}), with shortcuts; plain_vdcnn{depth} without",
    )


_BUILTIN: list[ResNetSpec] = [
    imagenet("resnet18", "basic", (2, 2, 2, 2), description="He et al. 2015, Table 1"),
    imagenet("resnet34", "basic", (3, 4, 6, 3), description="He et al. 2015, Table 1"),
    imagenet("resnet50", "bottleneck", (3, 4, 6, 3), description="He et al. 2015, Table 1 (v1.5)"),
    imagenet("resnet101", "bottleneck", (3, 4, 23, 3), description="He et al. 2015, Table 1 (v1.5)"),
    imagenet("resnet152", "bottleneck", (3, 8, 36, 3), description="He et al. 2015, Table 1 (v1.5)"),
    imagenet("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), width_per_group=128,
             description="Zagoruyko & Komodakis 2016, torchvision layout"),
    imagenet("wide_resnet101_2", "bottleneck", (3, 4, 23, 3), width_per_group=128,
             description="Zagoruyko & Komodakis 2016, torchvision layout"),
    imagenet("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4,
             description="Xie et al. 2017"),
    imagenet("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8,
             description="Xie et al. 2017"),
    imagenet("resnext101_64x4d", "bottleneck", (3, 4, 23, 3), groups=64, width_per_group=4,
             description="Xie et al. 2017"),
] + [
    cifar(n, description="He et al. 2015, Table 6 (option A)") for n in (3, 5, 7, 9, 18, 200)
] + [vdcnn(d) for d in VDCNN_LAYERS] + [
    resnet1d(n, description="CIFAR-style 6n+2 ResNet in 1-D for MNIST-1D (Greydanus 2020)") for n in (1, 3, 9)
]

MODELS: dict[str, ResNetSpec] = {s.name: s for s in _BUILTIN}  # each validated when made
IMAGENET_DEPTHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR_DEPTHS = tuple(s.name for s in _BUILTIN if s.family == "cifar")
ONE_D_MODELS = tuple(s.name for s in _BUILTIN if s.dims == 1)


def get_spec(name: str, *, plain: bool | None = None, preact: bool | None = None,
             stride_on: StridePlacement | None = None, shortcut: ShortcutOption | None = None,
             input_size: int | None = None, num_classes: int | None = None) -> ResNetSpec:
    """Look up a built-in spec by name (``plain_`` / ``preact_`` prefixes and ``cifar_resnetN``
    for any 6n+2 depth up to :data:`MAX_CIFAR_DEPTH` are understood) and apply variants.

    Raises ``SpecError`` for an unknown name, a name that is not a string, a flag that is not a bool
    and a variant of the wrong type or out of range."""
    if not isinstance(name, str):
        raise SpecError(f"model name must be a string such as 'resnet50', got {name!r} ({type(name).__name__})")
    for flag, value in (("plain", plain), ("preact", preact)):
        if value is not None and not isinstance(value, bool):
            raise SpecError(f"{flag} must be True, False or None, got {value!r} ({type(value).__name__})")
    key = name.strip()
    flags = {"plain": plain, "preact": preact}
    for flag in ("plain", "preact"):  # the prefixes in this order: plain_preact_resnet50
        if key.startswith(f"{flag}_"):
            if flags[flag] is False:  # the name and the flag disagree: neither is guessed
                raise SpecError(f"{name!r} names a {flag} net but {flag}=False was asked for; drop the "
                                f"'{flag}_' prefix or the {flag}=False")
            flags[flag], key = True, key[len(flag) + 1:]
    plain, preact = bool(flags["plain"]), bool(flags["preact"])
    # the paper's VDCNN head as a name suffix ('vdcnn29_kmax'): a named option, not a built-in of MODELS
    kmax = key.endswith(KMAX_SUFFIX) and key != KMAX_SUFFIX
    key = key.removesuffix(KMAX_SUFFIX) if kmax else key
    family = "resnet1d_" if key.startswith("resnet1d_") else "cifar_resnet"
    digits = key[len(family):]
    if key in MODELS:
        spec = MODELS[key]
    elif key.startswith(family) and digits.isascii() and digits.isdigit():
        if len(digits.lstrip("0")) > len(str(MAX_CIFAR_DEPTH)):  # int() of 4300+ digits raises ValueError
            raise SpecError(f"CIFAR ResNets go up to {MAX_CIFAR_DEPTH} layers; a depth of "
                            f"{len(digits.lstrip('0'))} digits is deeper")
        depth = int(digits)
        if (depth - 2) % 6 or depth < 8:
            raise SpecError(f"CIFAR ResNets have 6n+2 layers (8, 14, 20, 32, ...); {depth} is not of that form")
        if depth > MAX_CIFAR_DEPTH:
            raise SpecError(f"CIFAR ResNets go up to {MAX_CIFAR_DEPTH} layers ({MAX_BLOCKS_PER_STAGE} "
                            f"blocks per stage); {depth} is deeper")
        spec = cifar((depth - 2) // 6) if family == "cifar_resnet" else resnet1d((depth - 2) // 6)
    else:
        raise SpecError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, cifar_resnet<6n+2> or "
                        f"resnet1d_<6n+2> (a 1-D net with '{KMAX_SUFFIX}' for VDCNN's k-max head)")
    changes: dict[str, Any] = {}
    if stride_on is not None:
        changes["stride_on"] = stride_on
    if shortcut is not None:
        changes["shortcut"] = shortcut
    if input_size is not None:
        changes["input_size"] = input_size
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if changes:
        spec = spec.replace(**changes)
    if kmax:
        spec = spec.with_head("kmax")
    if preact:
        spec = spec.preact_variant()
    if plain:
        spec = spec.plain_twin()
    return spec


def custom_spec(*, block: BlockType, layers: Iterable[int], widths: Iterable[int],
                input_size: int = 224, in_channels: int = 3, num_classes: int = 1000,
                stem: StemType = "imagenet", stem_width: int | None = None, shortcut: ShortcutOption = "B",
                residual: bool = True, preact: bool = False, stride_on: StridePlacement = "3x3",
                groups: int = 1, width_per_group: int = 64, name: str = "custom", dims: int = 2,
                conv_bias: bool = False, downsampling: Downsampling = "stride", head: Head = "gap") -> ResNetSpec:
    """Build and validate a user-defined spec; raises ``SpecError`` saying what to change.

    The Literal-typed choices are checked at runtime too (a string from a widget or the command line
    that is not one of them raises ``SpecError`` naming the choices); so are the integer types.
    """
    if stem_width is None:
        stem_width = in_channels if stem == "none" else 64 if stem in ("imagenet", "vdcnn") else 16
    return ResNetSpec(
        name=name, block=block, layers=_seq(layers, "layers"), widths=_seq(widths, "widths"), stem=stem,
        stem_width=stem_width, shortcut=shortcut, residual=residual, preact=preact, stride_on=stride_on,
        groups=groups, width_per_group=width_per_group, num_classes=num_classes,
        in_channels=in_channels, input_size=input_size, dims=dims, conv_bias=conv_bias, downsampling=downsampling,
        head=head,
    )


def _seq(values: Iterable[int], name: str) -> tuple[int, ...]:
    """Any ordered iterable as a tuple (its items are checked by ``ResNetSpec``); strings, bytes,
    sets and mappings are refused: they are not a list of per-stage numbers."""
    if isinstance(values, (str, bytes, bytearray, AbstractSet, Mapping)):
        raise SpecError(f"{name} must be a list of integers, e.g. (2, 2, 2, 2); got {values!r}")
    try:
        return tuple(values)
    except TypeError as exc:
        raise SpecError(f"{name} must be a list of integers, e.g. (2, 2, 2, 2); got {values!r}") from exc


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'2, 2, 2, 2' -> (2, 2, 2, 2), with a message a user can act on."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    if not parts:
        raise SpecError(f"{what}: give comma-separated integers, e.g. 2, 2, 2, 2")
    try:
        return tuple(int(p) for p in parts)
    except ValueError as exc:
        raise SpecError(f"{what}: {text!r} is not a list of integers (e.g. 2, 2, 2, 2)") from exc
