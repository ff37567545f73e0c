"""MNIST-1D: generated in a child process, cached under the app's home, loaded as (N, 1, 40) tensors.

Generating takes a few seconds, so the module generates once (through the real child) and every
test that only needs the arrays gets a copy of that file in its own home.
"""

import random
import shutil
import sys
import threading

import numpy as np
import pytest
import torch

from analysis.core.meta import Normalisation
from analysis.data import mnist1d
from analysis.data.data import (
    MNIST1D_BASELINES,
    DatasetError,
    augment_batch,
    load_dataset,
    load_mnist1d,
    shift1d,
)

TRAIN_COUNTS = [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]
TEST_COUNTS = [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]


def _rng_states():
    return random.getstate(), np.random.get_state()


def _same_rng_states(a, b):
    (py_a, np_a), (py_b, np_b) = a, b
    return py_a == py_b and all(
        np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v for u, v in zip(np_a, np_b, strict=True))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One real generation (child process) in a fresh home, with the global RNG states around it."""
    home = tmp_path_factory.mktemp("mnist1d-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_LENS_HOME", str(home))
        mp.delenv("RESNET_LENS_DATASETS", raising=False)  # these tests are about the home's own cache
        before = _rng_states()
        arrays = mnist1d.load_arrays()
        after = _rng_states()
        path = mnist1d.cache_path()
    return {"path": path, "arrays": arrays, "before": before, "after": after}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home of this test's own: the cache file is absent until a test puts it there."""
    monkeypatch.setenv("RESNET_LENS_HOME", str(tmp_path))
    monkeypatch.delenv("RESNET_LENS_DATASETS", raising=False)
    return tmp_path


@pytest.fixture
def cached(home, generated):
    """A home holding a copy of the module's generated file."""
    path = mnist1d.cache_path()
    path.parent.mkdir(parents=True)
    shutil.copy(generated["path"], path)
    return path


def _copying_child(monkeypatch, generated, calls=None):
    """Replaces the generator with a child that copies the module's file into place (fast)."""
    src = str(generated["path"])

    def command(out):
        if calls is not None:
            calls.append(out)
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", src, str(out)]

    monkeypatch.setattr(mnist1d, "_command", command)


def _failing_child(monkeypatch, code=5):
    monkeypatch.setattr(mnist1d, "_command", lambda out: [sys.executable, "-c", f"import sys; sys.exit({code})"])


def test_generated_file_and_counts(generated):
    a = generated["arrays"]
    assert generated["path"].name == "mnist1d_v0.0.2.post1_seed42.npz"
    assert generated["path"].parent.name == "datasets"
    assert {k: v.shape for k, v in a.items()} == {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40),
                                                   "y_test": (1000,)}
    assert np.bincount(a["y"]).tolist() == TRAIN_COUNTS  # not 400 each: make_dataset shuffles before splitting
    assert np.bincount(a["y_test"]).tolist() == TEST_COUNTS
    # the package centres the whole set (train and test together) to mean 0, std 1
    both = np.concatenate([a["x"], a["x_test"]])
    assert abs(both.mean()) < 1e-12 and abs(both.std() - 1) < 1e-12


def test_generation_leaves_the_global_rngs_alone(generated):
    # make_dataset seeds random and np.random with 42; in the child, so not here
    assert _same_rng_states(generated["before"], generated["after"])


def test_load_shapes_classes_and_split(cached, generated):
    d = load_mnist1d()
    assert d.name == "mnist1d" and d.classes == [str(i) for i in range(10)]
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.long and d.y_test.dtype == torch.long
    assert (d.size, d.dims, d.channels, d.num_classes) == (40, 1, 1, 10)
    assert d.augment == "shift1d"
    assert d.source == "mnist1d 0.0.2.post1 make_dataset (generated locally, seed 42)"
    assert torch.bincount(d.y_train).tolist() == TRAIN_COUNTS
    assert torch.bincount(d.y_test).tolist() == TEST_COUNTS
    assert torch.equal(d.y_test, torch.from_numpy(generated["arrays"]["y_test"]))
    info = d.info()
    assert (info.train, info.test, info.classes, info.channels, info.size) == (4000, 1000, 10, 1, 40)
    # the split is the package's fixed one: the seed is recorded, nothing else changes
    other = load_mnist1d(seed=3)
    assert other.split_seed == 3 and d.split_seed == 0
    assert torch.equal(other.x_train, d.x_train) and torch.equal(other.y_test, d.y_test)
    with pytest.raises(DatasetError, match="mnist1d: seed must be an integer"):
        load_mnist1d(seed=1.5)
    assert MNIST1D_BASELINES == {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91, "human": 0.96}


def test_normalisation_comes_from_the_training_split(cached, generated):
    raw = generated["arrays"]
    d = load_mnist1d()
    x = torch.from_numpy(raw["x"].astype(np.float32))
    assert d.mean == pytest.approx([float(x.mean())], abs=1e-7)
    assert d.std == pytest.approx([float(x.std())], abs=1e-7)
    assert abs(float(d.x_train.mean())) < 1e-6 and abs(float(d.x_train.std()) - 1) < 1e-6
    assert abs(float(d.x_test.mean())) > 1e-3  # test statistics were not used
    # a trained net's stored statistics are used as given
    given = load_mnist1d(normalisation=Normalisation((0.5,), (2.0,)))
    assert given.mean == [0.5] and given.std == [2.0]
    assert torch.allclose(given.x_test[:, 0], (torch.from_numpy(raw["x_test"].astype(np.float32)) - 0.5) / 2)
    with pytest.raises(DatasetError, match="normalisation has 3 channels"):
        load_mnist1d(normalisation=Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))


