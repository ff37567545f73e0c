"""Process-wide settings for the Streamlit server, applied once: app.py imports this module, and a
module body runs once per process however many sessions and reruns follow. Page threads never
change these.

**One intra-op thread per session.** Every session's script runs in its own thread, and torch's
default gives each of them a team of one OpenMP thread per core. The nets here are small, so every
op is a short parallel region whose team must meet at a barrier; on a busy machine (several
sessions, or anything else running) one member is often descheduled and the others sleep at the
barrier. Measured with ``benchmarks/bench_concurrency.py`` on two shared cores: one session's
lesion sweep + path measurement took 26–104 s with torch's default and 7–9 s with one thread, and
the server sat at about one core either way. One thread per session lets sessions run side by side
instead. Override with ``RESNET_LENS_TORCH_THREADS=n`` (``0``: torch's own default).

**Freed memory goes back to the system.** Streamlit runs every script run in a new thread; glibc
gives threads their own malloc arenas and keeps what they free for reuse, so after a few sessions
had measured at once the server kept ~0.5 GB more than it used (1.05 GB in issue 10). A daemon
thread calls ``malloc_trim(0)`` every :data:`TRIM_SECONDS` (glibc only; a few milliseconds each).
Fixed mmap/trim thresholds would return the memory too, but made the measurements about 3x slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable

import torch

from analysis.core.errors import ConfigError

TRIM_SECONDS = 30.0


def torch_threads() -> int | None:
    """The intra-op thread count to use: ``RESNET_LENS_TORCH_THREADS``, else 1; None for torch's default."""
    raw = os.environ.get("RESNET_LENS_TORCH_THREADS", "1").strip()
    if not (raw.isascii() and raw.isdigit()):  # '²'.isdigit() is True and int('²') raises
        raise ConfigError(f"RESNET_LENS_TORCH_THREADS must be a whole number (0 = torch's default), got {raw!r}")
    return int(raw) or None


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None) if libc is not None else None


def _trim_forever(trim: Callable[[int], int]) -> None:
    while True:
        time.sleep(TRIM_SECONDS)
        trim(0)


THREADS = torch_threads()
if THREADS is not None:
    torch.set_num_threads(THREADS)

_TRIM = _malloc_trim()
if _TRIM is not None:
    threading.Thread(target=_trim_forever, args=(_TRIM,), name="resnet-lens-malloc-trim", daemon=True).start()
