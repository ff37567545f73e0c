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

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .checkpoints import Checkpoint
from .data import Dataset, load_digits
from .errors import ConfigError, DatasetError
from .meta import Normalisation, TrainConfig
from .models import ResNet, build_model

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
    s = Setup(copied, frozen, bn, norm)
    s.check(stages)
    return s


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
    if s.norm != "source" and s.copied:
        extras.append(NORM_LABELS[s.norm])
    return name + (f" ({', '.join(extras)})" if extras else "")


# ------------------------------------------------------------------------------------------- data
def labelled_subset(data: Dataset, per_class: int | None, seed: int) -> Dataset:
    """``per_class`` training images of each class, drawn by ``seed`` (None: all); the test split
    untouched. Raises ``DatasetError`` when a class has fewer images than asked."""
    if per_class is None:
        return data
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DatasetError(f"labelled images per class must be a whole number of at least 1, got {per_class!r}")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.y_train == c).flatten()
        if len(idx) < per_class:
            raise DatasetError(f"{data.name}: class {data.classes[c]!r} has {len(idx)} training images, fewer than "
                               f"the {per_class} labelled images per class asked for")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    keep = torch.sort(torch.cat(picks)).values
    return replace(data, name=data.name, x_train=data.x_train[keep], y_train=data.y_train[keep])


def normalised(raw: Dataset, norm: Norm, source: Normalisation, labelled: Tensor | None = None) -> Dataset:
    """``raw`` (unnormalised) inputs normalised with the source's statistics, the target's own (from
    ``labelled``, the labelled training images: a test image never informs them) or not at all."""
    c = raw.channels
    if norm == "source":
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


def source_normalisation(source: Checkpoint) -> Normalisation:
    """The statistics the source net's inputs were normalised with (its metadata)."""
    if source.meta.normalisation is None:
        raise DatasetError(f"{source.spec.name}: the checkpoint records no input normalisation, so the source's "
                           "statistics are unknown; normalise the target with its own statistics or not at all")
    return source.meta.normalisation


def digits_target(per_class: int | None, seed: int, norm: Norm, source: Normalisation, *, size: int = 16,
                  classes: tuple[int, ...] = TARGET_CLASSES) -> Dataset:
    """The embedded target: digits ``classes`` (5-9), ``per_class`` labelled images each (drawn by
    ``seed``), all their test images, normalised as ``norm`` says."""
    raw = load_digits(size=size, normalisation=Normalisation((0.0,), (1.0,)), classes=classes)  # pixels in [0, 1]
    sub = labelled_subset(raw, per_class, seed)
    return normalised(sub, norm, source, labelled=sub.x_train)


# ------------------------------------------------------------------------------------------ models
def units(model: ResNet) -> list[list[nn.Module]]:
    """The body in transferable units: stem + stage 1, stage 2, ..., the last stage (+ a
    pre-activation net's final BN, which belongs to the features, not the head)."""
    stem = [m for m in (model.conv1, model.bn1) if m is not None]
    out: list[list[nn.Module]] = [[stage] for stage in model.stages]
    out[0] = stem + out[0]
    if model.bn_final is not None:
        out[-1].append(model.bn_final)
    return out


