"""``python -m analysis lesion``: delete or reorder blocks of a trained net and write the test error
of each lesion to a CSV (in this process, or in shards on Ray)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from analysis.cli.common import (
    EVAL_DATA_HELP,
    SEED_MAX,
    Stop,
    Subparsers,
    add_data_args,
    add_evaluation_args,
    add_shard_args,
    check_data_options,
    check_int,
    evaluate,
    evaluation_data,
    where,
    whole,
)
from analysis.core.io import check_writable
from analysis.core.reporting import write_csv
from analysis.experiments import lesion
from analysis.run import shard


def add_parser(sub: Subparsers) -> None:
    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV atomically.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict) or a shipped name, e.g. digits_resnet56")
    add_data_args(le, data_help=EVAL_DATA_HELP, size_help="image size (default: the net's own). For a bare state_dict, also the "
                                           "input size the net is meant for (default 224 for an ImageNet stem, "
                                           "32 for a CIFAR stem)")
    add_evaluation_args(le, "no shortcuts")
    le.add_argument("--experiment", choices=list(lesion.SWEEP_KINDS), default="single")
    le.add_argument("--samples", type=whole, default=5, help="random samples per k (k and reorder), >= 1")
    le.add_argument("--seed", type=whole, default=0, help="0 to 2**63-1")
    le.add_argument("--batch-size", type=whole, default=256, help=">= 1")
    le.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (on Ray: cuda, one GPU per shard)")
    add_shard_args(le, "sweep")
    le.add_argument("--out", required=True, help="results CSV (checked before the sweep, written atomically)")
    le.set_defaults(func=cmd_lesion)


def cmd_lesion(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    check_int("--resize", args.resize, 1, 8192)
    check_int("--max-per-class", args.max_per_class, 1, 10**9)
    check_int("--samples", args.samples, 1, 100_000)  # refused for every sweep: a typed value must mean something
    lesion.check_sweep_options(args.experiment, samples=args.samples, seed=args.seed, batch_size=args.batch_size)
    check_int("--seed", args.seed, 0, SEED_MAX)
    return evaluate(args, out, _lesion)


def _lesion(args: argparse.Namespace, path: Path, out: Path) -> int:
    ck, data = evaluation_data(args, path)
    sharded = args.executor == "ray" or args.shards > 1
    if sharded:
        print(f"{args.experiment} sweep on {len(data.y_test)} test inputs: "
              f"{where(args, len(data.y_test), args.batch_size)}", flush=True)
    bar = tqdm(total=1, unit="shard" if sharded else "seq·batch", desc=f"{args.experiment} sweep", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        if sharded:  # the net travels to every shard as its weights; this process keeps it on the CPU
            df = shard.sharded_sweep(args.experiment, ck.model, data.x_test, data.y_test, samples=args.samples,
                                     seed=args.seed, batch_size=args.batch_size, device=args.device,
                                     shards=args.shards, executor=args.executor, address=args.address,
                                     progress=progress)
        else:
            df = lesion.run_sweep(args.experiment, ck.model.to(args.device), data.x_test, data.y_test,
                                  samples=args.samples, seed=args.seed, device=args.device,
                                  batch_size=args.batch_size, progress=progress)
    finally:
        bar.close()
    df.insert(0, "checkpoint", str(args.checkpoint))
    write_csv(out, df)
    if args.experiment == "single":
        print(df[["deleted", "downsample", "error"]].to_string(index=False))
    else:
        print(lesion.summarise(df).to_string(index=False))
    print(f"wrote {out} ({len(df)} rows)")
    return 0
