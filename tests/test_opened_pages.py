"""Nets of the user's own on the pages (issue 23): opened from a .pt2 file on the server (an upload
cannot be made in AppTest; both go through one loader), from a trusted module, and compared side by
side. Oracles: the module's own ``numel`` and hand counts, never the code under test."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from tests import downloads
from tests.zoo import PreNormBlock, SqueezeExcite, Transformer

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("own_run_store")


def broken() -> nn.Module:
    """A trusted factory that fails (a user's code raises whatever it raises)."""
    raise RuntimeError("weights file not found")


def conv_on_meta() -> nn.Module:
    """A trusted factory: a conv whose weights must be on the meta device (built there, never allocated)."""
    m = nn.Conv2d(3, 8, 3)
    BUILT.append(m.weight.device.type)
    return m


BUILT: list[str] = []


def small_vit() -> nn.Module:
    """A trusted factory for the module source: two pre-norm blocks (four residual units)."""
    return Transformer(PreNormBlock, depth=2).eval()


def numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def saved(tmp_path: Path, module: nn.Module, shape: tuple[int, ...], name: str) -> Path:
    path = tmp_path / name
    torch.export.save(torch.export.export(module.eval(), (torch.zeros(shape),)), path)
    return path


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / name), default_timeout=120).run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_path(at: AppTest, key: str, path: Path | str) -> AppTest:
    at.radio(key=f"{key}_source").set_value("Your net").run()
    at.radio(key=f"{key}_net_from").set_value("path").run()
    at.text_input(key=f"{key}_net_path").input(str(path)).run()
    clean(at)
    return at


def test_explorer_reads_an_exported_transformer(tmp_path: Path) -> None:
    vit = small_vit()
    path = saved(tmp_path, vit, (1, 5, 8), "vit.pt2")
    with downloads.captured() as files:
        at = open_path(page("explorer.py"), "explorer", path)
        buttons = {b.label: b for b in at.get("download_button")}
        ops_csv = files.of(buttons["Download every op's costs (CSV)"])
        units_csv = files.of(buttons["Download the residual units (CSV)"])
    assert (ops_csv.filename, units_csv.filename) == ("vit.pt2_ops.csv", "vit.pt2_units.csv")
    assert int(pd.read_csv(io.BytesIO(ops_csv.data))["params"].sum()) == numel(vit)
    assert list(pd.read_csv(io.BytesIO(units_csv.data))["shortcut"]) == ["identity"] * 4
    m = metrics(at)
    assert m["Parameters"] == f"{numel(vit):,}"
    assert (m["Residual units"], m["Identity shortcuts"], m["Projection shortcuts"]) == ("4", "4", "0")
    # the two linears of a block's MLP at 16 tokens: embed 8->D, head D->10, 4 per block: hand counts
    d = vit.embed.out_features
    assert int(m["Ops in the graph"].replace(",", "")) > 0
    rows = at.dataframe[0].value
    assert "blocks.0" in set(rows["module"]) and "blocks.1" in set(rows["module"])  # depth 2: one row per block
    at.slider(key="explorer_net_depth").set_value(1).run()
    assert set(at.dataframe[0].value["module"]) == {"embed", "(net)", "blocks", "head"}  # (net): x + pos, mean
    assert int(at.dataframe[0].value.set_index("module").loc["head", "params"]) == d * 10 + 10
    at.radio(key="explorer_net_level").set_value("ops").run()
    clean(at)
    ops = at.dataframe[0].value
    assert int(ops["params"].sum()) == numel(vit)
    # the units tab: four rows, each inside blocks.k, none nested
    units = at.dataframe[1].value
    assert len(units) == 4 and set(units["shortcut"]) == {"identity"}
    assert {u.split(".")[0] for u in units["owner"]} == {"blocks"}


def test_explorer_says_why_a_net_has_no_residual_unit(tmp_path: Path) -> None:
    path = saved(tmp_path, SqueezeExcite(), (1, 16, 8, 8), "se.pt2")
    at = open_path(page("explorer.py"), "explorer", path)
    assert metrics(at)["Residual units"] == "0"
    assert any("no residual unit" in i.value and "multiplicative gate" in i.value for i in at.info)


@pytest.mark.parametrize("what, words", [("missing.pt2", "no such file on this server"),
                                         ("notes.txt", "a net file is a torch.export program (.pt2) or an ONNX"),
                                         ("/etc/passwd", "passwd: a net file is a torch.export program (.pt2)"),
                                         ("junk.pt2", "not a complete zip archive")])
def test_explorer_says_what_is_wrong_with_a_file(tmp_path: Path, what: str, words: str) -> None:
    path = tmp_path / what  # an absolute `what` stays itself: the answer must not say whether it exists
    if what in ("notes.txt", "junk.pt2"):
        path.write_bytes(b"junk")
    at = open_path(page("explorer.py"), "explorer", path)
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric  # nothing shown as if it had opened


