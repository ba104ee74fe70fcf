"""One streaming GET of a large archive file into a temp file, hashed as the bytes arrive.

`ArchiveClient.download` runs `stream_once` under the retry policy. Each try writes its own
temp file; a body that is not a complete zip raises `BadBodyError` (transient) with that file,
so the last bad try's bytes can be quarantined and earlier ones are deleted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from crypto_lakehouse.exceptions import IntegrityError, TruncatedBodyError
from crypto_lakehouse.sources.binance.archive.bodies import (
    TAIL_BYTES,
    BadBodyError,
    Download,
    body_problem,
    check_zip,
)
from crypto_lakehouse.sources.http import TRANSPORT_ERRORS, error_for_status, transport_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    Get = Callable[[str], AbstractAsyncContextManager[aiohttp.ClientResponse]]

_CHUNK = 1 << 20


class _Tail:
    """The first four bytes and the last `TAIL_BYTES` of a body, kept while it streams."""

    def __init__(self) -> None:
        """Start empty."""
        self.head = b""
        self.received = 0
        self._blocks: deque[bytes] = deque()
        self._kept = 0

    def add(self, block: bytes) -> None:
        """Take the next block of the body."""
        if not self.received:
            self.head = block[:4]
        self.received += len(block)
        self._blocks.append(block)
        self._kept += len(block)
        while self._kept - len(self._blocks[0]) >= TAIL_BYTES:
            self._kept -= len(self._blocks.popleft())

    @property
    def tail(self) -> bytes:
        """Return the last `TAIL_BYTES` received."""
        return b"".join(self._blocks)[-TAIL_BYTES:]


async def stream_once(
    get: Get,
    url: str,
    key: str,
    dest_dir: Path,
    on_body: Callable[[Path], None] | None = None,
) -> Download:
    """Perform one streaming GET of `url` into a new temp file in `dest_dir` (which exists).

    `on_body(path)` is called when a body that may be a zip starts arriving.

    Raises:
        BadBodyError: the body is cut short, is HTML, or is not a complete zip; its error
            names the temp file holding the bytes.
        SourceError: the status means an error (`sources.http.error_for_status`).
        TransientSourceError: the request failed below HTTP.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".part-", suffix=".zip")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    kept = _Tail()
    try:
        with os.fdopen(fd, "wb") as out:
            async with get(url) as response:
                headers = response.headers
                error = error_for_status(response.status, url, headers)
                if error is not None:
                    raise error
                if on_body is not None and "html" not in headers.get("Content-Type", "").lower():
                    on_body(tmp)
                try:
                    async for block in response.content.iter_chunked(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        kept.add(block)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    cut = TruncatedBodyError(
                        f"truncated download of {key}: body cut after {kept.received} of "
                        f"{headers.get('Content-Length', '?')} bytes ({type(exc).__name__})",
                        key=key,
                        path=tmp,
                    )
                    raise BadBodyError(cut, url=url) from exc
    except BadBodyError:
        raise
    except TRANSPORT_ERRORS as exc:
        tmp.unlink(missing_ok=True)
        raise transport_error(url, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _judge(key, url, headers, kept, tmp)
    etag = headers.get("ETag", "").strip('"')
    modified = headers.get("Last-Modified", "")
    return Download(
        key, tmp, digest.hexdigest(), kept.received, etag, modified, kept.head, kept.tail
    )


def _judge(key: str, url: str, headers: Mapping[str, str], kept: _Tail, tmp: Path) -> None:
    """Raise BadBodyError when a complete answer is short, HTML, or not a whole zip."""
    problem = body_problem(key, headers, kept.received, tmp)
    if problem is None:
        try:
            check_zip(key, kept.head, kept.tail, tmp)
        except IntegrityError as exc:
            problem = exc
    if problem is not None:
        raise BadBodyError(problem, url=url)
