"""The memory budget: how much memory one net (or one file) may make this process allocate.

Everything that allocates for a net the user chose (a checkpoint upload, a spec from metadata, a
custom spec) is checked here first, from numbers known before anything is allocated: the analytic
cost table gives a spec's parameters, BatchNorm buffers and activation bytes
(:func:`analysis.arch.costs.totals`), a file's declared sizes give its tensors' bytes. Anything over the
budget is refused with the number and the limit, instead of dying in the allocator (or taking the
machine down with it).

The budget defaults to :data:`DEFAULT_FRACTION` of the machine's physical memory (or of the
container's cgroup limit when that is smaller); the environment variable
``RESNET_LENS_MEMORY_BUDGET`` overrides it, in bytes or with a binary suffix: ``8G``, ``512M``,
``1.5GiB``.
"""

from __future__ import annotations

import collections
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from analysis.arch.specs import ResNetSpec
from analysis.core.errors import ConfigError, SpecError

__all__ = ["DEFAULT_FRACTION", "ENV_VAR", "LOAD_PEAK_FACTOR", "BudgetError", "Reservation", "SpecMemory",
           "check_spec_fits", "fmt_bytes", "held_bytes", "memory_budget", "parse_bytes", "physical_memory", "reserve",
           "spec_memory"]

