"""Where tensors live and which precision is fast there.

- ``device()``: CUDA if present, else CPU.
- ``autocast_dtype()``: ``torch.bfloat16`` only where bf16 matmuls are *fast* (CUDA with bf16 support;
  a CPU with AMX or AVX512-BF16), else ``None`` (stay in fp32). On a CPU without those instructions
  bf16 is emulated: a 1024² matmul measured 45× *slower* than fp32 on an AVX2-only AMD EPYC.
- ``autocast()``: ``torch.autocast`` with that dtype, or a no-op context.
- ``set_threads()``: one intra-op thread per core this process may run on.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 matmul units


def device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16 present: torch's oneDNN kernels then run bf16 natively."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu private probes
    if any(getattr(torch.cpu, p, lambda: False)() for p in probes):
        return True
    return bool(cpu_flags() & set(FAST_BF16_CPU_FLAGS))


@functools.lru_cache(maxsize=None)
def autocast_dtype(dev: str | torch.device | None = None) -> torch.dtype | None:
    """``torch.bfloat16`` where it is fast on ``dev`` (default: ``device()``), else ``None`` (fp32)."""
    kind = torch.device(dev).type if dev else device().type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(dev: str | torch.device | None = None):
    """Mixed-precision context for ``dev``: bf16 autocast where fast, else nothing (fp32)."""
    kind = torch.device(dev).type if dev is not None else device().type
    dtype = autocast_dtype(kind)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=dtype)


def available_cores() -> int:
    """Cores this process may run on (CPU affinity; cgroup pinning included), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: ``$MMLIB_THREADS`` or the available cores).

    More threads than cores only adds contention; returns the number set.
    """
    n = n or int(os.environ.get("MMLIB_THREADS", 0)) or available_cores()
    n = min(n, available_cores())
    torch.set_num_threads(n)
    return n
