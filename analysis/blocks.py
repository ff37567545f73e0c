"""BasicBlock vs Bottleneck (vs pre-activation): weights and MACs term by term.

At 256 channels in and out (He et al. 2015, Fig. 5) a BasicBlock holds 3*3*256*256*2 = 1,179,648
conv weights, a Bottleneck of width 64 holds 1*1*256*64 + 3*3*64*64 + 1*1*64*256 = 69,632.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .specs import MAX_WIDTH, conv_out

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
        raise ValueError(f"block kind must be one of {BLOCK_KINDS}, got {cfg.kind!r}")
    for what, v in (("input channels", cfg.cin), ("output channels", cfg.cout),
                    ("bottleneck width", cfg.width), ("spatial size", cfg.size)):
        if not isinstance(v, int) or not 1 <= v <= MAX_WIDTH:
            raise ValueError(f"{what} must be an integer between 1 and {MAX_WIDTH}, got {v!r}")
    if cfg.stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {cfg.stride}")
    if cfg.groups < 1 or cfg.width % cfg.groups:
        raise ValueError(f"bottleneck width {cfg.width} must be a multiple of groups={cfg.groups}")


def block_terms(cfg: BlockConfig) -> pd.DataFrame:
    """One row per weighted layer of the block: kernel, channels, the weight formula, weights and
    MACs at the chosen spatial size (stride on the 3x3, as torchvision v1.5), BN parameters."""
    check(cfg)
    pre = cfg.kind.startswith("preact")
    basic = cfg.kind.endswith("basic")
    h_out = conv_out(cfg.size, 3, cfg.stride, 1)
    rows: list[dict] = []

    def conv(name: str, k: int, cin: int, cout: int, hw: int, groups: int = 1, path: str = "residual") -> None:
        w = k * k * (cin // groups) * cout
        g = f"/{groups}" if groups > 1 else ""
        rows.append({"layer": name, "path": path, "kernel": f"{k}x{k}",
                     "formula": f"{k}·{k}·{cin}{g}·{cout}", "weights": w, "macs": w * hw * hw,
                     "bn_channels": 0})

    def bn(channels: int, path: str = "residual") -> None:
        rows.append({"layer": "bn", "path": path, "kernel": "", "formula": f"2·{channels}",
                     "weights": 0, "macs": 0, "bn_channels": channels})

    if basic:
        if pre:
            bn(cfg.cin)
        conv("conv1", 3, cfg.cin, cfg.cout, h_out)
        bn(cfg.cout)
        conv("conv2", 3, cfg.cout, cfg.cout, h_out)
        if not pre:
            bn(cfg.cout)
    else:
        if pre:
            bn(cfg.cin)
        conv("conv1", 1, cfg.cin, cfg.width, cfg.size)
        bn(cfg.width)
        conv("conv2", 3, cfg.width, cfg.width, h_out, cfg.groups)
        bn(cfg.width)
        conv("conv3", 1, cfg.width, cfg.cout, h_out)
        if not pre:
            bn(cfg.cout)
    if cfg.cin != cfg.cout or cfg.stride != 1:
        conv("downsample.0", 1, cfg.cin, cfg.cout, h_out, path="projection shortcut")
        if not pre:
            bn(cfg.cout, path="projection shortcut")
    df = pd.DataFrame(rows)
    df["bn_params"] = 2 * df["bn_channels"]
    return df.drop(columns="bn_channels")


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
