"""``python -m analysis transfer`` (issue 14): one tiny end-to-end run writing JSON and CSV, the
second call training nothing, Ctrl-C keeping the finished runs, and every bad input refused in one
line before any training."""

import json
import math
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from scipy.stats import t as scipy_t

import analysis.experiments.train
from analysis.cli.common import Interrupted, Stop
from analysis.cli.main import main, run
from analysis.core.compat import deterministic_state_dict
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore, net_key
from analysis.studies import transfer as T
from tests.helpers import image_folder

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "tests" / "fixtures" / "torchvision_state_dicts.json").read_text())["keys"]


def counting_fit(monkeypatch, then=None) -> dict[str, int]:
    """Count calls of analysis.experiments.train.fit (``then(n)`` runs before the n-th call trains)."""
    calls = {"fit": 0}
    real = analysis.experiments.train.fit

    def fit(*a, **k):
        calls["fit"] += 1
        if then:
            then(calls["fit"])
        return real(*a, **k)

    monkeypatch.setattr(analysis.experiments.train, "fit", fit)
    return calls


def test_a_tiny_transfer_run_end_to_end(tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "r.json"
    argv = ["transfer", "--modes", "scratch", "finetune", "--labels", "1", "all", "--seeds", "0", "--steps", "5",
            "--store", str(store), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "target digits16[5,6,7,8,9]: 225 test images; 4 runs of 5 SGD steps" in printed
    assert "the source's 5-class head is replaced with a new 5-way linear head" in printed
    assert "4 runs trained, 0 found in the store" in printed and f"wrote {out}" in printed
    assert "Fine-tuning everything minus from scratch, in points by labelled images per class: 1:" in printed
    res = T.load_results(str(out))
    assert list(res.results["setup"]) == ["from scratch"] * 2 + ["fine-tune everything"] * 2
    assert [None if pd.isna(v) else int(v) for v in res.results["per_class"]] == [1, None, 1, None]
    assert list(res.results["train_images"]) == [5, 671, 5, 671] and set(res.results["steps"]) == {5}
    assert list(res.probe["stage"]) == ["layer1", "layer2", "layer3"] * 2 and res.meta["recipe"]["steps"] == 5
    table = printed.split("by labelled images per class (seed 0):\n")[1].splitlines()
    acc = {r.setup: {} for r in res.summary.itertuples()}
    for r in res.summary.itertuples():
        acc[r.setup][r.labels] = f"{r.test_acc_mean * 100:.1f}"
    assert table[2].split() == ["from", "scratch", acc["from scratch"]["1"], acc["from scratch"]["all"]]
    assert table[3].split() == ["fine-tune", "everything", acc["fine-tune everything"]["1"],
                                acc["fine-tune everything"]["all"]]
    assert main([*argv[:-1], str(tmp_path / "r.csv")]) == 0
    assert "0 runs trained, 4 found in the store" in capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "r.csv")
    assert list(csv.columns) == T.RESULT_COLUMNS and list(csv["test_acc"]) == list(res.results["test_acc"])


def test_over_seeds_the_table_gives_each_mean_with_its_95_percent_t_interval(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["transfer", "--modes", "scratch", "--labels", "1", "5", "--seeds", "0", "1", "2", "--steps", "3",
                 "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = T.load_results(str(out)).results
    accs = list(res.loc[res["per_class"] == 1, "test_acc"])
    mean = sum(accs) / 3
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
    half = float(scipy_t.ppf(0.975, 2)) * sd / math.sqrt(3)  # t with 2 degrees of freedom: 4.303
    table = printed.split("by labelled images per class (mean over 3 seeds [95 % t-interval]):\n")[1].splitlines()
    assert table[2].split()[:5] == ["from", "scratch", f"{100 * mean:.1f}", f"[{100 * (mean - half):.1f},",
                                    f"{100 * (mean + half):.1f}]"]


def test_ctrl_c_keeps_the_finished_runs(tmp_path, capsys, monkeypatch):
    store, out = tmp_path / "store", tmp_path / "r.json"
    argv = ["transfer", "--modes", "frozen", "finetune", "--labels", "1", "--seeds", "0", "--steps", "5",
            "--store", str(store), "--out", str(out)]
    stop = Stop()

    def press_ctrl_c(n: int) -> None:
        if n == 2:  # as the second run starts: what the signal handler does with the first Ctrl-C
            stop.handle(signal.SIGINT, None)

    counting_fit(monkeypatch, press_ctrl_c)
    with pytest.raises(Interrupted) as info:
        run(argv, stop)
    assert info.value.signum == signal.SIGINT
    assert info.value.kept == (f"transfer cancelled; 1 of 2 runs finished and kept in {store} (the same command "
                               f"trains only the rest); {out} not created")
    assert not out.exists()
    source = load_checkpoint(ROOT / "checkpoints" / "transfer" / "digits04_resnet20.pt")
    kept = [s.settings["setup"] for s in RunStore(store).sweeps_of(net_key(source)) if s.kind == "transfer"]
    assert kept == [{"copied": 3, "frozen": 3, "bn": "update", "norm": "source"}]
    monkeypatch.undo()
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 run trained, 1 found in the store" in capsys.readouterr().out and out.exists()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A torchvision-format resnet18 state_dict (3 channels, a 1000-class head)."""
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(deterministic_state_dict({k: tuple(s) for k, s in MANIFEST["resnet18"]}), path)
    return path


BAD = [
    (["--modes", "scratch", "nope"], "--modes nope: unknown transfer mode; choose from scratch, frozen"),
    (["--modes", "last_k", "--k", "4"], "--k 4: digits04_resnet20 (cifar_resnet20) has 3 stages; k must be between 0 "
                                        "and 3"),
    (["--modes", "first_k_frozen", "--k", "-1"], "k must be between 0 and 3"),
    (["--k", "1"], "--k is for the modes last_k, first_k_frozen, first_k_finetuned"),
    (["--labels", "1", "137"], "class '8' has 130 training images, fewer than the 137 labelled images per class"),
    (["--labels", "0"], "--labels 0: give whole numbers"),
    (["--labels", "few"], "--labels few: give whole numbers"),
    # a 1-D source brings its own embedded target (MNIST-1D 5-9): only images given as the target are refused
    (["--source", "mnist1d_resnet20", "--target-path", "FOLDER", "--size", "16", "--resize", "16"],
     "the source net is 1-D and the target data 2-D"),
    (["--source", "RESNET18"], "takes 3-channel inputs, the target has 1: its first conv cannot take them; the head "
                               "would adapt (the source's 1000-class head is replaced with a new 5-way linear head"),
    (["--source", "no_such_net.pt"], "no_such_net.pt: no such checkpoint file or shipped name"),
    (["--source", ""], "--source '': give a .pt/.pth file or a shipped name"),
    (["--out", "OUT/r.txt"], ".json or .csv"),
    (["--steps", "0"], "--steps must be between 1"),
    (["--batch-size", "0"], "--batch-size must be between 1"),
    (["--lr", "0"], "learning rate"),
    (["--seeds", "-1"], "--seeds must be between 0"),
    (["--device", "tpu"], "device"),
    (["--default-setups", "--modes", "scratch"], "not allowed with argument"),
    (["--default-setups", "--norm", "none"], "--default-setups brings its own"),
    (["--bn", "sometimes"], "invalid choice: 'sometimes'"),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_before_any_training(argv, words, tmp_path, capsys, monkeypatch, resnet18_file):
    calls = counting_fit(monkeypatch)
    out = tmp_path / "r.json"
    folder = str(_folder(tmp_path / "imgs", 2)) if "FOLDER" in argv else ""
    argv = [str(resnet18_file) if a == "RESNET18" else folder if a == "FOLDER" else a.replace("OUT", str(tmp_path))
            for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert main(["transfer", "--store", str(tmp_path / "s"), *argv]) == 2
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], cap.err
    assert "Traceback" not in cap.err and calls["fit"] == 0 and not out.exists()
    assert cap.out == "" and "run/s" not in cap.err  # refused before the plan was announced or its bar drawn


_folder = image_folder  # 40 px RGB noise, one brightness per class


def test_an_imagefolder_target_with_a_torchvision_style_source(tmp_path, capsys):
    """A bare 3-channel ImageNet-stem state_dict (no metadata, so ImageNet statistics: what torchvision
    weights expect) on a local ImageFolder target: its 1000-class head replaced, the runs trained."""
    from analysis.arch.models import build_model
    from analysis.arch.specs import custom_spec

    spec = custom_spec(block="basic", layers=(1, 1), widths=(8, 16), num_classes=1000, input_size=32)
    src = tmp_path / "tv_like.pth"
    torch.save(build_model(spec).state_dict(), src)
    folder = _folder(tmp_path / "tiny", 3)
    out = tmp_path / "r.json"
    assert main(["transfer", "--source", str(src), "--target-path", str(folder), "--size", "32", "--resize", "36",
                 "--labels", "1", "all", "--seeds", "0", "--steps", "3", "--store", str(tmp_path / "store"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the source's 1000-class head is replaced with a new 3-way linear head" in printed
    assert "6 runs trained" in printed
    ck = load_checkpoint(src)
    assert T.source_statistics(ck).mean == (0.485, 0.456, 0.406)  # ImageNet's, for a bare ImageNet net
    res = T.load_results(str(out))
    assert len(res.results) == 6 and set(res.results["status"]) == {"complete"}


def test_a_one_class_imagefolder_target_is_one_line(tmp_path, capsys):
    from analysis.arch.models import build_model
    from analysis.arch.specs import custom_spec

    spec = custom_spec(block="basic", layers=(1, 1), widths=(8, 16), num_classes=10, input_size=32)
    src = tmp_path / "src.pth"
    torch.save(build_model(spec).state_dict(), src)
    folder = _folder(tmp_path / "one", 1)
    assert main(["transfer", "--source", str(src), "--target-path", str(folder), "--size", "32", "--labels", "1",
                 "--seeds", "0", "--steps", "2", "--store", str(tmp_path / "store")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 class" in err[0], err


def test_kept_nets_open_anywhere_and_reproduce_their_numbers(tmp_path, capsys):
    """--keep-dir saves each net trained now: a checkpoint with the target's 5-way head whose metadata
    rebuilds its test data (digits 5-9, the normalisation its inputs had), giving the recorded accuracy."""
    from analysis.experiments.train import evaluate
    from analysis.store.checkpoints import dataset_for

    kept = tmp_path / "kept"
    assert main(["transfer", "--modes", "finetune", "--labels", "5", "--seeds", "0", "--steps", "4",
                 "--store", str(tmp_path / "store"), "--keep-dir", str(kept)]) == 0
    (path,) = sorted(kept.glob("*.pt"))
    # the source's architecture and a few digits of its weights: two sources of one architecture stay apart
    tag = net_key(load_checkpoint(ROOT / "checkpoints" / "transfer" / "digits04_resnet20.pt"))[:6]
    assert path.name == f"cifar_resnet20-{tag}_to_digits16_fine_tune_everything_5pc_seed0.pt"
    ck = load_checkpoint(path)
    assert ck.spec.num_classes == 5 and ck.meta.dataset.name == "digits16[5,6,7,8,9]" and ck.meta.dataset.train == 25
    data = dataset_for(ck.meta)
    assert evaluate(ck.model, data.x_test, data.y_test)["acc"] == ck.meta.final["test_acc"]


def test_a_1d_source_runs_on_mnist1d_and_its_kept_nets_reproduce_their_numbers(tmp_path, capsys):
    """The shipped 1-D source (resnet1d_20 on MNIST-1D's classes 0-4) is compared on classes 5-9;
    a kept net's metadata rebuilds that class subset, giving its recorded accuracy."""
    from analysis.experiments.train import evaluate
    from analysis.store.checkpoints import dataset_for

    kept = tmp_path / "kept"
    assert main(["transfer", "--source", "mnist1d04_resnet1d20", "--modes", "frozen", "--labels", "5", "--seeds", "0",
                 "--steps", "4", "--store", str(tmp_path / "store"), "--keep-dir", str(kept)]) == 0
    printed = capsys.readouterr().out
    assert "target mnist1d[5,6,7,8,9]: 493 test images; 1 run of 4 SGD steps" in printed
    (path,) = sorted(kept.glob("*.pt"))
    ck = load_checkpoint(path)
    assert ck.meta.dataset.name == "mnist1d[5,6,7,8,9]" and ck.spec.dims == 1 and ck.spec.num_classes == 5
    data = dataset_for(ck.meta)
    assert len(data.y_test) == 493
    assert evaluate(ck.model, data.x_test, data.y_test)["acc"] == ck.meta.final["test_acc"]
