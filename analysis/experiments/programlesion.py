"""Lesion sweeps on a program opened from a ``.pt2`` file: the program cut into units
(:class:`~analysis.experiments.chain.ProgramChain`) or into layers at its outermost repeated container
(:class:`~analysis.experiments.chain.LayerChain`, the only cut of a net without residual units), the
data it is evaluated on, and the checks that the two fit, shared by ``python -m analysis lesion`` and
the Lesion lab.

A program file holds a graph and its weights and nothing about the data it was trained on, so the
data is named by the caller (the CLI's ``--data``, the page's dataset choice) and normalised
with the dataset's own statistics (those of its training split): no statistics are stored with a
program. A shipped program (:mod:`analysis.store.programs`) carries its metadata inside its archive:
its own data and normalisation. Before any sweep, the program's input shape (batch aside) must be the test inputs' and its
output width the number of classes; both shapes are named when they differ.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.export import ExportedProgram

from analysis.arch.graphnet import GraphNet, load_program, open_program
from analysis.core.errors import ConfigError, DatasetError
from analysis.data.data import DIGITS_SIZES, Dataset
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH
from analysis.experiments import evaluation
from analysis.experiments.chain import ChainError, LayerChain, ProgramChain, ProgramGraph, layer_candidates
from analysis.experiments.evaluation import Choice, Options

if TYPE_CHECKING:  # the shipped programs' module is optional where a program is only uploaded
    from analysis.store.programs import ProgramMeta

PROGRAM_SUFFIX = ".pt2"
ONNX_SUFFIX = ".onnx"
ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first bytes, as torch.export.save writes a .pt2
#: The batch an ONNX model with a free batch axis is exported for: the sweeps run every input set in
#: pieces of the exported batch (analysis.experiments.chain), so 1 would run one input at a time.
ONNX_BATCH = 16
#: What an ONNX model with free sizes (other than its batch) is told: the sweeps run one input shape.
ONNX_SHAPE_HELP = ("the sweeps run an ONNX model at one input shape: export it with fixed sizes (a free batch is "
                   "fine), or give its input shape on the Lesion or Path page")
#: The digits' side when the program's input says none (not a square image): the fit check then speaks.
DEFAULT_DIGITS_SIZE = 16
#: How messages name the choices by default: the page's fields (the CLI passes its flags).
PAGE_WORDS = Options()


#: How a program is cut for the sweeps: by its residual units, or at its outermost repeated container.
GRANULARITIES = ("units", "layers")
#: A program cut either way: what the engine runs and the checks below read (input, output, net).
ProgramCut = ProgramChain | ProgramGraph | LayerChain


def is_program(name: str | Path) -> bool:
    """A ``.pt2`` or ``.onnx`` file name: a net run as a graph (a torch.export program, or an ONNX model
    converted to one), not a checkpoint."""
    return Path(str(name)).suffix.lower() in (PROGRAM_SUFFIX, ONNX_SUFFIX)


def is_onnx(name: str | Path) -> bool:
    """An ``.onnx`` file name."""
    return Path(str(name)).suffix.lower() == ONNX_SUFFIX


def load(source: str | Path | bytes, name: str, device: str = "cpu",
         input_shape: Sequence[int] | None = None) -> ExportedProgram:
    """A ``.pt2`` (a path or its bytes) checked and opened with its weights
    (:func:`~analysis.arch.graphnet.load_program`), or an ``.onnx`` model (its path, or its bytes
    under a ``name`` ending in .onnx) converted and exported with its weights
    (:func:`~analysis.arch.onnxnet.onnx_program`: read, never run; a free batch axis exported for
    :data:`ONNX_BATCH` inputs, any other free size fixed by ``input_shape``, batch first), its weights
    on ``device``. A :class:`~analysis.arch.graphnet.ProgramError` sentence for a bad file. Bytes that
    are a zip archive are read as a program whatever ``name`` says: a sweep's shards are sent the program
    converted from an ONNX file, under that file's name."""
    if isinstance(source, (str, Path)) and is_onnx(source) or \
            not isinstance(source, (str, Path)) and is_onnx(name) and bytes(source[:4]) != ZIP_MAGIC:
        from analysis.arch.onnxnet import onnx_program  # onnx loads only for an ONNX file (slow to import)

        ep = onnx_program(source, name, input_shape=input_shape, batch=ONNX_BATCH, shape_help=ONNX_SHAPE_HELP)
    else:
        if input_shape is not None:
            raise ConfigError(f"{name}: a program's input shape is fixed when it is exported; an input shape is "
                              "for an ONNX model with free sizes")
        ep = load_program(source, name)
    return on_device(ep, device)


