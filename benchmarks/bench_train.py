"""Benchmark: the trainer's speed against a DataLoader baseline, per precision and layout, as a
roofline (achieved GFLOP/s beside the CPU's peak), measured side by side in one run.

1. The shipped digits recipe (ResNet-20, 16 px, batch 32) in our trainer against a baseline loop in the
   same run: the same model and optimiser fed by a torch DataLoader with per-sample augmentation (the
   usual torchvision-style pipeline), with the same per-epoch test evaluation.
2. The trainer in fp32, fp32 channels-last, bf16 and bf16 channels-last (``TrainConfig.amp`` /
   ``channels_last``) at the digits recipe and at the paper's CIFAR setting (ResNet-20, 3 x 32 x 32,
   batch 128; synthetic images, since no CIFAR is bundled): images/s after a warm-up epoch, the
   speed-up over fp32, and the achieved GFLOP/s from our exact count of a training step against the
   peak of the arithmetic each mode uses (analysis.core.machine.peaks: cores x FLOP/cycle x clock).
   Then the bare step of each mode (a fixed batch, no data pipeline, no test pass): what the
   arithmetic alone gains.
3. ``--compile``: torch.compile's steady-state gain on one fp32 step and its compile time, and from
   them the break-even in steps (compile time / time saved per step).

A training step's FLOPs: forward convolutions and the fc, 2 FLOPs per multiply-accumulate, from our
cost table (analysis.arch.costs, exact); backward twice that (the gradient of each layer's input and of
its weights each cost one forward's MACs), less the first conv's input gradient, which autograd does
not compute. Element-wise ops (BN, ReLU, additions, the optimiser) are left out: they are
memory-bound, not arithmetic.

    .venv/bin/python benchmarks/bench_train.py [--epochs 3] [--compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from analysis.arch.costs import layer_table
from analysis.arch.models import build_model
from analysis.arch.specs import ResNetSpec, get_spec
from analysis.core.machine import bf16_unit, peaks
from analysis.core.meta import Amp
from analysis.data.data import Dataset, load_digits
from analysis.experiments.train import TrainConfig, evaluate, train

MODES: dict[str, tuple[Amp, bool]] = {"fp32": ("off", False), "fp32 channels-last": ("off", True), "bf16": ("bf16", False),
         "bf16 channels-last": ("bf16", True)}


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


def step_flops(spec: ResNetSpec) -> int:
    """FLOPs of one training step per image: 3 x 2 x (conv + fc MACs) - 2 x the first conv's MACs."""
    df = layer_table(spec)
    macs = df.loc[df["op"].isin(["conv", "fc"]), "macs"]
    first = int(df.loc[df["op"] == "conv", "macs"].iloc[0])
    return 6 * int(sum(int(m) for m in macs)) - 2 * first


def synthetic(n: int, test: int, channels: int, size: int) -> Dataset:
    """Random normalised images (seeded), 10 classes: speed does not depend on what the pixels show."""
    g = torch.Generator().manual_seed(0)
    return Dataset("synthetic", torch.randn(n, channels, size, size, generator=g),
                   torch.randint(0, 10, (n,), generator=g), torch.randn(test, channels, size, size, generator=g),
                   torch.randint(0, 10, (test,), generator=g), [str(i) for i in range(10)], augment="crop_flip")


def images_per_second(spec: ResNetSpec, data: Dataset, cfg: TrainConfig) -> float:
    """Training images per second over epochs 2.. (the first epoch builds oneDNN's kernels)."""
    r = train(spec, data, cfg)
    first, last = r.history[0]["seconds"], r.history[-1]["seconds"]
    return len(data.y_train) * (cfg.epochs - 1) / (last - first)


def roofline(label: str, spec: ResNetSpec, data: Dataset, batch: int, epochs: int) -> dict[str, float]:
    flops = step_flops(spec)
    threads = torch.get_num_threads()
    peak = peaks(threads)
    print(f"\n{label}: {spec.name}, input {data.channels}x{data.size}x{data.size}, batch {batch}, "
          f"{len(data.y_train):,} images x {epochs - 1} timed epochs, {threads} threads")
    print(f"  training step: {flops / 1e6:,.1f} MFLOP per image (3 x 2 x conv+fc MACs - 2 x first conv's MACs)")
    out: dict[str, float] = {}
    for mode, (amp, cl) in MODES.items():
        if amp == "bf16" and bf16_unit() is None:
            print(f"  {mode:20s}: skipped (this CPU has no bf16 units)")
            continue
        cfg = TrainConfig(epochs=epochs, batch_size=batch, amp=amp, channels_last=cl, warmup_epochs=0)
        ips = images_per_second(spec, data, cfg)
        out[mode] = ips
        p = peak["bf16" if amp == "bf16" else "fp32"]
        achieved = ips * flops / 1e9
        print(f"  {mode:20s}: {ips:7.0f} images/s  {ips / out['fp32']:.2f}x fp32  {achieved:6.1f} GFLOP/s "
              f"= {100 * achieved / p.gflops:5.1f} % of the {'bf16' if amp == 'bf16' else 'fp32'} peak")
    for kind, p in peak.items():
        print(f"  {kind} peak: {p.formula}")
    return out


