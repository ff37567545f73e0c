"""Precision and memory layout (issue 25): the CPU's bf16 units are detected and a CPU without them
is refused; bf16 and channels-last are recipe fields that change what they should and nothing else;
the peak rates the roofline benchmark prints follow the formula by hand."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analysis.arch.specs import get_spec
from analysis.core import machine
from analysis.core.errors import ConfigError
from analysis.core.meta import RunMeta, TrainConfig
from analysis.experiments import precision as prec
from analysis.experiments import train as tr
from analysis.store.runstore import config_key

HAS_BF16 = machine.bf16_unit() is not None
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
NO_BF16 = "fpu sse2 avx2 fma avx512f"


def tiny_spec():
    return get_spec("cifar_resnet8").replace(in_channels=1, num_classes=10, input_size=8)


# ------------------------------------------------------------------ detection
@pytest.mark.parametrize(("flags", "unit"), [
    ("fpu avx512f avx512_bf16 amx_tile amx_bf16", "AMX-BF16 tiles"),
    ("fpu avx512f avx512_bf16", "AVX-512 BF16 dot products"),
    (NO_BF16, None),
    ("", None),
])
def test_bf16_unit_is_read_from_the_flags(monkeypatch, flags, unit):
    monkeypatch.setenv(machine.FLAGS_ENV, flags)
    assert machine.bf16_unit() == unit


def test_proc_cpuinfo_is_parsed(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu amx_bf16 avx512f\n\n"
                 "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    model, flags, mhz = machine._proc_cpuinfo(str(f))
    assert (model, mhz) == ("Test CPU", 2600.0) and flags == {"fpu", "amx_bf16", "avx512f"}
    assert machine._proc_cpuinfo(str(tmp_path / "missing")) == ("", frozenset(), None)


def test_a_cpu_without_bf16_units_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    with pytest.raises(ConfigError, match=r"needs bf16 matrix units \(AMX-BF16 or AVX-512 BF16\).*use fp32"):
        prec.check("bf16", "cpu")
    with pytest.raises(ConfigError, match="needs bf16 matrix units"):
        tr.train(tiny_spec(), _digits8(), TrainConfig(epochs=1, amp="bf16"))
    with pytest.raises(ConfigError, match="needs bf16 matrix units"):
        tr.predict(torch.nn.Linear(2, 2), torch.zeros(1, 2), precision="bf16")
    prec.check("fp32", "cpu")  # fp32 needs nothing
    prec.check("bf16", "cuda")  # CUDA's bf16 is not the CPU's business
    with pytest.raises(ConfigError, match="fp16 runs on CUDA only"):
        prec.check("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision must be fp32, bf16 or fp16"):
        prec.check("int8", "cpu")


def test_peak_rates_follow_the_formula():
    # by hand: 2 FMA ports x 2 FLOPs x 16 fp32 lanes = 64 FLOP/cycle; 2 cores at 2.6 GHz = 332.8 GFLOP/s
    p = machine.peaks(2, 2.6, frozenset({"avx512f", "amx_bf16"}))
    assert p["fp32"].flops_per_cycle == 64 and p["fp32"].gflops == pytest.approx(332.8)
    assert p["bf16"].flops_per_cycle == 2048 and p["bf16"].gflops == pytest.approx(10649.6)
    assert "2 cores x 64 FLOP/cycle" in p["fp32"].formula and p["fp32"].formula.endswith("= 333 GFLOP/s")
    avx2 = machine.peaks(4, 3.0, frozenset({"avx2"}))
    assert avx2["fp32"].flops_per_cycle == 32 and "bf16" not in avx2
    assert machine.peaks(1, 1.0, frozenset({"avx512f", "avx512_bf16"}))["bf16"].flops_per_cycle == 128


def test_the_machine_is_described_for_result_files():
    d = machine.describe(threads=3)
    assert d["threads"] == 3 and d["torch"] == torch.__version__ and set(d) == {"cpu", "cpus", "threads",
                                                                                 "bf16_unit", "torch"}


# ------------------------------------------------------------------ recipes and keys
def test_fp32_recipes_keep_their_dicts_and_keys():
    fp32 = TrainConfig(epochs=2)
    assert "amp" not in fp32.to_dict() and "channels_last" not in fp32.to_dict() and fp32.precision == "fp32"
    bf16 = dataclasses.replace(fp32, amp="bf16")
    cl = dataclasses.replace(fp32, channels_last=True)
    keys = {config_key({"recipe": c.to_dict()}) for c in (fp32, bf16, cl)}
    assert len(keys) == 3  # a bf16 or channels-last run never answers for an fp32 one
    back = RunMeta.from_dict(RunMeta(recipe=dataclasses.replace(bf16, channels_last=True)).to_dict())
    assert back.recipe.amp == "bf16" and back.recipe.channels_last is True
    with pytest.raises(ConfigError, match="channels_last must be true or false"):
        TrainConfig(channels_last=1)  # type: ignore[arg-type]


def test_channels_last_is_refused_for_1d_nets():
    from analysis.data.data import load_mnist1d

    with pytest.raises(ConfigError, match="channels-last is a layout of 2-D images"):
        tr.train(get_spec("resnet1d_8"), load_mnist1d(), TrainConfig(epochs=1, channels_last=True))


# ------------------------------------------------------------------ what the recipe fields change
def _digits8():
    from analysis.data.data import load_digits

    return load_digits(8)


def _weights(r):
    return torch.cat([t.flatten().float() for t in r.model.state_dict().values()])


def test_channels_last_trains_in_nhwc_and_returns_the_default_layout():
    data = _digits8()
    seen = []
    # what the first conv is fed during training: a channels-last batch
    orig = torch.nn.Conv2d.forward

    def spy(self, x):
        if self.training:
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and (x.shape[1] == 1 or not x.is_contiguous()))
        return orig(self, x)

    cfg = TrainConfig(epochs=1, batch_size=64, channels_last=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "forward", spy)
        r = tr.train(tiny_spec(), data, cfg)
    assert seen and all(seen)
    assert all(p.is_contiguous() for p in r.model.parameters())  # back to the default layout
    plain = tr.train(tiny_spec(), data, dataclasses.replace(cfg, channels_last=False))
    assert len(r.history) == len(plain.history) == 1
    # the same training up to float rounding: only the kernels' summation order differs, and 21 SGD
    # steps grow those differences to about 1e-3 (measured), far below the weights' scale (~0.4)
    diff = (_weights(r) - _weights(plain)).abs().max()
    assert 0 < diff < 5e-3


@needs_bf16
def test_bf16_training_runs_under_autocast_repeatably_and_differs_from_fp32():
    data = _digits8()
    cfg = TrainConfig(epochs=1, batch_size=64, amp="bf16")
    dtypes = []
    orig = torch.nn.Conv2d.forward

    def spy(self, x):
        out = orig(self, x)
        if self.training:
            dtypes.append(out.dtype)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "forward", spy)
        a = tr.train(tiny_spec(), data, cfg)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    b = tr.train(tiny_spec(), data, cfg)
    fp32 = tr.train(tiny_spec(), data, dataclasses.replace(cfg, amp="off"))
    assert torch.equal(_weights(a), _weights(b))  # deterministic for a thread count
    assert not torch.equal(_weights(a), _weights(fp32))  # and really another arithmetic
    assert all(p.dtype == torch.float32 for p in a.model.parameters())  # master weights stay fp32
    assert a.config.precision == "bf16"


@needs_bf16
def test_bf16_prediction_is_close_to_fp32_and_fp32_is_untouched():
    data = _digits8()
    r = tr.train(tiny_spec(), data, TrainConfig(epochs=1, batch_size=64))
    fp32 = tr.predict(r.model, data.x_test)
    again = tr.predict(r.model, data.x_test, precision="fp32")
    bf16 = tr.predict(r.model, data.x_test, precision="bf16")
    assert torch.equal(fp32, again) and fp32.dtype == bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, atol=0.25, rtol=0.05)
    assert not torch.is_autocast_enabled("cpu")  # nothing left behind


# ------------------------------------------------------------------ the transformers share the trainer's loop
def _tiny_vit():
    from analysis.arch.tinyformers import build

    arch = {"family": "vit", "image": 8, "patch": 4, "channels": 1, "width": 16, "depth": 1, "heads": 2,
            "hidden": 16, "classes": 10, "residual": True}
    return build(arch, seed=0)


@needs_bf16
def test_a_transformer_trains_in_bf16_through_the_same_loop():
    from analysis.experiments.train_transformers import Recipe, fit_generic

    data = _digits8()
    recipe = Recipe(epochs=1, batch_size=64, warmup_epochs=0)
    a, b = _tiny_vit(), _tiny_vit()
    ha = fit_generic(a, data, recipe, precision="bf16")
    hb = fit_generic(b, data, recipe)
    assert len(ha) == len(hb) == 1 and ha[0]["train_loss"] != hb[0]["train_loss"]
    assert all(torch.isfinite(p).all() for p in a.parameters()) and not a.training


def test_channels_last_is_refused_for_a_model_without_2d_convolutions():
    from analysis.arch.tinyformers import build
    from analysis.data.data import load_mnist1d
    from analysis.experiments.train_transformers import NETS, Recipe, fit_generic

    seq = build({**NETS["mnist1d_transformer"].arch, "width": 16, "depth": 1, "heads": 2, "hidden": 16}, seed=0)
    with pytest.raises(ConfigError, match="channels-last is a layout of 2-D images"):
        fit_generic(seq, load_mnist1d(), Recipe(epochs=1, warmup_epochs=0), channels_last=True)


def _rgb8():
    """Random 3-channel 8 px images, 10 classes: a first conv whose input has a channels-last layout
    distinct from the default one (a 1-channel batch is both)."""
    from analysis.data.data import Dataset

    g = torch.Generator().manual_seed(0)
    return Dataset("rgb8", torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g),
                   torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g),
                   [str(i) for i in range(10)], augment="crop_flip")


def test_a_three_channel_batch_reaches_the_first_conv_in_nhwc():
    seen = []
    orig = torch.nn.Conv2d.forward

    def spy(self, x):
        if self.training and x.shape[1] == 3:
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return orig(self, x)

    spec = get_spec("cifar_resnet8").replace(in_channels=3, num_classes=10, input_size=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "forward", spy)
        tr.train(spec, _rgb8(), TrainConfig(epochs=1, batch_size=32, channels_last=True))
    assert seen and all(seen)


def test_the_shared_loop_clips_every_step_and_returns_the_default_layout():
    from analysis.experiments.train_transformers import Recipe, fit_generic

    calls = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return orig(params, max_norm, *a, **k)

    vit = _tiny_vit()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.utils, "clip_grad_norm_", spy)
        fit_generic(vit, _digits8(), Recipe(epochs=1, batch_size=512, warmup_epochs=0, clip=0.5), channels_last=True)
    steps = -(-1347 // 512)  # the 8 px digits' training split in batches of 512
    assert calls == [0.5] * steps
    assert all(p.is_contiguous() for p in vit.parameters())  # the patch conv back in the default layout


def test_the_accuracy_study_refuses_bf16_before_training_anything(monkeypatch, tmp_path):
    from analysis.studies import precision as study

    monkeypatch.setenv(machine.FLAGS_ENV, NO_BF16)
    monkeypatch.setattr(study, "seed_run", lambda *a, **k: pytest.fail("trained before the refusal"))
    with pytest.raises(ConfigError, match="needs bf16 matrix units"):
        study.record(["digits_resnet20"], [0], tmp_path)
