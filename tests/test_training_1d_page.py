"""The Training page on MNIST-1D (issue 13): picking it shows the shipped 1-D nets, trains resnet1d_<6n+2>
nets with a progress bar, and sets their test accuracy beside MNIST-1D's published baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.data.data import MNIST1D_BASELINES

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("own_run_store")

PUBLISHED = "published (Greydanus 2020)"
ACC = "test accuracy %"


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=180).run()


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def mnist1d_view() -> AppTest:
    at = page()
    at.selectbox(key="train_data").select("mnist1d").run()
    clean(at)
    return at


def test_the_default_view_shows_no_baselines():
    at = page()
    clean(at)
    assert "MNIST-1D: published baselines and the nets here" not in [s.value for s in at.subheader]
    assert "MNIST-1D (embedded, 1-D sequences)" in at.selectbox(key="train_data").options  # the labels
    shipped = at.dataframe[0].value  # the digits' shipped nets open the default view, as before
    assert set(shipped["data"]) == {"digits16"}
    # beside it only the recorded grid's degradation readings, no baselines table
    assert [list(d.value.columns) for d in at.dataframe[1:]] == [["comparison", "error", "reading"]]


def test_picking_mnist1d_shows_the_shipped_1d_nets_and_the_published_baselines():
    at = mnist1d_view()
    assert [s.value for s in at.subheader] == ["Shipped runs", "Run it yourself",
                                               "MNIST-1D: published baselines and the nets here"]
    assert not at.warning, [w.value for w in at.warning]  # the shipped 1-D nets are there: no "none found"
    shipped = at.dataframe[0].value
    assert set(shipped["data"]) == {"mnist1d"}
    assert all(name.startswith("mnist1d_") for name in shipped["model"])
    assert not [b.key for b in at.select_slider]  # no digits size: MNIST-1D has one length
    assert any("4,000 training and 1,000 test sequences of 40 samples" in c.value for c in at.caption)
    comparison = at.dataframe[1].value
    published = comparison[comparison["source"] == PUBLISHED]
    assert dict(zip(published["model"], published[ACC], strict=True)) == {
        "logistic regression": 32.0, "MLP": 68.0, "CNN": 94.0, "GRU": 91.0, "human expert": 96.0}
    assert sorted(comparison.loc[comparison["source"] == "shipped", "model"]) == sorted(shipped["model"])
    for _, row in shipped.iterrows():  # the same nets: accuracy = 100 - error
        acc = comparison.set_index("model").loc[row["model"], ACC]
        assert acc == pytest.approx(100 - row["test error %"], abs=1e-9)
    assert comparison[ACC].tolist() == sorted(comparison[ACC], reverse=True)  # best first
    assert any("No run of yours on MNIST-1D yet" in c.value for c in at.caption)


def test_training_resnet1d_8_for_one_epoch_adds_it_beside_the_baselines(monkeypatch):
    from analysis.experiments import train

    bars: list[str] = []
    real = train.train

    def spy(spec, data, config=None, callback=None, **kwargs):
        def seen(p):  # what the page's progress callback draws
            out = callback(p)
            bars.append(f"{p.phase} {p.epoch}/{p.epochs}")
            return out

        return real(spec, data, config, seen, **kwargs)

    monkeypatch.setattr(train, "train", spy)
    at = mnist1d_view()
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["residual"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_go").click().run()
    clean(at)
    (label, ck), = at.session_state["trained"].items()
    assert label == "resnet1d_8 (1 ep, lr 0.1, seed 0)"
    assert ck.spec.dims == 1 and ck.spec.residual and ck.meta.dataset.name == "mnist1d"
    assert bars[-1] == "epoch 1/1" and bars.count("batch 1/1") == 63  # 4,000 sequences in batches of 64
    assert [s.value for s in at.success] == ["Trained 1 of 1 net: see *Your runs* below."]
    assert not at.get("progress")  # the bar is gone when training ends
    comparison = at.dataframe[1].value.set_index("model")
    mine = comparison.loc[label]
    assert mine["source"] == "trained here"
    assert mine[ACC] == round(100 * ck.meta.final["test_acc"], 1)
    assert comparison.loc["CNN", ACC] == 100 * MNIST1D_BASELINES["CNN"]
    assert not any("No run of yours on MNIST-1D yet" in c.value for c in at.caption)
    runs = at.dataframe[-1].value  # the runs table is still the last table
    assert runs["model"].tolist() == [label] and runs["data"].tolist() == ["mnist1d"]


def test_plain_twins_are_1d_too():
    at = mnist1d_view()
    at.multiselect(key="train_depths").set_value([8]).run()
    at.multiselect(key="train_kinds").set_value(["plain"]).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.checkbox(key="train_grad_record").uncheck().run()
    at.button(key="train_go").click().run()
    clean(at)
    (label, ck), = at.session_state["trained"].items()
    assert label.startswith("plain_resnet1d_8 ") and ck.spec.dims == 1 and not ck.spec.residual
