"""Where a net comes from: a built-in name, a file (a ``torch.export`` program or an ONNX model) or a
trusted Python factory. Each gives one :class:`~analysis.arch.graphnet.GraphNet`, so every consumer
(the units CLI, the Explorer, Depth comparison, Diagrams) reads the same record whatever the source.

Files never run code: a ``.pt2`` is read from its program's JSON by
:func:`~analysis.arch.programjson.read_program` after ``load_program``'s checks (pickled parts
``weights_only``, symbolic shapes refused, memory budget first; no weight read), an ONNX file by
:func:`~analysis.arch.onnxnet.open_onnx`. Python runs only where someone who controls the machine
named it: ``--module`` on the command line, or on a server the factories its starter listed in
``RESNET_LENS_MODULES`` (an upload never names code).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal, cast

import torch
from torch.export import ExportedProgram

from analysis.arch.graphnet import GraphNet, export_module, open_program, spec_net
from analysis.arch.programjson import read_program
from analysis.arch.specs import MODELS, get_spec
from analysis.core.errors import ConfigError

MODULES_ENV = "RESNET_LENS_MODULES"  # the server's list of trusted factories, set by whoever starts it
FILE_SUFFIXES = (".pt2", ".onnx")
InputDtype = Literal["float32", "int64"]
INPUT_DTYPES: dict[InputDtype, torch.dtype] = {"float32": torch.float32, "int64": torch.int64}
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MAX_INPUT_VALUES = 2**32  # an example input's values (meta: no memory; a bound on what shapes are traced)


def trusted_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The factories this server may import: ``RESNET_LENS_MODULES``, comma-separated, as its starter set it.
    A malformed entry is refused at once (a typo would otherwise hide a factory without a word)."""
    text = (os.environ if environ is None else environ).get(MODULES_ENV, "")
    refs = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in refs if not _REF.fullmatch(r)]
    if bad:
        raise ConfigError(f"{MODULES_ENV} lists package.module:factory names separated by commas; "
                          f"{', '.join(map(repr, bad))} is not one")
    return refs


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' as a tuple of whole numbers >= 1."""
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape) or len(shape) > 6:
        raise ConfigError(f"an input shape is 1 to 6 whole numbers >= 1 separated by commas (N,C,H,W), got {text!r}")
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise ConfigError(f"an input of shape {text} holds {math.prod(shape):,} values, more than the "
                          f"{MAX_INPUT_VALUES:,} an example input may hold")
    return shape


def module_factory(ref: str, allowed: Iterable[str] | None = None) -> Callable[[], torch.nn.Module]:
    """``package.module:factory`` imported (trusted code: the command line's user, or a name the server's
    starter listed in ``RESNET_LENS_MODULES`` when ``allowed`` is given)."""
    if not _REF.fullmatch(ref):
        raise ConfigError(f"--module takes package.module:factory, got {ref!r}")
    if allowed is not None and ref not in set(allowed):
        raise ConfigError(f"{ref} is not among the modules this server trusts (set {MODULES_ENV} when starting it)")
    module_name, attr = ref.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{ref}: cannot be imported ({type(exc).__name__}: {exc})") from None
    if not callable(factory):
        raise ConfigError(f"{ref} is not callable")
    return cast(Callable[[], torch.nn.Module], factory)


def open_module(ref: str, input_shape: str, *, input_dtype: InputDtype = "float32",
                allowed: Iterable[str] | None = None) -> GraphNet:
    """A trusted factory's module, built on the meta device and exported for one example input of
    ``input_shape`` (a token model takes ``int64`` ids), read like a file's program."""
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(f"the input's dtype is one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}")
    shape = parse_shape(input_shape)
    factory = module_factory(ref, allowed)
    # built on the meta device: shapes only, so neither its weights nor the example (whose shape a
    # link can set) take memory, and a table costs nothing to make
    try:
        with torch.device("meta"):
            net = factory()
    except Exception as exc:  # the factory is the user's code: whatever it raises is said in one sentence
        raise ConfigError(f"{ref}() failed ({type(exc).__name__}: {str(exc)[:200]}); a factory is called with no "
                          "arguments and builds its module on the meta device") from None
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"{ref} returned a {type(net).__name__}, not a torch.nn.Module")
    example = torch.zeros(shape, dtype=INPUT_DTYPES[input_dtype], device="meta")
    return open_program(export_module(net, (example,), name=ref), name=ref)


def net_file(text: str) -> Path:
    """A net file's path typed by a user of the app: its suffix first, so the answer never tells
    whether some other file exists on the server."""
    path = Path(text.strip()).expanduser()
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ConfigError(f"{path.name or text}: a net file is a torch.export program (.pt2) or an ONNX model "
                          "(.onnx)")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file on this server")
    return path


def open_file(source: str | Path | bytes, name: str | None = None, *,
              input_shape: tuple[int, ...] | None = None) -> GraphNet:
    """A ``.pt2`` program or an ``.onnx`` model, from a path or its bytes (``name`` says which, by its suffix).
    ``input_shape`` fixes an ONNX model's free dimensions (a program's shapes are fixed when exported)."""
    label = name if name is not None else Path(cast(str | Path, source)).name
    suffix = Path(label).suffix.lower()
    if suffix == ".pt2":
        if input_shape is not None:
            raise ConfigError(f"{label}: a program's input shape is fixed when it is exported; --input-shape "
                              "applies to --module and to ONNX files")
        # the program's JSON alone (no weights, no torch deserializer: programjson's docstring); the
        # light program carries what open_program reads of an ExportedProgram
        return open_program(cast(ExportedProgram, read_program(source, label)), name=label)
    if suffix == ".onnx":
        from analysis.arch.onnxnet import open_onnx  # onnx loads only for an ONNX file (it is slow to import)

        return open_onnx(source, label, input_shape=input_shape)
    raise ConfigError(f"{label}: a net file is a torch.export program (.pt2) or an ONNX model (.onnx)")


def open_net(model: str | None = None, *, module: str | None = None, input_shape: str | None = None,
             input_dtype: InputDtype = "float32") -> GraphNet:
    """A built-in name, a ``.pt2``/``.onnx`` path or a trusted module, as one :class:`GraphNet`."""
    if (model is None) == (module is None):
        raise ConfigError("give either --model (a built-in name, a .pt2 or .onnx file) or "
                          "--module package.module:factory")
    if module is not None:
        if input_shape is None:
            raise ConfigError("--module needs --input-shape (its example input, e.g. 1,3,224,224)")
        return open_module(module, input_shape, input_dtype=input_dtype)
    model = cast(str, model)  # given: exactly one of the two is None, and it is not this one
    if model in MODELS:
        if input_shape is not None:
            raise ConfigError(f"{model} is a built-in net: its input is its spec's; --input-shape is for --module "
                              "and ONNX files")
        return spec_net(get_spec(model))
    path = Path(model)
    if path.suffix.lower() not in FILE_SUFFIXES and not path.exists():
        raise ConfigError(f"{model!r} is neither a built-in net ({', '.join(sorted(MODELS)[:4])}, ...) nor a "
                          ".pt2 or .onnx file")
    return open_file(path, input_shape=None if input_shape is None else parse_shape(input_shape))
