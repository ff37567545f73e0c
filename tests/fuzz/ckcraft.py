"""Hand-made checkpoint files for the checkpoint tests and fuzz suite: what ``torch.save`` would never
write but an attacker (or a broken tool) can: zip records that unpack a thousandfold, tensors that
declare more values than their storage holds, legacy-format files declaring huge storages, pickles
that name code. Everything is built from bytes; nothing here allocates what a file declares."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def torch_bytes(obj: object, **kw: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


class Storage:
    """A storage reference as torch.save pickles it: ``('storage', FloatStorage, key, 'cpu', numel)``."""

    def __init__(self, key: str, numel: int, stype: type = torch.FloatStorage) -> None:
        self.key, self.numel, self.stype = key, numel, stype


class Tensor:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with any numbers."""

    def __init__(self, storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self) -> tuple:
        return (torch._utils._rebuild_tensor_v2, self.args)


class _ZipPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, Storage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, Storage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel, None)
        return None


def zip_file(obj: object, records: dict[str, bytes], *, deflate: bool = False) -> bytes:
    """A torch zip checkpoint whose ``data.pkl`` is ``obj`` (with :class:`Storage` / :class:`Tensor`
    markers) and whose storage records are ``records`` (key -> raw bytes)."""
    pkl = io.BytesIO()
    _ZipPickler(pkl, protocol=2).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in records.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def legacy_file(obj: object, storages: dict[str, tuple[int, bytes]]) -> bytes:
    """A pre-1.6 (non-zip) torch file: magic, protocol, system info, ``obj``, storage keys, then
    each storage as (declared element count, raw bytes)."""
    out = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, out, protocol=2)
    _LegacyPickler(out, protocol=2).dump(obj)
    pickle.dump(list(storages), out, protocol=2)
    for numel, data in storages.values():
        out.write(int(numel).to_bytes(8, "little"))
        out.write(data)
    return out.getvalue()


def record_offset(blob: bytes, name: str) -> int:
    """Where the bytes of zip record ``name`` (e.g. ``archive/data/3``) start inside ``blob``."""
    z = zipfile.ZipFile(io.BytesIO(blob))
    info = z.getinfo(name)
    header = blob[info.header_offset: info.header_offset + 30]
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def data_records(blob: bytes) -> list[str]:
    return [n for n in zipfile.ZipFile(io.BytesIO(blob)).namelist() if "/data/" in n]
