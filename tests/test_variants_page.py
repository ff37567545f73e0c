"""The Variants lab page: the recorded grid beside the paper's numbers, a grid run from the page (stored,
reused on the second run), a grid a rerun interrupted, and the messages for missing or bad input."""

import functools
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.meta import TrainConfig
from analysis.experiments import train
from analysis.run.executor import DataSpec, InProcessExecutor
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore, default_home
from analysis.studies import grid as g

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "variants.py")
TINY = {"depths": (8,), "seeds": (0,), "recipe": TrainConfig(epochs=1), "data": DataSpec("digits", 8)}

pytestmark = pytest.mark.usefixtures("own_run_store")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, g.GridResult]:
    """A results file from a tiny real grid (depth 8, one epoch, digits at 8 px), in a store of its own."""
    home = tmp_path_factory.mktemp("recorded")
    result = g.run_grid(g.Grid(("original", "full_preact"), **TINY), RunStore(home / "store"), InProcessExecutor())
    path = home / "variants.json"
    g.write_results(str(path), result)
    return path, result


@pytest.fixture
def trainings(monkeypatch) -> list[str]:
    """Every call of analysis.experiments.train.train (what the executor trains with), by net name."""
    calls: list[str] = []
    real = train.train

    @functools.wraps(real)  # the same signature: the executor asks it whether it records gradients
    def counted(spec, *args, **kwargs):
        calls.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(train, "train", counted)
    return calls


def page(monkeypatch, results: Path) -> AppTest:
    monkeypatch.setenv("RESNET_LENS_VARIANTS_RESULTS", str(results))
    return AppTest.from_file(PAGE, default_timeout=120).run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def tiny_settings(at: AppTest) -> AppTest:
    at.multiselect(key="variants_depths").set_value([8])
    at.select_slider(key="variants_size").set_value(8)
    at.number_input(key="variants_seeds").set_value(1)
    return at.number_input(key="variants_epochs").set_value(1).run()


def chart(at: AppTest, trace_name: str) -> dict:
    for c in at.get("plotly_chart"):
        for trace in json.loads(c.proto.spec)["data"]:
            if trace.get("name") == trace_name:
                return trace
    raise AssertionError(f"no chart has a trace {trace_name!r}")


def test_the_recorded_grid_shows_beside_the_paper_with_readings(monkeypatch, recorded):
    path, result = recorded
    at = page(monkeypatch, path)
    clean(at)
    depth8 = at.dataframe[0].value
    assert list(depth8["variant"]) == ["original (identity shortcut)", "full pre-activation"]
    assert list(depth8["paper, ResNet-110 CIFAR-10 %"]) == ["6.61", "6.37"]
    summary = result.summary.set_index("variant")
    # one seed: the mean labelled as one run, no interval
    assert list(depth8["test error % [95 % CI]"]) == [f"{summary.loc[v, 'test_error_mean']:.2f} (one run)"
                                                     for v in result.grid.variants]
    assert list(depth8["runs / diverged"]) == ["1 / 0", "1 / 0"]
    # the readings are grid.reading's, from the numbers
    assert list(depth8["reading"]) == list(summary["reading"])
    assert depth8["reading"][1].endswith("paper: -0.24 pp vs the original")
    # one seed: no test, so no verdict against the paper; the runs trained now have the clean train error
    assert list(depth8["agrees with He et al. 2016?"]) == ["— (the reference)", "cannot tell (one run)"]
    assert "train error % (clean: eval mode, whole training set) [95 % CI]" in depth8.columns
    caption = " ".join(c.value for c in at.caption)
    from analysis.core.reporting import machine_text

    assert machine_text(result.machine) in caption and result.machine is not None
    assert "8×8 handwritten digits (test split" in caption and "depth 8" in caption and "1 seed each (0)" in caption
    assert "1 epoch of SGD" in caption and "ResNet-110 (54 blocks) on CIFAR-10" in caption
    assert f"Recording it took {result.wall_seconds:,.1f} s wall time (2 runs trained, 0 found" in caption
    paper = chart(at, "paper, ResNet-110 on CIFAR-10")
    assert paper["y"] == [6.61, 6.37]
    measured = chart(at, "depth 8 (measured)")
    assert [round(y, 4) for y in measured["y"]] == [round(summary.loc[v, "test_error_mean"], 4)
                                                    for v in result.grid.variants]
    # its runs are not in this machine's store: no curves are made up, and it says so
    assert any("No per-epoch history on this machine for: recorded · original · depth 8 · seed 0" in i.value
               for i in at.info)
    assert any("No gradient-flow records for these runs" in i.value for i in at.info)


