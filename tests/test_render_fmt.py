"""The app's one number format (ui/fmt.py), the shared chart layout (ui/render.py), and small inputs
(issue #11 items 7, 8 and 10): exact strings, figure properties, and shapes of the built net."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.arch.blockplan import feature_sizes, small_input_note
from analysis.arch.blocks import compare_blocks
from analysis.arch.costs import trace
from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.core.errors import SpecError
from ui import render
from ui.fmt import column_config, column_formats, fmt_bytes, fmt_count, fmt_float, fmt_int, fmt_si, printf


# --------------------------------------------------------------------------- numbers
def test_integers_have_thousands_separators():
    assert fmt_int(1_179_648) == "1,179,648"
    assert fmt_int(np.int64(69_632)) == "69,632"
    assert fmt_int(Decimal(10**20)) == "100,000,000,000,000,000,000"
    assert fmt_int(-1234) == "-1,234"


@pytest.mark.parametrize("x,text", [
    (2e-11, "2.00e-11"),  # issue 8: '0.00000000002' in tables
    (5e-4, "5.00e-4"),  # exponent without a leading zero, as Streamlit's table formatter writes it
    (6.9e15, "6.90e+15"),
    (1.2 ** 10, "6.19"),
    (0.8 ** 10, "0.107"),
    (1.0, "1"),
    (0.001, "0.001"),
    (1234.5, "1,230"),
    (999_999.0, "1,000,000"),
    (-0.5, "-0.5"),
    (0.0, "0"),
    (float("nan"), "nan"),
    (float("-inf"), "-inf"),
])
def test_floats_three_significant_digits_scientific_outside_the_plain_range(x, text):
    assert fmt_float(x) == text


def test_si_prefixes():
    assert fmt_si(9_727_951_124_294_008_832) == "9.728 E"
    assert fmt_si(4_089_184_256) == "4.089 G" and fmt_si(999) == "999"
    assert fmt_si(218_365_952, sig=3) == "218 M" and fmt_si(3_699_376_128, sig=3) == "3.70 G"
    assert fmt_si(70_400, sig=3) == "70.4 k"
    assert fmt_si(999_999, sig=3) == "1.00 M"  # rounds up into the next prefix, never '1000 k'
    assert fmt_si(999_999_999.9996) == "1.000 G"
    assert fmt_si(10**27) == "1.00e+27"  # past yotta: scientific, not '1000.000 Y'
    assert fmt_si(2_500, "B") == "2.500 kB"


def test_bytes_in_binary_units():
    assert fmt_bytes(20108.95 * 2**20) == "19.64 GiB"  # issue 8: '20108.95 MiB'
    assert fmt_bytes(143.279205 * 2**20) == "143.28 MiB"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1000) == "1,000 B" and fmt_bytes(1023 * 2**20) == "1,023.00 MiB"  # 1024 to the next unit
    assert fmt_bytes(1536) == "1.50 KiB"
    assert fmt_bytes(3 * 2**40) == "3.00 TiB"
    assert fmt_bytes(2**90) == "1,024.00 YiB"


def test_long_counts_are_shortened_with_their_length():
    assert fmt_count(2**1000) == "1.07e+301 (302 digits)"  # issue 8: 302-digit counts wrapping
    assert fmt_count(10**20 - 1) == "99,999,999,999,999,999,999"
    assert fmt_count(10**20) == "1.00e+20 (21 digits)"
    assert fmt_count(Decimal(9_727_951_124_294_008_832)) == "9,727,951,124,294,008,832"


def test_table_formats_follow_the_number_format():
    df = pd.DataFrame({
        "name": ["a", "b"],
        "count": [1_179_648, 69_632],
        "exact": pd.Series([10**20, 5], dtype=object),  # Python ints beyond int64
        "decimal": [Decimal(10**30), Decimal(3)],
        "small ints": pd.Series([1, 2], dtype=object),
        "gap": [11_689_512.0, float("nan")],  # an int column with a missing value
        "tiny": [2e-11, 0.5],
        "plain": [6.19, 0.107],
        "flag": [True, False],
    })
    # Streamlit writes integers past 2**53 digit for digit whatever the format: '%,d' throughout
    assert column_formats(df) == {"count": "%,d", "exact": "%,d", "decimal": "%,d", "small ints": "%,d",
                                  "gap": "%,d", "tiny": "%.2e", "plain": "%,.3g"}
    assert column_formats(df, digits=4)["plain"] == "%,.4g"
    config = column_config(df, overrides={"plain": "%.1f"})
    assert config["count"]["type_config"]["format"] == "%,d"
    assert config["plain"]["type_config"]["format"] == "%.1f"
    assert "name" not in config and "flag" not in config


# --------------------------------------------------------------------------- charts
def _legend_above(fig) -> bool:
    return fig.layout.legend.yanchor == "bottom" and fig.layout.legend.y >= 1 and fig.layout.showlegend


def test_block_bars_are_linear_with_the_ratio_written_on_them():
    fig = render.block_bars(compare_blocks(256, 256, 64, 56, 1, 1))
    assert fig.layout.yaxis.type == "linear" and fig.layout.yaxis2.type == "linear"
    params, macs = fig.data
    # 1,180,672 / 70,400 parameters and 3,699,376,128 / 218,365,952 MACs (issue 7: '16.9x looked like 2x')
    assert params.text[0] == "1.18 M<br><b>16.8×</b>" and params.text[1] == "70.4 k<br><b>1.0×</b>"
    assert macs.text[0] == "3.70 G<br><b>16.9×</b>"
    assert fig.layout.yaxis.range[1] > max(params.y)  # room above the bars for their labels


def _run(label: str, depth: int, residual: bool, epochs: int) -> dict:
    history = [{"epoch": float(e), "train_acc": 0.5 + e / 100, "test_acc": 0.4 + e / 100} for e in range(1, epochs + 1)]
    return {"label": label, "depth": depth, "residual": residual, "history": history}


def test_training_curves_one_panel_per_kind_present_one_colour_per_run():
    runs = [_run("cifar_resnet20 (2 ep, seed 0)", 20, True, 2), _run("cifar_resnet20 (2 ep, seed 1)", 20, True, 2)]
    fig = render.training_curves(runs)
    assert "xaxis2" not in fig.layout  # issue 7: an empty 'plain' panel
    colours = {t.line.color for t in fig.data if t.legendgroup != "style"}
    assert len(colours) == 2  # same depth, two runs, two colours
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"  # epochs 1, 2 — not 1, 1.5, 2
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend[:2] == ["test error (solid)", "running training error (dashed; augmented batches, train mode)"] \
        and _legend_above(fig)
    both = render.training_curves(runs + [_run("plain", 20, False, 40)])
    assert both.layout.xaxis2.title.text == "epoch — residual nets"
    assert both.layout.yaxis.showticklabels and both.layout.yaxis2.showticklabels  # numbers on both panels
    assert both.layout.xaxis.dtick == 5  # 40 epochs: 0, 5, 10, ...


def _sweep_frame() -> pd.DataFrame:
    rows = []
    for net, residual, intact in (("net A", True, 0.03), ("net B", False, 0.2)):
        rows.append({"net": net, "residual": residual, "index": -1, "deleted": "none", "downsample": False,
                     "error": intact})
        rows += [{"net": net, "residual": residual, "index": i, "deleted": f"layer{i // 9 + 1}.{i % 9}",
                  "downsample": i in (9, 18), "error": 0.1} for i in range(27)]
    return pd.DataFrame(rows)


def test_single_sweep_labels_whole_and_intact_errors_in_the_legend():
    fig = render.single_sweep(_sweep_frame())
    assert fig.layout.xaxis.automargin and fig.layout.xaxis.tickangle == -45 and fig.layout.xaxis.type == "category"
    assert list(fig.data[0].x)[:2] == ["layer1.0", "layer1.1"]  # whole names, not 'laye…'
    assert [t.name for t in fig.data if t.type == "scatter"] == ["net A: intact, 3.00 %", "net B: intact, 20.00 %"]
    assert not fig.layout.annotations and not fig.layout.shapes  # no label behind the bars
    assert _legend_above(fig)


def test_k_sweep_integer_ticks_and_legend_above():
    df = pd.DataFrame({"net": "n", "residual": True, "k": [0, 1, 2, 2], "error": [0.1, 0.2, 0.3, 0.4]})
    fig = render.k_sweep(df, "k", "blocks deleted")
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d" and _legend_above(fig)


def test_log_axes_tick_whole_decades_written_as_powers():
    lam = pd.DataFrame({"lambda": [0.5] * 3 + [1.5] * 3, "blocks": [0, 100, 200] * 2,
                        "ratio": [1, 0.5**100, 0.5**200, 1, 1.5**100, 1.5**200]})
    lam["lambda^blocks"] = lam["ratio"]
    fig = render.scaled_shortcuts(lam)
    y = fig.layout.yaxis
    assert (y.type, y.exponentformat, y.showexponent) == ("log", "power", "all")  # not '1μ' beside '10⁻¹⁸'
    assert y.dtick == 20 and list(y.range) == [-80, 40]  # 10⁻⁶¹ … 10³⁵: every 20th decade, ends labelled
    grad = pd.DataFrame({"net": "trained", "length": [0, 1, 2], "mean": [1e-3, 1e-5, 1e-8], "std": [0, 0, 0],
                         "total (rel.)": [0.1, 1.0, 0.2]})
    fig = render.gradient_by_length(grad, (1, 1))
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1 and list(fig.layout.yaxis.range) == [-8, -3]
    assert _legend_above(fig)  # issue 7: the legend covered the x-axis title


def test_vs_depth_log_only_where_values_span_decades():
    cifar = pd.DataFrame({"depth": [20, 110, 1202], "params": [269_722, 1_727_962, 19_421_274],
                          "series": "residual", "model": ["a", "b", "c"]})
    fig = render.vs_depth(cifar, "params", "Parameters vs depth")
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis.range) == [5, 8]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [20, 110, 1202]
    imagenet = pd.DataFrame({"depth": [18, 152], "params": [11_689_512, 60_192_808], "series": "residual",
                             "model": ["a", "b"]})
    fig = render.vs_depth(imagenet, "params", "Parameters vs depth")
    assert fig.layout.yaxis.type is None and fig.layout.yaxis.tickformat == "~s"  # linear, from zero
    assert fig.layout.legend.title.text == "Parameters vs depth" and _legend_above(fig)


def test_titles_sit_top_left_and_the_modebar_is_short():
    fig = render.confusion_delta(np.eye(3, dtype=int), ["a", "b", "c"])
    assert fig.layout.title.x == 0 and fig.layout.title.xanchor == "left"
    assert "lasso2d" in render.PLOTLY_CONFIG["modeBarButtonsToRemove"] and not render.PLOTLY_CONFIG["displaylogo"]


# --------------------------------------------------------------------------- small inputs (issue #11 item 10)
def _leaf_shapes(model: torch.nn.Module, size: int) -> dict[str, tuple[int, ...]]:
    """Output shape of every leaf module's first call on one image of ``size`` pixels."""
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(_module, _inputs, out) -> None:  # None: the module's output is left as it is
            shapes.setdefault(name, tuple(out.shape[1:]))
        return hook

    hooks = [mod.register_forward_hook(recorder(name)) for name, mod in model.named_modules()
             if name and not list(mod.children())]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("name,sizes", [("resnet50", range(1, 32)), ("cifar_resnet20", range(1, 5))])
