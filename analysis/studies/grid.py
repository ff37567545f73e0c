"""Experiment grids: He et al. 2016's shortcut and activation variants trained here, measured beside
the paper's numbers.

A :class:`Grid` is variants x depths x seeds with one recipe on one dataset. Every run is keyed by
the run store's hash of (spec, recipe, dataset, seed) — the same key the Training page's runs have
— so :func:`run_grid` trains only what the store does not hold yet, saves each run the moment it
finishes (a crash, Ctrl-C or Cancel loses no finished run) and returns a results table and a
summary: test error mean ± std over seeds per variant and depth, the paper's ResNet-110 number
beside it, a one-line reading from a test of each variant against the original over the seeds
(:func:`reading`) and whether that agrees with He et al. 2016 (:func:`agreement`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.core.bounded import COUNT, FLAG, PERCENT, SECONDS, SEED, TEXT, Column, check_table, loads_json
from analysis.core.errors import ConfigError, LensError, SpecError
from analysis.core.io import WriteError, rescue
from analysis.core.meta import TrainConfig
from analysis.core.reporting import records, write_csv, write_json
from analysis.core.stats import (
    MIN_INTERVAL_SEEDS,
    Contrast,
    bracket,
    mean_interval,
    no_interval,
    paired_contrast,
    t_half_width,
    t_interval,
    welch_from_summary,
)
from analysis.run.executor import DataSpec, Executor, PoolExecutor, Task, TaskEvent, TaskResult

if TYPE_CHECKING:
    from analysis.arch.specs import ResNetSpec
    from analysis.store.runstore import RunStore


@dataclass(frozen=True)
class Variant:
    """One of He et al. 2016's variants: the spec fields it changes and the paper's CIFAR-10
    ResNet-110 test error (%; None where the paper gives no number: ``paper_fail`` says it reports
    "fail", i.e. above 20 %)."""

    name: str
    label: str
    changes: Mapping[str, Any]
    table: str
    paper_error: float | None
    paper_fail: bool = False

    @property
    def paper(self) -> str:
        if self.paper_fail:
            return "fail (> 20 %)"
        return "" if self.paper_error is None else f"{self.paper_error:.2f}"


# He et al. 2016 (shared REFERENCE.md), CIFAR-10, ResNet-110. Table 1: shortcut variants; Table 2:
# activation placement. The "original" row is in both tables with the same 6.61 %.
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("original", "original (identity shortcut)", {}, "Tables 1, 2", 6.61),
    Variant("scaling_0.5", "constant scaling 0.5 (F not scaled)", {"shortcut_variant": "scale", "shortcut_scale": 0.5},
            "Table 1", None, paper_fail=True),
    Variant("scaling_0.5_0.5", "constant scaling 0.5/0.5 (F × 0.5)",
            {"shortcut_variant": "scale", "shortcut_scale": 0.5, "scale_residual": True}, "Table 1", 12.35),
    Variant("exclusive_gating", "exclusive gating (b_g = -6)", {"shortcut_variant": "gate", "gate_bias": -6.0},
            "Table 1", 8.70),
    Variant("shortcut_gating", "shortcut-only gating (b_g = -6)",
            {"shortcut_variant": "shortcut_gate", "gate_bias": -6.0}, "Table 1", 6.91),
    Variant("conv_shortcut", "1×1 conv shortcut", {"shortcut": "C"}, "Table 1", 12.22),
    Variant("dropout_shortcut", "dropout shortcut (0.5)", {"shortcut_variant": "dropout", "shortcut_dropout": 0.5},
            "Table 1", None, paper_fail=True),
    # the same row of Table 1 as the paper defines it: s(x) times a Bernoulli mask (keep 0.5), not rescaled,
    # so 0.5·s(x) in expectation and at test time; the row above is PyTorch's inverted dropout (expectation s(x))
    Variant("dropout_shortcut_paper", "dropout shortcut (0.5), as in the paper: not rescaled, E = 0.5·s",
            {"shortcut_variant": "dropout_paper", "shortcut_dropout": 0.5}, "Table 1", None, paper_fail=True),
    Variant("bn_after_add", "BN after addition", {"activation": "bn_after_add"}, "Table 2", 8.17),
    Variant("relu_before_add", "ReLU before addition", {"activation": "relu_before_add"}, "Table 2", 7.84),
    Variant("relu_preact", "ReLU-only pre-activation", {"activation": "relu_preact"}, "Table 2", 6.71),
    Variant("full_preact", "full pre-activation", {"preact": True}, "Table 2", 6.37),
    # not in He et al. 2016's tables: the plain twin, for the contrast without shortcuts (its gradient at
    # initialisation grows toward the input block by block: explosion, not vanishing; see the gradient flow)
    Variant("plain", "plain net (no shortcuts)", {"residual": False}, "", None),
)}
# What a grid trains when no variants are named: the paper's two tables.
PAPER_VARIANTS = tuple(name for name, v in VARIANTS.items() if v.table)
BASELINE = "original"
FAIL_ERROR = 20.0  # the paper's "fail": test error above 20 %
DEFAULT_DEPTHS = (20, 56)


#: The variants with a gate, whose start ``name@b_g`` sets
GATED = tuple(name for name, v in VARIANTS.items() if "gate_bias" in v.changes)
#: He et al. 2016, Table 1, at the gate starts other than -6 it reports (test error %, "fail"): exclusive
#: gating fails (> 20 %) from b_g = 0 to -5 and gives 9.81 % at -7; shortcut-only gating gives 12.86 % at
#: b_g = 0. Other starts have no number in the paper.
PAPER_GATE_STARTS: dict[tuple[str, float], tuple[float | None, bool]] = {
    **{("exclusive_gating", float(b)): (None, True) for b in range(0, -6, -1)},
    ("exclusive_gating", -7.0): (9.81, False),
    ("shortcut_gating", 0.0): (12.86, False),
}


def paper_starts(base: str) -> list[float]:
    """The gate starts b_g at which the paper reports gated variant ``base`` (its own -6 included)."""
    return sorted({b for (name, b) in PAPER_GATE_STARTS if name == base} | {VARIANTS[base].changes["gate_bias"]},
                  reverse=True)


def _one(part: str) -> Variant:
    """One named variant, or a gated one at another gate start: 'exclusive_gating@-2' is exclusive
    gating with b_g = -2 (the same net as 'exclusive_gating' at the paper's -6, under that name)."""
    base, at, value = part.partition("@")
    if base not in VARIANTS:
        raise ConfigError(f"unknown variant {base!r}; choose from {', '.join(VARIANTS)} "
                          "(or join them with '+')")
    v = VARIANTS[base]
    if not at:
        return v
    if base not in GATED:
        raise ConfigError(f"{part}: '@' sets a gate's initial bias b_g; only {', '.join(GATED)} have a gate")
    try:
        b = float(value)
    except ValueError:
        raise ConfigError(f"{part}: the gate's b_g after '@' must be a number, e.g. {base}@-2") from None
    if not math.isfinite(b):
        raise ConfigError(f"{part}: the gate's b_g must be finite, got {value!r}")
    b = b + 0.0  # -0 is 0: one net, one name
    if b == v.changes["gate_bias"]:
        return v  # the paper's own start: its row, under its name
    # one name per net: '@-2.0', '@-2e0' and '@-2' are all 'exclusive_gating@-2'
    paper_error, paper_fail = PAPER_GATE_STARTS.get((base, b), (None, False))
    return Variant(f"{base}@{b:g}", v.label.replace(f"(b_g = {v.changes['gate_bias']:g})", f"(b_g = {b:g})"),
                   {**v.changes, "gate_bias": b}, "Table 1" if (base, b) in PAPER_GATE_STARTS else "", paper_error,
                   paper_fail)


def variant(name: str) -> Variant:
    """A variant by name; names joined by '+' combine their changes (e.g. 'full_preact+exclusive_gating');
    a gated variant takes another gate start after '@' (``exclusive_gating@-2``, :data:`GATED`)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a variant name must be a non-empty string, got {name!r}")
    parts = [p.strip() for p in name.split("+")]
    found = [_one(p) for p in parts]
    if len(parts) == 1:
        return found[0]
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:  # 'original+original' is 'original' under another name: a second run of the same net
        raise ConfigError(f"{name}: {', '.join(twice)} named more than once; name each part once")
    changes: dict[str, Any] = {}
    for p, one in zip(parts, found, strict=True):
        for k, v in one.changes.items():
            if k in changes and changes[k] != v:
                raise ConfigError(f"{name}: {p} sets {k} = {v!r}, another part sets {changes[k]!r}")
            changes[k] = v
    return Variant("+".join(one.name for one in found), " + ".join(one.label for one in found), changes, "", None)


def variant_table() -> pd.DataFrame:
    """Every variant with its spec changes and the paper's number (``--list-variants``)."""
    return pd.DataFrame([{"variant": v.name, "label": v.label, "changes": ", ".join(f"{k}={x}" for k, x in
                                                                                    v.changes.items()) or "-",
                          "paper table": v.table, "paper error % (ResNet-110)": v.paper} for v in VARIANTS.values()])


def base_spec(depth: int, dims: int = 2) -> ResNetSpec:
    """The CIFAR ResNet of ``depth`` = 6n+2 layers (He et al. 2015, Sec. 4.2, option A shortcuts), or
    its 1-D counterpart ``resnet1d_<depth>`` for sequence data (``dims=1``: MNIST-1D)."""
    from analysis.arch.specs import get_spec

    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ConfigError(f"depths must be whole numbers of the form 6n+2 (8, 14, 20, 32, 56, ...), got {depth!r}")
    if dims not in (1, 2):
        raise ConfigError(f"a grid trains 1-D or 2-D nets, got dims={dims!r}")
    return get_spec(f"cifar_resnet{depth}" if dims == 2 else f"resnet1d_{depth}")


def variant_spec(v: Variant, depth: int, *, channels: int = 3, classes: int = 10, size: int = 32,
                 dims: int = 2) -> ResNetSpec:
    """The spec of variant ``v`` at ``depth``, sized for the data (a 1-D net for sequence data); a
    combination the spec refuses (e.g. gating on a plain net) raises its SpecError."""
    try:
        return base_spec(depth, dims).replace(in_channels=channels, num_classes=classes, input_size=size,
                                              **v.changes)
    except SpecError as exc:
        raise SpecError(f"variant {v.name} at depth {depth}: {exc}") from exc


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: what to train and the store key it will have."""

    variant: str
    depth: int
    seed: int
    spec: ResNetSpec
    config: TrainConfig
    data: DataSpec
    key: str

    def task(self, grad_every: int = 0) -> Task:
        from analysis.store.checkpoints import spec_to_dict

        return Task(self.key, spec_to_dict(self.spec), self.config.to_dict(), self.data,
                    label=f"{self.variant} depth {self.depth} seed {self.seed}", grad_every=grad_every)


def _unique(values: Iterable[Any], what: str) -> tuple[Any, ...]:
    out = tuple(values)
    if not out:
        raise ConfigError(f"a grid needs at least one {what}")
    dup = next((v for i, v in enumerate(out) if v in out[:i]), None)
    if dup is not None:
        raise ConfigError(f"{what} {dup!r} is listed twice")
    return out


@dataclass(frozen=True)
class Grid:
    """Variants x depths x seeds, one recipe (its ``seed`` is replaced by each run's), one dataset.
    Checked on construction: unknown variants, depths not of the form 6n+2, no seeds, duplicates and
    variant combinations the spec refuses are a :class:`~analysis.core.errors.LensError` here."""

    variants: tuple[str, ...]
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    seeds: tuple[int, ...] = (0, 1)
    recipe: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        from analysis.experiments.precision import check_layout

        for name, what in (("variants", "variant"), ("depths", "depth"), ("seeds", "seed")):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                raise ConfigError(f"{name} must be a list of {what}s, got {value!r}")
            object.__setattr__(self, name, _unique(value, what))
        # each variant under its one name, and no net twice under two names (same runs, same store keys:
        # 'exclusive_gating' and 'exclusive_gating@-6', or a combination in another order)
        found = [variant(n) for n in self.variants]
        seen: dict[frozenset[tuple[str, Any]], str] = {}
        for given, v in zip(self.variants, found, strict=True):
            net = frozenset(v.changes.items())
            if net in seen:
                raise ConfigError(f"{given!r} and {seen[net]!r} are the same net (the same spec changes); name it once")
            seen[net] = given
        object.__setattr__(self, "variants", tuple(v.name for v in found))
        if not isinstance(self.recipe, TrainConfig):
            raise ConfigError(f"the recipe must be a TrainConfig, got {type(self.recipe).__name__}")
        if not isinstance(self.data, DataSpec):
            raise ConfigError(f"the dataset must be a DataSpec, got {type(self.data).__name__}")
        for s in self.seeds:
            dataclasses.replace(self.recipe, seed=s)  # TrainConfig checks each seed
        # 1-D nets in channels-last: refused here; whether this CPU has bf16 units is asked where each
        # run trains (a Ray cluster's nodes are other CPUs), so a bf16 grid read from a file loads anywhere
        check_layout(self.recipe.channels_last, self.data.dims)
        for name in self.variants:
            for d in self.depths:
                variant_spec(variant(name), d)  # every spec buildable before any work

    @property
    def definition(self) -> dict[str, Any]:
        """What the grid is, as plain data (hashed into its id, written into results files)."""
        recipe = self.recipe.to_dict()
        recipe.pop("seed")
        return {"variants": list(self.variants), "depths": list(self.depths), "seeds": list(self.seeds),
                "recipe": recipe, "data": self.data.to_dict()}

    @property
    def id(self) -> str:
        from analysis.store.runstore import config_key

        return config_key(self.definition)

    def runs(self) -> list[RunSpec]:
        """Every run (variant-major, then depth, then seed), each with its store key. Loads the
        dataset once to know its size and classes (they are part of the key)."""
        from analysis.store.checkpoints import spec_to_dict
        from analysis.store.runstore import config_key

        data = self.data.load()
        info = dataclasses.asdict(data.info())
        out = []
        for name in self.variants:
            v = variant(name)
            for d in self.depths:
                spec = variant_spec(v, d, channels=data.channels, classes=data.num_classes, size=data.size,
                                    dims=data.dims)
                for s in self.seeds:
                    cfg = dataclasses.replace(self.recipe, seed=s)
                    # the key run_config(ck) gives the trained checkpoint: the store finds it by this
                    key = config_key({"spec": spec_to_dict(spec), "recipe": cfg.to_dict(), "dataset": info})
                    out.append(RunSpec(name, d, s, spec, cfg, self.data, key))
        return out


# ---------------------------------------------------------------------------- running a grid
RESULT_COLUMNS = ["variant", "label", "depth", "seed", "status", "reused", "train_error", "train_clean", "test_error",
                  "epochs", "seconds", "key", "message"]
# ``train_clean``: the train error is the clean one (eval mode, the whole training set without
# augmentation, after the last epoch); False: the running number of the last epoch (augmented batches
# in train mode), all that runs trained before the clean pass existed have


@dataclass
class GridProgress:
    """What a progress callback sees: runs done (stored ones included) out of ``total``, the running
    runs' latest events by key, and the row of the run that just finished (None otherwise)."""

    total: int
    done: int = 0
    reused: int = 0
    running: dict[str, TaskEvent] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    finished: dict[str, Any] | None = None


@dataclass
class GridResult:
    grid: Grid
    results: pd.DataFrame
    summary: pd.DataFrame
    wall_seconds: float
    trained: int
    reused: int
    cancelled: bool
    test_size: int | None = None  # test images (or sequences) each run was tested on
    # where the runs trained now trained (analysis.core.machine.describe): CPU, threads, torch; None
    # when nothing was trained now (a grid read from the store, or every run found there)
    machine: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"grid": self.grid.definition, "grid_id": self.grid.id, "wall_seconds": round(self.wall_seconds, 1),
               "trained": self.trained, "reused": self.reused, "cancelled": self.cancelled}
        out.update({k: v for k, v in (("test_size", self.test_size), ("machine", self.machine)) if v is not None})
        return {**out, "results": records(self.results), "summary": records(self.summary)}


def _row(r: RunSpec, status: str, *, reused: bool, final: Mapping[str, float] | None = None, epochs: int = 0,
         seconds: float | None = None, message: str = "") -> dict[str, Any]:
    final = final or {}

    def err(k: str) -> float:  # error % from an accuracy (None or NaN: not measured)
        v = final.get(k)
        return math.nan if v is None else round(100 * (1 - float(v)), 4)

    # the clean training error where the run measured it (a store's metrics row holds NaN otherwise)
    clean = not math.isnan(err("train_acc_clean"))
    return {"variant": r.variant, "label": variant(r.variant).label, "depth": r.depth, "seed": r.seed,
            "status": status, "reused": reused, "train_error": err("train_acc_clean" if clean else "train_acc"),
            "train_clean": clean, "test_error": err("test_acc"), "epochs": epochs,
            "seconds": math.nan if seconds is None else round(seconds, 2), "key": r.key, "message": message}


def _known_row(store: RunStore, r: RunSpec, notes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row of a run the store knows the end of: stored complete (its metrics), or noted in the
    grid's record as diverged (``notes``: run key -> outcome; a diverged run is not retried); else None."""
    row = _stored_row(store, r)
    note = notes.get(r.key)
    if row is None and isinstance(note, str) and note.startswith("diverged"):
        row = _row(r, "diverged", reused=True, message=note.partition(": ")[2])
    return row


def _stored_row(store: RunStore, r: RunSpec) -> dict[str, Any] | None:
    """The row of a run the store holds (complete), from its metrics; None if it holds none."""
    run = store.get(r.key)
    if run is None or run.status != "complete":
        return None
    m = store.metrics([r.key])
    if len(m):
        last = m.iloc[-1]
        return _row(r, "complete", reused=True, final=last.to_dict(), epochs=int(last["epoch"]),
                    seconds=float(last["seconds"]))
    meta = store.load(run).meta  # a run stored before per-epoch metrics were: read its file
    return _row(r, "complete", reused=True, final=meta.final, epochs=len(meta.history), seconds=meta.train_seconds)


def run_grid(grid: Grid, store: RunStore, executor: Executor, *,
             progress: Callable[[GridProgress], None] | None = None, cancel: Callable[[], bool] | None = None,
             grad_every: int = 0) -> GridResult:
    """Train the runs of ``grid`` the store does not hold (each saved as soon as it finishes) and
    return every run's numbers and the summary. ``cancel()`` returning True stops the grid: queued
    runs never start, running ones are dropped at their next batch, finished ones stay stored.
    Runs that diverged are noted in the store's grid record and not retried. ``grad_every`` > 0
    records the gradient flow every that many steps (:mod:`analysis.experiments.gradflow`) and stores the records
    by run key; a stored run without records is then trained again (recording never changes the
    weights, so the key and the numbers stay the same)."""
    from analysis.store.checkpoints import load_checkpoint

    if isinstance(grad_every, bool) or not isinstance(grad_every, int) or grad_every < 0:
        raise ConfigError(f"grad_every must be a whole number >= 0 (0: no gradient records), got {grad_every!r}")
    t0 = time.perf_counter()
    runs = grid.runs()
    store.save_grid(grid.id, grid.definition, [(r.key, r.variant, r.depth, r.seed) for r in runs])
    members = store.grid_runs(grid.id)
    outcomes = dict(zip(members["run"], members["outcome"], strict=True))
    rows: dict[str, dict[str, Any]] = {}
    state = GridProgress(total=len(runs), labels={r.key: f"{r.variant} {r.depth} s{r.seed}" for r in runs})
    todo: list[RunSpec] = []
    for r in runs:
        row = _known_row(store, r, outcomes)
        if row is not None and row["status"] == "complete" and grad_every and store.gradients(r.key) is None:
            row = None  # stored without gradient records: train again (same weights), recording this time
        if row is None:
            todo.append(r)
            continue
        rows[r.key] = row
        state.done += 1
        state.reused += 1
    by_key = {r.key: r for r in todo}
    if progress:
        progress(state)
    stopped = bool(cancel and cancel())
    trained = 0
    if todo and not stopped:
        for r in todo:
            executor.submit(r.task(grad_every))

        def report_and_poll() -> None:
            """Show the state, then ask whether to stop (once: the executor is cancelled for good)."""
            nonlocal stopped
            if progress:
                progress(state)
            if not stopped and cancel and cancel():
                stopped = True
                executor.cancel()

        def on_event(e: TaskEvent) -> None:
            if e.key in rows:  # a late event of a run that already finished
                return
            state.running[e.key] = e
            state.finished = None
            report_and_poll()

        for res in executor.results(on_event):
            r = by_key[res.key]
            state.running.pop(res.key, None)
            rows[r.key] = row = _finish(store, grid, r, res, load_checkpoint)
            if row["status"] == "complete":
                trained += 1
            if row["status"] != "cancelled":
                state.done += 1
            state.finished = row
            report_and_poll()
    for r in runs:  # runs a cancel kept from starting
        rows.setdefault(r.key, _row(r, "cancelled", reused=False))
    results = pd.DataFrame([rows[r.key] for r in runs], columns=RESULT_COLUMNS)
    test_size = len(grid.data.load().y_test)  # loaded once already by grid.runs()
    return GridResult(grid, results, summarise(results, test_size), time.perf_counter() - t0, trained, state.reused,
                      stopped and any(results["status"] == "cancelled"), test_size,
                      # the runs found in the store were trained earlier, maybe elsewhere: none trained now, none named
                      machine(executor) if trained else None)


def machine(executor: Executor) -> dict[str, Any]:
    """The machine a grid's new runs trained on (:func:`analysis.core.machine.describe`) with the
    torch threads each run had: the executor's own (a pool's workers have one each), else this
    process's. On Ray the runs trained on the cluster's nodes, which ``executor`` then says."""
    from analysis.core.machine import describe

    threads = 1 if isinstance(executor, PoolExecutor) else getattr(executor, "threads", None)
    out: dict[str, Any] = dict(describe(threads if isinstance(threads, int) else None))
    where = getattr(executor, "describe", None)
    if callable(where):
        out["executor"] = str(where())
    return out


def _finish(store: RunStore, grid: Grid, r: RunSpec, res: TaskResult, load: Callable[..., Any]) -> dict[str, Any]:
    """Store a finished run (only the parent writes the store) and return its row."""
    if res.status == "complete" and res.checkpoint is not None:
        ck = load(res.checkpoint, name=f"run {r.key}")
        from analysis.store.runstore import StoreError

        label = f"{variant(r.variant).label}, depth {r.depth}, seed {r.seed}"
        try:
            store.save_run(label, ck)
        except (WriteError, StoreError) as exc:  # a full disk, most likely: the trained net is not dropped
            where = rescue(f"grid-{r.key}.pt", res.checkpoint)
            kept = f"it is kept at {where}" if where is not None else "no rescue folder could hold it either"
            raise WriteError(f"{exc}; the run {label} finished but could not be stored: {kept}. The runs stored "
                             f"before are in {store.home}; the same grid again trains only the rest",
                             disk_full=getattr(exc, "disk_full", False)) from exc
        if res.gradients is not None:
            store.save_gradients(r.key, pd.DataFrame(res.gradients))
        return _row(r, "complete", reused=False, final=ck.meta.final, epochs=len(ck.meta.history),
                    seconds=ck.meta.train_seconds)
    if res.status == "diverged":
        store.note_outcome(grid.id, r.key, f"diverged: {res.message}")
    if res.status == "error":
        raise LensError(f"{r.variant} at depth {r.depth}, seed {r.seed}: {res.message}")
    return _row(r, res.status, reused=False, epochs=res.epochs_done, seconds=res.seconds, message=res.message)


# ---------------------------------------------------------------------------- the summary and its readings
SUMMARY_COLUMNS = ["variant", "label", "depth", "runs", "diverged", "test_error_mean", "test_error_std",
                   "train_error_mean", "train_error_std", "paper_error", "paper", "diff", "diff_low", "diff_high",
                   "diff_test", "detectable", "reading", "agrees"]
# ``diff``: the variant's test error minus the original's at the same depth (pp, mean over seeds),
# ``diff_low``/``diff_high`` its 95 % interval, ``diff_test`` how it was formed ("paired t": by seed,
# "Welch t": unpaired; "" without a test), ``detectable`` the smallest true difference the design
# detects with power 0.8 (pp); ``agrees``: :func:`agreement`. Files written before them lack them.
#: Fewer seeds than this give no test: a t-interval over 2 seeds (1 degree of freedom, t = 12.7) says
#: next to nothing, and a reading then says "2 seeds: no test" instead of a verdict.
MIN_TEST_SEEDS = 3
#: He et al. 2015 (Table 6) give ResNet-110 on CIFAR-10 as 6.61 ± 0.16 % over 5 runs (mean ± std);
#: two single runs of one net then differ by more than 2·√2·0.16 = 0.45 pp about 5 % of the time, so
#: the paper's variants within that of the original are read as "about equal" to it, and so are ours
#: whose 95 % interval of the difference lies within ±this band.
PAPER_RUN_SD = 0.16
SAME_BAND = 2 * math.sqrt(2) * PAPER_RUN_SD
#: He et al. 2015 (Sec. 4.2) warm ResNet-110 up at lr 0.01 until its training error is below 80 %: a
#: run still at or above it after its last epoch did not train.
NOT_TRAINED = 80.0


def fingerprints(store: RunStore, result: GridResult) -> dict[str, tuple[str, tuple[tuple[Any, ...], ...]]]:
    """Per run of ``result``: its weights' content hash and its per-epoch numbers without their
    times, so two grids run by different executors can be compared for identical results."""
    from analysis.store.checkpoints import load_checkpoint

    out = {}
    metrics = store.metrics()
    for key in result.results["key"]:
        run = store.get(key)
        if run is None:
            raise ConfigError(f"run {key} of the grid is not in the run store {store.home}")
        m = metrics[metrics["run"] == key].drop(columns=["seconds"])
        # NaN (an epoch without the clean pass) as None: NaN != NaN would call two equal grids different
        rows = [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)
                for row in m.to_numpy().tolist()]
        out[key] = (load_checkpoint(run.path).meta.content_sha256, tuple(rows))
    return out


def stored_grid(grid: Grid, store: RunStore) -> GridResult | None:
    """The grid as the run store holds it, trained nothing and written nothing (a page opened again,
    a reload): every stored run's row, the others as 'not run'; None when the store holds none of
    its runs."""
    members = store.grid_runs(grid.id)
    notes = dict(zip(members["run"], members["outcome"], strict=True))
    rows = [_known_row(store, r, notes) for r in grid.runs()]
    if all(row is None for row in rows):
        return None
    results = pd.DataFrame([row if row is not None else _row(r, "not run", reused=False)
                            for r, row in zip(grid.runs(), rows, strict=True)], columns=RESULT_COLUMNS)
    found = sum(row is not None for row in rows)
    test_size = len(grid.data.load().y_test)
    return GridResult(grid, results, summarise(results, test_size), 0.0, 0, found, found < len(rows), test_size)


def summarise(results: pd.DataFrame, test_size: int | None = None) -> pd.DataFrame:
    """Mean ± std (over seeds, sample std) of the finished runs per variant and depth, the paper's
    ResNet-110 number beside it, each variant against the original at its depth (:func:`contrast`:
    paired by seed), the reading from that test (:func:`reading`; differences also in test images when
    ``test_size`` is known) and whether it agrees with the paper (:func:`agreement`)."""
    rows = []
    order = list(dict.fromkeys(results["variant"]))
    for (name, depth), g in sorted(results.groupby(["variant", "depth"], sort=False),
                                   key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        ok = g[g["status"] == "complete"]
        v = variant(str(name))
        rows.append({"variant": name, "label": v.label, "depth": int(depth), "runs": len(ok),
                     "diverged": int((g["status"] == "diverged").sum()),
                     "test_error_mean": float(ok["test_error"].mean()) if len(ok) else math.nan,
                     "test_error_std": _std(ok, "test_error"),
                     "train_error_mean": float(ok["train_error"].mean()) if len(ok) else math.nan,
                     "train_error_std": _std(ok, "train_error"),
                     "paper_error": math.nan if v.paper_error is None else v.paper_error, "paper": v.paper})
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:11])
    extra = []
    for _, row in summary.iterrows():
        name, depth = str(row["variant"]), int(row["depth"])
        base = baseline(summary, depth)
        c = contrast(results, name, depth) if name != BASELINE else None
        tested = c is not None and c.low is not None and c.n >= MIN_TEST_SEEDS
        found = c.detectable() if c is not None else None
        extra.append({"diff": math.nan if c is None else c.diff,
                      "diff_low": c.low if tested and c is not None and c.low is not None else math.nan,
                      "diff_high": c.high if tested and c is not None and c.high is not None else math.nan,
                      "diff_test": ("paired t" if c.paired else "Welch t") if tested and c is not None else "",
                      "detectable": math.nan if found is None else found,
                      "reading": reading(row, base, c, test_size),
                      "agrees": agreement(name, depth, c, reasons(results, name, depth) if name != BASELINE else [],
                                          # every seed diverged, against an original that trained
                                          diverged=int(row["diverged"]) if not int(row["runs"]) and base is not None
                                          and int(base["runs"]) else 0,
                                          error=None if pd.isna(row["test_error_mean"]) else float(row["test_error_mean"]))})
    summary = pd.concat([summary, pd.DataFrame(extra, index=summary.index, columns=SUMMARY_COLUMNS[11:])], axis=1)
    return summary[SUMMARY_COLUMNS]


