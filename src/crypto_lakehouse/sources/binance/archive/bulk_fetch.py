"""Many small archive files fetched at once: every first GET in one libcurl bulk.

Fetched one coroutine each, a daily file cost the event loop ~0.1 ms of Python per GET (a
future, a chain of coroutines woken, a GIL hand-off with the transport's thread): more than
libcurl spent on the GET. Here the first GETs of every zip and of its CHECKSUM go through one
`BulkGets`, within the client's bound on requests in flight, and come back in batches. A file
whose two answers are good and agree (`archive.clean_body`) is done without a coroutine of its
own. Any other goes to `ArchiveClient.fetch(key, first=...)`, which takes those answers as its
own first tries, so the file ends exactly as a fetch of its own would: retried, failed or
quarantined.

Once an answer is transient (5xx, 429, a reset) the archive is struggling: the files not
requested yet are fetched one by one instead, through the client's semaphore and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, cast

from crypto_lakehouse.sources.binance.archive.client import (
    ArchiveClient,
    Body,
    FirstGets,
    clean_body,
    is_transient,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence
    from pathlib import Path

    from crypto_lakehouse.sources.binance.archive.curl_transport import BulkGets, Outcome

_BODY, _CHECKSUM = "zip", "checksum"
#: What `fetch_many` yields per key: the verified body, or why there is none.
Fetched = tuple[str, Body | Exception]


async def fetch_many(
    client: ArchiveClient, keys: Sequence[str], spill_dir: Path
) -> AsyncGenerator[Fetched, None]:
    """Fetch small zips with their CHECKSUMs; yield `(key, Body or error)` as each file ends.

    Errors are what `ArchiveClient.fetch` raises, yielded rather than raised, so one bad file
    never stops the others. The bulk's GETs take the client's request slots as the client's
    own GETs do: `download_concurrency` requests at most are in flight, whichever way they
    were made. Without a bulk (`http_client="aiohttp"`) every file gets its own `fetch`.
    Closing the iterator early cancels the fetches still running.
    """
    bulk = client.bulk_gets()
    followups: dict[asyncio.Future[Body], str] = {}
    try:
        if bulk is None:
            followups = {asyncio.ensure_future(client.fetch(k, spill_dir)): k for k in keys}
        else:
            through = _through_bulk(client, bulk, keys, spill_dir, followups)
            async with contextlib.aclosing(through):
                async for fetched in through:
                    yield fetched
        while followups:
            done, _ = await asyncio.wait(followups, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield followups.pop(future), _outcome(future)
    finally:
        for future in followups:
            future.cancel()
        if followups:
            await asyncio.gather(*followups, return_exceptions=True)


async def _through_bulk(
    client: ArchiveClient,
    bulk: BulkGets,
    keys: Sequence[str],
    spill_dir: Path,
    followups: dict[asyncio.Future[Body], str],
) -> AsyncGenerator[Fetched, None]:
    """Make every first GET in the bulk; yield the files whose answers are good, and hand the
    others to `followups` (`ArchiveClient.fetch` tasks), which the caller drains.

    Closed early, it gives back the slots of the GETs still out: their answers are not
    waited for (the transport finishes and drops them), and the client stays usable.
    """
    slots = client.request_slots()
    held = 0  # slots taken by GETs whose answers have not been handled yet
    queue = deque((key, half) for key in keys for half in (_BODY, _CHECKSUM))
    started: dict[str, dict[str, Outcome]] = {}  # files with a GET made: the answers so far
    struggling = False
    try:
        while queue or bulk.pending:
            if struggling:  # files not started leave the bulk; started ones finish their pair
                for key, half in queue:
                    if key not in started and half == _BODY:
                        followups[asyncio.ensure_future(client.fetch(key, spill_dir))] = key
                queue = deque((key, half) for key, half in queue if key in started)
            gets = []
            while queue and not slots.locked():
                await slots.acquire()  # free: returns at once
                held += 1
                key, half = queue.popleft()
                started.setdefault(key, {})
                url = client.download_url(key if half == _BODY else key + ".CHECKSUM")
                gets.append(((key, half), url, client.proxy_for(url)))
            bulk.submit(gets)
            if not bulk.pending:
                if queue:  # every slot is a follow-up's: wait for one to be free
                    await slots.acquire()
                    slots.release()
                continue
            for tag, outcome in await bulk.next_done():
                slots.release()
                held -= 1
                key, half = cast("tuple[str, str]", tag)
                got = started[key]
                got[half] = outcome
                struggling = struggling or is_transient(outcome)
                if len(got) < 2:
                    continue
                del started[key]
                first = FirstGets(got[_BODY], got[_CHECKSUM])
                body = clean_body(key, first)
                if body is not None:
                    yield key, body
                    continue
                followups[asyncio.ensure_future(client.fetch(key, spill_dir, first))] = key
            for future in [f for f in followups if f.done()]:
                yield followups.pop(future), _outcome(future)
    finally:
        for _ in range(held):
            slots.release()


def _outcome(future: asyncio.Future[Body]) -> Body | Exception:
    """Return a finished fetch's body, or the exception it raised."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, Exception):
        return error
    raise error  # KeyboardInterrupt and the like are not a file's outcome
