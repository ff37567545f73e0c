"""Theory: identity mappings, the gradient's "1 +" term, scaled shortcuts, pre-activation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.arch import theory
from ui import cache, render
from ui.fmt import fmt_float
from ui.widgets import table

st.title("Why shortcuts work")

st.subheader("Identity mappings")
st.markdown("A residual block learns a correction to its input rather than a whole new mapping "
            "(He et al. 2015, Eq. 1). Stacking identity-shortcut blocks, any deeper feature is a shallower one "
            "plus a sum of residuals (He et al. 2016, Eq. 4), and the gradient keeps a term that bypasses every "
            "weight layer (Eq. 5):")
st.latex(r"y = F(x, \{W_i\}) + x")
st.latex(r"x_L = x_l + \sum_{i=l}^{L-1} F(x_i, W_i)")
st.latex(r"\frac{\partial \mathcal{E}}{\partial x_l} = \frac{\partial \mathcal{E}}{\partial x_L}"
         r"\Big(1 + \frac{\partial}{\partial x_l}\sum_{i=l}^{L-1} F(x_i, W_i)\Big)")
st.markdown("The **1** carries the gradient from the loss to every block directly; the sum would have to be "
            "exactly −1 for a whole mini-batch to cancel it, so the gradient does not vanish even when the "
            "weights are small.")

st.subheader("Scaled shortcuts explode or vanish")
st.markdown("Replace the identity by λ·x (He et al. 2016, Eq. 6–8): the gradient picks up λ^(L−l).")
st.latex(r"x_{l+1} = \lambda x_l + F(x_l) \;\Rightarrow\; x_L = \lambda^{L-l} x_l + \sum_i \hat F(x_i), \quad "
         r"\frac{\partial \mathcal{E}}{\partial x_l} = \frac{\partial \mathcal{E}}{\partial x_L}"
         r"\Big(\lambda^{L-l} + \frac{\partial}{\partial x_l}\sum_i \hat F(x_i)\Big)")
# the scales get a row of their own: in a third of an 820-px page the chips read '1…'
lams = st.multiselect("Shortcut scales λ", [0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5], [0.8, 0.9, 1.0, 1.1, 1.2],
                      key="theory_lambdas")
c = st.columns(2)
depth = c[0].slider("Blocks", 1, 200, 50, key="theory_depth")
rscale = c[1].slider("Residual branch strength", 0.0, 0.5, 0.1, key="theory_rscale",
                     help="0 removes F: the ratio is then exactly λ^blocks")
if lams:
    df = cache.scaled_shortcut_gradients(tuple(sorted(lams)), int(depth), float(rscale))
    render.show(render.scaled_shortcuts(df), key="theory_chart")
    last = df[df["blocks"] == depth].set_index("lambda")["ratio"]
    st.caption("Measured with autograd on a chain of random two-layer residual branches (64 dims): "
               + "; ".join(f"λ = {lam:g}: ×{fmt_float(v)}" for lam, v in last.items())
               + f" after {depth} blocks. Dotted: λ^blocks alone.")
else:
    st.info("Choose at least one λ.")

st.subheader("What the experiments say (He et al. 2016, ResNet-110 on CIFAR-10)")
c1, c2 = st.columns(2)
c1.markdown("**Shortcut variants** (test error %)")
table(pd.DataFrame(theory.SHORTCUT_VARIANTS, columns=["shortcut", "setting", "error %"]), container=c1)
c2.markdown("**Activation placement** (test error %)")
table(pd.DataFrame(theory.ACTIVATION_PLACEMENT, columns=["placement", "ResNet-110", "ResNet-164"]), container=c2)
st.markdown("Anything that gets in the way of the identity — scaling, gating, a 1×1 conv, dropout — makes "
            "optimisation harder. Moving BN and ReLU *before* the convolutions (full pre-activation) leaves "
            "a clean identity path from block to block and trains best.")
# a Page of this file's neighbour, not the path "app_pages/variants.py": that resolves against the entry point,
# which is app.py when routed but this file when the page runs alone (its tests)
st.page_link(st.Page(Path(__file__).with_name("variants.py")), icon=":material/science:",
             label="Variants lab: these variants trained here, measured beside the paper's numbers, with their "
                   "gradient flow")
c1, c2 = st.columns(2)
c1.markdown("**Original** (post-activation): ReLU after the add")
c1.graphviz_chart(cache.block_internals("basic", False))
c2.markdown("**Full pre-activation**: BN → ReLU → conv, nothing after the add")
c2.graphviz_chart(cache.block_internals("preact_basic", False))

st.subheader("BatchNorm and transfer learning")
st.markdown(
    "- **BatchNorm** normalises each channel with mini-batch statistics while training and with running "
    "averages at test time, where it folds into one scale and shift per channel (2 FLOPs per element, see "
    "the explorer's FLOP breakdown). It keeps activations well-scaled so the residual branches start small "
    "and the identity dominates early in training; every lesion and path experiment here runs in eval mode.\n"
    "- **Transfer learning**: a net trained on one dataset keeps its features; replace the classifier and "
    "fine-tune. With this library: load torchvision weights into `build_model('resnet50')` (`strict=True`), "
    "then `model.fc = torch.nn.Linear(2048, n_classes)`; `get_spec('resnet50', num_classes=n)` gives the "
    "matching spec for the cost tables and diagrams.")
