"""Command line: ``python -m analysis train ...`` (and ``lesion``, see --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LensError
from .lesion import SWEEP_KINDS
from .specs import MODELS


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", choices=["digits", "cifar10", "imagefolder"],
                   help="dataset: the embedded digits, or CIFAR-10 / an ImageFolder tree from --data-path")
    p.add_argument("--data-path", default=None, help="local path of cifar-10-batches-py or the ImageFolder root")
    p.add_argument("--size", type=int, default=16, help="image size (digits: 8, 16 or 32; ImageFolder: any)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .checkpoints import save_checkpoint
    from .data import load_dataset
    from .specs import get_spec
    from .train import Progress, TrainConfig, train_checkpoint

    if args.deterministic:
        torch.use_deterministic_algorithms(True)  # this process only: the CLI runs one training
    data = load_dataset(args.data, args.data_path, size=args.size, seed=args.split_seed)
    spec = get_spec(args.model, plain=args.plain, preact=args.preact)
    spec = spec.replace(in_channels=data.channels, num_classes=data.num_classes, input_size=data.size)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup,
                      augment=not args.no_augment, seed=args.seed, device=args.device)
    bar = tqdm(total=None, unit="batch", desc=f"{spec.name} on {data.name}", dynamic_ncols=True)

    def progress(p: Progress) -> None:
        if bar.total is None:
            bar.reset(total=p.epochs * p.steps_per_epoch)
        if p.phase == "batch":
            bar.update(1)
            bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}")
        else:
            h = p.history[-1]
            bar.write(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
                      f"test loss {h['test_loss']:.4f} acc {h['test_acc']:.4f}")

    ck = train_checkpoint(spec, data, cfg, progress, command="python -m analysis " + " ".join(sys.argv[1:]))
    bar.close()
    path = save_checkpoint(args.out, ck.model, ck.meta)
    f, m = ck.meta.final, ck.meta
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): test acc {f['test_acc']:.4f}, "
          f"train acc {f['train_acc']:.4f}, {m.train_seconds:.1f} s, {m.images_per_second or 0:.0f} images/s")
    return 0


def cmd_lesion(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from . import lesion
    from .checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
    from .data import load_dataset, load_image_folder
    from .errors import ConfigError, DatasetError

    path = shipped_checkpoints().get(args.checkpoint, args.checkpoint)
    ck = load_checkpoint(path)
    norm = ck.meta.normalisation  # evaluate on the input scale the net was trained on
    if args.data_path is None and args.data == "digits":
        if ck.meta.dataset is None:
            raise DatasetError(f"{args.checkpoint} carries no dataset metadata; give --data and --data-path")
        data = dataset_for(ck.meta)
    elif args.data == "imagefolder" and ck.spec.stem == "imagenet":
        # torchvision ImageNet weights expect their own preprocessing, not statistics of the folder
        data = load_image_folder(args.data_path, size=ck.spec.input_size, resize=args.resize,
                                 normalise="imagenet", normalisation=norm, test_fraction=1.0,
                                 max_per_class=args.max_per_class)
    else:
        data = load_dataset(args.data, args.data_path, size=args.size, normalisation=norm)
    if (data.channels, data.num_classes) != (ck.spec.in_channels, ck.spec.num_classes):
        raise DatasetError(
            f"{args.checkpoint} takes {ck.spec.in_channels} channels and {ck.spec.num_classes} classes; "
            f"{data.name} has {data.channels} channels and {data.num_classes} class folders (class index = "
            "sorted folder order, so an ImageNet val folder needs all 1000 class folders)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA device is available; use --device cpu")
    model = ck.model.to(args.device)
    bar = tqdm(total=1, unit="seq·batch", desc=f"{args.experiment} sweep", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    df = lesion.run_sweep(args.experiment, model, data.x_test, data.y_test, samples=args.samples, seed=args.seed,
                          device=args.device, batch_size=args.batch_size, progress=progress)
    bar.close()
    df.insert(0, "checkpoint", str(args.checkpoint))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    if args.experiment == "single":
        print(df[["deleted", "downsample", "error"]].to_string(index=False))
    else:
        print(lesion.summarise(df).to_string(index=False))
    print(f"wrote {args.out} ({len(df)} rows)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description="ResNet Lens command line.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a ResNet (or its plain twin) and save an atomic checkpoint",
                       description="Train with SGD + momentum, weight decay and a step or cosine schedule; "
                                   "seeded and deterministic on the CPU.")
    t.add_argument("--model", default="cifar_resnet20",
                   help=f"built-in name ({', '.join(MODELS)}) or cifar_resnet<6n+2>; prefixes plain_/preact_ work")
    t.add_argument("--plain", action="store_true", help="train the plain twin (shortcuts removed)")
    t.add_argument("--preact", action="store_true", help="use pre-activation blocks")
    add_data_args(t)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    t.add_argument("--warmup", type=int, default=1, help="epochs at lr/10 before the schedule")
    t.add_argument("--no-augment", action="store_true", help="turn off random shifts / crops / flips")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True) for this process (CUDA: slower, repeatable)")
    t.add_argument("--out", required=True, type=Path, help="checkpoint path (written atomically)")
    t.set_defaults(func=cmd_train)

    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict) or a shipped name, e.g. digits_resnet56")
    add_data_args(le)
    le.add_argument("--resize", type=int, default=256, help="ImageNet ImageFolder: resize before the center crop")
    le.add_argument("--max-per-class", type=int, default=None, help="ImageFolder: cap images per class")
    le.add_argument("--experiment", choices=list(SWEEP_KINDS), default="single")
    le.add_argument("--samples", type=int, default=5, help="random samples per k (k and reorder)")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--batch-size", type=int, default=256)
    le.add_argument("--device", default="cpu", help="cpu or cuda")
    le.add_argument("--out", type=Path, required=True, help="results CSV")
    le.set_defaults(func=cmd_lesion)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LensError as exc:  # bad input: one clear line, no traceback (a bug still shows as one)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
