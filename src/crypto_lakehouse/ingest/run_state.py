"""State of one ingest run, and how file outcomes become commits and manifest events.

`ingest.py` orchestrates; this module owns what a run accumulates (parsed files waiting for a
commit, manifest events, the result) and the single place where silver commits happen.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.results import FileOutcome, IngestResult
from crypto_lakehouse.ingest.runtime.cpu_load import CpuLoad
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.ingest.write.bars import commit_bar_files, open_silver
from crypto_lakehouse.ingest.write.supersede import report_batch_supersessions
from crypto_lakehouse.ingest.write.ticks import DirectWrite, commit_tick_files
from crypto_lakehouse.storage import delta as tables

if TYPE_CHECKING:
    from concurrent.futures import Executor
    from datetime import datetime
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParsedFile
    from crypto_lakehouse.ingest.plan import PlannedFile
    from crypto_lakehouse.ingest.progress import ProgressSink
    from crypto_lakehouse.storage.bronze import Manifest, ManifestEntry
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeldFile:
    """A small verified file waiting for its batch parse.

    Either already in bronze and readable at `local`, or still only in memory (`body`): the
    batch's worker then stores it in bronze before parsing.
    """

    plan: PlannedFile
    entry: ManifestEntry
    previous: ManifestEntry | None
    local: Path | None = None
    body: bytes | None = field(default=None, repr=False)  # a repr must not print the zip


@dataclass(slots=True)
class IngestRun:
    """Mutable state of one run, shared by its tasks."""

    lake: LakeRoot
    dataset: Dataset
    settings: Settings
    manifest: Manifest
    executor: Executor
    #: How many parses the executor runs at once.
    workers: int
    #: Files downloading at once. Every file's task starts at once, but only these go past
    #: this point, so the first responses are not queued behind hundreds of task starts.
    download_slots: asyncio.Semaphore
    progress: ProgressSink
    workdir: Path
    started: datetime
    result: IngestResult
    pending_events: list[ManifestEntry] = field(default_factory=list)
    parsed: list[tuple[ParsedFile, ManifestEntry, ManifestEntry | None, DirectWrite | None]] = (
        field(default_factory=list)
    )
    commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    plans: dict[str, PlannedFile] = field(default_factory=dict)
    small: list[HeldFile] = field(default_factory=list)
    #: Batch parses on the executor now (`small_files.schedule_batches` fills idle workers).
    batches_running: int = 0
    batch_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Files still downloading (or still to start); at 0 the held files are shared out.
    awaiting: int = 0
    #: Bytes of the held files' zips kept in memory (bounded: `small_files.hold_limit_bytes`).
    held_bytes: int = 0
    #: The machine's CPU load since the downloads began (`small_files.schedule_batches`).
    cpu_load: CpuLoad = field(default_factory=CpuLoad)
    #: Set once the load said the downloads leave the cores idle: held files parse from then on.
    parse_beside_downloads: bool = False
    _arrived: set[str] = field(default_factory=set)
    #: Where downloads and spilled bad bodies go: one `Path` per run, not one per file.
    download_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.download_dir = self.workdir / "download"

    def awaiting_done(self, key: str) -> bool:
        """Count a file as no longer downloading (once); tell whether it was the last one."""
        if key in self._arrived:
            return False
        self._arrived.add(key)
        self.awaiting -= 1
        return self.awaiting == 0

    def download_seconds_left(self) -> float | None:
        """Project how long the files still awaited take, at the pace of those arrived so far.

        None before any file has arrived (no pace to go by). The downloads began when
        `cpu_load` was made for them (`ingest._run_files`).
        """
        arrived = len(self._arrived)
        if not arrived:
            return None
        elapsed = time.perf_counter() - self.cpu_load.wall_start
        return self.awaiting * elapsed / arrived

    #: Workers share this host's disk, so a parse may follow a download (not on Dask).
    stream_capable: bool = False
    #: Workers may run on other hosts (`--dask-address`): tasks name lake objects, not paths.
    remote_workers: bool = False
    #: Where those workers stage their rows in the lake: `_staging/<run>` (`staging`).
    stage_prefix: str = ""
    #: Creates missing tables while the downloads run (`prepare_tables`).
    tables_ready: asyncio.Task[None] | None = None
    #: Commits what waits after `commit_interval_seconds` (see `ingest._arm_flush_timer`).
    flush_timer: asyncio.Task[None] | None = None
    #: The caller opted into process-wide tuning (`ingest(process_tuning=True)`, the CLI).
    process_tuning: bool = False


def superseded_event(previous: ManifestEntry | None, entry: ManifestEntry) -> ManifestEntry | None:
    """Return the event retiring the previous revision when a new one was loaded."""
    if previous is not None and previous.sha256 and previous.revision < entry.revision:
        return previous.with_status("superseded", reason=f"replaced by rev {entry.revision}")
    return None


def record_loaded(run: IngestRun, parsed: ParsedFile, entry: ManifestEntry, version: int) -> None:
    """Queue the manifest event and the outcome of a file whose rows reached silver."""
    run.pending_events.append(
        entry.with_status(
            "loaded", rows=parsed.rows, silver_version=version,
            header=parsed.header or "", time_unit=parsed.time_unit or "",
        )
    )  # fmt: skip
    run.result.files.append(
        FileOutcome(parsed.task.key, "loaded", rows=parsed.rows, bytes=entry.size,
                    revision=entry.revision, downloaded=True)
    )  # fmt: skip
    run.progress.file_done(parsed.task.key, "loaded")


async def commit_pending(run: IngestRun, *, force: bool) -> None:
    """Commit queued files to silver when a batch is full (or at the end), then the manifest."""
    async with run.commit_lock:
        if not run.parsed and not (force and run.pending_events):
            return
        await tables_prepared(run)
        if run.parsed and (force or _batch_full(run)):
            batch, run.parsed = run.parsed, []
            version = await asyncio.to_thread(_commit_and_unstage, run, batch)
            for parsed, entry, superseded, _ in batch:
                if superseded is not None:
                    run.pending_events.append(superseded)
                record_loaded(run, parsed, entry, version)
            log.info("silver_committed", table=run.dataset.table, files=len(batch),
                     version=version)  # fmt: skip
        if run.pending_events and (force or not run.parsed):
            events, run.pending_events = run.pending_events, []
            await asyncio.to_thread(run.manifest.record, events)


def prepare_tables(run: IngestRun) -> None:
    """Start creating the silver table and the manifest, if missing, beside the downloads.

    Creating a Delta table costs ~15 ms, which a fresh lake otherwise paid at its first commit,
    after the last parse. A table made here is the empty table that commit would have made.
    """
    run.tables_ready = asyncio.create_task(asyncio.to_thread(_ensure_tables, run))


def _ensure_tables(run: IngestRun) -> None:
    """Create the run's silver table and the manifest when they do not exist yet."""
    schema = silver.silver_arrow_schema(run.dataset)
    tables.ensure_table(run.lake, silver.SILVER, run.dataset.table, schema,
                        list(run.dataset.partition_by))  # fmt: skip
    run.manifest.ensure()


