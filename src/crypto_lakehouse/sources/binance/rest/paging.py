"""Page Binance REST endpoints by time: pure cursor arithmetic plus two paging loops.

Binance time parameters are epoch milliseconds and `endTime` is inclusive, while the
client's public ranges are half-open `[start, end)`. The loops take a `request(path, params)`
callable, so they hold no I/O of their own and are driven by the client's one request method.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from crypto_lakehouse.exceptions import SourceError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

Page = TypeVar("Page")

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# COIN-M klines: endTime - startTime may be at most 200 days.
CM_KLINE_WINDOW_MS = 200 * DAY_MS
# Futures aggTrades: endTime - startTime must be below one hour; a window of HOUR_MS
# milliseconds has endTime - startTime = HOUR_MS - 1.
AGG_TRADE_WINDOW_MS = HOUR_MS
PERIOD_MS: dict[str, int] = {
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
}


def to_ms(moment: datetime) -> int:
    """Return epoch ms of an aware datetime (naive means UTC): 2020-01-01 → 1577836800000."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def window_end(cursor_ms: int, end_ms: int, window_ms: int | None) -> int:
    """Return the inclusive `endTime` of the window starting at `cursor_ms`.

    Args:
        cursor_ms: Window start (inclusive `startTime`).
        end_ms: Exclusive end of the whole range.
        window_ms: Window length, or None for no window rule.

    Returns:
        `min(end_ms, cursor_ms + window_ms) - 1`.
    """
    if window_ms is None:
        return end_ms - 1
    return min(end_ms, cursor_ms + window_ms) - 1


def next_time_cursor(cursor_ms: int, times_ms: Sequence[int], limit: int, last_ms: int) -> int:
    """Return the next `startTime` after a page of rows with these times.

    A full page may have more rows in its window: continue 1 ms after its last row. A short
    page exhausted the window: continue after the window.

    Args:
        cursor_ms: The page's `startTime`.
        times_ms: Row times of the page, ascending.
        limit: The page size asked for.
        last_ms: The page's inclusive `endTime`.

    Returns:
        The next cursor, always greater than `cursor_ms`.

    Raises:
        SourceError: If a full page does not advance (the server ignored `startTime`).
    """
    if len(times_ms) < limit:
        return last_ms + 1
    following = times_ms[-1] + 1
    if following <= cursor_ms:
        raise SourceError(
            f"paging stalled: a full page ended at {times_ms[-1]}, before its startTime {cursor_ms}"
        )
    return following


async def page_by_time(
    request: Callable[[str, Mapping[str, Any]], Awaitable[tuple[Any, Page]]],
    path: str,
    params: Mapping[str, Any],
    start: datetime,
    end: datetime,
    *,
    limit: int,
    window_ms: int | None,
    time_of: Callable[[Any], int],
) -> tuple[list[Any], list[Page]]:
    """Fetch `[start, end)` by startTime/endTime windows, continuing after full pages.

    Args:
        request: Sends one request and returns (JSON array, raw page).
        path: Endpoint path.
        params: Fixed parameters (symbol, interval, ...).
        start: Inclusive start.
        end: Exclusive end.
        limit: Page size to ask for.
        window_ms: Longest allowed window (e.g. 200 days for COIN-M klines), or None.
        time_of: Returns a row's own time in epoch ms.

    Returns:
        All rows in order and every raw page.
    """
    rows: list[Any] = []
    pages: list[Page] = []
    cursor, end_ms = to_ms(start), to_ms(end)
    while cursor < end_ms:
        last = window_end(cursor, end_ms, window_ms)
        payload, page = await request(
            path, {**params, "startTime": cursor, "endTime": last, "limit": limit}
        )
        pages.append(page)
        rows.extend(payload)
        cursor = next_time_cursor(cursor, [time_of(r) for r in payload], limit, last)
    return rows, pages


async def page_agg_trades(
    request: Callable[[str, Mapping[str, Any]], Awaitable[tuple[Any, Page]]],
    path: str,
    symbol: str,
    start: datetime,
    end: datetime,
    *,
    limit: int,
) -> tuple[list[Any], list[Page]]:
    """Fetch aggregate trades with `T` in `[start, end)`: time windows, then `fromId`.

    Windows shorter than one hour (the futures rule) find the first trade; from there pages
    follow by `fromId`, which never splits trades sharing a millisecond, until a trade at or
    after `end` appears or the newest trade is reached. Times and `fromId` are never mixed.

    Returns:
        Rows in id order without duplicates, and every raw page.
    """
    rows: list[Any] = []
    pages: list[Page] = []
    cursor, end_ms = to_ms(start), to_ms(end)
    next_id: int | None = None
    while next_id is not None or cursor < end_ms:
        if next_id is None:
            last = window_end(cursor, end_ms, AGG_TRADE_WINDOW_MS)
            query = {"symbol": symbol, "startTime": cursor, "endTime": last, "limit": limit}
        else:
            query = {"symbol": symbol, "fromId": next_id, "limit": limit}
        payload, page = await request(path, query)
        pages.append(page)
        fresh = [r for r in payload if next_id is None or int(r["a"]) >= next_id]
        in_range = [r for r in fresh if int(r["T"]) < end_ms]
        rows.extend(in_range)
        newest_reached = next_id is not None and len(payload) < limit
        if len(in_range) < len(fresh) or newest_reached or (next_id is not None and not fresh):
            break
        if fresh:
            next_id = int(fresh[-1]["a"]) + 1
        else:
            cursor = last + 1
    return rows, pages
