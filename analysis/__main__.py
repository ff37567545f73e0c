"""Command line: ``python -m analysis train ...`` (and ``lesion``, ``paths``, ``grid``, ``transfer``, see --help).

Every setting is checked before any work starts (numbers finite and in range, the output path
writable), so a bad option costs a second, never a finished run. Outputs are written atomically.
Bad input prints one line, ``error: ...``, and exits 2. Ctrl-C (SIGINT) and SIGTERM print one line,
``interrupted: ...``, saying what was kept, and exit 130 / 143 (128 + the signal), with no temp file
left behind. During training the first signal stops the run at the next batch and saves the
finished epochs as a *cancelled* checkpoint; a second signal stops at once without saving.

:func:`run` is the command line without the catching (it raises :class:`~analysis.core.errors.LensError`
on bad input and :class:`Interrupted` on a signal); :func:`main` catches and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from analysis.arch.specs import MODELS
from analysis.core.errors import ConfigError, LensError
from analysis.core.io import check_writable
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH
from analysis.experiments.evaluation import Options
from analysis.experiments.lesion import SWEEP_KINDS
from analysis.run.executor import EXECUTORS

if TYPE_CHECKING:  # imported lazily at run time: torch loads only when a command runs
    from analysis.arch.specs import ResNetSpec
    from analysis.core.meta import TrainConfig
    from analysis.data.data import Dataset
    from analysis.store.checkpoints import Checkpoint
    from analysis.store.runstore import RunStore
    from analysis.studies.grid import Grid
    from analysis.studies.transfer import Plan, Target

SEED_MAX = 2**63 - 1
EXIT_ERROR = 2
#: The image side of ``--data digits`` / ``imagefolder`` when ``--size`` is left out.
DEFAULT_SIZE = 16
#: The datasets that ship with the app, each with what to say when given a --data-path.
EMBEDDED = {"digits": "the digits are", "mnist1d": "MNIST-1D is generated locally and"}


class UsageError(ConfigError):
    """The command line itself is malformed (unknown option, not a number, missing --out)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a command; ``kept`` says what was left behind."""

    def __init__(self, signum: int, kept: str = "") -> None:
        super().__init__(signum, kept)
        self.signum = signum
        self.kept = kept


@dataclass
class Stop:
    """Signals received while a command runs. While ``defer`` is set (the training loop), the first
    signal only asks the loop to stop at the next batch; any other signal raises :class:`Interrupted`."""

    signum: int | None = None
    defer: bool = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = signum
        if self.defer and first:
            return
        raise Interrupted(signum)


@contextlib.contextmanager
def _signal_handlers(stop: Stop) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop`` (main thread only), restoring the previous handlers."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # elsewhere signals are not ours to handle
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop.handle)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def whole(text: str) -> int:
    """argparse type: a whole number in ASCII digits. ``int()`` also reads other scripts' digits
    ('١٢' is 12) and underscores ('1_0'); a command line that looks like something else is refused."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (digits 0-9)")
    return int(text)


def real(text: str) -> float:
    """argparse type: a decimal number in ASCII (e.g. 0.1, 1e-4); ``float()`` also reads other
    scripts' digits. 'nan' and 'inf' pass, for the setting's own check to say why they cannot be used."""
    if not re.fullmatch(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*|\s*[+-]?(nan|inf|infinity)\s*",
                        text, flags=re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.1 or 1e-4)")
    return float(text)


class _Parser(argparse.ArgumentParser):
    """Usage errors raise :class:`UsageError` (so :func:`run` callers see one exception type);
    ``--help`` still prints and exits."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------- checks before any work
def check_int(option: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"{option} must be between {lo:,} and {hi:,}, got {value}")


def check_data_options(args: argparse.Namespace) -> None:
    check_int("--size", args.size, 1, 4096)
    check_int("--split-seed", args.split_seed, 0, SEED_MAX)
    if args.data in EMBEDDED and args.data_path is not None:
        raise ConfigError(f"--data-path is for cifar10 and imagefolder; {EMBEDDED[args.data]} embedded")
    if args.data == "mnist1d" and args.size not in (None, MNIST1D_LENGTH):
        raise ConfigError(f"--size {args.size}: MNIST-1D sequences have a fixed length of {MNIST1D_LENGTH} samples; "
                          "leave --size out")


def digit_classes(args: argparse.Namespace) -> tuple[int, ...]:
    """--classes 0,1,2,3,4 as class indices (only with the embedded --data digits or mnist1d)."""
    if args.data not in ("digits", "mnist1d"):
        raise ConfigError(f"--classes picks classes of the embedded digits or MNIST-1D; --data is {args.data}")
    parts = [p.strip() for p in str(args.classes).split(",") if p.strip()]
    if not parts or not all(len(p) == 1 and p in "0123456789" for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"--classes must be distinct digits separated by commas, e.g. 0,1,2,3,4; got {args.classes!r}")
    if len(parts) < 2:
        raise ConfigError("--classes needs at least two digits: a classifier needs two classes")
    return tuple(int(p) for p in parts)


def data_size(args: argparse.Namespace) -> int:
    """``--size``, or the dataset's own default when it was left out (MNIST-1D has one length)."""
    if args.size is not None:
        return int(args.size)
    return MNIST1D_LENGTH if args.data == "mnist1d" else DEFAULT_SIZE


