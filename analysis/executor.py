"""Where the runs of an experiment grid train: in this process, or in a pool of worker processes.

A run is an independent task (:class:`Task`: spec, recipe and dataset descriptor, all plain
picklable data) whose result (:class:`TaskResult`) carries the trained net as checkpoint bytes.
Workers never touch the run store: the parent receives each result and writes it, so the store has
one writer per grid however many processes train.

:class:`Executor` is the whole interface a grid needs: ``submit`` tasks, iterate ``results`` as
they finish (progress events are handed to a callback in the caller's thread while it waits), and
``cancel``. :class:`InProcessExecutor` runs tasks one after another in the calling process;
:class:`PoolExecutor` runs them in ``workers`` processes (``concurrent.futures``, 'forkserver' or
'spawn' start, one torch thread each); nothing here opens a socket. A distributed engine implements
the same four methods: :class:`analysis.ray_executor.RayExecutor` (Ray tasks, ``ray.wait`` for
results, an actor for events and the stop flag, ``ray.cancel``), which :func:`make_executor` builds
for ``kind='ray'``.

Same task, same numbers: training draws from generators seeded by the recipe and the CPU kernels are
deterministic for a given thread count, so a task gives identical weights in any executor as long as
the thread count is the same (the pool uses one thread per worker; give :class:`InProcessExecutor`
``threads=1`` to match it).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import inspect
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError, DivergedError, LensError
from .mnist1d import LENGTH as MNIST1D_LENGTH

if TYPE_CHECKING:  # torch loads only when a task runs
    from .data import Dataset


@dataclass(frozen=True)
class DataSpec:
    """A dataset descriptor: enough to load the same data in any process (``kind`` as
    :func:`analysis.data.load_dataset` takes it: the embedded digits or MNIST-1D, CIFAR-10, an
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

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "path": self.path, "split_seed": self.split_seed,
                "train_images": self.train_images}


