"""Tests for BinanceRestClient against the REST stand-in: paging, error mapping, retries."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import TYPE_CHECKING

import httpx
import polars as pl
import pytest

from crypto_lakehouse.exceptions import (
    BannedError,
    ConfigurationError,
    NotFoundUpstreamError,
    RegionBlockedError,
    RequestRejectedError,
    TransientSourceError,
)
from crypto_lakehouse.sources.binance._silver import TIMESTAMP
from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient, FetchResult
from tests.servers.rest_data import SymbolSpec, ms, row_time
from tests.servers.rest_server import RequestRecord, RestServer, default_symbols
from tests.sources.binance._support import block_non_loopback, rest_client, rest_settings, utc

if TYPE_CHECKING:
    from collections.abc import Iterator

DAY = 86_400_000
HOUR = 3_600_000


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to leave loopback."""
    block_non_loopback(monkeypatch)


@pytest.fixture
def server() -> Iterator[RestServer]:
    """Run a fresh REST stand-in for one test."""
    with RestServer() as running:
        yield running


def _fetch(server: RestServer, name: str, *args: object, **kwargs: object) -> FetchResult:
    """Call one client method against the stand-in and return its result."""
    settings = rest_settings(server)

    async def main() -> FetchResult:
        async with rest_client(settings, **kwargs) as client:
            result: FetchResult = await getattr(client, name)(*args)
            return result

    return asyncio.run(main())


def _expected_times(
    server: RestServer,
    market: str,
    kind: str,
    symbol: str,
    start: int,
    end: int,
    interval: str = "",
) -> list[int]:
    """Return the stand-in's own row times in [start, end) for one series."""
    rows = server.data.series(market, kind, symbol, start, interval)  # type: ignore[arg-type]
    return [row_time(kind, r) for r in itertools.takewhile(lambda r: row_time(kind, r) < end, rows)]


def _data_requests(server: RestServer) -> list[RequestRecord]:
    """Return the logged requests except the client's one-off exchangeInfo."""
    return [r for r in server.requests if r.endpoint != "exchangeInfo"]


def _ms_list(series: pl.Series) -> list[int]:
    """Return a timestamp column as epoch milliseconds."""
    return [v // 1000 for v in series.cast(pl.Int64).to_list()]


@pytest.mark.req("R5.1", "R6.1")
def test_spot_klines_page_by_1000_without_gaps_or_duplicates(server: RestServer) -> None:
    """2.5 days of 1m spot klines arrive in 4 pages of at most 1000, each bar exactly once."""
    result = _fetch(
        server, "klines", "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-03T12:00")
    )
    times = _ms_list(result.frame["open_time"])
    assert times == _expected_times(
        server, "spot", "klines", "BTCUSDT", ms("2024-01-01"), ms("2024-01-03T12:00"), "1m"
    )
    assert len(times) == 3600 and len(set(times)) == 3600
    assert {b - a for a, b in itertools.pairwise(times)} == {60_000}
    assert len(result.pages) == 4
    assert all(int(r.params["limit"]) <= 1000 for r in _data_requests(server))
    assert result.frame.schema["open_time"] == TIMESTAMP
    assert json.loads(result.pages[0].body)[0][0] == ms("2024-01-01")
    assert "startTime=1704067200000" in result.pages[0].url


def test_um_klines_use_pages_up_to_1500(server: RestServer) -> None:
    """USD-M klines with a page size of 1500 need three pages for 3600 bars."""
    result = _fetch(
        server,
        "klines",
        "um",
        "BTCUSDT",
        "1m",
        utc("2024-01-01T00:00"),
        utc("2024-01-03T12:00"),
        futures_kline_page=1500,
    )
    times = _ms_list(result.frame["open_time"])
    assert len(times) == 3600 and len(set(times)) == 3600
    assert len(result.pages) == 3
    assert [r.weight for r in _data_requests(server)] == [10, 10, 10]


