"""One lesion engine for spec-built and opened nets (issue 24, first part): a program cut into its
residual units runs through the same loop as a ResNet's blocks and gives the same predictions; a
deleted unit equals the net run with that unit's branch zeroed by hand."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
from torch import nn

from analysis.arch.graphnet import export_module
from analysis.experiments import lesion
from analysis.experiments.chain import ChainError, ProgramChain
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from tests import zoo


def sequences(n: int, infos: list[lesion.BlockInfo] | None, seed: int = 0) -> list[list[tuple[int, bool]]]:
    rng = random.Random(seed)
    seqs = [lesion.identity_sequence(n)] + [lesion.deletion(n, [i]) for i in range(n)]
    seqs += [lesion.deletion(n, rng.sample(range(n), rng.randint(2, n))) for _ in range(6)]
    if infos is not None:  # reorders of blocks of equal shapes, some deleted too
        pairs = lesion.swappable_pairs(infos)
        for _ in range(6):
            order = list(range(n))
            a, b = rng.choice(pairs)
            order[a], order[b] = order[b], order[a]
            seqs.append([(i, rng.random() > 0.3) for i in order])
    return seqs


@pytest.mark.parametrize("name", ["digits_resnet20", "digits_plain20"])
def test_a_shipped_net_exported_and_cut_into_units_predicts_as_its_blocks(name: str) -> None:
    """The same sequences through the ResNet's own blocks and through its exported program: identical
    predictions on the digits' test set (deletions, several at once, and reorders)."""
    c = load_checkpoint(shipped_checkpoints()[name])
    d = dataset_for(c.meta)
    infos = lesion.block_infos(c.model)
    if name.startswith("digits_plain"):
        with pytest.raises(ChainError, match="has no residual unit"):
            ProgramChain(export_module(c.model, (d.x_test[:1],)), name=name)
        return
    chain = ProgramChain(export_module(c.model, (d.x_test[:1],)), name=name)
    assert chain.n == len(infos) == 9
    seqs = sequences(len(infos), infos)
    ours = lesion.predict_sequences(c.model, d.x_test, seqs, batch_size=128)
    theirs = lesion.predict_sequences(chain, d.x_test, seqs, batch_size=128)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours[0], ours[1])  # deleting a unit changes some prediction: the test can tell


def zero_output(module: nn.Module) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda m, i, o: torch.zeros_like(o))


@pytest.mark.parametrize("deleted", [0, 1, 2, 3])
def test_deleting_a_transformer_unit_is_its_branch_zeroed_by_hand(deleted: int) -> None:
    torch.manual_seed(0)
    net = zoo.Transformer(zoo.PreNormBlock, depth=2).eval()
    x = torch.randn(16, zoo.T, 8)
    chain = ProgramChain(export_module(net, (x,)))
    assert [u.name for u in chain.units] == ["blocks.0[1]", "blocks.0[2]", "blocks.1[1]", "blocks.1[2]"]
    branch = [net.blocks[0].attn, net.blocks[0].mlp, net.blocks[1].attn, net.blocks[1].mlp][deleted]
    seq = lesion.deletion(chain.n, [deleted])
    with torch.inference_mode():
        h = chain.stem(x)
        for i, keep in seq:
            h = chain.unit(i, h, keep)
        ours = chain.head(h)
        hook = zero_output(branch)
        try:
            theirs = net(x)
        finally:
            hook.remove()
        intact = net(x)
    assert torch.equal(ours, theirs) and not torch.equal(ours, intact)


def test_a_post_norm_units_layer_norm_follows_its_shortcut_when_deleted() -> None:
    """BERT's y = LN(x + F(x)): deleting F keeps the LayerNorm (what alone follows the add)."""
    torch.manual_seed(0)
    net = zoo.Transformer(zoo.PostNormBlock, depth=1).eval()
    x = torch.randn(4, zoo.T, 8)
    chain = ProgramChain(export_module(net, (x,)))
    with torch.inference_mode():
        h = chain.unit(1, chain.unit(0, chain.stem(x), False), True)
        ours = chain.head(h)
        hook = zero_output(net.blocks[0].attn)
        try:
            theirs = net(x)
        finally:
            hook.remove()
    assert torch.equal(ours, theirs)


def test_units_inside_another_units_branch_are_not_one_chain() -> None:
    net = zoo.ResidualOfResidual().eval()
    with pytest.raises(ChainError, match="inside another unit's branch, so the units are not one chain"):
        ProgramChain(export_module(net, (torch.zeros(1, 8, 6, 6),)))


def test_an_additive_long_skip_is_one_unit() -> None:
    """U-Net's additive skip is a residual unit whose branch is the whole way down and up: one unit,
    a chain of one, deletable."""
    torch.manual_seed(0)
    net = zoo.UNet(additive=True).eval()
    x = torch.randn(2, 3, 16, 16)
    chain = ProgramChain(export_module(net, (x,)))
    assert chain.n == 1
    with torch.inference_mode():
        assert torch.equal(chain.head(chain.unit(0, chain.stem(x), True)), net(x))


def test_a_reorder_of_units_whose_shapes_differ_is_refused_with_both_shapes() -> None:
    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    chain = ProgramChain(export_module(c.model, (torch.zeros(1, *c.spec.input_shape()),)))
    seq = lesion.identity_sequence(chain.n)
    seq[2], seq[3] = seq[3], seq[2]  # layer1.2 (16 ch) into layer2.0's place (16 -> 32, stride 2)
    with pytest.raises(ValueError, match=r"unit layer2.0 cannot take the place of layer1.2: shapes "
                                         r"\(16, 16, 16\)->\(32, 8, 8\) and \(16, 16, 16\)->\(16, 16, 16\) differ"):
        lesion.predict_sequences(chain, torch.zeros(2, *c.spec.input_shape()), [seq])


def test_a_program_runs_any_batch_in_pieces_of_its_exported_one() -> None:
    """A transformer's graph keeps its example's batch in its reshapes: 10 inputs run as 4 + 4 + 2
    (padded), each piece as the program was exported."""
    torch.manual_seed(0)
    net = zoo.Transformer(zoo.PreNormBlock, depth=2).eval()
    x = torch.randn(10, zoo.T, 8)
    chain = ProgramChain(export_module(net, (x[:4],)))
    with torch.inference_mode():
        h = chain.stem(x)
        for i in range(chain.n):
            h = chain.unit(i, h, True)
        ours = chain.head(h)
        theirs = torch.cat([net(x[:4]), net(x[4:8]), net(x[8:])])
    assert ours.shape == (10, 10)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    preds = lesion.predict_sequences(chain, x, [lesion.identity_sequence(chain.n)], batch_size=3)
    assert torch.equal(preds[0], theirs.argmax(1))


@pytest.mark.parametrize("kind", ["single", "k", "reorder"])
def test_a_sweep_of_the_exported_net_is_the_sweep_of_its_blocks(kind: str) -> None:
    """The same plan (units named, staged and paired as the blocks are) and the same errors."""
    c = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    d = dataset_for(c.meta)
    chain = ProgramChain(export_module(c.model, (d.x_test[:1],)), name="digits_resnet20")
    assert lesion.unit_infos(chain.units) == lesion.block_infos(c.model)
    ours = lesion.run_sweep(kind, c.model, d.x_test, d.y_test, samples=2, seed=3, batch_size=128)
    theirs = lesion.run_sweep(kind, chain, d.x_test, d.y_test, samples=2, seed=3, batch_size=128)
    pd.testing.assert_frame_equal(ours, theirs)
