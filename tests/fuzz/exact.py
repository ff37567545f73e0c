"""Independent big-int reference counts for a spec, for the exactness checks of the cost tests.

Nothing here uses :mod:`analysis.arch.costs` or pandas: parameters come from the state_dict shapes
(:func:`analysis.arch.models.state_dict_shapes`), everything else from walking the block plans
(:func:`analysis.arch.blockplan.block_plans`) with :func:`analysis.arch.specs.conv_out` and Python ints, so a
wrapped int64 anywhere in the cost table shows up as a difference.
"""

from __future__ import annotations

from math import prod

from analysis.arch.blockplan import Op, block_plans
from analysis.arch.models import state_dict_shapes
from analysis.arch.specs import ResNetSpec, conv_out

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def reference_params(spec: ResNetSpec) -> int:
    """Learned parameters: the product of every state_dict shape that is not a BatchNorm buffer."""
    return sum(prod(shape) for key, shape in state_dict_shapes(spec).items()
               if key.rsplit(".", 1)[-1] not in BUFFERS)


def reference_counts(spec: ResNetSpec) -> dict[str, int]:
    """Every count one forward pass of one sample makes, by op kind, as Python ints."""
    n = dict(params=reference_params(spec), macs=0, bias_adds=0, bn_params=0, bn_elems=0, relu_elems=0,
             add_elems=0, sigmoid_elems=0, mul_elems=0, maxpool_in=0, maxpool_out=0, avgpool_in=0, avgpool_thop=0, out_elems=0,
             receptive_field=1)
    c, h = spec.in_channels, spec.input_size  # square maps (or sequences of h samples) throughout
    d = spec.dims  # a size h covers h ** d positions; a k-wide kernel has k ** d taps
    jump = 1  # receptive field along the main path: each k x k op adds (k - 1) x jump, stride multiplies jump

    def conv(cin: int, cout: int, k: int, s: int, p: int, groups: int, size: int, main: bool = True,
             bias: bool = False) -> int:
        nonlocal jump
        if main:
            n["receptive_field"] += (k - 1) * jump
            jump *= s
        out = conv_out(size, k, s, p)
        n["macs"] += k ** d * (cin // groups) * cout * out ** d
        if bias:
            n["bias_adds"] += cout * out ** d
        n["out_elems"] += cout * out ** d
        return out

    def elementwise(kind: str, channels: int, size: int) -> None:
        n[kind] += channels * size ** d
        n["out_elems"] += channels * size ** d
        if kind == "bn_elems":
            n["bn_params"] += 2 * channels

    def maxpool(channels: int, size: int) -> int:  # 3-wide, stride 2, padding 1
        nonlocal jump
        n["maxpool_in"] += channels * size ** d
        n["receptive_field"] += 2 * jump
        jump *= 2
        size = conv_out(size, 3, 2, 1)
        n["maxpool_out"] += channels * size ** d
        n["out_elems"] += channels * size ** d
        return size

    if spec.stem != "none":
        k = 7 if spec.stem == "imagenet" else 3
        h = conv(c, spec.stem_width, k, 2 if k == 7 else 1, k // 2, 1, h, bias=spec.conv_bias)
        c = spec.stem_width
    if spec.stem in ("imagenet", "cifar"):
        elementwise("bn_elems", c, h)
        elementwise("relu_elems", c, h)
    if spec.stem == "imagenet":
        h = maxpool(c, h)

    def run(ops: tuple[Op, ...], channels: int, size: int, main: bool) -> tuple[int, int]:
        for op in ops:
            if op.kind == "conv":
                size = conv(op.cin, op.cout, op.kernel, op.stride, op.kernel // 2, op.groups, size, main, op.bias)
                channels = op.cout
            elif op.kind == "maxpool":
                size = maxpool(channels, size)
            elif op.kind == "pad":
                size, channels = -(-size // op.stride), op.cout
                n["out_elems"] += channels * size ** d
            else:
                elementwise("bn_elems" if op.kind == "bn" else "relu_elems", channels, size)
        return channels, size

    for plan in block_plans(spec):
        c, h = run(plan.entry, c, h, True)  # VDCNN's pool in front of the block
        main = run(plan.residual_ops, c, h, True)
        if plan.residual:
            short = run(plan.shortcut_ops, c, h, False)  # 1x1 or subsampling: the field does not grow
            if short != main:
                raise AssertionError(f"{plan.name}: residual {main} != shortcut {short}")
            if plan.gate is not None:  # g = sigmoid(1x1 conv of the block input): off the main path
                elementwise("sigmoid_elems", *run((plan.gate,), c, h, False))
            # the join's weighting, by hand: lambda*s [+ (1-lambda)*F]; 1-g, (1-g)*s [, g*F]; the paper's
            # dropout shortcut's (1 - p)*s (read off the spec, not the plan's join: the oracle does not
            # reuse the code it checks)
            per = {"scale": 2 if spec.scale_residual else 1, "shortcut_gate": 2,
                   "gate": 3, "dropout_paper": 1}.get(spec.shortcut_variant, 0)
            if per:
                n["mul_elems"] += per * main[0] * main[1] ** d
                n["out_elems"] += main[0] * main[1] ** d
            elementwise("add_elems", *main)
        c, h = run(plan.after_add, *main, True)
    if spec.preact:
        elementwise("bn_elems", c, h)
        elementwise("relu_elems", c, h)
    n["avgpool_in"] += c * h ** d
    n["avgpool_thop"] += (h ** d + 1) * c
    n["out_elems"] += c
    n["macs"] += c * spec.num_classes
    n["bias_adds"] += spec.num_classes
    n["out_elems"] += spec.num_classes
    return n


def reference_totals(spec: ResNetSpec) -> dict[str, int]:
    """The totals the app shows (``costs.Totals`` and every counting convention), from
    :func:`reference_counts` by each convention's rule."""
    n = reference_counts(spec)
    pool_in = n["maxpool_in"] + n["avgpool_in"]
    flops = (2 * n["macs"] + n["bias_adds"] + 2 * n["bn_elems"] + n["relu_elems"]
             + (3 ** spec.dims - 1) * n["maxpool_out"]
             + n["avgpool_in"] + n["add_elems"] + n["sigmoid_elems"] + n["mul_elems"])
    return {
        "params": n["params"], "macs": n["macs"], "flops": flops,
        "activation_bytes": 4 * n["out_elems"], "receptive_field": n["receptive_field"],
        "paper": n["macs"],
        "torchinfo": n["macs"] + n["bias_adds"] + n["bn_params"],
        "fvcore": n["macs"] + 2 * n["bn_elems"] + n["avgpool_in"],
        "thop": n["macs"] + 4 * n["bn_elems"] + n["avgpool_thop"],
        "ptflops": n["macs"] + n["bias_adds"] + 2 * n["bn_elems"] + 2 * n["relu_elems"] + 2 * pool_in,
        "lens": flops,
    }
