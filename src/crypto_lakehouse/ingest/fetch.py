"""The fetch stage of one file: download and verify it, or read it back from bronze.

Small files are fetched into memory (a body), larger ones to a temp file (a download);
neither is in bronze yet when this stage hands them on (`file_steps.store`, or the batch
worker for small bar files).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from crypto_lakehouse.ingest.small_files import SMALL_FILE_BYTES
from crypto_lakehouse.storage.bronze import ManifestEntry, bronze_path

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.ingest.plan import PlannedFile
    from crypto_lakehouse.ingest.run_state import IngestRun
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Body, Download


def is_small(run: IngestRun, plan: PlannedFile) -> bool:
    """Tell whether a file is fetched into memory with the other small files of the run."""
    return not run.dataset.tick and plan.listed is not None and plan.listed.size <= SMALL_FILE_BYTES


def can_stream(run: IngestRun, plan: PlannedFile, previous: ManifestEntry | None) -> bool:
    """Tell whether a file's parse may follow its download.

    Large tick files only (they take the direct path), on executors sharing this host's disk,
    and only for a first revision: a later one's number depends on the checksum's outcome.
    """
    return (
        run.settings.tuning.stream_parse
        and run.stream_capable
        and run.dataset.tick
        and plan.listed is not None
        and plan.listed.size > SMALL_FILE_BYTES
        and (previous is None or not previous.sha256)
    )


async def download(
    run: IngestRun,
    archive: ArchiveClient,
    plan: PlannedFile,
    previous: ManifestEntry | None,
    on_body: Callable[[Path], None] | None = None,
) -> tuple[ManifestEntry, Download | Body]:
    """Download and verify a file; return its manifest entry and the verified bytes.

    Raises:
        LakehouseError: what the source raised (see `ingest.failures` for the outcome).
    """
    assert plan.listed is not None
    got: Download | Body
    if plan.listed.size <= SMALL_FILE_BYTES and on_body is None:
        got = await archive.fetch(plan.key, run.download_dir)
    else:
        sha = await archive.fetch_checksum(plan.key)
        got = await archive.download(plan.key, run.download_dir, sha, on_body=on_body)
    return verified_entry(run, plan, previous, got), got


def verified_entry(
    run: IngestRun, plan: PlannedFile, previous: ManifestEntry | None, got: Download | Body
) -> ManifestEntry:
    """Count a verified download, and return its manifest entry (a new revision if changed)."""
    assert plan.listed is not None
    run.progress.downloaded(got.size)
    revision = 1
    if previous is not None and previous.sha256:
        revision = previous.revision if previous.sha256 == got.sha256 else previous.revision + 1
    return ManifestEntry(
        key=plan.key, table=run.dataset.table, symbol=plan.symbol, period=plan.period,
        stamp=plan.stamp, status="verified", revision=revision,
        bronze_path=bronze_path(plan.key, revision), sha256=got.sha256, size=got.size,
        etag=plan.listed.etag, last_modified=plan.listed.last_modified,
    )  # fmt: skip


async def bronze_copy(run: IngestRun, plan: PlannedFile, entry: ManifestEntry) -> Path:
    """Return a local file of a zip already in bronze, for a parse on this host's disk.

    Workers on other hosts open the bronze object themselves (`file_steps.task_for` leaves
    the path out of their tasks), so nothing is copied to the driver's disk for them.
    """
    target = run.workdir / "bronze" / plan.key
    if run.remote_workers:
        return target
    return await asyncio.to_thread(run.lake.get_file, entry.bronze_path, target)
