"""MNIST-1D (Greydanus 2020), generated locally in a child process and cached as an .npz file.

The ``mnist1d`` package's own generator (``mnist1d.data.make_dataset`` with its default arguments:
5,000 sequences of length 40, 10 classes, seed 42, the first 80 % for training) makes the data;
its ``get_dataset`` is never called, because it downloads a file. ``make_dataset`` seeds Python's
``random`` and NumPy's global RNG, which a Streamlit page thread must never touch, so it runs in a
child process (``python -m analysis.data.mnist1d OUT.npz``) that writes the arrays atomically (temp file
plus ``os.replace``): a reader in any thread or process sees the whole file or none. The file is
kept under the app's home (``$RESNET_LENS_HOME`` or ``~/.resnet-lens``) in ``datasets/``, so only
the first load in a home pays for generation (a few seconds).

This module imports neither torch nor the ``mnist1d`` package at import time: the child starts
quickly and the parent needs only NumPy. :func:`analysis.data.data.load_mnist1d` turns the arrays into
a :class:`~analysis.data.data.Dataset`.
"""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from analysis.core.errors import ConfigError, DatasetError
from analysis.core.io import atomic_write

__all__ = ["CACHE_NAME", "PACKAGE_VERSION", "SOURCE", "cache_path", "load_arrays"]

PACKAGE_VERSION = "0.0.2.post1"
SEED = 42
CACHE_NAME = f"mnist1d_v{PACKAGE_VERSION}_seed{SEED}.npz"
SOURCE = f"mnist1d {PACKAGE_VERSION} make_dataset (generated locally, seed {SEED})"
INSTALL_HINT = f"pip install mnist1d=={PACKAGE_VERSION}"
LENGTH = 40
CLASSES = 10
#: (rows, ...) of each array the package's defaults make: 4,000 train and 1,000 test sequences.
SHAPES = {"x": (4000, LENGTH), "y": (4000,), "x_test": (1000, LENGTH), "y_test": (1000,)}
#: Generation takes about 3.5 s on one core (1.2 s of it importing matplotlib and scipy); the limit
#: only keeps a wedged child from hanging a page for ever.
GENERATE_TIMEOUT_S = 300.0
# Child exit codes the parent turns into sentences.
EXIT_NO_PACKAGE = 3
EXIT_WRONG_VERSION = 4

# One generation at a time in this process; other processes are kept safe by the atomic replace.
_LOCK = threading.Lock()


def _home() -> Path:
    # The same rule as analysis.store.runstore.default_home; not imported from there because runstore
    # imports analysis.store.checkpoints, which imports analysis.data.data, which imports this module.
    return Path(os.environ.get("RESNET_LENS_HOME") or Path.home() / ".resnet-lens").expanduser()


def cache_path() -> Path:
    """Where the generated arrays are kept: ``<home>/datasets/mnist1d_v0.0.2.post1_seed42.npz``, or
    in ``$RESNET_LENS_DATASETS`` if set (one cache shared by many homes: the test suite's)."""
    shared = os.environ.get("RESNET_LENS_DATASETS")
    return (Path(shared).expanduser() if shared else _home() / "datasets") / CACHE_NAME


def _command(out: Path) -> list[str]:
    """The child that generates the file (a function, so tests can substitute a failing one)."""
    return [sys.executable, "-m", "analysis.data.mnist1d", str(out)]


def _check(arrays: dict[str, np.ndarray], where: str) -> None:
    """Shapes, dtypes and label range as the package's defaults make them; a DatasetError otherwise."""
    for key, shape in SHAPES.items():
        a = arrays.get(key)
        if a is None:
            raise DatasetError(f"{where}: no array {key!r}; expected {', '.join(SHAPES)}")
        if a.shape != shape:
            raise DatasetError(f"{where}: {key} has shape {a.shape}, expected {shape}")
        kind = "f" if key.startswith("x") else "iu"
        if a.dtype.kind not in kind:
            raise DatasetError(f"{where}: {key} is {a.dtype}, expected {'floats' if kind == 'f' else 'integers'}")
        if kind == "f" and not np.isfinite(a).all():
            raise DatasetError(f"{where}: {key} holds NaN or infinite values")
        if kind != "f" and (a.min() < 0 or a.max() >= CLASSES):
            raise DatasetError(f"{where}: {key} has labels outside 0..{CLASSES - 1}")