async def tables_prepared(run: IngestRun) -> None:
    """Wait for `prepare_tables`; a failure there is left to the commit, which retries it."""
    task, run.tables_ready = run.tables_ready, None
    if task is None:
        return
    try:
        await task
    except (OSError, LakehouseError) as exc:
        log.warning("table_preparation_failed", table=run.dataset.table, error=str(exc)[:200])


def _batch_full(run: IngestRun) -> bool:
    """Tell whether the queued files are enough for a commit (by count or CSV bytes)."""
    csv_bytes = sum(parsed.csv_bytes for parsed, _, _, _ in run.parsed)
    return (
        len(run.parsed) >= run.settings.tuning.commit_batch_files
        or csv_bytes >= run.settings.tuning.commit_batch_mb << 20
    )


def _commit_and_unstage(
    run: IngestRun,
    batch: list[tuple[ParsedFile, ManifestEntry, ManifestEntry | None, DirectWrite | None]],
) -> int:
    """Commit a batch, then delete the staged files of its per-file parses; return the version.

    Only those staged rows (worker-written Parquet files are in the table): a staged file in
    the lake costs a request to delete, so batch and tick tasks, which stage nothing, are
    skipped.
    """
    version = _commit_batch(run, batch)
    for parsed, _, _, write in batch:
        if write is None:
            staging.remove(parsed.task)
    return version


def _commit_batch(
    run: IngestRun,
    batch: list[tuple[ParsedFile, ManifestEntry, ManifestEntry | None, DirectWrite | None]],
) -> int:
    """Commit a batch: add worker-written tick files, or replace rows from staged files.

    Provisional (REST/WS) rows that the archive rows are about to replace are compared with
    them first, and every difference lands in `silver._supersessions`.
    """
    pairs = [(parsed, write) for parsed, _, _, write in batch]
    writes = [write for _, _, _, write in batch]
    if run.dataset.tick or not any(w is not None for w in writes):
        report_batch_supersessions(run.lake, pairs)
        if run.dataset.tick:
            return commit_tick_files(run.lake, run.dataset, [w for w in writes if w is not None])
        return silver.commit_files(run.lake, [parsed for parsed, _ in pairs])
    # One load of the table for the supersession probe and the commit (~1 ms less).
    delta = open_silver(run.lake, run.dataset)
    report_batch_supersessions(run.lake, pairs, table=delta)
    first_loads = all(superseded is None for _, _, superseded, _ in batch)
    return commit_bar_files(run.lake, run.dataset, [parsed for parsed, _ in pairs], writes,
                            first_loads=first_loads, delta=delta)  # fmt: skip
