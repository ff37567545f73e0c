"""What several commands share: the argument types (:func:`whole`, :func:`real`), the parser that
raises :class:`UsageError`, signals (:class:`Stop`, :class:`Interrupted`), the checks made before
any work, the data and recipe options, and the end of ``lesion`` and ``paths`` (:func:`evaluate`:
checkpoint, evaluation data, shards)."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeAlias

from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.io import check_writable
from analysis.core.meta import PRECISIONS, TrainConfig
from analysis.data.data import Dataset
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH
from analysis.experiments import evaluation
from analysis.experiments.evaluation import Options, check_request
from analysis.experiments.train import check_device as available
from analysis.run.cluster import check_address
from analysis.run.shard import MAX_SHARDS, shard_bounds
from analysis.store.checkpoints import (
    UNTOLD_FIELDS,
    AmbiguousCheckpointError,
    Checkpoint,
    load_checkpoint,
    shipped_checkpoints,
)

SEED_MAX = 2**63 - 1
EXIT_ERROR = 2
#: The image side of ``--data digits`` / ``imagefolder`` when ``--size`` is left out.
DEFAULT_SIZE = 16
#: The datasets that ship with the app, each with what to say when given a --data-path.
EMBEDDED = {"digits": "the digits are", "mnist1d": "MNIST-1D is generated locally and"}


# ---------------------------------------------------------------------------- errors and signals
class UsageError(ConfigError):
    """The command line itself is malformed (unknown option, not a number, missing --out)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a command; ``kept`` says what was left behind."""

    def __init__(self, signum: int, kept: str = "") -> None:
        super().__init__(signum, kept)
        self.signum = signum
        self.kept = kept


def interrupted(exc: KeyboardInterrupt, kept: str) -> Interrupted:
    """The :class:`Interrupted` to raise for ``exc``: what it says was kept, else ``kept``."""
    why = exc.kept if isinstance(exc, Interrupted) and exc.kept else kept
    return Interrupted(getattr(exc, "signum", signal.SIGINT), why)


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
def signal_handlers(stop: Stop) -> Iterator[None]:
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


def state(path: Path) -> str:
    """What became of an output path a command did not write: '<path> unchanged' / 'not created'."""
    return f"{path} unchanged" if path.exists() else f"{path} not created"


# ---------------------------------------------------------------------------- parsing
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


class Parser(argparse.ArgumentParser):
    """Usage errors raise :class:`UsageError` (so :func:`analysis.cli.main.run` callers see one
    exception type); ``--help`` still prints and exits."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


#: What each command module's ``add_parser`` adds its subparser to (the subparsers are Parsers too).
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


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
    add_precision_args(p)


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """A recipe's arithmetic and memory layout (``train``, ``grid``, ``transfer``)."""
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="fp32 (default; every stored result's), bf16 (autocast: on CUDA, or on a CPU with bf16 "
                        "matrix units, AMX or AVX-512 BF16, refused elsewhere) or fp16 (CUDA only, with a "
                        "gradient scaler); part of the recipe and of run-store keys")
    p.add_argument("--channels-last", action="store_true",
                   help="2-D nets: weights and batches in channels-last (NHWC) memory, faster with oneDNN and "
                        "with bf16; numbers differ from the default layout in the last bits (its own recipe)")


def recipe(args: argparse.Namespace, **more: Any) -> TrainConfig:
    """The TrainConfig of :func:`add_recipe_args`' options (``more``: seed, device where the command has
    them); TrainConfig checks every value, the device string included."""
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup,
                       augment=not args.no_augment, amp=PRECISIONS[args.precision],
                       channels_last=args.channels_last, **more)


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
    """A device string (checked by TrainConfig, the one place that does) this machine has.
    A command that has made its TrainConfig already calls ``analysis.experiments.train.check_device``."""
    TrainConfig(device=device)
    available(device)


def checkpoint_path(name: str) -> Path:
    """A shipped checkpoint's file, or ``name`` as a path to an existing file."""
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


def results_path(value: str | None) -> Path | None:
    """``--out`` of ``grid`` and ``transfer``: None, or a writable .json or .csv path."""
    if value is None:
        return None
    out = check_writable(value, what="--out")
    if out.suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"--out {out}: give a .json or .csv file")
    return out


# ---------------------------------------------------------------------------- lesion and paths
#: How analysis.experiments.evaluation's messages name this command line's options.
EVAL_OPTIONS = Options("--data", "--data-path", "--size", "--resize", "--max-per-class")

