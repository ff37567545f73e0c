"""Sharded evaluation (analysis/run/shard.py): lesion sweeps and gradient by path length evaluated on
contiguous shards of the test set and merged give the single-process numbers: lesion tables equal
(``==``), path tables bit-identical when both cut the set into the same passes and within the
kernels' last bits otherwise. Shards run in this process here; test_shard_ray.py runs them on Ray."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis.core.errors import ConfigError
from analysis.experiments import lesion, paths
from analysis.run import shard
from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints


@pytest.fixture(scope="module")
def nets():
    out = {}
    for name in ("digits_resnet20", "mnist1d_resnet20", "digits_plain20"):
        ck = load_checkpoint(shipped_checkpoints()[name])
        out[name] = (ck.model, dataset_for(ck.meta))
    return out


def test_shard_bounds_cover_the_set_in_order_cut_at_multiples():
    assert shard.shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard.shard_bounds(450, 3, 64) == [(0, 192), (192, 384), (384, 450)]  # 8 batches: 3 + 3 + 2
    assert shard.shard_bounds(100, 8, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]  # only 4 batches
    assert shard.shard_bounds(5, 1, 64) == [(0, 5)]
    assert shard.shard_bounds(0, 4) == [(0, 0)]
    for n, shards, multiple in [(1000, 7, 30), (17, 17, 1), (64, 5, 3)]:
        b = shard.shard_bounds(n, shards, multiple)
        assert [lo for lo, _ in b] == [0] + [hi for _, hi in b[:-1]] and b[-1][1] == n
        assert all(lo % multiple == 0 and hi > lo for lo, hi in b)
        sizes = [-(-(hi - lo) // multiple) for lo, hi in b]  # batches per shard: as even as possible
        assert max(sizes) - min(sizes) <= 1
    for bad in [dict(shards=0), dict(shards=True), dict(multiple=0), dict(multiple=2.0)]:
        with pytest.raises(ConfigError):
            shard.shard_bounds(10, **{"shards": 2, "multiple": 1, **bad})


def test_error_rates_from_counts_are_the_float32_means_sweeps_always_reported():
    for n in (1, 7, 450, 10_000, 50_000):
        wrong = torch.tensor(sorted({0, 1, 2, n // 3, n // 2, n - 1, n} - {-1}))
        wrong = wrong[wrong <= n]
        preds = (torch.arange(n)[None] < wrong[:, None]).long()  # sequence i is wrong on wrong[i] inputs
        old = (preds != torch.zeros(n, dtype=torch.long)[None]).float().mean(1).tolist()
        assert lesion.errors_from_counts(wrong, n) == old


@pytest.mark.parametrize("name,kind", [("digits_resnet20", "single"), ("digits_resnet20", "k"),
                                       ("mnist1d_resnet20", "reorder"), ("digits_plain20", "single")])
def test_sharded_sweep_equals_the_single_process_sweep(nets, name, kind):
    model, data = nets[name]
    x, y = data.x_test[:150], data.y_test[:150]
    whole = lesion.run_sweep(kind, model, x, y, samples=2, seed=3, batch_size=32)
    assert whole["error"].nunique() > 2  # the sweep's rows differ: a wrong merge cannot pass by luck
    done = []
    parts = shard.sharded_sweep(kind, model, x, y, samples=2, seed=3, batch_size=32, shards=3,
                                progress=lambda d, t: done.append((d, t)))
    assert parts.equals(whole)
    assert done == [(1, 3), (2, 3), (3, 3)]


def test_more_shards_than_batches_still_equal(nets):
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:70], data.y_test[:70]
    whole = lesion.run_sweep("single", model, x, y, batch_size=64)
    assert shard.sharded_sweep("single", model, x, y, batch_size=64, shards=5).equals(whole)  # 2 batches: 2 shards


def test_sharded_sweep_refuses_bad_settings_before_work(nets):
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:8], data.y_test[:8]
    for kw, match in [(dict(shards=0), "shards"), (dict(executor="dask"), "executor"),
                      (dict(batch_size=0), "batch size"), (dict(samples=0), "samples")]:
        with pytest.raises(ConfigError, match=match):
            shard.sharded_sweep("k", model, x, y, **kw)
    with pytest.raises(ConfigError, match="unknown sweep"):
        shard.sharded_sweep("nope", model, x, y)


def test_model_payload_rebuilds_the_same_net(nets):
    model, data = nets["mnist1d_resnet20"]
    rebuilt = shard.ModelPayload.of(model).build()
    with torch.no_grad():
        assert torch.equal(rebuilt(data.x_test[:16]), model.eval()(data.x_test[:16]))


def test_whole_set_scaling_gives_each_example_the_batch_means_gradient(nets):
    """The summed loss divided by N has bit for bit the gradient of the mean over the N examples, and
    a part of the set given N gets its examples' slice of it."""
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:32], data.y_test[:32]
    _, g = paths._tapes(model.eval(), x, y)
    with torch.enable_grad():
        h = model.stem(x)
        for _, b in model.blocks():
            h = b(h)
        h = h.detach().requires_grad_(True)
        (mean_grad,) = torch.autograd.grad(F.cross_entropy(model.head(h), y), h)
    assert torch.equal(g, mean_grad)
    _, part = paths._tapes(model, x[8:24], y[8:24], total=32)
    assert torch.equal(part, g[8:24])


