"""Path ensembles on any residual net (Veit et al. 2016): a program cut into its residual units gives, path
for path, the input gradient a hand-written forward gives when each unit off the path has its branch
detached and each unit on it its shortcut; the shipped ResNet measured through its exported program
gives its blocks' numbers; nets whose units do not split into two paths are refused with a sentence."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.graphnet import export_module
from analysis.arch.models import ResNet
from analysis.core.errors import ConfigError
from analysis.experiments import paths
from analysis.experiments.chain import ChainError, ProgramChain
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from tests import zoo


# ----------------------------------------------------------------------------- tiny nets, with their paths by hand
class Res(nn.Module):
    """y = after(a·s(x) + F(x)): identity, scaled (a = 0.5) or projection shortcut, ReLU after the add or not."""

    def __init__(self, d: int, d_out: int | None = None, scale: float = 1.0, relu: bool = False) -> None:
        super().__init__()
        d_out = d_out or d
        self.f = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d_out))
        self.proj = nn.Linear(d, d_out) if d_out != d else None
        self.scale, self.relu = scale, relu

    def operands(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.proj(x) if self.proj is not None else x if self.scale == 1 else self.scale * x
        return s, self.f(x)

    def join(self, s: Tensor, r: Tensor) -> Tensor:
        return F.relu(s + r) if self.relu else s + r

    def forward(self, x: Tensor) -> Tensor:
        return self.join(*self.operands(x))


class ResMLP(nn.Module):
    """Four units of every kind of :class:`Res`, and a LayerNorm between units 0 and 1 outside both:
    it belongs to both paths of unit 1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(5, 6)
        self.units = nn.ModuleList([Res(6), Res(6, scale=0.5), Res(6, 4), Res(4, relu=True)])
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(4, 3)

    def enter(self, x: Tensor) -> Tensor:
        return torch.tanh(self.stem(x))

    def between(self, i: int, h: Tensor) -> Tensor:
        return self.norm(h) if i == 1 else h

    def forward(self, x: Tensor) -> Tensor:
        h = self.enter(x)
        for i, u in enumerate(self.units):
            h = u(self.between(i, h))
        return self.head(h)


def mlp_by_hand(net: ResMLP, x: Tensor, y: Tensor, subset: set[int]) -> Tensor:
    """The gradient at the first unit's input along one path: a unit on the path with its shortcut
    detached, one off it with its branch detached (forward values unchanged)."""
    h0 = net.enter(x).detach().requires_grad_(True)
    h = h0
    for i, u in enumerate(net.units):
        s, r = u.operands(net.between(i, h))
        h = u.join(s.detach(), r) if i in subset else u.join(s, r.detach())
    (g,) = torch.autograd.grad(F.cross_entropy(net.head(h), y), h0)
    return g