def test_small_inputs_run_and_the_cost_table_has_their_shapes(name, sizes):
    """Inputs below the total stride are allowed: the built net runs on them and every shape the
    cost table computes is the shape PyTorch produces."""
    model = build_model(get_spec(name)).eval()  # the weights do not depend on the input size
    for size in sizes:
        spec = get_spec(name, input_size=size)
        real = _leaf_shapes(model, size)
        real["fc"] += (1, 1)  # the table writes the fc's output as C×1×1, PyTorch's flattened one as C
        rows = {r["id"]: r["out_shape"] for r in trace(spec)}
        compared = {k: rows[k] for k in real if k in rows}
        assert compared == {k: real[k] for k in compared}, size
        assert len(compared) > 50 if name == "resnet50" else len(compared) > 20
        stage_out = {r["stage"]: r["out_shape"][1] for r in trace(spec) if r["stage"].startswith(("stem", "layer"))}
        assert stage_out == feature_sizes(spec)


def test_small_input_note_says_which_stages_see_one_pixel():
    assert small_input_note(get_spec("resnet50", input_size=16)).startswith(
        "At 16 px the feature map is down to 1×1 before layer4, so layer4 works on single pixels")
    assert "layer3 and layer4 work" in small_input_note(get_spec("resnet50", input_size=7))
    assert "from 17 px on" in small_input_note(get_spec("resnet50", input_size=7))
    assert small_input_note(get_spec("resnet50", input_size=17)) is None  # the last stage starts at 2×2
    assert small_input_note(get_spec("cifar_resnet20", input_size=3)) is None
    assert "from 3 px on" in small_input_note(get_spec("cifar_resnet20", input_size=2))
    for bad in (0, 4097):
        with pytest.raises(SpecError, match="between 1 and 4096 pixels"):
            get_spec("resnet50", input_size=bad)


