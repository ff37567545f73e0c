"""Datasets as in-memory tensors: the embedded digits and MNIST-1D, CIFAR-10 (python format) and
ImageFolder trees.

Nothing is downloaded. The embedded default is scikit-learn's bundled 8x8 handwritten digits,
upsampled so CIFAR-style nets (three stages, total stride 4) have room. The second embedded set,
MNIST-1D (Greydanus 2020), is for 1-D nets: sequences of length 40 generated locally by the
``mnist1d`` package (see :mod:`analysis.data.mnist1d`) and cached under the app's home. Real datasets are read from
a local path; anything missing, incomplete, corrupt or out of range (labels, dtypes, shapes, class
names, image files, arguments) raises :class:`DatasetError` naming the path and what was expected,
before anything is trained on it. Only regular files are read (a FIFO named like an image is never
waited on), and a dataset whose float32 tensors would exceed the memory budget
(:func:`analysis.arch.budget.memory_budget`: ``RESNET_LENS_MEMORY_BUDGET`` or half the machine's memory)
is refused with the numbers before a single image is decoded.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from analysis.core.bounded import check_bounded
from analysis.core.errors import DatasetError
from analysis.core.meta import DatasetInfo, Normalisation

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["MNIST1D_BASELINES", "Dataset", "DatasetError", "augment_batch", "load_cifar10", "load_dataset",
           "load_digits", "load_image_folder", "load_mnist1d", "shift1d"]

DIGITS_SIZES = (8, 16, 32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_CLASSES = 10
CIFAR_COLUMNS = 3 * 32 * 32
#: The budget for a loaded dataset's float32 image tensors (train + test together) when
#: ``analysis.arch.budget`` is not importable; full CIFAR-10 needs 0.69 GiB.
MEMORY_BUDGET_BYTES = 2 * 1024**3
#: Largest ``size`` and ``resize`` of an ImageFolder load.
MAX_SIDE = 8192
#: Largest image (in pixels) decoded, before or after the shorter-side resize: Pillow's own
#: decompression-bomb threshold (a PNG header can declare 20,000 x 20,000 in a few hundred bytes).
MAX_IMAGE_PIXELS = 89_478_485
#: Test accuracy (fraction) of the reference models on MNIST-1D's own 4,000/1,000 split, from
#: Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439, as tabulated in the mnist1d
#: README ("Comparing MNIST and MNIST-1D"): what a net trained here compares with, the split being the same.
MNIST1D_BASELINES: dict[str, float] = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91,
                                       "human": 0.96}
#: Largest shift (samples, zero-filled) of the "shift1d" augmentation: a tenth of a 40-sample sequence.
SHIFT1D_MAX = 4


@dataclass
class Dataset:
    """A labelled set split into train and test, normalised, float32: images NCHW, sequences NCL
    (1-D nets take channels x length)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # "shift" (digits: no flips), "crop_flip" (natural images), "shift1d" (sequences), "none"
    augment: str = "shift"
    source: str = ""
    split_seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def size(self) -> int:
        """The image side, or the sequence length of a 1-D set."""
        return int(self.x_train.shape[-1])

    @property
    def dims(self) -> int:
        """Spatial dimensions of an input: 2 for images, 1 for sequences."""
        return self.x_train.ndim - 2

    def info(self) -> DatasetInfo:
        return DatasetInfo(name=self.name, train=len(self.y_train), test=len(self.y_test),
                           classes=self.num_classes, channels=self.channels, size=self.size,
                           split_seed=self.split_seed, source=self.source)

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation(tuple(self.mean), tuple(self.std))