def test_size(definition: Mapping[str, Any]) -> int | None:
    """The test split's size for a grid's definition (its data loaded here, once per process), or
    None when the data cannot be loaded on this machine (a folder that is not here)."""
    data = definition.get("data")
    if not isinstance(data, Mapping):
        return None
    try:
        return len(DataSpec(**data).load().y_test)
    except (LensError, TypeError):  # TypeError: a definition with fields DataSpec does not have
        return None


def _std(ok: pd.DataFrame, col: str) -> float:
    """Sample std over seeds; NaN for one run (no noise estimate)."""
    return float(ok[col].std(ddof=1)) if len(ok) > 1 else math.nan


def baseline(summary: pd.DataFrame, depth: int) -> Mapping[str, Any] | None:
    base = summary[(summary["variant"] == BASELINE) & (summary["depth"] == depth)]
    return None if base.empty else base.iloc[0].to_dict()


def _finished(results: pd.DataFrame, name: str, depth: int, col: str = "test_error") -> pd.Series:
    """A variant's finished runs at ``depth``: their ``col`` (test error by default), by seed."""
    ok = results[(results["variant"] == name) & (results["depth"] == depth) & (results["status"] == "complete")]
    ok = ok[ok[col].notna()]
    return pd.Series(ok[col].to_numpy(dtype=float), index=ok["seed"].to_numpy())


