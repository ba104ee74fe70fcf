"""Parse a large tick file while it downloads, committing nothing until the body is verified.

A monthly aggTrades zip takes a quarter of its ingest time to arrive; reading it as it grows
(`sources.binance.archive.growing`) lets inflating, parsing and encoding run meanwhile. Safety rests
on three rules: the worker writes Parquet files nothing references yet (`write.ticks`); it only
returns once the downloader has marked the body `done` — complete and matching its CHECKSUM;
and anything else (a retried or bad download, a zip not laid out for streaming) abandons
the streamed parse, deletes its files, and the finished file is parsed the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import StreamedParseAborted
from crypto_lakehouse.ingest.runtime.executor import InWorker
from crypto_lakehouse.ingest.write.ticks import DirectWrite, write_tick_files
from crypto_lakehouse.sources.binance.archive.growing import GrowingSource, clear_marker, mark_ended

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from crypto_lakehouse.ingest.parse.file import ParseTask

log = structlog.get_logger(__name__)


class StreamedParse:
    """One archive file's parse that follows its download; pass `start` as `on_body`.

    Only the first try of a download is followed: a retry abandons it (the ordinary parse of
    the finished file takes over).
    """

    def __init__(
        self,
        executor: Executor,
        make_task: Callable[[Path, GrowingSource], ParseTask],
        table_uri: str,
        storage_options: dict[str, str],
        *,
        stall_seconds: float,
    ) -> None:
        self._executor = executor
        self._make_task = make_task
        self._table_uri = table_uri
        self._storage_options = storage_options
        self._stall_seconds = stall_seconds
        self._source: GrowingSource | None = None
        self._future: asyncio.Future[DirectWrite] | None = None
        self._tries = 0

    def start(self, path: Path) -> None:
        """Begin parsing `path` as it grows (first try only); abandon it on a later try."""
        self._tries += 1
        if self._tries > 1:
            if self._source is not None:
                mark_ended(self._source, "abort")
            return
        self._source = GrowingSource(str(path), stall_seconds=self._stall_seconds)
        task = self._make_task(path, self._source)
        loop = asyncio.get_running_loop()
        self._future = loop.run_in_executor(
            self._executor,
            InWorker(write_tick_files),
            task,
            self._table_uri,
            self._storage_options,
        )

    async def abandon(self) -> None:
        """Stop the streamed parse and wait until its worker has deleted what it wrote."""
        if self._source is None or self._future is None:
            return
        mark_ended(self._source, "abort")
        with contextlib.suppress(Exception):
            await self._future
        clear_marker(self._source)

    async def finish(self, verified: Path) -> DirectWrite | None:
        """Release the worker now that `verified` passed its checks, and return its files.

        Returns:
            The worker's files, or None when there is no usable streamed parse (it never
            started, followed another try, or could not stream this zip): parse `verified`
            the ordinary way then.

        Raises:
            FormatError, TruncatedBodyError: the file itself is bad (quarantine it).
            StorageError: the lake refused the worker's files (fail it).
        """
        if self._source is None or self._future is None:
            return None
        if self._tries > 1 or Path(self._source.path) != verified:
            await self.abandon()
            return None
        mark_ended(self._source, "done")
        try:
            return await self._future
        except StreamedParseAborted as exc:
            log.info("streamed_parse_fallback", path=self._source.path, reason=str(exc))
            return None
        finally:
            clear_marker(self._source)