def check_device(device: str) -> None:
    from analysis.core.meta import TrainConfig
    from analysis.experiments.train import check_device as available

    TrainConfig(device=device)  # the one place device strings are validated
    available(device)


def checkpoint_path(name: str) -> Path:
    """A shipped checkpoint's file, or ``name`` as a path to an existing file."""
    from analysis.core.errors import CheckpointError
    from analysis.store.checkpoints import shipped_checkpoints

    if not name.strip() or "\0" in name:
        raise CheckpointError(f"--checkpoint {name!r}: give a .pt/.pth file or a shipped name "
                              f"({', '.join(shipped_checkpoints())})")
    path = shipped_checkpoints().get(name, Path(name).expanduser())
    try:
        found, folder = path.is_file(), path.is_dir()
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read this path ({exc.strerror or exc})") from exc
    if folder:
        raise CheckpointError(f"{name} is a folder; give the checkpoint file inside it")
    if not found:
        raise CheckpointError(f"{name}: no such checkpoint file or shipped name "
                              f"({', '.join(shipped_checkpoints())})")
    return path


def _state(path: Path) -> str:
    return f"{path} unchanged" if path.exists() else f"{path} not created"


# ---------------------------------------------------------------------------- train
def add_data_args(p: argparse.ArgumentParser, size_help: str = "", data_help: str = "") -> None:
    """--data, --data-path, --size, --split-seed; ``data_help`` given: --data defaults to None (the
    evaluation commands, where the checkpoint's own data is the default)."""
    p.add_argument("--data", default=None if data_help else "digits",
                   choices=["digits", "mnist1d", "cifar10", "imagefolder"],
                   help=data_help or "dataset: the embedded digits or MNIST-1D (sequences of 40 samples, for 1-D "
                                     "nets), or CIFAR-10 / an ImageFolder tree from --data-path")
    p.add_argument("--data-path", default=None, help="local path of cifar-10-batches-py or the ImageFolder root")
    # None, not 16: a size typed for MNIST-1D (whose length is fixed) must be told from the default
    p.add_argument("--size", type=whole, default=None,
                   help=size_help or f"image size (digits: 8, 16 or 32, default {DEFAULT_SIZE}; ImageFolder: any, "
                                     f"up to 4096; MNIST-1D: always {MNIST1D_LENGTH})")
    p.add_argument("--split-seed", type=whole, default=0, help="seed of the train/test split")


def add_recipe_args(p: argparse.ArgumentParser, epochs: int) -> None:
    """The training recipe's options, shared by ``train`` and ``grid`` (read back by :func:`recipe`)."""
    p.add_argument("--epochs", type=whole, default=epochs, help="1 to 100,000")
    p.add_argument("--batch-size", type=whole, default=64, help="1 to 1,000,000")
    p.add_argument("--lr", type=real, default=0.1, help="learning rate, in (0, 10]")
    p.add_argument("--momentum", type=real, default=0.9, help="in [0, 1)")
    p.add_argument("--weight-decay", type=real, default=1e-4, help="in [0, 1]")
    p.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    p.add_argument("--warmup", type=whole, default=1, help="epochs at lr/10 before the schedule (0 to --epochs)")
    p.add_argument("--no-augment", action="store_true", help="turn off random shifts / crops / flips")


def recipe(args: argparse.Namespace, **more: Any) -> TrainConfig:
    """The TrainConfig of :func:`add_recipe_args`' options (``more``: seed, device where the command has them)."""
    from analysis.core.meta import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup,
                       augment=not args.no_augment, **more)


def cmd_train(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    cfg = recipe(args, seed=args.seed, device=args.device, amp=args.amp)
    check_device(cfg.device)
    from analysis.arch.specs import get_spec

    spec = get_spec(args.model, plain=args.plain, preact=args.preact)
    check_dims(spec, args.data)
    if args.classes is not None:
        digit_classes(args)  # refused before any work
    kept = f"no checkpoint written; {_state(out)}"
    try:
        return _train(args, stop, out, cfg, spec)
    except KeyboardInterrupt as exc:
        why = exc.kept if isinstance(exc, Interrupted) and exc.kept else kept
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), why) from None


def check_dims(spec: ResNetSpec, data: str) -> None:
    """A 2-D net on MNIST-1D or a 1-D net on images, refused before the data are loaded
    (:func:`analysis.experiments.train.check_fits` says the same of loaded data)."""
    dims = 1 if data == "mnist1d" else 2
    if spec.dims == dims:
        return
    shape = f"{spec.in_channels}x{'x'.join([str(spec.input_size)] * spec.dims)}"
    if dims == 1:
        raise ConfigError(f"--model {spec.name} is a 2-D net ({shape} images) and --data mnist1d holds 1-D "
                          f"sequences (1x{MNIST1D_LENGTH} samples); train a 1-D net on it, e.g. --model resnet1d_20")
    raise ConfigError(f"--model {spec.name} is a 1-D net ({shape} samples) and --data {data} holds 2-D images; "
                      "train it with --data mnist1d, or give a 2-D net such as cifar_resnet20")


