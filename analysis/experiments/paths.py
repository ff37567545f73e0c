"""Residual networks as ensembles of paths (Veit, Wilber, Belongie 2016).

A net of n residual blocks x_{i+1} = x_i + f_i(x_i) unrolls into 2^n paths: each path chooses, at
every block, the residual branch f_i or the skip. Path lengths (how many f's a path passes) follow
Binomial(n, 1/2): C(n, k) paths of length k. Veit et al. measure how much gradient each length
carries: forward a batch through the whole net, then in the backward pass let the gradient through
the residual branch of k sampled blocks and through the skip of the other n-k; the gradient norm at
the input is that path's magnitude. It decays exponentially with k, so although long paths are
numerous, the gradient comes from the short ones ("effective paths").

Blocks are taken whole, whatever their inputs: images through a 2-D net, sequences through a 1-D
one. A block that max-pools its input first (VDCNN's pool between stages) pools it for both paths,
so the pool belongs to both the branch and the skip of that block, and the gradient goes through it
on every path.

Any net whose residual units form a chain is measured the same way: an exported program cut into
units (:class:`~analysis.experiments.chain.ProgramChain`) gives each unit's add operands and its join as
graphs of their own, and one loop runs the tapes of either kind (:class:`PathTape`). In a program, the
ops between one unit's output and the next unit's entry (a norm outside the units) belong to both
paths of the next unit, as VDCNN's pool does.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, astuple, dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import networkx as nx
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from analysis.arch.models import Block, ResNet
from analysis.arch.units import Unit
from analysis.core.bounded import COUNT, DIGITS, FLAG, Column, check_table, loads_json
from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.reporting import records, write_json
from analysis.data.data import Dataset
from analysis.experiments import precision as prec
from analysis.experiments.chain import ProgramChain
from analysis.experiments.lesion import check_inputs, check_precision, inputs_noun, precision_field
from analysis.experiments.train import cuda_determinism

MAX_UNROLL = 8  # 256 paths: still drawable


# ----------------------------------------------------------------------------- the unrolled view
def enumerate_paths(n: int) -> list[tuple[int, ...]]:
    """All 2^n paths as 0/1 tuples (1 = through block i's residual branch), shortest first."""
    if not 0 <= n <= MAX_UNROLL:
        raise ConfigError(f"unroll at most {MAX_UNROLL} blocks ({2 ** MAX_UNROLL} paths), got {n}")
    return sorted(itertools.product((0, 1), repeat=n), key=lambda p: (sum(p), p[::-1]))


def path_label(path: Sequence[int]) -> str:
    """'f1 · skip · f3' style description of one path."""
    parts = [f"f{i + 1}" if b else "skip" for i, b in enumerate(path)]
    return " → ".join(["x0", *parts, f"x{len(path)}"])


def unrolled_graph(n: int) -> nx.DiGraph:
    """A layered DAG whose source-to-sink paths are exactly the 2^n paths of the ensemble: at block i
    a path goes through node ``f{i}`` (residual branch) or ``skip{i}``."""
    if not 1 <= n <= MAX_UNROLL:
        raise ConfigError(f"choose between 1 and {MAX_UNROLL} blocks to unroll, got {n}")
    g = nx.DiGraph(n=n)
    g.add_node("x0", layer=0, kind="input")
    g.add_node(f"x{n}", layer=n + 1, kind="output")
    prev = ["x0"]
    for i in range(1, n + 1):
        cur = [f"f{i}", f"skip{i}"]
        g.add_node(f"f{i}", layer=i, kind="residual")
        g.add_node(f"skip{i}", layer=i, kind="skip")
        for u in prev:
            for v in cur:
                g.add_edge(u, v)
        prev = cur
    for u in prev:
        g.add_edge(u, f"x{n}")
    return g


def path_nodes(path: Sequence[int]) -> list[str]:
    n = len(path)
    return ["x0"] + [f"f{i + 1}" if b else f"skip{i + 1}" for i, b in enumerate(path)] + [f"x{n}"]


def algebra(n: int) -> list[str]:
    """LaTeX lines expanding x_n for small n, then the general identity x_L = x_l + sum F(x_i)."""
    if not 1 <= n <= MAX_UNROLL:
        raise ConfigError(f"choose between 1 and {MAX_UNROLL} blocks, got {n}")
    lines = [r"x_{i+1} = x_i + f_{i+1}(x_i)"]
    expr = "x_0"
    for i in range(1, n + 1):
        new = f"{expr} + f_{{{i}}}\\big({expr}\\big)" if i > 1 else "x_0 + f_1(x_0)"
        if i <= 3:
            lines.append(f"x_{{{i}}} = x_{{{i - 1}}} + f_{{{i}}}(x_{{{i - 1}}}) = {new}")
        expr = f"x_{{{i}}}" if i >= 3 else new
    lines.append(rf"x_{{{n}}} = x_0 + \sum_{{i=0}}^{{{n - 1}}} f_{{i+1}}(x_i)"
                 r"\quad\text{(in general } x_L = x_l + \textstyle\sum_{i=l}^{L-1} F(x_i)\text{)}")
    lines.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial x_0}} = \frac{{\partial \mathcal{{L}}}}{{\partial x_{{{n}}}}}"
                 rf"\prod_{{i=1}}^{{{n}}}\Big(1 + \frac{{\partial f_i}}{{\partial x_{{i-1}}}}\Big)"
                 rf"\quad\text{{expands into }} 2^{{{n}}} = {2 ** n} \text{{ products, one per path}}")
    return lines


