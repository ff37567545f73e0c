"""Evaluation in bf16 (issue 25, item 3): lesion sweeps and path measurements run under bf16 autocast
where asked, and fp32 exactly as before (same numbers, same store keys); shards give one process's
table in bf16 too; the CLI refuses bf16 on a CPU without bf16 units in one sentence; the measured
count of changed predictions (tools/make_bf16_eval.py, results/bf16_eval.json) and the pages that say it.

The oracles run the net's own modules under ``torch.autocast`` by hand, never the lesion engine, the
path loop or the comparison they check."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.cli.main import main
from analysis.core import machine
from analysis.core.errors import CheckpointError, ConfigError
from analysis.data.data import load_digits
from analysis.experiments import lesion, lesionstore, paths, precisioneval, programlesion
from analysis.run import shard
from analysis.store import programs
from analysis.store.checkpoints import Checkpoint, dataset_for, load_checkpoint, shipped_checkpoints
from tests.helpers import error_line, page_with_pick

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "bf16_eval.json"
HAS_BF16 = machine.bf16_unit() is not None
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
NO_BF16 = "fpu sse2 avx2 fma avx512f"
REFUSED = "needs bf16 matrix units (AMX-BF16 or AVX-512 BF16)"


@pytest.fixture(scope="module")
def fresh():
    """A ResNet-8 at initialisation on 8 px digits: its logits lie close together, so bf16's rounding
    changes some of its predictions (a trained net's are far apart and rarely move)."""
    spec = get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8)
    return build_model(spec, seed=0).eval(), load_digits(8)


def by_hand(model, x, sequences, batch_size: int, bf16: bool) -> torch.Tensor:
    """Each sequence's predictions from the stem, its blocks called one by one, under autocast or not."""
    blocks = [b for _, b in model.blocks()]
    out = []
    for seq in sequences:
        parts = []
        for lo in range(0, len(x), batch_size):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                h = model.stem(x[lo:lo + batch_size])
                for i, keep in seq:
                    h = blocks[i](h, keep_residual=keep)
                parts.append(model.head(h).argmax(1))
        out.append(torch.cat(parts))
    return torch.stack(out)


# ------------------------------------------------------------------ the lesion engine
@needs_bf16
def test_a_bf16_sweep_predicts_as_the_autocast_forward_and_fp32_as_before(fresh):
    model, data = fresh
    seqs = lesion.single_plan(model).sequences
    x = data.x_test
    bf16 = lesion.predict_sequences(model, x, seqs, batch_size=64, precision="bf16")
    fp32 = lesion.predict_sequences(model, x, seqs, batch_size=64)
    assert torch.equal(bf16, by_hand(model, x, seqs, 64, bf16=True))
    assert torch.equal(fp32, by_hand(model, x, seqs, 64, bf16=False))
    assert torch.equal(lesion.predict_sequences(model, x, seqs, batch_size=64, precision="fp32"), fp32)
    assert int((bf16 != fp32).sum()) > 0  # bf16 is really another arithmetic on this net
    assert not torch.is_autocast_enabled("cpu")  # nothing left behind
    table = lesion.run_sweep("single", model, x, data.y_test, batch_size=64, precision="bf16")
    wrong = (by_hand(model, x, seqs, 64, bf16=True) != data.y_test[None]).sum(1)
    assert table["error"].tolist() == (wrong.float() / len(x)).tolist()


def measured() -> dict:
    return {r["name"]: r for r in json.loads(RESULTS.read_text())["nets"]}


@needs_bf16
def test_the_intact_row_of_a_bf16_sweep_agrees_with_the_measured_count():
    """The intact net's errors of a sweep in each precision are the ones the tool measured (where this
    is the machine it measured on: bf16's bits are the CPU's)."""
    doc = json.loads(RESULTS.read_text())
    if (doc["machine"]["cpu"], doc["machine"]["bf16_unit"]) != (machine.cpu_model(), machine.bf16_unit()):
        pytest.skip("results/bf16_eval.json was measured on another CPU")
    rec = measured()["mnist1d_resnet20"]  # bf16 changes one of its predictions
    assert rec["changed"] > 0
    ck = load_checkpoint(shipped_checkpoints()["mnist1d_resnet20"])
    data = dataset_for(ck.meta)
    intact = [lesion.identity_sequence(len(lesion.block_infos(ck.model)))]
    preds = {p: lesion.predict_sequences(ck.model, data.x_test, intact, precision=p)[0] for p in ("fp32", "bf16")}
    assert int((preds["fp32"] == data.y_test).sum()) == rec["fp32_correct"]
    assert int((preds["bf16"] == data.y_test).sum()) == rec["bf16_correct"]
    assert int((preds["fp32"] != preds["bf16"]).sum()) == rec["changed"]


