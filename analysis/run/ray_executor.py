"""The experiment grid's runs as Ray tasks: :class:`RayExecutor`, the :class:`~analysis.run.tasks.Executor`
interface on a Ray cluster (or a local Ray instance started on 127.0.0.1, see :mod:`analysis.run.cluster`).

Each :class:`~analysis.run.tasks.Task` is one Ray task running :func:`analysis.run.tasks.run_task`
with one torch thread, asking for one CPU and, when its recipe's device is CUDA, one GPU. So a run
gives the same weights as in :class:`~analysis.run.executor.InProcessExecutor` with ``threads=1`` or in
the process pool: same code, same seeds, same thread count.

How results travel: a task returns its :class:`~analysis.run.tasks.TaskResult`, the trained net inside
as checkpoint bytes; Ray keeps it in the object store of the node that ran it and the driver fetches it
from there (``ray.get``). Only the driver writes the run store, so the workers need no shared
filesystem and never see the store. Each worker loads the dataset itself from the task's
:class:`~analysis.run.tasks.DataSpec` (the embedded digits and MNIST-1D everywhere; CIFAR-10 or an
ImageFolder need the same path on every node).

Progress and cancel go through one small actor (no CPU of its own, placed on the driver's node):
workers post their events to it, the driver drains it while it waits for results and hands the
events to ``on_event``; :meth:`RayExecutor.cancel` sets its stop flag, which running tasks read at
most every :data:`~analysis.run.tasks.EVENT_INTERVAL_S` and then stop at their next batch and come
back 'cancelled'. Tasks not started yet are cancelled in Ray (:func:`~analysis.run.cluster.cancel_task`:
a worker that already picked one up is killed, never interrupted mid-import), and those the driver
holds back (at most ``workers`` are in flight) are dropped.

Faults: a task whose worker process or node dies is run again by Ray up to ``max_retries`` times
(from the start: a run is deterministic, so a retry gives the same numbers). When the retries are
used up the task comes back as 'error' with a message saying so, which stops the grid (a task that
kills its worker every time, e.g. running out of memory, would on every retry); every run that
finished before is in the store, and the same grid again trains only the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from analysis.core.errors import ConfigError
from analysis.run.cluster import Connection, cancel_task, connect
from analysis.run.tasks import EVENT_INTERVAL_S, Task, TaskEvent, TaskResult, run_task

POLL_S = 0.1  # how often the driver drains progress events while it waits for results
DEFAULT_RETRIES = 3


class _Channel:
    """The actor between the driver and the workers: progress events one way, the stop flag the
    other, and which worker process runs which task (``started``)."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._stop = False

    def put(self, item: Any) -> None:
        self._items.append(item)

    def drain(self) -> list[Any]:
        items, self._items = self._items, []
        return items

    def stop(self) -> None:
        self._stop = True

    def stopped(self) -> bool:
        return self._stop


def _remote_run(task: Task, channel: Any, threads: int) -> TaskResult:
    """The Ray task: say which process runs it, then train unless the grid was cancelled meanwhile."""
    import ray
    import torch

    torch.set_num_threads(threads)
    channel.put.remote(("started", task.key, os.getpid()))
    last = [-EVENT_INTERVAL_S, False]  # when the flag was last read, and its value

    def stop() -> bool:
        # one actor call per EVENT_INTERVAL_S, not per batch: cancelling costs at most that much delay
        now = time.monotonic()
        if now - float(last[0]) >= EVENT_INTERVAL_S:
            last[0], last[1] = now, bool(ray.get(channel.stopped.remote()))
        return bool(last[1])

    if stop():
        return TaskResult(task.key, "cancelled")
    return run_task(task, channel.put.remote, stop)


