"""``python -m analysis grid``: He et al. 2016's variants x depths x seeds, trained (or found in the run
store), summarised and optionally written out; the first signal cancels, finished runs stay stored."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.cli.common import (
    Interrupted,
    Stop,
    Subparsers,
    add_data_args,
    add_recipe_args,
    check_data_options,
    check_int,
    data_size,
    interrupted,
    recipe,
    results_path,
    state,
    whole,
)
from analysis.core import stats
from analysis.core.errors import ConfigError
from analysis.core.meta import precision_text
from analysis.experiments.precision import check as check_precision
from analysis.experiments.train import check_device
from analysis.run.cluster import check_address
from analysis.run.executor import EXECUTORS, DataSpec, Executor, make_executor
from analysis.store.runstore import RunStore
from analysis.studies import grid as g


def summary_table(s: pd.DataFrame) -> pd.DataFrame:
    """The summary as the command prints it: variant, depth, runs, the test error's mean over the seeds
    with its 95 % t-interval (or why it has none), the paper's number."""
    return s[["label", "depth", "runs"]].assign(
        **{"test error % [95 % CI, t]": [stats.mean_interval(m, sd, int(n)) for m, sd, n in
                                          zip(s["test_error_mean"], s["test_error_std"], s["runs"], strict=True)],
           "paper": s["paper"]})


