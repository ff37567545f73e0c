"""Fuzz: the spec API and the cost totals at the bounds (issue 10, items 2 and 9).

``spec-api``: seeded random arguments to ``custom_spec``, ``get_spec`` and ``BlockConfig``, valid and
invalid (wrong types: strings, floats, bools, None, NumPy floats, containers; out of range; values at
and one past every ``MAX_*`` bound). Every invalid input must raise a ``SpecError``; every valid one
must give totals that are Python ints and equal an independent count (parameters from the
state_dict shapes, MACs from the block plans; small nets also against ``build_model``'s numel).

``cost-overflow``: specs at the bounds (widest stages, largest inputs, most blocks) whose totals pass
2**63; every total the app shows (``totals``, each counting convention, rollups, per-op sums, the
block-comparison terms) must equal the independent big-int count of :mod:`tests.fuzz.exact`,
including the issue's example, 9,727,951,124,294,008,832 MACs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from analysis.arch.blockplan import total_stride
from analysis.arch.blocks import BLOCK_KINDS, BlockConfig, block_terms, compare_blocks
from analysis.arch.conventions import CONVENTIONS, convention_totals, totals_by_key
from analysis.arch.costs import arrow_safe, by_op, layer_table, rollup, totals
from analysis.arch.models import build_model
from analysis.arch.specs import (
    MAX_BLOCKS_PER_STAGE,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_INPUT_SIZE,
    MAX_STAGES,
    MAX_WIDTH,
    MODELS,
    ResNetSpec,
    custom_spec,
    get_spec,
)
from analysis.core.errors import SpecError
from tests.fuzz.exact import reference_params, reference_totals
from tests.fuzz.harness import Case, assert_no_failures, run_cases
from tests.helpers import numel

SEED = 20240610
ISSUE_SPEC = dict(block="basic", stem="cifar", layers=[8], widths=[65536], input_size=4096)
ISSUE_MACS = 9_727_951_124_294_008_832
SMALL_PARAMS = 300_000  # nets this small are also built, and their numel() compared


# ----------------------------------------------------------------------------- checks
def exact_totals(spec: ResNetSpec, *, build: bool = False) -> bool:
    """``totals`` are Python ints equal to the independent count; small nets: also ``numel()``."""
    t = totals(spec)
    shown = dict(params=t.params, macs=t.macs, flops=t.flops, torchinfo=t.torchinfo_mult_adds,
                 activation_bytes=t.activation_bytes, receptive_field=t.receptive_field)
    bad = {k: type(v).__name__ for k, v in shown.items() if type(v) is not int}
    assert not bad, f"not Python ints: {bad}"
    assert t.macs >= 0 and t.params > 0
    assert t.params == reference_params(spec), (t.params, reference_params(spec))
    ref = reference_totals(spec)
    diff = {k: (v, ref[k]) for k, v in shown.items() if v != ref[k]}
    assert not diff, f"differs from the independent count: {diff}"
    if build:
        assert t.params == numel(build_model(spec)), "differs from build_model's numel()"
    return True


def exact_everywhere(spec: ResNetSpec, macs: int | None = None) -> bool:
    """Every total the app shows, against the independent big-int count."""
    exact_totals(spec)
    ref = reference_totals(spec)
    if macs is not None:
        assert ref["macs"] == macs, (ref["macs"], macs)
    df = layer_table(spec)
    by_key = totals_by_key(spec, df)
    assert by_key == {c.key: ref[c.key] for c in CONVENTIONS}, by_key
    conv = convention_totals(spec, df)
    assert conv["total"].tolist() == [ref[c.key] for c in CONVENTIONS]
    assert all(type(v) is int for v in conv["total"].tolist())
    for level in ("block", "stage", "model"):
        r = rollup(df, level)
        for c, want in (("params", ref["params"]), ("macs", ref["macs"]), ("flops", ref["flops"]),
                        ("act_bytes", ref["activation_bytes"])):
            values = r[c].tolist()
            assert all(type(v) is int for v in values) and sum(values) == want, (level, c)
    ops = by_op(df)
    assert [sum(ops[c].tolist()) for c in ("params", "macs", "flops")] == [ref["params"], ref["macs"], ref["flops"]]
    shown = pa.Table.from_pandas(arrow_safe(rollup(df, "stage"))[["id", "params", "macs", "flops"]])
    assert sum(int(v) for v in shown.column("macs").to_pylist()) == ref["macs"]  # what st.dataframe shows
    return True


def block_reference(cfg: BlockConfig) -> tuple[int, int, int]:
    """(conv weights, BN parameters, MACs) of a block-comparison block, from the formulas of He et
    al. Fig. 5 (stride on the 3x3, option-B projection where the shape changes)."""
    cin, cout, w, s, g = cfg.cin, cfg.cout, cfg.width, cfg.stride, cfg.groups
    o = (cfg.size - 1) // s + 1  # a 3x3 with padding 1 and a 1x1 at stride s give the same size
    project = s != 1 or cin != cout
    pre = cfg.kind.startswith("preact")
    if cfg.kind.endswith("basic"):
        weights, macs = 9 * cin * cout + 9 * cout * cout, (9 * cin * cout + 9 * cout * cout) * o * o
        bn = 2 * (cin + cout) if pre else 2 * (cout + cout)
    else:
        weights = cin * w + 9 * (w // g) * w + w * cout
        macs = cin * w * cfg.size ** 2 + (9 * (w // g) * w + w * cout) * o * o
        bn = 2 * (cin + w + w) if pre else 2 * (w + w + cout)
    if project:
        weights, macs = weights + cin * cout, macs + cin * cout * o * o
        bn += 0 if pre else 2 * cout
    return weights, bn, macs


def exact_block(cfg: BlockConfig) -> bool:
    terms = block_terms(cfg)
    weights, bn, macs = block_reference(cfg)
    got = (sum(terms["weights"].tolist()), sum(terms["bn_params"].tolist()), sum(terms["macs"].tolist()))
    assert got == (weights, bn, macs), (got, (weights, bn, macs))
    assert all(type(v) is int for c in ("weights", "bn_params", "macs") for v in terms[c].tolist())
    return True


def exact_comparison(args: tuple[int, ...]) -> bool:
    table = compare_blocks(*args).set_index("block")
    for kind in BLOCK_KINDS:
        weights, bn, macs = block_reference(BlockConfig(kind, *args))
        assert table.loc[kind, "total parameters"] == weights + bn and table.loc[kind, "MACs"] == macs, kind
        assert type(table.loc[kind, "MACs"]) is int
    return True


# ----------------------------------------------------------------------------- generators
class Reiterable:
    """Any iterable of ints (not a list or tuple) is a valid ``layers``; unlike a generator, this one
    can be handed to more than one case."""

    def __init__(self, items: list[int]) -> None:
        self.items = list(items)

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Reiterable({self.items})"


def _maybe_numpy(rng: random.Random, n: int) -> Any:
    """Sometimes a NumPy integer: those are whole numbers and must be taken."""
    return rng.choice([np.int64, np.int32, np.int16])(n) if rng.random() < 0.15 and n < 2**15 else n


def valid_custom(rng: random.Random) -> dict[str, Any]:
    """Small valid ``custom_spec`` arguments, drawn so every constraint holds by construction."""
    n = rng.randint(1, 4)
    block = rng.choice(["basic", "bottleneck"])
    stem = rng.choice(["imagenet", "cifar"])
    groups = rng.choice([1, 2, 4, 8]) if block == "bottleneck" else 1
    wpg = rng.choice([4, 16, 24, 64, 128]) if block == "bottleneck" else 64
    least = -(-64 // wpg)  # planes * wpg >= 64, so the inner width is at least one group
    widths = sorted(rng.randint(least, least + 40) for _ in range(n))
    shortcut = rng.choice("ABC")
    stem_width = rng.randint(1, 32)
    if shortcut == "A":
        stem_width = min(stem_width, widths[0] * (4 if block == "bottleneck" else 1))
    stride = (4 if stem == "imagenet" else 1) * 2 ** (n - 1)
    layers = [rng.randint(1, 3) for _ in range(n)]
    seq = rng.choice([list, tuple, Reiterable, np.array])
    return dict(
        block=block, stem=stem, layers=seq(layers), widths=[_maybe_numpy(rng, w) for w in widths],
        stem_width=_maybe_numpy(rng, stem_width), shortcut=shortcut, residual=rng.random() < 0.7,
        preact=rng.random() < 0.3, stride_on=rng.choice(["3x3", "1x1"]), groups=groups, width_per_group=wpg,
        in_channels=rng.randint(1, 4), num_classes=_maybe_numpy(rng, rng.randint(1, 20)),
        input_size=_maybe_numpy(rng, rng.randint(stride, stride + 40)),
    )


# Values no field of that kind may take. Integers: wrong types, then out of range (per field below).
BAD_INT_TYPES: list[Any] = ["8", "eight", 8.0, 8.5, float("nan"), float("inf"), True, False, None, [8], (8,),
                            np.float64(8.0), np.float32(2.5), Decimal(8), Fraction(8, 1), 8 + 0j, np.bool_(True)]
BAD_BOOLS: list[Any] = ["True", "False", "", 1, 0, None, np.bool_(True), 1.0, [True]]
BAD_SEQUENCES: list[Any] = ["2, 2", "22", b"\x02\x02", 5, None, {2, 3}, frozenset({2}), {2: 1}, [2.5, 1],
                            [2.0], [True, 2], [[2]], ["2"], [None], [], [1] * (MAX_STAGES + 1)]
OUT_OF_RANGE: dict[str, list[int]] = {
    "stem_width": [0, -1, MAX_WIDTH + 1, 10**30],
    "in_channels": [0, -3, MAX_CHANNELS + 1, 10**30],
    "num_classes": [0, -1, MAX_CLASSES + 1, 10**30],
    "input_size": [0, -224, MAX_INPUT_SIZE + 1, 10**30],
    "groups": [0, -2, 10**30],
    "width_per_group": [0, -64, 10**30],
}
BAD_CHOICES: dict[str, list[Any]] = {
    "block": ["Basic", "bottleneck ", "resnet", "", None, 1, ["basic"], b"basic"],
    "stem": ["ImageNet", "mnist", None, 0, ("cifar",)],
    "shortcut": ["a", "D", "", None, 1, ["B"]],
    "stride_on": ["3X3", "2x2", None, 3, "1x1 "],
}


def invalid_custom(rng: random.Random, base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A valid argument dict with one field made certainly invalid; returns (what, kwargs)."""
    kw = dict(base)
    field = rng.choice(["layers", "widths", "stem_width", "in_channels", "num_classes", "input_size", "groups",
                        "width_per_group", "residual", "preact", "block", "stem", "shortcut", "stride_on",
                        "layers_range", "widths_range", "name"])
    if field in ("layers", "widths"):
        kw[field] = rng.choice(BAD_SEQUENCES)
    elif field in ("layers_range", "widths_range"):  # the last stage out of range, the others kept
        field = field.removesuffix("_range")
        bad = [0, -1, MAX_BLOCKS_PER_STAGE + 1, 10**30] if field == "layers" else [0, -8, MAX_WIDTH + 1, 10**30]
        kept = list(kw[field])[:-1] if isinstance(kw[field], (list, tuple, Reiterable, np.ndarray)) else []
        kw[field] = [*kept, rng.choice(bad)]
    elif field in OUT_OF_RANGE:
        kw[field] = rng.choice(BAD_INT_TYPES + OUT_OF_RANGE[field])
        if field == "stem_width" and kw[field] is None:
            kw[field] = "64"  # None means "the stem's default" here
    elif field in ("residual", "preact"):
        kw[field] = rng.choice(BAD_BOOLS)
    elif field == "name":
        kw[field] = rng.choice([None, 1, b"custom", ["custom"]])
    else:
        kw[field] = rng.choice(BAD_CHOICES[field])
    return f"{field}={kw[field]!r}"[:60], kw


