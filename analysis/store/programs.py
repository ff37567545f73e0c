"""Shipped trained programs: ``torch.export`` archives (``.pt2``) in ``checkpoints/`` with their metadata.

The shipped transformers (:mod:`analysis.arch.tinyformers`, trained by
:mod:`analysis.experiments.train_transformers`) are saved in the format users bring their own nets
in, so they open through the same path: :func:`analysis.arch.graphnet.load_program` checks the
archive before torch reads it. Their metadata travels inside the archive as one JSON extra file
(:data:`META_FILE`): dataset, split seed, normalisation, recipe, seed, history, final accuracies,
library versions and the architecture record that rebuilds the module. Torch hands that file back as
text; it is parsed as JSON here, never run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.export import ExportedProgram

from analysis.arch.graphnet import load_program
from analysis.core.errors import CheckpointError, DatasetError
from analysis.core.io import atomic_write
from analysis.core.meta import Normalisation
from analysis.data.data import Dataset

__all__ = ["FORMAT", "META_FILE", "ProgramMeta", "dataset_for_program", "load_shipped", "save_program",
           "shipped_programs"]

FORMAT = "resnet-lens-program/1"
META_FILE = "resnet_lens_meta.json"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
MAX_META_CHARS = 1 << 20  # a shipped net's metadata is a few KB; more is not ours


@dataclass(frozen=True)
class ProgramMeta:
    """What a shipped program records about itself (the JSON of :data:`META_FILE`, checked)."""

    name: str
    architecture: Mapping[str, Any]  # family and sizes: analysis.arch.tinyformers.build rebuilds it
    residual: bool
    params: int
    dataset: str  # "digits16" or "mnist1d"
    split_seed: int
    train_size: int
    test_size: int
    classes: int
    input_shape: tuple[int, ...]  # one input, without the batch
    normalisation: Normalisation
    recipe: Mapping[str, Any]
    seed: int
    history: tuple[Mapping[str, Any], ...]
    final: Mapping[str, Any]  # train/test accuracy and correct counts of the exported program itself
    export_batch: int
    train_seconds: float
    threads: int
    versions: Mapping[str, str]
    created: str
    format: str = FORMAT

    @classmethod
    def from_dict(cls, d: object, name: str = "program") -> ProgramMeta:
        """The metadata from its JSON, every field checked; a :class:`CheckpointError` if not ours."""
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{name}: its metadata is a {type(d).__name__}, expected a JSON object")
        if d.get("format") != FORMAT:
            raise CheckpointError(f"{name}: its metadata format is {str(d.get('format'))[:40]!r}, expected {FORMAT!r}")
        types: dict[str, type | tuple[type, ...]] = {
            "name": str, "architecture": dict, "residual": bool, "params": int, "dataset": str, "split_seed": int,
            "train_size": int, "test_size": int, "classes": int, "input_shape": list, "normalisation": dict,
            "recipe": dict, "seed": int, "history": list, "final": dict, "export_batch": int,
            "train_seconds": (int, float), "threads": int, "versions": dict, "created": str}
        missing = [k for k in types if k not in d]
        if missing:
            raise CheckpointError(f"{name}: its metadata lacks {', '.join(missing[:6])}")
        wrong = [k for k, t in types.items() if not isinstance(d[k], t)
                 or (t is int and isinstance(d[k], bool))]
        if wrong:
            raise CheckpointError(f"{name}: its metadata fields {', '.join(wrong[:6])} have the wrong type")
        norm = d["normalisation"]
        try:
            normalisation = Normalisation(tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{name}: its metadata's normalisation is not one mean and std per channel") from exc
        final = d["final"]
        for key in ("train_correct", "train_n", "test_correct", "test_n"):
            if not isinstance(final.get(key), int) or isinstance(final.get(key), bool):
                raise CheckpointError(f"{name}: its metadata's final accuracies lack {key}")
        if final["test_n"] != d["test_size"] or final["train_n"] != d["train_size"]:
            raise CheckpointError(f"{name}: its final accuracies count other split sizes than its dataset's")
        if not all(isinstance(v, int) and v > 0 for v in d["input_shape"]) or not math.isfinite(d["train_seconds"]):
            raise CheckpointError(f"{name}: its metadata's input shape or training time is not a number")
        return cls(name=d["name"], architecture=dict(d["architecture"]), residual=d["residual"],
                   params=d["params"], dataset=d["dataset"], split_seed=d["split_seed"],
                   train_size=d["train_size"], test_size=d["test_size"], classes=d["classes"],
                   input_shape=tuple(d["input_shape"]), normalisation=normalisation, recipe=dict(d["recipe"]),
                   seed=d["seed"], history=tuple(dict(h) for h in d["history"]), final=dict(final),
                   export_batch=d["export_batch"], train_seconds=float(d["train_seconds"]), threads=d["threads"],
                   versions=dict(d["versions"]), created=d["created"])

    @property
    def test_acc(self) -> float:
        return float(self.final["test_correct"]) / self.test_size

    @property
    def train_acc(self) -> float:
        return float(self.final["train_correct"]) / self.train_size


def save_program(path: str | Path, ep: ExportedProgram, meta: Mapping[str, Any]) -> Path:
    """``torch.export.save`` of ``ep`` with ``meta`` (checked as :class:`ProgramMeta` reads it) as its
    JSON extra file, written atomically (:func:`analysis.core.io.atomic_write`)."""
    import torch

    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    ProgramMeta.from_dict(json.loads(text), str(path))  # a file this module could not read is not written
    return atomic_write(path, lambda f: torch.export.save(ep, f, extra_files={META_FILE: text}))


def shipped_programs() -> dict[str, Path]:
    """The programs committed in ``checkpoints/`` (the shipped transformers), by file stem."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.pt2"))}