# ----------------------------------------------------------------------------- path-length distribution
@dataclass(frozen=True)
class LengthDistribution:
    n: int
    counts: tuple[int, ...]  # C(n, k), exact big integers

    @property
    def total(self) -> int:
        return int(2 ** self.n)  # int ** int is typed Any (a negative power is a float): n >= 0 here

    @property
    def mean(self) -> float:
        return self.n / 2

    @property
    def std(self) -> float:
        return math.sqrt(self.n) / 2

    def share(self, lo: int, hi: int) -> Fraction:
        """Exact fraction of all paths whose length is in [lo, hi]."""
        lo, hi = max(0, lo), min(self.n, hi)
        if lo > hi:
            return Fraction(0)
        return Fraction(sum(self.counts[lo:hi + 1]), self.total)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"length": range(self.n + 1),
                             "paths": [str(c) for c in self.counts],
                             "log10 paths": [math.log10(c) for c in self.counts],
                             "share": [float(Fraction(c, self.total)) for c in self.counts]})


def length_distribution(n: int) -> LengthDistribution:
    if not 0 <= n <= 100_000:
        raise ConfigError(f"number of blocks must be between 0 and 100000, got {n}")
    return LengthDistribution(n, tuple(math.comb(n, k) for k in range(n + 1)))


# ----------------------------------------------------------------------------- gradient by path length
ProgressFn = Callable[[int, int], None]
PathNet = ResNet | ProgramChain  # what the measurement runs: a spec-built net's blocks or a program's units


class PathTape(Protocol):
    """One unit's forward at a fixed input ``x`` (its output ``y``, detached), kept to take VJPs."""

    x: Tensor
    y: Tensor

    def back(self, g: Tensor, through_residual: bool) -> Tensor:
        """The gradient at ``x`` from ``g`` at ``y``, through the branch or through the shortcut only."""
        ...


