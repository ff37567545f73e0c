"""Lesion lab on 1-D nets: the shipped MNIST-1D pair (residual degrades gently, its plain twin
collapses), the batched engine against one-by-one forwards, VDCNN's pooling blocks, inputs of the
wrong dimensionality refused with a message, and the page choosing the 1-D net and sweeping it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis.arch.models import build_model
from analysis.arch.specs import custom_spec, get_spec
from analysis.core.errors import DatasetError, LensError
from analysis.experiments import lesion
from analysis.store.checkpoints import Checkpoint, dataset_for, find_twin, load_checkpoint, shipped_checkpoints
from tests.helpers import page_with_pick

ROOT = Path(__file__).resolve().parent.parent
R20, P20 = "shipped: mnist1d_resnet20", "shipped: mnist1d_plain20"


@pytest.fixture(scope="module")
def pair():
    """The shipped 20-layer MNIST-1D nets and their test data (1,000 sequences of 40 samples)."""
    out = {}
    for name in ("mnist1d_resnet20", "mnist1d_plain20"):
        ck = load_checkpoint(shipped_checkpoints()[name])
        out[name] = (ck, dataset_for(ck.meta))
    return out


@pytest.fixture(scope="module")
def singles(pair):
    return {name: lesion.run_sweep("single", ck.model, data.x_test, data.y_test) for name, (ck, data) in pair.items()}


def test_the_shipped_pair_are_twins_of_the_1d_spec(pair):
    (res, data), (plain, _) = pair["mnist1d_resnet20"], pair["mnist1d_plain20"]
    assert (res.spec.dims, res.spec.residual, plain.spec.residual) == (1, True, False)
    assert data.x_test.shape == (1000, 1, 40)
    # found by spec and data among the shipped nets, not fooled by the 2-D pair of the same depth
    others = {name: load_checkpoint(shipped_checkpoints()[name])
              for name in ("digits_resnet20", "digits_plain20", "mnist1d_plain20")}
    assert find_twin(res, others) == "mnist1d_plain20"
    assert find_twin(res, {k: v for k, v in others.items() if k != "mnist1d_plain20"}) is None
    assert lesion.block_shapes(res.spec, data.size) == (
        [((32, 40), (32, 40))] * 3 + [((32, 40), (64, 20))] + [((64, 20), (64, 20))] * 2
        + [((64, 20), (128, 10))] + [((128, 10), (128, 10))] * 2)


def test_deleting_nothing_gives_the_recorded_accuracy(pair, singles):
    for name, (ck, data) in pair.items():
        intact = singles[name].loc[singles[name]["index"] == -1, "error"].item()
        assert abs((1 - intact) - ck.meta.final["test_acc"]) <= 1 / len(data.y_test) + 1e-9


def test_residual_keeps_its_accuracy_where_the_plain_twin_collapses(singles):
    """Veit et al. 2016 on MNIST-1D: all but one single deletion of the residual net keep its error
    within 15 % (the median within 5 %), and even the worst stays better than chance (90 %);
    deleting any block of the plain twin brings it to within 10 points of chance or above."""
    r = singles["mnist1d_resnet20"]
    p = singles["mnist1d_plain20"]
    r_del, p_del = r[r["index"] >= 0], p[p["index"] >= 0]
    assert (r_del["error"] < 0.15).sum() >= len(r_del) - 1 and r_del["error"].median() < 0.05
    assert r_del["error"].max() < 0.9 - 0.2
    assert (p_del["error"] >= 0.9 - 0.1).all()
    assert r_del["error"].mean() < p_del["error"].mean() - 0.5


def test_the_shipped_1d_readings(singles):
    """The numbers these files give, as the page words them (recorded; 1,000 test sequences, so
    every error is a whole number of tenths of a percent)."""
    assert lesion.single_reading(singles["mnist1d_resnet20"], residual=True, num_classes=10) == RESNET_READING
    assert lesion.single_reading(singles["mnist1d_plain20"], residual=False, num_classes=10) == PLAIN_READING


# the residual net's worst deletion is its first block, right after a one-conv stem: the only
# deletion that is not mild, and not a downsampling block (Veit et al.'s CIFAR nets hurt most there)
RESNET_READING = ("intact 1.1 %; deleting one block gives a median of 2.1 % (worst: layer1.0, 65.3 %); downsampling "
                  "blocks: layer2.0 13.6 %, layer3.0 1.9 %; unlike Veit et al.'s nets, a non-downsampling block hurts "
                  "most here.")
PLAIN_READING = ("intact 1.7 %; deleting one block gives a median of 89.7 % (worst: layer3.2, 99.8 %); every deletion "
                 "leaves it at or near chance (90.0 %; within 10 pp or above), as Veit et al. report for plain nets.")


def one_by_one(model: nn.Module, x: torch.Tensor, seq: list[tuple[int, bool]]) -> torch.Tensor:
    """One sequence, the whole test set at once, straight through the modules: no prefix reuse, no batches."""
    blocks = [b for _, b in model.blocks()]
    with torch.no_grad():
        h = model.stem(x)
        for i, keep in seq:
            h = blocks[i](h, keep_residual=keep)
        return model.head(h).argmax(1)


@pytest.mark.parametrize("name", ["mnist1d_resnet20", "mnist1d_plain20"])
def test_batched_sweeps_equal_one_by_one_evaluation(pair, name):
    """A single-deletion sweep's sequences and reorderings with deletions, evaluated in batches of
    128 (the last one partial) from the shared unlesioned prefix, give the predictions of one
    sequence at a time straight through the modules."""
    ck, data = pair[name]
    x = data.x_test[:300]
    n = len(lesion.block_infos(ck.model))
    pairs = lesion.swappable_pairs(lesion.block_infos(ck.model))
    assert pairs == [(0, 1), (0, 2), (1, 2), (4, 5), (7, 8)]
    seqs = [lesion.identity_sequence(n)] + [lesion.deletion(n, [i]) for i in range(n)]
    seqs += [[(1, True), (0, False), (2, True), (3, True), (5, True), (4, True), (6, True), (8, False), (7, True)],
             [(2, False), (1, True), (0, True)] + lesion.deletion(n, [3, 6])[3:]]
    fast = lesion.predict_sequences(ck.model, x, seqs, batch_size=128)
    for got, seq in zip(fast, seqs, strict=True):
        assert torch.equal(got, one_by_one(ck.model, x, seq))


def test_a_single_sweep_is_its_sequences_errors(pair, singles):
    """The sweep's table: row -1 intact, then one row per block, each the error of its deletion on
    all 1,000 sequences (batches of 256, the last one partial) as a one-by-one forward gives it."""
    ck, data = pair["mnist1d_resnet20"]
    df = singles["mnist1d_resnet20"]
    infos = lesion.block_infos(ck.model)
    assert df["deleted"].tolist() == ["none"] + [b.name for b in infos]
    assert df.loc[df["downsample"], "deleted"].tolist() == ["layer2.0", "layer3.0"]
    for row in df[df["deleted"].isin(["none", "layer1.0", "layer3.0"])].itertuples():
        seq = lesion.deletion(len(infos), [] if row.index < 0 else [row.index])
        assert row.error == (one_by_one(ck.model, data.x_test, seq) != data.y_test).float().mean().item()


def test_k_and_reorder_sweeps_run_on_the_1d_net(pair):
    ck, data = pair["mnist1d_resnet20"]
    x, y = data.x_test[:200], data.y_test[:200]
    k = lesion.summarise(lesion.run_sweep("k", ck.model, x, y, samples=2))
    assert k["k"].tolist() == list(range(8))  # the seven non-downsampling blocks
    assert k["mean"].iloc[0] < k["mean"].iloc[-1]
    r = lesion.run_sweep("reorder", ck.model, x, y, samples=2)
    assert r["k"].tolist()[0] == 0 and r["error"].iloc[0] == k["mean"].iloc[0]


# ------------------------------------------------------------------ VDCNN's pooling blocks
def pooled_spec(residual: bool = True):
    """VDCNN-style: max pool /2 in front of layer2.0, whose width stays 8: only the pool changes its shape."""
    return custom_spec(block="basic", layers=(2, 2), widths=(8, 8), stem="vdcnn", stem_width=8, input_size=16,
                       in_channels=1, num_classes=4, shortcut="A", residual=residual, dims=1, conv_bias=True,
                       downsampling="maxpool")


def test_a_pooling_block_counts_as_downsampling_and_keeps_its_pool_when_deleted():
    model = build_model(pooled_spec(), seed=0).eval()
    infos = lesion.block_infos(model)
    assert [(b.name, b.stride, b.downsample, b.in_channels, b.out_channels) for b in infos] == [
        ("layer1.0", 1, False, 8, 8), ("layer1.1", 1, False, 8, 8), ("layer2.0", 2, True, 8, 8),
        ("layer2.1", 1, False, 8, 8)]
    # the pool block cannot take a non-pooling block's place, though its convs have stride 1
    with pytest.raises(LensError, match="layer2.0 cannot take the place of layer1.1: shapes differ"):
        lesion.check_sequence([(0, True), (2, True), (1, True), (3, True)], infos)
    assert lesion.swappable_pairs(infos) == [(0, 1)]
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    block = dict(model.blocks())["layer2.0"]
    with torch.no_grad():
        assert torch.equal(block(x, keep_residual=False), torch.relu(nn.functional.max_pool1d(x, 3, 2, 1)))
        plain = dict(build_model(pooled_spec(residual=False), seed=0).eval().blocks())["layer2.0"]
        assert torch.equal(plain(x, keep_residual=False), nn.functional.max_pool1d(x, 3, 2, 1))
    assert lesion.block_shapes(model.spec) == [((8, 16), (8, 16))] * 2 + [((8, 16), (8, 8)), ((8, 8), (8, 8))]


def test_sweeps_with_deleted_pool_blocks_match_one_by_one():
    model = build_model(pooled_spec(), seed=1).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.3, generator=g)
    x = torch.randn(50, 1, 16, generator=g)
    seqs = [lesion.deletion(4, d) for d in ([], [2], [0, 2], [1, 2, 3])] + [[(1, False), (0, True), (2, False), (3, True)]]
    fast = lesion.predict_sequences(model, x, seqs, batch_size=7)
    for got, seq in zip(fast, seqs, strict=True):
        assert torch.equal(got, one_by_one(model, x, seq))


# ------------------------------------------------------------------ bad input
def test_a_1d_net_and_images_or_a_2d_net_and_sequences_are_refused_with_a_message(pair):
    from analysis.data.data import load_digits

    ck, data = pair["mnist1d_resnet20"]
    digits = load_digits(16)
    with pytest.raises(DatasetError, match=re.escape(
            "resnet1d_20 is a 1-D net: it takes sequences (N × C × L), but the test data of digits16 are images "
            "(450 × 1 × 16 × 16)")):
        lesion.check_data(ck.spec, digits)
    with pytest.raises(DatasetError, match="is a 1-D net: it takes sequences"):
        lesion.run_sweep("single", ck.model, digits.x_test, digits.y_test)  # not torch's conv1d error
    two_d = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    with pytest.raises(DatasetError, match=re.escape(
            f"{two_d.spec.name} is a 2-D net: it takes images (N × C × H × W), but the test data of mnist1d are "
            "sequences (1000 × 1 × 40)")):
        lesion.check_data(two_d.spec, data)
    with pytest.raises(DatasetError, match="is a 2-D net"):
        lesion.predict_sequences(two_d.model, data.x_test, [lesion.identity_sequence(9)])
    with pytest.raises(DatasetError, match=re.escape("resnet1d_20 takes 1-channel sequences; the inputs have 3 channels")):
        lesion.check_inputs(ck.spec, torch.zeros(2, 3, 40))
    with pytest.raises(DatasetError, match="has 4 outputs; mnist1d has 10 classes"):
        lesion.check_data(get_spec("resnet1d_8", num_classes=4), data)
    short = get_spec("resnet1d_8", input_size=8)
    import dataclasses

    with pytest.raises(DatasetError, match="the test sequences of mnist1d are 3 samples long: .*total stride 4"):
        lesion.check_data(short, dataclasses.replace(data, x_test=data.x_test[..., :3], x_train=data.x_train[..., :3]))


def test_settings_say_sequences_for_1d_data(pair):
    _, data = pair["mnist1d_resnet20"]
    k = lesion.sweep_settings("k", data, samples=3, seed=7)
    assert k["test_images"] == 1000  # the stored key's name, for images and sequences alike
    assert lesion.describe_settings("single", k, data.dims) == "1000 test sequences of mnist1d"
    assert lesion.describe_settings("k", k, data.dims) == "3 samples per k, seed 7, on 1000 test sequences of mnist1d"
    assert lesion.describe_settings("single", k) == "1000 test images of mnist1d"  # 2-D by default


# ------------------------------------------------------------------ the page
pytestmark = pytest.mark.usefixtures("own_run_store")


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def lesion_page(pick: str, trained: dict | None = None) -> AppTest:
    """A new session of the page with ``pick`` chosen from the start (not after the default 56-layer net)."""
    return page_with_pick("lesion", "lesion_ckpt", pick, trained)


def test_the_page_sweeps_the_shipped_1d_net_beside_its_plain_twin(singles):
    at = lesion_page(R20)
    assert f"**{R20}** — resnet1d_20, 9 blocks, evaluated on 1000 test sequences of mnist1d." in at.markdown.values
    assert [m for m in at.markdown.values if re.fullmatch(r"\*\*layer\d\*\* · .*", m)] == [
        "**layer1** · 32×40", "**layer2** · 64×20", "**layer3** · 128×10"]
    boxes = {c.label: c.help for c in at.checkbox}
    assert boxes["layer2.0 ↓"] == "32×40 → 64×20 (channels × samples)"
    assert boxes["layer3.2"] == "128×10 → 128×10 (channels × samples)"
    assert any("headed by its output shape (channels × samples)" in c for c in at.caption.values)
    assert f"{R20} has no single-block sweep for 1000 test sequences of mnist1d yet: press **Run the single-block " \
           "sweep**." in at.info.values

    at.button(key="lesion_run_single").click().run()
    clean(at)
    assert any(c.startswith("Results (1000 test sequences of mnist1d) — ") for c in at.caption.values)
    assert f"**{R20}**: {RESNET_READING}" in at.markdown.values
    assert f"**{P20}**: {PLAIN_READING}" in at.markdown.values
    measured = at.session_state["lesion_results"][(R20, "mnist1d", 0, "single", 0, 0)]
    assert measured["error"].tolist() == singles["mnist1d_resnet20"]["error"].tolist()

    at.checkbox(key=f"lesion_{R20}_layer2.0").check().run()
    clean(at)
    deleted = singles["mnist1d_resnet20"].set_index("deleted").loc["layer2.0", "error"]
    assert {m.label: m.value for m in at.metric}["Test error, 1 deleted"] == f"{100 * deleted:.2f} %"


def test_the_page_says_when_a_1d_net_meets_images():
    one_d = load_checkpoint(shipped_checkpoints()["mnist1d_resnet20"])
    two_d = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    at = lesion_page("trained here: seq", {"seq": Checkpoint(one_d.spec, one_d.model, two_d.meta, False),
                                           "img": Checkpoint(two_d.spec, two_d.model, one_d.meta, False)})
    assert at.error.values == [
        "resnet1d_20 is a 1-D net: it takes sequences (N × C × L), but the test data of digits16 are images "
        "(450 × 1 × 16 × 16)"]
    assert not at.metric
    at.selectbox(key="lesion_ckpt").select("trained here: img").run()
    clean(at)
    assert at.error.values == [
        f"{two_d.spec.name} is a 2-D net: it takes images (N × C × H × W), but the test data of mnist1d are "
        "sequences (1000 × 1 × 40)"]


def test_a_1d_net_without_dataset_metadata_is_evaluated_on_mnist1d(pair):
    from analysis.core.meta import RunMeta

    ck, data = pair["mnist1d_resnet20"]
    bare = Checkpoint(ck.spec, ck.model, RunMeta(normalisation=ck.meta.normalisation), True)
    at = lesion_page("trained here: bare", {"bare": bare})
    assert "trained here: bare's metadata names no dataset the app can rebuild: it is evaluated on the test split " \
           "of MNIST-1D (Greydanus 2020), the app's dataset of sequences." in at.caption.values
    intact = 1 - ck.meta.final["test_acc"]
    assert abs(float({m.label: m.value for m in at.metric}["Test error, intact"].rstrip(" %")) - 100 * intact) < 0.1 + 1e-6
    assert "lesion_data_kind" not in [s.key for s in at.selectbox]  # no local dataset asked for
