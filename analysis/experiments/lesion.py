"""Lesion experiments (Veit, Wilber, Belongie 2016): delete or reorder residual blocks at test time.

A *sequence* says which blocks run, in which order, and whether each keeps its residual branch:
``[(0, True), (1, False), (2, True), ...]``. Deleting block i means its residual branch F is
removed and only the shortcut remains, joined by the block's own combine rule
(``Block.forward(x, keep_residual=False)``): y = relu(x) = x for an identity block of a
post-activation net, y = relu(proj(x)) for a projection, y = s(x) with no ReLU in a pre-activation net.
A plain net has no shortcut; deleting one of its blocks passes x through unchanged (parameter-free
subsample and zero-pad where the shape changes), as Veit et al. delete layers of a VGG net.
A block with an entry pool (VDCNN's max pool /2 in front of a stage's first block) keeps it when
deleted: both paths start from the pooled input, so the shapes still fit the next block.

Nothing here depends on the number of spatial dimensions: images (N x C x H x W) through a 2-D net
and sequences (N x C x L) through a 1-D net run the same code; :func:`check_inputs` refuses a
pairing of the two before any block sees it.

A sequence may also run a block twice (``[(0, True), (0, True), (1, True), ...]``, "looping"), leave
one out, or run two blocks in parallel on one input, ``((i, j), True)``: y = h + F_i(h) + F_j(h)
(Sun et al. 2024, "Transformer Layers as Painters"; Lad et al. 2024 swap and repeat a transformer's
layers likewise). Each step must get the shape it takes (:func:`analysis.experiments.chain.check_steps`);
the ``swap``, ``repeat`` and ``parallel`` sweeps try each adjacent position in turn.

The engine computes the unlesioned activations once per batch and starts every sequence from its
first difference with them, so all n single-block deletions cost about n^2/2 block evaluations
instead of n^2, with predictions identical to the straightforward loop.

A sweep is a :class:`SweepPlan` (its sequences, any random ones drawn once, and their rows) evaluated
into integer counts of wrong predictions per sequence, which become error rates only at the end: the
counts of shards of a test set add up to the whole set's, so :mod:`analysis.run.shard` evaluates a sweep
on shards (in this process or on Ray) and gives the same table.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from analysis.arch.blockplan import block_plans, net_plan
from analysis.arch.costs import trace
from analysis.arch.models import ResNet
from analysis.arch.specs import ResNetSpec
from analysis.arch.units import Unit, plan_units
from analysis.core.errors import ConfigError, DatasetError, LensError
from analysis.data.data import Dataset
from analysis.experiments import precision as prec
from analysis.experiments.chain import (
    ProgramGraph,
    Shape,
    UnitChain,
    check_steps,
    parallel_refusal,
    positional,
    run_step,
)
from analysis.experiments.chain import Step as Step  # (block index, keep its branch) or ((i, j), True): parallel
from analysis.experiments.train import cuda_determinism

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class BlockInfo:
    """What a lesion needs to know of a block; read from its plan, never re-derived."""

    index: int
    name: str
    stage: str
    stage_index: int
    downsample: bool  # the block changes stride or width
    shortcut: str  # identity | projection | pad | none (plain)
    in_channels: int
    out_channels: int
    stride: int  # how much the block shrinks its input: an entry pool's stride times its convs'


def block_infos(model: ResNet) -> list[BlockInfo]:
    # total_stride, not the convs' stride: a VDCNN block that max-pools its input keeps stride-1
    # convs, yet cannot stand in for a block that does not pool
    return [BlockInfo(i, p.name, p.stage_name, p.stage, p.downsample, p.shortcut, p.cin, p.cout, p.total_stride)
            for i, p in enumerate(b.plan for _, b in model.blocks())]


def unit_infos(units: Sequence[Unit]) -> list[BlockInfo]:
    """What a lesion needs to know of an opened net's units, read from their records: the stage is the
    owner's top-level module (``layer2``, ``blocks``), a unit downsamples when its output's shape is not
    its input's, and the channels are the first axis of the shapes (a transformer's tokens: only
    equality is ever asked of them)."""
    stages: list[str] = []
    out = []
    for i, u in enumerate(units):
        stage = u.owner.split(".", 1)[0] if u.owner else "(net)"
        if stage not in stages:
            stages.append(stage)
        # the stride along the last axis (a feature map's width, a sequence's length; a transformer's
        # width is kept, so 1)
        stride = max(1, u.in_shape[-1] // max(u.out_shape[-1], 1)) if u.in_shape and u.out_shape else 1
        out.append(BlockInfo(i, u.name, stage, stages.index(stage), u.in_shape != u.out_shape, u.shortcut,
                             u.in_shape[0] if u.in_shape else 1, u.out_shape[0] if u.out_shape else 1, stride))
    return out


def infos_of(model: ResNet | UnitChain) -> list[BlockInfo]:
    """The units a sweep plans over: a ResNet's blocks, or an opened program's units."""
    if isinstance(model, ResNet):
        return block_infos(model)
    return unit_infos(model.units)


def inputs_noun(dims: int) -> str:
    """What one input of a net or dataset of ``dims`` spatial dimensions is called in messages."""
    return "sequences" if dims == 1 else "images"


def _layout(dims: int) -> str:
    return "N × C × L" if dims == 1 else "N × C × H × W"


def check_inputs(spec: ResNetSpec, x: Tensor, what: str = "the inputs") -> None:
    """Inputs a net can take: a batch of sequences for a 1-D net, of images for a 2-D one, with the
    net's number of channels. Without this a 1-D net given images (or the reverse) fails deep inside
    torch with a message about conv weights; this says which is which."""
    dims = x.dim() - 2
    if dims != spec.dims:
        got = (f"{inputs_noun(dims)} ({' × '.join(str(v) for v in x.shape)})" if dims in (1, 2)
               else f"a tensor of shape {tuple(x.shape)}")
        raise DatasetError(f"{spec.name} is a {spec.dims}-D net: it takes {inputs_noun(spec.dims)} "
                           f"({_layout(spec.dims)}), but {what} are {got}")
    if int(x.shape[1]) != spec.in_channels:
        raise DatasetError(f"{spec.name} takes {spec.in_channels}-channel {inputs_noun(spec.dims)}; {what} have "
                           f"{int(x.shape[1])} channel{'s' * (int(x.shape[1]) != 1)}")


def check_data(spec: ResNetSpec, data: Dataset) -> None:
    """A test set a net can be evaluated on: inputs of its kind (:func:`check_inputs`), as many
    classes as it has outputs, and inputs long enough for its strides (a 1-D net's sequences no
    shorter than its total stride, as its spec requires)."""
    check_inputs(spec, data.x_test, f"the test data of {data.name}")
    what = f"the test {inputs_noun(data.dims)} of {data.name}"
    if data.num_classes != spec.num_classes:
        raise DatasetError(f"{spec.name} has {spec.num_classes} outputs; {data.name} has {data.num_classes} classes")
    if data.size != spec.input_size:
        try:
            spec.replace(input_size=data.size)
        except LensError as exc:
            raise DatasetError(f"{what} are {data.size} {spec.size_unit} long: {exc}") from exc


def shape_text(shape: Sequence[int]) -> str:
    """'32×40' (channels × samples) or '16×32×32' (channels × height × width)."""
    return "×".join(str(v) for v in shape)


def shape_legend(dims: int) -> str:
    return "channels × samples" if dims == 1 else "channels × height × width"


def block_shapes(spec: ResNetSpec, size: int | None = None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each block's input and output shape (without the batch axis) for inputs of ``size`` pixels
    or samples (default: the spec's own), from the cost tracer: C × L for a 1-D net, C × H × W
    for a 2-D one."""
    rows = trace(spec if size is None or size == spec.input_size else spec.replace(input_size=size))
    first: dict[str, tuple[int, ...]] = {}
    last: dict[str, tuple[int, ...]] = {}
    for r in rows:  # the stem's and head's rows carry block "stem" / "head", never looked up
        first.setdefault(r["block"], tuple(r["in_shape"]))
        last[r["block"]] = tuple(r["out_shape"])
    return [(first[p.name], last[p.name]) for p in block_plans(spec)]


