"""The notes' Conv1d block as written (analysis/arch/seed.py): its exact costs, our plan of it against the
literal module, and the diagnosis against what PyTorch really does."""

import itertools

import numpy as np
import pytest
import torch
import torchinfo
from torch import nn

from analysis.arch.blockplan import block_plans, make_plan
from analysis.arch.costs import exact_sum, layer_table, plan_table, torchinfo_mult_adds
from analysis.arch.models import Block
from analysis.arch.seed import (
    SeedBlock,
    SeedBlockError,
    SeedConfig,
    analyse,
    diagnose,
    fixed_plan,
    lengths,
    seed_plan,
    source,
)
from analysis.arch.specs import MAX_SEQUENCE_LENGTH, get_spec
from analysis.core.errors import SpecError

DEFAULT_PARAMS = 3 * 128 * 256 + 256 + 2 * 256 + 3 * 256 * 256 + 256 + 2 * 256


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shuffled(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random (default BN is gamma 1, beta 0, mean 0, var 1, which
    would hide a BN applied in the wrong place), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g))
    return module.eval()


def test_exact_parameter_count_at_the_defaults():
    cfg = SeedConfig()
    assert DEFAULT_PARAMS == 296_448
    assert numel(SeedBlock()) == DEFAULT_PARAMS
    assert exact_sum(plan_table(seed_plan(cfg), cfg.input_shape)["params"]) == DEFAULT_PARAMS
    assert sum(op.weight_count for op in seed_plan(cfg).residual_ops) == DEFAULT_PARAMS
    assert analyse(cfg).params == analyse(SeedConfig(shortcut=True)).params == DEFAULT_PARAMS


def test_macs_flops_and_torchinfo_at_the_defaults():
    cfg = SeedConfig()
    table = plan_table(seed_plan(cfg), cfg.input_shape)
    costs = analyse(cfg).costs
    assert costs is not None
    conv_macs = (3 * 128 * 256 + 3 * 256 * 256) * 128
    assert costs.macs == conv_macs == 37_748_736
    # 2 per MAC, 1 per bias add (2 x 256 x 128), 2 per BN element (2 x 256 x 128 each), 1 per ReLU element (2x)
    assert costs.flops == 2 * conv_macs + 2 * 256 * 128 + 2 * 2 * 256 * 128 + 2 * 256 * 128 == 75_759_616
    assert costs.output_shape == (256, 128) and costs.receptive_field == 5
    info = torchinfo.summary(SeedBlock(), input_size=(1, 128, 128), verbose=0)
    assert info.total_mult_adds == torchinfo_mult_adds(table) == costs.torchinfo_mult_adds == 37_815_296
    assert info.total_params == DEFAULT_PARAMS


@pytest.mark.parametrize("cfg", [SeedConfig(), SeedConfig(input_dim=256, shortcut=True),
                                 SeedConfig(input_dim=16, n_filters=24, kernel_size=5, padding=0, stride=2,
                                            length=40)],
                         ids=["no shortcut 128-256", "shortcut 256-256", "stride 2 no padding"])
