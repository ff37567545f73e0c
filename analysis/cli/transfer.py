"""``python -m analysis transfer``: a trained net's stages reused on the digits 5-9 (or a folder),
mode by mode (scratch, frozen, fine-tuned, ...), with a linear probe per stage; the first signal
cancels, finished runs stay stored."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.cli.common import (
    SEED_MAX,
    Interrupted,
    Stop,
    Subparsers,
    add_precision_args,
    check_int,
    checkpoint_path,
    interrupted,
    real,
    results_path,
    state,
    whole,
)
from analysis.core import stats
from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.io import check_writable
from analysis.experiments.precision import EVAL_PRECISIONS
from analysis.experiments.train import check_device
from analysis.store.checkpoints import (
    SHIPPED_DIR,
    AmbiguousCheckpointError,
    Checkpoint,
    load_checkpoint,
    save_checkpoint_or_rescue,
)
from analysis.store.runstore import RunStore
from analysis.studies import transfer as tr

#: The shipped transfer source: a cifar_resnet20 trained on the digits 0-4 (checkpoints/transfer/).
TRANSFER_SOURCE = "digits04_resnet20"


def add_parser(sub: Subparsers) -> None:
    tf = sub.add_parser("transfer", help="reuse a trained net on the digits 5-9 (MNIST-1D's 5-9 for a 1-D net): scratch vs frozen vs fine-tuned",
                        description="Transfer learning, mode by mode: the source net's stages copied, frozen or "
                                    "fine-tuned on the digits 5-9 (a 1-D source: MNIST-1D's classes 5-9) with few labelled "
                                    "images per class, every mode with the same SGD recipe and seeds, tested on every "
                                    "5-9 test image; then a linear "
                                    "probe per stage. The head is always new (the target's 5 classes). Runs the "
                                    "run store already holds are not retrained; each run is stored as it finishes, "
                                    "so Ctrl-C / SIGTERM keep every finished run and the same command later trains "
                                    "only the rest.")
    tf.add_argument("--source", default=TRANSFER_SOURCE,
                    help=f"the source net: a .pt/.pth file or a shipped name (default {TRANSFER_SOURCE}, "
                         "checkpoints/transfer/digits04_resnet20.pt: cifar_resnet20 trained on the digits 0-4; "
                         "mnist1d04_resnet1d20: resnet1d_20 trained on MNIST-1D's classes 0-4)")
    which = tf.add_mutually_exclusive_group()
    which.add_argument("--modes", nargs="+", default=None,
                       help="scratch, frozen (fixed feature extractor), finetune, last_k (fine-tune the last k "
                            "stages), first_k_frozen / first_k_finetuned (transfer the first k stages); default "
                            "scratch frozen finetune")
    which.add_argument("--default-setups", action="store_true",
                       help="the default comparison (11 setups for 3 stages): the named modes, the last stage "
                            "fine-tuned, the first-k sweep frozen and fine-tuned, BN statistics frozen while "
                            "fine-tuning, the feature extractor under target and no normalisation")
    tf.add_argument("--k", nargs="+", type=whole, default=None,
                    help="stages for last_k / first_k_* (0 .. the source's stages; several values sweep; default 1)")
    tf.add_argument("--bn", choices=["update", "frozen"], default=None,
                    help="copied, trainable BatchNorms: update their running statistics (default) or keep the "
                         "source's")
    tf.add_argument("--norm", choices=["source", "target", "none"], default=None,
                    help="normalise the target's inputs with the source's statistics (default), the labelled "
                         "images' own, or not at all")
    tf.add_argument("--target-path", default=None,
                    help="a local ImageFolder tree as the target instead of the digits 5-9 (train/ + val/ folders, "
                         "or a seeded split); e.g. with a torchvision ImageNet state_dict as --source, which is "
                         "normalised with ImageNet's statistics")
    tf.add_argument("--size", type=whole, default=224, help="ImageFolder target: center crop (default 224)")
    tf.add_argument("--resize", type=whole, default=256,
                    help="ImageFolder target: shorter side before the crop (default 256, torchvision's eval transform)")
    tf.add_argument("--labels", nargs="+", default=["1", "5", "10", "20", "all"],
                    help="labelled training images per class, 'all' for every one (default 1 5 10 20 all)")
    tf.add_argument("--seeds", nargs="+", type=whole, default=[0, 1, 2], help="seeds (default 0 1 2)")
    tf.add_argument("--steps", type=whole, default=300,
                    help="SGD steps per run, the same for every labels setting (rounded up to whole epochs)")
    tf.add_argument("--batch-size", type=whole, default=32, help="1 to 1,000,000 (default 32)")
    tf.add_argument("--lr", type=real, default=0.02, help="learning rate, in (0, 10] (default 0.02, cosine)")
    tf.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    add_precision_args(tf)
    tf.add_argument("--probe-precision", choices=list(EVAL_PRECISIONS), default="fp32",
                    help="the linear probe's features computed in fp32 (default) or bf16 (a CPU with bf16 units)")
    tf.add_argument("--store", default=None, help="run store folder (default: $RESNET_LENS_HOME or ~/.resnet-lens)")
    tf.add_argument("--keep-dir", default=None,
                    help="save every net trained now as a checkpoint in this folder (open it on any page)")
    tf.add_argument("--out", default=None,
                    help="results file: .json (runs, learning curves, probe; the page reads it) or .csv (one row "
                         "per run), written atomically")
    tf.set_defaults(func=cmd_transfer)


def transfer_source(name: str) -> Path:
    """A shipped transfer source (checkpoints/transfer/<name>.pt), any shipped checkpoint, or a path."""
    if not name.strip() or "\0" in name:
        raise CheckpointError(f"--source {name!r}: give a .pt/.pth file or a shipped name, e.g. {TRANSFER_SOURCE}")
    shipped = {p.stem: p for p in sorted((SHIPPED_DIR / "transfer").glob("*.pt"))}
    return shipped[name] if name in shipped else checkpoint_path(name)


def transfer_labels(values: Sequence[str]) -> tuple[int | None, ...]:
    """--labels 1 5 10 20 all: labelled training images per class, 'all' for every one."""
    out: list[int | None] = []
    for v in values:
        if v.strip().lower() == "all":
            out.append(None)
        elif re.fullmatch(r"[0-9]+", v.strip()) and int(v) >= 1:  # ASCII digits: int() also reads '١٢'
            out.append(int(v))
        else:
            raise ConfigError(f"--labels {v}: give whole numbers of labelled images per class (at least 1) or 'all'")
    return tuple(out)


def cmd_transfer(args: argparse.Namespace, stop: Stop) -> int:
    out = results_path(args.out)
    modes = list(dict.fromkeys(args.modes or ["scratch", "frozen", "finetune"]))
    for m in modes:
        if m not in tr.MODES:
            raise ConfigError(f"--modes {m}: unknown transfer mode; choose from {', '.join(tr.MODES)}")
    if args.default_setups and (args.k is not None or args.bn is not None or args.norm is not None):
        raise ConfigError("--k, --bn and --norm shape the setups of --modes; --default-setups brings its own "
                          "(the last stage fine-tuned, the first-k sweep, BN statistics frozen, the three "
                          "normalisations)")
    if args.k is not None and not set(modes) & set(tr.K_MODES):
        raise ConfigError(f"--k is for the modes {', '.join(tr.K_MODES)}; --modes has none of them")
    labels = transfer_labels(args.labels)
    for seed in args.seeds:
        check_int("--seeds", seed, 0, SEED_MAX)
    check_int("--steps", args.steps, 1, 10**7)
    check_int("--batch-size", args.batch_size, 1, 10**6)
    # batch size, learning rate and the device string: TrainConfig's checks and messages
    recipe = tr.Recipe(steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
                       precision=args.precision, channels_last=args.channels_last)
    check_device(args.device)
    ck = load_transfer_source(args.source)
    stages = len(ck.model.stage_names)
    ks = args.k if args.k is not None else [1]
    for k in ks:
        if not 0 <= k <= stages:
            raise ConfigError(f"--k {k}: {args.source} ({ck.spec.name}) has {stages} stages; k must be between 0 "
                              f"and {stages}")
    if args.default_setups:
        setups = tr.default_setups(stages)
    else:
        setups = tr.choose_setups(modes, ks, [args.bn or "update"], [args.norm or "source"], stages)
    plan = tr.Plan(setups, labels, tuple(args.seeds), recipe, probe_precision=args.probe_precision)
    target = None
    if args.target_path is not None:
        check_int("--size", args.size, 1, 4096)
        check_int("--resize", args.resize, 1, 8192)
        target = tr.folder_target(ck, args.target_path, size=args.size, resize=args.resize)
    tr.check_plan(ck, plan, target)  # labels a class cannot give, a source the target does not fit: before any run
    if args.keep_dir is not None:  # where kept nets go: checked now, not after the first run has trained
        keep_dir = Path(args.keep_dir)
        if keep_dir.exists() and not keep_dir.is_dir():
            raise ConfigError(f"--keep-dir {keep_dir} exists and is not a folder")
        check_writable(keep_dir / "kept-net.pt", what="--keep-dir")
    store = RunStore(args.store)
    try:
        return _transfer(args, stop, ck, plan, store, out, target)
    except KeyboardInterrupt as exc:  # a second signal, or one outside the loop
        kept = f"finished runs are kept in {store.home}; {state(out) if out else 'no --out'}"
        raise interrupted(exc, kept) from None


def load_transfer_source(name: str) -> Checkpoint:
    path = transfer_source(name)
    try:
        return load_checkpoint(path)
    except AmbiguousCheckpointError as exc:
        raise CheckpointError(f"{path.name}: a plain net, or a residual net with option-A (zero-padding) shortcuts? "
                              "Their weights look the same; save it with its metadata (python -m analysis train)") \
            from exc


def _percent_table(rows: dict[str, dict[str, str]], columns: list[str], index: str) -> str:
    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("")
    text: str = df.rename_axis(index).to_string()
    return text


def _transfer(args: argparse.Namespace, stop: Stop, ck: Checkpoint, plan: tr.Plan, store: RunStore,
              out: Path | None, target: tr.Target | None = None) -> int:
    stages = len(ck.model.stage_names)
    keep = None
    if args.keep_dir is not None:
        folder = Path(args.keep_dir)
        folder.mkdir(parents=True, exist_ok=True)

        def keep(c: Checkpoint) -> None:  # a full disk: the net goes to a rescue folder and the error says where
            save_checkpoint_or_rescue(folder / f"{c.spec.name}.pt", c.model, c.meta)
    data = tr.target_maker(ck, target)(None, plan.seeds[0], "none")
    total = len(plan.items())
    print(f"source {args.source} ({ck.spec.name}, {stages} stages), target {data.name}: {len(data.y_test)} test "
          f"images; {total} run{'s' * (total != 1)} of {plan.recipe.steps} SGD steps in {plan.recipe.arithmetic}")
    for note in tr.adaptation_notes(ck, data, folder=target is not None):
        print(note)
    overlap = tr.overlap_note(ck, data)
    if overlap:
        print(f"warning: {overlap}")
    sys.stdout.flush()
    bar = tqdm(total=total, unit="run", desc="transfer", dynamic_ncols=True)

    def progress(p: tr.PlanProgress) -> None:
        bar.n = round(p.done + (0.0 if p.finished is not None else p.fraction), 2)
        bar.set_description_str(p.label, refresh=False)
        bar.refresh()
        if p.finished is not None:
            f = p.finished
            bar.write(f"{p.label}: test acc {f['test_acc']:.1%}, train acc {f['train_acc']:.1%}, "
                      f"{f['train_images']} training images, {f['seconds']:.1f} s")

    stop.defer = True  # the first Ctrl-C / SIGTERM cancels at the next batch; finished runs stay stored
    try:
        result = tr.run_plan(ck, plan, store=store, target=target, progress=progress, keep=keep,
                             cancel=lambda: stop.signum is not None)
    finally:
        stop.defer = False
        bar.close()
    if stop.signum is not None:
        done = len(result.results)
        raise Interrupted(stop.signum, f"transfer cancelled; {done} of {total} runs finished and kept in {store.home} "
                                       f"(the same command trains only the rest); "
                                       f"{state(out) if out else 'no --out'}")
    s = result.summary
    columns = list(dict.fromkeys("all" if n is None else str(n) for n in plan.labels))
    cells: dict[str, dict[str, str]] = {}
    seeds = len(dict.fromkeys(plan.seeds))
    for r in s.itertuples():
        # one seed planned: the header names it; several: each cell says its interval or why it has none
        cells.setdefault(str(r.setup), {})[str(r.labels)] = f"{100 * r.test_acc_mean:.1f}" if seeds == 1 else \
            stats.mean_interval(r.test_acc_mean, float(r.test_acc_std), int(r.seeds), digits=1, scale=100)
    print(f"\ntest accuracy (%) on {data.name}, by labelled images per class"
          + (f" (mean over {seeds} seeds [95 % t-interval])" if seeds > 1 else f" (seed {plan.seeds[0]})") + ":")
    print(_percent_table(cells, columns, "setup"))
    if not result.probe.empty:
        probe: dict[str, dict[str, str]] = {}
        for r in result.probe.itertuples():
            n = "all" if r.per_class is None or (isinstance(r.per_class, float) and math.isnan(r.per_class)) \
                else str(int(r.per_class))
            probe.setdefault(f"{r.stage} ({r.features})", {})[n] = f"{r.test_acc * 100:.1f}"
        print(f"\nlinear probe on each stage's pooled output of the frozen source, computed in {plan.probe_precision} "
              "(test accuracy %, labels drawn with seed 0):")
        print(_percent_table(probe, columns, "stage (features)"))
    test = result.meta.get("test")
    lines = tr.readings(s, stages, result.probe, results=result.results, test_size=test if isinstance(test, int) else None)
    if lines:
        print()
        for line in lines:
            print(line)
    print(f"\n{result.trained} run{'s' * (result.trained != 1)} trained, {result.reused} found in the store "
          f"{store.home}, {result.seconds:.1f} s")
    if out is not None:
        tr.write_results(str(out), result)
        print(f"wrote {out}")
    return 0
