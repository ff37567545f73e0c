"""The Transfer learning page: the recorded comparison with its exact numbers, the message for a missing
or damaged file, a comparison run from the page (stored, reused on the second run), one a rerun
interrupted, and bad input as one message and no run."""

import dataclasses
import functools
import json
import math
from pathlib import Path

import pytest
from scipy.stats import t as scipy_t
from streamlit.testing.v1 import AppTest

from analysis.experiments import train
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore, net_key
from analysis.studies import transfer as tl
from tests.helpers import image_folder
from ui.urlstate import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "transfer.py")
SOURCE = ROOT / "checkpoints" / "transfer" / "digits04_resnet20.pt"
STAGES = 3
SETTINGS = {"selectbox", "multiselect", "radio", "checkbox", "number_input", "slider", "select_slider", "text_input"}

pytestmark = pytest.mark.usefixtures("own_run_store")


def pct(mean: float, std: float, n: int = 2) -> str:
    """The page's cell: the mean over n seeds and its 95 % t-interval (scipy's t quantile, not ours);
    under 3 seeds the mean and why it has no interval."""
    if n < 3:
        return f"{100 * mean:.1f} ({n} seeds: no interval)" if n > 1 else f"{100 * mean:.1f} (one run)"
    half = float(scipy_t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return f"{100 * mean:.1f} [{100 * (mean - half):.1f}, {100 * (mean + half):.1f}]"


@pytest.fixture(scope="module")
def source():
    return load_checkpoint(SOURCE)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, source) -> tuple[Path, tl.PlanResult]:
    """A results file from a tiny real comparison: the three named modes, the feature extractor
    without normalisation and fine-tuning with BatchNorm statistics frozen; 1 and all labels per
    class, two seeds, 5 SGD steps."""
    setups = (tl.mode_setup("scratch", STAGES), tl.mode_setup("frozen", STAGES), tl.mode_setup("finetune", STAGES),
              tl.mode_setup("frozen", STAGES, norm="none"), tl.mode_setup("finetune", STAGES, bn="frozen"))
    result = tl.run_plan(source, tl.Plan(setups, (1, None), (0, 1), tl.Recipe(steps=5)))
    path = tmp_path_factory.mktemp("recorded") / "transfer.json"
    tl.write_results(str(path), result)
    return path, tl.load_results(str(path))  # the numbers as the file has them (JSON keeps 10 digits)


@pytest.fixture
def fits(monkeypatch) -> list[int]:
    """Every call of analysis.experiments.train.fit (what a transfer run trains with), by number of training images."""
    calls: list[int] = []
    real = train.fit

    @functools.wraps(real)
    def counted(model, data, *args, **kwargs):
        calls.append(len(data.y_train))
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(train, "fit", counted)
    return calls


def page(monkeypatch, results: Path) -> AppTest:
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS", str(results))
    return AppTest.from_file(PAGE, default_timeout=300).run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def with_columns(at: AppTest, *columns: str):
    """The one table on screen that has these columns (and not those written '-name')."""
    (found,) = [df for df in frames(at) if all((c[1:] not in df.columns) if c.startswith("-") else c in df.columns
                                               for c in columns)]
    return found


def open_section(at: AppTest, prefix: str, title: str) -> AppTest:
    """Open one tab of a comparison's sections: only the open tab is drawn (issue 21 item 10)."""
    at.session_state[f"{prefix}_section"] = title
    return at.run()


def keyed_settings(at: AppTest) -> list[tuple[str, str]]:
    """(key, type) of every keyed setting widget on screen (no button, download or chart)."""
    out: list[tuple[str, str]] = []

    def walk(node: object) -> None:
        for child in getattr(node, "children", {}).values():
            walk(child)
        key = getattr(node, "key", None)
        if key and getattr(node, "type", "") in SETTINGS:
            out.append((key, getattr(node, "type", "")))

    walk(at._tree)
    return out


def traces(at: AppTest, chart: str, name: str) -> list[dict]:
    """The traces called ``name`` of the chart keyed ``chart`` (its key ends the element's id)."""
    return [t for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{chart}")
            for t in json.loads(c.proto.spec)["data"] if t.get("name") == name]


