"""Checkpoints: safe loading, atomic saving, and architecture inference from a state_dict.

Files are read with ``torch.load(..., weights_only=True)`` only, so a pickle that would run code is
refused before anything executes. Our own checkpoints are ``{"format": "resnet-lens/1",
"state_dict": ..., "meta": {...}}`` with the spec inside the metadata; a bare torchvision-style
state_dict works too: its architecture is inferred from key names and tensor shapes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from analysis.arch.blockplan import BlockPlan, branch_modules, head_of, make_plan, shortcut_ops, stem_of, total_stride
from analysis.arch.budget import LOAD_PEAK_FACTOR, BudgetError, check_spec_fits, held_bytes, memory_budget, reserve
from analysis.arch.models import ResNet, build_model, state_dict_shapes
from analysis.arch.specs import (
    ACTIVATIONS,
    DOWNSAMPLINGS,
    EXPANSION,
    MAX_BLOCKS_PER_STAGE,
    MAX_INPUT_SIZE,
    MAX_STAGES,
    OPTIONAL_FIELDS,
    STEM_TYPES,
    STRIDE_PLACEMENTS,
    BlockType,
    ResNetSpec,
    ShortcutOption,
    StemType,
    validate,
)
from analysis.core.bounded import short_repr
from analysis.core.errors import CheckpointError, ConfigError, DatasetError, LensError, SpecError
from analysis.core.io import WriteError, atomic_write, rescue, rescue_folders
from analysis.core.meta import RunMeta
from analysis.data.data import Dataset
from analysis.store.weights import (
    check_finite_model,
    check_storage,
    check_values,
    normalise_keys,
    safe_load,
    state_dict_hash,
    unpacked_size,
)

__all__ = ["UNTOLD_FIELDS", "AmbiguousCheckpointError", "Checkpoint", "CheckpointError", "OverBudgetError",
           "checkpoint_bytes", "dataset_for", "untold_settings",
           "find_twin", "infer_spec", "load_checkpoint", "plain_or_residual_ambiguous", "same_architecture",
           "save_checkpoint", "shipped_checkpoints", "state_dict_hash"]

FORMAT = "resnet-lens/1"


class OverBudgetError(CheckpointError):
    """The file fits the budget alone, not beside what the process already holds (other loaded nets,
    loads in other threads): freeing some of those may let it load."""


@dataclass
class Checkpoint:
    spec: ResNetSpec
    model: ResNet
    meta: RunMeta
    inferred: bool  # True when the spec came from key names and shapes, not from metadata
    #: for an inferred spec: the settings its weights cannot tell and the value taken for each
    #: (:func:`untold_settings`); load again with ``settings=`` to take others
    assumed: tuple[tuple[str, Any], ...] = ()


def spec_to_dict(spec: ResNetSpec) -> dict[str, Any]:
    """The spec as JSON-able data. He et al. 2016's variant fields are left out where they hold their
    defaults, and so are the 1-D fields (``dims``, ``conv_bias``, ``downsampling``), so an original 2-D
    net's metadata (and the run-store key hashed from it) is what it was before they existed, and
    older versions of the app can read it."""
    defaults = {f.name: f.default for f in dataclasses.fields(ResNetSpec)}
    d = {k: v for k, v in dataclasses.asdict(spec).items() if k not in OPTIONAL_FIELDS or v != defaults[k]}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def spec_from_dict(d: Mapping[str, Any]) -> ResNetSpec:
    if not isinstance(d, Mapping):
        raise CheckpointError(f"checkpoint metadata holds a spec of type {type(d).__name__}, expected a mapping "
                              "of spec fields")
    fields = {f.name for f in dataclasses.fields(ResNetSpec)}
    unknown = [str(k)[:40] for k in d if k not in fields]
    if unknown:
        raise CheckpointError(f"checkpoint metadata has unknown spec fields: {', '.join(sorted(unknown)[:8])}")
    kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return validate(ResNetSpec(**kw))
    except (TypeError, LensError) as exc:
        raise CheckpointError(f"checkpoint metadata holds an invalid spec: {exc}") from exc


def save_checkpoint(path: str | Path, model: ResNet, meta: RunMeta | None = None) -> Path:
    """Write atomically (:func:`analysis.core.io.atomic_write`): a temp file in the same folder, fsync,
    then rename over ``path``. An interrupted or failed write (Ctrl-C, SIGTERM, full disk) leaves the
    previous file (or nothing) and no temp file, never a truncated checkpoint; a write error is a
    ConfigError naming the path. The file's mode follows the umask, like any other output.
    Weights holding NaN or infinity are refused (a CheckpointError): such a file means nothing."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"refusing to save {path}: {len(bad)} tensors hold NaN or infinite values, "
                              f"e.g. {bad[0]} (did training diverge?)")
    payload = _payload(model, meta)
    return atomic_write(path, lambda f: torch.save(payload, f))


