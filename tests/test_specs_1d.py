"""1-D nets in the spec table (issue 13): exact facts by hand, and the bad inputs' messages."""

from __future__ import annotations

import pytest
import torch

from analysis.arch.blockplan import block_plans, feature_sizes, total_stride
from analysis.arch.costs import layer_table, totals
from analysis.arch.models import build_model
from analysis.arch.specs import MODELS, ONE_D_MODELS, custom_spec, get_spec
from analysis.core.errors import CheckpointError, SpecError
from analysis.store.checkpoints import check_state_dict, infer_spec


def test_vdcnn9_parameters_by_hand():
    """Conneau et al. 2017's 9-layer net as specified here: every term written out (conv weights +
    biases, BN gamma + beta, 1x1 projections + BN where the channels double, our 4-class fc)."""
    stem = 3 * 16 * 64 + 64
    layer1 = 2 * (3 * 64 * 64 + 64) + 2 * 128
    layer2 = (3 * 64 * 128 + 128) + (3 * 128 * 128 + 128) + 2 * 256 + 64 * 128 + 256
    layer3 = (3 * 128 * 256 + 256) + (3 * 256 * 256 + 256) + 2 * 512 + 128 * 256 + 512
    layer4 = (3 * 256 * 512 + 512) + (3 * 512 * 512 + 512) + 2 * 1024 + 256 * 512 + 1024
    fc = 512 * 4 + 4
    assert totals(get_spec("vdcnn9")).params == stem + layer1 + layer2 + layer3 + layer4 + fc == 1_757_636


def test_vdcnn_depths_count_conv_layers_as_the_paper():
    """Table 2: 9, 17, 29, 49 convolutional layers (first temporal conv + two per block)."""
    for depth in (9, 17, 29, 49):
        spec = get_spec(f"vdcnn{depth}")
        assert spec.depth == depth
        convs = layer_table(spec)
        main = convs[(convs["op"] == "conv") & (convs["path"] == "main")]
        assert len(main) == depth
    assert [get_spec(f"vdcnn{d}").layers for d in (9, 17, 29, 49)] == [
        (1, 1, 1, 1), (2, 2, 2, 2), (5, 5, 2, 2), (8, 8, 5, 3)]


def test_vdcnn_pools_between_stages_not_in_convs():
    spec = get_spec("vdcnn29")
    plans = block_plans(spec)
    pooled = [p.name for p in plans if p.entry]
    assert pooled == ["layer2.0", "layer3.0", "layer4.0"]
    assert all(op.stride == 1 for p in plans for op in p.residual_ops)  # the pool halves, the convs do not
    assert feature_sizes(spec) == {"stem": 1024, "layer1": 1024, "layer2": 512, "layer3": 256, "layer4": 128}
    df = layer_table(spec)
    assert df.loc[df["id"] == "layer2.0.pool", "out_shape"].item() == (64, 512)


def test_resnet1d_20_facts():
    spec = get_spec("resnet1d_20")
    t = totals(spec)
    assert (spec.dims, spec.input_shape(), spec.depth) == (1, (1, 40), 20)
    # stem 3; layer1: 6 convs of 3 at jump 1 (+12); layer2: +2 then 5 x 4 at jump 2; layer3: +4 then 5 x 8
    assert t.receptive_field == 3 + 12 + 2 + 20 + 4 + 40 == 81
    assert t.output_shape == (10, 1)
    assert t.params == sum(p.numel() for p in build_model(spec).parameters()) == 360_490
    # option A: the plain twin has the same weights
    assert totals(get_spec("plain_resnet1d_20")).params == t.params


def _recorder(shapes: dict[str, tuple[int, ...]], name: str):
    def record(mod: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        shapes.setdefault(name, tuple(output.shape[1:]))  # returns None: the output is kept
    return record


def test_every_1d_builtin_runs_at_its_traced_shapes():
    for name in ONE_D_MODELS:
        spec = MODELS[name]
        model = build_model(spec).eval()
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [m.register_forward_hook(_recorder(shapes, n)) for n, m in model.named_modules()
                 if n.endswith(("conv1", "conv2", "pool"))]
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *spec.input_shape()))
        finally:
            for h in hooks:
                h.remove()
        assert tuple(out.shape) == (2, spec.num_classes)
        df = layer_table(spec).set_index("id")
        for n, shape in shapes.items():
            assert tuple(df.loc[n, "out_shape"]) == shape, (name, n)


def test_sequence_shorter_than_total_stride_is_refused():
    spec = get_spec("vdcnn29")
    assert total_stride(spec) == 8
    assert get_spec("vdcnn29", input_size=8).input_size == 8
    with pytest.raises(SpecError, match=r"a sequence of 7 samples is shorter than the net's total stride 8 "
                                        r"\(stages 1 x 2 x 2 x 2\)"):
        get_spec("vdcnn29", input_size=7)
    with pytest.raises(SpecError, match="shorter than the net's total stride 4"):
        get_spec("resnet1d_20", input_size=3)


