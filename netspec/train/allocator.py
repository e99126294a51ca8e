"""Host memory for training on the CPU: freed blocks are kept for the next step.

glibc serves every block over 32 MiB with its own `mmap` and unmaps it again on `free`. A
training step on the CPU allocates and frees each of its large activation maps (AlexNet's
first maps are 150 MB at batch 128), so every step would fault in and zero all of them anew:
the paper's network stepped 1.2 times slower at batch 128 on a 2-core machine (`make bench`).
Told to serve large blocks from its heap and never to hand freed memory back (`mallopt`:
M_MMAP_MAX 0, M_TRIM_THRESHOLD off), glibc gives each step the pages the previous one freed.
The process then keeps its peak memory until it ends, as a training run does anyway. Other C
libraries are left alone, and NETSPEC_KEEP_MEMORY=0 leaves glibc's own policy.
"""

from __future__ import annotations

import ctypes
import os

ENV = "NETSPEC_KEEP_MEMORY"
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER = -1  # glibc reads the trim threshold as unsigned: the largest size there is


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Make glibc keep what this process frees for its next allocations; whether it did."""
    libc = _glibc()
    if libc is None or os.environ.get(ENV, "1") == "0":
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER))
