"""Process-wide settings for the Streamlit server, applied once: app.py imports this module, and a
module body runs once per process however many sessions and reruns follow. Page threads never
change these.

One intra-op thread per session. Every session's script runs in its own thread, and torch's default
gives each of them a team of one OpenMP thread per core. With several sessions measuring at once
those teams oversubscribe the cores, and each small op's team has to meet at a barrier that waits for
whichever member the OS has descheduled: the server then sat at under half a core while five
sessions each took six times as long as one alone. With one thread per session, sessions run side by
side on separate cores (the measurements hold the GIL for only ~3 % of their time). Override with
``RESNET_LENS_TORCH_THREADS=n`` (``0``: torch's own default).
"""

from __future__ import annotations

import os

import torch

from analysis.errors import ConfigError


def torch_threads() -> int | None:
    """The intra-op thread count to use: ``RESNET_LENS_TORCH_THREADS``, else 1; None for torch's default."""
    raw = os.environ.get("RESNET_LENS_TORCH_THREADS", "1").strip()
    if not raw.isdigit():
        raise ConfigError(f"RESNET_LENS_TORCH_THREADS must be a whole number (0 = torch's default), got {raw!r}")
    return int(raw) or None


THREADS = torch_threads()
if THREADS is not None:
    torch.set_num_threads(THREADS)
