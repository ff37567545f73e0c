"""Output files: checked before any work starts, written atomically.

:func:`check_writable` refuses an output path that cannot be written (empty, a directory, under a
file, in a folder this process may not write) *before* a run, so a long training never ends in a
traceback about its ``--out``. :func:`atomic_write` writes a temp file in the target's folder,
fsyncs it and renames it over the target: an interrupted or failed write (full disk, SIGTERM,
Ctrl-C) leaves the previous file, or nothing, never a partial one, and removes its temp file.
New files get the mode the user's umask gives (``0o666 & ~umask``), like any other program's output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from analysis.core.errors import ConfigError, LensError

__all__ = ["WriteError", "atomic_write", "check_writable", "clean_stale_temps", "rescue"]

Writer = Callable[[BinaryIO], object]


class WriteError(ConfigError):
    """A file could not be written; ``disk_full`` says whether the disk ran out of space (then the
    message says so, and nothing is blamed on the path)."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


#: below this much free space a failed write is put down to a full disk (torch's zip writer reports
#: ENOSPC only as "[enforce fail at inline_container.cc] ... unexpected pos", without the errno)
FULL_BELOW = 64 << 20


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _write_error(path: Path, exc: BaseException) -> WriteError:
    """One sentence for a failed write: a full disk said as such (by errno, or by the free space left
    when torch's writer hid the errno), anything else with its reason."""
    free = _free(path.parent)
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        not isinstance(exc, OSError) and free is not None and free < FULL_BELOW)
    if full:
        # the system's own word when it gave one, else the free space that made us conclude it
        left = (f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror
                else f" ({free / 2**20:.1f} MiB free)" if free is not None else "")
        return WriteError(f"could not write {path}: the disk holding {path.parent} is full{left}; nothing was "
                          "changed there", disk_full=True)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).strip().splitlines() or [""])[0]
    return WriteError(f"could not write {path}: {reason[:200]} (nothing was changed there)")


def _display(path: object) -> str:
    return repr(str(path)) if str(path).strip() != str(path) or not str(path) else str(path)


def check_writable(path: str | os.PathLike[str] | None, *, what: str = "output") -> Path:
    """``path`` as a :class:`Path` if a file can be written there, else a :class:`ConfigError`
    naming it. Missing parent folders are fine (they are created on writing) as long as the
    nearest existing one is a folder this process can create files in; nothing is left behind."""
    text = "" if path is None else os.fspath(path)
    if not text.strip():
        raise ConfigError(f"the {what} path is empty: give a file name, e.g. run.pt")
    if "\0" in text:
        raise ConfigError(f"the {what} path {text!r} contains a NUL character")
    p = Path(text).expanduser()
    ancestor: Path | None = None
    try:
        if p.is_dir():
            raise ConfigError(f"{what} {_display(p)} is a directory: give a file path inside it")
        if p.exists() and not p.is_file():
            raise ConfigError(f"{what} {_display(p)} exists and is not a regular file")
        if p.name in ("", ".", ".."):
            raise ConfigError(f"{what} {_display(p)} names a folder, not a file")
        ancestor = p.parent
        while not ancestor.exists():
            if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
                raise ConfigError(f"{what} {_display(p)}: {ancestor} is a broken symbolic link")
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"{what} {_display(p)}: {ancestor} is a file, not a folder")
        name_max = os.pathconf(ancestor, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        too_long = [part for part in p.relative_to(ancestor).parts if len(os.fsencode(part)) > name_max]
        if too_long:
            raise ConfigError(f"{what} {_display(p)}: the name {too_long[0][:40]}… is longer than "
                              f"{name_max} bytes")
        # The real test, not os.access (which says yes to root on a read-only mount): create an
        # anonymous temp file in the nearest existing folder (O_TMPFILE on Linux: no name at all).
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except ConfigError:
        raise
    except OSError as exc:
        where = f"cannot create a file in {ancestor}" if ancestor is not None else "cannot check its folder"
        raise ConfigError(f"cannot write {what} {_display(p)}: {where} ({exc.strerror or exc})") from exc
    return p


#: a temp file of :func:`atomic_write` untouched this long belongs to a writer that died (a writer
#: that is alive touches it with every block it writes, and renames it within seconds of the last)
STALE_TEMP_S = 600.0
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def clean_stale_temps(folder: str | os.PathLike[str], prefix: str = ".") -> int:
    """Remove the temp files a killed :func:`atomic_write` left in ``folder`` (names ``prefix``...,
    regular files, untouched for :data:`STALE_TEMP_S`); returns how many. Best effort: a folder that
    cannot be listed is left as it is."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(prefix) and _TEMP.match(e.name)):
            continue
        with contextlib.suppress(OSError):
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TEMP_S:
                os.unlink(e.path)
                removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | Writer) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file object) to ``path``
    atomically: temp file in the same folder, flush, fsync, ``os.replace``. On any exception,
    ``KeyboardInterrupt`` and ``SystemExit`` included, the temp file is removed and ``path`` is
    untouched; an ``OSError`` (full disk, permissions) becomes a :class:`ConfigError` naming the path.
    The file's mode comes from the umask (the temp file is created ``0o666 & ~umask`` by the kernel)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of {path}: {exc.strerror or exc}") from exc
    clean_stale_temps(path.parent, f".{path.name[:100]}.")  # what a killed earlier write of this file left
    tmp: Path | None = None
    try:
        fd = -1
        for _ in range(100):
            # The name is known before the file exists, so a signal at any point after this line
            # still finds it in the handler below; O_EXCL refuses to follow or reuse anything.
            tmp = path.with_name(f".{path.name[:100]}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                tmp = None
        if fd < 0 or tmp is None:
            raise FileExistsError(f"no free temp file name next to {path}")
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        # torch.save reports a failed write (a full disk among them) as RuntimeError from its zip writer
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "inline_container" in str(exc)):
            raise _write_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def rescue_folders() -> list[Path]:
    """Where :func:`rescue` tries when the asked-for path fails: the app's home (the run store's
    folder, often another disk than the output's), then the system's temp folder."""
    home = Path(os.environ.get("RESNET_LENS_HOME") or Path.home() / ".resnet-lens").expanduser()
    return [home / "rescued", Path(tempfile.gettempdir()) / "resnet-lens-rescued"]


def rescue(name: str, data: bytes | Writer) -> Path | None:
    """Write ``data`` as ``name`` in the first of :func:`rescue_folders` that takes it (never over a
    file there: ``name-1``, ``name-2`` ...); where it went, or None when none could. For a finished
    training whose own destination failed (a disk that filled up while it ran): it is not lost."""
    target = Path(name)
    for folder in rescue_folders():
        candidate = folder / target.name
        n = 1
        while candidate.exists():
            candidate = folder / f"{target.stem}-{n}{target.suffix}"
            n += 1
        try:
            return atomic_write(candidate, data)
        except ConfigError:
            continue
    return None


def read_bounded(path: Path, max_bytes: int, what: str, error: type[LensError]) -> bytes | None:
    """A results file's bytes, None where it is missing; ``error`` (naming ``what`` the file holds) when
    it is larger than ``max_bytes`` (checked before reading) or cannot be read."""
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > max_bytes:
            raise error(f"{path}: {path.stat().st_size:,} bytes, more than {what} ever are")
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: the {what} cannot be read ({exc})") from exc
