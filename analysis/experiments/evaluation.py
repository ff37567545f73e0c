"""Which data a checkpoint is evaluated on: the one place that decides (issue 22, item 4).

The CLI's ``lesion`` and ``paths`` and the app's Lesion lab and Path ensemble pages (through
``ui.widgets.evaluation_data``, memoised by ``ui.cache.evaluation_dataset``) all ask :func:`choose`
and load with :func:`load`. The rules:

- **Its own data.** A checkpoint whose metadata names embedded data (the digits or MNIST-1D, whole or
  a class subset) is evaluated on exactly that: rebuilt by :func:`analysis.store.checkpoints.dataset_for`
  with its stored split and training statistics. Another kind, or another size, is refused.
- **A 1-D net** whose data cannot be rebuilt is evaluated on MNIST-1D's test split, the only
  sequences there are (nothing is read from disk for a 1-D net).
- **A 2-D net** of other data is offered :func:`offered_kinds`, default first: the embedded digits
  for a 1-channel 10-class net of 8, 16 or 32 px without dataset metadata (a bare state_dict), else
  CIFAR-10 or an ImageFolder tree, the kind it was trained on first; those need a local path, so
  with none given there is no default and :func:`choose` says what to give.
- **ImageFolder trees** for an ImageNet-stem net get torchvision's eval transform: the shorter side
  resized to :func:`eval_resize` of the crop (256 at 224 px), a center crop of the net's input size,
  ImageNet's statistics (or the net's stored ones), every image test data. Other nets see each image
  resized whole to their input size, as training here reads folders, and a seeded split.

Normalisation is always the net's stored training statistics when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from analysis.arch.specs import ResNetSpec
from analysis.core.errors import ConfigError, DatasetError
from analysis.core.meta import DatasetInfo, Normalisation, RunMeta
from analysis.data.data import DIGITS_SIZES, Dataset, load_dataset, load_image_folder
from analysis.data.mnist1d import LENGTH as MNIST1D_LENGTH

KINDS = ("digits", "mnist1d", "cifar10", "imagefolder")
EMBEDDED_KINDS = ("digits", "mnist1d")
LOCAL_KINDS = ("cifar10", "imagefolder")
KIND_TEXT = {"digits": "the digits", "mnist1d": "MNIST-1D", "cifar10": "CIFAR-10", "imagefolder": "an ImageFolder tree"}
#: CIFAR-10's images are this many pixels a side, whatever size is asked for
CIFAR_SIZE = 32

Origin = Literal["own", "default", "given"]


@dataclass(frozen=True)
class Options:
    """How messages name the choices: the CLI's flags, or the page's fields (the default)."""

    kind: str = "the dataset"
    path: str = "the dataset path"
    size: str = "the size"
    resize: str = "the resize"
    max_per_class: str = "the images per class"


@dataclass(frozen=True)
class Choice:
    """The data decided on, before anything is read; hashable (a cache key), loaded by :func:`load`.

    ``origin``: "own" (rebuilt from the metadata), "default" (nothing was given and nothing recorded:
    the 1-D net's MNIST-1D or the bare digits net's digits) or "given" (asked for)."""

    kind: str
    origin: Origin
    size: int
    seed: int = 0
    path: str | None = None
    own: DatasetInfo | None = None
    normalisation: Normalisation | None = None
    eval_transform: bool = False
    resize: int | None = None
    max_per_class: int | None = None


def eval_resize(size: int) -> int:
    """The shorter side an image is resized to before its center crop of ``size``: torchvision's
    ImageNet eval transform (256 then 224) at the same ratio for every crop, ``round(size * 256 / 224)``
    (224 -> 256, 32 -> 37, 64 -> 73)."""
    return round(size * 256 / 224)


def uses_eval_transform(spec: ResNetSpec, kind: str) -> bool:
    """ImageFolder data for an ImageNet-stem net (torchvision's weights): resize, crop, ImageNet statistics."""
    return kind == "imagefolder" and spec.stem == "imagenet"


def own_data(meta: RunMeta) -> DatasetInfo | None:
    """The embedded data the metadata says the net was trained on, or None (none recorded, or data
    read from a local path, which cannot be rebuilt)."""
    return meta.dataset if meta.dataset is not None and meta.dataset.embedded is not None else None


def fits_digits(spec: ResNetSpec) -> bool:
    """The embedded digits are 1-channel images of 8, 16 or 32 px: a net that takes those."""
    return spec.dims == 2 and spec.in_channels == 1 and spec.input_size in DIGITS_SIZES


def offered_kinds(spec: ResNetSpec, meta: RunMeta) -> tuple[str, ...]:
    """The kinds of data a checkpoint may be evaluated on, its default first. One kind when there is
    nothing to choose (its own embedded data; MNIST-1D for a 1-D net)."""
    own = own_data(meta)
    if own is not None:
        return (str(own.embedded),)
    if spec.dims == 1:
        return ("mnist1d",)
    # trained on a local folder (metadata naming other data than "cifar10"): that kind first
    local = ("imagefolder", "cifar10") if meta.dataset is not None and meta.dataset.name != "cifar10" else LOCAL_KINDS
    if not fits_digits(spec):
        return local  # a colour or large net would only meet an error on the digits
    # the digits first only where they are a guess worth making: 10 classes, nothing recorded
    return ("digits", *local) if spec.num_classes == 10 and meta.dataset is None else (*local, "digits")


def _whole(what: str, value: int | None, lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ConfigError(f"{what} must be a whole number of at least {lo}, got {value!r}")


def check_request(*, kind: str | None = None, path: str | Path | None = None, size: int | None = None,
                  resize: int | None = None, max_per_class: int | None = None, seed: int = 0,
                  options: Options = Options()) -> str | Path | None:
    """What can be refused before the checkpoint is read (the CLI calls it first): an unknown kind, a
    path without a kind that reads one or with an embedded kind, ImageFolder options for other data,
    numbers out of range. Returns ``path``, None for a blank one."""
    o = options
    if kind is not None and kind not in KINDS:
        raise DatasetError(f"{o.kind} {kind!r}: unknown; choose one of {', '.join(KINDS)}")
    if path is not None and not str(path).strip():
        path = None  # an empty text field: no path yet
    if path is not None and kind is None:
        raise ConfigError(f"{o.path} {path}: say what it holds with {o.kind} {' or '.join(LOCAL_KINDS)}")
    if path is not None and kind in EMBEDDED_KINDS:
        raise ConfigError(f"{o.path} is for {' and '.join(LOCAL_KINDS)}; {KIND_TEXT[str(kind)]} are embedded")
    if kind is not None:
        _only_for_folders(kind, resize, max_per_class, o)
    _whole(o.size, size, 1)
    _whole(o.resize, resize, 1)
    _whole(o.max_per_class, max_per_class, 1)
    _whole("the split seed", seed, 0)
    return path


def choose(spec: ResNetSpec, meta: RunMeta, *, kind: str | None = None, path: str | Path | None = None,
           size: int | None = None, resize: int | None = None, max_per_class: int | None = None, seed: int = 0,
           name: str = "the checkpoint", options: Options = Options()) -> Choice:
    """The data ``spec`` (with metadata ``meta``) is evaluated on; nothing is read here.

    ``kind`` None: its own data, else the default of :func:`offered_kinds` where it needs no path.
    ``path``: the local folder of CIFAR-10 or an ImageFolder tree. ``size``: the image side (default the
    net's; own data keep theirs). ``resize`` (ImageFolder: shorter side before the center crop; default
    :func:`eval_resize` for an ImageNet-stem net, none otherwise) and ``max_per_class`` (ImageFolder: a
    cap per class). ``seed``: the split of data without a stored one. ``name`` and ``options`` word the
    errors (:class:`ConfigError` for a choice that cannot be, :class:`DatasetError` for missing data)."""
    o = options
    path = check_request(kind=kind, path=path, size=size, resize=resize, max_per_class=max_per_class, seed=seed,
                         options=o)
    own = own_data(meta)
    if own is not None:
        if kind is not None and kind != own.embedded:
            raise ConfigError(f"{o.kind} {kind}: {name} was trained on {own.name}, not {KIND_TEXT[kind]}; leave "
                              f"{o.kind} out to evaluate it on its own data")
        if size is not None and size != own.size:
            what = f"MNIST-1D's {own.size}-sample sequences" if own.is_mnist1d else f"{own.size} px digits"
            raise ConfigError(f"{o.size} {size}: {name} was trained on {what} and is evaluated on those; leave "
                              f"{o.size} out")
        _only_for_folders(str(own.embedded), resize, max_per_class, o)
        return Choice(str(own.embedded), "own", own.size, own.split_seed, own=own, normalisation=meta.normalisation)

    offered = offered_kinds(spec, meta)
    origin: Origin = "given"
    if kind is None:
        kind, origin = offered[0], "default"
        if kind in LOCAL_KINDS:  # no embedded default: the net's data can only come from a path
            said = (f"was trained on {meta.dataset.name}, read from a local path" if meta.dataset is not None else
                    "carries no dataset metadata (a bare state_dict holds weights only)")
            raise DatasetError(f"{name} {said}; give {o.kind} {' or '.join(k for k in offered if k in LOCAL_KINDS)} "
                               f"and {o.path}")
    if kind not in offered:
        raise ConfigError(f"{o.kind} {kind}: {_unfit(spec, kind, name)}")
    _only_for_folders(kind, resize, max_per_class, o)
    if kind == "mnist1d":
        if size not in (None, MNIST1D_LENGTH):
            raise ConfigError(f"{o.size} {size}: MNIST-1D sequences have a fixed length of {MNIST1D_LENGTH} samples; "
                              f"leave {o.size} out")
        side = MNIST1D_LENGTH
    else:
        side = CIFAR_SIZE if kind == "cifar10" else size if size is not None else spec.input_size
    if kind in LOCAL_KINDS and path is None:
        raise DatasetError(f"{KIND_TEXT[kind]}: give {o.path}, its local folder (nothing is downloaded)")
    transform = uses_eval_transform(spec, kind)
    if resize is None and transform:
        resize = eval_resize(side)
    return Choice(kind, origin, side, seed, path=None if path is None else str(path),
                  normalisation=meta.normalisation, eval_transform=transform, resize=resize,
                  max_per_class=max_per_class)


def _unfit(spec: ResNetSpec, kind: str, name: str) -> str:
    """Why ``kind`` is not offered to a net without its own data."""
    if spec.dims == 1:
        return f"{name} is a 1-D net (it takes sequences); it is evaluated on MNIST-1D"
    if kind == "mnist1d":
        return f"{name} is a 2-D net (it takes images); MNIST-1D holds 1-D sequences"
    return (f"{name} takes {spec.in_channels}-channel {spec.input_size} px images; the digits are 1-channel "
            f"images of {', '.join(map(str, DIGITS_SIZES))} px")


def _only_for_folders(kind: str, resize: int | None, max_per_class: int | None, o: Options) -> None:
    """A resize or a per-class cap given for data they do not apply to is refused, not ignored."""
    for option, value in ((o.resize, resize), (o.max_per_class, max_per_class)):
        if value is not None and kind != "imagefolder":
            raise ConfigError(f"{option} applies to ImageFolder trees; {KIND_TEXT[kind]} have none")


def load(choice: Choice) -> Dataset:
    """The data of ``choice``, read or rebuilt, normalised with the net's stored statistics when it has them."""
    if choice.own is not None:
        from analysis.store.checkpoints import dataset_for  # the one rebuild of a checkpoint's embedded data

        return dataset_for(RunMeta(dataset=choice.own, normalisation=choice.normalisation))
    if choice.kind == "imagefolder":
        if choice.path is None:
            raise DatasetError("imagefolder: give the dataset's local path (nothing is downloaded)")
        if choice.eval_transform:  # a validation folder: every image is test data
            return load_image_folder(choice.path, size=choice.size, resize=choice.resize, normalise="imagenet",
                                     normalisation=choice.normalisation, test_fraction=1.0,
                                     max_per_class=choice.max_per_class)
        return load_image_folder(choice.path, size=choice.size, seed=choice.seed, resize=choice.resize,
                                 max_per_class=choice.max_per_class, normalisation=choice.normalisation)
    return load_dataset(choice.kind, choice.path, size=choice.size, seed=choice.seed,
                        normalisation=choice.normalisation)


def check_fits(spec: ResNetSpec, data: Dataset, choice: Choice | None = None) -> None:
    """``data`` can be fed to ``spec`` (:func:`analysis.experiments.lesion.check_data`: kind of input, channels,
    classes, length); an ImageFolder's class count mismatch also says how classes are counted."""
    from analysis.experiments.lesion import check_data

    try:
        check_data(spec, data)
    except DatasetError as exc:
        if choice is not None and choice.kind == "imagefolder" and data.num_classes != spec.num_classes:
            raise DatasetError(f"{exc} (class index = sorted folder order, so an ImageNet val folder needs all "
                               "1,000 class folders)") from exc
        raise


def describe(choice: Choice, data: Dataset, name: str, options: Options = Options()) -> str:
    """One line saying which data ``name`` is evaluated on and why (the CLI prints it before any number)."""
    noun = "sequences" if data.dims == 1 else "images"
    count = f"{len(data.y_test):,} test {noun}"
    if choice.origin == "own":
        return f"{name}: evaluated on its own data, {data.name} rebuilt from its metadata ({count})"
    if choice.origin == "default" and choice.kind == "mnist1d":
        return (f"{name}: its metadata names no dataset that can be rebuilt; evaluated on the test split of MNIST-1D "
                f"(Greydanus 2020), the embedded sequences ({count})")
    if choice.origin == "default":
        return (f"{name}: its file does not say what data it was trained on (a bare state_dict holds weights only); "
                f"evaluated on the embedded digits at {choice.size} px ({count}); give {options.kind} and "
                f"{options.path} for other data")
    how = ""
    if choice.eval_transform:
        stats = "its stored statistics" if choice.normalisation is not None else "ImageNet's statistics"
        how = f", shorter side resized to {choice.resize} then center-cropped to {choice.size}, {stats}"
    elif choice.kind == "imagefolder" and choice.resize is not None:
        how = f", shorter side resized to {choice.resize} then center-cropped to {choice.size}"
    return f"{name}: evaluated on {data.name} ({count}{how})"