def contrast(results: pd.DataFrame, name: str, depth: int) -> Contrast | None:
    """Variant ``name`` minus the original in test error (pp) at ``depth``, over the seeds. A grid's runs
    of one seed share the batch order and the augmentation draws (both from the recipe's seed), so
    they are compared seed by seed (paired) over the seeds both finished; runs that share no seed
    (results put together from elsewhere) are compared unpaired (Welch). None without finished runs
    on either side."""
    a, b = _finished(results, name, depth), _finished(results, BASELINE, depth)
    if a.empty or b.empty:
        return None
    common = [s for s in a.index if s in set(b.index)]
    if common:
        return paired_contrast(a.loc[common].tolist(), b.loc[common].tolist(), what=f"{name} at depth {depth}")
    return welch_from_summary(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan, len(a),
                              float(b.mean()), float(b.std(ddof=1)) if len(b) > 1 else math.nan, len(b))


def _fmt(mean: float, std: float, n: int) -> str:
    """'2.50 ± 1.24 % (95 % CI, t, 5 seeds)', '3.00 % (one run)' or '3.00 % (2 seeds: no interval)'."""
    if n < 2 or math.isnan(std):
        return f"{mean:.2f} % (one run)"
    half = t_half_width(n, std)
    return f"{mean:.2f} % ({no_interval(n)})" if math.isnan(half) else \
        f"{mean:.2f} ± {half:.2f} % (95 % CI, t, {n} seeds)"


