"""One AppTest per page: load it, change its main widgets, assert the numbers it shows."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import downloads

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("own_run_store")


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=120)
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_app_routes_every_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    clean(at)
    assert metrics(at)["Parameters"] == "25,557,032"
    assert len(list((ROOT / "app_pages").glob("*.py"))) >= 3


def test_explorer_models_levels_and_errors():
    at = page("explorer.py")
    clean(at)
    m = metrics(at)
    assert m["Parameters"] == "25,557,032"
    assert m["torchinfo mult-adds"] == "4,089,238,376"
    assert m["Receptive field after layer4"] == "427 px"
    stage_rows = at.dataframe[0].value
    assert list(stage_rows["id"]) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]

    at.selectbox(key="explorer_model").select("resnet18").run()
    clean(at)
    assert metrics(at)["Parameters"] == "11,689,512"
    assert metrics(at)["torchinfo mult-adds"] == "1,814,083,944"

    at.radio(key="explorer_level").set_value("layer").run()
    layer_rows = at.dataframe[0].value
    assert "layer1.0.downsample.0" not in set(layer_rows["id"])  # resnet18's layer1 keeps identity
    assert "layer2.0.downsample.0" in set(layer_rows["id"])
    assert layer_rows.set_index("id").loc["conv1", "out_shape"] == "64×112×112"

    at.checkbox(key="explorer_plain").check().run()
    assert metrics(at)["Parameters"] == f"{11_689_512 - 172_032 - 1_792:,}"  # projections and their BN gone

    at.selectbox(key="explorer_model").select("resnet152").run()
    at.checkbox(key="explorer_plain").uncheck().run()
    assert metrics(at)["Parameters"] == "60,192,808"
    assert metrics(at)["torchinfo mult-adds"] == "11,513,779,048"

    # switching family restores each model's own input size (issue: 224 px carried over to CIFAR nets)
    at.number_input(key="explorer_size_resnet152").set_value(160).run()
    at.selectbox(key="explorer_model").select("cifar_resnet1202").run()
    assert "input 3×32×32" in at.subheader[0].value
    assert metrics(at)["MACs (conv + fc)"] == "2.829 G"  # 2,829,238,912 at 32 px, as on the Depth page
    at.selectbox(key="explorer_model").select("resnet152").run()
    assert "input 3×160×160" in at.subheader[0].value  # the user's own choice for this model is kept
    at.radio(key="explorer_source").set_value("Custom spec").run()
    clean(at)
    assert metrics(at)["Parameters"] == "11,689,512"  # the custom defaults are ResNet-18
    at.text_input(key="explorer_clayers").input("2, 0, 2, 2").run()
    clean(at)
    assert "stage 2 has 0 blocks" in at.error[0].value
    at.text_input(key="explorer_clayers").input("3, 4, 6, 3").run()
    at.selectbox(key="explorer_cblock").select("bottleneck").run()
    at.number_input(key="explorer_cgroups").set_value(32).run()
    at.number_input(key="explorer_cwpg").set_value(4).run()
    assert metrics(at)["Parameters"] == "25,028,904"  # resnext50_32x4d, built by hand
    at.text_input(key="explorer_clayers").input("1, 1, 1, 1").run()
    at.number_input(key="explorer_csize_imagenet").set_value(16).run()
    # 16 px runs (every map stays >= 1x1): a warning that says what it means, not an error
    assert not at.error and "down to 1×1 before layer4" in at.warning[0].value
    clean(at)


def test_blocks_seed_numbers_and_widgets():
    at = page("blocks.py")
    clean(at)
    # the default is He et al. 2015, Fig. 5: a 64-d BasicBlock beside the 256-d bottleneck of width 64
    assert at.radio(key="blocks_pairing").value == "fig5"
    m = metrics(at)
    assert m["BasicBlock conv weights"] == f"{3 * 3 * 64 * 64 * 2:,}" == "73,728"
    assert m["Bottleneck conv weights"] == "69,632"
    md = " ".join(x.value for x in at.markdown)
    assert "3·3·64·64 + 3·3·64·64 = 73,728" in md
    # the notes' pairing: both 256-d
    at.radio(key="blocks_pairing").set_value("notes").run()
    clean(at)
    m = metrics(at)
    assert m["BasicBlock conv weights"] == "1,179,648"
    assert m["Bottleneck conv weights"] == "69,632"
    md = " ".join(x.value for x in at.markdown)
    assert "3·3·256·256 + 3·3·256·256 = 1,179,648" in md
    assert "1·1·256·64 + 3·3·64·64 + 1·1·64·256 = 69,632" in md

    assert "x\\n256×56×56" in at.get("graphviz_chart")[0].proto.spec
    at.number_input(key="blocks_cin").set_value(64).run()
    assert "x\\n64×56×56" in at.get("graphviz_chart")[0].proto.spec  # the diagram follows the inputs
    m = metrics(at)
    assert m["BasicBlock conv weights"] == f"{9 * 64 * 256 + 9 * 256 * 256:,}"
    assert any("Projection shortcut" in x.value for x in at.markdown)
    at.number_input(key="blocks_groups").set_value(3).run()
    assert "multiple of groups=3" in at.error[0].value
    clean(at)


def test_depth_page_families():
    at = page("depth.py")
    clean(at)
    t1 = at.dataframe[0].value
    assert list(t1.iloc[-1, 2:]) == ["1.814", "3.664", "4.089", "7.801", "11.514"]
    at.radio(key="depth_stride").set_value("1x1").run()
    t1 = at.dataframe[0].value
    assert list(t1.iloc[-1, 2:]) == ["1.814", "3.664", "3.858", "7.570", "11.282"]
    at.radio(key="depth_family").set_value("cifar").run()
    clean(at)
    summary = at.dataframe[1].value.set_index("model")
    assert summary.loc["cifar_resnet20", "params"] == 269_722
    assert summary.loc["plain_cifar_resnet20", "params"] == 269_722
    at.multiselect(key="depth_models_cifar").set_value([]).run()
    assert at.info
    clean(at)


# The Diagrams page (levels, metrics, twin, the viewer, downloads, huge graphs, opened nets) is tested in
# tests/test_net_diagrams.py.


def test_training_page_shows_shipped_runs_and_trains():
    from analysis.store.checkpoints import load_checkpoint

    with downloads.captured() as files:
        _train_and_download(files, load_checkpoint)


def _train_and_download(files, load_checkpoint):
    at = page("training.py")
    clean(at)
    table = at.dataframe[0].value
    assert sorted(table["model"]) == ["digits_plain20", "digits_plain56", "digits_resnet20", "digits_resnet56"]
    res56 = table.set_index("model").loc["digits_resnet56"]
    assert res56["test error %"] <= 3.0
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["residual"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_go").click().run()
    clean(at)
    trained = at.session_state["trained"]
    assert len(trained) == 1
    (label, ck), = trained.items()
    assert label.startswith("cifar_resnet8") and len(ck.meta.history) == 1
    assert at.dataframe[2].value["epochs"].tolist() == [1]  # 1: the recorded grid's comparisons
    # the run's checkpoint: its bytes are in the button (no deferred callable), named after the run
    button = next(b for b in at.get("download_button") if b.key == "train_download")
    file = files.of(button)
    assert file.filename == "cifar_resnet8_1ep_lr0.1_seed0.pt"
    again = load_checkpoint(file.data, name=file.filename)
    assert again.spec == ck.spec and len(again.meta.history) == 1
    at.number_input(key="train_epochs").set_value(2).run()  # any rerun: the same bytes, not serialised again
    assert files.of(next(b for b in at.get("download_button") if b.key == "train_download")) == file
    at.selectbox(key="train_data").select("cifar10").run()
    at.text_input(key="train_path").input("/nonexistent/cifar").run()
    at.button(key="train_go").click().run()
    clean(at)
    assert "no such directory" in at.error[0].value


def test_lesion_lab_toggles_and_sweeps():
    at = page("lesion.py")
    clean(at)
    m = metrics(at)
    intact = m["Test error, intact"]
    assert m["Test error, 0 deleted"] == intact
    at.checkbox(key="lesion_shipped: digits_resnet56_layer2.4").check().run()
    clean(at)
    m = metrics(at)
    assert "1 deleted" in " ".join(metrics(at))
    assert m["Test error, intact"] == intact
    at.selectbox(key="lesion_ckpt").select("shipped: digits_resnet20").run()
    at.button(key="lesion_run_single").click().run()
    clean(at)
    store = at.session_state["lesion_results"]
    nets = {k[0] for k in store}
    assert nets == {"shipped: digits_resnet20", "shipped: digits_plain20"}  # the plain twin beside it
    single = store[("shipped: digits_resnet20", "digits16", 0, "single", 0, 0)]
    assert len(single) == 1 + 9 and single["downsample"].sum() == 2
    at.session_state["lesion_tab"] = "k-block deletion"  # only the open tab's sweep is drawn
    at.run()
    at.number_input(key="lesion_k_samples").set_value(2).run()
    at.button(key="lesion_run_k").click().run()
    at.session_state["lesion_tab"] = "Reordering"
    at.run()
    at.number_input(key="lesion_reorder_samples").set_value(2).run()
    at.button(key="lesion_run_reorder").click().run()
    clean(at)
    exps = {k[3] for k in at.session_state["lesion_results"]}
    assert exps == {"single", "k", "reorder"}


def test_path_ensemble_views_and_measurement(monkeypatch):
    import time

    from analysis.experiments import paths
    from analysis.experiments.paths import MeasureSettings

    measure = paths.gradient_by_length

    def refuse(*args, **kwargs):
        raise AssertionError("the page measured without Measure being pressed")

    monkeypatch.setattr(paths, "gradient_by_length", refuse)
    t0 = time.perf_counter()
    at = page("paths.py")
    opened = time.perf_counter() - t0
    clean(at)
    assert opened < 30, f"the page took {opened:.0f} s to open"  # it measured 35-110 s on arrival before
    assert metrics(at)["Path length (residual branches passed)"] == "0"
    # the shipped 56-layer net opens with its stored results, trained and at initialisation: nothing measured
    assert metrics(at)["Residual blocks n"] == "27"
    assert at.session_state["paths_results"] == {}
    assert any("Stored results" in c.value and "10 samples per length, batch 64, seed 0" in c.value
               for c in at.caption)
    assert set(at.dataframe[-1].value["net"]) == {"trained", "initialisation"}
    # changing a setting measures nothing: the stored results stay, labelled with their settings
    at.number_input(key="paths_samples").set_value(4).run()
    at.number_input(key="paths_seed").set_value(1).run()
    clean(at)
    assert at.session_state["paths_results"] == {}
    assert "4 samples per length, batch 64, seed 1" in at.info[0].value and "press **Measure**" in at.info[0].value
    assert metrics(at)["Residual blocks n"] == "27"

    at.slider(key="paths_n").set_value(5).run()
    at.selectbox(key="paths_pick").select(31).run()
    assert metrics(at)["Path length (residual branches passed)"] == "5"
    assert metrics(at)["Paths"] == "18,014,398,509,481,984"  # cifar_resnet110's 54 blocks: 2^54, 17 digits, exact
    assert {m.label: m.proto.help for m in at.metric}["Paths"] == "2^54 = 18,014,398,509,481,984 paths."
    at.selectbox(key="paths_net").select("resnet18").run()
    assert metrics(at)["Paths"] == "256"  # 2^8

    # Measure measures, with the settings shown; trained and at initialisation
    monkeypatch.setattr(paths, "gradient_by_length", measure)
    at.selectbox(key="paths_ckpt").select("shipped: digits_resnet20").run()
    at.number_input(key="paths_samples").set_value(3).run()
    at.number_input(key="paths_seed").set_value(0).run()
    assert at.session_state["paths_results"] == {}
    at.button(key="paths_run").click().run()
    clean(at)
    m = metrics(at)
    assert m["Residual blocks n"] == "9"
    lo, hi = (int(v) for v in m["Effective paths (90% of total gradient)"].split("–"))
    assert 0 <= lo <= hi <= 9
    three = MeasureSettings(samples=3)
    assert set(at.session_state["paths_results"]) == {("shipped: digits_resnet20", net, three)
                                                     for net in ("trained", "initialisation")}
    assert any(c.value.startswith("Measured in this session (3 samples") for c in at.caption)
    assert "paths_active" not in at.session_state
    # back to the stored settings: the stored results again, still nothing new measured
    monkeypatch.setattr(paths, "gradient_by_length", refuse)
    at.number_input(key="paths_samples").set_value(10).run()
    clean(at)
    assert len(at.session_state["paths_results"]) == 2
    assert any("Stored results" in c.value for c in at.caption)


def test_path_ensemble_cancelled_measurement_keeps_nothing():
    """Cancel interrupts the measurement with a rerun; the next run says so and nothing partial is kept."""
    from analysis.experiments.paths import MeasureSettings

    at = AppTest.from_file(str(ROOT / "app_pages" / "paths.py"), default_timeout=120)
    at.session_state["paths_active"] = ("shipped: digits_resnet56", MeasureSettings(samples=7))
    at.run()
    clean(at)
    assert "was stopped before it finished" in at.warning[0].value
    assert "nothing of it was kept" in at.warning[0].value
    assert "7 samples per length" in at.warning[0].value
    assert at.session_state["paths_results"] == {} and "paths_active" not in at.session_state


def test_training_page_keeps_the_epochs_of_a_cancelled_run():
    """Cancel interrupts the training loop with a rerun; the finished epochs survive it."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec

    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=120)
    model = build_model(get_spec("cifar_resnet8").replace(in_channels=1, input_size=16))
    history = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_loss": 2.1, "test_acc": 0.25}]
    from analysis.data.data import load_digits
    from analysis.experiments.train import TrainConfig

    at.session_state["active_run"] = {"label": "cifar_resnet8 (cancelled)", "history": history,
                                      "model": model, "data": load_digits(16), "config": TrainConfig(epochs=3)}
    at.run()
    clean(at)
    kept = at.session_state["trained"]["cifar_resnet8 (cancelled)"]
    assert kept.meta.status_text == "cancelled after 1 epoch" and kept.meta.final["test_acc"] == 0.25


