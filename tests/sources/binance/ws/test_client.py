"""Tests for BinanceStreamClient and the WS event parsers against the WebSocket stand-in."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING, Any

import pytest

from crypto_lakehouse.config import Settings, load_settings
from crypto_lakehouse.exceptions import NotFoundUpstreamError
from crypto_lakehouse.sources.binance._silver import CM_KLINES, KLINES, LIQUIDATIONS, schema
from crypto_lakehouse.sources.binance.ws.client import (
    BinanceStreamClient,
    Reconnected,
    StreamBatch,
    StreamOptions,
    agg_trade_stream,
    combined_stream_url,
    force_order_stream,
    kline_stream,
    mark_price_stream,
)
from crypto_lakehouse.sources.binance.ws.frames import parse_frame
from tests.servers.archive_server import ArchiveServer, Fault
from tests.servers.ws_server import WsServer
from tests.sources.binance._support import block_non_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from crypto_lakehouse.sources.binance.ws.client import StreamEvent
    from crypto_lakehouse.sources.binance.ws.frames import StreamKind

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to leave loopback."""
    block_non_loopback(monkeypatch)


def kline(symbol: str, open_ms: int, *, closed: bool) -> dict[str, Any]:
    """Return a kline event for a 1m bar."""
    return {
        "e": "kline",
        "E": open_ms + 30_000,
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + 59_999,
            "s": symbol,
            "i": "1m",
            "f": 1,
            "L": 9,
            "o": "100.0",
            "c": "101.0",
            "h": "102.0",
            "l": "99.0",
            "v": "10.5",
            "n": 9,
            "x": closed,
            "q": "1060.0",
            "V": "4.0",
            "Q": "404.0",
            "B": "0",
        },
    }


def agg(symbol: str, agg_id: int) -> dict[str, Any]:
    """Return an aggTrade event with id `agg_id`."""
    return {
        "e": "aggTrade",
        "E": T0 + agg_id,
        "s": symbol,
        "a": agg_id,
        "p": "100.5",
        "q": "0.25",
        "f": agg_id * 2,
        "l": agg_id * 2 + 1,
        "T": T0 + agg_id,
        "m": True,
    }


def mark(symbol: str) -> dict[str, Any]:
    """Return a markPriceUpdate event."""
    return {
        "e": "markPriceUpdate",
        "E": T0,
        "s": symbol,
        "p": "100.1",
        "i": "100.0",
        "P": "100.05",
        "r": "0.0001",
        "T": T0 + 8 * 3_600_000,
    }


def force_order(symbol: str) -> dict[str, Any]:
    """Return a forceOrder (liquidation) event."""
    return {
        "e": "forceOrder",
        "E": T0,
        "o": {
            "s": symbol,
            "S": "SELL",
            "o": "LIMIT",
            "f": "IOC",
            "q": "0.014",
            "p": "9910",
            "ap": "9910.5",
            "X": "FILLED",
            "l": "0.014",
            "z": "0.014",
            "T": T0 + 5,
        },
    }


def run_client(
    client: BinanceStreamClient, until: Callable[[list[StreamEvent]], bool], timeout: float = 30.0
) -> list[StreamEvent]:
    """Run the client until `until(events)` holds, then close it and return the events."""
    events: list[StreamEvent] = []

    async def main() -> None:
        reached = asyncio.Event()

        async def consume(event: StreamEvent) -> None:
            events.append(event)
            if until(events):
                reached.set()

        task = asyncio.create_task(client.run(consume))
        waiter = asyncio.create_task(reached.wait())
        await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await client.close()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert until(events), f"condition not reached; events: {events}"
    return events


async def _ignore(event: StreamEvent) -> None:
    """Consume an event by dropping it."""


def fast_settings(max_wait: float = 0.1) -> Settings:
    """Return settings whose reconnect back-off starts at 20 ms and stops growing at `max_wait`."""
    return load_settings(retry_backoff_seconds=0.02, retry_max_wait_seconds=max_wait)