def test_cm_klines_stay_inside_200_day_windows(server: RestServer) -> None:
    """COIN-M klines over 18 months are fetched in ≤200-day windows with no bar lost or doubled."""
    start, end = utc("2022-07-01T00:00"), utc("2024-01-01T00:00")
    result = _fetch(server, "klines", "cm", "BTCUSD_PERP", "1h", start, end)
    times = _ms_list(result.frame["open_time"])
    assert times == _expected_times(
        server, "cm", "klines", "BTCUSD_PERP", ms("2022-07-01"), ms("2024-01-01"), "1h"
    )
    assert len(times) == len(set(times)) == (ms("2024-01-01") - ms("2022-07-01")) // HOUR
    requests = _data_requests(server)
    spans = [int(r.params["endTime"]) - int(r.params["startTime"]) for r in requests]
    assert max(spans) <= 200 * DAY
    assert {r.status for r in requests} == {200}
    assert "base_volume" in result.frame.columns
    assert "taker_buy_base_volume" in result.frame.columns


def test_agg_trades_cross_hour_windows_then_page_by_id() -> None:
    """Futures aggTrades skip a quiet spell in <1h windows, then page by fromId, losing nothing."""
    quiet = (ms("2024-01-02T00:00"), ms("2024-01-02T02:30"))
    symbols = default_symbols()
    symbols["um"] = [SymbolSpec("BTCUSDT", "BTCUSDT", quiet=[quiet], max_trades_per_minute=20)]
    with RestServer(symbols=symbols) as server:
        result = _fetch(
            server, "agg_trades", "um", "BTCUSDT", utc("2024-01-02T00:00"), utc("2024-01-02T06:00")
        )
        expected = _expected_times(
            server, "um", "aggTrades", "BTCUSDT", ms("2024-01-02"), ms("2024-01-02T06:00")
        )
        requests = _data_requests(server)
    ids = result.frame["agg_trade_id"].to_list()
    assert len(ids) == len(expected) > 1000
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert _ms_list(result.frame["transact_time"]) == expected
    timed = [r for r in requests if "startTime" in r.params]
    assert [int(r.params["startTime"]) for r in timed] == [
        quiet[0],
        quiet[0] + HOUR,
        quiet[0] + 2 * HOUR,
    ]
    assert all(int(r.params["endTime"]) - int(r.params["startTime"]) < HOUR for r in timed)
    assert all("fromId" not in r.params for r in timed)
    assert len(requests) > len(timed)  # the rest went by fromId
    assert "is_best_match" not in result.frame.columns


def test_spot_agg_trades_carry_best_match(server: RestServer) -> None:
    """Spot aggTrades have is_best_match and transact times inside the half-open range."""
    result = _fetch(
        server, "agg_trades", "spot", "BTCUSDT", utc("2024-01-01T00:00"), utc("2024-01-01T00:30")
    )
    assert result.frame["is_best_match"].to_list() == [True] * result.row_count
    times = _ms_list(result.frame["transact_time"])
    assert min(times) >= ms("2024-01-01") and max(times) < ms("2024-01-01T00:30")


@pytest.mark.req("R5.2")
def test_funding_rate_derives_the_interval_from_gaps(server: RestServer) -> None:
    """Funding rows get 8 h, then 4 h after the schedule change, and null for the first row."""
    result = _fetch(
        server, "funding_rate", "um", "BTCUSDT", utc("2024-02-28T00:00"), utc("2024-03-02T00:00")
    )
    hours = result.frame["funding_interval_hours"].to_list()
    assert hours[0] is None
    assert set(hours[1:]) == {8, 4}
    march = result.frame.filter(pl.col("calc_time") >= utc("2024-03-01T04:00"))
    assert set(march["funding_interval_hours"].to_list()) == {4}


def test_open_interest_hist_fills_metrics_columns(server: RestServer) -> None:
    """openInterestHist rows land in the metrics layout with ratio columns null."""
    result = _fetch(
        server,
        "open_interest_hist",
        "um",
        "BTCUSDT",
        utc("2024-05-30T00:00"),
        utc("2024-05-31T00:00"),
    )
    assert result.row_count == 288
    assert result.frame["count_long_short_ratio"].null_count() == 288
    assert result.frame.schema["create_time"] == TIMESTAMP


