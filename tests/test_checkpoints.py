"""Checkpoints: weights_only loading, refusal of code, atomic writes, architecture inference."""

import io
import json
import os
from pathlib import Path

import pytest
import torch

from analysis import checkpoints as ck
from analysis.checkpoints import CheckpointError, infer_spec, load_checkpoint, save_checkpoint
from analysis.compat import deterministic_state_dict
from analysis.meta import RunMeta
from analysis.models import build_model
from analysis.specs import get_spec

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
    from analysis.meta import DatasetInfo, Normalisation, TrainConfig

    meta = RunMeta(dataset=DatasetInfo("digits16", 1347, 450, 10, 1, 16, 0, "sklearn"),
                   normalisation=Normalisation((0.3,), (0.32,)), recipe=TrainConfig(epochs=2),
                   history=({"epoch": 1.0, "test_acc": 0.5},), final={"test_acc": 0.5}, status="cancelled",
                   versions={"torch": "2.13.0"}, created="now", command="cmd", train_seconds=1.5,
                   images_per_second=10.0)
    assert RunMeta.from_dict(meta.to_dict()) == meta
    model = build_model(get_spec("cifar_resnet8").replace(in_channels=1, input_size=16))
    assert load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, meta)).meta == meta
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

    from analysis.checkpoints import dataset_for, shipped_checkpoints
    from analysis.data import load_digits
    from analysis.meta import Normalisation

    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    plain = load_digits(16)
    shifted = dataclasses.replace(c.meta, normalisation=Normalisation((0.5,), (0.25,)))
    d = dataset_for(shifted)
    raw = plain.x_test * plain.std[0] + plain.mean[0]
    assert torch.allclose(d.x_test, (raw - 0.5) / 0.25, atol=1e-5)
    assert d.mean == [0.5] and d.std == [0.25]
