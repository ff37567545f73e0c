"""Record plain and residual nets trained with and without BatchNorm (analysis/experiments/bnstudy.py):
the CIFAR ResNets of 8 and 20 layers and their plain twins on the 8×8 digits, each with its BatchNorms
and with every one replaced by the identity, for seeds 0-4, into results/bn_study.json.

    .venv/bin/python tools/make_bn_study.py                 # 2 depths x 4 arms x 5 seeds
    .venv/bin/python tools/make_bn_study.py --seeds 2 --depth 8 --out /tmp/bn.json

Training is deterministic for a given thread count (``--threads``, 1 by default); the nets are not kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from analysis.experiments import bnstudy

OUT = Path(__file__).resolve().parents[1] / "results" / "bn_study.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--depth", type=int, action="append", help="repeatable (6n+2); default: 8 and 20")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def say(what: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {what}", flush=True)

    rec = bnstudy.record(args.depth or bnstudy.DEPTHS, range(args.seeds), progress=say)
    rec["command"] = "python tools/make_bn_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    bnstudy.save(args.out, rec)
    say(f"wrote {args.out}")
    print(bnstudy.table(rec).to_string(index=False))
    print(bnstudy.comparisons(rec).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
