"""Transfer learning (issue 14): the modes are one rule, and the rule holds on numbers. Frozen units
end bit-identical (weights and BatchNorm statistics) while trainable ones move; transferring 0 stages
is training from scratch and transferring every stage frozen is the feature extractor; preprocessing
variants differ only by their affine map; plans reuse stored runs and Cancel keeps finished ones.

Tiny budgets (5-10 SGD steps, a 50-image test split) keep the file fast on one core."""

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import analysis.experiments.train
from analysis.arch.models import build_model
from analysis.arch.specs import get_spec
from analysis.core.compat import deterministic_state_dict
from analysis.core.errors import ConfigError, DatasetError
from analysis.core.meta import RunMeta
from analysis.store.checkpoints import Checkpoint, load_checkpoint
from analysis.store.runstore import RunStore, net_key
from analysis.studies import transfer as T

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "checkpoints" / "transfer" / "digits04_resnet20.pt"
# state_dict key prefixes of cifar_resnet20's units, written out by hand (not read from units())
UNIT_PREFIXES = [("conv1.", "bn1.", "layer1."), ("layer2.",), ("layer3.",)]
MANIFEST = json.loads((ROOT / "tests" / "fixtures" / "torchvision_state_dicts.json").read_text())["keys"]


@pytest.fixture(scope="module")
def src() -> Checkpoint:
    return load_checkpoint(SOURCE)


def small(d, train: int | None = None, test: int = 50):
    """The same data with its test split (and, given ``train``, its training split) cut short."""
    n = len(d.y_train) if train is None else train
    return dataclasses.replace(d, x_train=d.x_train[:n], y_train=d.y_train[:n], x_test=d.x_test[:test],
                               y_test=d.y_test[:test])


def target(src: Checkpoint, per_class: int | None = 5, seed: int = 0, norm: T.Norm = "source"):
    return small(T.digits_target(per_class, seed, norm, src.meta.normalisation))


def small_target(src: Checkpoint):
    """A plan's target: the digits 5-9 with 50 test images, "all" labelled images being 40."""
    def make(n, seed, norm):
        return small(T.digits_target(n, seed, norm, src.meta.normalisation), train=40 if n is None else None)
    return make


def unit_of(key: str) -> int | None:
    """Which unit a state_dict key belongs to (None: the head)."""
    for i, prefixes in enumerate(UNIT_PREFIXES):
        if key.startswith(prefixes):
            return i
    assert key.startswith("fc."), key
    return None


def same_history(a: list[dict], b: list[dict]) -> bool:
    drop = ("seconds",)  # wall time, the only number a rerun may change
    return [{k: v for k, v in h.items() if k not in drop} for h in a] == \
           [{k: v for k, v in h.items() if k not in drop} for h in b]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ setups: one rule, the modes as cases
def test_modes_are_cases_of_one_setup():
    ms = T.mode_setup
    assert ms("scratch", 3) == T.Setup(0, 0) == ms("first_k_frozen", 3, 0) == ms("first_k_finetuned", 3, 0)
    assert ms("frozen", 3) == T.Setup(3, 3) == ms("first_k_frozen", 3, 3) == ms("last_k", 3, 0)
    assert ms("finetune", 3) == T.Setup(3, 0) == ms("first_k_finetuned", 3, 3) == ms("last_k", 3, 3)
    assert ms("last_k", 3, 1) == T.Setup(3, 2) and ms("first_k_frozen", 3, 2) == T.Setup(2, 2)
    with pytest.raises(ConfigError, match="unknown transfer mode 'nope'"):
        ms("nope", 3)
    with pytest.raises(ConfigError, match="k must be between 0 and 3 stages, got 4"):
        ms("last_k", 3, 4)
    with pytest.raises(ConfigError, match="only copied stages can be frozen"):
        T.Setup(1, 2).check(3)
    labels = [T.setup_label(s, 3) for s in T.default_setups(3)]
    assert len(labels) == 11 == len(set(labels))
    assert labels[:4] == ["from scratch", "fixed feature extractor", "fine-tune everything",
                          "fine-tune the last 1 stage"]
    assert labels[-3:] == ["fine-tune everything (BN statistics frozen)",
                           "fixed feature extractor (target statistics)", "fixed feature extractor (no normalisation)"]
    # another input scale is another run even from scratch, so it is another row of the summary
    assert T.setup_label(T.Setup(0, 0, norm="none"), 3) == "from scratch (no normalisation)"


def test_page_and_cli_setups_one_rule_one_name_one_run():
    """choose_setups builds both the page's and the CLI's setups: BN statistics frozen or updated are
    one run where no copied stage is fine-tuned (from scratch, the feature extractor), k = 0 of the
    first-k sweep is from scratch, and fine-tuning the last 0 stages is not listed twice."""
    assert T.mode_setup("scratch", 3, bn="frozen") == T.Setup(0, 0)
    assert T.mode_setup("frozen", 3, bn="frozen") == T.Setup(3, 3)
    assert T.mode_setup("finetune", 3, bn="frozen") == T.Setup(3, 0, "frozen")
    got = T.choose_setups(["scratch", "frozen", "finetune", "first_k_frozen", "last_k"], [0, 1], ["update", "frozen"],
                          ["source"], 3)
    assert got == (T.Setup(0, 0), T.Setup(3, 3), T.Setup(3, 0), T.Setup(3, 0, "frozen"), T.Setup(1, 1),
                   T.Setup(3, 2), T.Setup(3, 2, "frozen"))
    labels = [T.setup_label(x, 3) for x in got]
    assert len(set(labels)) == len(labels)


