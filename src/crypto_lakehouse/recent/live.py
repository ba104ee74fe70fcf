"""Live data: run the WebSocket client, flush micro-batches, back-fill reconnect gaps from REST.

`run_stream` connects one combined stream for the chosen symbols and streams, hands every
batch to a `LiveSink` and flushes it every `flush_seconds` (bronze raw frames, provisional
silver rows). After each `Reconnected` event the klines and aggregate trades that may have
been missed — from just after the newest one received (or the event's `backfill_from`) to
the reconnect — are fetched from REST, so no minute is lost; the merge by primary key keeps
rows that arrive both ways single. On stop (SIGINT/SIGTERM, `duration`, or `stop`), the
client hands over what it has received, back-fills finish, and a last flush writes it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, cast

import structlog

from crypto_lakehouse.datasets import get_dataset, interval_micros
from crypto_lakehouse.exceptions import ConfigurationError, LakehouseError, SourceError
from crypto_lakehouse.recent.live_sink import LiveSink
from crypto_lakehouse.recent.results import StreamResult
from crypto_lakehouse.sources.binance.ws.client import (
    BinanceStreamClient,
    Reconnected,
    StreamBatch,
    StreamOptions,
    agg_trade_stream,
    force_order_stream,
    kline_stream,
    mark_price_stream,
)
from crypto_lakehouse.storage.format_version import check_format
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from collections.abc import Callable

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient
    from crypto_lakehouse.sources.binance.ws.client import StreamEvent
    from crypto_lakehouse.sources.binance.ws.frames import StreamKind

log = structlog.get_logger(__name__)
Market = Literal["spot", "um", "cm"]
BACKFILL_GRACE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What `lakehouse stream` was asked for; `duration` None runs until stopped."""

    market: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...] = ("kline_1m",)
    flush_seconds: float = 5.0
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The stream names to subscribe to and what to back-fill after a reconnect."""

    names: tuple[str, ...]
    klines: tuple[tuple[str, str], ...] = ()
    agg_trades: tuple[str, ...] = ()


def plan_streams(market: str, symbols: tuple[str, ...], streams: tuple[str, ...]) -> StreamPlan:
    """Return the stream names of a request, e.g. ("um", ("BTCUSDT",), ("kline_1m",)).

    Accepted tokens: `kline_<interval>`, `aggTrade`, `markPrice`, `markPrice@1s`, `forceOrder`.

    Raises:
        ConfigurationError: An unknown token, a futures-only stream for spot, or no symbols.
    """
    if market not in ("spot", "um", "cm"):
        raise ConfigurationError(f"stream market must be spot, um or cm, not {market!r}")
    if not symbols:
        raise ConfigurationError("stream needs --symbols (e.g. BTCUSDT,ETHUSDT)")
    names: list[str] = []
    klines: list[tuple[str, str]] = []
    trades: list[str] = []
    intervals = get_dataset(market, "klines").intervals
    for token in streams:
        if token.startswith("kline_"):
            interval = token.removeprefix("kline_")
            if interval not in intervals:
                raise ConfigurationError(f"{token}: {market} klines come in {', '.join(intervals)}")
            klines += [(s, interval) for s in symbols]
            names += [kline_stream(s, interval) for s in symbols]
        elif token == "aggTrade":
            trades += list(symbols)
            names += [agg_trade_stream(s) for s in symbols]
        elif token in ("markPrice", "markPrice@1s", "forceOrder"):
            if market == "spot":
                raise ConfigurationError(f"{token} is a futures stream (um, cm), not spot")
            if token == "forceOrder":
                names += [force_order_stream(s) for s in symbols]
            else:
                every = token.endswith("@1s")
                names += [mark_price_stream(s, every_second=every) for s in symbols]
        else:
            raise ConfigurationError(
                f"unknown stream {token!r}; use kline_<interval>, aggTrade, markPrice, forceOrder"
            )
    return StreamPlan(tuple(names), tuple(klines), tuple(trades))


@dataclass(slots=True)
class _Live:
    """One running stream: the sink, the REST client for back-fills, and their tasks."""

    market: Market
    plan: StreamPlan
    sink: LiveSink
    rest: BinanceRestClient | None
    result: StreamResult
    observer: Callable[[StreamResult], None] | None = None
    backfills: set[asyncio.Task[None]] = field(default_factory=set)

    async def on_event(self, event: StreamEvent) -> None:
        """Buffer a batch, or start a back-fill after a reconnect (never blocks receiving)."""
        if isinstance(event, StreamBatch):
            self.sink.add(event)
            return
        self.result.reconnects += 1
        if self.rest is not None:
            # Take the starts now: frames of the new connection move the newest-seen marks.
            task = asyncio.create_task(self._backfill(event, self._starts(event)))
            self.backfills.add(task)
            task.add_done_callback(self.backfills.discard)

    def _starts(self, event: Reconnected) -> dict[tuple[str, str | None], datetime]:
        """Return where each back-fill starts: after the newest row received, else the gap."""
        starts: dict[tuple[str, str | None], datetime] = {}
        for symbol, interval in self.plan.klines:
            step = timedelta(microseconds=interval_micros(interval))
            last = self.sink.last_kline_open.get((symbol, interval))
            starts[(symbol, interval)] = last + step if last else event.backfill_from - step
        for symbol in self.plan.agg_trades:
            starts[(symbol, None)] = self.sink.last_trade_time.get(symbol, event.backfill_from)
        return starts

    async def _backfill(
        self, event: Reconnected, starts: dict[tuple[str, str | None], datetime]
    ) -> None:
        """Fetch the klines and trades a reconnect may have missed and write them."""
        assert self.rest is not None
        end = event.reconnected_at
        try:
            for (symbol, interval), start in starts.items():
                kind: StreamKind = "klines" if interval else "agg_trades"
                if interval is not None:
                    fetched = await self.rest.klines(self.market, symbol, interval, start, end)
                else:
                    fetched = await self.rest.agg_trades(self.market, symbol, start, end)
                data_type = "klines" if interval else "aggTrades"
                await self.sink.write_rest(kind, fetched, data_type=data_type, symbol=symbol,
                                           interval=interval, start=start)  # fmt: skip
        except (SourceError, LakehouseError) as exc:
            self.result.backfill_errors.append(str(exc))
            log.warning("stream_backfill_failed", error=str(exc),
                        since=event.backfill_from.isoformat())  # fmt: skip
            return
        log.info("stream_backfilled", since=event.backfill_from.isoformat(),
                 until=end.isoformat(), rows=self.result.backfilled_rows)  # fmt: skip

    async def flush_every(self, seconds: float, stop: asyncio.Event) -> None:
        """Flush on a timer until stopped; a failed flush is retried on the next tick."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            if stop.is_set():
                return
            try:
                await self.sink.flush()
            except LakehouseError as exc:
                log.error("stream_flush_failed", error=str(exc),
                          buffered=self.sink.buffered_frames)  # fmt: skip
            if self.observer is not None:
                self.observer(self.result)