def test_number_inputs_show_their_range():
    from ui.widgets import range_label

    assert range_label("Input size", 1, 4096, "px") == "Input size (1–4,096 px)"
    assert range_label("Classes", 1, 1_000_000) == "Classes (1–1,000,000)"


def test_training_curves_draw_a_one_epoch_run_as_markers():
    # a one-point line draws nothing: a run of one epoch (or cancelled after one) was invisible
    fig = render.training_curves([_run("short", 20, True, 1), _run("long", 20, True, 3)])
    modes = {(t.name, t.line.dash): t.mode for t in fig.data if t.legendgroup != "style"}
    assert modes == {("short", "solid"): "lines+markers", ("short", "dash"): "lines+markers",
                     ("long", "solid"): "lines", ("long", "dash"): "lines"}


def test_gradient_by_length_error_bars_stay_above_zero_on_the_log_axis():
    df = pd.DataFrame({"net": ["trained"] * 3, "length": [0, 1, 2], "mean": [1e-3, 1e-5, 2e-7],
                       "std": [0.0, 4e-6, 5e-7], "total (rel.)": [1.0, 0.3, 0.01]})
    fig = render.gradient_by_length(df, (0, 1))
    magnitude, total = fig.data
    assert fig.layout.yaxis.type == "log"
    bars = magnitude.error_y
    assert bars.symmetric is False and list(bars.array) == [0.0, 4e-6, 5e-7]  # +std above the mean
    # below: std where it stays above zero, else 0.999 x mean (std 5e-7 >= mean 2e-7 ran off the axis)
    assert list(bars.arrayminus) == [0.0, 4e-6, 0.999 * 2e-7]
    assert all(m - b > 0 for m, b in zip(magnitude.y, bars.arrayminus, strict=True))
    assert list(magnitude.customdata) == [0.0, 4e-6, 5e-7] and "± std %{customdata:.3g}" in magnitude.hovertemplate
    assert total.error_y.array is None  # the linear total panel has no bars