def _train(args: argparse.Namespace, stop: Stop, out: Path, cfg: TrainConfig, spec: ResNetSpec) -> int:
    import torch
    from tqdm import tqdm

    from analysis.data.data import load_dataset
    from analysis.experiments.train import Progress, train_checkpoint
    from analysis.store.checkpoints import save_checkpoint_or_rescue

    if args.deterministic:
        if cfg.device.startswith("cuda"):
            # cuBLAS is deterministic only with a fixed workspace, read when it starts: set before any CUDA work
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)  # this process only: the CLI runs one training
    if args.classes is not None:
        from analysis.data.data import load_digits, load_mnist1d

        data = (load_mnist1d(seed=args.split_seed, classes=digit_classes(args)) if args.data == "mnist1d" else
                load_digits(size=data_size(args), seed=args.split_seed, classes=digit_classes(args)))
    else:
        data = load_dataset(args.data, args.data_path, size=data_size(args), seed=args.split_seed)
    spec = spec.replace(in_channels=data.channels, num_classes=data.num_classes, input_size=data.size)
    bar = tqdm(total=None, unit="batch", desc=f"{spec.name} on {data.name}", dynamic_ncols=True)

    def progress(p: Progress) -> bool:
        if bar.total is None:
            bar.reset(total=p.epochs * p.steps_per_epoch)
        if p.phase == "batch":
            bar.update(1)
            bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}")
        else:
            h = p.history[-1]
            bar.write(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
                      f"test loss {h['test_loss']:.4f} acc {h['test_acc']:.4f}")
            sys.stdout.flush()
        return stop.signum is None  # False after SIGINT / SIGTERM: stop at this batch, keep the epochs

    stop.defer = True
    try:
        ck = train_checkpoint(spec, data, cfg, progress, command="python -m analysis " + shlex.join(args.argv))
    finally:
        stop.defer = False
        bar.close()
    m = ck.meta
    if stop.signum is not None:  # asked to stop: the loop ended at a batch boundary
        n = len(m.history)
        where = f"training stopped in epoch {min(n + 1, cfg.epochs)} of {cfg.epochs}"
        if not n:
            raise Interrupted(stop.signum, f"{where} before any epoch finished; nothing saved, {_state(out)}")
        try:
            save_checkpoint_or_rescue(out, ck.model, m)
        except KeyboardInterrupt:
            raise Interrupted(stop.signum, f"{where}; stopped again while saving, {_state(out)}") from None
        raise Interrupted(stop.signum, f"{where}; the {n} finished epoch{'s' * (n != 1)} saved to {out} as a "
                                       f"{m.status} checkpoint (test acc {m.final['test_acc']:.4f})")
    path = save_checkpoint_or_rescue(out, ck.model, m)
    f = m.final
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): test acc {f['test_acc']:.4f}, "
          f"train acc {f['train_acc']:.4f}, {m.train_seconds:.1f} s, {m.images_per_second or 0:.0f} images/s")
    return 0


# ---------------------------------------------------------------------------- lesion
def check_shard_options(args: argparse.Namespace) -> None:
    """--executor, --address, --shards and --device of ``lesion`` and ``paths``, before any work (or
    any Ray start). On Ray the cluster's GPUs count, not this machine's: the device string is checked
    here, the GPUs by the cluster (a task asking for more than it has is refused)."""
    from analysis.core.meta import TrainConfig
    from analysis.run.cluster import check_address
    from analysis.run.shard import MAX_SHARDS

    check_int("--shards", args.shards, 1, MAX_SHARDS)
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address names a Ray cluster: it goes with --executor ray")
    if args.executor == "ray":
        check_address(args.address)
        TrainConfig(device=args.device)  # the one place device strings are validated
        if args.device.startswith("cuda:"):
            raise ConfigError(f"--device {args.device}: on Ray each shard is given one GPU of its node, which it "
                              "sees as cuda; give --device cuda")
    else:
        check_device(args.device)


def cmd_lesion(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    check_int("--resize", args.resize, 1, 8192)
    check_int("--max-per-class", args.max_per_class, 1, 10**9)
    check_int("--samples", args.samples, 1, 100_000)  # refused for every sweep: a typed value must mean something
    from analysis.experiments import lesion

    lesion.check_sweep_options(args.experiment, samples=args.samples, seed=args.seed, batch_size=args.batch_size)
    check_int("--seed", args.seed, 0, SEED_MAX)
    return _evaluate(args, out, _lesion)


def _evaluate(args: argparse.Namespace, out: Path, body: Callable[[argparse.Namespace, Path, Path], int]) -> int:
    """The end of ``lesion`` and ``paths``: data and shard options checked, the checkpoint found (and
    not the CSV's own path), then ``body`` run; an interrupt writes no CSV and says so."""
    from analysis.experiments.evaluation import check_request

    check_request(kind=args.data, path=args.data_path, size=args.size, resize=args.resize,
                  max_per_class=args.max_per_class, seed=args.split_seed, options=EVAL_OPTIONS)
    check_shard_options(args)
    path = checkpoint_path(args.checkpoint)
    if out.exists() and path.samefile(out):
        raise ConfigError(f"--out {out} is the checkpoint itself; give another file for the CSV")
    try:
        return body(args, path, out)
    except KeyboardInterrupt as exc:
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), f"no CSV written; {_state(out)}") from None


def _setting_text(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)


