"""The lesion engine against an independent reference.

The reference below is written from the definitions (He et al. 2015 Fig. 2/5, He et al. 2016 Fig. 4e,
Veit et al. 2016), straight from each leaf module's weights through ``torch.nn.functional``. It never
calls a block's ``forward``, ``residual_branch``, ``shortcut`` or ``combine``, nor anything in
:mod:`analysis.experiments.lesion`, so a mistake in how the library removes a residual branch cannot hide in both.

- post-activation block: F(x) = bn2(conv2(relu(bn1(conv1 x)))) (bottleneck: three conv-BN, ReLU
  between), y = relu(F(x) + s(x)); deleted: y = relu(s(x)).
- pre-activation block: F(x) = conv2(relu(bn2(conv1(relu(bn1 x))))) (bottleneck likewise),
  y = F(x) + s(x), no ReLU after the add; deleted: y = s(x). The head applies relu(bn_final(.)).
- s(x): identity; projection = the 1x1 conv (+ BN for post-activation nets); option A = stride then
  zero-pad the channels equally on both sides.
- plain block (no shortcut): y = relu(F(x)) / F(x); deleted: a parameter-free stand-in, strided
  subsample then zero-pad (widening) or cut (narrowing) to the output width, downsampling blocks included.

Nets get random BatchNorm statistics and affine parameters from a seeded generator so that every
alternative rule (a ReLU too many or too few, zeros instead of the subsample) changes the logits;
each test first checks that its net really tells the right rule from the wrong ones. Logits are read
with a forward hook on ``fc`` and compared with ``torch.allclose``; the predicted classes must be the
reference's argmax wherever the reference's top two are not a near tie.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.arch.models import build_model
from analysis.arch.specs import EXPANSION, ResNetSpec, custom_spec
from analysis.experiments.lesion import deletion, predict_sequences

ATOL = RTOL = 1e-4
N_INPUTS = 96


@dataclass(frozen=True)
class Rules:
    """How the reference treats a deleted block. The defaults are the definitions; the others are
    the wrong rules each test's net must be able to tell apart."""

    relu_after_lesion: bool | None = None  # None: the block's own rule (post-activation yes, pre-activation no)
    plain_zeros: bool = False  # a deleted plain block gives zeros of the output shape


# --------------------------------------------------------------------------- leaf operations


def conv(m: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def bn(m: nn.BatchNorm2d, x: Tensor) -> Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)


