"""Run-time accelerator choice: CUDA, then Apple's MPS, then the CPU.

Pure functions (torch is imported lazily) so every GPU code path is exercised on a CPU-only machine:
tests pass `available=` to pretend a device exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class DevicePlan:
    device: str           # "cuda", "mps" or "cpu"
    precision: str        # "bf16", "fp16" or "fp32": what training/inference should use there
    batch_scale: int      # multiply the configured CPU batch size by this on an accelerator
    inference: str = "fp32"   # what encoding (not training) uses: bf16 autocast on a CPU with native bf16


def available_devices() -> set[str]:
    import torch

    found = {"cpu"}
    if torch.cuda.is_available():
        found.add("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.add("mps")
    return found


def choose_device(preference: str = "auto", available: set[str] | None = None) -> str:
    """'auto' -> cuda, then mps, then cpu. An explicit device that is absent is an error, not a silent CPU run."""
    available = available_devices() if available is None else available
    if preference == "auto":
        for device in ("cuda", "mps"):
            if device in available:
                return device
        return "cpu"
    base = preference.split(":")[0]
    if base not in available:
        raise ValueError(
            f"device={preference!r} was asked for but this machine has only {sorted(available)}; "
            "set device='auto' (or 'cpu') in the resource config."
        )
    return preference


@lru_cache(maxsize=8)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AVX512-BF16 or AMX in the CPU's flags. ATen's `get_cpu_capability()` stops at "AVX512", so it cannot tell;
    without them bf16 is emulated on a CPU and slower than fp32. False where there is no /proc/cpuinfo. Read
    once a process: every `plan_for` (so every encode) asks, and the flags do not change."""
    from pathlib import Path

    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def plan_for(device: str, bf16_supported: bool | None = None, cpu_bf16: bool | None = None) -> DevicePlan:
    """Precision and batch scale suited to a device. CUDA: bf16 where the card has it (Ampere+), else fp16."""
    base = device.split(":")[0]
    if base == "cuda":
        if bf16_supported is None:
            import torch

            bf16_supported = torch.cuda.is_bf16_supported()
        return DevicePlan(device, "bf16" if bf16_supported else "fp16", 4)
    if base == "mps":
        return DevicePlan(device, "fp32", 2)   # MPS autocast support is uneven across torch releases: stay fp32
    # training stays fp32 on a CPU; encoding in bf16 autocast is 2.6x faster where the CPU has it natively, at
    # no measurable nDCG@10 change (bench/throughput.py, README "Speed and memory")
    native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    return DevicePlan(device, "fp32", 1, "bf16" if native else "fp32")


def release_memory() -> None:
    """Give freed memory back: collect garbage, empty an accelerator's cache, and on glibc ask malloc to
    return its free pages to the system (otherwise the resident set of a process that has freed a model's
    weights can stay where it was)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def glibc():
    """glibc's handle, or None (not Linux, or a libc without malloc_trim/mallopt, such as musl): nothing to ask."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt   # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8     # glibc's mallopt parameters (malloc.h)
HEAP_MMAP_THRESHOLD = 4 << 20              # blocks of 4 MiB and more get their own mapping
HEAP_ARENAS = 2


def bound_heap(environ=None, libc=None) -> bool:
    """Keep a step's freed tensors from staying resident (glibc only; True when applied).

    glibc serves a block above `M_MMAP_THRESHOLD` with its own mapping, which goes back to the system the moment
    it is freed, but the threshold is dynamic: each freed mapping raises it (up to 32 MiB), so after a model's
    first forward pass most activations (a few MiB each) come from the heap, where blocks freed in one order and
    asked for in another fragment it, and `malloc_trim` between steps cannot help inside a step. A fixed 4 MiB
    threshold (which also turns the dynamic one off) and two arenas instead of 8 a core cut the demo's peak RSS from
    4.05 to 3.38 GiB in a fresh clone (README, "Speed and memory"). What a user set (MALLOC_MMAP_THRESHOLD_,
    MALLOC_ARENA_MAX, GLIBC_TUNABLES) is left alone."""
    import os

    environ = os.environ if environ is None else environ
    if any(k in environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")) or \
            "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = glibc() if libc is None else libc
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)) & bool(libc.mallopt(M_ARENA_MAX, HEAP_ARENAS))
