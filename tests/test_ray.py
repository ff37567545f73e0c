"""The experiment grid on Ray (issue 15): the same numbers as in this process, progress and cancel,
faults (a worker killed mid-grid, the driver interrupted) on a two-node cluster simulated on this
machine, every node on 127.0.0.1, the CLI's and the page's executor choice.

One cluster for the whole module (starting one costs seconds); the tests run in one xdist worker
(group 'ray'), so the other worker never competes with a second cluster."""

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.cli.main import main
from analysis.core.errors import ConfigError, LensError
from analysis.core.meta import TrainConfig
from analysis.run import cluster
from analysis.run.executor import DataSpec, InProcessExecutor, make_executor
from analysis.run.ray_executor import RayExecutor
from analysis.store.checkpoints import load_checkpoint
from analysis.store.runstore import RunStore
from analysis.studies import grid as g
from tests.test_grid import start_grid_and_wait_for_a_run

pytestmark = pytest.mark.xdist_group("ray")

ROOT = Path(__file__).resolve().parent.parent
TINY = DataSpec(size=8, train_images=128)
SLOWER = DataSpec(size=16, train_images=512)  # about a second per run: long enough to be hit mid-run


def grid_of(variants, data=TINY, epochs=1, seeds=(0,)) -> g.Grid:
    return g.Grid(tuple(variants), depths=(8,), seeds=tuple(seeds),
                  recipe=TrainConfig(epochs=epochs, batch_size=64, warmup_epochs=0), data=data)


@pytest.fixture(scope="module")
def ray_cluster():
    conn = cluster.local_cluster(nodes=2, cpus_per_node=1)
    yield conn
    conn.close()


def in_process(grid: g.Grid) -> dict[str, bytes]:
    """Each run's checkpoint trained here with one thread (the reference numbers)."""
    ex = InProcessExecutor(threads=1)
    for r in grid.runs():
        ex.submit(r.task())
    return {res.key: res.checkpoint for res in ex.results()}


def assert_same_run(a_bytes: bytes, b_path: Path) -> None:
    a, b = load_checkpoint(a_bytes), load_checkpoint(b_path)
    assert a.meta.content_sha256 == b.meta.content_sha256  # identical weights, bit for bit
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in ck.meta.history] for ck in (a, b)]
    assert timeless[0] == timeless[1] and timeless[0]


def stored(store: RunStore) -> set[str]:
    return {r.key for r in store.runs()}


def _square(x: int) -> int:
    if x < 0:
        raise ConfigError(f"negative: {x}")
    if x == 0:
        time.sleep(0.5)  # the first item finishes after the others: results still come in the items' order
    return x * x


def _block_or_fail(arg: str) -> int:
    """A path: write this worker's pid there and block for a minute. 'fail:PATH': wait until PATH has
    a pid in it (the other task is running), then raise our error (map_tasks then cancels the other)."""
    if arg.startswith("fail:"):
        path = Path(arg.removeprefix("fail:"))
        while not (path.exists() and path.read_text()):
            time.sleep(0.05)
        raise ConfigError("stop")
    Path(arg).write_text(str(os.getpid()))
    time.sleep(60)
    return 0