class _JoinTape:
    """What both tapes share: the join taken on detached copies of its two operands, so that its VJP
    gives the gradient entering each path, then that path's own VJP down to ``x``."""

    x: Tensor
    r: Tensor  # the branch's operand of the join, a function of x
    s: Tensor  # the shortcut's operand
    _r_in: Tensor
    _s_in: Tensor
    joined: Tensor
    identity: bool  # s is x: the shortcut's VJP is g itself
    y: Tensor

    def back(self, g: Tensor, through_residual: bool) -> Tensor:
        entry = self._r_in if through_residual else self._s_in
        (g,) = torch.autograd.grad(self.joined, entry, grad_outputs=g, retain_graph=True)
        if not through_residual and self.identity:
            return g
        out = self.r if through_residual else self.s
        (gx,) = torch.autograd.grad(out, self.x, grad_outputs=g, retain_graph=True)
        return gx


class _BlockTape(_JoinTape):
    """One block's forward pieces at a fixed input, kept to take vector-Jacobian products.

    The join of F(x) and s(x) is the block's own ``combine`` (weights of the variant, add, then
    ReLU or not), so the gradient through it follows whatever rule the block's plan sets."""

    def __init__(self, block: Block, x: Tensor) -> None:
        self.x = x.detach().requires_grad_(True)
        # both paths start from the entered input (VDCNN's pool), which the gradient goes through
        entered = block.enter(self.x)
        self.r = block.residual_branch(entered)
        self.s = block.shortcut(entered)
        # the combine step on detached copies: its VJP gives the gradient entering each path
        self._r_in = self.r.detach().requires_grad_(True)
        self._s_in = self.s.detach().requires_grad_(True)
        # a gated block (He et al. 2016) weights the two paths by g(x) and 1 - g(x): in the path view
        # the gate is part of the join, held at its forward value, so the gradient is split between
        # F and s as the gate splits it; the gate's own dependence on x is a third route that no
        # path of Veit et al.'s binary decomposition takes, and is left out
        g = block.gate_value(entered)
        self.joined = block.combine(self._r_in, self._s_in, None if g is None else g.detach())
        self.identity = block.downsample is None and not block.plan.entry
        self.y = self.joined.detach()


class _UnitTape(_JoinTape):
    """Unit ``i`` of a program at a fixed input: its add's operands from the segment's input (through
    whatever precedes the unit's entry in its segment, on both paths), then the add and what alone
    follows it on detached copies of them (:meth:`ProgramChain.path_graphs`). A program's joins are
    ungated (a gated unit is refused there), so no gate is held."""

    def __init__(self, chain: ProgramChain, i: int, x: Tensor) -> None:
        self.x = x.detach().requires_grad_(True)
        self.s, self.r = chain.path_operands(i, self.x)
        self._r_in = self.r.detach().requires_grad_(True)
        self._s_in = self.s.detach().requires_grad_(True)
        self.joined = chain.path_join(i, self._s_in, self._r_in)
        self.identity = self.s is self.x  # the segment's input is the shortcut, unchanged
        self.y = self.joined.detach()


def _parts(model: PathNet) -> tuple[Callable[[Tensor], Tensor], list[Callable[[Tensor], PathTape]],
                                    Callable[[Tensor], Tensor]]:
    """The net as stem, one tape maker per unit (block), head: the one shape the path loop runs."""
    if isinstance(model, ProgramChain):
        return model.stem, [partial(_UnitTape, model, i) for i in range(model.n)], model.head
    return model.stem, [partial(_BlockTape, b) for _, b in model.blocks()], model.head


def _tapes(model: PathNet, x: Tensor, y: Tensor, total: int | None = None) -> tuple[list[PathTape], Tensor]:
    """Forward the batch through the whole net (eval-mode BN); return each block's tape and the
    loss gradient at the last block's output. The loss is the cross-entropy summed over the batch
    and divided by ``total`` (default: the batch's size, i.e. the batch mean). Every example's
    gradient is its own loss's gradient divided by ``total``, so a part of a set given the whole
    set's ``total`` gets, example for example, the gradient the whole set's mean gives it (bit for
    bit: the mean's backward divides by the batch size just as the division's backward does).
    The stem and head run without splitting: the gradient is taken at the first unit's input."""
    stem, makers, head = _parts(model)
    with torch.no_grad():
        h = stem(x)
    tapes = []
    for make in makers:
        t = make(h)
        tapes.append(t)
        h = t.y.detach()
    h = h.requires_grad_(True)
    loss = F.cross_entropy(head(h), y, reduction="sum") / (len(y) if total is None else total)
    (g,) = torch.autograd.grad(loss, h)
    return tapes, g


