"""Record whether bf16 training keeps the shipped recipes' accuracy (analysis/studies/precision.py):
train every seed of each shipped ResNet recipe in fp32 and in bf16 autocast (channels-last on 2-D
nets), or read it from the cache folder, and write the test-error counts to results/precision.json.

    .venv/bin/python tools/make_precision.py --cache /tmp/precision_nets            # 4 recipes x seeds 0-4
    .venv/bin/python tools/make_precision.py --cache /tmp/precision_nets --net digits_resnet20 --seeds 5

The fp32 nets are named as the painters study names the same recipe's seeds (``<net>_s<seed>.pt``), so
one cache folder serves both. Training is deterministic for a given thread count (``--threads``, 1 by
default). The trained nets stay in the cache folder, not in the repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from analysis.studies import precision

OUT = Path(__file__).resolve().parents[1] / "results" / "precision.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="folder for the trained nets (read when present)")
    ap.add_argument("--net", action="append", choices=sorted(precision.NETS), help="repeatable; default: all")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-only", action="store_true", help="train (or find) the nets; record nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.net or list(precision.NETS)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()

    def say(what: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)

    if args.train_only:
        args.cache.mkdir(parents=True, exist_ok=True)
        for name in names:
            for arm in precision.ARMS:
                for s in seeds:
                    say(f"{name} {arm} seed {s}")
                    precision.seed_run(precision.NETS[name], arm, s, args.cache)
        return 0
    rec = precision.record(names, seeds, args.cache, progress=say)
    rec["command"] = "python tools/make_precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    precision.save(args.out, rec)
    say(f"wrote {args.out}")
    print(precision.table(rec).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
