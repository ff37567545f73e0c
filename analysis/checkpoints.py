"""Checkpoints: safe loading, atomic saving, and architecture inference from a state_dict.

Files are read with ``torch.load(..., weights_only=True)`` only, so a pickle that would run code is
refused before anything executes. Our own checkpoints are ``{"format": "resnet-lens/1",
"state_dict": ..., "meta": {...}}`` with the spec inside the metadata; a bare torchvision-style
state_dict works too: its architecture is inferred from key names and tensor shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .data import Dataset
from .errors import CheckpointError, DatasetError, LensError
from .meta import RunMeta
from .models import ResNet, build_model, state_dict_shapes
from .specs import EXPANSION, ResNetSpec, ShortcutOption, StemType, validate

__all__ = ["Checkpoint", "CheckpointError", "checkpoint_bytes", "dataset_for", "find_twin", "infer_spec",
           "load_checkpoint", "same_architecture", "save_checkpoint", "shipped_checkpoints"]

FORMAT = "resnet-lens/1"


@dataclass
class Checkpoint:
    spec: ResNetSpec
    model: ResNet
    meta: RunMeta
    inferred: bool  # True when the spec came from key names and shapes, not from metadata


def spec_to_dict(spec: ResNetSpec) -> dict:
    d = dataclasses.asdict(spec)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def spec_from_dict(d: dict) -> ResNetSpec:
    fields = {f.name for f in dataclasses.fields(ResNetSpec)}
    unknown = set(d) - fields
    if unknown:
        raise CheckpointError(f"checkpoint metadata has unknown spec fields: {', '.join(sorted(unknown))}")
    kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return validate(ResNetSpec(**kw))
    except (TypeError, LensError) as exc:
        raise CheckpointError(f"checkpoint metadata holds an invalid spec: {exc}") from exc


def save_checkpoint(path: str | Path, model: ResNet, meta: RunMeta | None = None) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over ``path``. An
    interrupted write leaves the previous file (or nothing), never a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _payload(model, meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def checkpoint_bytes(model: ResNet, meta: RunMeta | None = None) -> bytes:
    """The same payload as :func:`save_checkpoint`, in memory (for downloads)."""
    buf = io.BytesIO()
    torch.save(_payload(model, meta), buf)
    return buf.getvalue()


def _payload(model: ResNet, meta: RunMeta | None) -> dict:
    # A JSON round trip turns str subclasses (torch.__version__) and tuples into plain types, so
    # the file loads under weights_only=True.
    plain_meta = json.loads(json.dumps({**(meta or RunMeta()).to_dict(), "spec": spec_to_dict(model.spec)}))
    return {"format": FORMAT, "state_dict": model.state_dict(), "meta": plain_meta}


def _safe_load(source: str | Path | bytes, name: str) -> object:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file")
        name = str(p)
        fobj: str | io.BytesIO = str(p)
    else:
        fobj = io.BytesIO(source)
    try:
        return torch.load(fobj, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            found = re.search(r"GLOBAL ([\w.]+)", msg)
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(
                f"{name}: refused — the file contains Python objects other than tensors{what}. "
                "Only weights are loaded (torch.load(weights_only=True)); nothing in it was executed. "
                "Re-save it as a plain state_dict."
            ) from exc
        raise CheckpointError(f"{name}: not a valid PyTorch checkpoint ({msg[:200]})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{name}: not a valid PyTorch checkpoint — truncated or corrupt "
                              f"({str(exc).splitlines()[0][:200]})") from exc


def _stage_blocks(sd: dict[str, Tensor]) -> list[int]:
    counts: dict[int, int] = {}
    for k in sd:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts.get(s, 0), b + 1)
    if not counts:
        raise CheckpointError("no residual stages found: expected keys like 'layer1.0.conv1.weight' "
                              "(torchvision ResNet layout)")
    if sorted(counts) != list(range(1, len(counts) + 1)):
        raise CheckpointError(f"stages {sorted(counts)} are not numbered layer1..layerN")
    return [counts[s] for s in range(1, len(counts) + 1)]


def infer_spec(sd: dict[str, Tensor], name: str = "checkpoint") -> ResNetSpec:
    """Architecture of a torchvision-style ResNet from its state_dict: block type, blocks per stage,
    widths, groups, stem, classes, shortcut option and pre-activation. Not visible in weights, so
    defaulted: stride placement (v1.5), input size (224 ImageNet stem, 32 CIFAR stem)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(f"missing key {key!r}: not a torchvision-style ResNet state_dict")
        return tuple(sd[key].shape)

    layers = _stage_blocks(sd)
    bottleneck = "layer1.0.conv3.weight" in sd
    conv1 = shape("conv1.weight")
    if len(conv1) != 4:
        raise CheckpointError(f"conv1.weight has shape {conv1}, expected a 4-d conv weight")
    stem: StemType = "imagenet" if conv1[2] == 7 else "cifar"
    widths, groups, wpg = [], 1, 64
    for i in range(len(layers)):
        if bottleneck:
            out = shape(f"layer{i + 1}.0.conv3.weight")[0]
            c2 = shape(f"layer{i + 1}.0.conv2.weight")
            planes = out // EXPANSION["bottleneck"]
            groups = c2[0] // c2[1]
            width = c2[0]
            wpg = width * 64 // (planes * groups) if planes * groups else 64
        else:
            planes = shape(f"layer{i + 1}.0.conv1.weight")[0]
        widths.append(planes)
    has_down = [f"layer{i + 1}.{j}.downsample.0.weight" in sd for i, n in enumerate(layers) for j in range(n)]
    preact = "bn_final.weight" in sd
    if all(has_down):
        shortcut: ShortcutOption = "C"
    elif any(has_down):
        shortcut = "B"
    else:
        # No projection weights: option A (zero padding) if shapes change, identity otherwise.
        shortcut = "A"
    fc = shape("fc.weight")
    try:
        spec = ResNetSpec(
            name=name, block="bottleneck" if bottleneck else "basic", layers=tuple(layers),
            widths=tuple(widths), stem=stem, stem_width=conv1[0], groups=groups, width_per_group=wpg,
            shortcut=shortcut, preact=preact, num_classes=fc[0], in_channels=conv1[1],
            input_size=224 if stem == "imagenet" else 32,
        )
        return validate(spec)
    except LensError as exc:
        raise CheckpointError(f"the state_dict does not describe a buildable ResNet: {exc}") from exc


