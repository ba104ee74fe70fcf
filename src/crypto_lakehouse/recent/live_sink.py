"""Write WebSocket micro-batches (and REST back-fills) to bronze and provisional silver rows.

A `LiveSink` buffers `StreamBatch`es; `flush` writes the buffered raw frames as one gzip JSON
lines object under `bronze/binance-ws/` and each kind's rows to its silver table, merged with
the provisional rows already there by primary key (a kline re-delivered after a reconnect
replaces its earlier copy instead of duplicating it). A failed flush keeps its frames, under
the same bronze key, for the next attempt: nothing received is dropped. All writes of one
sink are serialised, because a merge reads the rows it then replaces.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl
import structlog

from crypto_lakehouse.datasets import LINEAGE_SCHEMA, TIMESTAMP, get_dataset
from crypto_lakehouse.ingest.write.provisional import TableSpec, to_silver, write_provisional
from crypto_lakehouse.recent.rest_days import rest_bronze_path, store_pages, write_pages

if TYPE_CHECKING:
    from crypto_lakehouse.recent.results import StreamResult
    from crypto_lakehouse.sources.binance.rest.client import FetchResult
    from crypto_lakehouse.sources.binance.ws.client import RawFrame, StreamBatch
    from crypto_lakehouse.sources.binance.ws.frames import StreamKind
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

_ARCHIVE_TYPES: dict[str, str] = {
    "klines": "klines",
    "agg_trades": "aggTrades",
    "liquidations": "liquidationSnapshot",
}


def mark_price_spec(market: str) -> TableSpec:
    """Return the `<market>_mark_price_stream` table: the markPrice stream, one row per event.

    Columns: symbol, event_time, mark_price, index_price, estimated_settle_price,
    funding_rate, next_funding_time, then the lineage columns; key (symbol, event_time).
    """
    schema: dict[str, pl.DataType] = {
        "symbol": pl.String(),
        "event_time": TIMESTAMP,
        "mark_price": pl.Float64(),
        "index_price": pl.Float64(),
        "estimated_settle_price": pl.Float64(),
        "funding_rate": pl.Float64(),
        "next_funding_time": TIMESTAMP,
        **LINEAGE_SCHEMA,
    }
    return TableSpec(
        f"{market}_mark_price_stream", schema, ("symbol", "event_time"), "event_time", ("symbol",)
    )


def table_spec(market: str, kind: StreamKind) -> TableSpec:
    """Return the silver table a stream kind lands in (liquidations: liquidationSnapshot)."""
    if kind == "mark_price":
        return mark_price_spec(market)
    return TableSpec.of(get_dataset(market, _ARCHIVE_TYPES[kind]))


def ws_bronze_path(market: str, first_received: datetime, token: str) -> str:
    """Return the bronze key of one flushed micro-batch.

    Example: `bronze/binance-ws/um/2024-06-01/20240601T120000123456Z-3f2a9c1e.jsonl.gz`.
    """
    moment = first_received.astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S%fZ")
    return f"bronze/binance-ws/{market}/{moment.date().isoformat()}/{stamp}-{token}.jsonl.gz"


def _frame_line(frame: RawFrame) -> bytes:
    """Return one JSON line: arrival time and the text frame exactly as received."""
    record = {"received_at": frame.received_at.astimezone(UTC).isoformat(), "frame": frame.text}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class _Chunk:
    """Frames taken out of the buffer for one flush; kept (with its key) until it is written."""

    raw: list[RawFrame] = field(default_factory=list)
    rows: dict[StreamKind, list[pl.DataFrame]] = field(default_factory=dict)
    path: str = ""
    bronze_done: bool = False


class LiveSink:
    """Buffers stream batches and writes them to bronze and silver; one per stream run."""

    def __init__(self, lake: LakeRoot, market: str, result: StreamResult) -> None:
        """Create a sink for one market; counters go to `result`."""
        self._lake = lake
        self._market = market
        self._result = result
        self._buffer = _Chunk()
        self._retry: list[_Chunk] = []
        self._lock = asyncio.Lock()
        self.last_kline_open: dict[tuple[str, str], datetime] = {}
        self.last_trade_time: dict[str, datetime] = {}

    @property
    def buffered_frames(self) -> int:
        """Return frames received but not yet written."""
        return len(self._buffer.raw) + sum(len(c.raw) for c in self._retry)

    def add(self, batch: StreamBatch) -> None:
        """Buffer a batch and remember the newest kline and trade seen per stream."""
        self._buffer.raw.extend(batch.raw)
        self._result.frames += len(batch.raw)
        for kind, frame in batch.frames.items():
            if frame.height:
                self._buffer.rows.setdefault(kind, []).append(frame)
        klines = batch.frames.get("klines")
        if klines is not None and klines.height:
            newest = klines.group_by("symbol", "interval").agg(pl.col("open_time").max())
            for symbol, interval, opened in newest.iter_rows():
                key = (symbol, interval)
                self.last_kline_open[key] = max(opened, self.last_kline_open.get(key, opened))
        trades = batch.frames.get("agg_trades")
        if trades is not None and trades.height:
            newest = trades.group_by("symbol").agg(pl.col("transact_time").max())
            for symbol, traded in newest.iter_rows():
                self.last_trade_time[symbol] = max(traded, self.last_trade_time.get(symbol, traded))

    async def flush(self) -> None:
        """Write every buffered frame to bronze, then its rows to silver.

        Raises:
            StorageError: A write failed; the frames stay buffered for the next flush.
        """
        async with self._lock:
            if self._buffer.raw:
                self._retry.append(self._buffer)
                self._buffer = _Chunk()
            while self._retry:
                await self._write_chunk(self._retry[0])
                self._retry.pop(0)

    async def _write_chunk(self, chunk: _Chunk) -> None:
        """Write one chunk: bronze once, then silver per kind (merges make retries harmless)."""
        if not chunk.path:
            token = uuid.uuid4().hex[:8]
            chunk.path = ws_bronze_path(self._market, chunk.raw[0].received_at, token)
        if not chunk.bronze_done:
            lines = [_frame_line(f) for f in chunk.raw]
            await asyncio.to_thread(write_pages, self._lake, chunk.path, lines)
            chunk.bronze_done = True
            self._result.bronze_keys.append(chunk.path)
        received = chunk.raw[-1].received_at
        written: dict[str, int] = {}
        for kind, frames in sorted(chunk.rows.items()):
            spec = table_spec(self._market, kind)
            data = pl.concat(frames, how="vertical_relaxed")
            rows = to_silver(spec, data, source="ws", bronze_key=chunk.path, ingested_at=received)
            outcome = await asyncio.to_thread(write_provisional, self._lake, spec, rows,
                                              merge=True)  # fmt: skip
            written[spec.table] = outcome.rows if outcome else 0
        for table, count in written.items():
            self._result.rows[table] = self._result.rows.get(table, 0) + count
        self._result.flushes += 1
        log.info("stream_flushed", bronze_key=chunk.path, frames=len(chunk.raw),
                 rows=written)  # fmt: skip

    async def write_rest(
        self,
        kind: StreamKind,
        fetched: FetchResult,
        *,
        data_type: str,
        symbol: str,
        interval: str | None,
        start: datetime,
    ) -> int:
        """Write a REST back-fill: pages to bronze, rows merged as provisional `rest` rows.

        Returns:
            The rows written (rows the archive already holds are not counted).
        """
        if fetched.frame.is_empty():
            return 0
        spec = table_spec(self._market, kind)
        moment = fetched.pages[0].fetched_at if fetched.pages else datetime.now(UTC)
        path = rest_bronze_path(self._market, data_type, symbol, start.date(), moment, interval)
        async with self._lock:
            await asyncio.to_thread(store_pages, self._lake, path, fetched.pages)
            rows = to_silver(spec, fetched.frame, source="rest", bronze_key=path,
                             ingested_at=moment)  # fmt: skip
            outcome = await asyncio.to_thread(write_provisional, self._lake, spec, rows,
                                              merge=True)  # fmt: skip
        count = outcome.rows if outcome else 0
        self._result.backfilled_rows += count
        return count