def _wait_dead(pids: list[int], seconds: float = 30) -> list[int]:
    """The pids still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "(Z)" not in _proc_state(p)]
    return alive


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:4]
    except OSError:
        return "(Z)"


# ------------------------------------------------------------------ no cluster needed
def test_addresses_are_checked_before_anything_starts(monkeypatch):
    assert cluster.check_address(None) is None and cluster.check_address("local") is None
    for ok in ("auto", "ray://head.example:10001", "10.0.0.5:6379", "ray://127.0.0.1:10001"):
        assert cluster.check_address(ok) == ok
    for bad in ("nope", "ray://head", "head:0", "head:65536", "http://head:10001", "ray://:10001"):
        with pytest.raises(ConfigError, match="'auto', 'ray://host:port'"):
            cluster.check_address(bad)
    monkeypatch.setenv(cluster.ADDRESS_ENV, " ")
    assert cluster.address_from_env() is None
    monkeypatch.setenv(cluster.ADDRESS_ENV, "ray://head:10001")
    assert cluster.address_from_env() == "ray://head:10001"
    monkeypatch.setenv(cluster.ADDRESS_ENV, "head")
    with pytest.raises(ConfigError, match=r"\$RESNET_LENS_RAY_ADDRESS"):
        cluster.address_from_env()
    # nobody listens on port 1: said in seconds (not after Ray's minutes of retries), even when connected
    with pytest.raises(ConfigError, match="127.0.0.1:1 is unreachable"):
        cluster.connect("127.0.0.1:1")
    with pytest.raises(ConfigError, match="size a local Ray instance"):
        cluster.connect("auto", num_cpus=2)


def test_an_address_where_something_else_answers_is_said_in_seconds(tmp_path, capsys):
    """Issue 28, item 5: a grid pointed at an HTTP server ran 823 s before it gave up."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request log on the test's stderr
            pass

    web = http.server.HTTPServer((cluster.LOOPBACK, 0), Quiet)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind((cluster.LOOPBACK, 0))
    silent.listen()
    chatty = socket.socket()
    chatty.bind((cluster.LOOPBACK, 0))
    chatty.listen()

    def garbage() -> None:
        conn, _ = chatty.accept()
        conn.sendall(b"\x16\x03\x01garbage-not-grpc")
        time.sleep(1)
        conn.close()
    threading.Thread(target=garbage, daemon=True).start()
    try:
        cases = [(web.server_address[1], "an HTTP server answered, not a Ray cluster"),
                 (silent.getsockname()[1], "accepted the connection but did not answer in 5 s"),
                 (chatty.getsockname()[1], "something that is not Ray")]
        for port, said in cases:
            t = time.monotonic()
            with pytest.raises(ConfigError, match=said):
                cluster.connect(f"{cluster.LOOPBACK}:{port}")
            assert time.monotonic() - t < cluster.CONNECT_TIMEOUT_S + 3
        t = time.monotonic()
        rc = main(["grid", "--variants", "original", "--depths", "8", "--seeds", "1", "--executor", "ray",
                   "--address", f"{cluster.LOOPBACK}:{web.server_address[1]}", "--store", str(tmp_path / "s"),
                   "--out", str(tmp_path / "g.json")])
        assert rc == 2 and "an HTTP server answered" in capsys.readouterr().err
        assert time.monotonic() - t < 30
    finally:
        web.shutdown()
        silent.close()
        chatty.close()


def test_without_ray_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"Ray is not installed: pip install '\.\[ray\]'"):
        cluster.connect()
    with pytest.raises(ConfigError, match="Ray is not installed"):
        make_executor(2, kind="ray")