@pytest.mark.parametrize("name", ["digits_resnet20", "mnist1d_resnet20"])
def test_sharded_paths_in_the_same_passes_are_bit_identical(nets, name):
    model, data = nets[name]
    x, y = data.x_test[:24], data.y_test[:24]
    for batch_size, shards in [(8, 3), (1, 4), (16, 2)]:  # passes of one example: kernels other than a batch's
        whole = paths.gradient_by_length(model, x, y, samples=2, batch_size=batch_size)
        parts = shard.sharded_gradient_by_length(model, x, y, samples=2, batch_size=batch_size, shards=shards)
        pd.testing.assert_frame_equal(parts, whole, check_exact=True)


def test_batch_size_of_the_whole_set_is_the_one_pass_measurement(nets):
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:24], data.y_test[:24]
    pd.testing.assert_frame_equal(paths.gradient_by_length(model, x, y, samples=2, batch_size=24),
                                  paths.gradient_by_length(model, x, y, samples=2), check_exact=True)


def test_sharded_paths_in_other_passes_agree_to_the_last_bits(nets):
    """Shards of one example each against one pass over all: other kernels (module note), so not
    promised bit-identical; every example's norm within 1e-5 of its own, hence every mean too."""
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:24], data.y_test[:24]
    whole = paths.gradient_by_length(model, x, y, samples=2)
    parts = shard.sharded_gradient_by_length(model, x, y, samples=2, shards=24)
    pd.testing.assert_frame_equal(parts, whole, check_exact=False, rtol=1e-5, atol=0)


def test_sharded_paths_refuse_a_plain_net_and_bad_settings(nets):
    plain, data = nets["digits_plain20"]
    with pytest.raises(ConfigError, match="plain net"):
        shard.sharded_gradient_by_length(plain, data.x_test[:4], data.y_test[:4])
    model, _ = nets["digits_resnet20"]
    for kw, match in [(dict(batch_size=0), "batch size"), (dict(shards=-1), "shards"), (dict(ks=[99]), "length")]:
        with pytest.raises(ConfigError, match=match):
            shard.sharded_gradient_by_length(model, data.x_test[:4], data.y_test[:4], **kw)


def test_passes_of_batch_size_examples(nets):
    model, data = nets["digits_resnet20"]
    seen = []
    real = paths._tapes

    def spy(model, x, y, total=None):
        seen.append((len(x), total))
        return real(model, x, y, total)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "_tapes", spy)
        paths.gradient_by_length(model, data.x_test[:12], data.y_test[:12], samples=1, ks=[0, 1], batch_size=5)
        assert seen == [(5, 12), (5, 12), (2, 12)]
        seen.clear()
        shard.sharded_gradient_by_length(model, data.x_test[:12], data.y_test[:12], samples=1, ks=[0], shards=2)
        assert seen == [(6, 12), (6, 12)]  # each shard one pass, every gradient scaled by the whole set's 12


