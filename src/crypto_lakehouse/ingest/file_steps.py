"""One archive file's steps after its download: store it in bronze, parse it, or quarantine it.

Shared by the ingest's per-file path (`run.py`) and the small-file batches
(`small_files.py`); each step records its outcome on the run (`failures`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.failures import record_parse_failure
from crypto_lakehouse.ingest.parse.file import ParseTask, parse_to_stage
from crypto_lakehouse.ingest.runtime.executor import InWorker
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write.ticks import write_tick_files
from crypto_lakehouse.sources.binance.archive.client import Body, Download
from crypto_lakehouse.storage.bronze import bronze_path

if TYPE_CHECKING:
    from crypto_lakehouse.ingest.plan import PlannedFile
    from crypto_lakehouse.ingest.run_state import IngestRun
    from crypto_lakehouse.sources.binance.archive.growing import GrowingSource
    from crypto_lakehouse.storage.bronze import ManifestEntry

log = structlog.get_logger(__name__)


async def store(run: IngestRun, got: Download | Body, path: str) -> Path:
    """Store verified bytes in bronze; return a local file the parse can read."""
    if isinstance(got, Body):
        return await asyncio.to_thread(store_body, run, got.data, path)
    await asyncio.to_thread(run.lake.put_file, got.path, path)
    return got.path


def store_body(run: IngestRun, data: bytes, path: str) -> Path:
    """Write a verified in-memory body to bronze; return a local file the parse can read.

    On a local lake that is the bronze object itself (it never changes), elsewhere a copy.
    """
    run.lake.put_bytes(data, path)
    local = body_path(run, path)
    if run.lake.is_s3:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    return local


def body_path(run: IngestRun, path: str) -> Path:
    """Return where `store_body` leaves the local file of the bronze object `path`."""
    return run.download_dir / path if run.lake.is_s3 else Path(f"{run.lake.uri}/{path}")


def task_for(
    run: IngestRun,
    plan: PlannedFile,
    revision: int,
    local: Path,
    growing: GrowingSource | None = None,
) -> ParseTask:
    """Describe the parse of one file for a worker.

    Workers on other hosts cannot read the driver's disk: they read the zip from its bronze
    object (stored, verified, before any parse starts) instead of `local`, and stage their rows
    under the run's prefix in the lake (`staging`) instead of the driver's temp folder.
    """
    interval = plan.key.split("/")[-2] if run.dataset.has_interval else None
    remote = run.remote_workers and growing is None
    staged_name = plan.key.replace("/", "_") + ".arrow"
    return ParseTask(
        market=run.dataset.market, data_type=run.dataset.data_type, key=plan.key,
        symbol=plan.symbol, interval=interval, period=plan.period, stamp=plan.stamp,
        revision=revision, zip_path="" if remote else str(local),
        staged_path=f"{run.stage_prefix}/{staged_name}" if remote
        else f"{run.workdir}/stage/{staged_name}",
        chunk_bytes=run.settings.tuning.parse_batch_mb << 20, ingested_at=run.started,
        growing=growing,
        bronze=(run.lake, bronze_path(plan.key, revision)) if remote else None,
        stage_lake=run.lake if remote else None, release_memory=run.process_tuning,
    )  # fmt: skip


async def parse_file(
    run: IngestRun,
    plan: PlannedFile,
    entry: ManifestEntry,
    local: Path,
    previous: ManifestEntry | None,
) -> None:
    """Parse on the executor; queue the result for commit or quarantine the file."""
    task = task_for(run, plan, entry.revision, local)
    loop = asyncio.get_running_loop()
    try:
        if run.dataset.tick:
            uri = run.lake.table_uri(silver.SILVER, run.dataset.table)
            written = await loop.run_in_executor(
                run.executor,
                InWorker(write_tick_files),
                task,
                uri,
                run.lake.storage_options,
            )
            parsed, files = written.parsed, written
        else:
            parsed = await loop.run_in_executor(run.executor, InWorker(parse_to_stage), task)
            files = None
    except LakehouseError as exc:
        record_parse_failure(run, plan, entry, previous, exc)
        return
    await run.commits.queue([(parsed, entry, previous, files)])
