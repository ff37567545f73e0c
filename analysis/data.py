"""Datasets as in-memory tensors: the embedded digits, CIFAR-10 (python format) and ImageFolder trees.

Nothing is downloaded. The embedded default is scikit-learn's bundled 8x8 handwritten digits,
upsampled so CIFAR-style nets (three stages, total stride 4) have room. Real datasets are read from
a local path; anything missing, incomplete or corrupt raises :class:`DatasetError` naming the path
and what was expected.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DatasetError
from .meta import DatasetInfo, Normalisation

__all__ = ["Dataset", "DatasetError", "load_cifar10", "load_dataset", "load_digits", "load_image_folder"]

DIGITS_SIZES = (8, 16, 32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@dataclass
class Dataset:
    """A labelled image set split into train and test, normalised, NCHW float32."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    augment: str = "shift"  # "shift" (digits: no flips), "crop_flip" (natural images), "none"
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
        return int(self.x_train.shape[-1])

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
    (a trained net's own training-time normalisation, when evaluating it)."""
    if stats is None:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    else:
        if len(stats.mean) != x_test.shape[1]:
            raise DatasetError(f"the stored normalisation has {len(stats.mean)} channels, the images "
                               f"have {x_test.shape[1]}")
        mean = torch.tensor(stats.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(stats.std, dtype=torch.float32).view(1, -1, 1, 1)
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


def load_digits(size: int = 16, seed: int = 0, test_fraction: float = 0.25,
                normalisation: Normalisation | None = None) -> Dataset:
    """scikit-learn's bundled digits (1,797 8x8 images, 10 classes), a fixed seeded stratified split,
    bilinearly resized to ``size`` x ``size`` and normalised (with ``normalisation`` if given)."""
    if size not in DIGITS_SIZES:
        raise DatasetError(f"digits: size must be one of {DIGITS_SIZES}, got {size}")
    if not 0 < test_fraction < 1:
        raise DatasetError(f"digits: test fraction must be between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = _split(len(y), test_fraction, seed, d.target)
    xtr, xte, mean, std = _normalise(x[tr], x[te], normalisation)
    return Dataset(f"digits{size}", xtr, y[tr], xte, y[te], [str(i) for i in range(10)], mean, std,
                   augment="shift", source="sklearn.datasets.load_digits (bundled)", split_seed=seed)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and nothing else: a pickle
    that names any other global (e.g. os.system) is refused before anything runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a CIFAR batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"{path}: not a valid CIFAR-10 python batch ({exc})") from exc
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DatasetError(f"{path}: a CIFAR-10 batch must be a dict with b'data' and b'labels'")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(f"{path}: expected an N x 3072 uint8 array and N labels, got {data.shape} "
                           f"and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path, *, limit_train: int | None = None, limit_test: int | None = None,
                 normalisation: Normalisation | None = None) -> Dataset:
    """CIFAR-10 in its standard python format: ``root`` is ``cifar-10-batches-py`` or its parent."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such directory; expected the extracted cifar-10-batches-py folder")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [f for f in CIFAR_FILES if not (root / f).is_file()]
    if missing:
        raise DatasetError(f"{root}: incomplete CIFAR-10, missing {', '.join(missing)} (expected "
                           f"{', '.join(CIFAR_FILES)} and batches.meta)")
    parts = [_read_cifar_batch(root / f) for f in CIFAR_FILES[:-1]]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(root / "test_batch")
    if limit_train:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test:
        xte, yte = xte[:limit_test], yte[:limit_test]
    classes = [f"class {i}" for i in range(10)]
    meta = root / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as f:
                m = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in m[b"label_names"]]
        except Exception as exc:
            raise DatasetError(f"{meta}: unreadable batches.meta ({exc})") from exc
    a, b, mean, std = _normalise(torch.tensor(xtr, dtype=torch.float32) / 255.0,
                                 torch.tensor(xte, dtype=torch.float32) / 255.0, normalisation)
    return Dataset("cifar10", a, torch.tensor(ytr), b, torch.tensor(yte), classes, mean, std,
                   augment="crop_flip", source=str(root), split_seed=-1)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def load_image_folder(root: str | Path, *, size: int = 32, grayscale: bool = False, seed: int = 0,
                      test_fraction: float = 0.2, max_per_class: int | None = None, resize: int | None = None,
                      normalise: str = "data", normalisation: Normalisation | None = None) -> Dataset:
    """An ImageFolder tree (one folder per class). With ``train/`` and ``val/`` (or ``test/``)
    subfolders those are the split; otherwise a seeded stratified split of everything
    (``test_fraction=1.0``: everything is test data, for evaluating a trained net).

    ``resize`` then a center crop of ``size`` (torchvision's eval transform, e.g. 256 -> 224);
    ``normalise='imagenet'`` uses ImageNet's mean/std, which torchvision weights expect;
    ``normalisation`` (a trained net's stored statistics) overrides both."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory; expected one sub-folder of images per class")
    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    split_dirs = [root / "train", val_dir] if (root / "train").is_dir() and val_dir else [root]

    def read_tree(d: Path, classes: list[str] | None) -> tuple[list[str], Tensor, Tensor]:
        found = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes = classes or found
        if not classes:
            raise DatasetError(f"{d}: no class folders found; expected {d}/<class>/<image>.png")
        xs, ys = [], []
        for ci, c in enumerate(classes):
            files = sorted(p for p in (d / c).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) \
                if (d / c).is_dir() else []
            if max_per_class:
                files = files[:max_per_class]
            for p in files:
                try:
                    with Image.open(p) as src:
                        im = src.convert("L" if grayscale else "RGB")
                        if resize:  # shorter side to `resize`, then center crop
                            w, h = im.size
                            s = resize / min(w, h)
                            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
                            w, h = im.size
                            left, top = (w - size) // 2, (h - size) // 2
                            im = im.crop((left, top, left + size, top + size))
                        else:
                            im = im.resize((size, size), Image.Resampling.BILINEAR)
                        arr = np.asarray(im, dtype=np.float32) / 255.0
                except (UnidentifiedImageError, OSError) as exc:
                    raise DatasetError(f"{p}: unreadable image ({exc})") from exc
                xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
                ys.append(ci)
        if not xs:
            raise DatasetError(f"{d}: no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its class folders")
        return classes, torch.tensor(np.stack(xs)), torch.tensor(ys)

    if len(split_dirs) == 2:
        classes, xtr, ytr = read_tree(split_dirs[0], None)
        _, xte, yte = read_tree(split_dirs[1], classes)
    elif test_fraction >= 1.0:
        classes, xte, yte = read_tree(root, None)
        xtr, ytr = xte[:0], yte[:0]
    else:
        classes, x, y = read_tree(root, None)
        tr, te = _split(len(y), test_fraction, seed, y.numpy())
        if len(te) == 0 or len(tr) == 0:
            raise DatasetError(f"{root}: too few images ({len(y)}) to split into train and test")
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
    """Dispatch: ``digits`` (embedded), ``cifar10`` or ``imagefolder`` (need ``path``)."""
    if kind == "digits":
        return load_digits(size=size, seed=seed, normalisation=normalisation)
    if kind not in ("cifar10", "imagefolder"):
        raise DatasetError(f"unknown dataset {kind!r}; choose digits, cifar10 or imagefolder")
    if not path:
        raise DatasetError(f"{kind}: give the dataset's local path (nothing is downloaded)")
    if kind == "cifar10":
        return load_cifar10(path, normalisation=normalisation)
    return load_image_folder(path, size=size, seed=seed, normalisation=normalisation)


def augment_batch(x: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Batched augmentation on tensors: random shifts by zero-padding and cropping (pad 1 for 8-16
    px digits, 4 for 32 px natural images as in He et al. 2015, Sec. 4.2), plus horizontal flips
    for natural images only (a flipped digit is a different digit)."""
    if mode == "none":
        return x
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
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