def test_the_recorded_comparison_shows_the_files_numbers(monkeypatch, recorded):
    path, result = recorded
    at = page(monkeypatch, path)
    clean(at)
    assert not at.error and not at.warning
    s = result.summary.set_index(["setup", "labels"])

    def mean(setup: str, labels: str) -> float:
        return float(s.loc[(setup, labels), "test_acc_mean"])

    def std(setup: str, labels: str) -> float:
        return float(s.loc[(setup, labels), "test_acc_std"])

    m = metrics(at)
    assert (m["Runs"], m["Setups"], m["Seeds"]) == ("20", "5", "2")
    for mode in ("from scratch", "fixed feature extractor", "fine-tune everything"):
        assert m[f"{mode}, 1 per class"] == f"{100 * mean(mode, '1'):.1f} %"
    acc = with_columns(at, "setup", "1 per class", "all labelled", "seeds")
    assert list(acc["setup"]) == list(dict.fromkeys(result.results["setup"]))
    assert list(acc["1 per class"]) == [pct(mean(x, "1"), std(x, "1")) for x in acc["setup"]]
    assert list(acc["all labelled"]) == [pct(mean(x, "all"), std(x, "all")) for x in acc["setup"]]
    assert list(acc["seeds"]) == [2] * 5
    # the chart: the modes (not the preprocessing or BatchNorm variants), the file's means in per cent
    (scratch,) = traces(at, "transfer_rec_labels_chart", "from scratch")
    assert [round(y, 6) for y in scratch["y"]] == [round(100 * mean("from scratch", n), 6) for n in ("1", "all")]
    # whiskers: none over 2 seeds (a t-interval there spans ±12.7 standard errors), and the hover says so
    assert scratch["error_y"]["array"] == [0.0, 0.0]
    assert [c[1] for c in scratch["customdata"]] == ["(2 seeds: no interval)"] * 2
    all_images = result.results.loc[result.results["per_class"].isna(), "train_images"].iloc[0]
    assert scratch["x"] == [1.0, all_images / 5]
    assert traces(at, "transfer_rec_labels_chart", "fixed feature extractor")
    assert not traces(at, "transfer_rec_labels_chart", "fixed feature extractor (no normalisation)")
    # the first-k chart maps k = 0 to from scratch, k = 3 to the feature extractor and fine-tune everything
    (frozen_line,) = traces(at, "transfer_rec_k_chart", "first k stages frozen")
    (tuned_line,) = traces(at, "transfer_rec_k_chart", "first k stages fine-tuned")
    assert frozen_line["x"] == [0, 3] and tuned_line["x"] == [0, 3]
    assert [round(y, 6) for y in frozen_line["y"]] == [round(100 * mean(x, "1"), 6)
                                                      for x in ("from scratch", "fixed feature extractor")]
    assert [round(y, 6) for y in tuned_line["y"]] == [round(100 * mean(x, "1"), 6)
                                                     for x in ("from scratch", "fine-tune everything")]
    assert frozen_line["error_y"]["array"] == [0.0, 0.0]  # 2 seeds: no interval, no whisker
    assert [c[1] for c in frozen_line["customdata"]] == ["(2 seeds: no interval)"] * 2
    # preprocessing and BatchNorm: the accuracies and the measured differences in points
    open_section(at, "transfer_rec", "Preprocessing")
    assert not traces(at, "transfer_rec_k_chart", "first k stages frozen")  # the closed tab is not drawn
    norm = with_columns(at, "source statistics %", "no normalisation %")
    free, none = "fixed feature extractor", "fixed feature extractor (no normalisation)"
    assert list(norm["labels"]) == ["1 per class", "all labelled"]
    assert list(norm["no normalisation %"]) == [pct(mean(none, n), std(none, n)) for n in ("1", "all")]
    assert list(norm["Δ no normalisation"]) == [
        f"{100 * (mean(none, n) - mean(free, n)):+.1f}" for n in ("1", "all")]
    (bars,) = traces(at, "transfer_rec_norm_chart", "no normalisation")
    assert bars["error_y"]["array"] == [0.0, 0.0] and bars["customdata"] == ["(2 seeds: no interval)"] * 2
    open_section(at, "transfer_rec", "BatchNorm while fine-tuning")
    bn = with_columns(at, "running statistics updated %", "running statistics frozen %")
    tuned, fixed = "fine-tune everything", "fine-tune everything (BN statistics frozen)"
    assert list(bn["Δ running statistics frozen"]) == [
        f"{100 * (mean(fixed, n) - mean(tuned, n)):+.1f}" for n in ("1", "all")]
    assert list(bn["running statistics frozen %"]) == [pct(mean(fixed, n), std(fixed, n)) for n in ("1", "all")]
    (bars,) = traces(at, "transfer_rec_bn_chart", "running statistics frozen")
    assert bars["error_y"]["array"] == [0.0, 0.0]
    # the linear probe by stage, and the readings, one line each
    open_section(at, "transfer_rec", "Linear probe by stage")
    probe = with_columns(at, "stage", "features")
    assert list(probe["stage"]) == ["layer1", "layer2", "layer3"] and list(probe["features"]) == [16, 32, 64]
    expected = result.probe[result.probe["per_class"] == 1]["test_acc"]
    assert list(probe["1 per class %"]) == [f"{100 * v:.1f}" for v in expected]
    text = " ".join(md.value for md in at.markdown)
    # paired by seed, in test images of the target's test split; 2 seeds: no test
    lines = tl.readings(result.summary, STAGES, result.probe, results=result.results, test_size=result.meta["test"])
    assert lines and all(f"- {line}" in text for line in lines)
    assert "(at every setting: 2 seeds: no test)" in lines[0]
    caption = " ".join(c.value for c in at.caption)
    from analysis.core.reporting import machine_text

    assert machine_text(result.meta["machine"]) in caption  # recorded now: the machine it was measured on
    assert "Source net: cifar_resnet20, 3 stages" in caption and "5 SGD steps" in caption
    assert "labelled training images per class: 1, all; 2 seeds (0, 1)" in caption
    assert f"Recording it took {result.seconds:,.1f} s wall time (20 runs trained, 0 found already in the run store)" in caption
    assert [d.proto.label for d in at.get("download_button")][:4] == [
        "Download runs (CSV)", "Download summary (CSV)", "Download curves (CSV)", "Download probe (CSV)"]