def on_device(ep: ExportedProgram, device: str) -> ExportedProgram:
    """``ep`` with its weights on ``device`` (the engine moves each batch there; the weights must be too)."""
    if device == "cpu":
        return ep
    from torch.export.passes import move_to_device_pass

    return move_to_device_pass(ep, device)


def by_units(ep: ExportedProgram, name: str, net: GraphNet | None = None) -> ProgramChain | ProgramGraph:
    """``ep`` cut into its residual units (:class:`ProgramChain`), or, where they are not one chain (a
    unit inside another's branch, a long skip), the whole program with deletable units
    (:class:`ProgramGraph`: single and k deletions apply, the rest is refused with the reason); a
    :class:`ChainError` for a program with no residual unit."""
    try:
        return ProgramChain(ep, net, name)
    except ChainError as exc:
        units = (net or open_program(ep, name=name)).units
        if not units:
            raise
        return ProgramGraph(ep, net, name, why=str(exc).split("; deleting")[0])


def open_chain(source: str | Path | bytes, name: str, device: str = "cpu",
               input_shape: Sequence[int] | None = None) -> ProgramChain | ProgramGraph:
    """A ``.pt2`` or ``.onnx`` opened (:func:`load`) and cut into units (:func:`by_units`); the chain keeps
    its program (what travels to the shards of a sweep). A :class:`~analysis.arch.graphnet.ProgramError`
    for a bad file, a :class:`~analysis.experiments.chain.ChainError` for a program with no residual unit."""
    return by_units(load(source, name, device, input_shape), name)


def layer_container(ep: ExportedProgram) -> tuple[str, list[str]] | None:
    """The outermost repeated container a program can be cut at (``("blocks", ["blocks.0", ...])``;
    a Sequential net's own children under ""), None where no module repeats."""
    return next(iter(layer_candidates(ep).items()), None)  # listed outer containers first


def layers_text(modules: Sequence[str]) -> str:
    """'blocks.0 … blocks.3' (the first and last layer)."""
    return modules[0] if len(modules) == 1 else f"{modules[0]} … {modules[-1]}"


@dataclass(frozen=True, eq=False)
class Cuts:
    """A program cut each way that applies (:data:`GRANULARITIES`): ``chains`` by granularity, in that
    order, and ``refused``: why each other way does not (one sentence). ``layers``: the modules of
    the layers' cut, () where none repeats."""

    name: str
    program: ExportedProgram
    chains: Mapping[str, ProgramCut]
    refused: Mapping[str, str]
    layers: tuple[str, ...] = ()

    @property
    def first(self) -> ProgramCut:
        """The first cut offered (units where the program has them): its input and output are read."""
        return next(iter(self.chains.values()))

    @property
    def units(self) -> ProgramChain:
        """The program cut by its residual units; a :class:`ChainError` saying why where that does not apply."""
        chain = self.chains.get("units")
        if isinstance(chain, ProgramGraph):  # deletable units, but no chain for a path to run along
            raise ChainError(f"{chain.why}: the path decomposition follows a chain of residual units")
        if not isinstance(chain, ProgramChain):
            raise ChainError(self.refused["units"])
        return chain

    @property
    def residual(self) -> bool:
        """Whether the program has residual units that form one chain."""
        return "units" in self.chains

    def chain(self, granularity: str | None = None) -> ProgramCut:
        """The program cut at ``granularity`` (None: units where that applies, else layers); a
        :class:`ChainError` saying why for a cut that does not apply."""
        if granularity is not None and granularity not in GRANULARITIES:
            raise ConfigError(f"unknown granularity {granularity!r}; choose {' or '.join(GRANULARITIES)}")
        g = granularity or next(iter(self.chains), "units")
        if g in self.chains:
            return self.chains[g]
        raise ChainError(self.refused[g])


