"""The "painters" comparison: the same frozen-net experiments on residual transformers and ResNets, side
by side, over seeds (Veit et al. 2016; Sun et al. 2024, "Transformer Layers as Painters"; Lad et al.
2024, "The Remarkable Robustness of LLMs").

For every net of :data:`NETS` and every seed, the net is trained with its shipped recipe, then run intact
and under six changes of its layers, each with the engine of :mod:`analysis.experiments.lesion`:

* delete the first, the middle or the last layer (its branch removed, the shortcut kept; a plain net's
  layer passes its input on unchanged, as Veit et al. delete layers of a plain net);
* swap the middle layer with the next one;
* repeat the middle layer (run it twice in place, "looping");
* run the middle layer and the next one in parallel on the same input, their changes summed:
  y = h + F_m(h) + F_{m+1}(h).

What a layer is. A ResNet's layer is one residual block (units and blocks coincide). A transformer's
layer is one block of the stack, ``blocks.k`` (attention and MLP together), as Sun et al. and Lad et al.
move whole layers; it is cut by :class:`~analysis.experiments.chain.LayerChain`, and a residual
layer's change F(h) is its output minus its input. The middle layer is layer ⌊(n − 1)/2⌋ of n, so that it and the
next one are both middle layers: a ResNet-20's ``layer2.1`` (with ``layer2.2``), a four-block
transformer's ``blocks.1`` (with ``blocks.2``). Where a
change does not apply (parallel on a post-activation ResNet block, on a plain layer) the record says
why instead of giving a number.

The record keeps every seed's wrong count per condition; means, 95 % t-intervals and paired
differences against the intact net come from :mod:`analysis.core.stats`, never stored twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.machine import describe
from analysis.core.stats import Interval, paired_difference, t_interval
from analysis.experiments import lesion
from analysis.experiments.chain import ChainError, LayerChain, Step, UnitChain

FORMAT = "resnet-lens-painters/1"
CONDITIONS = ("intact", "delete first", "delete middle", "delete last", "swap middle", "repeat middle",
              "parallel middle")
ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class StudyNet:
    """One net of the comparison: how each seed is trained (``kind``: a spec-built ResNet through the
    ResNet trainer, or a shipped transformer's recipe) and what it is compared with."""

    name: str
    dataset: str  # digits16 | mnist1d
    kind: str  # "resnet" | "transformer"
    residual: bool
    family: str  # what the comparison's rows group by: "ResNet-20", "ViT", ...
    model: str = ""  # the spec's name (ResNets)
    train: Mapping[str, Any] | None = None  # the ResNet recipe (TrainConfig's fields) or None
    program: str = ""  # the shipped transformer's name (analysis.experiments.train_transformers.NETS)


_DIGITS = {"epochs": 40, "batch_size": 32, "lr": 0.1}  # checkpoints/README.md: the shipped digits recipe
_MNIST1D = {"epochs": 30, "batch_size": 64, "lr": 0.1}
NETS: dict[str, StudyNet] = {n.name: n for n in (
    StudyNet("digits_resnet20", "digits16", "resnet", True, "ResNet-20", "cifar_resnet20", _DIGITS),
    StudyNet("digits_plain20", "digits16", "resnet", False, "ResNet-20", "cifar_resnet20", _DIGITS),
    StudyNet("digits_vit", "digits16", "transformer", True, "ViT", program="digits_vit"),
    StudyNet("digits_vit_plain", "digits16", "transformer", False, "ViT", program="digits_vit_plain"),
    StudyNet("mnist1d_resnet20", "mnist1d", "resnet", True, "ResNet-20", "resnet1d_20", _MNIST1D),
    StudyNet("mnist1d_plain20", "mnist1d", "resnet", False, "ResNet-20", "resnet1d_20", _MNIST1D),
    StudyNet("mnist1d_transformer", "mnist1d", "transformer", True, "Transformer", program="mnist1d_transformer"),
    StudyNet("mnist1d_transformer_plain", "mnist1d", "transformer", False, "Transformer",
             program="mnist1d_transformer_plain"),
)}


def middle(n: int) -> int:
    """The middle layer of n: ⌊(n − 1)/2⌋, so that it and the next one are both inside the net."""
    if n < 3:
        raise ConfigError(f"the comparison needs at least 3 layers (a first, a middle and a last), got {n}")
    return (n - 1) // 2


def sequences(n: int) -> dict[str, list[Step]]:
    """Each condition's sequence over n layers (:data:`CONDITIONS`)."""
    m = middle(n)
    ident = lesion.identity_sequence(n)
    swapped = list(ident)
    swapped[m], swapped[m + 1] = swapped[m + 1], swapped[m]
    parallel: list[Step] = [*ident[:m], ((m, m + 1), True), *ident[m + 2:]]
    return {"intact": ident, "delete first": lesion.deletion(n, [0]), "delete middle": lesion.deletion(n, [m]),
            "delete last": lesion.deletion(n, [n - 1]), "swap middle": swapped,
            "repeat middle": [*ident[:m + 1], (m, True), *ident[m + 1:]], "parallel middle": parallel}


def measure(chain: UnitChain | Any, x: Tensor, y: Tensor, *, batch_size: int = 256) -> dict[str, Any]:
    """Wrong counts per condition on (x, y) for one trained net (a ResNet or a chain), with the reason
    for each condition that does not apply to it. Every applicable sequence runs in one engine call
    (prefix reuse)."""
    runner = lesion.as_chain(chain, x)
    n = runner.n
    seqs = sequences(n)
    ok: dict[str, list[Step]] = {}
    refused: dict[str, str] = {}
    for cond, seq in seqs.items():
        try:
            runner.check_sequence(seq)
            ok[cond] = seq
        except ConfigError as exc:  # the engine's refusal, kept as the reason
            refused[cond] = str(exc)
    wrong = lesion.wrong_counts(chain, x, y, list(ok.values()), batch_size=batch_size)
    m = middle(n)
    names = [u.name for u in runner.units] if len(runner.units) == n else [b.name for b in lesion.infos_of(chain)]
    return {"layers": n, "middle": names[m], "next": names[m + 1], "first": names[0], "last": names[-1],
            "wrong": {c: int(w) for c, w in zip(ok, wrong.tolist(), strict=True)}, "refused": refused}


def transformer_chain(ep: Any, name: str) -> LayerChain:
    """A shipped transformer cut at its blocks (``blocks.0`` ... ``blocks.k``): its layers."""
    from analysis.experiments.chain import layer_candidates

    groups = layer_candidates(ep)
    if "blocks" not in groups:
        raise ChainError(f"{name}: no repeated ``blocks`` container to cut into layers")
    return LayerChain(ep, groups["blocks"], name=name)


def seed_net(net: StudyNet, seed: int, cache: Path | None = None) -> tuple[Any, Any]:
    """Seed ``seed`` of ``net`` trained with its recipe (read from ``cache`` when a file of it is there,
    written there after training): (the net to measure, its test data)."""
    if net.kind == "resnet":
        from analysis.arch.specs import get_spec
        from analysis.core.meta import TrainConfig
        from analysis.experiments.train import train_checkpoint
        from analysis.store.checkpoints import dataset_for, load_checkpoint, save_checkpoint

        path = None if cache is None else cache / f"{net.name}_s{seed}.pt"
        if path is not None and path.is_file():
            ck = load_checkpoint(path)
        else:
            from analysis.data.data import load_digits, load_mnist1d

            data = load_digits(size=16, seed=0) if net.dataset == "digits16" else load_mnist1d(seed=0)
            spec = get_spec(net.model, plain=not net.residual).replace(
                in_channels=data.channels, num_classes=data.num_classes, input_size=data.size)  # as the CLI's train
            ck = train_checkpoint(spec, data, TrainConfig(**dict(net.train or {}), seed=seed))
            if path is not None:
                save_checkpoint(path, ck.model, ck.meta)
        return ck.model, dataset_for(ck.meta)
    from analysis.experiments.train_transformers import export_net, train_net
    from analysis.store.programs import dataset_for_program, load_shipped, save_program

    if cache is None:  # said before any training
        raise CheckpointError("a transformer seed is measured from its saved program: give a cache folder")
    path = cache / f"{net.name}_s{seed}.pt2"
    if not path.is_file():
        module, meta = train_net(net.program, seed)
        from analysis.experiments.train_transformers import load_data

        save_program(path, export_net(module, load_data(meta["dataset"])), meta)
    ep, pmeta = load_shipped(path)
    return transformer_chain(ep, net.name), dataset_for_program(pmeta)


def record(names: Sequence[str], seeds: Sequence[int], cache: Path, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or read from ``cache``) every seed of every named net and measure it: the JSON-able record
    the README and the Lesion page read."""
    unknown = [n for n in names if n not in NETS]
    if unknown:
        raise ConfigError(f"unknown nets {unknown}; choose from {', '.join(NETS)}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"seeds must be distinct and at least one, got {list(seeds)}")
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"format": FORMAT, "seeds": list(seeds), "conditions": list(CONDITIONS),
                           "threads": torch.get_num_threads(), "machine": describe(), "nets": {}}
    for name in names:
        net = NETS[name]
        runs = []
        for s in seeds:
            if progress:
                progress(f"{name} seed {s}")
            model, data = seed_net(net, s, cache)
            m = measure(model, data.x_test, data.y_test)
            runs.append({"seed": s, **m})
        out["nets"][name] = {"dataset": net.dataset, "family": net.family, "residual": net.residual,
                             "test_size": int(len(data.y_test)), "classes": int(data.num_classes), "runs": runs}
    return out


def save(path: Path, rec: Mapping[str, Any]) -> Path:
    from analysis.core.reporting import write_json

    write_json(path, rec)
    return path


def load(path: Path) -> dict[str, Any]:
    """A recorded comparison, checked to be ours and self-consistent (every run of a net has the same
    conditions, counts within the test set)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable comparison record ({exc})") from exc
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a painters comparison record ({FORMAT})")
    try:
        _check_record(rec, path.name)
    except (KeyError, TypeError, AttributeError) as exc:  # a field missing or of another kind
        raise CheckpointError(f"{path.name}: not a complete painters comparison record ({type(exc).__name__}: "
                              f"{str(exc)[:80]})") from exc
    return rec


def _check_record(rec: Mapping[str, Any], name: str) -> None:
    seeds = rec["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds) \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds):
        raise CheckpointError(f"{name}: its seeds are not a list of distinct whole numbers")
    kinds = {"dataset": str, "family": str, "residual": bool, "test_size": int, "classes": int, "runs": list}
    for net_name, net in rec["nets"].items():
        for key, kind in kinds.items():
            if not isinstance(net[key], kind):
                raise CheckpointError(f"{name}: {net_name}'s {key} is not a {kind.__name__}")
        if not net["runs"] or net["test_size"] < 1 or net["classes"] < 2:
            raise CheckpointError(f"{name}: {net_name} has no runs, test inputs or classes")
        for run in net["runs"]:
            for cond, w in run["wrong"].items():
                if cond not in CONDITIONS or isinstance(w, bool) or not isinstance(w, int) \
                        or not 0 <= w <= net["test_size"]:
                    raise CheckpointError(f"{name}: {net_name} seed {run['seed']}: {cond} = {w!r} is not a count "
                                          f"of the {net['test_size']} test inputs")
            if "intact" not in run["wrong"] or not all(isinstance(v, str) for v in run["refused"].values()):
                raise CheckpointError(f"{name}: {net_name} seed {run['seed']} lacks its intact count or reasons")
            if set(run["wrong"]) | set(run["refused"]) != set(CONDITIONS) or set(run["wrong"]) & set(run["refused"]):
                raise CheckpointError(f"{name}: {net_name} seed {run['seed']} does not give each condition once, "
                                      "as a count or a reason")
        if [run["seed"] for run in net["runs"]] != seeds:
            raise CheckpointError(f"{name}: {net_name}'s runs are not the record's seeds {seeds}")


# ----------------------------------------------------------------------------- reading a record
def errors(net: Mapping[str, Any], cond: str) -> list[float] | None:
    """The test error of each seed under ``cond`` (None where the condition does not apply)."""
    if any(cond not in r["wrong"] for r in net["runs"]):
        return None
    return [r["wrong"][cond] / net["test_size"] for r in net["runs"]]


def kept(net: Mapping[str, Any], cond: str) -> Interval | None:
    """The accuracy kept under ``cond``, (1 - error) / (1 - intact error) seed by seed, with its interval;
    None where the condition does not apply or an intact net got every test input wrong (nothing kept
    to measure)."""
    e, intact = errors(net, cond), errors(net, "intact")
    if e is None or intact is None or any(b >= 1 for b in intact):
        return None
    return t_interval([(1 - a) / (1 - b) for a, b in zip(e, intact, strict=True)])


def mean_error(net: Mapping[str, Any], cond: str) -> float:
    """The mean over seeds of the test error under ``cond`` (NaN where it does not apply)."""
    e = errors(net, cond)
    return math.nan if e is None else math.fsum(e) / len(e)


def table(rec: Mapping[str, Any]) -> pd.DataFrame:
    """One row per net and condition: mean test error with its 95 % t-interval over the seeds, the
    paired change against the intact net (same seeds) and its interval, the accuracy kept (after /
    intact, per seed) and the reason where the condition does not apply."""
    rows = []
    for name, net in rec["nets"].items():
        intact = errors(net, "intact")
        for cond in CONDITIONS:
            e = errors(net, cond)
            row: dict[str, Any] = {"net": name, "dataset": net["dataset"], "family": net["family"],
                                   "residual": net["residual"], "condition": cond, "seeds": len(net["runs"])}
            if e is None or intact is None:
                reasons = {r["refused"].get(cond, "") for r in net["runs"]}
                row.update(error=math.nan, low=math.nan, high=math.nan, change=math.nan, change_low=math.nan,
                           change_high=math.nan, kept=math.nan, kept_low=math.nan, kept_high=math.nan,
                           note=" / ".join(sorted(r for r in reasons if r)))
                rows.append(row)
                continue
            iv = t_interval(e)
            d = paired_difference(e, intact)
            k = kept(net, cond)
            row.update(error=iv.mean, low=_v(iv.low), high=_v(iv.high), change=d.mean, change_low=_v(d.low),
                       change_high=_v(d.high), kept=math.nan if k is None else k.mean,
                       kept_low=math.nan if k is None else _v(k.low), kept_high=math.nan if k is None else _v(k.high),
                       note="")
            rows.append(row)
    return pd.DataFrame(rows)


def _v(x: float | None) -> float:
    return math.nan if x is None else x


@dataclass(frozen=True)
class Reading:
    """One claim of a paper, read against the measured numbers of one net."""

    net: str
    paper: str
    claim: str
    measured: str
    agrees: bool | None  # None: the record cannot tell (one seed, or the condition does not apply)


def _iv(net: Mapping[str, Any], cond: str) -> Interval | None:
    e = errors(net, cond)
    return None if e is None else t_interval(e)


def _pp(iv: Interval) -> str:
    return iv.text(scale=100, unit=" %")


VEIT_KEPT = 0.90  # "barely matters": at least 90 % of the accuracy kept
LAD_KEPT = 0.72  # Lad et al. 2024: 72-95 % kept (more is still "robust")
NEAR_CHANCE = 0.10  # "fatal": an error within 10 points of chance, or above


def _verdict(iv: Interval, threshold: float, *, strict: bool = False) -> bool | None:
    """A claim "the value is at least ``threshold``" (``strict``: more than it, as "matters more" claims a
    difference above 0) read from its interval: agrees when the whole interval is on the claim's side,
    disagrees when the whole interval is on the other, and cannot tell (None) when the interval holds
    the threshold (the seeds do not decide) or there is one run."""
    if iv.low is None or iv.high is None:
        return None
    if iv.low > threshold or (iv.low == threshold and not strict):
        return True
    return False if iv.high < threshold or (strict and iv.high == threshold) else None


def readings(rec: Mapping[str, Any]) -> list[Reading]:
    """What each paper reports, against each net's numbers, decided by intervals over the seeds:

    * Veit et al. 2016: deleting one residual block barely matters; in a plain net it is fatal. Read as:
      the residual net keeps at least 90 % of its accuracy (the kept interval's lower end) when its
      middle layer is deleted, and the plain twin's error after that deletion is within 10 points of
      chance or above (its interval's lower end).
    * Sun et al. 2024: the first and last layers matter more than the middle ones. Read as: deleting the
      first (and the last) layer raises the error more than deleting the middle one, the paired
      difference's interval above 0.
    * Lad et al. 2024: deleting or swapping adjacent middle layers keeps 72–95 % of the accuracy. Read
      as: the kept interval lies at or above 72 % (more robust than their LLMs is still agreement with
      "robust"; below it is not).

    Each verdict is :func:`_verdict`'s: agrees or disagrees only where the 95 % interval lies wholly on one
    side of the claim's threshold; "cannot tell" where it straddles it."""
    out: list[Reading] = []
    nets = rec["nets"]
    for name, net in nets.items():
        chance = 1 - 1 / net["classes"]
        mid = _iv(net, "delete middle")
        if net["residual"]:
            twin = next((k for k, v in nets.items() if v["family"] == net["family"] and v["dataset"] == net["dataset"]
                         and not v["residual"]), None)
            k_mid = kept(net, "delete middle")
            if k_mid is not None:
                out.append(Reading(name, "Veit et al. 2016", "deleting one residual layer barely matters (≥ 90 % of "
                                   "the accuracy kept)", f"middle layer deleted: accuracy kept {_pp(k_mid)}",
                                   _verdict(k_mid, VEIT_KEPT)))
            for edge in ("first", "last"):
                e_edge, e_mid = errors(net, f"delete {edge}"), errors(net, "delete middle")
                if e_edge is None or e_mid is None:
                    continue
                d = paired_difference(e_edge, e_mid)
                out.append(Reading(name, "Sun et al. 2024", f"the {edge} layer matters more than the middle one",
                                   f"error after deleting the {edge} minus after deleting the middle: "
                                   f"{d.text(scale=100, unit=' pp')}",
                                   _verdict(d, 0.0, strict=True)))
            for cond in ("delete middle", "swap middle"):
                k = kept(net, cond)
                if k is None:
                    continue
                out.append(Reading(name, "Lad et al. 2024", f"{cond.split()[0]} of an adjacent middle layer keeps "
                                   "72–95 % of the accuracy", f"accuracy kept {_pp(k)}", _verdict(k, LAD_KEPT)))
            if twin is not None and mid is not None:
                t_mid, t_intact = _iv(nets[twin], "delete middle"), _iv(nets[twin], "intact")
                if t_mid is not None and t_intact is not None:
                    claim = ("deleting one layer of a plain net is fatal (error within 10 points of chance, "
                             f"{100 * chance:.0f} %, or above)")
                    if t_intact.mean >= chance - NEAR_CHANCE:  # a twin that never trained cannot collapse further
                        out.append(Reading(twin, "Veit et al. 2016", claim, f"already at chance intact (error "
                                           f"{_pp(t_intact)}): the plain net did not train", None))
                    else:
                        out.append(Reading(twin, "Veit et al. 2016", claim, f"middle layer deleted: error {_pp(t_mid)}",
                                           _verdict(t_mid, chance - NEAR_CHANCE)))
    return out