def test_a_grid_run_from_the_page_is_stored_shown_and_reused(monkeypatch, tmp_path, trainings):
    at = tiny_settings(page(monkeypatch, tmp_path / "none.json"))
    assert at.multiselect(key="variants_variants").value == ["original", "scaling_0.5"]
    at.button(key="variants_run").click().run()
    clean(at)
    assert trainings == ["cifar_resnet8", "cifar_resnet8"]
    from ui import cache

    assert len(cache.run_store().runs()) == 2
    m = metrics(at)
    assert (m["Runs"], m["Trained now"], m["Found in the run store"]) == ("2", "2", "0")
    assert "Grid finished: 2 runs trained, 0 found in the run store" in at.success[0].value
    runs = at.dataframe[1].value
    assert list(runs["variant"]) == ["original", "scaling_0.5"] and not runs["reused"].any()
    assert list(at.dataframe[0].value["paper, ResNet-110 CIFAR-10 %"]) == ["6.61", "fail (> 20 %)"]
    # shown: the curves of both runs (from the store's per-epoch rows) and their gradient flow
    assert at.multiselect(key="variants_curves").value == list(runs["key"])
    curves = [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]
              if "<br>epoch %{x}<br>" in t.get("hovertemplate", "")]
    assert len(curves) == 4  # test and training error of each run
    assert at.multiselect(key="variants_grad_runs").value == list(runs["key"])
    assert len([c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["data"][0]["type"] == "heatmap"]) == 2
    assert not at.warning

    trainings.clear()
    at.button(key="variants_run").click().run()
    clean(at)
    assert trainings == []  # both runs came from the store
    m = metrics(at)
    assert (m["Trained now"], m["Found in the run store"]) == ("0", "2")
    again = at.dataframe[1].value
    assert again["reused"].all() and list(again["test_error"]) == list(runs["test_error"])
    assert "0 runs trained, 2 found in the run store" in at.success[0].value

    # issue 21 item 6: a reload (a new session, the same settings from the URL) shows the grid at once,
    # from the store, with its curves chosen; it used to vanish until Run was pressed again
    reload = tiny_settings(page(monkeypatch, tmp_path / "none.json"))
    clean(reload)
    assert trainings == []
    assert metrics(reload) == {"Runs": "2", "In the run store": "2", "Not run yet": "0"}
    assert "Shown from the run store: nothing was trained now." in [c.value for c in reload.caption]
    assert list(reload.dataframe[1].value["test_error"]) == list(runs["test_error"])
    assert reload.multiselect(key="variants_curves").value == list(runs["key"])
    # a choice the user clears stays clear (clear-all used to bring the first runs back at once)
    reload.multiselect(key="variants_curves").set_value([]).run()
    assert reload.multiselect(key="variants_curves").value == []
    assert "Choose runs to draw their training curves." in [i.value for i in reload.info]


