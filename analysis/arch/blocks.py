"""BasicBlock vs Bottleneck (vs pre-activation): weights and MACs term by term.

Two pairings. He et al. 2015, Fig. 5 sets a 64-d BasicBlock (two 3x3 convs, 64 channels: 3*3*64*64*2 =
73,728 conv weights; ResNet-34's block) beside a 256-d Bottleneck of width 64 (1*1*256*64 + 3*3*64*64 +
1*1*64*256 = 69,632; ResNet-50's): similar cost, the bottleneck 4x wider. The notes set both at 256
channels in and out, where the BasicBlock holds 3*3*256*256*2 = 1,179,648. Their Conv1d versions
(``dims=1``: 3-wide kernels over C x L) hold 3*256*256*2 = 393,216 and 256*64 + 3*64*64 + 64*256 =
45,056; MACs are weights times the output length instead of H x W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import pandas as pd

from analysis.arch.blockplan import BlockPlan, make_plan
from analysis.arch.costs import exact_column, exact_sum, plan_table
from analysis.arch.specs import MAX_INPUT_SIZE, MAX_SEQUENCE_LENGTH, MAX_WIDTH, BlockType, as_int, choice
from analysis.core.errors import SpecError

BLOCK_KINDS = ("basic", "bottleneck", "preact_basic", "preact_bottleneck")
# Which BasicBlock stands beside the bottleneck: Fig. 5's (as wide as the bottleneck's 3x3, the block
# ResNet-34 has where ResNet-50 has the bottleneck) or the notes' (the bottleneck's own input and output)
Pairing = Literal["fig5", "notes"]
PAIRINGS: tuple[Pairing, ...] = get_args(Pairing)
_PATHS = {"main": "residual", "shortcut": "projection shortcut"}  # the tracer's paths, as the page says them

# (field, what the page calls it, largest value): channels as wide as a spec's widest stage, the
# size as large as a spec's largest input (pixels; a 1-D block's length has its own bound, below).
_BOUNDS = (("cin", "input channels", MAX_WIDTH), ("cout", "output channels", MAX_WIDTH),
           ("width", "bottleneck width", MAX_WIDTH), ("size", "spatial size", MAX_INPUT_SIZE),
           ("stride", "stride", 2), ("groups", "groups", MAX_WIDTH))  # stride: 1 or 2
# a 1-D block's size is a sequence length, bounded like a 1-D spec's input
_BOUNDS_1D = tuple(("size", "sequence length", MAX_SEQUENCE_LENGTH) if name == "size" else (name, what, most)
                   for name, what, most in _BOUNDS)


@dataclass(frozen=True)
class BlockConfig:
    """One block of the block-comparison page. Validated when made (``SpecError`` on a wrong type or
    an out-of-range value); NumPy integers become plain ints."""

    kind: str
    cin: int = 256
    cout: int = 256
    width: int = 64  # bottleneck width (the 3x3's channels); a BasicBlock's inner width is cout
    size: int = 56  # input H = W (2-D) or length L in samples (1-D)
    stride: int = 1
    groups: int = 1
    dims: int = 2  # 1: Conv1d blocks on C x L (size = L); 2: Conv2d on C x H x W (size = H = W)

    def __post_init__(self) -> None:
        for name, _, _ in (*_BOUNDS, ("dims", "", 0)):
            value = getattr(self, name)
            n = as_int(value)
            if n is not None:  # the dataclass is frozen; this runs before anyone sees the instance
                object.__setattr__(self, name, n)
        check(self)


def check(cfg: BlockConfig) -> None:
    """Raises ``SpecError`` saying what to change: the kind, dims 1 or 2, whole numbers (not bools,
    floats or strings) within bounds (a 1-D length up to a 1-D spec's longest input), stride 1 or 2,
    groups dividing the bottleneck width."""
    if not isinstance(cfg.kind, str) or cfg.kind not in BLOCK_KINDS:
        raise SpecError(f"block kind must be one of {BLOCK_KINDS}, got {cfg.kind!r}")
    if as_int(cfg.dims) is None or cfg.dims not in (1, 2):
        raise SpecError(f"dims must be 1 (Conv1d) or 2 (Conv2d), got {cfg.dims!r}")
    for name, what, most in _BOUNDS if cfg.dims == 2 else _BOUNDS_1D:
        v = getattr(cfg, name)
        if as_int(v) is None:
            raise SpecError(f"{what} must be an integer, got {v!r} ({type(v).__name__})")
        if not 1 <= v <= most:
            raise SpecError(f"{what} must be an integer between 1 and {most}, got {v!r}")
    if cfg.width % cfg.groups:
        raise SpecError(f"bottleneck width {cfg.width} must be a multiple of groups={cfg.groups}")


def plan_for(cfg: BlockConfig) -> BlockPlan:
    """The block the page compares, described by the same plan the builder uses: stride on the 3x3
    (torchvision v1.5), option-B shortcut (a projection only where the shape changes)."""
    check(cfg)
    block: BlockType = "basic" if cfg.kind.endswith("basic") else "bottleneck"
    return make_plan(name=cfg.kind, stage=0, index=0, block=block, cin=cfg.cin,
                     width=cfg.cout if block == "basic" else cfg.width, cout=cfg.cout, stride=cfg.stride,
                     groups=cfg.groups, preact=cfg.kind.startswith("preact"), option="B", dims=cfg.dims)


def block_terms(cfg: BlockConfig) -> pd.DataFrame:
    """One row per weighted layer of the block: kernel, channels, the weight formula ('3·3·64·64' in
    2-D, '3·64·64' in 1-D), weights and MACs at the chosen size (output H x W, or output length),
    BN parameters."""
    plan = plan_for(cfg)
    # the block's traced rows (the cost table's): their counts, shapes and kernels are the registry's
    traced = plan_table(plan, (cfg.cin, *(cfg.size,) * cfg.dims))
    rows: list[dict[str, Any]] = []
    for r in traced.itertuples():
        if r.path not in _PATHS or r.op not in ("conv", "bn"):
            continue
        if r.op == "bn":
            rows.append({"layer": "bn", "path": _PATHS[r.path], "kernel": "", "formula": f"2·{r.out_shape[0]}",
                         "weights": 0, "macs": 0, "bn_params": int(r.bn_params)})
            continue
        dims = len(r.out_shape) - 1
        g = f"/{r.groups}" if r.groups > 1 else ""
        taps = "·".join([str(r.kernel)] * dims)
        rows.append({"layer": str(r.module).removeprefix(f"{plan.name}."), "path": _PATHS[r.path],
                     "kernel": "x".join([str(r.kernel)] * dims), "formula": f"{taps}·{r.in_shape[0]}{g}·{r.out_shape[0]}",
                     "weights": int(r.params), "macs": int(r.macs), "bn_params": 0})
    df = pd.DataFrame(rows)
    for c in ("weights", "macs", "bn_params"):  # exact Python ints, as in the layer table
        df[c] = exact_column(df[c].tolist())
    return df


def formula(df: pd.DataFrame, path: str = "residual") -> str:
    """'3·3·256·256 + 3·3·256·256 = 1,179,648' (1-D: '3·256·256 + 3·256·256 = 393,216') for the conv
    weights on one path."""
    convs = df[(df["path"] == path) & (df["weights"] > 0)]
    return " + ".join(convs["formula"]) + f" = {exact_sum(convs['weights']):,}"


def paired_config(kind: str, pairing: str, cin: int = 256, cout: int = 256, width: int = 64, size: int = 56,
                  stride: int = 1, groups: int = 1, dims: int = 2) -> BlockConfig:
    """The block ``kind`` as ``pairing`` sets it beside the others: the notes' keeps every kind at ``cin``
    -> ``cout``; the paper's Fig. 5 gives the BasicBlocks (and their pre-activation versions) the
    bottleneck's width in and out (``width`` -> ``width``: 64-d beside the 256-d bottleneck of width 64).
    Raises ``SpecError`` for an unknown pairing or a block out of range."""
    pairing = choice(pairing, PAIRINGS, "pairing")
    if pairing == "fig5" and kind.endswith("basic"):
        cin = cout = width
    return BlockConfig(kind, cin, cout, width, size, stride, groups, dims)


def channels(cfg: BlockConfig) -> str:
    """'256-d' (in = out) or '64→256'."""
    return f"{cfg.cin}-d" if cfg.cin == cfg.cout else f"{cfg.cin}→{cfg.cout}"


def pairing_label(pairing: str, cin: int = 256, cout: int = 256, width: int = 64) -> str:
    """The pairing in words with its channels: "the paper's Fig. 5 (64-d BasicBlock, 256-d bottleneck)"."""
    basic = paired_config("basic", pairing, cin, cout, width)
    bottleneck = paired_config("bottleneck", pairing, cin, cout, width)
    if pairing == "notes":
        return f"the notes' (both {channels(bottleneck)})"
    return f"the paper's Fig. 5 ({channels(basic)} BasicBlock, {channels(bottleneck)} bottleneck)"


def pairings(cin: int = 256, cout: int = 256, width: int = 64, size: int = 56, stride: int = 1, groups: int = 1,
             dims: int = 2) -> pd.DataFrame:
    """Both pairings side by side: each one's BasicBlock and Bottleneck, their residual conv weights and
    the ratio (Fig. 5 at the defaults: 73,728 vs 69,632; the notes': 1,179,648 vs 69,632)."""
    rows = []
    for pairing in PAIRINGS:
        cfg = {k: paired_config(k, pairing, cin, cout, width, size, stride, groups, dims)
               for k in ("basic", "bottleneck")}
        w = {k: exact_sum(t.loc[t["path"] == "residual", "weights"]) for k, t in
             ((k, block_terms(c)) for k, c in cfg.items())}
        rows.append({"pairing": pairing_label(pairing, cin, cout, width), "BasicBlock": channels(cfg["basic"]),
                     "BasicBlock conv weights": w["basic"], "Bottleneck": channels(cfg["bottleneck"]),
                     "Bottleneck conv weights": w["bottleneck"],
                     "BasicBlock / Bottleneck": w["basic"] / w["bottleneck"]})
    table = pd.DataFrame(rows)
    for c in ("BasicBlock conv weights", "Bottleneck conv weights"):
        table[c] = exact_column(table[c].tolist())
    return table


def compare_blocks(cin: int = 256, cout: int = 256, width: int = 64, size: int = 56,
                   stride: int = 1, groups: int = 1, dims: int = 2, pairing: str = "notes") -> pd.DataFrame:
    """Totals for all four block kinds side by side (``dims=1``: their Conv1d versions), each at the
    channels ``pairing`` gives it (:func:`paired_config`; the notes': all at ``cin`` -> ``cout``)."""
    out = []
    for kind in BLOCK_KINDS:
        cfg = paired_config(kind, pairing, cin, cout, width, size, stride, groups, dims)
        df = block_terms(cfg)
        res = df[df["path"] == "residual"]
        out.append({
            "block": kind, "channels": channels(cfg), "conv weights (residual)": exact_sum(res["weights"]),
            "BN parameters": exact_sum(df["bn_params"]),
            "shortcut weights": exact_sum(df.loc[df["path"] != "residual", "weights"]),
            "total parameters": exact_sum(df["weights"]) + exact_sum(df["bn_params"]),
            "MACs": exact_sum(df["macs"]), "formula": formula(df),
        })
    table = pd.DataFrame(out)
    for c in ("conv weights (residual)", "BN parameters", "shortcut weights", "total parameters", "MACs"):
        table[c] = exact_column(table[c].tolist())
    return table
