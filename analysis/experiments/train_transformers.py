"""Training the small transformers of :mod:`analysis.arch.tinyformers` on the embedded datasets.

:func:`analysis.experiments.train.fit` is the ResNets' loop (SGD, a flat warm-up at lr/10, the
dropout-shortcut generator every ResNet carries); transformers want AdamW with a linear warm-up and a
cosine decay, so they get this small generic loop, which works for any ``nn.Module`` that maps a
batch of inputs to logits. Everything random (initial weights, batch order, augmentation) draws from
local generators seeded by the recipe's seed; the global RNG is never read, and a run is
deterministic for a given thread count.

:data:`NETS` names the four shipped nets (a residual ViT on the digits, a residual transformer on
MNIST-1D, and their no-residual twins) with one recipe per dataset; :func:`train_net` trains one of
them for any seed and returns the module with its metadata, unsaved (a study trains several seeds);
:func:`analysis.store.programs.save_program` writes it as a ``.pt2``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram

from analysis.arch.graphnet import export_module
from analysis.arch.tinyformers import build
from analysis.core.errors import ConfigError
from analysis.core.meta import PRECISIONS, TrainConfig, now, versions
from analysis.data.data import Dataset, load_digits, load_mnist1d
from analysis.experiments.train import Progress, fit_loop

__all__ = ["EXPORT_BATCH", "NETS", "NetSpec", "Recipe", "accuracy_of_program", "export_net", "fit_generic",
           "lr_at", "train_net"]

#: The batch the programs are exported with. An exported graph keeps its example's batch in its
#: reshapes, so the lesion engine runs other batches in pieces of this size (the last one padded).
#: 50 divides both test sets (450 digits, 1,000 MNIST-1D sequences): no padding there. Batch 1 ran the
#: digits ViT's single-layer sweep 13x slower (58 s against 4.5 s, every count identical), the time
#: going to one graph call per input.
EXPORT_BATCH = 50


@dataclass(frozen=True)
class Recipe:
    """AdamW (decoupled weight decay on matrices only) with a linear warm-up to ``lr`` and a cosine
    decay to 0, the dataset's own augmentation, gradients clipped to norm ``clip``."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float = 1.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1 and isinstance(self.batch_size, int)
                and self.batch_size >= 1 and 0 <= self.warmup_epochs <= self.epochs and self.lr > 0
                and self.weight_decay >= 0 and self.clip > 0 and isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"not a usable recipe: {self}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return {"optimizer": "AdamW", "schedule": "linear warm-up, cosine to 0", **d}


def lr_at(recipe: Recipe, t: float) -> float:
    """The learning rate at fractional epoch ``t`` (0-based): linear warm-up, then cosine to 0."""
    if t < recipe.warmup_epochs:
        return recipe.lr * (t + 1e-3) / recipe.warmup_epochs
    span = max(recipe.epochs - recipe.warmup_epochs, 1e-9)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * (t - recipe.warmup_epochs) / span))


def fit_generic(model: nn.Module, data: Dataset, recipe: Recipe,
                callback: Callable[[dict[str, Any]], None] | None = None, *, precision: str = "fp32",
                channels_last: bool = False) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data`` (normalised inputs, integer labels) with the trainer's loop
    (:func:`analysis.experiments.train.fit_loop`) and this recipe's AdamW, schedule and clipping;
    returns the per-epoch history (running loss and accuracy on the augmented batches, test loss and
    accuracy, lr, seconds). ``callback`` sees each epoch's row. The model ends in eval mode."""
    gen = torch.Generator().manual_seed(recipe.seed + 1)  # batch order and augmentation; weights use seed
    named = list(model.named_parameters())
    decay = [p for _, p in named if p.ndim > 1 and p.requires_grad]
    rest = [p for _, p in named if p.ndim <= 1 and p.requires_grad]  # biases and LayerNorms: no decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=recipe.lr, betas=recipe.betas)
    # the loop's settings; its lr fields are not read (the schedule below is), warm-up 0 keeps them valid
    loop = TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=min(recipe.lr, 10.0), warmup_epochs=0,
                       augment=recipe.augment, seed=recipe.seed, amp=PRECISIONS[precision],
                       channels_last=channels_last)

    def each_epoch(p: Progress) -> None:
        if callback and p.phase == "epoch":
            callback(p.history[-1])

    history = fit_loop(model, data, loop, opt, gen, lambda t: lr_at(recipe, t), clip=recipe.clip,
                       callback=each_epoch)
    for row in history:  # the shipped files' precision for times
        row["seconds"] = round(row["seconds"], 2)
    return history


@dataclass(frozen=True)
class NetSpec:
    """One of the shipped nets: its dataset, architecture record and recipe."""

    dataset: str  # "digits16" or "mnist1d"
    arch: Mapping[str, Any]
    recipe: Recipe


