"""Shared test helpers: run a built model and record what PyTorch itself reports."""

from __future__ import annotations

import torch
import torchinfo
from torch import nn

from analysis.arch.models import build_model
from analysis.arch.specs import ResNetSpec


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchinfo_mult_adds(model: nn.Module, spec: ResNetSpec) -> int:
    s = torchinfo.summary(model, input_size=(1, *spec.input_shape()),
                          verbose=0, device="cpu")
    return int(s.total_mult_adds)


def hooked_shapes(spec: ResNetSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output C×H×W) of every leaf-module call, in execution order."""
    model = build_model(spec).eval()
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            handles.append(mod.register_forward_hook(
                lambda m, i, o, name=name: seen.append((name, tuple(o.shape[1:]) if o.dim() == 4
                                                        else (o.shape[1], 1, 1)))))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.input_shape()))
    finally:
        for h in handles:
            h.remove()
    return seen


def path_gradient_sum_and_autograd(model, x, y):
    """Veit et al.'s decomposition checked exactly: the sum of all 2^n path gradients at the block
    stack's input (through each block's tape) and autograd's gradient there, for ``model`` on (x, y)."""
    import itertools

    from analysis.experiments import paths

    with torch.enable_grad():
        tapes, g_out = paths._tapes(model, x, y)
        total = torch.zeros_like(tapes[0].x)
        for subset in itertools.product((0, 1), repeat=len(tapes)):
            grad = g_out
            for i in range(len(tapes) - 1, -1, -1):
                grad = tapes[i].back(grad, bool(subset[i]))
            total += grad
        h = model.stem(x).detach().requires_grad_(True)
        out = h
        for _, b in model.blocks():
            out = b(out)
        (ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model.head(out), y), h)
    return total, ref


def page_with_pick(page: str, key: str, pick: str, trained: dict | None = None):
    """A new AppTest session of ``app_pages/<page>.py`` with the net ``pick`` chosen in selectbox ``key``
    from the start (not after the page's default net), ``trained`` runs in the session; checked clean."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / f"{page}.py"),
                           default_timeout=120)
    if trained is not None:
        at.session_state["trained"] = trained
    at.session_state[key] = pick
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key=key).value == pick
    return at


def image_folder(root, classes: int, per_class: int = 6, side: int = 40):
    """A tiny ImageFolder tree of coloured noise (``side`` px RGB PNGs), one folder per class, no
    train/val split; each class a different brightness so a net can tell them apart."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((side, side, 3)) * 80 + c * 60).astype(np.uint8)).save(d / f"{i}.png")
    return root


def program_file(directory, name: str, batch: int, filename: str):
    """The shipped checkpoint ``name`` exported for a batch of ``batch`` test inputs and saved as
    ``directory/filename`` (a .pt2); returns its path."""
    from pathlib import Path

    from analysis.arch.graphnet import export_module
    from analysis.store.checkpoints import dataset_for, load_checkpoint, shipped_checkpoints

    c = load_checkpoint(shipped_checkpoints()[name])
    path = Path(directory) / filename
    torch.export.save(export_module(c.model, (dataset_for(c.meta).x_test[:batch],)), path)
    return path


def error_line(capsys) -> str:
    """The one ``error:`` line a CLI command printed to stderr, with no traceback beside it."""
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    return lines[0]