def identity_sequence(n: int) -> list[Step]:
    return [(i, True) for i in range(n)]


def deletion(n: int, deleted: Sequence[int]) -> list[Step]:
    d = set(deleted)
    return [(i, i not in d) for i in range(n)]


def _divergence(seq: Sequence[Step]) -> int:
    """The first position where ``seq`` leaves the intact chain: the prefix before it is reused. A longer
    sequence that runs the intact chain first diverges at n (a unit's index is below n), a shorter one
    that is a prefix of it at its own length."""
    for p, (i, keep) in enumerate(seq):
        if isinstance(i, tuple) or i != p or not keep:
            return p
    return len(seq)


def check_sequence(seq: Sequence[Step], infos: list[BlockInfo],
                   shapes: Sequence[tuple[Shape, Shape]] | None = None) -> None:
    """A sequence of every position once, each block where one of its shape was (the positional rule; a
    :class:`ResNetChain` checks any other sequence by the shapes that flow). With ``shapes`` (each
    block's input and output shape) a refusal names them."""
    if len(seq) != len(infos):
        raise ConfigError(f"a sequence lists every block once: expected {len(infos)}, got {len(seq)}")
    for p, (i, _) in enumerate(seq):
        if isinstance(i, tuple):
            raise ConfigError(f"a parallel step {i} takes no one block's place: a ResNetChain checks it by its shapes")
        if not 0 <= i < len(infos):
            raise ConfigError(f"block index {i} out of range: the net has blocks 0..{len(infos) - 1}")
        a, b = infos[p], infos[i]
        if (a.in_channels, a.out_channels, a.stride) != (b.in_channels, b.out_channels, b.stride):
            named = "" if shapes is None else (f" ({' → '.join(map(shape_text, shapes[i]))} and "
                                               f"{' → '.join(map(shape_text, shapes[p]))})")
            raise ConfigError(f"block {b.name} cannot take the place of {a.name}: shapes differ{named}")


