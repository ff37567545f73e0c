"""``python -m analysis units``: the residual units of a net and its totals, as a table or JSON."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from analysis.arch import graphnet, sources
from analysis.cli.common import Stop, Subparsers


def add_parser(sub: Subparsers) -> None:
    un = sub.add_parser("units", help="list the residual units of a net (built-in, .pt2 program, ONNX model or your module) "
                                      "and its totals",
                        description="Finds every residual unit (an add of a tensor and a weighted function of it): "
                                    "its owning module, shortcut (identity, projection, zero-pad), join, shapes and "
                                    "branch costs. Built-in names read their plan; a .pt2 file (torch.export.save) "
                                    "and an ONNX file are read as a graph and never run.")
    un.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                    help="a built-in name (e.g. resnet50), a torch.export program (.pt2) or an ONNX model (.onnx)")
    un.add_argument("--module", default=None, metavar="PACKAGE.MODULE:FACTORY",
                    help="trusted Python: import PACKAGE.MODULE and call FACTORY() for an nn.Module (needs "
                         "--input-shape); exported here before it is read")
    un.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                    help="the example input for --module, or the fixed input of an ONNX file whose sizes are free "
                         "(with its batch), e.g. 1,3,224,224")
    un.add_argument("--input-dtype", default="float32", choices=list(sources.INPUT_DTYPES),
                    help="the example input's dtype for --module: float32, or int64 for a token model's ids")
    un.add_argument("--json", action="store_true", help='one JSON object {"units": [...], "params": N, "macs": N}')
    un.set_defaults(func=cmd_units)


def cmd_units(args: argparse.Namespace, stop: Stop) -> int:
    """The residual units of a built-in net (from its plan), an exported program (.pt2, from its
    graph) or a trusted module (``--module package.module:factory``, exported here), and its totals."""
    with graphnet.quiet_torch():  # a failed export is our one sentence, not torch's partial graph first
        net = sources.open_net(args.model, module=args.module, input_shape=args.input_shape,
                               input_dtype=args.input_dtype)
    rows = [u.as_row() for u in net.units]
    if args.json:
        print(json.dumps({"model": net.name, "input": [list(s) for s in net.input_shapes], "units": rows,
                          "params": net.params, "macs": net.macs, "flops": net.flops}))
        return 0
    print(f"{net.name}: input {' + '.join('×'.join(map(str, s)) for s in net.input_shapes)}; "
          f"{net.params:,} parameters, {net.macs:,} MACs, {net.flops:,} FLOPs")
    if not rows:
        print(graphnet.no_unit_reason(net))
        return 0
    table = [{"unit": r["unit"], "shortcut": r["shortcut"], "join": r["join"], "after": r["after"] or "-",
              "in": "×".join(map(str, r["in_shape"])), "out": "×".join(map(str, r["out_shape"])),
              "branch params": f"{r['branch_params']:,}", "branch MACs": f"{r['branch_macs']:,}",
              "inside": r["parent"] or "-"} for r in rows]
    print(pd.DataFrame(table).to_string(index=False))
    kinds = graphnet.summary(net.units)
    print(f"{kinds['units']} residual units: {kinds['identity']} identity, {kinds['projection']} projection, "
          f"{kinds['pad']} zero-pad shortcuts")
    return 0
