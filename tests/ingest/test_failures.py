"""A failed file's manifest status and reason follow from the exception's class alone."""

from __future__ import annotations

import pytest

from crypto_lakehouse.exceptions import (
    BannedError,
    ChecksumMismatchError,
    CircuitOpenError,
    CommitConflictError,
    FormatError,
    LakehouseError,
    NotAZipError,
    NotFoundUpstreamError,
    RateLimitedError,
    RequestRejectedError,
    StorageError,
    TransientSourceError,
    TruncatedBodyError,
)
from crypto_lakehouse.ingest.failures import failure_reason, failure_status


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ChecksumMismatchError("sha differs"), "checksum_mismatch"),
        (TruncatedBodyError("cut short"), "quarantined"),
        (NotAZipError("an HTML page"), "quarantined"),
        (FormatError("bad cell", line=3, column="open", value="x"), "quarantined"),
        (NotFoundUpstreamError("404"), "missing_upstream"),
        (TransientSourceError("503 after every retry"), "failed"),
        (RateLimitedError("429 after every retry"), "failed"),
        (CircuitOpenError("breaker open"), "failed"),
        (RequestRejectedError("403"), "failed"),
        (BannedError("418"), "failed"),
        (StorageError("disk full"), "failed"),
        (CommitConflictError("lost every race"), "failed"),
    ],
)
def test_each_error_class_gives_its_manifest_status(error: LakehouseError, status: str) -> None:
    """Bad bytes or rows quarantine, a 404 is missing upstream, the rest fail for a retry."""
    assert failure_status(error) == status


def test_the_reason_names_the_stage_that_failed_for_lake_and_source_errors() -> None:
    """A user reads whether the download, bronze, or the worker's lake access failed."""
    lake = StorageError("disk full")
    assert failure_reason(lake, parsing=False) == "could not store in bronze: disk full"
    assert failure_reason(lake, parsing=True) == "lake error while parsing: disk full"
    source = TransientSourceError("503")
    assert failure_reason(source, parsing=False) == "download failed after retries: 503"
    refused = RequestRejectedError("HTTP 403")
    assert failure_reason(refused, parsing=False) == "download refused (not retried): HTTP 403"
    assert failure_reason(NotAZipError("html"), parsing=False) == "NotAZipError: html"
