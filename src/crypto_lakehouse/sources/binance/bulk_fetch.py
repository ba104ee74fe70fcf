"""Many small archive files fetched at once: every first GET in one libcurl bulk.

Fetched one coroutine each, a daily file cost the event loop ~0.1 ms of Python per GET (a
future, a chain of coroutines woken, a GIL hand-off with the transport's thread): more than
libcurl spent on the GET. Here the first GETs of every zip and of its CHECKSUM go through one
`BulkGets`, a window of files at a time, and come back in batches. A file whose two answers
are good and agree (`archive.clean_body`) is done without a coroutine of its own. Any other
goes to `ArchiveClient.fetch(key, first=...)`, which takes those answers as its own first
tries, so the file ends exactly as a fetch of its own would: retried, failed or quarantined.

Once an answer is transient (5xx, 429, a reset) the archive is struggling: the files not
requested yet are fetched one by one instead, through the client's semaphore and retries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

from crypto_lakehouse.sources.binance.archive import (
    ArchiveClient,
    Body,
    FirstGets,
    clean_body,
    is_transient,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence
    from pathlib import Path

    from crypto_lakehouse.sources.binance.curl_transport import Outcome

_BODY, _CHECKSUM = "zip", "checksum"
#: What `fetch_many` yields per key: the verified body, or why there is none.
Fetched = tuple[str, Body | Exception]


async def fetch_many(
    client: ArchiveClient, keys: Sequence[str], spill_dir: Path, *, window: int
) -> AsyncGenerator[Fetched, None]:
    """Fetch small zips with their CHECKSUMs; yield `(key, Body or error)` as each file ends.

    Errors are what `ArchiveClient.fetch` raises, yielded rather than raised, so one bad file
    never stops the others. At most `window` files have GETs in the bulk at once. Without a
    bulk (`http_client="aiohttp"`) every file gets its own `fetch`, all running at once.
    Closing the iterator early cancels the fetches still running.
    """
    bulk = client.bulk_gets()
    followups: dict[asyncio.Future[Body], str] = {}
    try:
        if bulk is None:
            followups = {asyncio.ensure_future(client.fetch(k, spill_dir)): k for k in keys}
        else:
            waiting = deque(keys)
            answers: dict[str, dict[str, Outcome]] = {}
            struggling = False
            while waiting or bulk.pending:
                if struggling:
                    while waiting:
                        key = waiting.popleft()
                        followups[asyncio.ensure_future(client.fetch(key, spill_dir))] = key
                gets = []
                while waiting and len(answers) < window:
                    key = waiting.popleft()
                    answers[key] = {}
                    url = client.download_url(key)
                    proxy = client.proxy_for(url)
                    gets += [((key, _BODY), url, proxy),
                             ((key, _CHECKSUM), url + ".CHECKSUM", proxy)]  # fmt: skip
                bulk.submit(gets)
                for tag, outcome in await bulk.next_done():
                    key, half = cast("tuple[str, str]", tag)
                    got = answers[key]
                    got[half] = outcome
                    struggling = struggling or is_transient(outcome)
                    if len(got) < 2:
                        continue
                    del answers[key]
                    first = FirstGets(got[_BODY], got[_CHECKSUM])
                    body = clean_body(key, first)
                    if body is not None:
                        yield key, body
                        continue
                    followups[asyncio.ensure_future(client.fetch(key, spill_dir, first))] = key
                for future in [f for f in followups if f.done()]:
                    yield followups.pop(future), _outcome(future)
        while followups:
            done, _ = await asyncio.wait(followups, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield followups.pop(future), _outcome(future)
    finally:
        for future in followups:
            future.cancel()
        if followups:
            await asyncio.gather(*followups, return_exceptions=True)


def _outcome(future: asyncio.Future[Body]) -> Body | Exception:
    """Return a finished fetch's body, or the exception it raised."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, Exception):
        return error
    raise error  # KeyboardInterrupt and the like are not a file's outcome