def test_time_to_a_target_accuracy_and_the_curves_follow_their_widgets(monkeypatch, recorded):
    path, result = recorded
    at = open_section(page(monkeypatch, path), "transfer_rec", "Learning curves")
    at.slider(key="transfer_rec_threshold").set_value(20).run()
    clean(at)
    times = with_columns(at, "setup", "1 per class", "all labelled", "-seeds")
    hits = tl.time_to(result.curves, 0.2)
    scratch_all = hits[(hits["setup"] == "from scratch") & hits["per_class"].isna()]
    assert scratch_all["seconds"].notna().all()  # every run of 5 steps beats chance at 20 %
    cell = times.set_index("setup").loc["from scratch", "all labelled"]
    # 5 steps of 32 of the 671 images: one epoch, reached at its end
    assert cell == f"100% · {scratch_all['seconds'].mean():.1f} s (2/2)"
    # 1 per class: 5 images, one step per epoch, so 5 epochs; the share is the epoch reached over 5
    one = hits[(hits["setup"] == "fine-tune everything") & (hits["per_class"] == 1)].dropna(subset=["epoch"])
    c = result.curves
    assert c[(c["setup"] == "fine-tune everything") & (c["per_class"] == 1)].groupby("seed")["epoch"].max().tolist() \
        == [5, 5]
    want = f"{(one['epoch'] / 5).mean():.0%} · {one['seconds'].mean():.1f} s ({len(one)}/2)" if len(one) \
        else "not reached (0/2)"
    assert times.set_index("setup").loc["fine-tune everything", "1 per class"] == want
    at.slider(key="transfer_rec_threshold").set_value(100).run()
    times = with_columns(at, "setup", "1 per class", "all labelled", "-seeds")
    assert set(times["all labelled"]) == {"not reached (0/2)"}
    # the curves at the chosen setting: one line per seed of each chosen setup, on the chosen axis
    at.selectbox(key="transfer_rec_at").set_value("all").run()
    at.multiselect(key="transfer_rec_curve_setups").set_value(["fine-tune everything"])
    at.radio(key="transfer_rec_curve_x").set_value("seconds").run()
    clean(at)
    lines = traces(at, "transfer_rec_curves_chart", "fine-tune everything")
    c = result.curves
    want = c[(c["setup"] == "fine-tune everything") & c["per_class"].isna()]
    assert len(lines) == 2
    assert sorted(v for t in lines for v in t["x"]) == sorted(want["seconds"])