def _path_gradient(tapes: Sequence[PathTape], g_out: Tensor, subset: set[int]) -> Tensor:
    """The gradient at the input along one path: through the residual branch of the blocks in
    ``subset``, through the skip of the rest."""
    g = g_out
    for i in range(len(tapes) - 1, -1, -1):
        g = tapes[i].back(g, i in subset)
    return g


def path_gradient_norm(tapes: Sequence[PathTape], g_out: Tensor, subset: set[int]) -> float:
    """Norm (per sample, averaged) of the gradient at the input along one path: through the residual
    branch of the blocks in ``subset``, through the skip of the rest."""
    return float(_path_gradient(tapes, g_out, subset).flatten(1).norm(dim=1).mean())


@dataclass(frozen=True)
class LengthPlan:
    """The block subsets a gradient-by-length measurement follows, per path length: all of them
    where there are no more than ``samples``, else ``samples`` drawn from the seed. Drawn once, so a
    measurement made on the whole batch or on shards of it (:mod:`analysis.run.shard`) follows the same
    paths."""

    blocks: int
    lengths: tuple[tuple[int, tuple[frozenset[int], ...], bool], ...]  # (k, subsets, exhaustive)

    @property
    def subsets(self) -> list[set[int]]:
        """Every subset, length by length: the rows of :func:`example_norms`' table."""
        return [set(s) for _, subsets, _ in self.lengths for s in subsets]

    def frame(self, norms: Tensor) -> pd.DataFrame:
        """The measurement's table from the per-example norms (one row per subset, one column per
        example, as :func:`example_norms` gives them): a path's magnitude is the mean of its row in the
        net's precision, as it has always been measured, and each length's mean and std are over its paths."""
        rows, j = [], 0
        for k, subsets, exhaustive in self.lengths:
            means = [float(norms[j + i].mean()) for i in range(len(subsets))]
            j += len(subsets)
            t = torch.tensor(means, dtype=torch.float64)
            rows.append({"length": k, "mean": float(t.mean()), "std": float(t.std()) if len(t) > 1 else 0.0,
                         "samples": len(means), "exhaustive": exhaustive, "paths": math.comb(self.blocks, k)})
        return _with_totals(rows)


def plan_lengths(n: int, *, samples: int = 10, ks: Sequence[int] | None = None, seed: int = 0) -> LengthPlan:
    """The subsets of :class:`LengthPlan` for a net of ``n`` residual blocks."""
    ks = list(range(n + 1)) if ks is None else list(ks)
    rng = random.Random(seed)
    lengths = []
    for k in ks:
        if not 0 <= k <= n:
            raise ConfigError(f"path length must be between 0 and {n}, got {k}")
        exhaustive = math.comb(n, k) <= samples
        if exhaustive:
            subsets = tuple(frozenset(c) for c in itertools.combinations(range(n), k))
        else:
            subsets = tuple(frozenset(rng.sample(range(n), k)) for _ in range(samples))
        lengths.append((k, subsets, exhaustive))
    return LengthPlan(n, tuple(lengths))


def check_paths_net(model: PathNet, x: Tensor) -> Sequence[Block | Unit]:
    """The net's blocks (a program's units), if the path decomposition applies to it and ``x``: every
    block residual, inputs of the net's kind; in a program every unit's add split into its two paths
    (a ChainError says why not)."""
    if isinstance(model, ProgramChain):
        model.check_path_inputs(x)
        for i in range(model.n):
            model.path_graphs(i)  # built now, so a unit whose paths do not split is refused before any work
        return model.units
    if isinstance(model, ResNet):  # a duck-typed stack of blocks (the tests' linear nets) has no spec
        check_inputs(model.spec, x)
    blocks = [b for _, b in model.blocks()]
    if not all(b.plan.residual for b in blocks):
        raise ConfigError("a plain net has a single path (length n); the path decomposition needs shortcuts")
    return blocks


