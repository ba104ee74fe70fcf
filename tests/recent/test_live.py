"""`stream`: WebSocket micro-batches into bronze and provisional silver, reconnect back-fills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from crypto_lakehouse.config import Settings, load_settings
from crypto_lakehouse.recent.live import StreamRequest, plan_streams, run_stream
from crypto_lakehouse.recent.live_sink import LiveSink
from crypto_lakehouse.recent.results import StreamResult
from crypto_lakehouse.sources.binance.ws.client import RawFrame, StreamBatch
from crypto_lakehouse.sources.binance.ws.frames import rows_frame
from crypto_lakehouse.storage.root import LakeRoot
from tests.recent._live_support import bronze_lines, kline_event, kline_rest_row, query
from tests.servers.rest_data import SymbolSpec, ms
from tests.servers.rest_server import RestServer
from tests.servers.ws_server import WsServer
from tests.sources.binance._support import block_non_loopback

if TYPE_CHECKING:
    from pathlib import Path

T0 = ms("2024-01-01")
MINUTE = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
NO_REST = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to leave loopback."""
    block_non_loopback(monkeypatch)


def kline_script(minutes: int) -> list[tuple[str, Any]]:
    """Return, per minute and symbol, an open then a closed 1m kline event."""
    script = []
    for minute in range(minutes):
        for symbol in SYMBOLS:
            stream = f"{symbol.lower()}@kline_1m"
            script.append((stream, kline_event(symbol, T0 + minute * MINUTE, closed=False)))
            script.append((stream, kline_event(symbol, T0 + minute * MINUTE)))
    return script


async def stream_until_received(
    request: StreamRequest, settings: Settings, server: WsServer, total: int
) -> StreamResult:
    """Run the pipeline until it has received `total` frames, then stop it.

    The run's own observer, called after each timed flush, sets the stop event: no timer
    guesses when the frames have arrived, however slow the host.
    """
    stop = asyncio.Event()

    def stop_when_received(result: StreamResult) -> None:
        if result.frames >= total:
            stop.set()

    return await run_stream(request, settings, stop=stop, base_url=server.url, proxy=None,
                            observer=stop_when_received)  # fmt: skip


@pytest.mark.req("R3.1", "R3.2", "R5.1")
def test_disconnects_leave_no_missing_and_no_duplicate_klines(tmp_path: Path) -> None:
    """Two dropped connections lose 8 events; REST back-fills them; every kline is there once."""
    minutes = 30
    script = kline_script(minutes)
    skipped = [e for i, (_, e) in enumerate(script) if 15 <= i < 19 or 39 <= i < 43]
    lost = {(e["s"], e["k"]["t"]) for e in skipped if e["k"]["x"]}
    symbols = {"spot": [SymbolSpec(s, s, listed_at=T0) for s in SYMBOLS], "um": [], "cm": []}
    rest = RestServer(symbols=symbols, now_ms=T0 + 40 * MINUTE)
    for symbol in SYMBOLS:
        rows = [kline_rest_row(T0 + m * MINUTE) for m in range(minutes)]
        rest.data.set_rows("spot", "klines", symbol, rows, "1m")
    root = str(tmp_path / "lake")
    ws = WsServer(script=script, disconnect_after=[15, 20], skip_after_disconnect=4,
                  message_interval=0.002)  # fmt: skip
    with rest, ws:
        settings = load_settings(root=root, retry_backoff_seconds=0.01, **rest.settings_overrides())
        request = StreamRequest("spot", SYMBOLS, ("kline_1m",), flush_seconds=0.2)
        result = asyncio.run(stream_until_received(request, settings, ws, len(script) - 8))
    assert result.reconnects == 2 and not result.backfill_errors
    silver = query(root, "SELECT symbol, open_time, _source, _provisional, close "
                   "FROM silver.spot_klines")  # fmt: skip
    expected = {(s, datetime.fromtimestamp((T0 + m * MINUTE) / 1000, UTC))
                for s in SYMBOLS for m in range(minutes)}  # fmt: skip
    keys = list(zip(silver["symbol"], silver["open_time"], strict=True))
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert silver["_provisional"].all() and (silver["close"] == 101.0).all()
    by_key = {(s, int(t.timestamp() * 1000)): src for s, t, src, *_ in silver.iter_rows()}
    assert lost and all(by_key[key] == "rest" for key in lost)
    assert result.rows["spot_klines"] >= 2 * minutes - len(lost)