def images(pp: float, test_size: int | None) -> str:
    """A difference of test error in points as the test images it is: ' = 2.0 test images of 450'."""
    return "" if not test_size else f" = {abs(pp) * test_size / 100:.1f} test images of {test_size:,}"


def reading(row: Mapping[str, Any], base: Mapping[str, Any] | None, c: Contrast | None = None,
            test_size: int | None = None) -> str:
    """One honest line from the numbers: fails (mean test error above 20 %, the paper's criterion,
    or diverged in every seed), the baseline itself, or the variant against the original at the
    same depth from a t-test over the seeds (``c``, :func:`contrast`; without it, Welch's test from
    the two rows' means and stds): its difference with the 95 % interval and the smallest difference
    the design detects, in points and in test images. Fewer than :data:`MIN_TEST_SEEDS` seeds give
    no test: the reading says "one run" or "2 seeds: no test". Then the paper's verdict."""
    runs, diverged = int(row["runs"]), int(row["diverged"])
    mean, std = float(row["test_error_mean"]), float(row["test_error_std"])
    paper_fail = isinstance(row.get("paper"), str) and row["paper"].startswith("fail")
    paper_error = row.get("paper_error")
    paper = ("paper: fails" if paper_fail else
             f"paper: {paper_error:.2f} %" if isinstance(paper_error, float) and not math.isnan(paper_error) else "")
    if row["variant"] != BASELINE and paper and not paper_fail:
        base_paper = VARIANTS[BASELINE].paper_error or math.nan
        paper = f"paper: {float(paper_error or 0) - base_paper:+.2f} pp vs the original"
    tail = f"; {paper}" if paper else ""
    seeds = f"; diverged in {diverged} of {runs + diverged} seeds" if diverged and runs else ""
    if runs == 0:
        if diverged:
            return f"fails to train: diverged in every seed ({diverged}){tail}"
        return f"no finished runs{tail}"
    if mean > FAIL_ERROR:
        return f"fails to train (test error {_fmt(mean, std, runs)}, above {FAIL_ERROR:g} %){seeds}{tail}"
    if row["variant"] == BASELINE:
        return f"the baseline: {_fmt(mean, std, runs)}{seeds}{tail}"
    if base is None or int(base["runs"]) == 0 or math.isnan(float(base["test_error_mean"])):
        return f"{_fmt(mean, std, runs)}; no finished original at this depth to compare with{seeds}{tail}"
    if c is None:
        c = welch_from_summary(mean, std, runs, float(base["test_error_mean"]), float(base["test_error_std"]),
                               int(base["runs"]))
    return f"{verdict(c, test_size)}{seeds}{tail}"


