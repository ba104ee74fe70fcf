"""WebSocket client for Binance market streams with reconnects, rotation and micro-batches.

One `BinanceStreamClient` holds one combined-stream connection (`/stream?streams=a/b`).
It hands an async consumer two kinds of events, in order:

- `StreamBatch`: the raw text frames received (for bronze) and their silver rows (closed
  klines, aggTrades, mark prices, liquidations), flushed every `batch_max_messages` frames
  or `batch_max_seconds`, and before every disconnect;
- `Reconnected`: after a dropped or rotated connection, the UTC times the old connection
  ended and the new one opened, and the last frame before the drop, so the pipeline can
  back-fill `[backfill_from, reconnected_at]` from REST.

Protocol pings are answered by the websockets library; the client also sends its own to
notice dead connections. Connections are rotated before Binance's 24-hour limit. Failed
connects and dropped connections wait by the one retry policy (`crypto_lakehouse.retry`:
jittered exponential back-off capped by `tuning.retry_max_wait_seconds`, Retry-After on a
429 handshake) and retry until `close`; a handshake refused for good (403, 451, another 4xx)
ends `run` with its `SourceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeAlias

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from crypto_lakehouse.exceptions import ConfigurationError, SourceError, TerminalError
from crypto_lakehouse.retry import RetryPolicy
from crypto_lakehouse.sources.binance.ws import frames as stream_frames
from crypto_lakehouse.sources.http import error_for_status, transport_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    import polars as pl
    from websockets.asyncio.client import ClientConnection

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.sources.binance._silver import Market
    from crypto_lakehouse.sources.binance.ws.frames import Row, StreamKind

log = structlog.get_logger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
_DEFAULT_ROTATE_SECONDS = 23 * 3600.0


def kline_stream(symbol: str, interval: str) -> str:
    """Return a kline stream name, e.g. ("BTCUSDT", "1m") → "btcusdt@kline_1m"."""
    return f"{symbol.lower()}@kline_{interval}"


def agg_trade_stream(symbol: str) -> str:
    """Return an aggregate-trade stream name, e.g. "BTCUSDT" → "btcusdt@aggTrade"."""
    return f"{symbol.lower()}@aggTrade"


def mark_price_stream(symbol: str | None = None, *, every_second: bool = False) -> str:
    """Return a mark-price stream: "btcusdt@markPrice[@1s]" or, without symbol, "!markPrice@arr"."""
    name = f"{symbol.lower()}@markPrice" if symbol else "!markPrice@arr"
    return f"{name}@1s" if every_second else name


def force_order_stream(symbol: str | None = None) -> str:
    """Return a liquidation stream: "btcusdt@forceOrder" or, without symbol, "!forceOrder@arr"."""
    return f"{symbol.lower()}@forceOrder" if symbol else "!forceOrder@arr"


def combined_stream_url(base_url: str, streams: Sequence[str]) -> str:
    """Return the combined-stream URL, e.g. "wss://fstream.binance.com/stream?streams=a/b"."""
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


def _close_reason(exc: ConnectionClosed) -> str:
    """Describe why a connection closed, e.g. "closed: 1001 going away" or "closed: 1006"."""
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "closed: 1006 (no close frame)"
    return f"closed: {frame.code} {frame.reason}".strip()


def _utcnow() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One text frame exactly as received, with its arrival time."""

    received_at: datetime
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class StreamBatch:
    """A micro-batch: raw frames for bronze and their rows per kind in silver layout."""

    market: Market
    raw: tuple[RawFrame, ...]
    frames: Mapping[StreamKind, pl.DataFrame] = field(repr=False)

    @property
    def first_received_at(self) -> datetime:
        """Return the arrival time of the first frame."""
        return self.raw[0].received_at

    @property
    def last_received_at(self) -> datetime:
        """Return the arrival time of the last frame."""
        return self.raw[-1].received_at


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A connection ended at `disconnected_at` and a new one opened at `reconnected_at`.

    Events may be missing from `backfill_from` (the last frame received on the old
    connection, or the disconnect when none arrived) until `reconnected_at`; a dead link can
    go quiet long before it is noticed, so back-fill from `backfill_from`, not the disconnect.
    `attempts` counts failed tries before this connection (0 after a planned rotation).
    """

    disconnected_at: datetime
    reconnected_at: datetime
    reason: str
    planned: bool
    attempts: int
    last_received_at: datetime | None = None

    @property
    def backfill_from(self) -> datetime:
        """Return the start of the interval whose events may be missing."""
        if self.last_received_at is None:
            return self.disconnected_at
        return min(self.last_received_at, self.disconnected_at)

    @property
    def gap(self) -> timedelta:
        """Return how long no connection was open."""
        return self.reconnected_at - self.disconnected_at


StreamEvent = StreamBatch | Reconnected
Consumer: TypeAlias = "Callable[[StreamEvent], Awaitable[None]]"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a stream client batches, pings and rotates; the defaults suit Binance.

    Attributes:
        batch_max_messages: Flush a batch after this many frames.
        batch_max_seconds: Flush a non-empty batch after this long.
        rotate_after_seconds: Reconnect proactively after this long (Binance cuts at 24 h).
        ping_interval: Seconds between client pings; None disables them.
        ping_timeout: Seconds to wait for a pong before dropping the connection.
        open_timeout: Seconds allowed for the opening handshake.
        proxy: Passed to websockets: True reads the proxy environment, None disables.
    """

    batch_max_messages: int = 500
    batch_max_seconds: float = 1.0
    rotate_after_seconds: float = _DEFAULT_ROTATE_SECONDS
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0
    proxy: str | Literal[True] | None = True


