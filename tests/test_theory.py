"""Scaled shortcuts: the gradient factor lambda^(L-l) (He et al. 2016, Eq. 8)."""

import pytest

from analysis.arch.theory import scaled_shortcut_gradients
from analysis.core.errors import LensError


def test_without_residual_branch_the_ratio_is_exactly_lambda_power():
    df = scaled_shortcut_gradients([0.5, 1.0, 1.5], 20, residual_scale=0.0)
    for row in df.itertuples():
        assert row.ratio == pytest.approx(row._4, rel=1e-12)  # lambda^blocks
    assert df[(df["lambda"] == 1.5) & (df["blocks"] == 20)]["ratio"].item() == pytest.approx(1.5 ** 20)


def test_identity_keeps_gradient_scaled_ones_explode_or_vanish():
    df = scaled_shortcut_gradients([0.8, 1.0, 1.2], 60, residual_scale=0.1)
    end = df[df["blocks"] == 60].set_index("lambda")["ratio"]
    assert end[0.8] < 1e-3 < 0.5 < end[1.0] < 20 < 1e3 < end[1.2]
    assert (df[df["blocks"] == 0]["ratio"] == 1.0).all()


def test_bad_input():
    with pytest.raises(LensError, match="depth"):
        scaled_shortcut_gradients([1.0], 0)
    with pytest.raises(LensError, match="positive"):
        scaled_shortcut_gradients([0.0], 5)


def test_the_theory_page_shows_the_notes_example_and_measures_the_shipped_nets(monkeypatch, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("RESNET_LENS_BN_STUDY", raising=False)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / "theory.py"),
                           default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = lambda: [m.value for m in at.metric]  # noqa: E731
    assert metrics() == ["1.639 %", "100 %", "61×"]  # 1/61, 0.1 -> 0.2, 6.1 / 0.1
    captions = lambda: " ".join(c.value for c in at.caption)  # noqa: E731
    assert "the plain change is 1/61 and the residual one 1" in captions()
    # digits_resnet20, as tests/test_sensitivity.py and tests/test_bn_study.py measure it
    blocks = next(d.value for d in at.dataframe if "‖F‖/‖H‖" in d.value.columns).set_index("block")
    assert blocks.loc["layer1.0", "‖F‖/‖H‖"] == pytest.approx(0.648520, abs=1e-6)
    assert "median 0.603" in captions()
    assert "batch size 1, 164 of 450 test inputs are wrong (36.44 %); in eval mode 5 (1.111 %)" in captions()
    study = next(d.value for d in at.dataframe if "wrong per seed" in d.value.columns)
    assert len(study) == 8 and "seeds 0, 1, 2, 3, 4" in captions()

    at.number_input(key="theory_x").set_value(2.0).run()
    at.number_input(key="theory_h_before").set_value(3.0).run()
    at.number_input(key="theory_h_after").set_value(2.5).run()
    assert metrics() == ["-16.67 %", "-50 %", "3×"]  # (2.5 - 3) / 3, F: 1 -> 0.5, 3 / 1
    at.number_input(key="theory_h_before").set_value(2.0).run()
    assert not at.exception and not metrics()
    assert [e.value for e in at.error] == ["H(x) before equals x, so the residual F(x) = H(x) − x is 0 and its "
                                           "relative change is undefined: choose H(x) different from x"]

    at.selectbox(key="theory_net").select("digits_plain20").run()
    assert not at.exception
    assert "digits_plain20 is plain: ‖F‖ / ‖H‖ is 1 in every block" in captions()
    blocks = next(d.value for d in at.dataframe if "‖F‖/‖H‖" in d.value.columns)
    assert (blocks["‖F‖/‖H‖"] == 1.0).all()

    bad = tmp_path / "bn.json"
    bad.write_text("{}")
    monkeypatch.setenv("RESNET_LENS_BN_STUDY", str(bad))
    at.run()
    assert not at.exception
    assert [i.value for i in at.info] == ["No BatchNorm study to show: bn.json: not a BatchNorm study record "
                                          "(resnet-lens-bn-study/1)"]
