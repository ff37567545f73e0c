"""Transfer learning, measured mode by mode: a net trained on a source task reused on a target task.

The embedded default needs nothing downloaded: the source is a residual net trained on the digits
0-4, the target is the digits 5-9 with a chosen number of labelled training images per class (1, 5,
10, 20 or all), tested on every test image of 5-9.

Every mode is one :class:`Setup`: how many leading stages of the body come from the source (the stem
with the first), and how many leading stages are frozen. So the modes are special cases of one rule
(Yosinski et al. 2014, "How transferable are features in deep neural networks?"):

- from scratch: nothing copied, nothing frozen;
- fixed feature extractor: everything copied and frozen, a new linear head trained;
- fine-tune everything: everything copied, nothing frozen;
- fine-tune only the last k stages: everything copied, the first n - k frozen;
- transfer the first k stages: k copied, frozen or fine-tuned, the rest freshly initialised.

Hence transferring 0 stages *is* training from scratch and transferring all stages frozen *is* the
feature extractor (tests check it on numbers). The head is always new (the target's classes), drawn
from the run's seed like every freshly initialised weight. Frozen modules leave the optimizer and
stay in eval mode, so their weights and BatchNorm statistics end bit-identical; ``bn="frozen"`` also
keeps the statistics of copied, fine-tuned BatchNorms fixed (their scale and shift still learn).

Preprocessing: the target's inputs are normalised with the source's statistics (what the source net
saw), the target's own labelled images' statistics, or not at all ("mind the other model's
preprocessing"). A linear probe on each stage's pooled output of the frozen source net says where
the features that serve the target live.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from analysis.arch.models import ResNet, build_model
from analysis.arch.ops import Op
from analysis.core.bounded import COUNT, FRACTION, SECONDS, SEED, TEXT, Column, check_table, loads_json, short_repr
from analysis.core.errors import ConfigError, DatasetError
from analysis.core.meta import PRECISIONS, Normalisation, TrainConfig
from analysis.core.reporting import records, write_csv, write_json
from analysis.core.stats import Contrast, mean_interval, paired_contrast, welch_from_summary
from analysis.data.data import (
    DIGITS_SIZES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    load_digits,
    load_image_folder,
    load_mnist1d,
)
from analysis.experiments import precision as prec
from analysis.store.checkpoints import Checkpoint

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
LABELS = (1, 5, 10, 20, None)  # labelled training images per target class; None: all of them
Norm = Literal["source", "target", "none"]
NORMS: tuple[Norm, ...] = ("source", "target", "none")
BnMode = Literal["update", "frozen"]
BN_MODES: tuple[BnMode, ...] = ("update", "frozen")
NORM_LABELS = {"source": "source statistics", "target": "target statistics", "none": "no normalisation"}


@dataclass(frozen=True)
class Setup:
    """One way of reusing the source: ``copied`` leading stages (the stem with the first; a
    pre-activation net's final BN with the last) come from the source, ``frozen`` leading stages
    (<= copied) are not trained. ``bn`` says whether copied, trainable BatchNorms update their running
    statistics; ``norm`` which statistics normalise the target's inputs."""

    copied: int
    frozen: int
    bn: BnMode = "update"
    norm: Norm = "source"

    def check(self, stages: int) -> None:
        for name in ("copied", "frozen"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= stages:
                raise ConfigError(f"{name} stages must be a whole number from 0 to {stages}, got {v!r}")
        if self.frozen > self.copied:
            raise ConfigError(f"only copied stages can be frozen: {self.frozen} frozen of {self.copied} copied; "
                              "a frozen fresh stage would stay random")
        if self.bn not in BN_MODES:
            raise ConfigError(f"bn must be one of {BN_MODES}, got {self.bn!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {self.norm!r}")


def mode_setup(mode: str, stages: int, k: int = 0, *, bn: BnMode = "update", norm: Norm = "source") -> Setup:
    """The named modes as setups: scratch, frozen (feature extractor), finetune, last_k (fine-tune
    the last k stages), first_k_frozen / first_k_finetuned (transfer the first k stages)."""
    table = {"scratch": (0, 0), "frozen": (stages, stages), "finetune": (stages, 0),
             "last_k": (stages, stages - k), "first_k_frozen": (k, k), "first_k_finetuned": (k, 0)}
    if mode not in table:
        raise ConfigError(f"unknown transfer mode {mode!r}; choose one of {', '.join(table)}")
    if mode in ("last_k", "first_k_frozen", "first_k_finetuned") and not 0 <= k <= stages:
        raise ConfigError(f"k must be between 0 and {stages} stages, got {k}")
    copied, frozen = table[mode]
    # BN statistics frozen or updated differ only where copied stages are fine-tuned; elsewhere (from
    # scratch, the feature extractor) both are the same run and must have one name and one store key
    s = Setup(copied, frozen, bn if copied > frozen else "update", norm)
    s.check(stages)
    return s


K_MODES = ("last_k", "first_k_frozen", "first_k_finetuned")  # the modes a k shapes


def choose_setups(modes: Iterable[str], ks: Iterable[int], bns: Iterable[BnMode], norms: Iterable[Norm],
                  stages: int) -> tuple[Setup, ...]:
    """Every mode with every k (the k modes only; fine-tuning the last 0 stages is the feature
    extractor, said once), BatchNorm mode and normalisation, each setup once: the first-k sweep's
    k = 0 *is* from scratch, and so on. The page and the CLI build their setups here."""
    ks, bns, norms = list(ks), list(bns), list(norms)
    out: list[Setup] = []
    for mode in modes:
        for k in (ks if mode in K_MODES else [0]):
            if mode == "last_k" and k == 0:
                continue
            for bn in bns:
                for norm in norms:
                    s = mode_setup(mode, stages, k, bn=bn, norm=norm)
                    if s not in out:
                        out.append(s)
    return tuple(out)


MODES = ("scratch", "frozen", "finetune", "last_k", "first_k_frozen", "first_k_finetuned")
MODE_LABELS = {"scratch": "from scratch", "frozen": "fixed feature extractor", "finetune": "fine-tune everything",
               "last_k": "fine-tune the last k stages", "first_k_frozen": "first k stages, frozen",
               "first_k_finetuned": "first k stages, fine-tuned"}


def setup_label(s: Setup, stages: int) -> str:
    """The setup in words: the named mode it is, or its numbers."""
    if s.copied == 0:
        name = "from scratch"
    elif s.copied == stages and s.frozen == stages:
        name = "fixed feature extractor"
    elif s.copied == stages and s.frozen == 0:
        name = "fine-tune everything"
    elif s.copied == stages:
        name = f"fine-tune the last {stages - s.frozen} stage{'s' * (stages - s.frozen != 1)}"
    else:
        name = f"first {s.copied} stage{'s' * (s.copied != 1)} {'frozen' if s.frozen == s.copied else 'fine-tuned'}"
        if 0 < s.frozen < s.copied:
            name = f"first {s.copied} stages, {s.frozen} frozen"
    extras = []
    if s.bn == "frozen" and s.copied > s.frozen:
        extras.append("BN statistics frozen")
    if s.norm != "source":  # from scratch too: other inputs make another run, which needs another name
        extras.append(NORM_LABELS[s.norm])
    return name + (f" ({', '.join(extras)})" if extras else "")


# ------------------------------------------------------------------------------------------- data
def check_labels(data: Dataset, labels: Iterable[int | None]) -> None:
    """Every labels-per-class setting (None: all) is a whole number >= 1 that each class of
    ``data``'s training split can give; ``DatasetError`` naming the smallest class otherwise."""
    counts = torch.bincount(data.y_train, minlength=data.num_classes)
    for per_class in labels:
        if per_class is None:
            continue
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise DatasetError(f"labelled images per class must be a whole number of at least 1, got {per_class!r}")
        c = int(counts.argmin())
        if int(counts[c]) < per_class:
            raise DatasetError(f"{data.name}: class {data.classes[c]!r} has {int(counts[c])} training images, fewer "
                               f"than the {per_class} labelled images per class asked for")


def labelled_subset(data: Dataset, per_class: int | None, seed: int) -> Dataset:
    """``per_class`` training images of each class, drawn by ``seed`` (None: all); the test split
    untouched. Raises ``DatasetError`` when a class has fewer images than asked."""
    if per_class is None:
        return data
    check_labels(data, [per_class])
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.y_train == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    keep = torch.sort(torch.cat(picks)).values
    return replace(data, name=data.name, x_train=data.x_train[keep], y_train=data.y_train[keep])


def normalised(raw: Dataset, norm: Norm, source: Normalisation | None, labelled: Tensor | None = None) -> Dataset:
    """``raw`` (unnormalised) inputs normalised with the source's statistics, the target's own (from
    ``labelled``, the labelled training images: a test image never informs them) or not at all.
    ``source`` may be None (a bare state_dict records none) unless ``norm`` is "source"."""
    c = raw.channels
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "source":
        if source is None:
            raise DatasetError(NO_SOURCE_STATISTICS)
        if len(source.mean) != c:
            raise DatasetError(f"the source net was trained on {len(source.mean)}-channel inputs, the target has {c}: "
                               "its first conv cannot take them (nothing adapts the channel count)")
        mean, std = torch.tensor(source.mean), torch.tensor(source.std)
    elif norm == "target":
        x = raw.x_train if labelled is None else labelled
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        # one labelled image of one class still has a spread over its pixels; clamp a constant input
        std = x.std(dim=dims, unbiased=False).clamp_min(1e-6) if x.shape[0] * math.prod(x.shape[2:]) > 1 \
            else torch.ones(c)
    else:
        mean, std = torch.zeros(c), torch.ones(c)
    shape = (1, c) + (1,) * (raw.x_train.dim() - 2)
    m, s = mean.view(shape), std.view(shape)
    return replace(raw, x_train=(raw.x_train - m) / s, x_test=(raw.x_test - m) / s,
                   mean=[float(v) for v in mean], std=[float(v) for v in std])


NO_SOURCE_STATISTICS = ("the checkpoint records no input normalisation, so the source's statistics are unknown; "
                        "normalise the target with its own statistics or not at all")


def digits_target(per_class: int | None, seed: int, norm: Norm, source: Normalisation | None, *, size: int = 16,
                  classes: tuple[int, ...] = TARGET_CLASSES) -> Dataset:
    """The embedded target: digits ``classes`` (5-9), ``per_class`` labelled images each (drawn by
    ``seed``), all their test images, normalised as ``norm`` says."""
    raw = load_digits(size=size, normalisation=Normalisation((0.0,), (1.0,)), classes=classes)  # pixels in [0, 1]
    sub = labelled_subset(raw, per_class, seed)
    return normalised(sub, norm, source, labelled=sub.x_train)


def mnist1d_target(per_class: int | None, seed: int, norm: Norm, source: Normalisation | None, *,
                   classes: tuple[int, ...] = TARGET_CLASSES) -> Dataset:
    """The 1-D embedded target: MNIST-1D's classes 5-9 (the package's own split: about 400 training
    and 100 test sequences each), ``per_class`` labelled sequences each, normalised as ``norm`` says."""
    raw = load_mnist1d(normalisation=Normalisation((0.0,), (1.0,)), classes=classes)  # the raw values
    sub = labelled_subset(raw, per_class, seed)
    return normalised(sub, norm, source, labelled=sub.x_train)


def target_text(source: Checkpoint) -> str:
    """The embedded target a source is compared on, in words."""
    return "MNIST-1D's classes 5–9" if source.spec.dims == 1 else "the digits 5–9"


# ------------------------------------------------------------------------------------------ models
def units(model: ResNet) -> list[list[nn.Module]]:
    """The body in transferable units: stem + stage 1, stage 2, ..., the last stage (+ a
    pre-activation net's final BN, which belongs to the features, not the head)."""
    def learned(ops: tuple[Op, ...]) -> list[nn.Module]:  # the ops with state (ReLU and pools hold none)
        return [getattr(model, op.name) for op in dict.fromkeys(ops) if op.state_shapes()]

    out: list[list[nn.Module]] = [[stage] for stage in model.stages]
    out[0] = learned(model.plan.stem) + out[0]
    out[-1] += learned(model.plan.feature_head)
    return out


def prepare(source: Checkpoint, classes: int, setup: Setup, seed: int) -> tuple[ResNet, list[nn.Module]]:
    """The target net: the source's architecture with a ``classes``-way head, every weight drawn
    from ``seed``, then the first ``setup.copied`` units overwritten with the source's weights and
    buffers. Returns it and the modules to keep frozen (weights and statistics: the first
    ``setup.frozen`` units). The BatchNorms whose statistics alone stay fixed (``bn="frozen"``)
    are :func:`held_statistics`."""
    stages = len(source.model.stage_names)
    setup.check(stages)
    spec = source.spec.replace(num_classes=classes)
    model = build_model(spec, seed=seed)
    src_units, dst_units = units(source.model), units(model)
    for src, dst in zip(src_units[:setup.copied], dst_units[:setup.copied], strict=True):
        for a, b in zip(src, dst, strict=True):
            b.load_state_dict(a.state_dict())
    return model, [m for u in dst_units[:setup.frozen] for m in u]


def held_statistics(model: ResNet, setup: Setup) -> list[nn.Module]:
    """With ``bn="frozen"``: the BatchNorms of the copied, trainable units of a ``model`` made by
    :func:`prepare`, which normalise with the source's running statistics and never update them while
    their scale and shift learn (empty with ``bn="update"``)."""
    if setup.bn != "frozen":
        return []
    return [m for u in units(model)[setup.frozen:setup.copied] for top in u for m in top.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def _statistics_pinned(bns: list[nn.Module]) -> Iterator[None]:
    """Keep ``bns`` in eval mode for every forward pass while their parameters train. fit()'s
    ``frozen`` would also take their scale and shift out of the optimizer, and its every-epoch
    ``model.train()`` would switch them back, so the mode is pinned just before each call."""
    def pin(m: nn.Module, args: Any) -> None:
        m.training = False

    handles = [m.register_forward_pre_hook(pin) for m in bns]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Recipe:
    """The same recipe for every mode: a fixed number of SGD steps (so 1 labelled image per class
    and all of them get the same amount of optimisation), batch, learning rate, cosine schedule, and
    the arithmetic (``precision``: fp32, bf16 or fp16, as :data:`~analysis.core.meta.PRECISIONS`
    names them) and memory layout (``channels_last``, 2-D nets) every run trains in."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.02
    weight_decay: float = 1e-4
    augment: bool = True
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        # refused when the plan is made, not when its first run starts (after others may have trained)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 10**7:
            raise ConfigError(f"steps must be a whole number from 1 to 10,000,000, got {self.steps!r}")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {short_repr(self.precision)}")
        # batch size, learning rate, weight decay, device, fp16 off CUDA and the layout's type: TrainConfig's
        # checks and messages. Whether this machine has bf16 units is asked when a plan runs
        # (check_plan), so a recipe read from a file still loads anywhere
        TrainConfig(epochs=1, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=0,
                    augment=self.augment, device=self.device, amp=PRECISIONS[self.precision],
                    channels_last=self.channels_last)

    def config(self, train_images: int, seed: int) -> TrainConfig:
        per_epoch = max(1, math.ceil(train_images / self.batch_size))
        return TrainConfig(epochs=max(1, math.ceil(self.steps / per_epoch)), batch_size=self.batch_size,
                           lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=0, augment=self.augment,
                           seed=seed, device=self.device, amp=PRECISIONS[self.precision],
                           channels_last=self.channels_last)

    def to_dict(self) -> dict[str, Any]:
        """Every field, except precision and layout at their defaults (fp32, default layout): the dict
        is part of run-store keys and results files, which must stay what they were for fp32 recipes."""
        return {k: v for k, v in asdict(self).items()
                if k not in OPTIONAL_RECIPE_FIELDS or v != getattr(_DEFAULT_RECIPE, k)}

    @property
    def arithmetic(self) -> str:
        """The precision and layout in words ('fp32', 'bf16, channels-last')."""
        from analysis.core.meta import precision_text

        return precision_text(self.precision, self.channels_last)

    def check(self, dims: int) -> None:
        """What only this machine and the net can say: bf16 needs bf16 units here (or CUDA),
        channels-last a 2-D net. ConfigError in one sentence otherwise."""
        prec.check(self.precision, self.device)
        prec.check_layout(self.channels_last, dims)


#: Recipe fields left out of its dict at their defaults (see :meth:`Recipe.to_dict`).
OPTIONAL_RECIPE_FIELDS = frozenset({"precision", "channels_last"})
_DEFAULT_RECIPE = Recipe()


@dataclass
class TransferRun:
    """One trained target net and its numbers."""

    setup: Setup
    per_class: int | None
    seed: int
    model: ResNet
    history: list[dict[str, Any]]
    seconds: float
    cancelled: bool
    data: Dataset = field(repr=False)

    @property
    def test_acc(self) -> float:
        return float(self.history[-1]["test_acc"]) if self.history else float("nan")


EVALUATIONS = 10  # test-accuracy points per learning curve


def to_checkpoint(r: TransferRun, recipe: Recipe, stages: int, source_tag: str = "") -> Checkpoint:
    """A trained target net as a checkpoint of its own (metadata: the target data with its labelled
    count and the normalisation its inputs had, the recipe, history, final numbers), so every other
    page can open it and it can be saved and downloaded. Its name says what it is; ``source_tag``
    (a few hex digits of the source's weights) keeps nets from two sources of one architecture apart."""
    from analysis.experiments.train import run_meta

    config = recipe.config(len(r.data.y_train), r.seed)
    label = setup_label(r.setup, stages)
    # a bf16 or channels-last net is another net than the fp32 one of the same setup: its name and
    # command say so (fp32 nets keep the names they had)
    other = recipe.precision != "fp32" or recipe.channels_last
    meta = run_meta(r.data, config, history=r.history, cancelled=r.cancelled,
                    command=f"transfer: {label}, {r.per_class or 'all'} per class, seed {r.seed}"
                            + (f", {recipe.arithmetic}" if other else ""))
    slug = "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
    src = r.model.spec.name + (f"-{source_tag}" if source_tag else "")
    arith = f"_{recipe.precision}" + ("_channels_last" if recipe.channels_last else "") if other else ""
    name = f"{src}_to_{r.data.name.split('[')[0]}_{slug}_{r.per_class or 'all'}pc_seed{r.seed}{arith}"
    model = r.model
    model.spec = model.spec.replace(name=name)
    return Checkpoint(model.spec, model, meta, False)


def run(source: Checkpoint, target: Dataset, setup: Setup, recipe: Recipe, seed: int, per_class: int | None = None,
        callback: Callable[[Any], bool | None] | None = None) -> TransferRun:
    """Prepare the target net for ``setup`` and train it on ``target`` (already subset and
    normalised) with ``recipe``; the frozen parts are bit-identical afterwards."""
    from analysis.experiments.train import fit

    check_compatible(source, target)
    model, frozen = prepare(source, target.num_classes, setup, seed)
    config = recipe.config(len(target.y_train), seed)
    t0 = time.perf_counter()
    with _statistics_pinned(held_statistics(model, setup)):
        result = fit(model, target, config, callback, frozen=frozen, evaluations=EVALUATIONS)
    return TransferRun(setup, per_class, seed, result.model, result.history, time.perf_counter() - t0,
                       result.cancelled, target)


def check_compatible(source: Checkpoint, target: Dataset) -> None:
    """What adapts and what cannot: the head always adapts (a new one with the target's classes);
    the input's channels and dimensionality cannot (the first conv's weights fix them); another size
    works (global average pooling) but is said by the caller."""
    spec = source.spec
    if target.num_classes < 2:
        raise DatasetError(f"the target has {target.num_classes} class; a classifier needs at least 2")
    head = f"the head would adapt ({head_note(source, target.num_classes)})"
    if spec.dims != target.dims:
        raise DatasetError(f"the source net is {spec.dims}-D and the target data {target.dims}-D: a {spec.dims}-D "
                           f"net's weights cannot read {'sequences' if target.dims == 1 else 'images'}; {head}, "
                           "its convolutions cannot")
    if spec.in_channels != target.channels:
        raise DatasetError(f"the source net takes {spec.in_channels}-channel inputs, the target has "
                           f"{target.channels}: its first conv cannot take them; {head}, the stem cannot")


def head_note(source: Checkpoint, classes: int) -> str:
    """What happens to the source's classifier: never reused, always a new ``classes``-way one."""
    return (f"the source's {source.spec.num_classes}-class head is replaced with a new {classes}-way linear head, "
            "drawn from each run's seed")


def adaptation_notes(source: Checkpoint, target: Dataset, *, folder: bool = False) -> list[str]:
    """What adapts between a compatible source and target, one line each (the caller shows them):
    the head, always; an image folder read in grey for a 1-channel source (``folder``: the target is
    one, see :func:`read_folder`); the input size when it differs (global average pooling takes any size)."""
    notes = [head_note(source, target.num_classes)]
    if folder and source.spec.in_channels == 1:
        notes.append("the folder's images are read in grey, the one channel the source net takes")
    if source.spec.input_size != target.size:
        unit = "samples" if target.dims == 1 else "px"
        notes.append(f"the source was trained on {source.spec.input_size} {unit} inputs and the target's are "
                     f"{target.size} {unit}: global average pooling takes any size, but features tuned to one "
                     "scale may serve another less well")
    return notes


_SUBSET = re.compile(r"(?a)(digits\d+|mnist1d)(?:\[([0-9](?:,[0-9])*)\])?")


def overlap_note(source: Checkpoint, target: Dataset) -> str | None:
    """A sentence when the source was trained on some of the target's classes of the same embedded
    data (e.g. a shipped 10-class digits net as the source for the digits 5-9): its features have seen
    the target's classes, so the comparison says nothing about transfer to new classes. None otherwise."""
    ds = source.meta.dataset
    if ds is None:
        return None
    src, tgt = _SUBSET.fullmatch(ds.name), _SUBSET.fullmatch(target.name)
    if src is None or tgt is None or src.group(1).rstrip("0123456789") != tgt.group(1).rstrip("0123456789"):
        return None
    seen = set(range(10)) if src.group(2) is None else {int(c) for c in src.group(2).split(",")}
    wanted = set(range(10)) if tgt.group(2) is None else {int(c) for c in tgt.group(2).split(",")}
    both = sorted(seen & wanted)
    if not both:
        return None
    return (f"the source net was trained on {ds.name} (classes {', '.join(map(str, both))} among them), so it has "
            f"seen the target's classes: this measures reuse on the same classes, not transfer to new ones")


# -------------------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Plan:
    """A mode comparison: setups x labelled images per class x seeds, one recipe; the linear probe
    computes the frozen source's features in ``probe_precision`` (fp32 or bf16)."""

    setups: tuple[Setup, ...]
    labels: tuple[int | None, ...] = LABELS
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: Recipe = field(default_factory=Recipe)
    probe_precision: str = "fp32"

    def items(self) -> list[tuple[Setup, int | None, int]]:
        """Every run, each once: equal setups (transferring 0 stages *is* from scratch), labels or
        seeds listed twice are one experiment, and a second copy would count twice in the means."""
        return list(dict.fromkeys((s, n, seed) for s in self.setups for n in self.labels for seed in self.seeds))

    def check(self, stages: int) -> None:
        """``ConfigError`` for an empty list or a bad setup or seed (labels: :func:`check_labels`)."""
        for name in ("setups", "labels", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"a transfer plan needs at least one of its {name}")
        for s in self.setups:
            s.check(stages)
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
                raise ConfigError(f"seeds must be whole numbers from 0 to 2**63-1, got {seed!r}")
        if self.probe_precision not in prec.EVAL_PRECISIONS:
            raise ConfigError(f"the probe's precision must be one of {', '.join(prec.EVAL_PRECISIONS)}, "
                              f"got {short_repr(self.probe_precision)}")


def default_setups(stages: int) -> tuple[Setup, ...]:
    """The default comparison: the four named modes, the last stage fine-tuned, the first-k sweep
    (frozen and fine-tuned; k = 0 and k = all are scratch, frozen and finetune already), BN
    statistics frozen while fine-tuning, and the feature extractor under the three normalisations."""
    out: list[Setup] = [mode_setup("scratch", stages), mode_setup("frozen", stages), mode_setup("finetune", stages),
                        mode_setup("last_k", stages, 1)]
    for k in range(1, stages):
        out += [mode_setup("first_k_frozen", stages, k), mode_setup("first_k_finetuned", stages, k)]
    out += [mode_setup("finetune", stages, bn="frozen"), mode_setup("frozen", stages, norm="target"),
            mode_setup("frozen", stages, norm="none")]
    return tuple(out)


RESULT_COLUMNS = ["setup", "copied", "frozen", "bn", "norm", "per_class", "seed", "train_images", "steps", "epochs",
                  "train_acc", "test_acc", "seconds", "status"]


def result_row(r: TransferRun, stages: int, recipe: Recipe) -> dict[str, Any]:
    last = r.history[-1] if r.history else {}
    return {"setup": setup_label(r.setup, stages), **asdict(r.setup), "per_class": r.per_class, "seed": r.seed,
            "train_images": len(r.data.y_train), "steps": recipe.steps,
            "epochs": int(r.history[-1]["epoch"]) if r.history else 0,  # the last epoch is always measured
            "train_acc": last.get("train_acc"), "test_acc": last.get("test_acc"), "seconds": round(r.seconds, 2),
            "status": "cancelled" if r.cancelled else "complete"}


def curve_rows(r: TransferRun, stages: int) -> list[dict[str, Any]]:
    """The learning curve of a run: test and training accuracy after each epoch, seconds so far."""
    return [{"setup": setup_label(r.setup, stages), "per_class": r.per_class, "seed": r.seed, "epoch": h["epoch"],
             "test_acc": h["test_acc"], "train_acc": h["train_acc"], "seconds": h["seconds"]} for h in r.history]


def labels_text(v: Any) -> str:
    """A labels-per-class value as results hold it (int, a float from JSON, None or NaN for all) in
    words: '5', 'all'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "all"
    return str(int(v))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test accuracy over seeds per setup and labels per class."""
    done = results[results["status"] == "complete"].copy()
    done["labels"] = done["per_class"].map(labels_text)
    g = done.groupby(["setup", "labels"], sort=False)["test_acc"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": "test_acc_mean", "std": "test_acc_std", "count": "seeds"})


def time_to(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per run, the first epoch and the seconds at which the test accuracy reached ``threshold``
    (NaN: never)."""
    rows = []
    for (setup, per_class, seed), c in curves.groupby(["setup", "per_class", "seed"], sort=False, dropna=False):
        hit = c[c["test_acc"] >= threshold]
        rows.append({"setup": setup, "per_class": per_class, "seed": seed,
                     "epoch": int(hit["epoch"].iloc[0]) if len(hit) else np.nan,
                     "seconds": float(hit["seconds"].iloc[0]) if len(hit) else np.nan})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- linear probe
@torch.no_grad()
def stage_features(model: ResNet, x: Tensor, batch: int = 256, precision: str = "fp32") -> list[Tensor]:
    """The frozen net's globally pooled output of each stage (the stem folded into the first), per
    image: what a linear probe sees, in float32. ``precision="bf16"`` computes the net under bf16
    autocast (refused first where the CPU has no bf16 units); fp32 is the computation it always was.
    Eval mode, restored after."""
    prec.check(precision, "cpu")
    was = model.training
    model.eval()
    try:
        feats: list[list[Tensor]] = [[] for _ in model.stage_names]
        with prec.autocast(precision, "cpu"):
            for i in range(0, len(x), batch):
                h = model.stem(x[i:i + batch])
                for j, stage in enumerate(model.stages):
                    h = stage(h)
                    # the probe (scikit-learn) reads float32 whatever the net computed in
                    feats[j].append(h.flatten(2).mean(2).float())
        return [torch.cat(f) for f in feats]
    finally:
        model.train(was)


def linear_probe(source: Checkpoint, target: Dataset, precision: str = "fp32") -> pd.DataFrame:
    """Accuracy of a logistic-regression probe on each stage's pooled features of the frozen source
    net (computed in ``precision``: fp32 or bf16), trained on the target's labelled images and scored
    on its test images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    check_compatible(source, target)
    tr = stage_features(source.model, target.x_train, precision=precision)
    te = stage_features(source.model, target.x_test, precision=precision)
    rows = []
    ytr, yte = target.y_train.numpy(), target.y_test.numpy()
    for name, a, b in zip(source.model.stage_names, tr, te, strict=True):
        scaler = StandardScaler().fit(a.numpy())
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(a.numpy()), ytr)
        rows.append({"stage": name, "features": a.shape[1],
                     "test_acc": float(clf.score(scaler.transform(b.numpy()), yte))})
    return pd.DataFrame(rows)


def label_order(labels: Any) -> list[str]:
    """Label settings as the summary writes them ('1', '5', ..., 'all'), fewest first."""
    return sorted(dict.fromkeys(str(v) for v in labels), key=lambda v: (v == "all", int(v) if v.isdigit() else 0))


def readings(summary: pd.DataFrame, stages: int, probe: pd.DataFrame | None = None, *,
             results: pd.DataFrame | None = None, test_size: int | None = None) -> list[str]:
    """One line each on what the measured numbers say (computed, not quoted): fine-tuning and the
    best setup against scratch at every label setting, the other two normalisations for the frozen
    net, freezing BatchNorm's statistics while fine-tuning, and (given the ``probe``) the feature
    extractor's head against a converged linear probe on the same features.

    Each difference comes from a t-test over the seeds (:func:`contrast`): paired by seed when the
    per-seed ``results`` are given (runs of one seed share their labelled images, initial weights and
    batch order), else Welch's from the summary's means and stds. It is said with its 95 % interval and
    the smallest difference the design detects (in points and, given ``test_size``, in test images);
    with one or two seeds there is no test and the reading says "one run" or "2 seeds: no test"."""
    def row(setup: str, n: str) -> pd.Series | None:
        m = summary[(summary["setup"] == setup) & (summary["labels"] == n)]
        return m.iloc[0] if len(m) else None

    def diff(a: str, b: str, n: str) -> tuple[str, str] | None:
        """a minus b in points at label setting n ('+6.4') and what the test says of it (:func:`said`)."""
        if row(a, n) is None or row(b, n) is None:
            return None
        c = contrast(summary, a, b, n, results)
        return None if c is None else said(c, test_size)

    def by_setting(a: str, b: str) -> str | None:
        found = [(n, d) for n in label_order(summary["labels"]) if (d := diff(a, b, n)) is not None]
        if not found:
            return None
        remarks = {d[1] for _, d in found}
        if len(remarks) == 1 and remarks & {" (one run)", *(f" ({k} seeds: no test)" for k in range(2, MIN_TEST_SEEDS))}:
            # no test at any setting (too few seeds): said once, at the end
            return "; ".join(f"{n}: {d[0]}" for n, d in found) + f" (at every setting: {found[0][1][1][2:-1]})"
        return "; ".join(f"{n}: {d[0]}{d[1]}" for n, d in found)

    out = []
    gaps = by_setting("fine-tune everything", "from scratch")
    if gaps:
        out.append(f"Fine-tuning everything minus from scratch, in points by labelled images per class: {gaps}.")
    for n in label_order(summary["labels"]):
        at = summary[summary["labels"] == n]
        if len(at) > 1:
            best = at.loc[at["test_acc_mean"].idxmax()]
            d = diff(str(best["setup"]), "from scratch", n) if best["setup"] != "from scratch" else None
            vs = "" if d is None else f", {d[0]} points against from scratch{d[1]}"
            out.append(f"Best with {'every labelled image' if n == 'all' else f'{n} per class'}: {best['setup']} "
                       f"at {best['test_acc_mean']:.1%}{vs}.")
    how = {"target": "Normalising the frozen net's inputs with the target's own statistics instead of the source's",
           "none": "Feeding the frozen net unnormalised inputs instead of the source's statistics"}
    for norm in ("target", "none"):
        listed = by_setting(f"fixed feature extractor ({NORM_LABELS[norm]})", "fixed feature extractor")
        if listed:
            out.append(f"{how[norm]}, in points: {listed}.")
    listed = by_setting("fine-tune everything (BN statistics frozen)", "fine-tune everything")
    if listed:
        out.append(f"Keeping BatchNorm's running statistics frozen while fine-tuning, in points: {listed}.")
    head = _head_vs_probe(summary, probe)
    if head:
        out.append(head)
    return out


def setting_text(n: str) -> str:
    """A label setting in words: '1 per class', 'all labelled'."""
    return "all labelled" if n == "all" else f"{n} per class"


def accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise` as the page and the README show it: setups as rows, label settings as columns
    (fewest first), each cell the target test accuracy in % as the mean over seeds with its 95 %
    t-interval (or why it has none), '—' where a setup has no run at a setting; and the seeds."""
    order = label_order(summary["labels"])
    cells = {(r.setup, r.labels): mean_interval(r.test_acc_mean, float(r.test_acc_std), int(r.seeds), digits=1,
                                                scale=100) for r in summary.itertuples()}
    seeds = summary.groupby("setup", sort=False)["seeds"].max()
    return pd.DataFrame([{"setup": setup, **{setting_text(n): cells.get((setup, n), "—") for n in order},
                          "seeds": int(seeds[setup])} for setup in dict.fromkeys(summary["setup"])])


def markdown(result: PlanResult) -> str:
    """A comparison as Markdown for the README and closing notes: :func:`accuracy_table`, then the
    readings (:func:`readings`, each from a test between conditions), one bullet each."""
    summary = result.summary
    if summary.empty:
        return "No finished runs in this comparison."
    table = accuracy_table(summary)
    lines = ["| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    test = result.meta.get("test")
    stages = int(result.meta.get("stages") or 0)
    said = readings(summary, stages, result.probe, results=result.results,
                    test_size=test if isinstance(test, int) else None)
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {line}" for line in said) if said else "")


#: Fewer seeds than this give no test (a t-interval over 2 seeds has t = 12.7): "2 seeds: no test".
MIN_TEST_SEEDS = 3


def contrast(summary: pd.DataFrame, a: str, b: str, n: str, results: pd.DataFrame | None = None) -> Contrast | None:
    """Setup ``a`` minus setup ``b`` in test accuracy at label setting ``n`` (a fraction): paired by seed
    over the seeds both finished when the per-seed ``results`` hold both, else Welch's interval from
    the summary's rows. None when either side has no row."""
    if results is not None and len(results):
        done = results[results["status"] == "complete"]
        labels = done["per_class"].map(labels_text)
        side = [done[(done["setup"] == s) & (labels == n) & done["test_acc"].notna()] for s in (a, b)]
        if all(len(x) for x in side):
            va, vb = (pd.Series(x["test_acc"].to_numpy(dtype=float), index=x["seed"].to_numpy()) for x in side)
            common = [s for s in va.index if s in set(vb.index)]
            if common:
                return paired_contrast(va.loc[common].tolist(), vb.loc[common].tolist(), what=f"{a} vs {b}")
    ra = summary[(summary["setup"] == a) & (summary["labels"] == n)]
    rb = summary[(summary["setup"] == b) & (summary["labels"] == n)]
    if not len(ra) or not len(rb):
        return None
    x, y = ra.iloc[0], rb.iloc[0]
    return welch_from_summary(float(x["test_acc_mean"]), float(x["test_acc_std"]), int(x["seeds"]),
                              float(y["test_acc_mean"]), float(y["test_acc_std"]), int(y["seeds"]))


def said(c: Contrast, test_size: int | None = None) -> tuple[str, str]:
    """A difference of accuracies in points ('+6.4') and what a test over the seeds says of it
    (' (95 % CI ...; detectable ≥ ...)', ', no difference detected (...)', ' (one run)' or
    ' (2 seeds: no test)')."""
    d = f"{100 * c.diff:+.1f}"
    if c.low is None or c.high is None or c.n < MIN_TEST_SEEDS:
        return d, f" ({'one run' if c.n == 1 else f'{c.n} seeds: no test'})"
    how = f"paired t over {c.n} seeds" if c.paired else f"Welch t, {c.n_a} and {c.n_b} seeds"
    found = c.detectable()
    images = "" if found is None or not test_size else f" = {found * test_size:.1f} of {test_size:,} test images"
    smallest = "" if found is None else f"; detectable ≥ {100 * found:.1f} points{images}"
    interval = f"95 % CI {100 * c.low:+.1f} to {100 * c.high:+.1f}, {how}{smallest}"
    return d, (f" ({interval})" if c.excludes(0) else f", no difference detected ({interval})")


HEAD_GAP = 0.05  # a probe this far above the feature extractor says its head, not its features, limits it


def _head_vs_probe(summary: pd.DataFrame, probe: pd.DataFrame | None) -> str | None:
    """The fixed feature extractor (a new linear head trained by the recipe every mode shares) against
    the logistic-regression probe fitted to convergence on the same frozen last-stage features: where
    the probe is well above, the head is undertrained, and the extractor's score undersells the
    features (Yosinski et al.'s frozen-layer reading needs the head trained to the end)."""
    if probe is None or not len(probe):
        return None
    p = probe.assign(labels=probe["per_class"].map(labels_text))
    last = str(p["stage"].iloc[-1])
    pairs = []
    for n in label_order(summary["labels"]):
        fe = summary[(summary["setup"] == "fixed feature extractor") & (summary["labels"] == n)]
        pr = p[(p["stage"] == last) & (p["labels"] == n)]
        if len(fe) and len(pr):
            pairs.append((n, float(fe["test_acc_mean"].iloc[0]), float(pr["test_acc"].iloc[0])))
    if not pairs:
        return None
    n, fe, pr = pairs[-1]
    verdict = (f"with {'every label' if n == 'all' else f'{n} per class'} the probe is {100 * (pr - fe):.1f} points "
               "above: the recipe's head, not the features, limits the feature extractor" if pr - fe > HEAD_GAP
               else f"with {'every label' if n == 'all' else f'{n} per class'} the head gets within "
                    f"{100 * HEAD_GAP:.0f} points of the probe: the features themselves set the feature extractor's "
                    "accuracy")
    listed = "; ".join(f"{n}: {fe:.1%} vs {pr:.1%}" for n, fe, pr in pairs)
    return (f"The fixed feature extractor's head (mean over seeds) vs a linear probe fitted to convergence on the "
            f"same frozen {last} features (seed 0's labels), by labelled examples per class: {listed}; {verdict}.")


# ------------------------------------------------------------------------------ a plan, run and kept
@dataclass
class PlanProgress:
    """What a progress callback sees: runs finished (stored ones included) of ``total``, and the
    current run's fraction."""

    done: int
    total: int
    label: str
    fraction: float = 0.0
    finished: dict[str, Any] | None = None  # the result row (RESULT_COLUMNS) of the run just finished or reused
    reused: bool = False  # the finished run came from the store (nothing trained)


@dataclass
class PlanResult:
    results: pd.DataFrame  # one row per run (RESULT_COLUMNS)
    curves: pd.DataFrame  # learning curves (curve_rows)
    probe: pd.DataFrame  # linear probe by stage and labels per class
    trained: int
    reused: int
    cancelled: bool
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        return summarise(self.results)


# Part of every stored run's key: raise it when a change to the training code changes what a run
# measures, so runs stored by the older code are not reused (2: fine-tuned BNs with frozen statistics
# keep training their scale and shift)
RUN_CODE_VERSION = 2


def run_settings(setup: Setup, per_class: int | None, seed: int, recipe: Recipe, target: str) -> dict[str, Any]:
    """What a run's stored result is keyed by (with the source net's identity)."""
    return {"setup": asdict(setup), "per_class": per_class, "seed": seed, "recipe": recipe.to_dict(), "target": target,
            "code": RUN_CODE_VERSION}


Target = Callable[[int | None, int, Norm], Dataset]


def source_statistics(source: Checkpoint) -> Normalisation | None:
    """The statistics the source's inputs had: its metadata's, or ImageNet's for a bare torchvision-
    style ImageNet net (3 channels, ImageNet stem; torchvision's weights expect that preprocessing),
    else None (unknown)."""
    if source.meta.normalisation is not None:
        return source.meta.normalisation
    if source.spec.dims == 2 and source.spec.stem == "imagenet" and source.spec.in_channels == 3:
        return Normalisation(tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    return None


def folder_target(source: Checkpoint, root: str, *, size: int = 224, resize: int | None = 256) -> Target:
    """A local ImageFolder tree as the target (``train/`` + ``val/`` or a seeded split), read once at
    ``resize`` then center-cropped to ``size`` (torchvision's eval transform; the ImageNet default
    256 -> 224), in the source's channels (grey for a 1-channel source); each run takes its labelled
    subset and normalisation from it. Raises ``DatasetError`` for a missing or unusable tree."""
    return raw_target(source, read_folder(root, channels=source.spec.in_channels, size=size, resize=resize))


def read_folder(root: str, *, channels: int, size: int = 224, resize: int | None = 256) -> Dataset:
    """An ImageFolder tree's pixels in [0, 1], unnormalised, grey for ``channels`` 1 (what
    :func:`raw_target` takes; the page keeps one per tree and size)."""
    grey = channels == 1
    c = 1 if grey else 3
    return load_image_folder(root, size=size, resize=resize, grayscale=grey,
                             normalisation=Normalisation((0.0,) * c, (1.0,) * c))


def raw_target(source: Checkpoint, raw: Dataset) -> Target:
    """Unnormalised data as a target: each run takes its labelled subset and normalisation from it."""
    stats = source_statistics(source)

    def make(n: int | None, seed: int, norm: Norm) -> Dataset:
        sub = labelled_subset(raw, n, seed)
        return normalised(sub, norm, stats, labelled=sub.x_train)

    return make


def target_maker(source: Checkpoint, target: Target | None = None) -> Target:
    """``target``, or the embedded target the source's kind of input has: MNIST-1D's classes 5-9 for
    a 1-D net, else the digits 5-9 (at the size of the digits the source was trained on, 16 px when
    it was not), normalised as each run says; the source's statistics are looked up only when a run
    asks for them (a bare state_dict records none)."""
    if target is not None:
        return target
    if source.spec.dims == 1:
        return lambda n, seed, norm: mnist1d_target(n, seed, norm, source_statistics(source))
    ds = source.meta.dataset
    size = ds.size if ds is not None and ds.is_digits and ds.size in DIGITS_SIZES else 16
    return lambda n, seed, norm: digits_target(n, seed, norm, source_statistics(source), size=size)


def data_digest(data: Dataset) -> str:
    """A short digest of a dataset's tensors and class names: equal only for the same examples."""
    import hashlib

    h = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update("\0".join(data.classes).encode())
    return h.hexdigest()[:16]


def check_plan(source: Checkpoint, plan: Plan, target: Target | None = None) -> None:
    """Everything :func:`run_plan` would refuse, refused before any run: setups, seeds, labels per
    class the target's classes can give, the source's statistics when a setup normalises with
    them, a source whose input the target does not fit, a precision this CPU cannot compute in, a
    channels-last recipe for a 1-D net."""
    stages = len(source.model.stage_names)
    plan.check(stages)
    plan.recipe.check(source.spec.dims)
    prec.check(plan.probe_precision, "cpu")
    full = target_maker(source, target)(None, plan.seeds[0], "none")
    check_compatible(source, full)  # what cannot adapt is said first: no normalisation would fix it
    check_labels(full, plan.labels)
    # any target, a folder's too: a run normalising with unknown statistics would fail only when it starts
    if any(s.norm == "source" for s in plan.setups) and source_statistics(source) is None:
        raise DatasetError(f"{source.spec.name}: {NO_SOURCE_STATISTICS}")


CURVE_COLUMNS = ["setup", "per_class", "seed", "epoch", "test_acc", "train_acc", "seconds"]
PROBE_COLUMNS = ["stage", "features", "test_acc", "per_class"]


def run_plan(source: Checkpoint, plan: Plan, *, store: Any = None, keep: Callable[[Checkpoint], None] | None = None, target: Target | None = None,
             progress: Callable[[PlanProgress], None] | None = None,
             cancel: Callable[[], bool] | None = None, stored_only: bool = False) -> PlanResult:
    """Every run of ``plan`` (setups x labels per class x seeds) on the digits 5-9 target (or
    ``target(per_class, seed, norm)``), each kept in ``store`` (a RunStore) as soon as it finishes
    and taken from it when it is there; then the linear probe per labels setting (seed 0).
    ``cancel()`` returning True stops after the current batch: finished runs are kept, the
    cancelled one is not. Bad settings are refused before any run (:func:`check_plan`). ``keep``
    receives each freshly trained net as a checkpoint (:func:`to_checkpoint`). ``stored_only``: the
    runs ``store`` holds and nothing else trained, for a page opened again (the probe is measured when
    every run is there, as after a run; otherwise the result is partial, ``cancelled``)."""
    from analysis.core.machine import describe
    from analysis.store.runstore import net_key

    check_plan(source, plan, target)
    make = target_maker(source, target)
    stages = len(source.model.stage_names)
    full = make(None, plan.seeds[0], "none")  # what the metadata names: the target, every labelled example
    # an embedded target's name says everything; a folder's name is its last path component, shared by
    # other trees and by the same tree at another crop, so its pixels identify it in the store key
    target_id = full.name if target is None else f"{full.name} {data_digest(full)}"
    items = plan.items()
    key = net_key(source) if store is not None or keep is not None else ""
    rows, curves = [], []
    trained = reused = 0
    cancelled = False
    t0 = time.perf_counter()
    for i, (setup, n, seed) in enumerate(items):
        label = f"{setup_label(setup, stages)}, {n or 'all'} per class, seed {seed}"
        settings = run_settings(setup, n, seed, plan.recipe, target_id)
        stored = store.sweep(key, "transfer", settings) if store is not None else None
        if stored is not None:
            row = {c: stored[c].iloc[0] for c in RESULT_COLUMNS if c in stored}
            row["epochs"] = int(stored["epoch"].max())  # runs stored before 'epochs' was the epoch count held 10
            row.update(setup=setup_label(setup, stages), per_class=n, seed=seed, **asdict(setup))
            rows.append(row)
            curves += [{"setup": row["setup"], "per_class": n, "seed": seed, "epoch": int(e), "test_acc": float(a),
                        "train_acc": float(b), "seconds": float(t)}
                       for e, a, b, t in zip(stored["epoch"], stored["test_acc_curve"], stored["train_acc_curve"],
                                             stored["seconds_curve"], strict=True)]
            reused += 1
            if progress:
                progress(PlanProgress(i + 1, len(items), label, 1.0, row, reused=True))
            continue
        if stored_only:
            cancelled = True  # not every run is there: the result is partial
            continue
        data = make(n, seed, setup.norm)

        def step(p: Any, i: int = i, label: str = label) -> bool:
            if progress:
                progress(PlanProgress(i, len(items), label, p.fraction))
            return not (cancel and cancel())

        r = run(source, data, setup, plan.recipe, seed, n, step)
        if r.cancelled or not r.history:
            cancelled = True
            break
        row = result_row(r, stages, plan.recipe)
        rows.append(row)
        curve = curve_rows(r, stages)
        curves += curve
        trained += 1
        if keep is not None:  # the trained net itself, for the other pages and for download
            keep(to_checkpoint(r, plan.recipe, stages, key[:6]))
        if store is not None:
            frame = pd.DataFrame([{**{c: row[c] for c in RESULT_COLUMNS if c not in ("setup",)},
                                   "epoch": c["epoch"], "test_acc_curve": c["test_acc"],
                                   "train_acc_curve": c["train_acc"], "seconds_curve": c["seconds"]} for c in curve])
            store.save_sweep(key, "transfer", settings, frame)
        if progress:
            progress(PlanProgress(i + 1, len(items), label, 1.0, row))
    probe_rows: list[dict[str, Any]] = []
    if not cancelled:  # (stored_only: every run was there, so the probe is measured as after a run)
        # the frozen source sees what it was trained on, unless nobody recorded what that was
        norm: Norm = "source" if source_statistics(source) is not None else "target"
        for n in dict.fromkeys(plan.labels):
            p = linear_probe(source, make(n, 0, norm), plan.probe_precision)
            probe_rows += [{**r, "per_class": n} for r in p.to_dict("records")]
    return PlanResult(pd.DataFrame(rows, columns=RESULT_COLUMNS), pd.DataFrame(curves, columns=CURVE_COLUMNS),
                      pd.DataFrame(probe_rows, columns=PROBE_COLUMNS),
                      trained, reused, cancelled, time.perf_counter() - t0,
                      {"labels": [n for n in plan.labels], "seeds": list(plan.seeds), "recipe": plan.recipe.to_dict(),
                       "source": source.spec.name, "stages": stages, "target": full.name, "dims": full.dims,
                       "classes": full.num_classes, "test": len(full.y_test),
                       # fp32's results files stay what they were: the probe's precision only when it is another
                       **({"probe_precision": plan.probe_precision} if plan.probe_precision != "fp32" else {}),
                       # where the runs trained now trained (none named when every run came from the store)
                       **({"machine": describe()} if trained else {})})


RESULTS_FORMAT = "resnet-lens-transfer/1"


def write_results(path: str, result: PlanResult) -> None:
    """The plan's runs, learning curves, probe and metadata as one JSON file, written atomically;
    a ``.csv`` path gets the runs table alone (one row per run, what a spreadsheet wants)."""
    from pathlib import Path

    if Path(path).suffix.lower() == ".csv":
        write_csv(path, result.results)
        return
    payload = {"format": RESULTS_FORMAT, "meta": {**result.meta, "seconds": round(result.seconds, 1),
                                                  "trained": result.trained, "reused": result.reused,
                                                  "cancelled": result.cancelled},
               "results": records(result.results), "curves": records(result.curves), "probe": records(result.probe)}
    write_json(path, payload)  # compact, one line (the format's files have always been)


def load_results(path: str) -> PlanResult:
    """A results file written by :func:`write_results`; ``DatasetError`` if it is not one."""

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable transfer results file ({exc})") from exc
    payload = loads_json(raw, str(path), DatasetError)
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise DatasetError(f"{path}: not a transfer results file (format {RESULTS_FORMAT} expected)")
    for part, schema in (("results", _RESULT_SCHEMA), ("curves", _CURVE_SCHEMA), ("probe", _PROBE_SCHEMA)):
        # a file we did not write in this process: every value checked before a page shows it
        check_table(payload.get(part), schema, f"{path}: {part}", DatasetError)
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: a damaged transfer results file (its meta is "
                           f"{'missing' if meta is None else 'a ' + type(meta).__name__}, expected a record)")

    def number(key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        try:
            return parse(meta.get(key, default))
        except (TypeError, ValueError, OverflowError) as exc:  # what int() and float() raise for a bad value
            raise DatasetError(f"{path}: a damaged transfer results file (meta {key}: {exc})") from exc

    trained, reused, seconds = number("trained", int, 0), number("reused", int, 0), number("seconds", float, 0.0)
    # per_class reads back as run_plan makes it: floats with NaN for "all" (pandas' way with None
    # among ints); labels_text and label_order turn either into words
    results = pd.DataFrame(payload["results"], columns=RESULT_COLUMNS)
    return PlanResult(results, pd.DataFrame(payload["curves"]), pd.DataFrame(payload["probe"]),
                      trained, reused, bool(meta.get("cancelled")), seconds, dict(meta))


_PER_CLASS: Column = ("number", 1, 1e9, True)  # labelled images per class; NaN for "all"
_RESULT_SCHEMA: dict[str, Column] = {
    "setup": TEXT, "copied": COUNT, "frozen": COUNT, "bn": TEXT, "norm": TEXT, "per_class": _PER_CLASS, "seed": SEED,
    "train_images": COUNT, "steps": COUNT, "epochs": COUNT, "train_acc": FRACTION, "test_acc": FRACTION,
    "seconds": SECONDS, "status": TEXT}
_CURVE_SCHEMA: dict[str, Column] = {"setup": TEXT, "per_class": _PER_CLASS, "seed": SEED, "epoch": COUNT,
                                    "test_acc": FRACTION, "train_acc": FRACTION, "seconds": SECONDS}
_PROBE_SCHEMA: dict[str, Column] = {"stage": TEXT, "features": COUNT, "test_acc": FRACTION, "per_class": _PER_CLASS}


__all__ = ["BN_MODES", "LABELS", "MODES", "NORMS", "Plan", "PlanProgress", "PlanResult", "Recipe", "Setup",
           "TransferRun", "default_setups", "load_results", "run_plan", "write_results",
           "adaptation_notes", "check_compatible", "check_labels", "check_plan", "choose_setups", "digits_target",
           "head_note", "mnist1d_target", "overlap_note", "raw_target", "read_folder", "target_maker", "target_text",
           "label_order", "labels_text",
           "held_statistics", "labelled_subset", "linear_probe", "mode_setup", "normalised", "prepare", "readings",
           "run", "setup_label", "stage_features", "summarise", "time_to", "units"]

