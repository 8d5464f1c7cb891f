"""glibc malloc told to keep freed memory for reuse, for CPU training.

A CPU training step frees and re-allocates the same activation sizes every step. By default
glibc hands big freed blocks back to the OS (its dynamic mmap and trim thresholds), and the
next step page-faults them in again: tens of thousands of faults per o-ResNet20 step, a
noticeable part of it on a VM (benchmarks/RESULTS.md). Fixing both thresholds keeps the blocks
in the heap; blocks above 32 MiB (glibc's largest threshold on 64-bit) are still mapped per
allocation. The cost is that the process keeps its peak heap until it exits.

``osep-nas`` commands and :func:`osep_nas.train` on CPU call :func:`keep_freed_memory`;
``OSEP_NAS_KEEP_MEMORY=0`` leaves malloc as it is (docs/config.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap (glibc refuses more on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: never give the heap's free top back to the OS
TRIM_THRESHOLD = (1 << 31) - 1

_state: Optional[str] = None


def enabled() -> bool:
    """Whether ``OSEP_NAS_KEEP_MEMORY`` allows the setting (default yes)."""
    return os.environ.get("OSEP_NAS_KEEP_MEMORY", "1").strip().lower() not in ("0", "off", "false", "no")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process (see the module doc); True where
    they are set, False where turned off, not glibc, or refused."""
    global _state
    if _state is None:
        _state = _apply()
    return _state == "kept"


def _apply() -> str:
    if not enabled():
        return "off"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return "not glibc"
    return "kept" if ok else "refused"


def describe() -> str:
    """The allocator setting of this process, for benchmark records."""
    if _state == "kept":
        return f"glibc malloc keeps freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MiB, no trim)"
    return f"malloc as started ({_state or 'not set'})"
