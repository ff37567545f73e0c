"""Benchmark: the recorded variants grid (results/variants_<data>.json: its variants, depths, seeds and
recipe) trained in fp32 and again in bf16 autocast with channels-last, side by side in one run, each
into an empty run store, on the same executor (issue 25). Prints each side's wall time, the ratio, and
the test error of every run in both precisions.

The whole recorded digits grid is 44 runs (about 20 minutes a side on two quiet cores); ``--depths``
and ``--seeds`` take a part of it (the same part on both sides).

    .venv/bin/python benchmarks/bench_grid_precision.py [--data digits] [--depths 20] [--seeds 0] [--workers 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from analysis.core.machine import bf16_unit, describe
from analysis.core.meta import TrainConfig
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor
from analysis.store.runstore import RunStore
from analysis.studies.grid import Grid, run_grid

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "mnist1d"], default="digits")
    ap.add_argument("--depths", default=None, help="comma-separated part of the recorded depths (default: all)")
    ap.add_argument("--seeds", default=None, help="comma-separated part of the recorded seeds (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="1: in this process (2 threads); >1: a pool")
    args = ap.parse_args()
    if bf16_unit() is None:
        print("this CPU has no bf16 units: nothing to compare")
        return 0
    definition = json.loads((RESULTS / f"variants_{args.data}.json").read_text())["grid"]
    depths = tuple(int(d) for d in args.depths.split(",")) if args.depths else tuple(definition["depths"])
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else tuple(definition["seeds"])
    recipe = {k: v for k, v in definition["recipe"].items() if k != "seed"}
    fp32 = Grid(tuple(definition["variants"]), depths=depths, seeds=seeds, recipe=TrainConfig(**recipe),
                data=DataSpec(**definition["data"]))
    bf16 = dataclasses.replace(fp32, recipe=TrainConfig(**recipe, amp="bf16",
                                                        channels_last=args.data == "digits"))
    print(f"{args.data} grid: {len(fp32.runs())} runs ({len(fp32.variants)} variants x depths {depths} x seeds "
          f"{seeds}), recipe {recipe}; machine {describe()}")
    times, results = {}, {}
    with tempfile.TemporaryDirectory() as home:
        for name, grid in (("fp32", fp32), ("bf16 channels-last", bf16)):
            store = RunStore(os.path.join(home, name.split()[0]))
            t0 = time.perf_counter()
            if args.workers > 1:
                with PoolExecutor(args.workers) as ex:
                    out = run_grid(grid, store, ex)
            else:
                out = run_grid(grid, store, InProcessExecutor(threads=2))
            times[name] = time.perf_counter() - t0
            results[name] = out.results.set_index(["variant", "depth", "seed"])["test_error"]
            print(f"{name:20s}: {times[name]:7.1f} s")
    print(f"ratio fp32 / bf16 channels-last: {times['fp32'] / times['bf16 channels-last']:.2f}x")
    both = results["fp32"].to_frame("fp32 test error").join(results["bf16 channels-last"].rename("bf16 test error"))
    print(both.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