def stream_client(
    server: WsServer, market: Any, streams: Sequence[str], **kwargs: Any
) -> BinanceStreamClient:
    """Return a client for the stand-in with fast batches and backoff, no proxy."""
    options = StreamOptions(**{"batch_max_seconds": 0.05, "proxy": None, **kwargs})
    return BinanceStreamClient(
        market, streams, settings=fast_settings(), base_url=server.url, options=options
    )


def batches(events: Sequence[StreamEvent]) -> list[StreamBatch]:
    """Return the StreamBatch events."""
    return [e for e in events if isinstance(e, StreamBatch)]


def rows_of(events: Sequence[StreamEvent], kind: StreamKind) -> list[dict[str, Any]]:
    """Return all rows of one kind across batches."""
    return [row for b in batches(events) if kind in b.frames for row in b.frames[kind].to_dicts()]


def test_stream_names_and_combined_url() -> None:
    """Stream-name helpers build Binance's lower-case names and the combined URL."""
    names = [
        kline_stream("BTCUSDT", "1m"),
        agg_trade_stream("BTCUSDT"),
        mark_price_stream("BTCUSDT", every_second=True),
        force_order_stream(),
    ]
    assert names == [
        "btcusdt@kline_1m",
        "btcusdt@aggTrade",
        "btcusdt@markPrice@1s",
        "!forceOrder@arr",
    ]
    assert combined_stream_url("wss://fstream.binance.com/", names[:2]) == (
        "wss://fstream.binance.com/stream?streams=btcusdt@kline_1m/btcusdt@aggTrade"
    )


def test_parse_frame_unwraps_combined_frames_and_flattens_arrays() -> None:
    """A combined frame yields its stream name; !markPrice@arr yields one row per symbol."""
    text = json.dumps({"stream": "!markPrice@arr", "data": [mark("BTCUSDT"), mark("ETHUSDT")]})
    stream, rows = parse_frame("um", text)
    assert stream == "!markPrice@arr"
    assert [(kind, row["symbol"]) for kind, row in rows] == [
        ("mark_price", "BTCUSDT"),
        ("mark_price", "ETHUSDT"),
    ]
    assert parse_frame("spot", '{"result": null, "id": 1}') == (None, [])
    with pytest.raises(ValueError, match="missing"):
        parse_frame("spot", '{"e": "aggTrade", "s": "BTCUSDT"}')


def test_only_closed_klines_become_rows_but_every_frame_is_kept() -> None:
    """Open-bar updates are kept raw for bronze but only k.x=true bars become kline rows."""
    stream = kline_stream("BTCUSDT", "1m")
    script = [
        (stream, kline("BTCUSDT", T0, closed=False)),
        (stream, kline("BTCUSDT", T0, closed=True)),
        (stream, kline("BTCUSDT", T0 + 60_000, closed=False)),
        (stream, kline("BTCUSDT", T0 + 60_000, closed=True)),
    ]
    with WsServer(script=script) as server:
        events = run_client(
            stream_client(server, "spot", [stream]), lambda ev: len(rows_of(ev, "klines")) == 2
        )
    assert sum(len(b.raw) for b in batches(events)) == 4
    frames = [b.frames["klines"] for b in batches(events) if "klines" in b.frames]
    assert all(f.schema == schema(KLINES) for f in frames)
    rows = rows_of(events, "klines")
    assert [r["open_time"].timestamp() * 1000 for r in rows] == [T0, T0 + 60_000]
    assert rows[0]["quote_volume"] == 1060.0 and rows[0]["trades"] == 9


