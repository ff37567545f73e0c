"""Property tests: for random valid specs, 2-D and 1-D, analytic counts == numel() == torchinfo, and
every layer's output shape equals what the forward pass produces."""

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.arch.blockplan import total_stride
from analysis.arch.costs import layer_table, totals
from analysis.arch.models import build_model
from analysis.arch.specs import ACTIVATIONS, DOWNSAMPLINGS, SHORTCUT_VARIANTS, STEM_TYPES, custom_spec
from analysis.core.errors import SpecError
from tests.fuzz.exact import reference_totals
from tests.helpers import hooked_shapes, numel, torchinfo_mult_adds

# 40 random specs per property in the suite; HYPOTHESIS_EXAMPLES=3000 for a deep run (done: 0 failures)
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", 40))


@st.composite
def specs(draw):
    n = draw(st.integers(1, 4))
    block = draw(st.sampled_from(["basic", "bottleneck"]))
    stem = draw(st.sampled_from(["imagenet", "cifar"]))
    groups = draw(st.sampled_from([1, 2, 4])) if block == "bottleneck" else 1
    wpg = draw(st.sampled_from([16, 32, 64, 128])) if block == "bottleneck" else 64
    widths = sorted(draw(st.lists(st.integers(4, 24), min_size=n, max_size=n)))
    shortcut = draw(st.sampled_from(["A", "B", "C"]))
    stem_width = draw(st.integers(2, 16))
    if shortcut == "A":
        stem_width = min(stem_width, widths[0])
    spec = custom_spec(
        block=block, layers=draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)),
        widths=[w * groups for w in widths], stem=stem, stem_width=stem_width,
        shortcut=shortcut, residual=draw(st.booleans()), preact=draw(st.booleans()),
        stride_on=draw(st.sampled_from(["3x3", "1x1"])), groups=groups, width_per_group=wpg,
        in_channels=draw(st.integers(1, 4)), num_classes=draw(st.integers(1, 20)), input_size=4096,
    )
    size = draw(st.integers(total_stride(spec), total_stride(spec) + 40))
    # He et al. 2016's variants: gates add a biased 1x1 conv and elementwise work, placements move ops
    variant = draw(st.sampled_from(SHORTCUT_VARIANTS)) if spec.residual else "identity"
    activation = "original" if spec.preact else draw(st.sampled_from(ACTIVATIONS))
    return spec.replace(input_size=size, shortcut_variant=variant, activation=activation,
                        scale_residual=variant == "scale" and draw(st.booleans()))


@st.composite
def specs_1d(draw):
    """1-D nets (Conv1d over C x L): every stem (the VDCNN temporal conv and none among them), conv
    bias on or off, downsampling by stride or VDCNN's max pool, random stage strides, both blocks,
    options A/B/C and He et al. 2016's variants; the length from the total stride (the shortest a
    1-D spec accepts) up."""
    n = draw(st.integers(1, 4))
    block = draw(st.sampled_from(["basic", "bottleneck"]))
    stem = draw(st.sampled_from(STEM_TYPES))
    groups = draw(st.sampled_from([1, 2, 4])) if block == "bottleneck" else 1
    wpg = draw(st.sampled_from([16, 32, 64, 128])) if block == "bottleneck" else 64
    widths = sorted(draw(st.lists(st.integers(4, 24), min_size=n, max_size=n)))
    shortcut = draw(st.sampled_from(["A", "B", "C"]))
    in_channels = draw(st.integers(1, 4))  # at most the narrowest stage: option A works without a stem too
    # without a stem the first block sees the input: its channels are the stem width
    stem_width = in_channels if stem == "none" else draw(st.integers(2, 16))
    if shortcut == "A":  # zero padding cannot shrink channels (a SpecError, tested in test_specs)
        stem_width = min(stem_width, widths[0] * groups)
    spec = custom_spec(
        block=block, layers=draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)),
        widths=[w * groups for w in widths], stem=stem, stem_width=stem_width,
        shortcut=shortcut, residual=draw(st.booleans()), preact=draw(st.booleans()),
        stride_on=draw(st.sampled_from(["3x3", "1x1"])), groups=groups, width_per_group=wpg,
        in_channels=in_channels, num_classes=draw(st.integers(1, 20)), input_size=1 << 20, dims=1,
        conv_bias=draw(st.booleans()), downsampling=draw(st.sampled_from(DOWNSAMPLINGS)),
    ).replace(strides=draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n)))
    stride = total_stride(spec)
    size = draw(st.integers(stride, 4 * stride + 40))
    variant = draw(st.sampled_from(SHORTCUT_VARIANTS)) if spec.residual else "identity"
    activation = "original" if spec.preact else draw(st.sampled_from(ACTIVATIONS))
    return spec.replace(input_size=size, shortcut_variant=variant, activation=activation,
                        scale_residual=variant == "scale" and draw(st.booleans()))