def assumptions(values: Sequence[str] | None) -> dict[str, Any]:
    """--assume activation=bn_after_add --assume strides=1,2,2,2 ...: the settings a bare
    state_dict's weights cannot tell (analysis.store.checkpoints.UNTOLD_FIELDS), typed."""
    from analysis.store.checkpoints import UNTOLD_FIELDS

    out: dict[str, Any] = {}
    for item in values or ():
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or key not in UNTOLD_FIELDS or not text:
            raise ConfigError(f"--assume {item!r}: give KEY=VALUE with KEY one of {', '.join(UNTOLD_FIELDS)}")
        if key in out:
            raise ConfigError(f"--assume {key} given twice")
        try:
            if key in ("shortcut_scale", "shortcut_dropout"):
                out[key] = real(text)
            elif key == "scale_residual":
                if text.lower() not in ("true", "false"):
                    raise ConfigError(f"--assume scale_residual={text}: give true or false")
                out[key] = text.lower() == "true"
            elif key == "strides":
                out[key] = tuple(whole(t) for t in text.split(","))
            else:
                out[key] = text
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--assume {key}: {exc}") from None
    return out


#: How analysis.experiments.evaluation's messages name this command line's options.
EVAL_OPTIONS = Options("--data", "--data-path", "--size", "--resize", "--max-per-class")


def _evaluation_data(args: argparse.Namespace, path: Path) -> tuple[Checkpoint, Dataset]:
    """The checkpoint and the test data it is evaluated on (``lesion`` and ``paths``), as
    :mod:`analysis.experiments.evaluation` chooses for the app too; which data, and why, is printed first."""
    from analysis.core.errors import CheckpointError
    from analysis.experiments import evaluation
    from analysis.store.checkpoints import AmbiguousCheckpointError, load_checkpoint

    try:  # --size: the input size of a bare state_dict (a file with metadata records its own)
        ck = load_checkpoint(path, plain=args.plain, input_size=args.size, settings=assumptions(args.assume))
    except AmbiguousCheckpointError as exc:
        raise CheckpointError(f"{path.name}: a plain net, or a residual net with option-A (zero-padding) shortcuts? "
                              "Their weights look the same; say which with --plain or --residual") from exc
    if ck.assumed:  # said before any number: the results hold for these settings only
        print(f"{path.name}: its weights cannot tell these settings; assumed "
              + ", ".join(f"{k}={_setting_text(v)}" for k, v in ck.assumed)
              + " (give others with --assume KEY=VALUE)")
    choice = evaluation.choose(ck.spec, ck.meta, kind=args.data, path=args.data_path, size=args.size,
                               resize=args.resize, max_per_class=args.max_per_class, seed=args.split_seed,
                               name=str(args.checkpoint), options=EVAL_OPTIONS)
    data = evaluation.load(choice)
    evaluation.check_fits(ck.spec, data, choice)
    print(evaluation.describe(choice, data, str(args.checkpoint), EVAL_OPTIONS), flush=True)
    return ck, data


def _where(args: argparse.Namespace, n: int, per: int) -> str:
    """'3 shards of up to 192 images, Ray tasks on the local Ray instance' for the progress line."""
    from analysis.run.shard import shard_bounds

    bounds = shard_bounds(n, args.shards, per)
    biggest = max(hi - lo for lo, hi in bounds)
    where = ("in this process" if args.executor == "local" else
             f"as Ray tasks on {args.address or 'a local Ray instance on 127.0.0.1'}")
    return f"{len(bounds)} shard{'s' * (len(bounds) != 1)} of up to {biggest} inputs, {where}"


def _lesion(args: argparse.Namespace, path: Path, out: Path) -> int:
    from tqdm import tqdm

    from analysis.core.reporting import write_csv
    from analysis.experiments import lesion
    from analysis.run import shard

    ck, data = _evaluation_data(args, path)
    sharded = args.executor == "ray" or args.shards > 1
    if sharded:
        print(f"{args.experiment} sweep on {len(data.y_test)} test inputs: "
              f"{_where(args, len(data.y_test), args.batch_size)}", flush=True)
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