def test_bad_1d_fields():
    with pytest.raises(SpecError, match="dims must be 1"):
        get_spec("resnet1d_20").replace(dims=3)
    with pytest.raises(SpecError, match="stem_width must equal the input channels"):
        custom_spec(block="basic", layers=(1,), widths=(8,), stem="none", stem_width=4, in_channels=2, dims=1,
                    input_size=16)
    with pytest.raises(SpecError, match="downsampling must be one of"):
        get_spec("vdcnn9").replace(downsampling="avgpool")
    with pytest.raises(SpecError, match="sequence length must be between 1 and 1,048,576"):
        get_spec("resnet1d_8", input_size=(1 << 20) + 1)
    # 2-D keeps its own bound
    with pytest.raises(SpecError, match="between 1 and 4096 pixels"):
        get_spec("cifar_resnet20", input_size=5000)


def test_no_stem_net_starts_at_the_input():
    spec = custom_spec(block="basic", layers=(1,), widths=(256,), stem="none", in_channels=128, dims=1,
                       input_size=64, conv_bias=True, num_classes=10, shortcut="B")
    assert spec.stem_width == 128 and spec.depth == 3  # two convs + fc
    df = layer_table(spec)
    assert df["id"].tolist()[:3] == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu"]
    # the notes' block with a projection applied: conv1 3*128*256 + 256, conv2 3*256*256 + 256, two BN,
    # the 1x1 projection 128*256 + its BN, fc 256*10 + 10
    assert totals(spec).params == (3 * 128 * 256 + 256) + (3 * 256 * 256 + 256) + 2 * 512 + 128 * 256 + 512 + 2570


def test_1d_and_2d_checkpoints_are_not_confused():
    one_d = build_model("resnet1d_20").state_dict()
    with pytest.raises(CheckpointError, match=r"holds 1-D \(Conv1d\) weights .* cifar_resnet20 is a 2-D net: "
                                              r"open it as a 1-D net"):
        check_state_dict(get_spec("cifar_resnet20"), one_d, "x.pt")
    two_d = build_model("cifar_resnet20").state_dict()
    with pytest.raises(CheckpointError, match=r"holds 2-D \(Conv2d\) weights .* open it as a 2-D net"):
        check_state_dict(get_spec("resnet1d_20"), two_d, "y.pt")
    assert infer_spec(one_d, plain=False).dims == 1
    assert infer_spec(two_d, plain=False).dims == 2


def test_1d_metadata_round_trips_and_2d_keys_unchanged():
    from analysis.store.checkpoints import spec_from_dict, spec_to_dict

    for name in ("vdcnn29", "resnet1d_20", "plain_vdcnn9"):
        spec = get_spec(name)
        d = spec_to_dict(spec)
        assert d["dims"] == 1
        assert spec_from_dict(d) == spec
    # a 2-D net's metadata has no 1-D fields, so run-store keys hashed from it did not move
    assert not {"dims", "conv_bias", "downsampling"} & set(spec_to_dict(get_spec("cifar_resnet20")))


def test_a_bare_vdcnn_state_dict_is_read_as_vdcnn():
    """What the weights show (Conv1d, the stem without BN, conv biases) and what they cannot (max-pool
    downsampling, the length), taken from the built-in it matches, also when a length is given."""
    import io

    from analysis.store.checkpoints import load_checkpoint

    sd = build_model("vdcnn29").state_dict()
    spec = infer_spec(sd, plain=False)
    assert (spec.dims, spec.stem, spec.conv_bias, spec.downsampling, spec.input_size) == (1, "vdcnn", True,
                                                                                             "maxpool", 1024)
    buf = io.BytesIO()
    torch.save(sd, buf)
    ck = load_checkpoint(buf.getvalue(), name="v.pt", input_size=100)
    assert (ck.spec.name, ck.spec.downsampling, ck.spec.input_size) == ("v", "maxpool", 100)
    # a 1-D net matching no built-in keeps what the weights say, at MNIST-1D's 40 samples
    one_d = infer_spec(build_model(get_spec("resnet1d_20").replace(widths=(8, 16, 32), stem_width=8)).state_dict(),
                       plain=False)
    assert (one_d.dims, one_d.stem, one_d.conv_bias, one_d.input_size) == (1, "cifar", False, 40)


def test_mnist1d_cache_with_a_label_out_of_range_is_refused():
    import numpy as np

    from analysis.core.errors import DatasetError
    from analysis.data import mnist1d

    arrays = {k: np.zeros(shape, dtype=np.float32 if k.startswith("x") else np.int64)
              for k, shape in mnist1d.SHAPES.items()}
    arrays["y"][0] = mnist1d.CLASSES  # one label past the last class
    with pytest.raises(DatasetError, match="labels outside 0..9"):
        mnist1d._check(arrays, "cache")
    arrays["y"][0] = mnist1d.CLASSES - 1
    mnist1d._check(arrays, "cache")


def test_counter_explanation_names_conv_biases_of_1d_nets():
    from analysis.arch.conventions import explain_difference
    from analysis.arch.costs import by_op

    text = explain_difference(get_spec("vdcnn9"))
    assert "bias adds (the fc's 4 and each conv bias once per output position)" in text
    assert "bias adds (the fc's 10 biases)" in explain_difference(get_spec("cifar_resnet20"))
    kinds = by_op(layer_table(get_spec("vdcnn9")))["kind"].tolist()
    assert "conv 3" in kinds and "conv 1 (shortcut)" in kinds and not [k for k in kinds if k.startswith("conv") and "x" in k]
