"""The 1-D residual block the reference notes end with, exactly as written, and what it takes to run.

The notes' block (VDCNN style, Conneau et al. 2017) is two ``Conv1d`` (PyTorch's default bias on)
with BatchNorm, a ReLU between them and one after, and an optional identity shortcut added in place
(``out += x``). As written it has two traps: both convs take the ``stride``, and the ``downsample``
argument is stored but never applied. So with ``shortcut=True`` the add only works when the block
keeps the input's shape; with 128 -> 256 channels (the notes' own defaults) or stride 2 it raises.

:class:`SeedBlock` is that block transcribed literally, so what the app analyses is what the notes
run; :func:`seed_plan` describes the same block in our plan types, so the cost tracer, the builder
and the tests treat it like any other block; :func:`diagnose` says whether and why the block as
written fails, with PyTorch's own message; :func:`fixed_plan` is the standard fix (He et al. 2015:
stride on the first conv only, a projection shortcut, option B, where the shape changes).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import pandas as pd
from torch import Tensor, nn

from analysis.arch.blockplan import BlockPlan, Join, make_plan
from analysis.arch.costs import exact_sum, plan_table, torchinfo_mult_adds
from analysis.arch.ops import Flow, Op, flow
from analysis.arch.specs import MAX_SEQUENCE_LENGTH, MAX_WIDTH, as_int, conv_out
from analysis.core.errors import SpecError

# Bounds for the widgets and for SeedConfig: a kernel, padding or stride beyond a thousand samples
# is no experiment on this block, and every count stays exact (Python ints) at the extremes anyway
MAX_SEED_KERNEL = 1024
MAX_SEED_PADDING = 1024
MAX_SEED_STRIDE = 1024


class SeedBlockError(SpecError):
    """A setting of the notes' block out of its range or of the wrong type."""


