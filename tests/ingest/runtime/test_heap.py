"""`frozen_heap` tunes collection only while a run lasts; `release_free_memory` trims malloc."""

from __future__ import annotations

import gc
import os
import weakref

import pytest

from crypto_lakehouse.ingest.runtime.heap import (
    _glibc_malloc_trim,
    frozen_heap,
    release_free_memory,
)


def test_objects_alive_on_entry_are_frozen_until_the_outermost_exit() -> None:
    """Nested runs freeze once and unfreeze once; afterwards nothing stays frozen."""
    keep = [object() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen >= len(keep)
        with frozen_heap():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_cycles_made_before_a_run_are_collected_after_it() -> None:
    """A garbage cycle frozen during the run is collected once the run is over."""

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    collected: list[str] = []
    first, second = Node(), Node()
    first.other, second.other = second, first
    probe = weakref.ref(first, lambda _: collected.append("gone"))
    with frozen_heap():
        del first, second
        gc.collect()
        assert probe() is not None  # frozen: the collector leaves it alone
    gc.collect()
    assert probe() is None
    assert collected == ["gone"]


def _rss_bytes() -> int:
    """Return this process's resident set size."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(_glibc_malloc_trim() is None, reason="glibc's malloc_trim only")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    """64 MB freed below a live chunk stays resident until `release_free_memory` trims it."""
    pieces = [bytearray(64 << 10) for _ in range(1024)]  # below the mmap threshold: heap
    pin = bytearray(64 << 10)  # above them, so freeing them cannot shrink the heap's top
    del pieces
    before = _rss_bytes()
    release_free_memory()
    assert before - _rss_bytes() > 32 << 20
    assert len(pin) == 64 << 10