def test_no_results_file_is_said_plainly(monkeypatch, tmp_path):
    missing = tmp_path / "transfer_digits.json"
    at = page(monkeypatch, missing)
    clean(at)
    info = at.info[0].value
    assert f"No recorded comparison: `{missing}` is not there" in info
    assert "python -m analysis transfer --default-setups --steps 200 --seeds 0 1 2 3 4 --out results/transfer_digits.json" in info
    assert not at.dataframe and not at.error
    assert not at.button(key="transfer_run").disabled
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    at = page(monkeypatch, bad)
    clean(at)
    assert f"{bad}: not a transfer results file" in at.error[0].value


def tiny(at: AppTest, modes: list[str]) -> AppTest:
    at.multiselect(key="transfer_modes").set_value(modes)
    at.multiselect(key="transfer_labels").set_value(["1"])
    return at.number_input(key="transfer_steps").set_value(5).run()


def test_a_comparison_run_from_the_page_is_stored_shown_and_reused(monkeypatch, tmp_path, fits, source):
    at = tiny(page(monkeypatch, tmp_path / "none.json"), ["scratch", "frozen"])
    assert at.number_input(key="transfer_seeds").value == 1
    at.button(key="transfer_run").click().run()
    clean(at)
    assert fits == [5, 5]  # two runs, one labelled image of each of the five digits
    from ui import cache

    stored = cache.run_store().sweeps_of(net_key(source))
    assert [s.kind for s in stored] == ["transfer", "transfer"]
    m = metrics(at)
    assert (m["Runs"], m["Trained now"], m["Found in the run store"]) == ("2", "2", "0")
    assert "Comparison finished: 2 runs trained, 0 found in the run store" in at.success[0].value
    acc = with_columns(at, "setup", "1 per class", "seeds")
    assert list(acc["setup"]) == ["from scratch", "fixed feature extractor"]
    mine = at.session_state["transfer_result"][0].results.set_index("setup")["test_acc"]
    assert list(acc["1 per class"]) == [f"{100 * mine[x]:.1f} (one run)" for x in acc["setup"]]  # one seed: no interval
    caption = " ".join(c.value for c in at.caption)
    assert "Source net: digits 0–4 (cifar_resnet20), 3 stages; target: the digits 5–9 (all 225 of their test images)" in caption
    assert "5 SGD steps" in caption

    # the widgets of the user's comparison are settings the URL keeps, like every other
    open_section(at, "transfer_yours", "Learning curves")
    shown = [key for key, _ in keyed_settings(at) if key.startswith("transfer_yours_")]
    assert len(shown) == 4 and all(REGISTRY["transfer"].name(key) for key in shown), shown
    assert REGISTRY["transfer"].name("transfer_yours_section") == "yours_section"  # the open tab too

    fits.clear()
    at.button(key="transfer_run").click().run()
    clean(at)
    assert fits == []  # both runs came from the store
    m = metrics(at)
    assert (m["Trained now"], m["Found in the run store"]) == ("0", "2")
    assert list(with_columns(at, "setup", "1 per class", "seeds")["1 per class"]) == list(acc["1 per class"])
    assert "0 runs trained, 2 found in the run store" in at.success[0].value

    # issue 21 item 6: a reload (a new session with the same settings) shows the comparison from the
    # store at once; it used to vanish until Run was pressed again
    reload = tiny(page(monkeypatch, tmp_path / "none.json"), ["scratch", "frozen"])
    clean(reload)
    assert fits == []
    assert metrics(reload)["Runs in the run store"] == "2 of 2"
    assert "Shown from the run store: nothing was trained now." in [c.value for c in reload.caption]
    assert list(with_columns(reload, "setup", "1 per class", "seeds")["1 per class"]) == list(acc["1 per class"])
    # every run was there: the linear probe is measured as after a run, not said to be missing
    probe = open_section(reload, "transfer_yours", "Linear probe by stage")
    assert not [i.value for i in probe.info if "No linear probe" in i.value]
    assert list(with_columns(probe, "stage", "features")["stage"]) == ["layer1", "layer2", "layer3"]


