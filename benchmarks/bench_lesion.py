"""Benchmark: the full single-unit sweep of a shipped net, prefix reuse vs the straightforward loop
(every lesioned net run from the stem), in the same run, predictions compared. Target: at least 1.8x
faster with identical predictions. A shipped ResNet runs its blocks; a shipped transformer program
(``digits_vit``, ``mnist1d_transformer``) runs its residual units (attention and MLP of each block)
through the same engine.

    .venv/bin/python benchmarks/bench_lesion.py [--checkpoint digits_resnet56] [--repeats 3]
    .venv/bin/python benchmarks/bench_lesion.py --checkpoint digits_vit
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from analysis.arch.models import ResNet
from analysis.experiments import lesion
from analysis.experiments.chain import ProgramChain
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.store.programs import dataset_for_program, load_shipped, shipped_programs

TARGET = 1.8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="digits_resnet56")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.checkpoint in shipped_programs():
        ep, meta = load_shipped(args.checkpoint)
        net: ResNet | ProgramChain = ProgramChain(ep, name=args.checkpoint)
        d = dataset_for_program(meta)
        what = "units"
    else:
        c = load_checkpoint(shipped_checkpoints()[args.checkpoint])
        net, d, what = c.model, dataset_for(c.meta), "blocks"
    n = len(lesion.infos_of(net))
    seqs = [lesion.identity_sequence(n)] + [lesion.deletion(n, [i]) for i in range(n)]
    times: dict[bool, list[float]] = {True: [], False: []}
    preds = {}
    lesion.predict_sequences(net, d.x_test[:32], seqs[:2])  # warm-up
    for _ in range(args.repeats):
        for reuse in (True, False):
            t0 = time.perf_counter()
            preds[reuse] = lesion.predict_sequences(net, d.x_test, seqs, reuse_prefix=reuse)
            times[reuse].append(time.perf_counter() - t0)
    fast, slow = statistics.median(times[True]), statistics.median(times[False])
    same = torch.equal(preds[True], preds[False])
    err = (preds[True] != d.y_test[None]).float().mean(1)
    print(f"{args.checkpoint}: {n} {what}, {len(d.y_test)} test inputs, {len(seqs)} nets (intact + {n} lesions)")
    print(f"unit evaluations: prefix reuse {n + n * (n + 1) // 2}, straightforward {(n + 1) * n}")
    bound = (n + 1) * n / (n + n * (n + 1) // 2)
    print(f"unit evaluations saved: {bound:.2f}x (the 1.8x target is set for the 56-layer net's 27 blocks; "
          "fewer units leave less to reuse)")
    print(f"prefix reuse     : {fast:6.2f} s")
    print(f"straightforward  : {slow:6.2f} s")
    print(f"speed ratio      : {slow / fast:.2f}x (target >= {TARGET}x)   identical predictions: {same}")
    print(f"intact error {err[0]:.4f}; mean single-deletion error {err[1:].mean():.4f}, max {err[1:].max():.4f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
