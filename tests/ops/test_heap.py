"""`frozen_heap` keeps pre-existing objects out of collections only while a run lasts."""

from __future__ import annotations

import gc
import weakref

from crypto_lakehouse.ops.heap import frozen_heap


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
