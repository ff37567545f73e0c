"""Does bf16 training keep the shipped recipes' accuracy? (issue 25)

For each shipped recipe of :data:`NETS` (the digits and MNIST-1D ResNet-20 and ResNet-56 of
``checkpoints/README.md``) and each seed, the net is trained twice: in fp32 (the stored results'
arithmetic) and in bf16 autocast, with channels-last for the 2-D nets (what a person picks for speed on
a CPU with AMX). Both arms of a seed share the initial weights, batch order and augmentation, so the
comparison is paired. The record holds test-error counts per seed; :func:`table` reads them as 95 %
t-intervals (:mod:`analysis.core.stats`) and says whether the bf16 mean lies inside the fp32 interval
and whether the paired difference excludes 0.

Trained nets are kept in a cache folder (named ``<net>_s<seed>.pt`` for fp32, the name the painters
study uses for the same recipe, and ``<net>_bf16_s<seed>.pt``), not in the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.stats import Interval, detectable_difference, paired_difference, t_interval

FORMAT = "resnet-lens-precision/1"
ARMS = ("fp32", "bf16")
ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class RecipeNet:
    name: str
    dataset: str  # "digits16" or "mnist1d"
    model: str
    recipe: Mapping[str, Any]  # TrainConfig's fields (checkpoints/README.md)

    @property
    def dims(self) -> int:
        return 1 if self.dataset == "mnist1d" else 2


_DIGITS = {"epochs": 40, "batch_size": 32, "lr": 0.1}
_MNIST1D = {"epochs": 30, "batch_size": 64, "lr": 0.1}
NETS: dict[str, RecipeNet] = {n.name: n for n in (
    RecipeNet("digits_resnet20", "digits16", "cifar_resnet20", _DIGITS),
    RecipeNet("digits_resnet56", "digits16", "cifar_resnet56", {**_DIGITS, "lr": 0.05}),
    RecipeNet("mnist1d_resnet20", "mnist1d", "resnet1d_20", _MNIST1D),
    RecipeNet("mnist1d_resnet56", "mnist1d", "resnet1d_56", _MNIST1D),
)}


def config(net: RecipeNet, arm: str, seed: int) -> Any:
    """The TrainConfig of ``net``'s recipe in ``arm`` (bf16: autocast, and channels-last on 2-D nets)."""
    from analysis.core.meta import TrainConfig

    if arm not in ARMS:
        raise ConfigError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    extra: dict[str, Any] = {"amp": "bf16", "channels_last": net.dims == 2} if arm == "bf16" else {}
    return TrainConfig(**{**net.recipe, **extra, "seed": seed})


def cache_name(net: RecipeNet, arm: str, seed: int) -> str:
    return f"{net.name}_s{seed}.pt" if arm == "fp32" else f"{net.name}_{arm}_s{seed}.pt"


def seed_run(net: RecipeNet, arm: str, seed: int, cache: Path) -> dict[str, Any]:
    """One trained seed (read from ``cache`` when there, else trained and written there): its test
    error count, test size, training time and recipe."""
    from analysis.arch.specs import get_spec
    from analysis.data.data import load_digits, load_mnist1d
    from analysis.experiments.train import evaluate, train_checkpoint
    from analysis.store.checkpoints import dataset_for, load_checkpoint, save_checkpoint

    cfg = config(net, arm, seed)
    path = cache / cache_name(net, arm, seed)
    if path.is_file():
        ck = load_checkpoint(path)
        if ck.meta is None or ck.meta.recipe != cfg:
            raise CheckpointError(f"{path}: not {net.name} seed {seed} in {arm} (its recipe differs)")
    else:
        data = load_digits(size=16, seed=0) if net.dataset == "digits16" else load_mnist1d(seed=0)
        spec = get_spec(net.model).replace(in_channels=data.channels, num_classes=data.num_classes,
                                           input_size=data.size)  # as the CLI's train adapts it
        ck = train_checkpoint(spec, data, cfg)
        save_checkpoint(path, ck.model, ck.meta)
    meta = ck.meta
    if meta is None:  # a trained checkpoint always has it; a cached file without it is not ours
        raise CheckpointError(f"{path}: has no training metadata")
    data = dataset_for(meta)
    test = evaluate(ck.model, data.x_test, data.y_test)  # fp32 evaluation of either arm's weights
    return {"seed": seed, "wrong": test["n"] - test["correct"], "n": test["n"],
            "seconds": meta.train_seconds, "recipe": cfg.to_dict()}