class RescuedError(WriteError):
    """The checkpoint could not be written where asked, but was written to ``path`` instead."""

    def __init__(self, message: str, path: Path, *, disk_full: bool) -> None:
        super().__init__(message, disk_full=disk_full)
        self.path = path


def save_checkpoint_or_rescue(path: str | Path, model: ResNet, meta: RunMeta | None = None) -> Path:
    """:func:`save_checkpoint`, and if the write fails (a disk that filled up during a long training)
    the same file in a rescue folder (:func:`analysis.core.io.rescue_folders`): raises
    :class:`RescuedError` naming where the net is, or a WriteError saying it could be written nowhere.
    A finished training is never lost to a full disk without trying."""
    try:
        return save_checkpoint(path, model, meta)
    except WriteError as exc:
        first = exc
    where = rescue(Path(path).name, checkpoint_bytes(model, meta))
    if where is None:
        tried = ", ".join(str(f) for f in rescue_folders())
        raise WriteError(f"{first}; no rescue folder could hold it either ({tried})", disk_full=first.disk_full)
    raise RescuedError(f"{first}. The trained net is kept at {where} instead: move it where you want it",
                       where, disk_full=first.disk_full)


def checkpoint_bytes(model: ResNet, meta: RunMeta | None = None) -> bytes:
    """The same payload as :func:`save_checkpoint`, in memory (for downloads)."""
    buf = io.BytesIO()
    torch.save(_payload(model, meta), buf)
    return buf.getvalue()


def _payload(model: ResNet, meta: RunMeta | None) -> dict[str, Any]:
    # A JSON round trip turns str subclasses (torch.__version__) and tuples into plain types, so
    # the file loads under weights_only=True. The metadata carries the weights' content hash,
    # which load_checkpoint verifies.
    sd = model.state_dict()
    meta = dataclasses.replace(meta or RunMeta(), content_sha256=state_dict_hash(sd))
    plain_meta = json.loads(json.dumps({**meta.to_dict(), "spec": spec_to_dict(model.spec)}))
    return {"format": FORMAT, "state_dict": sd, "meta": plain_meta, "meta_sha256": meta_hash(plain_meta)}


