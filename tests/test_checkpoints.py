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
