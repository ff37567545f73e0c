"""He et al. 2016's shortcut variants and activation placements as spec options: exact costs, the
built blocks compute what the paper writes, checkpoints keep them, bad settings are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis.arch.costs import layer_table, totals
from analysis.arch.models import build_model, state_dict_shapes
from analysis.arch.specs import ACTIVATIONS, SHORTCUT_VARIANTS, get_spec
from analysis.core.errors import SpecError
from analysis.experiments import lesion
from analysis.store.checkpoints import load_checkpoint, save_checkpoint, spec_to_dict
from tests.helpers import hooked_shapes, numel, torchinfo_mult_adds

R20 = get_spec("cifar_resnet20")  # 16/32/64 filters, 3 stages of 3 basic blocks, option A


def x_batch(spec, n=4, seed=0):
    return torch.randn(n, *spec.input_shape(),
                       generator=torch.Generator().manual_seed(seed))


def test_gate_parameters_by_hand():
    """A gate is a 1x1 conv with bias from the block input (cin) to every output channel (cout):
    stage 1: 3 x (16*16 + 16); stage 2: 16*32 + 32, 2 x (32*32 + 32); stage 3: 32*64 + 64, 2 x (64*64 + 64)."""
    gates = 3 * 272 + 544 + 2 * 1056 + 2112 + 2 * 4160
    assert gates == 13_904
    for variant in ("gate", "shortcut_gate"):
        spec = R20.replace(shortcut_variant=variant)
        assert totals(spec).params == totals(R20).params + gates == 269_722 + 13_904
        assert numel(build_model(spec)) == 283_626
    # the gate's MACs: 1x1 conv at the block's output size (32, 16, 8 px)
    gate_macs = (3 * 256 * 32 * 32 + (512 + 2 * 1024) * 16 * 16 + (2048 + 2 * 4096) * 8 * 8)
    assert totals(R20.replace(shortcut_variant="gate")).macs == totals(R20).macs + gate_macs


@pytest.mark.parametrize("variant", SHORTCUT_VARIANTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_every_variant_counts_exactly(variant, activation, block):
    """analytic == numel == torchinfo, state_dict keys from the plan == the built model's, and every
    traced layer's shape == the forward pass's, for each variant x placement x block type."""
    base = R20 if block == "basic" else get_spec("resnet50").replace(layers=(1, 2), widths=(8, 16), input_size=32,
                                                                     num_classes=5)
    spec = base.replace(shortcut_variant=variant, activation=activation, scale_residual=variant == "scale")
    model = build_model(spec)
    t = totals(spec)
    assert t.params == numel(model)
    assert t.torchinfo_mult_adds == torchinfo_mult_adds(model, spec)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == state_dict_shapes(spec)
    assert list(model.state_dict()) == list(state_dict_shapes(spec))
    rows = [(r["module"], r["out_shape"]) for r in layer_table(spec).to_dict("records")
            if r["op"] not in ("add", "scale", "sigmoid")]
    assert rows == hooked_shapes(spec)


def test_original_placement_keeps_torchvision_keys():
    """BN after addition moves bn2 behind the add: same keys and shapes as the original block."""
    assert state_dict_shapes(R20.replace(activation="bn_after_add")) == state_dict_shapes(R20)
    assert state_dict_shapes(R20.replace(activation="relu_preact")) == state_dict_shapes(R20)
    assert "layer1.0.gate.weight" in state_dict_shapes(R20.replace(shortcut_variant="gate"))


def block_and_input(spec, index=1):
    model = build_model(spec, seed=3).eval()
    block = [b for _, b in model.blocks()][index]
    x = torch.randn(2, block.plan.cin, 8, 8, generator=torch.Generator().manual_seed(1))
    return block, x


def test_blocks_compute_what_the_paper_writes():
    """Fig. 2 and Fig. 4 of He et al. 2016, written out by hand on layer1.1 (identity shortcut)."""
    with torch.no_grad():
        b, x = block_and_input(R20.replace(shortcut_variant="scale", shortcut_scale=0.5, scale_residual=True))
        f = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))
        assert torch.allclose(b(x), F.relu(0.5 * x + 0.5 * f))
        # at a λ where λ and 1 − λ differ (at 0.5 an F·λ for F·(1 − λ) passed unseen; issue 22's review)
        b, x = block_and_input(R20.replace(shortcut_variant="scale", shortcut_scale=0.3, scale_residual=True))
        f = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))
        assert torch.allclose(b(x), F.relu(0.3 * x + 0.7 * f))
        b, x = block_and_input(R20.replace(shortcut_variant="scale", shortcut_scale=2.0))
        assert torch.allclose(b(x), F.relu(2.0 * x + b.residual_branch(x)))
        b, x = block_and_input(R20.replace(shortcut_variant="gate"))
        g = torch.sigmoid(b.gate(x))
        assert torch.allclose(b(x), F.relu((1 - g) * x + g * b.residual_branch(x)))
        b, x = block_and_input(R20.replace(shortcut_variant="shortcut_gate"))
        g = torch.sigmoid(b.gate(x))
        assert torch.allclose(b(x), F.relu((1 - g) * x + b.residual_branch(x)))
        b, x = block_and_input(R20.replace(activation="bn_after_add"))
        assert torch.allclose(b(x), F.relu(b.bn2(x + b.conv2(F.relu(b.bn1(b.conv1(x)))))))
        b, x = block_and_input(R20.replace(activation="relu_before_add"))
        assert torch.allclose(b(x), x + F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))))
        b, x = block_and_input(R20.replace(activation="relu_preact"))
        want = x + b.bn2(b.conv2(F.relu(b.bn1(b.conv1(F.relu(x))))))
        before = x.clone()
        assert torch.allclose(b(x), want) and torch.equal(x, before)  # the input is left as it was


def test_every_placement_trains_a_step():
    """Backward through each placement and variant: an in-place op on the block input (which the
    shortcut carries) would fail here ("modified by an inplace operation")."""
    for changes in [dict(activation=a) for a in ACTIVATIONS] + [dict(shortcut_variant=v) for v in SHORTCUT_VARIANTS]:
        spec = R20.replace(layers=(1, 1, 1), input_size=8, **changes)
        model = build_model(spec).train()
        x = x_batch(spec, n=2).requires_grad_(True)
        model(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), changes


def test_gate_bias_starts_where_the_spec_says():
    model = build_model(R20.replace(shortcut_variant="gate", gate_bias=-4.0))
    biases = [b.gate.bias for _, b in model.blocks()]
    assert all(torch.equal(bias, torch.full_like(bias, -4.0)) for bias in biases)


def test_shortcut_gating_closed_is_the_identity_variant():
    """At b_g -> -inf, g -> 0: shortcut-only gating becomes x + F(x) (the original block) and
    exclusive gating becomes x alone (every branch switched off). Same weights otherwise."""
    plain_weights = build_model(R20, seed=5).eval()
    x = x_batch(R20)
    for variant in ("shortcut_gate", "gate"):
        gated = build_model(R20.replace(shortcut_variant=variant, gate_bias=-20.0), seed=5).eval()
        missing, unexpected = gated.load_state_dict(plain_weights.state_dict(), strict=False)
        assert not unexpected and all(".gate." in k for k in missing)
        for _, b in gated.blocks():
            torch.nn.init.zeros_(b.gate.weight)  # g = sigmoid(-20) = 2e-9 everywhere
        with torch.no_grad():
            got = gated(x)
            if variant == "shortcut_gate":
                want = plain_weights(x)
            else:
                h = plain_weights.stem(x)
                for _, b in plain_weights.blocks():
                    h = b(h, keep_residual=False)
                want = plain_weights.head(h)
        assert torch.allclose(got, want, atol=1e-5), variant


def test_dropout_shortcut_is_the_identity_in_eval_mode_and_seeded_in_training():
    spec = R20.replace(shortcut_variant="dropout")
    ident, drop = build_model(R20, seed=2).eval(), build_model(spec, seed=2).eval()
    assert state_dict_shapes(spec) == state_dict_shapes(R20)
    x = x_batch(R20)
    with torch.no_grad():
        assert torch.equal(drop(x), ident(x))
        drop.train()
        drop.noise.manual_seed(7)
        first = drop(x)
        drop.noise.manual_seed(7)
        again = drop(x)
    assert torch.equal(first, again)  # from the model's own generator: reproducible, global RNG untouched
    b = [b for _, b in drop.blocks()][1]
    with torch.no_grad():
        s = b.shortcut(torch.ones(1, 16, 8, 8))
    assert set(s.unique().tolist()) <= {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)


def test_deleting_a_gated_branch_keeps_the_gate():
    """Lesion: deleting F of a gated block leaves (1 - g(x)) * s(x), then the ReLU: the gate belongs
    to the join, so the deleted block is what the intact net would do with F = 0."""
    b, x = block_and_input(R20.replace(shortcut_variant="gate"))
    with torch.no_grad():
        g = torch.sigmoid(b.gate(x))
        assert torch.allclose(b(x, keep_residual=False), F.relu((1 - g) * x))
        infos = lesion.block_infos(build_model(R20.replace(shortcut_variant="gate")))
    assert len(infos) == 9


def test_variant_specs_survive_a_checkpoint(tmp_path):
    spec = R20.replace(shortcut_variant="scale", shortcut_scale=0.25, scale_residual=True, activation="bn_after_add")
    path = save_checkpoint(tmp_path / "v.pt", build_model(spec))
    ck = load_checkpoint(path)
    assert ck.spec == spec and ck.spec.variant_label == "constant scaling 0.25/0.75"
    # an original net's metadata has no variant fields: what older versions wrote and can read
    assert not {"shortcut_variant", "activation", "gate_bias"} & set(spec_to_dict(R20))


@pytest.mark.parametrize("changes,message", [
    (dict(residual=False, shortcut_variant="gate"), "a plain net has no shortcut for the exclusive gating"),
    (dict(scale_residual=True), "scale_residual .* belongs to the 'scale' variant"),
    (dict(shortcut_variant="scale", shortcut_scale=0.0), "shortcut_scale \\(lambda\\) must be in \\(0, 4\\]"),
    (dict(shortcut_variant="scale", shortcut_scale=float("nan")), "shortcut_scale must be a finite number"),
    (dict(gate_bias=-50.0), "gate_bias must be between -20 and 20"),
    (dict(shortcut_dropout=1.0), "shortcut_dropout must be between 0 and 1"),
    (dict(preact=True, activation="bn_after_add"), "full pre-activation .* already fixes"),
    (dict(activation="relu_after_bn"), "activation must be one of"),
    (dict(shortcut_variant="highway"), "shortcut_variant must be one of"),
    (dict(gate_bias=True), "gate_bias must be a finite number"),
])
def test_impossible_variants_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        R20.replace(**changes)


def test_variant_label_in_the_spec_description():
    assert R20.replace(shortcut_variant="shortcut_gate").variant.endswith("shortcut-only gating (b_g = -6)")
    assert "BN after addition" in R20.replace(activation="bn_after_add").variant
    assert R20.variant == "residual, shortcut A"


def test_diagrams_draw_the_gate_and_the_join():
    """The gate (1x1 conv -> sigmoid) hangs off the block input and feeds the add, drawn as a gate
    edge; the add says how the paths are weighted; BN after addition is drawn after it."""
    from analysis.arch import diagrams
    from analysis.arch.blockplan import block_plans

    spec = R20.replace(shortcut_variant="gate", activation="bn_after_add")
    g = diagrams.plan_graph(block_plans(spec)[3], 32)
    assert g.nodes["add"]["label"] == "(1−g)·s + g·F"
    assert g.edges["gate", "sigmoid"]["kind"] == "main" and g.edges["sigmoid", "add"]["kind"] == "gate"
    assert [g.nodes[n]["label"] for n in g.successors("add")] == ["bn2 (BN) after the add"]
    layer = diagrams.layer_graph(spec)
    assert layer.edges["layer2.0.gate@sigmoid", "layer2.0@add"]["kind"] == "gate"
    assert "layer2.0@scale" not in layer  # the weighting is the add's label, not a node
    dot = diagrams.diagram(R20.replace(shortcut_variant="scale", shortcut_scale=0.5, scale_residual=True), "block")
    assert "0.5·s + 0.5·F" in dot
    # every join's label, written out from He et al. 2016 Fig. 2 (issue 22's review: the shortcut-only
    # gating label and λ ≠ 0.5 were unchecked)
    labels = {"(1−g)·s + F": R20.replace(shortcut_variant="shortcut_gate"),
              "0.3·s + 0.7·F": R20.replace(shortcut_variant="scale", shortcut_scale=0.3, scale_residual=True),
              "0.3·s + F": R20.replace(shortcut_variant="scale", shortcut_scale=0.3), "+": R20}
    for label, variant_spec in labels.items():
        assert diagrams.plan_graph(block_plans(variant_spec)[3], 32).nodes["add"]["label"] == label


def test_path_decomposition_of_a_gated_net_runs():
    """The gradient-by-length measurement treats the gate as part of the join (held at its value)."""
    from analysis.experiments import paths

    model = build_model(R20.replace(shortcut_variant="shortcut_gate", input_size=8), seed=0).eval()
    x = x_batch(R20.replace(input_size=8), n=8)
    y = torch.arange(8) % 10
    df = paths.measure(model, x, y, paths.MeasureSettings(2, 8, 0))
    assert list(df["length"]) == list(range(10)) and (df["mean"] > 0).all()


def test_training_a_dropout_variant_is_reproducible_and_leaves_the_global_rng_alone():
    from analysis.core.meta import TrainConfig
    from analysis.data.data import load_digits
    from analysis.experiments.train import train

    data = load_digits(size=8, seed=0)
    spec = R20.replace(shortcut_variant="dropout", layers=(1, 1, 1), in_channels=1, input_size=8)
    state = torch.random.get_rng_state()
    a = train(spec, data, TrainConfig(epochs=1, seed=3))
    b = train(spec, data, TrainConfig(epochs=1, seed=3))
    assert torch.equal(torch.random.get_rng_state(), state)
    no_time = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert no_time == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                   strict=True))


def test_explorer_shows_a_variant_picked_in_the_sidebar():
    """The model picker's variant widgets reach the spec: gates add their parameters on the page."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app_pages" / "explorer.py"), default_timeout=120).run()
    at.sidebar.selectbox(key="explorer_model").set_value("cifar_resnet20").run()
    at.sidebar.selectbox(key="explorer_variant").set_value("shortcut_gate").run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Parameters"] == "283,626" and not at.exception
    assert "shortcut-only gating (b_g = -6)" in at.subheader[0].value
    at.sidebar.selectbox(key="explorer_variant").set_value("scale").run()
    at.sidebar.number_input(key="explorer_lambda").set_value(0.5).run()
    at.sidebar.checkbox(key="explorer_scale_residual").check().run()
    assert "constant scaling 0.5/0.5" in at.subheader[0].value
    at.sidebar.checkbox(key="explorer_preact").check().run()  # full pre-activation: no placement choice
    assert not at.exception and not at.error
    at.sidebar.checkbox(key="explorer_preact").uncheck().run()
    at.sidebar.selectbox(key="explorer_activation").set_value("bn_after_add").run()
    assert "BN after addition" in at.subheader[0].value and not at.error


