"""The net plan, the op registry and the join, each checked against torch running the real thing.

The oracles here are torch itself: the module an op builds, run on a tensor, says the output shape;
its ``state_dict`` says the keys and parameter counts; the ATen ops a forward pass dispatches say
how many element-wise multiplies a join costs. None of them reads the registry's own formulas.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from analysis.arch.blockplan import net_plan
from analysis.arch.costs import exact_sum, layer_table
from analysis.arch.diagrams import build_graph
from analysis.arch.models import ResNet, build_model
from analysis.arch.ops import Flow, Op, flow, make_layer, run_op
from analysis.arch.specs import MODELS, get_spec, stride_product

OPS = [
    Op("conv1", "conv", 6, 8, kernel=3, stride=2),
    Op("conv2", "conv", 6, 9, kernel=3, stride=1, groups=3, bias=True),
    Op("conv3", "conv", 6, 4, kernel=5, stride=2, pad=0, dims=1, bias=True),
    Op("conv4", "conv", 6, 6, kernel=1, stride=2),
    Op("bn1", "bn", 6, 6),
    Op("bn2", "bn", 6, 6, dims=1),
    Op("relu", "relu", 6, 6),
    Op("maxpool", "maxpool", 6, 6, kernel=3, stride=2),
    Op("pool", "maxpool", 6, 6, kernel=3, stride=2, dims=1),
    Op("downsample", "pad", 6, 10, stride=2),
    Op("avgpool", "avgpool", 6, 6),
    Op("avgpool", "avgpool", 6, 6, dims=1),
    Op("fc", "fc", 6, 7, bias=True),
]


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"{op.kind}-{op.dims}d-{op.name}")
@pytest.mark.parametrize("size", [5, 7, 12])
def test_registry_row_matches_the_module_it_builds(op: Op, size: int) -> None:
    module = make_layer(op).eval()
    x = torch.randn(2, op.cin, *(size,) * op.dims)
    if op.kind == "fc":
        x = x[..., :1, :1] if op.dims == 2 else x[..., :1]  # the fc layer sees the pooled map
    got = run_op(op, module, x)
    want = flow(op, Flow(op.cin, tuple(x.shape[2:])))
    assert tuple(got.shape[1:]) == want.shape[:1] + (want.shape[1:] if op.kind != "fc" else ())
    sd = module.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == op.state_shapes()
    assert op.weight_count == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_net_plan_lists_the_built_nets_modules_in_order(name: str) -> None:
    spec = get_spec(name)
    plan = net_plan(spec)
    with torch.device("meta"):  # shapes and names only: no weights allocated for the wide nets
        model = ResNet(spec)
    stateful = [n for n, m in model.named_modules() if n and not list(m.children()) and m.state_dict()]
    assert [n for n, op in plan.modules() if op.state_shapes()] == stateful
    assert plan.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet50", "cifar_resnet20", "vdcnn9", "resnet1d_8"])
def test_feature_sizes_and_total_stride_match_a_forward_pass(name: str) -> None:
    spec = get_spec(name)
    model = build_model(spec).eval()
    plan = net_plan(spec)
    seen: dict[str, int] = {}
    hooks = [getattr(model, s).register_forward_hook(lambda m, i, o, s=s: seen.__setitem__(s, o.shape[-1]))
             for s in model.stage_names]
    try:
        with torch.no_grad():
            x = model.stem(torch.zeros(1, *spec.input_shape()))
            seen["stem"] = x.shape[-1]
            for stage in model.stages:
                x = stage(x)
    finally:
        for h in hooks:
            h.remove()
    assert plan.feature_sizes() == seen
    # an input of exactly the total stride reaches the head as one sample or pixel
    assert math.ceil(spec.input_size / plan.total_stride) == seen[model.stage_names[-1]]


class _Elementwise(TorchDispatchMode):
    """Counts output elements of the ATen multiplies / subtractions and sigmoids a forward pass runs."""

    def __init__(self) -> None:
        super().__init__()
        self.mul = 0
        self.sigmoid = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("mul", "sub", "rsub"):
            self.mul += out.numel()
        elif name == "sigmoid":
            self.sigmoid += out.numel()
        return out


@pytest.mark.parametrize("variant", [
    dict(shortcut_variant="gate"), dict(shortcut_variant="shortcut_gate"),
    dict(shortcut_variant="scale", shortcut_scale=0.3), dict(shortcut_variant="scale", shortcut_scale=0.3,
                                                             scale_residual=True),
    dict(shortcut_variant="dropout", shortcut_dropout=0.2), dict(),
], ids=lambda v: "-".join(f"{v[k]}" for k in v) or "identity")
def test_join_element_count_is_what_the_forward_pass_computes(variant: dict) -> None:
    """The cost table's join rows (mul_elems, sigmoid_elems) against the element-wise ATen calls of
    the built net's eval forward pass: an oracle that shares nothing with the join's own count."""
    spec = get_spec("cifar_resnet20").replace(input_size=8, **variant)
    model = build_model(spec).eval()
    counter = _Elementwise()
    with torch.no_grad(), counter:
        model(torch.zeros(1, *spec.input_shape()))
    df = layer_table(spec)
    assert exact_sum(df["mul_elems"]) == counter.mul
    assert exact_sum(df["sigmoid_elems"]) == counter.sigmoid


def test_block_marker_follows_the_blocks_convs_not_its_entry_pool() -> None:
    """A VDCNN stage that keeps its width: the max pool in front of its first block is drawn as its
    own node, so the block itself (stride-1 convs, same width) carries no ↓; a stage that widens does."""
    same = build_graph(get_spec("vdcnn9").replace(widths=(64, 64, 64, 64)), "block")
    assert same.nodes["layer2.0.pool"]["label"].startswith("layer2.0.pool: max pool 3 /2")
    assert "↓" not in same.nodes["layer2.0"]["label"]
    wider = build_graph(get_spec("vdcnn9"), "block")
    assert wider.nodes["layer2.0"]["label"].endswith("↓")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("stem", ["imagenet", "cifar", "vdcnn", "none"])
def test_the_specs_stride_product_is_the_plans_total_stride(name: str, stem: str) -> None:
    """The spec's length check runs before any plan exists, so it multiplies strides itself; it
    must agree with the plan's ops (a max pool in front of a stage included)."""
    spec = get_spec(name)
    if stem == "none":  # the first block sees the input: its width must be the input's channels
        spec = spec.replace(in_channels=spec.stem_width)
    for changed in (dict(stem=stem), dict(stem=stem, downsampling="maxpool"),
                    dict(stem=stem, strides=(1,) + (2,) * (len(spec.layers) - 2) + (1,))):
        s = spec.replace(**changed, input_size=max(spec.input_size, 64))
        assert stride_product(s) == net_plan(s).total_stride