def test_executor_choices_are_checked(tmp_path, capsys):
    with pytest.raises(ConfigError, match="one run at a time"):
        make_executor(2, kind="local")
    with pytest.raises(ConfigError, match="for the ray executor"):
        make_executor(2, kind="pool", address="auto")
    with pytest.raises(ConfigError, match="choose one of local, pool, ray"):
        make_executor(2, kind="dask")
    assert type(make_executor(None, kind="local")).__name__ == "InProcessExecutor"
    base = ["grid", "--variants", "original", "--depths", "8", "--seeds", "1", "--store", str(tmp_path / "s")]
    for extra, words in ((["--executor", "local", "--workers", "2"], "needs --executor pool or ray"),
                         (["--address", "auto"], "goes with --executor ray"),
                         (["--executor", "ray", "--address", "head"], "'auto', 'ray://host:port'"),
                         (["--executor", "ray", "--device", "cuda:1"], "give --device cuda"),
                         (["--executor", "dask"], "invalid choice: 'dask'")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert not (tmp_path / "s" / "runs.sqlite").exists()  # refused before the store or Ray was touched


# ------------------------------------------------------------------ the cluster
def test_every_node_is_on_the_loopback_address(ray_cluster):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {cluster.LOOPBACK}
    assert ray_cluster.address.startswith(f"{cluster.LOOPBACK}:")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    again = cluster.connect()  # already connected: reused, and closing it leaves the cluster up
    assert not again.started
    again.close()
    assert ray.is_initialized()


def test_map_tasks_keeps_the_order_and_our_errors(ray_cluster):
    seen: list[int] = []
    assert cluster.map_tasks(_square, list(range(6)), on_result=lambda i, v: seen.append(i)) == [0, 1, 4, 9, 16, 25]
    assert sorted(seen) == list(range(6))
    with pytest.raises(ConfigError, match="negative: -3") as exc:
        cluster.map_tasks(_square, [1, -3])
    assert type(exc.value) is ConfigError  # our error as itself, not Ray's wrapper class around it
    with pytest.raises(ConfigError, match="ask for 1 GPU each; the Ray cluster has 0"):
        cluster.map_tasks(_square, [1], **cluster.task_resources("cuda"))
    assert cluster.task_resources("cpu") == {"num_cpus": 1, "num_gpus": 0}


def test_a_cancelled_task_takes_its_worker_with_it(ray_cluster, tmp_path):
    # Ray's default cancel raises KeyboardInterrupt in the worker and keeps the process; a worker
    # interrupted inside its first `import torch` then fails every later task ("bad call flags"), the
    # suite's old flake. map_tasks (and the executor, below) kill the worker of a cancelled task instead.
    pid_file = tmp_path / "pid"
    with pytest.raises(ConfigError, match="stop"):
        cluster.map_tasks(_block_or_fail, [str(pid_file), f"fail:{pid_file}"], max_retries=0)
    assert _wait_dead([int(pid_file.read_text())]) == []
    assert cluster.map_tasks(_square, [2, 3]) == [4, 9]  # and the cluster runs the next tasks on fresh workers


def test_a_grid_on_ray_gives_the_numbers_of_one_process(ray_cluster, tmp_path):
    grid = grid_of(["original", "dropout_shortcut"])  # dropout: the run's random draws must match too
    events = []
    store = RunStore(tmp_path)
    with RayExecutor(workers=2) as ex:
        assert "2 CPUs, 0 GPUs, at most 2 runs at once" in ex.describe()
        asked: list[dict] = []  # what each run's Ray task asks for (one CPU, no GPU on the CPU)
        remote = ex._remote

        class Spy:
            def options(self, **kw):
                asked.append({k: kw[k] for k in ("num_cpus", "num_gpus", "max_retries")})
                return remote.options(**kw)

        ex._remote = Spy()
        res = g.run_grid(grid, store, ex, progress=lambda p: events.extend(p.running))
        assert asked == [{"num_cpus": 1, "num_gpus": 0, "max_retries": 3}] * 2
        task = grid.runs()[0].task()
        with pytest.raises(ConfigError, match="has no GPU"):  # it would wait for one for ever
            ex.submit(dataclasses.replace(task, recipe={**task.recipe, "device": "cuda"}))
    assert list(res.results["status"]) == ["complete", "complete"] and res.trained == 2
    want = in_process(grid)
    assert set(events) == set(want)  # progress came back from the workers for both runs
    for key, ck in want.items():
        assert_same_run(ck, store.get(key).path)


def test_cancel_stops_a_running_task_at_its_next_batch(ray_cluster):
    long_run, queued = grid_of(["original", "bn_after_add"], epochs=500).runs()
    with RayExecutor(workers=1) as ex:
        ex.submit(long_run.task())
        ex.submit(queued.task())  # held back by the driver (one in flight): never sent
        got = list(ex.results(lambda e: ex.cancel()))
    assert [(r.key, r.status) for r in got] == [(long_run.key, "cancelled")]
    assert got[0].epochs_done < 500 and got[0].checkpoint is None


# ------------------------------------------------------------------ faults
def test_a_worker_killed_mid_run_is_retried_with_the_same_numbers(ray_cluster, tmp_path):
    grid = grid_of(["original", "exclusive_gating"], data=SLOWER, epochs=2)
    store = RunStore(tmp_path)
    killed: dict[str, int] = {}
    with RayExecutor(workers=2) as ex:
        def kill_first_running(p: g.GridProgress) -> None:
            for key in p.running:
                if not killed and key in ex.pids:
                    killed[key] = ex.pids[key]
                    os.kill(killed[key], signal.SIGKILL)

        res = g.run_grid(grid, store, ex, progress=kill_first_running)
        starts = list(ex.starts)
    (key, pid), = killed.items()
    assert list(res.results["status"]) == ["complete", "complete"]
    again = [p for k, p in starts if k == key]
    assert len(again) == 2 and again[0] == pid != again[1]  # started, killed, run again by Ray in a new worker
    for k, ck in in_process(grid).items():  # the retry trained from scratch to the very same weights
        assert_same_run(ck, store.get(k).path)


def test_a_worker_lost_for_good_is_reported_and_the_grid_resumes(ray_cluster, tmp_path):
    grid = grid_of(["original", "exclusive_gating", "bn_after_add"], data=SLOWER)
    first, second, third = (r.key for r in grid.runs())
    store = RunStore(tmp_path)
    with RayExecutor(workers=1, max_retries=0) as ex:  # one at a time: the first finishes, the second is hit
        def kill_the_second(p: g.GridProgress) -> None:
            if second in p.running and second in ex.pids:
                os.kill(ex.pids.pop(second), signal.SIGKILL)

        with pytest.raises(LensError, match="exclusive_gating at depth 8, seed 0: the Ray worker training it was lost and Ray's 0 retries were used up"):
            g.run_grid(grid, store, ex, progress=kill_the_second)
    assert stored(store) == {first}  # what finished is kept
    with RayExecutor(workers=2) as ex:  # the same grid again trains only the rest
        res = g.run_grid(grid, store, ex)
    assert (res.trained, res.reused) == (2, 1) and stored(store) == {first, second, third}
    assert list(res.results["status"]) == ["complete"] * 3


def test_an_interrupted_driver_keeps_every_finished_run(ray_cluster, tmp_path):
    import ray

    grid = grid_of(["original", "exclusive_gating", "bn_after_add"])
    store = RunStore(tmp_path)
    finished: list[str] = []

    def interrupt_after_one(p: g.GridProgress) -> None:
        if p.finished is not None:
            finished.append(p.finished["key"])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), RayExecutor(workers=1) as ex:
        g.run_grid(grid, store, ex, progress=interrupt_after_one)
    assert stored(store) == set(finished) and len(finished) == 1
    # cancel (the page's button, the CLI's first Ctrl-C): the same, and the grid returns
    with RayExecutor(workers=1) as ex:
        res = g.run_grid(grid, store, ex, cancel=lambda: len(stored(store)) >= 2)
    assert res.cancelled and list(res.results["status"]).count("complete") == 2 == len(stored(store))
    # nothing keeps running for a driver that left: runs of minutes, interrupted at their first batch,
    # give both CPUs back
    endless = grid_of(["original", "exclusive_gating"], epochs=20_000)

    workers: list[int] = []

    def interrupt_at_once(p: g.GridProgress) -> None:
        if p.running:
            workers.extend(ex.pids.values())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), RayExecutor(workers=2) as ex:
        g.run_grid(endless, store, ex, progress=interrupt_at_once)
    assert workers and _wait_dead(workers) == []  # killed, not interrupted and kept (see cluster.cancel_task)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2 and len(stored(store)) == 2


