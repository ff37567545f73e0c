"""Spec table and validation: bad input raises SpecError (a ValueError) with a message that says what to change."""

import dataclasses
import re
import typing

import numpy as np
import pytest

from analysis.arch.blockplan import total_stride
from analysis.arch.blocks import BlockConfig, block_terms, compare_blocks
from analysis.arch.specs import (
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
    validate,
)
from analysis.core.errors import LensError, SpecError


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
    (dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), input_size=0), "input size must be between 1 and"),
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
    (dict(input_size=5000), "input size must be between 1 and 4096"),
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
    assert STEM_TYPES == typing.get_args(StemType) == ("imagenet", "cifar", "vdcnn", "none")
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


# ----------------------------------------------------------------------------- bottleneck inner width (issue 10, item 2)
@pytest.mark.parametrize("planes,wpg,groups,inner", [
    (64, 64, 1, 64), (64, 128, 1, 128), (128, 4, 32, 256), (100, 24, 1, 37), (512, 8, 32, 2048),
    (65536, 64, 1, 65536), (32768, 128, 1, 65536), (65536, 1, 64, 65536),
])
def test_inner_width_is_exact_integer_math(planes, wpg, groups, inner):
    spec = custom_spec(block="bottleneck", layers=[1], widths=[planes], width_per_group=wpg, groups=groups)
    assert spec.inner_width(0) == inner == int(planes * (wpg / 64.0)) * groups  # torchvision's formula
    assert type(spec.inner_width(0)) is int


def test_inner_width_does_not_go_through_floats():
    """torchvision's ``int(planes * (base_width / 64.0)) * groups`` rounds once the product passes
    2**53; the spec's own formula is exact integer arithmetic (checked on an unvalidated instance: a
    spec this wide is refused, see below)."""
    raw = object.__new__(ResNetSpec)
    for field, value in dict(block="bottleneck", widths=(3,), width_per_group=2**60 + 64, groups=1).items():
        object.__setattr__(raw, field, value)
    assert raw.inner_width(0) == 3 * (2**54 + 1) != int(3 * ((2**60 + 64) / 64.0))


@pytest.mark.parametrize("planes,wpg,groups", [
    (65536, 128, 1),  # 131072: twice MAX_WIDTH
    (65536, 64, 64),  # 4,194,304
    (3, 2**60 + 64, 1),  # float math rounds this one (2**60 + 64 is not a float); old code took it
    (64, 10**30, 1),
])
def test_inner_width_is_bounded_by_max_width(planes, wpg, groups):
    with pytest.raises(SpecError, match="bottleneck width .* exceeds the maximum 65536"):
        custom_spec(block="bottleneck", layers=[1], widths=[planes], width_per_group=wpg, groups=groups)


# ----------------------------------------------------------------------------- API types (issue 10, item 9)
@pytest.mark.parametrize("bad", [None, 123, 1.5, b"resnet18", ["resnet18"], ("resnet18",)])
def test_get_spec_refuses_names_that_are_not_strings(bad):
    with pytest.raises(SpecError, match="model name must be a string"):
        get_spec(bad)


@pytest.mark.parametrize("kw,message", [
    (dict(plain="yes"), "plain must be True, False or None, got 'yes'"),
    (dict(plain="False"), "plain must be True, False or None"),
    (dict(preact=1), "preact must be True, False or None, got 1 \\(int\\)"),
    (dict(preact=np.bool_(True)), "preact must be True, False or None"),
    (dict(input_size="32"), "input_size must be an integer, got '32' \\(str\\)"),
    (dict(input_size=64.0), "input_size must be an integer, got 64.0 \\(float\\)"),
    (dict(input_size=True), "input_size must be an integer, got True \\(bool\\)"),
    (dict(input_size=224.5), "input_size must be an integer"),
    (dict(input_size=5000), "input size must be between 1 and 4096"),
    (dict(num_classes="10"), "num_classes must be an integer"),
    (dict(stride_on=3), "stride_on must be one of"),
    (dict(shortcut=["A"]), "shortcut must be one of"),
])
def test_get_spec_variants_of_the_wrong_type(kw, message):
    with pytest.raises(SpecError, match=message):
        get_spec("resnet18", **kw)


def test_get_spec_numpy_ints_are_fine():
    spec = get_spec("resnet18", input_size=np.int64(64), num_classes=np.int32(10))
    assert type(spec.input_size) is int and (spec.input_size, spec.num_classes) == (64, 10)


@pytest.mark.parametrize("name,message", [
    ("cifar_resnet12008", "CIFAR ResNets go up to 12002 layers \\(2000 blocks per stage\\); 12008 is deeper"),
    ("cifar_resnet" + "9" * 5000, "CIFAR ResNets go up to 12002 layers; a depth of 5000 digits"),  # was int()'s ValueError
    ("cifar_resnet２０", "unknown model"),  # full-width digits: str.isdigit() says yes
    ("cifar_resnet²", "unknown model"),  # superscript two: isdigit() yes, int() ValueError
    ("cifar_resnet-4", "unknown model"),
])
def test_get_spec_cifar_depths_out_of_range(name, message):
    with pytest.raises(SpecError, match=message):
        get_spec(name)


def test_get_spec_deepest_cifar_net():
    spec = get_spec("cifar_resnet12002")
    assert spec.layers == (2000, 2000, 2000) and spec.depth == 12002
    assert get_spec("cifar_resnet0020") == get_spec("cifar_resnet20")


@pytest.mark.parametrize("n,message", [("3", "whole number n"), (2.5, "whole number n"), (True, "whole number n"),
                                       (None, "whole number n"), (0, "n >= 1"), (2001, "up to n = 2000")])