def transformer_by_hand(net: zoo.Transformer, x: Tensor, y: Tensor, subset: set[int]) -> Tensor:
    """The same for zoo's transformers: units 2k and 2k + 1 are block k's attention and MLP."""
    h0 = (net.embed(x) + net.pos).detach().requires_grad_(True)
    h = h0
    for i in range(4):
        b = net.blocks[i // 2]
        pre = isinstance(b, zoo.PreNormBlock)
        branch = (b.attn, b.mlp)[i % 2]
        norm = (b.ln1, b.ln2)[i % 2]
        s, r = h, branch(norm(h) if pre else h)
        s, r = (s.detach(), r) if i in subset else (s, r.detach())
        h = s + r if pre else norm(s + r)
    (g,) = torch.autograd.grad(F.cross_entropy(net.head(h.mean(1)), y), h0)
    return g


def tiny(kind: str) -> tuple[ResNet, Tensor, Tensor]:
    """A float64 net and 10 inputs with labels (the program is exported on 4: 4 + 4 + 2 padded)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # nn's initialisers draw from the global generator: seeded, as the zoo's tests do
    if kind == "mlp":
        net: nn.Module = ResMLP()
        x = torch.randn(10, 5, generator=g, dtype=torch.float64)
    else:
        net = zoo.Transformer(zoo.PreNormBlock if kind == "pre-norm" else zoo.PostNormBlock, depth=2)
        x = torch.randn(10, zoo.T, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    return net.double().eval(), x, y


BY_HAND = {"mlp": mlp_by_hand, "pre-norm": transformer_by_hand, "post-norm": transformer_by_hand}


def close(ours: Tensor, ref: Tensor) -> None:
    """Equal up to float64 rounding, relative to the gradient's scale (no absolute slack that could hide it)."""
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("exported", [4, 10])
@pytest.mark.parametrize("kind", ["mlp", "pre-norm", "post-norm"])
def test_every_path_gradient_of_a_program_is_its_hand_written_path(kind: str, exported: int) -> None:
    """All 16 paths of a 4-unit net, through the program's tapes and by hand; and the table of
    per-example norms, in batches that are not a multiple of the exported one. Exported on 4 the
    10 inputs run in pieces; on 10 in one call, where an identity shortcut hands its gradient on as is."""
    net, x, y = tiny(kind)
    chain = ProgramChain(export_module(net, (x[:exported],)))
    assert chain.n == 4
    if kind == "mlp":  # the norm sits between unit 0's output and unit 1's entry, in unit 1's segment
        assert chain.units[1].entry_node != chain.units[0].exit_node
        assert [u.shortcut for u in chain.units] == ["identity", "identity", "projection", "identity"]
        assert [u.post for u in chain.units] == ["", "", "", "relu"]
    subsets = [{i for i in range(4) if p[i]} for p in itertools.product((0, 1), repeat=4)]
    with torch.enable_grad():
        tapes, g_out = paths._tapes(chain, x, y)
        refs = [BY_HAND[kind](net, x, y, s) for s in subsets]
        for s, ref in zip(subsets, refs, strict=True):
            close(paths._path_gradient(tapes, g_out, s), ref)
    identities = [t.identity for t in tapes]
    assert any(identities) == (exported == len(x))  # both of _JoinTape.back's ways out are taken
    norms = paths.example_norms(chain, x, y, subsets, batch_size=7)
    close(norms, torch.stack([r.flatten(1).norm(dim=1) for r in refs]))
    assert len({round(float(n.mean()), 12) for n in norms}) == len(subsets)  # every path tells apart


@pytest.mark.parametrize("kind", ["mlp", "post-norm"])
def test_a_programs_path_gradients_sum_to_its_input_gradient(kind: str) -> None:
    """The 2^n path gradients expand autograd's gradient at the first unit's input, and the tapes'
    forward is the chain's own, bit for bit."""
    net, x, y = tiny(kind)
    chain = ProgramChain(export_module(net, (x[:4],)))
    with torch.enable_grad():
        tapes, g_out = paths._tapes(chain, x, y)
        total = sum(paths._path_gradient(tapes, g_out, {i for i in range(4) if p[i]})
                    for p in itertools.product((0, 1), repeat=4))
        h0 = chain.stem(x).detach().requires_grad_(True)
        h = h0
        for i in range(4):
            assert torch.equal(tapes[i].y, chain.unit(i, h.detach(), True))
            h = chain.unit(i, h, True)
        (ref,) = torch.autograd.grad(F.cross_entropy(chain.head(h), y), h0)
    assert isinstance(total, Tensor)
    close(total, ref)


# ----------------------------------------------------------------------------- the shipped ResNet, exported
@pytest.fixture(scope="module")
def resnet20() -> tuple[ResNet, Tensor, Tensor]:
    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    d = dataset_for(c.meta)
    return c.model, d.x_test[:32], d.y_test[:32]


@pytest.mark.parametrize("exported", [1, 5])
def test_the_exported_resnet_measures_as_its_blocks(resnet20: tuple[ResNet, Tensor, Tensor], exported: int) -> None:
    """Its program cut into units gives the blocks' table (run in pieces of 1, or of 5 with padding)."""
    model, x, y = resnet20
    chain = ProgramChain(export_module(model, (x[:exported],)))
    ours = paths.gradient_by_length(chain, x, y, samples=2)
    theirs = paths.gradient_by_length(model, x, y, samples=2)
    pd.testing.assert_frame_equal(ours[["length", "samples", "exhaustive", "paths"]],
                                  theirs[["length", "samples", "exhaustive", "paths"]])
    for col in ("mean", "std"):
        torch.testing.assert_close(torch.tensor(ours[col].to_numpy()), torch.tensor(theirs[col].to_numpy()),
                                   rtol=1e-5, atol=0)
    assert theirs["mean"].iloc[0] > 10 * theirs["mean"].iloc[-1]  # the lengths differ: a swap would show


def test_a_shard_of_a_program_measures_its_examples_as_the_whole_does(resnet20: tuple[ResNet, Tensor, Tensor]) -> None:
    """What a shard runs (example_norms with the whole set's size) on a program: the whole's columns."""
    model, x, y = resnet20
    chain = ProgramChain(export_module(model, (x[:8],)))
    subsets = [set(), {0}, {3, 8}, set(range(9))]
    whole = paths.example_norms(chain, x, y, subsets)
    part = paths.example_norms(chain, x[8:24], y[8:24], subsets, total=32)
    assert torch.equal(part, whole[:, 8:24])


def test_grad_state_is_restored_and_the_model_left_as_it_was(resnet20: tuple[ResNet, Tensor, Tensor]) -> None:
    model, x, y = resnet20
    chain = ProgramChain(export_module(model, (x[:4],)))
    with torch.no_grad():
        norms = paths.example_norms(chain, x[:4], y[:4], [set(), {1}])
        assert not torch.is_grad_enabled()
    assert norms.shape == (2, 4) and bool((norms > 0).all())


# ----------------------------------------------------------------------------- refusals
def test_a_net_without_units_or_with_nested_ones_is_refused() -> None:
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(ChainError, match="has no residual unit"):
        paths.gradient_by_length(ProgramChain(export_module(plain, (torch.zeros(2, 8),))), torch.zeros(2, 8),
                                 torch.zeros(2, dtype=torch.long))
    with pytest.raises(ChainError, match="inside another unit's branch, so the units are not one chain"):
        ProgramChain(export_module(zoo.ResidualOfResidual().eval(), (torch.zeros(1, 8, 6, 6),)))


def test_a_gated_unit_is_refused_with_its_join() -> None:
    """A highway's gate would carry gradient on a route no path takes: refused before any work."""
    net = nn.Sequential(nn.Linear(8, zoo.D), zoo.Highway(), nn.Linear(zoo.D, 3)).eval()
    chain = ProgramChain(export_module(net, (torch.zeros(2, 8),)))
    with pytest.raises(ChainError, match=r"unit 1 is gated \(\(1−g\)·s \+ g·F\); the path decomposition of a "
                                         "program's units applies to ungated joins only"):
        paths.gradient_by_length(chain, torch.zeros(2, 8), torch.zeros(2, dtype=torch.long))


def test_inputs_of_another_shape_are_refused() -> None:
    net, x, _ = tiny("mlp")
    chain = ProgramChain(export_module(net, (x[:4],)))
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(batch, 5\), got \(3, 6\)"):
        paths.check_paths_net(chain, torch.zeros(3, 6, dtype=torch.float64))