def meta_hash(plain_meta: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the metadata (spec included) as canonical JSON: written beside it on
    save, verified on load. The weights' own hash (``content_sha256``) does not cover the metadata,
    and a changed normalisation std or a flipped ``residual`` gives wrong numbers without a word."""
    text = json.dumps(plain_meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_meta_hash(raw: Mapping[str, Any], digest: object, name: str) -> None:
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise CheckpointError(f"{name}: its meta_sha256 is not a sha256 digest: {short_repr(digest)}")
    try:
        same = meta_hash(raw) == digest
    except (TypeError, ValueError):  # a value JSON cannot hold: not what save_checkpoint wrote
        same = False
    if not same:
        raise CheckpointError(f"{name}: metadata hash mismatch: its metadata (spec, normalisation statistics, "
                              "recipe or history) was modified after it was saved; every number computed from "
                              "it would be wrong, so it is not loaded")


def _safe_load(source: str | Path | bytes, name: str) -> object:
    """``torch.load(weights_only=True)`` with every failure one clear sentence (analysis.store.weights)."""
    return safe_load(source, name)


def _stage_blocks(sd: Mapping[str, Tensor]) -> list[int]:
    counts: dict[int, int] = {}
    for k in sd:
        m = re.match(r"(?a)layer(\d+)\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts.get(s, 0), b + 1)
    if not counts:
        raise CheckpointError("no residual stages found: expected keys like 'layer1.0.conv1.weight' "
                              "(torchvision ResNet layout)")
    # before anything loops over blocks: a key may name block 10^12
    if max(counts) > MAX_STAGES or max(counts.values()) > MAX_BLOCKS_PER_STAGE:
        raise CheckpointError(f"the keys name {max(counts)} stages of up to {max(counts.values()):,} blocks; a ResNet "
                              f"has at most {MAX_STAGES} stages of {MAX_BLOCKS_PER_STAGE:,} blocks")
    if sorted(counts) != list(range(1, len(counts) + 1)):
        raise CheckpointError(f"stages {sorted(counts)} are not numbered layer1..layerN")
    return [counts[s] for s in range(1, len(counts) + 1)]


class AmbiguousCheckpointError(CheckpointError):
    """A bare state_dict without projection weights: a plain net and a residual net with option-A
    (zero-padding, weightless) shortcuts have identical keys and shapes, so the weights cannot say
    which it is. Load again with ``plain=True`` or ``plain=False``."""


def _shape(sd: Mapping[str, Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"missing key {key!r}: not a torchvision-style ResNet state_dict")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim or not all(shape):
        raise CheckpointError(f"{key} has shape {shape}, expected a {ndim}-d weight with no empty dimension")
    return shape


def _probe_block(block: BlockType, dims: int) -> BlockPlan:
    """A candidate block's plan (channel counts do not matter here: only its ops' names and kinds)."""
    return make_plan(name="layer1.0", stage=0, index=0, block=block, cin=4, width=4, cout=4, stride=1, dims=dims)


def _read_block(sd: Mapping[str, Tensor], dims: int) -> BlockType:
    """The block type whose plan's weighted modules the first block holds: the Bottleneck's (a
    superset of the BasicBlock's names) when all its convs are there, else the BasicBlock (whose
    missing keys the checks that follow name)."""
    for block in ("bottleneck", "basic"):
        names = [op.name for op in branch_modules(_probe_block(block, dims)) if op.kind == "conv"]
        if all(f"layer1.0.{n}.weight" in sd for n in names):
            return block
    return "basic"


def _read_stem(sd: Mapping[str, Tensor], dims: int) -> tuple[StemType, int, int]:
    """(stem, stem width, input channels): the candidate stem plan whose every state key the
    state_dict holds with that plan's shapes (the one explaining most keys when several do: a CIFAR
    stem's conv + BN over VDCNN's bare conv). No stem conv at all: the first block sees the input."""
    nd = dims + 2
    found: list[tuple[int, StemType, int, int]] = []
    tried: list[str] = []
    for stem in STEM_TYPES:
        probe = stem_of(stem, 1, 1, dims=dims)
        if not probe:
            continue
        key = f"{probe[0].name}.weight"
        if key not in sd:
            continue
        width, cin, *kernel = _shape(sd, key, nd)
        ops = stem_of(stem, cin, width, dims=dims, bias=f"{probe[0].name}.bias" in sd)
        want = {f"{op.name}.{k}": shape for op in ops for k, shape in op.state_shapes()}
        if all(k in sd and tuple(sd[k].shape) == shape for k, shape in want.items()):
            found.append((len(want), stem, width, cin))
        tried.append(f"{stem} ({', '.join(want)}, kernel {probe[0].kernel})")
    if found:
        _, stem, width, cin = max(found)
        return stem, width, cin
    if tried:
        raise CheckpointError(f"its stem matches none of the stems ResNet Lens builds: {'; '.join(tried)}")
    first = _probe_block("basic", dims).residual_ops[0].name
    width = cin = _shape(sd, f"layer1.0.{first}.weight", nd)[1]
    return "none", width, cin


def _infer(sd: Mapping[str, Tensor], name: str, plain: bool | None,
           input_size: int | None) -> tuple[ResNetSpec, bool]:
    """The spec the weights describe, and whether plain-vs-residual was a guess (see infer_spec)."""
    layers = _stage_blocks(sd)
    block_conv = sd.get("layer1.0.conv1.weight")
    # Conv1d weights are out x in x k, Conv2d's out x in x k x k: the first block's conv says which
    dims = 1 if block_conv is not None and block_conv.dim() == 3 else 2
    nd = dims + 2
    block = _read_block(sd, dims)
    stem, stem_width, in_channels = _read_stem(sd, dims)
    # every further key is named by a candidate plan's op: the block's convs, the projection shortcut,
    # the head's final BN (pre-activation) and fc
    convs = [op.name for op in _probe_block(block, dims).residual_ops if op.kind == "conv"]
    conv_bias = f"layer1.0.{convs[0]}.bias" in sd
    widths, groups, wpg = [], 1, 64
    for i in range(len(layers)):
        if block == "bottleneck":
            out = _shape(sd, f"layer{i + 1}.0.{convs[2]}.weight", nd)[0]
            c2 = _shape(sd, f"layer{i + 1}.0.{convs[1]}.weight", nd)
            planes = out // EXPANSION["bottleneck"]
            if c2[0] % c2[1]:
                raise CheckpointError(f"layer{i + 1}.0.{convs[1]}.weight has shape {c2}: {c2[0]} output channels are "
                                      f"not a multiple of {c2[1]} input channels per group")
            groups = c2[0] // c2[1]
            width = c2[0]
            wpg = width * 64 // (planes * groups) if planes * groups else 64
        else:
            planes = _shape(sd, f"layer{i + 1}.0.{convs[0]}.weight", nd)[0]
        widths.append(planes)
    projection = shortcut_ops("projection", 1, 1, 1, preact=False)[0].name
    downs = [f"layer{i + 1}.{j}.{projection}.weight" for i, n in enumerate(layers) for j in range(n)]
    has_down = [k in sd for k in downs]
    final, *_, classifier = head_of(1, 1, preact=True, dims=dims)
    preact = f"{final.name}.weight" in sd
    fc = _shape(sd, f"{classifier.name}.weight", 2)
    shortcut: ShortcutOption = "C" if all(has_down) else "B" if any(has_down) else "A"

    def make(residual: bool) -> ResNetSpec:
        try:
            spec = ResNetSpec(
                name=name, block=block, layers=tuple(layers),
                widths=tuple(widths), stem=stem, stem_width=stem_width, groups=groups, width_per_group=wpg,
                shortcut=shortcut, residual=residual, preact=preact, num_classes=fc[0], in_channels=in_channels,
                input_size=MAX_INPUT_SIZE if input_size is None else input_size, dims=dims, conv_bias=conv_bias,
            )
            if input_size is None:
                # Not in the weights: the stem's usual size (MNIST-1D's 40 samples for a 1-D net), or
                # the net's total stride if that is larger (an 8-stage net does not fit in 32 pixels)
                usual = 224 if stem == "imagenet" else 32 if dims == 2 else 40
                spec = spec.replace(input_size=max(usual, total_stride(spec)))
            # pooling is not in the weights either: a 1-D net equal to a built-in but for it (VDCNN)
            # takes the built-in's, whatever the length asked for
            spec = _builtin_1d_settings(spec, keep_length=input_size is not None)
            return validate(spec)
        except LensError as exc:
            raise CheckpointError(f"the state_dict does not describe a buildable ResNet: {exc}") from exc

    if any(has_down):
        if plain:
            first = downs[has_down.index(True)]
            raise CheckpointError(f"the state_dict holds projection-shortcut weights ({first}): it is a residual "
                                  "net, not a plain one")
        return make(True), False
    if plain is not None:
        if not plain:
            try:
                return make(True), False
            except CheckpointError as exc:
                raise CheckpointError(f"it cannot be a residual net: it has no projection weights, so its "
                                      f"shortcuts would be option A, and {exc.__cause__ or exc}") from exc
        return make(False), False
    # No projection weights: plain, or residual with option-A shortcuts; both if both can be built.
    as_plain = make(False)  # raises the reason both readings share
    try:
        return make(True), True
    except CheckpointError:
        return as_plain, False  # option A is impossible (channels shrink): it can only be plain


def infer_spec(sd: Mapping[str, Tensor], name: str = "checkpoint", *, plain: bool | None = None,
               input_size: int | None = None) -> ResNetSpec:
    """Architecture of a torchvision-style ResNet from its state_dict: block type, blocks per stage,
    widths, groups, stem, classes, shortcut option and pre-activation.

    Not visible in weights, so given or defaulted: stride placement (v1.5), stage strides (1, then
    2), ``input_size`` (default 224 for an ImageNet stem, 32 for a CIFAR stem, or the net's total
    stride if that is larger), and ``plain``: a net without projection weights is a plain net or a
    residual net with option-A shortcuts, with identical keys. ``plain=None`` reads such a net as
    residual when option A can be built (use :func:`plain_or_residual_ambiguous` to know it was a
    guess; :func:`load_checkpoint` refuses to guess) and as plain when it cannot (channels shrink)."""
    return _infer(sd, name, plain, input_size)[0]


def plain_or_residual_ambiguous(sd: Mapping[str, Tensor]) -> bool:
    """True when the weights fit both a plain net and a residual net with option-A shortcuts."""
    return _infer(sd, "checkpoint", None, None)[1]


def _builtin_1d_settings(spec: ResNetSpec, keep_length: bool = False) -> ResNetSpec:
    """A 1-D net whose weights equal a built-in's (e.g. VDCNN-29) but for what weights cannot show
    (max pool or strided downsampling, sequence length) takes the built-in's values for those."""
    from analysis.arch.specs import MODELS

    if spec.dims != 1:
        return spec
    for s in MODELS.values():
        if s.dims == 1 and s.stage_strides == spec.stage_strides and dataclasses.replace(
                s, name=spec.name, input_size=spec.input_size, downsampling=spec.downsampling,
                residual=spec.residual, strides=spec.strides,
                shortcut=s.shortcut if spec.residual else spec.shortcut) == spec:  # a plain net has no option
            return spec.replace(input_size=spec.input_size if keep_length else s.input_size,
                                downsampling=s.downsampling)
    return spec


