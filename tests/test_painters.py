"""The painters comparison: its sequences, its reading of a record (intervals and verdicts from the
per-seed counts alone), and one measured net whose counts are recomputed by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from analysis.core.errors import CheckpointError, ConfigError
from analysis.studies import painters


def test_sequences_of_nine_layers():
    s = painters.sequences(9)
    assert s["intact"] == [(i, True) for i in range(9)]
    assert s["delete middle"][4] == (4, False) and sum(not k for _, k in s["delete middle"]) == 1
    assert [i for i, _ in s["swap middle"]] == [0, 1, 2, 3, 5, 4, 6, 7, 8]
    assert [i for i, _ in s["repeat middle"]] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]
    assert s["parallel middle"] == [(0, True), (1, True), (2, True), (3, True), ((4, 5), True), (6, True),
                                    (7, True), (8, True)]
    assert painters.middle(4) == 1 and painters.middle(3) == 1
    with pytest.raises(ConfigError):
        painters.middle(2)


def _record(residual_wrong, plain_wrong, test_size=100, classes=10):
    def runs(per_seed):
        return [{"seed": s, "wrong": dict(w), "refused": {} if "parallel middle" in w else
                 {"parallel middle": "post-activation"}} for s, w in enumerate(per_seed)]
    return {"format": painters.FORMAT, "seeds": list(range(len(residual_wrong))), "nets": {
        "r": {"dataset": "d", "family": "F", "residual": True, "test_size": test_size, "classes": classes,
              "runs": runs(residual_wrong)},
        "p": {"dataset": "d", "family": "F", "residual": False, "test_size": test_size, "classes": classes,
              "runs": runs(plain_wrong)}}}


def _seed(intact, first, mid, last, swap, repeat):
    return {"intact": intact, "delete first": first, "delete middle": mid, "delete last": last,
            "swap middle": swap, "repeat middle": repeat}


def test_table_and_readings_from_counts():
    res = [_seed(2, 40, 4, 30, 3, 5), _seed(3, 50, 5, 35, 4, 6), _seed(2, 45, 3, 25, 2, 4)]
    plain = [_seed(5, 90, 88, 85, 70, 60), _seed(6, 89, 86, 90, 75, 61), _seed(4, 88, 90, 87, 72, 62)]
    rec = _record(res, plain)
    t = painters.table(rec)
    row = t[(t.net == "r") & (t.condition == "delete middle")].iloc[0]
    assert row.error == pytest.approx(0.04)  # (4 + 5 + 3) / 3 / 100
    # paired change: 2, 2, 1 points -> mean 5/3 pp
    assert row.change == pytest.approx(5 / 300)
    assert row.kept == pytest.approx((0.96 / 0.98 + 0.95 / 0.97 + 0.97 / 0.98) / 3)
    par = t[(t.net == "r") & (t.condition == "parallel middle")].iloc[0]
    assert math.isnan(par.error) and par.note == "post-activation"
    verdicts = {(r.net, r.paper, r.claim.split()[1]): r.agrees for r in painters.readings(rec)}
    assert verdicts[("r", "Veit et al. 2016", "one")] is True  # >= 90 % kept
    assert verdicts[("r", "Sun et al. 2024", "first")] is True  # first hurts more than middle, every seed
    assert verdicts[("p", "Veit et al. 2016", "one")] is True  # plain: 86-90 % error, chance 90 %


def test_a_reading_that_disagrees_and_one_seed_that_cannot_tell():
    # the middle deletion hurts more than the first on every seed: Sun et al.'s claim contradicted
    res = [_seed(2, 5, 12, 3, 3, 5), _seed(3, 6, 10, 4, 4, 6), _seed(2, 5, 11, 2, 2, 4)]
    rec = _record(res, res)
    v = {(r.net, r.paper, r.claim.split()[1]): r.agrees for r in painters.readings(rec)}
    assert v[("r", "Sun et al. 2024", "first")] is False
    # as much as the first, give or take: the interval holds 0, so the seeds do not decide
    res = [_seed(2, 10, 12, 3, 3, 5), _seed(3, 11, 10, 4, 4, 6), _seed(2, 9, 11, 2, 2, 4)]
    v = {(r.net, r.paper, r.claim.split()[1]): r.agrees for r in painters.readings(_record(res, res))}
    assert v[("r", "Sun et al. 2024", "first")] is None
    one = _record(res[:1], res[:1])
    assert all(r.agrees is None for r in painters.readings(one))
    assert "(one run)" in next(r.measured for r in painters.readings(one) if r.paper == "Lad et al. 2024")


def test_a_record_is_checked_when_read(tmp_path):
    rec = _record([_seed(2, 40, 4, 30, 3, 5)], [_seed(5, 90, 88, 85, 70, 60)])
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rec))
    assert painters.load(p)["nets"]["r"]["test_size"] == 100
    rec["nets"]["r"]["runs"][0]["wrong"]["intact"] = 101
    p.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="not a count"):
        painters.load(p)
    p.write_text("{}")
    with pytest.raises(CheckpointError, match="not a painters"):
        painters.load(p)


class _Stack(nn.Module):
    """x -> head(b4(b3(b2(b1(stem x))))), each b a pre-activation residual MLP (nothing after the add)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Linear(6, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh()) for _ in range(4))
        self.head = nn.Linear(8, 3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.7

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


def test_measured_counts_equal_hand_written_forwards():
    from analysis.experiments.chain import ProgramChain

    net = _Stack().eval()
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    ep = torch.export.export(net, (x[:8],))
    m = painters.measure(ProgramChain(ep, name="stack"), x, y)
    F = [lambda h, b=b: b(h) for b in net.blocks]

    def run(steps):
        h = net.stem(x)
        for s in steps:
            h = s(h)
        return int((net.head(h).argmax(1) != y).sum())

    with torch.no_grad():
        keep = [lambda h, f=f: h + f(h) for f in F]
        want = {"intact": run(keep), "delete first": run(keep[1:]), "delete middle": run([keep[0], *keep[2:]]),
                "delete last": run(keep[:3]), "swap middle": run([keep[0], keep[2], keep[1], keep[3]]),
                "repeat middle": run([keep[0], keep[1], keep[1], keep[2], keep[3]]),
                "parallel middle": run([keep[0], lambda h: h + F[1](h) + F[2](h), keep[3]])}
    assert m["wrong"] == want and m["refused"] == {}
    # the adds sit in the net's own forward, so the units are named after it, numbered in order
    assert (m["first"], m["middle"], m["next"], m["last"], m["layers"]) == ("(net)[1]", "(net)[2]", "(net)[3]",
                                                                           "(net)[4]", 4)


class _Block(nn.Module):
    """Two pre-norm residual units (x + a(n1(x)), then + m(n2(.))), or post-norm ones (n(x + a(x)))."""

    def __init__(self, post: bool, scale: float = 1.0, tail: bool = False) -> None:
        super().__init__()
        self.post, self.scale = post, scale
        self.tail = nn.Linear(8, 8) if tail else None
        self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.attn, self.mlp = nn.Linear(8, 8), nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x):
        if self.post:
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        x = self.scale * x + self.attn(self.norm1(x)) if self.scale != 1.0 else x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x if self.tail is None else self.tail(x)  # a layer whose last op is not its add