def _check_int(name: str, value: int | None, lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ConfigError(f"{name} must be a whole number >= {lo}, got {value!r}")


class RayExecutor:
    """Tasks as Ray tasks. ``address``: as :func:`analysis.run.cluster.connect` takes it (None: a local
    Ray instance with ``workers`` CPUs, shut down by :meth:`close`). ``workers``: at most that many
    tasks in flight at once (None: all of them; the cluster's free CPUs and GPUs then decide how many
    run). ``max_retries``: how often Ray runs a task again whose worker or node died."""

    def __init__(self, workers: int | None = 2, *, address: str | None = None, threads: int = 1,
                 max_retries: int = DEFAULT_RETRIES) -> None:
        _check_int("workers", workers, 1)
        _check_int("threads", threads, 1)
        _check_int("max_retries", max_retries, 0)
        if workers is not None and workers > 256:
            raise ConfigError(f"workers must be at most 256, got {workers}")
        self.workers = workers
        self.threads = threads
        self.max_retries = max_retries
        self._conn: Connection = connect(address, num_cpus=workers if address is None else None)
        import ray

        self._ray = ray
        try:
            here = ray.get_runtime_context().get_node_id()
            strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(here, soft=True)
            # no CPU of its own: it must not take a slot a run could use; on the driver's node, so a
            # worker node that dies does not take the events and the stop flag with it
            self._channel: Any = ray.remote(_Channel).options(num_cpus=0, scheduling_strategy=strategy).remote()
        except BaseException:
            self._conn.close()
            raise
        self._remote = ray.remote(_remote_run)
        self._queue: list[Task] = []
        self._pending: dict[Any, Task] = {}  # ObjectRef -> its task, submitted to Ray and not yet returned
        #: which worker process (pid) runs which task, as the workers report it
        self.pids: dict[str, int] = {}
        #: every start the workers reported, (task key, pid): a retried task shows up twice
        self.starts: list[tuple[str, int]] = []
        self._cancelled = False
        self._closed = False
        self._gpus: float | None = None  # the cluster's GPUs, asked once

    def describe(self) -> str:
        """Where the runs go, in one line: the cluster's address and size."""
        res = self._ray.cluster_resources()
        where = "a local Ray instance" if self._conn.started else "the Ray cluster"
        return (f"{where} at {self._conn.address}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
                f"{'all runs' if self.workers is None else f'at most {self.workers} runs'} at once")

    # --------------------------------------------------------------------- the Executor interface
    def submit(self, task: Task) -> None:
        if self._cancelled or self._closed:
            raise ConfigError("this executor was cancelled or closed: make a new one")
        self._check_resources(task)
        self._queue.append(task)

    def _check_resources(self, task: Task) -> None:
        """A task asking for a GPU the cluster does not have would wait forever: say so now."""
        device = str(task.recipe.get("device", "cpu"))
        if device.startswith("cuda:"):
            raise ConfigError(f"device {device}: on Ray each run is given one GPU of its node, which it sees as "
                              "cuda; use device cuda")
        if not self._resources(task)["num_gpus"]:
            return
        if self._gpus is None:
            self._gpus = float(self._ray.cluster_resources().get("GPU", 0))
        if not self._gpus:
            raise ConfigError(f"device {device}: the Ray cluster at {self._conn.address} "
                              "has no GPU; use --device cpu or a cluster with GPUs")

    @staticmethod
    def _resources(task: Task) -> dict[str, float]:
        from analysis.run.cluster import task_resources

        return task_resources(str(task.recipe.get("device", "cpu")))

    def _start(self, task: Task) -> None:
        ref = self._remote.options(**self._resources(task), max_retries=self.max_retries,
                                   retry_exceptions=False).remote(task, self._channel, self.threads)
        self._pending[ref] = task

    def results(self, on_event: Callable[[TaskEvent], None] | None = None) -> Iterator[TaskResult]:
        ray = self._ray
        limit = self.workers or len(self._queue) or 1
        while self._pending or (self._queue and not self._cancelled):
            while self._queue and not self._cancelled and len(self._pending) < limit:
                self._start(self._queue.pop(0))
            if not self._pending:
                break
            done, _ = ray.wait(list(self._pending), num_returns=1, timeout=POLL_S)
            self._drain(on_event)
            for ref in done:
                task = self._pending.pop(ref)
                res = self._get(ref, task)
                if res is not None:
                    yield res
        self._drain(on_event)
        self._queue.clear()

    def _get(self, ref: Any, task: Task) -> TaskResult | None:
        """The task's result; None for one Ray cancelled before it started (as the pool skips its
        cancelled futures); 'error' when the cluster lost it for good."""
        ray = self._ray
        try:
            result: TaskResult = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return None
        except ray.exceptions.RayTaskError:
            raise  # a bug in run_task (bad input comes back as a result): re-raised with its traceback
        except ray.exceptions.RayError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            return TaskResult(task.key, "error",
                              message=f"the Ray worker training it was lost and Ray's {self.max_retries} retries "
                                      f"were used up ({type(exc).__name__}: {first[:300]})")
        self.pids.pop(task.key, None)
        return result

    def _drain(self, on_event: Callable[[TaskEvent], None] | None) -> None:
        ray = self._ray
        for item in ray.get(self._channel.drain.remote()):
            if isinstance(item, tuple) and item and item[0] == "started":
                self.pids[item[1]] = item[2]
                self.starts.append((item[1], item[2]))
            elif on_event is not None and isinstance(item, TaskEvent):
                on_event(item)  # may call cancel(): it only sets flags, so this loop goes on safely

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._queue.clear()
        ray = self._ray
        ray.get(self._channel.stop.remote())  # running tasks read it and stop at their next batch
        for ref, task in self._pending.items():
            if task.key not in self.pids:  # not started (as far as the driver has heard): never start it
                cancel_task(ref)  # kills its worker if it was already importing (see cancel_task)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._pending or self._queue:  # closing mid-grid (an exception, Ctrl-C): stop the cluster's work
                self.cancel()
                for ref in list(self._pending):
                    cancel_task(ref)  # nobody will read these results: stop them now (their workers killed)
                self._pending.clear()
            self._ray.kill(self._channel)
        finally:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RayExecutor"]