def _match_name(spec: ResNetSpec) -> ResNetSpec:
    """Give an inferred spec the built-in name it equals (e.g. resnet50)."""
    from analysis.arch.specs import MODELS

    for n, s in MODELS.items():
        if dataclasses.replace(s, name=spec.name) == spec:
            return dataclasses.replace(spec, name=n)
    return spec


def check_state_dict(spec: ResNetSpec, sd: dict[str, Tensor], name: str) -> None:
    """Compare key names and shapes with what ``spec``'s blocks hold (derived from their plans),
    before any model is built: a mismatch names the keys, nothing is allocated for it."""
    ours = state_dict_shapes(spec)
    first = "layer1.0.conv1.weight"
    if first in sd and first in ours and sd[first].dim() != len(ours[first]):
        held = "1-D (Conv1d)" if sd[first].dim() == 3 else "2-D (Conv2d)" if sd[first].dim() == 4 else \
            f"{sd[first].dim()}-d"
        raise CheckpointError(f"{name}: the state_dict holds {held} weights ({first} has shape "
                              f"{tuple(sd[first].shape)}), but {spec.name} is a {spec.dims}-D net: open it as a "
                              f"{'1-D' if sd[first].dim() == 3 else '2-D'} net")
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    if missing or unexpected:
        def fmt(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {fmt(unexpected)}")
        raise CheckpointError(f"{name}: the state_dict does not match {spec.name}; " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} != {v}" for k, v in ours.items() if tuple(sd[k].shape) != v]
    if bad:
        raise CheckpointError(f"{name}: shape mismatch for {len(bad)} tensors, e.g. {'; '.join(bad[:3])}")


def _unwrap(obj: object, name: str) -> tuple[Mapping[Any, Any], Mapping[str, Any]]:
    """The state_dict and the raw metadata of a loaded object: our format (its metadata hash
    checked), a training script's ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper, or a bare
    state_dict."""
    raw: Mapping[str, Any] = {}
    fmt = obj.get("format") if isinstance(obj, Mapping) else None
    if isinstance(obj, Mapping) and isinstance(fmt, str) and fmt.startswith("resnet-lens/"):
        if obj["format"] != FORMAT:  # another version of our format: not read as something else
            raise CheckpointError(f"{name}: its format is {short_repr(obj['format'])}; this version of ResNet Lens "
                                  f"reads {FORMAT!r} (and bare state_dicts)")
        extra = sorted(short_repr(k) for k in obj if k not in ("format", "state_dict", "meta", "meta_sha256"))
        if extra:
            raise CheckpointError(f"{name}: unknown top-level keys {', '.join(extra[:6])} beside format, state_dict, "
                                  "meta and meta_sha256")
        sd, meta = obj.get("state_dict"), obj.get("meta")
        if meta is not None and not isinstance(meta, Mapping):
            raise CheckpointError(f"{name}: its metadata is a {type(meta).__name__}, expected a mapping")
        raw = meta or {}
        if "meta_sha256" in obj:  # files written before it existed have none (their weights' hash still holds)
            _check_meta_hash(raw, obj["meta_sha256"], name)
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]  # common training-script wrapper
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = obj["model"]
    else:
        sd = obj
    if not isinstance(sd, Mapping) or not sd:
        got = "an empty dict" if isinstance(sd, Mapping) else f"a {type(sd).__name__}"
        raise CheckpointError(f"{name}: expected a state_dict (a dict of tensor names to tensors), got {got}")
    return sd, raw