@pytest.mark.req("R3.2", "R6.1")
def test_429_waits_for_retry_after_then_succeeds(server: RestServer) -> None:
    """A 429 waits exactly its Retry-After (0.5 s, sent as a whole 1 s), and is never banned."""
    server.add_fault("klines", 429, retry_after=0.5)
    settings = rest_settings(server, retry_max_wait_seconds=5.0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    async def main() -> FetchResult:
        async with rest_client(settings, sleep=sleep) as client:
            return await client.klines(
                "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-01T01:00")
            )

    assert asyncio.run(main()).row_count == 60
    first, second = _data_requests(server)[:2]
    assert (first.status, second.status) == (429, 200)
    assert waits == [1.0]  # the stand-in answers a retry inside the window with 418


def test_the_stand_in_bans_a_client_that_ignores_retry_after(server: RestServer) -> None:
    """Sending again inside a 429's Retry-After window draws a 418 with the ban length."""
    server.add_fault("klines", 429, retry_after=30)
    url = f"{server.base_url('spot')}/api/v3/klines?symbol=BTCUSDT&interval=1m"
    with httpx.Client(trust_env=False) as http:
        assert http.get(url).status_code == 429
        banned = http.get(url)
    assert banned.status_code == 418
    assert float(banned.headers["Retry-After"]) == pytest.approx(120, abs=1)


@pytest.mark.req("R6.1")
def test_418_stops_at_once_with_the_ban_duration(server: RestServer) -> None:
    """A 418 raises BannedError naming the duration; no retry, and later calls fail fast."""
    server.add_fault("klines", 418, retry_after=300)
    settings = rest_settings(server)

    async def main() -> None:
        async with rest_client(settings) as client:
            with pytest.raises(BannedError, match=r"HTTP 418\) for 300 s") as info:
                await client.klines(
                    "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-01T01:00")
                )
            assert info.value.retry_after == 300
            with pytest.raises(BannedError):
                await client.klines(
                    "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-01T01:00")
                )

    asyncio.run(main())
    assert [r.endpoint for r in server.requests] == ["exchangeInfo", "klines"]


def test_451_raises_region_blocked_without_retry(server: RestServer) -> None:
    """A 451 becomes RegionBlockedError after exactly one request."""
    server.add_fault("/fapi/v1/fundingRate", 451, times=5)
    with pytest.raises(RegionBlockedError, match="451"):
        _fetch(
            server,
            "funding_rate",
            "um",
            "BTCUSDT",
            utc("2024-01-01T00:00"),
            utc("2024-01-02T00:00"),
        )
    assert [r.status for r in server.requests if r.endpoint == "fundingRate"] == [451]


@pytest.mark.req("R3.2", "R6.1")
def test_5xx_is_retried_with_backoff(server: RestServer) -> None:
    """Two 503s are retried and the third attempt's data is returned."""
    server.add_fault("klines", 503, times=2)
    result = _fetch(
        server, "klines", "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-01T00:05")
    )
    assert result.row_count == 5
    assert [r.status for r in server.requests if r.endpoint == "klines"] == [503, 503, 200]


@pytest.mark.req("R3.2", "R6.1")
def test_5xx_gives_up_after_the_configured_retries(server: RestServer) -> None:
    """Persistent 500s raise TransientSourceError after http_retries + 1 attempts."""
    server.add_fault("klines", 500, times=10)
    with pytest.raises(TransientSourceError, match="HTTP 500"):
        _fetch(
            server,
            "klines",
            "spot",
            "BTCUSDT",
            "1m",
            utc("2024-01-01T00:00"),
            utc("2024-01-01T00:05"),
        )
    assert len([r for r in server.requests if r.endpoint == "klines"]) == 3


def test_unknown_symbol_and_404_are_not_found(server: RestServer) -> None:
    """An invalid symbol (-1121) and a 404 both raise NotFoundUpstreamError without retries."""
    with pytest.raises(NotFoundUpstreamError, match="-1121"):
        _fetch(
            server,
            "klines",
            "spot",
            "NOPEUSDT",
            "1m",
            utc("2024-01-01T00:00"),
            utc("2024-01-01T00:05"),
        )
    server.add_fault("openInterest", 404)
    with pytest.raises(NotFoundUpstreamError):
        _fetch(server, "open_interest", "um", "BTCUSDT")
    assert len([r for r in server.requests if r.endpoint != "exchangeInfo"]) == 2


