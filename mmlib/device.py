"""Where tensors live, and the one precision setting of the project.

- ``device()``: CUDA if present, else CPU.
- ``precision()``: ``"bf16"`` or ``"fp32"``, from ``MMLIB_PRECISION=auto|fp32|bf16`` (default
  ``auto``). ``auto`` picks bf16 only where bf16 matmuls are *fast*: a CUDA GPU with bf16 support,
  or a CPU with AMX or AVX512-BF16. On a CPU without those units bf16 is emulated: a 1024² matmul
  measured 45× *slower* than fp32 on an AVX2-only AMD EPYC; with AVX512-BF16 a 2048² matmul ran
  2.7× faster than fp32, with AMX 7×.
- ``autocast()``: ``torch.autocast`` in that precision, or a no-op context in fp32. Every
  training step, sampler, decoder and encoder of ``mmlib`` enters autocast through it.
- ``as_compute(t)``: the one place where cached half-precision tensors (text banks, features,
  stored in fp16 to halve the disk) are brought back to fp32 before they meet a model. Under
  autocast the fp32 input is then cast to bf16 by the matmuls that benefit; mixing an fp16 input
  with bf16 autocast is what raised ``Unexpected floating ScalarType in at::autocast::prioritize``.
- ``cpu_kind()``: a short description of the CPU (model, AVX2 / AVX512-BF16 / AMX) for provenance.
- ``set_threads()``: one intra-op thread per core this process may run on.

The precision is part of every checkpoint and cache key (``mmlib.train.fit``, the feature and text
caches), so a model trained in bf16 is never reused by an fp32 run, or the reverse.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch

FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 matmul units
PRECISIONS = ("auto", "fp32", "bf16")


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


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16 present: torch's oneDNN kernels then run bf16 natively."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu private probes
    if any(getattr(torch.cpu, p, lambda: False)() for p in probes):
        return True
    return bool(cpu_flags() & set(FAST_BF16_CPU_FLAGS))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def cpu_kind() -> str:
    """E.g. ``"AMD EPYC 9B14 (AVX512-BF16)"``: the model and the widest matmul units it has."""
    flags = cpu_flags()
    units = ("AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags
             else "AVX2" if "avx2" in flags else "no AVX2")
    return f"{cpu_model()} ({units})"


def fast_bf16(kind: str | None = None) -> bool:
    """Whether bf16 matmuls are native (fast) on the ``cuda`` or ``cpu`` device."""
    kind = kind or device().type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def setting() -> str:
    """``$MMLIB_PRECISION`` as set: ``auto`` (default), ``fp32`` or ``bf16``."""
    want = os.environ.get("MMLIB_PRECISION", "auto").strip().lower() or "auto"
    if want not in PRECISIONS:
        raise ValueError(f"MMLIB_PRECISION={want!r}: choose one of {', '.join(PRECISIONS)}")
    return want


def precision() -> str:
    """``"bf16"`` or ``"fp32"``: ``$MMLIB_PRECISION`` (auto|fp32|bf16), ``auto`` = bf16 where it is fast."""
    want = setting()
    if want == "auto":
        return "bf16" if fast_bf16() else "fp32"
    return want


def autocast_dtype() -> torch.dtype | None:
    """``torch.bfloat16`` when ``precision()`` is bf16, else ``None`` (plain fp32)."""
    return torch.bfloat16 if precision() == "bf16" else None


def autocast(dev: str | torch.device | None = None, enabled: bool = True, bf16: bool | None = None):
    """Mixed-precision context for ``dev`` (default ``device()``) in ``precision()``; a no-op in fp32.

    ``enabled=False`` opens an fp32 region inside autocast, for numerics that must stay in fp32;
    ``bf16`` overrides ``precision()`` for one run whose config fixes it (``train.resolve_precision``)."""
    kind = torch.device(dev).type if dev is not None else device().type
    dtype = autocast_dtype() if bf16 is None else (torch.bfloat16 if bf16 else None)
    if not enabled:
        return torch.autocast(kind, enabled=False)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=dtype)


def as_compute(t: torch.Tensor, dev: str | torch.device | None = None) -> torch.Tensor:
    """A cached tensor ready for a model: fp16/bf16 tensors in fp32 (autocast then lowers the matmuls
    it runs in bf16), on ``dev`` when given; fp32/fp64, integer and bool tensors keep their dtype."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t if dev is None else t.to(dev)


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