def test_a_comparison_a_rerun_interrupted_keeps_and_shows_its_finished_runs(monkeypatch, tmp_path, fits, source):
    from ui import cache

    recipe = tl.Recipe(steps=5)
    first = tl.mode_setup("scratch", STAGES)
    tl.run_plan(source, tl.Plan((first,), (1,), (0,), recipe), store=cache.run_store())  # the one that finished
    fits.clear()
    plan = tl.Plan((first, tl.mode_setup("frozen", STAGES)), (1,), (0,), recipe)
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS", str(tmp_path / "none.json"))
    at = AppTest.from_file(PAGE, default_timeout=300)
    # what a Cancel click leaves behind: the source, the plan, its name, the target (None: embedded) and
    # how many runs the stopped comparison trained itself (0: the finished one was in the store before)
    at.session_state["transfer_active"] = (source, plan, "the shipped net", None, {"n": 0})
    at.run()
    clean(at)
    assert len(fits) == 1  # the missing run is started and stopped at once: nothing of it is kept
    assert len(cache.run_store().sweeps_of(net_key(source))) == 1
    (warning,) = [w.value for w in at.warning]
    assert "The 1 of 2 runs that had finished are kept in the run store and shown below" in warning
    m = metrics(at)
    assert (m["Runs"], m["Trained now"], m["Found in the run store"]) == ("1", "0", "1")
    assert list(with_columns(at, "setup", "1 per class", "seeds")["setup"]) == ["from scratch"]
    assert "transfer_active" not in at.session_state
    at.run()  # said once: the next rerun shows the kept runs without the warning
    assert not at.warning and metrics(at)["Found in the run store"] == "1"
    # the comparison had trained the finished run itself: the metrics count it as trained then, not as
    # found in the store by the look that shows it
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["transfer_active"] = (source, plan, "the shipped net", None, {"n": 1})
    at.run()
    m = metrics(at)
    assert (m["Runs"], m["Trained now"], m["Found in the run store"]) == ("1", "1", "0")


@pytest.mark.parametrize(("change", "message"), [
    ({"transfer_modes": []}, "Choose at least one mode."),
    ({"transfer_labels": []}, "Choose at least one number of labelled examples per class."),
    ({"transfer_modes": ["last_k"], "transfer_ks": []}, "Choose at least one k for the last-k and first-k modes."),
    ({"transfer_norms": []}, "Choose at least one input normalisation."),
])
def test_bad_input_is_one_message_and_no_run(monkeypatch, tmp_path, change, message):
    at = page(monkeypatch, tmp_path / "none.json")
    for key, value in change.items():
        if key in ("transfer_source", "transfer_target"):
            at.radio(key=key).set_value(value).run()
        elif key == "transfer_ckpt":
            at.selectbox(key=key).set_value(value)
        else:
            at.multiselect(key=key).set_value(value)
    at.run()
    clean(at)
    assert len(at.error) == 1 and message in at.error[0].value
    assert at.button(key="transfer_run").disabled


def test_a_digits_checkpoint_is_a_source_too(monkeypatch, tmp_path, fits):
    """Any checkpoint that reads the digits can be the source: the shipped 10-class digits net."""
    at = page(monkeypatch, tmp_path / "none.json")
    at.radio(key="transfer_source").set_value("checkpoint").run()
    at.selectbox(key="transfer_ckpt").set_value("shipped: digits_resnet20")
    at = tiny(at, ["finetune"])
    assert not at.error
    # it was trained on all ten digits: the page says this is no transfer to new classes
    (warning,) = at.warning.values
    assert warning.startswith("The source net was trained on digits16 (classes 5, 6, 7, 8, 9 among them)")
    at.button(key="transfer_run").click().run()
    clean(at)
    assert fits == [5]
    caption = " ".join(c.value for c in at.caption)
    assert "Source net: shipped: digits_resnet20, 3 stages" in caption
    assert RunStore().sweeps_of(net_key(load_checkpoint(ROOT / "checkpoints" / "digits_resnet20.pt")))


