"""A file's failure becomes its manifest status and outcome, decided by the exception's class.

The one mapping of the ingest (see `crypto_lakehouse.exceptions`): an `IntegrityError` or a
`FormatError` quarantines the file (`ChecksumMismatchError` as checksum_mismatch), a
`NotFoundUpstreamError` records it missing upstream, and any other `LakehouseError` — a
transient source error after the source's retries, a refused request, the lake refusing a
read or a write — fails it, to be tried again by the next run. Nothing here catches a
third-party exception: sources and storage translate theirs where they call the library,
and `runtime.executor.InWorker` does so for the lake calls a worker makes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import structlog

from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    FormatError,
    IntegrityError,
    LakehouseError,
    NotFoundUpstreamError,
    SourceError,
    TransientError,
)
from crypto_lakehouse.ingest.results import FileOutcome
from crypto_lakehouse.storage.bronze import ManifestEntry, quarantine_path

if TYPE_CHECKING:
    from crypto_lakehouse.ingest.plan import PlannedFile
    from crypto_lakehouse.ingest.run_state import IngestRun

log = structlog.get_logger(__name__)


#: The statuses a failure may give a file: each is also its outcome on the result.
Failure = Literal["checksum_mismatch", "quarantined", "missing_upstream", "failed"]


def failure_status(exc: LakehouseError) -> Failure:
    """Return the manifest status of a file that failed with `exc`, by its class alone."""
    if isinstance(exc, ChecksumMismatchError):
        return "checksum_mismatch"
    if isinstance(exc, (IntegrityError, FormatError)):
        return "quarantined"
    if isinstance(exc, NotFoundUpstreamError):
        return "missing_upstream"
    return "failed"


def failure_reason(exc: LakehouseError, *, parsing: bool) -> str:
    """Return the reason recorded beside a status: what failed, in words a user can act on."""
    if isinstance(exc, (IntegrityError, FormatError)):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NotFoundUpstreamError):
        return str(exc)
    if isinstance(exc, SourceError) and isinstance(exc, TransientError):
        return f"download failed after retries: {exc}"
    if isinstance(exc, SourceError):
        return f"download refused (not retried): {exc}"
    if parsing:
        return f"lake error while parsing: {exc}"
    return f"could not store in bronze: {exc}"


async def record_fetch_failure(run: IngestRun, plan: PlannedFile, exc: LakehouseError) -> None:
    """Give a file that could not be fetched or stored its outcome; the run goes on.

    Bad bytes are kept under quarantine/ (nothing is lost or loaded); a file missing upstream
    is recorded as such; anything else fails the file, to be retried on the next run.
    """
    status = failure_status(exc)
    bad_bytes = isinstance(exc, IntegrityError)
    kept = ""
    if isinstance(exc, IntegrityError) and exc.path is not None and exc.path.exists():
        kept = quarantine_path(plan.key, datetime.now(UTC))
        await asyncio.to_thread(run.lake.put_file, exc.path, kept)
        exc.path.unlink(missing_ok=True)
    reason = failure_reason(exc, parsing=False)
    listed = plan.listed
    event = ManifestEntry(
        plan.key, run.dataset.table, plan.symbol, plan.period, plan.stamp, status,
        bronze_path=kept, reason=reason, etag=listed.etag if listed and bad_bytes else "",
        last_modified=listed.last_modified if listed and bad_bytes else "",
    )  # fmt: skip
    run.commits.record(FileOutcome(plan.key, status, reason=reason), event)
    kind = "download_quarantined" if bad_bytes else "download_failed"
    log.warning(kind, key=plan.key, status=status, reason=reason)


def record_parse_failure(
    run: IngestRun,
    plan: PlannedFile,
    entry: ManifestEntry,
    previous: ManifestEntry | None,
    exc: LakehouseError,
) -> None:
    """Give a verified file in bronze whose parse or silver write failed its outcome.

    Bad rows quarantine the file (its bronze copy stays); a lake error in the worker (its
    bronze object unreadable, its silver files refused) fails it, to be retried next run.
    """
    status = failure_status(exc)
    reason = failure_reason(exc, parsing=True)
    if status == "failed":
        event = ManifestEntry(plan.key, run.dataset.table, plan.symbol, plan.period,
                              plan.stamp, status, reason=reason)  # fmt: skip
        run.commits.record(FileOutcome(plan.key, status, reason=reason), event)
        log.warning("download_failed", key=plan.key, reason=reason)
        return
    run.commits.record(
        FileOutcome(plan.key, status, bytes=entry.size, revision=entry.revision,
                    reason=reason, downloaded=entry.status == "verified" and not previous),
        entry.with_status(status, reason=reason),
    )  # fmt: skip
    log.warning("file_quarantined", key=plan.key, reason=reason)
