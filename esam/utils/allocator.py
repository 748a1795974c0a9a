"""The host memory allocator: what it is, and an option to keep freed memory mapped.

glibc's ``malloc`` serves large blocks (the full attention matrix of a 64x64-token image is
200 MB in float32) with fresh ``mmap`` calls and unmaps them on ``free``, so every such
allocation pays a page fault per 4 KiB page when first written. That cost is a property of the
process's allocator, not of the model code: an allocator that keeps freed pages mapped
removes it (glibc tuned with ``mallopt``; jemalloc only with its purging turned off,
``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``: with its defaults it pays the faults
too). CPU benchmarks therefore record the allocator (:func:`allocator_info`) and can be run
with :func:`retain_freed_memory`.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

# mallopt parameter numbers (glibc <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap and stay mapped after ``free``.
RETAIN_MMAP_THRESHOLD = 1 << 30
#: Freed memory at the top of the heap is returned to the OS only beyond this (int32 max).
RETAIN_TRIM_THRESHOLD = 2**31 - 1
#: Extra memory requested from the OS each time the heap grows.
RETAIN_TOP_PAD = 64 << 20

#: Substrings of preloaded libraries that replace ``malloc`` (mallopt would not reach them).
ALLOCATOR_LIBRARIES: tuple[str, ...] = ("tcmalloc", "jemalloc", "mimalloc")

_retained = False


def retain_freed_memory() -> bool:
    """Make glibc ``malloc`` keep freed memory mapped for reuse, in this process from now on.

    Sets ``M_MMAP_THRESHOLD`` (1 GiB), ``M_TRIM_THRESHOLD`` and ``M_TOP_PAD`` through
    ``mallopt``. Returns True when all three were accepted; False where the C library is not
    glibc, an allocator library (:data:`ALLOCATOR_LIBRARIES`) is preloaded, or glibc refuses a
    value (older versions cap the mmap threshold at 32 MiB). Memory freed by the process is
    kept (its resident size does not shrink), so use it for benchmarks and batch jobs. It
    governs the main thread's heap, where torch allocates the tensors of ops called from
    Python; other threads' arenas still serve blocks over 64 MiB with ``mmap``.
    """
    global _retained
    libc = _libc()
    if libc is None or preloaded_allocators():
        return False
    accepted = [
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, RETAIN_MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, RETAIN_TRIM_THRESHOLD),
            (_M_TOP_PAD, RETAIN_TOP_PAD),
        )
    ]
    _retained = _retained or all(accepted)
    return all(accepted)


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so RSS reflects live data.

    Does nothing where the C library is not glibc, and nothing once
    :func:`retain_freed_memory` took effect: trimming would hand the retained pages back.
    """
    libc = _libc()
    if libc is not None and not _retained:
        libc.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another one."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def retaining_freed_memory() -> bool:
    """Whether :func:`retain_freed_memory` took effect in this process."""
    return _retained


def preloaded_allocators() -> list[str]:
    """The preloaded libraries (``LD_PRELOAD``) that replace ``malloc``."""
    return [p for p in _preloaded() if any(a in p for a in ALLOCATOR_LIBRARIES)]


def _preloaded() -> list[str]:
    """Basenames of the libraries in ``LD_PRELOAD`` (e.g. ``libtcmalloc.so.4``)."""
    raw = os.environ.get("LD_PRELOAD", "")
    return [os.path.basename(p) for p in raw.replace(":", " ").split() if p]


def allocator_info() -> dict[str, Any]:
    """The C library, preloaded libraries, ``MALLOC_*`` / ``GLIBC_TUNABLES`` settings, and
    whether :func:`retain_freed_memory` was applied in this process."""
    lib, version = platform.libc_ver()
    env = {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"
    }
    return {
        "libc": f"{lib} {version}".strip() or None,
        "ld_preload": _preloaded(),
        "malloc_env": env,
        "retain_freed_memory": _retained,
    }