def _normalise(x_train: Tensor, x_test: Tensor, stats: Normalisation | None = None
               ) -> tuple[Tensor, Tensor, list[float], list[float]]:
    """Per-channel mean/std from the training split only (no test leakage), or the given ``stats``
    (a trained net's own training-time normalisation, when evaluating it). Works for images (NCHW)
    and sequences (NCL): statistics over every dimension but the channels."""
    spatial = tuple(range(2, x_test.ndim))
    if stats is None:
        mean = x_train.mean(dim=(0, *spatial), keepdim=True)
        std = x_train.std(dim=(0, *spatial), keepdim=True).clamp_min(1e-6)
    else:
        if len(stats.mean) != x_test.shape[1]:
            raise DatasetError(f"the stored normalisation has {len(stats.mean)} channels, the images "
                               f"have {x_test.shape[1]}")
        shape = (1, -1) + (1,) * len(spatial)
        mean = torch.tensor(stats.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(stats.std, dtype=torch.float32).view(shape)
    return ((x_train - mean) / std, (x_test - mean) / std,
            mean.flatten().tolist(), std.flatten().tolist())


def _split(n: int, test_fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified by class when labels are given."""
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        k = int(round(n * test_fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ----------------------------------------------------------------------------- arguments and files
def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _int_arg(what: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as a plain int in ``lo..hi``; bools, floats and strings are refused, not coerced."""
    if not _is_int(value):
        raise DatasetError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise DatasetError(f"{what} must be {bounds}, got {v}")
    return v


def _opt_int_arg(what: str, value: object, lo: int, hi: int | None = None) -> int | None:
    return None if value is None else _int_arg(what, value, lo, hi)


def _fraction_arg(what: str, value: object, *, allow_one: bool = False) -> float:
    """A test fraction strictly between 0 and 1 (or exactly 1: everything is test data)."""
    v = math.nan
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
        v = float(value)
    if not (0 < v < 1 or (allow_one and v == 1)):
        one = " or exactly 1.0 (everything is test data, for evaluating a trained net)" if allow_one else ""
        raise DatasetError(f"{what} must be a number strictly between 0 and 1{one}, got {value!r}")
    return v


def _root_arg(what: str, root: object) -> Path:
    if isinstance(root, bytes) or not isinstance(root, str | os.PathLike) or (isinstance(root, str) and not root.strip()):
        raise DatasetError(f"{what}: the dataset path must be a non-empty string or path, got {root!r}")
    try:
        path = Path(root).expanduser()
    except (TypeError, RuntimeError) as exc:
        raise DatasetError(f"{what}: unusable dataset path {root!r} ({exc})") from exc
    if "\x00" in str(path):
        raise DatasetError(f"{what}: the dataset path {root!r} contains a NUL character")
    return path


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file, or a broken symlink"
    return exc.strerror or str(exc)


def _kind(path: Path) -> int | None:
    """The file type (``stat.S_IFDIR``, ``S_IFREG``, ...) of what ``path`` leads to, links followed;
    None when nothing is there. A path that cannot be inspected (a broken symlink, a symlink loop,
    permissions) is a :class:`DatasetError`: it was probably meant to be part of the dataset."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if os.path.islink(path):
            raise DatasetError(f"{path}: a broken symlink (it points to nothing)") from exc
        return None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({_reason(exc)})") from exc


def _list_dir(d: Path) -> list[str]:
    """``d``'s entries in sorted order, hidden ones (``.DS_Store``, ``._x.jpg``) left out."""
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except OSError as exc:
        raise DatasetError(f"{d}: cannot list the folder ({_reason(exc)})") from exc


def _open_regular(path: Path, expected: str) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file. Never blocks: the open is non-blocking
    and a FIFO, socket, device or folder is refused, not waited on or read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be opened ({_reason(exc)}); expected {expected}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DatasetError(f"{path}: not a regular file (a folder, FIFO, socket or device); expected {expected}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _memory_budget() -> int:
    """The process-wide memory budget (:mod:`analysis.arch.budget`), or :data:`MEMORY_BUDGET_BYTES`."""
    try:
        from analysis.arch.budget import memory_budget
    except ImportError:  # pragma: no cover - only while analysis.arch.budget is absent
        return MEMORY_BUDGET_BYTES
    return memory_budget()


def _check_memory(what: str, images: int, shape: tuple[int, ...], hint: str) -> None:
    """Refuses, before anything is decoded or stacked, a dataset whose float32 tensors would not fit."""
    need, budget = images * math.prod(shape) * 4, _memory_budget()
    if need > budget:
        raise DatasetError(f"{what}: {images:,} images of {'x'.join(map(str, shape))} float32 need "
                           f"{need / 2**30:.2f} GiB, over the memory budget of {budget / 2**30:.2f} GiB "
                           f"({budget:,} bytes); {hint}, or raise RESNET_LENS_MEMORY_BUDGET on a machine that "
                           "has the memory")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def digits_name(size: int, classes: tuple[int, ...] | None = None) -> str:
    """'digits16', or 'digits16[5,6,7,8,9]' for a class subset (how metadata names it)."""
    return subset_name(f"digits{size}", classes)


def load_digits(size: int = 16, seed: int = 0, test_fraction: float = 0.25,
                normalisation: Normalisation | None = None, classes: tuple[int, ...] | None = None) -> Dataset:
    """scikit-learn's bundled digits (1,797 8x8 images, 10 classes), a fixed seeded stratified split,
    bilinearly resized to ``size`` x ``size`` and normalised (with ``normalisation`` if given).

    ``classes`` keeps only those digits, relabelled 0..k-1 in the order given (a transfer-learning
    source or target: digits 0-4 and 5-9); the split is the full set's, so a subset's test images are
    the full test split's images of those digits. Statistics come from the subset's training images."""
    if classes is not None:
        classes = _check_classes("digits", classes)
    if not _is_int(size) or size not in DIGITS_SIZES:
        raise DatasetError(f"digits: size must be one of {DIGITS_SIZES}, got {size!r}")
    size = int(size)
    seed = _int_arg("digits: seed", seed, 0)
    test_fraction = _fraction_arg("digits: test fraction", test_fraction)
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = _split(len(y), test_fraction, seed, d.target)
    if classes is not None:
        keep = np.isin(d.target, classes)
        tr, te = tr[keep[tr]], te[keep[te]]
        relabel = torch.full((10,), -1, dtype=torch.long)
        relabel[list(classes)] = torch.arange(len(classes))
        y = relabel[y]
    xtr, xte, mean, std = _normalise(x[tr], x[te], normalisation)
    names = [str(i) for i in (classes if classes is not None else range(10))]
    return Dataset(digits_name(size, classes), xtr, y[tr], xte, y[te], names, mean, std,
                   augment="shift", source="sklearn.datasets.load_digits (bundled)", split_seed=seed)


def _check_classes(what: str, classes: object) -> tuple[int, ...]:
    """Distinct class indices 0-9 (a transfer-learning source or target: 0-4, 5-9)."""
    if (not isinstance(classes, (tuple, list)) or not classes or len(set(classes)) != len(classes)
            or not all(_is_int(c) and 0 <= int(c) <= 9 for c in classes)):
        raise DatasetError(f"{what}: classes must be distinct digits 0-9, got {classes!r}")
    return tuple(int(c) for c in classes)


def subset_name(base: str, classes: tuple[int, ...] | None) -> str:
    """'mnist1d', or 'mnist1d[5,6,7,8,9]' for a class subset (how metadata names it)."""
    return base + ("" if classes is None else "[" + ",".join(str(c) for c in classes) + "]")


def load_mnist1d(seed: int = 0, normalisation: Normalisation | None = None,
                 classes: tuple[int, ...] | None = None) -> Dataset:
    """MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test sequences of length 40, 10 classes,
    as (N, 1, 40) float32 tensors normalised per channel from the training split (or with
    ``normalisation``), augmented with "shift1d".

    The split is the package's own fixed one (``make_dataset``'s first 80 %, seed 42), so accuracies
    compare with :data:`MNIST1D_BASELINES`; ``seed`` is only recorded as ``split_seed``. The data are
    generated once per home in a child process and then read from its cache (:mod:`analysis.data.mnist1d`);
    a missing ``mnist1d`` package or a failed generation is a :class:`DatasetError`. ``classes`` keeps
    only those classes, relabelled 0..k-1 in the order given, as :func:`load_digits` does."""
    seed = _int_arg("mnist1d: seed", seed, 0)
    if classes is not None:
        classes = _check_classes("mnist1d", classes)
    from analysis.data.mnist1d import SOURCE, load_arrays

    a = load_arrays()
    x = {k: torch.from_numpy(a[k].astype(np.float32)).unsqueeze(1) for k in ("x", "x_test")}
    y = {k: torch.from_numpy(a[k].astype(np.int64)) for k in ("y", "y_test")}
    if classes is not None:  # the package's own split, restricted: a subset's test set is the full one's
        relabel = torch.full((10,), -1, dtype=torch.long)
        relabel[list(classes)] = torch.arange(len(classes))
        for xs, ys in (("x", "y"), ("x_test", "y_test")):
            keep = relabel[y[ys]] >= 0
            x[xs], y[ys] = x[xs][keep], relabel[y[ys][keep]]
    xtr, xte, mean, std = _normalise(x["x"], x["x_test"], normalisation)
    names = [str(i) for i in (classes if classes is not None else range(10))]
    return Dataset(subset_name("mnist1d", classes), xtr, y["y"], xte, y["y_test"], names, mean, std,
                   augment="shift1d", source=SOURCE, split_seed=seed)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and nothing else: a pickle
    that names any other global (e.g. os.system) is refused before anything runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
        # protocol 5 pickles arrays as _frombuffer(bytes, dtype, shape, order): data, no code
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a CIFAR batch")


# LookupError: the allowed _codecs.encode asked for a codec that does not exist
_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                    LookupError, OverflowError, RecursionError, MemoryError, struct.error)
_MISSING = object()


def _read_pickle(path: Path, what: str, expected: str) -> object:
    with _open_regular(path, expected) as f:
        size = os.fstat(f.fileno()).st_size
        if size > _memory_budget():
            raise DatasetError(f"{path}: {size:,} bytes, over the memory budget of {_memory_budget():,} bytes; "
                               f"expected {expected}")
        try:
            blob = f.read()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot be read ({_reason(exc)}); expected {expected}") from exc
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _UNPICKLE_ERRORS as exc:
        raise DatasetError(f"{path}: not a valid CIFAR-10 python {what} ({type(exc).__name__}: {exc}); "
                           f"expected {expected}") from exc
    # a CIFAR batch is a flat dict of 4 items: anything nested deep or expanding (shared references)
    # is refused before its labels are walked (analysis.core.bounded)
    check_bounded(obj, f"{path}: the pickled {what}", DatasetError)
    return obj


def _field(d: dict[Any, Any], key: str) -> object:
    """``d[b'key']`` (Python 2 pickles, as CIFAR-10 ships) or ``d['key']`` (re-pickled by Python 3)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return _MISSING


def _cifar_labels(path: Path, labels: object, rows: int) -> np.ndarray:
    expected = (f"b'labels' must be a list (or 1-D integer array) of {rows} class indices 0..{CIFAR_CLASSES - 1}, "
                "one per row of b'data'")
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"{path}: {expected}; got {_describe(labels)}")
        bad = np.flatnonzero((labels < 0) | (labels >= CIFAR_CLASSES))
        values = labels
    elif isinstance(labels, list | tuple):
        wrong = next((i for i, v in enumerate(labels) if not _is_int(v)), None)
        if wrong is not None:
            raise DatasetError(f"{path}: {expected}; item {wrong} is {_describe(labels[wrong])}")
        bad = np.asarray([i for i, v in enumerate(labels) if not 0 <= v < CIFAR_CLASSES], dtype=np.int64)
        values = np.asarray([int(v) if 0 <= v < CIFAR_CLASSES else -1 for v in labels], dtype=np.int64)
    else:
        raise DatasetError(f"{path}: {expected}; got {_describe(labels)}")
    if len(values) != rows:
        raise DatasetError(f"{path}: {rows} images in b'data' but {len(values)} labels; {expected}")
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"{path}: {len(bad)} labels out of range, the first {labels[i]!r} at index {i}; "
                           f"{expected}")
    return values.astype(np.int64)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    expected = "a CIFAR-10 python batch: a pickled dict with b'data' (N x 3072 uint8) and b'labels' (N ints 0..9)"
    d = _read_pickle(path, "batch", expected)
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: a CIFAR-10 batch must be a dict with b'data' and b'labels', got {_describe(d)}")
    data, labels = _field(d, "data"), _field(d, "labels")
    missing = [k for k, v in (("b'data'", data), ("b'labels'", labels)) if v is _MISSING]
    if missing:
        raise DatasetError(f"{path}: a CIFAR-10 batch must be a dict with b'data' and b'labels'; "
                           f"missing {' and '.join(missing)}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_COLUMNS:
        raise DatasetError(f"{path}: b'data' must be an N x {CIFAR_COLUMNS} uint8 numpy array (one 32x32 RGB image "
                           f"per row, channel-major), got {_describe(data)}")
    if data.shape[0] == 0:
        raise DatasetError(f"{path}: an empty batch (0 images); expected N x {CIFAR_COLUMNS} with N >= 1")
    y = _cifar_labels(path, labels, data.shape[0])
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar_meta(path: Path) -> list[str]:
    expected = f"batches.meta: a pickled dict whose b'label_names' lists the {CIFAR_CLASSES} class names"
    m = _read_pickle(path, "batches.meta", expected)
    names = _field(m, "label_names") if isinstance(m, dict) else _MISSING
    if not isinstance(names, list | tuple):
        raise DatasetError(f"{path}: expected {expected}, got {_describe(m)}")
    if len(names) != CIFAR_CLASSES:
        raise DatasetError(f"{path}: b'label_names' has {len(names)} names; CIFAR-10 has exactly {CIFAR_CLASSES} "
                           f"classes (labels 0..{CIFAR_CLASSES - 1})")
    classes = []
    for i, c in enumerate(names):
        try:
            name = c.decode("utf-8") if isinstance(c, bytes) else c
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: class name {i} is not UTF-8 ({c!r})") from exc
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{path}: class name {i} must be a non-empty string, got {_describe(c)}")
        classes.append(name)
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{path}: duplicate class names in b'label_names': {classes}")
    return classes


def load_cifar10(root: str | Path, *, limit_train: int | None = None, limit_test: int | None = None,
                 normalisation: Normalisation | None = None) -> Dataset:
    """CIFAR-10 in its standard python format: ``root`` is ``cifar-10-batches-py`` or its parent.
    ``limit_train`` / ``limit_test`` keep the first so many images of each split."""
    root = _root_arg("cifar10", root)
    limit_train = _opt_int_arg("cifar10: limit_train", limit_train, 1)
    limit_test = _opt_int_arg("cifar10: limit_test", limit_test, 1)
    kind = _kind(root)
    if kind != stat.S_IFDIR:
        raise DatasetError(f"{root}: {'no such directory' if kind is None else 'not a directory'}; expected the "
                           "extracted cifar-10-batches-py folder")
    if _kind(root / "cifar-10-batches-py") == stat.S_IFDIR:
        root = root / "cifar-10-batches-py"
    missing = [f for f in CIFAR_FILES if _kind(root / f) is None]
    if missing:
        raise DatasetError(f"{root}: incomplete CIFAR-10, missing {', '.join(missing)} (expected "
                           f"{', '.join(CIFAR_FILES)} and batches.meta)")
    on_disk = sum(os.stat(root / f).st_size for f in CIFAR_FILES)
    if on_disk > _memory_budget():
        raise DatasetError(f"{root}: the batches hold {on_disk:,} bytes, over the memory budget of "
                           f"{_memory_budget():,} bytes (CIFAR-10's are 31 MB each)")
    parts = [_read_cifar_batch(root / f) for f in CIFAR_FILES[:-1]]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(root / "test_batch")
    if limit_train:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test:
        xte, yte = xte[:limit_test], yte[:limit_test]
    _check_memory(str(root), len(xtr) + len(xte), (3, 32, 32), "pass limit_train / limit_test")
    classes = [f"class {i}" for i in range(CIFAR_CLASSES)]
    meta = root / "batches.meta"
    if _kind(meta) is not None:
        classes = _read_cifar_meta(meta)
    a, b, mean, std = _normalise(torch.from_numpy(np.ascontiguousarray(xtr)).float().div_(255.0),
                                 torch.from_numpy(np.ascontiguousarray(xte)).float().div_(255.0), normalisation)
    return Dataset("cifar10", a, torch.from_numpy(ytr), b, torch.from_numpy(yte), classes, mean, std,
                   augment="crop_flip", source=str(root), split_seed=-1)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


_IMAGE_EXPECTED = "an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)"


def _grey_wide(path: Path, src: PILImage.Image) -> PILImage.Image:
    """A 16/32-bit integer ('I;16', 'I;16B', 'I') or float ('F') grey image as a float image in 0..1:
    16-bit intensities 0..65535 map to 0..1 (converting to 'L' would clip everything above 255)."""
    from PIL import Image

    a = np.asarray(src)
    if src.mode == "F":
        scaled = a.astype(np.float32)
        if not np.isfinite(scaled).all() or scaled.min() < 0 or scaled.max() > 1:
            raise DatasetError(f"{path}: a 32-bit float image with values outside 0..1 (or not finite); "
                               "expected intensities in 0..1")
    else:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DatasetError(f"{path}: a {src.mode} integer image with values {lo}..{hi}; expected 16-bit "
                               "intensities 0..65535")
        scaled = a.astype(np.float32) / np.float32(65535.0)
    return Image.fromarray(np.ascontiguousarray(scaled, dtype=np.float32))


def _fit(path: Path, im: PILImage.Image, size: int, resize: int | None) -> PILImage.Image:
    """``size`` x ``size``: bilinear resize, or (``resize``) shorter side to ``resize`` then a center crop."""
    from PIL import Image

    if not resize:
        return im.resize((size, size), Image.Resampling.BILINEAR)
    w, h = im.size
    s = resize / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if nw * nh > image_pixel_limit():
        raise DatasetError(f"{path}: {w}x{h} with its shorter side resized to {resize} would be {nw}x{nh}, over the "
                           f"{image_pixel_limit():,}-pixel limit; expected a photo-like aspect ratio")
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


#: Peak bytes per pixel while one image is decoded and converted: the decoded source (up to 4 bytes a
#: pixel for RGBA or 32-bit grey), its RGB or float copy and the resize's working image. Measured: an
#: 8,192 x 8,192 16-bit PNG peaks at 11.5 bytes a pixel above the process's baseline; 16 leaves room.
DECODE_BYTES_PER_PIXEL = 16


def image_pixel_limit() -> int:
    """The most pixels an image header may declare: Pillow's decompression-bomb threshold, or less
    where the memory budget cannot hold its decoding (:data:`DECODE_BYTES_PER_PIXEL`). Checked on the
    header, before decoding; Pillow's own process-wide ``Image.MAX_IMAGE_PIXELS`` is left alone."""
    return min(MAX_IMAGE_PIXELS, _memory_budget() // DECODE_BYTES_PER_PIXEL)


def _pixel_limit_reason(limit: int) -> str:
    if limit < MAX_IMAGE_PIXELS:
        return (f"decoding it needs about {DECODE_BYTES_PER_PIXEL} bytes a pixel, and the memory budget is "
                f"{_memory_budget():,} bytes; raise RESNET_LENS_MEMORY_BUDGET on a machine that has the memory")
    return "Pillow's decompression-bomb threshold"


def _decode_image(path: Path, size: int, resize: int | None, grayscale: bool) -> np.ndarray:
    """One image file as a C x size x size float32 array in 0..1 (C = 1 grey, 3 RGB). Palette, alpha
    (dropped, as torchvision's loader does), CMYK, 1-bit and 16-bit grey sources are converted."""
    from PIL import Image

    errors = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
              TypeError, AttributeError, ZeroDivisionError, struct.error)
    with _open_regular(path, _IMAGE_EXPECTED) as f:
        try:
            with Image.open(f) as src:  # reads the header only: nothing is decoded yet
                w, h = src.size
                limit = image_pixel_limit()
                if w < 1 or h < 1 or w * h > limit:
                    raise DatasetError(f"{path}: declares {w}x{h} pixels; expected at least 1x1 and at most "
                                       f"{limit:,} pixels (a decompression bomb? {_pixel_limit_reason(limit)})")
                wide = src.mode in ("I", "F") or src.mode.startswith("I;")
                im = _grey_wide(path, src) if wide else src.convert("L" if grayscale else "RGB")
                arr = np.asarray(_fit(path, im, size, resize), dtype=np.float32)
        except DatasetError:
            raise
        except Image.DecompressionBombError as exc:
            raise DatasetError(f"{path}: {exc}; expected at most {image_pixel_limit():,} pixels") from exc
        except errors as exc:
            raise DatasetError(f"{path}: unreadable image ({type(exc).__name__}: {exc}); expected "
                               f"{_IMAGE_EXPECTED}") from exc
    if not wide:
        arr = arr / np.float32(255.0)
    if arr.ndim == 2:
        return arr[None] if grayscale else np.repeat(arr[None], 3, axis=0)
    return arr.transpose(2, 0, 1)


def _scan_tree(d: Path, expected: list[str] | None, max_per_class: int | None,
               partner: Path | None = None) -> tuple[list[str], list[list[Path]]]:
    """The class folders of ``d`` (sorted) and each one's regular image files (sorted, at most
    ``max_per_class``). ``expected``: the training split's classes, which ``d`` must match exactly."""
    classes = [n for n in _list_dir(d) if _kind(d / n) == stat.S_IFDIR]
    if not classes:
        raise DatasetError(f"{d}: no class folders found; expected {d}/<class>/<image>.png")
    # a folder name that is not UTF-8 comes back with surrogate escapes: no text (a table, a results
    # file, a run-store key) can hold it; said here, not as an encoding error after training
    bad = [n for n in classes if not _is_text(n)]
    if bad:
        raw = os.fsencode(bad[0])
        raise DatasetError(f"{d}: the class folder name {raw!r} is not UTF-8 text; rename it (class names are "
                           "shown and stored as text)")
    if expected is not None:
        extra, absent = sorted(set(classes) - set(expected)), sorted(set(expected) - set(classes))
        if extra:
            raise DatasetError(f"{d}: class folders {', '.join(extra)} are not in {partner}; a class index means "
                               f"the same class in both splits, so every {d.name}/ class needs its training folder")
        if absent:
            raise DatasetError(f"{d}: no folders for classes {', '.join(absent)} that {partner} has; every class "
                               "needs test images")
    files: list[list[Path]] = []
    for c in classes:
        images = [d / c / n for n in _list_dir(d / c) if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
        # regular files only: a FIFO, socket or folder named like an image is not an image (never opened)
        images = [p for p in images if _kind(p) == stat.S_IFREG]
        files.append(images[:max_per_class] if max_per_class else images)
    empty = [c for c, f in zip(classes, files, strict=True) if not f]
    if empty:
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise DatasetError(f"{d}: class folders with no images ({len(empty)} of {len(classes)}): {shown}; expected "
                           f"files with extensions {', '.join(IMAGE_EXTENSIONS)} in every class folder")
    return classes, files


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_images(files: list[list[Path]], size: int, resize: int | None, grayscale: bool) -> tuple[Tensor, Tensor]:
    n = sum(len(f) for f in files)
    x = np.empty((n, 1 if grayscale else 3, size, size), dtype=np.float32)  # filled in place: no stacking copy
    y = np.empty(n, dtype=np.int64)
    i = 0
    for ci, class_files in enumerate(files):
        for p in class_files:
            x[i], y[i] = _decode_image(p, size, resize, grayscale), ci
            i += 1
    return torch.from_numpy(x), torch.from_numpy(y)


def load_image_folder(root: str | Path, *, size: int = 32, grayscale: bool = False, seed: int = 0,
                      test_fraction: float = 0.2, max_per_class: int | None = None, resize: int | None = None,
                      normalise: str = "data", normalisation: Normalisation | None = None) -> Dataset:
    """An ImageFolder tree (one folder per class). With ``train/`` and ``val/`` (or ``test/``)
    subfolders those are the split (the same classes in both); otherwise a seeded stratified split
    of everything (``test_fraction`` strictly between 0 and 1, or ``1.0``: everything is test data,
    for evaluating a trained net).

    ``resize`` then a center crop of ``size`` (torchvision's eval transform, e.g. 256 -> 224; a
    ``resize`` below ``size`` acts as ``size``: the crop never pads); ``normalise='imagenet'`` uses ImageNet's mean/std, which torchvision weights
    expect; ``normalisation`` (a trained net's stored statistics) overrides both. Hidden files and
    anything but regular files are skipped; every class folder must hold at least one image."""
    root = _root_arg("imagefolder", root)
    size = _int_arg("imagefolder: size", size, 1, MAX_SIDE)
    resize = _opt_int_arg("imagefolder: resize (the shorter side before the center crop)", resize, 1, MAX_SIDE)
    max_per_class = _opt_int_arg("imagefolder: max_per_class", max_per_class, 1)
    seed = _int_arg("imagefolder: seed", seed, 0)
    test_fraction = _fraction_arg("imagefolder: test_fraction", test_fraction, allow_one=True)
    if not isinstance(grayscale, bool | np.bool_):
        raise DatasetError(f"imagefolder: grayscale must be True or False, got {grayscale!r}")
    grayscale = bool(grayscale)
    if not isinstance(normalise, str) or normalise not in ("data", "imagenet"):
        raise DatasetError(f"imagefolder: normalise must be 'data' or 'imagenet', got {normalise!r}")
    if normalise == "imagenet" and grayscale and normalisation is None:
        raise DatasetError("imagefolder: ImageNet normalisation is per RGB channel; it needs grayscale=False")

    kind = _kind(root)
    if kind != stat.S_IFDIR:
        raise DatasetError(f"{root}: {'no such directory' if kind is None else 'not a directory'}; expected one "
                           "sub-folder of images per class")
    train_dir = root / "train"
    has_train = _kind(train_dir) == stat.S_IFDIR
    val_dir = next((root / d for d in ("val", "test") if _kind(root / d) == stat.S_IFDIR), None)
    if has_train != (val_dir is not None):
        one = "train/" if has_train else f"{val_dir.name}/" if val_dir else ""
        raise DatasetError(f"{root}: has {one} without its partner; expected train/<class>/... beside val/<class>/... "
                           "(or test/), or one folder per class (point at a split folder itself to use it alone)")
    channels = 1 if grayscale else 3
    hint = "pass max_per_class, a smaller size, or a folder with fewer images"
    if val_dir is not None:
        classes, train_files = _scan_tree(train_dir, None, max_per_class)
        _, val_files = _scan_tree(val_dir, classes, max_per_class, partner=train_dir)
        n = sum(map(len, train_files)) + sum(map(len, val_files))
        _check_memory(str(root), n, (channels, size, size), hint)
        xtr, ytr = _read_images(train_files, size, resize, grayscale)
        xte, yte = _read_images(val_files, size, resize, grayscale)
    else:
        classes, files = _scan_tree(root, None, max_per_class)
        _check_memory(str(root), sum(map(len, files)), (channels, size, size), hint)
        x, y = _read_images(files, size, resize, grayscale)
        if test_fraction == 1.0:
            xte, yte = x, y
            xtr, ytr = xte[:0], yte[:0]
        else:
            tr, te = _split(len(y), test_fraction, seed, y.numpy())
            if len(te) == 0 or len(tr) == 0:
                raise DatasetError(f"{root}: too few images ({len(y)}) to split into train and test with "
                                   f"test_fraction={test_fraction}")
            xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    if normalisation is not None:
        a, b, mean, std = _normalise(xtr, xte, normalisation)
    elif normalise == "imagenet":
        m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        sd = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        a, b, mean, std = (xtr - m) / sd, (xte - m) / sd, IMAGENET_MEAN, IMAGENET_STD
    elif len(ytr) == 0:  # evaluation only: statistics of the test images themselves
        _, b, mean, std = _normalise(xte, xte)
        a = xtr
    else:
        a, b, mean, std = _normalise(xtr, xte)
    return Dataset(root.name or "imagefolder", a, ytr, b, yte, classes, mean, std, augment="crop_flip",
                   source=str(root), split_seed=seed)


def load_dataset(kind: str, path: str | None = None, *, size: int = 16, seed: int = 0,
                 normalisation: Normalisation | None = None) -> Dataset:
    """Dispatch: ``digits`` or ``mnist1d`` (embedded; ``mnist1d`` has a fixed length of 40 and its
    own split, so ``size`` does not apply), ``cifar10`` or ``imagefolder`` (need ``path``)."""
    if not isinstance(kind, str) or kind not in ("digits", "mnist1d", "cifar10", "imagefolder"):
        raise DatasetError(f"unknown dataset {kind!r}; choose digits, mnist1d, cifar10 or imagefolder")
    if kind == "digits":
        return load_digits(size=size, seed=seed, normalisation=normalisation)
    if kind == "mnist1d":
        return load_mnist1d(seed=seed, normalisation=normalisation)
    if path is None or (isinstance(path, str) and not path.strip()):
        raise DatasetError(f"{kind}: give the dataset's local path (nothing is downloaded)")
    if kind == "cifar10":
        return load_cifar10(path, normalisation=normalisation)
    return load_image_folder(path, size=size, seed=seed, normalisation=normalisation)


def shift1d(x: Tensor, shifts: Tensor) -> Tensor:
    """Each sequence of an (N, C, L) batch moved by its own whole number of samples along the length
    (positive: to the right), zero-filled where it moved away; shift 0 returns it unchanged."""
    n, c, length = x.shape
    pad = int(shifts.abs().max()) if len(shifts) else 0
    padded = F.pad(x, (pad, pad))
    # sample j of the output is sample j - shift of the input: gathered in one indexing op
    cols = (pad - shifts[:, None] + torch.arange(length)[None, :])[:, None, :]
    return padded[torch.arange(n)[:, None, None], torch.arange(c)[None, :, None], cols]


def augment_batch(x: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Batched augmentation on tensors: random shifts by zero-padding and cropping (an eighth of the
    side: 1 px for 8-px and 2 px for 16-px digits, 4 px for 32-px images as in He et al. 2015,
    Sec. 4.2), plus horizontal flips for natural images only (a flipped digit is a different digit).
    Sequences (N, C, L) take "shift1d": a zero-filled shift of up to :data:`SHIFT1D_MAX` samples
    either way, per sequence, and no flips (as for the 2-D digits)."""
    if mode == "none":
        return x
    if (x.ndim == 3) != (mode == "shift1d"):
        raise DatasetError(f"augmentation {mode!r} does not apply to a batch of shape {tuple(x.shape)}: "
                           "'shift1d' is for sequences (N, C, L), 'shift' and 'crop_flip' for images (N, C, H, W)")
    if mode == "shift1d":
        shifts = torch.randint(-SHIFT1D_MAX, SHIFT1D_MAX + 1, (x.shape[0],), generator=generator)
        return shift1d(x, shifts)
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    # gather the crops with one indexing op instead of a Python loop over images
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator) < 0.5  # drawn on the CPU from the run's generator
        out = torch.where(flip.to(out.device)[:, None, None, None], out.flip(-1), out)  # a CUDA batch wants its mask there
    return out