def record(names: Sequence[str], seeds: Sequence[int], cache: Path, *,
           progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or read) every seed of every named net in both arms; the JSON-able record."""
    from analysis.core.machine import describe
    from analysis.experiments.precision import check

    check("bf16", "cpu")  # refused before any fp32 seed trains, not after
    unknown = [n for n in names if n not in NETS]
    if unknown:
        raise ConfigError(f"unknown nets {unknown}; choose from {', '.join(NETS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {list(seeds)}")
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"format": FORMAT, "seeds": list(seeds), "machine": describe(), "nets": {}}
    for name in names:
        net = NETS[name]
        arms = {}
        for arm in ARMS:
            runs = []
            for s in seeds:
                if progress:
                    progress(f"{name} {arm} seed {s}")
                runs.append(seed_run(net, arm, s, cache))
            arms[arm] = runs
        out["nets"][name] = {"dataset": net.dataset, "model": net.model, "arms": arms}
    return out


def save(path: Path, rec: Mapping[str, Any]) -> Path:
    from analysis.core.reporting import write_json

    write_json(path, rec)
    return path


def load(path: Path) -> dict[str, Any]:
    """A record, checked to be ours and self-consistent (both arms over the record's seeds, counts
    within each test set)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable precision record ({exc})") from exc
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a precision record ({FORMAT})")
    try:
        for name, net in rec["nets"].items():
            for arm in ARMS:
                runs = net["arms"][arm]
                if [r["seed"] for r in runs] != rec["seeds"]:
                    raise CheckpointError(f"{path.name}: {name} {arm} is not over the record's seeds")
                for r in runs:
                    w, n = r["wrong"], r["n"]
                    if isinstance(w, bool) or not isinstance(w, int) or not isinstance(n, int) or not 0 <= w <= n:
                        raise CheckpointError(f"{path.name}: {name} {arm} seed {r['seed']}: {w!r} wrong of {n!r}")
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path.name}: not a complete precision record ({type(exc).__name__})") from exc
    return rec


def errors(net: Mapping[str, Any], arm: str) -> list[float]:
    return [r["wrong"] / r["n"] for r in net["arms"][arm]]


def verdict(fp32: Interval, bf16: Interval, diff: Interval) -> str:
    """Where the bf16 mean lies against the fp32 interval, and what the paired test says."""
    if fp32.low is None or fp32.high is None:
        return "one run: no interval to compare with"
    inside = fp32.low <= bf16.mean <= fp32.high
    where = "within the fp32 interval" if inside else "outside the fp32 interval"
    test = ("paired difference excludes 0" if diff.excludes(0) else "paired difference includes 0")
    return f"{where}; {test}"


def table(rec: Mapping[str, Any]) -> pd.DataFrame:
    """One row per net: fp32 and bf16 test error (%, mean ± 95 % t-interval), the paired difference,
    the verdict, and the mean training time of each arm as recorded (a machine busy with other work
    makes these times noisy; the benchmark, not this table, measures speed)."""
    rows = []
    for name, net in rec["nets"].items():
        f, b = errors(net, "fp32"), errors(net, "bf16")
        fi, bi, d = t_interval(f), t_interval(b), paired_difference(b, f)
        secs = {arm: [r["seconds"] for r in net["arms"][arm] if r.get("seconds")] for arm in ARMS}
        rows.append({"net": name, "seeds": len(f), "fp32 error (%)": fi.text(100, 2),
                     "bf16 error (%)": bi.text(100, 2), "bf16 − fp32 (pp)": d.text(100, 2),
                     "bf16 vs fp32": verdict(fi, bi, d),
                     # the smallest true difference this many paired seeds detect (power 0.8), in test images
                     "detectable (test images)": (round(detectable_difference(d.sd, d.n) * net["arms"]["fp32"][0]["n"], 1)
                                                  if d.sd is not None else None),
                     "fp32 s/run": round(sum(secs["fp32"]) / len(secs["fp32"]), 1) if secs["fp32"] else None,
                     "bf16 s/run": round(sum(secs["bf16"]) / len(secs["bf16"]), 1) if secs["bf16"] else None})
    return pd.DataFrame(rows)
