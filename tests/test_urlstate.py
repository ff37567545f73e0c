"""The URL follows the view (ui/urlstate.py): the query-string codec, the registry against the pages'
real widgets, links opening their view through app.py, bad links, back/forward, unknown addresses,
and an offline start."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from ui import urlstate
from ui.urlstate import INVALID, REGISTRY, decode, encode

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("own_run_store")


def app(query: dict | None = None, page: str | None = None, url: str | None = None) -> AppTest:
    """app.py as a browser would open it: optionally another page, a query string, an address."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if page is not None:
        at.run()  # switch_page needs the router's pages registered
        at.switch_page(f"app_pages/{page}.py")
        at.query_params.clear()
    if query:
        at.query_params.update(query)
    if url is not None:
        at.context["url"] = url
    return at.run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def url(at: AppTest) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in at.query_params.items()}


def norm(value: object) -> object:
    """A slider's range reads back as a tuple from the widget and a list from the URL."""
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------ the codec
@pytest.mark.parametrize(("value", "kind", "text"), [
    ("resnet152", "str", "resnet152"), ("Upload a checkpoint…", "str", "Upload a checkpoint…"),
    ("a, b", "str", "a, b"), (None, "optstr", "none"), ("macs", "optstr", "macs"),
    (10, "int", "10"), (-3, "int", "-3"), (0.1, "float", "0.1"), (1.0, "float", "1"), (0.05, "float", "0.05"),
    (1e-07, "float", "1e-07"), (True, "bool", "true"), (False, "bool", "false"),
    (["shapes", "MACs (conv + fc)"], "strs", ["shapes", "MACs (conv + fc)"]), ([], "strs", [""]),
    ([20, 56], "ints", ["20", "56"]), ([0.8, 1.0, 1.2], "floats", ["0.8", "1", "1.2"]), ([], "floats", [""]),
    ((20, 34), "pair", ["20", "34"]), ((5, 5), "pair", ["5", "5"]),
])
def test_values_round_trip_through_the_query_string(value, kind, text):
    assert encode(value, kind) == text
    raw = text if isinstance(text, list) else [text]
    back = decode(raw, kind)
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize(("raw", "kind"), [
    (["5.5"], "int"), (["abc"], "int"), (["1e3"], "int"), (["9" * 30], "int"), ([""], "int"), ([], "int"),
    (["nan"], "float"), (["inf"], "float"), (["1e999"], "float"), (["0x10"], "float"), (["1,5"], "float"),
    (["maybe"], "bool"), (["1"], "bool"), (["30", "20"], "pair"), (["20"], "pair"), (["1", "2", "3"], "pair"),
    (["20", "x"], "ints"), (["a", ""], "strs"), (["0.5", "nan"], "floats"),
])
def test_values_of_the_wrong_type_are_refused(raw, kind):
    assert decode(raw, kind) is INVALID


def test_repeated_single_values_read_as_streamlit_reads_them():
    assert decode(["3", "4"], "int") == 4  # st.query_params["x"] is the last of repeated values
    assert decode(["TRUE"], "bool") is True


@pytest.mark.parametrize(("value", "kind"), [
    ("5", "int"), (True, "int"), (1.5, "int"), (math.nan, "float"), ("x", "bool"), (1, "bool"), (5, "str"),
    ({"selection": {}}, "strs"), ("abc", "strs"), ([1, "a"], "ints"), ((3, 1), "pair"), ((1, 2, 3), "pair"),
])
def test_values_that_do_not_fit_their_kind_are_not_mirrored(value, kind):
    assert encode(value, kind) is None


def test_short_names_and_patterns():
    explorer = REGISTRY["explorer"]
    assert explorer.name("explorer_model") == "model" and explorer.key("model") == "explorer_model"
    assert explorer.kind("size_resnet50") == "int" and explorer.name("explorer_size_resnet50") == "size_resnet50"
    assert explorer.kind("size_") is None and explorer.kind("size_*") is None
    assert explorer.name("explorer_sizes") is None  # the page's own memory of sizes, no widget
    paths = REGISTRY["paths"]
    assert paths.kind("range_54") == "pair" and paths.name("paths_results") is None
    for key in ("paths_run", "paths_cancel", "paths_upload", "paths_grad_csv", "train_go", "train_cancel",
                "train_download", "train_forget", "diagrams_dot", "explorer_upload", "explorer_upload_plain"):
        page = next(p for p in REGISTRY.values() if key.startswith(p.prefix))
        assert page.name(key) is None, key


