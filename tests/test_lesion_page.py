"""Lesion lab page: sweeps kept in the run store and shown in a new session without running, Cancel
leaves nothing behind, the quick delete buttons, visible input ranges, the CSV's file name; the
app's chart config on every chart and the metrics in one wrapping row."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.experiments import lesion
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints
from analysis.store.runstore import RunStore, net_key
from tests import downloads
from tests.test_training_paths_pages import charts, metric_rows

ROOT = Path(__file__).resolve().parent.parent
R20, P20, R56 = "shipped: digits_resnet20", "shipped: digits_plain20", "shipped: digits_resnet56"

pytestmark = pytest.mark.usefixtures("own_run_store")


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def lesion_page(net: str = R20) -> AppTest:
    """A new session on the page (as a reload or a new tab), with ``net`` picked."""
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=120).run()
    clean(at)
    if net != R56:  # the page's default
        at.selectbox(key="lesion_ckpt").select(net).run()
        clean(at)
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def store() -> RunStore:
    return RunStore()  # the page's: own_run_store points RESNET_LENS_HOME at it


def shipped_key(name: str) -> str:
    return net_key(load_checkpoint(shipped_checkpoints()[name]))


def refuse_sweeps(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the page ran a sweep that is stored")

    monkeypatch.setattr(lesion, "run_sweep", refuse)


def no_progress_left(at: AppTest) -> None:
    assert list(at.get("progress")) == []
    assert "Cancel" not in [b.label for b in at.button]


def test_a_sweep_is_stored_and_a_new_session_shows_it_without_running(monkeypatch):
    with downloads.captured() as files:
        at = lesion_page()
        assert [i.value for i in at.info if "no single-block sweep" in i.value] == [
            f"{R20} has no single-block sweep for 450 test images of digits16 yet: press **Run the single-block sweep**."]
        at.button(key="lesion_run_single").click().run()
        clean(at)
        no_progress_left(at)  # the finished sweep's bar and Cancel button are gone
        measured = at.session_state["lesion_results"][(R20, "digits16", 0, "single", 0, 0)]
        assert len(measured) == 1 + 9
        assert any(c.value.startswith("Results (450 test images of digits16) — ") for c in at.caption)

        # the run store holds both nets' sweeps, under their weights' hash
        (r20,) = store().sweeps_of(shipped_key("digits_resnet20"))
        (p20,) = store().sweeps_of(shipped_key("digits_plain20"))
        assert (r20.kind, r20.settings["samples"], r20.settings["test_images"]) == ("single", 0, 450)

        # a new session (reload, new tab, restarted server: the same store) shows them; nothing runs,
        # not even when Run is pressed, as nothing is missing
        refuse_sweeps(monkeypatch)
        again = lesion_page()
        caption = f"Stored results, shown without running (450 test images of digits16) — " \
                  f"{R20}: stored, measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(r20.created))}; " \
                  f"{P20}: stored, measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(p20.created))}."
        assert caption in [c.value for c in again.caption]
        assert again.session_state["lesion_results"][(R20, "digits16", 0, "single", 0, 0)].equals(measured)
        reading = lesion.single_reading(measured, residual=True, num_classes=10)
        assert again.markdown.values.count(f"**{R20}**: {reading}") == 1
        # the plain twin is read against chance, not against its downsampling blocks
        assert again.markdown.values.count(
            f"**{P20}**: intact 1.3 %; deleting one block gives a median of 90.2 % (worst: layer3.2, 99.8 %); 7 of 9 "
            "deletions leave it at or near chance (90.0 %; within 10 pp or above), as Veit et al. report for plain "
            "nets; the mildest, layer1.1, gives 59.6 %.") == 1
        (csv,) = [b for b in again.get("download_button") if b.label == "Download CSV"]
        file = files.of(csv)
        assert file.filename == "lesion_single_digits_resnet20.csv"
        assert len(file.data.decode().splitlines()) == 1 + 2 * (1 + 9)  # header, resnet20 and its plain twin
        again.button(key="lesion_run_single").click().run()
        clean(again)
        assert caption in [c.value for c in again.caption]

        # the other settings of the random sweeps are not stored: they wait for Run
        again.session_state["lesion_tab"] = "k-block deletion"
        again.run()
        assert [i.value for i in again.info if "no k-block sweep" in i.value] == [
            f"{R20} has no k-block sweep for 5 samples per k, seed 0, on 450 test images of digits16 yet: "
            "press **Run the k-block sweep**."]


def test_a_sweep_the_run_store_cannot_keep_is_shown_and_said_kept_for_this_session(monkeypatch):
    from analysis.store.runstore import StoreError

    def full(*args, **kwargs):
        raise StoreError("the disk holding the run store is full")

    monkeypatch.setattr(RunStore, "save_sweep", full)
    at = lesion_page()
    at.button(key="lesion_run_single").click().run()
    clean(at)
    assert [w.value for w in at.warning] == [
        f"The single-block sweep of {net} is kept for this session only: the disk holding the run store is full"
        for net in (R20, P20)]
    assert any(c.value.startswith(f"Results (450 test images of digits16) — {R20}: measured in this session,")
               for c in at.caption)
    assert len(at.session_state["lesion_results"][(R20, "digits16", 0, "single", 0, 0)]) == 1 + 9
    assert store().sweeps_of(shipped_key("digits_resnet20")) == []
    no_progress_left(at)


def test_forget_deletes_this_nets_stored_sweeps_only():
    at = lesion_page()
    at.button(key="lesion_run_single").click().run()
    clean(at)
    at = lesion_page()
    assert f"{R20} has 1 stored sweep." in " ".join(c.value for c in at.caption)
    at.button(key="lesion_forget").click().run()
    clean(at)
    assert f"Forgot 1 stored sweep of {R20}." in [i.value for i in at.info]
    assert store().sweeps_of(shipped_key("digits_resnet20")) == []
    assert len(store().sweeps_of(shipped_key("digits_plain20"))) == 1  # the twin keeps its own
    assert (R20, "digits16", 0, "single", 0, 0) not in at.session_state["lesion_results"]
    assert any(i.value.startswith(f"{R20} has no single-block sweep") for i in at.info)
    assert "lesion_forget" not in [b.key for b in at.button]  # nothing left to forget


def test_a_cancelled_sweep_stores_nothing_and_says_so():
    """Cancel reruns the page, which interrupts the sweep; the marker it leaves is reported."""
    at = AppTest.from_file(str(ROOT / "app_pages" / "lesion.py"), default_timeout=120)
    at.session_state["lesion_active"] = (R56, "k-block", "5 samples per k, seed 0, on 450 test images of digits16")
    at.run()
    clean(at)
    assert [w.value for w in at.warning] == [
        f"The k-block sweep of {R56} (5 samples per k, seed 0, on 450 test images of digits16) was stopped "
        "before it finished (Cancel, or another click while it ran); nothing of it was kept."]
    assert "lesion_active" not in at.session_state
    assert at.session_state["lesion_results"] == {}
    assert store().sweeps_of(shipped_key("digits_resnet56")) == []
    at.run()
    assert list(at.warning) == []  # said once


def test_a_sweep_interrupted_on_the_twin_keeps_not_even_the_finished_net(monkeypatch):
    import streamlit as st

    real, calls = lesion.run_sweep, []

    def interrupted_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            st.stop()  # what a rerun does to the running script: it ends at the next Streamlit call
        return real(*args, **kwargs)

    at = lesion_page()
    monkeypatch.setattr(lesion, "run_sweep", interrupted_on_second)
    at.button(key="lesion_run_single").click().run()
    assert calls == ["single", "single"]
    assert "Cancel" in [b.label for b in at.button]  # the script stopped mid-sweep
    assert at.session_state["lesion_active"][:2] == (R20, "single-block")
    at.run()
    clean(at)
    assert at.warning[0].value.startswith(f"The single-block sweep of {R20} (450 test images of digits16) was stopped")
    assert at.session_state["lesion_results"] == {}
    assert store().sweeps_of(shipped_key("digits_resnet20")) == []
    assert store().sweeps_of(shipped_key("digits_plain20")) == []
    no_progress_left(at)


def test_select_all_clear_and_stage_buttons_set_the_checkboxes_and_the_metrics():
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    names = [b.name for b in lesion.block_infos(ck.model)]

    def expected(deleted: list[int]) -> str:
        (pred,) = lesion.predict_sequences(ck.model, data.x_test, [lesion.deletion(len(names), deleted)])
        return f"{100 * (pred != data.y_test).float().mean().item():.2f} %"

    def ticked(at: AppTest) -> list[str]:
        return [n for n in names if at.checkbox(key=f"lesion_{R20}_{n}").value]

    def no_delta(at: AppTest) -> bool:  # nothing deleted: no "+0.00 pp" in red
        (m,) = [m for m in at.metric if m.label == "Test error, 0 deleted"]
        return m.delta == ""

    at = lesion_page()
    intact = metrics(at)["Test error, intact"]
    assert intact == expected([]) and ticked(at) == [] and no_delta(at)
    at.button(key=f"lesion_{R20}_select_all").click().run()
    clean(at)
    assert ticked(at) == names
    assert metrics(at)["Test error, 9 deleted"] == expected(list(range(9))) != intact
    at.button(key=f"lesion_{R20}_clear").click().run()
    assert ticked(at) == [] and metrics(at)["Test error, 0 deleted"] == intact and no_delta(at)
    at.button(key=f"lesion_{R20}_stage_1").click().run()
    assert ticked(at) == ["layer2.0", "layer2.1", "layer2.2"]
    assert metrics(at)["Test error, 3 deleted"] == expected([3, 4, 5])
    at.button(key=f"lesion_{R20}_stage_2").click().run()  # adds to what is ticked
    assert ticked(at) == names[3:]
    at.checkbox(key=f"lesion_{R20}_layer3.1").uncheck().run()  # the boxes still work one by one
    assert ticked(at) == ["layer2.0", "layer2.1", "layer2.2", "layer3.0", "layer3.2"]
    assert metrics(at)["Test error, 5 deleted"] == expected([3, 4, 5, 6, 8])
    assert [b.label for b in at.button if b.key.endswith(tuple(f"_stage_{s}" for s in range(3)))] == [
        "Delete all of layer1", "Delete all of layer2", "Delete all of layer3"]


def test_number_inputs_show_their_range():
    at = lesion_page()
    shown = {}
    for tab in ("k-block deletion", "Reordering"):  # only the open tab is drawn
        at.session_state["lesion_tab"] = tab
        shown.update({n.key: n.label for n in at.run().number_input})
    assert shown == {"lesion_k_samples": "Samples per k (1–50)", "lesion_k_seed": "Seed (0–10,000)",
                     "lesion_reorder_samples": "Samples per number of swaps (1–50)",
                     "lesion_reorder_seed": "Seed (0–10,000)"}
    for n in at.number_input:  # the label states the widget's own limits (the open tab's)
        assert n.label.endswith(f"({int(n.min):,}–{int(n.max):,})")


def test_charts_have_the_apps_config_and_the_metrics_wrap_in_one_row():
    from ui.render import PLOTLY_CONFIG

    at = lesion_page()
    at.checkbox(key=f"lesion_{R20}_layer2.0").check().run()
    at.button(key="lesion_run_single").click().run()
    clean(at)
    shown = charts(at)
    assert list(shown) == ["lesion_per_class", "lesion_confusion", "lesion_single_chart"]
    assert all(c["config"] == PLOTLY_CONFIG for c in shown.values())
    assert metric_rows(at) == [["Test error, intact", "Test error, 1 deleted", "Chance"]]
    (deleted,) = [m for m in at.metric if m.label == "Test error, 1 deleted"]
    intact = metrics(at)["Test error, intact"]
    # the values as before: two decimals and a percent sign, the change in points, lower is better
    assert deleted.delta == f"{float(deleted.value[:-2]) - float(intact[:-2]):+.2f} pp"
    # deleting a downsampling block raises the error; delta_color="inverse" shows that rise in red
    assert float(deleted.value[:-2]) > float(intact[:-2]) and deleted.proto.color == deleted.proto.RED
    assert metrics(at)["Chance"] == "90.0 %"


def test_select_all_and_clear_sit_in_a_wrapping_row_as_wide_as_their_labels(monkeypatch):
    """In st.columns([1, 1, 6]) they were cut to 'S…' and 'C…' at 820 px: a horizontal container of
    buttons with width="content" is as wide as the labels and wraps."""
    from streamlit.testing.v1 import local_script_runner

    widths: dict[str, str | None] = {}
    parse = local_script_runner.parse_tree_from_messages

    def record(messages):  # each button's width as the browser gets it, by the end of its widget id
        for msg in messages:
            elt = msg.delta.new_element if msg.WhichOneof("type") == "delta" else None
            if elt is not None and elt.WhichOneof("type") == "button":
                widths[elt.button.id.rsplit("-", 1)[-1]] = elt.width_config.WhichOneof("width_spec")
        return parse(messages)

    monkeypatch.setattr(local_script_runner, "parse_tree_from_messages", record)
    at = lesion_page()
    quick = [f"lesion_{R20}_select_all", f"lesion_{R20}_clear"]
    assert [widths[k] for k in quick] == ["use_content", "use_content"]

    def parent_of(node, key):
        for c in getattr(node, "children", {}).values():
            if getattr(c, "key", None) == key:
                return node
            found = parent_of(c, key)
            if found is not None:
                return found
        return None

    row = parent_of(at._tree, quick[0])
    assert row is parent_of(at._tree, quick[1]) and row.type == "flex_container"
    flex = row.proto.flex_container
    assert flex.direction == flex.Direction.HORIZONTAL and flex.wrap
    assert [c.key for c in row.children.values()] == quick


def test_a_sweep_failing_on_the_twin_keeps_nothing_and_leaves_no_stopped_warning(monkeypatch):
    from analysis.core.errors import ConfigError

    real, calls = lesion.run_sweep, []

    def fails_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise ConfigError("the twin's sweep failed")
        return real(*args, **kwargs)

    at = lesion_page()
    monkeypatch.setattr(lesion, "run_sweep", fails_on_second)
    at.button(key="lesion_run_single").click().run()
    clean(at)
    assert calls == ["single", "single"]  # the first net finished before the twin failed
    assert [e.value for e in at.error] == ["the twin's sweep failed"]
    assert at.session_state["lesion_results"] == {}  # not even the finished net: nothing partial
    assert store().sweeps_of(shipped_key("digits_resnet20")) == []
    assert store().sweeps_of(shipped_key("digits_plain20")) == []
    assert "lesion_active" not in at.session_state
    no_progress_left(at)
    at.run()
    clean(at)
    assert not [w.value for w in at.warning if "was stopped" in w.value]


def test_a_finished_sweep_leaves_no_stopped_warning_on_the_next_run():
    at = lesion_page()
    at.button(key="lesion_run_single").click().run()
    clean(at)
    assert (R20, "digits16", 0, "single", 0, 0) in at.session_state["lesion_results"]
    assert "lesion_active" not in at.session_state
    at.checkbox(key=f"lesion_{R20}_layer1.0").check().run()  # any next run
    clean(at)
    assert not [w.value for w in at.warning if "was stopped" in w.value]


@pytest.mark.parametrize("channels,size,classes,offered", [
    (1, 16, 10, ["digits", "cifar10", "imagefolder"]),  # a digits net: the embedded digits first
    (1, 16, 5, ["cifar10", "imagefolder", "digits"]),
    (3, 32, 10, ["cifar10", "imagefolder"]),  # colour images: the digits would only fail
    (1, 224, 10, ["cifar10", "imagefolder"]),  # no digits at 224 px
])
def test_a_net_of_unknown_data_is_offered_the_data_it_can_take(channels, size, classes, offered):
    """Issue 21 item 8 and its review: a bare state_dict's weights cannot say what they were trained on;
    the embedded digits (1 channel, 8/16/32 px) are offered where they fit, first for a 10-class net."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import get_spec
    from analysis.core.meta import RunMeta
    from analysis.store.checkpoints import Checkpoint
    from tests.helpers import page_with_pick

    spec = get_spec("cifar_resnet8").replace(in_channels=channels, input_size=size, num_classes=classes)
    bare = Checkpoint(spec, build_model(spec), RunMeta(), False)
    at = page_with_pick("lesion", "lesion_ckpt", "trained here: bare", trained={"bare": bare})
    names = {"digits": "embedded digits", "cifar10": "CIFAR-10 (local path)", "imagefolder": "ImageFolder (local path)"}
    assert at.sidebar.selectbox(key="lesion_data_kind").options == [names[k] for k in offered]
    assert any("does not say what data it was trained on" in c.value for c in at.caption)


