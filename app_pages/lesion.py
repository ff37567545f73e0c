"""Lesion lab: delete and reorder blocks of a trained net and watch accuracy degrade (Veit et al. 2016)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import lesion
from analysis.checkpoints import Checkpoint, find_twin
from analysis.data import Dataset
from analysis.errors import LensError
from ui import cache, render
from ui.widgets import Picked, available_checkpoints, checkpoint_picker, error_box, progress_reporter

st.title("Lesion lab")
st.caption("Veit, Wilber & Belongie 2016 report that deleting a block of a trained residual net at test time "
           "barely changes its error, except at the downsampling blocks, while deleting a layer of a plain net "
           "drops it to chance. Deleting block *i* of a residual net removes its residual branch F and keeps the "
           "shortcut; a plain net has none, so its deleted block becomes a parameter-free pass-through. The "
           "sweeps below measure what happens on the net you pick.")

chosen = checkpoint_picker("lesion")
if chosen is None:
    st.stop()
picked: Picked = chosen  # narrowed once here, so the functions below see a Picked
label, ck = picked.label, picked.checkpoint


def pick_data(ck: Checkpoint) -> Dataset | None:
    """The checkpoint's own dataset (digits are rebuilt from metadata) or a local one, normalised
    with the statistics stored at training time."""
    try:
        own = cache.dataset_of(ck.meta)
        if own is not None:
            return own
        kind = st.sidebar.selectbox("Dataset", ["cifar10", "imagefolder"], key="lesion_data_kind")
        path = st.sidebar.text_input("Local dataset path", key="lesion_data_path",
                                     help="cifar-10-batches-py, or an ImageFolder root (train/ and val/ or one "
                                          "folder per class); nothing is downloaded")
        if not path:
            st.info(f"{label} was not trained on the embedded digits: give its dataset's local path.")
            return None
        if kind == "imagefolder" and ck.spec.stem == "imagenet":
            # torchvision-style ImageNet nets: their own eval transform, a bounded number of images
            per_class = st.sidebar.number_input("Images per class", 1, 50, 2, key="lesion_per_class",
                                                help="ImageNet val has 50 per class; 2 keeps memory near 1 GB")
            return cache.imagenet_folder(path, ck.spec.input_size, int(per_class), ck.meta.normalisation)
        return cache.dataset(kind, path, ck.spec.input_size, 0, ck.meta.normalisation)
    except LensError as exc:
        error_box(exc)
        return None


loaded = pick_data(ck)
if loaded is None:
    st.stop()
data: Dataset = loaded
if (data.channels, data.num_classes) != (ck.spec.in_channels, ck.spec.num_classes):
    st.error(f"{label} takes {ck.spec.in_channels}-channel images and {ck.spec.num_classes} classes; "
             f"{data.name} has {data.channels} channels and {data.num_classes} classes.")
    st.stop()

infos = lesion.block_infos(ck.model)
n = len(infos)
st.markdown(f"**{label}** — {ck.spec.name}, {n} blocks, evaluated on {len(data.y_test)} test images of "
            f"{data.name}.")

# ------------------------------------------------------------------ toggles
st.subheader("Delete blocks")
st.caption("↓ marks a downsampling block: deleting it keeps its shortcut — "
           + {"pad": "strided zero-padding (option A)", "projection": "the 1×1 projection + BN",
              "none": "for a plain net, a parameter-free subsample and zero-pad",
              "identity": "identity"}[next((b.shortcut for b in infos if b.downsample), "identity")]
           + " — so the shape still fits the next block.")
prefix = f"lesion_{label}"
stages = sorted({b.stage_index for b in infos})
cols = st.columns(len(stages))
deleted = []
for col, stage in zip(cols, stages, strict=True):
    col.markdown(f"**layer{stage + 1}**")
    for b in (b for b in infos if b.stage_index == stage):
        if col.checkbox(f"{b.name}{' ↓' if b.downsample else ''}", key=f"{prefix}_{b.name}"):
            deleted.append(b.index)

seqs = [lesion.identity_sequence(n), lesion.deletion(n, deleted)]
preds = lesion.predict_sequences(ck.model, data.x_test, seqs)
y = data.y_test
base_err, les_err = [(p != y).float().mean().item() for p in preds]
m = st.columns(3)
m[0].metric("Test error, intact", f"{100 * base_err:.2f} %")
m[1].metric(f"Test error, {len(deleted)} deleted", f"{100 * les_err:.2f} %",
            delta=f"{100 * (les_err - base_err):+.2f} pp", delta_color="inverse")
m[2].metric("Chance", f"{100 * (1 - 1 / data.num_classes):.1f} %")
c1, c2 = st.columns(2)
pc = pd.DataFrame({"class": data.classes,
                   "intact": lesion.per_class_accuracy(y, preds[0], data.num_classes),
                   "lesioned": lesion.per_class_accuracy(y, preds[1], data.num_classes)})
c1.plotly_chart(render.per_class(pc), key="lesion_per_class")
delta = lesion.confusion(y, preds[1], data.num_classes) - lesion.confusion(y, preds[0], data.num_classes)
c2.plotly_chart(render.confusion_delta(delta.numpy(), data.classes), key="lesion_confusion")


# ------------------------------------------------------------------ sweeps
def twin_of(picked: Picked) -> Picked | None:
    """The plain twin of a residual net (same layers, same data split) among the shipped and trained
    nets, found by spec, for side-by-side sweeps."""
    pool = {k: v for k, v in available_checkpoints().items() if v.checkpoint is not picked.checkpoint}
    key = find_twin(picked.checkpoint, {k: v.checkpoint for k, v in pool.items()})
    return pool[key] if key is not None else None


def run(experiment: str, samples: int, seed: int) -> pd.DataFrame:
    """Run (or fetch from this session's cache) one sweep for the net and its plain twin."""
    store = st.session_state.setdefault("lesion_results", {})
    nets = [picked] + ([twin] if (twin := twin_of(picked)) else [])
    frames = []
    for net in nets:
        key = (net.label, data.name, data.split_seed, experiment, samples, seed)
        if key not in store:
            bar = st.progress(0.0, text=f"{experiment} sweep on {net.label}…")
            prog = progress_reporter(bar, f"{experiment} sweep on {net.label}")
            store[key] = lesion.run_sweep(experiment, net.checkpoint.model, data.x_test, data.y_test,
                                          samples=samples, seed=seed, progress=prog)
            bar.empty()
        frames.append(store[key].assign(net=net.label, residual=net.checkpoint.spec.residual))
    return pd.concat(frames, ignore_index=True)


def sweep_tab(experiment: str, title: str, caption: str, xlabel: str) -> None:
    """One sweep: its settings, a run button, then the chart and the CSV (kept for the session)."""
    samples = seed = 0
    if experiment != "single":
        c = st.columns(2)
        samples = int(c[0].number_input("Samples per k", 1, 50, 5, key=f"lesion_{experiment}_samples"))
        seed = int(c[1].number_input("Seed", 0, 10_000, 0, key=f"lesion_{experiment}_seed"))
    st.caption(caption)
    if st.button(f"Run the {title} sweep", key=f"lesion_run_{experiment}"):
        st.session_state[f"lesion_show_{experiment}"] = True
    if not st.session_state.get(f"lesion_show_{experiment}"):
        return
    try:
        df = run(experiment, samples, seed)
    except LensError as exc:
        error_box(exc)
        return
    fig = render.single_sweep(df) if experiment == "single" else render.k_sweep(df, "k", xlabel)
    st.plotly_chart(fig, key=f"lesion_{experiment}_chart")
    if experiment == "single":  # a reading computed from the numbers above, per net
        for net, part in df.groupby("net", sort=False):
            st.markdown(f"**{net}**: {lesion.single_reading(part)}")
    st.download_button("Download CSV", df.to_csv(index=False), file_name=f"lesion_{experiment}.csv",
                       mime="text/csv", key=f"lesion_{experiment}_csv")


st.subheader("Sweeps")
tab1, tab2, tab3 = st.tabs(["Single-block deletion", "k-block deletion", "Reordering"])
with tab1:
    sweep_tab("single", "single-block", "Error after deleting each block in turn; the dotted lines are the intact errors; "
              "downsampling blocks are outlined.", "single-block")
with tab2:
    sweep_tab("k", "k-block", "Random subsets of the non-downsampling blocks; mean ± std over the samples.", "blocks deleted")
with tab3:
    sweep_tab("reorder", "reordering", "Swap k random pairs of blocks of the same shape (same stage, not downsampling).",
              "pairs swapped")