# ------------------------------------------------------------------ the registry against the real pages
SETTING_TYPES = {"selectbox", "multiselect", "radio", "checkbox", "toggle", "number_input", "slider",
                 "select_slider", "text_input", "text_area", "pills", "segmented_control"}
ACTION_TYPES = {"button", "download_button", "file_uploader", "form_submit_button"}


def keyed_widgets(at: AppTest) -> list[tuple[str, str, object]]:
    """(type, key, value) of every keyed element on screen."""
    out: list[tuple[str, str, object]] = []

    def walk(node: object) -> None:
        for child in getattr(node, "children", {}).values():
            walk(child)
        key = getattr(node, "key", None)
        if key:
            out.append((getattr(node, "type", ""), key, getattr(node, "value", None)))

    walk(at._tree)
    return out


VIEWS = [  # (page, query): the views that between them draw every widget of the pages
    ("explorer", {}), ("explorer", {"source": "Custom spec", "cblock": "bottleneck"}),
    ("explorer", {"source": "Checkpoint"}), ("explorer", {"source": "Checkpoint", "ckpt": "Upload a checkpoint…"}),
    ("explorer", {"source": "Custom spec", "cdims": "1"}), ("explorer", {"model": "vdcnn29"}),
    ("explorer", {"analyse": "The notes' seed block (Conv1d)"}), ("variants", {"data": "mnist1d"}),
    ("diagrams", {}), ("diagrams", {"source": "Custom spec"}),
    ("diagrams", {"source": "Your net", "net_from": "example", "net_level": "modules"}),
    ("blocks", {}), ("blocks", {"dims": "1"}), ("diagrams", {"block_dims": "1"}), ("depth", {}), ("depth", {"family": "cifar"}), ("training", {}),
    ("training", {"data": "imagefolder"}), ("training", {"data": "mnist1d"}), ("paths", {}), ("painters", {}), ("painters", {"data": "mnist1d"}), ("theory", {}), ("lesion", {}),
    ("lesion", {"deleted": ["layer1.0", "layer3.8"]}), ("lesion", {"ckpt": "shipped: digits_vit"}),
    ("paths", {"ckpt": "shipped: digits_vit"}), ("transfer", {}), ("transfer", {"source": "checkpoint"}),
]


@pytest.mark.parametrize(("name", "query"), VIEWS)
def test_every_setting_on_every_page_is_in_the_url(name, query):
    """Each keyed widget that holds a setting is mirrored and its value survives the round trip;
    no button, download or upload is (Streamlit refuses a session-state value for those)."""
    at = app(query, page=None if name == "explorer" else name)
    clean(at)
    assert not [w.value for w in at.warning if "link" in w.value]
    params = REGISTRY[name]
    seen = url(at)
    for kind_of_widget, key, value in keyed_widgets(at):
        short = params.name(key)
        if kind_of_widget in ACTION_TYPES:
            assert short is None, f"{key} ({kind_of_widget}) must not be mirrored"
        elif kind_of_widget in SETTING_TYPES:
            if name == "lesion" and kind_of_widget == "checkbox":
                # the block toggles, keyed by the checkpoint's label: mirrored together as `deleted`
                assert (key.rsplit("_", 1)[1] in seen.get("deleted", [])) == value, key
                continue
            assert short is not None, f"{key} ({kind_of_widget}) is not in ui/urlstate.REGISTRY[{name!r}]"
            kind = params.kind(short)
            assert kind is not None
            text = encode(value, kind)
            assert text is not None, f"{key}: {value!r} does not fit kind {kind}"
            assert seen[short] == (text if isinstance(text, list) else [text])
            assert norm(decode(seen[short], kind)) == norm(value), key


# ------------------------------------------------------------------ links open their view
def test_a_link_opens_its_view():
    at = app({"model": "resnet152", "size_resnet152": "160", "level": "block", "columns": ["shapes", "parameters"]})
    clean(at)
    assert not at.warning
    assert at.selectbox(key="explorer_model").value == "resnet152"
    assert at.number_input(key="explorer_size_resnet152").value == 160
    assert at.radio(key="explorer_level").value == "block"
    assert at.multiselect(key="explorer_columns").value == ["shapes", "parameters"]
    assert {m.label: m.value for m in at.metric}["Parameters"] == "60,192,808"
    assert any("160×160" in h.value for h in at.subheader)
    # the URL now names every setting of the view, not only those the link gave
    q = url(at)
    assert q["model"] == ["resnet152"] and q["level"] == ["block"] and q["source"] == ["Built-in"]
    assert q["columns"] == ["shapes", "parameters"] and q["size_resnet152"] == ["160"]


