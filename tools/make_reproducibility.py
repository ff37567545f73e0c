"""Measure how reproducible the recorded variants grid is: train some of its runs again in a fresh run
store with the thread count they were recorded with (expected bit-identical) and with another (a
changed reduction order, as another machine gives), into results/reproducibility.json.

    .venv/bin/python tools/make_reproducibility.py   # original, depth 20: seeds 0-1 at 1 thread, 0-4 at 2
    .venv/bin/python tools/make_reproducibility.py --seeds 0 --threads 1 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from analysis.core.machine import describe
from analysis.studies import grid as g
from analysis.studies import repro

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--grid", type=Path, default=ROOT / "results" / "variants_digits.json")
    ap.add_argument("--variant", default="original")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to rerun with")
    ap.add_argument("--same-seeds", type=int, default=2,
                    help="at the recorded thread count rerun only the first N seeds (they are expected identical)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "reproducibility.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results, _, meta = g.load_results(str(args.grid))
    definition = meta["grid"]
    rows = results[(results["variant"] == args.variant) & (results["depth"] == args.depth)
                   & (results["status"] == "complete") & results["seed"].isin(args.seeds)]
    missing = sorted(set(args.seeds) - {int(x) for x in rows["seed"]})
    if missing:  # checked before any training: a seed the file has no finished run of cannot be compared
        raise SystemExit(f"{args.grid}: no finished {args.variant} run at depth {args.depth} for seed(s) {missing}")
    machine = meta.get("machine")
    if not isinstance(machine, dict) or not isinstance(machine.get("threads"), int):
        raise SystemExit(f"{args.grid}: the file does not record the threads its runs trained with (recorded before "
                         "the machine record); record the grid again to measure its reproducibility")
    recorded_threads = int(machine["threads"])
    test_size = meta.get("test_size") or g.test_size(definition)
    if not test_size:
        raise SystemExit(f"{args.grid}: the test split's size is not known (its data cannot be loaded here)")
    reruns = []
    for threads in args.threads:
        seeds = args.seeds[:args.same_seeds] if threads == recorded_threads else args.seeds
        with tempfile.TemporaryDirectory() as tmp:
            new = repro.rerun(definition, args.variant, args.depth, seeds, threads, Path(tmp) / "store",
                              progress=lambda s: print(f"[{time.perf_counter() - t0:7.1f} s] {s}", flush=True))
        reruns.append({"threads": threads, "machine": describe(threads),
                       "runs": [{"seed": int(r.seed), "test_error": float(r.test_error),
                                 "train_error": float(r.train_error)} for r in new.itertuples()]})
    record = {"grid_file": str(args.grid.relative_to(ROOT)) if args.grid.is_relative_to(ROOT) else str(args.grid),
              "grid_id": meta.get("grid_id"), "variant": args.variant, "depth": args.depth,
              "recipe": definition["recipe"], "data": definition["data"],
              "test_size": int(test_size),
              "recorded_threads": recorded_threads, "recorded_machine": meta.get("machine"),
              "recorded": [{"seed": int(r.seed), "test_error": float(r.test_error)} for r in rows.itertuples()],
              "reruns": reruns, "seconds": round(time.perf_counter() - t0, 1),
              "command": "python tools/make_reproducibility.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    repro.save(args.out, record)
    print(repro.table(record).to_string(index=False))
    for line in repro.statement(record):
        print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
