"""Training in the paper's spirit: SGD with momentum and weight decay, step or cosine schedule,
augmentation where it makes sense. CUDA when asked.

Reproducible without touching process-wide state: the weights, the batch order and the
augmentation all draw from generators seeded by the recipe's seed, never from the global RNG, and
no global flag is set on the CPU. So two trainings running at once (two browser sessions) cannot
change each other's results. The CPU kernels used here (conv, BN, ReLU, SGD) are deterministic for a
given thread count. On CUDA, training runs with cuDNN's deterministic algorithms, flags held only
while CUDA work runs (:func:`cuda_determinism`, which says what is and is not bit-reproducible on a
GPU); the CLI's ``--deterministic`` also sets ``torch.use_deterministic_algorithms(True)``.

On a GPU the training and test tensors are moved to it once, when they fit in half its free memory
and the augmentation runs there (:func:`place`); otherwise each batch is moved as it is used.
Logits come back to the CPU in one copy per evaluation. ``TrainConfig.amp`` trains in mixed
precision (:mod:`analysis.experiments.precision`): bf16 autocast on CUDA or on a CPU with bf16
matrix units (AMX, AVX-512 BF16), fp16 with a gradient scaler on CUDA; ``channels_last`` keeps a 2-D
net's weights and batches in NHWC memory. fp32 in the default layout is the path every stored
result was made with, and stays exactly as it was. None of the CUDA path has run on this project's
machines (no GPU): it is untested.

Progress goes through a callback (the app draws ``st.progress``, the CLI a tqdm bar); a callback
that returns ``False`` cancels, and the epochs finished so far are kept in the result.
With ``grad_every=k`` the gradient norm reaching each block (and each block's parameters) is
recorded every k optimiser steps (:mod:`analysis.experiments.gradflow`); recording reads gradients only, so the
weights and history are those of the same run without it.
:func:`train_checkpoint` is the one entry the CLI and the training page share.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.models import ResNet, build_model
from analysis.arch.specs import ResNetSpec
from analysis.core.errors import ConfigError, DatasetError, DivergedError
from analysis.core.meta import RunMeta, TrainConfig, now, versions
from analysis.data.data import Dataset, augment_batch
from analysis.experiments import precision as prec
from analysis.experiments.gradflow import GradientRecorder, check_every
from analysis.store.checkpoints import Checkpoint

__all__ = ["Placed", "Progress", "check_device", "check_fits", "cuda_determinism", "TrainConfig", "TrainResult", "evaluate",
           "fit_loop", "lr_at", "place", "predict", "train", "train_checkpoint"]


@dataclass
class Progress:
    """What the callback sees: after every batch (``phase='batch'``) and every epoch ('epoch')."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None  # the live model, so a caller can keep the weights on cancel
    # the gradient-flow rows recorded so far (analysis.experiments.gradflow's columns; the live list, so a caller
    # interrupted from outside keeps them); empty when the run does not record
    gradients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