def test_each_shard_carries_only_its_own_inputs(nets, monkeypatch):
    """A shard's tensors own their storage: a pickled slice would carry the whole set to every task."""
    model, data = nets["digits_resnet20"]
    tasks = []

    def capture(fn, ts, **kw):
        tasks.extend(ts)
        return [fn(t) for t in ts]

    monkeypatch.setattr(shard, "run_shards", capture)
    shard.sharded_sweep("single", model, data.x_test[:64], data.y_test[:64], batch_size=16, shards=4)
    shard.sharded_gradient_by_length(model, data.x_test[:8], data.y_test[:8], samples=1, ks=[0], shards=2)
    assert len(tasks) == 6
    for t in tasks:
        assert t.x.untyped_storage().nbytes() == t.x.nbytes and t.y.untyped_storage().nbytes() == t.y.nbytes


def test_single_process_numbers_are_the_original_formulas(nets):
    """Refactored for shards, the single-process calls still compute what they always did: a
    sequence's error as the float32 mean of its mistakes, a path's magnitude as the mean of its
    per-example norms in one pass (``path_gradient_norm``), a length's mean over its paths in float64."""
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:40], data.y_test[:40]
    plan = lesion.plan_sweep("k", model, samples=2, seed=1)
    preds = lesion.predict_sequences(model, x, plan.sequences, batch_size=16)
    df = lesion.run_sweep("k", model, x, y, samples=2, seed=1, batch_size=16)
    assert df["error"].tolist() == (preds != y[None]).float().mean(1).tolist()

    lengths = paths.plan_lengths(len(model.blocks()), samples=2, ks=[0, 1, 5], seed=4)
    got = paths.gradient_by_length(model, x, y, samples=2, ks=[0, 1, 5], seed=4)
    tapes, g = paths._tapes(model, x, y)
    for row, (k, subsets, _) in zip(got.itertuples(), lengths.lengths, strict=True):
        norms = torch.tensor([paths.path_gradient_norm(tapes, g, set(s)) for s in subsets], dtype=torch.float64)
        assert (row.length, row.mean) == (k, float(norms.mean()))