class ResNetChain:
    """A spec-built ResNet as the engine's :class:`~analysis.experiments.chain.UnitChain`: its blocks are
    the units, each run by its own ``forward(x, keep_residual)``."""

    def __init__(self, model: ResNet, size: int | None = None) -> None:
        self.model = model
        self.blocks = [b for _, b in model.blocks()]
        self.infos = block_infos(model)
        self.size = size  # the inputs' size, pixels or samples (default: the spec's), for shapes in messages
        self._units: list[Unit] | None = None
        self._shapes: list[tuple[Shape, Shape]] | None = None

    @property
    def n(self) -> int:
        return len(self.blocks)

    @property
    def units(self) -> list[Unit]:
        """The residual units of its plan (a plain net's blocks have none: it plans by its blocks)."""
        if self._units is None:
            self._units = plan_units(net_plan(self.model.spec))
        return self._units

    @property
    def shapes(self) -> list[tuple[Shape, Shape]]:
        """Each block's input and output shape (:func:`block_shapes`), traced on first use."""
        if self._shapes is None:
            self._shapes = block_shapes(self.model.spec, self.size)
        return self._shapes

    def stem(self, x: Tensor) -> Tensor:
        return self.model.stem(x)

    def unit(self, i: int, h: Tensor, keep: bool) -> Tensor:
        out: Tensor = self.blocks[i](h, keep_residual=keep)
        return out

    def branch(self, i: int, h: Tensor) -> Tensor:
        """Block i's residual branch F(h) alone (asked only of blocks that may run in parallel)."""
        return self.blocks[i].residual_branch(h)

    def head(self, h: Tensor) -> Tensor:
        return self.model.head(h)

    def _parallel_refusal(self, i: int) -> str | None:
        plan = self.blocks[i].plan
        if not plan.residual:
            return f"{plan.name} is a plain block: it has no shortcut, so its output is not its input plus a branch"
        if plan.entry:
            return f"{plan.name} pools its input before both paths, so its branch does not add onto its input"
        units = {u.name: u for u in self.units}
        return parallel_refusal(units[plan.name])

    def check_sequence(self, seq: Sequence[Step]) -> None:
        """A sequence of every position once is checked block by block against the one whose place it
        takes (:func:`check_sequence`, no tracing needed); any other, or one refused so, by the shapes
        that flow (:func:`~analysis.experiments.chain.check_steps`). A refused flow is a refused place,
        so such a sequence keeps the older message."""
        older = False
        if positional(seq, self.n):
            try:
                check_sequence(seq, self.infos)
                return
            except ConfigError:
                older = True
        try:
            check_steps(seq, names=[b.name for b in self.infos], ins=[a for a, _ in self.shapes],
                        outs=[b for _, b in self.shapes], parallel=self._parallel_refusal, noun="block")
        except ConfigError:
            if older:
                check_sequence(seq, self.infos, self.shapes)  # raises again, the shapes named
            raise


def as_chain(model: ResNet | UnitChain, x: Tensor) -> UnitChain:
    """The one interface the engine runs: a ResNet's blocks (its inputs checked against its spec), or a
    program already cut into units (:class:`~analysis.experiments.chain.ProgramChain`)."""
    if isinstance(model, ResNet):
        check_inputs(model.spec, x)
        return ResNetChain(model, int(x.shape[-1]))
    return model