def verdict(c: Contrast, test_size: int | None = None) -> str:
    """What a test of the variant against the original says, in one clause (see :func:`reading`)."""
    d = c.diff
    if c.low is None or c.high is None or c.n < MIN_TEST_SEEDS:
        what = "one run" if c.n == 1 else f"{c.n} seeds: no test"
        return f"{d:+.2f} pp vs the original{images(d, test_size)} ({what})"
    how = f"paired t over {c.n} seeds" if c.paired else f"Welch t, {c.n_a} and {c.n_b} seeds"
    ci = f"95 % CI {c.low:+.2f} to {c.high:+.2f} pp, {how}"
    found = c.detectable()
    smallest = "" if found is None else f"; detectable ≥ {found:.2f} pp{images(found, test_size)}"
    if c.excludes(0):
        word = "worse" if d > 0 else "better"
        return f"{word} than the original by {abs(d):.2f} pp{images(d, test_size)} ({ci}{smallest})"
    return f"no difference from the original detected ({d:+.2f} pp; {ci}{smallest})"


def paper_direction(name: str) -> str | None:
    """He et al. 2016's variant ``name`` against their original: 'worse' (a 'fail' included), 'about
    equal' (within :data:`SAME_BAND`), 'better'; None for what their tables do not hold (the plain
    twin, combinations) and for the original itself."""
    try:
        v = variant(name)  # 'exclusive_gating@-6' is the paper's own row under the sweep's name
    except ConfigError:
        return None
    base = VARIANTS[BASELINE].paper_error
    if name == BASELINE or base is None or not v.table:
        return None
    if v.paper_fail:
        return "worse"
    if v.paper_error is None:
        return None
    d = v.paper_error - base
    return "about equal" if abs(d) <= SAME_BAND else "worse" if d > 0 else "better"