def test_training_page_on_a_local_image_folder(tmp_path):
    from PIL import Image

    for c, colour in (("cats", (220, 40, 40)), ("dogs", (40, 40, 220))):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (20 + i, 20), colour).save(tmp_path / c / f"{i}.png")
    at = page("training.py")
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["plain"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.selectbox(key="train_data").select("imagefolder").run()
    at.text_input(key="train_path").input(str(tmp_path)).run()
    at.number_input(key="train_img_size").set_value(16).run()
    at.button(key="train_go").click().run()
    clean(at)
    (label, ck), = at.session_state["trained"].items()
    assert ck.spec.in_channels == 3 and ck.spec.num_classes == 2 and not ck.spec.residual
    assert ck.meta.dataset.name == tmp_path.name


def test_theory_page_measures_scaled_shortcuts():
    at = page("theory.py")
    clean(at)
    assert len(at.latex) >= 4
    at.slider(key="theory_rscale").set_value(0.0).run()
    at.slider(key="theory_depth").set_value(10).run()
    clean(at)
    cap = " ".join(c.value for c in at.caption)
    assert "λ = 1.2: ×6.19" in cap and "λ = 1: ×1;" in cap and "λ = 0.8: ×0.107" in cap  # 1.2^10, 0.8^10
    at.multiselect(key="theory_lambdas").set_value([]).run()
    assert at.info


def test_si_formatting_reaches_exa():
    from ui.widgets import fmt_si

    assert fmt_si(9_727_951_124_294_008_832) == "9.728 E"  # issue 10's overflow example, exact MACs
    assert fmt_si(4_089_184_256) == "4.089 G" and fmt_si(999) == "999"


def test_trained_runs_survive_a_reload():
    """A new session (reload, new tab, server restart) still shows the nets trained earlier: they are
    kept in the run store (the suite's store is a temporary RESNET_LENS_HOME, see conftest)."""
    at = page("training.py")
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["plain"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="train_seed").set_value(7).run()
    at.button(key="train_go").click().run()
    clean(at)
    (label,) = [k for k in at.session_state["trained"] if "seed 7" in k]
    fresh = page("training.py")  # a new session: empty session state
    clean(fresh)
    assert label in list(fresh.dataframe[-1].value["model"])
    lesion = page("lesion.py")
    assert f"trained here: {label}" in lesion.selectbox(key="lesion_ckpt").options
    fresh.selectbox(key="train_download_pick").select(label).run()
    fresh.button(key="train_forget").click().run()
    clean(fresh)
    from analysis.store.runstore import RunStore

    assert label not in [r.label for r in RunStore().runs()]


def test_explorer_sections_draw_one_at_a_time():
    """Issue 21 item 10: the explorer's sections are tabs and only the open one is drawn (the page drew
    three charts and the counters' table at once). Each tab draws its own content."""
    at = page("explorer.py")
    clean(at)
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"explorer_stage_chart", "explorer_op_chart"} <= charts and "explorer_rf_chart" not in charts
    at.session_state["explorer_section"] = "Where the receptive field grows"
    at.run()
    clean(at)
    assert [c.key for c in at.get("plotly_chart")] == ["explorer_rf_chart"]
    steps = [c.value for c in at.caption if c.value.startswith("Largest single steps: ")]
    assert len(steps) == 1 and "px (jump " in steps[0]
    at.session_state["explorer_section"] = "Why FLOP counters disagree"
    at.run()
    clean(at)
    assert not at.get("plotly_chart") and len(at.table) == 1
