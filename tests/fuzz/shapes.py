"""Generated inputs small on disk that cost unbounded time or memory once read (issue 27): reference
DAGs ("billion laughs"), deep nesting, header bombs, damaged run stores, other scripts' digits, and
oversized link values. Every case is bad input: a correct library refuses it with one of our errors,
in bounded time and memory.

``categories(folder)`` builds the files under ``folder`` and returns ``{category: [Case, ...]}``; the
cases call only public entry points (``load_checkpoint``, ``load_cifar10``, ``load_image_folder``,
the results readers, ``RunStore``, the CLI's ``main``, ``urlstate.decode``), so the same generators
measure any version of the library (``python -m tests.fuzz.isolated`` runs each case in a process
of its own and also counts hangs and memory blow-ups).
"""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.core.errors import LensError
from tests.fuzz.harness import Case
from tests.fuzz.test_data_fuzz import png_declaring

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "digits_resnet20.pt"
PLACEHOLDER = b"FUZZ-PLACEHOLDER"
_PLACEHOLDER_OP = b"X" + struct.pack("<I", len(PLACEHOLDER)) + PLACEHOLDER  # BINUNICODE, as pickle writes it


def dag(levels: int) -> list:
    x: list = [0]
    for _ in range(levels):
        x = [x, x]
    return x


def dict_dag(levels: int) -> dict:
    x: dict = {"a": 0}
    for i in range(levels):
        x = {f"k{i}a": x, f"k{i}b": x}
    return x


def nest_ops(depth: int, kind: str = "list") -> bytes:
    """Pickle opcodes for a list (or dict) nested ``depth`` levels (protocol 2, no PROTO or STOP)."""
    if kind == "list":
        return b"]" * depth + b"a" * (depth - 1)
    # dict: EMPTY_DICT, then key "k" and the inner value, SETITEM, from the inside out
    return b"}" + (b"X\x01\x00\x00\x00k}") * (depth - 1) + b"s" * (depth - 1)


