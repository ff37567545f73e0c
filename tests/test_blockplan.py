"""The one block description: what it says, and that every consumer follows it.

The last test is the proof that a block variant touches one place: it changes only
``analysis.arch.blockplan`` (to He et al. 2016's "ReLU before addition", Fig. 4c) and checks that the
builder, the cost tracer, the state_dict shapes, torchinfo and the lesion engine all follow.
"""

import pytest
import torch
import torch.nn.functional as F

from analysis.arch.blockplan import Op, block_plans
from analysis.arch.costs import layer_table, totals
from analysis.arch.models import build_model, state_dict_shapes
from analysis.arch.specs import custom_spec, get_spec
from analysis.experiments import lesion
from tests.helpers import hooked_shapes, numel, torchinfo_mult_adds


def test_resnet50_plans_follow_torchvision_v15():
    plans = block_plans(get_spec("resnet50"))
    assert [p.name for p in plans][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    assert len(plans) == 16 and [p.stage for p in plans].count(2) == 6
    b = plans[3]  # layer2.0: 256 -> 512, stride 2 on the 3x3, projection shortcut
    assert (b.cin, b.cout, b.stride, b.shortcut, b.downsample) == (256, 512, 2, "projection", True)
    convs = [op for op in b.residual_ops if op.kind == "conv"]
    assert [(op.name, op.cin, op.cout, op.kernel, op.stride) for op in convs] == [
        ("conv1", 256, 128, 1, 1), ("conv2", 128, 128, 3, 2), ("conv3", 128, 512, 1, 1)]
    assert [op.name for op in b.shortcut_ops] == ["downsample.0", "downsample.1"]
    assert b.activation_after_add and b.residual_ops[-1].kind == "bn"
    v1 = block_plans(get_spec("resnet50", stride_on="1x1"))[3]
    assert [op.stride for op in v1.residual_ops if op.kind == "conv"] == [2, 1, 1]


@pytest.mark.parametrize("option,kinds", [("A", ["identity", "pad", "identity"]),
                                          ("B", ["identity", "projection", "identity"]),
                                          ("C", ["projection", "projection", "projection"])])
def test_shortcut_options(option, kinds):
    spec = custom_spec(block="basic", layers=(1, 2), widths=(16, 32), stem="cifar", stem_width=16,
                       shortcut=option, input_size=16)
    assert [p.shortcut for p in block_plans(spec)] == kinds
    assert [p.shortcut for p in block_plans(spec.plain_twin())] == ["none"] * 3


def test_preact_plan():
    p = block_plans(get_spec("cifar_resnet20", preact=True, shortcut="B"))[3]
    assert [op.kind for op in p.residual_ops] == ["bn", "relu", "conv", "bn", "relu", "conv"]
    assert p.residual_ops[0].cout == p.cin  # the first BN normalises the block's input
    assert [op.kind for op in p.shortcut_ops] == ["conv"]  # projection without BN
    assert not p.activation_after_add


def test_op_weight_counts():
    assert Op("c", "conv", 256, 256, kernel=3).weight_count == 3 * 3 * 256 * 256
    assert Op("c", "conv", 128, 128, kernel=3, groups=32).weight_count == 3 * 3 * 4 * 128
    assert Op("c", "conv", 16, 8, kernel=3, bias=True).weight_count == 3 * 3 * 16 * 8 + 8
    assert Op("b", "bn", 64, 64).weight_count == 128
    assert Op("r", "relu", 64, 64).weight_count == 0


def test_a_placement_written_only_in_the_plan():
    """He et al. 2016 Fig. 4c, "ReLU before addition": the branch ends in a ReLU, nothing follows
    the add. Only the plan says so (``_unit`` / ``after_add``); tracer, builder, lesion follow."""
    original = custom_spec(block="basic", layers=(2, 2), widths=(8, 16), stem="cifar", stem_width=8,
                           shortcut="B", input_size=8, num_classes=4)
    before = layer_table(original)
    spec = original.replace(activation="relu_before_add")

    plan = block_plans(spec)[0]
    assert plan.residual_ops[-1].kind == "relu" and not plan.activation_after_add
    table = layer_table(spec)
    # the tracer: one ReLU per block moved from after the add into the branch, same count
    assert (table["op"] == "relu").sum() == (before["op"] == "relu").sum()
    assert list(table.loc[table["block"] == "layer1.0", "op"]) == ["conv", "bn", "relu", "conv", "bn", "relu", "add"]
    # the builder: calls in trace order, weights where the shapes say, exact parameter and MAC counts
    rows = [(r["module"], r["out_shape"]) for r in table.to_dict("records") if r["op"] != "add"]
    assert rows == hooked_shapes(spec)
    model = build_model(spec).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == state_dict_shapes(spec)
    assert totals(spec).params == numel(model)
    assert totals(spec).torchinfo_mult_adds == torchinfo_mult_adds(model, spec)
    # forward: y = relu(F'(x)) + x, so outputs can be negative only through the shortcut
    block = model.layer1[0]
    x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        r = F.relu(block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x))))))
        assert torch.allclose(block(x), r + x)
        # the lesion engine uses the block's own rule: deleting F leaves x itself, no ReLU
        assert torch.equal(block(x, keep_residual=False), x)
        infos = lesion.block_infos(model)
        seq = lesion.deletion(len(infos), [1])
        h = model.stem(x.new_zeros(2, 3, 8, 8))
        preds = lesion.predict_sequences(model, x.new_zeros(2, 3, 8, 8), [seq])
        for i, b in enumerate(b for _, b in model.blocks()):
            h = b(h, keep_residual=i != 1)
        assert torch.equal(preds[0], model.head(h).argmax(1))


def test_downsampling_blocks_include_widening_at_stride_one():
    """layer1.0 of a bottleneck net widens 64 -> 256 at stride 1: it downsamples (projection, ↓,
    excluded from k-deletion pools and reordering) just like the strided first blocks."""
    plans = block_plans(get_spec("resnet50"))
    assert [p.name for p in plans if p.downsample] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert plans[0].stride == 1 and plans[0].shortcut == "projection"
    assert [p.name for p in block_plans(get_spec("resnet18")) if p.downsample] == ["layer2.0", "layer3.0", "layer4.0"]
