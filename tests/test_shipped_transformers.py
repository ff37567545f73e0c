"""The shipped transformers (checkpoints/*.pt2): they open through the program path, their metadata
reads, they re-evaluate to exactly the recorded number of correct test examples, the residual nets'
units are found (two per block) and the twins have none, and the module code rebuilds them."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import pytest
import torch
from torch.export import ExportedProgram

from analysis.arch.graphnet import export_module, open_program
from analysis.arch.tinyformers import build
from analysis.core.errors import CheckpointError, ConfigError, DatasetError
from analysis.data.data import load_digits
from analysis.experiments import lesion
from analysis.experiments.chain import ChainError, ProgramChain
from analysis.experiments.train_transformers import NETS, export_net, train_net
from analysis.store.programs import (
    META_FILE,
    ProgramMeta,
    dataset_for_program,
    load_shipped,
    save_program,
    shipped_programs,
)

NAMES = ["digits_vit", "digits_vit_plain", "mnist1d_transformer", "mnist1d_transformer_plain"]


def test_all_four_are_shipped_and_small() -> None:
    progs = shipped_programs()
    assert sorted(progs) == sorted(NAMES) == sorted(NETS)
    assert all(p.stat().st_size < 2_000_000 for p in progs.values())


@pytest.mark.parametrize("name", NAMES)
def test_metadata_reads_and_describes_the_net(name: str) -> None:
    ep, meta = load_shipped(name)
    assert meta.name == name and meta.residual == (not name.endswith("_plain"))
    assert dict(meta.architecture) == dict(NETS[name].arch)
    assert meta.dataset == NETS[name].dataset and meta.split_seed == 0 and meta.seed == 0
    assert (meta.train_size, meta.test_size) == ((1347, 450) if name.startswith("digits") else (4000, 1000))
    assert len(meta.history) == meta.recipe["epochs"] and meta.recipe["optimizer"] == "AdamW"
    assert meta.versions["torch"] and meta.train_seconds > 0 and meta.threads == 1
    assert 0 <= meta.final["test_correct"] <= meta.test_size


@pytest.mark.parametrize("name", NAMES)
def test_reevaluating_gives_exactly_the_recorded_test_count(name: str) -> None:
    ep, meta = load_shipped(name)
    data = dataset_for_program(meta)
    assert data.normalisation == meta.normalisation  # the stored statistics, equal to the split's own
    gm = ep.module()
    with torch.inference_mode():
        logits = torch.cat([gm(data.x_test[i:i + meta.export_batch]) for i in range(0, meta.test_size,
                                                                                     meta.export_batch)])
    assert int((logits.argmax(1) == data.y_test).sum()) == meta.final["test_correct"]
    if not meta.residual:
        with pytest.raises(ChainError):
            ProgramChain(ep, name=name)
        return
    chain = ProgramChain(ep, name=name)
    preds = lesion.predict_sequences(chain, data.x_test, [lesion.identity_sequence(chain.n)], batch_size=128)
    assert int((preds[0] == data.y_test).sum()) == meta.final["test_correct"]


@pytest.mark.parametrize("name", NAMES)
def test_units_are_two_per_residual_block_and_none_in_a_twin(name: str) -> None:
    ep, meta = load_shipped(name)
    units = open_program(ep, name=name).units
    depth = int(meta.architecture["depth"])
    if meta.residual:
        assert [u.name for u in units] == [f"blocks.{i}[{k}]" for i in range(depth) for k in (1, 2)]
        assert all(u.shortcut == "identity" for u in units)
    else:
        assert units == ()


def _ops(ep: ExportedProgram) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(n.op, str(n.target), tuple(str(a) for a in n.args)) for n in ep.graph.nodes]


@pytest.mark.parametrize("name", NAMES)
def test_the_module_code_rebuilds_the_file(name: str) -> None:
    """Same parameter count and names; exported, the same graph (every op and what it reads: the
    twins' logits hardly depend on their input, so equal logits alone would prove little); with the
    file's weights, the same logits."""
    ep, meta = load_shipped(name)
    module = build(meta.architecture).eval()
    assert sum(p.numel() for p in module.parameters()) == meta.params == sum(t.numel() for t in ep.state_dict.values())
    module.load_state_dict(ep.state_dict, strict=True)
    data = dataset_for_program(meta)
    x = data.x_test[:meta.export_batch]
    assert _ops(export_module(module, (x,))) == _ops(ep)
    with torch.inference_mode():
        assert torch.allclose(module(x), ep.module()(x), atol=1e-5)


def tiny_digits(n: int = 48):  # type: ignore[no-untyped-def]
    d = load_digits(16)
    return dataclasses.replace(d, x_train=d.x_train[:n], y_train=d.y_train[:n], x_test=d.x_test[:n // 2],
                               y_test=d.y_test[:n // 2])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A 1-block digits ViT trained for 2 epochs on 48 images, saved: the shape of a shipped file."""
    data = tiny_digits()
    small = {**NETS["digits_vit"].arch, "width": 16, "depth": 1, "heads": 2, "hidden": 16}
    spec = dataclasses.replace(NETS["digits_vit"], arch=small, recipe=dataclasses.replace(
        NETS["digits_vit"].recipe, epochs=2, warmup_epochs=1, batch_size=16))
    NETS["_tiny"] = spec
    try:
        model, meta = train_net("_tiny", 1, data=data)
    finally:
        del NETS["_tiny"]
    path = tmp_path_factory.mktemp("prog") / "tiny.pt2"
    save_program(path, export_net(model, data), meta)
    return model, meta, path, data


def test_training_is_deterministic_and_the_metadata_round_trips(tiny) -> None:  # type: ignore[no-untyped-def]
    model, meta, path, data = tiny
    ep, read = load_shipped(path)
    assert read == ProgramMeta.from_dict(json.loads(json.dumps(meta)))
    assert read.final["test_n"] == 24 and len(read.history) == 2
    NETS["_tiny"] = dataclasses.replace(NETS["digits_vit"], arch=meta["architecture"], recipe=dataclasses.replace(
        NETS["digits_vit"].recipe, epochs=2, warmup_epochs=1, batch_size=16))
    try:
        again, meta2 = train_net("_tiny", 1, data=data)
    finally:
        del NETS["_tiny"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    assert [h["train_loss"] for h in meta2["history"]] == [h["train_loss"] for h in meta["history"]]


def _rewrite(src, dst, meta_text):  # type: ignore[no-untyped-def]
    """A copy of ``src`` with its metadata member replaced (or dropped, for None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename.endswith("/" + META_FILE) or info.filename == META_FILE:
                if meta_text is not None:
                    zout.writestr(info, meta_text)
                continue
            zout.writestr(info, zin.read(info))
    return dst


def test_bad_input_is_our_error(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, meta, path, _ = tiny
    with pytest.raises(CheckpointError, match="neither a shipped program"):
        load_shipped("no_such_net")
    with pytest.raises(CheckpointError, match="no such program"):
        load_shipped(tmp_path / "missing.pt2")
    with pytest.raises(CheckpointError, match="holds no ResNet Lens metadata"):
        load_shipped(_rewrite(path, tmp_path / "bare.pt2", None))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_shipped(_rewrite(path, tmp_path / "junk.pt2", "{not json"))
    lying = json.dumps({**meta, "params": meta["params"] + 1})
    with pytest.raises(CheckpointError, match="parameters"):
        load_shipped(_rewrite(path, tmp_path / "lying.pt2", lying))
    with pytest.raises(CheckpointError, match="format"):
        load_shipped(_rewrite(path, tmp_path / "other.pt2", json.dumps({**meta, "format": "x"})))
    with pytest.raises(CheckpointError, match="lacks"):
        load_shipped(_rewrite(path, tmp_path / "short.pt2", json.dumps({k: v for k, v in meta.items()
                                                                        if k != "seed"})))
    foreign = ProgramMeta.from_dict({**json.loads(json.dumps(meta)), "dataset": "cifar10"})
    with pytest.raises(DatasetError, match="not an embedded dataset"):
        dataset_for_program(foreign)
    with pytest.raises(ConfigError, match="unknown transformer family"):
        build({"family": "rnn"})
    with pytest.raises(ConfigError, match="unknown net"):
        train_net("digits_resnet20")
