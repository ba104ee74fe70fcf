"""What an archive GET returned, and the checks that tell a zip from a bad body.

A body that is not the object (an HTML page served with 200, a body short of its
Content-Length, a zip without its end-of-central-directory record) is often a passing
fault of the CDN: it raises `BadBodyError`, a transient error that the retry policy fetches
again. Only when the retries are spent does it become the terminal `IntegrityError`
(`NotAZipError`, `TruncatedBodyError`) that quarantines the bytes with their reason.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crypto_lakehouse.exceptions import (
    IntegrityError,
    NotAZipError,
    TransientSourceError,
    TruncatedBodyError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

ZIP_MAGIC = b"PK\x03\x04"
#: Largest zip comment plus the end record, with a margin: where the end record must be.
TAIL_BYTES = (64 << 10) + 22 + 1024


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded, verified archive file waiting in a local temp path."""

    key: str
    path: Path
    sha256: str
    size: int
    etag: str
    last_modified: str
    #: The body's first bytes and last `TAIL_BYTES`, kept so the zip checks read no file.
    head: bytes = b""
    tail: bytes = b""


@dataclass(frozen=True, slots=True)
class Body:
    """A small archive file fetched into memory and verified (no temp file on the way)."""

    key: str
    #: Left out of the repr: a log line or a traceback must not print the whole zip.
    data: bytes = field(repr=False)
    sha256: str
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        """Return the body's length in bytes."""
        return len(self.data)


class BadBodyError(TransientSourceError):
    """A body that is not the object: retried, then raised as its `IntegrityError` kind.

    The bytes travel with it (`path` of a streamed body, or `data` in memory) so that the
    last one can be quarantined; `discard` removes a superseded attempt's file.
    """

    def __init__(
        self,
        error: IntegrityError,
        *,
        url: str,
        data: bytes | None = None,
    ) -> None:
        super().__init__(str(error), url=url)
        self.error = error
        self.data = data

    def discard(self) -> None:
        """Delete the temp file of this attempt's body, if it has one."""
        if self.error.path is not None:
            self.error.path.unlink(missing_ok=True)

    def final(self, spill_dir: Path | None, attempts: int) -> IntegrityError:
        """Return the terminal error to raise when no retry is left, its bytes on disk.

        Bytes held in memory are written to `spill_dir`; without one only the reason stays.
        """
        error = self.error
        if error.path is None and self.data is not None and spill_dir is not None:
            error.path = spill(spill_dir, self.data)
        error.args = (f"{error} (the last of {attempts} attempts)",)
        return error


def check_zip(key: str, head: bytes, tail: bytes, path: Path | None = None) -> None:
    """Raise NotAZipError or TruncatedBodyError when a body is not a complete zip.

    Looks only at the body's first bytes and its last `TAIL_BYTES` (kept while streaming):
    the end-of-central-directory record sits in the last 64 KiB + 22 bytes of any zip,
    which is all `zipfile.is_zipfile` reads. A body held in memory is passed whole as `tail`:
    `BytesIO` shares a `bytes` object, where slicing its tail copied ~66 KB of every file.
    """
    if head != ZIP_MAGIC:
        raise NotAZipError(f"{key}: body starts with {head!r}, not a zip", key=key, path=path)
    if not zipfile.is_zipfile(io.BytesIO(tail)):
        raise TruncatedBodyError(
            f"{key}: zip has no end of central directory (truncated)", key=key, path=path
        )


def body_problem(
    key: str, headers: Mapping[str, str], received: int, path: Path | None = None
) -> IntegrityError | None:
    """Return what is wrong with a complete answer's length or type, or None.

    Example: Content-Length 61,520 with 30,000 bytes received -> TruncatedBodyError;
    `Content-Type: text/html` -> NotAZipError (a maintenance page served with 200).
    """
    expected = int(headers.get("Content-Length", "-1"))
    if 0 <= expected != received:
        return TruncatedBodyError(
            f"truncated download of {key}: got {received} of {expected} bytes", key=key, path=path
        )
    content_type = headers.get("Content-Type", "")
    if "html" in content_type.lower():
        return NotAZipError(f"{key}: server sent {content_type}, not a zip", key=key, path=path)
    return None


def spill(folder: Path, data: bytes) -> Path:
    """Write a bad in-memory body to a file so it can be quarantined like a download."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".bad-", suffix=".zip")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(name)