def test_a_trusted_module_opens_only_when_the_server_lists_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESNET_LENS_MODULES", raising=False)
    at = page("explorer.py")
    at.radio(key="explorer_source").set_value("Your net").run()
    at.radio(key="explorer_net_from").set_value("module").run()
    clean(at)
    assert any("trusts no module" in i.value for i in at.sidebar.info)
    monkeypatch.setenv("RESNET_LENS_MODULES", "tests.test_opened_pages:small_vit")
    at.run()
    at.text_input(key="explorer_net_shape").input("1,5,8").run()
    clean(at)
    assert metrics(at)["Parameters"] == f"{numel(small_vit()):,}"
    assert metrics(at)["Residual units"] == "4"
    at.text_input(key="explorer_net_shape").input("1,x").run()
    assert any("input shape is 1 to 6 whole numbers" in e.value for e in at.error)


def test_explorer_lists_a_spec_nets_units_from_the_same_record() -> None:
    at = page("explorer.py")
    at.selectbox(key="explorer_model").select("resnet18").run()
    at.tabs[0]  # the tab bar exists
    at.session_state["explorer_section"] = "Residual units"
    at.run()
    clean(at)
    units = at.dataframe[-1].value
    # resnet18: 2+2+2+2 basic blocks; projections where a stage starts with stride 2 (layer2-4)
    assert len(units) == 8
    assert list(units["shortcut"]).count("projection") == 3
    assert list(units.loc[units["shortcut"] == "projection", "unit"]) == ["layer2.0", "layer3.0", "layer4.0"]


def test_depth_comparison_puts_any_nets_side_by_side(tmp_path: Path) -> None:
    vit, se = small_vit(), SqueezeExcite()
    paths = [saved(tmp_path, vit, (1, 5, 8), "vit.pt2"), saved(tmp_path, se, (1, 16, 8, 8), "se.pt2")]
    at = page("depth.py")
    at.radio(key="depth_family").set_value("yours").run()
    at.text_area(key="depth_your_paths").input("\n".join(map(str, paths)) + "\n" + str(tmp_path / "gone.pt2")).run()
    clean(at)
    rows = at.dataframe[0].value.set_index("net")
    assert list(rows.index) == ["resnet18", "resnet50", "vit.pt2", "se.pt2"]
    assert rows.loc["resnet50", "params"] == 25_557_032 and rows.loc["resnet18", "params"] == 11_689_512
    assert rows.loc["vit.pt2", "params"] == numel(vit) and rows.loc["se.pt2", "params"] == numel(se)
    assert (rows.loc["resnet50", "units"], rows.loc["resnet50", "projection"]) == (16, 4)
    assert (rows.loc["vit.pt2", "units"], rows.loc["se.pt2", "units"]) == (4, 0)
    assert list(rows["source"]) == ["built-in", "built-in", "file", "file"]
    assert any("gone.pt2: no such file on this server" in e.value for e in at.error)  # the others still show


def test_explorer_opens_the_example_vit_with_no_file() -> None:
    at = page("explorer.py")
    at.radio(key="explorer_source").set_value("Your net").run()
    at.radio(key="explorer_net_from").set_value("example").run()
    clean(at)
    m = metrics(at)
    assert (m["Parameters"], m["Residual units"], m["Identity shortcuts"]) == ("86,567,656", "24", "24")
    at.slider(key="explorer_net_depth").set_value(1).run()
    rows = at.dataframe[0].value.set_index("module")
    assert int(rows.loc["blocks", "params"]) == 12 * 7_087_872  # per block: 2 LayerNorms, qkv, proj, fc1, fc2


def test_a_trusted_factory_is_built_on_meta_and_its_failure_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.arch.sources import open_module, trusted_modules

    here = "tests.test_opened_pages"
    BUILT.clear()
    # a shape a link could set: 4096² RGB in a batch of 64 is 12 GiB of float32, nothing on meta
    net = open_module(f"{here}:conv_on_meta", "64,3,4096,4096", allowed=[f"{here}:conv_on_meta"])
    assert BUILT == ["meta"] and net.params == 8 * 3 * 9 + 8
    with pytest.raises(ValueError, match=r"tests.test_opened_pages:broken\(\) failed \(RuntimeError: weights file"):
        open_module(f"{here}:broken", "1,3,8,8")
    with pytest.raises(ValueError, match="more than the 4,294,967,296 an example input may hold"):
        open_module(f"{here}:conv_on_meta", "100000,3,1000,1000")
    with pytest.raises(ValueError, match="'nope' is not one"):
        trusted_modules({"RESNET_LENS_MODULES": f"{here}:small_vit, nope"})
    assert trusted_modules({"RESNET_LENS_MODULES": f" {here}:small_vit ,, "}) == (f"{here}:small_vit",)


def test_a_programs_shape_is_its_own(tmp_path: Path) -> None:
    from analysis.arch.sources import open_file

    path = saved(tmp_path, small_vit(), (1, 5, 8), "vit.pt2")
    with pytest.raises(ValueError, match="a program's input shape is fixed when it is exported"):
        open_file(path, input_shape=(1, 7, 8))


def test_an_onnx_file_with_a_free_sequence_axis_opens_with_a_shape_from_the_sidebar(tmp_path: Path) -> None:
    import warnings

    vit = small_vit()
    path = tmp_path / "vit.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(vit, (torch.zeros(1, 5, 8),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {1: "T"}})
    at = open_path(page("explorer.py"), "explorer", path)
    assert at.error and not at.metric  # the free axis T needs a shape
    at.text_input(key="explorer_net_onnx_shape").input("1,5,8").run()
    clean(at)
    assert metrics(at)["Parameters"] == f"{numel(vit):,}" and metrics(at)["Residual units"] == "4"
