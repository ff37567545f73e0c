"""BasicBlock vs Bottleneck (vs pre-activation): weights and MACs term by term.

At 256 channels in and out (He et al. 2015, Fig. 5) a BasicBlock holds 3*3*256*256*2 = 1,179,648
conv weights, a Bottleneck of width 64 holds 1*1*256*64 + 3*3*64*64 + 1*1*64*256 = 69,632.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .blockplan import BlockPlan, make_plan
from .errors import SpecError
from .specs import MAX_WIDTH, BlockType, conv_out

BLOCK_KINDS = ("basic", "bottleneck", "preact_basic", "preact_bottleneck")


@dataclass(frozen=True)
class BlockConfig:
    kind: str
    cin: int = 256
    cout: int = 256
    width: int = 64  # bottleneck width (the 3x3's channels); a BasicBlock's inner width is cout
    size: int = 56  # input H = W
    stride: int = 1
    groups: int = 1


def check(cfg: BlockConfig) -> None:
    if cfg.kind not in BLOCK_KINDS:
        raise SpecError(f"block kind must be one of {BLOCK_KINDS}, got {cfg.kind!r}")
    for what, v in (("input channels", cfg.cin), ("output channels", cfg.cout),
                    ("bottleneck width", cfg.width), ("spatial size", cfg.size)):
        if not isinstance(v, int) or not 1 <= v <= MAX_WIDTH:
            raise SpecError(f"{what} must be an integer between 1 and {MAX_WIDTH}, got {v!r}")
    if cfg.stride not in (1, 2):
        raise SpecError(f"stride must be 1 or 2, got {cfg.stride}")
    if cfg.groups < 1 or cfg.width % cfg.groups:
        raise SpecError(f"bottleneck width {cfg.width} must be a multiple of groups={cfg.groups}")


def plan_for(cfg: BlockConfig) -> BlockPlan:
    """The block the page compares, described by the same plan the builder uses: stride on the 3x3
    (torchvision v1.5), option-B shortcut (a projection only where the shape changes)."""
    check(cfg)
    block: BlockType = "basic" if cfg.kind.endswith("basic") else "bottleneck"
    return make_plan(name=cfg.kind, stage=0, index=0, block=block, cin=cfg.cin,
                     width=cfg.cout if block == "basic" else cfg.width, cout=cfg.cout, stride=cfg.stride,
                     groups=cfg.groups, preact=cfg.kind.startswith("preact"), option="B")


def block_terms(cfg: BlockConfig) -> pd.DataFrame:
    """One row per weighted layer of the block: kernel, channels, the weight formula, weights and
    MACs at the chosen spatial size, BN parameters."""
    plan = plan_for(cfg)
    rows: list[dict] = []
    for path, ops in (("residual", plan.residual_ops), ("projection shortcut", plan.shortcut_ops)):
        size = cfg.size
        for op in ops:
            if op.kind == "conv":
                size = conv_out(size, op.kernel, op.stride, op.padding)
                w = op.weight_count
                g = f"/{op.groups}" if op.groups > 1 else ""
                rows.append({"layer": op.name, "path": path, "kernel": f"{op.kernel}x{op.kernel}",
                             "formula": f"{op.kernel}·{op.kernel}·{op.cin}{g}·{op.cout}", "weights": w,
                             "macs": w * size * size, "bn_params": 0})
            elif op.kind == "bn":
                rows.append({"layer": "bn", "path": path, "kernel": "", "formula": f"2·{op.cout}",
                             "weights": 0, "macs": 0, "bn_params": op.weight_count})
    return pd.DataFrame(rows)


def formula(df: pd.DataFrame, path: str = "residual") -> str:
    """'3·3·256·256 + 3·3·256·256 = 1,179,648' for the conv weights on one path."""
    convs = df[(df["path"] == path) & (df["weights"] > 0)]
    return " + ".join(convs["formula"]) + f" = {int(convs['weights'].sum()):,}"


def compare_blocks(cin: int = 256, cout: int = 256, width: int = 64, size: int = 56,
                   stride: int = 1, groups: int = 1) -> pd.DataFrame:
    """Totals for all four block kinds side by side."""
    out = []
    for kind in BLOCK_KINDS:
        df = block_terms(BlockConfig(kind, cin, cout, width, size, stride, groups))
        res = df[df["path"] == "residual"]
        out.append({
            "block": kind, "conv weights (residual)": int(res["weights"].sum()),
            "BN parameters": int(df["bn_params"].sum()),
            "shortcut weights": int(df.loc[df["path"] != "residual", "weights"].sum()),
            "total parameters": int(df["weights"].sum() + df["bn_params"].sum()),
            "MACs": int(df["macs"].sum()), "formula": formula(df),
        })
    return pd.DataFrame(out)