def test_fp32_keys_are_as_they_were_and_bf16_keys_apart():
    data = load_digits(8)
    old = {"dataset": data.name, "split_seed": data.split_seed, "test_images": len(data.y_test),
           "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std], "samples": 5, "seed": 3}
    assert lesion.sweep_settings("k", data, samples=5, seed=3) == old
    assert lesion.sweep_settings("k", data, samples=5, seed=3, precision="fp32") == old
    assert lesion.sweep_settings("k", data, samples=5, seed=3, precision="bf16") == {**old, "precision": "bf16"}
    s = paths.MeasureSettings()
    assert "precision" not in paths.store_settings(s, data, "fp32")
    assert paths.store_settings(s, data, "bf16") == {**paths.store_settings(s, data), "precision": "bf16"}
    # the data identity that lists a net's stored measurements tells the precisions apart
    assert paths.data_identity(paths.store_settings(s, data, "bf16")) != paths.data_identity(paths.store_settings(s, data))
    with pytest.raises(ConfigError, match="an evaluation runs in fp32 or bf16, got 'fp16'"):
        lesion.sweep_settings("single", data, precision="fp16")
    assert "in bf16" in lesion.describe_settings("single", lesion.sweep_settings("single", data, precision="bf16"))


def test_the_stored_fp32_sweeps_answer_fp32_only():
    """A shipped program's stored sweeps are found with fp32 settings (their keys unchanged) and never
    for bf16."""
    file = programs.shipped_programs()["digits_vit"]
    stored = lesionstore.load_results(file)
    ep, meta = programs.load_shipped(file)
    data = programs.dataset_for_program(meta)
    units = [u.name for u in lesion.infos_of(programlesion.cut(ep, file.name).chain("units"))]
    fp32 = lesion.sweep_settings("single", data, precision="fp32")
    assert stored is not None and stored.find("units", "single", fp32, units) is not None
    assert stored.find("units", "single", lesion.sweep_settings("single", data, precision="bf16"), units) is None


def test_bf16_is_refused_before_any_work_on_a_cpu_without_bf16_units(monkeypatch, fresh):
    model, data = fresh
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)

    def work(*args, **kwargs):
        raise AssertionError("work started before the precision was checked")

    monkeypatch.setattr(shard.ModelPayload, "of", work)  # what sharding does first
    for call in (lambda: lesion.run_sweep("single", model, data.x_test, data.y_test, precision="bf16"),
                 lambda: paths.gradient_by_length(model, data.x_test[:8], data.y_test[:8], precision="bf16"),
                 lambda: shard.sharded_sweep("single", model, data.x_test, data.y_test, precision="bf16"),
                 lambda: shard.sharded_gradient_by_length(model, data.x_test[:8], data.y_test[:8], precision="bf16")):
        with pytest.raises(ConfigError, match=re.escape(REFUSED)):
            call()


# ------------------------------------------------------------------ path measurement
@needs_bf16
def test_bf16_gradients_flow_under_autocast_and_their_norms_are_fp32(fresh):
    model, data = fresh
    x, y = data.x_test[:32], data.y_test[:32]
    seen: list[torch.dtype] = []
    normed: list[torch.dtype] = []
    orig, orig_norm = torch.nn.Conv2d.forward, torch.Tensor.norm

    def spy(self, inp):
        out = orig(self, inp)
        seen.append(out.dtype)
        return out

    def norm_spy(self, *args, **kwargs):
        normed.append(self.dtype)
        return orig_norm(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "forward", spy)
        mp.setattr(torch.Tensor, "norm", norm_spy)
        norms = paths.example_norms(model, x, y, [set(), {0, 1, 2}], precision="bf16")
    assert seen and set(seen) == {torch.bfloat16}  # the forward ran in bf16
    assert normed and set(normed) == {torch.float32} and norms.dtype == torch.float32  # the norms in fp32
    fp32 = paths.example_norms(model, x, y, [set(), {0, 1, 2}])
    assert torch.equal(paths.example_norms(model, x, y, [set(), {0, 1, 2}], precision="fp32"), fp32)
    assert not torch.equal(norms, fp32)
    # another rounding of the same gradients: an example's norm moves by up to 7 %, a path's magnitude
    # (the mean over the examples) by 0.3 % (both measured)
    assert torch.allclose(norms, fp32, rtol=0.15)
    assert torch.allclose(norms.mean(1), fp32.mean(1), rtol=0.02)