def boundary_custom() -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Values at each MAX_* bound (valid) and one past it (invalid): (name, kwargs, valid)."""
    tiny = dict(block="basic", stem="cifar", layers=[1], widths=[1], stem_width=1, input_size=1, num_classes=1)
    for what, at, past in [
        ("in_channels", dict(in_channels=MAX_CHANNELS), dict(in_channels=MAX_CHANNELS + 1)),
        ("num_classes", dict(num_classes=MAX_CLASSES), dict(num_classes=MAX_CLASSES + 1)),
        ("widths", dict(widths=[MAX_WIDTH]), dict(widths=[MAX_WIDTH + 1])),
        ("stem_width", dict(stem_width=MAX_WIDTH), dict(stem_width=MAX_WIDTH + 1)),
        ("input_size", dict(input_size=MAX_INPUT_SIZE), dict(input_size=MAX_INPUT_SIZE + 1)),
        ("layers", dict(layers=[MAX_BLOCKS_PER_STAGE]), dict(layers=[MAX_BLOCKS_PER_STAGE + 1])),
        ("stages", dict(layers=[1] * MAX_STAGES, widths=[1] * MAX_STAGES, input_size=2 ** (MAX_STAGES - 1)),
         dict(layers=[1] * (MAX_STAGES + 1), widths=[1] * (MAX_STAGES + 1), input_size=MAX_INPUT_SIZE)),
        # no total-stride bound any more: every map stays >= 1x1, a 1-px resnet runs (with a warning)
        ("input-size-min", dict(stem="imagenet", layers=[1] * 4, widths=[1] * 4, input_size=1),
         dict(stem="imagenet", layers=[1] * 4, widths=[1] * 4, input_size=0)),
        ("inner-width", dict(block="bottleneck", widths=[MAX_WIDTH], width_per_group=64),
         dict(block="bottleneck", widths=[MAX_WIDTH], width_per_group=65)),
        ("inner-width-groups", dict(block="bottleneck", widths=[64], groups=1024),  # 64 x 1024 = 65536
         dict(block="bottleneck", widths=[64], groups=1025)),
        ("option-A", dict(shortcut="A", stem_width=1), dict(shortcut="A", stem_width=2)),
    ]:
        yield f"{what}-at-max", {**tiny, **at}, True
        yield f"{what}-past-max", {**tiny, **past}, False


def valid_get_spec(rng: random.Random) -> tuple[str, dict[str, Any]]:
    if rng.random() < 0.3:
        name = f"cifar_resnet{6 * rng.randint(1, 30) + 2}"
    else:
        name = rng.choice([n for n in MODELS if n != "cifar_resnet1202"])
    name = rng.choice(["", "", "plain_", "preact_", "plain_preact_"]) + name
    base = get_spec(name)
    kw: dict[str, Any] = {}
    if rng.random() < 0.4:
        kw["shortcut"] = rng.choice(["B", "C"] + (["A"] if base.family == "cifar" else []))
    if rng.random() < 0.4 and base.block == "bottleneck":
        kw["stride_on"] = rng.choice(["3x3", "1x1"])
    if rng.random() < 0.4:
        kw["input_size"] = rng.randint(total_stride(base), 2 * base.input_size)
    if rng.random() < 0.3:
        kw["num_classes"] = rng.choice([1, 10, 100, MAX_CLASSES])
    if rng.random() < 0.2:
        flag, value = rng.choice(["plain", "preact"]), rng.random() < 0.5
        kw[flag] = value or f"{flag}_" in name  # False beside a plain_/preact_ name contradicts it: an error case
    return name, kw


BAD_NAMES: list[Any] = [None, 123, 1.5, True, b"resnet18", ["resnet18"], ("resnet18",), {"resnet18"}, "", "   ",
                        "resnet19", "ResNet50", "resnet50_", "plain_", "preact_plain_resnet18", "cifar_resnet",
                        "cifar_resnet21", "cifar_resnet2", "cifar_resnet-4", "cifar_resnet12008",
                        "cifar_resnet" + "9" * 5000, "cifar_resnet２０", "cifar_resnet²", "cifar_resnet20.0",
                        "cifar_resnet 20", "resnet50\x00"]


def invalid_get_spec(rng: random.Random) -> tuple[str, Callable[[], Any]]:
    kind = rng.choice(["name", "flag", "input_size", "num_classes", "shortcut", "stride_on"])
    if kind == "name":
        name = rng.choice(BAD_NAMES)
        return f"name={name!r}"[:50], lambda: get_spec(name)
    good = rng.choice(["resnet18", "resnet50", "cifar_resnet20", "resnext50_32x4d"])
    if kind == "flag":
        flag, value = rng.choice(["plain", "preact"]), rng.choice(BAD_BOOLS)
        return f"{good}-{flag}={value!r}", lambda: get_spec(good, **{flag: value})
    if kind == "input_size":
        stride = total_stride(get_spec(good))
        value = rng.choice(BAD_INT_TYPES + [0, -1, stride - 1, MAX_INPUT_SIZE + 1, 10**30])
        if value is None:
            value = "None"  # None means "keep the model's own size"
        return f"{good}-input_size={value!r}", lambda: get_spec(good, input_size=value)
    if kind == "num_classes":
        value = rng.choice(BAD_INT_TYPES + [0, -1, MAX_CLASSES + 1])
        if value is None:
            value = 0
        return f"{good}-num_classes={value!r}", lambda: get_spec(good, num_classes=value)
    value = rng.choice([c for c in BAD_CHOICES[kind] if c is not None])
    return f"{good}-{kind}={value!r}", lambda: get_spec(good, **{kind: value})


def valid_block(rng: random.Random) -> BlockConfig:
    groups = rng.choice([1, 1, 2, 4, 32])
    width = groups * rng.randint(1, 16)
    big = rng.random() < 0.15
    return BlockConfig(rng.choice(BLOCK_KINDS), MAX_WIDTH if big else rng.randint(1, 512),
                       rng.randint(1, 512), width, MAX_INPUT_SIZE if big else rng.randint(1, 256),
                       rng.choice([1, 2]), groups)


def invalid_block(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kw: dict[str, Any] = dict(kind=rng.choice(BLOCK_KINDS), cin=64, cout=64, width=64, size=56, stride=1, groups=1)
    field = rng.choice(["kind", "cin", "cout", "width", "size", "stride", "groups", "range"])
    if field == "kind":
        kw["kind"] = rng.choice([None, "Basic", "resnet", 1, ["basic"], "bottleneck "])
    elif field == "range":
        field, value = rng.choice([("cin", MAX_WIDTH + 1), ("cout", 0), ("width", MAX_WIDTH + 1),
                                   ("size", MAX_INPUT_SIZE + 1), ("size", 65536), ("stride", 3), ("stride", 0),
                                   ("groups", 0), ("groups", 3), ("groups", 128), ("cin", 10**30)])
        kw[field] = value
    else:
        kw[field] = rng.choice(BAD_INT_TYPES)
    return f"{field}={kw[field]!r}"[:50], kw


def spec_api_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []

    def add(name: str, run: Callable[[], Any], expect: str, check: Callable[[Any], bool] | None = None) -> None:
        cases.append(Case(f"{len(cases):03d}-{name}", run, expect,  # type: ignore[arg-type]
                          check if check is not None else (lambda result: True)))

    for i in range(70):
        kw = valid_custom(rng)
        if i % 2:  # every other one also invalid, from the same arguments
            what, bad = invalid_custom(rng, kw)
            add(f"custom-invalid-{what}", lambda bad=bad: custom_spec(**bad), "error")
        add(f"custom-valid-{kw['block']}-{kw['stem']}",
            lambda kw=kw: custom_spec(**kw), "valid",
            lambda spec: exact_totals(spec, build=reference_params(spec) < SMALL_PARAMS))
    for i in range(40):
        what, bad = invalid_custom(rng, valid_custom(rng))
        if i % 4 == 0:  # sometimes two faults at once
            second, bad = invalid_custom(rng, bad)
            what = f"{what}+{second}"
        add(f"custom-invalid-{what}", lambda bad=bad: custom_spec(**bad), "error")
    for name, kw, ok in boundary_custom():
        add(f"custom-{name}", lambda kw=kw: custom_spec(**kw), "valid" if ok else "error",
            exact_totals if ok else None)
    for _ in range(45):
        name, kw = valid_get_spec(rng)
        add(f"get-valid-{name}-{sorted(kw)}", lambda name=name, kw=kw: get_spec(name, **kw), "valid", exact_totals)
    for name, flag in (("plain_resnet18", "plain"), ("preact_cifar_resnet20", "preact"),
                       ("plain_preact_resnet50", "preact")):
        add(f"get-contradiction-{name}-{flag}", lambda name=name, flag=flag: get_spec(name, **{flag: False}), "error")
    add("get-valid-cifar_resnet12002", lambda: get_spec("cifar_resnet12002"), "valid",
        lambda spec: spec.layers == (MAX_BLOCKS_PER_STAGE,) * 3 and totals(spec).params == reference_params(spec))
    for _ in range(55):
        name, run = invalid_get_spec(rng)
        add(f"get-invalid-{name}", run, "error")
    for _ in range(40):
        cfg = valid_block(rng)
        add(f"block-valid-{cfg.kind}-{cfg.cin}-{cfg.width}-{cfg.size}", lambda cfg=cfg: cfg, "valid", exact_block)
    for _ in range(45):
        what, kw = invalid_block(rng)
        add(f"block-invalid-{what}", lambda kw=kw: BlockConfig(**kw), "error")
        if kw["kind"] in BLOCK_KINDS:
            args = [kw[k] for k in ("cin", "cout", "width", "size", "stride", "groups")]
            add(f"compare-invalid-{what}", lambda args=args: compare_blocks(*args), "error")
    return cases


# ----------------------------------------------------------------------------- cost-overflow
def big_custom(rng: random.Random) -> dict[str, Any]:
    """A spec at or near the bounds whose totals pass int64 (widest stages, largest inputs)."""
    while True:
        n = rng.randint(1, 3)
        block = rng.choice(["basic", "bottleneck"])
        stem = rng.choice(["cifar", "cifar", "imagenet"])
        widths = [rng.choice([MAX_WIDTH, MAX_WIDTH - 1, 49152, 40000]) for _ in range(n)]
        groups, wpg = (rng.choice([(1, 64), (1, 16), (64, 1), (2, 32), (1, 1)]) if block == "bottleneck"
                       else (1, 64))
        # enough full-resolution blocks to pass 2**63 (the ImageNet stem divides the map by 4 per side)
        first = rng.randint(150, 300) if stem == "imagenet" else rng.randint(10, 40)
        kw = dict(block=block, stem=stem, layers=[first] + [rng.randint(1, 6) for _ in range(n - 1)], widths=widths,
                  input_size=rng.choice([MAX_INPUT_SIZE, MAX_INPUT_SIZE - 1, 3000]),
                  in_channels=rng.choice([3, MAX_CHANNELS]), num_classes=rng.choice([1000, MAX_CLASSES]),
                  stem_width=rng.choice([16, 64, MAX_WIDTH]), shortcut=rng.choice("BC"),
                  residual=rng.random() < 0.8, preact=rng.random() < 0.3, stride_on=rng.choice(["3x3", "1x1"]),
                  groups=groups, width_per_group=wpg)
        try:
            custom_spec(**kw)
        except SpecError:
            continue  # e.g. an inner width past MAX_WIDTH: drawn again
        return kw


def cost_overflow_specs() -> list[tuple[str, dict[str, Any], int | None]]:
    rng = random.Random(SEED + 1)
    out: list[tuple[str, dict[str, Any], int | None]] = [
        ("issue-basic", ISSUE_SPEC, ISSUE_MACS),
        ("issue-bottleneck", dict(ISSUE_SPEC, block="bottleneck"), None),
        ("most-blocks-basic", dict(block="basic", stem="cifar", layers=[MAX_BLOCKS_PER_STAGE], widths=[MAX_WIDTH],
                                   input_size=MAX_INPUT_SIZE), None),
        ("most-blocks-bottleneck", dict(block="bottleneck", stem="cifar", layers=[MAX_BLOCKS_PER_STAGE // 2, 1],
                                        widths=[MAX_WIDTH, MAX_WIDTH], input_size=MAX_INPUT_SIZE, shortcut="C",
                                        preact=True), None),
        ("all-stages", dict(block="bottleneck", stem="cifar", layers=[3] * MAX_STAGES, widths=[MAX_WIDTH] * MAX_STAGES,
                            input_size=MAX_INPUT_SIZE), None),
        ("imagenet-every-max", dict(block="bottleneck", layers=[300, 1], widths=[MAX_WIDTH] * 2,
                                    input_size=MAX_INPUT_SIZE, in_channels=MAX_CHANNELS, stem_width=MAX_WIDTH,
                                    num_classes=MAX_CLASSES, groups=64, width_per_group=1), None),
    ]
    for i in range(30):
        kw = big_custom(rng)
        out.append((f"random-{i}-{kw['block']}-{kw['stem']}", kw, None))
    return out


def cost_overflow_cases() -> list[Case]:
    cases = [Case(f"{name}", lambda kw=kw: custom_spec(**kw), "valid",
                  lambda spec, macs=macs: exact_everywhere(spec, macs))
             for name, kw, macs in cost_overflow_specs()]
    for kind in BLOCK_KINDS:
        for groups in (1, 64):
            cfg = dict(kind=kind, cin=MAX_WIDTH, cout=MAX_WIDTH, width=MAX_WIDTH, size=MAX_INPUT_SIZE, stride=1,
                       groups=groups)
            cases.append(Case(f"block-{kind}-g{groups}-at-max", lambda cfg=cfg: BlockConfig(**cfg), "valid",
                              exact_block))
    cases.append(Case("compare-at-max", lambda: (MAX_WIDTH, MAX_WIDTH // 2, MAX_WIDTH, MAX_INPUT_SIZE, 2, 1),
                      "valid", exact_comparison))
    return cases


# ----------------------------------------------------------------------------- tests
def test_spec_api_fuzz():
    cases = spec_api_cases()
    assert len(cases) >= 300
    assert sum(c.expect == "error" for c in cases) >= 120
    report = run_cases("spec-api", cases)
    assert_no_failures(report)


def test_cost_overflow_fuzz():
    specs = cost_overflow_specs()
    beyond = sum(reference_totals(custom_spec(**kw))["macs"] >= 2**63 for _, kw, _ in specs)
    assert beyond >= 20, f"only {beyond} of {len(specs)} specs pass int64: the category tests too little"
    report = run_cases("cost-overflow", cost_overflow_cases())
    assert_no_failures(report)