def reasons(results: pd.DataFrame, name: str, depth: int) -> list[str]:
    """What the record shows that explains a variant's number at ``depth`` when it is not the
    paper's: runs that did not train (training error at or above :data:`NOT_TRAINED` % after the
    last epoch: too few epochs for them), runs that diverged, an original that did not train, and a
    gate that starts nearly shut (σ(b_g) from the variant's spec)."""
    out = []
    here = results[(results["depth"] == depth)]
    for who, rows in ((name, here[here["variant"] == name]), (BASELINE, here[here["variant"] == BASELINE])):
        ok = rows[rows["status"] == "complete"]
        stuck = ok[ok["train_error"] >= NOT_TRAINED]
        if len(stuck):
            epochs = sorted({int(e) for e in stuck["epochs"]})
            whom = "did not train" if who == name else "the original did not train"
            out.append(f"{whom}: training error ≥ {NOT_TRAINED:g} % at the last epoch in {len(stuck)} of "
                       f"{len(ok)} seeds — recipe length ({'/'.join(map(str, epochs))} epoch{'s' * (epochs != [1])})")
        gone = int((rows["status"] == "diverged").sum())
        if gone and who == name:
            out.append(f"diverged in {gone} of {len(rows)} seeds")
    spec = variant_spec(variant(name), depth)
    if spec.shortcut_variant == "gate":  # exclusive gating: F(x) enters scaled by the gate
        out.append(f"gate starts at σ(b_g) = {1 / (1 + math.exp(-spec.gate_bias)):.2g} (b_g = {spec.gate_bias:g})")
    return out


def agreement(name: str, depth: int, c: Contrast | None, why: list[str] | None = None, *, diverged: int = 0,
              error: float | None = None) -> str:
    """"agrees", "disagrees" or "cannot tell (...)": the paper's direction for variant ``name``
    (:func:`paper_direction`) against the 95 % interval of ours (``c``, variant minus original).
    Paper worse: ours agrees when the interval lies above 0, disagrees when it lies below 0 or within
    ±:data:`SAME_BAND` (about equal). Paper about equal: ours agrees when the interval lies within
    ±SAME_BAND, disagrees when it lies wholly outside it. Anything else, or fewer than
    :data:`MIN_TEST_SEEDS` seeds, cannot tell, with the seeds and the smallest detectable difference.
    The measured ``why`` (:func:`reasons`) follows a disagreement or a cannot-tell. A variant that
    ``diverged`` in every one of at least MIN_TEST_SEEDS seeds failed to train: worse than any
    original. Where the paper's row is a "fail" and ours, worse, still trains below :data:`FAIL_ERROR`
    (``error``: our mean test error %), the verdict says it agrees in direction, not in size.
    '—' where the paper has no verdict (the original itself, the plain twin, combinations)."""
    paper = paper_direction(name)
    if paper is None:
        if name == BASELINE:
            return "— (the reference)"
        if "@" in name and "+" not in name:
            base = name.partition("@")[0]
            starts = ", ".join(f"{b:g}" for b in paper_starts(base)) if base in GATED else "-6"
            return f"— (another gate start: the paper reports this gate at b_g = {starts} only)"
        return "— (not in the paper's tables)"
    because = f" — {'; '.join(why)}" if why else ""
    if c is None:
        if diverged >= MIN_TEST_SEEDS:
            return "agrees (diverged in every seed)" if paper == "worse" else f"disagrees{because}"
        said = "nothing to compare" if not diverged else "one run" if diverged == 1 else f"{diverged} seeds: no test"
        return f"cannot tell ({said}){because}"
    found = c.detectable()
    if c.low is None or c.high is None or c.n < MIN_TEST_SEEDS:
        return f"cannot tell ({'one run' if c.n == 1 else f'{c.n} seeds: no test'}){because}"
    inside = -SAME_BAND <= c.low and c.high <= SAME_BAND
    if paper == "worse":
        verdict = "agrees" if c.low > 0 else "disagrees" if c.high < 0 or inside else None
    elif paper == "better":
        verdict = "agrees" if c.high < 0 else "disagrees" if c.low > 0 or inside else None
    else:
        verdict = "agrees" if inside else "disagrees" if c.low > SAME_BAND or c.high < -SAME_BAND else None
    if verdict == "agrees":
        if error is not None and error < FAIL_ERROR and variant(name).paper_fail:
            # worse than the original, as the paper's row, but not what the paper reports: a failure
            return f"agrees in direction (worse), not in size: {error:.2f} % where the paper's fails (> {FAIL_ERROR:g} %)"
        return verdict
    if verdict == "disagrees":
        return f"disagrees{because}"
    return f"cannot tell ({c.n} seeds; detectable ≥ {found:.2f} pp){because}" if found is not None else \
        f"cannot tell ({c.n} seeds){because}"


