"""Exact facts: analytic counts equal torchvision's published numbers, numel() and torchinfo."""

import tracemalloc
from pathlib import Path

import pytest

from analysis.arch.blocks import compare_blocks
from analysis.arch.conventions import CONVENTIONS, components, convention_totals, totals_by_key
from analysis.arch.costs import (
    COUNT_COLUMNS,
    arrow_safe,
    by_op,
    layer_table,
    receptive_field_growth,
    rollup,
    totals,
)
from analysis.arch.costs import torchinfo_mult_adds as torchinfo_mult_adds_of
from analysis.arch.models import build_model
from analysis.arch.reference import TORCHINFO_MULT_ADDS, TORCHVISION
from analysis.arch.specs import MODELS, custom_spec, get_spec
from analysis.core.errors import LensError, SpecError
from tests.fuzz.exact import reference_totals
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


# ----------------------------------------------------------------------------- exact at any size (issue 10, item 2)
# int64 columns wrapped these totals: the issue's basic net showed MACs = -8,718,792,949,415,542,784.
ISSUE_SPEC = dict(block="basic", stem="cifar", layers=[8], widths=[65536], input_size=4096)
ISSUE_MACS = 9_727_951_124_294_008_832
AT_THE_BOUNDS = {
    "issue-basic": ISSUE_SPEC,
    "issue-bottleneck": dict(ISSUE_SPEC, block="bottleneck"),  # raised OverflowError with wide groups
    "bottleneck-v1-two-stages": dict(ISSUE_SPEC, block="bottleneck", stride_on="1x1", layers=[4, 2],
                                     widths=[65536, 65536], shortcut="C", preact=True),
    # every other bound at its maximum too: input channels, stem width, classes, inner width 65536
    "imagenet-every-max": dict(block="bottleneck", layers=[300, 1], widths=[65536] * 2, input_size=4096,
                               in_channels=4096, stem_width=65536, num_classes=1_000_000, groups=64,
                               width_per_group=1),
}


def test_issue_example_macs_are_exact():
    t = totals(custom_spec(**ISSUE_SPEC))
    assert t.macs == ISSUE_MACS > 2**63
    assert type(t.macs) is int and type(t.flops) is int and type(t.params) is int


@pytest.mark.parametrize("kw", list(AT_THE_BOUNDS.values()), ids=list(AT_THE_BOUNDS))
def test_totals_and_conventions_equal_an_independent_big_int_count(kw):
    spec = custom_spec(**kw)
    ref = reference_totals(spec)
    assert ref["macs"] > 2**63  # these nets are beyond int64
    df = layer_table(spec)
    t = totals(spec, df)
    assert (t.params, t.macs, t.flops, t.activation_bytes, t.receptive_field) == (
        ref["params"], ref["macs"], ref["flops"], ref["activation_bytes"], ref["receptive_field"])
    assert t.torchinfo_mult_adds == torchinfo_mult_adds_of(df) == ref["torchinfo"]
    by_key = totals_by_key(spec, df)
    assert by_key == {c.key: ref[c.key] for c in CONVENTIONS}
    assert all(type(v) is int for v in by_key.values())
    table = convention_totals(spec, df)
    assert table["total"].tolist() == [ref[c.key] for c in CONVENTIONS]
    assert table["beyond conv+fc"].tolist() == [ref[c.key] - ref["macs"] for c in CONVENTIONS]
    assert components(spec, df)["conv + fc MACs"] == ref["macs"]


@pytest.mark.parametrize("kw", [AT_THE_BOUNDS["issue-basic"], AT_THE_BOUNDS["bottleneck-v1-two-stages"]],
                         ids=["basic", "bottleneck"])
def test_rollups_by_op_and_flop_columns_are_exact_beyond_int64(kw):
    spec = custom_spec(**kw)
    ref = reference_totals(spec)
    df = layer_table(spec)
    for c in COUNT_COLUMNS:
        assert df[c].dtype == object and all(type(v) is int for v in df[c].tolist()), c
    # the FLOP columns row by row, and their total
    for r in df.to_dict("records"):
        pool = r["pool_out_elems"] * 8 if r["op"] == "maxpool" else r["pool_in_elems"]
        assert r["flops_pool"] == pool
        assert r["flops"] == 2 * r["macs"] + r["bias_adds"] + 2 * r["bn_elems"] + r["relu_elems"] + pool + r["add_elems"]
    assert df["flops"].sum() == ref["flops"]
    for level in ("block", "stage", "model"):
        r = rollup(df, level)
        for c, want in (("params", ref["params"]), ("macs", ref["macs"]), ("flops", ref["flops"]),
                        ("act_bytes", ref["activation_bytes"])):
            assert r[c].dtype == object and sum(r[c].tolist()) == want, (level, c)
    assert rollup(df, "model").loc[0, "macs"] == ref["macs"]
    ops = by_op(df)
    assert [sum(ops[c].tolist()) for c in ("params", "macs", "flops")] == [ref["params"], ref["macs"], ref["flops"]]
    assert all(type(v) is int for v in ops["macs"].tolist())


def test_small_nets_keep_exact_ints_and_rollups_match_groupby():
    """The count columns are Python ints for every net (not only huge ones), and the hand-written
    rollup equals pandas' groupby on the same table."""
    df = layer_table(get_spec("resnet50"))
    assert all(type(v) is int for v in df["macs"].tolist())
    blocks = rollup(df, "block")
    expected = df.groupby("block", sort=False)["params"].apply(lambda s: sum(s.tolist()))
    assert blocks["params"].tolist() == expected.tolist()
    assert blocks["id"].tolist() == expected.index.tolist()
    assert blocks["layers"].tolist() == df.groupby("block", sort=False).size().tolist()