@pytest.mark.parametrize("fmt,x,text", [
    ("%,d", 1_179_648, "1,179,648"), ("%,d", 12.0, "12"), ("%.2e", 2e-11, "2.00e-11"), ("%.2e", 6.9e15, "6.90e+15"),
    ("%,.3g", 1234.5, "1,230"), ("%,.3g", 0.10712, "0.107"), ("%.3f", 0.5, "0.500"), ("%,.1f", 12345.67, "12,345.7"),
    ("%,.3g", float("nan"), ""), ("%,d", None, ""), ("%.3f", "n/a", "n/a"),
])
def test_html_tables_write_numbers_as_the_grid_does(fmt, x, text):
    """A table with text too long for a grid column is drawn as HTML (issue 21 item 4): its numbers are
    written by printf as the grid writes them with the same format (sprintf-js)."""
    assert printf(fmt, x) == text


def test_long_text_goes_to_a_wrapping_table_and_short_text_gets_its_width():
    """Text a grid would cut (its longest cell past 1,000 px) makes the table an HTML one; shorter text
    columns get a width from their longest cell, never the grid's auto width (which drops outliers)."""
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import pandas as pd

        from ui.widgets import table

        table(pd.DataFrame({"n": [1179648, 2], "why": ["short", "x" * 200]}))
        table(pd.DataFrame({"n": [1, 2], "setup": ["fixed feature extractor", "a"]}))

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert len(at.table) == 1 and len(at.dataframe) == 1
    assert at.table[0].value["n"].tolist() == ["1,179,648", "2"]
    import json

    columns = json.loads(at.dataframe[0].proto.columns)  # the column config travels as JSON
    assert columns["setup"]["width"] == 8 * len("fixed feature extractor") + 44