def gate_start(name: str) -> tuple[str, float] | None:
    """(gated variant, its b_g) for a single gated variant name ('exclusive_gating@-2' ->
    ('exclusive_gating', -2.0); 'shortcut_gating' -> ('shortcut_gating', -6.0)); None for any other."""
    try:
        v = variant(name)
    except ConfigError:
        return None
    base = v.name.partition("@")[0]
    if "+" in v.name or base not in GATED:
        return None
    return base, float(v.changes["gate_bias"])


#: Columns of :func:`gate_sweep`
SWEEP_COLUMNS = ["gate", "label", "depth", "b_g", "gate_start", "runs", "diverged", "test_error_mean", "test_low",
                 "test_high", "train_error_mean", "diff", "diff_low", "diff_high", "paper_error", "paper", "reading",
                 "agrees"]


def gate_sweep(summary: pd.DataFrame) -> pd.DataFrame:
    """The b_g sweep in a grid's summary (:func:`summarise`): one row per gated variant, depth and
    initial gate bias b_g, sorted by them, with σ(b_g) (``gate_start``: the gate's opening at
    initialisation, the shortcut's weight being 1 - σ), the mean test error with its 95 % t-interval
    over the seeds (none for one run) and the contrast with the original at that depth. Empty without
    gated variants."""
    rows = []
    for _, r in summary.iterrows():
        found = gate_start(str(r["variant"]))
        if found is None:
            continue
        gate, b = found
        n, mean, std = int(r["runs"]), float(r["test_error_mean"]), float(r["test_error_std"])
        half = t_half_width(n, std)
        rows.append({"gate": gate, "label": VARIANTS[gate].label.split(" (")[0], "depth": int(r["depth"]), "b_g": b,
                     "gate_start": 1 / (1 + math.exp(-b)), "runs": n, "diverged": int(r["diverged"]),
                     "test_error_mean": mean, "test_low": mean - half, "test_high": mean + half,
                     "train_error_mean": float(r["train_error_mean"]), "diff": float(r.get("diff", math.nan)),
                     "diff_low": float(r.get("diff_low", math.nan)), "diff_high": float(r.get("diff_high", math.nan)),
                     "paper_error": float(r["paper_error"]), "paper": str(r["paper"] or ""),
                     "reading": str(r["reading"]), "agrees": str(r.get("agrees") or "")})
    out = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    return out.sort_values(["gate", "depth", "b_g"], ascending=[True, True, False], ignore_index=True)


#: Columns of :func:`degradation`'s two tables
DEGRADATION_COLUMNS = ["net", "depth", "runs", "diverged", "test_error_mean", "test_low", "test_high",
                       "train_error_mean", "train_low", "train_high"]
DEGRADATION_CONTRASTS = ["what", "error", "diff", "low", "high", "seeds", "reading"]
#: the nets of the degradation experiment among a grid's variants: He et al. 2015's residual net and its plain twin
DEGRADATION_NETS = {"residual": BASELINE, "plain": "plain"}