@pytest.mark.req("R5.1", "R5.2")
def test_combined_stream_delivers_each_event_kind() -> None:
    """aggTrade, markPrice, forceOrder and COIN-M kline events arrive in their silver layouts."""
    names = [
        agg_trade_stream("BTCUSD_PERP"),
        mark_price_stream("BTCUSD_PERP"),
        force_order_stream("BTCUSD_PERP"),
        kline_stream("BTCUSD_PERP", "1m"),
    ]
    script = [
        (names[0], agg("BTCUSD_PERP", 7)),
        (names[1], mark("BTCUSD_PERP")),
        (names[2], force_order("BTCUSD_PERP")),
        (names[3], kline("BTCUSD_PERP", T0, closed=True)),
        ("ethusd_perp@aggTrade", agg("ETHUSD_PERP", 1)),
    ]  # not subscribed
    with WsServer(script=script) as server:
        events = run_client(
            stream_client(server, "cm", names), lambda ev: len(rows_of(ev, "klines")) == 1
        )
    (trade,) = rows_of(events, "agg_trades")
    assert (trade["agg_trade_id"], trade["price"], trade["is_buyer_maker"]) == (7, 100.5, True)
    assert "is_best_match" not in trade
    (price,) = rows_of(events, "mark_price")
    assert (price["mark_price"], price["funding_rate"]) == (100.1, 0.0001)
    liquidation_frames = [
        b.frames["liquidations"] for b in batches(events) if "liquidations" in b.frames
    ]
    assert liquidation_frames[0].schema == schema(LIQUIDATIONS)
    (liq,) = rows_of(events, "liquidations")
    assert (liq["side"], liq["average_price"], liq["order_status"]) == ("SELL", 9910.5, "FILLED")
    (bar,) = rows_of(events, "klines")
    assert set(bar) == set(schema(CM_KLINES)) and bar["base_volume"] == 1060.0
    assert sum(len(b.raw) for b in batches(events)) == 4


@pytest.mark.parametrize("mode", ["abort", "close"])
@pytest.mark.req("R3.1", "R3.2")
def test_survives_scripted_disconnects_and_reports_each_gap(mode: Any) -> None:
    """After two dropped connections every event still arrives once and both gaps are reported."""
    stream = agg_trade_stream("BTCUSDT")
    script = [(stream, agg("BTCUSDT", n)) for n in range(30)]
    with WsServer(script=script, disconnect_after=[10, 10], disconnect_mode=mode) as server:
        events = run_client(
            stream_client(server, "spot", [stream]), lambda ev: len(rows_of(ev, "agg_trades")) == 30
        )
        assert len(server.connections) == 3
    assert [r["agg_trade_id"] for r in rows_of(events, "agg_trades")] == list(range(30))
    gaps = [e for e in events if isinstance(e, Reconnected)]
    assert len(gaps) == 2
    for gap in gaps:
        assert gap.disconnected_at <= gap.reconnected_at
        assert not gap.planned and gap.reason.startswith("closed")
    if mode == "close":
        assert "1001" in gaps[0].reason
    first_gap = events.index(gaps[0])
    before = [
        r["agg_trade_id"]
        for b in batches(events[:first_gap])
        for r in b.frames["agg_trades"].to_dicts()
    ]
    assert before == list(range(10))  # the batch before a drop is flushed before the report
    assert batches(events[:first_gap])[-1].last_received_at <= gaps[0].disconnected_at


def test_missed_events_lie_inside_the_reported_interval() -> None:
    """Events lost while disconnected are absent, and the Reconnected report brackets the gap."""
    stream = agg_trade_stream("BTCUSDT")
    script = [(stream, agg("BTCUSDT", n)) for n in range(20)]
    with WsServer(script=script, disconnect_after=[5], skip_after_disconnect=3) as server:
        events = run_client(
            stream_client(server, "spot", [stream]), lambda ev: len(rows_of(ev, "agg_trades")) == 17
        )
    ids = [r["agg_trade_id"] for r in rows_of(events, "agg_trades")]
    assert ids == [*range(5), *range(8, 20)]
    (gap,) = [e for e in events if isinstance(e, Reconnected)]
    gap_index = events.index(gap)
    last_before = batches(events[:gap_index])[-1].last_received_at
    first_after = batches(events[gap_index:])[0].first_received_at
    assert gap.last_received_at == last_before
    assert gap.backfill_from == last_before <= gap.disconnected_at
    assert gap.reconnected_at <= first_after


