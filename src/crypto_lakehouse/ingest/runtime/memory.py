"""Fit an ingest into its memory budget (`LAKEHOUSE_MEMORY_BUDGET_MB`, default 2 GB).

Peak memory follows the parse chunk size and the number of workers, never the file size
(files are inflated and parsed in chunks). The model below is deliberately on the safe side
of what `bench/ingest.py` measured on a 512 MB aggTrades file: 0.42 GB for 2 thread workers at
16 MB chunks, 0.76 GB at 64 MB; 0.56 GB (process tree) for 2 spawned workers at 16 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

#: The driver process: interpreter, polars, pyarrow, deltalake, aiohttp, buffers.
DRIVER_MB = 300
#: Each spawned worker process or Dask worker carries the same libraries again.
WORKER_PROCESS_MB = 200
#: A worker holds about this many copies of a chunk at once: compressed block, inflated
#: pieces, the joined chunk, the parsed frame, its Arrow view and the encoder's pages.
CHUNK_COPIES = 8


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Chunk size and worker count that fit the budget, and the peak they are expected at."""

    parse_batch_mb: int
    workers: int
    expected_peak_mb: int
    fits: bool


def expected_peak_mb(parse_batch_mb: int, workers: int, *, processes: bool) -> int:
    """Return the modelled peak RSS of an ingest (driver plus workers) in MB."""
    per_worker = CHUNK_COPIES * parse_batch_mb + (WORKER_PROCESS_MB if processes else 0)
    return DRIVER_MB + workers * per_worker


def plan_memory(
    budget_mb: int, parse_batch_mb: int, workers: int, *, processes: bool
) -> MemoryPlan:
    """Shrink the chunk size first, then the worker count, until the model fits the budget.

    Chunks are halved down to 4 MB (smaller ones cost more per row than they save), then
    workers are dropped down to one, then chunks go down to 1 MB. A budget below even that is
    reported (`fits=False`) rather than silently exceeded.
    """
    chunk, count = parse_batch_mb, workers

    def peak() -> int:
        return expected_peak_mb(chunk, count, processes=processes)

    while chunk > 4 and peak() > budget_mb:
        chunk = max(4, chunk // 2)
    while count > 1 and peak() > budget_mb:
        count -= 1
    while chunk > 1 and peak() > budget_mb:
        chunk = max(1, chunk // 2)
    return MemoryPlan(chunk, count, peak(), peak() <= budget_mb)
