"""Benchmark: ResNet-152's full per-layer cost table, ours (from the spec) vs torchinfo.summary
(model construction included for both), in the same run. Target: >= 20x faster, identical totals.

    .venv/bin/python benchmarks/bench_costs.py [--repeats N] [--model NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torchinfo

from analysis.arch.costs import layer_table, torchinfo_mult_adds
from analysis.arch.models import build_model
from analysis.arch.specs import get_spec

TARGET = 20.0


def ours(name: str) -> tuple[int, int]:
    df = layer_table(get_spec(name))
    return int(df["params"].sum()), torchinfo_mult_adds(df)


def baseline(name: str) -> tuple[int, int]:
    spec = get_spec(name)
    model = build_model(spec)
    s = torchinfo.summary(model, input_size=(1, *spec.input_shape()),
                          verbose=0, device="cpu")
    return int(s.total_params), int(s.total_mult_adds)


def timed(fn, name: str, repeats: int) -> tuple[float, tuple[int, int]]:
    times, result = [], (0, 0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(name)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet152")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ours(args.model)  # warm imports and pandas
    t_ours, r_ours = timed(ours, args.model, args.repeats)
    t_base, r_base = timed(baseline, args.model, args.repeats)
    ratio = t_base / t_ours
    print(f"model: {args.model}   repeats: {args.repeats} (median)")
    print(f"ResNet Lens layer table : {t_ours * 1e3:9.1f} ms   params {r_ours[0]:,}   mult-adds {r_ours[1]:,}")
    print(f"torchinfo.summary       : {t_base * 1e3:9.1f} ms   params {r_base[0]:,}   mult-adds {r_base[1]:,}")
    print(f"speed ratio             : {ratio:.1f}x (target >= {TARGET:.0f}x)   identical totals: {r_ours == r_base}")
    # A net far too large to build (40 GB of float32 weights) is analysed from its spec alone.
    import tracemalloc

    from analysis.arch.costs import totals
    from analysis.arch.specs import custom_spec

    big = custom_spec(block="basic", layers=(4, 4, 4, 4), widths=(8192, 16384, 16384, 16384), input_size=224)
    tracemalloc.start()
    t0 = time.perf_counter()
    t = totals(big)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{t.params / 1e9:.1f}-billion-parameter custom spec: {t.params:,} params, {t.macs:,} MACs in {dt * 1e3:.1f} ms, "
          f"peak {peak / 2**20:.2f} MiB traced")
    return 0 if r_ours == r_base else 1


if __name__ == "__main__":
    sys.exit(main())