_VIT = {"family": "vit", "image": 16, "patch": 4, "channels": 1, "width": 64, "depth": 4, "heads": 4,
        "hidden": 128, "classes": 10}
_SEQ = {"family": "seq_transformer", "length": 40, "channels": 1, "width": 64, "depth": 4, "heads": 4,
        "hidden": 128, "classes": 10}
_DIGITS_RECIPE = Recipe(epochs=40, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_epochs=3)
_MNIST1D_RECIPE = Recipe(epochs=25, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_epochs=3)

NETS: dict[str, NetSpec] = {
    "digits_vit": NetSpec("digits16", {**_VIT, "residual": True}, _DIGITS_RECIPE),
    "digits_vit_plain": NetSpec("digits16", {**_VIT, "residual": False}, _DIGITS_RECIPE),
    "mnist1d_transformer": NetSpec("mnist1d", {**_SEQ, "residual": True}, _MNIST1D_RECIPE),
    "mnist1d_transformer_plain": NetSpec("mnist1d", {**_SEQ, "residual": False}, _MNIST1D_RECIPE),
}


def load_data(dataset: str, split_seed: int = 0) -> Dataset:
    """The embedded dataset a shipped transformer trains on, normalised from its training split."""
    if dataset == "digits16":
        return load_digits(size=16, seed=split_seed)
    if dataset == "mnist1d":
        return load_mnist1d(seed=split_seed)
    raise ConfigError(f"unknown dataset {dataset!r} for the shipped transformers: digits16 or mnist1d")


def export_net(model: nn.Module, data: Dataset) -> ExportedProgram:
    """The trained net as a ``torch.export`` program for a batch of :data:`EXPORT_BATCH` inputs."""
    return export_module(model.eval(), (data.x_test[:EXPORT_BATCH],), name="transformer")


def accuracy_of_program(ep: ExportedProgram, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Correct predictions of an exported program on ``x``, run in pieces of its exported batch (the
    last piece padded with zeros, its padding dropped): what the shipped file gives, exactly."""
    gm = ep.module()
    spec = ep.graph_signature.user_inputs[0]
    val = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == spec).meta["val"]
    b = int(val.shape[0])
    preds = []
    with torch.inference_mode():
        for lo in range(0, len(x), b):
            part = x[lo:lo + b]
            short = b - len(part)
            if short:
                part = torch.cat([part, part.new_zeros((short, *part.shape[1:]))])
            preds.append(gm(part).argmax(1)[:b - short])
    correct = int((torch.cat(preds) == y).sum()) if preds else 0
    return {"correct": correct, "n": len(y), "acc": correct / max(len(y), 1)}


def train_net(name: str, seed: int = 0, *, callback: Callable[[dict[str, Any]], None] | None = None,
              data: Dataset | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train shipped net ``name`` (:data:`NETS`) from ``seed`` (weights from ``seed``, batch order and
    augmentation from ``seed + 1``); returns the module in eval mode and its metadata (the JSON that
    :func:`analysis.store.programs.save_program` writes), unsaved. The final train and test accuracies
    are those of the exported program (eval mode, no augmentation, whole splits), so they are what a
    saved file re-evaluates to."""
    if name not in NETS:
        raise ConfigError(f"unknown net {name!r}; choose from {', '.join(NETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    spec = NETS[name]
    recipe = dataclasses.replace(spec.recipe, seed=seed)
    data = data if data is not None else load_data(spec.dataset)
    if data.name != spec.dataset:
        raise ConfigError(f"{name} trains on {spec.dataset}, not {data.name}")
    t0 = time.perf_counter()
    model = build(spec.arch, seed=seed)
    history = fit_generic(model, data, recipe, callback)
    seconds = time.perf_counter() - t0
    ep = export_net(model, data)
    train, test = (accuracy_of_program(ep, x, y) for x, y in ((data.x_train, data.y_train),
                                                               (data.x_test, data.y_test)))
    meta = {
        "format": "resnet-lens-program/1", "name": name, "architecture": dict(spec.arch),
        "residual": bool(spec.arch["residual"]), "params": sum(p.numel() for p in model.parameters()),
        "dataset": data.name, "split_seed": data.split_seed, "train_size": len(data.y_train),
        "test_size": len(data.y_test), "classes": data.num_classes, "input_shape": list(data.x_test.shape[1:]),
        "normalisation": {"mean": list(data.mean), "std": list(data.std)},
        "recipe": recipe.to_dict(), "seed": seed, "history": history,
        "final": {"train_acc": train["acc"], "train_correct": train["correct"], "train_n": train["n"],
                  "test_acc": test["acc"], "test_correct": test["correct"], "test_n": test["n"]},
        "export_batch": min(EXPORT_BATCH, len(data.x_test)), "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        "versions": versions(), "created": now(),
    }
    return model, meta
