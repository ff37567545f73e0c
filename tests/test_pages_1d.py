"""Issue 13: the pages take 1-D nets. Block comparison in 1-D, the 1-D families on the Depth page,
1-D nets on the Diagrams page through the shared model picker, and the explorer on VDCNN-29 and
resnet1d_20."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.arch.costs import totals
from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from tests import downloads
from tests.helpers import numel, torchinfo_mult_adds

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("own_run_store")


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=120)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_blocks_page_in_1d():
    at = page("blocks.py").run()
    clean(at)
    at.radio(key="blocks_dims").set_value(1).run()
    clean(at)
    assert metrics(at)["BasicBlock conv weights"] == "24,576"  # Fig. 5's pairing: a 64-d BasicBlock, 3·64·64·2
    at.radio(key="blocks_pairing").set_value("notes").run()
    m = metrics(at)
    assert m["BasicBlock conv weights"] == "393,216"  # 3·256·256·2
    assert m["Bottleneck conv weights"] == "45,056"  # 256·64 + 3·64·64 + 64·256
    md = " ".join(x.value for x in at.markdown)
    assert "3·256·256 + 3·256·256 = 393,216" in md and "1·256·64 + 3·64·64 + 1·64·256 = 45,056" in md
    assert "3·3·" not in md
    size = at.number_input(key="blocks_size1d")
    assert size.label == "Length L (1–1,048,576 samples)" and size.value == 56
    comparison = at.dataframe[0].value.set_index("block")
    assert comparison.loc["basic", "MACs"] == 393_216 * 56  # weights x output length
    assert comparison.loc["bottleneck", "MACs"] == 45_056 * 56
    dot = at.get("graphviz_chart")[0].proto.spec
    assert "x\\n256×56" in dot and "conv1 3, 256\\n256×56" in dot and "3×3" not in dot
    assert any("channels × samples" in c.value for c in at.caption)

    # a length past the 2-D side limit (4,096 px), with stride 2: C×L shapes follow
    at.number_input(key="blocks_size1d").set_value(10_000).run()
    at.selectbox(key="blocks_stride").select(2).run()
    clean(at)
    assert "x\\n256×10000" in at.get("graphviz_chart")[0].proto.spec
    assert "256×5000" in at.get("graphviz_chart")[0].proto.spec
    # back to 2-D: the 2-D numbers and the pixel widget, which kept its own size
    at.radio(key="blocks_dims").set_value(2).run()
    at.selectbox(key="blocks_stride").select(1).run()
    assert metrics(at)["BasicBlock conv weights"] == "1,179,648"
    assert at.number_input(key="blocks_size").value == 56


def test_depth_page_1d_families():
    at = page("depth.py").run()
    at.radio(key="depth_family").set_value("vdcnn").run()
    clean(at)
    summary = at.dataframe[1].value.set_index("model")
    assert list(summary.index) == ["vdcnn9", "vdcnn17", "vdcnn29", "vdcnn49",
                                   "plain_vdcnn9", "plain_vdcnn17", "plain_vdcnn29", "plain_vdcnn49"]
    assert list(summary["depth"][:4]) == [9, 17, 29, 49]  # Conneau et al. count conv layers
    assert summary.loc["vdcnn29", "params"] == 4_224_452 == numel(build_model(get_spec("vdcnn29")))
    assert summary.loc["plain_vdcnn29", "params"] == 4_050_628  # without the three projections
    table1 = at.dataframe[0].value
    assert list(table1["output size"][:5]) == ["1024", "1024", "512", "256", "128"]
    captions = [c.value for c in at.caption]
    assert ("Every cost on this page is for one input at each model's own size: 16×1024 (channels × samples) "
            "for vdcnn9, vdcnn17, vdcnn29, vdcnn49.") in captions
    assert any("the plain twin keeps them" in c for c in captions)
    assert at.info and "No published" in at.info[0].value  # no empty paper table

    at.radio(key="depth_family").set_value("resnet1d").run()
    clean(at)
    assert at.multiselect(key="depth_models_resnet1d").value == ["resnet1d_8", "resnet1d_20", "resnet1d_56"]
    at.multiselect(key="depth_models_resnet1d").select("resnet1d_110").run()
    clean(at)
    summary = at.dataframe[1].value.set_index("model")
    assert summary.loc["resnet1d_20", "params"] == summary.loc["plain_resnet1d_20", "params"] == 360_490
    assert summary.loc["resnet1d_110", "depth"] == 110
    assert any("1×40 (channels × samples) for resnet1d_8, resnet1d_20, resnet1d_56, resnet1d_110" in c.value
               for c in at.caption)
    assert at.dataframe[0].value.iloc[-1]["layer"] == "MACs (×10⁶)"


def shown_dot(at: AppTest, files: downloads.Captured) -> str:
    """The main diagram's DOT (drawn in the viewer's frame; its download is the same text)."""
    buttons = {b.label: b for b in at.get("download_button")}
    return files.of(buttons["Download DOT"]).data.decode()


def test_diagrams_page_vdcnn29_through_the_model_picker():
    with downloads.captured() as files:
        at = page("diagrams.py").run()
        at.sidebar.selectbox(key="diagrams_model").set_value("vdcnn29").run()
        clean(at)
        dot = shown_dot(at, files)
    assert at.subheader[0].value == "vdcnn29 — 1-D, residual, shortcut B — input 16×1024 (channels × samples)"
    m = metrics(at)
    assert (m["Identity shortcuts (solid)"], m["Projection shortcuts (dashed)"]) == ("11", "3")
    assert 'conv1 [label="stem: conv1\\n64×1024"' in dot
    assert '"layer2.0.pool" [label="layer2.0.pool: max pool 3 /2\\n64×512"' in dot
    assert '"layer2.0.pool" -> "layer2.0@add"' in dot  # the shortcut starts after the pool
    assert "3×3" not in dot
    with downloads.captured() as files:
        at.radio(key="diagrams_level").set_value("layer").run()
        clean(at)
        dot = shown_dot(at, files)
    assert '"layer4.0.conv1" [label="layer4.0.conv1\\n512×128"' in dot and "3×3" not in dot
    assert '"layer2.0.pool" -> "layer2.0.downsample.0"' in dot

    # Block internals: 1-D blocks and VDCNN's
    at.radio(key="diagrams_block_dims").set_value(1).run()
    clean(at)
    internals = at.get("graphviz_chart")[-1].proto.spec
    assert 'label="conv1 3, 64\\n64×56"' in internals and "3×3" not in internals
    at.radio(key="diagrams_block1d").set_value("vdcnn").run()
    at.checkbox(key="diagrams_projection").check().run()
    clean(at)
    internals = at.get("graphviz_chart")[-1].proto.spec
    assert 'label="conv1 3, 128, bias\\n128×512"' in internals and 'pool -> "downsample.0"' in internals
    # the 2-D radio keeps its own choice
    at.radio(key="diagrams_block_dims").set_value(2).run()
    assert "conv1 3×3, 64 /2" in at.get("graphviz_chart")[-1].proto.spec


def test_diagrams_block_internals_open_in_the_chosen_nets_dimensions():
    at = page("diagrams.py")
    at.session_state["diagrams_model"] = "resnet1d_20"  # e.g. from a link: the first visit is 1-D
    at.run()
    clean(at)
    assert at.radio(key="diagrams_block_dims").value == 1
    assert "x\\n64×56" in at.get("graphviz_chart")[-1].proto.spec
    assert "1×40 (channels × samples)" in at.subheader[0].value


@pytest.mark.parametrize("name,params,shape", [("vdcnn29", "4,224,452", "16×1024"), ("resnet1d_20", "360,490", "1×40")])
def test_explorer_on_1d_builtins(name, params, shape):
    at = page("explorer.py").run()
    at.selectbox(key="explorer_model").select(name).run()
    clean(at)
    m = metrics(at)
    spec = get_spec(name)
    model = build_model(spec)
    assert m["Parameters"] == params == f"{numel(model):,}"
    assert m["torchinfo mult-adds"] == f"{torchinfo_mult_adds(model, spec):,}"
    assert m["Depth (weighted layers)"] == str(spec.depth)
    assert at.subheader[0].value.endswith(f"input {shape} (channels × samples)")
    stages = at.dataframe[0].value.set_index("id")
    # the field is named by the last stage before the head, and its row there says the same number
    last = [s for s in stages.index if s != "head"][-1]
    assert m[f"Receptive field after {last}"] == f"{stages.loc[last, 'rf']:,} samples"
    assert stages.loc[last, "rf"] == totals(spec).receptive_field
    assert stages.loc["stem", "in_shape"] == shape
    assert all(s.count("×") == 1 for s in stages["out_shape"])  # C×L, never a 2-D map
