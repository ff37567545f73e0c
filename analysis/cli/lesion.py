"""``python -m analysis lesion``: delete or reorder blocks of a trained net and write the test error
of each lesion to a CSV (in this process, or in shards on Ray). The net is a checkpoint (a ResNet) or
a torch.export program (``.pt2``, with its weights) cut into its residual units
(:mod:`analysis.experiments.programlesion`), whose data must be named with ``--data``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from analysis.arch.models import ResNet
from analysis.cli.common import (
    EVAL_DATA_HELP,
    EVAL_OPTIONS,
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
from analysis.core.errors import ConfigError
from analysis.core.io import check_writable
from analysis.core.reporting import write_csv
from analysis.data.data import Dataset
from analysis.experiments import evaluation, lesion, programlesion
from analysis.experiments.chain import ChainError
from analysis.run import shard

PROGRAM_DATA_HELP = ("; a .pt2 program carries no metadata, so --data is required for one and its inputs are "
                     "normalised with the dataset's own statistics (a program file stores none)")


def add_parser(sub: Subparsers) -> None:
    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV atomically.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict), a shipped name, e.g. digits_resnet56, or "
                         "a torch.export program with its weights (.pt2, from torch.export.save), swept over its "
                         "residual units when they form one chain")
    add_data_args(le, data_help=EVAL_DATA_HELP + PROGRAM_DATA_HELP,
                  size_help="image size (default: the net's own; a .pt2 program's: its input's). For a bare state_dict, also the "
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
    sharded = args.executor == "ray" or args.shards > 1
    model: ResNet | programlesion.OpenedChain
    if programlesion.is_program(path):  # sharded: opened on the CPU here, on its device in each shard
        model, data = program_data(args, path, "cpu" if sharded else args.device)
    else:
        ck, data = evaluation_data(args, path)
        model = ck.model
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
            df = shard.sharded_sweep(args.experiment, model, data.x_test, data.y_test, samples=args.samples,
                                     seed=args.seed, batch_size=args.batch_size, device=args.device,
                                     shards=args.shards, executor=args.executor, address=args.address,
                                     progress=progress)
        else:
            # a program was opened on the device already
            df = lesion.run_sweep(args.experiment, model.to(args.device) if isinstance(model, ResNet) else model,
                                  data.x_test, data.y_test,
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


def program_data(args: argparse.Namespace, path: Path, device: str) -> tuple[programlesion.OpenedChain, Dataset]:
    """A ``.pt2`` program cut into units on ``device`` and the test data named by ``--data``, checked to
    fit it (input shape, classes) before any sweep; which data, and how normalised, is printed first."""
    name = str(args.checkpoint)
    programlesion.check_kind(args.data, name, EVAL_OPTIONS)  # before the file is read
    for option, value in (("--plain/--residual", args.plain), ("--assume", args.assume)):
        if value is not None:
            raise ConfigError(f"{option} is for a bare state_dict; {name} is a program, whose graph says what it "
                              "computes")
    try:
        chain = programlesion.open_chain(path, name, device)
    except ChainError as exc:
        # every sweep here, single deletions included, runs the net as one chain of units
        also = (" The lesion engine runs even single deletions through that chain, so none can be run here for "
                "this net" if args.experiment == "single" else
                f" The {args.experiment} sweep runs the net as one chain of units, so it cannot be run for this net")
        raise ChainError(f"{exc}.{also} (`python -m analysis units --model {name}` lists its units).") from None
    choice = programlesion.choose(chain, args.data, path=args.data_path, size=args.size, resize=args.resize,
                                  max_per_class=args.max_per_class, seed=args.split_seed, name=name,
                                  options=EVAL_OPTIONS)
    data = evaluation.load(choice)
    programlesion.check_fits(chain, data, name)
    print(programlesion.describe(data, name), flush=True)
    return chain, data
