"""The event loop thread's load: CPU time per wall time on the thread that made it."""

from __future__ import annotations

import time

from crypto_lakehouse.pipeline.loop_load import LoopLoad


def test_a_thread_that_computes_is_busy_and_one_that_sleeps_is_not() -> None:
    """Spinning for 50 ms gives a high share; sleeping for 50 ms a share near zero."""
    busy = LoopLoad()
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        sum(range(1000))
    assert busy.busy_share() > 0.25  # ~1 alone; more than a quarter with the cores shared
    idle = LoopLoad()
    time.sleep(0.05)
    assert idle.busy_share() < 0.1