def _check_headers(path: Path) -> None:
    """Every array's declared shape and dtype, read from its ``.npy`` header (a few dozen bytes)
    inside the ``.npz``: a damaged cache that declares a 300 GiB array is refused here, never
    allocated (``np.load`` would allocate what the header says, then fail or run out of memory)."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for key, shape in SHAPES.items():
            member = f"{key}.npy"
            if member not in names:
                continue  # _check names what is missing
            with z.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    got, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    got, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise DatasetError(f"{path}: {member} has .npy format version {version}; expected 1.0 or 2.0")
            if tuple(got) != shape:
                raise DatasetError(f"{path}: {key} has shape {tuple(got)}, expected {shape} (its header declares "
                                   f"{math.prod(got) * dtype.itemsize:,} bytes of {dtype}; nothing was read)")
            if dtype.hasobject or dtype.itemsize > 8:
                raise DatasetError(f"{path}: {key} is {dtype}, expected numbers of at most 8 bytes each")


def _read(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a cache file, checked; a DatasetError naming the file if it is unusable."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never wait on a FIFO named like the cache
            raise DatasetError(f"{path}: not a regular file; expected the MNIST-1D cache (.npz)")
        _check_headers(path)  # shapes and types from the .npy headers, before any array is read
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in SHAPES if key in npz.files}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable MNIST-1D cache ({type(exc).__name__}: {exc})") from exc
    _check(arrays, str(path))
    return arrays


def _generate(path: Path) -> None:
    """Runs the child that writes ``path``; a DatasetError with the reason if it fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"MNIST-1D: cannot create the cache folder {path.parent} ({exc.strerror or exc})") from exc
    try:
        proc = subprocess.run(_command(path), capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S,
                              check=False, cwd=Path(__file__).resolve().parents[2],
                              env={**os.environ, "MPLBACKEND": "Agg"})  # mnist1d imports pyplot
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"MNIST-1D: generating {path} took over {GENERATE_TIMEOUT_S:.0f} s and was "
                           "stopped") from exc
    except OSError as exc:
        raise DatasetError(f"MNIST-1D: could not start the generator ({exc.strerror or exc})") from exc
    if proc.returncode == EXIT_NO_PACKAGE:
        raise DatasetError(f"MNIST-1D needs the mnist1d package: {INSTALL_HINT}")
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise DatasetError(f"MNIST-1D: generating {path} failed (exit status {proc.returncode})"
                           + (f": {tail}" if tail else ""))


def load_arrays() -> dict[str, np.ndarray]:
    """``x``, ``y``, ``x_test``, ``y_test`` as the package makes them (float64 (N, 40), int64
    labels), from the cache, generating it first if it is absent. A cache file that cannot be read
    is regenerated once; if that fails too the DatasetError names the file."""
    path = cache_path()
    with _LOCK:
        if path.exists() or path.is_symlink():
            try:
                return _read(path)
            except DatasetError as exc:
                try:
                    _generate(path)
                except DatasetError as again:
                    raise DatasetError(f"{exc}; regenerating it failed too ({again}). Delete {path} or "
                                       "fix the reason above") from again
                return _read(path)
        _generate(path)
        return _read(path)


# ----------------------------------------------------------------------------- the child process
def _make() -> dict[str, np.ndarray]:
    """The package's dataset with its default arguments. Seeds this process's global RNGs: call it
    only in the child."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import mnist1d.data  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"MNIST-1D needs the mnist1d package: {INSTALL_HINT} ({exc})", file=sys.stderr)
        raise SystemExit(EXIT_NO_PACKAGE) from exc
    try:
        found = version("mnist1d")
    except PackageNotFoundError:
        found = "an unknown version"
    if found != PACKAGE_VERSION:
        # the cache file is named by version: another generator's data must not be stored under it
        print(f"MNIST-1D: mnist1d {found} is installed, expected {PACKAGE_VERSION}: {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(EXIT_WRONG_VERSION)
    args = mnist1d.data.get_dataset_args()
    data = mnist1d.data.make_dataset(args)
    arrays = {key: np.asarray(data[key]) for key in SHAPES}
    _check(arrays, f"mnist1d {found} make_dataset")
    return arrays


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m analysis.data.mnist1d OUT.npz", file=sys.stderr)
        return 2
    arrays = _make()

    def write(f: BinaryIO) -> None:
        np.savez(f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"],
                 allow_pickle=False)

    try:
        atomic_write(Path(argv[0]), write)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
