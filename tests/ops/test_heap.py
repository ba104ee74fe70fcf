"""`frozen_heap` and `retained_malloc_heap` tune the heap only while a run lasts."""

from __future__ import annotations

import ctypes
import gc
import weakref

import pytest

from crypto_lakehouse.ops.heap import _glibc_mallopt, frozen_heap, retained_malloc_heap


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


def _glibc_free_heap_bytes() -> int:
    """Return the free bytes glibc holds in its heaps (`mallinfo2().fordblks`)."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]  # fmt: skip

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().fordblks)


@pytest.mark.skipif(_glibc_mallopt() is None, reason="glibc's mallopt only")
def test_freed_buffers_stay_in_the_heap_during_a_run_and_are_unmapped_after() -> None:
    """A 4 MB buffer freed inside a run is kept for reuse; after the run it is unmapped again."""
    size = 4 << 20
    with retained_malloc_heap(), retained_malloc_heap():
        buffer = b"x" * size
        before = _glibc_free_heap_bytes()
        del buffer
        assert _glibc_free_heap_bytes() - before > size // 2  # kept in the heap, not unmapped
    buffer = b"y" * size
    before = _glibc_free_heap_bytes()
    del buffer
    assert _glibc_free_heap_bytes() - before < size // 2  # mapped alone, unmapped on free
