"""Measure the shipped residual nets' gradient by path length once and store it beside them.

The shipped residual ResNets are measured trained and at initialisation; the shipped residual
transformers (``.pt2`` programs, measured over their residual units on their own data, rebuilt from
their metadata) trained only: a program file holds its trained weights and no initialiser. Their plain
twins have a single path and are skipped.

The Path ensemble page shows these stored results at once for a shipped net (saying they are stored
and with which settings) and measures anew only when the user presses *Measure*. Rerun this after
retraining a shipped checkpoint: stored results carry the checkpoint's SHA-256, and the page ignores
results made on another version of the file.

    .venv/bin/python tools/make_path_results.py                      # page defaults: 10 samples, batch 64, seed 0
    .venv/bin/python tools/make_path_results.py --samples 3 --only digits_resnet20
    .venv/bin/python tools/make_path_results.py --only digits_vit --only mnist1d_transformer

Results for other settings are merged into the file (same settings are replaced).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from analysis.data.data import Dataset
from analysis.experiments import paths
from analysis.experiments.chain import ProgramChain
from analysis.store import programs
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = paths.MeasureSettings()
    ap.add_argument("--samples", type=int, default=defaults.samples)
    ap.add_argument("--batch", type=int, default=defaults.batch)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--only", action="append",
                    help="checkpoint or program stem (repeatable); default: every residual one")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the app measures on one intra-op thread per session (ui/runtime.py)
    settings = paths.MeasureSettings(args.samples, args.batch, args.seed)
    for name, file in shipped_checkpoints().items():
        if args.only and name not in args.only:
            continue
        ck = load_checkpoint(file)
        if not ck.spec.residual:
            continue
        store(name, file, dataset_for(ck.meta), {"trained": ck.model, "initialisation": paths.initialised(ck.model)},
              settings)
    for name, file in programs.shipped_programs().items():
        if args.only and name not in args.only:
            continue
        ep, meta = programs.load_shipped(file)
        if not meta.residual:  # a plain twin: no residual unit, a single path
            continue
        store(name, file, programs.dataset_for_program(meta), {"trained": ProgramChain(ep, name=name)}, settings)
    return 0


def store(name: str, file: Path, data: Dataset, nets: dict[str, paths.PathNet], settings: paths.MeasureSettings) -> None:
    """Measure each net on ``data``'s first test inputs and merge the results into the file beside ``file``."""
    results: dict[tuple[str, paths.MeasureSettings], pd.DataFrame] = paths.load_results(file)
    for net, model in nets.items():
        t0 = time.perf_counter()
        results[(net, settings)] = paths.measure(model, data.x_test, data.y_test, settings)
        print(f"{name} {net}: {settings.describe()}: {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"  -> {paths.save_results(file, results)}")


if __name__ == "__main__":
    raise SystemExit(main())