def test_a_grid_a_rerun_interrupted_keeps_and_shows_its_finished_runs(monkeypatch, tmp_path, trainings):
    from ui import cache

    grid = g.Grid(("original", "scaling_0.5"), **TINY)
    g.run_grid(g.Grid(("original",), **TINY), cache.run_store(), InProcessExecutor())  # the one that finished
    trainings.clear()
    monkeypatch.setenv("RESNET_LENS_VARIANTS_RESULTS", str(tmp_path / "none.json"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["variants_active"] = grid  # what a Cancel click mid-grid leaves behind
    at.run()
    clean(at)
    assert trainings == []
    (warning,) = [w.value for w in at.warning]
    assert "The 1 of 2 runs that had finished are kept in the run store and shown below" in warning
    m = metrics(at)
    assert (m["Runs"], m["Trained now"], m["Found in the run store"], m["Not finished (cancelled)"]) == (
        "2", "0", "1", "1")
    runs = at.dataframe[1].value
    assert list(runs["status"]) == ["complete", "cancelled"]
    assert list(at.dataframe[0].value["runs / diverged"]) == ["1 / 0", "0 / 0"]
    assert "variants_active" not in at.session_state
    at.run()  # said once: the next rerun shows the kept grid without the warning
    assert not at.warning and metrics(at)["Found in the run store"] == "1"


def test_no_results_file_is_said_plainly(monkeypatch, tmp_path):
    missing = tmp_path / "variants_digits.json"
    at = page(monkeypatch, missing)
    clean(at)
    assert f"No recorded grid: `{missing}` is not there" in at.info[0].value
    assert not at.dataframe and not at.error
    assert not at.button(key="variants_run").disabled
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    at = page(monkeypatch, bad)
    clean(at)
    assert f"{bad}: not a grid results file" in at.error[0].value


@pytest.mark.parametrize(("change", "message"), [
    ({"variants_variants": []}, "Choose at least one variant (or type a combination)."),
    ({"variants_combos": "plain+exclusive_gating"}, "plain net has no shortcut"),
    ({"variants_combos": "original+nonsense"}, "unknown variant 'nonsense'"),
    ({"variants_depths": []}, "a grid needs at least one depth"),
])
def test_bad_input_is_one_message_and_no_run(monkeypatch, tmp_path, change, message):
    at = page(monkeypatch, tmp_path / "none.json")
    for key, value in change.items():
        widget = at.text_input(key=key) if key == "variants_combos" else at.multiselect(key=key)
        widget.set_value(value)
    at.run()
    clean(at)
    assert len(at.error) == 1 and message in at.error[0].value
    assert at.button(key="variants_run").disabled


def test_an_unusable_run_store_is_said_and_no_grid_runs(monkeypatch, tmp_path):
    from ui import cache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("RESNET_LENS_HOME", str(blocker))
    cache.run_store.clear()
    at = page(monkeypatch, tmp_path / "none.json")
    clean(at)
    assert len(at.error) == 1 and at.error[0].value.startswith("The run store cannot be used: cannot use the run store")
    assert at.button(key="variants_run").disabled


def test_why_shortcuts_work_links_to_the_lab():
    at = AppTest.from_file(str(ROOT / "app_pages" / "theory.py"), default_timeout=120).run()
    clean(at)
    (link,) = at.get("page_link")
    assert link.proto.page == "variants" and link.proto.label.startswith("Variants lab")



def test_a_grid_on_mnist1d_trains_1d_nets_from_the_page(trainings):
    """The Data choice: MNIST-1D trains resnet1d nets (1 x 40 sequences), with the same tables."""
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.multiselect(key="variants_variants").set_value(["original"])
    at.multiselect(key="variants_depths").set_value([8])
    at.radio(key="variants_data").set_value("mnist1d")
    at.number_input(key="variants_seeds").set_value(1)
    at.number_input(key="variants_epochs").set_value(1).run()
    assert not at.exception
    assert not any(s.key == "variants_size" for s in at.select_slider)
    at.button(key="variants_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(c.value for c in at.caption)
    assert "MNIST-1D (Greydanus 2020: sequences of 40 samples" in text
    assert "1-D ResNets (resnet1d" in text
    assert trainings == ["resnet1d_8"]
    (run,) = RunStore(default_home()).runs()
    assert load_checkpoint(run.path).spec.input_shape() == (1, 40)


def test_the_shipped_grid_shows_each_mean_with_its_95_percent_interval(monkeypatch):
    """The recorded 5-seed grid: cells and whiskers are the t-interval (the closing note's numbers for the
    original at depth 56: 1.96 [1.72, 2.19]), not one std."""
    at = page(monkeypatch, ROOT / "results" / "variants_digits.json")
    clean(at)
    depth56 = at.table[1].value  # depth 20, then depth 56
    original = depth56[depth56["variant"] == "original (identity shortcut)"].iloc[0]
    assert original["test error % [95 % CI]"] == "1.96 [1.72, 2.19]"
    # its clean training error, as the degradation readings give it: 0.31 [0.06, 0.56]
    assert original["train error % (clean: eval mode, whole training set) [95 % CI]"] == "0.31 [0.06, 0.56]"
    bars = chart(at, "depth 56 (measured)")
    i = bars["x"].index("original (identity shortcut)")
    assert bars["y"][i] - bars["error_y"]["array"][i] == pytest.approx(1.72, abs=0.005)
    assert bars["y"][i] + bars["error_y"]["array"][i] == pytest.approx(2.19, abs=0.005)


def test_recorded_grids_beside_the_default_are_offered(tmp_path, monkeypatch):
    """A second recorded grid (variants_mnist1d.json) next to the default one makes a choice appear."""
    # the grid recorded before the machine record and the clean train error (2 seeds, 6 epochs), kept as is
    src = ROOT / "tests" / "fixtures" / "variants_digits_2seeds_6epochs.json"
    default = tmp_path / "variants_digits.json"
    shutil.copy(src, default)
    shutil.copy(src, tmp_path / "variants_mnist1d.json")
    monkeypatch.setenv("RESNET_LENS_VARIANTS_RESULTS", str(default))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    radio = at.radio(key="variants_recorded")
    assert radio.options == ["digits (2-D CIFAR-style nets)", "MNIST-1D (1-D resnet1d nets)"]
    # the shipped file predates the machine record and the clean train error: said, nothing invented
    assert "Machine not recorded" in " ".join(c.value for c in at.caption)
    depth20 = at.table[0].value  # readings too long for grid columns: a wrapping table
    assert "running train error % (augmented batches, train mode) [95 % CI]" in depth20.columns
    agrees = list(depth20["agrees with He et al. 2016?"])
    assert agrees[0] == "— (the reference)" and all(a.startswith("cannot tell (2 seeds: no test)") for a in agrees[1:])


def test_the_executor_choice_shows_only_with_a_cluster_address(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNET_LENS_RAY_ADDRESS", raising=False)
    at = page(monkeypatch, tmp_path / "none.json")
    clean(at)
    assert "variants_executor" not in [r.key for r in at.radio]  # no cluster configured: this server only
    assert "this server" in at.button(key="variants_run").help
    monkeypatch.setenv("RESNET_LENS_RAY_ADDRESS", "head-without-port")
    at = page(monkeypatch, tmp_path / "none.json")
    clean(at)
    assert "variants_executor" not in [r.key for r in at.radio]
    assert any("$RESNET_LENS_RAY_ADDRESS: Ray address 'head-without-port'" in e.value for e in at.error)
    # with an address the choice is there, on this server by default; nothing connects until a grid runs
    monkeypatch.setenv("RESNET_LENS_RAY_ADDRESS", "ray://head.example:10001")
    at = page(monkeypatch, tmp_path / "none.json")
    clean(at)
    where = at.radio(key="variants_executor")
    assert where.options == ["This server", "Ray cluster"] and where.value == "here"
    assert "Ray cluster: ray://head.example:10001" in " ".join(c.value for c in at.caption)
    where.set_value("ray").run()
    assert "as Ray tasks on the cluster" in at.button(key="variants_run").help


def test_the_gate_sweep_beside_the_recorded_grid(monkeypatch, tmp_path, recorded):
    """A b_g sweep file next to the recorded grid (gate_sweep_digits.json) draws test error against b_g
    per gate with the paper's numbers where it reports them, and a table with σ(b_g) and each start's 95 % interval
    (none over the 2 seeds trained here)."""


    path, _ = recorded
    shutil.copy(path, tmp_path / "variants_digits.json")
    sweep = g.run_grid(g.Grid(("original", "exclusive_gating@0", "exclusive_gating"), (8,), (0, 1),
                              TrainConfig(epochs=1), DataSpec("digits", 8)), RunStore(tmp_path / "store"),
                       InProcessExecutor())
    g.write_results(str(tmp_path / "gate_sweep_digits.json"), sweep)
    g.write_results(str(tmp_path / "gate_sweep_digits_56.json"), sweep)  # another sweep file beside it: shown too
    at = page(monkeypatch, tmp_path / "variants_digits.json")
    clean(at)
    assert any(m.value == "#### Where the gate starts: a b_g sweep" for m in at.markdown)
    assert any(m.value == "#### Where the gate starts: a b_g sweep (gate_sweep_digits_56.json)" for m in at.markdown)
    assert [b.key for b in at.get("download_button") if b.proto.label == "Download the sweep (CSV)"] \
        == ["variants_sweep_csv_gate_sweep_digits", "variants_sweep_csv_gate_sweep_digits_56"]
    line = chart(at, "exclusive gating (measured)")
    assert line["x"] == [0, -6]
    errors = sweep.results.set_index(["variant", "seed"])["test_error"]
    at0 = [errors[("exclusive_gating@0", s)] for s in (0, 1)]
    assert line["y"][0] == pytest.approx(sum(at0) / 2)
    # 2 seeds: no interval (t(1) = 12.7), so no whisker
    assert line["error_y"]["array"] == [0.0, 0.0] and line["error_y"]["arrayminus"] == [0.0, 0.0]
    # the paper: "fail" (> 20 %) at b_g = 0, drawn at 20 %; 8.70 % at -6
    paper = chart(at, "exclusive gating: paper, ResNet-110 on CIFAR-10")
    assert (paper["x"], paper["y"]) == ([0, -6], [20.0, 8.70])
    # the original's band: its 95 % t-interval over the same seeds; over 2 seeds none, so the band is its mean
    base = [errors[("original", s)] for s in (0, 1)]
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if any(t.get("name") == "exclusive gating (measured)" for t in json.loads(c.proto.spec)["data"]))
    (band,) = [sh for sh in fig["layout"]["shapes"] if sh["type"] == "rect"]
    assert (band["y0"], band["y1"]) == pytest.approx((sum(base) / 2, sum(base) / 2))
    shown = next(t.value for t in [*at.table, *at.dataframe] if "σ(b_g) at init" in t.value.columns)
    assert list(shown["b_g"]) == ["0", "-6"] and list(shown["σ(b_g) at init"]) == ["0.5", "0.00247"]
    assert list(shown["paper, ResNet-110 CIFAR-10 %"]) == ["fail (> 20 %)", "8.70"]
    assert all(v.endswith(" (2 seeds: no interval)") for v in shown["test error % [95 % CI]"])
    assert at.get("download_button") and any(b.proto.label == "Download the sweep (CSV)"
                                              for b in at.get("download_button"))