def test_the_cache_is_reused(home, generated, monkeypatch):
    calls = []
    _copying_child(monkeypatch, generated, calls)
    first = load_mnist1d()
    assert len(calls) == 1 and mnist1d.cache_path().is_file()

    def no_child(*args, **kwargs):
        raise AssertionError("a child was started although the cache file exists")

    monkeypatch.setattr(mnist1d.subprocess, "run", no_child)
    second = load_mnist1d()
    assert len(calls) == 1
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)


def test_concurrent_first_loads_generate_once(home, generated, monkeypatch):
    calls = []
    _copying_child(monkeypatch, generated, calls)
    results, errors = [], []

    def load():
        try:
            results.append(mnist1d.load_arrays())
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4 and len(calls) == 1
    assert all(np.array_equal(r["x"], generated["arrays"]["x"]) for r in results)


def test_a_corrupt_cache_is_regenerated_once(cached, generated, monkeypatch):
    cached.write_bytes(b"PK\x03\x04 not really a zip")
    calls = []
    _copying_child(monkeypatch, generated, calls)
    d = load_mnist1d()
    assert len(calls) == 1 and d.x_train.shape == (4000, 1, 40)
    assert cached.read_bytes() == generated["path"].read_bytes()


def test_a_broken_cache_that_cannot_be_regenerated(cached, monkeypatch):
    cached.write_bytes(b"garbage")
    _failing_child(monkeypatch, 5)
    with pytest.raises(DatasetError, match=r"mnist1d_v0\.0\.2\.post1_seed42\.npz: not a readable MNIST-1D cache"
                                           r".*exit status 5"):
        load_mnist1d()


def test_a_cache_with_wrong_shapes_is_refused(cached, monkeypatch):
    np.savez(cached, x=np.zeros((10, 40)), y=np.zeros(10, dtype=np.int64), x_test=np.zeros((5, 40)),
             y_test=np.zeros(5, dtype=np.int64))
    _failing_child(monkeypatch)
    with pytest.raises(DatasetError, match=r"x has shape \(10, 40\), expected \(4000, 40\)"):
        load_mnist1d()
    # a child that "succeeds" but leaves the same bad file: the error names the file
    monkeypatch.setattr(mnist1d, "_command", lambda out: [sys.executable, "-c", "pass"])
    with pytest.raises(DatasetError, match=r"seed42\.npz: x has shape \(10, 40\)"):
        load_mnist1d()


def test_generation_failures_are_dataset_errors(home, monkeypatch):
    _failing_child(monkeypatch, 7)
    with pytest.raises(DatasetError, match=r"generating .*seed42\.npz failed \(exit status 7\)"):
        load_mnist1d()
    # the real child, with the mnist1d package made unimportable
    child = ("import runpy, sys; sys.modules['mnist1d'] = None; sys.argv = ['mnist1d', sys.argv[1]]; "
             "runpy.run_module('analysis.data.mnist1d', run_name='__main__')")
    monkeypatch.setattr(mnist1d, "_command", lambda out: [sys.executable, "-c", child, str(out)])
    with pytest.raises(DatasetError, match=r"^MNIST-1D needs the mnist1d package: pip install mnist1d==0\.0\.2\.post1$"):
        load_mnist1d()
    assert not mnist1d.cache_path().exists()


def test_load_dataset_dispatch(cached):
    d = load_dataset("mnist1d", seed=2)
    assert d.name == "mnist1d" and d.split_seed == 2 and d.x_test.shape == (1000, 1, 40)
    with pytest.raises(DatasetError, match="choose digits, mnist1d, cifar10 or imagefolder"):
        load_dataset("mnist2d")


def test_shift1d_moves_and_zero_fills():
    x = torch.arange(1, 11, dtype=torch.float32).view(1, 1, 10).repeat(3, 2, 1)
    out = shift1d(x, torch.tensor([0, 2, -3]))
    assert torch.equal(out[0], x[0])
    assert out[1, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert out[2, 1].tolist() == [4, 5, 6, 7, 8, 9, 10, 0, 0, 0]
    assert torch.equal(shift1d(x, torch.zeros(3, dtype=torch.long)), x)


def _inferred_shifts(out):
    """The shift of each row of a shifted arange(1, 41) (leading zeros: right; first value: left)."""
    row = out[:, 0]
    lead = (row.cumsum(1) == 0).sum(1)
    return torch.where(lead > 0, lead, 1 - row[:, 0].long()).tolist()


def test_augment_shift1d():
    x = torch.arange(1, 41, dtype=torch.float32).view(1, 1, 40).repeat(200, 1, 1)
    a = augment_batch(x, "shift1d", torch.Generator().manual_seed(0))
    b = augment_batch(x, "shift1d", torch.Generator().manual_seed(0))
    c = augment_batch(x, "shift1d", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    shifts = _inferred_shifts(a)
    assert set(shifts) == set(range(-4, 5))  # up to 4 samples either way, every one drawn
    assert torch.equal(a, shift1d(x, torch.tensor(shifts)))
    assert augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(DatasetError, match="'shift' does not apply to a batch of shape"):
        augment_batch(x, "shift", torch.Generator())
    with pytest.raises(DatasetError, match="'shift1d' does not apply to a batch of shape"):
        augment_batch(torch.zeros(2, 1, 8, 8), "shift1d", torch.Generator())


def test_a_shared_dataset_folder_overrides_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LENS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESNET_LENS_DATASETS", str(tmp_path / "shared"))
    assert mnist1d.cache_path().parent == tmp_path / "shared"
    monkeypatch.delenv("RESNET_LENS_DATASETS")
    assert mnist1d.cache_path().parent == tmp_path / "home" / "datasets"
