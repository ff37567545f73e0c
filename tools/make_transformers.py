"""Train, evaluate, export and save the shipped transformers (checkpoints/README.md, "Transformers").

    python tools/make_transformers.py                       # all four, seed 0, into checkpoints/
    python tools/make_transformers.py --net digits_vit --seed 3 --out /tmp/seeds
    python tools/make_transformers.py --reexport            # the shipped weights, exported anew

Each net is trained on one thread (deterministic for a given thread count), exported for a batch of
EXPORT_BATCH inputs, re-evaluated through the exported program and written as ``<out>/<name>.pt2`` (seed 0)
or ``<out>/<name>_seed<k>.pt2`` with its metadata inside. ``--reexport`` rebuilds each shipped net from
its file (architecture and weights, no training), exports it at today's EXPORT_BATCH and counts its
accuracies again through the new program; recipe, seed and history stay the file's.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

from analysis.arch.tinyformers import build
from analysis.experiments.train_transformers import (
    EXPORT_BATCH,
    NETS,
    accuracy_of_program,
    export_net,
    load_data,
    train_net,
)
from analysis.store.programs import SHIPPED_DIR, load_shipped, read_meta_text, save_program


def _report(name: str, row: dict[str, Any]) -> None:
    print(f"{name} epoch {row['epoch']}: train {row['train_acc']:.3f} test {row['test_acc']:.3f} "
          f"({row['seconds']:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", action="append", choices=sorted(NETS), help="one net (repeatable); default: all four")
    ap.add_argument("--seed", type=int, default=0, help="initial weights from seed, batch order from seed + 1")
    ap.add_argument("--out", type=Path, default=SHIPPED_DIR, help="folder for the .pt2 files")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on the count)")
    ap.add_argument("--reexport", action="store_true", help="export the shipped nets' weights anew (no training)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.reexport:
        return reexport(args.net or list(NETS))
    data = {}
    for name in args.net or list(NETS):
        spec = NETS[name]
        if spec.dataset not in data:
            data[spec.dataset] = load_data(spec.dataset)
        model, meta = train_net(name, args.seed, data=data[spec.dataset], callback=partial(_report, name))
        meta["command"] = "python tools/make_transformers.py " + " ".join(sys.argv[1:] if argv is None else argv)
        path = args.out / (name + (f"_seed{args.seed}" if args.seed else "") + ".pt2")
        save_program(path, export_net(model, data[spec.dataset]), meta)
        _, read = load_shipped(path)  # what was written opens and says what was measured
        if read.final != meta["final"]:
            raise SystemExit(f"{path}: the saved metadata reads back differently")
        f = meta["final"]
        print(f"{path}: {meta['params']:,} parameters, train {f['train_correct']}/{f['train_n']} "
              f"({f['train_acc']:.2%}), test {f['test_correct']}/{f['test_n']} ({f['test_acc']:.2%}), "
              f"{meta['train_seconds']:.0f} s, {path.stat().st_size / 1e6:.2f} MB", flush=True)
    return 0


def reexport(names: list[str]) -> int:
    """Each shipped net rebuilt from its file and exported at EXPORT_BATCH, its accuracies counted
    again through the new program (the weights are the file's: nothing is trained)."""
    for name in names:
        path = SHIPPED_DIR / f"{name}.pt2"
        ep, meta = load_shipped(path)
        model = build(meta.architecture)
        model.load_state_dict(ep.state_dict, strict=True)
        model.eval()
        data = load_data(meta.dataset, meta.split_seed)
        new = export_net(model, data)
        train, test = (accuracy_of_program(new, x, y) for x, y in ((data.x_train, data.y_train),
                                                                    (data.x_test, data.y_test)))
        raw = json.loads(read_meta_text(path))
        raw["export_batch"] = min(EXPORT_BATCH, len(data.x_test))
        raw["final"] = {"train_acc": train["acc"], "train_correct": train["correct"], "train_n": train["n"],
                        "test_acc": test["acc"], "test_correct": test["correct"], "test_n": test["n"]}
        was = meta.final
        save_program(path, new, raw)
        print(f"{path}: exported for a batch of {EXPORT_BATCH}; test {was['test_correct']} -> {test['correct']}, "
              f"train {was['train_correct']} -> {train['correct']} correct", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
