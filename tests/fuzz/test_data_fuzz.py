"""Fuzz: generated CIFAR-10 folders and ImageFolder trees, malformed and valid (issue 10, item 8).

Every malformed input must raise a ``DatasetError`` with a message; every valid one must load, and its
check verifies shapes, label ranges, class names and the pixel values themselves. Each case runs under
a deadline: a loader that blocks (a FIFO named like a batch or an image) counts as a crash.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.core.meta import Normalisation
from analysis.data.data import CIFAR_FILES, IMAGENET_MEAN, load_cifar10, load_image_folder
from tests.fuzz.harness import Case, assert_no_failures, no_hang, run_cases

DEADLINE_S = 10.0
IDENTITY = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # x stays the raw 0..1 pixels
IDENTITY_GREY = Normalisation((0.0,), (1.0,))


def guarded(name: str, fn: Callable[[], Any], expect: Literal["error", "valid"],
            check: Callable[[Any], bool] | None = None, fifos: Iterable[Path] = ()) -> Case:
    listed = list(fifos)
    return Case(name, lambda: no_hang(fn, listed), expect, check if check is not None else (lambda result: True))


# ============================================================================= CIFAR-10
N = 4  # images per batch: 20 train, 4 test
DEFAULT_NAMES = [f"name{i}".encode() for i in range(10)]
_DEFAULT = object()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/resnet_lens_fuzz_pwned",))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def good_batch(rng: np.random.Generator, n: int = N) -> dict[bytes, Any]:
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)]}


def cifar_folder(root: Path, batches: dict[str, Any] | None = None, *, meta: Any = _DEFAULT,
                 raw: dict[str, bytes] | None = None, skip: Iterable[str] = (), n: int = N,
                 seed: int = 0) -> dict[str, Any]:
    """Writes a CIFAR-10 folder; ``batches`` replaces whole batch objects, ``raw`` writes bytes as they
    are, ``skip`` leaves files out (``batches.meta`` too). Returns what was pickled."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written: dict[str, Any] = {}
    for name in CIFAR_FILES:
        if name in skip:
            continue
        if raw and name in raw:
            (root / name).write_bytes(raw[name])
            continue
        obj = batches[name] if batches and name in batches else good_batch(rng, n)
        with open(root / name, "wb") as f:
            pickle.dump(obj, f)
        written[name] = obj
    if "batches.meta" not in skip:
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": DEFAULT_NAMES} if meta is _DEFAULT else meta, f)
    return written


def _get(d: dict[Any, Any], key: str) -> Any:
    return d[key.encode()] if key.encode() in d else d[key]