@pytest.mark.usefixtures("own_run_store")
@pytest.mark.parametrize("changes, said", [
    (dict(shortcut_variant="shortcut_gate"), "a deleted block keeps its gate: y = (1 − g(x))·s(x)"),
    (dict(shortcut_variant="dropout_paper", shortcut_dropout=0.5), "a deleted block passes (1 − p)·s(x) on"),
])
def test_lesion_lab_says_what_deleting_a_gated_branch_means(changes, said):
    """A gated net (or the paper's dropout shortcut) trained here, picked in the Lesion lab: the page says
    what a deleted block still computes."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from analysis.core.meta import TrainConfig
    from analysis.data.data import load_digits
    from analysis.experiments.train import train_checkpoint
    from ui import cache

    data = load_digits(size=8, seed=0)
    spec = R20.replace(**changes, layers=(1, 1, 1), in_channels=1, input_size=8)
    ck = train_checkpoint(spec, data, TrainConfig(epochs=1, seed=0))
    cache.run_store().save_run("gated net", ck)
    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app_pages" / "lesion.py"), default_timeout=120).run()
    at.sidebar.selectbox(key="lesion_ckpt").set_value("trained here: gated net").run()
    assert not at.exception and not at.error
    assert any(said in c.value for c in at.caption)


def test_the_plain_twin_of_a_variant_has_no_shortcut_variant():
    twin = R20.replace(shortcut_variant="scale", scale_residual=True, activation="bn_after_add").plain_twin()
    assert not twin.residual and twin.shortcut_variant == "identity" and twin.activation == "bn_after_add"