def test_swap_and_repeat_sweeps_chart_both_nets_and_say_what_was_skipped():
    """The position sweeps of a residual net and its plain twin: one chart, bars per change and each
    net's intact error as a dotted line; the candidates each chain refused under it in one caption; a
    reading per net computed from its rows. Oracle: lesion.run_sweep on each checkpoint."""
    from analysis.experiments import lesionreadings

    d = dataset_for(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).meta)
    at = lesion_page()
    for kind, tab in (("swap", "Swapping"), ("repeat", "Repeating")):
        at.session_state["lesion_tab"] = tab
        at.run()
        at.button(key=f"lesion_run_{kind}").click().run()
        clean(at)
        fig = charts(at)[f"lesion_{kind}_chart"]["figure"]
        lines = sorted(t["name"] for t in fig["data"] if t["type"] == "scatter")
        bars = {t["name"]: list(t["x"]) for t in fig["data"] if t["type"] == "bar"}
        theirs = {net: lesion.run_sweep(kind, load_checkpoint(shipped_checkpoints()[name]).model, d.x_test, d.y_test)
                  for net, name in ((R20, "digits_resnet20"), (P20, "digits_plain20"))}
        for net, df in theirs.items():
            assert bars[f"{net}: {lesionreadings.MOVED[kind]}"] == list(df["units"])[1:]
            intact = 100 * float(df["error"].iloc[0])
            assert f"{net}: intact, {intact:.2f} %" in lines
            reading = lesionreadings.position_reading(df, kind, len(d.y_test))
            assert f"**{net}**: {reading}" in [m.value for m in at.markdown]
        (skipped,) = [c.value for c in at.caption if c.value.startswith("Skipped — ")]
        for net, df in theirs.items():  # the two downsampling blocks: a swap into or out of one, a repeat of one
            assert f"{net}: " in skipped and len(df.attrs["skipped"]) == {"swap": 4, "repeat": 2}[kind]
            assert all(line in skipped for line in df.attrs["skipped"])


def test_a_sweep_no_candidate_of_which_applies_is_said_instead_of_run():
    at = lesion_page()
    at.session_state["lesion_tab"] = "Parallel"
    at.run()
    clean(at)
    (err,) = [e.value for e in at.error]
    assert err.startswith("no two adjacent units of this net can run in parallel: ") and "post-activation" in err
    assert "lesion_run_parallel" not in [b.key for b in at.button]
