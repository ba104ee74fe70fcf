"""Many small archive files fetched at once, yielded as each one ends.

Each file is one `ArchiveClient.fetch` task (its zip and its CHECKSUM requested together);
the client's semaphore keeps `download_concurrency` requests in flight whichever file they
belong to, and its retry policy gives each file exactly the outcome a fetch of its own would
have: verified, retried, failed or quarantined. Errors are yielded, never raised, so one bad
file never stops the others.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence
    from pathlib import Path

    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Body

__all__ = ["Fetched", "fetch_many"]

#: What `fetch_many` yields per key: the verified body, or why there is none.
Fetched = tuple[str, "Body | Exception"]


async def fetch_many(
    client: ArchiveClient, keys: Sequence[str], spill_dir: Path
) -> AsyncGenerator[Fetched, None]:
    """Fetch small zips with their CHECKSUMs; yield `(key, Body or error)` as each file ends.

    Errors are what `ArchiveClient.fetch` raises, yielded rather than raised. Closing the
    iterator early cancels the fetches still running (and waits for them to end); a
    cancellation of the caller is never swallowed.
    """
    running = {asyncio.ensure_future(client.fetch(key, spill_dir)): key for key in keys}
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), _outcome(future)
    finally:
        for future in running:
            future.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def _outcome(future: asyncio.Future[Body]) -> Body | Exception:
    """Return a finished fetch's body, or the exception it raised."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, Exception):
        return error
    raise error  # KeyboardInterrupt and the like are not a file's outcome