def test_a_1d_source_is_compared_on_mnist1d_classes_5_to_9(src):
    """The embedded target follows the source's input: MNIST-1D's classes 5-9 (the package's split
    restricted, relabelled 0-4) for a 1-D net, the digits 5-9 for a 2-D one; each normalised with
    the source's recorded statistics."""
    from analysis.core.meta import DatasetInfo
    from analysis.data.data import load_mnist1d

    one_d = load_checkpoint(ROOT / "checkpoints" / "transfer" / "mnist1d04_resnet1d20.pt")
    assert one_d.meta.dataset.name == "mnist1d[0,1,2,3,4]" and one_d.spec.num_classes == 5
    d = T.target_maker(one_d)(5, 0, "source")
    full = load_mnist1d()
    five = (full.y_test >= 5).sum().item()
    assert (d.name, d.dims, d.classes, len(d.y_train), len(d.y_test)) == (
        "mnist1d[5,6,7,8,9]", 1, ["5", "6", "7", "8", "9"], 25, five)
    assert d.mean == list(one_d.meta.normalisation.mean) and torch.bincount(d.y_train).tolist() == [5] * 5
    raw = load_mnist1d(classes=(5, 6, 7, 8, 9))
    assert len(raw.y_train) + len(load_mnist1d(classes=(0, 1, 2, 3, 4)).y_train) == len(full.y_train)
    assert torch.equal(raw.y_test + 5, full.y_test[full.y_test >= 5])
    assert T.target_maker(src)(5, 0, "source").name == "digits16[5,6,7,8,9]"
    assert T.target_text(one_d) == "MNIST-1D's classes 5–9" and T.target_text(src) == "the digits 5–9"
    info = DatasetInfo("mnist1d[5,6,7,8,9]", 25, 493, 5, 1, 40, 0)
    assert (info.digit_classes, info.is_mnist1d, info.embedded) == ((5, 6, 7, 8, 9), True, "mnist1d")
    assert DatasetInfo("mnist1d_png[5]", 1, 1, 2, 1, 40, 0).embedded is None


def test_equal_setups_labels_and_seeds_run_once():
    plan = T.Plan((T.mode_setup("scratch", 3), T.mode_setup("first_k_frozen", 3, 0), T.mode_setup("frozen", 3)),
                  labels=(1, 1, None), seeds=(0, 0))
    assert plan.items() == [(T.Setup(0, 0), 1, 0), (T.Setup(0, 0), None, 0), (T.Setup(3, 3), 1, 0),
                            (T.Setup(3, 3), None, 0)]


# ------------------------------------------------------------------ data: labelled subsets, normalisation
def test_labelled_subset_draws_per_class_by_seed_and_refuses_more_than_a_class_has(src):
    full = T.digits_target(None, 0, "none", None)
    counts = torch.bincount(full.y_train).tolist()
    assert counts == [136, 136, 134, 130, 135] and full.classes == ["5", "6", "7", "8", "9"]
    a, b, c = (T.labelled_subset(full, 7, seed) for seed in (3, 3, 4))
    assert torch.bincount(a.y_train).tolist() == [7] * 5
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert torch.equal(a.x_test, full.x_test) and torch.equal(a.y_test, full.y_test)  # the test split untouched
    # every labelled image is one of the class's own training images
    pool = {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(full.x_train, full.y_train, strict=True)}
    assert all((bytes(x.numpy().tobytes()), int(y)) in pool for x, y in zip(a.x_train, a.y_train, strict=True))
    assert T.labelled_subset(full, None, 0) is full
    assert torch.bincount(T.labelled_subset(full, 130, 0).y_train).tolist() == [130] * 5
    with pytest.raises(DatasetError, match=r"class '8' has 130 training images, fewer than the 131 labelled"):
        T.labelled_subset(full, 131, 0)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(DatasetError, match="whole number of at least 1"):
            T.labelled_subset(full, bad, 0)


def test_preprocessing_variants_change_only_the_normalisation(src):
    raw = T.digits_target(5, 3, "none", src.meta.normalisation)
    assert raw.mean == [0.0] and raw.std == [1.0] and float(raw.x_train.min()) >= 0 and float(raw.x_train.max()) <= 1
    own = raw.x_train.mean(dim=[0, 2, 3])
    for norm in T.NORMS:
        d = T.digits_target(5, 3, norm, src.meta.normalisation)
        assert torch.equal(d.y_train, raw.y_train) and torch.equal(d.y_test, raw.y_test)
        m, s = torch.tensor(d.mean).view(1, -1, 1, 1), torch.tensor(d.std).view(1, -1, 1, 1)
        assert torch.equal(d.x_train, (raw.x_train - m) / s) and torch.equal(d.x_test, (raw.x_test - m) / s)
        if norm == "source":
            assert (tuple(d.mean), tuple(d.std)) == (src.meta.normalisation.mean, src.meta.normalisation.std)
        elif norm == "target":  # the labelled images' statistics: no test image informs them
            assert d.mean == [float(own)] and d.mean != [float(raw.x_test.mean())]
            assert d.std == [float(raw.x_train.std(dim=[0, 2, 3], unbiased=False))]
    with pytest.raises(DatasetError, match="records no input normalisation"):
        T.digits_target(5, 3, "source", None)