def cifar_check(written: dict[str, Any], classes: list[str], limit_train: int | None = None,
                limit_test: int | None = None, normalisation: Normalisation | None = None) -> Callable[[Any], bool]:
    """The loaded set is exactly what was written: images (channel-major, /255), labels, names, stats."""
    def check(d: Any) -> bool:
        xs = np.concatenate([np.asarray(_get(written[f], "data")) for f in CIFAR_FILES[:-1]])
        ys = np.concatenate([np.asarray(_get(written[f], "labels")) for f in CIFAR_FILES[:-1]])
        xt, yt = np.asarray(_get(written["test_batch"], "data")), np.asarray(_get(written["test_batch"], "labels"))
        xs, ys, xt, yt = xs[:limit_train], ys[:limit_train], xt[:limit_test], yt[:limit_test]
        assert d.x_train.shape == (len(xs), 3, 32, 32) and d.x_test.shape == (len(xt), 3, 32, 32)
        assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
        assert d.y_train.tolist() == ys.tolist() and d.y_test.tolist() == yt.tolist()
        assert all(0 <= v < 10 for v in d.y_train.tolist() + d.y_test.tolist())
        assert d.classes == classes and d.num_classes == 10
        mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
        expect = torch.tensor(xs.reshape(-1, 3, 32, 32), dtype=torch.float32) / 255
        assert torch.allclose(d.x_train * std + mean, expect, atol=1e-4)
        expect_t = torch.tensor(xt.reshape(-1, 3, 32, 32), dtype=torch.float32) / 255
        assert torch.allclose(d.x_test * std + mean, expect_t, atol=1e-4)
        if normalisation is None:  # statistics of the training split
            assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
            assert torch.allclose(d.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
        else:
            assert np.allclose(d.mean, normalisation.mean) and np.allclose(d.std, normalisation.std)
        return True
    return check


def cifar_cases(base: Path) -> list[Case]:
    cases: list[Case] = []
    rng = np.random.default_rng(2024)
    counter = iter(range(10_000))

    def folder() -> Path:
        return base / f"c{next(counter):03d}"

    def error(name: str, batches: dict[str, Any] | None = None, fifos: Iterable[Path] = (), **kw: Any) -> None:
        root = folder()
        cifar_folder(root, batches, **kw)
        cases.append(guarded(name, lambda: load_cifar10(root), "error", fifos=fifos))

    def in_batch(obj: Any) -> dict[str, Any]:
        return {CIFAR_FILES[int(rng.integers(0, len(CIFAR_FILES)))]: obj}

    def with_labels(labels: Any, n: int = N) -> dict[str, Any]:
        return in_batch({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels})

    def with_data(data: Any, n: int = N) -> dict[str, Any]:
        return in_batch({b"data": data, b"labels": list(range(n))})

    # --- labels: ranges
    for bad in (10, -1, 255, 11, 2**40, -(2**63), 10**30):
        error(f"label {bad} in a list", with_labels([0, 1, bad, 3]))
    error("labels uint8 array with 255", with_labels(np.array([0, 1, 255, 3], np.uint8)))
    error("labels int8 array with -1", with_labels(np.array([0, -1, 2, 3], np.int8)))
    error("labels uint64 array, huge", with_labels(np.array([0, 1, 2**63 + 5, 3], np.uint64)))
    error("labels int32 array with 10", with_labels(np.array([10, 1, 2, 3], np.int32)))
    # --- labels: types and shapes
    for name, labels in [
        ("floats", [0.0, 1.0, 2.0, 3.0]), ("one float", [0, 1, 2.5, 3]), ("float array", np.arange(4.0)),
        ("float16 array", np.arange(4, dtype=np.float16)), ("bools", [True, False, True, False]),
        ("bool array", np.ones(4, bool)), ("strings", ["0", "1", "2", "3"]), ("bytes", b"\x00\x01\x02\x03"),
        ("a str", "0123"), ("None", None), ("dict", {0: 1}), ("empty dict", {}), ("an int", 3),
        ("2-D (N, 1)", np.arange(4).reshape(4, 1)), ("2-D (1, N)", np.arange(4).reshape(1, 4)),
        ("0-d array", np.array(2)), ("nested lists", [[0], [1], [2], [3]]), ("list of None", [None] * 4),
        ("complex", [1j, 0, 0, 0]), ("object array", np.array([0, 1, 2, 3], dtype=object)),
    ]:
        error(f"labels {name}", with_labels(labels))
    # --- labels: counts
    error("labels one short", with_labels([0, 1, 2]))
    error("labels one extra", with_labels([0, 1, 2, 3, 4]))
    error("labels empty", with_labels([]))
    # --- data: dtypes and shapes
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint16, np.float16, np.float32, np.float64, bool,
               np.complex64, object):
        error(f"data dtype {np.dtype(dt).name}", with_data(np.zeros((N, 3072), dtype=dt)))
    for shape in [(N, 3071), (N, 3073), (N * 3072,), (N, 3, 32, 32), (3072, N), (N, 1024), (N, 3072, 1)]:
        error(f"data shape {shape}", with_data(np.zeros(shape, np.uint8)))
    error("data empty (0, 3072)", in_batch({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    for name, data in [("None", None), ("dict", {}), ("list of lists", [[0] * 3072] * N), ("bytes", bytes(3072 * N)),
                       ("str", "pixels")]:
        error(f"data {name}", with_data(data))
    # --- whole batches
    for name, obj in [("a list", [1, 2]), ("None", None), ("an int", 7), ("an array", np.zeros((N, 3072), np.uint8)),
                      ("no data key", {b"labels": [0] * N}), ("no labels key", {b"data": np.zeros((N, 3072), np.uint8)}),
                      ("an empty dict", {}), ("an evil pickle", {b"data": _Evil(), b"labels": []}),
                      ("an eval pickle", _Eval())]:
        error(f"batch is {name}", in_batch(obj))
    for name, blob in [("garbage", b"\x80\x04garbage"), ("empty", b""), ("text", b"hello world"),
                       ("truncated", pickle.dumps(good_batch(rng))[:500]), ("a zip", b"PK\x03\x04" + bytes(40))]:
        root = folder()
        cifar_folder(root, raw={"data_batch_4": blob})
        cases.append(guarded(f"batch file {name}", lambda root=root: load_cifar10(root), "error"))
    # --- missing files, not regular files
    for skip in (["data_batch_1"], ["test_batch"], list(CIFAR_FILES)):
        error(f"missing {len(skip)} file(s) ({skip[0]})", skip=skip)
    root = folder()
    cifar_folder(root, skip=["data_batch_3"])
    (root / "data_batch_3").mkdir()
    cases.append(guarded("batch is a folder", lambda r=root: load_cifar10(r), "error"))
    root_fifo = folder()
    cifar_folder(root_fifo, skip=["test_batch"])
    os.mkfifo(root_fifo / "test_batch")
    cases.append(guarded("batch is a FIFO", lambda: load_cifar10(root_fifo), "error", fifos=[root_fifo / "test_batch"]))
    root_loop = folder()
    cifar_folder(root_loop, skip=["data_batch_2"])
    os.symlink("data_batch_2", root_loop / "data_batch_2")
    cases.append(guarded("batch is a symlink loop", lambda: load_cifar10(root_loop), "error"))
    root_fifo_meta = folder()
    cifar_folder(root_fifo_meta, skip=["batches.meta"])
    os.mkfifo(root_fifo_meta / "batches.meta")
    cases.append(guarded("batches.meta is a FIFO", lambda: load_cifar10(root_fifo_meta), "error",
                         fifos=[root_fifo_meta / "batches.meta"]))
    # --- batches.meta
    for name, meta in [
        ("a list", DEFAULT_NAMES), ("None", None), ("no label_names", {b"names": DEFAULT_NAMES}),
        ("label_names None", {b"label_names": None}), ("label_names bytes", {b"label_names": b"airplane"}),
        ("label_names a dict", {b"label_names": {i: b"x" for i in range(10)}}),
        ("0 names", {b"label_names": []}), ("9 names", {b"label_names": DEFAULT_NAMES[:9]}),
        ("11 names", {b"label_names": DEFAULT_NAMES + [b"extra"]}),
        ("100 names", {b"label_names": [f"n{i}".encode() for i in range(100)]}),
        ("int names", {b"label_names": list(range(10))}), ("empty name", {b"label_names": DEFAULT_NAMES[:9] + [b""]}),
        ("duplicate names", {b"label_names": [b"same"] * 10}), ("non-UTF-8 name", {b"label_names": [b"\xff\xfe"] * 10}),
        ("an evil meta", {b"label_names": _Evil()}),
    ]:
        error(f"meta {name}", meta=meta)
    root = folder()
    cifar_folder(root, skip=["batches.meta"])
    (root / "batches.meta").write_bytes(b"\x80\x04junk")
    cases.append(guarded("meta garbage bytes", lambda r=root: load_cifar10(r), "error"))
    # --- arguments and roots
    root_ok = folder()
    cifar_folder(root_ok)
    for kw in ({"limit_train": 0}, {"limit_train": -1}, {"limit_train": 1.5}, {"limit_train": "3"},
               {"limit_test": True}, {"limit_test": 0}):
        cases.append(guarded(f"argument {kw}", lambda kw=kw: load_cifar10(root_ok, **kw), "error"))
    (base / "afile").write_bytes(b"x")
    for name, root_arg in [("missing root", base / "nowhere"), ("root is a file", base / "afile"),
                           ("empty root string", ""), ("root None", None)]:
        cases.append(guarded(name, lambda r=root_arg: load_cifar10(r), "error"))

    # --- valid folders: their checks compare every pixel, label and name with what was written
    def valid(name: str, batches: dict[str, Any] | None = None, *, meta: Any = _DEFAULT, parent: bool = False,
              classes: list[str] | None = None, skip: Iterable[str] = (), **load_kw: Any) -> None:
        root = folder()
        target = root / "cifar-10-batches-py" if parent else root
        written = cifar_folder(target, batches, meta=meta, skip=skip, seed=len(cases))
        names = classes if classes is not None else [c.decode() for c in DEFAULT_NAMES]
        check = cifar_check(written, names, load_kw.get("limit_train"), load_kw.get("limit_test"),
                             load_kw.get("normalisation"))
        cases.append(guarded(f"valid {name}", lambda: load_cifar10(root, **load_kw), "valid", check))

    valid("plain")
    valid("parent folder", parent=True)
    valid("no batches.meta", skip=["batches.meta"], classes=[f"class {i}" for i in range(10)])
    valid("str keys and names", {"test_batch": {"data": np.full((3, 3072), 7, np.uint8), "labels": [9, 0, 5]}},
          meta={"label_names": [f"n{i}" for i in range(10)]}, classes=[f"n{i}" for i in range(10)])
    valid("labels uint8 array", {"data_batch_1": {b"data": np.arange(4 * 3072).reshape(4, 3072).astype(np.uint8),
                                                  b"labels": np.array([9, 0, 1, 9], np.uint8)}})
    valid("labels int64 scalars", {"data_batch_5": {b"data": np.ones((2, 3072), np.uint8),
                                                    b"labels": [np.int64(3), np.int64(0)]}})
    valid("labels tuple", {"data_batch_2": {b"data": np.zeros((1, 3072), np.uint8), b"labels": (9,)}})
    valid("one image per batch", {f: good_batch(rng, 1) for f in CIFAR_FILES})
    valid("limits", limit_train=5, limit_test=2)
    valid("limit beyond size", limit_train=1000, limit_test=1000)
    valid("stored normalisation", normalisation=Normalisation((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))
    valid("Fortran-order data", {"test_batch": {b"data": np.asfortranarray(rng.integers(0, 256, (3, 3072), np.uint8)),
                                                 b"labels": [1, 2, 3]}})
    valid("every label", {"data_batch_4": {b"data": rng.integers(0, 256, (10, 3072), np.uint8),
                                           b"labels": list(range(10))}})
    valid("extreme pixels", {"data_batch_3": {b"data": np.tile(np.array([0, 255], np.uint8), (2, 1536)),
                                              b"labels": [0, 9]}})
    return cases


def test_cifar_fuzz(tmp_path_factory: pytest.TempPathFactory) -> None:
    marker = Path("/tmp/resnet_lens_fuzz_pwned")
    if marker.exists():
        marker.unlink()
    cases = cifar_cases(tmp_path_factory.mktemp("cifar"))
    assert len(cases) >= 80
    report = run_cases("cifar", cases)
    assert not marker.exists(), "a pickled os.system ran"
    assert report.count("valid") >= 12
    assert_no_failures(report)


# ============================================================================= ImageFolder
def png_declaring(path: Path, width: int, height: int) -> None:
    """A valid 10x10 PNG whose IHDR then declares width x height (CRC recomputed: only the size lies)."""
    Image.new("L", (10, 10)).save(path)
    b = bytearray(path.read_bytes())
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    path.write_bytes(bytes(b))


def rgb(colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, colour)


def filler(d: Path, n: int = 2, colour: tuple[int, int, int] = (10, 200, 30)) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb(colour, (8 + i, 8)).save(d / f"fill{i}.png")


def write_tree(root: Path, files: dict[str, Callable[[Path], None]], fill: Iterable[str] = ("a", "b")) -> None:
    """``files`` maps a relative path to a writer; the classes in ``fill`` get two plain RGB images."""
    root.mkdir(parents=True)
    for c in fill:
        filler(root / c)
    for rel, write in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write(root / rel)


def saver(im: Image.Image | Callable[[], Image.Image], **kw: Any) -> Callable[[Path], None]:
    return lambda p: (im() if callable(im) else im).save(p, **kw)


def pixels_check(expected: dict[str, list[float]], atol: float = 1e-3, grey: bool = False,
                 classes: list[str] | None = None) -> Callable[[Any], bool]:
    """Loaded with identity normalisation (``test_fraction=1.0``): each named image's channel means are
    the raw 0..1 values (constant images stay constant through the bilinear resize). Names expected
    to be ``[]`` are files that must not be loaded at all (hidden, text, FIFO, folder)."""
    def check(d: Any) -> bool:
        order = sorted(n for n, v in expected.items() if v)  # one class folder, read in sorted file order
        if classes is not None:
            assert d.classes == classes
        assert d.x_test.shape == (len(order), 1 if grey else 3, 4, 4) and d.x_test.dtype == torch.float32
        assert float(d.x_test.min()) >= -1e-6 and float(d.x_test.max()) <= 1 + 1e-6
        assert int(d.y_test.max()) < d.num_classes and int(d.y_test.min()) >= 0
        for i, name in enumerate(order):
            got = d.x_test[i].mean(dim=(1, 2))
            want = torch.tensor(expected[name], dtype=torch.float32)
            assert torch.allclose(got, want, atol=atol), (name, got.tolist(), want.tolist())
        return True
    return check


def folder_cases(base: Path) -> list[Case]:
    cases: list[Case] = []
    counter = iter(range(10_000))

    def tree(files: dict[str, Callable[[Path], None]], fill: Iterable[str] = ("a", "b")) -> Path:
        root = base / f"t{next(counter):03d}"
        write_tree(root, files, fill)
        return root

    def error(name: str, files: dict[str, Callable[[Path], None]], fill: Iterable[str] = ("a", "b"),
              fifos: Iterable[str] = (), **kw: Any) -> None:
        root = tree(files, fill)
        cases.append(guarded(name, lambda: load_image_folder(root, size=8, **kw), "error",
                             fifos=[root / f for f in fifos]))

    def fifo(p: Path) -> None:
        os.mkfifo(p)

    def symlink(target: str) -> Callable[[Path], None]:
        return lambda p: os.symlink(target, p)

    # --- valid modes: one class "x" of single-colour images, read with identity normalisation
    def valid_pixels(name: str, images: dict[str, tuple[Callable[[Path], None], list[float]]], *, grey: bool = False,
                     atol: float = 1e-3, **kw: Any) -> None:
        root = tree({f"x/{n}": w for n, (w, _) in images.items()}, fill=())
        expected = {n: v for n, (_, v) in images.items()}
        norm = IDENTITY_GREY if grey else IDENTITY
        cases.append(guarded(f"valid {name}", lambda: load_image_folder(
            root, size=4, test_fraction=1.0, grayscale=grey, normalisation=norm, **kw), "valid",
            pixels_check(expected, atol, grey, classes=["x"])))

    def i16(v: int) -> Image.Image:
        return Image.fromarray(np.full((6, 6), v, np.uint16))

    def palette(transparent: bool) -> Image.Image:
        p = Image.new("P", (6, 6), 1)
        p.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
        if transparent:
            p.info["transparency"] = 0
        return p

    v = 1 / 255
    valid_pixels("RGB PNG", {"a.png": (saver(rgb((255, 128, 0))), [1.0, 128 * v, 0.0])})
    valid_pixels("RGB JPEG", {"a.jpg": (saver(rgb((200, 100, 50)), quality=100), [200 * v, 100 * v, 50 * v])},
                 atol=0.02)
    valid_pixels("L PNG", {"a.png": (saver(Image.new("L", (6, 6), 77)), [77 * v] * 3)})
    valid_pixels("LA PNG (alpha dropped)", {"a.png": (saver(Image.new("LA", (6, 6), (90, 10))), [90 * v] * 3)})
    valid_pixels("RGBA PNG (alpha dropped)", {"a.png": (saver(Image.new("RGBA", (6, 6), (1, 2, 3, 0))),
                                                        [1 * v, 2 * v, 3 * v])})
    valid_pixels("P PNG", {"a.png": (saver(lambda: palette(False)), [40 * v, 80 * v, 120 * v])})
    valid_pixels("P PNG with transparency", {"a.png": (saver(lambda: palette(True)), [40 * v, 80 * v, 120 * v])})
    valid_pixels("1-bit PNG", {"a.png": (saver(Image.new("1", (6, 6), 1)), [1.0] * 3)})
    valid_pixels("I;16 PNG 32768 -> 0.5", {"a.png": (saver(lambda: i16(32768)), [32768 / 65535] * 3)}, atol=1e-5)
    valid_pixels("I;16 PNG range", {"a.png": (saver(lambda: i16(0)), [0.0] * 3),
                                    "b.png": (saver(lambda: i16(65535)), [1.0] * 3),
                                    "c.png": (saver(lambda: i16(255)), [255 / 65535] * 3)}, atol=1e-5)
    valid_pixels("I;16 PNG grey", {"a.png": (saver(lambda: i16(32768)), [32768 / 65535])}, grey=True, atol=1e-5)
    valid_pixels("I;16 TIFF", {"a.tif": (saver(lambda: i16(30000)), [30000 / 65535] * 3)}, atol=1e-5)
    valid_pixels("I (32-bit) TIFF", {"a.tif": (saver(Image.fromarray(np.full((6, 6), 1000, np.int32))),
                                               [1000 / 65535] * 3)}, atol=1e-5)
    valid_pixels("F TIFF", {"a.tif": (saver(Image.fromarray(np.full((6, 6), 0.25, np.float32))), [0.25] * 3)},
                 atol=1e-5)
    valid_pixels("CMYK JPEG", {"a.jpg": (saver(Image.new("CMYK", (6, 6), (0, 255, 255, 0)), quality=100),
                                         [1.0, 0.0, 0.0])}, atol=0.02)
    valid_pixels("CMYK TIFF", {"a.tif": (saver(Image.new("CMYK", (6, 6), (0, 0, 0, 0))), [1.0] * 3)})
    valid_pixels("BMP, GIF, WebP", {"a.bmp": (saver(rgb((5, 6, 7))), [5 * v, 6 * v, 7 * v]),
                                    "b.gif": (saver(Image.new("L", (6, 6), 128)), [128 * v] * 3),
                                    "c.webp": (saver(rgb((0, 0, 255)), lossless=True), [0.0, 0.0, 1.0])})
    valid_pixels("RGB as grey", {"a.png": (saver(rgb((255, 0, 0))), [round(255 * 0.299) * v])}, grey=True,
                 atol=2 * v)
    valid_pixels("upper-case extension", {"A.PNG": (saver(rgb((9, 9, 9))), [9 * v] * 3)})
    valid_pixels("resize then crop", {"a.png": (saver(rgb((60, 70, 80), (40, 20))), [60 * v, 70 * v, 80 * v])},
                 resize=6)
    valid_pixels("resize below size", {"a.png": (saver(rgb((6, 7, 8), (30, 20))), [6 * v, 7 * v, 8 * v])}, resize=2)
    valid_pixels("skips hidden, text and FIFO", {
        "a.png": (saver(rgb((1, 1, 1))), [v] * 3),
        "._a.png": (lambda p: p.write_bytes(b"AppleDouble junk"), []),
        "notes.txt": (lambda p: p.write_text("not an image"), []),
        "pipe.png": (fifo, []),
        "dir.png": (lambda p: p.mkdir(), []),
    })
    valid_pixels("symlinked image", {"a.png": (saver(rgb((3, 4, 5))), [3 * v, 4 * v, 5 * v]),
                                     "b.png": (symlink("a.png"), [3 * v, 4 * v, 5 * v])})

    # --- valid layouts
    def valid_layout(name: str, files: dict[str, Callable[[Path], None]], fill: Iterable[str],
                     expect: Callable[[Any], bool], **kw: Any) -> None:
        root = tree(files, fill)
        cases.append(guarded(f"valid {name}", lambda: load_image_folder(root, size=8, **kw), "valid", expect))

    valid_layout("train/val split", {}, ["train/a", "train/b", "val/a", "val/b"],
                 lambda d: (len(d.y_train), len(d.y_test), d.classes) == (4, 4, ["a", "b"]))
    valid_layout("train/test split", {}, ["train/a", "train/b", "test/a", "test/b"],
                 lambda d: d.x_train.shape == (4, 3, 8, 8) and d.y_test.tolist() == [0, 0, 1, 1])
    valid_layout("stratified split", {f"c/{i}.png": saver(rgb((i, i, i))) for i in range(10)}, ["a", "b"],
                 lambda d: (len(d.y_train), len(d.y_test)) == (12, 2) and d.classes == ["a", "b", "c"],
                 test_fraction=0.2)
    valid_layout("evaluation only", {}, ["a", "b", "c"],
                 lambda d: (len(d.y_train), len(d.y_test), d.num_classes) == (0, 6, 3), test_fraction=1.0)
    valid_layout("max_per_class", {f"a/z{i}.png": saver(rgb((i, 0, 0))) for i in range(5)}, ["a", "b"],
                 lambda d: torch.bincount(d.y_test).tolist() == [1, 1], max_per_class=1, test_fraction=1.0)
    valid_layout("imagenet normalisation", {}, ["a", "b"],
                 lambda d: d.mean == IMAGENET_MEAN and d.x_test.shape == (4, 3, 8, 8), test_fraction=1.0,
                 normalise="imagenet")
    valid_layout("data normalisation", {"a/c.png": saver(rgb((200, 0, 90))), "b/c.png": saver(rgb((0, 30, 200)))},
                 ["a", "b"], lambda d: torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
                 and torch.allclose(d.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3), test_fraction=0.34)

    # --- corrupt and hostile files
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    noise.save(base / "noise.png")
    noise.save(base / "noise.jpg", quality=90)
    png, jpg = (base / "noise.png").read_bytes(), (base / "noise.jpg").read_bytes()
    bad_crc = bytearray(png)
    bad_crc[40] ^= 0xFF
    for name, blob in [("garbage .png", b"\x00garbage" * 10), ("empty .png", b""), ("text .png", b"hello"),
                       ("PNG truncated", png[: len(png) // 2]), ("PNG header only", png[:33]),
                       ("JPEG truncated", jpg[: len(jpg) // 2]), ("PNG with a corrupt chunk", bytes(bad_crc)),
                       ("random bytes", rng.integers(0, 256, 300, dtype=np.uint8).tobytes())]:
        ext = ".jpg" if "JPEG" in name else ".png"
        error(f"file {name}", {f"a/bad{ext}": lambda p, blob=blob: p.write_bytes(blob)})
    error("JPEG bytes named .gif", {"b/x.gif": lambda p: p.write_bytes(jpg[:100])})
    error("bomb 20000x20000", {"a/bomb.png": lambda p: png_declaring(p, 20_000, 20_000)})
    error("bomb 10000x10000", {"a/bomb.png": lambda p: png_declaring(p, 10_000, 10_000)})
    error("bomb 2^31 wide", {"a/bomb.png": lambda p: png_declaring(p, 2**31 - 1, 1)})
    error("zero-width PNG", {"a/zero.png": lambda p: png_declaring(p, 0, 10)})
    error("extreme aspect ratio with resize", {"a/thin.png": saver(rgb((1, 2, 3), (1, 50_000)))}, resize=2000)
    error("F TIFF outside 0..1", {"a/f.tif": saver(Image.fromarray(np.full((6, 6), 3.0, np.float32)))})
    error("F TIFF NaN", {"a/f.tif": saver(Image.fromarray(np.full((6, 6), np.nan, np.float32)))})
    error("I TIFF negative", {"a/i.tif": saver(Image.fromarray(np.full((6, 6), -5, np.int32)))})
    error("I TIFF over 16 bits", {"a/i.tif": saver(Image.fromarray(np.full((6, 6), 70000, np.int32)))})
    error("symlink loop image", {"a/loop.png": symlink("loop.png")})
    error("broken symlink image", {"a/gone.png": symlink("/nonexistent/x.png")})
    error("symlink loop class folder", {"loop": symlink("loop")})
    root_perm = tree({})
    denied = str(root_perm / "a" / "fill1.png")
    real_open = os.open

    def deny(path: Any, *args: Any, **kw: Any) -> int:
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_open(path, *args, **kw)

    def load_denied() -> Any:
        with mock.patch.object(os, "open", deny):  # the suite runs as root, where chmod 000 changes nothing
            return load_image_folder(root_perm, size=8)
    cases.append(guarded("unreadable file (permissions)", load_denied, "error"))
    # --- classes and layouts
    error("empty class folder", {"c/.keep": lambda p: p.write_text("")})
    error("class of text files", {"c/a.txt": lambda p: p.write_text("x"), "c/b.csv": lambda p: p.write_text("1")})
    error("class of FIFOs only", {"c/pipe.png": fifo}, fifos=["c/pipe.png"])
    error("class of folders named .png", {"c/x.png/y.png": saver(rgb((0, 0, 0)))})
    error("no class folders", {"loose.png": saver(rgb((0, 0, 0)))}, fill=())
    error("val class missing from train", {}, fill=["train/a", "train/b", "val/a", "val/b", "val/c"])
    error("train class missing from val", {}, fill=["train/a", "train/b", "train/c", "val/a", "val/b"])
    error("train without val", {}, fill=["train/a", "train/b"])
    error("val without train", {}, fill=["val/a", "val/b"])
    error("empty class in val", {"val/b/readme.txt": lambda p: p.write_text("")}, fill=["train/a", "train/b", "val/a"])
    error("too few images to split", {}, fill=["a"], test_fraction=0.2)
    (base / "plain-file").write_bytes(b"x")
    for name, r in [("missing root", base / "missing"), ("root is a file", base / "plain-file"), ("root ''", ""),
                    ("root None", None), ("root bytes", b"/tmp"), ("root with NUL", "a\x00b")]:
        cases.append(guarded(name, lambda r=r: load_image_folder(r), "error"))
    # --- arguments
    root_args = tree({})
    for kw in [{"test_fraction": 0}, {"test_fraction": -0.1}, {"test_fraction": 1.5}, {"test_fraction": float("nan")},
               {"test_fraction": float("inf")}, {"test_fraction": "0.2"}, {"test_fraction": None},
               {"test_fraction": True}, {"size": 0}, {"size": -1}, {"size": 10_000}, {"size": 8.0}, {"size": "8"},
               {"size": None}, {"size": True}, {"resize": 0}, {"resize": 9.5}, {"resize": 10**6}, {"resize": "256"},
               {"max_per_class": 0}, {"max_per_class": -1}, {"max_per_class": 1.5}, {"seed": -1}, {"seed": 0.5},
               {"seed": "0"}, {"grayscale": "no"}, {"grayscale": None}, {"normalise": "x"}, {"normalise": None},
               {"normalise": "imagenet", "grayscale": True}]:
        cases.append(guarded(f"argument {kw}", lambda kw=kw: load_image_folder(root_args, **{"size": 8, **kw}),
                             "error"))
    root_many = tree({}, fill="abcdef")  # 12 images at 4096 px: 2.25 GiB of float32, over a 2 GiB budget

    def over_budget() -> Any:
        with mock.patch.dict(os.environ, {"RESNET_LENS_MEMORY_BUDGET": "2G"}):  # whatever this machine has
            return load_image_folder(root_many, size=4096)
    cases.append(guarded("over the memory budget", over_budget, "error"))
    return cases


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_imagefolder_fuzz(tmp_path_factory: pytest.TempPathFactory) -> None:
    cases = folder_cases(tmp_path_factory.mktemp("imagefolder"))
    assert len(cases) >= 80
    report = run_cases("imagefolder", cases)
    assert report.count("valid") >= 25
    assert_no_failures(report)
