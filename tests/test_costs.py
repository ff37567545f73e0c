"""Exact facts: analytic counts equal torchvision's published numbers, numel() and torchinfo."""

import tracemalloc

import pytest

from analysis.costs import by_op, layer_table, receptive_field_growth, rollup, totals
from analysis.errors import LensError
from analysis.models import build_model
from analysis.reference import TORCHINFO_MULT_ADDS, TORCHVISION
from analysis.specs import MODELS, custom_spec, get_spec
from tests.helpers import hooked_shapes, numel, torchinfo_mult_adds

TORCHVISION_EXTRA_PARAMS = {
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_parameter_counts(name):
    assert totals(get_spec(name)).params == TORCHVISION[name]["params"]


@pytest.mark.parametrize("name", list(TORCHVISION_EXTRA_PARAMS))
def test_wide_and_resnext_parameter_counts(name):
    assert totals(get_spec(name)).params == TORCHVISION_EXTRA_PARAMS[name]


@pytest.mark.parametrize("name", list(TORCHINFO_MULT_ADDS))
def test_published_torchinfo_mult_adds(name):
    assert totals(get_spec(name)).torchinfo_mult_adds == TORCHINFO_MULT_ADDS[name]


def test_resnet50_conv_fc_core():
    assert totals(get_spec("resnet50")).macs == 4_089_184_256


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_gmacs(name):
    assert round(totals(get_spec(name)).macs / 1e9, 3) == TORCHVISION[name]["gmacs"]


def test_cifar_table6_parameters():
    expected = {"cifar_resnet20": 0.27, "cifar_resnet32": 0.46, "cifar_resnet44": 0.66,
                "cifar_resnet56": 0.85, "cifar_resnet110": 1.7, "cifar_resnet1202": 19.4}
    for name, m in expected.items():
        p = totals(get_spec(name)).params / 1e6
        assert round(p, 2 if p < 1 else 1) == m, name
    assert totals(get_spec("cifar_resnet20")).params == 269_722
    # Option A adds no parameters: plain twin == residual net
    assert totals(get_spec("plain_cifar_resnet56")).params == totals(get_spec("cifar_resnet56")).params


VARIANTS = [(n, {}) for n in MODELS] + [
    ("resnet50", {"plain": True}), ("resnet50", {"preact": True}), ("resnet50", {"stride_on": "1x1"}),
    ("resnet18", {"shortcut": "C"}), ("resnet18", {"shortcut": "A"}), ("resnet34", {"plain": True}),
    ("cifar_resnet20", {"shortcut": "B"}), ("cifar_resnet20", {"preact": True}),
    ("cifar_resnet20", {"shortcut": "C", "plain": True}), ("resnext50_32x4d", {"preact": True}),
]


@pytest.mark.parametrize("name,kw", VARIANTS, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                                                   for n, kw in VARIANTS])
def test_analytic_equals_numel_and_torchinfo(name, kw):
    spec = get_spec(name, **kw)
    t = totals(spec)
    model = build_model(spec)
    assert t.params == numel(model)
    assert t.torchinfo_mult_adds == torchinfo_mult_adds(model, spec)


@pytest.mark.parametrize("name,kw", [("resnet50", {}), ("resnet18", {"preact": True}),
                                     ("cifar_resnet20", {}), ("resnet50", {"stride_on": "1x1", "plain": True}),
                                     ("cifar_resnet20", {"shortcut": "C"})])
def test_every_layer_shape_matches_forward_hooks(name, kw):
    spec = get_spec(name, **kw)
    rows = [(r["module"], r["out_shape"]) for r in layer_table(spec).to_dict("records") if r["op"] != "add"]
    assert rows == hooked_shapes(spec)


def test_rollups_preserve_totals():
    df = layer_table(get_spec("resnet152"))
    for level in ("block", "stage", "model"):
        r = rollup(df, level)
        assert r["params"].sum() == df["params"].sum()
        assert r["macs"].sum() == df["macs"].sum()
        assert r["flops"].sum() == df["flops"].sum()
    stages = rollup(df, "stage")
    assert list(stages["id"]) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    blocks = rollup(df, "block")
    assert blocks["downsample"].sum() == 4  # first block of each stage projects
    with pytest.raises(LensError):
        rollup(df, "galaxy")


def test_receptive_field_and_jump():
    assert totals(get_spec("resnet18")).receptive_field == 435
    assert totals(get_spec("resnet50")).receptive_field == 427
    assert totals(get_spec("cifar_resnet20")).receptive_field == 81
    rf = receptive_field_growth(layer_table(get_spec("resnet50")))
    assert rf["jump"].iloc[-2] == 32


def test_activation_memory_is_float32_output_bytes():
    df = layer_table(get_spec("resnet18"))
    conv1 = df.set_index("id").loc["conv1"]
    assert conv1["out_shape"] == (64, 112, 112)
    assert conv1["act_bytes"] == 64 * 112 * 112 * 4


def test_flop_breakdown_columns():
    df = layer_table(get_spec("resnet50"))
    assert df["bn_elems"].sum() == 11_113_984
    assert df["add_elems"].sum() == 5_519_360
    mp = df.set_index("id").loc["maxpool"]
    assert mp["flops_pool"] == 64 * 56 * 56 * 8
    ops = by_op(df).set_index("kind")
    assert ops.loc["conv 7x7", "params"] == 7 * 7 * 3 * 64


def test_ten_billion_parameter_spec_allocates_no_weights():
    spec = custom_spec(block="basic", layers=(4, 4, 4, 4), widths=(8192, 16384, 16384, 16384), input_size=224)
    tracemalloc.start()
    t = totals(spec)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert t.params > 10_000_000_000
    # a sanity bound, not a benchmark: allocating the weights would take 40 GB
    assert peak < 20 * 2**20
