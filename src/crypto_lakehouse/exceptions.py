"""The one exception tree of crypto-lakehouse.

    LakehouseError
    ├── ConfigurationError            (terminal)  bad settings or arguments
    ├── SourceError                               an upstream source misbehaved
    │   ├── TransientSourceError      (transient) 5xx, 429, timeouts, resets: retry
    │   │   └── RateLimitedError      (transient) 429 with Retry-After
    │   ├── NotFoundUpstreamError     (terminal)  404: the object does not exist
    │   ├── RequestRejectedError      (terminal)  any other 4xx: the request itself is refused
    │   ├── BannedError               (terminal)  418: IP banned until a time; stop
    │   ├── RegionBlockedError        (terminal)  451: source unavailable from here
    │   └── CircuitOpenError          (transient) the breaker fails fast for a host
    ├── IntegrityError                (terminal)  the bytes are not what upstream promised
    │   ├── ChecksumMismatchError                 sha256 differs from the .CHECKSUM
    │   ├── TruncatedBodyError                    fewer bytes than Content-Length / bad zip
    │   └── NotAZipError                          e.g. an HTML page served with 200
    ├── FormatError                   (terminal)  a CSV that does not match its dataset
    └── StorageError                              the lake could not be read or written
        ├── CommitConflictError       (transient) a Delta commit lost a race; retry
        └── LakeFormatError           (terminal)  the lake's format is newer, or needs migrating

Retry is decided by the marker alone: `crypto_lakehouse.retry` retries a `TransientError`
(and nothing else) within the budget of `http_retries`; a `Terminal` one is final. The
manifest status of a failed file is decided by the class alone: an `IntegrityError` is
quarantined (`ChecksumMismatchError` as checksum_mismatch), `NotFoundUpstreamError` is
missing_upstream, and any other `SourceError` (a transient one after every retry, or a
`RequestRejectedError`) fails the file, to be tried again by the next run.

Sources translate third-party errors (aiohttp, websockets, OSError) into this tree where they
call the library, so no caller catches a library's exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class TransientError(Exception):
    """Marker: retrying the same operation later may succeed."""


class TerminalError(Exception):
    """Marker: retrying the same operation will fail the same way."""


class LakehouseError(Exception):
    """Root of every error raised by crypto-lakehouse."""


class ConfigurationError(LakehouseError, TerminalError):
    """Settings or arguments are invalid; the message says which and how to fix it."""


class SourceError(LakehouseError):
    """An upstream source (archive, REST, WebSocket) failed."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class TransientSourceError(SourceError, TransientError):
    """A failure that a retry may cure: 5xx, connection reset, timeout."""


class RateLimitedError(TransientSourceError):
    """HTTP 429: wait `retry_after` seconds before the next request."""

    def __init__(self, message: str, *, url: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, url=url, status=429)
        self.retry_after = retry_after


class NotFoundUpstreamError(SourceError, TerminalError):
    """HTTP 404: the object is not published upstream."""


class RequestRejectedError(SourceError, TerminalError):
    """HTTP 4xx other than 404 (e.g. 400, 403): the request is refused as sent; fix the request."""


class BannedError(SourceError, TerminalError):
    """HTTP 418: the IP is banned; stop instead of hammering, wait `retry_after` seconds."""

    def __init__(self, message: str, *, url: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, url=url, status=418)
        self.retry_after = retry_after


class RegionBlockedError(SourceError, TerminalError):
    """HTTP 451: the service refuses this region; carry on without it."""


class CircuitOpenError(SourceError, TransientError):
    """The circuit breaker for a host is open and fails fast until it may probe again.

    `retry_after` is the seconds until the next probe: the retry policy waits it, as it
    waits a 429's Retry-After, instead of sending requests the breaker would refuse.
    """

    def __init__(self, message: str, *, url: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, url=url)
        self.retry_after = retry_after


class IntegrityError(LakehouseError, TerminalError):
    """Downloaded bytes are not the object upstream described; `path` keeps them for quarantine."""

    def __init__(self, message: str, *, key: str = "", path: Path | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path


class ChecksumMismatchError(IntegrityError):
    """The SHA-256 of the body differs from the first token of the `.CHECKSUM` file."""


class TruncatedBodyError(IntegrityError):
    """The body ended early: short of Content-Length, or a zip without its central directory."""


class NotAZipError(IntegrityError):
    """The body is not a zip archive (for example an HTML error page served with 200)."""


class StreamedParseAborted(LakehouseError, TransientError):
    """A parse that read a download while it was written lost its body (retried, cut, or a
    differently laid out zip); the finished file is parsed again the ordinary way."""


class FormatError(LakehouseError, TerminalError):
    """A file's rows do not match the dataset's schema; carries the first offending cell."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
        value: str | None = None,
    ) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.value = value


class StorageError(LakehouseError):
    """The lake could not be read or written."""


class CommitConflictError(StorageError, TransientError):
    """A Delta commit conflicted with a concurrent writer after all retries."""


class LakeFormatError(StorageError, TerminalError):
    """The lake's recorded format is not this version's: upgrade the package, or migrate."""

    def __init__(self, message: str, *, found: int | None = None, supported: int = 0) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported
