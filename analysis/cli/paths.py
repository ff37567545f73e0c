"""``python -m analysis paths``: how much gradient the paths of each length carry through a residual
net (Veit et al. 2016), written to a CSV (in this process, or in shards on Ray)."""

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
from analysis.core.errors import ConfigError
from analysis.core.io import check_writable
from analysis.core.reporting import write_csv
from analysis.experiments import paths
from analysis.experiments.lesion import inputs_noun
from analysis.run import shard


def add_parser(sub: Subparsers) -> None:
    pa = sub.add_parser("paths", help="gradient by path length (Veit et al. 2016) of a residual net, as a CSV",
                        description="How much gradient paths of each length carry: for every length k, --samples "
                                    "random sets of k blocks (all of them where there are fewer) let the gradient "
                                    "through their residual branches and through the skips of the others; the norm "
                                    "of each input's gradient, averaged over the first --batch test inputs. The "
                                    "defaults are the Path ensemble page's (its stored results for the shipped "
                                    "nets: tools/make_path_results.py). Writes a CSV atomically.")
    pa.add_argument("--checkpoint", required=True,
                    help="a residual net: a .pt/.pth file (ours or a torchvision state_dict) or a shipped name, "
                         "e.g. digits_resnet20")
    add_data_args(pa, data_help=EVAL_DATA_HELP, size_help="image size (default: the net's own). For a bare state_dict, also the input size "
                                "the net is meant for")
    add_evaluation_args(pa, "refused: one path")
    pa.add_argument("--net", choices=["trained", "initialisation"], default="trained",
                    help="the checkpoint's weights, or the same architecture freshly initialised (seed 0)")
    pa.add_argument("--samples", type=whole, default=10, help="random block sets per path length (>= 1; default 10)")
    pa.add_argument("--batch", type=whole, default=64,
                    help="how many test inputs are measured: the first N of the test split (default 64)")
    pa.add_argument("--seed", type=whole, default=0, help="seed of the block sets, 0 to 2**63-1")
    pa.add_argument("--batch-size", type=whole, default=None,
                    help="inputs per forward/backward pass (default: all --batch inputs in one pass, as the page "
                         "measures); shards are cut at its multiples, and give bit-identical numbers to one "
                         "process with the same --batch-size")
    pa.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (on Ray: cuda, one GPU per shard)")
    add_shard_args(pa, "measurement")
    pa.add_argument("--out", required=True, help="results CSV (checked before measuring, written atomically)")
    pa.set_defaults(func=cmd_paths)


def cmd_paths(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    check_int("--resize", args.resize, 1, 8192)
    check_int("--max-per-class", args.max_per_class, 1, 10**9)
    paths.MeasureSettings(args.samples, args.batch, args.seed)  # samples, batch and seed checked before any work
    check_int("--seed", args.seed, 0, SEED_MAX)
    check_int("--batch-size", args.batch_size, 1, 10**6)
    return evaluate(args, out, _paths)


def _paths(args: argparse.Namespace, path: Path, out: Path) -> int:
    ck, data = evaluation_data(args, path)
    model = paths.initialised(ck.model) if args.net == "initialisation" else ck.model
    settings = paths.MeasureSettings(args.samples, args.batch, args.seed)
    paths.check_paths_net(model, data.x_test)  # a plain net or inputs of another kind: before any work
    if settings.batch > len(data.y_test):
        raise ConfigError(f"--batch {settings.batch} is larger than the test split ({len(data.y_test)} "
                          f"{inputs_noun(data.dims)})")
    x, y = data.x_test[: settings.batch], data.y_test[: settings.batch]
    sharded = args.executor == "ray" or args.shards > 1
    print(f"gradient by path length of {args.checkpoint} ({args.net}): {settings.describe()}"
          + (f"; {where(args, len(y), args.batch_size or 1)}" if sharded else ""), flush=True)
    bar = tqdm(total=1, unit="shard" if sharded else "path", desc="paths", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        if sharded:
            df = shard.sharded_gradient_by_length(model, x, y, samples=settings.samples, seed=settings.seed,
                                                  batch_size=args.batch_size, device=args.device,
                                                  shards=args.shards, executor=args.executor,
                                                  address=args.address, progress=progress)
        else:
            df = paths.gradient_by_length(model.to(args.device), x, y, samples=settings.samples, seed=settings.seed,
                                          batch_size=args.batch_size, progress=progress)
    finally:
        bar.close()
    df.insert(0, "net", args.net)
    df.insert(0, "checkpoint", str(args.checkpoint))
    write_csv(out, df)
    print(df[["length", "mean", "std", "samples", "total (rel.)"]].to_string(index=False))
    lo, hi = paths.effective_range(df)
    print(f"90 % of the total gradient comes from paths of length {lo} to {hi} (of {len(df) - 1} blocks)")
    print(f"wrote {out} ({len(df)} rows)")
    return 0
