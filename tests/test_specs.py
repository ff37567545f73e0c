"""Spec table and validation: bad input raises SpecError (a ValueError) with a message that says what to change."""

import dataclasses
import re
import typing

import pytest

from analysis.errors import LensError, SpecError
from analysis.specs import (
    BLOCK_TYPES,
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    MODELS,
    SHORTCUT_OPTIONS,
    STEM_TYPES,
    STRIDE_PLACEMENTS,
    BlockType,
    ResNetSpec,
    ShortcutOption,
    StemType,
    StridePlacement,
    choice,
    cifar,
    custom_spec,
    get_spec,
    parse_int_list,
    total_stride,
    validate,
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


# ----------------------------------------------------------------------------- specs cannot be invalid
def test_dataclasses_replace_cannot_skip_validation():
    with pytest.raises(SpecError, match="stage 2 has 0 blocks"):
        dataclasses.replace(get_spec("resnet18"), layers=(2, 0, 2, 2))
    with pytest.raises(SpecError, match="option A"):
        get_spec("resnet18").replace(shortcut="A", stem_width=128)


@pytest.mark.parametrize("kwargs,message", [
    (dict(layers=(2, 0)), "stage 2 has 0 blocks"),
    (dict(widths=(64,)), "2 stages need 2 widths"),
    (dict(block="resnet"), "block must be one of"),
    (dict(stem="mnist"), "stem must be one of"),
    (dict(shortcut="D"), "shortcut must be one of"),
    (dict(stride_on="5x5"), "stride_on must be one of"),
    (dict(strides=(1, 3)), "strides must be 1 or 2"),
    (dict(input_size=4), "smaller than the net's total stride 8"),
    (dict(layers="22"), "layers must be a tuple or list"),
    (dict(layers=(2, "2")), "stage 2 of layers is '2' \\(str\\)"),
    (dict(input_size=224.0), "input_size must be an integer, got 224.0 \\(float\\)"),
    (dict(groups=True), "groups must be an integer, got True \\(bool\\)"),
    (dict(residual=1), "residual must be True or False"),
    (dict(name=None), "name must be a string"),
])
def test_direct_construction_is_validated(kwargs, message):
    base = dict(name="x", block="basic", layers=(2, 2), widths=(64, 128))
    base.update(kwargs)
    with pytest.raises(SpecError, match=message):
        ResNetSpec(**base)


def test_lists_become_tuples():
    from_json = ResNetSpec(name="x", block="basic", layers=[2, 2], widths=[64, 128], strides=[1, 2])
    written = ResNetSpec(name="x", block="basic", layers=(2, 2), widths=(64, 128), strides=(1, 2))
    assert type(from_json.layers) is tuple and type(from_json.widths) is tuple
    assert type(from_json.strides) is tuple
    assert from_json == written
    assert hash(from_json) == hash(written)
    assert {from_json: 1}[written] == 1
    custom = custom_spec(block="basic", layers=[2, 2], widths=[64, 128])
    assert type(custom.layers) is tuple and custom.layers == (2, 2)


def test_numpy_integers_become_plain_ints():
    np = pytest.importorskip("numpy")
    spec = ResNetSpec(name="x", block="basic", layers=[np.int64(2), 2], widths=(64, 128),
                      input_size=np.int32(64))
    assert type(spec.layers[0]) is int and type(spec.input_size) is int
    assert spec == ResNetSpec(name="x", block="basic", layers=(2, 2), widths=(64, 128), input_size=64)


@pytest.mark.parametrize("bad", [True, 128.0, 128.5, "128", None])
def test_non_integer_widths_refused(bad):
    with pytest.raises(SpecError, match=f"stage 2 of widths is {re.escape(repr(bad))} \\({type(bad).__name__}\\)"):
        ResNetSpec(name="x", block="basic", layers=(2, 2), widths=(64, bad))
    with pytest.raises(SpecError, match="whole numbers"):
        custom_spec(block="basic", layers=(2, 2), widths=[64, bad])


def test_spec_error_is_value_error_and_lens_error():
    assert issubclass(SpecError, ValueError) and issubclass(SpecError, LensError)
    for bad in (lambda: get_spec("resnet19"), lambda: get_spec("cifar_resnet21"), lambda: cifar(0),
                lambda: parse_int_list("2, two", "blocks"), lambda: parse_int_list("", "blocks"),
                lambda: custom_spec(block="basic", layers=(), widths=())):
        with pytest.raises(SpecError):
            bad()


def test_parse_int_list_keeps_its_cause():
    with pytest.raises(SpecError) as info:
        parse_int_list("2, two", "blocks")
    assert isinstance(info.value.__cause__, ValueError)  # ``from exc``, not ``from None``


def test_choices_are_the_literal_args():
    assert BLOCK_TYPES == typing.get_args(BlockType) == ("basic", "bottleneck")
    assert STEM_TYPES == typing.get_args(StemType) == ("imagenet", "cifar")
    assert STRIDE_PLACEMENTS == typing.get_args(StridePlacement) == ("3x3", "1x1")
    assert SHORTCUT_OPTIONS == typing.get_args(ShortcutOption) == ("A", "B", "C")


def test_custom_spec_names_the_choices():
    with pytest.raises(SpecError, match=re.escape("block must be one of ('basic', 'bottleneck'), got 'resnet'")):
        custom_spec(block="resnet", layers=(2, 2), widths=(64, 128))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=re.escape("shortcut must be one of ('A', 'B', 'C'), got 'b'")):
        custom_spec(block="basic", layers=(2, 2), widths=(64, 128), shortcut="b")  # type: ignore[arg-type]


def test_choice_narrows_strings():
    assert choice("1x1", STRIDE_PLACEMENTS, "stride_on") == "1x1"
    assert choice("C", SHORTCUT_OPTIONS, "shortcut") == "C"
    for bad in ("5x5", None, 1):
        with pytest.raises(SpecError, match=re.escape("stride_on must be one of ('3x3', '1x1'), got ")):
            choice(bad, STRIDE_PLACEMENTS, "stride_on")


def test_validate_still_returns_the_spec():
    spec = get_spec("resnet50")
    assert validate(spec) is spec
    assert all(validate(s) is s for s in MODELS.values())


@pytest.mark.parametrize("bad", ["2, 2", 5, None])
def test_custom_spec_refuses_non_lists(bad):
    with pytest.raises(SpecError, match="layers must be a list of integers"):
        custom_spec(block="basic", layers=bad, widths=(64, 128))