def test_cifar_refuses_bad_n(n, message):
    with pytest.raises(SpecError, match=message):
        cifar(n)


@pytest.mark.parametrize("bad", [{2, 3}, frozenset({2}), {2: 1, 3: 1}, bytearray(b"\x02")])
def test_custom_spec_refuses_unordered_or_mapping_layers(bad):
    with pytest.raises(SpecError, match="layers must be a list of integers"):
        custom_spec(block="basic", layers=bad, widths=(64, 128))


def test_custom_spec_numpy_ints_fine_floats_refused():
    spec = custom_spec(block="basic", layers=np.array([2, 2]), widths=[np.int64(64), np.int16(128)],
                       input_size=np.int32(64), stem_width=np.uint8(32))
    assert spec.layers == (2, 2) and spec.widths == (64, 128) and type(spec.widths[0]) is int
    assert type(spec.input_size) is int and type(spec.stem_width) is int
    for kw in (dict(layers=np.array([2.0, 2.0])), dict(input_size=np.float64(64)), dict(layers=[2.7, 1.2]),
               dict(input_size=224.5), dict(num_classes=10.0)):
        base = dict(block="basic", layers=[2, 2], widths=[64, 128])
        base.update(kw)
        with pytest.raises(SpecError, match="whole numbers|must be an integer"):
            custom_spec(**base)


@pytest.mark.parametrize("kw,message", [
    (dict(residual="False"), "residual must be True or False, got 'False'"),
    (dict(preact="True"), "preact must be True or False"),
    (dict(residual=0), "residual must be True or False"),
    (dict(input_size=None), "input_size must be an integer, got None"),
    (dict(num_classes="1000"), "num_classes must be an integer"),
    (dict(layers=[2, None]), "stage 2 of layers is None"),
    (dict(block=None), "block must be one of"),
    (dict(stem=["cifar"]), "stem must be one of"),
])
def test_custom_spec_wrong_types(kw, message):
    base = dict(block="basic", layers=[2, 2], widths=[64, 128])
    base.update(kw)
    with pytest.raises(SpecError, match=message):
        custom_spec(**base)


def test_choices_are_stored_as_plain_strings():
    spec = custom_spec(block=np.str_("bottleneck"), stem=np.str_("cifar"), layers=[1], widths=[16],
                       shortcut=np.str_("C"), stride_on=np.str_("1x1"), input_size=32)
    assert all(type(v) is str for v in (spec.block, spec.stem, spec.shortcut, spec.stride_on))
    assert spec == custom_spec(block="bottleneck", stem="cifar", layers=[1], widths=[16], shortcut="C",
                               stride_on="1x1", input_size=32)


# ----------------------------------------------------------------------------- block-comparison inputs (issue 10, item 9)
@pytest.mark.parametrize("kw,message", [
    (dict(cin="256"), "input channels must be an integer, got '256' \\(str\\)"),
    (dict(cin=256.0), "input channels must be an integer, got 256.0 \\(float\\)"),
    (dict(cin=True), "input channels must be an integer, got True \\(bool\\)"),
    (dict(cout=None), "output channels must be an integer, got None"),
    (dict(width=64.5), "bottleneck width must be an integer"),
    (dict(size=56.0), "spatial size must be an integer"),
    (dict(size=4097), "spatial size must be an integer between 1 and 4096"),
    (dict(size=65536), "spatial size must be an integer between 1 and 4096"),
    (dict(cin=65537), "input channels must be an integer between 1 and 65536"),
    (dict(cout=0), "output channels must be an integer between 1 and 65536"),
    (dict(stride=True), "stride must be an integer, got True \\(bool\\)"),
    (dict(stride=2.0), "stride must be an integer, got 2.0"),
    (dict(stride=3), "stride must be an integer between 1 and 2"),
    (dict(groups="2"), "groups must be an integer, got '2'"),
    (dict(groups=2.0), "groups must be an integer"),
    (dict(groups=None), "groups must be an integer"),
    (dict(groups=0), "groups must be an integer between 1 and 65536"),
    (dict(groups=3), "multiple of groups=3"),
    (dict(kind=None), "block kind must be one of"),
    (dict(kind=["basic"]), "block kind must be one of"),
])
def test_block_config_refuses_bad_inputs(kw, message):
    args = dict(kind="bottleneck")
    args.update(kw)
    with pytest.raises(SpecError, match=message):
        BlockConfig(**args)
    if "kind" not in kw:
        with pytest.raises(SpecError, match=message):
            compare_blocks(**{k: v for k, v in args.items() if k != "kind"})


def test_block_config_takes_numpy_ints_and_the_bounds():
    cfg = BlockConfig("bottleneck", np.int64(256), np.int32(256), np.int16(64), np.int64(4096), np.int8(2),
                      np.int64(32))
    assert all(type(getattr(cfg, f)) is int for f in ("cin", "cout", "width", "size", "stride", "groups"))
    assert cfg == BlockConfig("bottleneck", 256, 256, 64, 4096, 2, 32)
    assert len(block_terms(BlockConfig("basic", 65536, 65536, 65536, 4096))) > 0


def test_a_flag_that_contradicts_the_name_is_refused():
    """Issue 28, item 9: get_spec('plain_resnet18', plain=False) returned the plain net."""
    with pytest.raises(SpecError, match="'plain_resnet18' names a plain net but plain=False was asked for"):
        get_spec("plain_resnet18", plain=False)
    with pytest.raises(SpecError, match="names a preact net but preact=False"):
        get_spec("preact_resnet18", preact=False)
    assert not get_spec("plain_resnet18").residual and not get_spec("plain_resnet18", plain=True).residual
    assert get_spec("resnet18", plain=False).residual and get_spec("resnet18", plain=None).residual
