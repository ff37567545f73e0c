"""What this CPU can do: its bf16 matrix units, its peak arithmetic rate, and a short description of
the machine that result files carry (CPU, thread count, torch version).

bf16 autocast on the CPU pays only where the CPU has bf16 matrix or dot-product units (Intel AMX's
``amx_bf16`` tiles, or AVX-512's ``avx512_bf16`` dot products; oneDNN uses them for convolutions and
matmuls). Elsewhere torch emulates bf16 with conversions and runs slower than fp32, so a bf16 recipe
is refused there (:func:`check_cpu_bf16`) with one sentence rather than run slowly.

The flags are read from ``/proc/cpuinfo`` (Linux). Other systems report no flags, so bf16 is refused
there; the environment variable ``RESNET_LENS_CPU_FLAGS`` (space-separated flags) overrides the read,
for tests and for machines whose kernel hides flags.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

from analysis.core.errors import ConfigError

FLAGS_ENV = "RESNET_LENS_CPU_FLAGS"
#: CPU flags that mean bf16 arithmetic in hardware, best first, with the name people know them by.
BF16_UNITS = (("amx_bf16", "AMX-BF16 tiles"), ("avx512_bf16", "AVX-512 BF16 dot products"))


@functools.lru_cache(maxsize=4)
def _proc_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str], float | None]:
    """(model name, flags, clock in MHz) of the first CPU listed; empty where the file is missing."""
    model, flags, mhz = "", frozenset[str](), None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                elif key == "cpu MHz" and mhz is None:
                    try:
                        mhz = float(value)
                    except ValueError:
                        mhz = None
                elif not line.strip() and flags:
                    break  # the first CPU's block is enough
    except OSError:
        pass
    return model, flags, mhz


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``RESNET_LENS_CPU_FLAGS`` when set, else ``/proc/cpuinfo``)."""
    override = os.environ.get(FLAGS_ENV)
    if override is not None:
        return frozenset(override.split())
    return _proc_cpuinfo()[1]


def bf16_unit() -> str | None:
    """The bf16 hardware this CPU has ("AMX-BF16 tiles", ...), or None."""
    flags = cpu_flags()
    return next((name for flag, name in BF16_UNITS if flag in flags), None)


def check_cpu_bf16(what: str = "bf16") -> str:
    """The CPU's bf16 unit, or a ConfigError saying why bf16 is refused on this CPU."""
    unit = bf16_unit()
    if unit is None:
        raise ConfigError(f"{what} on the CPU needs bf16 matrix units (AMX-BF16 or AVX-512 BF16), which this CPU "
                          f"({cpu_model() or platform.machine() or 'unknown'}) does not have: it would run slower "
                          "than fp32 there; use fp32 (or bf16 on a CUDA device)")
    return unit


def cpu_model() -> str:
    return _proc_cpuinfo()[0]


@dataclass(frozen=True)
class Peak:
    """A CPU's peak arithmetic rate: cores x FLOPs per cycle per core x clock."""

    cores: int
    flops_per_cycle: int  # per core
    ghz: float
    unit: str  # what the FLOPs per cycle assume

    @property
    def gflops(self) -> float:
        return self.cores * self.flops_per_cycle * self.ghz

    @property
    def formula(self) -> str:
        return (f"{self.cores} cores x {self.flops_per_cycle} FLOP/cycle ({self.unit}) x {self.ghz:.2f} GHz "
                f"= {self.gflops:,.0f} GFLOP/s")


def peaks(cores: int, ghz: float | None = None, flags: frozenset[str] | None = None) -> dict[str, Peak]:
    """Peak fp32 and bf16 rates of ``cores`` cores at ``ghz`` (default: the clock /proc/cpuinfo reports).

    fp32: two FMA ports per core (Intel's server cores since Skylake-SP), each a fused multiply-add
    (2 FLOPs) on a vector of 16 fp32 lanes with AVX-512 (8 with AVX2): 2 x 2 x 16 = 64 FLOP/cycle.
    bf16: an AMX tile multiply does 16 x 32 bf16 multiply-adds per cycle per core (Intel's
    optimisation manual, Sapphire Rapids), 1,024 FMAs = 2,048 FLOP/cycle; AVX-512 BF16's
    ``vdpbf16ps`` does 32 bf16 products summed pairwise into 16 fp32 lanes on each of two ports:
    2 x 32 x 2 = 128 FLOP/cycle. The port counts are the vendor's, not read from the machine."""
    flags = cpu_flags() if flags is None else flags
    ghz = ghz if ghz is not None else (_proc_cpuinfo()[2] or 0.0) / 1000
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    out = {"fp32": Peak(cores, 2 * 2 * lanes, ghz, f"2 FMA ports x 2 FLOPs x {lanes} fp32 lanes")}
    if "amx_bf16" in flags:
        out["bf16"] = Peak(cores, 2048, ghz, "AMX: 16x32 bf16 FMAs x 2 FLOPs")
    elif "avx512_bf16" in flags:
        out["bf16"] = Peak(cores, 128, ghz, "2 ports x 32 bf16 products x 2 FLOPs")
    return out


def describe(threads: int | None = None) -> dict[str, str | int]:
    """The machine a result was measured on: CPU model, logical CPUs, torch's intra-op threads, the
    bf16 unit, torch's version. Result files carry it, since bit-identical holds per machine and
    thread count only."""
    import torch

    return {"cpu": cpu_model() or platform.processor() or platform.machine(), "cpus": os.cpu_count() or 0,
            "threads": threads if threads is not None else torch.get_num_threads(),
            "bf16_unit": bf16_unit() or "none", "torch": str(torch.__version__)}
