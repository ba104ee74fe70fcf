"""The commit stage of a run: parsed files wait here for a silver commit, outcomes for the manifest.

Every other stage hands its result on to the run's `Committer` and keeps nothing of it: a
parsed file (`queue`), or a file's final outcome when it will not load (`record`). The
committer owns what accumulates — files waiting for a commit, manifest events, the result —
and is the one place where a run commits silver (through `storage.delta`) and the manifest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.results import FileOutcome
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.ingest.write.bars import commit_bar_files, open_silver
from crypto_lakehouse.ingest.write.supersede import report_batch_supersessions
from crypto_lakehouse.ingest.write.ticks import DirectWrite, commit_tick_files
from crypto_lakehouse.storage import delta as tables

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParsedFile
    from crypto_lakehouse.ingest.progress import ProgressSink
    from crypto_lakehouse.ingest.results import IngestResult
    from crypto_lakehouse.storage.bronze import Manifest, ManifestEntry
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

#: A parsed file waiting for its commit: rows, its manifest entry, the event retiring its
#: previous revision (if any), and the Parquet files a worker wrote for it (None: staged).
Queued = tuple["ParsedFile", "ManifestEntry", "ManifestEntry | None", DirectWrite | None]
#: A parsed file as a stage hands it on: rows, its manifest entry, the revision it replaces
#: (None for a first load), and the Parquet files a worker wrote for it (None: staged).
Handed = tuple["ParsedFile", "ManifestEntry", "ManifestEntry | None", DirectWrite | None]


def superseded_event(previous: ManifestEntry | None, entry: ManifestEntry) -> ManifestEntry | None:
    """Return the event retiring the previous revision when a new one was loaded."""
    if previous is not None and previous.sha256 and previous.revision < entry.revision:
        return previous.with_status("superseded", reason=f"replaced by rev {entry.revision}")
    return None


@dataclass(slots=True)
class Committer:
    """Commit a run's parsed files to silver in batches, and its outcomes to the manifest."""

    lake: LakeRoot
    dataset: Dataset
    settings: Settings
    manifest: Manifest
    progress: ProgressSink
    result: IngestResult
    _events: list[ManifestEntry] = field(default_factory=list)
    _queued: list[Queued] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Creates missing tables while the downloads run (`prepare_tables`).
    _tables_ready: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Return how many parsed files wait for a commit."""
        return len(self._queued)

    def record(self, outcome: FileOutcome, event: ManifestEntry | None = None) -> None:
        """Take the outcome of a file that will not load, and its manifest event if any."""
        if event is not None:
            self._events.append(event)
        self.result.files.append(outcome)
        self.progress.file_done(outcome.key, outcome.outcome)

    async def queue(self, files: Sequence[Handed]) -> None:
        """Take parsed files for the next commit; commit when enough wait.

        The files of one batch parse come together: they share the worker's Parquet files,
        so one commit must take all of them.
        """
        for parsed, entry, previous, write in files:
            self._queued.append((parsed, entry, superseded_event(previous, entry), write))
        await self.commit(force=False)

    async def commit(self, *, force: bool) -> None:
        """Commit queued files when a batch is full (or when forced), then the manifest."""
        async with self._lock:
            if not self._queued and not (force and self._events):
                return
            await self.tables_prepared()
            if self._queued and (force or self._batch_full()):
                batch, self._queued = self._queued, []
                version = await asyncio.to_thread(self._commit_and_unstage, batch)
                for parsed, entry, superseded, _ in batch:
                    if superseded is not None:
                        self._events.append(superseded)
                    self._record_loaded(parsed, entry, version)
                log.info("silver_committed", table=self.dataset.table, files=len(batch),
                         version=version)  # fmt: skip
            if self._events and (force or not self._queued):
                events, self._events = self._events, []
                await asyncio.to_thread(self.manifest.record, events)

    def prepare_tables(self) -> None:
        """Start creating the silver table and the manifest, if missing, beside the downloads.

        Creating a Delta table costs ~15 ms, which a fresh lake otherwise paid at its first
        commit, after the last parse. A table made here is the empty table that commit makes.
        """
        self._tables_ready = asyncio.create_task(asyncio.to_thread(self._ensure_tables))

    async def tables_prepared(self) -> None:
        """Wait for `prepare_tables`; a failure there is left to the commit, which retries it."""
        task, self._tables_ready = self._tables_ready, None
        if task is None:
            return
        try:
            await task
        except LakehouseError as exc:
            log.warning("table_preparation_failed", table=self.dataset.table, error=str(exc)[:200])

    def _ensure_tables(self) -> None:
        """Create the run's silver table and the manifest when they do not exist yet."""
        schema = silver.silver_arrow_schema(self.dataset)
        tables.ensure_table(self.lake, silver.SILVER, self.dataset.table, schema,
                            list(self.dataset.partition_by))  # fmt: skip
        self.manifest.ensure()

    def _record_loaded(self, parsed: ParsedFile, entry: ManifestEntry, version: int) -> None:
        """Take the manifest event and the outcome of a file whose rows reached silver."""
        event = entry.with_status(
            "loaded", rows=parsed.rows, silver_version=version,
            header=parsed.header or "", time_unit=parsed.time_unit or "",
        )  # fmt: skip
        self.record(
            FileOutcome(parsed.task.key, "loaded", rows=parsed.rows, bytes=entry.size,
                        revision=entry.revision, downloaded=True),
            event,
        )  # fmt: skip

    def _batch_full(self) -> bool:
        """Tell whether the queued files are enough for a commit (by count or CSV bytes)."""
        csv_bytes = sum(parsed.csv_bytes for parsed, _, _, _ in self._queued)
        return (
            len(self._queued) >= self.settings.tuning.commit_batch_files
            or csv_bytes >= self.settings.tuning.commit_batch_mb << 20
        )

    def _commit_and_unstage(self, batch: list[Queued]) -> int:
        """Commit a batch, then delete the staged files of its per-file parses; return the version.

        Only those staged rows (worker-written Parquet files are in the table): a staged file
        in the lake costs a request to delete, so batch and tick tasks, which stage nothing,
        are skipped.
        """
        version = self._commit_batch(batch)
        for parsed, _, _, write in batch:
            if write is None:
                staging.remove(parsed.task)
        return version

    def _commit_batch(self, batch: list[Queued]) -> int:
        """Commit a batch: add worker-written tick files, or replace rows from staged files.

        Provisional (REST/WS) rows that the archive rows are about to replace are compared
        with them first, and every difference lands in `silver._supersessions`.
        """
        lake, dataset = self.lake, self.dataset
        pairs = [(parsed, write) for parsed, _, _, write in batch]
        writes = [write for _, _, _, write in batch]
        if dataset.tick or not any(w is not None for w in writes):
            report_batch_supersessions(lake, pairs)
            if dataset.tick:
                return commit_tick_files(lake, dataset, [w for w in writes if w is not None])
            return silver.commit_files(lake, [parsed for parsed, _ in pairs])
        # One load of the table for the supersession probe and the commit (~1 ms less).
        delta = open_silver(lake, dataset)
        report_batch_supersessions(lake, pairs, table=delta)
        first_loads = all(superseded is None for _, _, superseded, _ in batch)
        return commit_bar_files(lake, dataset, [parsed for parsed, _ in pairs], writes,
                                first_loads=first_loads, delta=delta)  # fmt: skip