def cut(ep: ExportedProgram, name: str) -> Cuts:
    """``ep`` cut by its residual units (:class:`ProgramChain`) and into layers at its outermost
    repeated container (:class:`LayerChain`), each where it applies; a :class:`ChainError` with the
    units' reason when neither does."""
    net = open_program(ep, name=name)
    chains: dict[str, ProgramCut] = {}
    refused: dict[str, str] = {}
    if net.units:
        chains["units"] = by_units(ep, name, net)
    else:
        refused["units"] = (f"{name} has no residual units (no add carries a layer's input past it), so it is "
                            "lesioned by its layers only: a deleted layer passes its input on unchanged, as Veit "
                            "et al. delete the layers of a plain net")
    found = layer_container(ep)
    modules: tuple[str, ...] = ()
    if found is None:
        refused["layers"] = f"{name} has no repeated container (a module with children 0, 1, ...) to cut into layers"
    else:
        try:
            chains["layers"] = LayerChain(ep, found[1], net, name)
            modules = tuple(found[1])
        except ChainError as exc:
            refused["layers"] = str(exc)
    if not chains:
        raise ChainError(refused["units"])
    return Cuts(name, ep, chains, refused, modules)


def open_cuts(source: str | Path | bytes, name: str, device: str = "cpu",
              input_shape: Sequence[int] | None = None) -> Cuts:
    """A ``.pt2`` or ``.onnx`` opened (:func:`load`) and cut each way that applies (:func:`cut`)."""
    return cut(load(source, name, device, input_shape), name)


def program_twin(meta: ProgramMeta, others: Mapping[str, ProgramMeta]) -> str | None:
    """The key of the program in ``others`` that is ``meta``'s plain twin (its architecture but for the
    residual flag, trained on the same data split), or None; found by metadata, not by name."""
    if not meta.residual:
        return None

    def bare(m: ProgramMeta) -> dict[str, object]:
        return {k: v for k, v in m.architecture.items() if k != "residual"}

    for key, other in others.items():
        if (not other.residual and bare(other) == bare(meta)
                and (other.dataset, other.split_seed) == (meta.dataset, meta.split_seed)):
            return key
    return None


def program_bytes(ep: ExportedProgram) -> bytes:
    """The program as a ``.pt2`` archive in memory (``torch.export.save``)."""
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def program_key(blob: bytes) -> str:
    """The run store's key of a program: the sha256 of its archive's bytes (the file as uploaded or
    shipped), so the same file finds its stored sweeps whatever it is called."""
    return f"program-sha256:{hashlib.sha256(blob).hexdigest()}"


def _input_value(chain: ProgramCut) -> Tensor | None:
    val = chain.input.meta.get("val")
    return val if isinstance(val, Tensor) else None


def input_shape(chain: ProgramCut) -> tuple[int, ...]:
    """One input's shape, without the batch (1×16×16 for a digits net)."""
    return tuple(int(v) for v in chain.net.input_shapes[0][1:])


def output_width(chain: ProgramCut) -> int:
    """The number of outputs (classes) per input. Lesions and paths score a classifier: its output
    must be one row of class scores per input (batch × classes), else a :class:`ChainError` naming
    the shape the program returns."""
    val = chain.output.meta.get("val")
    if not isinstance(val, Tensor) or val.dim() != 2 or int(val.shape[0]) != chain.batch:
        shape = shape_text(tuple(val.shape)) if isinstance(val, Tensor) else "no tensor"
        raise ChainError(f"{chain.net.name} returns {shape} for a batch of {chain.batch}; lesions and paths score a "
                         "classifier, which returns one row of class scores per input (batch × classes)")
    return int(val.shape[1])


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) if shape else "a scalar"


def likely_kind(chain: ProgramCut) -> str:
    """The dataset a program's input looks like, offered first: MNIST-1D for 1×40 sequences, CIFAR-10 for
    3×32×32 images, an ImageFolder tree for other colour images, else the digits."""
    shape = input_shape(chain)
    if shape == (1, MNIST1D_LENGTH):
        return "mnist1d"
    if len(shape) == 3 and shape[0] == 3:
        return "cifar10" if shape[1:] == (evaluation.CIFAR_SIZE, evaluation.CIFAR_SIZE) else "imagefolder"
    return "digits"