def forward_shapes(spec):
    """(module name, output shape without the batch) of every leaf-module call in execution order, and
    the net's output shape; C x L for 1-D nets, C x H x W for 2-D, the fc's (classes,) padded with 1s
    to the trace's (classes, 1) or (classes, 1, 1)."""
    model = build_model(spec).eval()
    rank = spec.dims + 1
    seen = []
    handles = [mod.register_forward_hook(
        lambda m, i, o, name=name: seen.append((name, tuple(o.shape[1:]) + (1,) * (rank - o.dim() + 1))))
        for name, mod in model.named_modules() if name and not list(mod.children())]
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *spec.input_shape()))
    finally:
        for h in handles:
            h.remove()
    return seen, tuple(out.shape)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_analytic_counts_equal_pytorch(spec):
    t = totals(spec)
    model = build_model(spec)
    assert t.params == numel(model)
    assert t.torchinfo_mult_adds == torchinfo_mult_adds(model, spec)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_layer_shapes_equal_forward(spec):
    # the add, the variants' weighting and the gate's sigmoid are functional (no module to hook)
    rows = [(r["module"], r["out_shape"]) for r in layer_table(spec).to_dict("records")
            if r["op"] not in ("add", "scale", "sigmoid")]
    assert rows == hooked_shapes(spec)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.sampled_from([1, 64, 1024, 65536]))
def test_totals_are_exact_python_ints(spec, scale):
    """Every total is a Python int equal to an independent big-int count, also when the widths are
    scaled towards MAX_WIDTH (where int64 sums wrapped: issue 10, item 2)."""
    try:
        spec = spec.replace(widths=[min(w * scale, 65536) for w in spec.widths], input_size=4096)
    except SpecError:
        pass  # e.g. an inner width past MAX_WIDTH: the unscaled spec is still checked
    t = totals(spec)
    ref = reference_totals(spec)
    shown = dict(params=t.params, macs=t.macs, flops=t.flops, torchinfo=t.torchinfo_mult_adds,
                 activation_bytes=t.activation_bytes, receptive_field=t.receptive_field)
    assert all(type(v) is int for v in shown.values())
    assert shown == {k: ref[k] for k in shown}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs_1d())
def test_1d_analytic_counts_equal_pytorch(spec):
    t = totals(spec)
    model = build_model(spec)
    assert t.params == numel(model)
    assert t.torchinfo_mult_adds == torchinfo_mult_adds(model, spec)
    assert type(t.params) is int and t.params == reference_totals(spec)["params"]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs_1d())
def test_1d_layer_shapes_equal_forward(spec):
    """The traced C x L of every module call is the shape the built Conv1d net produces, and so is
    the output: (1, classes)."""
    table = layer_table(spec).to_dict("records")
    rows = [(r["module"], r["out_shape"]) for r in table if r["op"] not in ("add", "scale", "sigmoid")]
    seen, out = forward_shapes(spec)
    assert rows == seen
    assert all(len(shape) == 2 for _, shape in rows)  # C x L throughout, never a 2-D map
    assert out == (1, spec.num_classes) == (1, table[-1]["out_shape"][0])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs_1d())
def test_1d_totals_are_exact(spec):
    """Every 1-D total equals the independent big-int count (tests/fuzz/exact.py walks the plans)."""
    t = totals(spec)
    ref = reference_totals(spec)
    shown = dict(params=t.params, macs=t.macs, flops=t.flops, torchinfo=t.torchinfo_mult_adds,
                 activation_bytes=t.activation_bytes, receptive_field=t.receptive_field)
    assert all(type(v) is int for v in shown.values())
    assert shown == {k: ref[k] for k in shown}