@torch.inference_mode()
def predict_sequences(model: ResNet | UnitChain, x: Tensor, sequences: Sequence[Sequence[Step]], *,
                      batch_size: int = 256, device: str = "cpu", reuse_prefix: bool = True,
                      progress: ProgressFn | None = None, precision: str = "fp32") -> Tensor:
    """Predicted classes, shape (len(sequences), len(x)), on the CPU. ``reuse_prefix=False`` is the
    straightforward loop (every sequence from the stem), kept as the reference.

    The model must already be on ``device``. Each batch of inputs is moved there once and serves every
    sequence; the predictions stay there and come back to the CPU in one copy at the end (a copy per
    sequence and batch would make every step wait for a GPU). On CUDA the work runs with cuDNN's
    deterministic algorithms (:func:`analysis.experiments.train.cuda_determinism`). A spec-built ResNet
    and an opened program cut into units run through the same loop (:func:`as_chain`); a program whose
    units are not one chain (:class:`~analysis.experiments.chain.ProgramGraph`) runs each sequence's
    deletions through its whole graph, with no prefix to reuse.

    ``precision="bf16"`` runs every forward under bf16 autocast
    (:func:`analysis.experiments.precision.autocast`; refused first on a CPU without bf16 units):
    predictions may differ from fp32's, which (the default) runs exactly as it always has."""
    check_precision(precision, device)
    chain = as_chain(model, x)
    for seq in sequences:
        chain.check_sequence(seq)
    n = chain.n
    starts = [_divergence(s) if reuse_prefix else 0 for s in sequences]
    preds = torch.empty(len(sequences), len(x), dtype=torch.long, device=device)
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    batches = max(1, (len(x) + batch_size - 1) // batch_size)
    total, done = batches * len(sequences), 0
    try:
        with cuda_determinism(device), prec.autocast(precision, device):
            for lo in range(0, len(x), batch_size):
                xb = x[lo:lo + batch_size].to(device)
                if isinstance(chain, ProgramGraph):  # units not one chain: each sequence is one whole forward
                    for si, seq in enumerate(sequences):
                        gone = frozenset(i for i, keep in seq if not keep and isinstance(i, int))
                        preds[si, lo:lo + len(xb)] = chain.forward_deleted(gone, xb).argmax(1)
                        done += 1
                        if progress:
                            progress(done, total)
                    continue
                h0 = chain.stem(xb)
                prefix: list[Tensor] = [h0]
                if reuse_prefix:
                    h = h0
                    for i in range(n):  # the unlesioned pass, kept unit by unit
                        h = chain.unit(i, h, True)
                        prefix.append(h)
                for si, seq in enumerate(sequences):
                    p = starts[si]
                    h = prefix[p] if reuse_prefix else h0
                    for step in list(seq)[p:]:  # none left where the whole sequence is the intact chain
                        h = run_step(chain, step, h)
                    preds[si, lo:lo + len(xb)] = chain.head(h).argmax(1)
                    done += 1
                    if progress:
                        progress(done, total)
    finally:
        if module is not None:
            module.train(was_training)
    return preds.cpu()


def wrong_counts(model: ResNet | UnitChain, x: Tensor, y: Tensor, sequences: Sequence[Sequence[Step]],
                 **kw: Any) -> Tensor:
    """How many inputs each sequence gets wrong (int64, one count per sequence; ``kw`` as
    :func:`predict_sequences` takes them). Counts, not rates: the counts of disjoint parts of a test
    set add up to the whole set's exactly, which is how :mod:`analysis.run.shard` merges shards."""
    return (predict_sequences(model, x, sequences, **kw) != y[None]).sum(1)


def errors_from_counts(wrong: Tensor, n: int) -> list[float]:
    """Error rates ``wrong / n``, divided in float32. That is the number the sweeps have always
    reported, ``(preds != y).float().mean()``: a float32 sum of 0/1 values is exact below 2^24 inputs
    and the mean divides it by n in float32, so rates computed from counts are bit-identical to it
    and every stored sweep stays reproducible."""
    return (wrong.to(torch.float32) / n).tolist()


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep evaluates: its sequences and, for each, its row without the error. The random
    subsets and swaps are drawn here, once, so a sweep evaluated on the whole test set or on shards
    of it (:mod:`analysis.run.shard`) runs the same sequences."""

    sequences: list[list[Step]]
    rows: list[dict[str, Any]]
    # what a sweep of positions left out, and why (one line each: "layer1.2 || layer2.0: ..."); the
    # table carries them as ``df.attrs["skipped"]`` where there are any
    skipped: tuple[str, ...] = ()

    def frame(self, wrong: Tensor, n: int) -> pd.DataFrame:
        """The sweep's table from its wrong counts (one per sequence) on ``n`` inputs."""
        errors = errors_from_counts(wrong, n)
        df = pd.DataFrame([{**r, "error": e} for r, e in zip(self.rows, errors, strict=True)])
        if self.skipped:
            df.attrs["skipped"] = list(self.skipped)
        return df

    def evaluate(self, model: ResNet | UnitChain, x: Tensor, y: Tensor, **kw: Any) -> pd.DataFrame:
        """The sweep on ``x`` in this process (``kw`` as :func:`predict_sequences` takes them)."""
        return self.frame(wrong_counts(model, x, y, self.sequences, **kw), len(y))


def single_plan(model: ResNet | UnitChain) -> SweepPlan:
    """Nothing deleted, then each block deleted in turn."""
    infos = infos_of(model)
    n = len(infos)
    seqs = [identity_sequence(n)] + [deletion(n, [i]) for i in range(n)]
    rows = [{"experiment": "single", "deleted": "none", "index": -1, "stage": "", "downsample": False,
             "shortcut": ""}]
    rows += [{"experiment": "single", "deleted": b.name, "index": b.index, "stage": b.stage,
              "downsample": b.downsample, "shortcut": b.shortcut} for b in infos]
    return SweepPlan(seqs, rows)


def single_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, **kw: Any) -> pd.DataFrame:
    """Error after deleting each block in turn (row -1: nothing deleted)."""
    return single_plan(model).evaluate(model, x, y, **kw)


