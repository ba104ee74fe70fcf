"""Small bar files: held after their download, then stored and parsed in batches.

While the downloads leave the cores idle (a remote archive), a batch starts as soon as a
worker is idle, with an eighth of `parse_batch_files`, and grows while every worker is busy;
while they keep the cores busy (a fast mirror), files wait for the downloads to end. Then
what waits is split into equal batches, as many as a multiple of the workers. The batch's
worker parses them in one polars pass while the bronze objects are written beside it, and
writes silver once they are stored (`parse.batch.store_and_parse_batch`); on any doubt each
file gets its own parse.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.failures import record_fetch_failure
from crypto_lakehouse.ingest.file_steps import body_path, parse_file, store_body, task_for
from crypto_lakehouse.ingest.parse.batch import BatchFile, BatchRejected, store_and_parse_batch
from crypto_lakehouse.ingest.runtime.cpu_load import CpuLoad
from crypto_lakehouse.ingest.runtime.executor import InWorker
from crypto_lakehouse.ingest.write import staged as silver

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.commit import Committer, Handed
    from crypto_lakehouse.ingest.run_state import DownloadPace, HeldFile, IngestRun
    from crypto_lakehouse.storage.bronze import ManifestEntry

log = structlog.get_logger(__name__)
#: Zips up to this size (a daily 1m kline file is ~70 KB) are fetched into memory and batched.
SMALL_FILE_BYTES = 4 << 20


def batched(run: IngestRun, entry: ManifestEntry) -> bool:
    """Tell whether a file waits for a batch parse: small files of bar-like datasets."""
    return not run.dataset.tick and entry.size <= SMALL_FILE_BYTES


#: The machine's CPU share above which downloads count as keeping the cores busy (`cpu_load`).
#: Measured on 2 cores with the stand-in on the same host (`bench/paired.py`): 0.71-0.84
#: with answers at once, where a parse beside the downloads cost ~6 %; 0.51-0.57 at 5 ms a
#: request and 0.45 at 10 ms, where it saved 10-15 %.
BUSY_CPU_SHARE = 0.6
#: Downloads projected to end sooner than this are waited for even when the cores look idle.
#: A fast mirror's 600 GETs take 60-90 ms at a busy share of 0.55-0.6, at the threshold: in 2 of
#: 12 runs in one process the share read under it late in the downloads, and a parse started
#: beside the last few files (in batches of an eighth) made those runs 35 % slower (in fresh
#: processes the misfire is rare: 20 paired rounds, 1.001). A parse beside the downloads pays
#: only while they last; answers 5 ms away keep 600 GETs going ~0.2 s.
MIN_OVERLAP_SECONDS = 0.1


@dataclass(slots=True)
class SmallFileBatches:
    """The batch-parse stage of small bar files: what is held, what runs, and when to start.

    Files are handed in with `hold`; each batch is run by `parse` (store in bronze, parse,
    write Parquet), whose parsed files are handed on to the commit stage (`commits`).
    """

    workers: int
    settings: Settings
    #: The run's downloads: how many are still awaited, and how long they may still take.
    pace: DownloadPace
    #: Runs one batch and returns its parsed files (none when each file parsed alone).
    parse: Callable[[list[HeldFile]], Awaitable[Sequence[Handed]]]
    commits: Committer
    held: list[HeldFile] = field(default_factory=list)
    #: Bytes of the held files' zips kept in memory (bounded: `hold_limit_bytes`).
    held_bytes: int = 0
    #: Batch parses on the executor now (`schedule` fills idle workers).
    running: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: The machine's CPU load since the downloads began (`downloads_begin`).
    cpu_load: CpuLoad | None = None
    #: Set once the load said the downloads leave the cores idle: held files parse from then on.
    beside_downloads: bool = False

    def downloads_begin(self, files: int) -> None:
        """Start measuring the downloads' pace, and the machine's load (not the listing's).

        The load (`/proc/stat`, read only) is sampled only when `overlap_parse` is `auto`,
        the one setting that decides by it.
        """
        started = time.perf_counter()
        if self.settings.tuning.overlap_parse == "auto":
            self.cpu_load = CpuLoad(wall_start=started)
        self.pace.begin(files, started)

    def hold(self, held: HeldFile) -> None:
        """Hold a small file for a batch parse, and start batches on idle workers."""
        self.held.append(held)
        self.held_bytes += len(held.body or b"")
        self.pace.done(held.plan.key)
        self.schedule()

    def hold_limit_bytes(self) -> int:
        """Return how many bytes of held zips may wait in memory: an eighth of the budget."""
        return (self.settings.memory_budget_mb << 20) // 8

    def _wait_for_downloads(self) -> bool:
        """Tell whether held files wait until the downloads end, instead of parsing beside them.

        They wait while the downloads keep the cores busy (a fast mirror: a parse beside them
        only contends for the cores), and until the load can be told (the first ~80 ms),
        unless `overlap_parse` says otherwise, and never past `hold_limit_bytes` of zips in
        memory. Once the load has said the cores idle, files parse for the rest of the
        downloads: the machine's load then includes the parse itself, which would otherwise
        read as busy downloads and stop the overlap it started (at 5 ms a request it did,
        half way). Downloads about to end (`MIN_OVERLAP_SECONDS`) are waited for whatever
        the load.
        """
        mode = self.settings.tuning.overlap_parse
        if mode == "always" or self.held_bytes >= self.hold_limit_bytes():
            return False
        if mode == "never":
            return True
        if self.beside_downloads:
            return False
        share = self.cpu_load.busy_share() if self.cpu_load is not None else None
        if share is None or share >= BUSY_CPU_SHARE:
            return True
        left = self.pace.seconds_left()
        if left is None or left < MIN_OVERLAP_SECONDS:
            return True
        self.beside_downloads = True
        return False

    def schedule(self) -> None:
        """Start batch parses of the held small files while workers are free.

        While files download, and the downloads leave the cores idle (`_wait_for_downloads`),
        a batch starts once `parse_batch_files` files wait, or sooner, with an eighth of
        that, while a worker is idle: workers start early and keep busy beside the downloads,
        and the batches grow only while they are all busy. Once nothing more is downloading,
        what waits is split into equal batches of at most `parse_batch_files`, a multiple of
        the workers in number, all started at once (queued behind busy workers), so the last
        ones end together. Splitting again each time a worker freed up made a tail of ever
        smaller batches (38, 19, 9, 5, 2, 1, 1 files after 225), each paying a batch's fixed
        cost: in isolation, 300 files in that shape took 0.27 s, in six equal ones 0.21-0.25 s.
        """
        limit = self.settings.tuning.parse_batch_files
        while self.held:
            waiting = len(self.held)
            downloading = self.pace.awaiting > 0
            if downloading and self._wait_for_downloads():
                return
            if not downloading:
                batches = self.workers * -(-waiting // (self.workers * limit))
                share = -(-waiting // batches)
                while self.held:
                    self.start(share)
            elif waiting >= limit:
                self.start(limit)
            elif self.workers - self.running <= 0:
                return
            elif waiting >= max(1, limit // 8):
                self.start(waiting)
            else:
                return

    def start(self, size: int) -> None:
        """Parse the first `size` held files (by key) as one batch, in a task of its own."""
        self.held.sort(key=lambda held: held.plan.key)
        batch, self.held = self.held[:size], self.held[size:]
        if not batch:
            return
        self.held_bytes -= sum(len(held.body or b"") for held in batch)
        self.running += 1
        task = asyncio.create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        """Wait until every batch parse, and any batch they start, has finished."""
        while self.tasks:
            await asyncio.gather(*self.tasks)

    def cancel(self) -> None:
        """Cancel the batch parses under way (the run is ending on a failure)."""
        for task in self.tasks:
            task.cancel()

    async def _run(self, batch: list[HeldFile]) -> None:
        """Run one batch, then start what waits, then hand its parsed files on."""
        try:
            handed = await self.parse(batch)
        finally:
            self.running -= 1
        # Not in `finally`: a cancelled run must not start new batches on its way out.
        self.schedule()
        if handed:
            await self.commits.queue(handed)


async def parse_batch(run: IngestRun, batch: list[HeldFile]) -> Sequence[Handed]:
    """Store and parse small files in one pass; on any doubt, one by one (handing them on).

    Returns:
        The batch's parsed files, for the commit stage; none when each file parsed alone.
    """
    files = [_batch_file(run, held) for held in batch]
    uri = run.lake.table_uri(silver.SILVER, run.dataset.table)
    loop = asyncio.get_running_loop()
    try:
        writes = await loop.run_in_executor(
            run.executor, InWorker(store_and_parse_batch), files, run.lake, uri
        )
    except (BatchRejected, LakehouseError) as exc:
        # A bad file, or the lake refusing a write: each file then gets its own outcome.
        log.info("batch_parse_fallback", files=len(batch), reason=str(exc)[:200])
        for held in batch:
            await _parse_held(run, held)
        return []
    return [
        (write.parsed, held.entry, held.previous, write)
        for write, held in zip(writes, batch, strict=True)
    ]


def _batch_file(run: IngestRun, held: HeldFile) -> BatchFile:
    """Describe a held file for the batch worker (its bytes travel along when not stored)."""
    local = held.local or body_path(run, held.entry.bronze_path)
    task = task_for(run, held.plan, held.entry.revision, local)
    return BatchFile(task, body=held.body, bronze_path=held.entry.bronze_path)


async def _parse_held(run: IngestRun, held: HeldFile) -> None:
    """Store (when still in memory) and parse one file of a batch that could not be parsed whole."""
    local = held.local
    if local is None:
        assert held.body is not None
        try:
            local = await asyncio.to_thread(store_body, run, held.body, held.entry.bronze_path)
        except LakehouseError as exc:
            await record_fetch_failure(run, held.plan, exc)
            return
    await parse_file(run, held.plan, held.entry, local, held.previous)