def _weights(model: PathNet) -> torch.nn.Module:
    """The module holding the net's weights (a program's: its exported module's)."""
    return model.gm if isinstance(model, ProgramChain) else model


def _device_of(model: PathNet) -> torch.device:
    return next((p.device for p in _weights(model).parameters()), torch.device("cpu"))


def example_norms(model: PathNet, x: Tensor, y: Tensor, subsets: Sequence[set[int]], *, total: int | None = None,
                  batch_size: int | None = None, progress: ProgressFn | None = None,
                  precision: str = "fp32") -> Tensor:
    """The norm of each example's input gradient along each path: a table of ``len(subsets)`` rows
    and ``len(x)`` columns in the net's precision, on the CPU. The loss is summed over the examples
    and divided by ``total`` (default ``len(x)``, the batch mean; see :func:`_tapes`), so a shard of a
    set given the whole set's size measures its examples as the whole set's call does.

    ``batch_size`` (default: all of ``x`` in one pass) cuts ``x`` into passes of that many examples,
    which bounds the memory the tapes take. The table does not depend on where the cuts fall except
    through floating point: CPU kernels choose their code by batch size (torch sends a batch of one
    to its im2col + GEMM convolution instead of oneDNN's; MKL's GEMM computes the input gradient of
    ``nn.Linear`` for one to three rows with another kernel), and another summation order changes
    the last bits of an example's gradient (up to 1e-5 relative measured on the shipped nets). Passes
    of the same examples give bit-identical columns, which is what sharded measurements rely on.

    ``x`` and ``y`` are moved to the model's device (each pass once); the table comes back in one
    copy. Mode and grad state are restored. A :class:`~analysis.experiments.chain.ProgramChain` runs
    each pass in pieces of the batch it was exported with, the last one padded (its ``_run``), so any
    batch works; its mode is the exported one and is left alone.

    ``precision="bf16"``: the forward passes and the gradients flow under bf16 autocast (the VJPs run in
    the dtypes the forward recorded), and each gradient is cast back to the net's precision before its
    norm, so the norms and the table are fp32 as ever. Refused first where the device cannot run it."""
    device = _device_of(model)
    check_precision(precision, device.type)
    check_paths_net(model, x)
    total = len(x) if total is None else total
    step = len(x) if batch_size is None else batch_size
    if step < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    # the net's own precision (float32, or float64 for the tests' exact linear nets)
    dtype = next((p.dtype for p in _weights(model).parameters()), torch.float32)
    out = torch.empty(len(subsets), len(x), dtype=dtype, device=device)
    passes = max(1, math.ceil(len(x) / step))
    done, count = 0, passes * len(subsets)
    module = model if isinstance(model, torch.nn.Module) else None  # a program runs as exported
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.enable_grad(), cuda_determinism(device.type), prec.autocast(precision, device.type):
            for lo in range(0, len(x), step):
                tapes, g_out = _tapes(model, x[lo:lo + step].to(device), y[lo:lo + step].to(device), total)
                for j, s in enumerate(subsets):
                    # a bf16 gradient's norm in the net's precision (a no-op cast in fp32: the same bits)
                    out[j, lo:lo + step] = _path_gradient(tapes, g_out, s).to(dtype).flatten(1).norm(dim=1)
                    done += 1
                    if progress:
                        progress(done, count)
                del tapes, g_out  # this pass's activations go before the next pass's are made
    finally:
        if module is not None:
            module.train(was_training)
    return out.cpu()