def test_sigterm_on_the_cli_with_a_local_ray_instance_keeps_finished_runs(tmp_path):
    # the CLI's default on Ray: its own local instance (127.0.0.1), started and stopped by the command.
    # SIGTERM, not Ctrl-C: ray.init replaces the SIGTERM handler, and the CLI's must still be the one
    proc = start_grid_and_wait_for_a_run(tmp_path / "store", "--executor", "ray", "--workers", "2")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the grid finished before the signal")
    assert "runs train on a local Ray instance at 127.0.0.1:" in out and "2 CPUs, 0 GPUs" in out
    assert proc.returncode == 143 and "Traceback" not in err, err
    # the bars' clearing (blanks, then ESC [A) can precede the line on screen when they close as the signal lands
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", err).splitlines()
    lines = [ln.lstrip() for ln in plain if ln.lstrip().startswith("interrupted:")]
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    kept = len(RunStore(tmp_path / "store").runs())
    assert f"grid cancelled; {kept} of 4 runs finished and kept in" in line and kept >= 1


# ------------------------------------------------------------------ the CLI and the page on the cluster
def test_cli_grid_on_the_cluster_equals_the_local_executor(ray_cluster, tmp_path, capsys):
    base = ["grid", "--variants", "original", "full_preact", "--depths", "8", "--seeds", "1", "--size", "8",
            "--train-images", "128", "--epochs", "1", "--warmup", "0"]
    assert main([*base, "--executor", "ray", "--address", ray_cluster.address, "--workers", "2",
                 "--store", str(tmp_path / "ray"), "--out", str(tmp_path / "ray.json")]) == 0
    assert f"runs train on the Ray cluster at {ray_cluster.address}" in capsys.readouterr().out
    assert main([*base, "--executor", "local", "--store", str(tmp_path / "local"),
                 "--out", str(tmp_path / "local.json")]) == 0
    ray_runs, _, _ = g.load_results(str(tmp_path / "ray.json"))
    local_runs, _, _ = g.load_results(str(tmp_path / "local.json"))
    cols = ["variant", "depth", "seed", "key", "status", "train_error", "test_error", "epochs"]
    assert ray_runs[cols].equals(local_runs[cols])
    for key in local_runs["key"]:
        assert_same_run(RunStore(tmp_path / "local").get(key).path.read_bytes(), RunStore(tmp_path / "ray").get(key).path)


