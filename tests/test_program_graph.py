"""A program whose residual units are not one chain (a unit inside another's branch; a long skip) gets
what applies: deleting units, each deletion run through the whole graph, equal to the net run with
those branches removed by hand; reordering, repeating and parallel runs refused in one sentence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.core.errors import ConfigError
from analysis.experiments import lesion
from analysis.experiments.chain import ChainError, ProgramChain, ProgramGraph
from analysis.experiments.programlesion import by_units, cut
from analysis.run import shard


class Nested(nn.Module):
    """h + f(h + g(h)): the unit h + g(h) sits inside the outer unit's branch; then h + k(h)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.stem, self.f, self.g, self.k, self.head = (nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8),
                                                        nn.Linear(8, 8), nn.Linear(8, 4))
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.8
        self.off: set[str] = set()  # branches removed by hand, for the oracle

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        inner = h if "g" in self.off else h + torch.tanh(self.g(h))
        h = h if "f" in self.off else h + torch.tanh(self.f(inner))
        h = h if "k" in self.off else h + torch.tanh(self.k(h))
        return self.head(h)


class LongSkip(nn.Module):
    """Two units, then the stem's output added back before the head: a long skip past both."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.stem, self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.8
        self.off: set[str] = set()

    def forward(self, x):
        s = torch.tanh(self.stem(x))
        h = s if "a" in self.off else s + torch.tanh(self.a(s))
        h = h if "b" in self.off else h + torch.tanh(self.b(h))
        return self.head(torch.tanh(h) * s)


X = torch.randn(30, 6, generator=torch.Generator().manual_seed(2))


def graph_of(net):
    ep = torch.export.export(net.eval(), (X[:7],))
    with pytest.raises(ChainError, match="not one chain"):
        ProgramChain(ep)
    g = by_units(ep, type(net).__name__)
    assert isinstance(g, ProgramGraph)
    return g


def by_hand(net, off):
    net.off = set(off)
    try:
        with torch.no_grad():
            return net(X).argmax(1)
    finally:
        net.off = set()


@pytest.mark.parametrize(("cls", "branches"), [(Nested, None), (LongSkip, ["a", "b"])])
def test_each_deletion_is_the_net_with_that_branch_removed(cls, branches):
    net = cls()
    g = graph_of(net)
    if branches is None:  # the units in the order of their adds: g's (inner), f's (outer), k's
        branches = ["g", "f", "k"]
    assert g.n == len(branches)
    seqs = [lesion.identity_sequence(g.n)] + [lesion.deletion(g.n, [i]) for i in range(g.n)]
    seqs.append(lesion.deletion(g.n, range(g.n)))
    got = lesion.predict_sequences(g, X, seqs, batch_size=11)
    want = [by_hand(net, []), *(by_hand(net, [b]) for b in branches), by_hand(net, branches)]
    for row, w in zip(got, want, strict=True):
        assert torch.equal(row, w)
    assert any(not torch.equal(w, want[0]) for w in want[1:])  # the deletions change something


def test_what_does_not_apply_is_refused_in_one_sentence():
    g = graph_of(Nested())
    y = by_hand(Nested(), [])
    for kind in ("swap", "repeat", "parallel"):
        with pytest.raises(ConfigError, match="not one chain.*deleting units applies"):
            lesion.run_sweep(kind, g, X, y)
    order = lesion.identity_sequence(g.n)
    order[0], order[1] = order[1], order[0]
    with pytest.raises(ChainError, match="reordering, repeating or running units in parallel"):
        lesion.predict_sequences(g, X, [order])
    df = lesion.run_sweep("k", g, X, y, samples=2)
    assert set(df["k"]) == {0, 1, 2, 3}


def test_cut_offers_the_deletions_and_shards_agree():
    net = Nested()
    ep = torch.export.export(net.eval(), (X[:7],))
    cuts = cut(ep, "nested")
    assert isinstance(cuts.chains["units"], ProgramGraph)
    with pytest.raises(ChainError, match="path decomposition"):
        cuts.units  # noqa: B018  (the property refuses)
    y = by_hand(net, [])
    one = lesion.run_sweep("single", cuts.chains["units"], X, y, batch_size=10)
    many = shard.sharded_sweep("single", cuts.chains["units"], X, y, batch_size=10, shards=3)
    assert one.equals(many) and one["error"].iloc[0] == 0.0