def test_the_pad_shortcut_strides_the_jump_and_the_gate_label_has_no_bias() -> None:
    """Option A's x[:, :, ::2, ::2] doubles the jump (as the strided conv beside it does); the gate's
    1x1 conv has a bias by construction, so its label does not say so (review survivors)."""
    df = layer_table(get_spec("cifar_resnet20")).set_index("id")
    assert df.loc["layer2.0.downsample", "jump"] == df.loc["layer2.0.conv1", "jump"] == 2
    assert df.loc["layer3.0.downsample", "jump"] == 4
    gated = net_plan(get_spec("cifar_resnet20").replace(shortcut_variant="gate")).blocks[0].gate
    assert gated is not None and gated.rule.label(gated) == "gate 1×1, 16"


def test_the_preact_head_normalises_then_rectifies_then_pools() -> None:
    """He et al. 2016, Fig. 4e: the last block leaves its sum raw; the head is BN, ReLU, pool, fc."""
    spec = get_spec("cifar_resnet20").replace(preact=True, input_size=8)
    model = build_model(spec).eval()
    with torch.no_grad():
        model.bn_final.running_mean.uniform_(-1, 1)
        model.bn_final.bias.uniform_(-1, 1)
        x = torch.randn(2, 64, 2, 2)
        want = model.fc(torch.relu(model.bn_final(x)).mean((2, 3)))
        torch.testing.assert_close(model.head(x), want)
