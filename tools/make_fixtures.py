"""Regenerate tests/fixtures from the real torchvision and FLOP counters.

Not part of the app or the suite: torchvision does not import beside our pinned torch, so this runs
once in a separate virtual environment, e.g.

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        torchinfo==1.8.0 thop ptflops fvcore && /tmp/tv/bin/pip install --no-deps -e .
    /tmp/tv/bin/python tools/make_fixtures.py

It records (1) every torchvision ResNet's state_dict key names and shapes, (2) torchvision's
outputs for weights set by :func:`analysis.core.compat.deterministic_state_dict` on a fixed input, so the
suite checks that our models load torchvision checkpoints with strict=True and compute the same
function, and (3) what thop, ptflops and fvcore report, so our reconstructions of their rules are
checked exactly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torchvision

from analysis.core.compat import deterministic_input, deterministic_state_dict

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
         "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"]
OUTPUT_NAMES = ["resnet18", "resnet50", "resnext50_32x4d"]


def main() -> None:
    warnings.filterwarnings("ignore")
    manifest, outputs = {}, {}
    for name in NAMES:
        model = getattr(torchvision.models, name)().eval()
        sd = model.state_dict()
        manifest[name] = [[k, list(v.shape)] for k, v in sd.items()]
        if name in OUTPUT_NAMES:
            model.load_state_dict(deterministic_state_dict({k: v.shape for k, v in sd.items()}), strict=True)
            with torch.no_grad():
                outputs[name] = model(deterministic_input()).tolist()
    (OUT / "torchvision_state_dicts.json").write_text(json.dumps(
        {"torchvision": torchvision.__version__, "torch": torch.__version__, "keys": manifest}))
    (OUT / "torchvision_outputs.json").write_text(json.dumps(outputs))

    from fvcore.nn import FlopCountAnalysis
    from ptflops import get_model_complexity_info
    from thop import profile

    counters: dict[str, dict[str, int | str]] = {}
    for name in ["resnet18", "resnet50", "resnet152"]:
        x = torch.randn(1, 3, 224, 224)
        m = getattr(torchvision.models, name)().eval()
        thop_macs, _ = profile(m, inputs=(x,), verbose=False)
        m = getattr(torchvision.models, name)().eval()
        pt, _ = get_model_complexity_info(m, (3, 224, 224), as_strings=False, print_per_layer_stat=False,
                                          backend="pytorch")
        m = getattr(torchvision.models, name)().eval()
        fv = FlopCountAnalysis(m, x)
        fv.unsupported_ops_warnings(False)
        fv.uncalled_modules_warnings(False)
        counters[name] = {"thop": int(thop_macs), "ptflops": int(pt), "fvcore": int(fv.total())}
    import fvcore
    import ptflops
    import thop
    counters["_versions"] = {"thop": thop.__version__, "ptflops": getattr(ptflops, "__version__", "0.7.5"),
                             "fvcore": fvcore.__version__, "torchvision": torchvision.__version__}
    (OUT / "counters.json").write_text(json.dumps(counters, indent=1))


if __name__ == "__main__":
    main()