def degradation(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """He et al. 2015's degradation experiment (Fig. 1 / 6) read from a grid that trained the original
    and the plain twin at two depths or more under one recipe: (nets, contrasts). ``nets``: per net and
    depth, test and train error with their 95 % t-intervals over the seeds (None bounds for one run).
    ``contrasts``: for each error, the deepest depth minus the shallowest for each net, and plain minus
    residual at each depth, paired by seed (a grid's runs of one seed share batch order and
    augmentation) over the seeds both finished, with a one-line reading. Both empty when the grid
    lacks either net at two depths."""
    rows: list[dict[str, Any]] = []
    found = {net: sorted({int(d) for d in results.loc[results["variant"] == v, "depth"]})
             for net, v in DEGRADATION_NETS.items()}
    depths = sorted(set(found["residual"]) & set(found["plain"]))
    if len(depths) < 2:
        return pd.DataFrame(columns=DEGRADATION_COLUMNS), pd.DataFrame(columns=DEGRADATION_CONTRASTS)
    for net, name in DEGRADATION_NETS.items():
        for d in depths:
            mine = results[(results["variant"] == name) & (results["depth"] == d)]
            # a net that diverged is the degradation result itself: counted, not dropped
            row: dict[str, Any] = {"net": net, "depth": d, "runs": len(_finished(results, name, d, "test_error")),
                                   "diverged": int((mine["status"] == "diverged").sum())}
            for col, short in (("test_error", "test"), ("train_error", "train")):
                values = _finished(results, name, d, col)
                iv = t_interval(values.tolist(), what=f"{net} {d} {col}") if len(values) else None
                shown = iv is not None and iv.low is not None and iv.high is not None and iv.n >= MIN_INTERVAL_SEEDS
                row.update({f"{col}_mean": math.nan if iv is None else iv.mean,
                            f"{short}_low": iv.low if shown and iv is not None else math.nan,
                            f"{short}_high": iv.high if shown and iv is not None else math.nan})
            rows.append(row)
    nets = pd.DataFrame(rows, columns=DEGRADATION_COLUMNS).astype({"runs": int, "diverged": int})
    pairs = [(f"{net}: depth {depths[-1]} − depth {depths[0]}", (DEGRADATION_NETS[net], depths[-1]),
              (DEGRADATION_NETS[net], depths[0])) for net in DEGRADATION_NETS]
    pairs += [(f"plain − residual at depth {d}", ("plain", d), (BASELINE, d)) for d in depths]
    out = []
    for what, (na, da), (nb, db) in pairs:
        for col, error in (("train_error", "train"), ("test_error", "test")):
            a, b = _finished(results, na, da, col), _finished(results, nb, db, col)
            common = [s for s in a.index if s in set(b.index)]
            if not common:  # said, not skipped: e.g. every seed of one side diverged
                out.append({"what": what, "error": error, "diff": math.nan, "low": math.nan, "high": math.nan,
                            "seeds": 0, "reading": "no seed finished on both sides: nothing to compare"})
                continue
            c = paired_contrast(a.loc[common].tolist(), b.loc[common].tolist(), what=what)
            if c.low is None or c.high is None or c.n < MIN_TEST_SEEDS:
                said = f"{c.diff:+.2f} pp ({'one run' if c.n == 1 else f'{c.n} seeds: no test'})"
            elif c.excludes(0):
                said = f"{'higher' if c.diff > 0 else 'lower'} by {abs(c.diff):.2f} pp (95 % CI {c.low:+.2f} to " \
                       f"{c.high:+.2f}, paired t over {c.n} seeds)"
            else:
                said = f"no difference detected ({c.diff:+.2f} pp; 95 % CI {c.low:+.2f} to {c.high:+.2f}, paired t " \
                       f"over {c.n} seeds)"
            out.append({"what": what, "error": error, "diff": c.diff,
                        "low": math.nan if c.low is None else c.low, "high": math.nan if c.high is None else c.high,
                        "seeds": c.n, "reading": said})
    return nets, pd.DataFrame(out, columns=DEGRADATION_CONTRASTS)


def markdown(summary: pd.DataFrame, depth: int) -> str:
    """One depth of a grid's summary as a Markdown table for the README and closing notes: each variant's
    test error with its 95 % t-interval over the seeds, the paper's ResNet-110 number, the difference
    from the original with its interval, and whether it agrees with He et al. 2016 (the measured reason
    after a disagreement)."""
    lines = ["| variant | test error % [95 % CI] | seeds | paper (ResNet-110, CIFAR-10) % | vs original, pp "
             "[95 % CI] | agrees with He et al. 2016? |", "|---|---|---|---|---|---|"]
    for _, r in summary[summary["depth"] == depth].iterrows():
        n = int(r["runs"])
        error = mean_interval(float(r["test_error_mean"]), float(r["test_error_std"]), n)
        diff = float(r["diff"]) if not pd.isna(r["diff"]) else math.nan
        low, high = float(r["diff_low"]), float(r["diff_high"])
        vs = ("—" if math.isnan(diff) else f"{diff:+.2f} (no test)" if math.isnan(low)
              else f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]")
        lines.append(f"| {r['label']} | {error} | {n} | {r['paper'] or '—'} | {vs} | "
                     f"{r['agrees']} |")
    return "\n".join(lines)


def sweep_markdown(sweep: pd.DataFrame) -> str:
    """:func:`gate_sweep` as a Markdown table: gate, b_g, σ(b_g), test error with its 95 % interval,
    seeds, the difference from the original with its interval, the paper's number where it has one."""
    lines = ["| gate | depth | b_g | σ(b_g) | test error % [95 % CI] | seeds | vs original, pp [95 % CI] | paper % | "
             "agrees with He et al. 2016? |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sweep.itertuples():
        vs = ("—" if math.isnan(r.diff) else f"{r.diff:+.2f} (no test)" if math.isnan(r.diff_low)
              else f"{r.diff:+.2f} [{r.diff_low:+.2f}, {r.diff_high:+.2f}]")
        lines.append(f"| {r.label} | {r.depth} | {r.b_g:g} | {r.gate_start:.3g} | {bracket(r.test_error_mean, r.test_low, r.test_high, n=r.runs)} "
                     f"| {r.runs} | {vs} | {r.paper or '—'} | {r.agrees or '—'} |")
    return "\n".join(lines)


def degradation_markdown(nets: pd.DataFrame, contrasts: pd.DataFrame) -> str:
    """:func:`degradation` as Markdown: a table of the nets' errors, then one line per comparison."""
    lines = ["| net | depth | seeds finished / diverged | train error % [95 % CI] | test error % [95 % CI] |",
             "|---|---|---|---|---|"]
    for r in nets.itertuples():
        lines.append(f"| {r.net} | {r.depth} | {r.runs} / {r.diverged} | "
                     f"{bracket(r.train_error_mean, r.train_low, r.train_high, n=r.runs)} | "
                     f"{bracket(r.test_error_mean, r.test_low, r.test_high, n=r.runs)} |")
    lines.append("")
    lines += [f"- {r.what}, {r.error} error: {r.reading}" for r in contrasts.itertuples()]
    return "\n".join(lines)


def write_results(path: str, result: GridResult) -> None:
    """Results + summary, atomically: JSON (both tables and the grid's definition) or CSV (one row
    per run with its variant-and-depth summary columns beside it), by the file's suffix."""
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() == ".json":
        write_json(p, result.to_json(), indent=1)
    elif p.suffix.lower() == ".csv":
        extra = result.summary.drop(columns=["label"]).rename(columns={"runs": "runs_finished"})
        write_csv(p, result.results.merge(extra, on=["variant", "depth"], how="left"))
    else:
        raise ConfigError(f"--out {path}: give a .json or .csv file")


def load_results(path: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A results JSON written by :func:`write_results`: (results, summary, the rest: grid definition,
    wall time, ...)."""
    from pathlib import Path

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: not a grid results file ({exc})") from exc
    d = loads_json(raw, str(path), ConfigError)
    if not isinstance(d, dict) or "results" not in d or "summary" not in d:
        raise ConfigError(f"{path}: not a grid results file (no results and summary)")
    # a file we did not write in this process: every value checked before a page shows it; the
    # columns added later are checked where a file has them (files written before lack them)
    for part, schema, later in (("results", _RESULT_SCHEMA, _LATER_RESULT_SCHEMA),
                                ("summary", _SUMMARY_SCHEMA, _LATER_SUMMARY_SCHEMA)):
        check_table(d[part], schema, f"{path}: {part}", ConfigError)
        for k, kind in later.items():
            check_table([{k: r[k]} for r in d[part] if k in r], {k: kind}, f"{path}: {part}", ConfigError)
    results = pd.DataFrame(d["results"], columns=RESULT_COLUMNS)
    # a run recorded before the clean pass existed: its train error is the running number
    results["train_clean"] = [v is True for v in results["train_clean"]]
    return (results, pd.DataFrame(d["summary"], columns=SUMMARY_COLUMNS),
            {k: v for k, v in d.items() if k not in ("results", "summary")})


_RESULT_SCHEMA: dict[str, Column] = {
    "variant": TEXT, "label": TEXT, "depth": COUNT, "seed": SEED, "status": TEXT, "reused": FLAG,
    "train_error": PERCENT, "test_error": PERCENT, "epochs": COUNT, "seconds": SECONDS, "key": TEXT, "message": TEXT}
_LATER_RESULT_SCHEMA: dict[str, Column] = {"train_clean": ("bool", 0, 1, True)}  # None: not known, read as running
_DIFF: Column = ("number", -100.0, 100.0, True)  # a difference of two error percentages
_SUMMARY_SCHEMA: dict[str, Column] = {
    "variant": TEXT, "label": TEXT, "depth": COUNT, "runs": COUNT, "diverged": COUNT, "test_error_mean": PERCENT,
    "test_error_std": PERCENT, "train_error_mean": PERCENT, "train_error_std": PERCENT,
    "paper_error": PERCENT, "paper": TEXT, "reading": TEXT}
_LATER_SUMMARY_SCHEMA: dict[str, Column] = {
    "diff": _DIFF, "diff_low": ("number", -1e9, 1e9, True), "diff_high": ("number", -1e9, 1e9, True),
    "diff_test": TEXT, "detectable": ("number", 0.0, 1e9, True), "agrees": TEXT}
