"""Fuzz: checkpoint uploads and memory bombs (issue 10, items 1, 3, 5, 6).

``checkpoint-upload``: generated files, malformed and valid, through ``load_checkpoint`` exactly as
an upload goes: empty and random bytes, truncations of valid files, bit flips inside the tensor data
of hashed files, pickles naming code, metadata of the wrong type, non-string and duplicate keys,
sparse / 0-d / empty / quantized / meta / expanded tensors, integer, bool and complex dtypes, NaN and
infinity, negative BatchNorm variances, wrong shapes and missing keys. Every malformed file must
raise a ``LensError`` (a CheckpointError) with a one-line message; every valid file (our format with
its content hash, bare, DataParallel-prefixed, wrapped, legacy format, half / double precision,
non-contiguous and shared-storage tensors, plain or option-A residual when told which) must load and
give exactly the outputs of the model it was saved from.

``memory-bomb``: files that declare far more than they hold (huge specs in metadata, state_dicts
naming thousands of blocks, stride-0 tensors of 10^11 values, deflated records unpacking a
thousandfold, legacy files declaring terabyte storages, activations of a 4096-pixel input), run in a
child process under a 512 MiB budget (``RESNET_LENS_MEMORY_BUDGET``): each must be refused cleanly,
small nets must still load, and the child's peak RSS may grow by less than the budget.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from analysis.arch.models import build_model
from analysis.arch.specs import ResNetSpec, custom_spec, get_spec
from analysis.core.meta import RunMeta
from analysis.store.checkpoints import FORMAT, load_checkpoint, spec_to_dict, state_dict_hash
from tests.fuzz import ckcraft
from tests.fuzz.harness import Case, Report, assert_no_failures, run_cases

ROOT = Path(__file__).resolve().parents[2]
BOMB_BUDGET = "512M"
BOMB_BUDGET_BYTES = 512 << 20


# ============================================================================= sources
def _sources() -> dict[str, tuple[ResNetSpec, bool | None]]:
    """Small nets of every kind inference must handle, with the ``plain`` a bare copy needs."""
    return {
        "digits8B": (get_spec("cifar_resnet8").replace(in_channels=1, shortcut="B", input_size=16), None),
        "cifar8A": (get_spec("cifar_resnet8"), False),
        "plain8": (get_spec("plain_cifar_resnet8"), True),
        "preact8C": (get_spec("cifar_resnet8").replace(shortcut="C", preact=True), None),
        "resnext": (custom_spec(block="bottleneck", layers=[1, 1], widths=[8, 16], stem="cifar", stem_width=16,
                                groups=2, width_per_group=8, input_size=32, num_classes=7, shortcut="C"), None),
        "imagenet": (custom_spec(block="basic", layers=[1, 2], widths=[8, 16], stem="imagenet", stem_width=8,
                                 input_size=224, num_classes=5, shortcut="B"), None),
    }


def _model(spec: ResNetSpec, seed: int) -> torch.nn.Module:
    model = build_model(spec, seed=seed).eval()
    with torch.no_grad():  # non-trivial BN statistics, so every buffer matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                g = torch.Generator().manual_seed(seed + m.num_features)
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model


def _ours(spec: ResNetSpec, sd: dict, *, hashed: bool = True, **meta: Any) -> dict:
    digest = state_dict_hash(sd) if hashed else ""
    return {"format": FORMAT, "state_dict": sd,
            "meta": {**RunMeta(content_sha256=digest).to_dict(), **meta, "spec": spec_to_dict(spec)}}


def _same_outputs(model: torch.nn.Module, spec: ResNetSpec, cast: torch.dtype | None = None) -> Callable[[Any], bool]:
    """The loaded net computes what ``model`` computes (bit for bit; after a cast, what ``model``
    with the cast weights computes)."""
    ref = model
    if cast is not None:
        ref = build_model(spec).eval()
        ref.load_state_dict({k: v.to(cast) if v.is_floating_point() else v for k, v in model.state_dict().items()})
    x = torch.randn(2, spec.in_channels, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = ref(x)

    def check(ck: Any) -> bool:
        assert ck.model.training is False
        with torch.no_grad():
            got = ck.model(x)
        assert torch.equal(got, want), (got - want).abs().max()
        return True
    return check


def _load(blob: bytes, **kw: Any) -> Callable[[], Any]:
    return lambda: load_checkpoint(blob, name="upload.pt", **kw)


def _one_sentence(case: Case) -> Case:
    """Malformed: the error must be one line naming the file (what a page shows)."""
    run = case.run

    def checked() -> Any:
        try:
            return run()
        except Exception as exc:
            msg = str(exc)
            if "\n" in msg or not msg.startswith("upload.pt") or len(msg) > 600:
                raise AssertionError(f"not one clear sentence: {msg[:300]!r}") from exc
            raise
    return Case(case.name, checked, case.expect, case.check)


# ============================================================================= checkpoint-upload
def upload_cases() -> list[Case]:
    rng = random.Random(1010)
    cases: list[Case] = []

    def bad(name: str, blob: bytes, **kw: Any) -> None:
        cases.append(_one_sentence(Case(name, _load(blob, **kw), "error")))

    sources = {k: (spec, plain, _model(spec, i)) for i, (k, (spec, plain)) in enumerate(_sources().items())}

    # ---- valid files: every container, every precision, told plain/residual where the weights cannot say
    for key, (spec, plain, model) in sources.items():
        sd = model.state_dict()
        ok = _same_outputs(model, spec)
        cases.append(Case(f"valid/{key}/ours", _load(ckcraft.torch_bytes(_ours(spec, sd))), "valid", ok))
        cases.append(Case(f"valid/{key}/ours-unhashed", _load(ckcraft.torch_bytes(_ours(spec, sd, hashed=False))),
                          "valid", ok))
        cases.append(Case(f"valid/{key}/bare", _load(ckcraft.torch_bytes(sd), plain=plain), "valid", ok))
        cases.append(Case(f"valid/{key}/dataparallel", _load(ckcraft.torch_bytes(
            {f"module.{k}": v for k, v in sd.items()}), plain=plain), "valid", ok))
        cases.append(Case(f"valid/{key}/wrapped", _load(ckcraft.torch_bytes(
            {"epoch": 7, "best_acc": 0.5, "state_dict": sd}), plain=plain), "valid", ok))
        cases.append(Case(f"valid/{key}/model-key", _load(ckcraft.torch_bytes({"model": sd}), plain=plain),
                          "valid", ok))
        cases.append(Case(f"valid/{key}/legacy-format", _load(ckcraft.torch_bytes(
            _ours(spec, sd), _use_new_zipfile_serialization=False)), "valid", ok))
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
            cases.append(Case(f"valid/{key}/{dtype}", _load(ckcraft.torch_bytes(cast), plain=plain), "valid",
                              _same_outputs(model, spec, dtype)))
        # non-contiguous (transposed) and shared-storage (one flat buffer) tensors are real weights
        t_sd = {k: v.transpose(0, 1).contiguous().transpose(0, 1) if v.dim() >= 2 else v for k, v in sd.items()}
        cases.append(Case(f"valid/{key}/non-contiguous", _load(ckcraft.torch_bytes(t_sd), plain=plain), "valid", ok))
        floats = [k for k, v in sd.items() if v.dtype == torch.float32]
        flat = torch.cat([sd[k].reshape(-1) for k in floats])
        views, at = dict(sd), 0
        for k in floats:
            n = sd[k].numel()
            views[k] = flat[at: at + n].view(sd[k].shape)
            at += n
        cases.append(Case(f"valid/{key}/shared-storage", _load(ckcraft.torch_bytes(views), plain=plain), "valid", ok))
        if plain is not None:  # the weights cannot say which: asked, not guessed
            bad(f"ambiguous/{key}", ckcraft.torch_bytes(sd))

    spec, _, model = sources["digits8B"]
    sd = model.state_dict()
    good = ckcraft.torch_bytes(_ours(spec, sd))
    legacy = ckcraft.torch_bytes(_ours(spec, sd), _use_new_zipfile_serialization=False)
    tensor_keys = [k for k in sd if not k.endswith("num_batches_tracked")]

    # ---- not checkpoints at all
    bad("empty", b"")
    for i in range(30):
        n = rng.choice([1, 2, 3, 8, 64, 512, 4096])
        prefix = rng.choice([b"", b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", b"\x80\x02\x8a\x0al\xfc\x9cF"])
        bad(f"random/{i}/{len(prefix)}+{n}", prefix + rng.randbytes(n))
    bad("text", b"hello, this is not a checkpoint\n" * 10)
    bad("json", json.dumps({"conv1.weight": [[1.0]]}).encode())
    bad("plain pickle", __import__("pickle").dumps({"conv1.weight": [1.0, 2.0]}))

    # ---- truncations of valid files (zip and legacy)
    for i, cut in enumerate(sorted(rng.sample(range(1, len(good)), 20))):
        bad(f"truncated-zip/{i}/{cut}", good[:cut])
    for i, cut in enumerate(sorted(rng.sample(range(1, len(legacy)), 10))):
        bad(f"truncated-legacy/{i}/{cut}", legacy[:cut])

    # ---- a bit flipped inside tensor data of a hashed file: the content hash notices
    records = ckcraft.data_records(good)
    zf = zipfile.ZipFile(io.BytesIO(good))
    for i in range(20):
        rec = rng.choice(records)
        size = zf.getinfo(rec).file_size
        at = ckcraft.record_offset(good, rec) + rng.randrange(size)
        bad(f"bitflip/{i}/{rec.rsplit('/', 1)[1]}", good[:at] + bytes([good[at] ^ (1 << rng.randrange(8))]) + good[at + 1:])

    # ---- pickles that name code (refused, nothing run)
    import argparse

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch /tmp/resnet_lens_ckpt_fuzz_pwned",))

    class Eval:
        def __reduce__(self) -> tuple:
            return (eval, ("1 + 1",))

    for nm, obj in [("os.system", Evil()), ("eval", Eval()), ("argparse.Namespace", argparse.Namespace(lr=0.1)),
                    ("PosixPath", Path("/tmp")), ("class", RunMeta)]:
        for fmt, kw in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False})):
            blob = ckcraft.torch_bytes({"state_dict": sd, "extra": obj}, **kw)
            cases.append(Case(f"code/{nm}/{fmt}", _refused_code(blob), "error"))

    # ---- containers and metadata of the wrong type
    ours = _ours(spec, sd)
    meta = ours["meta"]
    tensor2 = torch.ones(2)
    wrong: dict[str, list[Any]] = {
        "meta": [[1, 2], "text", 3, tensor2],
        "dataset": [[1, 2], "text", 3, 2.5, True, {"junk": 1}, tensor2,
                    {**_ds(), "classes": 10.0}, {**_ds(), "name": 5}, {**_ds(), "size": -1}, {**_ds(), "classes": 7},
                    {k: v for k, v in _ds().items() if k != "train"}, {**_ds(), "channels": 3}],
        "normalisation": [[1, 2], "text", 3, {"mean": [0.1], "std": [0.0]}, {"mean": [], "std": []},
                          {"mean": [0.1, 0.2], "std": [1.0, 1.0]}, {"mean": ["a"], "std": [1.0]}, {"mean": [0.1]}],
        "recipe": [[1, 2], "text", 3, {"epochs": "ten"}, {"lr": -1.0}, {"optimizer": "adam"}, {"epochs": 0}],
        "history": [[1, 2], "text", 3, True, {"junk": 1}, [{"epoch": "x"}], [[1]]],
        "final": [[1, 2], "text", 3, {"acc": "x"}, {"acc": [1]}, {"acc": 10 ** 400}],
        "schema": [2, "1", 1.0, True, tensor2, None],
        "spec": [[1, 2], "text", 3, {"junk": 1}, {**meta["spec"], "num_classes": 10.0},
                 {**meta["spec"], "layers": "abc"}, {**meta["spec"], "widths": [16, 32, 128]},
                 {k: v for k, v in meta["spec"].items() if k != "block"}, {**meta["spec"], "block": "huge"},
                 {**meta["spec"], "in_channels": 3}, {1: 2}],
        "content_sha256": [5, "abc", [1], "sha256:" + "0" * 64, "SHA256:" + "0" * 64],
        "train_seconds": [[1], "abc", {"a": 1}, 10 ** 400],
    }
    for field_name, values in wrong.items():
        for i, value in enumerate(values):
            obj = {**ours, "meta": value} if field_name == "meta" else {**ours, "meta": {**meta, field_name: value}}
            bad(f"meta/{field_name}/{i}", ckcraft.torch_bytes(obj))
    for i, value in enumerate([None, [1, 2], "text", {}, {"fc.weight": "x"}, {"fc.weight": [1.0]}]):
        bad(f"container/state_dict/{i}", ckcraft.torch_bytes({**ours, "state_dict": value}))
    bad("container/list", ckcraft.torch_bytes([sd]))
    bad("container/tensor", ckcraft.torch_bytes(torch.ones(3)))
    bad("container/empty-dict", ckcraft.torch_bytes({}))
    bad("container/training-dict", ckcraft.torch_bytes({"epoch": 3, "net": sd}))

    # ---- keys
    for i, k in enumerate([3, (1, 2), b"fc.weight", None, 1.5]):
        bad(f"keys/non-string/{i}", ckcraft.torch_bytes({**sd, k: torch.zeros(1)}))
    for i, k in enumerate(rng.sample(list(sd), 5)):
        bad(f"keys/duplicate/{i}", ckcraft.torch_bytes({**sd, f"module.{k}": sd[k]}))
        bad(f"keys/missing/{i}", ckcraft.torch_bytes({kk: v for kk, v in sd.items() if kk != k}))
    bad("keys/unexpected", ckcraft.torch_bytes({**sd, "extra.weight": torch.zeros(1)}))

    # ---- tensors
    for i, k in enumerate(rng.sample(tensor_keys, 6)):
        t = sd[k]
        bad(f"tensor/sparse/{i}", ckcraft.torch_bytes({**sd, k: t.to_sparse()}))
        bad(f"tensor/0-d/{i}", ckcraft.torch_bytes({**sd, k: t.reshape(-1)[0].clone()}))
        bad(f"tensor/empty/{i}", ckcraft.torch_bytes({**sd, k: torch.zeros(0, *t.shape[1:])}))
        bad(f"tensor/meta-device/{i}", ckcraft.torch_bytes({**sd, k: torch.zeros(t.shape, device="meta")}))
        bad(f"tensor/expanded/{i}", ckcraft.torch_bytes({**sd, k: t.reshape(-1)[:1].expand(t.shape)}))
        bad(f"tensor/shape/{i}", ckcraft.torch_bytes({**sd, k: torch.zeros(t.shape[0] + 1, *t.shape[1:])}))
        dtype = rng.choice([torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
                            torch.complex64, torch.complex128])
        bad(f"tensor/dtype/{i}/{dtype}", ckcraft.torch_bytes({**sd, k: t.to(dtype)}))
        value = rng.choice([float("nan"), float("inf"), float("-inf")])
        poisoned = t.clone()
        poisoned.view(-1)[rng.randrange(t.numel())] = value
        bad(f"tensor/non-finite/{i}/{value}", ckcraft.torch_bytes({**sd, k: poisoned}))
        bad(f"tensor/non-finite-ours/{i}/{value}", ckcraft.torch_bytes(_ours(spec, {**sd, k: poisoned})))
    with warnings.catch_warnings():  # quantized tensors are deprecated, which is the point
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_tensor(sd["fc.weight"], 0.1, 0, torch.qint8)
    bad("tensor/quantized", ckcraft.torch_bytes({**sd, "fc.weight": quantized}))
    bad("tensor/float64-overflow", ckcraft.torch_bytes({**sd, "fc.weight": sd["fc.weight"].double() * 1e300}))
    for i, k in enumerate([k for k in sd if k.endswith("running_var")][:5]):
        neg = sd[k].clone()
        neg[rng.randrange(neg.numel())] = -rng.random()
        bad(f"tensor/negative-running-var/{i}", ckcraft.torch_bytes({**sd, k: neg}))
    for i, k in enumerate([k for k in sd if k.endswith("num_batches_tracked")][:3]):
        bad(f"tensor/float-counter/{i}", ckcraft.torch_bytes({**sd, k: torch.tensor(1.0)}))
    return cases


def _ds() -> dict[str, Any]:
    return {"name": "digits16", "train": 1347, "test": 450, "classes": 10, "channels": 1, "size": 16, "split_seed": 0}


def _refused_code(blob: bytes) -> Callable[[], Any]:
    marker = Path("/tmp/resnet_lens_ckpt_fuzz_pwned")

    def run() -> Any:
        marker.unlink(missing_ok=True)
        try:
            return load_checkpoint(blob, name="upload.pt")
        except Exception as exc:
            assert "refused" in str(exc) and "Python objects" in str(exc), str(exc)
            raise
        finally:
            assert not marker.exists(), "the pickle ran code"
    return run


def test_checkpoint_upload_fuzz():
    cases = upload_cases()
    assert 250 <= len(cases) <= 400, len(cases)
    report = run_cases("checkpoint-upload", cases)
    assert_no_failures(report)
    assert report.count("valid") == sum(c.expect == "valid" for c in cases) >= 70


# ============================================================================= memory-bomb
def bomb_files(folder: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(case name, file, expect, load_checkpoint kwargs). Built from bytes: nothing declared is allocated."""
    rng = random.Random(1011)
    out: list[tuple[str, str, str, dict[str, Any]]] = []

    def add(name: str, blob: bytes, expect: str = "error", **kw: Any) -> None:
        path = folder / f"{len(out):03d}.pt"
        path.write_bytes(blob)
        out.append((name, path.name, expect, kw))

    small_spec = get_spec("cifar_resnet8").replace(shortcut="B")
    small = build_model(small_spec).state_dict()
    # controls: real small nets load under the budget
    add("control/cifar8-ours", ckcraft.torch_bytes(_ours(small_spec, small)), "valid")
    add("control/cifar20-bare", ckcraft.torch_bytes(build_model(get_spec("cifar_resnet20").replace(
        shortcut="B")).state_dict()), "valid")
    add("control/cifar56-bare", ckcraft.torch_bytes(build_model(get_spec("cifar_resnet56").replace(
        shortcut="C")).state_dict()), "valid")

    # huge specs in metadata around a tiny state_dict
    for i in range(16):
        n = rng.randint(1, 8)
        block = rng.choice(["basic", "bottleneck"])
        spec = ResNetSpec(name=f"bomb{i}", block=block, layers=tuple(rng.randint(1, 2000) for _ in range(n)),
                          widths=tuple(rng.choice([256, 1024, 4096, 65536]) for _ in range(n)),
                          stem=rng.choice(["cifar", "imagenet"]), stem_width=rng.choice([64, 4096]),
                          num_classes=rng.choice([10, 1000, 1_000_000]), input_size=4096,
                          shortcut=rng.choice(["B", "C"]))
        add(f"meta-spec/{i}/{block}x{sum(spec.layers)}", ckcraft.torch_bytes(_ours(spec, small, hashed=False)))
    add("meta-spec/30x8192", ckcraft.torch_bytes(_ours(small_spec, small, hashed=False) | {"meta": {"spec": {
        **spec_to_dict(small_spec), "layers": [8192] * 30, "widths": [64] * 30}}}))
    # the state_dict matches, only the input is huge: activations of 4096 x 4096 pixels
    add("meta-spec/activations-4096px", ckcraft.torch_bytes(_ours(small_spec.replace(input_size=4096), small)))
    add("bare/input-size-4096", ckcraft.torch_bytes(small), input_size=4096)

    # bare state_dicts naming thousands of blocks with every key present, each tensor a view of one
    # small storage (torch.load itself takes ~0.15 ms per tensor: 24,000 keys here, not 144,000)
    for stages, blocks, width, stride0 in [(1, 2000, 256, False), (2, 1000, 16, False), (1, 2000, 16, True)]:
        spec = ResNetSpec(name="x", block="basic", layers=(blocks,) * stages, widths=(width,) * stages,
                          stem="cifar", stem_width=width, strides=(1,) * stages, shortcut="B", num_classes=10,
                          input_size=32)
        add(f"many-keys{'-stride0' * stride0}/{stages}x{blocks}x{width}", _shared_storage_file(spec, stride0))
    # the keys inference reads, naming up to 8 x 2000 blocks (the 1.8 MB file of the issue named 6 x 2000)
    for i in range(8):
        stages, blocks, width = rng.randint(1, 8), rng.randint(500, 2000), rng.choice([16, 64, 256])
        sd = {"conv1.weight": torch.zeros(width, 3, 3, 3), "fc.weight": torch.zeros(10, width)}
        for st in range(1, stages + 1):
            sd[f"layer{st}.0.conv1.weight"] = torch.zeros(width, width, 3, 3)
            sd[f"layer{st}.{blocks - 1}.conv1.weight"] = torch.zeros(width, width, 3, 3)
        add(f"claimed-keys/{i}/{stages}x{blocks}x{width}", ckcraft.torch_bytes(sd), plain=rng.choice([None, False]))
    # key names alone claiming blocks far beyond any limit
    add("many-keys/index-10^12", ckcraft.torch_bytes({**small, "layer1.999999999999.conv1.weight": torch.zeros(1)}))

    # stride-0 tensors declaring up to 65,536 x 65,536 x 3 x 3 values on 4 bytes
    for i in range(10):
        shape = tuple(rng.choice([3, 64, 4096, 65536]) for _ in range(rng.choice([2, 4])))
        key = rng.choice(["conv1.weight", "fc.weight", "layer1.0.conv1.weight", "bn1.running_var"])
        add(f"stride0/{i}/{key}/{'x'.join(map(str, shape))}",
            ckcraft.torch_bytes({**small, key: torch.zeros(1).expand(*shape)}))
    add("stride0/65536^2x3x3-ours", ckcraft.torch_bytes(
        _ours(small_spec, {**small, "conv1.weight": torch.zeros(1).expand(65536, 65536, 3, 3)}, hashed=False)))
    add("overlap/(1,1)-strides", ckcraft.zip_file(
        {"fc.weight": ckcraft.Tensor(ckcraft.Storage("0", 100), 0, (10, 64), (1, 1))}, {"0": bytes(400)}))

    # zip records: declared larger than stored, and deflated zeros unpacking a thousandfold
    n = 10 ** 10
    add("zip/declared-10^10", ckcraft.zip_file({"fc.weight": ckcraft.Tensor(ckcraft.Storage("0", n), 0, (n,), (1,))},
                                               {"0": bytes(40)}))
    for mib in (600, 1024):
        add(f"zip/deflate-{mib}MiB", _deflate_bomb(mib << 20))
    # a 20 MB pickle of 10 million references: hundreds of MB of Python objects once unpickled
    add("zip/pickle-10M-items", ckcraft.zip_file({"meta": [0] * 10_000_000}, {}))

    # legacy (pre-1.6) files declaring storages of 1 GiB to 4 TiB on a few bytes
    for numel in (1 << 28, 1 << 34, 1 << 40):
        obj = {"fc.weight": ckcraft.Tensor(ckcraft.Storage("k", numel), 0, (10, 64), (64, 1))}
        add(f"legacy/declared-{numel}", ckcraft.legacy_file(obj, {"k": (numel, bytes(2560))}))
        add(f"legacy/header-{numel}", ckcraft.legacy_file(obj, {"k": (640, bytes(2560))}))
    return out