# ------------------------------------------------------------------ prepare: what is copied, what is fresh
@pytest.mark.parametrize("copied", [0, 1, 2, 3])
def test_prepare_copies_exactly_the_first_units(src, copied):
    setup = T.Setup(copied, 0)
    model, frozen = T.prepare(src, 5, setup, seed=7)
    fresh = build_model(src.spec.replace(num_classes=5), seed=7).state_dict()
    source = src.model.state_dict()
    got = model.state_dict()
    assert got.keys() == fresh.keys()
    for k, v in got.items():
        u = unit_of(k)
        want = source[k] if u is not None and u < copied else fresh[k]
        assert torch.equal(v, want), k
    assert frozen == []
    # the source itself is left as it was
    assert same_weights(src.model, load_checkpoint(SOURCE).model)


def test_prepare_freezes_the_first_units_and_copies_a_preact_nets_final_bn():
    spec = get_spec("preact_cifar_resnet20").replace(in_channels=1, input_size=16, num_classes=5)
    ck = Checkpoint(spec, build_model(spec, seed=123), RunMeta(), False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh BN is all ones and zeros: give the source's BNs values of their own
        for m in ck.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.rand(t.shape, generator=gen))
    for copied in (2, 3):
        model, frozen = T.prepare(ck, 4, T.Setup(copied, 2), seed=0)
        fresh = build_model(spec.replace(num_classes=4), seed=0)
        names = {id(m): n for n, m in model.named_modules()}
        assert sorted(names[id(m)] for m in frozen) == ["bn1", "conv1", "layer1", "layer2"]
        want = ck.model.bn_final if copied == 3 else fresh.bn_final
        assert same_weights(model.bn_final, want) and not same_weights(ck.model.bn_final, fresh.bn_final)
        assert same_weights(model.layer2, ck.model.layer2) and same_weights(model.bn1, ck.model.bn1)
        assert model.fc.out_features == 4


def test_the_head_is_new_with_the_targets_classes_whatever_the_source_had(src, tmp_path):
    model, _ = T.prepare(src, 3, T.mode_setup("finetune", 3), seed=0)
    assert (model.fc.in_features, model.fc.out_features) == (64, 3)
    # a torchvision-style ImageNet net: its 1000-class head is replaced, and the messages say so
    sd = deterministic_state_dict({k: tuple(s) for k, s in MANIFEST["resnet18"]})
    torch.save(sd, tmp_path / "resnet18.pth")
    r18 = load_checkpoint(tmp_path / "resnet18.pth")
    assert r18.spec.num_classes == 1000
    model, _ = T.prepare(r18, 5, T.mode_setup("finetune", len(r18.model.stage_names)), seed=0)
    assert model.fc.out_features == 5 and torch.equal(model.conv1.weight, r18.model.conv1.weight)
    note = "the source's 1000-class head is replaced with a new 5-way linear head"
    assert T.head_note(r18, 5).startswith(note)
    with pytest.raises(DatasetError, match="takes 3-channel inputs, the target has 1") as info:
        T.check_compatible(r18, T.digits_target(1, 0, "none", None))
    assert note in str(info.value) and "the stem cannot" in str(info.value)
    assert T.adaptation_notes(src, target(src)) == [T.head_note(src, 5)]


def test_a_1d_source_or_a_one_class_target_is_refused(src):
    one_d = load_checkpoint(ROOT / "checkpoints" / "mnist1d_resnet20.pt")
    with pytest.raises(DatasetError, match="source net is 1-D and the target data 2-D") as info:
        T.check_compatible(one_d, target(src))
    assert "10-class head is replaced with a new 5-way" in str(info.value)
    with pytest.raises(DatasetError, match="the target has 1 class"):
        T.check_compatible(src, T.digits_target(1, 0, "none", None, classes=(5,)))


# ------------------------------------------------------------------ training: frozen is frozen, bit for bit
def test_freezing_leaves_no_trace_on_the_returned_net(src):
    """fit() freezes the frozen units for the training only: afterwards every parameter takes gradients
    again, as the net it was given did (instrumentation leaves no trace)."""
    setup = T.mode_setup("frozen", 3)
    r = T.run(src, target(src), setup, T.Recipe(steps=2), seed=0, per_class=5)
    assert all(p.requires_grad for p in r.model.parameters())


def test_frozen_units_end_bit_identical_and_trainable_ones_move(src):
    setup = T.mode_setup("last_k", 3, 1)  # stem + layer1 + layer2 frozen, layer3 and the head trained
    before, _ = T.prepare(src, 5, setup, seed=0)
    r = T.run(src, target(src), setup, T.Recipe(steps=10), seed=0, per_class=5)
    assert len(r.history) == 10 and not r.cancelled
    start, after, source = before.state_dict(), r.model.state_dict(), src.model.state_dict()
    frozen = [k for k in after if unit_of(k) in (0, 1)]
    trained = [k for k in after if unit_of(k) in (2, None)]
    assert len(frozen) == 1 + 5 + 6 * (2 + 2 * 5)  # stem conv + BN, six blocks of two convs and two BNs
    for k in frozen:  # weights, running statistics and num_batches_tracked
        assert torch.equal(after[k], source[k]), k
    for k in trained:
        if k.endswith("num_batches_tracked"):
            assert int(after[k]) == int(start[k]) + 10, k  # one per step: the trained BNs were in train mode
        else:
            assert not torch.equal(after[k], start[k]), k
    assert r.model.fc.out_features == 5