def _replace_in_pickle(pkl: bytes, ops: bytes) -> bytes:
    assert pkl.count(_PLACEHOLDER_OP) == 1, "the placeholder must appear once"
    return pkl.replace(_PLACEHOLDER_OP, ops)


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _with_ops(blob: bytes, ops: bytes) -> bytes:
    """A torch zip file with the placeholder string's opcodes in data.pkl replaced by ``ops``."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = _replace_in_pickle(data, ops)
            z.writestr(info, data)
    return out.getvalue()


def _shipped() -> dict:
    return torch.load(SHIPPED, weights_only=True)


META_FIELDS = ("created", "command", "versions", "history", "final", "dataset", "recipe", "normalisation",
               "status", "train_seconds")


def _checkpoint_with(field: str, value: object) -> bytes:
    obj = _shipped()
    if field == "spec":
        obj["meta"]["spec"] = value
    elif field == "state_dict-extra":
        obj["state_dict"] = {**obj["state_dict"], "fc.extra": value}
    else:
        obj["meta"][field] = value
    return _torch_bytes(obj)


def _load(blob: bytes, name: str) -> Callable[[], Any]:
    def run() -> Any:
        from analysis.store.checkpoints import load_checkpoint

        return load_checkpoint(blob, name=name)
    return run


def _cifar_folder(root: Path, batch2: bytes) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    (root / "data_batch_2").write_bytes(batch2)
    return root


def _cifar(root: Path) -> Callable[[], Any]:
    def run() -> Any:
        from analysis.data.data import load_cifar10

        return load_cifar10(root)
    return run


# ------------------------------------------------------------------ categories
def reference_dags(folder: Path) -> list[Case]:
    cases = []
    for field in (*META_FIELDS, "spec"):
        for levels in (25, 40):
            for shape, make in (("list", dag), ("dict", dict_dag)):
                blob = _checkpoint_with(field, make(levels))
                cases.append(Case(f"ckpt-{field}-{shape}-dag{levels}", _load(blob, "dag.pt"), "error"))
    for field in ("labels", "data", "extra"):
        for levels in (25, 40):
            d: dict[Any, Any] = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
            key = field.encode()
            d[key] = dag(levels)
            root = _cifar_folder(folder / f"cifar-dag-{field}-{levels}", pickle.dumps(d, protocol=2))
            cases.append(Case(f"cifar-{field}-dag{levels}", _cifar(root), "error"))
    return cases


def deep_nesting(folder: Path) -> list[Case]:
    cases = []
    base = _shipped()
    for field in ("created", "history", "versions", "spec", "recipe"):
        for depth in (100, 3_000, 100_000, 1_000_000):
            for kind in ("list", "dict"):
                obj = {**base, "meta": {**base["meta"]}}
                if field == "spec":
                    obj["meta"]["spec"] = PLACEHOLDER.decode()
                else:
                    obj["meta"][field] = PLACEHOLDER.decode()
                blob = _with_ops(_torch_bytes(obj), nest_ops(depth, kind))
                cases.append(Case(f"ckpt-{field}-{kind}{depth}", _load(blob, "deep.pt"), "error"))
    for field in ("labels", "data"):
        for depth in (3_000, 1_000_000):
            d = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
            d[field.encode()] = PLACEHOLDER.decode()
            pkl = _replace_in_pickle(pickle.dumps(d, protocol=2), nest_ops(depth))
            root = _cifar_folder(folder / f"cifar-deep-{field}-{depth}", pkl)
            cases.append(Case(f"cifar-{field}-deep{depth}", _cifar(root), "error"))
    for depth in (100, 3_000, 100_000):
        for reader in ("grid", "transfer", "paths"):
            text = "[" * depth + "]" * depth if depth > 100 else json.dumps({"format": "x", "a": dag(0)})[:-1] + (
                ', "b": ' + "[" * depth + "]" * depth + "}")
            f = folder / f"results-{reader}-{depth}.json"
            f.write_text(text)
            cases.append(Case(f"results-{reader}-deep{depth}", _results_reader(reader, f, folder), "error"))
    return cases


def _results_reader(reader: str, f: Path, folder: Path) -> Callable[[], Any]:
    def run() -> Any:
        if reader == "grid":
            from analysis.studies import grid

            return grid.load_results(str(f))
        if reader == "transfer":
            from analysis.studies import transfer

            return transfer.load_results(str(f))
        from analysis.experiments import paths

        ck = folder / f"{f.stem}.pt"
        ck.write_bytes(b"weights")
        rf = paths.results_file(ck)
        rf.parent.mkdir(parents=True, exist_ok=True)
        rf.write_text(f.read_text())
        return paths.load_results(ck)
    return run


def header_bombs(folder: Path) -> list[Case]:
    from PIL import Image

    cases = []
    for w, h in ((20_000, 20_000), (9_000, 9_000), (100_000, 10), (1, 200_000_000), (65_535, 65_535)):
        root = folder / f"img-{w}x{h}"
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(root / c / f"{i}.png")
        png_declaring(root / "a" / "bomb.png", w, h)

        def run(root: Path = root) -> Any:
            from analysis.data.data import load_image_folder

            return load_image_folder(root, size=8)
        cases.append(Case(f"png-declares-{w}x{h}", run, "error"))
    shapes = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}
    for key, shape in (("x", (200_000, 200_000)), ("y", (10**11,)), ("x_test", (10**6, 10**6)),
                       ("x", (4000, 40, 10**6))):
        path = folder / f"mnist1d-{key}-{'x'.join(map(str, shape))}.npz"
        with zipfile.ZipFile(path, "w") as z:
            for k, s in {**shapes, key: shape}.items():
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": s})
                z.writestr(f"{k}.npy", buf.getvalue() + b"\0" * 64)

        def run_npz(path: Path = path) -> Any:
            from analysis.data import mnist1d

            return mnist1d._read(path)
        cases.append(Case(f"npz-{path.stem}", run_npz, "error"))
    return cases


def _a_store(folder: Path) -> bytes:
    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.core.meta import RunMeta, TrainConfig
    from analysis.store.checkpoints import Checkpoint
    from analysis.store.runstore import RunStore

    spec = get_spec("cifar_resnet8").replace(in_channels=1, input_size=8)
    s = RunStore(folder / "good-store")
    s.save_run("r8", Checkpoint(spec, build_model(spec, seed=0), RunMeta(recipe=TrainConfig(epochs=1)), False))
    s.save_sweep("net", "lesion", {"k": 1}, __import__("pandas").DataFrame({"a": [1]}))
    with sqlite3.connect(folder / "good-store" / "runs.sqlite") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (folder / "good-store" / "runs.sqlite").read_bytes()


def damaged_stores(folder: Path) -> list[Case]:
    blob = _a_store(folder)
    page = 4096
    variants: dict[str, bytes] = {}
    for i in range(1, len(blob) // page):
        variants[f"zeroed-page-{i}"] = blob[: i * page] + bytes(page) + blob[(i + 1) * page:]
    rng = np.random.default_rng(0)
    for i in range(1, len(blob) // page):
        junk = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
        variants[f"random-page-{i}"] = blob[: i * page] + junk + blob[(i + 1) * page:]
    variants["truncated-half"] = blob[: len(blob) // 2]
    variants["header-only"] = blob[:100]
    variants["not-sqlite"] = b"not a database" * 300
    cases = []
    for name, data in variants.items():
        home = folder / f"store-{name}"
        home.mkdir()
        (home / "runs.sqlite").write_bytes(data)

        def run(home: Path = home) -> Any:
            from analysis.store.runstore import RunStore

            s = RunStore(home)
            # a damaged store must be said, never read as one without its runs and sweeps
            runs = s.runs() if (home / "checkpoints").exists() else []
            with sqlite3.connect(home / "runs.sqlite") as con:
                count = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                sweeps = con.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0]
            if count == 1 and sweeps == 1:
                raise _Intact("the damage missed every row: the store reads as it was")
            return (runs, count, sweeps)
        cases.append(Case(f"sqlite-{name}", run, "error"))
    return cases


class _Intact(LensError):
    """The damage missed every row: the store reads as it was (a correct outcome, counted as clean)."""


def other_digits(folder: Path) -> list[Case]:
    digits = ["١٢", "۱۲", "१२", "১২", "௧௨", "๑๒", "１２", "²", "½", "1_0", "٠.١", "𝟏𝟐"]
    cases = []
    for d in digits:
        for args in (["train", "--epochs", d], ["train", "--classes", f"{d},1"], ["train", "--lr", d],
                     ["grid", "--depths", d], ["grid", "--seeds", d], ["lesion", "--samples", d],
                     ["transfer", "--labels", d], ["paths", "--batch", d]):
            out = folder / "never.pt"

            def run(args: list[str] = args, out: Path = out) -> Any:
                from analysis.cli.main import run as cli_run

                extra = ["--out", str(out)] if args[0] == "train" else []
                return cli_run([*args, *extra])
            cases.append(Case(f"cli-{'-'.join(a.lstrip('-') for a in args[:2])}-{d}", run, "error"))
    return cases


def link_values(folder: Path) -> list[Case]:
    cases = []
    for kind in ("int", "float", "ints", "floats", "pair", "bool"):
        for text in ("١٢", "9" * 40, "1e999", "nan", "-inf", "0x10", "1_0", " 1", "", "1,2"):
            def run(kind: str = kind, text: str = text) -> Any:
                from ui import urlstate

                value = urlstate.decode([text] if kind not in ("ints", "floats", "pair") else [text, text], kind)
                if value is urlstate.INVALID:
                    raise _Refused(f"{text!r} is not {kind}")
                return value
            cases.append(Case(f"url-{kind}-{text[:12]!r}", run, "error"))
    return cases


class _Refused(LensError):
    """urlstate.decode's refusal (a sentinel, not an exception, in the library): counted as clean."""


def categories(folder: Path) -> dict[str, list[Case]]:
    made: dict[str, Callable[[Path], list[Case]]] = {
        "reference-dags": reference_dags, "deep-nesting": deep_nesting, "header-bombs": header_bombs,
        "damaged-sqlite": damaged_stores, "other-digits": other_digits, "link-values": link_values}
    out = {}
    for name, make in made.items():
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        out[name] = make(sub)
    return out

