"""Training in the paper's spirit: SGD with momentum and weight decay, step or cosine schedule,
augmentation where it makes sense. Seeded and deterministic on the CPU; CUDA when asked.

Progress goes through a callback (the app draws ``st.progress``, the CLI a tqdm bar); a callback
that returns ``False`` cancels, and the epochs finished so far are kept in the result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Dataset, augment_batch
from .models import build_model
from .specs import ResNetSpec


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4  # He et al. 2015, Sec. 3.4
    schedule: str = "cosine"  # "cosine" or "step" (divide by 10 at 50% and 75% of training)
    warmup_epochs: int = 1  # the paper warms ResNet-110 up at lr 0.01 (Sec. 4.2)
    augment: bool = True
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("need lr > 0, 0 <= momentum < 1, weight decay >= 0")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be cosine or step, got {self.schedule!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for but no CUDA device is available; use --device cpu")


@dataclass
class Progress:
    """What the callback sees: after every batch (``phase='batch'``) and every epoch ('epoch')."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None  # the live model, so a caller can keep the weights on cancel

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    cancelled: bool
    seconds: float
    config: TrainConfig

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and force deterministic kernels for the duration, then restore the old setting."""
    old = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also NaN-fills every new empty tensor, which costs ~20 % of a CPU training
    # step and changes no result: every buffer we allocate is written before it is read.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill


def lr_at(config: TrainConfig, epoch_float: float) -> float:
    """Learning rate at a fractional epoch (0-based)."""
    if epoch_float < config.warmup_epochs:
        return config.lr * 0.1
    t = epoch_float / config.epochs
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))
    return config.lr * (0.1 ** ((t >= 0.5) + (t >= 0.75)))


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512, device: str = "cpu") -> Tensor:
    """Logits for ``x`` in eval mode; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, device: str = "cpu") -> dict:
    logits = predict(model, x, device=device)
    pred = logits.argmax(1)
    return {"loss": float(F.cross_entropy(logits, y)), "acc": float((pred == y).float().mean()),
            "correct": int((pred == y).sum()), "n": len(y)}


def train(spec: ResNetSpec, data: Dataset, config: TrainConfig = TrainConfig(),
          callback: Callable[[Progress], bool | None] | None = None) -> TrainResult:
    """Train a fresh model of ``spec`` on ``data``; returns the model (eval mode, on the CPU)."""
    config.validate()
    if spec.in_channels != data.channels or spec.num_classes != data.num_classes:
        raise ValueError(f"{spec.name} takes {spec.in_channels} channels and {spec.num_classes} classes, "
                         f"{data.name} has {data.channels} and {data.num_classes}; adapt the spec")
    t0 = time.perf_counter()
    history: list[dict] = []
    cancelled = False
    with deterministic(config.seed):
        model = build_model(spec.replace(input_size=data.size)).to(config.device)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # no decay on BN and biases
        opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=config.lr, momentum=config.momentum, nesterov=False)
        gen = torch.Generator().manual_seed(config.seed)
        n = len(data.y_train)
        steps = max(1, math.ceil(n / config.batch_size))
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=gen)
            total_loss, correct = 0.0, 0
            for step in range(steps):
                idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
                xb = data.x_train[idx]
                if config.augment:
                    xb = augment_batch(xb, data.augment, gen)
                xb, yb = xb.to(config.device), data.y_train[idx].to(config.device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(config, epoch - 1 + step / steps)
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                if callback and callback(Progress("batch", epoch, config.epochs, step + 1, steps,
                                                  loss.item(), history, model)) is False:
                    cancelled = True
                    break
            if cancelled:
                break
            test = evaluate(model, data.x_test, data.y_test, config.device)
            history.append({"epoch": epoch, "train_loss": total_loss / n, "train_acc": correct / n,
                            "test_loss": test["loss"], "test_acc": test["acc"],
                            "lr": lr_at(config, epoch), "seconds": time.perf_counter() - t0})
            if callback and callback(Progress("epoch", epoch, config.epochs, steps, steps,
                                              total_loss / n, history, model)) is False:
                cancelled = True
                break
    model = model.cpu().eval()
    return TrainResult(model, history, cancelled, time.perf_counter() - t0, config)


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