def test_bn_frozen_keeps_the_statistics_while_scale_and_shift_learn(src):
    setup = T.mode_setup("finetune", 3, bn="frozen")
    r = T.run(src, target(src), setup, T.Recipe(steps=5), seed=0, per_class=5)
    after, source = r.model.state_dict(), src.model.state_dict()
    bns = [n for n, m in r.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 19
    for n in bns:
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{n}.{buf}"], source[f"{n}.{buf}"]), (n, buf)
        for p in ("weight", "bias"):
            assert not torch.equal(after[f"{n}.{p}"], source[f"{n}.{p}"]), (n, p)
    assert not torch.equal(after["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"])
    # the pins are gone with the run: the net is an ordinary net again
    assert all(not m._forward_pre_hooks for m in r.model.modules())
    assert T.held_statistics(r.model, T.mode_setup("finetune", 3)) == []
    assert len(T.held_statistics(r.model, T.mode_setup("last_k", 3, 1, bn="frozen"))) == 6  # layer3's


def test_transferring_no_stage_is_training_from_scratch(src):
    data, recipe = target(src), T.Recipe(steps=5)
    k0 = T.run(src, data, T.mode_setup("first_k_frozen", 3, 0), recipe, seed=4, per_class=5)
    scratch = analysis.experiments.train.train(src.spec.replace(num_classes=5), data, recipe.config(len(data.y_train), 4))
    assert len(k0.history) == 5 and same_history(k0.history, scratch.history)
    assert same_weights(k0.model, scratch.model)


def test_transferring_every_stage_frozen_is_the_feature_extractor(src):
    data, recipe = target(src), T.Recipe(steps=5)
    k_all = T.run(src, data, T.mode_setup("first_k_frozen", 3, 3), recipe, seed=2, per_class=5)
    # by hand: the source's body, a fresh 5-way head from the seed, only the head in the optimizer
    model = build_model(src.spec.replace(num_classes=5), seed=2)
    model.load_state_dict({**src.model.state_dict(), **{k: v for k, v in model.state_dict().items()
                                                         if k.startswith("fc.")}})
    body = [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3]
    by_hand = analysis.experiments.train.fit(model, data, recipe.config(len(data.y_train), 2), frozen=body)
    assert same_history(k_all.history, by_hand.history) and same_weights(k_all.model, by_hand.model)
    source = src.model.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in k_all.model.state_dict().items() if not k.startswith("fc."))


# ------------------------------------------------------------------ plans: stored, reused, cancelled
def counting_fit(monkeypatch) -> dict[str, int]:
    calls = {"fit": 0}
    real = analysis.experiments.train.fit

    def fit(*a, **k):
        calls["fit"] += 1
        return real(*a, **k)

    monkeypatch.setattr(analysis.experiments.train, "fit", fit)
    return calls


TINY_PLAN = dict(labels=(1, None), seeds=(0,), recipe=T.Recipe(steps=5))


@pytest.fixture(scope="module")
def planned(src, tmp_path_factory):
    """One tiny plan run into a store: from scratch and fine-tuned, 1 and all (40) labels, seed 0."""
    store = RunStore(tmp_path_factory.mktemp("store"))
    plan = T.Plan((T.mode_setup("scratch", 3), T.mode_setup("finetune", 3)), **TINY_PLAN)
    seen: list[T.PlanProgress] = []
    result = T.run_plan(src, plan, store=store, target=small_target(src), progress=seen.append)
    return store, plan, result, seen


