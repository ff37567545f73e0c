"""Spec table and validation: bad input raises ValueError with a message that says what to change."""

import pytest

from analysis.specs import (
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    MODELS,
    ResNetSpec,
    custom_spec,
    get_spec,
    parse_int_list,
    total_stride,
)


def test_table_has_every_family():
    assert IMAGENET_DEPTHS == ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    assert CIFAR_DEPTHS == tuple(f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110, 1202))
    for name in ("wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d"):
        assert name in MODELS


@pytest.mark.parametrize("name,depth,blocks", [
    ("resnet18", 18, 8), ("resnet34", 34, 16), ("resnet50", 50, 16), ("resnet101", 101, 33),
    ("resnet152", 152, 50), ("cifar_resnet20", 20, 9), ("cifar_resnet56", 56, 27),
    ("cifar_resnet110", 110, 54), ("cifar_resnet1202", 1202, 600),
])
def test_depth_and_blocks(name, depth, blocks):
    spec = get_spec(name)
    assert spec.depth == depth
    assert spec.num_blocks == blocks


def test_any_cifar_depth_and_variants():
    spec = get_spec("cifar_resnet14")
    assert spec.layers == (2, 2, 2) and spec.shortcut == "A"
    plain = get_spec("plain_cifar_resnet56")
    assert not plain.residual and plain.layers == (9, 9, 9)
    pre = get_spec("preact_resnet50")
    assert pre.preact and pre.residual
    assert get_spec("resnet50", stride_on="1x1").stride_on == "1x1"
    with pytest.raises(ValueError, match="6n\\+2"):
        get_spec("cifar_resnet21")
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        get_spec("resnet19")


def test_total_stride():
    assert total_stride(get_spec("resnet50")) == 32
    assert total_stride(get_spec("cifar_resnet20")) == 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(layers=(), widths=()), "at least one stage"),
    (dict(layers=(2, 0), widths=(64, 128)), "stage 2 has 0 blocks"),
    (dict(layers=(2, 2), widths=(64, -1)), "stage 2 width is -1"),
    (dict(layers=(2, 2), widths=(64,)), "2 stages need 2 widths"),
    (dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), input_size=16), "smaller than the net's total stride 32"),
    (dict(layers=(2,) * 9, widths=(64,) * 9), "more than the 8 supported"),
    (dict(layers=(2, 2), widths=(64, 1 << 20)), "exceeds the maximum"),
    (dict(layers=(5000,), widths=(64,)), "at most 2000 per stage"),
    (dict(layers=(2,), widths=(64,), input_size=100000), "input size must be between"),
    (dict(layers=(2,), widths=(64,), num_classes=0), "classes must be between"),
    (dict(layers=(2,), widths=(64,), groups=2), "need the bottleneck block"),
    (dict(layers=(2,), widths=(8,), block="bottleneck", groups=32, width_per_group=4), "bottleneck width 0 is not a positive multiple of groups=32"),
    (dict(layers=(2,), widths=(64,), block="triangle"), "block must be one of"),
    (dict(layers=(2, 2), widths=(64, 32), shortcut="A"), "option A"),
])
def test_invalid_specs_say_what_to_change(kwargs, message):
    base = dict(block="basic", layers=(2, 2), widths=(64, 128), input_size=224)
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        custom_spec(**base)


def test_specs_are_frozen_and_hashable():
    spec = get_spec("resnet50")
    with pytest.raises(AttributeError):
        spec.layers = (1,)  # type: ignore[misc]
    assert hash(spec) == hash(get_spec("resnet50"))
    assert isinstance(spec, ResNetSpec)


def test_parse_int_list():
    assert parse_int_list("2, 2;3 4", "x") == (2, 2, 3, 4)
    with pytest.raises(ValueError, match="not a list of integers"):
        parse_int_list("2, two", "blocks")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_int_list(" ", "blocks")
