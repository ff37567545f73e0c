"""How much bf16 evaluation changes a net's test predictions (issue 25): the net's class scores on its
test inputs computed in fp32 and under bf16 autocast, compared.

:func:`compare` counts the inputs whose predicted class changes, each precision's correct predictions
and the largest absolute difference of any logit. :func:`measure_file` runs it on a shipped net with
its own test data: a checkpoint (``.pt``, a ResNet, its data rebuilt from its metadata) or a program
(``.pt2``, run whole in pieces of its exported batch, its data from the metadata inside its archive).
``tools/make_bf16_eval.py`` measures every shipped net into ``results/bf16_eval.json``
(:data:`RESULTS`), with the machine it ran on (:func:`analysis.core.machine.describe`: bf16 results
hold for one CPU, thread count and torch version) and the command that made it; the Lesion lab and
the Path ensemble page quote a net's count (:func:`sentence`) when bf16 is chosen, and only for the
version of the file it was measured on (its sha256).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from analysis.arch.models import ResNet
from analysis.core.bounded import COUNT, Column, check_table, loads_json, short_repr
from analysis.core.errors import CheckpointError, ConfigError
from analysis.core.io import read_bounded
from analysis.core.reporting import write_json
from analysis.experiments.chain import WholeProgram
from analysis.experiments.lesion import check_inputs, check_precision
from analysis.experiments.paths import file_digest
from analysis.experiments.train import predict

FORMAT = "resnet-lens-bf16-eval/1"
MADE_BY = "tools/make_bf16_eval.py"
#: Where the shipped nets' counts are kept (relative to the repository: the pages quote this path).
RESULTS_NAME = "results/bf16_eval.json"
RESULTS = Path(__file__).resolve().parents[2] / RESULTS_NAME
#: Inputs per forward pass: the lesion sweeps' default batch.
BATCH = 256
MAX_BYTES = 1 << 20  # a dozen nets' counts are a few KB; far more is not ours


@dataclass(frozen=True)
class Changed:
    """What bf16 evaluation changes on ``n`` test inputs: ``changed`` predictions (the argmax of the
    logits differs), correct predictions in each precision, and the largest |fp32 logit - bf16 logit|."""

    n: int
    changed: int
    fp32_correct: int
    bf16_correct: int
    max_abs_logit_diff: float


class _Whole(nn.Module):
    """An exported program as a module :func:`~analysis.experiments.train.predict` runs. The program is
    held outside the module's children: an exported module refuses ``eval()`` and runs as exported."""

    def __init__(self, program: WholeProgram) -> None:
        super().__init__()
        self._program = (program,)

    def forward(self, x: Tensor) -> Tensor:
        return self._program[0](x)


def compare(model: nn.Module | WholeProgram, x: Tensor, y: Tensor, *, batch_size: int = BATCH,
            device: str = "cpu") -> Changed:
    """fp32 and bf16 class scores of ``model`` on ``x`` (batches of ``batch_size``, each precision through
    :func:`~analysis.experiments.train.predict`), compared against each other and against the labels
    ``y``. bf16 is refused first where ``device`` cannot run it."""
    check_precision("bf16", device)
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"compare needs as many labels as inputs, at least one: got {len(x)} inputs, {len(y)} labels")
    if isinstance(model, ResNet):
        check_inputs(model.spec, x, "the test inputs")
    net = model if isinstance(model, nn.Module) else _Whole(model)
    fp32 = predict(net, x, batch_size, device, precision="fp32")
    bf16 = predict(net, x, batch_size, device, precision="bf16")
    if fp32.dim() != 2 or len(fp32) != len(y):
        raise ConfigError(f"the net returns {tuple(fp32.shape)} for {len(y)} inputs; one row of class scores each "
                          "is compared")
    a, b, labels = fp32.argmax(1), bf16.argmax(1), y.cpu()
    return Changed(n=len(labels), changed=int((a != b).sum()), fp32_correct=int((a == labels).sum()),
                   bf16_correct=int((b == labels).sum()), max_abs_logit_diff=float((fp32 - bf16).abs().max()))


def measure_file(path: Path, *, batch_size: int = BATCH) -> dict[str, Any]:
    """:func:`compare` on a net file with its own test data: a checkpoint (a ResNet; its data rebuilt
    from its metadata) or a ``.pt2`` program with ResNet Lens metadata (analysis.store.programs). The
    record written to the results file: name, file, its sha256, kind, dataset, split seed and the counts."""
    from analysis.store import checkpoints, programs

    path = Path(path)
    if path.suffix == ".pt2":
        ep, meta = programs.load_shipped(path)
        data = programs.dataset_for_program(meta)
        model: nn.Module | WholeProgram = WholeProgram(ep, name=path.name)
        kind = "program"
    else:
        ck = checkpoints.load_checkpoint(path)
        if ck.meta is None:
            raise CheckpointError(f"{path.name} carries no metadata naming its test data")
        data = checkpoints.dataset_for(ck.meta)
        model, kind = ck.model, "checkpoint"
    counts = compare(model, data.x_test, data.y_test, batch_size=batch_size)
    return {"name": path.stem, "file": path.name, "sha256": file_digest(path), "kind": kind, "dataset": data.name,
            "split_seed": int(data.split_seed), **asdict(counts)}


