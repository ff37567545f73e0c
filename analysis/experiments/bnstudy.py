"""BatchNorm measured: its batch-size dependence, the gap between running and test statistics, and
plain and residual nets trained with and without it.

**Batch-size dependence** (:func:`batch_size_errors`). BatchNorm normalises with the statistics of
the batch while training and with running averages of them in eval mode. A trained net is evaluated
on its test inputs both ways: in eval mode, and with its BatchNorms in train mode (batch statistics)
over consecutive batches of the test set in its stored order (the last batch holds the remainder) at
each batch size. For each batch size the statistics BN normalised with are compared with the
running ones: the mean over BN layers, channels and batches of |μ_batch − μ_running| / σ_running
(σ_running = √(running variance + ε), what eval mode divides by) and of σ²_batch / σ²_running. The
measurement runs on a copy whose BN momentum is 0, so no running statistic of the net changes.

**Running vs test statistics** (:func:`statistics_gap`): per BN layer, in eval mode, the mean and
variance of the layer's input over the whole test set against its running statistics, in the same
two numbers.

**Trained with and without BN** (:func:`record`, written by ``tools/make_bn_study.py``): the CIFAR
ResNets of :data:`DEPTHS` layers and their plain twins, on the digits at 8×8 px, trained per seed
with their BatchNorms and with every BatchNorm replaced by the identity. Nothing else changes: the
convs stay bias-free and BN draws no random numbers at initialisation, so for one seed the four
arms start from the same conv weights and see the same batches — the comparisons are paired by seed.
:func:`table` gives each arm's test error as a mean with its 95 % t-interval, :func:`comparisons`
the paired differences, whether they exclude 0, and the smallest difference the design detects.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from analysis.arch.models import BATCHNORMS, ResNet
from analysis.core.errors import CheckpointError, ConfigError, DivergedError
from analysis.core.stats import Interval, detectable_difference, paired_difference, t_interval
from analysis.experiments.sensitivity import eval_pass_with_pre_hooks

__all__ = ["ARMS", "BATCH_SIZES", "DEPTHS", "FORMAT", "RECIPE", "batch_size_errors", "comparisons", "load",
           "record", "save", "statistics_gap", "study_model", "table", "without_bn"]

BATCH_SIZES = (1, 8, 32, 128)
BN = nn.BatchNorm1d | nn.BatchNorm2d


def _bn_layers(model: nn.Module) -> list[tuple[str, BN]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BATCHNORMS)]


def _channel_sums(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel sum and sum of squares (float64) over every axis but the channels, and the count:
    what adds up over batches into the test set's moments."""
    dims = [d for d in range(x.dim()) if d != 1]
    xd = x.double()
    return xd.sum(dims), xd.pow(2).sum(dims), x.numel() // x.shape[1]


def _stat_gaps(mean: Tensor, var: Tensor, bn: BN) -> tuple[Tensor, Tensor]:
    """|μ − μ_running| / σ_running and σ² / σ²_running averaged over the channels (the last axis),
    for one row of statistics or a stack of them (one per batch)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError("a BatchNorm without running statistics cannot be evaluated in eval mode")
    rm, rv = bn.running_mean.double(), bn.running_var.double()
    return ((mean - rm).abs() / (rv + bn.eps).sqrt()).mean(-1), (var / rv).mean(-1)


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance (what BN divides by) over every other axis, in float64."""
    var, mean = torch.var_mean(x.double(), dim=[d for d in range(x.dim()) if d != 1], correction=0)
    return mean, var


def _check_inputs(x: Tensor, y: Tensor | None = None) -> None:
    if len(x) == 0:
        raise ConfigError("no inputs to measure on")
    if y is not None and len(y) != len(x):
        raise ConfigError(f"{len(x)} inputs but {len(y)} labels")


