"""What a trained net carries with it: the recipe, the data it saw and how that data was normalised,
its history and final metrics. One schema, written and read only here.

A checkpoint's ``meta`` is a :class:`RunMeta`. Evaluation after training (lesion sweeps, path
measurements) normalises inputs with the *stored* training-time statistics, never with numbers
recomputed from whatever data is at hand: a net only means what it learned on its own input scale.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import platform
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from analysis.core.bounded import short_repr
from analysis.core.errors import CheckpointError, ConfigError

SCHEMA = 1
Schedule = Literal["cosine", "step"]
SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)
Amp = Literal["off", "bf16", "fp16"]
AMP_MODES: tuple[Amp, ...] = get_args(Amp)
#: Fields written into a recipe's dict only when they differ from their default: run-store keys and
#: checkpoint metadata of recipes from before they existed stay what they were.
OPTIONAL_RECIPE_FIELDS = frozenset({"amp", "channels_last"})
#: The precision a person picks (recipe, page, CLI) and the ``amp`` value it is stored as: "fp32" is
#: "off", so recipes from before precision was a choice keep their dicts and run-store keys.
PRECISIONS: dict[str, Amp] = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}


def precision_name(amp: str) -> str:
    """The precision a TrainConfig ``amp`` value is (:data:`PRECISIONS` read backwards: "off" is
    fp32); an unknown value as it is (a results file's)."""
    names: dict[str, str] = {a: name for name, a in PRECISIONS.items()}
    return names.get(amp, str(amp))


def precision_text(precision: str, channels_last: bool) -> str:
    """A recipe's arithmetic and memory layout in words: 'fp32', 'bf16', 'bf16, channels-last'
    (a TrainConfig's ``precision`` and ``channels_last``, or a transfer recipe's)."""
    return precision + (", channels-last" if channels_last else "")


def recipe_precision(recipe: Mapping[str, Any]) -> str:
    """:func:`precision_text` of a recipe as :meth:`TrainConfig.to_dict` writes it (a grid's
    definition, a results file): a dict without ``amp`` or ``channels_last`` is fp32 in the default
    layout, as every recipe from before they existed."""
    return precision_text(precision_name(recipe.get("amp", "off")), recipe.get("channels_last", False) is True)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe (He et al. 2015, Sec. 3.4 / 4.2 in spirit): SGD + momentum, weight decay,
    warm-up, cosine or step schedule, augmentation. Validated on construction."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4  # He et al. 2015, Sec. 3.4
    schedule: Schedule = "cosine"  # "step": divide by 10 at 50 % and 75 % of training
    warmup_epochs: int = 1  # the paper warms ResNet-110 up at lr 0.01 (Sec. 4.2)
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    # mixed precision (torch.autocast): "bf16" (CUDA, or a CPU with bf16 matrix units), or "fp16" with a
    # gradient scaler (CUDA only); "off": fp32
    amp: Amp = "off"
    # 2-D nets: weights and batches in channels-last (NHWC) memory, which oneDNN's convolutions run fastest
    # on; the numbers differ from the default layout's in the last bits, so it is a recipe field of its own
    channels_last: bool = False

    def __post_init__(self) -> None:
        """Every field checked (type, finite, in range): a recipe that cannot train is refused here,
        before any work, whether it comes from the CLI, a page or a checkpoint's metadata."""
        def integer(value: object, lo: int, hi: int, what: str) -> None:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{what} must be a whole number, got {short_repr(value)}")
            if not lo <= int(value) <= hi:
                raise ConfigError(f"{what} must be between {lo:,} and {hi:,}, got {short_repr(value)}")

        def real(value: object, what: str, ok: str, inside: Callable[[float], bool]) -> None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{what} must be a number, got {short_repr(value)}")
            try:
                x = float(value)
            except OverflowError:  # an int beyond the float range
                raise ConfigError(f"{what} must be {ok}, got {short_repr(value)}") from None
            if not math.isfinite(x) or not inside(x):
                raise ConfigError(f"{what} must be {ok}, got {value}")

        integer(self.epochs, 1, 100_000, "epochs")
        integer(self.batch_size, 1, 1_000_000, "batch size")
        real(self.lr, "learning rate", "a finite number in (0, 10]", lambda v: 0 < v <= 10)
        real(self.momentum, "momentum", "a finite number in [0, 1)", lambda v: 0 <= v < 1)
        real(self.weight_decay, "weight decay", "a finite number in [0, 1]", lambda v: 0 <= v <= 1)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {short_repr(self.schedule)}")
        integer(self.warmup_epochs, 0, 100_000, "warm-up")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warm-up must be between 0 and {self.epochs} epochs, got {self.warmup_epochs}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {short_repr(self.augment)}")
        integer(self.seed, 0, 2**63 - 1, "seed")
        if not isinstance(self.device, str) or not re.fullmatch(r"(?a)cpu|cuda(:\d{1,3})?", self.device):
            raise ConfigError(f"device must be cpu, cuda or cuda:<index>, got {short_repr(self.device)}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {short_repr(self.amp)}")
        if self.amp == "fp16" and not self.device.startswith("cuda"):
            # fp16 needs CUDA's gradient scaler and has no fast CPU kernels; whether this CPU has bf16
            # units is checked where training starts (machine.check_cpu_bf16), not here, so a bf16
            # recipe read from a file still loads on a machine without them
            raise ConfigError("fp16 is for training on CUDA (--device cuda); the CPU trains in fp32 or bf16")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last must be true or false, got {short_repr(self.channels_last)}")

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: the name :data:`PRECISIONS` gives the ``amp`` field."""
        return "fp32" if self.amp == "off" else self.amp

    def to_dict(self) -> dict[str, Any]:
        """Every field, except those of :data:`OPTIONAL_RECIPE_FIELDS` at their default: the dict is
        part of run-store keys and checkpoint metadata, which a new field must not change."""
        d = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {k: v for k, v in d.items() if k not in OPTIONAL_RECIPE_FIELDS or v != defaults[k]}


@dataclass(frozen=True)
class DatasetInfo:
    """Which data a net was trained on; enough to rebuild the embedded digits or MNIST-1D exactly."""

    name: str
    train: int
    test: int
    classes: int
    channels: int
    size: int
    split_seed: int
    source: str = ""

    def __post_init__(self) -> None:
        """Metadata is read from files: wrong types are a CheckpointError here, not a crash later."""
        for name in ("name", "source"):
            if not isinstance(getattr(self, name), str):
                raise CheckpointError(f"dataset {name} must be a string, got {short_repr(getattr(self, name))}")
            if len(getattr(self, name)) > MAX_META_TEXT:
                raise CheckpointError(f"dataset {name} is {len(getattr(self, name)):,} characters long; at most "
                                      f"{MAX_META_TEXT:,}")
        for name, lo in (("train", 0), ("test", 0), ("classes", 1), ("channels", 1), ("size", 1), ("split_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
                raise CheckpointError(f"dataset {name} must be a whole number of at least {lo}, got {short_repr(value)}")

    @property
    def is_digits(self) -> bool:
        return self.name.startswith("digits")

    @property
    def digit_classes(self) -> tuple[int, ...] | None:
        """The classes of a class subset of the embedded digits or MNIST-1D ('digits16[0,1,2,3,4]',
        'mnist1d[0,1,2,3,4]': a transfer-learning source), else None."""
        m = re.fullmatch(r"(?a)(?:digits\d+|mnist1d)\[([0-9](?:,[0-9])*)\]", self.name)
        return tuple(int(c) for c in m.group(1).split(",")) if m else None

    @property
    def is_mnist1d(self) -> bool:
        """MNIST-1D, whole, a training subset (``mnist1d[:n]``, whose test split is still whole) or a
        class subset (``mnist1d[0,1,2,3,4]``); an ImageFolder merely named "mnist1d_png" is not it."""
        return re.fullmatch(r"(?a)mnist1d(\[:\d+\]|\[[0-9](,[0-9])*\])?", self.name) is not None

    @property
    def embedded(self) -> str | None:
        """The ``load_dataset`` kind that rebuilds this data with nothing to give ("digits" or
        "mnist1d"), or None for data read from a local path."""
        return "digits" if self.is_digits else "mnist1d" if self.is_mnist1d else None


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std the net's inputs were normalised with during training."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise CheckpointError(f"normalisation needs one mean and one std per channel, got {self.mean} / {self.std}")
        if not all(math.isfinite(m) for m in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise CheckpointError(f"normalisation must be finite with positive std, got {self.mean} / {self.std}")
        # below float32's resolution at the data's scale, (x - mean) / std turns one grey level into
        # thousands and the net sees noise: 90 % error without a word (a std of 1e-300 did that)
        if any(s < MIN_STD or s > MAX_STAT for s in self.std) or any(abs(m) > MAX_STAT for m in self.mean):
            raise CheckpointError(f"normalisation statistics out of range: std must be in [{MIN_STD:g}, {MAX_STAT:g}] "
                                  f"and |mean| at most {MAX_STAT:g}, got mean {self.mean} / std {self.std}")


#: The smallest std a normalisation may divide by: a few float32 steps (1.2e-7) at unit scale, where
#: inputs live (pixels in 0..1, MNIST-1D's signals of order 1); the loaders clamp a constant channel's
#: std to 1e-6 in float32 (9.99999997e-7), which stays above it
MIN_STD = 5e-7
MAX_STAT = 1e6

Status = Literal["complete", "cancelled"]


@dataclass(frozen=True)
class RunMeta:
    """A checkpoint's metadata. Every field optional: a bare torchvision state_dict has none."""

    dataset: DatasetInfo | None = None
    normalisation: Normalisation | None = None
    recipe: TrainConfig | None = None
    history: tuple[dict[str, float], ...] = ()
    final: dict[str, float] = field(default_factory=dict)
    status: Status = "complete"
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    command: str = ""
    train_seconds: float | None = None
    images_per_second: float | None = None
    # "sha256:<hex>" of the state_dict (analysis.store.weights.state_dict_hash), written on save and
    # verified on load; "" in files written before it existed and in bare state_dicts.
    content_sha256: str = ""

    @property
    def status_text(self) -> str:
        if self.status == "complete":
            return "complete"
        n = len(self.history)
        return f"cancelled after {n} epoch{'s' * (n != 1)}"

    @property
    def origin(self) -> str:
        """Where the run was made, read from the command its metadata records: 'grid' (the Variants
        lab or `python -m analysis grid`), 'transfer' (the Transfer page or CLI), 'command line'
        (`python -m analysis train`), else 'Training page' (it records no command)."""
        if self.command.startswith("python -m analysis grid"):
            return "grid"
        if self.command.startswith("transfer:"):
            return "transfer"
        if self.command.startswith("python -m analysis"):
            return "command line"
        return "Training page"

    # ------------------------------------------------------------------ one writer, one reader
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only, so the file loads under ``torch.load(weights_only=True)``."""
        return {
            "schema": SCHEMA,
            "dataset": dataclasses.asdict(self.dataset) if self.dataset else None,
            "normalisation": {"mean": list(self.normalisation.mean), "std": list(self.normalisation.std)}
            if self.normalisation else None,
            "recipe": self.recipe.to_dict() if self.recipe else None,
            "history": [dict(h) for h in self.history], "final": dict(self.final), "status": self.status,
            "versions": dict(self.versions), "created": self.created, "command": self.command,
            "train_seconds": self.train_seconds, "images_per_second": self.images_per_second,
            "content_sha256": self.content_sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunMeta:
        """Read metadata written by any version of :meth:`to_dict` (schema 1, or the unversioned dict
        of earlier checkpoints, which had the same fields). Strict: an unknown key, a value of the wrong
        type or an unknown schema is a CheckpointError naming the key (a file that says more than we
        read, or says it in another form, was not written by us and is not guessed at)."""
        if not isinstance(d, Mapping):
            raise CheckpointError(f"checkpoint metadata is a {type(d).__name__}, expected a mapping")
        bad_keys = [k for k in d if not isinstance(k, str)]
        if bad_keys:
            raise CheckpointError(f"checkpoint metadata has a key that is not text: {short_repr(bad_keys[0])}")
        unknown = sorted(set(d) - _META_KEYS)
        if unknown:
            raise CheckpointError(f"checkpoint metadata has unknown keys: {', '.join(_key_text(k) for k in unknown[:6])}"
                                  f"{' …' if len(unknown) > 6 else ''} (this version reads "
                                  f"{', '.join(sorted(_META_KEYS))})")
        schema = d.get("schema", SCHEMA)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA:
            raise CheckpointError(f"checkpoint metadata schema {short_repr(schema)} is not supported (this version "
                                  f"reads {SCHEMA})")
        # Every field is read by a checker that raises CheckpointError for what it cannot take (a
        # tensor where a number belongs, an int beyond the float range, a missing field included);
        # the recipe's own checks raise ConfigError. Nothing else is caught: anything else is a bug.
        ds, norm, recipe = d.get("dataset"), d.get("normalisation"), d.get("recipe")
        return cls(
            dataset=DatasetInfo(**_known(DatasetInfo, ds)) if ds is not None else None,
            normalisation=_normalisation(norm) if norm is not None else None,
            recipe=_recipe(recipe) if recipe is not None else None,
            history=tuple(_numbers(h, f"history[{i}]") for i, h in enumerate(_list(d.get("history"), "history"))),
            final=_numbers(_mapping_or_empty(d.get("final")), "final"),
            status=_status(d.get("status")),
            versions=_texts(_mapping_or_empty(d.get("versions")), "versions"),
            created=_text(d.get("created"), "created"), command=_text(d.get("command"), "command"),
            train_seconds=_opt_float(d.get("train_seconds"), "train_seconds"),
            images_per_second=_opt_float(d.get("images_per_second"), "images_per_second"),
            content_sha256=_digest(d.get("content_sha256")),
        )


#: the keys :meth:`RunMeta.to_dict` writes (``spec`` sits beside them; checkpoints.py reads it)
_META_KEYS = frozenset({"schema", "dataset", "normalisation", "recipe", "history", "final", "status", "versions",
                        "created", "command", "train_seconds", "images_per_second", "content_sha256"})


def _known(cls: type, d: object) -> dict[str, Any]:
    """The fields of dataclass ``cls`` present in ``d`` (a dict); unknown keys and missing required
    fields are an error (so constructing ``cls`` from them raises only its own checks' errors)."""
    if not isinstance(d, Mapping):
        raise CheckpointError(f"checkpoint metadata {cls.__name__}: expected a mapping, got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = [_key_text(k) for k in d if k not in names]
    if unknown:
        raise CheckpointError(f"unknown {cls.__name__} fields in checkpoint metadata: {', '.join(sorted(unknown))}")
    missing = [f.name for f in fields if f.name not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise CheckpointError(f"checkpoint metadata {cls.__name__} lacks {', '.join(missing)}")
    return dict(d)


def _recipe(v: object) -> TrainConfig:
    fields = _known(TrainConfig, v)
    try:
        return TrainConfig(**fields)
    except ConfigError as exc:  # the recipe's own checks
        raise CheckpointError(f"checkpoint metadata recipe: {exc}") from exc


def _mapping_or_empty(v: object) -> object:
    """None as an empty mapping (a field left out); anything else for the field's checker to judge."""
    return {} if v is None else v


def _key_text(k: object) -> str:
    """A key as a message shows it: a short name as itself, anything else as a short repr."""
    return k if isinstance(k, str) and len(k) <= 40 and k.isprintable() else short_repr(k, 40)


def _is_number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def _list(v: object, key: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise CheckpointError(f"checkpoint metadata {key} must be a list, got {type(v).__name__}")
    return list(v)


def _numbers(v: object, key: str) -> dict[str, float]:
    """A mapping of names to numbers (a history entry, the final metrics)."""
    if not isinstance(v, Mapping):
        raise CheckpointError(f"checkpoint metadata {key} must be a mapping of names to numbers, got "
                              f"{type(v).__name__}")
    for k, x in v.items():
        if not isinstance(k, str) or not _is_number(x):
            raise CheckpointError(f"checkpoint metadata {key}: {short_repr(k)} -> {short_repr(x)}; expected a name "
                                  "and a number")
    try:
        return {k: float(x) for k, x in v.items()}
    except OverflowError:
        raise CheckpointError(f"checkpoint metadata {key}: a number beyond the float range") from None


def _texts(v: object, key: str) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise CheckpointError(f"checkpoint metadata {key} must map names to text (e.g. 'torch': '2.13.0'), got "
                              f"{short_repr(v)}")
    return dict(v)


#: the longest text a metadata field may hold (a command line, a date, a dataset's path)
MAX_META_TEXT = 10_000


def _text(v: object, key: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise CheckpointError(f"checkpoint metadata {key} must be text, got {type(v).__name__}")
    if len(v) > MAX_META_TEXT:
        raise CheckpointError(f"checkpoint metadata {key} is {len(v):,} characters long; at most {MAX_META_TEXT:,}")
    return v


def _status(v: object) -> Status:
    # earlier files wrote "cancelled after N epochs"
    if v is None or (isinstance(v, str) and v == "complete"):
        return "complete"
    if isinstance(v, str) and (v == "cancelled" or re.fullmatch(r"(?a)cancelled after \d+ epochs?", v)):
        return "cancelled"
    raise CheckpointError(f"checkpoint metadata status must be 'complete' or 'cancelled', got {short_repr(v)}")


def _normalisation(v: object) -> Normalisation:
    if not isinstance(v, Mapping) or set(v) != {"mean", "std"}:
        raise CheckpointError(f"checkpoint metadata normalisation must hold exactly 'mean' and 'std', got "
                              f"{short_repr(v)}")
    lists = [v["mean"], v["std"]]
    if not all(isinstance(x, (list, tuple)) and all(_is_number(e) for e in x) for x in lists):
        raise CheckpointError(f"checkpoint metadata normalisation: mean and std must be lists of numbers, got "
                              f"{short_repr(v)}")
    try:
        mean, std = tuple(float(e) for e in v["mean"]), tuple(float(e) for e in v["std"])
    except OverflowError:  # an int beyond the float range
        raise CheckpointError("checkpoint metadata normalisation: a number beyond the float range") from None
    return Normalisation(mean, std)


def _digest(v: object) -> str:
    if v is None or (isinstance(v, str) and not v):
        return ""
    if not isinstance(v, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
        raise CheckpointError(f"checkpoint metadata content_sha256 is not a sha256 digest: {short_repr(v)}")
    return v


def _opt_float(v: object, key: str) -> float | None:
    if v is None:
        return None
    if not isinstance(v, bool) and isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            raise CheckpointError(f"checkpoint metadata {key}: a number beyond the float range") from None
    raise CheckpointError(f"checkpoint metadata {key} must be a number, got {type(v).__name__}")


def versions() -> dict[str, str]:
    """Library versions a run was made with."""
    import numpy
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
