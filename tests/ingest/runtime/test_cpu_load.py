"""The machine's CPU load since a moment, from /proc/stat or this process's CPU time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.ingest.runtime import cpu_load
from crypto_lakehouse.ingest.runtime.cpu_load import CpuLoad, read_cpu_ticks

if TYPE_CHECKING:
    from pathlib import Path


def _stat(path: Path, user: int, idle: int, steal: int = 0) -> None:
    """Write a /proc/stat first line: user nice system idle iowait irq softirq steal."""
    path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4\n")


def test_ticks_count_steal_as_busy_and_io_wait_as_idle(tmp_path: Path) -> None:
    """busy = user + nice + system + irq + softirq + steal; total adds idle and I/O wait."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 1 2 50 5 1 1 3 7 0\n")
    assert read_cpu_ticks(stat) == (18, 73)
    assert read_cpu_ticks(tmp_path / "missing") is None


def test_share_is_the_machines_since_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy ticks over all ticks since construction; None while too few ticks passed."""
    monkeypatch.setattr(cpu_load, "_cores", lambda: 2)
    stat = tmp_path / "stat"
    _stat(stat, user=1000, idle=5000)
    load = CpuLoad(stat_path=stat, reuse_seconds=0)
    _stat(stat, user=1003, idle=5012)  # 15 ticks on 2 cores: fewer than 8 a core
    assert load.busy_share() is None
    _stat(stat, user=1015, idle=5005)  # a local server and the client: 15 of 20 ticks busy
    assert load.busy_share() == 0.75
    _stat(stat, user=1016, idle=5039, steal=5)  # then the network: 21 of 60
    assert load.busy_share() == pytest.approx(0.35)


class _Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_fresh_reading_is_reused_for_a_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked again within `reuse_seconds`, the share is the last one; after, it is read anew."""
    monkeypatch.setattr(cpu_load, "_cores", lambda: 2)
    stat = tmp_path / "stat"
    _stat(stat, user=1000, idle=5000)
    clock = _Clock()
    load = CpuLoad(stat_path=stat, reuse_seconds=0.05, clock=clock)
    _stat(stat, user=1015, idle=5005)
    assert load.busy_share() == 0.75
    _stat(stat, user=1016, idle=5039)
    clock.now += 0.04
    assert load.busy_share() == 0.75  # the same tick: not read again
    clock.now += 0.02
    assert load.busy_share() == pytest.approx(16 / 55)


def test_without_proc_stat_this_process_stands_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc/stat: this process's CPU time over the cores' wall time; too early is None."""
    monkeypatch.setattr(cpu_load, "_cores", lambda: 2)
    wall, cpu = _Clock(), _Clock(7.0)
    load = CpuLoad(stat_path=tmp_path / "missing", reuse_seconds=0, clock=wall, cpu_clock=cpu)
    wall.now += 0.05  # fewer than 8 ticks of 10 ms
    cpu.now += 0.05
    assert load.busy_share() is None
    wall.now += 0.15
    cpu.now += 0.15  # 0.2 s of CPU in 0.2 s on 2 cores: one core busy
    assert load.busy_share() == pytest.approx(0.5)
    wall.now += 0.2  # then 0.2 s asleep
    assert load.busy_share() == pytest.approx(0.25)


def test_the_real_machine_reads_a_share_between_0_and_1() -> None:
    """On Linux /proc/stat is read; after 100 ms of spinning the share is within [0, 1]."""
    load = CpuLoad()
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:
        sum(range(1000))
    share = load.busy_share()
    assert share is not None and 0.0 <= share <= 1.0
