"""Benchmark: a net's cost table and unit table from its ``torch.export`` program vs torchinfo.summary,
in the same run, for ResNet-152 (the built-in spec) and ViT-B/16 (86,567,656 parameters:
analysis/arch/examples.py, timm's layout).

* opening a ``.pt2`` (the issue's case: a user exported their net and opens the file here):
  ``read_program`` (load_program's checks: every pickled part loaded weights_only first, the memory
  budget; then the program's JSON alone, no weights) and
  ``open_program`` (cost rows and units) and the unit table. Measured for a file with its float32
  weights and for a graph-only file exported on meta;
* from a module: built on the meta device (no weights allocated), ``export_module`` (torch.export on
  meta) and ``open_program``: what ``--module`` and the examples do (torch.export's tracing dominates);
* torchinfo: the same module built on the CPU with real weights (torchinfo runs a forward pass), then
  ``torchinfo.summary(module, input_size=...)``, building included.

The parameters of every table must equal torchinfo's total; the module-path's parameters and buffers
must all be on meta, and the process's peak resident memory while it runs (measured before any CPU
copy exists) must stay below the weights' size. Goal: opening the file >= 5x faster than torchinfo.
Each side runs ``--repeats`` times (at least 5), one run of each per round; the ratio is reported at
the median (median over median) and at the worst (torchinfo's fastest run over our slowest), with the
load average at the start and the end (a busy machine widens the spread).

    .venv/bin/python benchmarks/bench_open.py [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchinfo
from torch import nn

from analysis.arch.examples import VisionTransformer
from analysis.arch.graphnet import export_module, open_program, summary
from analysis.arch.models import ResNet
from analysis.arch.programjson import read_program
from analysis.arch.specs import get_spec

TARGET = 5.0


# ------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]  # builds on whatever device is current
    input_shape: tuple[int, ...]
    units: int  # the residual units a reader of the code names


def cases() -> list[Case]:
    spec = get_spec("resnet152")
    return [Case("ResNet-152", lambda: ResNet(spec), (1, *spec.input_shape()), 50),
            Case("ViT-B/16", VisionTransformer, (1, 3, 224, 224), 24)]


def rss() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process (Linux /proc)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak() -> None:
    """Peak RSS back to the current RSS (Linux >= 4.0: writing 5 to clear_refs), so each measure starts fresh."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def ours(case: Case) -> tuple[dict[str, float], int, int, bool]:
    """(times by part, params, units, every weight on meta)."""
    t0 = time.perf_counter()
    with torch.device("meta"):
        module = case.build()
    t1 = time.perf_counter()
    ep = export_module(module, (torch.zeros(case.input_shape, device="meta"),), name=case.name)
    t2 = time.perf_counter()
    net = open_program(ep, name=case.name)
    table = [u.as_row() for u in net.units]  # the unit table as the CLI and the pages show it
    counts = summary(net.units)
    t3 = time.perf_counter()
    on_meta = (all(t.is_meta for t in module.parameters()) and all(t.is_meta for t in module.buffers())
               and all(t.is_meta for t in ep.state_dict.values()))
    return {"build": t1 - t0, "export": t2 - t1, "open": t3 - t2}, net.params, min(len(table), counts["units"]), on_meta


def saved(case: Case, weights: bool) -> bytes:
    """The case's program as a user's .pt2 file: exported with real CPU weights, or on meta (graph only)."""
    if weights:
        module = case.build().eval()
        example = torch.zeros(case.input_shape)
    else:
        with torch.device("meta"):
            module = case.build().eval()
        example = torch.zeros(case.input_shape, device="meta")
    buf = io.BytesIO()
    torch.export.save(export_module(module, (example,), name=case.name), buf)
    return buf.getvalue()


def from_file(blob: bytes, name: str) -> tuple[dict[str, float], int]:
    """Opening a user's .pt2 as the app does (sources.open_file): the checks (pickled parts weights_only,
    budget, symbolic shapes), the program read from its JSON (programjson.read_program: no weights, no
    torch deserializer) and the graph reading."""
    t0 = time.perf_counter()
    ep = read_program(blob, f"{name}.pt2")
    t1 = time.perf_counter()
    net = open_program(ep, name=name)  # type: ignore[arg-type]  # a LightProgram: what open_program reads
    [u.as_row() for u in net.units]
    summary(net.units)
    t2 = time.perf_counter()
    return {"load": t1 - t0, "open": t2 - t1}, net.params