@dataclass(frozen=True)
class SeedConfig:
    """The notes' constructor arguments (their defaults) and the input length L. Checked on
    construction: bad values raise :class:`SeedBlockError`. Settings with which the block cannot
    run are allowed: saying why is :func:`diagnose`'s job."""

    input_dim: int = 128
    n_filters: int = 256
    kernel_size: int = 3
    padding: int = 1
    stride: int = 1
    shortcut: bool = False
    length: int = 128

    def __post_init__(self) -> None:
        bounds = {"input_dim": (1, MAX_WIDTH), "n_filters": (1, MAX_WIDTH), "kernel_size": (1, MAX_SEED_KERNEL),
                  "padding": (0, MAX_SEED_PADDING), "stride": (1, MAX_SEED_STRIDE),
                  "length": (1, MAX_SEQUENCE_LENGTH)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            n = as_int(value)
            if n is None:
                raise SeedBlockError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
            if not low <= n <= high:
                raise SeedBlockError(f"{name} must be between {low:,} and {high:,}, got {n:,}")
            object.__setattr__(self, name, n)  # a NumPy integer becomes a plain int: hashable, exact
        if not isinstance(self.shortcut, bool):
            raise SeedBlockError(f"shortcut must be True or False, got {self.shortcut!r} "
                                 f"({type(self.shortcut).__name__})")

    @property
    def input_shape(self) -> tuple[int, int]:
        """(C, L) of one input sequence."""
        return (self.input_dim, self.length)

    def kwargs(self) -> dict[str, int | bool]:
        """The constructor arguments of :class:`SeedBlock` (everything but the length)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "length"}


class SeedBlock(nn.Module):
    """The notes' residual block, transcribed literally (``downsample`` is stored, never used)."""

    def __init__(self, input_dim: int = 128, n_filters: int = 256, kernel_size: int = 3, padding: int = 1,
                 stride: int = 1, shortcut: bool = False, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(input_dim, n_filters, kernel_size=kernel_size, padding=padding, stride=stride)
        self.bn1 = nn.BatchNorm1d(n_filters)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(n_filters, n_filters, kernel_size=kernel_size, padding=padding, stride=stride)
        self.bn2 = nn.BatchNorm1d(n_filters)
        self.shortcut = shortcut
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.shortcut:
            out += x
        out = self.relu(out)
        return out


def source(cfg: SeedConfig) -> str:
    """The code the app analyses: :class:`SeedBlock`'s own source and the call for ``cfg``."""
    args = ", ".join(f"{k}={v}" for k, v in cfg.kwargs().items())
    return ("import torch\nfrom torch import Tensor, nn\n\n\n" + inspect.getsource(SeedBlock)
            + f"\n\nblock = SeedBlock({args})\n"
            + f"y = block(torch.randn(1, {cfg.input_dim}, {cfg.length}))  # batch × channels × samples\n")


def seed_plan(cfg: SeedConfig) -> BlockPlan:
    """:class:`SeedBlock` in our plan types: both convs with a bias, the notes' padding and the stride
    on *both*, an identity shortcut when ``shortcut`` (nothing applies ``downsample``), a ReLU after
    the add. ``Block(seed_plan(cfg))`` has SeedBlock's state_dict and, where the block runs, its
    outputs. (``stride`` is each conv's: the block as written shrinks the length by stride².)"""
    n = cfg.n_filters

    def conv(name: str, cin: int) -> Op:
        return Op(name, "conv", cin, n, kernel=cfg.kernel_size, stride=cfg.stride, bias=True, dims=1,
                  pad=cfg.padding)

    relu = Op("relu", "relu", n, n, dims=1)
    return BlockPlan(
        name="seed", stage=0, index=0, block="basic", cin=cfg.input_dim, cout=n, stride=cfg.stride,
        residual_ops=(conv("conv1", cfg.input_dim), Op("bn1", "bn", n, n, dims=1), relu,
                      conv("conv2", n), Op("bn2", "bn", n, n, dims=1)),
        shortcut_ops=(), shortcut="identity" if cfg.shortcut else "none", join=Join(after=(relu,)), dims=1)


def fixed_kernel(cfg: SeedConfig) -> int:
    """The fixed block's kernel: the notes' one, made odd (k + 1) where a shortcut needs the length
    kept, since no symmetric padding keeps it for an even kernel (that needs 2p = k - 1)."""
    k = cfg.kernel_size
    return k + 1 if cfg.shortcut and k % 2 == 0 else k


def fixed_plan(cfg: SeedConfig) -> BlockPlan:
    """The standard fix of the notes' block: 'same' padding (k - 1)/2, the stride on the first conv
    only, and where the shortcut's shape changes a 1-wide projection with BN that is actually
    applied (He et al. 2015, option B); biases kept as the notes have them."""
    plan = make_plan(name="fixed", stage=0, index=0, block="basic", cin=cfg.input_dim, width=cfg.n_filters,
                     cout=cfg.n_filters, stride=cfg.stride, option="B", residual=cfg.shortcut, dims=1,
                     conv_bias=True)
    k = fixed_kernel(cfg)
    # make_plan's basic block is 3 wide; the fix keeps the notes' kernel (pad None = 'same', k // 2)
    return dataclasses.replace(plan, residual_ops=tuple(
        dataclasses.replace(op, kernel=k, pad=None) if op.kind == "conv" else op for op in plan.residual_ops))


def lengths(cfg: SeedConfig) -> tuple[int, int]:
    """(L1, L2): the length after conv1 and after conv2 as written, floor((L + 2p - k)/s) + 1 each;
    below 1 where a conv has nothing to slide over (PyTorch raises there)."""
    x = Flow(cfg.input_dim, (cfg.length,))
    out: list[int] = []
    for op in seed_plan(cfg).residual_ops:
        x = flow(op, x)
        if op.kind == "conv":
            out.append(x.sizes[0])
    return out[0], out[1]


def _shape(*dims: int) -> str:
    return "×".join(str(d) for d in dims)


def _signed(n: int, plus: str = "+") -> str:
    """A whole number with a typographic minus (the messages' formulas use − too)."""
    return f"−{-n}" if n < 0 else f"{plus}{n}"


def add_error(out: tuple[int, ...], x: tuple[int, ...]) -> str | None:
    """What PyTorch raises for ``out += x`` (out-of-place broadcasting, then the result must have
    out's shape); None where it broadcasts x silently. Sizes are compared from the last dimension,
    as PyTorch does, so a length mismatch is reported before a channel one."""
    for d in range(len(out) - 1, -1, -1):
        a, b = out[d], x[d]
        if a != b and a != 1 and b != 1:
            return (f"RuntimeError: The size of tensor a ({a}) must match the size of tensor b ({b}) "
                    f"at non-singleton dimension {d}")
    wide = tuple(max(a, b) for a, b in zip(out, x, strict=True))
    if wide != out:
        return (f"RuntimeError: output with shape [{', '.join(map(str, out))}] doesn't match the "
                f"broadcast shape [{', '.join(map(str, wide))}]")
    return None


def conv_error(padded: int, kernel: int) -> str:
    """What ``nn.Conv1d`` raises when its padded input is shorter than its kernel."""
    return (f"RuntimeError: Calculated padded input size per channel: ({padded}). Kernel size: ({kernel}). "
            "Kernel size can't be greater than actual input size")


@dataclass(frozen=True)
class Diagnosis:
    """Why the block as written does not work at a config. ``problems`` names the causes
    ("collapse", "channels", "stride", "padding"); ``error`` is what PyTorch raises, or None where
    the add broadcasts instead (it runs, but it is no residual block); ``message`` says it all."""

    problems: tuple[str, ...]
    error: str | None
    message: str

    @property
    def raises(self) -> bool:
        return self.error is not None


def diagnose(cfg: SeedConfig, batch: int = 1) -> Diagnosis | None:
    """None when :class:`SeedBlock` runs at ``cfg`` as a residual block (or without a shortcut, at
    all); else what fails, PyTorch's exact message for a batch of ``batch`` sequences, and the fix."""
    k, p, s, length = cfg.kernel_size, cfg.padding, cfg.stride, cfg.length
    l1, l2 = lengths(cfg)
    rule = "floor((L + 2p − k)/s) + 1"
    if l1 < 1 or l2 < 1:
        conv, size, short = ("conv1", length, l1) if l1 < 1 else ("conv2", l1, l2)
        lines = [f"The block as written cannot run on {_shape(cfg.input_dim, length)} (channels × samples): "
                 f"{conv} collapses the length. Its output length is {rule} = "
                 f"floor(({size} + 2·{p} − {k})/{s}) + 1 = {_signed(short, plus='')}, less than 1: the padded input "
                 f"({size + 2 * p} samples) is shorter than the kernel ({k})."]
        if conv == "conv2":
            lines[0] += f" (conv1 already took L = {length} to {l1}.)"
        problems = ["collapse"]
        if cfg.shortcut and cfg.input_dim != cfg.n_filters:
            problems.append("channels")
            lines.append(f"With a longer input `out += x` would still fail: out has {cfg.n_filters} channels, "
                         f"x has {cfg.input_dim}. {_projection(cfg)}")
        lines.append(f"PyTorch raises `{conv_error(size + 2 * p, k)}`.")
        lines.append(f"Fix: a longer input, a smaller kernel or more padding. The fixed block below ('same' "
                     f"padding, stride on conv1 only{', a projection shortcut' if 'channels' in problems else ''}) "
                     f"keeps at least one sample: it takes L = {length} to {_fixed_length(cfg)}.")
        return Diagnosis(tuple(problems), conv_error(size + 2 * p, k), "\n\n".join(lines))
    if not cfg.shortcut or (cfg.n_filters, l2) == cfg.input_shape:
        return None

    out, x = (cfg.n_filters, l2), cfg.input_shape
    problems, causes, fixes = [], [], []
    if cfg.n_filters != cfg.input_dim:
        problems.append("channels")
        causes.append(f"- Channels: conv1 maps the {cfg.input_dim} input channel{'s' * (cfg.input_dim != 1)} to {cfg.n_filters} filters; "
                      f"nothing maps x to {cfg.n_filters}.")
    if l2 != length:
        steps = (f"conv1 takes L = {length} to L1 = {l1} and conv2 takes {l1} to L2 = {l2} "
                 f"({rule} each), while x keeps {length}")
        if s > 1:
            problems.append("stride")
            causes.append(f"- Length: stride {s} sits on both convs, so {steps}.")
            fixes.append(f"- The stride on conv1 only (conv2 at stride 1), so the block shrinks the length once: "
                         f"{length} → {_fixed_length(cfg)}, and the shortcut strided to match (the projection "
                         "below).")
        if 2 * p != k - 1:
            problems.append("padding")
            change = 2 * p - k + 1
            causes.append(f"- Length: padding {p} with kernel {k} is not 'same' padding, so even at stride 1 each "
                          f"conv changes the length by 2p − k + 1 = {_signed(change)}"
                          + ("." if s > 1 else f": {steps}."))
            fixes.append(_padding_fix(cfg))
    if cfg.n_filters != cfg.input_dim or s > 1:
        fixes.append(f"- {_projection(cfg)}")
    error = add_error((batch, *out), (batch, *x))
    lines = ["With shortcut=True the block adds its input to its output in place (`out += x`), which needs equal "
             f"shapes: out is {_shape(*out)}, x is {_shape(*x)} (channels × samples).", "\n".join(causes)]
    if error is not None:
        lines.append(f"PyTorch raises `{error}`.")
    else:
        spread = " and ".join(what for what, a, b in (("channel", cfg.input_dim, cfg.n_filters),
                                                      ("sample", length, l2)) if a == 1 and b != 1)
        lines.append(f"PyTorch raises nothing here: x has a single {spread}, so `out += x` broadcasts it and adds "
                     "the same value at every position. The block runs, but it computes no residual F(x) + x.")
    lines.append("The standard fix, as the fixed block below does it:\n" + "\n".join(fixes))
    return Diagnosis(tuple(problems), error, "\n\n".join(lines))


def _fixed_length(cfg: SeedConfig) -> int:
    k = fixed_kernel(cfg)
    return conv_out(cfg.length, k, cfg.stride, k // 2)


def _projection(cfg: SeedConfig) -> str:
    c, n, s = cfg.input_dim, cfg.n_filters, cfg.stride
    return (f"A projection shortcut actually applied: `downsample = nn.Sequential(nn.Conv1d({c}, {n}, 1, "
            f"stride={s}, bias=False), nn.BatchNorm1d({n}))` and `out += self.downsample(x)`, taking x to "
            f"{_shape(n, _fixed_length(cfg))} (He et al. 2015, option B: a projection only where the shape "
            "changes). The notes store `downsample` but forward never calls it, so passing one changes nothing.")


def _padding_fix(cfg: SeedConfig) -> str:
    k = cfg.kernel_size
    if k % 2:
        return f"- Padding (k − 1)/2 = {(k - 1) // 2}, so each conv keeps the length at stride 1."
    return (f"- An odd kernel: no symmetric padding keeps the length with an even kernel ({k}; it needs 2p = k − 1, "
            f"an odd number). The fixed block uses kernel {k + 1} with padding {(k + 1) // 2}.")


@dataclass(frozen=True)
class Costs:
    """Totals of one block's layer table, for one sequence."""

    params: int
    macs: int
    flops: int
    torchinfo_mult_adds: int
    output_shape: tuple[int, ...]
    receptive_field: int  # in samples

    @classmethod
    def of(cls, table: pd.DataFrame) -> Costs:
        return cls(params=exact_sum(table["params"]), macs=exact_sum(table["macs"]),
                   flops=exact_sum(table["flops"]), torchinfo_mult_adds=torchinfo_mult_adds(table),
                   output_shape=tuple(table["out_shape"].iloc[-1]), receptive_field=int(table["rf"].max()))


@dataclass(frozen=True)
class SeedAnalysis:
    """Everything the explorer shows for the notes' block at one config. ``params`` is the block as
    written (its weights exist even where forward fails); ``table``/``costs`` only where it runs;
    ``fixed_*`` only where it does not."""

    cfg: SeedConfig
    params: int
    diagnosis: Diagnosis | None
    table: pd.DataFrame | None
    costs: Costs | None
    fixed_table: pd.DataFrame | None
    fixed_costs: Costs | None


def analyse(cfg: SeedConfig) -> SeedAnalysis:
    plan = seed_plan(cfg)
    params = sum(op.weight_count for op in plan.residual_ops)  # relu has none; after_add's relu is shared
    found = diagnose(cfg)
    if found is None:
        table = plan_table(plan, cfg.input_shape)
        return SeedAnalysis(cfg, params, None, table, Costs.of(table), None, None)
    fixed = plan_table(fixed_plan(cfg), cfg.input_shape)
    return SeedAnalysis(cfg, params, found, None, None, fixed, Costs.of(fixed))