def _program_and_text(path: Path) -> tuple[ExportedProgram, str]:
    """The checked program and the text of its metadata file ('' where it has none)."""
    extra: dict[str, Any] = {META_FILE: ""}
    ep = load_program(path, name=path.name, extra_files=extra)
    text = extra[META_FILE]
    return ep, text if isinstance(text, str) else ""


def read_meta_text(path: str | Path) -> str:
    """The metadata JSON of a program file as written (after :func:`load_shipped`'s checks pass), for a
    tool that rewrites a few of its fields."""
    load_shipped(path)
    return _program_and_text(Path(path))[1]


def load_shipped(source: str | Path) -> tuple[ExportedProgram, ProgramMeta]:
    """A shipped program (by name, e.g. ``"digits_vit"``, or by path) and its metadata. The archive
    is checked by :func:`~analysis.arch.graphnet.load_program`; its metadata must be ours and agree
    with the program (parameter count, input shape)."""
    shipped = shipped_programs()
    if isinstance(source, str) and source in shipped:
        path = shipped[source]
    elif isinstance(source, (str, Path)) and Path(source).suffix == ".pt2":
        path = Path(source)
    else:
        raise CheckpointError(f"{str(source)[:80]!r} is neither a shipped program ({', '.join(shipped) or 'none'}) "
                              "nor a .pt2 path")
    ep, text = _program_and_text(path)
    if not text:
        raise CheckpointError(f"{path.name}: the program holds no ResNet Lens metadata ({META_FILE})")
    if len(text) > MAX_META_CHARS:
        raise CheckpointError(f"{path.name}: its metadata is {len(text):,} characters, more than ours ever are")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path.name}: its metadata is not valid JSON") from exc
    meta = ProgramMeta.from_dict(raw, path.name)
    params = sum(int(t.numel()) for t in ep.state_dict.values())
    if params != meta.params:
        raise CheckpointError(f"{path.name}: the program holds {params:,} parameters, its metadata says {meta.params:,}")
    inputs = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    shape = tuple(inputs[0].meta["val"].shape) if len(inputs) == 1 else ()
    if shape != (meta.export_batch, *meta.input_shape):
        raise CheckpointError(f"{path.name}: the program takes inputs of shape {shape}, its metadata says "
                              f"{(meta.export_batch, *meta.input_shape)}")
    return ep, meta


def dataset_for_program(meta: ProgramMeta) -> Dataset:
    """The embedded dataset a shipped program was trained on, at its split, normalised with the
    statistics stored at training time (not recomputed)."""
    from analysis.data.data import load_digits, load_mnist1d

    if meta.dataset == "digits16":
        data = load_digits(size=16, seed=meta.split_seed, normalisation=meta.normalisation)
    elif meta.dataset == "mnist1d":
        data = load_mnist1d(seed=meta.split_seed, normalisation=meta.normalisation)
    else:
        raise DatasetError(f"{meta.name} was trained on {meta.dataset[:40]!r}, which is not an embedded dataset "
                           "(digits16 or mnist1d)")
    if (len(data.y_train), len(data.y_test)) != (meta.train_size, meta.test_size):
        raise DatasetError(f"{meta.name}: {data.name} splits into {len(data.y_train)}/{len(data.y_test)}, its "
                           f"metadata says {meta.train_size}/{meta.test_size}")
    return data