def k_plan(model: ResNet | UnitChain, *, ks: Sequence[int] | None = None, samples: int = 5, seed: int = 0,
           include_downsample: bool = False) -> SweepPlan:
    """``samples`` random subsets of each size k of the blocks (the non-downsampling ones unless
    ``include_downsample``), deleted together."""
    infos = infos_of(model)
    n = len(infos)
    pool = [b.index for b in infos if include_downsample or not b.downsample]
    ks = list(ks) if ks is not None else list(range(0, len(pool) + 1))
    rng = random.Random(seed)
    seqs, meta = [], []
    for k in ks:
        if not 0 <= k <= len(pool):
            raise ConfigError(f"k must be between 0 and {len(pool)}, got {k}")
        for s in range(samples if 0 < k < len(pool) else 1):
            chosen = sorted(rng.sample(pool, k))
            seqs.append(deletion(n, chosen))
            meta.append({"experiment": "k", "k": k, "sample": s, "deleted": " ".join(infos[i].name for i in chosen)})
    return SweepPlan(seqs, meta)


def k_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, *, ks: Sequence[int] | None = None, samples: int = 5,
            seed: int = 0, include_downsample: bool = False, **kw: Any) -> pd.DataFrame:
    """Error vs number of blocks deleted: ``samples`` random subsets of each size k."""
    plan = k_plan(model, ks=ks, samples=samples, seed=seed, include_downsample=include_downsample)
    return plan.evaluate(model, x, y, **kw)


def swappable_pairs(infos: list[BlockInfo]) -> list[tuple[int, int]]:
    """Pairs of blocks with the same input and output shape (non-downsampling, same stage)."""
    same = [b for b in infos if not b.downsample]
    return [(a.index, b.index) for ai, a in enumerate(same) for b in same[ai + 1:]
            if (a.in_channels, a.out_channels, a.stage) == (b.in_channels, b.out_channels, b.stage)]


def reorder_plan(model: ResNet | UnitChain, *, ks: Sequence[int] | None = None, samples: int = 5,
                 seed: int = 0) -> SweepPlan:
    """``samples`` random orders made by swapping k random pairs of same-shape blocks, per k."""
    infos = infos_of(model)
    n = len(infos)
    pairs = swappable_pairs(infos)
    if not pairs:
        raise ConfigError("this net has no two blocks of the same shape to swap")
    ks = list(ks) if ks is not None else [0, 1, 2, 4, 8, 16, 32][: 2 + len(pairs).bit_length()]
    rng = random.Random(seed)
    seqs, meta = [], []
    for k in ks:
        for s in range(samples if k else 1):
            order = list(range(n))
            swaps = []
            for _ in range(k):
                a, b = rng.choice(pairs)
                pa, pb = order.index(a), order.index(b)
                order[pa], order[pb] = order[pb], order[pa]
                swaps.append(f"{infos[a].name}<->{infos[b].name}")
            seq: list[Step] = [(i, True) for i in order]
            check_sequence(seq, infos)
            seqs.append(seq)
            meta.append({"experiment": "reorder", "k": k, "sample": s, "swaps": " ".join(swaps),
                         "displaced": sum(i != p for p, i in enumerate(order))})
    return SweepPlan(seqs, meta)


def reorder_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, *, ks: Sequence[int] | None = None, samples: int = 5,
                  seed: int = 0, **kw: Any) -> pd.DataFrame:
    """Error vs amount of reordering: swap k random pairs of same-shape blocks."""
    return reorder_plan(model, ks=ks, samples=samples, seed=seed).evaluate(model, x, y, **kw)


