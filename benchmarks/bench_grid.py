"""Benchmark: a 4-run experiment grid in 2 worker processes vs the same runs one after another in
this process, each into an empty run store of its own (issue 12).

Both sides use one torch thread per run (the pool sets it in each worker; the sequential side runs
under ``InProcessExecutor(threads=1)``), so they do the same arithmetic: the benchmark checks that
every run's weights (the sha256 of its state_dict) and per-epoch metrics are identical, and prints the
wall-time ratio sequential / pool (the goal on two cores is >= 1.5). The pool's time includes starting
its workers (a forkserver and a torch import in each, about 3 s), which is why runs of a few seconds
gain less (2 epochs, about 5 s a run: 1.44x; 4 epochs: 1.66x, measured on the 2-core machine). Other
processes on the machine share the cores: run it on a quiet machine for a clean ratio.

    .venv/bin/python benchmarks/bench_grid.py [--workers 2] [--epochs 4] [--depth 20] [--size 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from analysis.core.meta import TrainConfig
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor
from analysis.store.runstore import RunStore
from analysis.studies.grid import Grid, fingerprints, run_grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--size", type=int, default=16)
    args = ap.parse_args()
    grid = Grid(("original", "exclusive_gating"), depths=(args.depth,), seeds=(0, 1),
                recipe=TrainConfig(epochs=args.epochs, batch_size=64), data=DataSpec(size=args.size))
    print(f"grid: {len(grid.runs())} runs ({', '.join(grid.variants)} x depth {args.depth} x seeds 0, 1), "
          f"{args.epochs} epochs on digits {args.size} px; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as home:
        seq_store = RunStore(os.path.join(home, "sequential"))
        t0 = time.perf_counter()
        seq = run_grid(grid, seq_store, InProcessExecutor(threads=1))
        t_seq = time.perf_counter() - t0
        print(f"one after another, 1 process:   {t_seq:7.1f} s")
        pool_store = RunStore(os.path.join(home, "pool"))
        t0 = time.perf_counter()
        with PoolExecutor(args.workers) as ex:
            pool = run_grid(grid, pool_store, ex)
        t_pool = time.perf_counter() - t0
        print(f"{args.workers} worker processes:            {t_pool:7.1f} s")
        print(f"ratio sequential / pool: {t_seq / t_pool:.2f}x (goal >= 1.5x on 2 cores)")
        same = fingerprints(seq_store, seq) == fingerprints(pool_store, pool)
        print(f"identical weights and metrics in both: {'yes' if same else 'NO'}")
        print(pool.results[["variant", "depth", "seed", "test_error", "train_error", "seconds"]].to_string(index=False))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