# ---------------------------------------------------------------------------- paths
def cmd_paths(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    check_int("--resize", args.resize, 1, 8192)
    check_int("--max-per-class", args.max_per_class, 1, 10**9)
    from analysis.experiments.paths import MeasureSettings

    MeasureSettings(args.samples, args.batch, args.seed)  # samples, batch and seed checked before any work
    check_int("--seed", args.seed, 0, SEED_MAX)
    check_int("--batch-size", args.batch_size, 1, 10**6)
    return _evaluate(args, out, _paths)


def _paths(args: argparse.Namespace, path: Path, out: Path) -> int:
    from tqdm import tqdm

    from analysis.core.reporting import write_csv
    from analysis.experiments import paths
    from analysis.experiments.lesion import inputs_noun
    from analysis.run import shard

    ck, data = _evaluation_data(args, path)
    model = paths.initialised(ck.model) if args.net == "initialisation" else ck.model
    settings = paths.MeasureSettings(args.samples, args.batch, args.seed)
    paths.check_paths_net(model, data.x_test)  # a plain net or inputs of another kind: before any work
    if settings.batch > len(data.y_test):
        raise ConfigError(f"--batch {settings.batch} is larger than the test split ({len(data.y_test)} "
                          f"{inputs_noun(data.dims)})")
    x, y = data.x_test[: settings.batch], data.y_test[: settings.batch]
    sharded = args.executor == "ray" or args.shards > 1
    print(f"gradient by path length of {args.checkpoint} ({args.net}): {settings.describe()}"
          + (f"; {_where(args, len(y), args.batch_size or 1)}" if sharded else ""), flush=True)
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


# ---------------------------------------------------------------------------- units
def cmd_units(args: argparse.Namespace, stop: Stop) -> int:
    """The residual units of a built-in net (from its plan), an exported program (.pt2, from its
    graph) or a trusted module (``--module package.module:factory``, exported here), and its totals."""
    from analysis.arch import graphnet

    net = graphnet.open_net(args.model, module=args.module, input_shape=args.input_shape)
    rows = [u.as_row() for u in net.units]
    if args.json:
        print(json.dumps({"model": net.name, "input": [list(s) for s in net.input_shapes], "units": rows,
                          "params": net.params, "macs": net.macs, "flops": net.flops}))
        return 0
    print(f"{net.name}: input {' + '.join('×'.join(map(str, s)) for s in net.input_shapes)}; "
          f"{net.params:,} parameters, {net.macs:,} MACs, {net.flops:,} FLOPs")
    if not rows:
        print(graphnet.no_unit_reason(net))
        return 0
    table = [{"unit": r["unit"], "shortcut": r["shortcut"], "join": r["join"], "after": r["after"] or "-",
              "in": "×".join(map(str, r["in_shape"])), "out": "×".join(map(str, r["out_shape"])),
              "branch params": f"{r['branch_params']:,}", "branch MACs": f"{r['branch_macs']:,}",
              "inside": r["parent"] or "-"} for r in rows]
    import pandas as pd

    print(pd.DataFrame(table).to_string(index=False))
    kinds = graphnet.summary(net.units)
    print(f"{kinds['units']} residual units: {kinds['identity']} identity, {kinds['projection']} projection, "
          f"{kinds['pad']} zero-pad shortcuts")
    return 0


# ---------------------------------------------------------------------------- grid
def cmd_grid(args: argparse.Namespace, stop: Stop) -> int:
    from analysis.studies import grid as g

    if args.list_variants:
        print(g.variant_table().to_string(index=False))
        return 0
    out = None
    if args.out is not None:
        out = check_writable(args.out, what="--out")
        if out.suffix.lower() not in (".json", ".csv"):
            raise ConfigError(f"--out {out}: give a .json or .csv file")
    check_data_options(args)
    check_int("--seeds", args.seeds, 1, 1000)
    check_int("--workers", args.workers, 1, 256)
    check_int("--grad-every", args.grad_every, 0, 10**9)
    check_grid_executor(args)
    from analysis.run.executor import DataSpec

    cfg = recipe(args, device=args.device)
    if args.executor != "ray":  # on Ray the cluster's GPUs count, not this machine's (the executor checks)
        check_device(cfg.device)
    data = DataSpec(args.data, data_size(args), args.data_path, args.split_seed, args.train_images)
    grid = g.Grid(tuple(args.variants or g.PAPER_VARIANTS), tuple(args.depths), tuple(range(args.seeds)), cfg, data)
    from analysis.store.runstore import RunStore

    store = RunStore(args.store)
    try:
        return _grid(args, stop, grid, store, out)
    except KeyboardInterrupt as exc:  # a second signal, or one outside the loop
        why = exc.kept if isinstance(exc, Interrupted) and exc.kept else (
            f"finished runs are kept in {store.home}; {_state(out) if out else 'no --out'}")
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), why) from None


def check_grid_executor(args: argparse.Namespace) -> None:
    """--executor, --workers, --address and --device together, before any work (or any Ray start)."""
    from analysis.run.cluster import check_address

    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address names a Ray cluster: it goes with --executor ray")
    if args.executor == "local" and args.workers not in (None, 1):
        raise ConfigError(f"--executor local trains one run at a time in this process; --workers {args.workers} "
                          "needs --executor pool or ray")
    if args.executor == "ray":
        check_address(args.address)
        if args.device.startswith("cuda:"):
            raise ConfigError(f"--device {args.device}: on Ray each run is given one GPU of its node, which it sees "
                              "as cuda; give --device cuda")


