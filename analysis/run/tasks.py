"""What every executor shares: a run as a task, its progress events and its result, the
:class:`Executor` interface, and :func:`run_task`, the one function that trains a task in whatever
process it lands in.

A task (:class:`Task`: spec, recipe and dataset descriptor, all plain picklable data) travels to a
worker; its result (:class:`TaskResult`) carries the trained net as checkpoint bytes back. The
executors themselves live in :mod:`analysis.run.executor` (this process, a process pool) and
:mod:`analysis.run.ray_executor` (Ray tasks). Both import this module; the Ray executor imports nothing
of :mod:`analysis.run.executor`, which imports it only inside :func:`~analysis.run.executor.make_executor`
when a Ray run is chosen (Ray loads only then). So the imports run one way, executor → ray_executor
→ tasks, with no cycle even through a function-level import.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from analysis.core.errors import ConfigError, DivergedError, LensError
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH

if TYPE_CHECKING:  # torch loads only when a task runs
    from analysis.data.data import Dataset


@dataclass(frozen=True)
class DataSpec:
    """A dataset descriptor: enough to load the same data in any process (``kind`` as
    :func:`analysis.data.data.load_dataset` takes it: the embedded digits or MNIST-1D, CIFAR-10, an
    ImageFolder). ``train_images`` keeps only the first N training images or sequences (tests and
    quick looks); the test split stays whole."""

    kind: str = "digits"
    size: int = 16
    path: str | None = None
    split_seed: int = 0
    train_images: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "mnist1d" and self.size != MNIST1D_LENGTH:
            # MNIST-1D has one length: every descriptor of it names the same data (and the same run key)
            object.__setattr__(self, "size", MNIST1D_LENGTH)
        if self.train_images is not None and (isinstance(self.train_images, bool)
                                              or not isinstance(self.train_images, int) or self.train_images < 1):
            raise ConfigError(f"train images must be a whole number of at least 1, got {self.train_images!r}")

    def load(self) -> Dataset:
        return _load(self)

    @property
    def dims(self) -> int:
        """1 for MNIST-1D's sequences, 2 for every kind of images: known before the data are read."""
        return 1 if self.kind == "mnist1d" else 2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "path": self.path, "split_seed": self.split_seed,
                "train_images": self.train_images}


@functools.lru_cache(maxsize=4)
def _load(d: DataSpec) -> Dataset:
    """Loaded once per process and descriptor: a worker trains many runs on the same data."""
    from analysis.data.data import load_dataset

    data = load_dataset(d.kind, d.path, size=d.size, seed=d.split_seed)
    if d.train_images is not None:
        if d.train_images > len(data.y_train):
            raise ConfigError(f"train images: {data.name} has {len(data.y_train)} training images, "
                              f"asked for {d.train_images}")
        n = d.train_images
        data = type(data)(f"{data.name}[:{n}]", data.x_train[:n], data.y_train[:n], data.x_test, data.y_test,
                          data.classes, data.mean, data.std, augment=data.augment, source=data.source,
                          split_seed=data.split_seed)
    return data


@dataclass(frozen=True)
class Task:
    """One run to train: ``spec`` as :func:`analysis.store.checkpoints.spec_to_dict` writes it, the
    recipe as ``TrainConfig.to_dict``, the dataset descriptor. ``key`` names it in events and results."""

    key: str
    spec: dict[str, Any]
    recipe: dict[str, Any]
    data: DataSpec
    label: str = ""
    grad_every: int = 0


@dataclass(frozen=True)
class TaskEvent:
    """Progress of a running task: after an epoch, or now and then during one."""

    key: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class TaskResult:
    """``status``: 'complete'; 'cancelled' (stopped by :meth:`Executor.cancel`, nothing kept);
    'diverged' (the loss or the weights became NaN/infinite: the variant did not train);
    'error' (bad input, ``message`` says which)."""

    key: str
    status: str
    checkpoint: bytes | None = None
    gradients: list[dict[str, Any]] | None = None
    message: str = ""
    seconds: float = 0.0
    epochs_done: int = 0


class Executor(Protocol):
    """Runs independent tasks; the grid submits, then iterates results as they finish."""

    def submit(self, task: Task) -> None:
        """Queue a task (nothing need start before :meth:`results` is iterated)."""

    def results(self, on_event: Callable[[TaskEvent], None] | None = None) -> Iterator[TaskResult]:
        """Every submitted task's result, in the order they finish; ``on_event`` is called in the
        caller's thread with progress events while it waits."""

    def cancel(self) -> None:
        """Stop: queued tasks never start, running ones stop at their next batch and come back
        'cancelled'. :meth:`results` still yields every task that finished before. An executor
        that was cancelled takes no more work: make a new one."""

    def close(self) -> None:
        """Release processes and other resources (also after an exception)."""


# ---------------------------------------------------------------------------- the task itself
EVENT_INTERVAL_S = 0.25  # batch events at most this often: progress across processes stays cheap


def run_task(task: Task, report: Callable[[TaskEvent], None] | None = None,
             stop: Callable[[], bool] | None = None) -> TaskResult:
    """Train one task and package the result; used by every executor, so all give the same numbers."""
    from analysis.core.meta import TrainConfig
    from analysis.experiments.train import Progress, run_meta, train
    from analysis.store.checkpoints import Checkpoint, checkpoint_bytes, spec_from_dict

    t0 = time.perf_counter()
    last = [0.0]

    def callback(p: Progress) -> bool:
        if report is not None and (p.phase == "epoch" or time.perf_counter() - last[0] >= EVENT_INTERVAL_S):
            last[0] = time.perf_counter()
            report(TaskEvent(task.key, p.epoch, p.epochs, p.step, p.steps_per_epoch, float(p.loss)))
        return not (stop is not None and stop())

    try:
        spec = spec_from_dict(task.spec)
        config = TrainConfig(**task.recipe)
        data = task.data.load()
        kwargs: dict[str, Any] = {}
        if task.grad_every and "grad_every" in inspect.signature(train).parameters:
            kwargs["grad_every"] = task.grad_every
        result = train(spec, data, config, callback, **kwargs)
    except LensError as exc:
        # train() raises DivergedError for NaN/inf losses and weights: a result of the variant (it does
        # not train with this recipe), not a bad input
        status = "diverged" if isinstance(exc, DivergedError) else "error"
        return TaskResult(task.key, status, message=str(exc), seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if result.cancelled:
        return TaskResult(task.key, "cancelled", seconds=seconds, epochs_done=len(result.history))
    meta = run_meta(data, config, result, command=f"python -m analysis grid ({task.label or task.key})")
    ck = Checkpoint(result.model.spec, result.model, meta, False)
    grads = getattr(result, "gradients", None)
    records = _records(grads)
    return TaskResult(task.key, "complete", checkpoint_bytes(ck.model, ck.meta), records, seconds=seconds,
                      epochs_done=len(result.history))


def _records(grads: object) -> list[dict[str, Any]] | None:
    """Gradient-flow records as plain rows (a DataFrame or a list of dicts), or None."""
    if grads is None:
        return None
    to_dict = getattr(grads, "to_dict", None)
    if callable(to_dict):
        rows: list[dict[str, Any]] = to_dict(orient="records")
        return rows
    if isinstance(grads, list):
        return [dict(g) for g in grads]
    return None


__all__ = ["EVENT_INTERVAL_S", "DataSpec", "Executor", "Task", "TaskEvent", "TaskResult", "run_task"]