def _match_name(spec: ResNetSpec) -> ResNetSpec:
    """Give an inferred spec the built-in name it equals (e.g. resnet50)."""
    from .specs import MODELS

    for n, s in MODELS.items():
        if dataclasses.replace(s, name=spec.name) == spec:
            return dataclasses.replace(spec, name=n)
    return spec


def check_state_dict(spec: ResNetSpec, sd: dict[str, Tensor], name: str) -> None:
    """Compare key names and shapes with what ``spec``'s blocks hold (derived from their plans),
    before any model is built: a mismatch names the keys, nothing is allocated for it."""
    ours = state_dict_shapes(spec)
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    if missing or unexpected:
        def fmt(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {fmt(unexpected)}")
        raise CheckpointError(f"{name}: the state_dict does not match {spec.name}; " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} != {v}" for k, v in ours.items() if tuple(sd[k].shape) != v]
    if bad:
        raise CheckpointError(f"{name}: shape mismatch for {len(bad)} tensors, e.g. {'; '.join(bad[:3])}")


def load_checkpoint(source: str | Path | bytes, *, name: str = "uploaded file",
                    expect: ResNetSpec | None = None) -> Checkpoint:
    """Load our checkpoint format or a bare (torchvision-style) state_dict, safely.

    ``expect`` forces a spec (e.g. ``get_spec('resnet50')``) instead of reading or inferring one.
    """
    obj = _safe_load(source, name)
    if isinstance(source, (str, Path)):
        name = Path(source).name
    raw: dict = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        sd, raw = obj.get("state_dict"), dict(obj.get("meta") or {})
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]  # common training-script wrapper
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{name}: expected a state_dict (a dict of tensor names to tensors)")
    sd = {str(k).removeprefix("module."): v for k, v in sd.items()}  # DataParallel prefixes
    meta = RunMeta.from_dict({k: v for k, v in raw.items() if k != "spec"})
    inferred = False
    if expect is not None:
        spec = expect
    elif "spec" in raw:
        spec = spec_from_dict(raw["spec"])
    else:
        spec = _match_name(infer_spec(sd, name=Path(name).stem or "checkpoint"))
        inferred = True
    check_state_dict(spec, sd, name)
    model = build_model(spec)
    model.load_state_dict(sd, strict=True)
    model.eval()
    return Checkpoint(spec, model, meta, inferred)


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_checkpoints() -> dict[str, Path]:
    """The checkpoints committed in ``checkpoints/`` (trained on the embedded digits), by file stem."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.pt"))}


def dataset_for(meta: RunMeta) -> Dataset:
    """The embedded-digits dataset a checkpoint was trained on, rebuilt from its metadata and
    normalised with the statistics stored at training time (not recomputed)."""
    from .data import load_digits

    if meta.dataset is None or not meta.dataset.is_digits:
        name = meta.dataset.name if meta.dataset else "an unknown dataset"
        raise DatasetError(f"this checkpoint was trained on {name}; give its local path")
    return load_digits(size=meta.dataset.size, seed=meta.dataset.split_seed, normalisation=meta.normalisation)


def same_architecture(a: ResNetSpec, b: ResNetSpec) -> bool:
    """Equal specs up to their display names."""
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


def find_twin(ck: Checkpoint, candidates: dict[str, Checkpoint]) -> str | None:
    """The key of the candidate that is ``ck``'s plain twin (same layers, no shortcuts), trained on
    the same data split, or None. Found by spec, not by name."""
    if not ck.spec.residual:
        return None
    twin = ck.spec.plain_twin()
    for key, other in candidates.items():
        if same_architecture(other.spec, twin) and other.meta.dataset == ck.meta.dataset:
            return key
    return None
