"""Measure how many test predictions bf16 evaluation changes on every shipped net, into results/bf16_eval.json.

Each shipped checkpoint (``checkpoints/*.pt``, its test data rebuilt from its metadata) and program
(``checkpoints/*.pt2``, its data from the metadata in its archive) is evaluated on its own test split in
fp32 and under bf16 autocast (analysis.experiments.precisioneval.compare): the predictions that change,
the correct ones in each precision and the largest logit difference. The file records the machine it
ran on (CPU, bf16 unit, threads, torch) and this command; the Lesion lab and the Path ensemble page
quote a net's count when bf16 is chosen, for the version of the file it was measured on (its sha256).
Refused on a CPU without bf16 units. Rerun after retraining a shipped net.

    .venv/bin/python tools/make_bf16_eval.py                          # every shipped net
    .venv/bin/python tools/make_bf16_eval.py --only digits_resnet20 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from analysis.core.machine import describe
from analysis.core.meta import now, versions
from analysis.experiments import precisioneval
from analysis.experiments.lesion import check_precision
from analysis.store import programs
from analysis.store.checkpoints import shipped_checkpoints


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", action="append", help="checkpoint or program stem (repeatable); default: every shipped net")
    ap.add_argument("--out", type=Path, default=precisioneval.RESULTS, help=f"default {precisioneval.RESULTS_NAME}")
    args = ap.parse_args(argv)
    check_precision("bf16", "cpu")  # a CPU without bf16 units: refused before anything is opened
    files = {**shipped_checkpoints(), **programs.shipped_programs()}
    unknown = sorted(set(args.only or ()) - set(files))
    if unknown:
        ap.error(f"no shipped net named {', '.join(unknown)} (shipped: {', '.join(files)})")
    nets = []
    for name, file in files.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        rec = precisioneval.measure_file(file)
        nets.append(rec)
        print(f"{name}: bf16 changes {rec['changed']} of {rec['n']} predictions (correct {rec['fp32_correct']} "
              f"fp32, {rec['bf16_correct']} bf16; max |logit diff| {rec['max_abs_logit_diff']:.3g}), "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    command = "python tools/make_bf16_eval.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    out = precisioneval.write_results(args.out, nets, machine=describe(torch.get_num_threads()), command=command, created=now(),
                                      versions=versions())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # the app evaluates on one intra-op thread per session (ui/runtime.py)
    raise SystemExit(main())
