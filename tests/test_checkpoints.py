"""Checkpoints: weights_only loading, refusal of code, atomic writes, architecture inference."""

import io
import json
import os
from pathlib import Path

import pytest
import torch

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.core.compat import deterministic_state_dict
from analysis.core.meta import RunMeta
from analysis.store import checkpoints as ck
from analysis.store.checkpoints import CheckpointError, infer_spec, load_checkpoint, save_checkpoint

MANIFEST = json.loads((Path(__file__).parent / "fixtures" / "torchvision_state_dicts.json").read_text())["keys"]


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_roundtrip_keeps_spec_meta_and_weights(tmp_path):
    spec = get_spec("plain_cifar_resnet20").replace(in_channels=1, input_size=16)
    model = build_model(spec)
    path = save_checkpoint(tmp_path / "m.pt", model, RunMeta(final={"test_acc": 0.5}))
    c = load_checkpoint(path)
    assert c.spec == spec and not c.inferred and c.meta.final["test_acc"] == 0.5
    for k, v in model.state_dict().items():
        assert torch.equal(v, c.model.state_dict()[k])
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", build_model(get_spec("cifar_resnet20")))
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, build_model(get_spec("cifar_resnet32")))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/resnet_lens_pwned_ckpt",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = Path("/tmp/resnet_lens_pwned_ckpt")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused.*nothing in it was executed"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path.read_bytes())
    assert not marker.exists()