@pytest.mark.req("R5.1", "R5.2")
def test_every_stream_kind_lands_in_its_table(tmp_path: Path) -> None:
    """Klines, aggTrades, mark prices and liquidations land as provisional `ws` rows."""
    base = kline_event("BTCUSDT", T0)
    agg = [{"e": "aggTrade", "E": T0 + i, "s": "BTCUSDT", "a": 100 + i, "p": "100.5",
            "q": "0.25", "f": 1, "l": 2, "T": T0 + i, "m": True} for i in range(5)]  # fmt: skip
    mark = {"e": "markPriceUpdate", "E": T0, "s": "BTCUSDT", "p": "100.1", "i": "100.0",
            "P": "100.05", "r": "0.0001", "T": T0 + 8 * 3_600_000}  # fmt: skip
    liquidation = {"e": "forceOrder", "E": T0, "o": {
        "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910",
        "ap": "9910.5", "X": "FILLED", "l": "0.014", "z": "0.014", "T": T0 + 5}}  # fmt: skip
    script = [("btcusdt@kline_1m", base), *[("btcusdt@aggTrade", a) for a in agg],
              ("btcusdt@markPrice", mark), ("btcusdt@forceOrder", liquidation)]  # fmt: skip
    root = str(tmp_path / "lake")
    settings = Settings(root=root, binance_um_api_url=NO_REST)
    request = StreamRequest("um", ("BTCUSDT",), ("kline_1m", "aggTrade", "markPrice",
                                                 "forceOrder"), flush_seconds=0.2)  # fmt: skip
    with WsServer(script=script) as ws:
        result = asyncio.run(stream_until_received(request, settings, ws, len(script)))
    assert result.rows == {"um_klines": 1, "um_agg_trades": 5, "um_mark_price_stream": 1,
                           "um_liquidation_snapshot": 1}  # fmt: skip
    trades = query(root, "SELECT date, _source, _provisional FROM silver.um_agg_trades")
    assert set(trades.rows()) == {(datetime(2024, 1, 1).date(), "ws", True)}
    liq = query(root, "SELECT side, price, time FROM silver.um_liquidation_snapshot")
    assert liq.rows() == [("SELL", 9910.0, datetime(2024, 1, 1, 0, 0, 0, 5000, UTC))]
    marks = query(root, "SELECT mark_price, funding_rate FROM silver.um_mark_price_stream")
    assert marks.rows() == [(100.1, 0.0001)]
    frames = bronze_lines(tmp_path / "lake", "bronze/binance-ws/um")
    assert len(frames) == result.frames == len(script)


@pytest.mark.req("R3.3")
def test_a_redelivered_kline_replaces_its_earlier_copy(tmp_path: Path) -> None:
    """The same kline in two flushes stays one row, carrying the later values."""
    result = StreamResult("spot")
    sink = LiveSink(LakeRoot.at(str(tmp_path / "lake")), "spot", result)

    def batch(*events: dict[str, Any]) -> StreamBatch:
        rows = [{"symbol": e["s"], "interval": "1m", "open_time": e["k"]["t"],
                 "open": "100.0", "high": "102.0", "low": "99.0", "close": e["k"]["c"],
                 "volume": "10.5", "close_time": e["k"]["T"], "quote_volume": "1060.0",
                 "trades": 9, "taker_buy_volume": "4.0", "taker_buy_quote_volume": "404.0"}
                for e in events]  # fmt: skip
        raw = tuple(RawFrame(datetime.now(UTC), json.dumps(e)) for e in events)
        return StreamBatch("spot", raw, {"klines": rows_frame("spot", "klines", rows)})

    async def scenario() -> None:
        sink.add(batch(kline_event("BTCUSDT", T0), kline_event("BTCUSDT", T0 + MINUTE)))
        await sink.flush()
        sink.add(batch(kline_event("BTCUSDT", T0 + MINUTE, close="105.0"),
                       kline_event("BTCUSDT", T0 + 2 * MINUTE)))  # fmt: skip
        await sink.flush()

    asyncio.run(scenario())
    rows = query(str(tmp_path / "lake"), "SELECT close FROM silver.spot_klines ORDER BY open_time")
    assert rows["close"].to_list() == [101.0, 105.0, 101.0]
    assert sink.last_kline_open[("BTCUSDT", "1m")].timestamp() * 1000 == T0 + 2 * MINUTE


def test_stream_tokens_become_stream_names_and_bad_ones_are_refused() -> None:
    """kline_1m and aggTrade map to stream names; futures streams are refused for spot."""
    plan = plan_streams("um", ("BTCUSDT",), ("kline_1m", "aggTrade", "markPrice@1s"))
    assert plan.names == ("btcusdt@kline_1m", "btcusdt@aggTrade", "btcusdt@markPrice@1s")
    assert plan.klines == (("BTCUSDT", "1m"),) and plan.agg_trades == ("BTCUSDT",)
    with pytest.raises(Exception, match="futures stream"):
        plan_streams("spot", ("BTCUSDT",), ("forceOrder",))


@pytest.mark.req("R3.3", "R7.2")
def test_sigterm_mid_batch_loses_nothing_already_received(tmp_path: Path) -> None:
    """SIGTERM while every frame sits in the unflushed batch: all reach bronze and silver."""
    closed = [(s, e) for s, e in kline_script(60) if e["k"]["x"]]
    root = tmp_path / "lake"
    with WsServer(script=closed, message_interval=0.002) as ws:
        env = dict(os.environ, LAKEHOUSE_ROOT=str(root), LAKEHOUSE_BINANCE_SPOT_WS_URL=ws.url,
                   LAKEHOUSE_BINANCE_SPOT_API_URL=NO_REST)  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "crypto_lakehouse", "stream", "spot", "--symbols",
             ",".join(SYMBOLS), "--streams", "kline_1m", "--flush-seconds", "60"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while ws.sent < len(closed):  # each pong is a moment to look again, not a timer
            assert ws.wait_for_pongs(ws.pongs + 1, timeout=30), "the client stopped answering"
        # A ping sent from now on follows the last frame: its pong says the client read them all.
        assert ws.wait_for_pongs(ws.pongs + 2, timeout=30)
        proc.send_signal(signal.SIGTERM)  # the 60 s flush timer is far away
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    flushes = [e for e in events if e["event"] == "stream_flushed"]
    finished = next(e for e in events if e["event"] == "stream_run_finished")
    assert len(flushes) == 1 and finished["frames"] == ws.sent == len(closed)
    frames = [json.loads(line["frame"]) for line in bronze_lines(root, "bronze/binance-ws")]
    assert [f["data"] for f in frames] == [e for _, e in closed]
    silver = query(str(root), "SELECT count(*) AS n, count(DISTINCT (symbol, open_time)) AS k "
                   "FROM silver.spot_klines")  # fmt: skip
    assert silver.row(0) == (len(closed), len(closed))
    assert "frames received" in out
