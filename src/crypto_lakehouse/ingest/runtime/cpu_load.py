"""How busy the machine's cores have been since a moment: busy time over all cores' time.

Small files are parsed beside their downloads when the downloads wait on the network: the
cores are then mostly idle and the parse uses them. From a fast mirror (the archive
stand-in, a MinIO on the same host) the client and the server keep the cores busy, and a
parse beside them only contends (`bench/results/paired-overlap*.json`). The event loop's own
CPU share cannot tell the two cases apart when a local server does half the work, so the
measure is the machine's: the busy time of every core, from `/proc/stat`. Where that file is
missing (macOS, Windows), this process's CPU time over the cores stands in: it sees the
client's work, not a local server's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_PROC_STAT = Path("/proc/stat")
#: Fewer clock ticks than this per core (10 ms each) since the start are too few to tell. At
#: 4 (40 ms on 2 cores, a share in ninths) a fast mirror's downloads, now ~60 ms of ~0.7
#: busy, read 0.556 in one run of six and set off a parse beside them, 5 % slower over 12
#: paired runs; at 8 none did, and 5 or 20 ms answers still start the parse (8 % and 34 %
#: faster than without it, `bench/paired.py`, 2026-12-05).
MIN_TICKS_PER_CORE = 8
#: A reading younger than this is reused: the counters move in 10 ms ticks, and an ingest asks
#: once per downloaded file (300 opens of /proc/stat cost ~20 ms of the event loop's time).
REUSE_SECONDS = 0.01


def _cores() -> int:
    return os.cpu_count() or 1


#: Positions in `cpu_ticks`: user nice system idle iowait irq softirq steal.
IDLE, IOWAIT, STEAL = 3, 4, 7


def cpu_ticks(path: Path = _PROC_STAT) -> list[int] | None:
    """Return all cores' clock ticks since boot by kind (`IDLE`, ...), or None without the file."""
    try:
        with path.open("rb") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu" or len(fields) < 9:
        return None
    return [int(value) for value in fields[1:9]]


def read_cpu_ticks(path: Path = _PROC_STAT) -> tuple[int, int] | None:
    """Return (busy, total) clock ticks of all cores since boot, or None without /proc/stat.

    Idle and I/O wait are not busy; time stolen by a hypervisor is, since this VM could not
    run then either.
    """
    ticks = cpu_ticks(path)
    if ticks is None:
        return None
    total = sum(ticks)
    return total - ticks[IDLE] - ticks[IOWAIT], total


@dataclass(slots=True)
class CpuLoad:
    """The machine's CPU busy share since construction (`/proc/stat`, else this process's)."""

    stat_path: Path = _PROC_STAT
    ticks_start: tuple[int, int] | None = None
    wall_start: float | None = None
    cpu_start: float | None = None
    reuse_seconds: float = REUSE_SECONDS
    #: Wall and process CPU clocks (`time.perf_counter`, `time.process_time`), injectable.
    clock: Callable[[], float] = time.perf_counter
    cpu_clock: Callable[[], float] = time.process_time
    _last_at: float = -1.0
    _last_share: float | None = None

    def __post_init__(self) -> None:
        if self.ticks_start is None:
            self.ticks_start = read_cpu_ticks(self.stat_path)
        if self.wall_start is None:
            self.wall_start = self.clock()
        if self.cpu_start is None:
            self.cpu_start = self.cpu_clock()

    def busy_share(self) -> float | None:
        """Return the busy share of all cores since the start (0 to 1), or None too early.

        "Too early" is fewer than `MIN_TICKS_PER_CORE` clock ticks per core, or as many 10 ms
        of wall time for the process fallback: a share over a few ticks is mostly rounding.
        """
        at = self.clock()
        if self._last_at >= 0 and at - self._last_at < self.reuse_seconds:
            return self._last_share
        self._last_at = at
        self._last_share = self._read_share()
        return self._last_share

    def _read_share(self) -> float | None:
        """Compute the busy share now (see `busy_share`)."""
        cores = _cores()
        now = read_cpu_ticks(self.stat_path) if self.ticks_start is not None else None
        if self.ticks_start is not None and now is not None:
            busy = now[0] - self.ticks_start[0]
            total = now[1] - self.ticks_start[1]
            if total < MIN_TICKS_PER_CORE * cores:
                return None
            return busy / total
        assert self.wall_start is not None and self.cpu_start is not None  # __post_init__
        wall = self.clock() - self.wall_start
        if wall < MIN_TICKS_PER_CORE / 100:
            return None
        return min(1.0, (self.cpu_clock() - self.cpu_start) / (wall * cores))
