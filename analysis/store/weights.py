"""Untrusted weights, checked before use: the file, its keys and every tensor.

A checkpoint is user input. :func:`safe_load` says in one sentence why a file is not a checkpoint
(empty, not a zip or pickle, truncated, a pickle that references code) and refuses a file whose
records would unpack to more than the memory budget *before* ``torch.load`` allocates them.
:func:`normalise_keys` and :func:`check_tensors` then check what came out, before any value is read
or any model built: string keys, no key given twice (``module.k`` and ``k``), dense tensors whose
declared size is backed by real storage (a 4-byte storage "expanded" to 65,536 x 65,536 x 3 x 3 is
refused before anything touches it), floating-point weights (integer, bool and complex weights
would be cast without a word), finite values and non-negative BatchNorm variances: a net with NaN
weights gives a plausible-looking error rate that means nothing. :func:`state_dict_hash` is the
content hash our own checkpoints carry, so a changed or corrupted file is noticed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from analysis.arch.budget import ENV_VAR, fmt_bytes, memory_budget
from analysis.core.bounded import check_bounded
from analysis.core.errors import CheckpointError

__all__ = ["FLOAT_DTYPES", "HASH_PREFIX", "unpacked_size", "check_finite_model", "check_storage", "check_tensors", "check_values",
           "normalise_keys", "safe_load", "state_dict_hash"]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
HASH_PREFIX = "sha256:"
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_ZIP_MAGIC = b"PK\x03\x04"
# Python objects per pickled byte: a state_dict's pickle (~100 bytes a tensor) unpickles to ~17 times
# its size in tensor objects; twice that as the bound.
PICKLE_EXPANSION = 32

# torch's weights-only unpickler raises these (and only these) for a pickle that names code; every
# other UnpicklingError is damaged or foreign data, which deserves a different sentence.
_CODE_PATTERNS = ("Unsupported global", "is blocked", "unrecognized function", "Can only create new object",
                  "Can only build", "must be imported to load")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception from torch.load (its weights-only unpickler wraps the
    real reason in paragraphs of advice that do not apply here)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


# ------------------------------------------------------------------------------------------- files
def safe_load(source: str | Path | bytes, name: str) -> object:
    """``torch.load(..., weights_only=True)`` of a path or bytes, with every failure a
    CheckpointError in one sentence, and the file's unpacked size checked against the budget first."""
    fobj: str | io.BytesIO
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file")
        name = str(p)
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                head = f.read(512)
        except OSError as exc:
            raise CheckpointError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
        fobj = str(p)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
        size, head, fobj = len(blob), blob[:512], io.BytesIO(blob)
    else:
        raise CheckpointError(f"{name}: expected a file path or the file's bytes, got {type(source).__name__}")
    if size == 0:
        raise CheckpointError(f"{name}: not a valid PyTorch checkpoint (empty file)")
    budget = memory_budget()
    if head.startswith(_ZIP_MAGIC):
        _check_zip(fobj, name, budget)
    elif _is_tar(head):
        raise CheckpointError(f"{name}: saved in PyTorch's legacy .tar format, which cannot be loaded without "
                              "running code; load and re-save it with a current PyTorch (torch.save)")
    elif size > budget:
        # the pickle format's tensors are read into memory whole: about the file's size
        raise CheckpointError(f"{name}: {fmt_bytes(size)} of weights are more than the memory budget of "
                              f"{fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
    try:
        obj = torch.load(fobj, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if any(p in msg for p in _CODE_PATTERNS):
            found = re.search(r"GLOBAL ([\w.]+)", msg)
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(
                f"{name}: refused — the file contains Python objects other than tensors{what}. "
                "Only weights are loaded (torch.load(weights_only=True)); nothing in it was executed. "
                "Re-save it as a plain state_dict."
            ) from exc
        raise CheckpointError(_not_a_checkpoint(name, head, exc)) from exc
    except Exception as exc:  # torch.load parsing untrusted bytes: any failure means a bad file
        raise CheckpointError(_not_a_checkpoint(name, head, exc)) from exc
    # weights_only refuses code, not shape: a few hundred bytes of shared references expand to 2^40
    # values for whatever walks the metadata (analysis.core.bounded); refused before anything does
    check_bounded(obj, f"{name}: the pickled structure", CheckpointError)
    return obj


def unpacked_size(source: str | Path | bytes) -> int:
    """What loading ``source`` reads into memory, from its headers alone: a zip checkpoint's records
    unpacked (their declared sizes, before any decompression), else the file's size. 0 when it cannot
    be told (safe_load then says what is wrong with the file)."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            blob = bytes(source)
            if not blob.startswith(_ZIP_MAGIC):
                return len(blob)
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                return sum(i.file_size for i in z.infolist())
        p = Path(source)
        with p.open("rb") as f:
            if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                return p.stat().st_size
        with zipfile.ZipFile(p) as z:
            return sum(i.file_size for i in z.infolist())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile):
        return 0


def _not_a_checkpoint(name: str, head: bytes, exc: BaseException) -> str:
    if not head.startswith((_ZIP_MAGIC, b"\x80")):
        return f"{name}: not a valid PyTorch checkpoint (not a zip or pickle file)"
    if "allocate" in str(exc):
        return (f"{name}: not a valid PyTorch checkpoint — it declares a tensor storage larger than this "
                f"machine's memory ({_first_line(exc)})")
    if head.startswith(_ZIP_MAGIC):
        # PyTorch's zip reader words its failures in C++ ("[enforce fail at inline_container.cc:…]"):
        # the user needs to know it is a zip without a checkpoint's layout, not the source line
        return (f"{name}: not a valid PyTorch checkpoint — a zip file without the layout torch.save writes "
                "(one folder holding data.pkl and data/), or a truncated one")
    return f"{name}: not a valid PyTorch checkpoint — truncated or corrupt ({_first_line(exc)})"


def _is_tar(head: bytes) -> bool:
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except tarfile.TarError:
        return False
    return True


def _check_zip(fobj: str | io.BytesIO, name: str, budget: int) -> None:
    """The zip's records are read whole by torch.load: their unpacked sizes must fit the budget
    (a deflated record of zeros unpacks a thousandfold)."""
    try:
        with zipfile.ZipFile(fobj) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{name}: not a valid PyTorch checkpoint — truncated or corrupt (not a complete "
                              "zip archive)") from exc
    finally:
        if isinstance(fobj, io.BytesIO):
            fobj.seek(0)
    total = sum(i.file_size for i in infos)
    if total > budget:
        raise CheckpointError(f"{name}: its records unpack to {fmt_bytes(total)}, more than the memory budget of "
                              f"{fmt_bytes(budget)} (set {ENV_VAR} to raise it)")
    pickled = sum(i.file_size for i in infos if i.filename.endswith(".pkl"))
    if pickled * PICKLE_EXPANSION > budget:
        raise CheckpointError(f"{name}: its {fmt_bytes(pickled)} of pickled structure would become about "
                              f"{fmt_bytes(pickled * PICKLE_EXPANSION)} of Python objects, more than the memory "
                              f"budget of {fmt_bytes(budget)} (set {ENV_VAR} to raise it)")


# -------------------------------------------------------------------------------------------- keys
def normalise_keys(sd: Mapping[object, object], name: str) -> dict[str, Tensor]:
    """String keys with DataParallel's ``module.`` prefix removed; values must be tensors; a key
    given twice (``module.fc.weight`` and ``fc.weight``) is refused: which one is meant is unknown."""
    out: dict[str, Tensor] = {}
    original: dict[str, str] = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{name}: state_dict key {_short(k)} (of type {type(k).__name__}) is not a string; "
                                  "a state_dict maps parameter names to tensors")
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{name}: {_short(k)} holds a value of type {type(v).__name__}, not a tensor; "
                                  "expected a state_dict (a dict of tensor names to tensors)")
        key = k.removeprefix("module.")
        if key in out:
            raise CheckpointError(f"{name}: the state_dict holds both {_short(original[key])} and {_short(k)}, "
                                  f"which both name {_short(key)}; remove one (which is meant cannot be told)")
        out[key], original[key] = v, k
    return out


# ----------------------------------------------------------------------------------------- tensors
def _check_layout(key: str, t: Tensor, name: str) -> None:
    where = f"{name}: tensor {_short(key)}"
    if t.layout != torch.strided or t.is_nested:
        raise CheckpointError(f"{where} is a {str(t.layout).removeprefix('torch.')} tensor; weights must be dense "
                              "tensors (use tensor.to_dense())")
    if t.is_quantized:
        raise CheckpointError(f"{where} is quantized; dequantize it (tensor.dequantize()) and re-save")
    if t.device.type != "cpu":
        raise CheckpointError(f"{where} lives on the {t.device.type} device and holds no data")
    if any(s < 0 for s in t.stride()) or t.storage_offset() < 0:
        raise CheckpointError(f"{where} has negative strides or offset")
    numel = t.numel()
    if numel == 0:
        return  # refused with its shape below; nothing to read
    storage = t.untyped_storage().nbytes()
    es = t.element_size()
    last = t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    overlap = False
    need = 1
    for stride, n in sorted((s, n) for n, s in zip(t.shape, t.stride(), strict=True) if n > 1):
        if stride < need:
            overlap = True
            break
        need = stride * n
    if overlap or (last + 1) * es > storage:
        raise CheckpointError(
            f"{where} declares {numel:,} values (shape {tuple(t.shape)}) on {storage:,} bytes of storage: an "
            "expanded (stride-0) or overlapping view, not real weights; save tensor.contiguous() instead"
        )


def check_tensors(sd: Mapping[str, Tensor], name: str, budget: int | None = None) -> int:
    """:func:`check_storage` then :func:`check_values`; returns the bytes the tensors declare."""
    total = check_storage(sd, name, budget)
    check_values(sd, name)
    return total


def check_storage(sd: Mapping[str, Tensor], name: str, budget: int | None = None) -> int:
    """Layout and size of every tensor, reading no value: dense, on the CPU, its declared size backed
    by its storage, all of them together within the memory budget. Returns the bytes they declare
    (what building a model on them copies)."""
    limit = memory_budget() if budget is None else budget
    total = 0
    for key, t in sd.items():
        _check_layout(key, t, name)
        total += t.numel() * t.element_size()
    if total > limit:
        raise CheckpointError(f"{name}: its {len(sd):,} tensors declare {fmt_bytes(total)}, more than the memory "
                              f"budget of {fmt_bytes(limit)} (set {ENV_VAR} to raise it)")
    return total


def check_values(sd: Mapping[str, Tensor], name: str) -> None:
    """Dtypes and values (after :func:`check_storage`): floating-point weights, an integer
    ``num_batches_tracked``, no empty tensor, finite values, non-negative BatchNorm variances."""
    for key, t in sd.items():
        where = f"{name}: tensor {_short(key)}"
        if key.endswith("num_batches_tracked"):
            if t.dtype not in _INT_DTYPES:
                raise CheckpointError(f"{where} should be an integer counter, got dtype "
                                      f"{str(t.dtype).removeprefix('torch.')}")
            continue
        if t.dtype not in FLOAT_DTYPES:
            dtype = str(t.dtype).removeprefix("torch.")
            kind = ("booleans" if t.dtype == torch.bool else f"complex numbers ({dtype})" if t.is_complex()
                    else f"{dtype} values" if t.is_floating_point() else f"integers ({dtype})")
            raise CheckpointError(f"{where} holds {kind}; weights must be floating point (float32, float16, "
                                  "bfloat16 or float64) — casting them would silently change the net")
        if t.numel() == 0:
            raise CheckpointError(f"{where} is empty (shape {tuple(t.shape)}): a layer with no channels")
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int(t.numel() - finite.sum())
            raise CheckpointError(f"{where} holds {bad:,} NaN or infinite values: the net's outputs would be "
                                  "meaningless (did training diverge?)")
        if key.endswith("running_var") and bool((t < 0).any()):
            raise CheckpointError(f"{where} holds negative variances (min {float(t.min()):.3g}): BatchNorm "
                                  "statistics are damaged")


def check_finite_model(state: Mapping[str, Tensor], name: str) -> None:
    """After loading into the float32 model: float64 values beyond float32's range became infinite."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{name}: tensor {_short(bad[0])} overflows float32 (values beyond ±3.4e38); "
                              "the net's outputs would be meaningless")


# -------------------------------------------------------------------------------------------- hash
def state_dict_hash(sd: Mapping[str, Tensor]) -> str:
    """``sha256:<hex>`` over the tensors in sorted key order: each key, dtype, shape and raw bytes.
    Our checkpoints store it in their metadata; a bit flipped inside tensor data changes it."""
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return HASH_PREFIX + h.hexdigest()