def bare_steps(label: str, spec: ResNetSpec, batch: int, steps: int = 12) -> dict[str, float]:
    """The bare training step per mode (one fixed batch, model, SGD; no data pipeline, no test pass):
    what the arithmetic alone gains, beside the trainer's figures above."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, spec.in_channels, spec.input_size, spec.input_size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    out: dict[str, float] = {}
    for mode, (amp, cl) in MODES.items():
        if amp == "bf16" and bf16_unit() is None:
            continue
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = build_model(spec, seed=0).to(memory_format=fmt)  # type: ignore[call-overload]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = x0.contiguous(memory_format=fmt)

        for i in range(3 + steps):  # 3 warm-up steps (oneDNN builds its kernels), then timed
            if i == 3:
                t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[mode] = batch * steps / (time.perf_counter() - t0)
    print(f"\nbare step, {label} (batch {batch}): " + ", ".join(
        f"{mode} {ips:.0f} images/s ({ips / out['fp32']:.2f}x)" for mode, ips in out.items()))
    return out


def compile_break_even(spec: ResNetSpec, batch: int, steps: int = 20) -> None:
    """torch.compile on one fp32 training step: compile time, steady-state gain, break-even in steps."""
    model = build_model(spec, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, spec.in_channels, spec.input_size, spec.input_size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    compiled = torch.compile(model)

    def step(m: Callable[[torch.Tensor], torch.Tensor]) -> None:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step(compiled)
    first = time.perf_counter() - t0
    per: dict[str, float] = {}
    runs: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (("eager", model), ("compiled", compiled))
    for name, m in runs:
        for _ in range(3):
            step(m)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(m)
        per[name] = (time.perf_counter() - t0) / steps
    saved = per["eager"] - per["compiled"]
    print(f"\ntorch.compile (fp32, batch {batch}): first step {first:.1f} s (compilation), steady "
          f"{1e3 * per['eager']:.1f} ms eager vs {1e3 * per['compiled']:.1f} ms compiled "
          f"({per['eager'] / per['compiled']:.2f}x)")
    if saved > 0:
        print(f"  break-even after {first / saved:,.0f} steps (compile time / time saved per step); the shipped "
              "digits recipe runs 40 x 43 = 1,720 steps")
    else:
        print("  no steady-state gain: compilation never pays here")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40, help="epochs of the shipped recipe in part 1")
    ap.add_argument("--baseline-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--roofline-epochs", type=int, default=4, help="epochs per mode in part 2 (the first untimed)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile's break-even (minutes)")
    ap.add_argument("--bare-only", action="store_true", help="only the bare training steps (about a minute)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.bare_only:
        bare_steps("digits recipe", get_spec("cifar_resnet20").replace(in_channels=1, input_size=16), 32)
        bare_steps("CIFAR setting", get_spec("cifar_resnet20"), 128)
        return 0
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

    digits = roofline("Digits recipe", spec, data, args.batch_size, args.roofline_epochs)
    cifar_spec = get_spec("cifar_resnet20")
    cifar = roofline("CIFAR setting", cifar_spec, synthetic(1280, 256, 3, 32), 128, args.roofline_epochs)
    bare_steps("digits recipe", spec, args.batch_size)
    bare_steps("CIFAR setting", cifar_spec, 128)
    print("\nagainst the DataLoader baseline (images/s):")
    for label, res in (("digits recipe", digits),):
        for mode, ips in res.items():
            print(f"  {label}, {mode}: {ips / base_ips:.2f}x")
    best = {k: max(v.values()) / v["fp32"] for k, v in (("digits", digits), ("cifar", cifar)) if v}
    print(f"\ngoals: CIFAR setting best {best.get('cifar', 0):.2f}x fp32 (goal >= 2x); digits recipe best "
          f"{best.get('digits', 0):.2f}x fp32 (goal >= 1.4x)")
    if args.compile:
        compile_break_even(dataclasses.replace(spec), args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
