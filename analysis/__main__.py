"""Command line: ``python -m analysis train ...`` (and ``lesion``, see --help)."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from .specs import MODELS


def _versions() -> dict:
    import numpy
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__}


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", choices=["digits", "cifar10", "imagefolder"],
                   help="dataset: the embedded digits, or CIFAR-10 / an ImageFolder tree from --data-path")
    p.add_argument("--data-path", default=None, help="local path of cifar-10-batches-py or the ImageFolder root")
    p.add_argument("--size", type=int, default=16, help="image size (digits: 8, 16 or 32; ImageFolder: any)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoints import save_checkpoint
    from .data import load_dataset
    from .specs import get_spec
    from .train import TrainConfig, config_dict, train

    data = load_dataset(args.data, args.data_path, size=args.size, seed=args.split_seed)
    spec = get_spec(args.model, plain=args.plain, preact=args.preact)
    spec = spec.replace(in_channels=data.channels, num_classes=data.num_classes, input_size=data.size)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup,
                      augment=not args.no_augment, seed=args.seed, device=args.device)
    bar = tqdm(total=None, unit="batch", desc=f"{spec.name} on {data.name}", dynamic_ncols=True)

    def progress(p):  # noqa: ANN001, ANN202
        if bar.total is None:
            bar.reset(total=p.epochs * p.steps_per_epoch)
        if p.phase == "batch":
            bar.update(1)
            bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}")
        else:
            h = p.history[-1]
            bar.write(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
                      f"test loss {h['test_loss']:.4f} acc {h['test_acc']:.4f}")

    t0 = time.perf_counter()
    result = train(spec, data, cfg, progress)
    bar.close()
    seconds = time.perf_counter() - t0
    images = len(data.y_train) * len(result.history)
    meta = {
        "dataset": data.describe(), "recipe": config_dict(cfg), "history": result.history,
        "final": result.final, "train_seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 1), "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m analysis " + " ".join(sys.argv[1:]),
        "normalisation": {"mean": data.mean, "std": data.std},
    }
    path = save_checkpoint(args.out, result.model, meta)
    f = result.final
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): test acc {f['test_acc']:.4f}, "
          f"train acc {f['train_acc']:.4f}, {seconds:.1f} s, {images / seconds:.0f} images/s")
    return 0


def cmd_lesion(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from . import lesion
    from .checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
    from .data import load_dataset, load_image_folder

    path = shipped_checkpoints().get(args.checkpoint, args.checkpoint)
    ck = load_checkpoint(path)
    if args.data_path is None and args.data == "digits":
        data = dataset_for(ck.meta) if ck.meta.get("dataset") else load_dataset("digits", size=ck.spec.input_size)
    elif args.data == "imagefolder" and ck.spec.stem == "imagenet":
        # torchvision ImageNet weights expect their own preprocessing, not statistics of the folder
        data = load_image_folder(args.data_path, size=ck.spec.input_size, resize=args.resize,
                                 normalise="imagenet", test_fraction=1.0, max_per_class=args.max_per_class)
    else:
        data = load_dataset(args.data, args.data_path, size=args.size)
    if (data.channels, data.num_classes) != (ck.spec.in_channels, ck.spec.num_classes):
        raise ValueError(
            f"{args.checkpoint} takes {ck.spec.in_channels} channels and {ck.spec.num_classes} classes; "
            f"{data.name} has {data.channels} channels and {data.num_classes} class folders (class index = "
            "sorted folder order, so an ImageNet val folder needs all 1000 class folders)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no CUDA device is available; use --device cpu")
    model = ck.model.to(args.device)
    bar = tqdm(total=1, unit="seq·batch", desc=f"{args.experiment} sweep", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    fn = {"single": lesion.single_sweep, "k": lesion.k_sweep, "reorder": lesion.reorder_sweep}[args.experiment]
    kw = {} if args.experiment == "single" else {"samples": args.samples, "seed": args.seed}
    df = fn(model, data.x_test, data.y_test, device=args.device, batch_size=args.batch_size, progress=progress, **kw)
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
    t.add_argument("--out", required=True, type=Path, help="checkpoint path (written atomically)")
    t.set_defaults(func=cmd_train)

    le = sub.add_parser("lesion", help="delete or reorder blocks of a trained net and record the test error",
                        description="Lesion sweeps (Veit et al. 2016) with prefix reuse; writes a CSV.")
    le.add_argument("--checkpoint", required=True,
                    help="a .pt/.pth file (ours or a torchvision state_dict) or a shipped name, e.g. digits_resnet56")
    add_data_args(le)
    le.add_argument("--resize", type=int, default=256, help="ImageNet ImageFolder: resize before the center crop")
    le.add_argument("--max-per-class", type=int, default=None, help="ImageFolder: cap images per class")
    le.add_argument("--experiment", choices=["single", "k", "reorder"], default="single")
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
    except ValueError as exc:  # bad input: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
