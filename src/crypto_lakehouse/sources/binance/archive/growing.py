"""Read a download while it is still being written, so parsing overlaps the transfer.

The downloader writes the body to a file and, once the body is complete *and verified*
against its CHECKSUM, drops a marker beside it saying `done`; when it gives the body up (a
retry, a bad checksum, a crash of the run) the marker says `abort`. A reader in another
thread or process (same host) reads as bytes arrive and blocks at the growing end until more
come or the marker tells it how the download ended. Nothing a reader produced may be
committed before the marker says `done`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from crypto_lakehouse.exceptions import StreamedParseAborted

if TYPE_CHECKING:
    from types import TracebackType

Ending = Literal["done", "abort"]
_POLL_SECONDS = 0.002
_POLL_MAX_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class GrowingSource:
    """A body being downloaded to `path`; `stall_seconds` without growth or marker aborts."""

    path: str
    stall_seconds: float = 120.0

    @property
    def marker(self) -> Path:
        """Return the marker file that tells readers how the download ended."""
        return Path(self.path + ".end")


def mark_ended(source: GrowingSource, ending: Ending) -> None:
    """Tell readers the download ended (`done`: complete and verified; `abort`: given up).

    Written to a temp name and renamed, so a reader never sees a half-written marker.
    """
    tmp = source.marker.with_name(source.marker.name + ".tmp")
    tmp.write_text(ending)
    tmp.replace(source.marker)


def ending_of(source: GrowingSource) -> Ending | None:
    """Return how the download ended, or None while it is still running."""
    try:
        text = source.marker.read_text().strip()
    except FileNotFoundError:
        return None
    return "done" if text == "done" else "abort"


def clear_marker(source: GrowingSource) -> None:
    """Remove the marker once every reader has finished."""
    source.marker.unlink(missing_ok=True)


class GrowingReader:
    """A binary reader over a file that is still growing; `read` blocks at the growing end.

    Raises StreamedParseAborted when the downloader gives up, or when neither a byte nor the
    marker has arrived for `stall_seconds` (the downloader died).
    """

    def __init__(self, source: GrowingSource) -> None:
        self._source = source
        # Unbuffered: a buffered reader could keep an end-of-file it saw before more bytes came.
        self._file = open(source.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._ended: Ending | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def read(self, size: int) -> bytes:
        """Return up to `size` bytes, waiting for them; `b""` only at the end of a done body."""
        patience = _Patience(self._source)
        while True:
            data = self._file.read(size)
            if data:
                return data
            if self._ended is None:
                self._ended = ending_of(self._source)
                if self._ended is not None:
                    continue  # read once more: bytes may have landed before the marker
            if self._ended == "done":
                return b""
            self._raise_if_aborted()
            patience.wait()

    def read_exact(self, size: int) -> bytes:
        """Return exactly `size` bytes, or fewer only when the body ends first."""
        parts: list[bytes] = []
        need = size
        while need > 0:
            data = self.read(need)
            if not data:
                break
            parts.append(data)
            need -= len(data)
        return b"".join(parts)

    def wait_until_ended(self) -> Ending:
        """Block until the downloader says how the body ended; return `done` or raise."""
        patience = _Patience(self._source)
        size = os.fstat(self._file.fileno()).st_size
        while True:
            self._ended = self._ended or ending_of(self._source)
            if self._ended == "done":
                return "done"
            self._raise_if_aborted()
            grown = os.fstat(self._file.fileno()).st_size
            if grown != size:
                size = grown
                patience.progressed()
            patience.wait()

    def _raise_if_aborted(self) -> None:
        """Raise StreamedParseAborted once the downloader has given the body up."""
        if self._ended == "abort":
            raise StreamedParseAborted(f"download of {self._source.path} was abandoned")


class _Patience:
    """Sleeps in growing pauses; gives up after `stall_seconds` without progress."""

    def __init__(self, source: GrowingSource) -> None:
        self._source = source
        self._waited = 0.0
        self._pause = _POLL_SECONDS

    def progressed(self) -> None:
        """Start counting the stall again: the download moved."""
        self._waited = 0.0

    def wait(self) -> None:
        """Sleep once, or raise StreamedParseAborted when the download has stalled too long."""
        if self._waited >= self._source.stall_seconds:
            raise StreamedParseAborted(
                f"download of {self._source.path} stalled for {self._waited:.0f} s"
            )
        time.sleep(self._pause)
        self._waited += self._pause
        self._pause = min(self._pause * 2, _POLL_MAX_SECONDS)