@pytest.mark.parametrize("cmd,extra,message", [
    ("lesion", ["--shards", "0"], "--shards must be between 1 and 10,000, got 0"),
    ("lesion", ["--address", "auto"], "--address names a Ray cluster: it goes with --executor ray"),
    ("lesion", ["--executor", "ray", "--address", "nowhere"], "Ray address 'nowhere'"),
    ("lesion", ["--executor", "ray", "--device", "cuda:1"], "on Ray each shard is given one GPU"),
    ("lesion", ["--executor", "ray", "--device", "gpu"], "device must be cpu, cuda or cuda:<index>"),
    ("lesion", ["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    ("paths", ["--samples", "0"], "measurement samples must be an integer"),
    ("paths", ["--batch-size", "0"], "--batch-size must be between 1"),
    ("paths", ["--batch", "451"], "--batch 451 is larger than the test split (450 images)"),
    ("paths", ["--shards", "10001"], "--shards must be between"),
    ("paths", ["--net", "random"], "invalid choice: 'random'"),
])
def test_cli_refuses_bad_shard_settings_before_any_work(tmp_path, capsys, cmd, extra, message):
    from analysis.cli.main import main

    out = tmp_path / "r.csv"
    assert main([cmd, "--checkpoint", "digits_resnet20", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "Traceback" not in err and not out.exists()


def test_cli_paths_refuses_a_plain_net_and_measures_the_page_default(tmp_path, capsys):
    """A plain net has one path; a residual net's CSV holds what the page's measurement holds."""
    from analysis.cli.main import main

    assert main(["paths", "--checkpoint", "digits_plain20", "--out", str(tmp_path / "p.csv")]) == 2
    assert "plain net has a single path" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert main(["paths", "--checkpoint", "digits_resnet20", "--net", "initialisation", "--samples", "2",
                 "--batch", "16", "--seed", "3", "--out", str(out)]) == 0
    ck = load_checkpoint(shipped_checkpoints()["digits_resnet20"])
    data = dataset_for(ck.meta)
    want = paths.measure(paths.initialised(ck.model), data.x_test, data.y_test, paths.MeasureSettings(2, 16, 3))
    got = pd.read_csv(out, dtype={"paths": str})
    assert got.columns.tolist() == ["checkpoint", "net", *want.columns]
    assert set(got["net"]) == {"initialisation"} and set(got["checkpoint"]) == {"digits_resnet20"}
    assert got["mean"].tolist() == want["mean"].tolist() and got["paths"].tolist() == want["paths"].tolist()
    assert "90 % of the total gradient comes from paths of length" in capsys.readouterr().out

# ------------------------------------------------------------------ on Ray: one local instance for the module
# (started by the first test that needs it; analysis.run.cluster keeps every Ray process on 127.0.0.1)
on_ray = pytest.mark.xdist_group("ray")  # with the other Ray tests, in one xdist worker under --dist loadgroup


@pytest.fixture(scope="module")
def ray_instance():
    from analysis.run import cluster

    with cluster.connect(num_cpus=2) as conn:
        assert conn.started  # ours: stopped at the end of the module, never another test's cluster
        yield conn


@on_ray
def test_sharded_sweep_on_ray_equals_the_single_process_sweep(nets, ray_instance):
    model, data = nets["mnist1d_resnet20"]
    x, y = data.x_test[:200], data.y_test[:200]
    whole = lesion.run_sweep("k", model, x, y, samples=2, seed=5, batch_size=32)
    done = []
    on_ray = shard.sharded_sweep("k", model, x, y, samples=2, seed=5, batch_size=32, shards=3, executor="ray",
                                 progress=lambda d, t: done.append((d, t)))
    assert on_ray.equals(whole) and whole["error"].nunique() > 2
    assert sorted(done) == [(1, 3), (2, 3), (3, 3)]


@on_ray
def test_sharded_paths_on_ray_are_bit_identical(nets, ray_instance):
    model, data = nets["digits_resnet20"]
    x, y = data.x_test[:24], data.y_test[:24]
    whole = paths.gradient_by_length(model, x, y, samples=2, ks=[0, 1, 2, 9], batch_size=8)
    on_ray = shard.sharded_gradient_by_length(model, x, y, samples=2, ks=[0, 1, 2, 9], batch_size=8, shards=3,
                                              executor="ray")
    pd.testing.assert_frame_equal(on_ray, whole, check_exact=True)


@on_ray
def test_a_shipped_transformer_on_ray_equals_one_process_by_units_and_by_layers(ray_instance):
    """A program travels to Ray's tasks as its archive's bytes (with the modules of its layers' cut) and
    gives the single-process table, for a sweep by units and one by layers; and its path measurement."""
    from analysis.experiments import programlesion
    from analysis.store.programs import dataset_for_program, load_shipped

    ep, meta = load_shipped("digits_vit")
    cuts = programlesion.cut(ep, "digits_vit")
    data = dataset_for_program(meta)
    x, y = data.x_test[:150], data.y_test[:150]
    for kind, granularity in (("single", "units"), ("parallel", "layers")):
        chain = cuts.chain(granularity)
        whole = lesion.run_sweep(kind, chain, x, y, batch_size=50)
        on_ray = shard.sharded_sweep(kind, chain, x, y, batch_size=50, shards=3, executor="ray")
        assert on_ray.equals(whole) and whole["error"].nunique() > 1
    whole = paths.gradient_by_length(cuts.units, x[:100], y[:100], samples=2, ks=[0, 1, 8], batch_size=50)
    on_ray = shard.sharded_gradient_by_length(cuts.units, x[:100], y[:100], samples=2, ks=[0, 1, 8], batch_size=50,
                                              shards=2, executor="ray")
    pd.testing.assert_frame_equal(on_ray, whole, check_exact=True)


@on_ray
def test_shards_ask_ray_for_a_cpu_each_and_a_gpu_each_on_cuda(ray_instance, monkeypatch):
    """What run_shards hands Ray (seen without running anything): one item per shard, one CPU and one
    torch thread each, one GPU each for a CUDA device, seen in the task as cuda; the net put in the
    object store once for all shards."""
    import ray  # imported by the fixture's connect, with its loopback switch set

    from analysis.run import cluster

    asked, puts = [], []
    monkeypatch.setattr(cluster, "map_tasks", lambda fn, items, **kw: asked.append((fn, items, kw)) or [])
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value: puts.append(value) or real_put(value))
    model = shard.ModelPayload.of(load_checkpoint(shipped_checkpoints()["digits_resnet20"]).model)
    tasks = [shard.LesionShard(model, torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long), [], 1, "cuda:1")
             for _ in range(3)]
    shard.run_shards(shard.lesion_shard, tasks, executor="ray", device="cuda:1")
    ((fn, items, kw),) = asked
    assert fn is shard.lesion_shard and len(items) == 3
    assert (kw["num_cpus"], kw["num_gpus"], kw["threads"]) == (1, 1, 1)
    assert {t.device for t in items} == {"cuda"}
    assert len({id(t.model) for t in items}) == 1 and not isinstance(items[0].model, shard.ModelPayload)
    assert puts == [model]  # the net, once; each shard's own tensors travel with its task
    asked.clear()
    shard.run_shards(shard.lesion_shard, [dataclasses.replace(t, device="cpu") for t in tasks], executor="ray")
    assert asked[0][2]["num_gpus"] == 0 and {t.device for t in asked[0][1]} == {"cpu"}


@on_ray
def test_cli_lesion_and_paths_on_ray_write_the_local_csv(tmp_path, ray_instance, capsys, monkeypatch):
    """End to end on a tiny net (ResNet-8 on 8 px digits, one epoch): --executor ray with shards, at
    the instance's address, runs one Ray task per shard and writes the file the unsharded local
    command writes, byte for byte."""
    from analysis.cli.main import main
    from analysis.run import cluster

    real, tasks = cluster.map_tasks, []

    def counted(fn, items, **kw):
        tasks.append(len(items))
        return real(fn, items, **kw)

    monkeypatch.setattr(cluster, "map_tasks", counted)

    ck = tmp_path / "tiny.pt"
    assert main(["train", "--model", "cifar_resnet8", "--size", "8", "--epochs", "1", "--out", str(ck)]) == 0
    sweep = ["lesion", "--checkpoint", str(ck), "--experiment", "k", "--samples", "2", "--batch-size", "100"]
    assert main([*sweep, "--out", str(tmp_path / "one.csv")]) == 0
    assert main([*sweep, "--executor", "ray", "--address", ray_instance.address, "--shards", "3",
                 "--out", str(tmp_path / "ray.csv")]) == 0
    assert "3 shards of up to 200 inputs, as Ray tasks on 127.0.0.1:" in capsys.readouterr().out
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    measure = ["paths", "--checkpoint", str(ck), "--samples", "2", "--batch", "40", "--batch-size", "10"]
    assert main([*measure, "--out", str(tmp_path / "p1.csv")]) == 0
    assert main([*measure, "--executor", "ray", "--shards", "2", "--out", str(tmp_path / "p2.csv")]) == 0
    assert (tmp_path / "p2.csv").read_bytes() == (tmp_path / "p1.csv").read_bytes()
    assert tasks == [3, 2]  # the sharded commands ran on Ray, the others in this process
    got = pd.read_csv(tmp_path / "p2.csv")
    assert got["length"].tolist() == [0, 1, 2, 3] and set(got["net"]) == {"trained"}
