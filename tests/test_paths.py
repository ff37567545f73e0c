"""Path ensemble: exact enumeration on a linear residual net, distribution counts, the estimator."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from analysis.core.errors import LensError
from analysis.experiments import paths
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from tests.helpers import path_gradient_sum_and_autograd


class LinBlock(nn.Module):
    """Duck-types analysis.arch.models.Block: a linear branch, identity shortcut, plain add."""

    plan = SimpleNamespace(residual=True, entry=())
    downsample = None

    def enter(self, x):
        return x  # no pool in front of the block

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def residual_branch(self, x):
        return x @ self.w.T

    def shortcut(self, x):
        return x

    def gate_value(self, x):
        return None  # no gate: the original block

    def combine(self, r, s, g=None):
        return r + s

    def forward(self, x):
        return self.combine(self.residual_branch(x), self.shortcut(x))


class LinNet(nn.Module):
    """x_{i+1} = x_i + W_i x_i: every path is a product of some W's."""

    def __init__(self, n: int, d: int = 6, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(LinBlock(0.4 * torch.randn(d, d, generator=g, dtype=torch.float64))
                                    for _ in range(n))
        self.fc = nn.Linear(d, classes).double()

    def blocks(self):
        return [(f"b{i}", b) for i, b in enumerate(self.layers)]

    def stem(self, x):
        return x

    def head(self, x):
        return self.fc(x)

    def forward(self, x):
        for b in self.layers:
            x = b(x)
        return self.fc(x)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_sum_over_all_paths_equals_output(n):
    net = LinNet(n)
    x = torch.randn(5, 6, dtype=torch.float64)
    full = x
    for b in net.layers:
        full = b(full)
    total = sum(paths.path_output(net, x, p) for p in paths.enumerate_paths(n))
    torch.testing.assert_close(total, full, rtol=1e-10, atol=1e-10)


def explicit_path_grad(net, g_out, subset):
    g = g_out
    for i in range(len(net.layers) - 1, -1, -1):
        if i in subset:
            g = g @ net.layers[i].w
    return float(g.detach().norm(dim=1).mean())


def test_estimator_matches_exact_enumeration_small_n():
    n = 5
    net = LinNet(n, seed=1)
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    df = paths.gradient_by_length(net, x, y, samples=1000)  # >= C(5, k): exhaustive
    h = x.clone().requires_grad_(True)
    out = h
    for b in net.layers:
        out = b(out)
    g_out = torch.autograd.grad(nn.functional.cross_entropy(net.fc(out), y), out)[0]
    for row in df.itertuples():
        exact = [explicit_path_grad(net, g_out, set(c)) for c in itertools.combinations(range(n), row.length)]
        assert row.exhaustive and row.samples == math.comb(n, row.length)
        assert row.mean == pytest.approx(sum(exact) / len(exact), rel=1e-9)


def test_sampled_estimator_agrees_with_enumeration():
    n, k = 10, 5
    net = LinNet(n, seed=2)
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.zeros(8, dtype=torch.long)
    sampled = paths.gradient_by_length(net, x, y, samples=200, ks=[k], seed=3)
    exact = paths.gradient_by_length(net, x, y, samples=math.comb(n, k), ks=[k])
    assert not sampled["exhaustive"].item() and exact["exhaustive"].item()
    assert sampled["mean"].item() == pytest.approx(exact["mean"].item(), rel=0.1)


@pytest.mark.parametrize("n", [0, 1, 6, 54, 600])
def test_distribution_counts(n):
    d = paths.length_distribution(n)
    assert sum(d.counts) == 2 ** n == d.total
    assert d.counts == tuple(math.comb(n, k) for k in range(n + 1))
    assert d.share(0, n) == 1
    assert d.mean == n / 2 and d.std == pytest.approx(math.sqrt(n) / 2)


def test_resnet110_has_54_blocks_and_binomial_share():
    d = paths.length_distribution(54)
    assert d.counts[27] == math.comb(54, 27) == 1_946_939_425_648_112
    # lengths 24..30 (27 +/- 3): scipy.stats.binom(54, 0.5) gives 0.6591090587799029
    assert float(d.share(24, 30)) == pytest.approx(0.6591090587799029, rel=1e-12)
    assert d.share(0, 0) == __import__("fractions").Fraction(1, 2 ** 54)


def test_unrolled_graph_has_two_to_the_n_paths():
    for n in range(1, 7):
        g = paths.unrolled_graph(n)
        assert sum(1 for _ in __import__("networkx").all_simple_paths(g, "x0", f"x{n}")) == 2 ** n
        ps = paths.enumerate_paths(n)
        assert len(ps) == 2 ** n and [sum(p) for p in ps] == sorted(sum(p) for p in ps)
    assert paths.path_label((1, 0, 1)) == "x0 → f1 → skip → f3 → x3"
    assert paths.path_nodes((1, 0)) == ["x0", "f1", "skip2", "x2"]
    with pytest.raises(LensError):
        paths.unrolled_graph(20)


def test_algebra_lines():
    lines = paths.algebra(2)
    assert lines[1].endswith("x_0 + f_1(x_0)")
    assert any("2^{2} = 4" in line for line in lines)


def test_gradient_decays_on_shipped_net_and_effective_range():
    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    d = dataset_for(c.meta)
    c.model.train()
    df = paths.gradient_by_length(c.model, d.x_test[:32], d.y_test[:32], samples=5)
    assert c.model.training  # mode restored
    c.model.eval()
    assert list(df["length"]) == list(range(10))
    assert df["mean"].iloc[0] > 10 * df["mean"].iloc[-1]  # exponential decay with length
    lo, hi = paths.effective_range(df, 0.9)
    assert 0 <= lo <= hi <= 9 and hi - lo < 9
    plain = load_checkpoint(shipped_checkpoints()["digits_plain20"])
    with pytest.raises(LensError, match="single path"):
        paths.gradient_by_length(plain.model, d.x_test[:8], d.y_test[:8])


@pytest.mark.parametrize("preact", [False, True])
def test_all_path_gradients_sum_to_the_input_gradient(preact):
    """Through every block's own combine step (ReLU mask after the add, or none), the 2^n path
    gradients are the terms of the product of (J_F + J_s): their sum is autograd's gradient."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import custom_spec

    spec = custom_spec(block="basic", layers=(2, 2), widths=(4, 8), stem="cifar", stem_width=4, input_size=6,
                       num_classes=3, shortcut="B", preact=preact)
    model = build_model(spec, seed=1).double().eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial BN statistics so masks and scales matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    x = torch.randn(3, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    total, ref = path_gradient_sum_and_autograd(model, x, y)
    torch.testing.assert_close(total, ref, rtol=1e-7, atol=1e-9)


def test_the_effective_range_holds_exactly_the_asked_mass():
    """A range whose gradient is exactly the asked share counts (Veit et al.'s 'at least'): 0.5 + 0.4 of
    a total of 1 is 90 %, so lengths 0–1 are the effective range, not 0–2."""
    import pandas as pd

    df = pd.DataFrame({"length": [0, 1, 2], "total (rel.)": [0.5, 0.4, 0.1]})
    assert paths.effective_range(df, 0.9) == (0, 1)
    assert paths.effective_range(df, 0.95) == (0, 2)