def write_results(out: Path, nets: list[dict[str, Any]], *, machine: Mapping[str, Any], command: str,
                  created: str, versions: Mapping[str, str]) -> Path:
    """The results document (:data:`FORMAT`), checked by :func:`parse` first (a file it could not read
    is not written), written atomically."""
    doc = {"format": FORMAT, "made_by": MADE_BY, "command": command, "created": created,
           "machine": dict(machine), "versions": dict(versions), "batch_size": BATCH, "nets": nets}
    parse(json.dumps(doc, allow_nan=False), str(out))
    return write_json(out, doc, indent=1)


#: the columns of a net's record besides its counts, and the counts' bounds
_TEXT: Column = ("text", 0, 0, False)
_SCHEMA: dict[str, Column] = {"name": _TEXT, "file": _TEXT, "sha256": _TEXT, "kind": _TEXT, "dataset": _TEXT,
                              "split_seed": COUNT, "n": COUNT, "changed": COUNT, "fp32_correct": COUNT,
                              "bf16_correct": COUNT, "max_abs_logit_diff": ("number", 0.0, 1e300, False)}


@dataclass(frozen=True)
class Measured:
    """One net's record in the results file: which file (``sha256``) and its :class:`Changed` counts."""

    name: str
    file: str
    sha256: str
    kind: str
    dataset: str
    counts: Changed
    where: str = ""  # the machine it was measured on, in words ('' where the file does not say)


def parse(raw: str | bytes, what: str) -> dict[str, Measured]:
    """The results document checked field by field, its nets by name; a :class:`CheckpointError` naming
    ``what`` and the first problem."""
    doc = loads_json(raw, what, CheckpointError)
    if not isinstance(doc, dict):
        raise CheckpointError(f"{what}: a {type(doc).__name__}, not a record of bf16 counts")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{what}: format {short_repr(doc.get('format'), 40)}, expected {FORMAT!r}")
    nets = doc.get("nets")
    if not isinstance(nets, list) or not all(isinstance(r, dict) and set(r) == set(_SCHEMA) for r in nets):
        raise CheckpointError(f"{what}: its nets are not records of {', '.join(_SCHEMA)}")
    check_table(nets, _SCHEMA, f"{what}: nets", CheckpointError)
    machine = doc.get("machine")
    where = ""
    if isinstance(machine, dict) and isinstance(machine.get("threads"), int) and not isinstance(machine["threads"], bool):
        where = (f"{short_repr(machine.get('cpu', 'an unnamed CPU'), 60).strip(chr(39))}, "
                 f"{machine['threads']} thread{'s' * (machine['threads'] != 1)}")
    out: dict[str, Measured] = {}
    for r in nets:
        counts = Changed(int(r["n"]), int(r["changed"]), int(r["fp32_correct"]), int(r["bf16_correct"]),
                         float(r["max_abs_logit_diff"]))
        if max(counts.changed, counts.fp32_correct, counts.bf16_correct) > counts.n:
            raise CheckpointError(f"{what}: {short_repr(r['name'], 40)} counts more than its {counts.n} inputs")
        out[r["name"]] = Measured(r["name"], r["file"], r["sha256"], r["kind"], r["dataset"], counts, where)
    return out


def load_results(path: Path = RESULTS) -> dict[str, Measured]:
    """The measured counts by net name; empty where the file is missing. A damaged file is a
    :class:`CheckpointError`."""
    raw = read_bounded(path, MAX_BYTES, "bf16 counts", CheckpointError)
    return {} if raw is None else parse(raw, str(path))


def sentence(found: Measured | None, sha256: str | None = None) -> str:
    """What a page says beside a bf16 result: the count measured for this net (``found``, its record),
    or that none is: a net with no record (an upload, a net trained in the app) or one whose file is not
    the version measured (``sha256``: the file's, where the net is a file; a record holds for its own)."""
    if found is None:
        return ("bf16 may change some of this net's test predictions: how many is not measured for it "
                f"({RESULTS_NAME} holds the shipped nets' counts).")
    if sha256 is not None and sha256 != found.sha256:
        return (f"bf16 may change some of this net's test predictions: {RESULTS_NAME} holds the count for another "
                "version of its file, so it is not measured for this one.")
    c = found.counts
    on = f" on {found.where}" if found.where else ""
    return (f"bf16 changes {c.changed} of {c.n} test predictions of this net (measured{on}, {RESULTS_NAME}; "
            "another CPU or thread count may differ). "
            f"Correct: {c.fp32_correct} in fp32, {c.bf16_correct} in bf16.")
