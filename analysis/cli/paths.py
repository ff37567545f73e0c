"""``python -m analysis paths``: how much gradient the paths of each length carry through a residual
net (Veit et al. 2016), written to a CSV (in this process, or in shards on Ray). The net is a
checkpoint (a ResNet's blocks) or a torch.export program (``.pt2``, with its weights) cut into its
residual units: a shipped one by name (its data rebuilt from its metadata), or a file, whose data
must be named with ``--data`` as for ``lesion`` (:mod:`analysis.experiments.programlesion`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from analysis.arch.graphnet import open_program
from analysis.arch.models import ResNet
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
    check_program_options,
    evaluate,
    evaluation_data,
    program_test_data,
    where,
    whole,
)
from analysis.cli.lesion import add_precision_arg, add_precision_column
from analysis.core.errors import ConfigError
from analysis.core.io import check_writable
from analysis.core.reporting import write_csv
from analysis.data.data import Dataset
from analysis.experiments import paths, programlesion
from analysis.experiments.chain import ChainError, ProgramChain, ProgramGraph
from analysis.experiments.lesion import check_precision, inputs_noun
from analysis.run import shard
from analysis.store import programs
from analysis.store.checkpoints import shipped_checkpoints

PROGRAM_DATA_HELP = ("; a .pt2 program file carries no metadata, so --data is required for one and its inputs are "
                     "normalised with the dataset's own statistics (a shipped program, e.g. digits_vit, is measured "
                     "on its own data)")


def add_parser(sub: Subparsers) -> None:
    pa = sub.add_parser("paths", help="gradient by path length (Veit et al. 2016) of a residual net, as a CSV",
                        description="How much gradient paths of each length carry: for every length k, --samples "
                                    "random sets of k blocks (all of them where there are fewer) let the gradient "
                                    "through their residual branches and through the skips of the others; the norm "
                                    "of each input's gradient, averaged over the first --batch test inputs. The "
                                    "defaults are the Path ensemble page's (its stored results for the shipped "
                                    "nets: tools/make_path_results.py). Writes a CSV atomically.")
    pa.add_argument("--checkpoint", required=True,
                    help="a residual net: a .pt/.pth file (ours or a torchvision state_dict), a shipped name, "
                         "e.g. digits_resnet20 or digits_vit, or a torch.export program with its weights (.pt2), "
                         "measured over its residual units")
    add_data_args(pa, data_help=EVAL_DATA_HELP + PROGRAM_DATA_HELP,
                  size_help="image size (default: the net's own; a .pt2 program's: its input's). For a bare "
                            "state_dict, also the input size the net is meant for")
    add_evaluation_args(pa, "refused: one path")
    pa.add_argument("--net", choices=["trained", "initialisation"], default="trained",
                    help="the checkpoint's weights, or the same architecture freshly initialised (seed 0; not for "
                         "a program, whose file holds trained weights and no initialiser)")
    pa.add_argument("--samples", type=whole, default=10, help="random block sets per path length (>= 1; default 10)")
    pa.add_argument("--batch", type=whole, default=64,
                    help="how many test inputs are measured: the first N of the test split (default 64)")
    pa.add_argument("--seed", type=whole, default=0, help="seed of the block sets, 0 to 2**63-1")
    pa.add_argument("--batch-size", type=whole, default=None,
                    help="inputs per forward/backward pass (default: all --batch inputs in one pass, as the page "
                         "measures); shards are cut at its multiples, and give bit-identical numbers to one "
                         "process with the same --batch-size")
    pa.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (on Ray: cuda, one GPU per shard)")
    add_precision_arg(pa, "measurement")
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
    check_precision(args.precision, args.device)  # bf16 on a CPU without bf16 units: before any file is read
    # a shipped program's name is its file (evaluate finds checkpoints' names and paths only)
    shipped = programs.shipped_programs().get(args.checkpoint)
    label = str(args.checkpoint)
    if shipped is not None and args.checkpoint not in shipped_checkpoints():
        args = argparse.Namespace(**{**vars(args), "checkpoint": str(shipped)})
    return evaluate(args, out, lambda a, path, o: _paths(a, path, o, label))


def _paths(args: argparse.Namespace, path: Path, out: Path, label: str) -> int:
    sharded = args.executor == "ray" or args.shards > 1
    model: ResNet | ProgramChain
    if programlesion.is_program(path):  # sharded: opened on the CPU here, on its device in each shard
        model, data = program_data(args, path, label, "cpu" if sharded else args.device)
    else:
        ck, data = evaluation_data(args, path)
        model = paths.initialised(ck.model) if args.net == "initialisation" else ck.model
    settings = paths.MeasureSettings(args.samples, args.batch, args.seed)
    paths.check_paths_net(model, data.x_test)  # a plain net or inputs of another kind: before any work
    if settings.batch > len(data.y_test):
        raise ConfigError(f"--batch {settings.batch} is larger than the test split ({len(data.y_test)} "
                          f"{inputs_noun(data.dims)})")
    x, y = data.x_test[: settings.batch], data.y_test[: settings.batch]
    print(f"gradient by path length of {label} ({args.net}): {settings.describe()}"
          + (f", in {args.precision}" if args.precision != "fp32" else "")
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
                                                  address=args.address, progress=progress, precision=args.precision)
        else:  # a program was opened on the device already
            df = paths.gradient_by_length(model.to(args.device) if isinstance(model, ResNet) else model, x, y,
                                          samples=settings.samples, seed=settings.seed,
                                          batch_size=args.batch_size, progress=progress, precision=args.precision)
    finally:
        bar.close()
    add_precision_column(df, args.precision)
    df.insert(0, "net", args.net)
    df.insert(0, "checkpoint", label)
    write_csv(out, df)
    print(df[["length", "mean", "std", "samples", "total (rel.)"]].to_string(index=False))
    lo, hi = paths.effective_range(df)
    noun = "blocks" if isinstance(model, ResNet) else "units"
    print(f"90 % of the total gradient comes from paths of length {lo} to {hi} (of {len(df) - 1} {noun})")
    print(f"wrote {out} ({len(df)} rows)")
    return 0


def program_data(args: argparse.Namespace, path: Path, name: str,
                 device: str) -> tuple[ProgramChain, Dataset]:
    """A ``.pt2`` program cut into units on ``device`` and its test data: a shipped program's own (from its
    metadata) unless ``--data`` names other data; a file's, named by ``--data`` (it carries no metadata),
    checked to fit it (input shape, classes) before any work; which data is printed first."""
    shipped = programs.shipped_programs().get(name)
    own = shipped is not None and args.data is None
    check_program_options(args, name, own)  # before the file is read
    if args.net == "initialisation":
        raise ConfigError(f"--net initialisation: {name} is a program, whose file holds its trained weights only "
                          "(no initialiser to draw fresh ones from); measure --net trained")
    meta = None
    try:
        if own:  # opened once: its metadata names its data
            ep, meta = programs.load_shipped(path)
            chain = programlesion.by_units(programlesion.on_device(ep, device), name)
        else:
            chain = programlesion.open_chain(path, name, device)
    except ChainError as exc:
        if not open_program(programlesion.load(path, name), name=name).units:
            raise ChainError(f"{name} is a plain net: it has no residual unit, so a single path; the path "
                             "decomposition needs shortcuts") from None
        raise ChainError(f"{exc}. The path decomposition runs the net as one chain of units (`python -m analysis "
                         f"units --model {name}` lists them).") from None
    if isinstance(chain, ProgramGraph):  # deletable units, but not one chain for a path to follow
        raise ChainError(f"{chain.why}. The path decomposition runs the net as one chain of units (`python -m "
                         f"analysis units --model {name}` lists them).")
    data = program_test_data(args, chain, name, meta)
    print(programlesion.describe(data, name) if not own else
          f"{name}: measured on its own data, {data.name} ({len(data.y_test):,} test inputs), rebuilt from the "
          "metadata it ships with", flush=True)
    return chain, data