EVAL_DATA_HELP = ("test data (default: the checkpoint's own, rebuilt from its metadata; without one, MNIST-1D for "
                  "a 1-D net and the embedded digits for a 1-channel 10-class net of 8, 16 or 32 px): digits, "
                  "mnist1d, or cifar10 / imagefolder from --data-path")


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
                        "dropout|dropout_paper, shortcut_scale, scale_residual, shortcut_dropout, activation, "
                        "stride_on=3x3|1x1, strides=1,2,2,2, downsampling); the ones assumed are printed")
    p.add_argument("--resize", type=whole, default=None,
                   help="ImageFolder: resize the shorter side to this, then center-crop (default for an "
                        "ImageNet-stem net: round(size * 256 / 224), 256 at 224 px; other nets: the whole image "
                        "resized)")
    p.add_argument("--max-per-class", type=whole, default=None, help="ImageFolder: cap images per class (>= 1)")


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


def check_shard_options(args: argparse.Namespace) -> None:
    """--executor, --address, --shards and --device of ``lesion`` and ``paths``, before any work (or
    any Ray start). On Ray the cluster's GPUs count, not this machine's: the device string is checked
    here, the GPUs by the cluster (a task asking for more than it has is refused)."""
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


def _setting_text(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)


def assumptions(values: Sequence[str] | None) -> dict[str, Any]:
    """--assume activation=bn_after_add --assume strides=1,2,2,2 ...: the settings a bare
    state_dict's weights cannot tell (analysis.store.checkpoints.UNTOLD_FIELDS), typed."""
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


def evaluate(args: argparse.Namespace, out: Path, body: Callable[[argparse.Namespace, Path, Path], int]) -> int:
    """The end of ``lesion`` and ``paths``: data and shard options checked, the checkpoint found (and
    not the CSV's own path), then ``body`` run; an interrupt writes no CSV and says so."""
    check_request(kind=args.data, path=args.data_path, size=args.size, resize=args.resize,
                  max_per_class=args.max_per_class, seed=args.split_seed, options=EVAL_OPTIONS)
    check_shard_options(args)
    path = checkpoint_path(args.checkpoint)
    if out.exists() and path.samefile(out):
        raise ConfigError(f"--out {out} is the checkpoint itself; give another file for the CSV")
    try:
        return body(args, path, out)
    except KeyboardInterrupt as exc:
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), f"no CSV written; {state(out)}") from None


def evaluation_data(args: argparse.Namespace, path: Path) -> tuple[Checkpoint, Dataset]:
    """The checkpoint and the test data it is evaluated on (``lesion`` and ``paths``), as
    :mod:`analysis.experiments.evaluation` chooses for the app too; which data, and why, is printed first."""
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


def where(args: argparse.Namespace, n: int, per: int) -> str:
    """'3 shards of up to 192 images, Ray tasks on the local Ray instance' for the progress line."""
    bounds = shard_bounds(n, args.shards, per)
    biggest = max(hi - lo for lo, hi in bounds)
    place = ("in this process" if args.executor == "local" else
             f"as Ray tasks on {args.address or 'a local Ray instance on 127.0.0.1'}")
    return f"{len(bounds)} shard{'s' * (len(bounds) != 1)} of up to {biggest} inputs, {place}"


def check_program_options(args: argparse.Namespace, name: str, own: bool) -> None:
    """Before a program file (.pt2, or an ONNX model run as one) is read: the named data is a kind the CLI
    reads (unless the program is a shipped one evaluated on its own data), and no option meant for a
    bare state_dict is given."""
    from analysis.experiments import programlesion

    onnx = programlesion.is_onnx(name)
    if not own:
        if onnx and args.data is None:  # check_kind's sentence names a .pt2
            raise ConfigError(f"{name} is an ONNX model, which carries no metadata to pick its data from: give "
                              f"{EVAL_OPTIONS.kind} {', '.join(evaluation.KINDS[:-1])} or {evaluation.KINDS[-1]}")
        programlesion.check_kind(args.data, name, EVAL_OPTIONS)
    for option, value in (("--plain/--residual", args.plain), ("--assume", args.assume)):
        if value is not None:
            raise ConfigError(f"{option} is for a bare state_dict; {name} is {'an ONNX model' if onnx else 'a program'}, "
                              "whose graph says what it computes")


def program_test_data(args: argparse.Namespace, chain: Any, name: str, meta: Any | None) -> Dataset:
    """A program's test data, checked to fit it (input shape, dtype, classes): a shipped program's own
    (``meta``, its ProgramMeta), else what ``--data`` and its options name."""
    from analysis.experiments import programlesion
    from analysis.store import programs

    if meta is not None:
        data = programs.dataset_for_program(meta)
    else:
        choice = programlesion.choose(chain, args.data, path=args.data_path, size=args.size, resize=args.resize,
                                      max_per_class=args.max_per_class, seed=args.split_seed, name=name,
                                      options=EVAL_OPTIONS)
        data = evaluation.load(choice)
    programlesion.check_fits(chain, data, name)
    return data
