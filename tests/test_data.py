"""Datasets: embedded digits, CIFAR-10 python batches and ImageFolder trees, with clear errors."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.data.data import (
    DatasetError,
    augment_batch,
    load_cifar10,
    load_dataset,
    load_digits,
    load_image_folder,
)
from tests.fuzz.harness import no_hang


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


# ----------------------------------------------------------------------------- issue 10, item 8
# Each test below fails on the loaders as they were (values accepted silently, a crash outside our
# error types, or a hang); the fuzz suite (tests/fuzz/test_data_fuzz.py) covers the wider space.

_no_hang = no_hang  # one deadline helper for the suite: tests.fuzz.harness.no_hang


_DEFAULT = object()


def _cifar_with(root, *, data=_DEFAULT, labels=_DEFAULT, meta=None, n=4):
    """A small CIFAR folder whose data_batch_2 carries the given data / labels, batches.meta the given meta."""
    _write_cifar(root, n=n)
    rng = np.random.default_rng(1)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8) if data is _DEFAULT else data,
         b"labels": list(range(n)) if labels is _DEFAULT else labels}
    with open(root / "data_batch_2", "wb") as f:
        pickle.dump(d, f)
    if meta is not None:
        with open(root / "batches.meta", "wb") as f:
            pickle.dump(meta, f)
    return root


@pytest.mark.parametrize("bad", [10, -1, 255])
def test_cifar_labels_out_of_range_are_refused(tmp_path, bad):
    root = _cifar_with(tmp_path / "c", labels=[0, 1, bad, 3])
    with pytest.raises(DatasetError, match=f"data_batch_2: 1 labels out of range, the first {bad} at index 2"):
        load_cifar10(root)
    root = _cifar_with(tmp_path / "a", labels=np.array([0, 1, bad, 3]))
    with pytest.raises(DatasetError, match="out of range"):
        load_cifar10(root)


@pytest.mark.parametrize("labels", [[0.0, 1.0, 2.0, 3.0], [0, 1, 2.5, 3], np.array([0.0, 1.0, 2.0, 3.0]),
                                    [True, False, True, False]], ids=["floats", "a-float", "float-array", "bools"])
def test_cifar_labels_must_be_integers(tmp_path, labels):
    with pytest.raises(DatasetError, match="data_batch_2: b'labels' must be a list .* class indices 0..9"):
        load_cifar10(_cifar_with(tmp_path / "c", labels=labels))


def test_cifar_labels_must_be_one_dimensional(tmp_path):
    with pytest.raises(DatasetError, match=r"b'labels' must be .* got a int64 array of shape \(4, 1\)"):
        load_cifar10(_cifar_with(tmp_path / "c", labels=np.arange(4).reshape(4, 1)))


@pytest.mark.parametrize("names", [[b"a", b"b", b"c"], [f"c{i}".encode() for i in range(11)]])
def test_cifar_label_names_must_name_ten_classes(tmp_path, names):
    root = _cifar_with(tmp_path / "c", meta={b"label_names": names})
    with pytest.raises(DatasetError, match=f"batches.meta: b'label_names' has {len(names)} names; CIFAR-10 has "
                                           "exactly 10"):
        load_cifar10(root)


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.float32, np.float64])
def test_cifar_data_must_be_uint8(tmp_path, dtype):
    data = (np.arange(4 * 3072).reshape(4, 3072) % 300).astype(dtype)  # 256..299 wrapped to 0..43 before
    with pytest.raises(DatasetError, match=f"b'data' must be an N x 3072 uint8 numpy array .* got a "
                                           f"{np.dtype(dtype)} array"):
        load_cifar10(_cifar_with(tmp_path / "c", data=data))


@pytest.mark.parametrize("field", ["data", "labels"])
@pytest.mark.parametrize("value", [None, {}, {b"x": 1}], ids=["None", "empty-dict", "dict"])
def test_cifar_none_or_dict_fields_are_dataset_errors(tmp_path, field, value):
    root = _cifar_with(tmp_path / "c", **{field: value})
    with pytest.raises(DatasetError, match=f"data_batch_2: b'{field}' must be"):
        load_cifar10(root)


def test_image_folder_16_bit_grey_maps_0_65535_to_0_1(tmp_path):
    (tmp_path / "a").mkdir()
    values = [0, 32768, 65535, 1000]
    for i, v in enumerate(values):
        im = Image.fromarray(np.full((6, 6), v, dtype=np.uint16))
        assert im.mode == "I;16"
        im.save(tmp_path / "a" / f"{i}.png")
    d = load_image_folder(tmp_path, size=4, test_fraction=1.0, normalise="imagenet")
    raw = d.x_test * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    expected = torch.tensor(values, dtype=torch.float32) / 65535
    assert torch.allclose(raw.mean(dim=(1, 2, 3)), expected, atol=1e-5)  # was clipped: 1.0 for all but 0
    g = load_image_folder(tmp_path, size=4, test_fraction=1.0, grayscale=True, normalisation=None)
    assert g.channels == 1
    graw = g.x_test * g.std[0] + g.mean[0]
    assert torch.allclose(graw.mean(dim=(1, 2, 3)), expected, atol=1e-5)


def test_image_folder_fifo_named_png_is_skipped_not_waited_on(tmp_path):
    import os
    _write_folder(tmp_path)
    fifo = tmp_path / "cat" / "pipe.png"
    os.mkfifo(fifo)
    d = _no_hang(lambda: load_image_folder(tmp_path, size=8, test_fraction=0.25), fifos=[fifo])
    assert len(d.y_train) + len(d.y_test) == 8  # the four cats and four dogs, no pipe
    (tmp_path / "only").mkdir()
    os.mkfifo(tmp_path / "only" / "pipe.png")
    with pytest.raises(DatasetError, match="class folders with no images .*: only"):
        _no_hang(lambda: load_image_folder(tmp_path, size=8), fifos=[fifo, tmp_path / "only" / "pipe.png"])


def _png_declaring(path, width, height):
    """A valid 10x10 PNG whose IHDR is patched to declare width x height (CRC fixed, so only the size lies)."""
    import struct
    import zlib
    Image.new("L", (10, 10)).save(path)
    b = bytearray(path.read_bytes())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    path.write_bytes(bytes(b))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_folder_decompression_bomb_is_a_dataset_error(tmp_path):
    _write_folder(tmp_path)
    _png_declaring(tmp_path / "cat" / "bomb.png", 20_000, 20_000)
    with pytest.raises(DatasetError, match="bomb.png: .*exceeds limit.*expected at most 89,478,485 pixels"):
        load_image_folder(tmp_path, size=8)
    _png_declaring(tmp_path / "cat" / "bomb.png", 10_000, 10_000)  # over our limit, under Pillow's error
    with pytest.raises(DatasetError, match="bomb.png: declares 10000x10000 pixels"):
        load_image_folder(tmp_path, size=8)


@pytest.mark.parametrize("fraction", [-0.5, 1.5, 2.0, float("nan")])
def test_image_folder_test_fraction_outside_0_1_is_refused(tmp_path, fraction):
    _write_folder(tmp_path)
    with pytest.raises(DatasetError, match="test_fraction must be a number strictly between 0 and 1"):
        load_image_folder(tmp_path, size=8, test_fraction=fraction)


def test_image_folder_val_class_missing_from_train_is_refused(tmp_path):
    _write_folder(tmp_path / "train", classes=("cat", "dog"))
    _write_folder(tmp_path / "val", classes=("cat", "dog"))
    (tmp_path / "val" / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "fox" / "0.png")
    with pytest.raises(DatasetError, match="val: class folders fox are not in .*train"):
        load_image_folder(tmp_path, size=8)


# ----------------------------------------------------------------------------- every other malformed input
@pytest.mark.parametrize(("meta", "match"), [
    ([b"a"] * 10, "expected batches.meta: a pickled dict"),
    ({b"names": []}, "expected batches.meta: a pickled dict"),
    ({b"label_names": b"airplane"}, "expected batches.meta: a pickled dict"),
    ({b"label_names": [1] * 10}, "class name 0 must be a non-empty string"),
    ({b"label_names": [b"\xff"] * 10}, "class name 0 is not UTF-8"),
    ({b"label_names": [b"a"] * 10}, "duplicate class names"),
])
def test_cifar_bad_meta(tmp_path, meta, match):
    with pytest.raises(DatasetError, match=f"batches.meta: {match}"):
        load_cifar10(_cifar_with(tmp_path / "c", meta=meta))


def test_cifar_meta_with_str_keys_and_names(tmp_path):
    root = _cifar_with(tmp_path / "c", meta={"label_names": [f"n{i}" for i in range(10)]})
    assert load_cifar10(root).classes[9] == "n9"


@pytest.mark.parametrize(("data", "labels", "match"), [
    (np.zeros((4, 3071), np.uint8), list(range(4)), r"got a uint8 array of shape \(4, 3071\)"),
    (np.zeros(3072, np.uint8), [0], r"got a uint8 array of shape \(3072,\)"),
    (np.zeros((0, 3072), np.uint8), [], r"an empty batch \(0 images\)"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "4 images in b'data' but 3 labels"),
    ([[0] * 3072] * 4, list(range(4)), "got list"),
])
def test_cifar_bad_batch_shapes(tmp_path, data, labels, match):
    with pytest.raises(DatasetError, match=f"data_batch_2: .*{match}"):
        load_cifar10(_cifar_with(tmp_path / "c", data=data, labels=labels))


def test_cifar_batch_of_the_wrong_type_and_limits(tmp_path):
    root = _write_cifar(tmp_path / "c")
    with pytest.raises(DatasetError, match="limit_train must be at least 1, got 0"):
        load_cifar10(root, limit_train=0)
    with pytest.raises(DatasetError, match="limit_test must be an integer, got 2.5"):
        load_cifar10(root, limit_test=2.5)
    d = load_cifar10(root, limit_train=7, limit_test=3)
    assert (len(d.y_train), len(d.y_test)) == (7, 3) and d.y_train.dtype == torch.int64
    with open(root / "test_batch", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DatasetError, match="test_batch: a CIFAR-10 batch must be a dict .* got list"):
        load_cifar10(root)
    (root / "test_batch").unlink()
    (root / "test_batch").mkdir()
    with pytest.raises(DatasetError, match="test_batch: not a regular file"):
        load_cifar10(root)


def test_cifar_memory_budget_is_checked_before_converting(tmp_path, monkeypatch):
    import analysis.data.data as data
    root = _write_cifar(tmp_path / "c", n=20)
    monkeypatch.setattr(data, "_memory_budget", lambda: 100 * 3072 * 4)  # 100 images; the folder has 120
    with pytest.raises(DatasetError, match=r"120 images of 3x32x32 float32 need 0.00 GiB, over the memory budget"):
        load_cifar10(root)
    assert len(load_cifar10(root, limit_train=80).y_train) == 80


def test_image_folder_modes_are_converted(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("LA", (6, 6), (200, 255)).save(tmp_path / "a" / "la.png")
    Image.new("RGBA", (6, 6), (10, 20, 30, 128)).save(tmp_path / "a" / "rgba.png")
    p = Image.new("P", (6, 6), 1)
    p.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    p.save(tmp_path / "a" / "p.png")
    Image.new("CMYK", (6, 6), (0, 0, 0, 0)).save(tmp_path / "a" / "cmyk.jpg", quality=100)
    Image.new("1", (6, 6), 1).save(tmp_path / "a" / "one.png")
    d = load_image_folder(tmp_path, size=4, test_fraction=1.0, normalise="imagenet")
    raw = d.x_test * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    got = {n: raw[i].mean(dim=(1, 2)) for i, n in enumerate(["cmyk", "la", "one", "p", "rgba"])}  # sorted names
    assert torch.allclose(got["la"], torch.full((3,), 200 / 255), atol=1e-4)
    assert torch.allclose(got["rgba"], torch.tensor([10, 20, 30]) / 255, atol=1e-4)  # alpha dropped, as torchvision
    assert torch.allclose(got["p"], torch.tensor([40, 80, 120]) / 255, atol=1e-4)
    assert torch.allclose(got["cmyk"], torch.ones(3), atol=0.02) and torch.allclose(got["one"], torch.ones(3))


def test_image_folder_bad_files(tmp_path, monkeypatch):
    import os
    _write_folder(tmp_path / "t")
    cat = tmp_path / "t" / "cat"
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(cat / "3.png")
    (cat / "3.png").write_bytes((cat / "3.png").read_bytes()[:1500])  # truncated inside the image data
    with pytest.raises(DatasetError, match="3.png: unreadable image"):
        load_image_folder(tmp_path / "t", size=8)
    (cat / "3.png").write_text("hello")  # not an image, image extension
    with pytest.raises(DatasetError, match="3.png: unreadable image .*UnidentifiedImageError"):
        load_image_folder(tmp_path / "t", size=8)
    (cat / "3.png").unlink()
    os.symlink("loop.png", cat / "loop.png")
    with pytest.raises(DatasetError, match="loop.png: cannot be read \\(a symlink loop\\)"):
        load_image_folder(tmp_path / "t", size=8)
    (cat / "loop.png").unlink()
    os.symlink(tmp_path / "nowhere.png", cat / "gone.png")
    with pytest.raises(DatasetError, match="gone.png: a broken symlink"):
        load_image_folder(tmp_path / "t", size=8)
    (cat / "gone.png").unlink()
    os.symlink("self", tmp_path / "t" / "self")
    with pytest.raises(DatasetError, match="self: cannot be read \\(a symlink loop\\)"):
        load_image_folder(tmp_path / "t", size=8)
    (tmp_path / "t" / "self").unlink()
    real_open, target = os.open, str(cat / "2.png")  # root reads anything: simulate the permission error

    def deny(path, *args, **kwargs):
        if str(path) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(DatasetError, match="2.png: cannot be opened \\(permission denied\\)"):
        load_image_folder(tmp_path / "t", size=8)
    monkeypatch.undo()
    assert len(load_image_folder(tmp_path / "t", size=8, test_fraction=0.5).classes) == 2


def test_image_folder_memory_budget_refuses_before_decoding(tmp_path, monkeypatch):
    import analysis.data.data as data
    _write_folder(tmp_path)
    monkeypatch.setattr(data, "_memory_budget", lambda: 1000)

    def no_decoding(*args):
        raise AssertionError("decoded before the budget check")
    monkeypatch.setattr(data, "_decode_image", no_decoding)
    with pytest.raises(DatasetError, match=r"8 images of 3x8x8 float32 need 0.00 GiB, over the memory budget of "
                                           r"0.00 GiB \(1,000 bytes\); pass max_per_class"):
        load_image_folder(tmp_path, size=8)
    monkeypatch.undo()
    monkeypatch.setenv("RESNET_LENS_MEMORY_BUDGET", "2G")  # the process-wide budget of analysis.arch.budget
    _write_folder(tmp_path / "more", per=6)  # 12 images at 4096 px: 2.25 GiB
    with pytest.raises(DatasetError, match="12 images of 3x4096x4096 float32 need 2.25 GiB, over the memory budget "
                                           "of 2.00 GiB .*raise RESNET_LENS_MEMORY_BUDGET"):
        load_image_folder(tmp_path / "more", size=4096)


def test_image_folder_empty_classes_and_layouts(tmp_path):
    _write_folder(tmp_path / "e")
    (tmp_path / "e" / "emu").mkdir()
    (tmp_path / "e" / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"class folders with no images \(1 of 3\): emu"):
        load_image_folder(tmp_path / "e", size=8)
    _write_folder(tmp_path / "tv" / "train")
    _write_folder(tmp_path / "tv" / "val", classes=("cat",))
    with pytest.raises(DatasetError, match="val: no folders for classes dog"):
        load_image_folder(tmp_path / "tv", size=8)
    _write_folder(tmp_path / "only" / "train")
    with pytest.raises(DatasetError, match="has train/ without its partner"):
        load_image_folder(tmp_path / "only", size=8)
    (tmp_path / "e" / "emu" / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    with pytest.raises(DatasetError, match="emu"):
        load_image_folder(tmp_path / "e", size=8)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": 0}, "size must be between 1 and 8192"),
    ({"size": 8193}, "size must be between 1 and 8192"),
    ({"size": 8.0}, "size must be an integer"),
    ({"size": True}, "size must be an integer"),
    ({"size": "32"}, "size must be an integer"),
    ({"resize": 0}, "resize .* must be between 1 and 8192"),
    ({"resize": 9.5}, "resize .* must be an integer"),
    ({"max_per_class": 0}, "max_per_class must be at least 1"),
    ({"max_per_class": -3}, "max_per_class must be at least 1"),
    ({"max_per_class": "2"}, "max_per_class must be an integer"),
    ({"seed": -1}, "seed must be at least 0"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": None}, "seed must be an integer"),
    ({"test_fraction": 0}, "test_fraction must be a number strictly between 0 and 1"),
    ({"test_fraction": "0.2"}, "test_fraction must be a number"),
    ({"grayscale": "yes"}, "grayscale must be True or False"),
    ({"normalise": "unit"}, "normalise must be 'data' or 'imagenet'"),
    ({"normalise": "imagenet", "grayscale": True}, "ImageNet normalisation is per RGB channel"),
])
def test_image_folder_argument_checks(tmp_path, kwargs, match):
    _write_folder(tmp_path)
    with pytest.raises(DatasetError, match=match):
        load_image_folder(tmp_path, **{"size": 8, **kwargs})


@pytest.mark.parametrize("root", [None, "", "   ", 3, b"/tmp"])
def test_loaders_refuse_unusable_paths(root):
    with pytest.raises(DatasetError, match="the dataset path must be a non-empty string or path"):
        load_image_folder(root)
    with pytest.raises(DatasetError, match="the dataset path must be a non-empty string or path"):
        load_cifar10(root)


def test_digits_and_dispatch_argument_checks():
    for kwargs, match in [({"size": 16.0}, "size must be one of"), ({"seed": -2}, "seed must be at least 0"),
                          ({"test_fraction": 1.0}, "test fraction must be a number strictly between 0 and 1")]:
        with pytest.raises(DatasetError, match=match):
            load_digits(**kwargs)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset(["digits"])
    with pytest.raises(DatasetError, match="give the dataset's local path"):
        load_dataset("imagefolder", "  ")


@pytest.mark.parametrize("size,pad", [(8, 1), (16, 2), (32, 4)])
def test_shift_augmentation_moves_by_up_to_an_eighth_of_the_side(size, pad):
    """He et al. 2015, Sec. 4.2: 32-px images padded by 4 px on each side and cropped back, i.e. every
    shift in -4..4 along each axis; the digits take the same eighth of their side (1 px at 8, 2 px at 16).
    A one-pixel image shows each crop's shift, and 600 draws meet all of them."""
    n, c = 600, size // 2
    x = torch.zeros(n, 1, size, size)
    x[:, 0, c, c] = 1.0
    out = augment_batch(x, "shift", torch.Generator().manual_seed(0))
    seen = out[:, 0].flatten(1).argmax(1)
    assert bool((out[:, 0].flatten(1).sum(1) == 1).all())  # the pixel is never cropped away at these sizes
    shifts = {(int(i) // size - c, int(i) % size - c) for i in seen}
    assert shifts == {(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}


@pytest.mark.parametrize("load", [lambda: load_digits(16), lambda: load_dataset("mnist1d")])
def test_normalisation_statistics_come_from_the_training_split_only(load):
    """No test leakage: normalised with the training split's own mean and std, the training split has
    mean 0 and std 1 per channel; statistics over training + test would leave it off both."""
    d = load()
    dims = (0, *range(2, d.x_train.ndim))
    assert torch.allclose(d.x_train.mean(dim=dims), torch.zeros(d.channels), atol=1e-5)
    assert torch.allclose(d.x_train.std(dim=dims), torch.ones(d.channels), atol=1e-4)
    assert not torch.allclose(d.x_test.mean(dim=dims), torch.zeros(d.channels), atol=1e-4)
