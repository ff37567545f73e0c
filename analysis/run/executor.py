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
the same four methods: :class:`analysis.run.ray_executor.RayExecutor` (Ray tasks, ``ray.wait`` for
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
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from analysis.core.errors import ConfigError
from analysis.run.tasks import DataSpec, Executor, Task, TaskEvent, TaskResult, run_task


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
    processes (None: one per CPU); 'ray': :class:`~analysis.run.ray_executor.RayExecutor`, at most
    ``workers`` runs at once (None: as many as the cluster's CPUs and GPUs allow) on the Ray cluster
    at ``address`` (None: a local Ray instance on 127.0.0.1). ``address`` is for 'ray' only."""
    if kind is not None and kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise ConfigError("a cluster address is for the ray executor (--executor ray)")
    if kind == "ray":
        from analysis.run.ray_executor import RayExecutor

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
