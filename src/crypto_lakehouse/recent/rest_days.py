"""REST → bronze → silver: fetch whole UTC days, keep the raw pages, write provisional rows.

Consecutive days are fetched in chunks (up to 31 days of bars, one day of trades). Each
chunk's pages become one gzip JSON-lines object in bronze (one line per page: URL, fetch
time, body exactly as received), and its rows are written to silver in one commit that
replaces only provisional rows of that symbol and span (see `provisional.write_provisional`);
rows an archive file already holds are dropped first.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import polars as pl
import structlog

from crypto_lakehouse.datasets import interval_micros
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.ingest.write.provisional import Span, TableSpec, to_silver, write_provisional
from crypto_lakehouse.storage.partitions import day_runs, midnight, run_days

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.sources.binance.rest.client import (
        BinanceRestClient,
        DataType,
        FetchResult,
    )
    from crypto_lakehouse.sources.binance.rest.transport import RawPage
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

KLINE_TYPES = frozenset({"klines", "markPriceKlines", "indexPriceKlines", "premiumIndexKlines"})
REST_TYPES = KLINE_TYPES | {"fundingRate", "aggTrades", "metrics"}
METRICS_HISTORY_DAYS = 30
MAX_DAYS_PER_COMMIT = 31
DayStatus = Literal["filled", "empty"]


@dataclass(frozen=True, slots=True)
class FetchedDay:
    """One day fetched from REST: how many rows it had and the bronze object holding them."""

    symbol: str
    day: date
    status: DayStatus
    rows: int
    bronze_key: str


def rest_bronze_path(
    market: str,
    data_type: str,
    symbol: str,
    day: date,
    fetched_at: datetime,
    interval: str | None = None,
) -> str:
    """Return the bronze key of one day's REST pages.

    Example: `bronze/binance-rest/spot/klines/BTCUSDT/1m/2020-01-04/20200105T060000123456Z.jsonl.gz`
    (the interval folder exists for kline types only, as in the archive's layout).
    """
    folder = f"{symbol}/{interval}" if interval else symbol
    stamp = fetched_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"bronze/binance-rest/{market}/{data_type}/{folder}/{day.isoformat()}/{stamp}.jsonl.gz"


def rest_unsupported_reason(dataset: Dataset) -> str | None:
    """Return why REST cannot fill a dataset, or None when it can."""
    if dataset.data_type not in REST_TYPES:
        return f"REST has no endpoint for {dataset.data_type}"
    futures_only = dataset.data_type in ("fundingRate", "metrics") or (
        dataset.data_type in KLINE_TYPES and dataset.data_type != "klines"
    )
    if futures_only and dataset.market == "spot":
        return f"REST serves {dataset.data_type} for futures only"
    if dataset.market == "option":
        return "REST fill covers spot, um and cm only"
    return None


def _page_line(page: RawPage) -> bytes:
    """Return one JSON line describing a page; the body is kept exactly as received."""
    record = {
        "url": page.url,
        "fetched_at": page.fetched_at.astimezone(UTC).isoformat(),
        "body": page.body.decode("utf-8", "replace"),
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def write_pages(lake: LakeRoot, path: str, lines: Sequence[bytes]) -> None:
    """Gzip JSON lines into a temp file and store it at `path` atomically."""
    with tempfile.TemporaryDirectory(prefix="lakehouse-bronze-") as folder:
        local = Path(folder) / "pages.jsonl.gz"
        with gzip.open(local, "wb", compresslevel=1) as sink:
            for line in lines:
                sink.write(line)
        lake.put_file(local, path)


def store_pages(lake: LakeRoot, path: str, pages: Sequence[RawPage]) -> None:
    """Store REST pages at a bronze path (see `rest_bronze_path`)."""
    write_pages(lake, path, [_page_line(p) for p in pages])


def _contract_type(symbol: str) -> str:
    """Return the openInterestHist contract type of a COIN-M symbol (perpetuals only)."""
    if symbol.endswith("_PERP"):
        return "PERPETUAL"
    raise ConfigurationError(
        f"REST open interest for COIN-M delivery contract {symbol} cannot be told apart from "
        "the other quarter; fill it from the archive"
    )


async def fetch_span(
    rest: BinanceRestClient,
    dataset: Dataset,
    symbol: str,
    start: datetime,
    end: datetime,
    interval: str | None,
) -> FetchResult:
    """Fetch `[start, end)` of a dataset for one symbol from REST.

    COIN-M metrics are fetched by pair and contract type and relabelled with the symbol.
    """
    market = cast("Literal['spot', 'um', 'cm']", dataset.market)
    if dataset.data_type == "metrics" and market == "cm":
        pair = symbol.split("_", 1)[0]
        result = await rest.open_interest_hist(
            market, pair, start, end, contract_type=_contract_type(symbol)
        )
        frame = result.frame.with_columns(pl.lit(symbol).alias("symbol"))
        return type(result)(result.pages, frame)
    data_type = cast("DataType", dataset.data_type)
    return await rest.fetch(market, data_type, symbol, start, end, interval=interval)


@dataclass(frozen=True, slots=True)
class RestFill:
    """Where REST days go and how they are fetched: lake, client, table, interval, moments.

    Attributes:
        lake: The lake (the caller owns it).
        rest: The REST client (the caller owns and closes it).
        dataset: The table to fill; see `rest_unsupported_reason`.
        interval: Kline interval for kline types.
        now: Upper bound of every fetch.
        ingested_at: `_ingested_at` of the rows.
    """

    lake: LakeRoot
    rest: BinanceRestClient
    dataset: Dataset
    interval: str | None
    now: datetime
    ingested_at: datetime


async def fill_days(
    fill: RestFill,
    symbol: str,
    days: Sequence[date],
    *,
    on_day: Callable[[FetchedDay], None] | None = None,
) -> list[FetchedDay]:
    """Fetch whole UTC days from REST into bronze and provisional silver rows.

    Consecutive days are fetched in chunks (one REST range, one bronze object filed under the
    chunk's first day, one silver commit replacing only that chunk's provisional rows); a
    chunk holds up to 31 days of bars but one day of trades, and ends at `fill.now` at the
    latest. A failing chunk raises after the earlier chunks were committed.

    Args:
        fill: The lake, client, table, interval, upper bound and ingest time.
        symbol: One symbol.
        days: The UTC days to fetch.
        on_day: Called for each day once its chunk is committed (for progress).

    Returns:
        One entry per fetched day (empty days included), in order.

    Raises:
        SourceError: The subclass of the failing request (BannedError, RegionBlockedError, ...).
    """
    spec = TableSpec.of(fill.dataset)
    size = days_per_chunk(fill.dataset, fill.interval)
    done: list[FetchedDay] = []
    for run in day_runs(days):
        all_days = [d for d in run_days(run) if midnight(d) < fill.now]
        for first in range(0, len(all_days), size):
            fetched = await _fill_chunk(fill, spec, symbol, all_days[first : first + size])
            for item in fetched:
                if on_day is not None:
                    on_day(item)
            done += fetched
    return done


def days_per_chunk(dataset: Dataset, interval: str | None) -> int:
    """Return how many days one REST range and commit may hold (about 50,000 bars at most)."""
    if dataset.tick:
        return 1
    if interval is None:
        return MAX_DAYS_PER_COMMIT
    per_day = 86_400_000_000 // interval_micros(interval) if interval != "1mo" else 1
    return max(1, min(MAX_DAYS_PER_COMMIT, 50_000 // max(per_day, 1)))


async def _fill_chunk(
    fill: RestFill, spec: TableSpec, symbol: str, chunk: Sequence[date]
) -> list[FetchedDay]:
    """Fetch, store and commit one chunk of consecutive days; return one entry per day."""
    dataset, interval = fill.dataset, fill.interval
    start = midnight(chunk[0])
    end = min(midnight(chunk[-1]) + timedelta(days=1), fill.now)
    result = await fetch_span(fill.rest, dataset, symbol, start, end, interval)
    moment = result.pages[0].fetched_at if result.pages else fill.now
    path = rest_bronze_path(dataset.market, dataset.data_type, symbol, chunk[0], moment, interval)
    await asyncio.to_thread(store_pages, fill.lake, path, result.pages)
    rows = to_silver(
        spec, result.frame, source="rest", bronze_key=path, ingested_at=fill.ingested_at
    )
    written = await asyncio.to_thread(
        write_provisional, fill.lake, spec, rows, spans=[Span(symbol, interval, start, end)]
    )
    counts = rows.group_by(pl.col(spec.time_column).dt.date().alias("day")).len()
    per_day = dict(counts.iter_rows())
    log.info("rest_days_committed", table=spec.table, symbol=symbol, first=chunk[0].isoformat(),
             last=chunk[-1].isoformat(), rows=written.rows if written else 0)  # fmt: skip
    return [
        FetchedDay(symbol, day, "filled" if per_day.get(day) else "empty",
                   int(per_day.get(day, 0)), path)
        for day in chunk
    ]  # fmt: skip