def _grid(args: argparse.Namespace, stop: Stop, grid: Grid, store: RunStore, out: Path | None) -> int:
    from tqdm import tqdm

    from analysis.run.executor import Executor, make_executor
    from analysis.studies.grid import GridProgress, run_grid, write_results

    total = len(grid.variants) * len(grid.depths) * len(grid.seeds)
    bars = {"grid": tqdm(total=total, unit="run", desc=f"grid {grid.id[:8]}", position=0, dynamic_ncols=True)}
    slots: dict[str, int] = {}

    def progress(p: GridProgress) -> None:
        bars["grid"].n = p.done
        bars["grid"].set_postfix(stored=p.reused, refresh=False)
        bars["grid"].refresh()
        for key, e in p.running.items():  # one bar per running run: epochs and batches
            if key not in slots:
                free = min(set(range(1, (args.workers or 1) + 1)) - set(slots.values()), default=len(slots) + 1)
                slots[key] = free
                bars[key] = tqdm(total=e.epochs * e.steps, unit="batch", desc=p.labels[key], position=free,
                                 leave=False, dynamic_ncols=True)
            bar = bars[key]
            bar.n = (e.epoch - 1) * e.steps + e.step
            bar.set_postfix(epoch=f"{e.epoch}/{e.epochs}", loss=f"{e.loss:.3f}", refresh=False)
            bar.refresh()
        if p.finished is not None:
            key = p.finished["key"]
            if key in bars:
                bars.pop(key).close()
                slots.pop(key, None)
            f = p.finished
            bars["grid"].write(f"{f['variant']:>18} depth {f['depth']:3d} seed {f['seed']}: {f['status']}"
                               + (f", test error {f['test_error']:.2f} %, train error {f['train_error']:.2f} %, "
                                  f"{f['seconds']:.0f} s" if f["status"] == "complete" else f" {f['message']}"))

    stop.defer = True  # the first Ctrl-C / SIGTERM cancels the grid; finished runs stay stored
    executor: Executor | None = None
    try:
        # a signal while a local Ray instance starts (seconds) cancels the grid before its first run
        executor = make_executor(args.workers, threads=1, kind=args.executor, address=args.address)
        describe = getattr(executor, "describe", None)
        if callable(describe):
            bars["grid"].write(f"runs train on {describe()}")
        result = run_grid(grid, store, executor, progress=progress, cancel=lambda: stop.signum is not None,
                          grad_every=args.grad_every)
    finally:
        stop.defer = False
        if executor is not None:
            executor.close()
        for bar in bars.values():
            bar.close()
    if stop.signum is not None:
        done = int((result.results["status"] != "cancelled").sum())
        raise Interrupted(stop.signum, f"grid cancelled; {done} of {total} runs finished and kept in {store.home} "
                                       f"(the same command trains only the rest); "
                                       f"{_state(out) if out else 'no --out'}")
    cols = ["label", "depth", "runs", "test_error_mean", "test_error_std", "paper", "reading"]
    print(result.summary[cols].to_string(index=False))
    print(f"{result.trained} runs trained, {result.reused} found in the store {store.home}, "
          f"{result.wall_seconds:.1f} s wall")
    if out is not None:
        write_results(str(out), result)
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------- transfer
#: The shipped transfer source: a cifar_resnet20 trained on the digits 0-4 (checkpoints/transfer/).
TRANSFER_SOURCE = "digits04_resnet20"


def transfer_source(name: str) -> Path:
    """A shipped transfer source (checkpoints/transfer/<name>.pt), any shipped checkpoint, or a path."""
    from analysis.core.errors import CheckpointError
    from analysis.store.checkpoints import SHIPPED_DIR

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
    from analysis.studies import transfer as tr

    out = None
    if args.out is not None:
        out = check_writable(args.out, what="--out")
        if out.suffix.lower() not in (".json", ".csv"):
            raise ConfigError(f"--out {out}: give a .json or .csv file")
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
    recipe = tr.Recipe(steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device)
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
    plan = tr.Plan(setups, labels, tuple(args.seeds), recipe)
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
    from analysis.store.runstore import RunStore

    store = RunStore(args.store)
    try:
        return _transfer(args, stop, ck, plan, store, out, target)
    except KeyboardInterrupt as exc:  # a second signal, or one outside the loop
        why = exc.kept if isinstance(exc, Interrupted) and exc.kept else (
            f"finished runs are kept in {store.home}; {_state(out) if out else 'no --out'}")
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), why) from None


def load_transfer_source(name: str) -> Checkpoint:
    from analysis.core.errors import CheckpointError
    from analysis.store.checkpoints import AmbiguousCheckpointError, load_checkpoint

    path = transfer_source(name)
    try:
        return load_checkpoint(path)
    except AmbiguousCheckpointError as exc:
        raise CheckpointError(f"{path.name}: a plain net, or a residual net with option-A (zero-padding) shortcuts? "
                              "Their weights look the same; save it with its metadata (python -m analysis train)") \
            from exc


def _percent_table(rows: dict[str, dict[str, str]], columns: list[str], index: str) -> str:
    import pandas as pd

    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("")
    text: str = df.rename_axis(index).to_string()
    return text


def _transfer(args: argparse.Namespace, stop: Stop, ck: Checkpoint, plan: Plan, store: RunStore,
              out: Path | None, target: Target | None = None) -> int:
    import math

    from tqdm import tqdm

    from analysis.studies import transfer as tr

    stages = len(ck.model.stage_names)
    keep = None
    if args.keep_dir is not None:
        from analysis.store.checkpoints import save_checkpoint_or_rescue

        folder = Path(args.keep_dir)
        folder.mkdir(parents=True, exist_ok=True)

        def keep(c: Checkpoint) -> None:  # a full disk: the net goes to a rescue folder and the error says where
            save_checkpoint_or_rescue(folder / f"{c.spec.name}.pt", c.model, c.meta)
    data = tr.target_maker(ck, target)(None, plan.seeds[0], "none")
    total = len(plan.items())
    print(f"source {args.source} ({ck.spec.name}, {stages} stages), target {data.name}: {len(data.y_test)} test "
          f"images; {total} run{'s' * (total != 1)} of {plan.recipe.steps} SGD steps")
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
                                       f"{_state(out) if out else 'no --out'}")
    s = result.summary
    columns = list(dict.fromkeys("all" if n is None else str(n) for n in plan.labels))
    cells: dict[str, dict[str, str]] = {}
    for r in s.itertuples():
        std = "" if r.seeds < 2 or math.isnan(r.test_acc_std) else f" ± {r.test_acc_std * 100:.1f}"
        cells.setdefault(str(r.setup), {})[str(r.labels)] = f"{r.test_acc_mean * 100:.1f}{std}"
    seeds = len(dict.fromkeys(plan.seeds))
    print(f"\ntest accuracy (%) on {data.name}, by labelled images per class"
          + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else f" (seed {plan.seeds[0]})") + ":")
    print(_percent_table(cells, columns, "setup"))
    if not result.probe.empty:
        probe: dict[str, dict[str, str]] = {}
        for r in result.probe.itertuples():
            n = "all" if r.per_class is None or (isinstance(r.per_class, float) and math.isnan(r.per_class)) \
                else str(int(r.per_class))
            probe.setdefault(f"{r.stage} ({r.features})", {})[n] = f"{r.test_acc * 100:.1f}"
        print("\nlinear probe on each stage's pooled output of the frozen source (test accuracy %, labels drawn "
              "with seed 0):")
        print(_percent_table(probe, columns, "stage (features)"))
    lines = tr.readings(s, stages, result.probe)
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