def load_checkpoint(source: str | Path | bytes, *, name: str = "uploaded file",
                    expect: ResNetSpec | None = None, plain: bool | None = None,
                    input_size: int | None = None, settings: Mapping[str, Any] | None = None) -> Checkpoint:
    """Load our checkpoint format or a bare (torchvision-style) state_dict, safely.

    ``expect`` forces a spec (e.g. ``get_spec('resnet50')``) instead of reading or inferring one.
    ``plain`` and ``input_size`` settle what a bare state_dict's weights cannot tell (see
    :func:`infer_spec`): without projection weights a plain net and a residual net with option-A
    shortcuts are indistinguishable, so such a file raises :class:`AmbiguousCheckpointError` unless
    ``plain`` says which (True: plain, False: residual); ``input_size`` is the size the net is meant
    for (default: the stem's usual size). A file whose metadata records its spec ignores
    ``input_size``; a ``plain`` that contradicts the recorded (or expected) spec is an error.

    Nothing is used before it is checked: the file's unpacked size and every tensor's declared size
    against the memory budget (:mod:`analysis.arch.budget`), keys, dtypes and values
    (:mod:`analysis.store.weights`), the content hash our own files carry, the metadata, and the memory
    the net needs (from its cost table) before it is built.
    """
    if plain is not None and not isinstance(plain, bool):
        raise ConfigError(f"plain must be True, False or None, got {plain!r}")
    label = Path(source).name if isinstance(source, (str, Path)) else name
    # counted with everything else this process holds, before decompression (analysis.arch.budget):
    # the load's peak now, the net's weights for as long as the returned Checkpoint lives
    unpacked = unpacked_size(source)
    if unpacked > memory_budget():  # the file alone: safe_load refuses it, saying which part is too big
        return _load_checkpoint(source, name, expect, plain, input_size, settings)
    try:
        held = reserve(int(unpacked * LOAD_PEAK_FACTOR), f"loading {label}")
    except BudgetError as exc:  # OverBudgetError only where letting other nets go could help
        raise (OverBudgetError if held_bytes() else CheckpointError)(str(exc)) from None
    try:
        ck = _load_checkpoint(source, name, expect, plain, input_size, settings)
    except BaseException:
        held.release()
        raise
    held.resize(sum(t.numel() * t.element_size() for t in ck.model.state_dict().values()))
    weakref.finalize(ck.model, held.release_later)  # the model holds the memory; copies of ck share it
    return ck