def test_answers_server_pings() -> None:
    """The client replies to the server's protocol pings while idle."""
    with WsServer(ping_interval=0.05) as server:
        client = stream_client(server, "um", [mark_price_stream("BTCUSDT")])

        async def main() -> bool:
            task = asyncio.create_task(client.run(_ignore))
            answered = await asyncio.to_thread(server.wait_for_pongs, 4, 30)
            await client.close()
            await asyncio.wait_for(task, 30)
            return answered

        assert asyncio.run(main())
        assert server.pongs >= 4


def test_rotates_the_connection_before_the_limit() -> None:
    """With a short rotation period the client reconnects on its own and reports it as planned."""
    with WsServer() as server:
        client = stream_client(
            server, "um", [agg_trade_stream("BTCUSDT")], rotate_after_seconds=0.2
        )
        events = run_client(client, lambda ev: any(isinstance(e, Reconnected) for e in ev))
        assert len(server.connections) >= 2
    gap = next(e for e in events if isinstance(e, Reconnected))
    assert gap.planned and gap.reason == "rotation"
    assert gap.attempts == 0 and gap.disconnected_at <= gap.reconnected_at


def test_batches_split_by_message_count() -> None:
    """batch_max_messages caps each StreamBatch, and frames stay in arrival order."""
    stream = agg_trade_stream("ETHUSDT")
    script = [(stream, agg("ETHUSDT", n)) for n in range(10)]
    with WsServer(script=script) as server:
        client = stream_client(server, "spot", [stream], batch_max_messages=4, batch_max_seconds=30)
        events = run_client(client, lambda ev: sum(len(b.raw) for b in batches(ev)) >= 8)
    sizes = [len(b.raw) for b in batches(events)]
    assert sizes[:2] == [4, 4] and sum(sizes) == 10  # close() flushed the last two
    assert [r["agg_trade_id"] for r in rows_of(events, "agg_trades")] == list(range(10))


def test_close_stops_a_client_that_cannot_connect() -> None:
    """close() ends run() promptly while the client is backing off from refused connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = BinanceStreamClient(
        "spot",
        [agg_trade_stream("BTCUSDT")],
        settings=load_settings(retry_backoff_seconds=600, retry_max_wait_seconds=600),
        base_url=f"ws://127.0.0.1:{port}",
        options=StreamOptions(proxy=None),
    )
    waits: list[float] = []

    async def main() -> list[StreamEvent]:
        events: list[StreamEvent] = []
        backing_off = asyncio.Event()
        idle = client._idle

        async def recorded_idle(seconds: float) -> None:
            waits.append(seconds)
            backing_off.set()
            await idle(seconds)

        client._idle = recorded_idle  # type: ignore[method-assign]

        async def consume(event: StreamEvent) -> None:
            events.append(event)

        task = asyncio.create_task(client.run(consume))
        await asyncio.wait_for(backing_off.wait(), 30)
        await client.close()
        await asyncio.wait_for(task, 30)  # a wait of 300-600 s was cut short by close()
        return events

    assert asyncio.run(main()) == []
    assert client.connections == 0
    assert len(waits) == 1 and 300 <= waits[0] <= 600


def test_refused_handshakes_wait_retry_after_then_stop_when_terminal(
    archive: ArchiveServer,
) -> None:
    """A 429 handshake waits its Retry-After and connects again; a 404 ends `run` with
    NotFoundUpstreamError instead of reconnecting forever."""
    archive.faults.add("/stream", Fault.status(429, retry_after=1))
    client = BinanceStreamClient(
        "spot",
        [agg_trade_stream("BTCUSDT")],
        settings=fast_settings(max_wait=5.0),
        base_url=archive.archive_url.replace("http://", "ws://"),
        options=StreamOptions(proxy=None),
    )
    waits: list[float] = []

    async def recorded_idle(seconds: float) -> None:
        waits.append(seconds)

    client._idle = recorded_idle  # type: ignore[method-assign]
    with pytest.raises(NotFoundUpstreamError):
        asyncio.run(asyncio.wait_for(client.run(_ignore), 30))
    assert waits == [1.0]
    assert [r.status for r in archive.requests] == [429, 404]
    assert client.connections == 0