def add_parser(sub: Subparsers) -> None:
    gr = sub.add_parser("grid", help="train He et al. 2016's variants x depths x seeds, stored and summarised",
                        description="An experiment grid: every variant at every depth with every seed, one recipe, "
                                    "one dataset. Runs the run store already holds (same spec, recipe, data and seed) "
                                    "are not retrained; each run is stored as it finishes, so Ctrl-C / SIGTERM keep "
                                    "every finished run and the same command later trains only the rest.")
    gr.add_argument("--list-variants", action="store_true", help="list the variants with the paper's numbers, exit")
    gr.add_argument("--variants", nargs="+", default=None,
                    help="variant names (default: the paper's twelve rows; see --list-variants); join names with "
                         "'+' to combine; a gated variant takes another initial gate bias after '@' "
                         "(exclusive_gating@-2: b_g = -2, for a b_g sweep)")
    gr.add_argument("--depths", nargs="+", type=whole, default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    gr.add_argument("--seeds", type=whole, default=2, help="seeds per variant and depth: 0 .. N-1 (default 2)")
    add_data_args(gr)
    gr.add_argument("--train-images", type=whole, default=None, help="use only the first N training images")
    add_recipe_args(gr, epochs=10)
    gr.add_argument("--device", default="cpu",
                    help="cpu or cuda (cuda:<index> too, except on Ray, which gives each run one GPU as cuda)")
    gr.add_argument("--executor", choices=EXECUTORS, default=None,
                    help="where runs train: local (this process, one at a time), pool (--workers processes here), "
                         "ray (Ray tasks, one CPU each and one GPU with --device cuda; see --address). Default: "
                         "local, or pool when --workers is above 1")
    gr.add_argument("--address", default=None,
                    help="the Ray cluster for --executor ray: auto (the one `ray start` runs here), "
                         "ray://host:10001 (Ray Client) or host:port (its GCS). Default: a local Ray instance "
                         "on 127.0.0.1, stopped when the grid ends")
    gr.add_argument("--workers", type=whole, default=None,
                    help="runs training at once, one torch thread each: the pool's processes, or Ray tasks in "
                         "flight (default: 1 in this process; pool: one per CPU; ray: as many as the cluster's "
                         "CPUs and GPUs allow)")
    gr.add_argument("--grad-every", type=whole, default=0,
                    help="record gradient flow every N steps when training supports it (0: off)")
    gr.add_argument("--store", default=None, help="run store folder (default: $RESNET_LENS_HOME or ~/.resnet-lens)")
    gr.add_argument("--out", default=None, help="results + summary file, .json or .csv (written atomically)")
    gr.set_defaults(func=cmd_grid)


def cmd_grid(args: argparse.Namespace, stop: Stop) -> int:
    if args.list_variants:
        print(g.variant_table().to_string(index=False))
        return 0
    out = results_path(args.out)
    check_data_options(args)
    check_int("--seeds", args.seeds, 1, 1000)
    check_int("--workers", args.workers, 1, 256)
    check_int("--grad-every", args.grad_every, 0, 10**9)
    check_grid_executor(args)
    cfg = recipe(args, device=args.device)  # the device string checked here
    if args.executor != "ray":  # on Ray the cluster's GPUs and CPUs count, not this machine's (each run checks)
        check_device(cfg.device)
        check_precision(cfg.precision, cfg.device)  # bf16 on a CPU without bf16 units: refused before any run
    data = DataSpec(args.data, data_size(args), args.data_path, args.split_seed, args.train_images)
    grid = g.Grid(tuple(args.variants or g.PAPER_VARIANTS), tuple(args.depths), tuple(range(args.seeds)), cfg, data)
    store = RunStore(args.store)
    try:
        return _grid(args, stop, grid, store, out)
    except KeyboardInterrupt as exc:  # a second signal, or one outside the loop
        kept = f"finished runs are kept in {store.home}; {state(out) if out else 'no --out'}"
        raise interrupted(exc, kept) from None


def check_grid_executor(args: argparse.Namespace) -> None:
    """--executor, --workers, --address and --device together, before any work (or any Ray start)."""
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address names a Ray cluster: it goes with --executor ray")
    if args.executor == "local" and args.workers not in (None, 1):
        raise ConfigError(f"--executor local trains one run at a time in this process; --workers {args.workers} "
                          "needs --executor pool or ray")
    if args.executor == "ray":
        check_address(args.address)
        if args.device.startswith("cuda:"):
            raise ConfigError(f"--device {args.device}: on Ray each run is given one GPU of its node, which it sees "
                              "as cuda; give --device cuda")


def _grid(args: argparse.Namespace, stop: Stop, grid: g.Grid, store: RunStore, out: Path | None) -> int:
    total = len(grid.variants) * len(grid.depths) * len(grid.seeds)
    bars = {"grid": tqdm(total=total, unit="run", desc=f"grid {grid.id[:8]}", position=0, dynamic_ncols=True)}
    slots: dict[str, int] = {}

    def progress(p: g.GridProgress) -> None:
        bars["grid"].n = p.done
        bars["grid"].set_postfix(stored=p.reused, refresh=False)
        bars["grid"].refresh()
        for key, e in p.running.items():  # one bar per running run: epochs and batches
            if key not in slots:
                free = min(set(range(1, (args.workers or 1) + 1)) - set(slots.values()), default=len(slots) + 1)
                slots[key] = free
                bars[key] = tqdm(total=e.epochs * e.steps, unit="batch", desc=p.labels[key], position=free,
                                 leave=False, dynamic_ncols=True)
            bar = bars[key]
            bar.n = (e.epoch - 1) * e.steps + e.step
            bar.set_postfix(epoch=f"{e.epoch}/{e.epochs}", loss=f"{e.loss:.3f}", refresh=False)
            bar.refresh()
        if p.finished is not None:
            key = p.finished["key"]
            if key in bars:
                bars.pop(key).close()
                slots.pop(key, None)
            f = p.finished
            bars["grid"].write(f"{f['variant']:>18} depth {f['depth']:3d} seed {f['seed']}: {f['status']}"
                               + (f", test error {f['test_error']:.2f} %, train error {f['train_error']:.2f} %, "
                                  f"{f['seconds']:.0f} s" if f["status"] == "complete" else f" {f['message']}"))

    stop.defer = True  # the first Ctrl-C / SIGTERM cancels the grid; finished runs stay stored
    executor: Executor | None = None
    try:
        # a signal while a local Ray instance starts (seconds) cancels the grid before its first run
        executor = make_executor(args.workers, threads=1, kind=args.executor, address=args.address)
        describe = getattr(executor, "describe", None)
        if callable(describe):
            bars["grid"].write(f"runs train on {describe()}")
        bars["grid"].write(f"every run trains in {precision_text(grid.recipe.precision, grid.recipe.channels_last)}")
        result = g.run_grid(grid, store, executor, progress=progress, cancel=lambda: stop.signum is not None,
                            grad_every=args.grad_every)
    finally:
        stop.defer = False
        if executor is not None:
            executor.close()
        for bar in bars.values():
            bar.close()
    if stop.signum is not None:
        done = int((result.results["status"] != "cancelled").sum())
        raise Interrupted(stop.signum, f"grid cancelled; {done} of {total} runs finished and kept in {store.home} "
                                       f"(the same command trains only the rest); "
                                       f"{state(out) if out else 'no --out'}")
    print(f"test error % over seeds, every run in {precision_text(grid.recipe.precision, grid.recipe.channels_last)}:")
    print(summary_table(result.summary).to_string(index=False))
    # the readings are sentences: one each, not a column padded to the longest
    print(f"\nreadings (each variant minus the original at its depth, paired by seed; a 95 % t-interval and the "
          f"smallest detectable difference, power 0.8, from {g.MIN_TEST_SEEDS} seeds on, no test below) and whether "
          f"they agree with He et al. 2016 ('about equal': within ±{g.SAME_BAND:.2f} pp):")
    for row in result.summary.itertuples():
        print(f"  {row.label}, depth {row.depth}: {row.reading}\n    agrees with He et al. 2016? {row.agrees}")
    _, degraded = g.degradation(result.results)
    if not degraded.empty:  # the residual and plain twins at two depths: He et al. 2015's degradation experiment
        print("\nthe degradation experiment (residual vs plain, one recipe; paired by seed):")
        for row in degraded.itertuples():
            print(f"  {row.what}, {row.error} error: {row.reading}")
    print(f"{result.trained} runs trained, {result.reused} found in the store {store.home}, "
          f"{result.wall_seconds:.1f} s wall")
    if out is not None:
        g.write_results(str(out), result)
        print(f"wrote {out}")
    return 0