@dataclass
class TrainResult:
    model: ResNet
    history: list[dict[str, Any]]
    cancelled: bool
    seconds: float
    config: TrainConfig
    # gradient-flow records (analysis.experiments.gradflow.COLUMNS) when trained with grad_every > 0, else None
    gradients: pd.DataFrame | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def lr_at(config: TrainConfig, epoch_float: float) -> float:
    """Learning rate at a fractional epoch (0-based)."""
    if epoch_float < config.warmup_epochs:
        return config.lr * 0.1
    t = epoch_float / config.epochs
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))
    return config.lr * (0.1 ** ((t >= 0.5) + (t >= 0.75)))


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512, device: str = "cpu",
            precision: str = "fp32") -> Tensor:
    """Logits (fp32) for ``x`` in eval mode, on the CPU; the model's train/eval mode is restored
    afterwards. The model must be on ``device``; ``x`` may be on the CPU (each batch is moved once) or
    there already. The logits stay on the device until the end and come back in one copy.
    ``precision="bf16"`` computes under bf16 autocast (checked against the device first)."""
    prec.check(precision, device)
    was_training = model.training
    model.eval()
    try:
        with prec.autocast(precision, device):
            outs = [model(x[i:i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).cpu() if outs else torch.empty(0)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    logits = predict(model, x, device=device, precision=precision)
    y = y.cpu()  # the labels of test data kept on the device
    pred = logits.argmax(1)
    return {"loss": float(F.cross_entropy(logits, y)), "acc": float((pred == y).float().mean()),
            "correct": int((pred == y).sum()), "n": len(y)}


def check_device(device: str) -> None:
    """Refuse a CUDA device this machine does not have (before any work starts)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA device is available; use --device cpu")
    index = device.partition(":")[2]
    if device.startswith("cuda:") and index.isdigit() and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"there is no {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


_DETERMINISM_LOCK = threading.Lock()
_determinism_users = 0
_determinism_saved: tuple[bool, bool] = (False, False)


@contextlib.contextmanager
def cuda_determinism(device: str) -> Iterator[None]:
    """While a CUDA computation runs: cuDNN's deterministic algorithms and no autotuning
    (``torch.backends.cudnn.deterministic = True``, ``benchmark = False``), restored when the last
    computation using them ends. Nothing at all on the CPU, whose path stays exactly as it was.

    The two flags are process-wide in torch, so they are counted rather than merely saved and
    restored: two sessions computing at once on one GPU keep them set until both are done, and the
    values from before the first are put back after the last (a plain save/restore would let the
    one that ends first switch them off under the other, or leave them set for good).

    What is and is not bit-reproducible on a GPU with these settings (none of it run here: this
    machine has no GPU):

    * run to run on the same GPU model, driver, CUDA, cuDNN and torch: expected to be identical
      (deterministic cuDNN convolutions; cuBLAS GEMMs on one stream; the head's adaptive average
      pool to 1 is a mean, whose backward has no atomics);
    * across GPU models or library versions: not identical (other kernels, other summation orders);
    * against the CPU: never identical; on Ampere and later cuDNN convolutions run in TF32 by
      torch's default (``torch.backends.cudnn.allow_tf32``), which this leaves as it is.

    ``torch.use_deterministic_algorithms(True)`` is *not* set here: it is process-wide, makes every op
    without a deterministic kernel raise, and needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the
    environment before cuBLAS starts; the CLI's ``train --deterministic`` sets it for its own process."""
    global _determinism_users, _determinism_saved
    if not device.startswith("cuda"):
        yield
        return
    cudnn = torch.backends.cudnn
    with _DETERMINISM_LOCK:
        if _determinism_users == 0:
            _determinism_saved = (bool(cudnn.deterministic), bool(cudnn.benchmark))
        _determinism_users += 1
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        with _DETERMINISM_LOCK:
            _determinism_users -= 1
            if _determinism_users == 0:
                cudnn.deterministic, cudnn.benchmark = _determinism_saved


#: Augmentations that run on tensors of any device (data.augment_batch draws its random numbers on the
#: CPU, from the run's generator, and gathers with CPU index tensors, which torch accepts for a
#: tensor elsewhere; crop_flip's flip mask is moved to the batch's device).
DEVICE_AUGMENTS = frozenset({"none", "shift", "shift1d", "crop_flip"})
#: Share of the device's free memory the training and test tensors may take when moved there once.
DATA_SHARE = 0.5


@dataclass
class Placed:
    """The tensors the training loop reads, where it reads them. ``resident``: on the device the run
    trains on, moved there once (always so on the CPU); else on the CPU, each batch moved as it is used."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    resident: bool


def _move(t: Tensor, device: str) -> Tensor:
    """The one host-to-device copy of the training loop (a function, so tests can count the copies)."""
    return t.to(device)


def _fits(device: str, nbytes: int) -> bool:
    """Whether ``nbytes`` of data can live on ``device`` next to the net and its activations: at
    most :data:`DATA_SHARE` of a CUDA device's free memory. Other devices are not measured."""
    if not device.startswith("cuda"):
        return True
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return nbytes <= DATA_SHARE * free


def place(data: Dataset, device: str, augment: bool) -> Placed:
    """Put the training and test tensors on ``device`` once, when they fit and the augmentation can
    run there (:data:`DEVICE_AUGMENTS`); otherwise leave them on the CPU. On the CPU nothing moves."""
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    if device == "cpu":
        return Placed(*tensors, resident=True)
    if (augment and data.augment not in DEVICE_AUGMENTS) or not _fits(device, sum(t.nbytes for t in tensors)):
        return Placed(*tensors, resident=False)
    x_train, y_train, x_test, y_test = (_move(t, device) for t in tensors)
    return Placed(x_train, y_train, x_test, y_test, resident=True)


def _shape(shape: tuple[int, ...]) -> str:
    """"1x40 (channels x samples)" or "3x32x32 (channels x height x width)"."""
    axes = "channels x samples" if len(shape) == 2 else "channels x height x width"
    return f"{'x'.join(map(str, shape))} ({axes})"


def check_fits(spec: ResNetSpec, data: Dataset) -> None:
    """Refuse, before a model is built, a net that cannot take ``data``: a 2-D net on sequences or a
    1-D net on images (the first conv would fail on the batch's shape), other input channels or
    another number of classes. The input *size* is not checked: training builds the net at the
    data's size (``spec.replace(input_size=data.size)``)."""
    sample = tuple(int(n) for n in data.x_train.shape[1:])
    where = f"{spec.name} takes {_shape(spec.input_shape())} inputs, {data.name} holds {_shape(sample)}"
    if spec.dims != data.dims:
        fix = ("a 1-D net (resnet1d_<6n+2>, vdcnn...) trains on sequences such as MNIST-1D" if data.dims == 1
               else "a 2-D net (cifar_resnet<6n+2>, resnet18...) trains on images such as the digits")
        raise ConfigError(f"{where}: a {spec.dims}-D net cannot train on {data.dims}-D data; {fix}")
    if spec.in_channels != data.channels:
        raise ConfigError(f"{where}: the net takes {spec.in_channels} channel{'s' * (spec.in_channels != 1)}, "
                          f"the data have {data.channels}; adapt the spec's in_channels")
    if spec.num_classes != data.num_classes:
        raise ConfigError(f"{spec.name} has {spec.num_classes} outputs, {data.name} has {data.num_classes} classes; "
                          "adapt the spec's num_classes")


def _nonfinite(v: float) -> str:
    return "NaN" if math.isnan(v) else "infinite"


def _first_nonfinite(model: nn.Module) -> str:
    """Name of the first parameter or buffer holding a NaN or an infinity, or ''."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return ""


def _diverged(config: TrainConfig, what: str) -> DivergedError:
    """Training blew up: nothing is kept, since weights with NaNs in them mean nothing."""
    return DivergedError(f"{what}: training diverged, lower the learning rate (lr {config.lr:g}, "
                       f"weight decay {config.weight_decay:g})")


def train(spec: ResNetSpec, data: Dataset, config: TrainConfig | None = None,
          callback: Callable[[Progress], bool | None] | None = None, *, grad_every: int = 0) -> TrainResult:
    """Train a fresh model of ``spec`` on ``data``; returns the model (eval mode, on the CPU).
    ``grad_every=k`` (> 0) records the gradient flow every k steps into ``result.gradients``."""
    config = config or TrainConfig()
    grad_every = check_every(grad_every)
    check_device(config.device)
    check_fits(spec, data)
    prec.check_layout(config.channels_last, spec.dims)
    prec.check(config.precision, config.device)
    # weights from the recipe's seed; the batch order and augmentation from a second stream
    model = build_model(spec.replace(input_size=data.size), seed=config.seed)
    return fit(model, data, config, callback, grad_every=grad_every)


def fit(model: ResNet, data: Dataset, config: TrainConfig, callback: Callable[[Progress], bool | None] | None = None,
        *, frozen: Sequence[nn.Module] = (), grad_every: int = 0, evaluations: int | None = None) -> TrainResult:
    """Train a prepared ``model`` (``train`` builds a fresh one; transfer learning hands in one with
    copied weights). The parameters of the ``frozen`` modules are left out of the optimizer and
    those modules stay in eval mode, so their weights *and* BatchNorm statistics end bit-identical.
    ``evaluations=m`` measures the test split after m evenly spaced epochs (the last always) instead
    of after every one: a run of 300 one-step epochs (5 labelled images) would spend its time testing."""
    grad_every = check_every(grad_every)
    check_device(config.device)
    prec.check(config.precision, config.device)
    prec.check_layout(config.channels_last, model.spec.dims)
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    model = prec.to_layout(model.to(config.device), config.channels_last)
    held = {id(p) for m in frozen for p in m.parameters()}
    # frozen for this fit only: the returned model's parameters get their requires_grad back (no trace)
    asked = [(p, p.requires_grad) for m in frozen for p in m.parameters()]
    for m in frozen:
        m.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if id(p) not in held]
    decay = [p for n, p in trainable if p.ndim > 1]
    no_decay = [p for n, p in trainable if p.ndim <= 1]  # no decay on BN and biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=config.lr, momentum=config.momentum, nesterov=False)
    gen = torch.Generator().manual_seed(config.seed)
    # a third stream for the dropout shortcut's masks (He et al. 2016), used by no other variant
    model.noise.manual_seed(config.seed + 1)
    n = len(data.y_train)
    steps = max(1, math.ceil(n / config.batch_size))
    recorder = GradientRecorder(model, grad_every) if grad_every else None
    placed = place(data, config.device, config.augment)
    # fp16 needs its loss scaled so small gradients do not flush to zero; bf16 has fp32's range
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    # the recorder's hooks leave the model however the loop ends
    try:
        with recorder or contextlib.nullcontext(), cuda_determinism(config.device):
            cancelled = _epochs(model, data, config, callback, opt, gen, steps, history, recorder, t0, tuple(frozen),
                                _eval_epochs(config.epochs, evaluations), placed, scaler)
    finally:
        for p, wanted in asked:
            p.requires_grad_(wanted)
        if config.channels_last:  # the model leaves in the default layout, as every other model is
            prec.to_layout(model, False)
    bad = _first_nonfinite(model) if cancelled else ""
    if bad:
        raise _diverged(config, f"the weights or BatchNorm statistics became non-finite in epoch {len(history) + 1} ({bad})")
    model = model.cpu().eval()
    return TrainResult(model, history, cancelled, time.perf_counter() - t0, config,
                       recorder.frame() if recorder else None)


def _epochs(model: nn.Module, data: Dataset, config: TrainConfig, callback: Callable[[Progress], bool | None] | None,
            opt: torch.optim.Optimizer, gen: torch.Generator, steps: int, history: list[dict[str, Any]],
            recorder: GradientRecorder | None, t0: float, frozen: tuple[nn.Module, ...] = (),
            measured: frozenset[int] | None = None, placed: Placed | None = None,
            scaler: torch.amp.GradScaler | None = None, *, schedule: Callable[[float], float] | None = None,
            clip: float | None = None) -> bool:
    """The training loop proper, for the ResNets' SGD (:func:`fit`) and any other optimiser
    (:func:`fit_loop`: the transformers' AdamW); fills ``history`` and returns whether the callback
    cancelled. ``placed``: where the tensors are (:func:`place`; default: where ``data`` holds them).
    ``schedule``: the learning rate at a fractional epoch (default: :func:`lr_at` of the recipe);
    ``clip``: the gradients' norm is clipped to it before each step (default: not clipped)."""
    lr_of = schedule or (lambda t: lr_at(config, t))
    cancelled = False
    n = len(data.y_train)
    rows = recorder.rows if recorder else []
    placed = placed or Placed(data.x_train, data.y_train, data.x_test, data.y_test, resident=config.device == "cpu")
    for epoch in range(1, config.epochs + 1):
        model.train()
        for m in frozen:  # a frozen BatchNorm keeps its running statistics
            m.eval()
        # drawn on the CPU from the run's generator on every device: the same order everywhere
        perm = torch.randperm(n, generator=gen)
        if placed.resident:
            perm = perm.to(placed.x_train.device)  # one small copy an epoch, not one per batch
        total_loss, correct = 0.0, 0
        for step in range(steps):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            xb, yb = placed.x_train[idx], placed.y_train[idx]
            if config.augment:
                xb = augment_batch(xb, data.augment, gen)
            if not placed.resident:
                xb, yb = _move(xb, config.device), _move(yb, config.device)
            xb = prec.batch_layout(xb, config.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_of(epoch - 1 + step / steps)
            if recorder:
                recorder.arm((epoch - 1) * steps + step, epoch)
            with prec.autocast(config.precision, config.device):
                out = model(xb)
                loss = F.cross_entropy(out, yb)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                if not bool(torch.isfinite(xb).all()):
                    raise DatasetError(f"{data.name}: the training images of epoch {epoch} step {step + 1} "
                                       "hold NaN or infinite values")
                raise _diverged(config, f"loss became {_nonfinite(loss_value)} at epoch {epoch} step {step + 1}")
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if recorder:
                    recorder.collect()  # the gradients of this step, before the update
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
            else:  # fp16: gradients of the scaled loss, unscaled before anyone reads them
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                if recorder:
                    recorder.collect()
                scaler.step(opt)  # skipped when a gradient overflowed; the scale then shrinks
                scaler.update()
            total_loss += loss_value * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            if callback and callback(Progress("batch", epoch, config.epochs, step + 1, steps,
                                              loss_value, history, model, rows)) is False:
                cancelled = True
                break
        if cancelled:
            break
        bad = _first_nonfinite(model)  # the last step can break the weights without a loss showing it
        if bad:
            raise _diverged(config, f"the weights or BatchNorm statistics became non-finite at epoch {epoch} ({bad})")
        if measured is not None and epoch not in measured:
            continue  # not a measured epoch: no history row (the weights were checked above)
        test = evaluate(model, placed.x_test, placed.y_test, config.device)
        # train_loss/train_acc: the running numbers of the epoch (augmented batches, train mode, weights
        # moving); after the last epoch also the clean ones: one pass over the whole training set in
        # eval mode without augmentation (evaluate: no_grad, BN's running statistics and every
        # generator untouched, so the weights and the numbers before are what they were without it)
        clean = evaluate(model, placed.x_train, placed.y_train, config.device) if epoch == config.epochs else None
        history.append({"epoch": epoch, "train_loss": total_loss / n, "train_acc": correct / n,
                        "test_loss": test["loss"], "test_acc": test["acc"],
                        **({"train_loss_clean": clean["loss"], "train_acc_clean": clean["acc"]} if clean else {}),
                        "lr": lr_of(epoch), "seconds": time.perf_counter() - t0})
        if callback and callback(Progress("epoch", epoch, config.epochs, steps, steps,
                                          total_loss / n, history, model, rows)) is False:
            cancelled = True
            break
    return cancelled


def _eval_epochs(epochs: int, evaluations: int | None) -> frozenset[int] | None:
    """The epochs measured when only ``evaluations`` of them are: evenly spaced, the last included."""
    if evaluations is None or evaluations >= epochs:
        return None
    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise ConfigError(f"evaluations must be a whole number of at least 1, got {evaluations!r}")
    return frozenset(round(epochs * (i + 1) / evaluations) for i in range(evaluations))


def fit_loop(model: nn.Module, data: Dataset, config: TrainConfig, opt: torch.optim.Optimizer, gen: torch.Generator,
             schedule: Callable[[float], float], *, clip: float | None = None,
             callback: Callable[[Progress], bool | None] | None = None) -> list[dict[str, Any]]:
    """The trainer's loop (batch order and augmentation from ``gen``, the recipe's precision and
    layout, divergence checks, a test evaluation per epoch) around a caller's optimiser and schedule:
    what the transformers train with (AdamW, linear warm-up then cosine, clipped gradients). ``config``
    gives the epochs, batch size, augmentation, device, precision and layout; its lr fields are not
    read. The model ends in eval mode, in the default layout; returns the history."""
    check_device(config.device)
    prec.check(config.precision, config.device)
    if config.channels_last and not any(p.dim() == 4 for p in model.parameters()):
        raise ConfigError("channels-last is a layout of 2-D images; this model has no 2-D convolution")
    history: list[dict[str, Any]] = []
    model = prec.to_layout(model.to(config.device), config.channels_last)
    try:
        _epochs(model, data, config, callback, opt, gen, max(1, math.ceil(len(data.y_train) / config.batch_size)),
                history, None, time.perf_counter(), placed=place(data, config.device, config.augment),
                schedule=schedule, clip=clip)
    finally:
        prec.to_layout(model, False)
        model.eval()
    return history


def train_checkpoint(spec: ResNetSpec, data: Dataset, config: TrainConfig | None = None,
                     callback: Callable[[Progress], bool | None] | None = None, *,
                     command: str = "", grad_every: int = 0) -> Checkpoint:
    """Train and package the result with its metadata (dataset, the normalisation the inputs had,
    recipe, history, final metrics, status, versions): what the CLI saves and the page keeps. A
    cancelled run keeps its finished epochs and says so in ``meta.status``.

    Gradient-flow records (``grad_every > 0``) are not put in the checkpoint, which they would only
    bloat: the callback sees them growing in ``Progress.gradients`` (the rows of
    :mod:`analysis.experiments.gradflow`), complete at the last epoch's call; :func:`train` returns them as a table."""
    config = config or TrainConfig()
    result = train(spec, data, config, callback, grad_every=grad_every)
    return Checkpoint(result.model.spec, result.model, run_meta(data, config, result, command=command), False)


def run_meta(data: Dataset, config: TrainConfig, result: TrainResult | None = None, *,
             history: list[dict[str, Any]] | None = None, cancelled: bool | None = None, command: str = "") -> RunMeta:
    """Metadata of a run, from its result or (for a run interrupted from outside) its history.

    A cancelled run's time is that of its finished epochs (the last epoch's ``seconds``), so time and
    images per second describe the same epochs; ``None`` when that time is not known (no finished
    epoch, or a history without times), never a made-up 0."""
    hist = result.history if result is not None else (history or [])
    stopped = result.cancelled if result is not None else bool(cancelled)
    images = len(data.y_train) * len(hist)
    seconds: float | None
    if result is not None and not stopped:
        seconds = result.seconds
    else:
        seconds = hist[-1].get("seconds") if hist else None
    return RunMeta(
        dataset=data.info(), normalisation=data.normalisation, recipe=config,
        history=tuple(dict(h) for h in hist), final=dict(hist[-1]) if hist else {},
        status="cancelled" if stopped else "complete", versions=versions(), created=now(), command=command,
        train_seconds=round(seconds, 2) if seconds is not None else None,
        images_per_second=round(images / seconds, 1) if seconds else None,
    )