def test_truncated_corrupt_and_wrong_content(tmp_path):
    good = _bytes(build_model(get_spec("cifar_resnet20")).state_dict())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(good[: len(good) // 2], name="half.pt")
    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
        load_checkpoint(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_checkpoint(_bytes([1, 2, 3]))
    with pytest.raises(CheckpointError, match="no residual stages"):
        load_checkpoint(_bytes({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}))


def test_mismatched_state_dict_names_missing_and_unexpected_keys():
    sd = build_model(get_spec("resnet18")).state_dict()
    with pytest.raises(CheckpointError, match=r"missing keys: layer1\.2\.conv1\.weight"):
        load_checkpoint(_bytes(sd), expect=get_spec("resnet34"))
    sd2 = dict(sd, **{"extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        load_checkpoint(_bytes(sd2), expect=get_spec("resnet18"))
    sd3 = build_model(get_spec("resnet18").replace(num_classes=10)).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatch .*fc\.weight"):
        load_checkpoint(_bytes(sd3), expect=get_spec("resnet18"))


@pytest.mark.parametrize("name", list(MANIFEST))
def test_infer_every_torchvision_architecture(name):
    sd = deterministic_state_dict({k: tuple(s) for k, s in MANIFEST[name]})
    c = load_checkpoint(_bytes(sd), name=f"{name}.pth")
    assert c.inferred and c.spec == get_spec(name) and c.spec.name == name


@pytest.mark.parametrize("name,kw", [("cifar_resnet56", {}), ("cifar_resnet20", {"shortcut": "B"}),
                                     ("cifar_resnet20", {"shortcut": "C"}), ("resnet18", {"preact": True}),
                                     ("resnet50", {"num_classes": 37})])
def test_infer_variants(name, kw):
    spec = get_spec(name, **kw)
    inferred = infer_spec(build_model(spec).state_dict(), name=spec.name)
    assert inferred.replace(name=spec.name) == spec


def test_wrapped_and_dataparallel_state_dicts():
    sd = build_model(get_spec("resnet18")).state_dict()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    assert load_checkpoint(_bytes(wrapped)).spec.name == "resnet18"


def test_metadata_round_trip_and_old_files(tmp_path):
    """One schema: what is written is what is read; the unversioned dicts of earlier files load."""
    import dataclasses

    from analysis.core.meta import DatasetInfo, Normalisation, TrainConfig
    from analysis.store.checkpoints import state_dict_hash

    meta = RunMeta(dataset=DatasetInfo("digits16", 1347, 450, 10, 1, 16, 0, "sklearn"),
                   normalisation=Normalisation((0.3,), (0.32,)), recipe=TrainConfig(epochs=2),
                   history=({"epoch": 1.0, "test_acc": 0.5},), final={"test_acc": 0.5}, status="cancelled",
                   versions={"torch": "2.13.0"}, created="now", command="cmd", train_seconds=1.5,
                   images_per_second=10.0)
    assert RunMeta.from_dict(meta.to_dict()) == meta
    model = build_model(get_spec("cifar_resnet8").replace(in_channels=1, input_size=16))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, meta)).meta
    assert loaded.content_sha256 == state_dict_hash(model.state_dict())  # added on save, verified on load
    assert dataclasses.replace(loaded, content_sha256="") == meta
    old = meta.to_dict()
    del old["schema"]
    old["status"] = "cancelled after 1 epoch"
    assert RunMeta.from_dict(old) == meta
    with pytest.raises(CheckpointError, match="schema"):
        RunMeta.from_dict({**meta.to_dict(), "schema": 99})
    with pytest.raises(CheckpointError, match="unknown TrainConfig fields in checkpoint metadata: optimizer"):
        RunMeta.from_dict({**meta.to_dict(), "recipe": {"optimizer": "adam"}})
    with pytest.raises(CheckpointError, match="positive std"):
        RunMeta.from_dict({**meta.to_dict(), "normalisation": {"mean": [0.0], "std": [0.0]}})


def test_evaluation_uses_the_stored_normalisation():
    """dataset_for rebuilds the digits split with the statistics stored at training time, not with
    statistics recomputed from the data (here the stored ones are deliberately different)."""
    import dataclasses

    from analysis.core.meta import Normalisation
    from analysis.data.data import load_digits
    from analysis.store.checkpoints import dataset_for, shipped_checkpoints

    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    plain = load_digits(16)
    shifted = dataclasses.replace(c.meta, normalisation=Normalisation((0.5,), (0.25,)))
    d = dataset_for(shifted)
    raw = plain.x_test * plain.std[0] + plain.mean[0]
    assert torch.allclose(d.x_test, (raw - 0.5) / 0.25, atol=1e-5)
    assert d.mean == [0.5] and d.std == [0.25]


# ------------------------------------------------------------------ issue 10: hostile and ambiguous files
def _ours(spec, sd=None, **meta):
    """Our file format around ``sd`` (default: a fresh model's), with extra metadata fields."""
    from analysis.store.checkpoints import FORMAT, spec_to_dict

    sd = build_model(spec).state_dict() if sd is None else sd
    return {"format": FORMAT, "state_dict": sd, "meta": {**RunMeta().to_dict(), **meta, "spec": spec_to_dict(spec)}}


def test_item1_memory_bombs_are_refused_with_the_number_and_the_limit(monkeypatch):
    """Refused from the analytic cost table before anything is allocated (old code: a "missing keys"
    message at best, an allocator crash or minutes of building at worst)."""
    from analysis.arch.specs import ResNetSpec

    monkeypatch.setenv("RESNET_LENS_MEMORY_BUDGET", "1G")
    # a tiny file whose metadata declares 8 x 2000 blocks of width 4096
    huge = ResNetSpec(name="bomb", block="basic", layers=(2000,) * 8, widths=(4096,) * 8, stem="cifar",
                      stem_width=64, num_classes=10, input_size=512)
    small = build_model(get_spec("cifar_resnet8")).state_dict()
    blob = _bytes(_ours(get_spec("cifar_resnet8"), small) | {"meta": {"spec": ck.spec_to_dict(huge)}})
    assert len(blob) < 400_000  # the small net's weights
    with pytest.raises(CheckpointError, match=r"bomb.*needs at least .*TiB.*memory budget of 1\.0 GiB"):
        load_checkpoint(blob)
    # a bare state_dict whose key names claim 6 stages of 2000 blocks
    sd = {"conv1.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(10, 64)}
    for s in range(1, 7):
        sd[f"layer{s}.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
        sd[f"layer{s}.1999.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    with pytest.raises(CheckpointError, match=r"needs at least 3\.\d GiB.*memory budget of 1\.0 GiB"):
        load_checkpoint(_bytes(sd))
    # stride-0 tensors: 2 KB declaring 65,536 x 65,536 x 3 x 3 (155 GB) is refused before it is read
    blob = _bytes({"conv1.weight": torch.zeros(1).expand(65536, 65536, 3, 3)})
    assert len(blob) < 2048
    with pytest.raises(CheckpointError, match=r"conv1\.weight.*declares 38,654,705,664 values.*on 4 bytes"):
        load_checkpoint(blob)


def test_item1_expanded_tensor_of_the_right_shape_is_refused():
    """A stride-0 view with exactly the expected shape loaded silently before (one value copied 432 times)."""
    sd = build_model(get_spec("cifar_resnet20")).state_dict()
    sd["conv1.weight"] = torch.ones(1).expand(16, 3, 3, 3)
    with pytest.raises(CheckpointError, match="expanded"):
        load_checkpoint(_bytes(sd), expect=get_spec("cifar_resnet20"))


def test_item1_zip_records_that_unpack_beyond_the_budget_are_refused(monkeypatch):
    from tests.fuzz import ckcraft

    monkeypatch.setenv("RESNET_LENS_MEMORY_BUDGET", "64M")
    n = 32 << 20  # 128 MiB of zeros deflate to ~130 KB
    blob = ckcraft.zip_file({"fc.weight": ckcraft.Tensor(ckcraft.Storage("0", n), 0, (n,), (1,))},
                            {"0": bytes(4 * n)}, deflate=True)
    assert len(blob) < 1_000_000
    with pytest.raises(CheckpointError, match=r"unpack to 128\.0 MiB, more than the memory budget of 64\.0 MiB"):
        load_checkpoint(blob)


def test_item3_plain_or_option_a_is_asked_not_guessed():
    """A bare plain net used to load as "residual, shortcut A": the lesion CLI then showed 89.8 % error."""
    from analysis.data.data import load_digits
    from analysis.experiments.train import evaluate
    from analysis.store.checkpoints import AmbiguousCheckpointError, shipped_checkpoints

    shipped = load_checkpoint(shipped_checkpoints()["digits_plain20"])
    bare = _bytes(shipped.model.state_dict())
    with pytest.raises(AmbiguousCheckpointError, match="plain net or a residual net with option-A"):
        load_checkpoint(bare)
    as_plain = load_checkpoint(bare, plain=True, input_size=16)
    assert not as_plain.spec.residual and as_plain.spec.input_size == 16
    assert ck.same_architecture(as_plain.spec, shipped.spec)
    as_residual = load_checkpoint(bare, plain=False)
    assert as_residual.spec.residual and as_residual.spec.shortcut == "A"
    data = load_digits(16)
    x, y = data.x_test, data.y_test
    right, wrong = evaluate(as_plain.model, x, y), evaluate(as_residual.model, x, y)
    assert right["correct"] == evaluate(shipped.model, x, y)["correct"]
    assert right["correct"] > wrong["correct"] + 100  # the guess was badly wrong
    # a recorded spec is not overridden by a contradicting choice
    with pytest.raises(CheckpointError, match="residual was asked for"):
        load_checkpoint(shipped_checkpoints()["digits_plain20"], plain=False)


def test_item3_input_size_and_nets_the_old_inference_refused():
    from analysis.arch.specs import custom_spec
    from analysis.store.checkpoints import AmbiguousCheckpointError

    # --size for a bare digits ResNet-20 (it was always 32)
    spec = get_spec("cifar_resnet20").replace(in_channels=1, shortcut="B")
    c = load_checkpoint(_bytes(build_model(spec).state_dict()), input_size=16)
    assert c.spec.input_size == 16 and ck.same_architecture(c.spec, spec.replace(input_size=16))
    # a valid 8-stage net: its total stride (128) is more than the default 32
    deep = custom_spec(block="basic", layers=[2] * 8, widths=[8] * 8, stem="cifar", input_size=128,
                       num_classes=10, shortcut="B")
    c = load_checkpoint(_bytes(build_model(deep).state_dict()))
    assert c.spec.input_size == 128 and ck.same_architecture(c.spec, deep)
    # plain bottleneck / pre-activation nets whose channels shrink: option A is impossible, so plain
    for kw in ({"block": "bottleneck", "widths": [32, 64, 32, 16], "preact": True},
               {"block": "basic", "widths": [32, 64, 8], "preact": False},
               {"block": "bottleneck", "widths": [8, 8], "preact": False}):
        layers = [1] * len(kw["widths"])
        spec = custom_spec(layers=layers, stem="cifar", stem_width=64, input_size=32, num_classes=10,
                           residual=False, shortcut="A", **kw)
        c = load_checkpoint(_bytes(build_model(spec).state_dict()))
        assert not c.spec.residual and ck.same_architecture(c.spec, spec), kw
        with pytest.raises(CheckpointError, match="cannot be a residual net"):
            load_checkpoint(_bytes(build_model(spec).state_dict()), plain=False)
    # projections present: residual for sure, and plain=True is refused
    sd = build_model(get_spec("resnet18")).state_dict()
    with pytest.raises(CheckpointError, match="projection-shortcut weights"):
        load_checkpoint(_bytes(sd), plain=True)
    assert not isinstance(AmbiguousCheckpointError("x"), type(None))


def _malformed() -> dict[str, bytes]:
    spec = get_spec("cifar_resnet8")
    sd = build_model(spec).state_dict()
    ours = _ours(spec, sd)
    return {
        "empty": b"", "two random bytes": b"\x80\x02", "random bytes": bytes(range(7, 256)) * 3,
        "non-string keys": _bytes({**sd, 3: torch.zeros(1)}),
        "meta is a list": _bytes({**ours, "meta": [1, 2]}),
        "meta.spec is a string": _bytes({**ours, "meta": {**ours["meta"], "spec": "resnet20"}}),
        "meta.dataset is a list": _bytes({**ours, "meta": {**ours["meta"], "dataset": [1, 2]}}),
        "float class count": _bytes({**ours, "meta": {**ours["meta"], "dataset": {
            "name": "digits16", "train": 1, "test": 1, "classes": 10.0, "channels": 3, "size": 16, "split_seed": 0}}}),
        "float class count in spec": _bytes({**ours, "meta": {**ours["meta"], "spec": {
            **ours["meta"]["spec"], "num_classes": 10.0}}}),
        "sparse weight": _bytes({**sd, "fc.weight": sd["fc.weight"].to_sparse()}),
        "0-d weight": _bytes({**sd, "fc.weight": torch.tensor(1.0)}),
        "zero-channel conv": _bytes({**sd, "conv1.weight": torch.zeros(0, 3, 3, 3)}),
        "tensor as schema": _bytes({**ours, "meta": {**ours["meta"], "schema": torch.ones(3)}}),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_item5_every_malformed_upload_is_one_clear_sentence(case):
    """10 of 21 such uploads used to show an exception box (IndexError, TypeError, RuntimeError)."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_malformed()[case], name="up.pt")
    msg = str(info.value)
    assert msg.startswith("up.pt: ") and "\n" not in msg and len(msg) < 400, msg
    assert "Python objects" not in msg  # kept for pickles that really reference code


def test_item5_random_bytes_are_not_called_code():
    import random

    rng = random.Random(5)
    for _ in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
            load_checkpoint(blob)


@pytest.mark.parametrize("case,match", [
    ("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("negative running_var", "negative variances"),
    ("int64 weight", r"integers \(int64\)"), ("bool weight", "booleans"), ("complex weight", "complex"),
    ("duplicate module. key", "both name 'fc.weight'"), ("float num_batches_tracked", "integer counter"),
    ("float64 beyond float32", "overflows float32"),
])
def test_item6_meaningless_weights_are_refused(case, match):
    """All of these loaded before, and an all-NaN net showed a plausible 90.22 % error."""
    spec = get_spec("cifar_resnet8").replace(shortcut="B")
    sd = build_model(spec).state_dict()
    w = sd["fc.weight"]
    bad = {
        "nan": {"fc.weight": w * float("nan")}, "inf": {"layer1.0.conv1.weight": sd["layer1.0.conv1.weight"] / 0},
        "negative running_var": {"bn1.running_var": -sd["bn1.running_var"]},
        "int64 weight": {"fc.weight": w.long()}, "bool weight": {"fc.weight": w > 0},
        "complex weight": {"fc.weight": w.to(torch.complex64)}, "duplicate module. key": {"module.fc.weight": w},
        "float num_batches_tracked": {"bn1.num_batches_tracked": torch.tensor(0.0)},
        "float64 beyond float32": {"fc.weight": w.double() * 1e300},
    }[case]
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_bytes({**sd, **bad}))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_bytes(_ours(spec, {**sd, **bad})))


def test_item6_half_and_double_weights_load_exactly():
    spec = get_spec("cifar_resnet8").replace(shortcut="B")
    sd = build_model(spec).state_dict()
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        c = load_checkpoint(_bytes(cast))
        for k, v in cast.items():
            assert torch.equal(c.model.state_dict()[k], v.to(c.model.state_dict()[k].dtype)), (dtype, k)


def test_item6_content_hash_detects_a_flipped_bit():
    """Our files record a sha256 of their tensors; a bit flipped inside tensor data is noticed."""
    from analysis.store.checkpoints import state_dict_hash
    from tests.fuzz import ckcraft

    spec = get_spec("cifar_resnet8")
    sd = build_model(spec).state_dict()
    digest = state_dict_hash(sd)
    assert digest.startswith("sha256:") and len(digest) == 71
    blob = _bytes(_ours(spec, sd, content_sha256=digest))
    c = load_checkpoint(blob)
    assert c.meta.content_sha256 == digest and state_dict_hash(c.model.state_dict()) == digest
    record = max(ckcraft.data_records(blob), key=lambda n: len(zipfile_read(blob, n)))
    at = ckcraft.record_offset(blob, record) + 101
    flipped = blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]  # a low mantissa bit: still finite
    with pytest.raises(CheckpointError, match="content hash mismatch: the file was modified or corrupted"):
        load_checkpoint(flipped)
    with pytest.raises(CheckpointError, match="not a sha256 digest"):
        load_checkpoint(_bytes(_ours(spec, sd, content_sha256="md5:123")))
    # files written before the hash existed still load
    assert load_checkpoint(_bytes(_ours(spec, sd))).meta.content_sha256 == ""
    # and our own writer records it: a download (checkpoint_bytes) with one flipped bit is refused
    saved = ck.checkpoint_bytes(build_model(spec))
    record = max(ckcraft.data_records(saved), key=lambda n: len(zipfile_read(saved, n)))
    at = ckcraft.record_offset(saved, record) + 57
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(saved[:at] + bytes([saved[at] ^ 0x10]) + saved[at + 1:])


def zipfile_read(blob: bytes, name: str) -> bytes:
    import zipfile

    return zipfile.ZipFile(io.BytesIO(blob)).read(name)


def test_a_stem_no_plan_describes_is_refused_by_name() -> None:
    """The stem is read by matching candidate stem plans (7-wide + BN, 3-wide + BN, 3-wide alone):
    a 5-wide stem conv with BN matches none, and the message lists what was tried."""
    sd = build_model(get_spec("cifar_resnet20")).state_dict()
    sd["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    with pytest.raises(CheckpointError, match=r"matches none of the stems.*imagenet.*kernel 7.*cifar.*kernel 3"):
        infer_spec(sd)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "cifar_resnet20", "vdcnn9", "resnet1d_8"])
def test_inference_reads_back_the_stem_block_and_head(name: str) -> None:
    spec = get_spec(name)
    got = infer_spec(build_model(spec).state_dict())
    assert (got.stem, got.block, got.preact, got.stem_width, got.in_channels, got.num_classes) == (
        spec.stem, spec.block, spec.preact, spec.stem_width, spec.in_channels, spec.num_classes)
    no_stem = spec.replace(stem="none", in_channels=spec.stem_width)
    assert infer_spec(build_model(no_stem).state_dict()).stem == "none"
    pre = spec.replace(preact=True, activation="original")
    assert infer_spec(build_model(pre).state_dict()).preact