#: Spec fields that change what a net computes but not its weights' names or shapes (He et al. 2016's
#: weightless variants, where BN and ReLU sit, where a bottleneck strides, how a 1-D net downsamples):
#: a bare state_dict cannot tell them, so they are assumed, said, and can be given (``settings=``)
UNTOLD_FIELDS = ("shortcut_variant", "shortcut_scale", "scale_residual", "shortcut_dropout", "activation", "stride_on",
                 "strides", "downsampling")
#: the weightless shortcut variants (gates have a 1x1 conv: their weights tell)
WEIGHTLESS_VARIANTS = ("identity", "scale", "dropout", "dropout_paper")


def untold_settings(spec: ResNetSpec) -> dict[str, tuple[Any, ...]]:
    """For a net read from a bare state_dict: each setting its weights cannot tell, with the values
    it may take (the one assumed first). Plain vs option-A residual is asked separately
    (:class:`AmbiguousCheckpointError`); numeric settings (lambda, dropout ratio, stage strides) list
    the value assumed only."""
    out: dict[str, tuple[Any, ...]] = {}
    if spec.residual:
        out["shortcut_variant"] = (spec.shortcut_variant, *(v for v in WEIGHTLESS_VARIANTS
                                                            if v != spec.shortcut_variant))
        if spec.shortcut_variant == "scale":
            out["shortcut_scale"] = (spec.shortcut_scale,)
            out["scale_residual"] = (spec.scale_residual, not spec.scale_residual)
        if spec.shortcut_variant in ("dropout", "dropout_paper"):
            out["shortcut_dropout"] = (spec.shortcut_dropout,)
    if not spec.preact:
        out["activation"] = (spec.activation, *(a for a in ACTIVATIONS if a != spec.activation))
    if spec.block == "bottleneck":
        out["stride_on"] = (spec.stride_on, *(p for p in STRIDE_PLACEMENTS if p != spec.stride_on))
    out["strides"] = (spec.stage_strides,)
    if spec.dims == 1:
        out["downsampling"] = (spec.downsampling, *(d for d in DOWNSAMPLINGS if d != spec.downsampling))
    return out