def prepare(source: Checkpoint, classes: int, setup: Setup, seed: int) -> tuple[ResNet, list[nn.Module]]:
    """The target net: the source's architecture with a ``classes``-way head, every weight drawn
    from ``seed``, then the first ``setup.copied`` units overwritten with the source's weights and
    buffers. Returns it and the modules to keep frozen (and, with ``bn="frozen"``, the copied
    BatchNorms whose statistics stay fixed)."""
    stages = len(source.model.stage_names)
    setup.check(stages)
    spec = source.spec.replace(num_classes=classes)
    model = build_model(spec, seed=seed)
    src_units, dst_units = units(source.model), units(model)
    for src, dst in zip(src_units[:setup.copied], dst_units[:setup.copied], strict=True):
        for a, b in zip(src, dst, strict=True):
            b.load_state_dict(a.state_dict())
    frozen = [m for u in dst_units[:setup.frozen] for m in u]
    if setup.bn == "frozen":
        frozen_bn = [m for u in dst_units[setup.frozen:setup.copied] for top in u for m in top.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    else:
        frozen_bn = []
    return model, frozen + frozen_bn


# ---------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Recipe:
    """The same recipe for every mode: a fixed number of SGD steps (so 1 labelled image per class
    and all of them get the same amount of optimisation), batch, learning rate, cosine schedule."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.02
    weight_decay: float = 1e-4
    augment: bool = True
    device: str = "cpu"

    def config(self, train_images: int, seed: int) -> TrainConfig:
        per_epoch = max(1, math.ceil(train_images / self.batch_size))
        return TrainConfig(epochs=max(1, math.ceil(self.steps / per_epoch)), batch_size=self.batch_size,
                           lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=0, augment=self.augment,
                           seed=seed, device=self.device)


@dataclass
class TransferRun:
    """One trained target net and its numbers."""

    setup: Setup
    per_class: int | None
    seed: int
    model: ResNet
    history: list[dict]
    seconds: float
    cancelled: bool
    data: Dataset = field(repr=False)

    @property
    def test_acc(self) -> float:
        return float(self.history[-1]["test_acc"]) if self.history else float("nan")


EVALUATIONS = 10  # test-accuracy points per learning curve


def run(source: Checkpoint, target: Dataset, setup: Setup, recipe: Recipe, seed: int, per_class: int | None = None,
        callback: Callable[[Any], bool | None] | None = None) -> TransferRun:
    """Prepare the target net for ``setup`` and train it on ``target`` (already subset and
    normalised) with ``recipe``; the frozen parts are bit-identical afterwards."""
    from .train import fit

    check_compatible(source, target)
    model, frozen = prepare(source, target.num_classes, setup, seed)
    config = recipe.config(len(target.y_train), seed)
    t0 = time.perf_counter()
    result = fit(model, target, config, callback, frozen=frozen, evaluations=EVALUATIONS)
    return TransferRun(setup, per_class, seed, result.model, result.history, time.perf_counter() - t0,
                       result.cancelled, target)


def check_compatible(source: Checkpoint, target: Dataset) -> None:
    """What adapts and what cannot: the head always adapts (a new one with the target's classes);
    the input's channels and dimensionality cannot (the first conv's weights fix them); another size
    works (global average pooling) but is said by the caller."""
    spec = source.spec
    if spec.dims != target.dims:
        raise DatasetError(f"the source net is {spec.dims}-D and the target data {target.dims}-D: a {spec.dims}-D "
                           f"net's weights cannot read {'sequences' if target.dims == 1 else 'images'}")
    if spec.in_channels != target.channels:
        raise DatasetError(f"the source net takes {spec.in_channels}-channel inputs, the target has "
                           f"{target.channels}: its first conv cannot take them (the head adapts, the stem does not)")
    if target.num_classes < 2:
        raise DatasetError(f"the target has {target.num_classes} class; a classifier needs at least 2")


# -------------------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Plan:
    """A mode comparison: setups x labelled images per class x seeds, one recipe."""

    setups: tuple[Setup, ...]
    labels: tuple[int | None, ...] = LABELS
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: Recipe = field(default_factory=Recipe)

    def items(self) -> list[tuple[Setup, int | None, int]]:
        return [(s, n, seed) for s in self.setups for n in self.labels for seed in self.seeds]


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
            "train_images": len(r.data.y_train), "steps": recipe.steps, "epochs": len(r.history),
            "train_acc": last.get("train_acc"), "test_acc": last.get("test_acc"), "seconds": round(r.seconds, 2),
            "status": "cancelled" if r.cancelled else "complete"}


def curve_rows(r: TransferRun, stages: int) -> list[dict[str, Any]]:
    """The learning curve of a run: test and training accuracy after each epoch, seconds so far."""
    return [{"setup": setup_label(r.setup, stages), "per_class": r.per_class, "seed": r.seed, "epoch": h["epoch"],
             "test_acc": h["test_acc"], "train_acc": h["train_acc"], "seconds": h["seconds"]} for h in r.history]


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test accuracy over seeds per setup and labels per class."""
    done = results[results["status"] == "complete"].copy()
    done["labels"] = done["per_class"].map(lambda v: "all" if v is None or (isinstance(v, float) and
                                                                           math.isnan(v)) else str(int(v)))
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
def stage_features(model: ResNet, x: Tensor, batch: int = 256) -> list[Tensor]:
    """The frozen net's globally pooled output of each stage (the stem folded into the first), per
    image: what a linear probe sees. Eval mode, restored after."""
    was = model.training
    model.eval()
    try:
        feats: list[list[Tensor]] = [[] for _ in model.stage_names]
        for i in range(0, len(x), batch):
            h = model.stem(x[i:i + batch])
            for j, stage in enumerate(model.stages):
                h = stage(h)
                feats[j].append(h.flatten(2).mean(2))
        return [torch.cat(f) for f in feats]
    finally:
        model.train(was)


def linear_probe(source: Checkpoint, target: Dataset) -> pd.DataFrame:
    """Accuracy of a logistic-regression probe on each stage's pooled features of the frozen source
    net, trained on the target's labelled images and scored on its test images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    check_compatible(source, target)
    tr = stage_features(source.model, target.x_train)
    te = stage_features(source.model, target.x_test)
    rows = []
    ytr, yte = target.y_train.numpy(), target.y_test.numpy()
    for name, a, b in zip(source.model.stage_names, tr, te, strict=True):
        scaler = StandardScaler().fit(a.numpy())
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(a.numpy()), ytr)
        rows.append({"stage": name, "features": a.shape[1],
                     "test_acc": float(clf.score(scaler.transform(b.numpy()), yte))})
    return pd.DataFrame(rows)


def readings(summary: pd.DataFrame, stages: int) -> list[str]:
    """One line each on what the measured numbers say (computed, not quoted)."""
    def acc(setup: str, labels: str) -> float | None:
        m = summary[(summary["setup"] == setup) & (summary["labels"] == labels)]
        return float(m["test_acc_mean"].iloc[0]) if len(m) else None

    out = []
    fewest = next((n for n in ("1", "5", "10", "20", "all") if (summary["labels"] == n).any()), None)
    if fewest is not None:
        s, f, t = acc("from scratch", fewest), acc("fixed feature extractor", fewest), acc("fine-tune everything",
                                                                                           fewest)
        if s is not None and f is not None and t is not None:
            best = max((("the frozen source features", f), ("fine-tuning", t)), key=lambda p: p[1])
            out.append(f"With {fewest} labelled image{'s' * (fewest != '1')} per class, {best[0]} reach "
                       f"{best[1]:.1%} against {s:.1%} from scratch ({(best[1] - s) * 100:+.1f} points).")
    if (summary["labels"] == "all").any():
        s, t = acc("from scratch", "all"), acc("fine-tune everything", "all")
        if s is not None and t is not None:
            out.append(f"With every labelled image the gap is {(t - s) * 100:+.1f} points (fine-tuned {t:.1%}, "
                       f"scratch {s:.1%}): transfer matters most when labels are few.")
    for norm in ("target", "none"):
        label = f"fixed feature extractor ({NORM_LABELS[norm]})"
        for n in (fewest, "all"):
            base, other = acc("fixed feature extractor", n or ""), acc(label, n or "")
            if base is not None and other is not None:
                out.append(f"Normalising with {NORM_LABELS[norm]} instead of the source's changes the frozen "
                           f"net's accuracy by {(other - base) * 100:+.1f} points ({n} per class).")
                break
    bnf = acc("fine-tune everything (BN statistics frozen)", fewest or "")
    t = acc("fine-tune everything", fewest or "")
    if bnf is not None and t is not None:
        out.append(f"Keeping BatchNorm's running statistics frozen while fine-tuning: {(bnf - t) * 100:+.1f} points "
                   f"({fewest} per class).")
    return out


# ------------------------------------------------------------------------------ a plan, run and kept
@dataclass
class PlanProgress:
    """What a progress callback sees: runs finished (stored ones included) of ``total``, and the
    current run's fraction."""

    done: int
    total: int
    label: str
    fraction: float = 0.0


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


def run_settings(setup: Setup, per_class: int | None, seed: int, recipe: Recipe, target: str) -> dict[str, Any]:
    """What a run's stored result is keyed by (with the source net's identity)."""
    return {"setup": asdict(setup), "per_class": per_class, "seed": seed, "recipe": asdict(recipe), "target": target}


def run_plan(source: Checkpoint, plan: Plan, *, store: Any = None,
             target: Callable[[int | None, int, Norm], Dataset] | None = None,
             progress: Callable[[PlanProgress], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> PlanResult:
    """Every run of ``plan`` (setups x labels per class x seeds) on the digits 5-9 target (or
    ``target(per_class, seed, norm)``), each kept in ``store`` (a RunStore) as soon as it finishes
    and taken from it when it is there; then the linear probe per labels setting (seed 0).
    ``cancel()`` returning True stops after the current batch: finished runs are kept, the
    cancelled one is not."""
    from .runstore import net_key

    make = target or (lambda n, seed, norm: digits_target(n, seed, norm, source_normalisation(source)))
    stages = len(source.model.stage_names)
    for s in plan.setups:
        s.check(stages)
    items = plan.items()
    key = net_key(source) if store is not None else ""
    rows, curves = [], []
    trained = reused = 0
    cancelled = False
    t0 = time.perf_counter()
    for i, (setup, n, seed) in enumerate(items):
        data = make(n, seed, setup.norm)
        label = f"{setup_label(setup, stages)}, {n or 'all'} per class, seed {seed}"
        settings = run_settings(setup, n, seed, plan.recipe, data.name)
        stored = store.sweep(key, "transfer", settings) if store is not None else None
        if stored is not None:
            row = {c: stored[c].iloc[0] for c in RESULT_COLUMNS if c in stored}
            row.update(setup=setup_label(setup, stages), per_class=n, seed=seed, **asdict(setup))
            rows.append(row)
            curves += [{"setup": row["setup"], "per_class": n, "seed": seed, "epoch": int(e), "test_acc": float(a),
                        "train_acc": float(b), "seconds": float(t)}
                       for e, a, b, t in zip(stored["epoch"], stored["test_acc_curve"], stored["train_acc_curve"],
                                             stored["seconds_curve"], strict=True)]
            reused += 1
            if progress:
                progress(PlanProgress(i + 1, len(items), label, 1.0))
            continue

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
        if store is not None:
            frame = pd.DataFrame([{**{c: row[c] for c in RESULT_COLUMNS if c not in ("setup",)},
                                   "epoch": c["epoch"], "test_acc_curve": c["test_acc"],
                                   "train_acc_curve": c["train_acc"], "seconds_curve": c["seconds"]} for c in curve])
            store.save_sweep(key, "transfer", settings, frame)
        if progress:
            progress(PlanProgress(i + 1, len(items), label, 1.0))
    probe_rows: list[dict[str, Any]] = []
    if not cancelled:
        for n in plan.labels:
            p = linear_probe(source, make(n, 0, "source"))
            probe_rows += [{**r, "per_class": n} for r in p.to_dict("records")]
    return PlanResult(pd.DataFrame(rows, columns=RESULT_COLUMNS), pd.DataFrame(curves), pd.DataFrame(probe_rows),
                      trained, reused, cancelled, time.perf_counter() - t0,
                      {"labels": [n for n in plan.labels], "seeds": list(plan.seeds), "recipe": asdict(plan.recipe),
                       "source": source.spec.name, "stages": stages})


RESULTS_FORMAT = "resnet-lens-transfer/1"


def write_results(path: str, result: PlanResult) -> None:
    """The plan's runs, learning curves, probe and metadata as one JSON file, written atomically."""
    import json
    from pathlib import Path

    from .io import atomic_write

    def records(df: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(df.to_json(orient="records"))

    payload = {"format": RESULTS_FORMAT, "meta": {**result.meta, "seconds": round(result.seconds, 1),
                                                  "trained": result.trained, "reused": result.reused,
                                                  "cancelled": result.cancelled},
               "results": records(result.results), "curves": records(result.curves), "probe": records(result.probe)}
    atomic_write(Path(path), json.dumps(payload).encode())


def load_results(path: str) -> PlanResult:
    """A results file written by :func:`write_results`; ``DatasetError`` if it is not one."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable transfer results file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise DatasetError(f"{path}: not a transfer results file (format {RESULTS_FORMAT} expected)")
    try:
        meta = dict(payload["meta"])
        results = pd.DataFrame(payload["results"], columns=RESULT_COLUMNS)
        results["per_class"] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                for v in results["per_class"]]
        return PlanResult(results, pd.DataFrame(payload["curves"]), pd.DataFrame(payload["probe"]),
                          int(meta.get("trained", 0)), int(meta.get("reused", 0)), bool(meta.get("cancelled")),
                          float(meta.get("seconds", 0.0)), meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: a damaged transfer results file ({exc})") from exc


__all__ = ["BN_MODES", "LABELS", "MODES", "NORMS", "Plan", "PlanProgress", "PlanResult", "Recipe", "Setup",
           "TransferRun", "default_setups", "load_results", "run_plan", "write_results",
           "digits_target", "labelled_subset", "linear_probe", "mode_setup", "normalised", "prepare", "readings",
           "run", "setup_label", "stage_features", "summarise", "time_to", "units"]