# ------------------------------------------------------------------ shards
@needs_bf16
def test_shards_give_one_process_table_in_bf16(fresh):
    model, data = fresh
    x, y = data.x_test, data.y_test
    one = lesion.run_sweep("single", model, x, y, batch_size=64, precision="bf16")
    sharded = shard.sharded_sweep("single", model, x, y, batch_size=64, shards=3, precision="bf16")
    assert sharded.equals(one)
    assert not one.equals(lesion.run_sweep("single", model, x, y, batch_size=64))  # bf16 differs here
    xs, ys = x[:48], y[:48]
    g = paths.gradient_by_length(model, xs, ys, samples=2, batch_size=16, precision="bf16")
    gs = shard.sharded_gradient_by_length(model, xs, ys, samples=2, batch_size=16, shards=3, precision="bf16")
    pd.testing.assert_frame_equal(gs, g, check_exact=True)
    assert not g["mean"].equals(paths.gradient_by_length(model, xs, ys, samples=2, batch_size=16)["mean"])


@needs_bf16
def test_a_programs_shards_give_one_process_table_in_bf16(fresh):
    """The fresh net exported as a program: each shard reopens its archive and runs its units in bf16."""
    from analysis.arch.graphnet import export_module

    model, data = fresh
    x, y = data.x_test[:192], data.y_test[:192]
    chain = programlesion.cut(export_module(model, (x[:64],)), "tiny").chain("units")
    one = lesion.run_sweep("single", chain, x, y, batch_size=64, precision="bf16")
    assert shard.sharded_sweep("single", chain, x, y, batch_size=64, shards=2, precision="bf16").equals(one)
    assert not one.equals(lesion.run_sweep("single", chain, x, y, batch_size=64))


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("command", ["lesion", "paths"])
def test_the_cli_refuses_bf16_without_bf16_units_before_reading_the_net(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    out = tmp_path / "r.csv"
    assert main([command, "--checkpoint", str(tmp_path / "missing.pt"), "--precision", "bf16", "--out", str(out)]) == 2
    line = error_line(capsys)
    assert REFUSED in line and "missing.pt" not in line and line.endswith("use fp32 (or bf16 on a CUDA device)")
    assert not out.exists()


@needs_bf16
def test_the_cli_sweeps_in_bf16_and_says_so_in_its_csv(tmp_path, capsys):
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.csv"
        assert main(["lesion", "--checkpoint", "digits_plain20", "--precision", precision, "--out", str(out)]) == 0
    bf16, fp32 = (pd.read_csv(tmp_path / f"{p}.csv") for p in ("bf16", "fp32"))
    assert "precision" not in fp32.columns and set(bf16["precision"]) == {"bf16"}  # an fp32 CSV is as it was
    ck = load_checkpoint(shipped_checkpoints()["digits_plain20"])
    data = dataset_for(ck.meta)
    expected = lesion.run_sweep("single", ck.model, data.x_test, data.y_test, precision="bf16")
    assert bf16["error"].tolist() == pytest.approx(expected["error"].tolist(), abs=0)
    assert int((bf16["error"] != fp32["error"]).sum()) == 1  # of its 10 rows (measured)
    capsys.readouterr()


# ------------------------------------------------------------------ the measurement and its file
@needs_bf16
def test_compare_counts_what_autocast_changes(fresh):
    model, data = fresh
    x, y = data.x_test[:256], data.y_test[:256]  # bf16 changes two predictions here, one to the right class
    with torch.inference_mode():
        a = torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = torch.cat([model(x[i:i + 256]).float() for i in range(0, len(x), 256)])
    got = precisioneval.compare(model, x, y)
    assert got.changed == int((a.argmax(1) != b.argmax(1)).sum()) > 0
    assert (got.n, got.fp32_correct, got.bf16_correct) == (len(y), int((a.argmax(1) == y).sum()),
                                                           int((b.argmax(1) == y).sum()))
    assert got.fp32_correct != got.bf16_correct
    assert got.max_abs_logit_diff == float((a - b).abs().max()) > 0


FIELDS = {"name", "file", "sha256", "kind", "dataset", "split_seed", "n", "changed", "fp32_correct", "bf16_correct",
          "max_abs_logit_diff"}


@needs_bf16
def test_the_tool_writes_the_counts_of_a_net_with_the_machine_and_command(tmp_path, capsys):
    from tools import make_bf16_eval

    out = tmp_path / "b.json"
    assert make_bf16_eval.main(["--only", "digits_resnet20", "--out", str(out)]) == 0
    capsys.readouterr()
    doc = json.loads(out.read_text())
    assert doc["format"] == "resnet-lens-bf16-eval/1" and doc["made_by"] == "tools/make_bf16_eval.py"
    assert doc["command"] == f"python tools/make_bf16_eval.py --only digits_resnet20 --out {out}"
    assert doc["machine"]["threads"] == torch.get_num_threads()
    assert doc["machine"]["bf16_unit"] == machine.bf16_unit()
    assert set(doc["machine"]) == {"cpu", "cpus", "threads", "bf16_unit", "torch"}
    (rec,) = doc["nets"]
    assert set(rec) == FIELDS
    file = shipped_checkpoints()["digits_resnet20"]
    assert (rec["name"], rec["file"], rec["kind"], rec["dataset"], rec["split_seed"]) == (
        "digits_resnet20", "digits_resnet20.pt", "checkpoint", "digits16", 0)
    assert rec["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    ck = load_checkpoint(file)
    data = dataset_for(ck.meta)
    with torch.inference_mode():
        a = ck.model.eval()(data.x_test).argmax(1)
    assert rec["n"] == 450 and rec["fp32_correct"] == int((a == data.y_test).sum())
    assert 0 <= rec["changed"] <= 450 and abs(rec["fp32_correct"] - rec["bf16_correct"]) <= rec["changed"]
    assert precisioneval.load_results(out)["digits_resnet20"].counts.n == 450  # read back by the pages' reader


def test_the_shipped_counts_cover_every_shipped_net_at_its_current_version():
    doc = json.loads(RESULTS.read_text())
    assert doc["format"] == "resnet-lens-bf16-eval/1" and doc["command"].startswith("python tools/make_bf16_eval.py")
    files = {**shipped_checkpoints(), **programs.shipped_programs()}
    recs = measured()
    assert set(recs) == set(files) and len(recs) == 12
    for name, f in files.items():
        assert recs[name]["sha256"] == precisioneval.file_digest(f), f"{name}: rerun tools/make_bf16_eval.py"
        assert set(recs[name]) == FIELDS


def test_a_damaged_counts_file_is_refused_in_one_sentence(tmp_path):
    doc = json.loads(RESULTS.read_text())
    bad = tmp_path / "b.json"
    for change, message in [({"format": "x"}, "expected 'resnet-lens-bf16-eval/1'"),
                            ({"nets": [{"name": 1}]}, "its nets are not records"),
                            ({"nets": [{**doc["nets"][0], "changed": doc["nets"][0]["n"] + 1}]}, "counts more than"),
                            ({"nets": [{**doc["nets"][0], "n": -1}]}, "n = -1 is outside")]:
        bad.write_text(json.dumps({**doc, **change}))
        with pytest.raises(CheckpointError, match=message):
            precisioneval.load_results(bad)
    assert precisioneval.load_results(tmp_path / "missing.json") == {}


def test_the_sentences_say_the_count_or_that_none_is_measured():
    rec = precisioneval.load_results(RESULTS)["mnist1d_transformer"]
    c = rec.counts
    machine = json.loads(RESULTS.read_text())["machine"]  # the file says where it was measured
    where = f"{machine['cpu']}, {machine['threads']} thread{'s' * (machine['threads'] != 1)}"
    assert precisioneval.sentence(rec) == (f"bf16 changes {c.changed} of {c.n} test predictions of this net "
                                           f"(measured on {where}, results/bf16_eval.json; another CPU or "
                                           "thread count may differ). "
                                           f"Correct: {c.fp32_correct} in fp32, {c.bf16_correct} in bf16.")
    assert precisioneval.sentence(rec, rec.sha256) == precisioneval.sentence(rec)
    assert "not measured for this one" in precisioneval.sentence(rec, "0" * 64)
    assert "not measured for it" in precisioneval.sentence(None)


# ------------------------------------------------------------------ the pages
def line_of(name: str) -> str:
    r = measured()[name]
    machine = json.loads(RESULTS.read_text())["machine"]
    where = f"{machine['cpu']}, {machine['threads']} thread{'s' * (machine['threads'] != 1)}"
    return (f"bf16 changes {r['changed']} of {r['n']} test predictions of this net (measured on {where}, "
            f"results/bf16_eval.json; another CPU or thread count may differ). Correct: {r['fp32_correct']} in "
            f"fp32, {r['bf16_correct']} in bf16.")


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_the_lesion_lab_sweeps_in_bf16_apart_and_says_the_measured_count():
    """MNIST-1D's ResNet-20, on which bf16 changes one test prediction: the intact error moves from its
    fp32 value to its bf16 value, as measured, in the metrics and in the sweep."""
    net, rec = "shipped: mnist1d_resnet20", measured()["mnist1d_resnet20"]
    at = page_with_pick("lesion", "lesion_ckpt", net)
    assert not [c for c in captions(at) if "bf16 changes" in c]
    intact = "Test error, intact"

    def error(correct: int) -> str:
        return f"{100 * (1 - correct / rec['n']):.2f} %"

    assert {m.label: m.value for m in at.metric}[intact] == error(rec["fp32_correct"])
    at.sidebar.radio(key="lesion_eval_precision").set_value("bf16").run()
    assert not at.exception
    assert f"Evaluated in bf16. {line_of('mnist1d_resnet20')}" in captions(at)
    assert {m.label: m.value for m in at.metric}[intact] == error(rec["bf16_correct"]) != error(rec["fp32_correct"])
    at.button(key="lesion_run_single").click().run()
    assert not at.exception
    results = at.session_state["lesion_results"]
    key = (net, "mnist1d", 0, "single", 0, 0, "bf16")
    assert list(results) == [key, ("shipped: mnist1d_plain20", "mnist1d", 0, "single", 0, 0, "bf16")]
    table = results[key]
    assert table.loc[table["index"] == -1, "error"].item() == pytest.approx(1 - rec["bf16_correct"] / rec["n"])
    assert line_of("mnist1d_resnet20") in captions(at)
    assert any(c.startswith("Results (1000 test sequences of mnist1d, in bf16) — ") for c in captions(at))
    # back to fp32: the bf16 sweep does not answer for it
    at.sidebar.radio(key="lesion_eval_precision").set_value("fp32").run()
    assert any("has no single-block sweep for 1000 test sequences of mnist1d yet" in i.value for i in at.info)


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_a_net_trained_in_the_app_is_said_to_have_no_measured_count():
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    # named as a shipped net, but not its file: the shipped net's count is not this net's
    at = page_with_pick("lesion", "lesion_ckpt", "trained here: digits_resnet20",
                        {"digits_resnet20": Checkpoint(ck.spec, ck.model, ck.meta, False)})
    at.sidebar.radio(key="lesion_eval_precision").set_value("bf16").run()
    assert not at.exception
    assert [c for c in captions(at) if "bf16" in c] == [
        "Evaluated in bf16. bf16 may change some of this net's test predictions: how many is not measured for it "
        "(results/bf16_eval.json holds the shipped nets' counts)."]


@needs_bf16
@pytest.mark.usefixtures("own_run_store")
def test_the_path_ensemble_measures_in_bf16_apart_and_says_the_measured_count():
    at = page_with_pick("paths", "paths_ckpt", "shipped: digits_resnet20")
    assert any("stored with the checkpoint" in c or "Stored results" in c for c in captions(at))
    at.radio(key="paths_eval_precision").set_value("bf16").run()
    at.checkbox(key="paths_init").uncheck().run()
    assert not at.exception
    # the shipped fp32 measurement is not shown for bf16
    assert any("has not been measured with 10 samples per length, batch 64, seed 0, in bf16" in i.value
               for i in at.info)
    at.button(key="paths_run").click().run()
    assert not at.exception
    (key,) = at.session_state["paths_results"]
    assert key == ("shipped: digits_resnet20", "trained", paths.MeasureSettings(), "bf16")
    assert "Measured in this session (10 samples per length, batch 64, seed 0, in bf16)." in captions(at)
    assert line_of("digits_resnet20") in captions(at)
    # measured in bf16, as the library measures it here, and not fp32's numbers
    shown = at.session_state["paths_results"][key]
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    settings = paths.MeasureSettings()
    assert shown.equals(paths.measure(ck.model, data.x_test, data.y_test, settings, precision="bf16"))
    assert not shown.equals(paths.measure(ck.model, data.x_test, data.y_test, settings))