def _with_settings(spec: ResNetSpec, settings: Mapping[str, Any], name: str) -> ResNetSpec:
    unknown = sorted(str(k) for k in settings if k not in UNTOLD_FIELDS)
    if unknown:
        raise ConfigError(f"{name}: settings {', '.join(unknown)} can be read from the weights; only "
                          f"{', '.join(UNTOLD_FIELDS)} can be given")
    if settings.get("shortcut_variant", spec.shortcut_variant) not in WEIGHTLESS_VARIANTS:
        raise ConfigError(f"{name}: shortcut_variant must be one of {', '.join(WEIGHTLESS_VARIANTS)} for these "
                          "weights (a gated shortcut has weights of its own, which this file does not hold)")
    try:
        return spec.replace(**dict(settings))
    except (TypeError, LensError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _load_checkpoint(source: str | Path | bytes, name: str, expect: ResNetSpec | None, plain: bool | None,
                     input_size: int | None, settings: Mapping[str, Any] | None = None) -> Checkpoint:
    obj = _safe_load(source, name)
    if isinstance(source, (str, Path)):
        name = Path(source).name
    raw_sd, raw = _unwrap(obj, name)
    sd = normalise_keys(raw_sd, name)
    budget = memory_budget()
    held = check_storage(sd, name, budget)
    try:
        meta = RunMeta.from_dict({k: v for k, v in raw.items() if k != "spec"})
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from exc
    if meta.content_sha256 and state_dict_hash(sd) != meta.content_sha256:
        raise CheckpointError(f"{name}: content hash mismatch: the file was modified or corrupted after it was "
                              "saved (its weights do not hash to the sha256 recorded in its metadata)")
    check_values(sd, name)
    inferred = guessed = False
    if settings and (expect is not None or "spec" in raw):
        raise ConfigError(f"{name}: its architecture is {'given' if expect is not None else 'recorded in it'}; "
                          "the settings weights cannot tell are given only for bare state_dicts")
    if expect is not None:
        spec = expect
    elif "spec" in raw:
        try:
            spec = spec_from_dict(raw["spec"])
        except CheckpointError as exc:
            raise CheckpointError(f"{name}: {exc}") from exc
    else:
        try:
            spec, guessed = _infer(sd, Path(name).stem or "checkpoint", plain, input_size)
        except CheckpointError as exc:
            raise CheckpointError(f"{name}: {exc}") from exc
        if settings:  # before naming it: a v1 or BN-after-add net is not torchvision's resnet50
            spec = _with_settings(spec, settings, name)
        spec = _match_name(spec)
        inferred = True
    if plain is not None and spec.residual == plain:
        raise CheckpointError(f"{name}: {'plain' if plain else 'residual'} was asked for, but the "
                              f"{'expected' if expect is not None else 'recorded'} spec {spec.name} is "
                              f"{'residual' if spec.residual else 'plain'}")
    _check_meta_fits_spec(meta, spec, name)
    try:
        check_spec_fits(spec, already=held, budget=budget, what=f"{name} ({spec.name})")
    except SpecError as exc:
        raise CheckpointError(str(exc)) from exc
    check_state_dict(spec, sd, name)
    if guessed:  # only now: a file too big or not matching either reading is refused for that first
        raise AmbiguousCheckpointError(
            f"{name}: a plain net or a residual net with option-A (zero-padding) shortcuts? Their "
            "state_dicts have the same keys and shapes, and the wrong choice makes every result "
            "meaningless: say which (load_checkpoint(..., plain=True or False); on a page, the choice "
            "shown; on the command line, the plain/residual flag)"
        )
    model = build_model(spec)
    _copy_weights(model, sd)
    check_finite_model(model.state_dict(), name)
    model.eval()
    assumed = tuple((k, v[0]) for k, v in untold_settings(spec).items()) if inferred else ()
    return Checkpoint(spec, model, meta, inferred, assumed)


def _copy_weights(model: ResNet, sd: Mapping[str, Tensor]) -> None:
    """``model.load_state_dict(sd, strict=True)`` after :func:`check_state_dict` proved the keys and
    shapes equal, in linear time: torch's version filters the whole state_dict once per module, which
    takes minutes for a net of 12,000 blocks (72,000 modules x 144,000 keys)."""
    own = model.state_dict(keep_vars=True)
    if own.keys() != sd.keys():  # check_state_dict ran: only a bug gets here
        raise RuntimeError("state_dict keys changed between check_state_dict and loading")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v)  # float16 / bfloat16 / float64 become float32, as load_state_dict does