def gradient_by_length(model: PathNet, x: Tensor, y: Tensor, *, samples: int = 10,
                       ks: Sequence[int] | None = None, seed: int = 0, batch_size: int | None = None,
                       progress: ProgressFn | None = None, precision: str = "fp32") -> pd.DataFrame:
    """Veit et al.'s measurement. For each path length k, ``samples`` random sets of k blocks (all
    of them when there are no more than ``samples``); returns per-k mean and std of the gradient
    magnitude (a path's magnitude: the mean over the examples of the norm of each one's input
    gradient, the loss being the cross-entropy's mean over all of ``x``), C(n, k) and the total
    gradient C(n, k) x mean. ``batch_size``: examples per forward/backward pass (default: all at
    once; see :func:`example_norms` for what the passes change). The inputs go to the model's
    device. Mode and grad state are restored. :func:`analysis.run.shard.sharded_gradient_by_length`
    gives the same table from shards of ``x`` (for a spec-built net: shards carry its spec). ``model``
    may be a program cut into units (:class:`~analysis.experiments.chain.ProgramChain`): the same
    measurement over its units. ``precision``: fp32 (default) or bf16 (see :func:`example_norms`)."""
    blocks = check_paths_net(model, x)
    plan = plan_lengths(len(blocks), samples=samples, ks=ks, seed=seed)
    return plan.frame(example_norms(model, x, y, plan.subsets, batch_size=batch_size, progress=progress,
                                    precision=precision))


MEASURED_COLUMNS = ("length", "mean", "std", "samples", "exhaustive", "paths")


