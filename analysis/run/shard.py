"""Sharded evaluation: a lesion sweep or a gradient-by-length measurement on a large evaluation set,
split into contiguous shards evaluated independently (in this process, or as Ray tasks, one per
shard), then merged into the numbers the single-process call gives.

What is drawn at random (a sweep's deleted subsets and swaps, a measurement's block subsets) is drawn
once, here, and every shard evaluates the same plan. Why the merge is exact:

* **Lesion sweeps** (:func:`sharded_sweep`). A sequence's error is wrong / N: each shard returns its
  integer count of wrong predictions per sequence, the counts add up, and the rates are divided as
  :func:`analysis.experiments.lesion.run_sweep` divides them. Shards are cut at multiples of the batch size, so
  every batch a shard evaluates is a batch the single-process sweep evaluates too, with the same
  inputs and shape: the same kernels give the same logits and the same predictions. The table is
  equal (``==``) to :func:`~analysis.experiments.lesion.run_sweep`'s.
* **Gradient by path length** (:func:`sharded_gradient_by_length`), of a ResNet's blocks or a program's
  units. A path's magnitude is the mean over the N examples of the norm of each one's input
  gradient, the loss being the cross-entropy's
  mean over all N (which divides every example's gradient by N). Each shard computes its examples'
  norms with that whole-set scaling (:func:`analysis.experiments.paths.example_norms` with ``total=N``); the
  merge lays the shards' columns side by side and takes the means exactly as
  :func:`~analysis.experiments.paths.gradient_by_length` does. With a ``batch_size`` the shards are cut at its
  multiples and the table is bit-identical to ``gradient_by_length(..., batch_size=batch_size)``.
  Without one, the single-process call makes one pass over all N examples and each shard one pass
  over its own: an example's gradient then goes through kernels chosen for another batch size
  (torch runs a batch of one through its im2col + GEMM convolution instead of oneDNN's, and MKL's
  GEMM computes ``nn.Linear``'s input gradient for one to three rows with another kernel), whose
  other summation order changes its last bits, up to 1e-5 relative per example on the shipped nets.
  Measured on this machine (x86, AVX2, torch 2.13's MKL and oneDNN): bit-identical whenever every
  shard holds at least four examples; not promised elsewhere.

Both hold for one torch thread count in the shards and the single call (each Ray task runs on its
one CPU), and in either precision: a bf16 evaluation sends its precision with every shard, whose task
runs the same autocast over the same batches (autocast's state is per thread, set in the task itself). On a GPU the same argument holds for the cuDNN algorithms, which are chosen per shape and
run deterministically (:func:`analysis.experiments.train.cuda_determinism`); that is untested here (no GPU).

What travels to a shard: the net as its spec (the JSON-able dict checkpoints store) and its
``state_dict`` of CPU tensors (:class:`ModelPayload`), or a program opened from a ``.pt2`` as its
archive's bytes (:class:`ProgramPayload`: rebuilt in the task through the checks every opened file
passes, and cut into the same units), the shard's inputs and labels, the plan, the batch size and
the device. On Ray the payload and each shard's tensors go through the object store
(put once, fetched by the task that needs them); each task asks for one CPU, and one GPU when the
device is CUDA. In this process (``executor="local"``) the same task function runs on the same
payloads, one shard after another, so both executors run one code path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from analysis.core.errors import ConfigError
from analysis.experiments.lesion import ProgressFn, Step, check_precision, plan_sweep
from analysis.experiments.paths import LengthPlan, check_paths_net, example_norms, plan_lengths

if TYPE_CHECKING:
    from analysis.arch.models import ResNet
    from analysis.experiments.chain import LayerChain, ProgramChain, ProgramGraph

EXECUTORS = ("local", "ray")
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class ModelPayload:
    """A net as it travels to a shard: its spec as checkpoints store it and its weights on the CPU."""

    spec: dict[str, Any]
    state: dict[str, Tensor]

    @classmethod
    def of(cls, model: ResNet) -> ModelPayload:
        from analysis.store.checkpoints import spec_to_dict

        return cls(spec_to_dict(model.spec), {k: v.detach().cpu() for k, v in model.state_dict().items()})

    def build(self, device: str = "cpu") -> ResNet:
        """The net again, in eval mode on ``device``: the same weights and buffers, so the same numbers."""
        from analysis.arch.models import build_model
        from analysis.store.checkpoints import spec_from_dict

        model = build_model(spec_from_dict(self.spec))
        model.load_state_dict(self.state)
        return model.to(device).eval()


@dataclass(frozen=True)
class ProgramPayload:
    """A program as it travels to a shard: its ``.pt2`` archive's bytes (``torch.export.save``) and its
    name; the task opens it as any file is opened (:func:`analysis.arch.graphnet.load_program`'s checks)
    and cuts it into units again, so every shard runs the units the single-process sweep runs."""

    blob: bytes
    name: str
    modules: tuple[str, ...] = ()  # a chain cut at these modules (a LayerChain); empty: at its units

    @classmethod
    def of(cls, chain: ProgramChain | ProgramGraph | LayerChain) -> ProgramPayload:
        from torch.export import ExportedProgram

        from analysis.experiments.programlesion import program_bytes

        program = getattr(chain, "program", None)  # kept by programlesion.open_chain's chains
        if not isinstance(program, ExportedProgram):
            raise ConfigError(f"{chain.net.name}: this chain was cut without keeping its program, which is what "
                              "travels to shards; open it with analysis.experiments.programlesion.open_chain")
        from analysis.experiments.chain import LayerChain

        modules = tuple(u.name for u in chain.units) if isinstance(chain, LayerChain) else ()
        return cls(program_bytes(program), chain.net.name, modules)

    def build(self, device: str = "cpu") -> ProgramChain | ProgramGraph | LayerChain:
        """The program again, cut as it was (into units, or at its layers' modules), its weights on ``device``."""
        from analysis.experiments.chain import LayerChain
        from analysis.experiments.programlesion import load, open_chain

        if self.modules:
            return LayerChain(load(self.blob, self.name, device), self.modules, name=self.name)
        return open_chain(self.blob, self.name, device)


def shard_bounds(n: int, shards: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges covering ``range(n)`` in order, cut only at multiples of
    ``multiple`` (the last range may end short of one), as even as those cuts allow. Never more
    ranges than there are pieces of ``multiple`` (so none is empty): asked for more, it gives fewer."""
    for what, value, lo in (("shards", shards, 1), ("inputs per cut", multiple, 1), ("inputs", n, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{what} must be a whole number of at least {lo}, got {value!r}")
    pieces = math.ceil(n / multiple)
    count = max(1, min(shards, pieces))
    out, start = [], 0
    for i in range(count):
        size = pieces // count + (i < pieces % count)  # the first pieces % count shards take one more
        end = start + size
        out.append((min(n, start * multiple), min(n, end * multiple)))
        start = end
    return out


def _part(x: Tensor, y: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """A shard's own copy of its inputs: a slice is a view, and a pickled view carries the whole
    storage it looks into, so every Ray task would receive the entire evaluation set."""
    return x[lo:hi].clone(), y[lo:hi].clone()


def check_shards(shards: int, executor: str) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"shards must be a whole number between 1 and {MAX_SHARDS:,}, got {shards!r}")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


# ----------------------------------------------------------------------------- the tasks
@dataclass(frozen=True)
class LesionShard:
    """One shard of a lesion sweep: what :func:`lesion_shard` needs, all picklable."""

    model: ModelPayload | Any  # the payload, or on Ray a reference to it in the object store
    x: Tensor
    y: Tensor
    sequences: list[list[Step]]
    batch_size: int
    device: str
    precision: str = "fp32"


def lesion_shard(task: LesionShard) -> Tensor:
    """Wrong predictions per sequence on the shard's inputs (int64, on the CPU)."""
    from analysis.experiments.lesion import wrong_counts

    model = _payload(task.model).build(task.device)
    return wrong_counts(model, task.x, task.y, task.sequences, batch_size=task.batch_size, device=task.device,
                        precision=task.precision)


@dataclass(frozen=True)
class PathShard:
    """One shard of a gradient-by-length measurement: what :func:`path_shard` needs, all picklable."""

    model: ModelPayload | ProgramPayload | Any  # the payload, or on Ray a reference to it in the object store
    x: Tensor
    y: Tensor
    subsets: list[set[int]]
    total: int  # examples in the whole set: every example's gradient is scaled by 1 / total
    batch_size: int | None
    device: str
    precision: str = "fp32"


def path_shard(task: PathShard) -> Tensor:
    """Per-example input-gradient norms (subsets x the shard's examples, on the CPU)."""
    from analysis.experiments.chain import LayerChain, ProgramGraph

    model = _payload(task.model).build(task.device)
    if isinstance(model, (LayerChain, ProgramGraph)):  # only a chain of residual units is ever sent
        raise ConfigError(f"{model.net.name}: the path decomposition follows residual units, not layers")
    return example_norms(model, task.x, task.y, task.subsets, total=task.total, batch_size=task.batch_size,
                         precision=task.precision)


def _payload(model: ModelPayload | ProgramPayload | Any) -> ModelPayload | ProgramPayload:
    """The task's net: the payload itself in this process, or fetched once from Ray's object store
    (a task on Ray receives a reference to it, put there once for every shard)."""
    if isinstance(model, (ModelPayload, ProgramPayload)):
        return model
    import ray  # only reached inside a Ray task, where Ray is imported already

    fetched: ModelPayload | ProgramPayload = ray.get(model)
    return fetched


def run_shards(fn: Callable[[Any], Tensor], tasks: Sequence[Any], *, executor: str = "local",
               address: str | None = None, device: str = "cpu",
               progress: ProgressFn | None = None) -> list[Tensor]:
    """``fn`` over ``tasks``, results in the tasks' order: one after another in this process
    (``local``), or one Ray task each (``ray``: one CPU and one torch thread each, and one GPU each
    on CUDA, where Ray makes it the task's ``cuda``; ``address`` as
    :func:`analysis.run.cluster.connect` takes it, None for a local instance on 127.0.0.1, or the
    cluster this process is connected to already). On Ray the tasks' common net goes to the object
    store once, each shard's tensors with their own task. ``progress(done, total)`` counts finished
    shards."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    done = [0]

    def finished(*_: object) -> None:
        done[0] += 1
        if progress:
            progress(done[0], len(tasks))

    if executor == "local":
        out = []
        for task in tasks:
            out.append(fn(task))
            finished()
        return out
    from analysis.run import cluster

    with cluster.connect(address):
        import ray  # imported by connect, with its loopback switch set

        refs: dict[int, Any] = {}  # one object per distinct net, whatever the number of shards
        for t in tasks:
            if id(t.model) not in refs:
                refs[id(t.model)] = ray.put(t.model)
        # Ray shows a task only the GPU it was given, as cuda:0: "cuda:3" on the driver means nothing there
        remote = [dataclasses.replace(t, model=refs[id(t.model)], device="cuda" if t.device.startswith("cuda")
                                      else t.device) for t in tasks]
        need = cluster.task_resources(device)
        return cluster.map_tasks(fn, remote, num_cpus=need["num_cpus"], num_gpus=need["num_gpus"], threads=1,
                                 on_result=finished)


# ----------------------------------------------------------------------------- lesion sweeps
def sharded_sweep(kind: str, model: ResNet | ProgramChain | ProgramGraph | LayerChain, x: Tensor, y: Tensor, *, samples: int = 5,
                  seed: int = 0, batch_size: int = 256, device: str = "cpu", shards: int = 2,
                  executor: str = "local", address: str | None = None,
                  progress: ProgressFn | None = None, precision: str = "fp32") -> pd.DataFrame:
    """:func:`analysis.experiments.lesion.run_sweep` on ``shards`` contiguous parts of ``x`` (cut at multiples of
    ``batch_size``; fewer parts when there are fewer batches), merged by adding wrong counts: the
    same table, ``==``. ``model``: a ResNet, or a program opened by
    :func:`analysis.experiments.programlesion.open_chain` (on the CPU here; each shard opens it on its
    device). ``progress(done, total)`` counts finished shards. ``precision``: fp32 or bf16, sent with every
    shard (refused here, before any shard starts, where this machine's ``device`` cannot run it; on Ray the
    cluster's nodes are expected to have what this one has)."""
    from analysis.arch.models import ResNet
    from analysis.experiments import programlesion
    from analysis.experiments.lesion import check_inputs

    check_shards(shards, executor)
    check_precision(precision, device)
    plan = plan_sweep(kind, model, samples=samples, seed=seed, batch_size=batch_size)
    payload: ModelPayload | ProgramPayload
    if isinstance(model, ResNet):
        check_inputs(model.spec, x)
        payload = ModelPayload.of(model)
    else:
        programlesion.check_inputs(model, x)
        payload = ProgramPayload.of(model)
    tasks = [LesionShard(payload, *_part(x, y, lo, hi), plan.sequences, batch_size, device, precision)
             for lo, hi in shard_bounds(len(y), shards, batch_size)]
    counts = run_shards(lesion_shard, tasks, executor=executor, address=address, device=device, progress=progress)
    return plan.frame(torch.stack(counts).sum(0), len(y))


# ----------------------------------------------------------------------------- gradient by path length
def sharded_gradient_by_length(model: ResNet | ProgramChain, x: Tensor, y: Tensor, *, samples: int = 10,
                               ks: Sequence[int] | None = None, seed: int = 0, batch_size: int | None = None,
                               device: str = "cpu", shards: int = 2, executor: str = "local",
                               address: str | None = None, progress: ProgressFn | None = None,
                               precision: str = "fp32") -> pd.DataFrame:
    """:func:`analysis.experiments.paths.gradient_by_length` on ``shards`` contiguous parts of ``x``, each
    example's gradient scaled by the whole set's size, the per-example norms merged in order. With
    ``batch_size`` the parts are cut at its multiples and the table is bit-identical to
    ``gradient_by_length(..., batch_size=batch_size)``; without, see the module's note on the last
    bits. ``model``: a ResNet, or a program cut into units (:class:`~analysis.experiments.chain.ProgramChain`,
    on the CPU here; each shard opens its archive's bytes on its device, cut into the same units).
    ``progress(done, total)`` counts finished shards. ``precision``: as :func:`sharded_sweep` takes it."""
    from analysis.arch.models import ResNet
    from analysis.experiments import programlesion

    check_shards(shards, executor)
    check_precision(precision, device)
    blocks = check_paths_net(model, x)
    plan: LengthPlan = plan_lengths(len(blocks), samples=samples, ks=ks, seed=seed)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    payload: ModelPayload | ProgramPayload
    if isinstance(model, ResNet):
        payload = ModelPayload.of(model)
    else:  # its input's dtype too: what the shards are sent must be what the program takes
        programlesion.check_inputs(model, x)
        payload = ProgramPayload.of(model)
    subsets = plan.subsets
    tasks = [PathShard(payload, *_part(x, y, lo, hi), subsets, len(y), batch_size, device, precision)
             for lo, hi in shard_bounds(len(y), shards, batch_size or 1)]
    norms = run_shards(path_shard, tasks, executor=executor, address=address, device=device, progress=progress)
    return plan.frame(torch.cat(norms, dim=1))