def _chain_of(model: ResNet | UnitChain) -> UnitChain:
    """The chain whose own rules decide which sequences a plan may hold (shapes at the spec's size)."""
    return ResNetChain(model) if isinstance(model, ResNet) else model


Candidate = tuple[int, list[Step], str, tuple[int, ...]]  # position, sequence, its units in words, their indices


def _position_plan(model: ResNet | UnitChain, experiment: str, candidates: Sequence[Candidate],
                   none_left: str) -> SweepPlan:
    """The intact net (row "none", index -1), then each candidate the net's chain accepts, its stage the
    stages of its units ("layer1", or "layer1/layer2" across a boundary); the others are skipped with
    the chain's reason. None accepted: ``none_left`` and the first reason, as one :class:`ConfigError`."""
    chain = _chain_of(model)
    infos = infos_of(model)
    seqs = [identity_sequence(len(infos))]
    rows: list[dict[str, Any]] = [{"experiment": experiment, "units": "none", "index": -1, "stage": ""}]
    skipped: list[str] = []
    first = "it has too few units"
    for p, seq, label, members in candidates:
        try:
            chain.check_sequence(seq)
        except ConfigError as exc:
            first = str(exc) if not skipped else first
            skipped.append(f"{label}: {exc}")
            continue
        seqs.append(seq)
        rows.append({"experiment": experiment, "units": label, "index": p,
                     "stage": "/".join(dict.fromkeys(infos[q].stage for q in members))})
    if len(seqs) == 1:
        raise ConfigError(f"{none_left}: {first}")
    return SweepPlan(seqs, rows, tuple(skipped))


def swap_plan(model: ResNet | UnitChain, **_: Any) -> SweepPlan:
    """The intact net, then each pair of adjacent units swapped where both keep one shape (Lad et al.
    2024, Sun et al. 2024: a transformer's middle layers swap with little loss; Veit et al. 2016 swap
    a ResNet's blocks). Row ``index``: the pair's first position; ``units``: "a<->b"."""
    infos = infos_of(model)
    n = len(infos)
    cands: list[Candidate] = []
    for p in range(n - 1):
        order = list(range(n))
        order[p], order[p + 1] = p + 1, p
        cands.append((p, [(i, True) for i in order], f"{infos[p].name}<->{infos[p + 1].name}", (p, p + 1)))
    return _position_plan(model, "swap", cands, "this net has no two adjacent units of one shape to swap")


def repeat_plan(model: ResNet | UnitChain, **_: Any) -> SweepPlan:
    """The intact net, then each unit whose output has its input's shape run twice in place ("looping",
    Sun et al. 2024). Row ``index``: the unit's position; ``units``: "a x2"."""
    infos = infos_of(model)
    n = len(infos)
    cands: list[Candidate] = [
        (p, [*identity_sequence(p + 1), (p, True), *((i, True) for i in range(p + 1, n))], f"{b.name} x2", (p,))
        for p, b in enumerate(infos)]
    return _position_plan(model, "repeat", cands, "no unit of this net keeps its input's shape, so none can run twice")


def parallel_plan(model: ResNet | UnitChain, **_: Any) -> SweepPlan:
    """The intact net, then each pair of adjacent units run in parallel on one input, y = h + F_i(h) +
    F_j(h) (Sun et al. 2024): pairs the chain refuses (a post-activation unit, a shape change, a plain
    layer) are skipped, their reasons in :attr:`SweepPlan.skipped`. Row ``index``: the pair's first
    position; ``units``: "a || b"."""
    infos = infos_of(model)
    n = len(infos)
    cands: list[Candidate] = [
        (p, [*identity_sequence(p), ((p, p + 1), True), *((i, True) for i in range(p + 2, n))],
         f"{infos[p].name} || {infos[p + 1].name}", (p, p + 1)) for p in range(n - 1)]
    return _position_plan(model, "parallel", cands, "no two adjacent units of this net can run in parallel")


def swap_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, **kw: Any) -> pd.DataFrame:
    """Error with each adjacent same-shape pair swapped (row -1: intact)."""
    return swap_plan(model).evaluate(model, x, y, **kw)


def repeat_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, **kw: Any) -> pd.DataFrame:
    """Error with each shape-keeping unit run twice (row -1: intact)."""
    return repeat_plan(model).evaluate(model, x, y, **kw)


def parallel_sweep(model: ResNet | UnitChain, x: Tensor, y: Tensor, **kw: Any) -> pd.DataFrame:
    """Error with each adjacent pair of units run in parallel (row -1: intact)."""
    return parallel_plan(model).evaluate(model, x, y, **kw)


