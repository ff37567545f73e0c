"""Lesion sweeps on a program opened from a ``.pt2`` file: the program cut into units
(:class:`~analysis.experiments.chain.ProgramChain`), the data it is evaluated on, and the checks that
the two fit, shared by ``python -m analysis lesion`` and the Lesion lab.

A program file holds a graph and its weights and nothing about the data it was trained on, so the
data is always named by the caller (the CLI's ``--data``, the page's dataset choice) and normalised
with the dataset's own statistics (those of its training split): no statistics are stored with a
program. Before any sweep, the program's input shape (batch aside) must be the test inputs' and its
output width the number of classes; both shapes are named when they differ.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import Tensor
from torch.export import ExportedProgram

from analysis.arch.graphnet import load_program
from analysis.core.errors import ConfigError, DatasetError
from analysis.data.data import DIGITS_SIZES, Dataset
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH
from analysis.experiments import evaluation
from analysis.experiments.chain import ProgramChain
from analysis.experiments.evaluation import Choice, Options

PROGRAM_SUFFIX = ".pt2"
#: The digits' side when the program's input says none (not a square image): the fit check then speaks.
DEFAULT_DIGITS_SIZE = 16
#: How messages name the choices by default: the page's fields (the CLI passes its flags).
PAGE_WORDS = Options()


class OpenedChain(ProgramChain):
    """A :class:`ProgramChain` that keeps the program it was cut from: what travels to the shards of a
    sweep (:func:`program_bytes`)."""

    def __init__(self, ep: ExportedProgram, name: str) -> None:
        super().__init__(ep, name=name)
        self.program = ep


def is_program(name: str | Path) -> bool:
    """A ``.pt2`` file name: a torch.export program, not a checkpoint."""
    return Path(str(name)).suffix.lower() == PROGRAM_SUFFIX


def open_chain(source: str | Path | bytes, name: str, device: str = "cpu") -> OpenedChain:
    """A ``.pt2`` (a path or its bytes) checked and opened with its weights
    (:func:`~analysis.arch.graphnet.load_program`) and cut into units, its weights on ``device``.
    A :class:`~analysis.arch.graphnet.ProgramError` for a bad file, a
    :class:`~analysis.experiments.chain.ChainError` for units that are not one chain."""
    ep = load_program(source, name)
    if device != "cpu":  # the engine moves each batch to the device; the weights must be there too
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    return OpenedChain(ep, name)


def program_bytes(ep: ExportedProgram) -> bytes:
    """The program as a ``.pt2`` archive in memory (``torch.export.save``)."""
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def program_key(blob: bytes) -> str:
    """The run store's key of a program: the sha256 of its archive's bytes (the file as uploaded or
    shipped), so the same file finds its stored sweeps whatever it is called."""
    return f"program-sha256:{hashlib.sha256(blob).hexdigest()}"


def _input_value(chain: ProgramChain) -> Tensor | None:
    val = chain.input.meta.get("val")
    return val if isinstance(val, Tensor) else None


def input_shape(chain: ProgramChain) -> tuple[int, ...]:
    """One input's shape, without the batch (1×16×16 for a digits net)."""
    return tuple(int(v) for v in chain.net.input_shapes[0][1:])


def output_width(chain: ProgramChain) -> int | None:
    """The number of outputs (classes) per input, None where the graph does not record it."""
    val = chain.output.meta.get("val")
    return int(val.shape[-1]) if isinstance(val, Tensor) and val.dim() >= 1 else None


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) if shape else "a scalar"


def likely_kind(chain: ProgramChain) -> str:
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
        raise ConfigError(f"{name} is a program (.pt2), which carries no metadata to pick its data from: give "
                          f"{options.kind} {', '.join(evaluation.KINDS[:-1])} or {evaluation.KINDS[-1]}")
    return kind


def choose(chain: ProgramChain, kind: str | None, *, path: str | Path | None = None, size: int | None = None,
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


def check_inputs(chain: ProgramChain, x: Tensor, what: str = "the inputs", name: str | None = None) -> None:
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


def check_fits(chain: ProgramChain, data: Dataset, name: str | None = None) -> None:
    """``data``'s test inputs can be fed to the program (:func:`check_inputs`) and it has as many
    outputs as the data has classes. Each refusal names both sides."""
    name = name or chain.net.name
    check_inputs(chain, data.x_test, f"the test inputs of {data.name}", name)
    width = output_width(chain)
    if width is not None and width != data.num_classes:
        raise DatasetError(f"{name} has {width} outputs per input; {data.name} has {data.num_classes} classes")


def describe(data: Dataset, name: str) -> str:
    """One line saying which data ``name`` is evaluated on and how it is normalised."""
    noun = "sequences" if data.dims == 1 else "images"
    return (f"{name}: evaluated on {data.name} ({len(data.y_test):,} test {noun}), normalised with the dataset's "
            "own statistics (a program file stores none)")