ENV_VAR = "RESNET_LENS_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.5  # of physical memory: room for the app, the data and a second session
FALLBACK_BYTES = 4 << 30  # when the platform cannot say how much memory it has
BYTES_PER_VALUE = 4  # float32 weights and activations
# Python-side cost of one nn.Module (its dicts, hooks, parameter wrappers), measured at about 2 KiB
# per module on a 72,000-module net; doubled so a net of many tiny layers is not underestimated.
MODULE_OVERHEAD_BYTES = 4096

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(text: str, what: str = ENV_VAR) -> int:
    """``"8G"`` -> 8 GiB in bytes. Binary multiples (K, M, G, T, P; an optional ``B`` or ``iB``);
    a bare number is bytes. Anything else, or a size below 1 MiB, is a ConfigError naming ``what``."""
    m = re.fullmatch(r"(?a)\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(?:i?b)?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ConfigError(f"{what}={text!r} is not a memory size: give bytes or a number with K, M, G or T "
                          "(binary multiples), e.g. 8G or 512M")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value < 1 << 20:
        raise ConfigError(f"{what}={text!r} is below the smallest usable budget, 1 MiB")
    return int(value)


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2 or v1), if there is one."""
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return None


def physical_memory() -> int | None:
    """Bytes of memory this process can have: physical memory, or the cgroup limit if smaller."""
    total: int | None = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = None
    limit = _cgroup_limit()
    if total is None or total <= 0:
        return limit
    return min(total, limit) if limit else total


def memory_budget() -> int:
    """The budget in bytes: ``$RESNET_LENS_MEMORY_BUDGET`` if set (read on every call, so a test or
    a server can change it), else :data:`DEFAULT_FRACTION` of :func:`physical_memory`."""
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        return parse_bytes(text)
    total = physical_memory()
    return int(total * DEFAULT_FRACTION) if total else FALLBACK_BYTES


# ---------------------------------------------------------------------------- what the process holds
#: Peak memory of loading a checkpoint, per byte its records unpack to: torch.load's tensors, the
#: model built beside them and the copy between. Measured: a file declaring 1.82 GB peaked at 5.05 GB
#: (2.77x); rounded up.
LOAD_PEAK_FACTOR = 2.8


class BudgetError(ConfigError):
    """Allocating this would take the process past its memory budget, counting what it holds."""


class Reservation:
    """Bytes this process holds (or is about to allocate) for one user-chosen thing, counted against
    the budget until :meth:`release`. :meth:`resize` shrinks it once the peak has passed (a loaded
    net keeps only its weights)."""

    def __init__(self, nbytes: int, what: str) -> None:
        self.nbytes, self.what, self._live = int(nbytes), what, True

    def resize(self, nbytes: int) -> None:
        with _LOCK:
            if self._live:
                self.nbytes = min(self.nbytes, int(nbytes))

    def release(self) -> None:
        with _LOCK:
            self._drop()

    def release_later(self) -> None:
        """For a finalizer: it may run inside a garbage collection that started while this thread holds
        the ledger's lock (any allocation under it), so it only queues; the next ledger call drops it."""
        _RELEASED.append(self)

    def _drop(self) -> None:  # under _LOCK
        if self._live:
            self._live = False
            _HELD.discard(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_LOCK = threading.Lock()
_HELD: set[Reservation] = set()
_RELEASED: collections.deque[Reservation] = collections.deque()  # appended by finalizers, lock-free


def _held() -> int:
    """Under _LOCK: drop the reservations finalizers have queued, then total what is held."""
    while _RELEASED:
        _RELEASED.popleft()._drop()
    return sum(r.nbytes for r in _HELD)


def held_bytes() -> int:
    """What this process holds for loaded nets and loads in progress (every thread together)."""
    with _LOCK:
        return _held()


def reserve(nbytes: int, what: str) -> Reservation:
    """Count ``nbytes`` for ``what`` against the budget, with everything else this process holds
    (other uploads, cached nets, loads running in other threads), before anything is allocated;
    :class:`BudgetError` with the numbers when it does not fit. A server's memory is then bounded by
    the budget, not each file separately (three files that fit one by one no longer reach 3x)."""
    limit = memory_budget()
    with _LOCK:
        held = _held()
        if held + nbytes > limit:
            others = f" while {fmt_bytes(held)} is held for other nets" if held else ""
            raise BudgetError(f"{what} needs about {fmt_bytes(nbytes)}{others}: more than the memory budget of "
                              f"{fmt_bytes(limit)} (set {ENV_VAR} to raise it)")
        r = Reservation(nbytes, what)
        _HELD.add(r)
        return r


def fmt_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as the budget's suffixes)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class SpecMemory:
    """What building ``spec`` and running ``batch`` images through it takes, from the cost table."""

    params: int
    weight_bytes: int  # parameters and BatchNorm running statistics, float32
    activation_bytes: int  # every layer's output for the batch (what a lesion sweep or backward keeps)
    module_bytes: int  # Python objects of the modules
    batch: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.module_bytes

    def describe(self) -> str:
        return (f"{fmt_bytes(self.total)} ({self.params:,} parameters = {fmt_bytes(self.weight_bytes)} with "
                f"BatchNorm statistics, {fmt_bytes(self.activation_bytes)} of activations for "
                f"{self.batch} image{'s' * (self.batch != 1)}, {fmt_bytes(self.module_bytes)} of modules)")


def spec_memory(spec: ResNetSpec, batch: int = 1) -> SpecMemory:
    """Memory of ``build_model(spec)`` plus the activations of a forward pass over ``batch`` images,
    computed from the analytic cost table: nothing is allocated for the net itself."""
    from analysis.arch.costs import layer_table, totals

    table = layer_table(spec)
    t = totals(spec, table)
    bn_buffers = sum(int(v) for v in table["bn_params"].tolist())  # running mean + var: one per gamma/beta
    return SpecMemory(
        params=t.params, weight_bytes=(t.params + bn_buffers) * BYTES_PER_VALUE,
        activation_bytes=t.activation_bytes * batch, module_bytes=len(table) * MODULE_OVERHEAD_BYTES, batch=batch,
    )


def check_spec_fits(spec: ResNetSpec, *, batch: int = 1, already: int = 0, budget: int | None = None,
                    what: str | None = None) -> SpecMemory:
    """Raise ``SpecError`` (with the numbers and the limit) if building ``spec`` and one forward pass
    of ``batch`` images, plus ``already`` bytes held for it (e.g. a loaded state_dict), would exceed
    the memory budget; return the estimate otherwise."""
    limit = memory_budget() if budget is None else budget
    name = what or spec.name
    # A cheap lower bound first (the block plans' weights, no table): a net of 10^15 weights is
    # refused in a fraction of a second, before the cost table of its 100,000 layers is built.
    weights = _weight_count(spec) * BYTES_PER_VALUE
    if weights + already > limit:
        raise SpecError(
            f"{name} needs at least {fmt_bytes(weights)} for its weights alone: more than the memory budget "
            f"of {fmt_bytes(limit)}. {_ADVICE}"
        )
    need = spec_memory(spec, batch)
    if need.total + already > limit:
        held = f" on top of {fmt_bytes(already)} already loaded" if already else ""
        raise SpecError(
            f"{name} needs about {need.describe()}{held}: more than the memory budget of "
            f"{fmt_bytes(limit)}. {_ADVICE}"
        )
    return need


_ADVICE = (f"Use a smaller net or input size, or raise the budget with {ENV_VAR} (e.g. 16G) on a machine "
           "that has the memory")


def _weight_count(spec: ResNetSpec) -> int:
    """Learned values of the whole net, from its plan (stem, blocks and head as the builder makes them)."""
    from analysis.arch.blockplan import net_plan  # blockplan reads specs, which budget's callers import first

    return net_plan(spec).params