@functools.lru_cache(maxsize=4)
def _load(d: DataSpec) -> Dataset:
    """Loaded once per process and descriptor: a worker trains many runs on the same data."""
    from .data import load_dataset

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
    """One run to train: ``spec`` as :func:`analysis.checkpoints.spec_to_dict` writes it, the
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
    from .checkpoints import Checkpoint, checkpoint_bytes, spec_from_dict
    from .meta import TrainConfig
    from .train import Progress, run_meta, train

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


# ---------------------------------------------------------------------------- in this process
class InProcessExecutor:
    """Tasks one after another in the calling process. ``threads``: torch's thread count while a
    task runs (restored afterwards); None leaves it as it is."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a whole number of at least 1, got {threads!r}")
        self.threads = threads
        self._queue: list[Task] = []
        self._cancelled = False

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def results(self, on_event: Callable[[TaskEvent], None] | None = None) -> Iterator[TaskResult]:
        import torch

        while self._queue and not self._cancelled:
            task = self._queue.pop(0)
            before = torch.get_num_threads()
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            try:
                # on_event runs here, so a caller's cancel() during an event stops this task's loop
                yield run_task(task, on_event, lambda: self._cancelled)
            finally:
                torch.set_num_threads(before)
        self._queue.clear()

    def cancel(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        self._queue.clear()

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- worker processes
_events: Any = None  # the worker's end of the event queue and the cancel flag (set by _init_worker)
_stop: Any = None


#: how often a pool worker checks that the process that made the pool is still alive
WATCH_PARENT_S = 0.5


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None where it cannot be read:
    with it a pid the kernel has given to another process is not taken for the driver."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _watch_parent(pid: int) -> None:
    """End this worker when the process that made the pool is gone. A ``kill -9`` of the grid's
    driver runs no cleanup: its workers (children of the forkserver, not of the driver, so a
    parent-death signal would not reach them) kept training for nothing, ~600 MB each, for as long
    as anyone looked (50 minutes)."""
    born = _started(pid)
    while True:
        time.sleep(WATCH_PARENT_S)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid now belongs to another user's process: ours is gone
            os._exit(1)
        if born is not None and _started(pid) != born:  # the pid was reused: ours is gone
            os._exit(1)


def _init_worker(events: Any, stop: Any, parent: int | None = None) -> None:
    import torch

    global _events, _stop
    _events, _stop = events, stop
    torch.set_num_threads(1)  # one thread per worker: N workers use N cores without oversubscribing
    # Ctrl-C in a terminal reaches the whole process group; the parent decides what stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _worker_task(task: Task) -> TaskResult:
    return run_task(task, _events.put, _stop.is_set)


def start_method() -> str:
    """'forkserver' where the platform has it (a clean server process forks workers: quick, and no
    copy of the parent's threads or torch state), else 'spawn'."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class PoolExecutor:
    """Tasks in ``workers`` processes (``concurrent.futures.ProcessPoolExecutor``), one torch
    thread each. Progress events come back on a queue and are handed to ``on_event`` in the caller's
    thread; a shared flag stops running tasks at their next batch."""

    def __init__(self, workers: int = 2) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
            raise ConfigError(f"workers must be a whole number from 1 to 256, got {workers!r}")
        self.workers = workers
        ctx = mp.get_context(start_method())
        self._events = ctx.Queue()
        self._stop = ctx.Event()
        self._pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                            initargs=(self._events, self._stop, os.getpid()))
        self._futures: list[cf.Future[TaskResult]] = []
        self._cancelled = False

    def submit(self, task: Task) -> None:
        self._futures.append(self._pool.submit(_worker_task, task))

    def results(self, on_event: Callable[[TaskEvent], None] | None = None) -> Iterator[TaskResult]:
        pending = set(self._futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.1, return_when=cf.FIRST_COMPLETED)
            self._drain(on_event)
            for fut in done:
                if fut.cancelled():
                    continue
                yield fut.result()  # a bug in a worker re-raises here, with its traceback
        self._drain(on_event)
        self._futures.clear()

    def _drain(self, on_event: Callable[[TaskEvent], None] | None) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if on_event is not None:
                on_event(event)

    def cancel(self) -> None:
        self._cancelled = True
        self._stop.set()
        for fut in self._futures:
            fut.cancel()  # queued ones never start; running ones see the flag

    def close(self) -> None:
        if any(not f.done() for f in self._futures):  # closing mid-grid (an exception): stop the workers
            self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(OSError, ValueError):
            self._events.close()

    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Where a grid's runs can train: this process, a pool of processes here, Ray tasks on a cluster.
EXECUTORS = ("local", "pool", "ray")


def make_executor(workers: int | None, *, threads: int | None = None, kind: str | None = None,
                  address: str | None = None) -> Executor:
    """``kind`` None: one worker trains in this process (no start-up cost), more in a pool of that
    many processes. 'local': this process (``workers`` must be 1 or None); 'pool': ``workers``
    processes (None: one per CPU); 'ray': :class:`~analysis.ray_executor.RayExecutor`, at most
    ``workers`` runs at once (None: as many as the cluster's CPUs and GPUs allow) on the Ray cluster
    at ``address`` (None: a local Ray instance on 127.0.0.1). ``address`` is for 'ray' only."""
    if kind is not None and kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise ConfigError("a cluster address is for the ray executor (--executor ray)")
    if kind == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(workers, address=address)
    if kind == "local":
        if workers not in (None, 1):
            raise ConfigError(f"the local executor trains one run at a time in this process; got {workers} workers "
                              "(use the pool or ray executor for more)")
        return InProcessExecutor(threads)
    if kind == "pool":
        return PoolExecutor(workers if workers is not None else max(os.cpu_count() or 1, 1))
    return InProcessExecutor(threads) if workers is None or workers == 1 else PoolExecutor(workers)


__all__ = ["EXECUTORS", "DataSpec", "Executor", "InProcessExecutor", "PoolExecutor", "Task", "TaskEvent", "TaskResult",
           "make_executor", "run_task", "start_method"]
