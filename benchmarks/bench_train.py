"""Benchmark: train the shipped ResNet-20 recipe on the embedded digits (time, images/s, accuracy),
against a baseline loop measured in the same run: the same model and optimiser fed by a
torch DataLoader with per-sample augmentation (the usual torchvision-style pipeline), with the same
per-epoch test evaluation.

    .venv/bin/python benchmarks/bench_train.py [--epochs 40] [--baseline-epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from analysis.arch.models import build_model
from analysis.arch.specs import ResNetSpec, get_spec
from analysis.data.data import Dataset, load_digits
from analysis.experiments.train import TrainConfig, evaluate, train


class ShiftDataset(torch.utils.data.Dataset):
    """Per-sample random shift, as a transform pipeline would do it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(self.x[i], (2, 2, 2, 2))
        dy, dx = torch.randint(0, 5, (2,)).tolist()
        return img[:, dy:dy + self.x.shape[-2], dx:dx + self.x.shape[-1]], self.y[i]


def baseline(spec: ResNetSpec, data: Dataset, epochs: int, batch: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(ShiftDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = evaluate(model, data.x_test, data.y_test)["acc"]  # same per-epoch test pass as ours
    seconds = time.perf_counter() - t0
    return seconds, acc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--baseline-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_digits(16)
    spec = get_spec("cifar_resnet20").replace(in_channels=1, input_size=16)
    n = len(data.y_train)
    r = train(spec, data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size))
    ours_ips = n * args.epochs / r.seconds
    b_sec, b_acc = baseline(spec, data, args.baseline_epochs, args.batch_size)
    base_ips = n * args.baseline_epochs / b_sec
    print(f"ResNet-20 on digits16, {n} training images, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"ours     : {args.epochs} epochs in {r.seconds:6.1f} s  {ours_ips:7.0f} images/s  "
          f"test acc {r.final['test_acc']:.4f}")
    print(f"baseline : {args.baseline_epochs} epochs in {b_sec:6.1f} s  {base_ips:7.0f} images/s  "
          f"(DataLoader + per-sample augmentation + per-epoch test pass; test acc after {args.baseline_epochs} epochs {b_acc:.4f})")
    print(f"speed ratio (images/s): {ours_ips / base_ips:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