def test_the_diagram_links_of_the_readme_still_work():
    """Shared links of the form ``?model=resnet152&level=layer`` (the app's first URL scheme) still open that view."""
    at = app({"model": "resnet34", "level": "layer"}, page="diagrams")
    clean(at)
    assert at.selectbox(key="diagrams_model").value == "resnet34"
    assert at.radio(key="diagrams_level").value == "layer"
    assert {m.label: m.value for m in at.metric}["Projection shortcuts (dashed)"] == "3"


def test_links_to_other_pages_open_their_view():
    at = app({"depths": ["8", "110"], "kinds": "plain", "epochs": "3", "lr": "0.05", "size": "8"}, page="training")
    clean(at)
    assert not at.warning
    assert at.multiselect(key="train_depths").value == [8, 110]
    assert at.multiselect(key="train_kinds").value == ["plain"]
    assert at.number_input(key="train_epochs").value == 3 and at.number_input(key="train_lr").value == 0.05
    assert at.select_slider(key="train_size").value == 8
    at = app({"n": "5", "pick": "31", "net": "resnet18", "range_8": ["2", "6"], "init": "false"}, page="paths")
    clean(at)
    assert not at.warning
    assert {m.label: m.value for m in at.metric}["Path length (residual branches passed)"] == "5"
    assert at.slider(key="paths_range_8").value == (2, 6) and at.checkbox(key="paths_init").value is False
    at = app({"lambdas": ["0.9", "1.1"], "depth": "10", "rscale": "0"}, page="theory")
    clean(at)
    assert at.multiselect(key="theory_lambdas").value == [0.9, 1.1] and at.slider(key="theory_depth").value == 10


def test_the_url_follows_every_change_and_drops_other_pages_params():
    at = app()
    assert url(at)["model"] == ["resnet50"]
    at.selectbox(key="explorer_model").select("resnet18").run()
    at.radio(key="explorer_level").set_value("layer").run()
    q = url(at)
    assert q["model"] == ["resnet18"] and q["level"] == ["layer"] and q["size_resnet18"] == ["224"]
    at.multiselect(key="explorer_columns").set_value([]).run()
    assert url(at)["columns"] == [""]  # an empty list stays in the URL, so a link can say "no columns"
    # AppTest keeps the explorer's query on a page switch (a browser drops it): no link to this page
    at.switch_page("app_pages/blocks.py").run()
    clean(at)
    assert not at.warning
    assert set(url(at)) == {"cin", "cout", "width", "size", "stride", "groups", "kind", "dims", "pairing"}
    at.number_input(key="blocks_cin").set_value(64).run()
    assert url(at)["cin"] == ["64"]
    # a reload or a shared link: a new session opens the same view from the URL alone
    again = app({k: v if len(v) > 1 else v[0] for k, v in url(at).items()}, page="blocks")
    assert again.number_input(key="blocks_cin").value == 64
    assert [m.value for m in again.metric] == [m.value for m in at.metric]


def test_the_session_wins_over_a_stale_url_but_back_and_forward_win_over_the_session(monkeypatch):
    at = app()
    first = dict(at.query_params)
    at.radio(key="explorer_level").set_value("block").run()
    at.checkbox(key="explorer_plain").check().run()
    second = dict(at.query_params)
    assert second["level"] == "block" and second["plain"] == "true"
    # a rerun carrying an older query string (no back button) keeps what the user set
    at.query_params.clear()
    at.query_params.update(first)
    at.run()
    assert at.radio(key="explorer_level").value == "block" and at.query_params["level"] == "block"
    # the back button (Streamlit marks the rerun it sends on the browser's popstate): the older URL
    # wins, and what it does not name goes back to its default
    monkeypatch.setattr(urlstate, "get_script_run_ctx", lambda: SimpleNamespace(is_history_navigation=True))
    at.query_params.clear()
    at.query_params.update({k: v for k, v in first.items() if k != "plain"})
    at.run()
    clean(at)
    assert at.radio(key="explorer_level").value == "stage" and at.checkbox(key="explorer_plain").value is False
    assert dict(at.query_params) == first
    at.query_params.clear()
    at.query_params.update(second)  # forward
    at.run()
    assert at.radio(key="explorer_level").value == "block" and at.checkbox(key="explorer_plain").value is True


