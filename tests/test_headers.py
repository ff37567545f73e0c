"""Issue 11, item 1: every page that shows costs or shapes says at which input size they hold."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.arch.depth import paper_comparison

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("own_run_store")


def run(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=120).run()


def test_diagrams_header_has_the_input():
    at = run("diagrams.py")
    assert at.subheader[0].value.endswith("input 3×224×224")
    at.sidebar.selectbox(key="diagrams_model").set_value("cifar_resnet20").run()
    assert at.subheader[0].value.startswith("cifar_resnet20") and at.subheader[0].value.endswith("input 3×32×32")
    assert any("whatever model is chosen above" in c.value for c in at.caption)  # block internals are generic


def test_depth_page_says_the_input_sizes():
    at = run("depth.py")
    assert any(c.value.startswith("Every cost on this page is for one image at each model's own input size: "
                                  "224×224 px") for c in at.caption)
    at.radio(key="depth_family").set_value("cifar").run()
    assert any("32×32 px (the CIFAR nets' 32 px)" in c.value for c in at.caption)


def test_cifar_paper_comparison_has_no_empty_column():
    assert "ours (torchvision v1.5)" not in paper_comparison(["cifar_resnet20", "cifar_resnet56"]).columns
    assert "ours (torchvision v1.5)" in paper_comparison(["resnet50"]).columns


def test_a_zip_without_a_checkpoint_layout_is_one_plain_sentence():
    import io
    import zipfile

    from analysis.core.errors import CheckpointError
    from analysis.store.weights import safe_load

    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        safe_load(blob.getvalue(), "notes.pt")
    assert str(info.value) == ("notes.pt: not a valid PyTorch checkpoint — a zip file without the layout "
                               "torch.save writes (one folder holding data.pkl and data/), or a truncated one")