def _with_totals(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The measured columns (``MEASURED_COLUMNS``, ``paths`` as an int or its decimal string) plus
    the derived ones: log10 of C(n, k), log10 of the total and the total relative to its peak."""
    df = pd.DataFrame(rows, columns=list(MEASURED_COLUMNS))
    counts = [int(p) for p in df["paths"]]
    df["log10 paths"] = [math.log10(p) for p in counts]
    # C(n, k) can exceed a float's range for very deep nets: multiply in log space
    df["log10 total"] = df["log10 paths"] + df["mean"].map(lambda m: math.log10(m) if m > 0 else -math.inf)
    peak = df["log10 total"].max()
    df["total (rel.)"] = (10 ** (df["log10 total"] - peak)).astype(float)
    df["paths"] = [str(c) for c in counts]
    return df


def effective_range(df: pd.DataFrame, mass: float = 0.9) -> tuple[int, int]:
    """Shortest contiguous range of path lengths holding at least ``mass`` of the total gradient."""
    if not 0 < mass <= 1:
        raise ConfigError(f"mass must be in (0, 1], got {mass}")
    w = df["total (rel.)"].tolist()
    lengths = df["length"].tolist()
    total = sum(w)
    best = (lengths[0], lengths[-1])
    for i in range(len(w)):
        acc = 0.0
        for j in range(i, len(w)):
            acc += w[j]
            if acc >= mass * total:
                if lengths[j] - lengths[i] < best[1] - best[0]:
                    best = (lengths[i], lengths[j])
                break
    return best


def path_output(model: ResNet, x: Tensor, path: Sequence[int]) -> Tensor:
    """Forward ``x`` along one path: through the residual branch where ``path[i]`` is 1, through
    the skip (shortcut) elsewhere. For a linear residual net the 2^n path outputs sum to the output."""
    blocks = [b for _, b in model.blocks()]
    if len(path) != len(blocks):
        raise ConfigError(f"a path chooses at each of the {len(blocks)} blocks, got {len(path)} choices")
    h = x
    for b, through in zip(blocks, path, strict=True):
        h = b.enter(h)
        h = b.residual_branch(h) if through else b.shortcut(h)
    return h


# ----------------------------------------------------------------------------- measurement settings, stored results
NETS = ("trained", "initialisation")
INIT_SEED = 0  # the net "at initialisation" is built from this seed, so every measurement of it agrees
RESULTS_FORMAT = "resnet-lens-paths/1"


@dataclass(frozen=True)
class MeasureSettings:
    """What a gradient-by-length measurement depends on besides the net: random subsets per length,
    the number of test inputs (the first ``batch`` of the test split) and the subsets' seed."""

    samples: int = 10
    batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("samples", 1), ("batch", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"measurement {name} must be an integer ≥ {lo}, got {value!r}")

    def describe(self) -> str:
        return f"{self.samples} samples per length, batch {self.batch}, seed {self.seed}"


def initialised(model: ResNet) -> ResNet:
    """The same architecture freshly initialised (from ``INIT_SEED``, a local generator: no global
    RNG touched), in eval mode."""
    from analysis.arch.models import build_model

    return build_model(model.spec, seed=INIT_SEED).eval()


def measure(model: PathNet, x: Tensor, y: Tensor, settings: MeasureSettings,
            progress: ProgressFn | None = None, precision: str = "fp32") -> pd.DataFrame:
    """:func:`gradient_by_length` on the first ``settings.batch`` inputs of ``x`` (images or sequences) in
    ``precision``; ``model`` a ResNet or a program cut into units (its inputs checked by :func:`check_paths_net`)."""
    if isinstance(model, ResNet):
        check_inputs(model.spec, x, "the test inputs")
    if settings.batch > len(x):
        raise ConfigError(f"batch {settings.batch} is larger than the test split ({len(x)} {inputs_noun(x.dim() - 2)})")
    return gradient_by_length(model, x[: settings.batch], y[: settings.batch], samples=settings.samples,
                              seed=settings.seed, progress=progress, precision=precision)


Results = dict[tuple[str, MeasureSettings], pd.DataFrame]  # (net, settings) -> gradient_by_length's frame

# the run store's sweep kind of a measurement made in the app, per net: a net's trained and
# initialisation measurements are found (and listed by ``RunStore.sweeps_of``) apart
STORE_KINDS = {"trained": "paths-trained", "initialisation": "paths-initialisation"}


def store_settings(settings: MeasureSettings, data: Dataset, precision: str = "fp32") -> dict[str, Any]:
    """Everything besides the net's weights that a measurement depends on, as the run store's JSON
    key: the :class:`MeasureSettings` fields and the test data whose first ``batch`` inputs it used
    (name, split seed, number of test inputs and the normalisation applied, as for the Lesion lab's
    sweeps: another split or other statistics are other inputs). Sequences are counted under
    ``test_images`` too, the key stored measurements already have. A measurement in another precision
    than fp32 carries it (``precision``; fp32 keys are as they always were), so it is found, and listed
    by :func:`data_identity`, apart from fp32's."""
    check_precision(precision)
    return {**asdict(settings), "dataset": data.name, "split_seed": int(data.split_seed),
            "test_images": len(data.y_test), "mean": [float(v) for v in data.mean],
            "std": [float(v) for v in data.std], **precision_field(precision)}


def settings_of(stored: dict[str, Any]) -> MeasureSettings:
    """The :class:`MeasureSettings` of a run-store key made by :func:`store_settings`."""
    try:
        return MeasureSettings(stored["samples"], stored["batch"], stored["seed"])
    except KeyError as exc:
        raise ConfigError(f"a stored path measurement has no {exc} setting") from exc


def data_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """The test-data part of a :func:`store_settings` key (all but the MeasureSettings fields), with its
    precision where that is not fp32: what tells measurements of one net on one data apart."""
    names = set(asdict(MeasureSettings()))
    return {k: v for k, v in stored.items() if k not in names}


def results_file(checkpoint: Path) -> Path:
    """Where the stored measurements of a checkpoint file live: ``<folder>/path_results/<stem>.json``."""
    return checkpoint.parent / "path_results" / f"{checkpoint.stem}.json"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_results(checkpoint: Path, results: Results) -> Path:
    """Write measurements of ``checkpoint`` beside it (see :func:`results_file`), with the file's
    SHA-256 so that results of an older version of the checkpoint are never shown for a newer one."""
    entries = []
    for (net, s), df in sorted(results.items(), key=lambda kv: (NETS.index(kv[0][0]), astuple(kv[0][1]))):
        entries.append({"net": net, **asdict(s), "rows": records(df[list(MEASURED_COLUMNS)])})
    doc = {"format": RESULTS_FORMAT, "checkpoint": checkpoint.name, "sha256": file_digest(checkpoint),
           "made_by": "tools/make_path_results.py", "torch": str(torch.__version__), "measurements": entries}
    return write_json(results_file(checkpoint), doc, indent=1)


# a gradient norm is >= 0 and finite; a length is a whole number of blocks (ResNet-110 has 54)
_ROW_SCHEMA: dict[str, Column] = {"length": COUNT, "mean": ("number", 0.0, 1e300, False),
                                  "std": ("number", 0.0, 1e300, False), "samples": COUNT, "exhaustive": FLAG,
                                  "paths": DIGITS}  # C(n, k) can pass 2**53: written out in digits


def load_results(checkpoint: Path) -> Results:
    """The stored measurements of ``checkpoint``: empty when there are none, or when they were made
    on another version of the file (its SHA-256 differs). A corrupt file raises CheckpointError."""
    f = results_file(checkpoint)
    if not f.is_file():
        return {}

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{f}: corrupt stored path measurements ({why})")

    try:
        raw = f.read_bytes()
    except OSError as exc:
        raise corrupt(str(exc)) from exc
    doc = loads_json(raw, f"{f}", CheckpointError)
    if not isinstance(doc, dict):
        raise corrupt(f"a {type(doc).__name__}, not a record")
    if doc.get("format") != RESULTS_FORMAT:
        raise CheckpointError(f"{f}: unknown format {doc.get('format')!r}, expected {RESULTS_FORMAT}")
    if not isinstance(doc.get("sha256"), str):
        raise corrupt("no sha256 of the checkpoint they were made on")
    try:
        digest = file_digest(checkpoint)
    except OSError as exc:
        raise CheckpointError(f"{checkpoint}: cannot be read ({exc})") from exc
    if doc["sha256"] != digest:
        return {}
    entries = doc.get("measurements")
    if not isinstance(entries, list):
        raise corrupt("no list of measurements")
    out: Results = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"net", "rows", "samples", "batch", "seed"} <= set(e):
            raise corrupt(f"measurement {i + 1} is not a record of net, samples, batch, seed and rows")
        if e["net"] not in NETS:
            raise CheckpointError(f"{f}: unknown net {e['net']!r}")
        rows = e["rows"]
        if not isinstance(rows, list) or not rows or any(not isinstance(r, dict) or set(MEASURED_COLUMNS) - set(r)
                                                         for r in rows):
            raise CheckpointError(f"{f}: rows must hold {', '.join(MEASURED_COLUMNS)}")
        check_table(rows, _ROW_SCHEMA, f"{f}: {e['net']} measurements", CheckpointError)
        for j, r in enumerate(rows):  # C(n, k) in digits: at least 1, and few enough digits for int()
            try:
                count = int(r["paths"])
            except ValueError as exc:  # int() refuses more than sys.get_int_max_str_digits() digits
                raise corrupt(f"{e['net']} row {j + 1}: paths: {exc}") from exc
            if count < 1:
                raise corrupt(f"{e['net']} row {j + 1}: paths = {r['paths']!r}; there is at least one path of "
                              "every length")
        try:
            settings = MeasureSettings(e["samples"], e["batch"], e["seed"])
        except ConfigError as exc:  # bad settings
            raise corrupt(str(exc)) from exc
        out[(e["net"], settings)] = _with_totals(rows)
    return out
