"""Tune the heap for the length of a pipeline run: fewer GC walks, fewer page faults.

`frozen_heap`: an ingest allocates hundreds of thousands of short-lived containers (HTTP
responses, futures, per-file records), so the collector runs often, and each full collection
walks every object alive in the process, most of them created by importing polars, pyarrow
and deltalake. Moving those to the permanent generation for the length of a run
(`gc.freeze`) keeps the collections small; `gc.unfreeze` gives them back afterwards, so
nothing is kept alive past the run.

`retained_malloc_heap`: every inflated file (~215 KB for a daily kline file) and every joined
batch buffer is larger than glibc's default mmap threshold (128 KB), so each was mapped fresh
and unmapped on free, a page fault per 4 KB touched. Raising the mmap and trim thresholds for
the run keeps freed memory in the heap for the next batch (in one thread, 16 % less CPU per
batch of small files); the defaults come back when the run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Nesting:
    """Counts the runs inside a context, so overlapping runs set up and restore once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0


_freezer = _Nesting()
_malloc_tuning = _Nesting()

#: glibc `mallopt` parameters (malloc.h) and the values a run uses and restores.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_RUN_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this parameter on 64-bit
_RUN_TRIM_THRESHOLD = 256 << 20
_DEFAULT_THRESHOLD = 128 << 10


@functools.cache
def _glibc_mallopt() -> Any | None:
    """Return glibc's `mallopt`, or None where the C library is another one.

    Looked up in the symbols the process already has (`CDLL(None)`): `ctypes.util.find_library`
    would fork `ldconfig` from a process that has deltalake loaded.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds; return False where that is not possible."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Exclude the objects alive on entry from garbage collection until the outermost exit."""
    with _freezer.lock:
        if _freezer.depth == 0:
            gc.freeze()
        _freezer.depth += 1
    try:
        yield
    finally:
        with _freezer.lock:
            _freezer.depth -= 1
            if _freezer.depth == 0:
                gc.unfreeze()


@contextlib.contextmanager
def retained_malloc_heap() -> Iterator[None]:
    """Keep freed malloc memory for reuse until the outermost exit (glibc; elsewhere a no-op)."""
    with _malloc_tuning.lock:
        if _malloc_tuning.depth == 0:
            _set_thresholds(_RUN_MMAP_THRESHOLD, _RUN_TRIM_THRESHOLD)
        _malloc_tuning.depth += 1
    try:
        yield
    finally:
        with _malloc_tuning.lock:
            _malloc_tuning.depth -= 1
            if _malloc_tuning.depth == 0:
                _set_thresholds(_DEFAULT_THRESHOLD, _DEFAULT_THRESHOLD)