@torch.no_grad()
def batch_size_errors(model: ResNet, x: Tensor, y: Tensor, batch_sizes: Iterable[int] = BATCH_SIZES) -> pd.DataFrame:
    """Test errors in eval mode and with batch statistics at each batch size (module docstring).
    Columns: mode, batch_size (0 for eval mode: any batch gives the same answer), wrong, n, error,
    shift and var_ratio of the statistics BN normalised with (0 and 1 in eval mode, exactly)."""
    _check_inputs(x, y)
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ConfigError(f"batch sizes must be whole numbers >= 1, got {sizes}")
    # a private copy: the caller's net (perhaps shared by other sessions) keeps its mode and statistics
    net = copy.deepcopy(model).eval()
    bns = _bn_layers(net)
    wrong = int((torch.cat([net(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1) != y).sum())
    rows: list[dict[str, Any]] = [{"mode": "eval (running statistics)", "batch_size": 0, "wrong": wrong,
                                   "n": len(y), "error": wrong / len(y), "shift": 0.0, "var_ratio": 1.0}]
    for _, bn in bns:
        bn.train()
        bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: the statistics stay as trained
    where = {id(bn): i for i, (_, bn) in enumerate(bns)}
    seen: list[list[tuple[Tensor, Tensor]]] = [[] for _ in bns]  # per layer, per batch: (mean, var)

    def pre(module: Any, args: tuple[Tensor, ...]) -> None:
        seen[where[id(module)]].append(_moments(args[0]))

    handles = [bn.register_forward_pre_hook(pre) for _, bn in bns]
    try:
        for b in sizes:
            for per_layer in seen:
                per_layer.clear()
            pred = torch.cat([net(x[i:i + b]).argmax(1) for i in range(0, len(x), b)])
            wrong = int((pred != y).sum())
            # one value per layer and batch (each a mean over the layer's channels), all weighed alike
            gaps = [_stat_gaps(torch.stack([m for m, _ in per_layer]), torch.stack([v for _, v in per_layer]), bn)
                    for per_layer, (_, bn) in zip(seen, bns, strict=True) if per_layer]
            shift = torch.cat([g[0] for g in gaps]).mean().item() if gaps else math.nan
            ratio = torch.cat([g[1] for g in gaps]).mean().item() if gaps else math.nan
            rows.append({"mode": "train (batch statistics)", "batch_size": b, "wrong": wrong, "n": len(y),
                         "error": wrong / len(y), "shift": shift, "var_ratio": ratio})
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame(rows)


@torch.no_grad()
def statistics_gap(model: ResNet, x: Tensor, batch_size: int = 256) -> pd.DataFrame:
    """Per BN layer (forward order): its input's test-set mean and variance in eval mode against its
    running statistics. Columns: layer, channels, shift, var_ratio (module docstring). Forward
    pre-hooks, removed however it ends; the model's train/eval mode is restored."""
    _check_inputs(x)
    bns = _bn_layers(model)
    acc: dict[str, list[Any]] = {}

    def recorder(name: str) -> Callable[[Any, tuple[Tensor, ...]], None]:
        def pre(_module: Any, args: tuple[Tensor, ...]) -> None:
            s, sq, k = _channel_sums(args[0])
            if name in acc:
                a = acc[name]
                a[0], a[1], a[2] = a[0] + s, a[1] + sq, a[2] + k
            else:
                acc[name] = [s, sq, k]
        return pre

    eval_pass_with_pre_hooks(model, [(bn, recorder(n)) for n, bn in bns], x, batch_size)
    rows = []
    for name, bn in bns:
        if name not in acc:  # a BN the forward never reached (none in a built net)
            continue
        s, sq, k = acc[name]
        mean = s / k
        shift, ratio = _stat_gaps(mean, sq / k - mean.pow(2), bn)
        rows.append({"layer": name, "channels": int(bn.num_features), "shift": shift.item(), "var_ratio": ratio.item()})
    return pd.DataFrame(rows, columns=["layer", "channels", "shift", "var_ratio"])


# ----------------------------------------------------------------------------- the trained study
FORMAT = "resnet-lens-bn-study/1"
DEPTHS = (8, 20)
ARMS = (("residual", True), ("residual", False), ("plain", True), ("plain", False))  # (net, with BN)
DIGITS_SIZE = 8
# short on purpose (tiny nets on 8×8 digits; the whole study is minutes of one core): what it shows is
# BN's effect under one fixed recipe, not each arm's best error
RECIPE: dict[str, Any] = {"epochs": 10, "batch_size": 32, "lr": 0.1}
ProgressFn = Callable[[str], None]


def arm_label(net: str, bn: bool) -> str:
    return f"{net}, {'with' if bn else 'without'} BN"


def without_bn(model: ResNet) -> ResNet:
    """``model`` with every BatchNorm replaced by the identity, in place (nothing else changes)."""
    for name, _ in _bn_layers(model):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def study_model(depth: int, net: str, bn: bool, seed: int, *, in_channels: int = 1, num_classes: int = 10,
                input_size: int = DIGITS_SIZE) -> ResNet:
    """The CIFAR ResNet of ``depth`` layers (``net='plain'``: its plain twin), initialised from
    ``seed``, with or without its BatchNorms."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec

    if net not in ("residual", "plain"):
        raise ConfigError(f"net must be 'residual' or 'plain', got {net!r}")
    spec = get_spec(f"cifar_resnet{depth}").replace(in_channels=in_channels, num_classes=num_classes,
                                                  input_size=input_size, residual=net == "residual")
    model = build_model(spec, seed=seed)
    return model if bn else without_bn(model)


def seed_run(depth: int, net: str, bn: bool, seed: int, data: Any) -> dict[str, Any]:
    """One arm trained for one seed: its test error count (None if training diverged) and time."""
    from analysis.core.meta import TrainConfig
    from analysis.experiments.train import evaluate, fit

    config = TrainConfig(**RECIPE, seed=seed)
    model = study_model(depth, net, bn, seed, in_channels=data.channels, num_classes=data.num_classes,
                        input_size=data.size)
    t0 = time.perf_counter()
    try:
        result = fit(model, data, config)
    except DivergedError:
        return {"depth": depth, "net": net, "bn": bn, "seed": seed, "wrong": None, "n": len(data.y_test),
                "seconds": round(time.perf_counter() - t0, 1)}
    test = evaluate(result.model, data.x_test, data.y_test)
    return {"depth": depth, "net": net, "bn": bn, "seed": seed, "wrong": test["n"] - test["correct"],
            "n": test["n"], "seconds": round(time.perf_counter() - t0, 1)}


def record(depths: Sequence[int] = DEPTHS, seeds: Sequence[int] = range(5), *,
           progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train every arm of every depth for every seed; the JSON-able record."""
    from analysis.core.machine import describe
    from analysis.data.data import load_digits

    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds}")
    data = load_digits(size=DIGITS_SIZE, seed=0)
    runs = []
    for depth in depths:
        for net, bn in ARMS:
            for s in seeds:
                if progress:
                    progress(f"{arm_label(net, bn)}, {depth} layers, seed {s}")
                runs.append(seed_run(depth, net, bn, s, data))
    from analysis.core.meta import TrainConfig

    # every field of the recipe, defaults included, so the record says what ran whatever they become
    recipe = {k: v for k, v in dataclasses.asdict(TrainConfig(**RECIPE)).items() if k not in ("seed", "device")}
    return {"format": FORMAT, "data": f"digits {DIGITS_SIZE}×{DIGITS_SIZE} px, split seed 0", "recipe": recipe, "depths": list(depths), "seeds": seeds, "machine": describe(), "runs": runs}


def save(path: Path, rec: Mapping[str, Any]) -> Path:
    from analysis.core.reporting import write_json

    return write_json(path, rec, indent=1)


def load(path: Path) -> dict[str, Any]:
    """A record, checked to be ours and complete: every arm of every depth over the record's seeds,
    each count within its test set (or None: diverged)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{Path(path).name}: not a readable BatchNorm study ({exc})") from exc
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise CheckpointError(f"{Path(path).name}: not a BatchNorm study record ({FORMAT})")
    try:
        if not all(isinstance(rec["recipe"][k], int | float) for k in ("epochs", "batch_size", "lr")) \
                or not isinstance(rec["data"], str):
            raise CheckpointError(f"{Path(path).name}: the study's recipe or data is not said")
        if not rec["depths"] or not rec["seeds"]:
            raise CheckpointError(f"{Path(path).name}: a BatchNorm study without depths or seeds")
        seen = {(r["depth"], r["net"], r["bn"], r["seed"]) for r in rec["runs"]}
        want = {(d, n, b, s) for d in rec["depths"] for n, b in ARMS for s in rec["seeds"]}
        if seen != want or len(rec["runs"]) != len(want):
            raise CheckpointError(f"{Path(path).name}: the runs are not every arm and depth over the record's seeds")
        for r in rec["runs"]:
            w, n = r["wrong"], r["n"]
            if w is not None and (isinstance(w, bool) or not isinstance(w, int) or not isinstance(n, int)
                                  or not 0 <= w <= n):
                raise CheckpointError(f"{Path(path).name}: {w!r} wrong of {n!r}")
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{Path(path).name}: not a complete BatchNorm study ({type(exc).__name__})") from exc
    return rec


ERROR_COLUMN = "test error, % (mean ± 95 % CI, t)"
DIFFERENCE_COLUMN = "difference, pp (mean ± 95 % CI, t)"


def _pm(iv: Interval) -> str:
    """'2.53 ± 0.79' (percent or points, the interval's level and kind in the column's name), or
    '2.53 (one run)'."""
    half = iv.half_width
    return f"{100 * iv.mean:.2f} (one run)" if half is None else f"{100 * iv.mean:.2f} ± {100 * half:.2f}"


def _runs(rec: Mapping[str, Any], depth: int, net: str, bn: bool) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in rec["runs"] if (r["depth"], r["net"], r["bn"]) == (depth, net, bn)}


def table(rec: Mapping[str, Any]) -> pd.DataFrame:
    """One row per depth and arm: test error as mean ± 95 % t-interval over the seeds that trained (as
    fractions in ``error``/``low``/``high``, NaN where there is none, and as text), every seed's wrong
    count, and how many diverged."""
    rows = []
    for depth in rec["depths"]:
        for net, bn in ARMS:
            runs = _runs(rec, depth, net, bn)
            done = [r for _, r in sorted(runs.items()) if r["wrong"] is not None]
            errors = [r["wrong"] / r["n"] for r in done]
            iv = t_interval(errors) if errors else None
            rows.append({"layers": depth, "net": net, "BatchNorm": "with" if bn else "without",
                         "error": iv.mean if iv else math.nan,
                         "low": iv.low if iv and iv.low is not None else math.nan,
                         "high": iv.high if iv and iv.high is not None else math.nan,
                         ERROR_COLUMN: _pm(iv) if iv else "every seed diverged",
                         "wrong per seed": ", ".join(str(r["wrong"]) if r["wrong"] is not None else "diverged"
                                                     for _, r in sorted(runs.items())),
                         "test images": done[0]["n"] if done else None,
                         "diverged": len(runs) - len(done)})
    return pd.DataFrame(rows)


COMPARISONS = (  # (label, (net, bn) of a, (net, bn) of b): a − b
    ("without BN − with BN, residual", ("residual", False), ("residual", True)),
    ("without BN − with BN, plain", ("plain", False), ("plain", True)),
    ("plain − residual, with BN", ("plain", True), ("residual", True)),
    ("plain − residual, without BN", ("plain", False), ("residual", False)),
)


def comparisons(rec: Mapping[str, Any]) -> pd.DataFrame:
    """Paired differences of test error (pp) by seed, over the seeds where both arms trained: mean ±
    95 % t-interval, whether it excludes 0 (a paired t-test at 5 %), and the smallest true difference
    this design detects with 80 % power (:func:`analysis.core.stats.detectable_difference`), in test
    images."""
    rows = []
    for depth in rec["depths"]:
        for label, a, b in COMPARISONS:
            ra, rb = _runs(rec, depth, *a), _runs(rec, depth, *b)
            seeds = [s for s in sorted(ra) if s in rb and ra[s]["wrong"] is not None and rb[s]["wrong"] is not None]
            ea = [ra[s]["wrong"] / ra[s]["n"] for s in seeds]
            eb = [rb[s]["wrong"] / rb[s]["n"] for s in seeds]
            if len(seeds) < 2:
                rows.append({"layers": depth, "comparison": label, "seeds": len(seeds),
                             DIFFERENCE_COLUMN: "fewer than 2 seeds trained in both arms", "reading": "",
                             "detectable (test images)": None})
                continue
            d = paired_difference(ea, eb)
            n_test = ra[seeds[0]]["n"]
            detect = detectable_difference(d.sd or 0.0, len(seeds)) * n_test
            reading = "differs (excludes 0)" if d.excludes(0) else "not shown (includes 0)"
            rows.append({"layers": depth, "comparison": label, "seeds": len(seeds),
                         DIFFERENCE_COLUMN: _pm(d), "reading": reading,
                         "detectable (test images)": round(detect, 1)})
    return pd.DataFrame(rows)
