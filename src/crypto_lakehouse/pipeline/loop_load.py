"""How busy the event loop's thread has been since a moment: its CPU time over wall time.

Small files are parsed beside their downloads when the downloads wait on the network: the
loop is then mostly idle and the parse uses cores nobody else needs. From a fast mirror the
downloads keep the loop busy themselves, and a parse beside them only contends with it for
the cores and the GIL (`docs/scaling.md` §5.0: the stages alone took 0.42 s, overlapped
0.55 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class LoopLoad:
    """The loop thread's CPU share since construction; create and read it on that thread."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.thread_time)

    def busy_share(self) -> float:
        """Return CPU seconds of this thread per wall second since the start (0 to ~1)."""
        wall = time.perf_counter() - self.wall_start
        if wall <= 0:
            return 0.0
        return (time.thread_time() - self.cpu_start) / wall