def check_kind(kind: str | None, name: str = "the program", options: Options = PAGE_WORDS) -> str:
    """``kind``, which a program's caller must give (refused before the file is read)."""
    if kind is None:
        raise ConfigError(f"{name} is a program (.pt2 or .onnx), which carries no metadata to pick its data from: give "
                          f"{options.kind} {', '.join(evaluation.KINDS[:-1])} or {evaluation.KINDS[-1]}")
    return kind


def choose(chain: ProgramCut, kind: str | None, *, path: str | Path | None = None, size: int | None = None,
           resize: int | None = None, max_per_class: int | None = None, seed: int = 0, name: str = "the program",
           options: Options = PAGE_WORDS) -> Choice:
    """The data a program is evaluated on: ``kind`` must be given (a program says nothing of its data),
    normalised with the dataset's own statistics. ``size`` left out: the program's own image side where
    its input is a square image (the digits at 16 px otherwise, and the fit check says why not)."""
    o = options
    kind = check_kind(kind, name, o)
    path = evaluation.check_request(kind=kind, path=path, size=size, resize=resize, max_per_class=max_per_class,
                                    seed=seed, options=o)
    shape = input_shape(chain)
    own_side = shape[-1] if len(shape) == 3 and shape[1] == shape[2] else None
    if kind == "mnist1d":
        if size not in (None, MNIST1D_LENGTH):
            raise ConfigError(f"{o.size} {size}: MNIST-1D sequences have a fixed length of {MNIST1D_LENGTH} samples; "
                              f"leave {o.size} out")
        side = MNIST1D_LENGTH
    elif kind == "cifar10":
        side = evaluation.CIFAR_SIZE
    elif size is not None:
        side = size
    elif kind == "digits":
        side = own_side if own_side in DIGITS_SIZES else DEFAULT_DIGITS_SIZE
    else:
        side = own_side or DEFAULT_DIGITS_SIZE
    if kind in evaluation.LOCAL_KINDS and path is None:
        raise DatasetError(f"{evaluation.KIND_TEXT[kind]}: give {o.path}, its local folder (nothing is downloaded)")
    return Choice(kind, "given", side, seed, path=None if path is None else str(path), resize=resize,
                  max_per_class=max_per_class)


def check_inputs(chain: ProgramCut, x: Tensor, what: str = "the inputs", name: str | None = None) -> None:
    """Inputs the program takes: its shape per input (batch aside), both shapes named when they differ,
    and floating-point values where it takes them (a token model's int64 ids are not images)."""
    name = name or chain.net.name
    want, got = input_shape(chain), tuple(int(v) for v in x.shape[1:])
    if want != got:
        raise DatasetError(f"{name} takes inputs of shape {shape_text(want)}; {what} are {shape_text(got)}")
    val = _input_value(chain)
    if val is not None and val.dtype.is_floating_point != x.dtype.is_floating_point:
        raise DatasetError(f"{name} takes {str(val.dtype).removeprefix('torch.')} inputs; {what} are "
                           f"{str(x.dtype).removeprefix('torch.')}")


def check_fits(chain: ProgramCut, data: Dataset, name: str | None = None) -> None:
    """``data``'s test inputs can be fed to the program (:func:`check_inputs`) and it has as many
    outputs as the data has classes. Each refusal names both sides."""
    name = name or chain.net.name
    check_inputs(chain, data.x_test, f"the test inputs of {data.name}", name)
    width = output_width(chain)
    if width != data.num_classes:
        raise DatasetError(f"{name} has {width} outputs per input; {data.name} has {data.num_classes} classes")


def describe_own(data: Dataset, name: str) -> str:
    """One line saying that a shipped program is evaluated on its own data, as its metadata records it."""
    noun = "sequences" if data.dims == 1 else "images"
    return (f"{name}: evaluated on its own data, {data.name} ({len(data.y_test):,} test {noun}, split seed "
            f"{data.split_seed}), normalised with the statistics its metadata stores")


def describe(data: Dataset, name: str) -> str:
    """One line saying which data ``name`` is evaluated on and how it is normalised."""
    noun = "sequences" if data.dims == 1 else "images"
    return (f"{name}: evaluated on {data.name} ({len(data.y_test):,} test {noun}), normalised with the dataset's "
            "own statistics (a program file stores none)")