def _shared_storage_file(spec: ResNetSpec, stride0: bool) -> bytes:
    """Every key of ``spec``'s state_dict, each tensor a view at offset 0 of one storage as large as
    its biggest tensor (or a stride-0 expansion of one value): megabytes declaring gigabytes."""
    from analysis.arch.models import state_dict_shapes

    shapes = state_dict_shapes(spec)
    biggest = max(max(1, _prod(s)) for s in shapes.values())
    storage = ckcraft.Storage("0", 1 if stride0 else biggest)
    counter = ckcraft.Storage("1", 1, torch.LongStorage)
    obj = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            obj[k] = ckcraft.Tensor(counter, 0, (), ())
        else:
            stride = (0,) * len(s) if stride0 else tuple(_prod(s[i + 1:]) for i in range(len(s)))
            obj[k] = ckcraft.Tensor(storage, 0, s, stride)
    return ckcraft.zip_file(obj, {"0": bytes(4 * (1 if stride0 else biggest)), "1": bytes(8)})


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _deflate_bomb(nbytes: int) -> bytes:
    """A zip whose one storage record is ``nbytes`` zeros, deflated (about a thousandth of that),
    written in chunks so building it allocates next to nothing."""
    numel = nbytes // 4
    pkl = io.BytesIO()
    ckcraft._ZipPickler(pkl, protocol=2).dump(
        {"fc.weight": ckcraft.Tensor(ckcraft.Storage("0", numel), 0, (numel,), (1,))})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        chunk = bytes(1 << 20)
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(nbytes >> 20):
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def run_bombs(folder: Path) -> dict[str, Any]:
    """In the child: warm up on a small file, then run every bomb; report outcomes and peak RSS."""
    import resource

    # a safety net for the machine, far above the budget: a bomb that got through fails here, not in the OOM killer
    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))

    manifest = json.loads((folder / "manifest.json").read_text())
    load_checkpoint(folder / manifest[0][1])  # imports, allocator and thread pools warmed up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def case(name: str, file: str, expect: str, kw: dict[str, Any]) -> Case:
        return Case(name, lambda: load_checkpoint(folder / file, **kw), expect,  # type: ignore[arg-type]
                    lambda ck: ck.model is not None)

    report = run_cases("memory-bomb", [case(*row) for row in manifest])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"outcomes": report.outcomes, "details": report.details, "rss_before": before, "rss_after": after}


def test_memory_bombs_are_refused_within_the_budget(tmp_path):
    rows = bomb_files(tmp_path)
    assert 50 <= len(rows) <= 80, len(rows)
    (tmp_path / "manifest.json").write_text(json.dumps(rows))
    env = {**os.environ, "RESNET_LENS_MEMORY_BUDGET": BOMB_BUDGET, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.test_checkpoints_fuzz", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    report = Report("memory-bomb", result["outcomes"], result["details"])
    assert_no_failures(report)
    assert report.count("valid") == 3 and report.count("clean") == len(rows) - 3
    grown = result["rss_after"] - result["rss_before"]
    assert grown < BOMB_BUDGET_BYTES, f"peak RSS grew by {grown / 2**20:.0f} MiB, budget {BOMB_BUDGET}"


if __name__ == "__main__":  # the memory-bomb child: python -m tests.fuzz.test_checkpoints_fuzz <folder>
    print(json.dumps(run_bombs(Path(sys.argv[1]))))