def _connect_error(url: str, exc: BaseException) -> SourceError:
    """Translate a failed connect into the tree: a refused handshake by its HTTP status."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        error = error_for_status(response.status_code, url, response.headers)
        if error is not None:
            return error
    return transport_error(url, exc)


@dataclass(slots=True)
class _Pending:
    """Frames and rows received since the last flush."""

    raw: list[RawFrame] = field(default_factory=list)
    rows: dict[StreamKind, list[Row]] = field(default_factory=dict)
    opened: float = 0.0


@dataclass(frozen=True, slots=True)
class _Ended:
    """Why one connection's receive loop stopped."""

    reason: str
    planned: bool
    at: datetime
    last_received_at: datetime | None


class BinanceStreamClient:
    """One reconnecting combined-stream connection delivering micro-batches to a consumer."""

    def __init__(
        self,
        market: Market,
        streams: Sequence[str],
        *,
        settings: Settings,
        base_url: str | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        """Configure the client; nothing connects until `run`.

        Args:
            market: "spot", "um" or "cm"; picks the base URL and the kline layout.
            streams: Stream names (see `kline_stream` etc.), 1 to 1024.
            settings: The market's base URL and the reconnect back-off (the retry policy's
                waits); read by the caller, never from the environment here.
            base_url: Overrides the market's base URL (mirrors, tests).
            options: Batching, pings, rotation and proxy (`StreamOptions`).

        Raises:
            ConfigurationError: For no streams or more than 1024.
        """
        if not 1 <= len(streams) <= MAX_STREAMS_PER_CONNECTION:
            raise ConfigurationError(
                f"a connection carries 1..{MAX_STREAMS_PER_CONNECTION} streams, got {len(streams)}"
            )
        base = (
            base_url
            or {
                "spot": settings.binance_spot_ws_url,
                "um": settings.binance_um_ws_url,
                "cm": settings.binance_cm_ws_url,
            }[market]
        )
        self.market: Market = market
        self.url = combined_stream_url(base, streams)
        self._options = options or StreamOptions()
        self._policy = RetryPolicy.from_settings(settings, name="websocket")
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self.connections = 0

    async def _idle(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when `close` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def close(self) -> None:
        """Stop: flush the pending batch, close the connection; `run` then returns."""
        self._stop.set()
        if self._ws is not None:
            await self._ws.close()

    async def run(self, consumer: Consumer) -> None:
        """Connect, deliver events to `consumer` and reconnect until `close` is called.

        Args:
            consumer: Awaited with each StreamBatch and Reconnected, in order. An exception
                it raises ends `run` with that exception (the connection is closed).

        Raises:
            ConfigurationError: If the URL is not a WebSocket URL.
            SourceError: A terminal one: the handshake was refused for good (e.g. 451).
        """
        attempts = 0
        ended: _Ended | None = None
        while not self._stop.is_set():
            ws = await self._connect(attempts)
            if ws is None:
                attempts += 1
                continue
            self._ws = ws
            self.connections += 1
            if self._stop.is_set():  # close() ran while the handshake was in progress
                await ws.close()
                break
            try:
                if ended is not None:
                    await consumer(self._reconnected(ended, attempts))
                ended = await self._receive(ws, consumer)
            finally:
                self._ws = None
                await ws.close()
            if ended.last_received_at is not None or ended.planned:
                attempts = 0
            if self._stop.is_set():
                break
            log.warning(
                "stream_disconnected", url=self.url, reason=ended.reason, planned=ended.planned
            )
            if not ended.planned:
                attempts += 1
                await self._idle(self._policy.backoff(attempts))
        log.info("stream_stopped", url=self.url, connections=self.connections)

    async def _connect(self, failed: int) -> ClientConnection | None:
        """Open one connection; None after a transient failure (and its back-off wait).

        Raises:
            ConfigurationError: If the URL is not a WebSocket URL.
            SourceError: A terminal failure (the handshake refused for good).
        """
        options = self._options
        try:
            return await connect(
                self.url,
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                open_timeout=options.open_timeout,
                proxy=options.proxy,
            )
        except InvalidURI as exc:
            raise ConfigurationError(f"not a WebSocket URL: {self.url}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            error = _connect_error(self.url, exc)
            if isinstance(error, TerminalError):
                raise error from exc
        delay = self._policy.wait_after(failed + 1, error)
        log.warning("stream_connect_failed", url=self.url, attempt=failed + 1,
                    retry_in=round(delay, 3), error=str(error))  # fmt: skip
        await self._idle(delay)
        return None

    def _reconnected(self, ended: _Ended, attempts: int) -> Reconnected:
        """Return (and log) the event of a connection opened after `ended`."""
        event = Reconnected(
            ended.at, _utcnow(), ended.reason, ended.planned, attempts, ended.last_received_at
        )
        log.info(
            "stream_reconnected",
            url=self.url,
            reason=event.reason,
            planned=event.planned,
            disconnected_at=event.disconnected_at.isoformat(),
            reconnected_at=event.reconnected_at.isoformat(),
        )
        return event

    async def _receive(self, ws: ClientConnection, consumer: Consumer) -> _Ended:
        """Receive frames on one connection until it closes, must rotate, or `close` is called."""
        loop = asyncio.get_running_loop()
        rotate_at = loop.time() + self._options.rotate_after_seconds
        pending = _Pending()
        last: datetime | None = None
        while True:
            deadline = rotate_at
            if pending.raw:
                deadline = min(deadline, pending.opened + self._options.batch_max_seconds)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    message = await ws.recv()
            except TimeoutError:
                if loop.time() >= rotate_at:
                    ended = _Ended("rotation", planned=True, at=_utcnow(), last_received_at=last)
                    break
                await self._flush(pending, consumer)
                continue
            except ConnectionClosed as exc:
                stopping = self._stop.is_set()
                reason = "shutdown" if stopping else _close_reason(exc)
                ended = _Ended(reason, planned=stopping, at=_utcnow(), last_received_at=last)
                break
            last = self._add(pending, message, loop.time())
            if len(pending.raw) >= self._options.batch_max_messages:
                await self._flush(pending, consumer)
        await self._flush(pending, consumer)
        return ended

    def _add(self, pending: _Pending, message: str | bytes, now: float) -> datetime:
        """Record one frame and its rows (a malformed frame is kept raw); return its arrival."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        if not pending.raw:
            pending.opened = now
        received_at = _utcnow()
        pending.raw.append(RawFrame(received_at, text))
        try:
            _, rows = stream_frames.parse_frame(self.market, text)
        except ValueError as exc:
            log.warning("stream_bad_frame", url=self.url, error=str(exc), frame=text[:200])
            return received_at
        for kind, row in rows:
            pending.rows.setdefault(kind, []).append(row)
        return received_at

    async def _flush(self, pending: _Pending, consumer: Consumer) -> None:
        """Hand the pending frames to the consumer as one StreamBatch and start a new one."""
        if not pending.raw:
            return
        frames = {
            kind: stream_frames.rows_frame(self.market, kind, rows)
            for kind, rows in pending.rows.items()
        }
        batch = StreamBatch(self.market, tuple(pending.raw), frames)
        pending.raw, pending.rows = [], {}
        await consumer(batch)
