"""Path ensemble on 1-D nets: the path decomposition through VDCNN's max pool (a block's entry,
which both its paths take), exact on a linear 1-D net and against autograd on a real one; path
counts of the VDCNN built-ins; the shipped MNIST-1D net's stored and measured gradients; the page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis.arch.models import build_model
from analysis.arch.specs import MODELS, custom_spec
from analysis.core.errors import DatasetError, LensError
from analysis.experiments import paths
from analysis.store.checkpoints import Checkpoint, dataset_for, load_checkpoint, shipped_checkpoints
from tests.helpers import page_with_pick, path_gradient_sum_and_autograd

ROOT = Path(__file__).resolve().parent.parent
R20 = "shipped: mnist1d_resnet20"


# ------------------------------------------------------------------ exact decompositions
class PoolLinBlock(nn.Module):
    """Duck-types analysis.arch.models.Block in 1-D: an entry pool P in front of both paths (VDCNN's
    pool between stages, here an average pool so that the block stays linear), a bias-free Conv1d
    branch W and an identity shortcut: x_{i+1} = P x_i + W P x_i."""

    downsample = None

    def __init__(self, channels: int, pool: bool, g: torch.Generator) -> None:
        super().__init__()
        self.pool = nn.AvgPool1d(2) if pool else None
        self.plan = SimpleNamespace(residual=True, entry=("pool",) if pool else ())
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, bias=False).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=g, dtype=torch.float64))

    def enter(self, x):
        return self.pool(x) if self.pool is not None else x

    def residual_branch(self, x):
        return self.conv(x)

    def shortcut(self, x):
        return x

    def gate_value(self, x):
        return None

    def combine(self, r, s, g=None):
        return r + s

    def forward(self, x):
        x = self.enter(x)
        return self.combine(self.residual_branch(x), self.shortcut(x))


class PoolLinNet(nn.Module):
    """Linear 1-D residual blocks, every other one pooling its input first."""

    def __init__(self, n: int, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(PoolLinBlock(channels, i % 2 == 1, g) for i in range(n))

    def blocks(self):
        return [(f"b{i}", b) for i, b in enumerate(self.layers)]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sum_over_all_paths_equals_the_output_of_a_linear_1d_net_with_pools(n):
    """Each path takes the pool of every pooling block, then its branch or its skip: the 2^n path
    outputs are the terms of prod(P_i + W_i P_i), whose sum is the stack's output."""
    net = PoolLinNet(n)
    x = torch.randn(4, 3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = x
    for b in net.layers:
        full = b(full)
    outputs = [paths.path_output(net, x, p) for p in paths.enumerate_paths(n)]
    assert all(o.shape == full.shape for o in outputs)  # (4, 3, 16 / 2^(pools))
    torch.testing.assert_close(sum(outputs), full, rtol=1e-10, atol=1e-10)


def vdcnn_style(preact: bool, shortcut: str, residual: bool = True):
    """A small VDCNN-shaped net: temporal conv stem with bias, biased block convs, a 3-wide max
    pool /2 in front of each later stage's first block, one stage keeping its width (so that only
    the pool changes its shape)."""
    return custom_spec(block="basic", layers=(2, 2, 1), widths=(4, 4, 8), stem="vdcnn", stem_width=4,
                       input_size=16, in_channels=2, num_classes=3, shortcut=shortcut, preact=preact,
                       residual=residual, dims=1, conv_bias=True, downsampling="maxpool")


def with_random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics so that ReLU masks, scales and the pool's choices matter."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    return model


@pytest.mark.parametrize(("preact", "shortcut"), [(False, "A"), (False, "B"), (True, "B")])
def test_all_path_gradients_through_the_pool_sum_to_the_input_gradient(preact, shortcut):
    """Through the pool (the gradient enters both paths of a pooling block through it), each
    block's own combine step and its shortcut (option A's subsample-and-pad or a width-1
    projection), the 2^n path gradients are the terms of prod(J_P (J_F + J_s)): their sum is
    autograd's gradient at the block stack's input."""
    spec = vdcnn_style(preact, shortcut)
    model = with_random_bn(build_model(spec, seed=1).double().eval())
    pools = [b.plan.name for _, b in model.blocks() if b.plan.entry]
    assert pools == ["layer2.0", "layer3.0"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 16, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    total, ref = path_gradient_sum_and_autograd(model, x, y)
    assert total.shape == (3, 4, 16)
    torch.testing.assert_close(total, ref, rtol=1e-7, atol=1e-9)


def test_the_skip_of_a_pooling_block_is_its_pool_not_the_identity():
    """All-skip path (length 0) of a VDCNN-style net with identity shortcuts where the width holds:
    the output is the input max-pooled once per pooling block (then option A's pad at the widening)."""
    model = build_model(vdcnn_style(False, "A"), seed=0).double().eval()
    blocks = [b for _, b in model.blocks()]
    x = torch.randn(2, 4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    skip = paths.path_output(model, x, (0,) * len(blocks))
    pooled = nn.functional.max_pool1d(nn.functional.max_pool1d(x, 3, 2, 1), 3, 2, 1)  # layer2.0, layer3.0
    expected = nn.functional.pad(pooled, (0, 0, 2, 2))  # 4 -> 8 channels, zero-padded on both sides
    torch.testing.assert_close(skip, expected)


# ------------------------------------------------------------------ counts (no weights needed)
@pytest.mark.parametrize(("name", "blocks"), [("vdcnn9", 4), ("vdcnn17", 8), ("vdcnn29", 14), ("vdcnn49", 24)])
def test_vdcnn_path_counts_are_binomial(name, blocks):
    """Conneau et al. 2017 Table 2: 2-2-2-2, 4-4-4-4, 10-10-4-4 and 16-16-10-6 conv layers per stage,
    two per block: 4, 8, 14 and 24 blocks, so 2^n paths of binomial lengths."""
    n = MODELS[name].num_blocks
    assert n == blocks
    d = paths.length_distribution(n)
    assert d.total == 2 ** blocks and d.counts[n // 2] == math.comb(n, n // 2)
    assert d.mean == blocks / 2


def test_a_plain_vdcnn_has_a_single_path():
    model = build_model(vdcnn_style(False, "A", residual=False), seed=0).eval()
    x = torch.randn(2, 2, 16)
    with pytest.raises(LensError, match="single path"):
        paths.gradient_by_length(model, x, torch.tensor([0, 1]))


# ------------------------------------------------------------------ the shipped MNIST-1D net
@pytest.fixture(scope="module")
def r20():
    ck = load_checkpoint(shipped_checkpoints()["mnist1d_resnet20"])
    return ck, dataset_for(ck.meta)


def test_gradient_decays_with_path_length_on_the_shipped_1d_net(r20):
    ck, data = r20
    df = paths.gradient_by_length(ck.model, data.x_test[:32], data.y_test[:32], samples=5)
    assert list(df["length"]) == list(range(10))
    assert df["mean"].iloc[0] > 10 * df["mean"].iloc[-1]  # exponential decay with length
    lo, hi = paths.effective_range(df, 0.9)
    assert 0 <= lo <= hi <= 9 and hi - lo < 9


def test_stored_results_of_the_shipped_1d_net(r20):
    """Shipped beside it (tools/make_path_results.py) for the file that ships, at the page's defaults."""
    f = shipped_checkpoints()["mnist1d_resnet20"]
    doc = json.loads(paths.results_file(f).read_text())
    assert doc["sha256"] == paths.file_digest(f)
    stored = paths.load_results(f)
    default = paths.MeasureSettings()
    assert set(stored) == {("trained", default), ("initialisation", default)}
    trained = stored[("trained", default)]
    assert trained["length"].tolist() == list(range(10))
    assert trained["paths"].tolist() == [str(math.comb(9, k)) for k in range(10)]
    assert trained["mean"].iloc[0] > 10 * trained["mean"].iloc[-1]


def test_measuring_refuses_inputs_of_the_other_dimensionality(r20):
    ck, data = r20
    images = torch.zeros(4, 1, 16, 16)
    with pytest.raises(DatasetError, match=re.escape(
            "resnet1d_20 is a 1-D net: it takes sequences (N × C × L), but the test inputs are images "
            "(4 × 1 × 16 × 16)")):
        paths.measure(ck.model, images, torch.zeros(4, dtype=torch.long), paths.MeasureSettings(batch=4))
    two_d = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    with pytest.raises(DatasetError, match="is a 2-D net: it takes images"):
        paths.gradient_by_length(two_d.model, data.x_test[:4], data.y_test[:4])
    with pytest.raises(LensError, match=r"larger than the test split \(8 sequences\)"):
        paths.measure(ck.model, data.x_test[:8], data.y_test[:8], paths.MeasureSettings(batch=9))


# ------------------------------------------------------------------ the page
pytestmark = pytest.mark.usefixtures("own_run_store")


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def paths_page(pick: str, trained: dict | None = None) -> AppTest:
    """A new session of the page with ``pick`` chosen from the start (not after the default 56-layer net)."""
    return page_with_pick("paths", "paths_ckpt", pick, trained)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_page_shows_the_shipped_1d_nets_stored_results_then_measures_it(r20):
    at = paths_page(R20)
    at.selectbox(key="paths_net").select("vdcnn29").run()
    clean(at)
    assert metrics(at)["Paths"] == "16,384" and metrics(at)["Mean length"] == "7"
    assert "Stored results: measured once with `tools/make_path_results.py` and shipped beside the checkpoint " \
           "(10 samples per length, batch 64, seed 0). **Measure** measures again here." in at.caption.values
    assert metrics(at)["Residual blocks n"] == "9"
    shown = at.dataframe[-1].value
    stored = paths.load_results(shipped_checkpoints()["mnist1d_resnet20"])[("trained", paths.MeasureSettings())]
    trained = shown[shown["net"] == "trained"].reset_index(drop=True)
    assert trained["mean"].tolist() == stored["mean"].tolist()

    at.number_input(key="paths_samples").set_value(1).run()
    at.number_input(key="paths_batch").set_value(8).run()
    at.checkbox(key="paths_init").uncheck().run()
    at.button(key="paths_run").click().run()
    clean(at)
    assert "Measured in this session (1 samples per length, batch 8, seed 0)." in at.caption.values
    ck, data = r20
    fresh = paths.measure(ck.model, data.x_test, data.y_test, paths.MeasureSettings(1, 8, 0))
    assert at.dataframe[-1].value["mean"].tolist() == fresh["mean"].tolist()


def test_the_page_says_when_a_1d_net_meets_images():
    """A 1-D net whose metadata names the 16 px digits (as a hand-made file can: same channels and
    classes), and a 2-D net whose metadata names MNIST-1D: a message each, no traceback."""
    one_d = load_checkpoint(shipped_checkpoints()["mnist1d_resnet20"])
    two_d = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    wrong = {"seq": Checkpoint(one_d.spec, one_d.model, two_d.meta, False),
             "img": Checkpoint(two_d.spec, two_d.model, one_d.meta, False)}
    at = paths_page("trained here: seq", wrong)
    assert [e.value for e in at.error] == [
        "resnet1d_20 is a 1-D net: it takes sequences (N × C × L), but the test data of digits16 are images "
        "(450 × 1 × 16 × 16)"]
    assert "Residual blocks n" not in metrics(at)
    at.selectbox(key="paths_ckpt").select("trained here: img").run()
    clean(at)
    assert [e.value for e in at.error] == [
        "cifar_resnet20 is a 2-D net: it takes images (N × C × H × W), but the test data of mnist1d are sequences "
        "(1000 × 1 × 40)"]


def test_a_1d_net_without_dataset_metadata_is_measured_on_mnist1d(r20):
    from analysis.core.meta import RunMeta

    ck, data = r20
    bare = Checkpoint(ck.spec, ck.model, RunMeta(normalisation=ck.meta.normalisation), True)
    at = paths_page("trained here: bare", {"bare": bare})
    assert "trained here: bare's metadata names no dataset the app can rebuild: it is measured on the test split " \
           "of MNIST-1D (Greydanus 2020), the app's dataset of sequences." in at.caption.values
    at.number_input(key="paths_samples").set_value(1).run()
    at.number_input(key="paths_batch").set_value(8).run()
    at.checkbox(key="paths_init").uncheck().run()
    at.button(key="paths_run").click().run()
    clean(at)
    fresh = paths.measure(ck.model, data.x_test, data.y_test, paths.MeasureSettings(1, 8, 0))
    assert at.dataframe[-1].value["mean"].tolist() == fresh["mean"].tolist()