# ---------------------------------------------------------------------------- parser and entry points
def add_shard_args(p: argparse.ArgumentParser, what: str) -> None:
    """--executor, --address and --shards of ``lesion`` and ``paths`` (read by :func:`check_shard_options`)."""
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help=f"where the shards of the {what} run: local (this process, one after another) or ray (one "
                        "Ray task per shard, one CPU each and one GPU with --device cuda; see --address)")
    p.add_argument("--address", default=None,
                   help="the Ray cluster for --executor ray: auto (the one `ray start` runs here), ray://host:10001 "
                        "(Ray Client) or host:port (its GCS). Default: a local Ray instance on 127.0.0.1, stopped "
                        "when the command ends")
    p.add_argument("--shards", type=whole, default=1,
                   help="split the test inputs into this many contiguous shards (cut at multiples of --batch-size; "
                        "fewer when there are fewer batches), evaluated apart and merged into the numbers one "
                        "process gives (default 1)")


def add_evaluation_args(p: argparse.ArgumentParser, plain_note: str) -> None:
    """What ``lesion`` and ``paths`` share about the net and its test images: a bare state_dict's
    plain/residual choice (``plain_note``: what a plain net means for the command) and the
    ImageFolder's resize and per-class cap."""
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--plain", dest="plain", action="store_const", const=True, default=None,
                      help=f"a bare state_dict without projection weights is a plain net ({plain_note})")
    kind.add_argument("--residual", dest="plain", action="store_const", const=False,
                      help="a bare state_dict without projection weights is a residual net (option-A shortcuts)")
    p.add_argument("--assume", action="append", default=None, metavar="KEY=VALUE",
                   help="a bare state_dict: a setting its weights cannot tell (shortcut_variant=identity|scale|"
                        "dropout, shortcut_scale, scale_residual, shortcut_dropout, activation, stride_on=3x3|1x1, "
                        "strides=1,2,2,2, downsampling); the ones assumed are printed")
    p.add_argument("--resize", type=whole, default=None,
                   help="ImageFolder: resize the shorter side to this, then center-crop (default for an "
                        "ImageNet-stem net: round(size * 256 / 224), 256 at 224 px; other nets: the whole image "
                        "resized)")
    p.add_argument("--max-per-class", type=whole, default=None, help="ImageFolder: cap images per class (>= 1)")