# ------------------------------------------------------------------ bad links
def test_bad_values_give_one_warning_and_the_defaults():
    at = app({"model": "bogus", "plain": "maybe", "size_resnet50": "99999", "modle": "resnet18",
              "columns": ["shapes", "no such column"]})
    clean(at)
    assert len(at.warning) == 1
    text = at.warning[0].value
    for part in ("`model=bogus` is not one of its choices", "`plain=maybe` is not true or false",
                 "`size_resnet50=99999` is not within its range", "`modle=resnet18` is not a setting of this page",
                 "`columns=no such column` is not one of its choices (kept: shapes)"):
        assert part in text, (part, text)
    assert at.selectbox(key="explorer_model").value == "resnet50"
    assert at.number_input(key="explorer_size_resnet50").value == 224
    assert {m.label: m.value for m in at.metric}["Parameters"] == "25,557,032"
    q = url(at)
    assert q["model"] == ["resnet50"] and q["plain"] == ["false"] and "modle" not in q
    at.radio(key="explorer_level").set_value("block").run()  # the warning was about the link, once
    assert not at.warning


def test_a_value_streamlit_raises_on_is_dropped_and_the_page_starts_over():
    """A slider value beyond its maximum raises StreamlitAPIException inside the page: caught, the
    parameter dropped, the page run again with the default, one warning."""
    at = app({"n": "99", "samples": "4", "seed": "abc"}, page="paths")
    clean(at)
    assert len(at.warning) == 1
    text = at.warning[0].value
    assert "`n=99`: The `value` 99 is greater than the `max_value` 6" in text
    assert text.count("`seed=abc` is not a whole number") == 1
    assert at.slider(key="paths_n").value == 3 and at.number_input(key="paths_samples").value == 4
    assert url(at)["n"] == ["3"] and url(at)["seed"] == ["0"]


def test_a_device_this_machine_lacks_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    at = app({"device": "cuda", "epochs": "0"}, page="training")
    clean(at)
    assert "`device=cuda` is not one of its choices" in at.warning[0].value
    assert "`epochs=0` is not within its range" in at.warning[0].value
    assert at.selectbox(key="train_device").value == "cpu" and at.number_input(key="train_epochs").value == 10


def test_an_exception_the_link_did_not_cause_is_not_hidden(monkeypatch):
    from streamlit.errors import StreamlitAPIException

    from ui import widgets

    def broken(*args, **kwargs):
        raise StreamlitAPIException("a bug in the page")

    monkeypatch.setattr(widgets, "source_picker", broken)
    at = app({"model": "resnet18"}, page="diagrams")
    assert [e.value for e in at.exception] == ["a bug in the page"]


def test_a_link_to_a_net_in_the_lesion_lab():
    at = app({"ckpt": "shipped: digits_resnet20"}, page="lesion")
    clean(at)
    assert not at.warning
    assert at.selectbox(key="lesion_ckpt").value == "shipped: digits_resnet20"
    assert url(at)["ckpt"] == ["shipped: digits_resnet20"]


R56_BOX = "lesion_shipped: digits_resnet56_{}"  # the lesion lab's default net: 3 stages of 9 blocks


def ticked(at: AppTest) -> list[str]:
    return [c.key.rsplit("_", 1)[1] for c in at.checkbox if c.key.startswith("lesion_") and c.value]


def lesioned_error(net: str, names: list[str]) -> str:
    from analysis.experiments import lesion
    from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

    ck = load_checkpoint(shipped_checkpoints()[net])
    data = dataset_for(ck.meta)
    infos = lesion.block_infos(ck.model)
    seq = lesion.deletion(len(infos), [b.index for b in infos if b.name in names])
    (pred,) = lesion.predict_sequences(ck.model, data.x_test, [seq])
    return f"{100 * (pred != data.y_test).float().mean().item():.2f} %"


