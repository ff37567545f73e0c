"""``python -m analysis train``: train one net and save an atomic checkpoint; the first signal stops
at the next batch and saves the finished epochs as a *cancelled* checkpoint."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from analysis.arch.specs import MODELS, ResNetSpec, get_spec
from analysis.cli.common import (
    Interrupted,
    Stop,
    Subparsers,
    add_data_args,
    add_recipe_args,
    check_data_options,
    data_size,
    digit_classes,
    interrupted,
    recipe,
    state,
    whole,
)
from analysis.core.errors import ConfigError
from analysis.core.io import check_writable
from analysis.core.meta import TrainConfig, precision_text
from analysis.data.data import load_dataset, load_digits, load_mnist1d
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH
from analysis.experiments import precision as prec
from analysis.experiments.train import Progress, check_device, train_checkpoint
from analysis.store.checkpoints import save_checkpoint_or_rescue


def add_parser(sub: Subparsers) -> None:
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
    t.add_argument("--out", required=True, help="checkpoint path (checked before training, written atomically)")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace, stop: Stop) -> int:
    out = check_writable(args.out, what="--out")
    check_data_options(args)
    cfg = recipe(args, seed=args.seed, device=args.device)  # the device string checked here
    check_device(cfg.device)
    spec = get_spec(args.model, plain=args.plain, preact=args.preact)
    check_dims(spec, args.data)
    # refused before the data are read: bf16 on a CPU without bf16 units, channels-last for a 1-D net
    prec.check(cfg.precision, cfg.device)
    prec.check_layout(cfg.channels_last, spec.dims)
    if args.classes is not None:
        digit_classes(args)  # refused before any work
    kept = f"no checkpoint written; {state(out)}"
    try:
        return _train(args, stop, out, cfg, spec)
    except KeyboardInterrupt as exc:
        raise interrupted(exc, kept) from None


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
    if args.deterministic:
        if cfg.device.startswith("cuda"):
            # cuBLAS is deterministic only with a fixed workspace, read when it starts: set before any CUDA work
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)  # this process only: the CLI runs one training
    if args.classes is not None:
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
            bar.write(f"epoch {h['epoch']:3d}  running train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
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
            raise Interrupted(stop.signum, f"{where} before any epoch finished; nothing saved, {state(out)}")
        try:
            save_checkpoint_or_rescue(out, ck.model, m)
        except KeyboardInterrupt:
            raise Interrupted(stop.signum, f"{where}; stopped again while saving, {state(out)}") from None
        raise Interrupted(stop.signum, f"{where}; the {n} finished epoch{'s' * (n != 1)} saved to {out} as a "
                                       f"{m.status} checkpoint (test acc {m.final['test_acc']:.4f})")
    path = save_checkpoint_or_rescue(out, ck.model, m)
    f = m.final
    clean = (f"clean train acc {f['train_acc_clean']:.4f} (eval mode, whole training set), "
             if "train_acc_clean" in f else "")
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): test acc {f['test_acc']:.4f}, {clean}"
          f"running train acc {f['train_acc']:.4f}, {m.train_seconds:.1f} s, {m.images_per_second or 0:.0f} images/s "
          f"in {precision_text(cfg.precision, cfg.channels_last)}")
    return 0