def summarise(df: pd.DataFrame, by: str = "k") -> pd.DataFrame:
    """Mean, spread and range of the error per k."""
    g = df.groupby(by)["error"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std().fillna(0.0), "min": g.min(), "max": g.max(),
                         "samples": g.size()}).reset_index()


def confusion(y: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix, rows = true class, columns = predicted."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(y: Tensor, pred: Tensor, num_classes: int) -> list[float]:
    cm = confusion(y, pred, num_classes)
    return (cm.diag().float() / cm.sum(1).clamp_min(1).float()).tolist()


SWEEPS: dict[str, Callable[..., pd.DataFrame]] = {"single": single_sweep, "k": k_sweep, "reorder": reorder_sweep,
                                                  "swap": swap_sweep, "repeat": repeat_sweep,
                                                  "parallel": parallel_sweep}
PLANS: dict[str, Callable[..., SweepPlan]] = {"single": single_plan, "k": k_plan, "reorder": reorder_plan,
                                              "swap": swap_plan, "repeat": repeat_plan, "parallel": parallel_plan}
SWEEP_KINDS = tuple(SWEEPS)
RANDOM_SWEEPS = frozenset({"k", "reorder"})  # the sweeps that draw: only these read samples and seed


def check_sweep_options(kind: str, *, samples: int = 5, seed: int = 0, batch_size: int = 256) -> None:
    """Refuse a sweep setting that means nothing, before any work: unknown kind, batch size (or,
    for the random sweeps, samples) below 1 or absurdly large, a seed outside [0, 2**63), anything
    not a whole number. ``samples`` and ``seed`` are used by the random sweeps only (k, reorder)."""
    if kind not in SWEEPS:
        raise ConfigError(f"unknown sweep {kind!r}; choose one of {', '.join(SWEEP_KINDS)}")
    checks: list[tuple[str, object, int, int]] = [("batch size", batch_size, 1, 1_000_000)]
    if kind in RANDOM_SWEEPS:
        checks += [("samples per k", samples, 1, 100_000), ("seed", seed, 0, 2**63 - 1)]
    for what, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        if not lo <= int(value) <= hi:
            raise ConfigError(f"{what} must be between {lo:,} and {hi:,}, got {value}")


def plan_sweep(kind: str, model: ResNet | UnitChain, *, samples: int = 5, seed: int = 0, batch_size: int = 256) -> SweepPlan:
    """The plan of one sweep by name, every option checked first (as :func:`run_sweep` takes them;
    ``batch_size`` is only checked here)."""
    check_sweep_options(kind, samples=samples, seed=seed, batch_size=batch_size)
    if kind not in RANDOM_SWEEPS:
        return PLANS[kind](model)
    return PLANS[kind](model, samples=samples, seed=seed)


def run_sweep(kind: str, model: ResNet | UnitChain, x: Tensor, y: Tensor, *, samples: int = 5, seed: int = 0,
              batch_size: int = 256, device: str = "cpu", progress: ProgressFn | None = None,
              precision: str = "fp32") -> pd.DataFrame:
    """One lesion sweep by name (one of :data:`SWEEP_KINDS`: ``single``, ``k``, ``reorder``, ``swap``,
    ``repeat``, ``parallel``): the entry point the CLI and the lesion page share. ``samples`` and ``seed``
    apply to the random sweeps only (k, reorder). The model must be on
    ``device``. ``precision``: fp32 (default) or bf16 (:func:`predict_sequences`; refused before any
    work where the device cannot run it). :func:`analysis.run.shard.sharded_sweep` gives the same table
    from shards of ``x``."""
    plan = plan_sweep(kind, model, samples=samples, seed=seed, batch_size=batch_size)
    return plan.evaluate(model, x, y, batch_size=batch_size, device=device, progress=progress, precision=precision)


def sweep_settings(kind: str, data: Dataset, *, samples: int = 5, seed: int = 0,
                   precision: str = "fp32") -> dict[str, Any]:
    """Everything besides the net's weights that a sweep's result depends on, as a JSON-able dict
    (the run store's key): the test data (name, split seed, number of inputs and the normalisation
    applied, which differ between ImageFolder subsets or checkpoints' stored statistics) and, for the
    random sweeps, samples and seed. The others (single, swap, repeat, parallel) use neither, so both are 0: its result
    is found whatever the other tabs' settings are. The count is kept under ``test_images`` for
    sequences too: the key of sweeps already stored does not change. ``precision`` is in the dict only
    where it is not fp32 (a bf16 sweep never answers for an fp32 one, and every fp32 key stays as it was)."""
    check_sweep_options(kind, samples=samples, seed=seed)
    check_precision(precision)
    random_sweep = kind in RANDOM_SWEEPS
    return {"dataset": data.name, "split_seed": data.split_seed, "test_images": len(data.y_test),
            "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std],
            "samples": int(samples) if random_sweep else 0, "seed": int(seed) if random_sweep else 0,
            **precision_field(precision)}


def check_precision(precision: str, device: str | None = None) -> None:
    """An evaluation precision (:data:`~analysis.experiments.precision.EVAL_PRECISIONS`: a lesion sweep's, a
    path measurement's) by name and, given a ``device``, one it runs
    (:func:`analysis.experiments.precision.check`: bf16 on a CPU without bf16 units is refused in one sentence)."""
    if precision not in prec.EVAL_PRECISIONS:
        raise ConfigError(f"an evaluation runs in {' or '.join(prec.EVAL_PRECISIONS)}, got {precision!r}")
    if device is not None:
        prec.check(precision, device)


def precision_field(precision: str) -> dict[str, str]:
    """``{"precision": "bf16"}`` for a key made in another precision than fp32; empty for fp32, so the
    keys of every result stored before precisions existed still find them."""
    return {} if precision == "fp32" else {"precision": precision}


def describe_settings(kind: str, settings: dict[str, Any], dims: int = 2) -> str:
    """'5 samples per k, seed 0, on 450 test images of digits16', or '... 1000 test sequences of
    mnist1d' for the sequences of a 1-D dataset (``dims``: the test data's, ``Dataset.dims``), for
    captions and messages."""
    data = f"{settings['test_images']} test {inputs_noun(dims)} of {settings['dataset']}"
    if settings.get("precision", "fp32") != "fp32":
        data += f", in {settings['precision']}"
    if kind not in RANDOM_SWEEPS:
        return data
    per = "per k" if kind == "k" else "per number of swaps"
    return f"{settings['samples']} samples {per}, seed {settings['seed']}, on {data}"


NEAR_CHANCE_PP = 10.0  # "at or near chance": an error within this many percentage points of chance, or above it


def single_reading(df: pd.DataFrame, *, residual: bool, num_classes: int) -> str:
    """What a single-block sweep of one net shows, in words computed from its numbers (so the page
    never claims more than the data): intact error, typical and worst deletion, then the comparison
    Veit et al. make for that kind of net. A residual net: whether a downsampling block hurts most.
    A plain net: how many deletions leave it at or near chance (1 - 1/classes; within
    ``NEAR_CHANCE_PP`` points or above), which is what they report for plain nets."""
    intact = float(df.loc[df["index"] == -1, "error"].iloc[0])
    rows = df[df["index"] >= 0]
    worst = rows.loc[rows["error"].idxmax()]
    median = float(rows["error"].median())
    parts = [f"intact {100 * intact:.1f} %; deleting one block gives a median of {100 * median:.1f} % "
             f"(worst: {worst['deleted']}, {100 * worst['error']:.1f} %)"]
    if not residual:
        parts.append(_plain_reading(rows, num_classes))
        return "; ".join(parts) + "."
    down = rows[rows["downsample"]]
    if len(down):
        parts.append("downsampling blocks: " + ", ".join(f"{r.deleted} {100 * r.error:.1f} %" for r in down.itertuples()))
        others = rows[~rows["downsample"]]
        if len(others):
            hurts_most = float(down["error"].max()) >= float(others["error"].max())
            parts.append("the worst deletion is a downsampling block, as Veit et al. report" if hurts_most else
                         "unlike Veit et al.'s nets, a non-downsampling block hurts most here")
    return "; ".join(parts) + "."


def _plain_reading(rows: pd.DataFrame, num_classes: int) -> str:
    """A plain net's deletions against chance: all, most or few of them at or near it."""
    chance = 1 - 1 / num_classes
    near = rows["error"] >= chance - NEAR_CHANCE_PP / 100
    count, total = int(near.sum()), len(rows)
    where = f"chance ({100 * chance:.1f} %; within {NEAR_CHANCE_PP:g} pp or above)"
    if count == total:
        return f"every deletion leaves it at or near {where}, as Veit et al. report for plain nets"
    mildest = rows.loc[rows["error"].idxmin()]
    rest = f"the mildest, {mildest['deleted']}, gives {100 * mildest['error']:.1f} %"
    if 2 * count >= total:
        return (f"{count} of {total} deletions leave it at or near {where}, as Veit et al. report for plain "
                f"nets; {rest}")
    return (f"only {count} of {total} deletions leave it at or near {where}: unlike Veit et al.'s plain nets, "
            f"most deletions keep it better than chance; {rest}")