def theirs(case: Case) -> tuple[dict[str, float], int]:
    t0 = time.perf_counter()
    module = case.build()
    t1 = time.perf_counter()
    s = torchinfo.summary(module, input_size=case.input_shape, verbose=0, device="cpu")
    t2 = time.perf_counter()
    return {"build": t1 - t0, "summary": t2 - t1}, int(s.total_params)


def median_parts(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def split(parts: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 1e3:.0f}" for k, v in parts.items())


def spread(times: list[float]) -> str:
    """Median [fastest-slowest] in ms."""
    return f"{statistics.median(times) * 1e3:7.0f} [{min(times) * 1e3:.0f}-{max(times) * 1e3:.0f}]"


def ratios(base: list[float], ours_: list[float]) -> tuple[float, float]:
    """(median ratio, worst ratio): the medians' ratio, and torchinfo's fastest run over our slowest."""
    return statistics.median(base) / statistics.median(ours_), min(base) / max(ours_)


def verdict(median: float, worst: float) -> str:
    met = "met" if worst >= TARGET else "met at the median only" if median >= TARGET else "NOT met"
    return f"ratio median {median:.1f}x, worst {worst:.1f}x (goal >= {TARGET:.0f}x: {met})"


MIN_REPEATS = 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS,
                    help=f"runs of each side (at least {MIN_REPEATS}), interleaved")
    args = ap.parse_args()
    if args.repeats < MIN_REPEATS:
        ap.error(f"--repeats must be at least {MIN_REPEATS}: the worst ratio needs several runs of each side")
    torch.set_num_threads(2)
    # warm torch.export's lazy imports on a small net, so the first case does not pay them
    with torch.device("meta"):
        small = ResNet(get_spec("cifar_resnet20"))
    open_program(export_module(small, (torch.zeros(1, 3, 32, 32, device="meta"),)))
    ok = True
    print(f"repeats: {args.repeats} of each side, interleaved; torch threads: {torch.get_num_threads()}; "
          f"load average at start {os.getloadavg()[0]:.2f}; times in ms, median [fastest-slowest]")
    for case in cases():
        # memory first, before any CPU copy of the weights exists in this process
        reset_peak()
        before, _ = rss()
        _, params, units, on_meta = ours(case)
        peak = rss()[1] - before
        weights = params * 4  # float32
        blobs = {with_weights: saved(case, with_weights) for with_weights in (False, True)}
        runs: list[tuple[dict[str, float], int, int, bool]] = []
        base: list[tuple[dict[str, float], int]] = []
        files: dict[bool, list[tuple[dict[str, float], int]]] = {False: [], True: []}
        for _ in range(args.repeats):  # one run of each side per round: a busy spell slows both alike
            base.append(theirs(case))
            runs.append(ours(case))
            for with_weights, blob in blobs.items():
                files[with_weights].append(from_file(blob, case.name))
        t_base = [sum(b[0].values()) for b in base]
        t_ours = [sum(r[0].values()) for r in runs]
        base_params = base[0][1]
        same = (params == base_params and all(r[1] == params for r in runs) and all(b[1] == base_params for b in base)
                and all(f[1] == base_params for fs in files.values() for f in fs))
        light = on_meta and peak < weights
        print(f"\n{case.name} {case.input_shape}: {units} residual units (expected {case.units})")
        print(f"  torchinfo.summary (CPU weights)   : {spread(t_base)}   [{split(median_parts([b[0] for b in base]))}]")
        print(f"  ResNet Lens (meta + export + open): {spread(t_ours)}   [{split(median_parts([r[0] for r in runs]))}]   "
              f"{verdict(*ratios(t_base, t_ours))}")
        for with_weights, blob in blobs.items():
            t_file = [sum(f[0].values()) for f in files[with_weights]]
            kind = "with its float32 weights" if with_weights else "graph only (exported on meta)"
            print(f"  opening the .pt2, {kind} ({len(blob) / 2**20:,.1f} MiB): {spread(t_file)}   "
                  f"[{split(median_parts([f[0] for f in files[with_weights]]))}]   {verdict(*ratios(t_base, t_file))}")
        print(f"  params: ours {params:,}   torchinfo {base_params:,}   equal: {same}")
        ok = ok and same and light and units == case.units
        print(f"  weights allocated for our table: {'none' if on_meta else 'SOME'} (every parameter, buffer and "
              f"program weight on meta: {on_meta}); peak RSS growth {peak / 2**20:.0f} MiB vs "
              f"{weights / 2**20:.0f} MiB of float32 weights")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