def test_plan_built_block_is_the_seed_block(cfg):
    seed = shuffled(SeedBlock(**cfg.kwargs()))
    ours = Block(seed_plan(cfg)).eval()
    theirs = {k: v.shape for k, v in seed.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    assert list(ours.state_dict()) == list(theirs)  # the same order, so a notes checkpoint loads as it is
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(2, *cfg.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = seed(x.clone())
        got = ours(x.clone())
    assert got.shape == expected.shape == (2, cfg.n_filters, lengths(cfg)[1])
    assert torch.allclose(got, expected, atol=1e-5)
    # the identity really is added: without it the outputs differ
    if cfg.shortcut:
        seed.shortcut = False
        with torch.no_grad():
            assert not torch.allclose(seed(x.clone()), expected, atol=1e-3)


GRID = [SeedConfig(input_dim=c, n_filters=n, stride=s, padding=p, kernel_size=k, shortcut=sc, length=length)
        for c, n, s, p, k, sc, length in itertools.product((4, 8), (4, 8), (1, 2), (0, 1, 2), (1, 3, 5),
                                                            (False, True), (1, 3, 8))]


def run_literal(cfg: SeedConfig, x: torch.Tensor) -> torch.Tensor | RuntimeError:
    block = SeedBlock(**cfg.kwargs()).eval()
    try:
        with torch.no_grad():
            return block(x)
    except RuntimeError as exc:
        return exc


def test_diagnosis_matches_what_pytorch_does():
    """Over a grid of small configs: the literal block raises exactly where diagnose says it raises,
    with the message diagnose quotes; where diagnose passes it, it runs and (with a shortcut) keeps
    the input's shape, and our plan's table gives the shape it returns."""
    seen: dict[str, int] = {}
    for cfg in GRID:
        x = torch.randn(2, *cfg.input_shape, generator=torch.Generator().manual_seed(0))
        found = diagnose(cfg, batch=2)
        result = run_literal(cfg, x)
        if found is None:
            assert isinstance(result, torch.Tensor), (cfg, result)
            assert result.shape[1:] == tuple(plan_table(seed_plan(cfg), cfg.input_shape)["out_shape"].iloc[-1])
            if cfg.shortcut:
                assert result.shape == x.shape, cfg
            seen["runs"] = seen.get("runs", 0) + 1
            continue
        for problem in found.problems:
            seen[problem] = seen.get(problem, 0) + 1
        with pytest.raises(SpecError):  # the table of a block that cannot run is refused, not traced
            plan_table(seed_plan(cfg), cfg.input_shape)
        if found.raises:
            assert isinstance(result, RuntimeError), (cfg, found.message)
            assert found.error == f"RuntimeError: {result}", cfg
        else:  # out += x broadcast a single channel or sample of x: it ran, but no residual was added
            assert isinstance(result, torch.Tensor), cfg
            assert result.shape != x.shape and "PyTorch raises nothing here" in found.message, cfg
            seen["broadcast"] = seen.get("broadcast", 0) + 1
    # every kind of failure occurs in the grid, so none of the branches above is vacuous
    assert set(seen) == {"runs", "collapse", "channels", "stride", "padding", "broadcast"}, seen


def test_fixed_block_runs_wherever_the_notes_block_fails():
    flagged = [cfg for cfg in GRID if diagnose(cfg) is not None]
    assert len(flagged) > 100
    for cfg in flagged:
        plan = fixed_plan(cfg)
        block = shuffled(Block(plan))
        x = torch.randn(2, *cfg.input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = block(x)
        table = plan_table(plan, cfg.input_shape)
        assert y.shape[1:] == tuple(table["out_shape"].iloc[-1]), cfg
        assert y.shape[2] == -(-cfg.length // cfg.stride), cfg  # shrunk once, by the stride
        assert numel(block) == exact_sum(table["params"]), cfg
        if cfg.shortcut:
            changes = cfg.input_dim != cfg.n_filters or cfg.stride > 1
            assert plan.shortcut == ("projection" if changes else "identity"), cfg
            assert [op.stride for op in plan.residual_ops if op.kind == "conv"] == [cfg.stride, 1]
            assert "add" in set(table["op"])
        else:
            assert plan.shortcut == "none"


def test_canonical_diagnoses():
    channels = diagnose(SeedConfig(shortcut=True))
    assert channels is not None and channels.problems == ("channels",)
    assert "`out += x`" in channels.message and "out is 256×128, x is 128×128" in channels.message
    assert channels.error == ("RuntimeError: The size of tensor a (256) must match the size of tensor b (128) "
                              "at non-singleton dimension 1")
    assert "nn.Conv1d(128, 256, 1, stride=1, bias=False), nn.BatchNorm1d(256)" in channels.message
    assert "option B" in channels.message and "forward never calls it" in channels.message

    stride = diagnose(SeedConfig(input_dim=256, shortcut=True, stride=2))
    assert stride is not None and stride.problems == ("stride",)
    assert "conv1 takes L = 128 to L1 = 64 and conv2 takes 64 to L2 = 32" in stride.message
    assert "The stride on conv1 only" in stride.message and "128 → 64" in stride.message
    assert "nn.Conv1d(256, 256, 1, stride=2, bias=False)" in stride.message
    assert stride.error is not None and "(32) must match the size of tensor b (128) at non-singleton dimension 2" \
        in stride.error

    both = diagnose(SeedConfig(shortcut=True, stride=2))
    assert both is not None and both.problems == ("channels", "stride")
    assert "out is 256×32, x is 128×128" in both.message

    padding = diagnose(SeedConfig(input_dim=256, shortcut=True, padding=0))
    assert padding is not None and padding.problems == ("padding",)
    # at stride 2 a wrong padding is a second cause beside the stride (issue 22's review: a diagnosis
    # made only at stride 1 passed): L = 128, k = 3, p = 0 gives floor((128 − 3)/2) + 1 = 63, then 31
    strided = diagnose(SeedConfig(input_dim=256, shortcut=True, padding=0, stride=2))
    assert strided is not None and strided.problems == ("stride", "padding")
    assert "conv1 takes L = 128 to L1 = 63 and conv2 takes 63 to L2 = 31" in strided.message
    assert "even at stride 1" in padding.message and "Padding (k − 1)/2 = 1" in padding.message
    even = diagnose(SeedConfig(input_dim=256, shortcut=True, kernel_size=4))
    assert even is not None and "The fixed block uses kernel 5 with padding 2" in even.message
    assert fixed_plan(SeedConfig(input_dim=256, shortcut=True, kernel_size=4)).residual_ops[0].kernel == 5

    collapse = diagnose(SeedConfig(kernel_size=5, padding=0, length=3))
    assert collapse is not None and collapse.problems == ("collapse",)
    assert "conv1 collapses the length" in collapse.message
    assert "floor((3 + 2·0 − 5)/1) + 1 = −1" in collapse.message
    assert collapse.error == ("RuntimeError: Calculated padded input size per channel: (3). Kernel size: (5). "
                              "Kernel size can't be greater than actual input size")
    second = diagnose(SeedConfig(kernel_size=3, padding=0, stride=1, length=4))
    assert second is not None and "conv2 collapses the length" in second.message

    assert diagnose(SeedConfig()) is None
    assert diagnose(SeedConfig(n_filters=128, shortcut=True)) is None
    assert diagnose(SeedConfig(stride=2)) is None  # no shortcut: stride on both convs only shrinks by 4


def test_stored_downsample_changes_nothing():
    """The notes' ``downsample`` argument is kept, never applied: passing the right projection still fails."""
    proj = nn.Sequential(nn.Conv1d(4, 8, 1, bias=False), nn.BatchNorm1d(8))
    block = SeedBlock(input_dim=4, n_filters=8, shortcut=True, downsample=proj).eval()
    with pytest.raises(RuntimeError, match="non-singleton dimension 1"):
        block(torch.zeros(1, 4, 10))


def test_analysis_at_a_failing_config_gives_the_fixed_block():
    a = analyse(SeedConfig(shortcut=True))
    assert a.diagnosis is not None and a.table is None and a.costs is None
    assert a.fixed_table is not None and a.fixed_costs is not None
    # the projection: 1 x 128 x 256 weights and its BN's 2 x 256
    assert a.fixed_costs.params == DEFAULT_PARAMS + 128 * 256 + 2 * 256 == 329_728
    assert a.fixed_costs.output_shape == (256, 128)
    assert "downsample.0" in "".join(a.fixed_table["id"])


def test_source_is_the_module_that_runs():
    text = source(SeedConfig(stride=2))
    assert "class SeedBlock(nn.Module):" in text and "out += x" in text
    assert "SeedBlock(input_dim=128, n_filters=256, kernel_size=3, padding=1, stride=2, shortcut=False)" in text
    scope: dict = {}
    exec(source(SeedConfig(input_dim=4, n_filters=6, stride=2, length=10)), scope)  # the shown code runs as shown
    assert scope["y"].shape == (1, 6, 3)


@pytest.mark.parametrize(("field", "value"), [
    ("input_dim", 0), ("input_dim", 1.5), ("input_dim", True), ("n_filters", "256"), ("kernel_size", 0),
    ("padding", -1), ("stride", 0), ("length", MAX_SEQUENCE_LENGTH + 1), ("shortcut", 1), ("shortcut", "yes"),
])
def test_bad_settings_raise_our_error(field, value):
    with pytest.raises(SeedBlockError, match=field):
        SeedConfig(**{field: value})
    assert issubclass(SeedBlockError, SpecError) and issubclass(SeedBlockError, ValueError)


def test_numpy_integers_are_plain_ints():
    cfg = SeedConfig(input_dim=np.int64(64), length=np.int32(10))
    assert type(cfg.input_dim) is int and type(cfg.length) is int and cfg == SeedConfig(input_dim=64, length=10)


def test_plan_table_matches_the_layer_table_for_a_spec_block():
    """plan_table traces a block exactly as layer_table does inside a net."""
    spec = get_spec("resnet18")
    layers = layer_table(spec)
    rows = layers[layers["block"] == "layer2.0"]
    plan = next(p for p in block_plans(spec) if p.name == "layer2.0")
    alone = plan_table(plan, rows["in_shape"].iloc[0])
    cols = ["id", "op", "in_shape", "out_shape", "params", "macs", "flops", "bias_adds", "bn_params"]
    assert alone[cols].to_dict("records") == rows[cols].to_dict("records")
    assert list(alone.columns) == list(layers.columns)


def test_plan_table_refuses_shapes_that_do_not_fit():
    plan = make_plan(name="b", stage=0, index=0, block="basic", cin=8, width=8, cout=8, stride=1, dims=1)
    with pytest.raises(SpecError, match="takes 8 channels"):
        plan_table(plan, (4, 10))
    with pytest.raises(SpecError, match="2 whole numbers"):
        plan_table(plan, (8, 10, 10))
    with pytest.raises(SpecError, match="at least 1"):
        plan_table(plan, (8, 0))
    with pytest.raises(SpecError, match="conv1 .*leaves no output"):
        plan_table(seed_plan(SeedConfig(input_dim=8, n_filters=8, kernel_size=5, padding=0, length=2)), (8, 2))
    with pytest.raises(SpecError, match="the add needs equal shapes"):
        plan_table(seed_plan(SeedConfig(shortcut=True)), (128, 128))
