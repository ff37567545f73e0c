"""``python -m analysis lesion``: delete or reorder blocks of a trained net and write the test error
of each lesion to a CSV (in this process, or in shards on Ray). The net is a checkpoint (a ResNet) or
a torch.export program (``.pt2``, with its weights) cut into its residual units or, with
``--granularity layers``, its outermost repeated container's layers
(:mod:`analysis.experiments.programlesion`). A program file's data must be named with ``--data``; a
shipped program (``--checkpoint digits_vit``) is evaluated on its own, from its metadata."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.arch.models import ResNet
from analysis.cli.common import (
    EVAL_DATA_HELP,
    EVAL_OPTIONS,
    SEED_MAX,
    Interrupted,
    Stop,
    Subparsers,
    add_data_args,
    add_evaluation_args,
    add_shard_args,
    check_data_options,
    check_int,
    check_program_options,
    check_shard_options,
    evaluate,
    evaluation_data,
    program_test_data,
    state,
    where,
    whole,
)
from analysis.core.errors import ConfigError
from analysis.core.io import check_writable
from analysis.core.reporting import write_csv
from analysis.data.data import Dataset
from analysis.experiments import lesion, lesionreadings, programlesion
from analysis.experiments import precision as prec
from analysis.experiments.chain import ChainError, LayerChain
from analysis.experiments.evaluation import check_request
from analysis.run import shard

PROGRAM_DATA_HELP = ("; a .pt2 program carries no metadata, so --data is required for one and its inputs are "
                     "normalised with the dataset's own statistics (a program file stores none); a shipped "
                     "program (e.g. digits_vit) is evaluated on its own data, from the metadata it ships with")


def add_parser(sub: Subparsers) -> None:
    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV atomically.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict), a shipped name, e.g. digits_resnet56, "
                         "a shipped program's name, e.g. digits_vit, or a torch.export program with its weights "
                         "(.pt2, from torch.export.save), swept over its residual units or layers (--granularity)")
    add_data_args(le, data_help=EVAL_DATA_HELP + PROGRAM_DATA_HELP,
                  size_help="image size (default: the net's own; a .pt2 program's: its input's). For a bare state_dict, also the "
                                           "input size the net is meant for (default 224 for an ImageNet stem, "
                                           "32 for a CIFAR stem)")
    add_evaluation_args(le, "no shortcuts")
    le.add_argument("--experiment", choices=list(lesion.SWEEP_KINDS), default="single")
    le.add_argument("--granularity", choices=list(programlesion.GRANULARITIES), default=None,
                    help="a program's: units (each residual unit) or layers (each module of its outermost repeated "
                         "container, e.g. blocks.0 ... blocks.N; deleted, a layer passes its input on). Default: "
                         "units where the program has residual units, else layers. A checkpoint's blocks are its units")
    le.add_argument("--samples", type=whole, default=5,
                    help="random samples per k (k) or per number of swaps (reorder), >= 1: read by the random "
                         "sweeps k and reorder only; single, swap, repeat and parallel ignore it")
    le.add_argument("--seed", type=whole, default=0, help="0 to 2**63-1 (the random sweeps k and reorder only)")
    le.add_argument("--batch-size", type=whole, default=256, help=">= 1")
    le.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (on Ray: cuda, one GPU per shard)")
    add_precision_arg(le, "sweep")
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
    lesion.check_precision(args.precision, args.device)  # bf16 on a CPU without bf16 units: before any file is read
    shipped = shipped_program(str(args.checkpoint))
    if shipped is None:
        return evaluate(args, out, _lesion)
    # a shipped program by name: the checks evaluate() makes, then its own data (program_data)
    check_request(kind=args.data, path=args.data_path, size=args.size, resize=args.resize,
                  max_per_class=args.max_per_class, seed=args.split_seed, options=EVAL_OPTIONS)
    check_shard_options(args)
    try:
        return _lesion(args, shipped, out)
    except KeyboardInterrupt as exc:
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), f"no CSV written; {state(out)}") from None


def add_precision_arg(p: argparse.ArgumentParser, what: str) -> None:
    """--precision of ``lesion`` and ``paths``: the arithmetic ``what`` (a sweep, a measurement) runs in."""
    p.add_argument("--precision", choices=list(prec.EVAL_PRECISIONS), default="fp32",
                   help=f"fp32 (default; every stored result's) or bf16: the {what} runs under bf16 autocast, on "
                        "CUDA or on a CPU with bf16 matrix units (AMX or AVX-512 BF16; refused elsewhere). "
                        "Predictions may differ from fp32's: results/bf16_eval.json has the measured count for "
                        "the shipped nets")


def add_precision_column(df: pd.DataFrame, precision: str) -> None:
    """A ``precision`` column first in a table evaluated in bf16, so its CSV says so; an fp32 table is
    left as it always was."""
    if precision != "fp32":
        df.insert(0, "precision", precision)


def shipped_program(name: str) -> Path | None:
    """The file of a shipped program named ``name`` (analysis.store.programs), None for any other name
    (a shipped checkpoint's name is a checkpoint's)."""
    from analysis.store.checkpoints import shipped_checkpoints
    from analysis.store.programs import shipped_programs

    return None if name in shipped_checkpoints() else shipped_programs().get(name)


def _lesion(args: argparse.Namespace, path: Path, out: Path) -> int:
    sharded = args.executor == "ray" or args.shards > 1
    model: ResNet | programlesion.ProgramCut
    if programlesion.is_program(path):  # sharded: opened on the CPU here, on its device in each shard
        model, data = program_data(args, path, "cpu" if sharded else args.device)
    else:
        if args.granularity == "layers":
            raise ConfigError(f"--granularity layers cuts a program (.pt2) at its repeated modules; the blocks of "
                              f"{args.checkpoint} are its units")
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
                                     progress=progress, precision=args.precision)
        else:
            # a program was opened on the device already
            df = lesion.run_sweep(args.experiment, model.to(args.device) if isinstance(model, ResNet) else model,
                                  data.x_test, data.y_test,
                                  samples=args.samples, seed=args.seed, device=args.device,
                                  batch_size=args.batch_size, progress=progress, precision=args.precision)
    finally:
        bar.close()
    add_precision_column(df, args.precision)
    df.insert(0, "checkpoint", str(args.checkpoint))
    write_csv(out, df)
    if args.experiment == "single":
        print(df[["deleted", "downsample", "error"]].to_string(index=False))
    elif args.experiment in lesionreadings.POSITION_SWEEPS:  # one row per position: no k to summarise by
        print(df[["units", "stage", "error"]].to_string(index=False))
        print(lesionreadings.position_reading(df, args.experiment, len(data.y_test)))
        for line in df.attrs.get("skipped", []):
            print(f"skipped {line}")
    else:
        print(lesion.summarise(df).to_string(index=False))
    print(f"wrote {out} ({len(df)} rows)")
    return 0


def program_data(args: argparse.Namespace, path: Path, device: str) -> tuple[programlesion.ProgramCut, Dataset]:
    """A ``.pt2`` program cut at ``--granularity`` on ``device`` and its test data: a shipped program's
    own (from its metadata) unless ``--data`` names other data, which any other program needs; checked
    to fit it (input shape, classes) before any sweep. Which data, how normalised and which cut are
    printed first."""
    from analysis.store import programs

    name = str(args.checkpoint)
    shipped = shipped_program(name) is not None
    own = args.data is None and shipped
    if own:
        for option, value in (("--data-path", args.data_path), ("--size", args.size), ("--resize", args.resize),
                              ("--max-per-class", args.max_per_class), ("--split-seed", args.split_seed or None)):
            if value is not None:
                raise ConfigError(f"{option} goes with --data: {name} is evaluated on its own data, from its "
                                  "metadata, unless --data names other data")
    check_program_options(args, name, own)  # before the file is read
    try:
        if shipped:
            ep, meta = programs.load_shipped(name)
            cuts = programlesion.cut(programlesion.on_device(ep, device), name)
        else:
            cuts = programlesion.open_cuts(path, name, device)
        chain = cuts.chain(args.granularity)
    except ChainError as exc:  # no way to cut it applies (no residual unit, no repeated layers), or not this one
        raise ChainError(f"{exc} (`python -m analysis units --model {name}` lists its units).") from None
    data = program_test_data(args, chain, name, meta if own else None)
    print(programlesion.describe_own(data, name) if own else programlesion.describe(data, name), flush=True)
    if isinstance(chain, LayerChain):
        print(f"{name}: swept over its {chain.n} layers, {programlesion.layers_text(cuts.layers)}"
              + ("" if args.granularity else f": {cuts.refused['units']}"), flush=True)
    return chain, data
