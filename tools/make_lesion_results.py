"""Run the Lesion lab's sweeps on the shipped transformers once and store them beside the programs.

For each shipped residual program (``digits_vit``, ``mnist1d_transformer``) and its plain twin, every
sweep kind the page offers (lesion.SWEEP_KINDS) at each granularity that applies (units where the
program has residual units, layers always), with the page's default settings (the random sweeps:
lesionstore.PAGE_SAMPLES samples, seed PAGE_SEED), on the program's own data. A sweep whose plan the
program refuses (a plain twin's parallel layers) is left out, as the page refuses it before running.

The Lesion lab shows these at once for a shipped program ("stored with the checkpoint") when neither
the session nor the run store has the sweep; its Run button measures anew. Rerun this after retraining
a shipped program: the file carries the program's SHA-256, and the page ignores sweeps made on another
version of it.

    .venv/bin/python tools/make_lesion_results.py                       # every shipped program
    .venv/bin/python tools/make_lesion_results.py --only digits_vit     # one (repeatable)
"""

from __future__ import annotations

import argparse
import time

import torch

from analysis.core.errors import LensError
from analysis.experiments import lesion, lesionstore, programlesion
from analysis.store import programs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="program stem (repeatable); default: every shipped one")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the app sweeps on one intra-op thread per session (ui/runtime.py)
    for name, file in programs.shipped_programs().items():
        if args.only and name not in args.only:
            continue
        ep, meta = programs.load_shipped(file)
        data = programs.dataset_for_program(meta)
        cuts = programlesion.cut(ep, file.name)
        sweeps: list[lesionstore.StoredSweep] = []
        for granularity, chain in cuts.chains.items():
            units = tuple(b.name for b in lesion.infos_of(chain))
            for kind in lesion.SWEEP_KINDS:
                samples, seed = lesionstore.PAGE_SAMPLES, lesionstore.PAGE_SEED
                settings = lesion.sweep_settings(kind, data, samples=samples, seed=seed)
                try:  # the page refuses such a sweep before running it: nothing to store
                    lesion.plan_sweep(kind, chain, samples=samples, seed=seed)
                except LensError as exc:
                    print(f"{name} {granularity} {kind}: not run ({exc})", flush=True)
                    continue
                t0 = time.perf_counter()
                frame = lesion.run_sweep(kind, chain, data.x_test, data.y_test, samples=samples, seed=seed)
                print(f"{name} {granularity} {kind}: {len(frame)} rows, {time.perf_counter() - t0:.1f} s", flush=True)
                sweeps.append(lesionstore.StoredSweep(granularity, kind, settings, units, frame))
        out = lesionstore.save_results(file, sweeps)
        print(f"  -> {out} ({out.stat().st_size:,} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