def test_a_source_without_recorded_statistics_needs_another_normalisation(monkeypatch, tmp_path, source):
    """A net whose checkpoint records no input normalisation (a bare state_dict, say) cannot have the
    target normalised 'with the source's statistics': said before any run; the target's own work."""
    from ui import cache

    bare = dataclasses.replace(source, meta=dataclasses.replace(source.meta, normalisation=None))
    run = cache.run_store().save_run("digits 0-4 net, no statistics", bare)
    at = page(monkeypatch, tmp_path / "none.json")
    at.radio(key="transfer_source").set_value("checkpoint").run()
    at.selectbox(key="transfer_ckpt").set_value(f"trained here: {run.label}").run()
    clean(at)
    assert len(at.error) == 1 and "records no input normalisation" in at.error[0].value
    assert at.button(key="transfer_run").disabled
    at.multiselect(key="transfer_norms").set_value(["target"]).run()
    clean(at)
    assert not at.error and not at.button(key="transfer_run").disabled


def test_a_comparison_stopped_in_its_first_run_keeps_nothing_and_says_so(monkeypatch, tmp_path, fits, source):
    plan = tl.Plan((tl.mode_setup("scratch", STAGES),), (1,), (0,), tl.Recipe(steps=5))
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS", str(tmp_path / "none.json"))
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["transfer_active"] = (source, plan, "the shipped net", None, {"n": 0})
    at.run()
    clean(at)
    (warning,) = [w.value for w in at.warning]
    assert "before its first run finished: nothing was kept" in warning
    assert "transfer_result" not in at.session_state and "Trained now" not in metrics(at)


def folder(root: Path, classes: int) -> Path:
    """A tiny ImageFolder: ``classes`` class folders of four 20 px colour images (no train/val split)."""
    return image_folder(root, classes, per_class=4, side=20)


def test_an_imagefolder_target_runs_keeps_its_nets_and_refuses_what_cannot_adapt(monkeypatch, tmp_path, fits):
    """A local ImageFolder as the target (read grey for the 1-channel digits source, cropped as asked): a
    comparison runs on it and every net trained is kept (run store, other pages' picker, download). A
    1-D source cannot read it and a one-class folder is no classifier: one message each, no run."""
    from ui import cache

    root = folder(tmp_path / "imgs", 3)
    at = page(monkeypatch, tmp_path / "none.json")
    at.radio(key="transfer_target").set_value("folder").run()
    # no root yet: a prompt, not an error, and nothing to run
    assert not at.error, at.error.values
    assert "Give the ImageFolder's root folder to use it as the target." in at.info.values
    assert at.button(key="transfer_run").disabled
    at.text_input(key="transfer_folder").set_value(str(root))
    at.number_input(key="transfer_folder_size").set_value(16)
    at.number_input(key="transfer_folder_resize").set_value(18)
    at.checkbox(key="transfer_keep").check()
    at = tiny(at, ["scratch", "frozen"])
    clean(at)
    assert not at.error, [e.value for e in at.error]
    said = " ".join(c.value for c in at.caption)
    assert "target: imgs, 3 classes at 16 px" in said
    # what adapts, one sentence: the head, the size, the folder's colours read in grey for a 1-channel net
    assert ("drawn from each run's seed; the folder's images are read in grey, the one channel the source net "
            "takes.") in said
    at.button(key="transfer_run").click().run()
    clean(at)
    assert len(fits) == 2 and at.session_state["transfer_result"][0].meta["target"] == "imgs"
    kept = at.session_state["transfer_kept"]
    assert len(kept) == 2 and all(ck.spec.num_classes == 3 for ck in kept.values())
    assert set(kept) <= {r.label for r in cache.run_store().runs()}  # listed on every page as trained here
    assert [d for d in at.get("download_button") if d.proto.id.endswith("-transfer_kept_download")]
    assert "the ImageFolder imgs (3 classes" in " ".join(c.value for c in at.caption)
    # a 1-D source cannot read images; a one-class folder is refused
    at.radio(key="transfer_source").set_value("mnist1d").run()
    assert len(at.error) == 1 and "the source net is 1-D and the target data 2-D" in at.error[0].value
    assert at.button(key="transfer_run").disabled
    at.radio(key="transfer_source").set_value("digits").run()
    at.text_input(key="transfer_folder").set_value(str(folder(tmp_path / "one", 1))).run()
    clean(at)
    assert len(at.error) == 1 and "1 class" in at.error[0].value and at.button(key="transfer_run").disabled