def test_a_plan_keeps_every_run_and_a_second_call_trains_nothing(src, planned, monkeypatch):
    store, plan, first, seen = planned
    assert (first.trained, first.reused, first.cancelled) == (4, 0, False)
    assert list(first.results["setup"]) == ["from scratch"] * 2 + ["fine-tune everything"] * 2
    assert list(first.results["train_images"]) == [5, 40, 5, 40] and set(first.results["status"]) == {"complete"}
    finished = [p for p in seen if p.finished is not None]
    assert [p.done for p in finished] == [1, 2, 3, 4] and all(p.total == 4 for p in seen)
    assert [p.finished["test_acc"] for p in finished] == list(first.results["test_acc"])
    kept = [s for s in store.sweeps_of(net_key(src)) if s.kind == "transfer"]
    assert len(kept) == 4
    calls = counting_fit(monkeypatch)
    again = T.run_plan(src, plan, store=store, target=small_target(src))
    assert calls["fit"] == 0 and (again.trained, again.reused) == (0, 4)
    cols = [c for c in T.RESULT_COLUMNS if c != "per_class"]
    exact = dict(check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(again.results[cols], first.results[cols], **exact)
    pd.testing.assert_frame_equal(again.curves, first.curves, **exact)
    pd.testing.assert_frame_equal(again.probe, first.probe, **exact)


def test_cancel_keeps_the_finished_runs_only(src, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    plan = T.Plan((T.mode_setup("frozen", 3), T.mode_setup("finetune", 3)), labels=(1,), seeds=(0,),
                  recipe=T.Recipe(steps=5))
    calls = counting_fit(monkeypatch)
    seen: list[T.PlanProgress] = []
    # Cancel pressed halfway through the second run, with some of its epochs measured
    res = T.run_plan(src, plan, store=store, target=small_target(src), progress=seen.append,
                     cancel=lambda: seen[-1].done == 1 and seen[-1].fraction >= 0.6)
    assert calls["fit"] == 2 and res.cancelled and (res.trained, res.reused) == (1, 0)
    assert seen[-1].label == "fine-tune everything, 1 per class, seed 0" and seen[-1].fraction == 0.6
    assert list(res.results["setup"]) == ["fixed feature extractor"] and res.probe.empty
    assert list(res.probe.columns) == T.PROBE_COLUMNS and set(res.curves["setup"]) == {"fixed feature extractor"}
    kept = [s for s in store.sweeps_of(net_key(src)) if s.kind == "transfer"]
    assert [s.settings["setup"]["frozen"] for s in kept] == [3]
    resumed = T.run_plan(src, plan, store=store, target=small_target(src))
    assert calls["fit"] == 3 and (resumed.trained, resumed.reused, resumed.cancelled) == (1, 1, False)
    assert resumed.results["test_acc"].iloc[0] == res.results["test_acc"].iloc[0]


def test_bad_plans_are_refused_before_any_run(src, monkeypatch):
    calls = counting_fit(monkeypatch)
    ok = T.mode_setup("frozen", 3)
    for plan, err, words in [
        (T.Plan((ok,), labels=(1, 137)), DatasetError, "class '8' has 130 training images, fewer than the 137"),
        (T.Plan((ok,), labels=(0,)), DatasetError, "whole number of at least 1"),
        (T.Plan((ok, T.Setup(4, 0))), ConfigError, "copied stages must be a whole number from 0 to 3"),
        (T.Plan((ok,), seeds=()), ConfigError, "at least one of its seeds"),
        (T.Plan((ok,), seeds=(-1,)), ConfigError, "seeds must be whole numbers"),
    ]:
        with pytest.raises(err, match=words):
            T.run_plan(src, plan)
    for bad, words in [({"steps": 0}, "steps must be"), ({"lr": -1.0}, "learning rate"),
                       ({"batch_size": 0}, "batch size")]:
        with pytest.raises(ConfigError, match=words):
            T.Recipe(**bad)
    # a source that recorded no normalisation: refused with the source's statistics only
    bare = dataclasses.replace(src, meta=RunMeta())
    with pytest.raises(DatasetError, match="records no input normalisation"):
        T.check_plan(bare, T.Plan((ok,), labels=(1,)))
    T.check_plan(bare, T.Plan((T.mode_setup("frozen", 3, norm="target"),), labels=(1,)))
    assert calls["fit"] == 0


def test_results_file_round_trip(planned, tmp_path):
    _, _, res, _ = planned
    path = tmp_path / "t.json"
    T.write_results(str(path), res)
    back = T.load_results(str(path))
    assert json.loads(path.read_text())["format"] == "resnet-lens-transfer/1"
    assert [None if math.isnan(v) else v for v in back.results["per_class"]] == [1, None, 1, None]
    exact = dict(check_dtype=False, check_exact=True)  # every number as written, to the last bit
    pd.testing.assert_frame_equal(back.results.drop(columns="per_class"), res.results.drop(columns="per_class"),
                                  **exact)
    pd.testing.assert_frame_equal(back.curves, res.curves, **exact)
    pd.testing.assert_frame_equal(back.probe, res.probe, **exact)
    assert (back.trained, back.reused, back.cancelled) == (4, 0, False)
    assert back.meta["labels"] == [1, None] and back.meta["recipe"]["steps"] == 5 and back.meta["stages"] == 3
    pd.testing.assert_frame_equal(back.summary, res.summary, **exact)
    T.write_results(str(tmp_path / "t.csv"), res)
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == T.RESULT_COLUMNS and list(csv["test_acc"]) == list(res.results["test_acc"])
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(DatasetError, match="not a transfer results file"):
        T.load_results(str(tmp_path / "bad.json"))
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable transfer results file|is not valid JSON"):
        T.load_results(str(tmp_path / "junk.json"))


# ------------------------------------------------------------------ the linear probe and the readings
def test_linear_probe_one_row_per_stage_above_chance(src):
    res = T.linear_probe(src, T.digits_target(20, 0, "source", src.meta.normalisation))
    assert list(res["stage"]) == ["layer1", "layer2", "layer3"] and list(res["features"]) == [16, 32, 64]
    assert all(0.2 < a <= 1.0 for a in res["test_acc"])  # 5 classes: chance is 20 %
    assert res["test_acc"].max() > 0.6


def summary(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"setup": s, "labels": n, "test_acc_mean": a, "test_acc_std": 0.01, "seeds": 3}
                         for s, n, a in rows])


