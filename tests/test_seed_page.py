"""The explorer's view of the notes' Conv1d block: exact counts where it runs, the diagnosis and the
fixed block where it does not, never a traceback."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("own_run_store")


def seed_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "explorer.py"), default_timeout=120).run()
    at.sidebar.radio(key="explorer_analyse").set_value("The notes' seed block (Conv1d)").run()
    clean(at)
    return at


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_defaults_show_the_exact_count():
    at = seed_page()
    m = metrics(at)
    assert m["Parameters"] == "296,448"
    assert m["MACs"] == "37.749 M" and m["Output shape"] == "256×128" and m["Receptive field"] == "5 samples"
    assert not at.error
    rows = at.dataframe[0].value.set_index("id")
    assert list(rows.index) == ["seed.conv1", "seed.bn1", "seed.relu", "seed.conv2", "seed.bn2", "seed.relu@2"]
    assert rows.loc["seed.conv1", "params"] == 3 * 128 * 256 + 256 and rows.loc["seed.conv2", "out_shape"] == "256×128"
    assert "class SeedBlock(nn.Module):" in at.code[0].value
    assert "input 128×128 (channels × samples)" in at.subheader[0].value


def test_mismatched_shortcut_is_explained_and_fixed():
    at = seed_page()
    at.sidebar.checkbox(key="explorer_seed_shortcut").check().run()
    clean(at)
    assert len(at.error) == 1
    text = at.error[0].value
    assert "out is 256×128, x is 128×128" in text
    assert "The size of tensor a (256) must match the size of tensor b (128) at non-singleton dimension 1" in text
    assert "nn.Conv1d(128, 256, 1, stride=1, bias=False)" in text and "forward never calls it" in text
    m = metrics(at)
    assert m["Parameters (as written)"] == "296,448"
    assert m["Parameters (fixed block)"] == "329,728"  # + the 1x1 projection 128 x 256 and its BN's 2 x 256
    rows = at.dataframe[0].value
    assert "fixed.downsample.0" in set(rows["id"])

    at.sidebar.number_input(key="explorer_seed_stride").set_value(2).run()
    clean(at)
    assert "conv1 takes L = 128 to L1 = 64 and conv2 takes 64 to L2 = 32" in at.error[0].value
    assert metrics(at)["Output shape (fixed block)"] == "256×64"

    at.sidebar.number_input(key="explorer_seed_stride").set_value(1).run()
    at.sidebar.number_input(key="explorer_seed_n_filters").set_value(128).run()
    clean(at)
    assert not at.error
    assert metrics(at)["Parameters"] == f"{3 * 128 * 128 + 128 + 256 + 3 * 128 * 128 + 128 + 256:,}"
    assert "seed@add" in set(at.dataframe[0].value["id"])  # the identity add is in the table


def test_collapsed_length_is_an_error_not_a_traceback():
    at = seed_page()
    at.sidebar.number_input(key="explorer_seed_length").set_value(1).run()
    at.sidebar.number_input(key="explorer_seed_padding").set_value(0).run()
    clean(at)
    assert "conv1 collapses the length" in at.error[0].value
    assert "Kernel size can't be greater than actual input size" in at.error[0].value
    assert metrics(at)["Output shape (fixed block)"] == "256×1"


def test_the_net_view_is_still_the_default():
    at = AppTest.from_file(str(ROOT / "app_pages" / "explorer.py"), default_timeout=120).run()
    clean(at)
    assert metrics(at)["Parameters"] == "25,557,032"
    at.sidebar.radio(key="explorer_analyse").set_value("The notes' seed block (Conv1d)").run()
    at.sidebar.radio(key="explorer_analyse").set_value("A net").run()
    clean(at)
    assert metrics(at)["Parameters"] == "25,557,032"