EVAL_DATA_HELP = ("test data (default: the checkpoint's own, rebuilt from its metadata; without one, MNIST-1D for "
                  "a 1-D net and the embedded digits for a 1-channel 10-class net of 8, 16 or 32 px): digits, "
                  "mnist1d, or cifar10 / imagefolder from --data-path")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m analysis", description="ResNet Lens command line.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a ResNet (or its plain twin) and save an atomic checkpoint",
                       description="Train with SGD + momentum, weight decay and a step or cosine schedule; "
                                   "seeded and deterministic on the CPU. Ctrl-C / SIGTERM stop at the next "
                                   "batch and save the finished epochs as a cancelled checkpoint.")
    t.add_argument("--model", default="cifar_resnet20",
                   help=f"built-in name ({', '.join(MODELS)}) or cifar_resnet<6n+2>; prefixes plain_/preact_ work")
    t.add_argument("--plain", action="store_const", const=True, default=None, help="train the plain twin (shortcuts removed)")
    t.add_argument("--preact", action="store_const", const=True, default=None, help="use pre-activation blocks")
    add_data_args(t)
    t.add_argument("--classes", default=None,
                   help="digits or mnist1d: train on these classes, e.g. 0,1,2,3,4 (relabelled 0..k-1; a transfer source)")
    add_recipe_args(t, epochs=30)
    t.add_argument("--seed", type=whole, default=0, help="0 to 2**63-1")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    t.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True) for this process (CUDA: slower, repeatable; "
                        "sets CUBLAS_WORKSPACE_CONFIG=:4096:8 unless set). cuDNN's deterministic algorithms are "
                        "used on CUDA in any case")
    t.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off",
                   help="mixed precision on CUDA: bf16 autocast, or fp16 autocast with a gradient scaler "
                        "(default off: fp32; refused on the CPU, which trains in fp32)")
    t.add_argument("--out", required=True, help="checkpoint path (checked before training, written atomically)")
    t.set_defaults(func=cmd_train)

    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV atomically.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict) or a shipped name, e.g. digits_resnet56")
    add_data_args(le, data_help=EVAL_DATA_HELP, size_help="image size (default: the net's own). For a bare state_dict, also the "
                                           "input size the net is meant for (default 224 for an ImageNet stem, "
                                           "32 for a CIFAR stem)")
    add_evaluation_args(le, "no shortcuts")
    le.add_argument("--experiment", choices=list(SWEEP_KINDS), default="single")
    le.add_argument("--samples", type=whole, default=5, help="random samples per k (k and reorder), >= 1")
    le.add_argument("--seed", type=whole, default=0, help="0 to 2**63-1")
    le.add_argument("--batch-size", type=whole, default=256, help=">= 1")
    le.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (on Ray: cuda, one GPU per shard)")
    add_shard_args(le, "sweep")
    le.add_argument("--out", required=True, help="results CSV (checked before the sweep, written atomically)")
    le.set_defaults(func=cmd_lesion)

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

    gr = sub.add_parser("grid", help="train He et al. 2016's variants x depths x seeds, stored and summarised",
                        description="An experiment grid: every variant at every depth with every seed, one recipe, "
                                    "one dataset. Runs the run store already holds (same spec, recipe, data and seed) "
                                    "are not retrained; each run is stored as it finishes, so Ctrl-C / SIGTERM keep "
                                    "every finished run and the same command later trains only the rest.")
    gr.add_argument("--list-variants", action="store_true", help="list the variants with the paper's numbers, exit")
    gr.add_argument("--variants", nargs="+", default=None,
                    help="variant names (default: the paper's eleven; see --list-variants); join names with '+' "
                         "to combine")
    gr.add_argument("--depths", nargs="+", type=whole, default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    gr.add_argument("--seeds", type=whole, default=2, help="seeds per variant and depth: 0 .. N-1 (default 2)")
    add_data_args(gr)
    gr.add_argument("--train-images", type=whole, default=None, help="use only the first N training images")
    add_recipe_args(gr, epochs=10)
    gr.add_argument("--device", default="cpu",
                    help="cpu or cuda (cuda:<index> too, except on Ray, which gives each run one GPU as cuda)")
    gr.add_argument("--executor", choices=EXECUTORS, default=None,
                    help="where runs train: local (this process, one at a time), pool (--workers processes here), "
                         "ray (Ray tasks, one CPU each and one GPU with --device cuda; see --address). Default: "
                         "local, or pool when --workers is above 1")
    gr.add_argument("--address", default=None,
                    help="the Ray cluster for --executor ray: auto (the one `ray start` runs here), "
                         "ray://host:10001 (Ray Client) or host:port (its GCS). Default: a local Ray instance "
                         "on 127.0.0.1, stopped when the grid ends")
    gr.add_argument("--workers", type=whole, default=None,
                    help="runs training at once, one torch thread each: the pool's processes, or Ray tasks in "
                         "flight (default: 1 in this process; pool: one per CPU; ray: as many as the cluster's "
                         "CPUs and GPUs allow)")
    gr.add_argument("--grad-every", type=whole, default=0,
                    help="record gradient flow every N steps when training supports it (0: off)")
    gr.add_argument("--store", default=None, help="run store folder (default: $RESNET_LENS_HOME or ~/.resnet-lens)")
    gr.add_argument("--out", default=None, help="results + summary file, .json or .csv (written atomically)")
    gr.set_defaults(func=cmd_grid)

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
    tf.add_argument("--store", default=None, help="run store folder (default: $RESNET_LENS_HOME or ~/.resnet-lens)")
    tf.add_argument("--keep-dir", default=None,
                    help="save every net trained now as a checkpoint in this folder (open it on any page)")
    tf.add_argument("--out", default=None,
                    help="results file: .json (runs, learning curves, probe; the page reads it) or .csv (one row "
                         "per run), written atomically")
    tf.set_defaults(func=cmd_transfer)

    un = sub.add_parser("units", help="list the residual units of a net (built-in, .pt2 program or your module) "
                                      "and its totals",
                        description="Finds every residual unit (an add of a tensor and a weighted function of it): "
                                    "its owning module, shortcut (identity, projection, zero-pad), join, shapes and "
                                    "branch costs. Built-in names read their plan; a .pt2 file (torch.export.save) "
                                    "is read as a graph and never run.")
    un.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                    help="a built-in name (e.g. resnet50) or a torch.export program (.pt2)")
    un.add_argument("--module", default=None, metavar="PACKAGE.MODULE:FACTORY",
                    help="trusted Python: import PACKAGE.MODULE and call FACTORY() for an nn.Module (needs "
                         "--input-shape); exported here before it is read")
    un.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                    help="the example input for --module (with its batch), e.g. 1,3,224,224")
    un.add_argument("--json", action="store_true", help='one JSON object {"units": [...], "params": N, "macs": N}')
    un.set_defaults(func=cmd_units)
    return ap


def run(argv: Sequence[str] | None = None, stop: Stop | None = None) -> int:
    """The command line without the catching: returns 0, raises a LensError on bad input (usage
    errors included) and :class:`Interrupted` when ``stop`` saw a signal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    result: int = args.func(args, stop or Stop())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    stop = Stop()
    try:
        with _signal_handlers(stop):
            return run(argv, stop)
    except LensError as exc:  # bad input: one clear line, no traceback (a bug still shows as one)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM: one line saying what was kept
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        kept = exc.kept if isinstance(exc, Interrupted) and exc.kept else "nothing written"
        print(f"interrupted: {kept}", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
