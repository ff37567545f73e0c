"""Record the "painters" comparison (analysis/studies/painters.py): train every seed of every net of the
comparison (or read it from the cache folder), run each intact and with its first, middle and last layer
deleted, its middle pair swapped, its middle layer repeated and its middle pair in parallel, and write
the wrong counts per seed to results/painters.json.

    .venv/bin/python tools/make_painters.py --cache /tmp/painters_nets             # 8 nets x seeds 0-4
    .venv/bin/python tools/make_painters.py --cache /tmp/painters_nets --train-only --net digits_vit

Training is deterministic for a given thread count (one thread here: ``--threads``). The trained nets are
kept in the cache folder (about 1-5 MB each), not in the repository: the record holds the counts, and this
command rebuilds the nets behind them. ResNets use the shipped recipes (checkpoints/README.md), the
transformers the shipped transformers' recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from analysis.studies import painters

OUT = Path(__file__).resolve().parents[1] / "results" / "painters.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="folder for the trained nets (read when present)")
    ap.add_argument("--net", action="append", choices=sorted(painters.NETS), help="repeatable; default: all")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-only", action="store_true", help="train (or find) the nets; record nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.net or list(painters.NETS)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()

    def say(what: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)

    if args.train_only:
        args.cache.mkdir(parents=True, exist_ok=True)
        for name in names:
            for s in seeds:
                say(f"{name} seed {s}")
                painters.seed_net(painters.NETS[name], s, args.cache)
        return 0
    rec = painters.record(names, seeds, args.cache, progress=say)
    rec["command"] = "python tools/make_painters.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    painters.save(args.out, rec)
    say(f"wrote {args.out}")
    print(painters.table(rec).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
