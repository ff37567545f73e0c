"""Datasets: embedded digits, CIFAR-10 python batches and ImageFolder trees, with clear errors."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.data import (
    DatasetError,
    augment_batch,
    load_cifar10,
    load_dataset,
    load_digits,
    load_image_folder,
)


def test_digits_split_is_fixed_and_normalised():
    a, b = load_digits(16), load_digits(16)
    assert (len(a.y_train), len(a.y_test)) == (1347, 450)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (1347, 1, 16, 16)
    assert abs(float(a.x_train.mean())) < 1e-5 and abs(float(a.x_train.std()) - 1) < 1e-3
    assert torch.bincount(a.y_test).tolist() == [44, 46, 44, 46, 45, 46, 45, 45, 44, 45]  # stratified
    assert load_digits(32).x_train.shape[-1] == 32
    assert not torch.equal(load_digits(16, seed=1).y_test, a.y_test)
    with pytest.raises(DatasetError, match="size must be one of"):
        load_digits(12)


def _write_cifar(root, n=20, bad=None):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(root / name, "wb") as f:
            pickle.dump(d, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return root


def test_cifar10_python_format(tmp_path):
    root = _write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_cifar10(tmp_path)  # the parent works too
    assert d.x_train.shape == (100, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.classes[:2] == ["c0", "c1"] and d.augment == "crop_flip"
    raw = pickle.load(open(root / "data_batch_1", "rb"))
    # channel-major CIFAR layout: the first 1024 bytes are the red plane
    red = torch.tensor(raw[b"data"][0][:1024].reshape(32, 32), dtype=torch.float32) / 255
    assert torch.allclose(d.x_train[0, 0] * d.std[0] + d.mean[0], red, atol=1e-5)


def test_cifar10_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_cifar10(tmp_path / "nowhere")
    root = _write_cifar(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_3"):
        load_cifar10(root)
    (root / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_3: not a valid CIFAR-10 python batch"):
        load_cifar10(root)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/resnet_lens_pwned_cifar",))


def test_cifar10_malicious_pickle_is_refused(tmp_path):
    import os
    root = _write_cifar(tmp_path / "c")
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    marker = "/tmp/resnet_lens_pwned_cifar"
    if os.path.exists(marker):
        os.unlink(marker)
    with pytest.raises(DatasetError, match="refused to load .*system"):
        load_cifar10(root)
    assert not os.path.exists(marker)


def _write_folder(root, classes=("cat", "dog"), per=4, size=10):
    for c, colour in zip(classes, [(255, 0, 0), (0, 0, 255)], strict=False):
        (root / c).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (size + i, size), colour).save(root / c / f"{i}.png")


def test_image_folder_split_and_subfolders(tmp_path):
    _write_folder(tmp_path / "flat")
    d = load_image_folder(tmp_path / "flat", size=8, test_fraction=0.25)
    assert d.classes == ["cat", "dog"] and len(d.y_train) == 6 and len(d.y_test) == 2
    assert d.x_train.shape[1:] == (3, 8, 8)
    _write_folder(tmp_path / "tv" / "train")
    _write_folder(tmp_path / "tv" / "val", per=2)
    d = load_image_folder(tmp_path / "tv", size=8)
    assert (len(d.y_train), len(d.y_test)) == (8, 4)
    g = load_image_folder(tmp_path / "tv", size=8, grayscale=True)
    assert g.channels == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path / "noimg")
    _write_folder(tmp_path / "bad")
    (tmp_path / "bad" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png: unreadable image"):
        load_image_folder(tmp_path / "bad")
    with pytest.raises(DatasetError, match="give the dataset's local path"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mnist")


def test_augment_batch_shifts_without_flipping_digits():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, "shift", g)
    assert out.shape == x.shape
    assert torch.equal(augment_batch(x, "none", g), x)
    # a shift by (dy, dx) in [-1, 1]: every output pixel is an input pixel or zero padding
    for i in range(2):
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(augment_batch(x, "crop_flip", g1), augment_batch(x, "crop_flip", g2))