def test_readings_say_what_the_numbers_say():
    """Without per-seed results the readings test Welch's interval from the summary's means and stds:
    stds of 1 point over 3 seeds on each side give SE = √(2/3) points and ν = 4 (equal spreads and
    counts), so the 95 % interval is ±t(0.975, 4)·√(2/3) = ±2.3 points and the detectable difference
    (t(0.975, 4) + t(0.8, 4))·√(2/3) = 3.0 points = 30.4 of 1,000 test images."""
    from scipy import stats

    half = stats.t.ppf(0.975, 4) * math.sqrt(2 / 3)
    found = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * math.sqrt(2 / 3)
    assert (round(half, 1), round(found, 1), round(found * 10, 1)) == (2.3, 3.0, 30.4)

    def said(d: float) -> str:
        return f"95 % CI {d - half:+.1f} to {d + half:+.1f}, Welch t, 3 and 3 seeds; detectable ≥ 3.0 points = 30.4 " \
               "of 1,000 test images"

    s = summary([("from scratch", "1", 0.5), ("fixed feature extractor", "1", 0.4), ("fine-tune everything", "1", 0.6),
                 ("from scratch", "all", 0.9), ("fixed feature extractor", "all", 0.8),
                 ("fine-tune everything", "all", 0.95),
                 ("fixed feature extractor (target statistics)", "1", 0.3),
                 ("fixed feature extractor (target statistics)", "all", 0.795),  # its interval holds 0
                 ("fixed feature extractor (no normalisation)", "all", 0.5),
                 ("fine-tune everything (BN statistics frozen)", "1", 0.55)])
    assert T.readings(s, 3, test_size=1000) == [
        f"Fine-tuning everything minus from scratch, in points by labelled images per class: 1: +10.0 ({said(10)}); "
        f"all: +5.0 ({said(5)}).",
        f"Best with 1 per class: fine-tune everything at 60.0%, +10.0 points against from scratch ({said(10)}).",
        f"Best with every labelled image: fine-tune everything at 95.0%, +5.0 points against from scratch ({said(5)}).",
        "Normalising the frozen net's inputs with the target's own statistics instead of the source's, in points: "
        f"1: -10.0 ({said(-10)}); all: -0.5, no difference detected ({said(-0.5)}).",
        f"Feeding the frozen net unnormalised inputs instead of the source's statistics, in points: all: -30.0 "
        f"({said(-30)}).",
        f"Keeping BatchNorm's running statistics frozen while fine-tuning, in points: 1: -5.0 ({said(-5)})."]
    # any label settings, in numeric order; one seed: no test, and the reading says so, once
    s = summary([("from scratch", "50", 0.3), ("fine-tune everything", "50", 0.6), ("from scratch", "3", 0.2),
                 ("fine-tune everything", "3", 0.1)]).assign(seeds=1)
    assert T.readings(s, 3) == [
        "Fine-tuning everything minus from scratch, in points by labelled images per class: 3: -10.0; 50: +30.0 "
        "(at every setting: one run).",
        "Best with 3 per class: from scratch at 20.0%.",
        "Best with 50 per class: fine-tune everything at 60.0%, +30.0 points against from scratch (one run)."]
    # a tested difference and one with two seeds in one line; without a test size, points only
    s = summary([("from scratch", "1", 0.5), ("fine-tune everything", "1", 0.505), ("from scratch", "5", 0.5),
                 ("fine-tune everything", "5", 0.7)])
    s.loc[s["labels"] == "5", "seeds"] = 2
    assert T.readings(s, 3)[0] == (
        "Fine-tuning everything minus from scratch, in points by labelled images per class: 1: +0.5, no difference "
        f"detected (95 % CI {0.5 - half:+.1f} to {0.5 + half:+.1f}, Welch t, 3 and 3 seeds; detectable ≥ 3.0 points); "
        "5: +20.0 (2 seeds: no test).")
    assert T.readings(summary([("from scratch", "1", 0.5)]), 3) == []