@pytest.mark.parametrize("status", [400, 403])
def test_other_4xx_is_rejected_once_not_missing(server: RestServer, status: int) -> None:
    """A 400 or 403 raises RequestRejectedError (terminal, not missing upstream), sent once."""
    server.add_fault("klines", status, times=5)
    with pytest.raises(RequestRejectedError, match=f"HTTP {status}") as info:
        _fetch(
            server, "klines", "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"),
            utc("2024-01-01T00:05"),
        )  # fmt: skip
    assert not isinstance(info.value, NotFoundUpstreamError)
    assert [r.status for r in server.requests if r.endpoint == "klines"] == [status]


def test_exchange_info_sets_the_weight_limit() -> None:
    """Without a configured limit the client adopts exchangeInfo's REQUEST_WEIGHT limit."""
    with RestServer(weight_limits={"um": 1234}) as server:
        settings = rest_settings(server)

        async def main() -> int:
            async with rest_client(settings) as client:
                await client.open_interest("um", "BTCUSDT")
                return client.limiter("um").limit

        assert asyncio.run(main()) == 1234


def test_dropped_and_altered_rows_reach_the_client(server: RestServer) -> None:
    """Rows the test drops or alters on the stand-in are missing or changed in the frame."""
    server.data.drop("spot", "klines", "BTCUSDT", {ms("2024-01-01T00:03")})
    server.data.alter("spot", "klines", "BTCUSDT", ms("2024-01-01T00:04"), {4: "1.5"})
    result = _fetch(
        server, "klines", "spot", "BTCUSDT", "1m", utc("2024-01-01T00:00"), utc("2024-01-01T00:06")
    )
    assert result.row_count == 5
    assert utc("2024-01-01T00:03") not in result.frame["open_time"].to_list()
    assert result.frame.filter(pl.col("open_time") == utc("2024-01-01T00:04"))["close"][0] == 1.5


def test_unfinished_bar_is_dropped(server: RestServer) -> None:
    """A bar whose close time is after `now` is not returned as data."""
    now = utc("2024-01-01T00:04:30")
    result = _fetch(
        server,
        "klines",
        "spot",
        "BTCUSDT",
        "1m",
        utc("2024-01-01T00:00"),
        utc("2024-01-01T00:06"),
        now=lambda: now,
    )
    assert result.frame["open_time"].max() == utc("2024-01-01T00:03")


def test_fetch_dispatches_archive_data_types(server: RestServer) -> None:
    """fetch() maps archive data-type names to endpoints, e.g. markPriceKlines and metrics."""
    settings = rest_settings(server)

    async def main() -> tuple[FetchResult, FetchResult]:
        async with rest_client(settings) as client:
            marks = await client.fetch(
                "um",
                "markPriceKlines",
                "BTCUSDT",
                utc("2024-01-01T00:00"),
                utc("2024-01-01T01:00"),
                interval="1m",
            )
            metrics = await client.fetch(
                "cm", "metrics", "BTCUSD", utc("2024-05-31T00:00"), utc("2024-05-31T01:00")
            )
            with pytest.raises(ConfigurationError, match="only for futures"):
                await client.fetch(
                    "spot",
                    "fundingRate",
                    "BTCUSDT",
                    utc("2024-01-01T00:00"),
                    utc("2024-01-02T00:00"),
                )
            return marks, metrics

    marks, metrics = asyncio.run(main())
    assert marks.row_count == 60 and marks.frame["samples"].to_list() == [60] * 60
    assert metrics.row_count == 12 and set(metrics.frame["symbol"].to_list()) == {"BTCUSD"}


def test_client_owns_and_closes_its_default_http_session(server: RestServer) -> None:
    """Without an injected aiohttp session the client creates one and closes it on exit."""
    settings = rest_settings(server)

    async def main() -> bool:
        async with BinanceRestClient(settings) as client:
            await client.premium_index("um", "BTCUSDT")
            session = client._transport._session  # private: the only way to see ownership
        assert session is not None
        return session.closed

    assert asyncio.run(main()) is True