def test_a_link_deletes_the_blocks_it_names_and_a_click_updates_it():
    at = app({"deleted": ["layer1.0", "layer2.3"]}, page="lesion")
    clean(at)
    assert not at.warning
    assert ticked(at) == ["layer1.0", "layer2.3"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Test error, 2 deleted"] == lesioned_error("digits_resnet56", ["layer1.0", "layer2.3"])
    assert url(at)["deleted"] == ["layer1.0", "layer2.3"]
    at.checkbox(key=R56_BOX.format("layer3.0")).check().run()
    assert url(at)["deleted"] == ["layer1.0", "layer2.3", "layer3.0"]
    at.checkbox(key=R56_BOX.format("layer1.0")).uncheck().run()
    assert url(at)["deleted"] == ["layer2.3", "layer3.0"]
    at.button(key="lesion_shipped: digits_resnet56_clear").click().run()
    assert ticked(at) == [] and "deleted" not in url(at)  # nothing deleted: the URL does not say deleted=
    at.button(key="lesion_shipped: digits_resnet56_stage_2").click().run()
    assert url(at)["deleted"] == [f"layer3.{i}" for i in range(9)]
    # another net keeps the names that it has: a link with both says the same
    at.selectbox(key="lesion_ckpt").select("shipped: digits_resnet20").run()
    clean(at)
    assert not at.warning
    assert ticked(at) == ["layer3.0", "layer3.1", "layer3.2"]
    assert url(at)["deleted"] == ["layer3.0", "layer3.1", "layer3.2"]
    assert {m.label: m.value for m in at.metric}["Test error, 3 deleted"] == lesioned_error(
        "digits_resnet20", ["layer3.0", "layer3.1", "layer3.2"])


def test_a_stale_url_keeps_the_ticked_blocks_but_back_and_forward_set_them(monkeypatch):
    at = app({"deleted": ["layer1.0"]}, page="lesion")
    first = dict(url(at))
    at.checkbox(key=R56_BOX.format("layer2.0")).check().run()
    second = dict(url(at))
    assert second["deleted"] == ["layer1.0", "layer2.0"]
    at.query_params.clear()
    at.query_params.update(first)  # a rerun with the older query, no back button: the session wins
    at.run()
    assert ticked(at) == ["layer1.0", "layer2.0"] and url(at)["deleted"] == ["layer1.0", "layer2.0"]
    monkeypatch.setattr(urlstate, "get_script_run_ctx", lambda: SimpleNamespace(is_history_navigation=True))
    at.query_params.clear()
    at.query_params.update(first)  # back
    at.run()
    clean(at)
    assert ticked(at) == ["layer1.0"] and url(at) == first
    at.query_params.clear()
    at.query_params.update({k: v for k, v in first.items() if k != "deleted"})  # back to before any deletion
    at.run()
    assert ticked(at) == [] and "deleted" not in url(at)
    at.query_params.clear()
    at.query_params.update(second)  # forward
    at.run()
    assert ticked(at) == ["layer1.0", "layer2.0"]


def test_a_block_the_net_lacks_gives_one_warning():
    at = app({"deleted": ["layer2.3", "layer9.9"]}, page="lesion")
    clean(at)
    # issue 21 item 9: the warning names what was left out and what was kept
    assert [w.value for w in at.warning] == [
        "This link has settings the page cannot use; they were left out: `deleted=layer9.9` is not one of its "
        "choices (kept: layer2.3)."]
    assert ticked(at) == ["layer2.3"] and url(at)["deleted"] == ["layer2.3"]
    at.run()
    assert not at.warning  # said once
    # a name alone that the net lacks is said too (it was dropped without a word)
    at = app({"deleted": ["layer9.9"]}, page="lesion")
    clean(at)
    assert [w.value for w in at.warning] == [
        "This link has settings the page cannot use; they were left out: `deleted=layer9.9` is not one of its "
        "choices."]
    assert ticked(at) == [] and "deleted" not in url(at)
    # an empty name is no text value: refused before the page runs
    at = app({"deleted": ["layer1.0", ""]}, page="lesion")
    clean(at)
    assert "`deleted=layer1.0&deleted=` is not a list of text values" in at.warning[0].value
    assert ticked(at) == []


def test_a_list_the_page_replaced_says_nothing_was_kept():
    """Review of issue 21 item 9: `/variants?curves=nope` said '(kept: <run hashes>)': the page's own
    default, not anything of the link."""
    at = app({"curves": ["nope"]}, page="variants")
    clean(at)
    said = " ".join(w.value for w in at.warning)
    assert "`curves=nope` is not one of its choices." in said and "kept" not in said


def test_a_list_the_widget_empties_falls_back_to_the_default():
    """Issue 21 item 9: `/training?depths=7` emptied Depths and left Train disabled; `depths=7&depths=20`
    kept 20 but said the whole value was dropped."""
    at = app({"depths": ["7"]}, page="training")
    clean(at)
    assert at.multiselect(key="train_depths").value == [20, 56]  # the page's default
    assert not at.button(key="train_go").disabled
    assert [w.value for w in at.warning] == [
        "This link has settings the page cannot use; they were left out: `depths=7` is not within its range or "
        "choices."]
    assert "depths" not in url(at) or url(at)["depths"] == ["20", "56"]
    at = app({"depths": ["7", "20"]}, page="training")
    clean(at)
    assert at.multiselect(key="train_depths").value == [20]
    assert [w.value for w in at.warning] == [
        "This link has settings the page cannot use; they were left out: `depths=7` is not within its range or "
        "choices (kept: 20)."]


# ------------------------------------------------------------------ unknown addresses
def test_an_unknown_address_says_so_and_lists_the_pages():
    at = app(url="http://localhost:8501/nonexistent")
    clean(at)
    assert [t.value for t in at.title] == ["Page not found"]
    assert "No page called `/nonexistent`" in at.error[0].value
    links = at.get("page_link")
    pages = (ROOT / "app.py").read_text().count("st.Page(")  # whatever app.py lists: pages are being added
    assert len(links) == pages >= 8 and not at.metric  # the explorer did not run instead
    for address in ("http://localhost:8501/", "http://localhost:8501", "http://localhost:8501/explorer"):
        at = app(url=address)
        assert [t.value for t in at.title] == ["Architecture explorer"], address
    at = app(page="diagrams", url="http://localhost:8501/diagrams/")
    assert [t.value for t in at.title] == ["Shortcut diagrams"]


def test_an_app_served_under_a_path_prefix_knows_its_pages():
    with patch_config_options({"server.baseUrlPath": "lens"}):
        assert [t.value for t in app(url="http://host:8501/lens/").title] == ["Architecture explorer"]
        at = app(url="http://host:8501/lens/nope")
        assert "No page called `/nope`" in at.error[0].value


# ------------------------------------------------------------------ offline start
def test_the_server_start_makes_no_outbound_call(tmp_path):
    """``streamlit run`` (headless, as `make run`) prints its URLs at start; without
    browser.serverAddress it asks checkip.amazonaws.com for an "External URL". Here the start-up
    printing runs with our config and with every way to the network refused."""
    code = """
import socket, sys
from streamlit import config, net_util
from streamlit.web import bootstrap

def refuse(*args, **kwargs):
    raise SystemExit("outbound call: %r" % (args,))

net_util.get_external_ip = net_util.get_internal_ip = net_util._make_blocking_http_get = refuse
socket.create_connection = refuse
socket.socket.connect = refuse
config.get_config_options(force_reparse=True)
assert config.get_option("server.headless") is True
bootstrap._print_url(False)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)})  # no user config: the project's alone
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    assert "URL: http://localhost:8501" in out.stdout
    assert "External URL" not in out.stdout


def test_a_link_too_long_to_walk_is_refused_before_the_page_runs():
    """Issue 27: URL values bounded (how many values, how long each) before anything decodes them."""
    from ui import urlstate

    at = app({"deleted": [f"layer1.{i}" for i in range(urlstate.MAX_VALUES + 1)],
              "data_path": "x" * (urlstate.MAX_TEXT + 1)}, page="lesion")
    clean(at)
    (w,) = at.warning
    assert f"is too long ({urlstate.MAX_VALUES + 1:,} values" in w.value
    assert f"the longest {urlstate.MAX_TEXT + 1:,} characters" in w.value
    assert ticked(at) == [] and "deleted" not in url(at)
    # over Streamlit's own limit the whole query string is dropped before any page sees it: said so
    from streamlit.runtime.state import query_params as stq

    assert (stq.CLIENT_STATE_QUERY_STRING_MAX_FIELDS, stq.CLIENT_STATE_QUERY_STRING_MAX_LENGTH) == (
        urlstate.ST_MAX_FIELDS, urlstate.ST_MAX_CHARS)  # a Streamlit upgrade that moves them is caught here
    at = app({"deleted": [f"layer1.{i}" for i in range(urlstate.ST_MAX_FIELDS + 1)]}, page="lesion")
    clean(at)
    (w,) = at.warning
    assert "the whole query string (1,001 parameters" in w.value and "none of it was read" in w.value