def pad_to(x: Tensor, cout: int, stride: int) -> Tensor:
    """Option A / plain stand-in: x[:, :, ::s, ::s], channels zero-padded equally on both sides, or
    cut to ``cout`` where the block narrows."""
    x = x[:, :, ::stride, ::stride]
    extra = cout - x.shape[1]
    if extra > 0:
        z = x.new_zeros
        n, _, h, w = x.shape
        x = torch.cat([z(n, extra // 2, h, w), x, z(n, extra - extra // 2, h, w)], dim=1)
    return x[:, :cout]


# --------------------------------------------------------------------------- the reference net


@dataclass(frozen=True)
class BlockRef:
    module: nn.Module
    cin: int
    cout: int
    stride: int
    shortcut: str  # identity | projection | pad | none


def block_refs(model: nn.Module, spec: ResNetSpec) -> list[BlockRef]:
    """Each block's shape and shortcut kind from the spec alone (He et al. 2015, Sec. 3.3), checked
    against what the built module holds."""
    out, cin = [], spec.stem_width
    strides = spec.strides or (1,) + (2,) * (len(spec.layers) - 1)
    for s, (n, planes) in enumerate(zip(spec.layers, spec.widths, strict=True)):
        stage = getattr(model, f"layer{s + 1}")
        assert len(stage) == n
        cout = planes * EXPANSION[spec.block]
        for j in range(n):
            stride = strides[s] if j == 0 else 1
            changes = stride != 1 or cin != cout
            if not spec.residual:
                kind = "none"
            elif spec.shortcut == "C" or (changes and spec.shortcut == "B"):
                kind = "projection"
            else:
                kind = "pad" if changes else "identity"
            b = stage[j]
            ds = b.downsample
            if kind in ("identity", "none"):
                assert ds is None, f"layer{s + 1}.{j}: unexpected downsample"
            elif kind == "pad":
                assert ds is not None and not list(ds.parameters()), f"layer{s + 1}.{j}: option A has no weights"
            else:
                assert isinstance(ds, nn.Sequential) and isinstance(ds[0], nn.Conv2d)
                assert len(ds) == (1 if spec.preact else 2)  # pre-activation projections have no BN
            out.append(BlockRef(b, cin, cout, stride, kind))
            cin = cout
    return out


def residual_branch(b: nn.Module, x: Tensor, *, bottleneck: bool, preact: bool) -> Tensor:
    k = 3 if bottleneck else 2
    convs = [getattr(b, f"conv{i}") for i in range(1, k + 1)]
    bns = [getattr(b, f"bn{i}") for i in range(1, k + 1)]
    if preact:  # BN-ReLU-conv, k times
        for c, n in zip(convs, bns, strict=True):
            x = conv(c, F.relu(bn(n, x)))
        return x
    for i, (c, n) in enumerate(zip(convs, bns, strict=True)):  # conv-BN(-ReLU), the last ReLU after the add
        x = bn(n, conv(c, x))
        if i < k - 1:
            x = F.relu(x)
    return x


def shortcut(r: BlockRef, x: Tensor) -> Tensor:
    if r.shortcut == "identity":
        return x
    if r.shortcut == "pad":
        return pad_to(x, r.cout, r.stride)
    ds = r.module.downsample
    y = conv(ds[0], x)
    return bn(ds[1], y) if len(ds) > 1 else y


def run_block(r: BlockRef, x: Tensor, keep: bool, spec: ResNetSpec, rules: Rules) -> Tensor:
    relu_after = not spec.preact
    if not keep:
        if r.shortcut == "none":
            y = pad_to(x, r.cout, r.stride)
            return torch.zeros_like(y) if rules.plain_zeros else y
        s = shortcut(r, x)
        relu = relu_after if rules.relu_after_lesion is None else rules.relu_after_lesion
        return F.relu(s) if relu else s
    f = residual_branch(r.module, x, bottleneck=spec.block == "bottleneck", preact=spec.preact)
    y = f if r.shortcut == "none" else f + shortcut(r, x)
    return F.relu(y) if relu_after else y


@torch.no_grad()
def reference_features(model: nn.Module, spec: ResNetSpec, x: Tensor, sequences: list[list[tuple[int, bool]]],
                       rules: Rules = Rules()) -> Tensor:
    """(len(sequences), len(x), features): the pooled features the fc layer sees; every sequence is
    run from the stem, no shared prefix."""
    refs = block_refs(model, spec)
    h0 = F.relu(bn(model.bn1, conv(model.conv1, x)))
    if spec.stem == "imagenet":
        h0 = F.max_pool2d(h0, 3, 2, 1)
    out = []
    for seq in sequences:
        h = h0
        for p, (i, keep) in enumerate(seq):
            assert (refs[i].cin, refs[i].cout, refs[i].stride) == (refs[p].cin, refs[p].cout, refs[p].stride)
            h = run_block(refs[i], h, keep, spec, rules)
        if spec.preact:
            h = F.relu(bn(model.bn_final, h))
        out.append(h.mean(dim=(2, 3)))
    return torch.stack(out)


def reference_logits(model: nn.Module, spec: ResNetSpec, x: Tensor, sequences: list[list[tuple[int, bool]]],
                     rules: Rules = Rules()) -> Tensor:
    """(len(sequences), len(x), classes)."""
    return F.linear(reference_features(model, spec, x, sequences, rules), model.fc.weight, model.fc.bias)


# --------------------------------------------------------------------------- nets and the engine


def randomised(spec: ResNetSpec, seed: int, x: Tensor) -> nn.Module:
    """A built net whose BatchNorms are far from the identity (gamma, beta, running mean and
    variance drawn from a seeded generator) and whose fc reads the features standardised over ``x``
    (the unlesioned net's), so the predicted class depends on the input, not on a shared offset."""
    model = build_model(spec, seed=seed).eval()
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.5 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.5 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
        feats = reference_features(model, spec, x, [deletion(spec.num_blocks, [])])[0]
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-3)
        w = torch.randn(model.fc.weight.shape, generator=g) / std
        model.fc.weight.copy_(w)
        model.fc.bias.copy_(-w @ mean)
    return model


def engine_logits(model: nn.Module, x: Tensor, sequences: list[list[tuple[int, bool]]], *,
                  reuse_prefix: bool) -> tuple[Tensor, Tensor]:
    """The engine's predicted classes and the logits its head produced (read off ``fc``)."""
    seen: list[Tensor] = []
    handle = model.fc.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        preds = predict_sequences(model, x, sequences, batch_size=len(x), reuse_prefix=reuse_prefix)
    finally:
        handle.remove()
    assert len(seen) == len(sequences), "the engine's head did not go through model.fc once per sequence"
    return preds, torch.stack(seen)


def all_sequences(n: int, swaps: list[tuple[int, int]] = ()) -> list[list[tuple[int, bool]]]:
    seqs = [deletion(n, [])] + [deletion(n, [i]) for i in range(n)]
    seqs += [deletion(n, list(c)) for c in combinations(range(n), 2)]
    seqs.append(deletion(n, list(range(n))))
    for a, b in swaps:  # reordered same-shape blocks, one of them also deleted
        order = list(range(n))
        order[a], order[b] = order[b], order[a]
        seqs.append([(i, True) for i in order])
        seqs.append([(i, i != a) for i in order])
    return seqs


CASES = {
    "preact_basic": custom_spec(block="basic", layers=(3, 2, 2), widths=(8, 16, 32), stem="cifar", stem_width=8,
                                input_size=16, num_classes=10, preact=True),
    "preact_bottleneck": custom_spec(block="bottleneck", layers=(2, 2, 2), widths=(4, 8, 16), stem="cifar",
                                     stem_width=8, input_size=16, num_classes=10, preact=True),
    "preact_optionA": custom_spec(block="basic", layers=(2, 2, 2), widths=(8, 16, 32), stem="cifar",
                                  stem_width=8, input_size=16, num_classes=10, preact=True, shortcut="A"),
    "plain_basic": custom_spec(block="basic", layers=(2, 2, 2), widths=(8, 16, 32), stem="cifar", stem_width=12,
                               input_size=16, num_classes=10, residual=False),  # layer1.0 narrows 12 -> 8
    "plain_bottleneck_imagenet": custom_spec(block="bottleneck", layers=(2, 2), widths=(4, 8), stem="imagenet",
                                             stem_width=8, input_size=32, num_classes=10, residual=False),
    "postact_A": custom_spec(block="basic", layers=(3, 2, 2), widths=(8, 16, 32), stem="cifar", stem_width=8,
                             input_size=16, num_classes=10, shortcut="A"),
    "postact_B": custom_spec(block="basic", layers=(2, 2, 2), widths=(8, 16, 32), stem="cifar", stem_width=8,
                             input_size=16, num_classes=10, shortcut="B"),
    "postact_C": custom_spec(block="basic", layers=(2, 2, 2), widths=(8, 16, 32), stem="cifar", stem_width=8,
                             input_size=16, num_classes=10, shortcut="C"),
    "postact_bottleneck_imagenet_v1": custom_spec(block="bottleneck", layers=(2, 2), widths=(4, 8), stem="imagenet",
                                                  stem_width=8, input_size=32, num_classes=10, stride_on="1x1"),
}
SWAPS = {"preact_basic": [(1, 2)], "postact_A": [(1, 2)]}
# the wrong rules each net must be able to expose (the mutations this file guards against)
WRONG = {
    "preact": [Rules(relu_after_lesion=True)],  # a ReLU after a pre-activation lesion
    "plain": [Rules(plain_zeros=True)],  # zeros instead of the strided subsample
    "projection": [Rules(relu_after_lesion=False)],  # the post-activation ReLU dropped
}


def wrong_rules(spec: ResNetSpec) -> list[Rules]:
    if not spec.residual:
        return WRONG["plain"]
    if spec.preact:
        return WRONG["preact"]
    # relu(s(x)) == s(x) when s(x) >= 0 (identity or zero-pad of a ReLU output): only projections tell
    return WRONG["projection"] if spec.shortcut in ("B", "C") else []


def differs(a: Tensor, b: Tensor) -> bool:
    return not torch.allclose(a, b, atol=ATOL, rtol=RTOL)


def assert_predictions_match(preds: Tensor, ref: Tensor) -> None:
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-3
    assert clear.float().mean() > 0.95
    expected = ref.argmax(-1)
    bad = (preds != expected) & clear
    assert not bad.any(), f"{int(bad.sum())} predictions differ from the reference, at {bad.nonzero()[:5].tolist()}"


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name = request.param
    spec = CASES[name]
    x = torch.randn(N_INPUTS, *spec.input_shape(),
                    generator=torch.Generator().manual_seed(7))
    model = randomised(spec, sorted(CASES).index(name), x)
    n = spec.num_blocks
    seqs = all_sequences(n, SWAPS.get(name, []))
    return name, spec, model, x, seqs, reference_logits(model, spec, x, seqs)


def test_reference_is_the_models_own_forward(case):
    """With nothing deleted the reference is the built model's forward pass."""
    _, spec, model, x, seqs, ref = case
    with torch.no_grad():
        assert torch.allclose(ref[0], model(x), atol=ATOL, rtol=RTOL)


def test_nets_tell_the_right_rule_from_the_wrong_ones(case):
    """Guard against a net that could not expose a mistake: every deletion changes the logits, and
    every wrong rule changes them for some deletion, and for most of the inputs' classes somewhere."""
    name, spec, model, x, seqs, ref = case
    n = spec.num_blocks
    assert ref[0].argmax(-1).unique().numel() >= 4, f"{name}: the intact net predicts too few classes"
    for s in range(1, n + 1):  # each single deletion changes what the net computes
        assert differs(ref[s], ref[0]), f"{name}: deleting block {s - 1} changes nothing"
    for rules in wrong_rules(spec):
        wrong = reference_logits(model, spec, x, seqs, rules)
        changed = [s for s in range(len(seqs)) if differs(wrong[s], ref[s])]
        assert changed, f"{name}: {rules} gives the same logits"
        assert (wrong.argmax(-1) != ref.argmax(-1)).any(), f"{name}: {rules} gives the same predictions"
    if not spec.residual:  # the stand-in on a downsampling block is a real subsample, not nothing
        refs = block_refs(model, spec)
        down = [i for i, r in enumerate(refs) if r.stride != 1 or r.cin != r.cout]
        assert down
        for i in down:
            wrong = reference_logits(model, spec, x, [deletion(n, [i])], Rules(plain_zeros=True))
            assert differs(wrong[0], ref[1 + i]), f"{name}: zeros and the subsample agree at block {i}"


@pytest.mark.parametrize("reuse_prefix", [True, False], ids=["prefix", "loop"])
def test_engine_equals_reference(case, reuse_prefix):
    name, spec, model, x, seqs, ref = case
    preds, logits = engine_logits(model, x, seqs, reuse_prefix=reuse_prefix)
    assert preds.shape == (len(seqs), len(x))
    for s, seq in enumerate(seqs):
        assert torch.allclose(logits[s], ref[s], atol=ATOL, rtol=RTOL), (
            f"{name}: sequence {seq} differs from the reference by {(logits[s] - ref[s]).abs().max():.3g}")
    assert_predictions_match(preds, ref)


def test_plain_downsampling_block_deleted_is_subsample_not_zeros():
    """The plain net's stride-2 widening blocks, deleted alone and together: the engine follows the
    strided subsample + zero-pad, and zeros would have given other predictions."""
    spec = CASES["plain_basic"]
    x = torch.randn(N_INPUTS, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = randomised(spec, 42, x)
    refs = block_refs(model, spec)
    down = [i for i, r in enumerate(refs) if r.stride == 2]
    assert down == [2, 4]
    seqs = [deletion(spec.num_blocks, [i]) for i in down] + [deletion(spec.num_blocks, down)]
    ref = reference_logits(model, spec, x, seqs)
    zeros = reference_logits(model, spec, x, seqs, Rules(plain_zeros=True))
    preds, logits = engine_logits(model, x, seqs, reuse_prefix=True)
    assert torch.allclose(logits, ref, atol=ATOL, rtol=RTOL)
    assert_predictions_match(preds, ref)
    assert (zeros.argmax(-1) != ref.argmax(-1)).float().mean() > 0.2


def test_pre_activation_lesion_has_no_relu():
    """Deleting a pre-activation block leaves s(x) untouched, negative values included."""
    spec = CASES["preact_basic"]
    x = torch.randn(N_INPUTS, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    model = randomised(spec, 5, x)
    n = spec.num_blocks
    seqs = [deletion(n, [i]) for i in range(1, n)]
    ref = reference_logits(model, spec, x, seqs)
    relu = reference_logits(model, spec, x, seqs, Rules(relu_after_lesion=True))
    preds, logits = engine_logits(model, x, seqs, reuse_prefix=True)
    assert torch.allclose(logits, ref, atol=ATOL, rtol=RTOL)
    assert differs(logits, relu)
    assert_predictions_match(preds, ref)


def test_post_activation_projection_lesion_keeps_its_relu():
    """Deleting a post-activation block with a projection shortcut gives relu(bn(conv(x))), not the
    raw projection (option C: every block projects)."""
    spec = CASES["postact_C"]
    x = torch.randn(N_INPUTS, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    model = randomised(spec, 6, x)
    n = spec.num_blocks
    seqs = [deletion(n, [i]) for i in range(n)]
    ref = reference_logits(model, spec, x, seqs)
    raw = reference_logits(model, spec, x, seqs, Rules(relu_after_lesion=False))
    preds, logits = engine_logits(model, x, seqs, reuse_prefix=True)
    assert torch.allclose(logits, ref, atol=ATOL, rtol=RTOL)
    assert all(differs(logits[s], raw[s]) for s in range(n))
    assert_predictions_match(preds, ref)


def test_reference_pad_matches_definition():
    """The reference's own option-A map on a tiny tensor, by hand: stride, then zeros around."""
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = pad_to(x, 5, 2)
    assert y.shape == (1, 5, 2, 2)
    assert torch.equal(y[0, 0], torch.zeros(2, 2)) and torch.equal(y[0, 3:], torch.zeros(2, 2, 2))
    assert torch.equal(y[0, 1:3], x[0, :, ::2, ::2])
    assert torch.equal(pad_to(x, 1, 1), x[:, :1])


def test_specs_in_cases_are_what_they_claim():
    assert CASES["plain_basic"].stem_width > CASES["plain_basic"].widths[0]  # a narrowing block
    assert replace(CASES["postact_B"], shortcut="C") == CASES["postact_C"]
