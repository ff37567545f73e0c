"""The command line refuses meaningless settings before any work (issue 10, item 4) and never loses
work or leaves debris on a bad output path, a full disk, SIGINT or SIGTERM (item 7)."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.cli.common import Interrupted, Stop
from analysis.cli.main import main, run
from analysis.core.errors import CheckpointError, ConfigError, LensError
from analysis.core.io import atomic_write, check_writable
from analysis.store.checkpoints import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "1"]  # if a check is missing: seconds, not minutes


def one_error_line(capsys) -> str:
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.err and "epoch " not in cap.out  # refused before training
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ item 4: every number checked first
KEYWORD = {"--lr": "learning rate", "--weight-decay": "weight decay", "--momentum": "momentum", "--epochs": "epochs",
           "--batch-size": "batch size", "--warmup": "warm-up", "--seed": "seed", "--device": "device",
           "--size": "--size", "--split-seed": "--split-seed", "--data-path": "--data-path"}


@pytest.mark.parametrize("bad", [
    ["--lr", "nan"], ["--lr", "inf"], ["--lr", "1e30"], ["--lr", "0"], ["--lr", "-0.1"], ["--lr", "10.5"],
    ["--weight-decay", "nan"], ["--weight-decay", "inf"], ["--weight-decay", "-1e-4"], ["--weight-decay", "2"],
    ["--momentum", "nan"], ["--momentum", "1"], ["--momentum", "-0.5"],
    ["--epochs", "0"], ["--epochs", "-3"], ["--batch-size", "0"], ["--batch-size", "-1"],
    ["--warmup", "-1"], ["--warmup", "2"], ["--seed", "-1"], ["--seed", str(2**63)],
    ["--device", "gpu"], ["--device", "cuda:x"], ["--device", ""],
    ["--size", "0"], ["--size", "-8"], ["--split-seed", "-1"], ["--data-path", "/tmp"],
    ["--lr", "fast"], ["--epochs", "1.5"],
])
def test_train_refuses_meaningless_numbers_before_any_work(tmp_path, capsys, bad):
    out = tmp_path / "r.pt"
    assert main([*TINY, *bad, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert KEYWORD[bad[0]] in line or f"argument {bad[0]}" in line, line
    assert not out.exists()


def test_run_raises_and_main_prints(tmp_path, capsys):
    with pytest.raises(ConfigError, match="learning rate"):
        run([*TINY, "--lr", "nan", "--out", str(tmp_path / "r.pt")])
    with pytest.raises(LensError, match=r"--lr: 'x' is not a number"):  # usage errors are LensErrors for run()
        run([*TINY, "--lr", "x", "--out", str(tmp_path / "r.pt")])
    assert main([*TINY, "--out", str(tmp_path / "r.pt"), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in one_error_line(capsys)


@pytest.mark.parametrize("bad", [
    ["--batch-size", "-1"], ["--batch-size", "0"], ["--samples", "0"], ["--samples", "-1"],
    ["--experiment", "k", "--samples", "0"], ["--seed", "-1"], ["--seed", str(2**64)],
    ["--size", "0"], ["--max-per-class", "0"], ["--resize", "0"], ["--resize", "-256"],
    ["--device", "gpu"], ["--split-seed", "-2"],
])
def test_lesion_refuses_meaningless_numbers_before_loading(tmp_path, capsys, bad):
    out = tmp_path / "l.csv"
    # the checkpoint does not exist: the option must be refused first, without reading it
    assert main(["lesion", "--checkpoint", str(tmp_path / "missing.pt"), *bad, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "missing.pt" not in line, line
    assert main(["lesion", "--checkpoint", "digits_resnet20", *bad, "--out", str(out)]) == 2
    one_error_line(capsys)
    assert not out.exists()


def test_divergence_stops_with_a_clear_error_and_saves_nothing(tmp_path, capsys):
    """lr 10, momentum 0.99, weight decay 1 are each in range but blow up together: the run stops
    at the first non-finite loss or weight instead of saving a checkpoint full of NaNs. Which shows
    first depends on the float order of the thread count (one xdist thread or all cores): a NaN loss
    at some step, or weights broken by an epoch's last step before any loss shows it."""
    out = tmp_path / "nan.pt"
    rc = main([*TINY, "--epochs", "2", "--lr", "10", "--momentum", "0.99", "--weight-decay", "1", "--warmup", "0",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "training diverged, lower the learning rate" in err
    assert re.search(r"loss became (NaN|inf|-inf) at epoch \d+ step \d+|the weights or BatchNorm statistics became "
                     r"non-finite at epoch \d+", err), err
    assert not out.exists() and not leftovers(tmp_path)


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    model = build_model(get_spec("cifar_resnet8"))
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_checkpoint(tmp_path / "x.pt", model)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ item 7: outputs checked first
def bad_outputs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "deeper")
    return {"empty": "", "blank": "  ", "directory": str(tmp_path / "a_dir"), "cwd": ".",
            "under a file": str(tmp_path / "a_file" / "x.pt"), "deep under a file": str(tmp_path / "a_file" / "d" / "x"),
            "unwritable": "/proc/resnet_lens_x.pt", "too long": str(tmp_path / ("x" * 300)),
            "broken link parent": str(tmp_path / "dangling" / "x.pt")}


def test_check_writable(tmp_path):
    for what, path in bad_outputs(tmp_path).items():
        with pytest.raises(ConfigError) as info:
            check_writable(path, what="--out")
        assert str(info.value).strip(), what
    assert check_writable(tmp_path / "new" / "deeper" / "x.pt") == tmp_path / "new" / "deeper" / "x.pt"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file", "dangling"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="ro"):
        check_writable(ro / "x.pt")


@pytest.mark.parametrize("cmd", ["train", "lesion"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, cmd):
    for what, path in bad_outputs(tmp_path).items():
        argv = TINY if cmd == "train" else ["lesion", "--checkpoint", "digits_resnet20"]
        t0 = time.perf_counter()
        assert main([*argv, "--out", path]) == 2, what
        line = one_error_line(capsys)
        assert "--out" in line or path.strip() in line, (what, line)
        assert time.perf_counter() - t0 < 5, what
    assert not leftovers(tmp_path)


def test_lesion_out_must_not_be_the_checkpoint(tmp_path, capsys):
    ck = tmp_path / "net.pt"
    ck.write_bytes((ROOT / "checkpoints" / "digits_resnet20.pt").read_bytes())
    assert main(["lesion", "--checkpoint", str(ck), "--out", str(ck)]) == 2
    assert "is the checkpoint itself" in one_error_line(capsys)
    load_checkpoint(ck)


def test_lesion_csv_is_written_atomically(tmp_path, capsys, monkeypatch):
    """A full disk while writing leaves the previous CSV whole, and no temp file."""
    out = tmp_path / "single.csv"
    out.write_text("a good,previous,csv\n")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_text() == "a good,previous,csv\n" and not leftovers(tmp_path)
    monkeypatch.undo()
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 11 and not leftovers(tmp_path)


# ------------------------------------------------------------------ atomic_write itself
@pytest.mark.parametrize("exc", [ValueError("boom"), KeyboardInterrupt(), SystemExit(3), Interrupted(15)])
def test_atomic_write_cleans_up_on_any_exception(tmp_path, exc):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def writer(f):
        f.write(b"partial" * 1000)
        raise exc

    with pytest.raises(type(exc)):
        atomic_write(target, writer)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_write_os_error_is_a_config_error_with_cause(tmp_path):
    def writer(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(ConfigError, match="No space left") as info:
        atomic_write(tmp_path / "f", writer)
    assert isinstance(info.value.__cause__, OSError) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_of_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.csv", b"x,y\n")
        save_checkpoint(tmp_path / "c.pt", build_model(get_spec("cifar_resnet8")))
    finally:
        os.umask(old)
    for name in ("a.csv", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_atomic_write_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "new" / "f.txt"
    assert atomic_write(target, b"one") == target
    atomic_write(target, lambda f: f.write(b"two"))
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["f.txt"]


def test_stop_defers_the_first_signal_while_training():
    stop = Stop(defer=True)
    stop.handle(signal.SIGTERM, None)  # only asks the loop to stop
    assert stop.signum == signal.SIGTERM
    with pytest.raises(Interrupted) as info:
        stop.handle(signal.SIGINT, None)  # a second signal stops at once
    assert info.value.signum == signal.SIGINT
    with pytest.raises(Interrupted):
        Stop().handle(signal.SIGTERM, None)  # outside training: at once


# ------------------------------------------------------------------ real signals, real processes
def spawn(args: list[str], cwd: Path, script: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", script] if script else [sys.executable, "-m", "analysis", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(proc: subprocess.Popen, stream: str, text: str, timeout: float = 180) -> tuple[str, str]:
    """Read both pipes (so neither fills up) until ``text`` appears in ``stream``; returns what was
    read so far as (stdout, stderr). stderr holds tqdm's \\r-separated bar."""
    import selectors

    got = {"stdout": b"", "stderr": b""}
    sel = selectors.DefaultSelector()
    for name in got:
        sel.register(getattr(proc, name), selectors.EVENT_READ, name)
    t0 = time.monotonic()
    while text.encode() not in got[stream]:
        if time.monotonic() - t0 > timeout or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"{text!r} never appeared in {stream}: {got[stream][-2000:]!r}")
        for key, _ in sel.select(timeout=1):
            got[key.data] += os.read(key.fileobj.fileno(), 65536)
    sel.close()
    return got["stdout"].decode(errors="replace"), got["stderr"].decode(errors="replace")


def finish(proc: subprocess.Popen, sig: int, earlier: tuple[str, str] = ("", "")) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, earlier[0] + out.decode(errors="replace"), earlier[1] + err.decode(errors="replace")


def interrupted_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "interrupted:" in ln]
    assert len(lines) == 1, err[-3000:]
    return lines[0][lines[0].index("interrupted:"):]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_keeps_the_finished_epochs(tmp_path, sig, code):
    out = tmp_path / "run.pt"
    proc = spawn(["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "50", "--out", str(out)], tmp_path)
    seen = wait_for(proc, "stdout", "epoch   1")
    rc, stdout, err = finish(proc, sig, seen)
    assert rc == code, err[-2000:]
    line = interrupted_line(err)
    assert "saved to" in line and "cancelled checkpoint" in line and str(out) in line, line
    assert not leftovers(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]
    ck = load_checkpoint(out)
    assert ck.meta.status == "cancelled" and 1 <= len(ck.meta.history) < 50
    assert ck.meta.final == ck.meta.history[-1] and "saved " not in stdout  # no "saved <path>" line
    assert all(bool(torch.isfinite(v).all()) for v in ck.model.state_dict().values() if v.is_floating_point())


def test_signal_before_the_first_epoch_saves_nothing(tmp_path):
    out = tmp_path / "run.pt"
    proc = spawn(["train", "--model", "cifar_resnet20", "--size", "32", "--epochs", "5", "--batch-size", "16",
                  "--out", str(out)], tmp_path)
    seen = wait_for(proc, "stderr", "epoch=1/5")
    rc, _, err = finish(proc, signal.SIGINT, seen)
    assert rc == 130
    line = interrupted_line(err)
    assert "before any epoch finished" in line and "not created" in line, line
    assert not list(tmp_path.iterdir())


SLOW_SAVE = textwrap.dedent("""
    import sys, time, torch
    from analysis.cli.main import main
    real_save = torch.save

    def slow_save(obj, f, *a, **k):  # write the whole payload, then hang before the rename
        real_save(obj, f, *a, **k)
        f.flush()
        print("writing", flush=True)
        time.sleep(120)

    torch.save = slow_save
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])
def test_signal_during_save_leaves_the_old_file_and_no_temp(tmp_path, sig, code):
    out = tmp_path / "run.pt"
    out.write_bytes(b"previous checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *TINY, "--out", str(out)], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = wait_for(proc, "stdout", "writing")
    assert leftovers(tmp_path)  # the temp file exists while the save hangs
    rc, _, err = finish(proc, sig, seen)
    assert rc == code
    assert interrupted_line(err) == f"interrupted: no checkpoint written; {out} unchanged"
    assert out.read_bytes() == b"previous checkpoint" and not leftovers(tmp_path)


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from analysis.cli.common import Stop, signal_handlers
    from analysis.core.io import atomic_write

    def slow(f):
        f.write(b"x" * 1_000_000)
        f.flush()
        print("writing", flush=True)
        time.sleep(120)

    with signal_handlers(Stop()):
        try:
            atomic_write(sys.argv[1], slow)
        except KeyboardInterrupt as exc:
            print(type(exc).__name__, flush=True)
            sys.exit(7)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_atomic_write_killed_mid_write(tmp_path, sig):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = wait_for(proc, "stdout", "writing", timeout=60)
    assert len(leftovers(tmp_path)) == 1
    rc, out, err = finish(proc, sig, seen)
    assert rc == 7 and "Interrupted" in out, err
    assert target.read_bytes() == b"old" and not leftovers(tmp_path)


def test_signal_during_lesion_sweep_keeps_the_old_csv(tmp_path):
    out = tmp_path / "k.csv"
    out.write_text("previous\n")
    proc = spawn(["lesion", "--checkpoint", "digits_resnet56", "--experiment", "k", "--samples", "500",
                  "--out", str(out)], tmp_path)
    seen = wait_for(proc, "stderr", "k sweep")
    rc, _, err = finish(proc, signal.SIGTERM, seen)
    assert rc == 143
    assert interrupted_line(err) == f"interrupted: no CSV written; {out} unchanged"
    assert out.read_text() == "previous\n" and not leftovers(tmp_path)


# ------------------------------------------------------------------ bare state_dicts: --plain / --residual, --size
@pytest.fixture
def bare_cifar_net(tmp_path):
    """A bare state_dict of a CIFAR ResNet-8 with option-A shortcuts (no projection weights: it
    could as well be the plain twin) and a two-class ImageFolder to evaluate it on."""
    from PIL import Image

    spec = get_spec("cifar_resnet8").replace(in_channels=3, num_classes=2, input_size=16)
    torch.manual_seed(0)
    path = tmp_path / "bare.pth"
    torch.save(build_model(spec).state_dict(), path)
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20 + i, 18), colour).save(tmp_path / "imgs" / c / f"{i}.png")
    return path, tmp_path / "imgs"


def test_lesion_bare_state_dict_needs_plain_or_residual(tmp_path, capsys, bare_cifar_net):
    ck, imgs = bare_cifar_net
    base = ["lesion", "--checkpoint", str(ck), "--data", "imagefolder", "--data-path", str(imgs), "--size", "16"]
    out = tmp_path / "l.csv"
    assert main([*base, "--out", str(out)]) == 2
    assert "--plain or --residual" in one_error_line(capsys) and not out.exists()
    assert main([*base, "--residual", "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 1 + 3 and ",pad," in rows[2 + 1]  # layer2.0 keeps its zero-padding shortcut
    assert main([*base, "--plain", "--out", str(out)]) == 0
    assert ",none," in out.read_text().splitlines()[2]
    capsys.readouterr()
    assert main([*base, "--plain", "--residual", "--out", str(out)]) == 2
    assert "not allowed with" in one_error_line(capsys)


def test_lesion_size_is_the_input_size_of_a_bare_state_dict(tmp_path, capsys, bare_cifar_net):
    ck, imgs = bare_cifar_net
    base = ["lesion", "--checkpoint", str(ck), "--data", "imagefolder", "--data-path", str(imgs), "--residual"]
    assert main([*base, "--size", "0", "--out", str(tmp_path / "l.csv")]) == 2
    assert "--size must be between 1 and 4,096, got 0" in one_error_line(capsys)
    assert main([*base, "--size", "8", "--out", str(tmp_path / "l.csv")]) == 0


def test_lesion_size_must_match_a_digits_checkpoint(tmp_path, capsys):
    assert main(["lesion", "--checkpoint", "digits_resnet20", "--size", "8", "--out", str(tmp_path / "l.csv")]) == 2
    assert "trained on 16 px" in one_error_line(capsys)


# ------------------------------------------------------------------ numbers and names in ASCII only (issue 27)
@pytest.mark.parametrize("args,message", [
    (["--epochs", "١٢"], r"--epochs: '١٢' is not a whole number \(digits 0-9\)"),  # int() reads it as 12
    (["--epochs", "1_0"], r"--epochs: '1_0' is not a whole number"),
    (["--lr", "٠.١"], r"--lr: '٠.١' is not a number"),  # float() reads it as 0.1
    (["--classes", "²,1"], r"--classes must be distinct digits"),  # '²'.isdigit() is True; int('²') raises
    (["--classes", "٠,١"], r"--classes must be distinct digits"),
])
def test_numbers_are_ascii_digits_or_refused(tmp_path, args, message):
    with pytest.raises(LensError, match=message):
        run([*TINY, *args, "--out", str(tmp_path / "r.pt")])
    assert not (tmp_path / "r.pt").exists()


def test_a_variant_named_twice_in_a_combination_is_refused(tmp_path, capsys):
    rc = main(["grid", "--variants", "original+original", "--depths", "8", "--seeds", "1", "--epochs", "1",
               "--store", str(tmp_path / "s"), "--out", str(tmp_path / "g.json")])
    assert rc == 2 and "original named more than once" in one_error_line(capsys)
    assert not (tmp_path / "s").exists()  # refused before the store was made or anything trained


@pytest.mark.parametrize("address", ["1.2.3.4.5:80", "999.1.1.1:6379", "host.:80", "a..b:80", "a-:80", "h:0080"])
@pytest.mark.parametrize("command", ["grid", "paths"])
def test_malformed_ray_addresses_are_refused_before_any_work(tmp_path, capsys, address, command):
    extra = (["--variants", "original", "--depths", "8", "--seeds", "1", "--store", str(tmp_path / "s")]
             if command == "grid" else ["--checkpoint", "digits_resnet20"])
    rc = main([command, *extra, "--executor", "ray", "--address", address, "--out", str(tmp_path / "o.csv")])
    assert rc == 2 and f"Ray address {address!r}" in one_error_line(capsys)
    assert not (tmp_path / "o.csv").exists()


def test_transfer_keep_dir_is_checked_before_any_run(tmp_path, capsys):
    """Issue 28, item 9: a --keep-dir that cannot hold files was found only after the first run trained."""
    (tmp_path / "afile").write_text("x")
    rc = main(["transfer", "--keep-dir", str(tmp_path / "afile"), "--store", str(tmp_path / "s"),
               "--out", str(tmp_path / "t.json")])
    line = one_error_line(capsys)
    assert rc == 2 and "--keep-dir" in line and "exists and is not a folder" in line, line
    assert not (tmp_path / "s").exists()  # nothing trained, no store made