def test_a_scientific_columns_zero_reads_zero():
    """Issue 21 item 7: 'std 0.00e+0' beside '2.26e-6'. A column in scientific notation writes its exact
    zeros as '0', its other numbers as the grid does ('%.2e'), through a Styler's display values."""
    import pyarrow as pa
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import pandas as pd

        from ui.widgets import table

        table(pd.DataFrame({"std": [0.0, 2.26e-6, 1e-9], "plain": [0.0, 0.5, 1.5]}))

    at = AppTest.from_function(page).run()
    assert not at.exception
    proto = at.dataframe[0].proto.arrow_data
    shown = pa.ipc.open_stream(proto.styler.display_values).read_all().to_pandas()
    assert shown["std"].tolist() == ["0", "2.26e-6", "1.00e-9"]
    assert shown["plain"].tolist() == ["0", "0.5", "1.5"]  # not scientific: the grid's own format, untouched


def test_the_receptive_field_metric_names_the_stage_whose_row_says_the_same():
    """Issue 21 item 7: 'Receptive field 427 px' beside a stage table whose last row said 619 (the
    head's global pool). The metric names the stage it is read after, whose row has that number;
    counts have separators (1,202 layers, not 1202)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / "explorer.py"),
                           default_timeout=120)
    at.run()
    at.selectbox(key="explorer_model").select("resnet50").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["Receptive field after layer4"] == "427 px"
    stages = at.dataframe[0].value.set_index("id")
    assert stages.loc["layer4", "rf"] == 427
    at.selectbox(key="explorer_model").select("cifar_resnet1202").run()
    assert {m.label: m.value for m in at.metric}["Depth (weighted layers)"] == "1,202"


def test_smoothing_is_an_exponential_moving_average():
    assert render.smoothed([10.0, 0.0, 0.0], 0.5) == [10.0, 5.0, 2.5]
    assert render.smoothed([3.0, 1.0], 0.0) == [3.0, 1.0]  # no smoothing: the values
    runs = [{"label": "a", "residual": True, "history": [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.4},
                                                         {"epoch": 2, "train_acc": 0.9, "test_acc": 0.8}]}]
    fig = render.training_curves(runs, smooth=0.5)
    test = next(t for t in fig.data if t.name == "a" and t.line.dash == "solid")
    assert [round(v, 6) for v in test.y] == [60.0, 40.0]  # 60, then 0.5·60 + 0.5·20


def test_tables_of_any_labels_and_missing_values_draw():
    """Review of issue 21 item 4: integer column labels, a nullable Int64 column with a missing value
    beside a scientific column with a zero, and a format for a column the table lacks all draw."""
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import pandas as pd

        from ui.widgets import table

        table(pd.DataFrame({0: [1.5, 2.5], 1: ["a", "b"]}))
        table(pd.DataFrame({"n": pd.array([1, None], dtype="Int64"), "std": [0.0, 2e-9]}), formats={"gone": "%.2e"})
        table(pd.DataFrame({0: [1, 2], 1: ["x" * 200, "y"]}), formats={"gone": "%.1f"})

    at = AppTest.from_function(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe) == 2 and len(at.table) == 1