class _Tower(nn.Module):
    def __init__(self, post: bool = False, scale: float = 1.0, tail: bool = False, between: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.stem, self.head = nn.Linear(5, 8), nn.Linear(8, 4)
        self.blocks = nn.ModuleList(_Block(post, scale, tail) for _ in range(4))
        # a norm run between blocks, outside them: it belongs to the next layer's segment
        self.mids = nn.ModuleList(nn.LayerNorm(8) for _ in range(4)) if between else None
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        h = self.stem(x)
        for i, b in enumerate(self.blocks):
            h = b(h if self.mids is None or i == 0 else self.mids[i](h))
        return self.head(h)


def test_residual_layers_run_in_parallel_as_their_changes_summed():
    from analysis.experiments import lesion
    from analysis.experiments.chain import LayerChain

    net = _Tower().eval()
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    chain = LayerChain(torch.export.export(net, (x[:6],)), [f"blocks.{i}" for i in range(4)], name="tower")
    assert [u.shortcut for u in chain.units] == ["identity"] * 4
    seq = painters.sequences(4)["parallel middle"]
    with torch.no_grad():
        h = net.blocks[0](net.stem(x))
        h = h + (net.blocks[1](h) - h) + (net.blocks[2](h) - h)  # both layers read h; their changes add
        want = net.head(net.blocks[3](h)).argmax(1)
    assert torch.equal(lesion.predict_sequences(chain, x, [seq])[0], want)
    post = _Tower(post=True).eval()
    pchain = LayerChain(torch.export.export(post, (x[:6],)), [f"blocks.{i}" for i in range(4)], name="post")
    assert [u.shortcut for u in pchain.units] == ["none"] * 4  # a norm after each add: not h + F(h)
    with pytest.raises(ConfigError, match="blocks.1 holds residual units but is not its input plus one change"):
        pchain.check_sequence(seq)
    # 0.5·x + F(x): the layer is not its input plus a change, though its last op is an add
    scaled = _Tower(scale=0.5).eval()
    schain = LayerChain(torch.export.export(scaled, (x[:6],)), [f"blocks.{i}" for i in range(4)], name="scaled")
    assert [u.shortcut for u in schain.units] == ["none"] * 4
    # a Linear after the last add; a norm between blocks (the first block has none before it)
    for odd, want in ((_Tower(tail=True), ["none"] * 4), (_Tower(between=True), ["identity"] + ["none"] * 3)):
        chain = LayerChain(torch.export.export(odd.eval(), (x[:6],)), [f"blocks.{i}" for i in range(4)], name="odd")
        assert [u.shortcut for u in chain.units] == want


def _verdicts(res, plain):
    """Verdicts by (net, paper, the claim's distinguishing word: 'one', 'first', 'last', 'delete', 'swap')."""
    def word(claim):
        first, second = claim.split()[:2]
        return first if second == "of" else second
    return {(r.net, r.paper, word(r.claim)): r.agrees for r in painters.readings(_record(res, plain))}


def test_the_thresholds_of_the_readings():
    # every seed identical (a zero-width interval), one test input either side of each threshold
    res = [_seed(0, 9, 9, 9, 27, 0)] * 3  # middle deleted: 91 % kept; swap: 73 % kept
    plain = [_seed(0, 81, 81, 81, 81, 81)] * 3  # chance 90 %: 81 % error is within 10 points
    v = _verdicts(res, plain)
    assert v[("r", "Veit et al. 2016", "one")] is True
    assert v[("r", "Lad et al. 2024", "swap")] is True
    assert v[("p", "Veit et al. 2016", "one")] is True
    # first - middle = 0 exactly: "matters more" claims a difference above 0, so it disagrees
    assert v[("r", "Sun et al. 2024", "first")] is False
    worse = [_seed(0, 11, 11, 11, 29, 0)] * 3  # 89 % and 71 % kept
    v = _verdicts(worse, [_seed(0, 79, 79, 79, 79, 79)] * 3)
    assert v[("r", "Veit et al. 2016", "one")] is False
    assert v[("r", "Lad et al. 2024", "swap")] is False
    assert v[("p", "Veit et al. 2016", "one")] is False


def test_a_net_that_got_everything_wrong_keeps_nothing_to_measure():
    res = [_seed(100, 100, 100, 100, 100, 100)] * 3
    t = painters.table(_record(res, res))
    assert t["kept"].isna().all() and (t["error"].dropna() == 1.0).all()
    assert not [r for r in painters.readings(_record(res, res)) if "kept" in r.measured]


@pytest.mark.parametrize(("change", "said"), [
    (lambda r: r.pop("seeds"), "not a complete"),
    (lambda r: r.update(seeds=5), "not a list of distinct"),
    (lambda r: r["nets"]["r"]["runs"][0]["wrong"].pop("swap middle"), "does not give each condition once"),
    (lambda r: r["nets"]["r"]["runs"].pop(), "not the record's seeds"),
])
def test_an_incomplete_record_is_refused(tmp_path, change, said):
    rec = _record([_seed(2, 40, 4, 30, 3, 5)] * 2, [_seed(5, 90, 88, 85, 70, 60)] * 2)
    change(rec)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=said):
        painters.load(p)