def test_the_1d_source_runs_on_mnist1d_and_its_recorded_comparison_shows(monkeypatch, tmp_path, fits):
    """The shipped 1-D source takes MNIST-1D's classes 5-9 as its target; the MNIST-1D recorded
    comparison is one choice away."""
    at = page(monkeypatch, tmp_path / "none.json")
    at.radio(key="transfer_source").set_value("mnist1d").run()
    clean(at)
    assert "target: mnist1d[5,6,7,8,9], 5 classes at 40 samples" in " ".join(c.value for c in at.caption)
    at = tiny(at, ["frozen"])
    at.button(key="transfer_run").click().run()
    clean(at)
    assert fits == [5]
    assert "target: MNIST-1D's classes 5–9 (all 493 of their test sequences)" in " ".join(c.value for c in at.caption)
    open_section(at, "transfer_yours", "Linear probe by stage")
    said = " ".join(c.value for c in at.caption) + " ".join(md.value for md in at.markdown)
    assert "**Target test accuracy (%) by labelled sequences per class**" in said
    assert "each drawing the labelled sequences" in said and "how linearly the target's classes can be read" in said
    assert at.selectbox(key="transfer_yours_at").label == "Labelled sequences per class for the charts below"
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS_1D", str(tmp_path / "none1d.json"))
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.radio(key="transfer_recorded").set_value("mnist1d").run()
    clean(at)
    assert any("none1d.json` is not there" in i.value and "--source mnist1d04_resnet1d20" in i.value for i in at.info)


def test_a_stopped_comparison_says_its_own_wall_time(monkeypatch, tmp_path, source):
    """The wall time of a stopped comparison runs from its start (recorded when Run was clicked), not
    the moment it takes to read the finished runs back from the store."""
    import time

    from ui import cache

    first = tl.mode_setup("scratch", STAGES)
    plan = tl.Plan((first,), (1,), (0,), tl.Recipe(steps=5))
    tl.run_plan(source, plan, store=cache.run_store())
    monkeypatch.setenv("RESNET_LENS_TRANSFER_RESULTS", str(tmp_path / "none.json"))
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["transfer_active"] = (source, plan, "the shipped net", None,
                                           {"n": 1, "started": time.perf_counter() - 10**6})
    at.run()
    clean(at)
    assert metrics(at)["Wall time"].startswith("1,000,0")  # a million seconds ago, plus this rerun


def test_kept_nets_and_the_class_subset_sources_open_on_the_lesion_and_path_pages(source):
    """A net fine-tuned on the digits 5-9 (kept from a comparison) and the shipped sources (trained on
    classes 0-4) open on every page with a checkpoint picker, evaluated on the class subset they were
    trained on, not on all ten classes."""
    from tests.helpers import page_with_pick
    from ui import cache

    kept = []
    tl.run_plan(source, tl.Plan((tl.mode_setup("finetune", STAGES),), (5,), (0,), tl.Recipe(steps=3)),
                keep=kept.append)
    (ck,) = kept
    run = cache.run_store().save_run(ck.spec.name, ck)
    one_d = load_checkpoint(ROOT / "checkpoints" / "transfer" / "mnist1d04_resnet1d20.pt")
    cache.run_store().save_run("mnist1d source", one_d)
    for label, test, name in ((run.label, 225, "digits16[5,6,7,8,9]"), ("mnist1d source", 507, "mnist1d[0,1,2,3,4]")):
        at = page_with_pick("lesion", "lesion_ckpt", f"trained here: {label}")
        assert not at.error, [e.value for e in at.error]
        assert any(f"evaluated on {test} test" in m and name in m for m in at.markdown.values), at.markdown.values
        at = page_with_pick("paths", "paths_ckpt", f"trained here: {label}")
        assert not at.error, [e.value for e in at.error]


def test_the_missing_comparisons_are_named_by_what_was_run(monkeypatch, tmp_path, fits, source):
    """Issue 21 item 7: with no fixed-feature-extractor run at all, the page said the comparison had it
    'under one normalisation only'."""
    at = tiny(page(monkeypatch, tmp_path / "none.json"), ["scratch"])
    at.button(key="transfer_run").click().run()
    clean(at)
    infos = [i.value for i in open_section(at, "transfer_yours", "Preprocessing").info]
    infos += [i.value for i in open_section(at, "transfer_yours", "BatchNorm while fine-tuning").info]
    assert any(i.startswith("This comparison has no fixed-feature-extractor run: ") for i in infos), infos
    assert any(i.startswith("This comparison has no fine-tune-everything run: ") for i in infos), infos
    assert not any("under one normalisation only" in i for i in infos)
