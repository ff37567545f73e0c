"""Fuzz: seeded random argument vectors for ``python -m analysis train`` and ``lesion`` (issue 10,
items 4 and 7), category ``cli-options``.

Every vector with a meaningless setting (a non-finite or out-of-range number, a zero or negative
size, a bad --out, an unknown model, a malformed option) must raise a ``LensError`` from
``analysis.cli.main.run`` (which ``main`` prints as one ``error:`` line, exit 2) before any work, and
leave no file behind. A few valid tiny runs must write what they say: a loadable checkpoint with
finite weights, or a CSV with the right rows. Each case runs under a deadline, so a check that is
missing (a 100,000-epoch run accepted) counts as a crash instead of hanging the suite.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from analysis.cli.main import run
from analysis.store.checkpoints import load_checkpoint, shipped_checkpoints
from tests.fuzz.harness import Case, assert_no_failures, no_hang, run_cases

SEED = 20_251_110
DEADLINE_S = 60.0
TRAIN = ["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "1"]
LESION = ["lesion", "--checkpoint", "digits_resnet20", "--experiment", "single"]

# Values each option must refuse (argparse refuses the non-numbers: a usage error, still a LensError).
DEVICES = ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", " cpu", "cuda:99999", "mps", "", "cuda:999"]
SEEDS = ["-1", str(2**63), str(2**100), "1.5", "0x10", "nan", ""]
BAD_TRAIN: dict[str, list[str]] = {
    "--lr": ["nan", "inf", "-inf", "1e30", "0", "-0.1", "10.000001", "1e309", "NaN", "-nan", "fast", "", "1e-400"],
    "--momentum": ["nan", "1", "1.5", "-0.01", "inf", "-inf", "one"],
    "--weight-decay": ["nan", "inf", "-1e-4", "1.01", "1e30", "-inf", "-0.5"],
    "--epochs": ["0", "-1", "100001", str(-2**63), "1.0", "nan", "1e3", ""],
    "--batch-size": ["0", "-1", "1000001", "2.5", "inf", "-64"],
    "--warmup": ["-1", "2", "99999999", "0.5"],
    "--seed": SEEDS,
    "--split-seed": ["-1", str(2**63), "x"],
    "--size": ["0", "-8", "5000", "7", "nan", "12"],
    "--device": DEVICES,
    "--model": ["resnet19", "", "cifar_resnet21", "plain_", "resnet18;rm -rf /", "cifar_resnet-4", "RESNET",
                "x" * 1000, "cifar_resnet99999999999", "preact_", "cifar_resnet2"],
    "--schedule": ["linear", "", "COSINE"],
    "--data": ["mnist", "cifar10", "imagefolder"],
}
BAD_LESION: dict[str, list[str]] = {
    "--samples": ["0", "-1", "100001", "1.5", "nan"],
    "--batch-size": ["0", "-1", "1000001", "x", "-256"],
    "--seed": SEEDS,
    "--size": ["0", "-1", "5000", "8", "32"],
    "--max-per-class": ["0", "-5", "x"],
    "--resize": ["0", "-256", "9000"],
    "--device": DEVICES,
    "--split-seed": ["-1", str(2**64)],
    "--experiment": ["double", "", "K"],
    "--checkpoint": ["", "missing.pt", "digits_resnet21", "a\0b", "x" * 300],
}


def deadline(fn: Callable[[], Any], seconds: float = DEADLINE_S) -> Any:
    return no_hang(fn, seconds=seconds)


def cli(argv: list[str]) -> Callable[[], int]:
    return lambda: deadline(lambda: run(argv))


def bad_outs(root: Path) -> dict[str, str]:
    """Output paths neither command may accept (fixtures created here)."""
    root.mkdir()
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    (root / "dangling").symlink_to(root / "nowhere" / "deeper")
    return {"empty": "", "blank": " ", "dot": ".", "dotdot": "..", "directory": str(root / "a_dir"),
            "trailing-slash dir": str(root / "a_dir") + "/", "under-file": str(root / "a_file" / "x"),
            "deep-under-file": str(root / "a_file" / "d" / "e" / "x"), "proc": "/proc/lens_fuzz.out",
            "too-long": str(root / ("n" * 256)), "too-long-dir": str(root / ("d" * 300) / "x"),
            "nul": str(root / "a\0b"), "broken-link": str(root / "dangling" / "x"), "root": "/"}


def finite_checkpoint(path: Path, epochs: int) -> Callable[[int], bool]:
    def check(rc: int) -> bool:
        ck = load_checkpoint(path)
        umask = os.umask(0)
        os.umask(umask)
        return (rc == 0 and ck.meta.status == "complete" and len(ck.meta.history) == epochs
                and math.isfinite(ck.meta.final["test_loss"]) and path.stat().st_mode & 0o777 == 0o666 & ~umask
                and all(bool(torch.isfinite(v).all()) for v in ck.model.state_dict().values() if v.is_floating_point()))
    return check


def csv_rows(path: Path, rows: int | None, experiment: str) -> Callable[[int], bool]:
    def check(rc: int) -> bool:
        df = pd.read_csv(path)
        return (rc == 0 and (rows is None or len(df) == rows) and set(df["experiment"]) == {experiment}
                and bool(df["error"].between(0, 1).all()))
    return check


def generate(root: Path) -> list[Case]:
    rng = random.Random(SEED)
    err, ok = root / "err", root / "ok"
    err.mkdir()
    ok.mkdir()
    cases: list[Case] = []

    def mutate(base: list[str], table: dict[str, list[str]], i: int, prefix: str) -> None:
        opts = rng.sample(sorted(table), rng.choice([1, 1, 1, 2, 3]))
        argv = list(base)
        for opt in opts:
            argv += [opt, rng.choice(table[opt])]
        if "--data" in opts and argv[argv.index("--data") + 1] == "imagefolder" and rng.random() < 0.5:
            argv += ["--data-path", str(root / "no_such_folder")]
        cases.append(Case(f"{prefix}-{i:03d}{''.join(opts)}", cli([*argv, "--out", str(err / f"{prefix}{i}")]), "error"))

    for i in range(95):
        mutate(TRAIN, BAD_TRAIN, i, "train")
    for i in range(70):
        mutate(LESION, BAD_LESION, i, "lesion")

    outs = bad_outs(root / "paths")
    for name, out in outs.items():
        cases.append(Case(f"train-out-{name}", cli([*TRAIN, "--out", out]), "error"))
        cases.append(Case(f"lesion-out-{name}", cli([*LESION, "--out", out]), "error"))
    own, garbage = root / "own.pt", root / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    shutil.copyfile(shipped_checkpoints()["digits_resnet20"], own)
    misc: dict[str, list[str]] = {
        "train-missing-out": TRAIN,
        "train-unknown-option": [*TRAIN, "--bogus", "--out", str(err / "u")],
        "train-no-command": ["--out", str(err / "n")],
        "train-data-path-for-digits": [*TRAIN, "--data-path", str(root), "--out", str(err / "dp")],
        "train-cifar-missing": [*TRAIN, "--data", "cifar10", "--data-path", str(root / "none"), "--out", str(err / "c")],
        "lesion-out-is-checkpoint": ["lesion", "--checkpoint", str(own), "--out", str(own)],
        "lesion-checkpoint-is-dir": ["lesion", "--checkpoint", str(root), "--out", str(err / "d")],
        "lesion-checkpoint-garbage": ["lesion", "--checkpoint", str(garbage), "--out", str(err / "g")],
        "lesion-plain-contradicts-metadata": [*LESION, "--plain", "--out", str(err / "p")],
        "lesion-plain-and-residual": [*LESION, "--plain", "--residual", "--out", str(err / "pr")],
        "lesion-data-path-for-digits": [*LESION, "--data-path", str(root), "--out", str(err / "ldp")],
    }
    cases += [Case(name, cli(argv), "error") for name, argv in misc.items()]

    # valid tiny runs, each with a check of what it wrote
    t1, t2, t3 = ok / "r8.pt", ok / "nested" / "deeper" / "plain8.pt", ok / "pre.pt"
    t3.write_bytes(b"an old file to replace")
    cases += [
        Case("valid-train-tiny", cli([*TRAIN, "--out", str(t1)]), "valid", finite_checkpoint(t1, 1)),
        Case("valid-train-edges", cli([*TRAIN, "--plain", "--schedule", "step", "--no-augment", "--warmup", "0",
                                      "--lr", "10", "--momentum", "0", "--weight-decay", "0", "--batch-size", "1000",
                                      "--seed", str(2**63 - 1), "--split-seed", "7", "--out", str(t2)]),
             "valid", finite_checkpoint(t2, 1)),
        Case("valid-train-replace", cli([*TRAIN, "--preact", "--epochs", "2", "--batch-size", "256", "--lr", "1e-6",
                                        "--out", str(t3)]), "valid", finite_checkpoint(t3, 2)),
    ]
    l1, l2, l3, l4 = ok / "single.csv", ok / "k.csv", ok / "reorder.csv", ok / "new" / "dir" / "s.csv"
    cases += [
        Case("valid-lesion-single", cli([*LESION, "--out", str(l1)]), "valid", csv_rows(l1, 10, "single")),
        Case("valid-lesion-k", cli(["lesion", "--checkpoint", "digits_plain20", "--experiment", "k", "--samples", "1",
                                    "--seed", "3", "--out", str(l2)]), "valid", csv_rows(l2, None, "k")),
        Case("valid-lesion-reorder", cli(["lesion", "--checkpoint", "digits_resnet20", "--experiment", "reorder",
                                          "--samples", "1", "--batch-size", "1", "--out", str(l3)]),
             "valid", csv_rows(l3, None, "reorder")),
        Case("valid-lesion-explicit", cli([*LESION, "--size", "16", "--batch-size", "1000000", "--samples", "100000",
                                           "--seed", str(2**63 - 1), "--residual", "--out", str(l4)]),
             "valid", csv_rows(l4, 10, "single")),
    ]
    return cases


def test_cli_options_fuzz(tmp_path, capsys):
    cases = generate(tmp_path)
    assert len(cases) >= 200
    report = run_cases("cli-options", cases)
    capsys.readouterr()  # the progress bars and tables of the valid runs
    assert_no_failures(report)
    assert report.count("valid") == sum(c.expect == "valid" for c in cases)
    # refused cases wrote nothing; no run left a temp file anywhere
    assert not list((tmp_path / "err").iterdir())
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_generation_is_seeded(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = [c.name for c in generate(tmp_path / "a")], [c.name for c in generate(tmp_path / "b")]
    assert a == b and len(set(a)) == len(a)