def test_readings_pair_the_runs_of_one_seed():
    """Given the per-seed results, setups are compared seed by seed (one seed's runs share their labelled
    images, initial weights and batch order): scipy's paired t-test, in points."""
    from scipy import stats

    scratch, tuned = [0.50, 0.60, 0.55], [0.56, 0.65, 0.62]
    rows = [{"setup": setup, "per_class": 5, "seed": seed, "test_acc": acc, "status": "complete"}
            for setup, accs in (("from scratch", scratch), ("fine-tune everything", tuned))
            for seed, acc in enumerate(accs)]
    results = pd.DataFrame(rows, columns=T.RESULT_COLUMNS)
    ref = stats.ttest_rel(tuned, scratch)
    ci = ref.confidence_interval(0.95)
    d = [a - b for a, b in zip(tuned, scratch, strict=True)]
    found = (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * float(pd.Series(d).std(ddof=1)) / math.sqrt(3)
    line = T.readings(T.summarise(results), 3, results=results, test_size=500)[0]
    assert line == ("Fine-tuning everything minus from scratch, in points by labelled images per class: 5: "
                    f"+{100 * sum(d) / 3:.1f} (95 % CI {100 * ci.low:+.1f} to {100 * ci.high:+.1f}, paired t over 3 "
                    f"seeds; detectable ≥ {100 * found:.1f} points = {500 * found:.1f} of 500 test images).")
    assert ci.low > 0  # every seed better: the paired test finds it where Welch's (the spread across seeds) does not
    assert "no difference detected" in T.readings(T.summarise(results), 3)[0]


def test_the_markdown_table_gives_each_mean_with_its_t_interval_then_the_readings():
    # scratch 0.5, 0.6, 0.7 and fine-tuned 0.6, 0.8, 0.7: both sd 0.1, half width 4.302653 * 0.1 / sqrt(3)
    # = 0.248415 -> 60.0 [35.2, 84.8] and 70.0 [45.2, 94.8]; one seed of 'all' is labelled one run
    rows = [{"setup": setup, "per_class": 1, "seed": seed, "test_acc": acc, "status": "complete"}
            for setup, accs in (("from scratch", (0.5, 0.6, 0.7)), ("fine-tune everything", (0.6, 0.8, 0.7)))
            for seed, acc in enumerate(accs)]
    rows.append({"setup": "from scratch", "per_class": None, "seed": 0, "test_acc": 0.9, "status": "complete"})
    result = T.PlanResult(pd.DataFrame(rows, columns=T.RESULT_COLUMNS), pd.DataFrame(columns=T.CURVE_COLUMNS),
                          pd.DataFrame(columns=T.PROBE_COLUMNS), 7, 0, False, 1.0, {"stages": 3, "test": 500})
    lines = T.markdown(result).splitlines()
    assert lines[:4] == ["| setup | 1 per class | all labelled | seeds |", "|---|---|---|---|",
                         "| from scratch | 60.0 [35.2, 84.8] | 90.0 (one run) | 3 |",
                         "| fine-tune everything | 70.0 [45.2, 94.8] | — | 3 |"]
    empty = dataclasses.replace(result, results=pd.DataFrame(columns=T.RESULT_COLUMNS))
    assert T.markdown(empty) == "No finished runs in this comparison."
    assert lines[4] == "" and lines[5].startswith("- Fine-tuning everything minus from scratch, in points by "
                                                  "labelled images per class: 1: +10.0, no difference detected")


def test_summary_and_time_to_from_hand_made_runs():
    rows = [{"setup": "from scratch", "per_class": n, "seed": seed, "test_acc": acc, "status": status}
            for n, seed, acc, status in [(1, 0, 0.2, "complete"), (1, 1, 0.4, "complete"), (1, 2, 0.9, "cancelled"),
                                         (None, 0, 0.8, "complete")]]
    s = T.summarise(pd.DataFrame(rows, columns=T.RESULT_COLUMNS))
    assert list(s["labels"]) == ["1", "all"] and list(s["seeds"]) == [2, 1]
    assert s["test_acc_mean"].iloc[0] == pytest.approx(0.3) and s["test_acc_std"].iloc[0] == pytest.approx(0.1414213562)
    curves = pd.DataFrame([{"setup": "a", "per_class": 1, "seed": 0, "epoch": e, "test_acc": a, "train_acc": 0.0,
                            "seconds": 10.0 * e} for e, a in [(1, 0.5), (2, 0.55), (3, 0.6)]]
                          + [{"setup": "a", "per_class": None, "seed": 0, "epoch": 1, "test_acc": 0.4, "train_acc": 0.0,
                              "seconds": 5.0}], columns=T.CURVE_COLUMNS)
    t = T.time_to(curves, 0.55)  # reached exactly at epoch 2
    assert list(t["epoch"].iloc[:1]) == [2] and list(t["seconds"].iloc[:1]) == [20.0]
    assert len(t) == 2 and math.isnan(t["epoch"].iloc[1]) and math.isnan(t["seconds"].iloc[1])


def test_every_run_takes_at_least_its_steps():
    """The recipe rounds up to whole epochs: never fewer SGD steps than asked, whatever the images."""
    for images, batch, steps in [(6, 4, 5), (5, 32, 200), (134 * 5, 32, 200), (1, 1, 3)]:
        cfg = T.Recipe(steps=steps, batch_size=batch).config(images, 0)
        per_epoch = math.ceil(images / batch)
        assert cfg.epochs * per_epoch >= steps > (cfg.epochs - 1) * per_epoch, (images, batch, steps)


def test_the_linear_probe_is_scored_on_the_test_images(src):
    """Each stage's probe: logistic regression on the labelled images' standardised pooled features,
    scored on the test images (recomputed here from stage_features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    target = T.digits_target(5, 0, "source", src.meta.normalisation)
    probe = T.linear_probe(src, target)
    tr, te = T.stage_features(src.model, target.x_train), T.stage_features(src.model, target.x_test)
    for i, (a, b) in enumerate(zip(tr, te, strict=True)):
        scaler = StandardScaler().fit(a.numpy())
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(a.numpy()), target.y_train.numpy())
        assert probe["test_acc"].iloc[i] == clf.score(scaler.transform(b.numpy()), target.y_test.numpy())
    assert probe["test_acc"].tolist() != [1.0] * len(probe)  # 25 training images would score 100 %


def test_the_probe_reads_the_frozen_source_with_its_own_normalisation(src, planned):
    """The probe of a plan is linear_probe on the labelled images normalised as the source was trained
    (seed 0's draw), one per labels setting."""
    _, plan, res, _ = planned
    for n in plan.labels:
        got = res.probe[res.probe["per_class"].isna() if n is None else res.probe["per_class"] == n]
        want = T.linear_probe(src, small_target(src)(n, 0, "source"))
        assert list(got["test_acc"]) == list(want["test_acc"])
    none = T.linear_probe(src, small_target(src)(1, 0, "none"))  # what another input scale would give
    assert list(none["test_acc"]) != list(res.probe[res.probe["per_class"] == 1]["test_acc"])


def image_tree(root: Path, shades: tuple[int, ...], per_class: int = 4) -> Path:
    """A tiny ImageFolder: one folder of 20 px colour-noise images per shade (no train/val split)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(sum(shades))
    for c, shade in enumerate(shades):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((20, 20, 3)) * 80 + shade).astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_a_folder_target_is_stored_by_its_pixels_and_needs_known_statistics(src, tmp_path, monkeypatch):
    """A folder's name is only its last path component: another tree of that name, or the same tree at
    another crop, is another target and trains again, while the same one is reused. A source without
    recorded statistics is refused 'source statistics' before any run on a folder too, and its probe
    (after the runs) uses the target's own statistics instead of failing."""
    calls = counting_fit(monkeypatch)
    store = RunStore(tmp_path / "store")
    plan = T.Plan((T.mode_setup("scratch", 3),), (1,), (0,), T.Recipe(steps=2))
    a, b = image_tree(tmp_path / "a" / "imgs", (0, 60, 120)), image_tree(tmp_path / "b" / "imgs", (30, 90, 150))

    def run(root: Path, size: int) -> T.PlanResult:
        return T.run_plan(src, plan, store=store, target=T.folder_target(src, str(root), size=size, resize=size))

    first = run(a, 16)
    assert first.meta["target"] == "imgs" and (first.trained, first.reused) == (1, 0)
    assert (run(a, 16).trained, run(a, 12).trained, run(b, 16).trained) == (0, 1, 1)
    assert calls["fit"] == 3
    bare = dataclasses.replace(src, meta=RunMeta())  # a bare state_dict: no statistics recorded
    target = T.folder_target(bare, str(a), size=16, resize=16)
    with pytest.raises(DatasetError, match="records no input normalisation"):
        T.check_plan(bare, plan, target)
    own = T.Plan((T.mode_setup("scratch", 3, norm="target"),), (1,), (0,), T.Recipe(steps=2))
    res = T.run_plan(bare, own, target=target)
    assert calls["fit"] == 4 and not res.cancelled
    assert list(res.probe["test_acc"]) == list(T.linear_probe(bare, target(1, 0, "target"))["test_acc"])


def test_a_source_that_saw_the_target_classes_is_said_to():
    """A source trained on the target's classes of the same data measures no transfer to new classes:
    said for the shipped 10-class nets on classes 5-9, not for the 0-4 sources nor for other data."""
    ship = ROOT / "checkpoints"
    digits10, digits04 = load_checkpoint(ship / "digits_resnet20.pt"), load_checkpoint(SOURCE)
    mnist10 = load_checkpoint(ship / "mnist1d_resnet20.pt")
    mnist04 = load_checkpoint(ship / "transfer" / "mnist1d04_resnet1d20.pt")
    digits59, mnist59 = T.target_maker(digits04)(1, 0, "none"), T.target_maker(mnist04)(1, 0, "none")
    assert T.overlap_note(digits10, digits59) == (
        "the source net was trained on digits16 (classes 5, 6, 7, 8, 9 among them), so it has seen the target's "
        "classes: this measures reuse on the same classes, not transfer to new ones")
    assert T.overlap_note(mnist10, mnist59).startswith("the source net was trained on mnist1d (classes 5, 6, 7, 8, 9")
    assert T.overlap_note(digits04, digits59) is None and T.overlap_note(mnist04, mnist59) is None
    assert T.overlap_note(digits10, mnist59) is None  # other data: nothing seen
    assert T.overlap_note(digits04, T.digits_target(1, 0, "none", None, classes=(3, 4, 5))).startswith(
        "the source net was trained on digits16[0,1,2,3,4] (classes 3, 4 among them)")


def test_the_feature_extractor_is_read_against_the_probe_on_the_same_features():
    s = summary([("fixed feature extractor", "1", 0.5), ("fixed feature extractor", "all", 0.78)])
    probe = pd.DataFrame([{"stage": st, "features": f, "test_acc": a, "per_class": n}
                          for n, accs in ((1, (0.3, 0.4, 0.45)), (None, (0.9, 0.96, 0.94)))
                          for st, f, a in zip(("layer1", "layer2", "layer3"), (16, 32, 64), accs, strict=True)])
    assert T.readings(s, 3, probe) == [
        "The fixed feature extractor's head (mean over seeds) vs a linear probe fitted to convergence on the same "
        "frozen layer3 features (seed 0's labels), by labelled examples per class: 1: 50.0% vs 45.0%; all: 78.0% vs "
        "94.0%; with every label the probe is 16.0 points above: the recipe's head, not the features, limits the "
        "feature extractor."]
    close = s.assign(test_acc_mean=[0.5, 0.9])
    assert T.readings(close, 3, probe)[0].endswith(
        "all: 90.0% vs 94.0%; with every label the head gets within 5 points of the probe: the features themselves "
        "set the feature extractor's accuracy.")
    assert T.readings(s, 3) == [] and T.readings(s, 3, probe.iloc[:0]) == []