def test_cli_grid_through_a_ray_client_address(ray_cluster, tmp_path):
    # ray://host:port: a Ray Client server (legacy mode: one server, itself a driver of the cluster) on
    # 127.0.0.1, and the CLI in a process of its own (this one is a driver already)
    with socket.socket() as s:
        s.bind((cluster.LOOPBACK, 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    server = subprocess.Popen([sys.executable, "-m", "ray.util.client.server", "--host", cluster.LOOPBACK,
                               "--port", str(port), "--mode", "legacy", "--address", ray_cluster.address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((cluster.LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        grid = grid_of(["full_preact"])
        cmd = [sys.executable, "-m", "analysis", "grid", "--variants", "full_preact", "--depths", "8",
               "--seeds", "1", "--size", "8", "--train-images", "128", "--epochs", "1", "--warmup", "0",
               "--batch-size", "64", "--executor", "ray", "--address", f"ray://{cluster.LOOPBACK}:{port}",
               "--store", str(tmp_path / "store")]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    # the client's runs went to the module's cluster (its GCS address), not to an instance of its own
    assert f"runs train on the Ray cluster at {ray_cluster.address}:" in done.stdout
    assert "1 runs trained" in done.stdout
    store = RunStore(tmp_path / "store")
    for key, ck in in_process(grid).items():
        assert_same_run(ck, store.get(key).path)


def test_the_page_trains_on_the_configured_cluster(ray_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv(cluster.ADDRESS_ENV, ray_cluster.address)
    monkeypatch.setenv("RESNET_LENS_HOME", str(tmp_path))
    from ui import cache

    on_ray: list[str] = []
    real_submit = RayExecutor.submit

    def submit(self, task):
        on_ray.append(task.key)
        real_submit(self, task)

    monkeypatch.setattr(RayExecutor, "submit", submit)
    cache.run_store.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "variants.py"), default_timeout=240).run()
    where = at.radio(key="variants_executor")
    assert where.options == ["This server", "Ray cluster"] and where.value == "here"
    assert ray_cluster.address in " ".join(c.value for c in at.caption)
    at.multiselect(key="variants_variants").set_value(["original"])
    at.select_slider(key="variants_size").set_value(8)
    at.number_input(key="variants_seeds").set_value(1)
    at.number_input(key="variants_epochs").set_value(1)
    where.set_value("ray")
    at.run()
    at.button(key="variants_run").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    (run,) = RunStore(tmp_path).runs()
    grid = g.Grid(("original",), (8,), (0,), TrainConfig(epochs=1), DataSpec("digits", 8))
    assert run.key == grid.runs()[0].key and on_ray == [run.key]  # trained by a Ray task
    assert_same_run(in_process(grid)[run.key], run.path)
    cache.run_store.clear()


def test_a_tls_cluster_is_not_probed_in_plaintext(monkeypatch):
    """Review finding: a cluster with RAY_USE_TLS answers the plaintext gRPC opening with an alert."""
    import threading

    srv = socket.socket()
    srv.bind((cluster.LOOPBACK, 0))
    srv.listen()

    def alert() -> None:
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:  # the test closed the socket after its last connection: nothing more to answer
                return
            conn.settimeout(2)
            with contextlib.suppress(OSError):  # as a TLS server does: read the client's opening, answer, close
                conn.recv(64)
                conn.sendall(b"\x15\x03\x03\x00\x02\x02\x46")
                time.sleep(0.5)
            conn.close()
    threading.Thread(target=alert, daemon=True).start()
    address = f"{cluster.LOOPBACK}:{srv.getsockname()[1]}"
    try:
        with pytest.raises(ConfigError, match="a TLS server answered; if the cluster uses TLS, set RAY_USE_TLS=1"):
            cluster._reachable(address)
        monkeypatch.setenv("RAY_USE_TLS", "1")
        cluster._reachable(address)  # TCP only: Ray's own TLS handshake decides
    finally:
        srv.close()