def test_arrow_safe_tables_display_exactly():
    pa = pytest.importorskip("pyarrow")
    df = rollup(layer_table(custom_spec(**ISSUE_SPEC)), "stage")
    with pytest.raises(OverflowError):  # what st.dataframe met
        pa.Table.from_pandas(df[["id", "macs"]])
    shown = pa.Table.from_pandas(arrow_safe(df)[["id", "macs", "params"]])
    assert [int(v) for v in shown.column("macs").to_pylist()] == df["macs"].tolist()
    assert shown.column("params").type == pa.int64()  # columns within int64 stay integers
    small = rollup(layer_table(get_spec("resnet18")), "stage")
    assert pa.Table.from_pandas(arrow_safe(small)[["macs"]]).column("macs").type == pa.int64()


def test_block_terms_are_exact_ints_at_the_bounds():
    t = compare_blocks(65536, 65536, 65536, 4096, 1, 1).set_index("block")
    assert t.loc["basic", "MACs"] == 2 * 9 * 65536 * 65536 * 4096 * 4096
    assert type(t.loc["basic", "MACs"]) is int


def test_explorer_page_shows_the_issue_example_exactly():
    """The page the issue was seen on: metrics, the stage table and the conventions table render
    (Arrow takes the Decimal columns) and show the exact totals."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / "explorer.py"),
                           default_timeout=300).run()
    at.sidebar.radio(key="explorer_source").set_value("Custom spec").run()
    at.sidebar.selectbox(key="explorer_cstem").select("cifar").run()
    at.sidebar.text_input(key="explorer_clayers").set_value("8").run()
    at.sidebar.text_input(key="explorer_cwidths").set_value("65536").run()
    at.sidebar.number_input(key="explorer_csize_cifar").set_value(4096).run()
    assert not at.exception, [e.value for e in at.exception]
    ref = reference_totals(custom_spec(**ISSUE_SPEC))
    assert {m.label: m.value for m in at.metric}["torchinfo mult-adds"] == f"{ref['torchinfo']:,}"
    stages = at.dataframe[0].value
    assert sum(int(v) for v in stages["macs"]) == ISSUE_MACS
    # the counters' rules are too long for a grid column: a wrapping table of numbers written as text,
    # in the section's tab (only the open tab is drawn)
    at.session_state["explorer_section"] = "Why FLOP counters disagree"
    at.run()
    conv = at.table[0].value.set_index("convention")
    assert int(conv.loc[CONVENTIONS[0].name, "total"].replace(",", "")) == ISSUE_MACS


def test_text_summary_for_resnet50_at_batch_2_states_the_published_counts():
    """The copyable text summary (issue 21, 'what users bring from torchinfo'): ResNet-50's published
    counts (torchvision's 25,557,032 parameters, the conv + fc core of 4,089,184,256 MACs per image,
    torchinfo's 4,089,238,376 mult-adds at batch 1), MACs doubled at batch 2, shapes with the batch."""
    from analysis.arch.costs import summary_text

    text = summary_text(get_spec("resnet50"), batch=2)
    lines = text.splitlines()
    assert lines[0].startswith("resnet50 (") and lines[0].endswith("), input 2x3x224x224")
    assert "Total params: 25,557,032" in lines
    assert "MACs (conv + fc), batch 2: 8,178,368,512" in lines
    assert "torchinfo mult-adds, batch 1: 4,089,238,376" in lines
    conv1 = next(line for line in lines if line.startswith("conv1 (conv)"))
    assert conv1.split() == ["conv1", "(conv)", "[2,", "64,", "112,", "112]", "9,408", "236,027,904"]
    with pytest.raises(SpecError):
        summary_text(get_spec("resnet50"), batch=0)


def test_explorer_batch_size_scales_the_costs_not_the_parameters():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / "explorer.py"),
                           default_timeout=300).run()
    at.number_input(key="explorer_batch").set_value(4).run()
    assert not at.exception
    shown = {m.label: m for m in at.metric}
    assert shown["Parameters"].value == "25,557,032"
    assert shown["MACs (conv + fc) (batch 4)"].proto.help == "Exactly 16,356,737,024 multiply-accumulates."
    assert shown["torchinfo mult-adds (batch 1)"].value == "4,089,238,376"
    assert "MACs (conv + fc), batch 4: 16,356,737,024" in at.code[0].value


@pytest.mark.parametrize("name,stage,field", [("resnet50", "layer4", 427), ("cifar_resnet20", "layer3", 81)])
def test_the_receptive_field_is_named_by_the_stage_it_is_read_after(name, stage, field):
    """The field of the last stage's output (the head's global pool makes it the whole input); ResNet-50's
    is 427 px (v1.5: the stride on the 3x3 conv), the CIFAR ResNet-20's 81 px (19 3x3 convs, jumps 1/2/4)."""
    t = totals(get_spec(name))
    assert (t.receptive_field_stage, t.receptive_field) == (stage, field)


def test_the_global_pool_field_is_the_formula_over_the_last_map():
    """The head's global average pool over ResNet-50's last 7x7 map (jump 32): its formula field is
    427 + (7 - 1) x 32 = 619 px and its jump 7 x 32 = 224, the whole input (issue 22's review: the
    pool's field was never tested)."""
    df = layer_table(get_spec("resnet50")).set_index("id")
    assert (int(df.loc["avgpool", "rf"]), int(df.loc["avgpool", "jump"])) == (619, 224)