def _check_meta_fits_spec(meta: RunMeta, spec: ResNetSpec, name: str) -> None:
    """The data the metadata describes must be data this net takes."""
    ds = meta.dataset
    if ds is not None and (ds.channels, ds.classes) != (spec.in_channels, spec.num_classes):
        raise CheckpointError(f"{name}: its metadata says it was trained on {ds.name} ({ds.channels} channels, "
                              f"{ds.classes} classes), but the net takes {spec.in_channels} channels and has "
                              f"{spec.num_classes} outputs")
    norm = meta.normalisation
    if norm is not None and len(norm.mean) != spec.in_channels:
        raise CheckpointError(f"{name}: its metadata normalises {len(norm.mean)} channels, but the net takes "
                              f"{spec.in_channels}")


SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


def shipped_checkpoints() -> dict[str, Path]:
    """The checkpoints committed in ``checkpoints/`` (trained on the embedded digits and MNIST-1D), by file stem."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.pt"))}


def dataset_for(meta: RunMeta) -> Dataset:
    """The embedded dataset a checkpoint was trained on (the digits at their size and split, or
    MNIST-1D), rebuilt from its metadata and normalised with the statistics stored at training time
    (not recomputed)."""
    from analysis.data.data import load_digits, load_mnist1d

    ds = meta.dataset
    if ds is None or ds.embedded is None:
        name = ds.name if ds else "an unknown dataset"
        raise DatasetError(f"this checkpoint was trained on {name}; give its local path")
    if ds.embedded == "mnist1d":
        return load_mnist1d(seed=ds.split_seed, normalisation=meta.normalisation, classes=ds.digit_classes)
    return load_digits(size=ds.size, seed=ds.split_seed, normalisation=meta.normalisation, classes=ds.digit_classes)


def same_architecture(a: ResNetSpec, b: ResNetSpec) -> bool:
    """Equal specs up to their display names."""
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


def find_twin(ck: Checkpoint, candidates: dict[str, Checkpoint]) -> str | None:
    """The key of the candidate that is ``ck``'s plain twin (same layers, no shortcuts), trained on
    the same data split, or None. Found by spec, not by name."""
    if not ck.spec.residual:
        return None
    twin = ck.spec.plain_twin()
    for key, other in candidates.items():
        if same_architecture(other.spec, twin) and other.meta.dataset == ck.meta.dataset:
            return key
    return None
