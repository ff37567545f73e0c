"""Benchmark: an 8-run experiment grid one after another in this process vs a pool of 2 worker
processes vs Ray with 2 workers (a local Ray instance on 127.0.0.1 with 2 CPUs), each into an empty
run store of its own (issue 15); Ray's start-up measured apart; and the training throughput of a
CIFAR ResNet-110 on one CPU thread, the number the scale-out projection in docs/scale.md rests on.

Every side runs each task with one torch thread, so they do the same arithmetic: the benchmark checks
that every run's weights (the sha256 of its state_dict) and per-epoch metrics are identical on all
three, and prints wall times with ratios against the in-process time measured in the same run.

* ``Ray start-up``: ``analysis.run.cluster.connect`` starting the local instance (GCS, raylet, object
  store), then one no-op task per worker (a worker process starting and importing torch), then
  ``ray.shutdown``: what a CLI grid with ``--executor ray`` pays on top of its runs.
* ``Ray grid``: the grid on the started instance, including the executor's actor and the workers'
  first imports of the project (what the pool's time includes too: it starts its processes).

Run it on a quiet machine (other processes share the cores):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py [--epochs 2] [--depth 20] [--size 16]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py --throughput-only [--device cuda]

The grid part runs on the CPU; ``--device cuda`` moves only the ResNet-110 throughput to a GPU (the
number a GPU projection needs; untested here: no GPU on this machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from analysis.core.meta import TrainConfig
from analysis.run import cluster
from analysis.run.executor import DataSpec, InProcessExecutor, PoolExecutor
from analysis.store.runstore import RunStore
from analysis.studies.grid import Grid, fingerprints, run_grid

VARIANTS = ("original", "exclusive_gating", "full_preact", "bn_after_add")


def _warm(_: int) -> int:
    """A Ray worker's first task: start, import torch (what every first run pays)."""
    import torch

    return int(torch.get_num_threads())


def throughput(steps: int = 3, batch: int = 128, device: str = "cpu") -> float:
    """Training images/s of cifar_resnet110 at 32×32×3 (one CPU thread, or one CUDA device):
    forward, backward and an SGD step on a batch of ``batch`` random images already on the device,
    timed over ``steps`` steps after one warm-up step."""
    import torch
    import torch.nn.functional as F

    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.experiments.train import check_device

    check_device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(get_spec("cifar_resnet110")).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 10, (batch,), generator=gen).to(device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        def sync() -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)  # kernels run asynchronously: wait before reading the clock

        step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return steps * batch / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--throughput-steps", type=int, default=3)
    ap.add_argument("--throughput-only", action="store_true", help="only the ResNet-110 images/s")
    ap.add_argument("--device", default="cpu", help="where the ResNet-110 throughput is measured: cpu or cuda")
    args = ap.parse_args()
    same = True if args.throughput_only else grid_benchmark(args)
    rate = throughput(args.throughput_steps, device=args.device)
    where = "1 CPU thread" if args.device == "cpu" else args.device
    print(f"cifar_resnet110 training at 32x32x3, batch 128, {where}: {rate:.1f} images/s "
          f"({args.throughput_steps} steps after a warm-up step)")
    return 0 if same else 1


def grid_benchmark(args: argparse.Namespace) -> bool:
    from analysis.run.ray_executor import RayExecutor

    grid = Grid(VARIANTS, depths=(args.depth,), seeds=(0, 1),
                recipe=TrainConfig(epochs=args.epochs, batch_size=64), data=DataSpec(size=args.size))
    n = len(grid.runs())
    print(f"grid: {n} runs ({', '.join(grid.variants)} x depth {args.depth} x seeds 0, 1), {args.epochs} epochs "
          f"on digits {args.size} px; {os.cpu_count()} cores; {args.workers} workers for the pool and Ray")
    with tempfile.TemporaryDirectory() as home:
        stores = {name: RunStore(os.path.join(home, name)) for name in ("seq", "pool", "ray")}
        t0 = time.perf_counter()
        seq = run_grid(grid, stores["seq"], InProcessExecutor(threads=1))
        t_seq = time.perf_counter() - t0
        print(f"in process, one after another:  {t_seq:7.1f} s   1.00x")

        t0 = time.perf_counter()
        with PoolExecutor(args.workers) as ex:
            pool = run_grid(grid, stores["pool"], ex)
        t_pool = time.perf_counter() - t0
        print(f"pool of {args.workers} processes:            {t_pool:7.1f} s   {t_seq / t_pool:.2f}x")

        # start-up alone: the instance, each worker's first task (a process and a torch import), shutdown
        t0 = time.perf_counter()
        conn = cluster.connect(num_cpus=args.workers)
        t_init = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            cluster.map_tasks(_warm, list(range(args.workers)), threads=None)
            t_warm = time.perf_counter() - t0
        finally:
            t0 = time.perf_counter()
            conn.close()
            t_down = time.perf_counter() - t0
        print(f"Ray start-up: local instance {t_init:.1f} s, first task on each of {args.workers} workers "
              f"{t_warm:.1f} s, shutdown {t_down:.1f} s")
        # the grid as `python -m analysis grid --executor ray` runs it: a fresh instance, cold workers
        t_start = time.perf_counter()
        conn = cluster.connect(num_cpus=args.workers)
        try:
            t0 = time.perf_counter()
            with RayExecutor(args.workers) as ex:
                ray_res = run_grid(grid, stores["ray"], ex)
            t_ray = time.perf_counter() - t0
        finally:
            conn.close()
        t_ray_all = time.perf_counter() - t_start
        print(f"Ray, {args.workers} workers (instance up):    {t_ray:7.1f} s   {t_seq / t_ray:.2f}x")
        print(f"Ray, start to shutdown:         {t_ray_all:7.1f} s   {t_seq / t_ray_all:.2f}x")
        prints = {name: fingerprints(stores[name], res) for name, res in (("seq", seq), ("pool", pool),
                                                                           ("ray", ray_res))}
        same = prints["seq"] == prints["pool"] == prints["ray"]
        print(f"identical weights and per-epoch metrics in all three, run by run: {'yes' if same else 'NO'}")
        print(ray_res.results[["variant", "depth", "seed", "test_error", "train_error", "seconds"]]
              .to_string(index=False))
    return same


if __name__ == "__main__":
    sys.exit(main())