async def run_stream(
    request: StreamRequest,
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = False,
    rest_client: BinanceRestClient | None = None,
    base_url: str | None = None,
    proxy: str | Literal[True] | None = True,
    observer: Callable[[StreamResult], None] | None = None,
) -> StreamResult:
    """Stream live market data into bronze and provisional silver rows until stopped.

    Args:
        request: Market, symbols, streams, flush interval and optional duration.
        settings: Lake root, WebSocket and REST endpoints.
        stop: Set it to stop (the run flushes everything received, then returns).
        handle_signals: Stop on SIGINT and SIGTERM (the CLI sets this).
        rest_client: REST client for back-fills (the caller keeps ownership); one is made
            when klines or aggTrades are streamed.
        base_url: WebSocket base URL overriding the settings (tests, mirrors).
        proxy: Passed to the WebSocket client (None disables proxies).
        observer: Called with the running counters after every timed flush.

    Returns:
        Counters: frames received, rows written per table, flushes, reconnects, back-fills.

    Raises:
        ConfigurationError: The request is invalid.
        LakeFormatError: The lake's format is newer, or it needs `lakehouse migrate`.
        StorageError: The final flush failed (the frames are still in bronze if that worked).
    """
    plan = plan_streams(request.market, request.symbols, request.streams)
    market = cast("Market", request.market)
    lake = LakeRoot.at(settings.root)
    await asyncio.to_thread(check_format, lake, write=True)
    result = StreamResult(market=market)
    stop = stop or asyncio.Event()
    options = StreamOptions(batch_max_messages=1000, proxy=proxy,
                            batch_max_seconds=min(1.0, request.flush_seconds))  # fmt: skip
    client = BinanceStreamClient(
        market, list(plan.names), settings=settings, base_url=base_url, options=options
    )
    rest = rest_client
    if rest is None and (plan.klines or plan.agg_trades):
        from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient

        rest = BinanceRestClient(settings)
    live = _Live(market, plan, LiveSink(lake, market, result), rest, result, observer)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    log.info("stream_started", market=market, streams=list(plan.names),
             flush_seconds=request.flush_seconds)  # fmt: skip
    receiver = asyncio.create_task(client.run(live.on_event))
    flusher = asyncio.create_task(live.flush_every(request.flush_seconds, stop))
    try:
        await _wait(stop, receiver, request.duration)
    finally:
        stop.set()
        await _shutdown(client, receiver, flusher, live)
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if rest is not None and rest_client is None:
            await rest.aclose()
    log.info("stream_run_finished", frames=result.frames, rows=result.rows, flushes=result.flushes,
             reconnects=result.reconnects, backfilled=result.backfilled_rows)  # fmt: skip
    return result


async def _wait(stop: asyncio.Event, receiver: asyncio.Task[None], duration: float | None) -> None:
    """Return when stopped, when `duration` has passed, or when the receiver ended."""
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopped, receiver}, timeout=duration,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        stopped.cancel()


async def _shutdown(
    client: BinanceStreamClient,
    receiver: asyncio.Task[None],
    flusher: asyncio.Task[None],
    live: _Live,
) -> None:
    """Close the client (it hands over its last batch), finish back-fills, flush everything."""
    await client.close()
    error: BaseException | None = None
    try:
        await receiver
    except Exception as exc:  # raised again after the data received so far is flushed
        error = exc
    await flusher
    if live.backfills:
        _, pending = await asyncio.wait(set(live.backfills), timeout=BACKFILL_GRACE_SECONDS)
        for task in pending:
            task.cancel()
    await live.sink.flush()
    if error is not None:
        raise error
