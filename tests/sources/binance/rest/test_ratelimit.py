"""Tests for the weight table and the sliding-window WeightLimiter."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.exceptions import BannedError, ConfigurationError, RateLimitedError
from crypto_lakehouse.sources.binance.rest.ratelimit import (
    WeightLimiter,
    futures_kline_weight,
    request_weight,
    used_weight_from_headers,
    weight_limit_from_exchange_info,
)
from tests.servers.rest_server import RestServer
from tests.sources.binance._support import block_non_loopback, rest_client, rest_settings, utc

if TYPE_CHECKING:
    from crypto_lakehouse.sources.binance._silver import Market


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to leave loopback."""
    block_non_loopback(monkeypatch)


class FakeClock:
    """A monotonic clock whose sleep advances time instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_request_weights_follow_the_documented_table() -> None:
    """Each endpoint costs the weight Binance documents, futures klines by limit."""
    assert request_weight("spot", "/api/v3/klines", {"limit": 1000}) == 2
    assert request_weight("spot", "/api/v3/aggTrades", {}) == 4
    assert request_weight("spot", "/api/v3/exchangeInfo", {}) == 20
    assert [futures_kline_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [
        1,
        1,
        2,
        2,
        5,
        5,
        10,
        10,
    ]
    assert request_weight("um", "/fapi/v1/klines", {}) == 5  # default limit 500
    assert request_weight("cm", "/dapi/v1/markPriceKlines", {"limit": "1500"}) == 10
    assert request_weight("um", "/fapi/v1/aggTrades", {}) == 20
    assert request_weight("um", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}) == 1
    assert request_weight("um", "/fapi/v1/premiumIndex", {}) == 10
    assert request_weight("cm", "/dapi/v1/premiumIndex", {"symbol": "BTCUSD_PERP"}) == 10
    assert request_weight("um", "/fapi/v1/fundingRate", {}) == 1
    assert request_weight("um", "/fapi/v1/openInterest", {}) == 1
    assert request_weight("um", "/futures/data/openInterestHist", {}) == 0
    assert request_weight("cm", "/futures/data/openInterestHist", {}) == 1
    with pytest.raises(ConfigurationError, match="no request weight known"):
        request_weight("spot", "/api/v3/depth", {})


def test_limit_and_used_weight_are_read_from_binance_payloads() -> None:
    """The limit comes from rateLimits REQUEST_WEIGHT/1 MINUTE; used weight from either header."""
    info = {
        "rateLimits": [
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            },
        ]
    }
    assert weight_limit_from_exchange_info(info) == 6000
    assert weight_limit_from_exchange_info({"rateLimits": []}) is None
    assert used_weight_from_headers({"x-mbx-used-weight-1m": "42", "x-mbx-used-weight": "7"}) == 42
    assert used_weight_from_headers({"X-MBX-USED-WEIGHT": "7"}) == 7
    assert used_weight_from_headers({"X-MBX-USED-WEIGHT-1D": "900"}) is None


@pytest.mark.req("R6.1")
def test_limiter_never_exceeds_the_window_in_fake_time() -> None:
    """Two hundred reservations never put more than the limit into any window of the log."""
    clock = FakeClock()
    limiter = WeightLimiter(limit=60, window_seconds=60, clock=clock, sleep=clock.sleep)
    spent: list[tuple[float, int]] = []

    async def main() -> None:
        for n in range(200):
            weight = 1 + n % 9
            async with limiter.reserve(weight):
                spent.append((clock.now, weight))

    asyncio.run(main())
    for stamp, _ in spent:
        in_window = sum(w for t, w in spent if stamp - 60 < t <= stamp)
        assert in_window <= 60
    total = sum(w for _, w in spent)
    assert clock.now >= 60 * (total // 60 - 1)  # it really had to wait for the windows


@pytest.mark.req("R6.1")
def test_pause_holds_every_request_for_retry_after() -> None:
    """After pause(5) the next reservation completes no earlier than five seconds later."""
    clock = FakeClock()
    limiter = WeightLimiter(limit=100, clock=clock, sleep=clock.sleep)
    limiter.pause(5.0)
    asyncio.run(limiter.acquire(1))
    assert clock.now >= 5.0


def test_server_reported_weight_corrects_the_count_upwards() -> None:
    """Weight used by someone else on the IP (seen in the header) delays our next request."""
    clock = FakeClock()
    limiter = WeightLimiter(limit=60, clock=clock, sleep=clock.sleep)
    assert limiter.observe({"X-MBX-USED-WEIGHT-1M": "50"}) == 50
    assert limiter.used() == 50
    asyncio.run(limiter.acquire(20))
    assert clock.now >= 60.0
    assert limiter.observe({"X-MBX-USED-WEIGHT-1M": "3"}) == 3
    assert limiter.used() == 20  # never lowered below what is in flight


@pytest.mark.req("R6.1")
def test_ban_makes_every_request_fail_fast_with_the_duration() -> None:
    """After a 418 ban, acquiring raises BannedError naming the ban and its remaining time."""
    clock = FakeClock()
    limiter = WeightLimiter(limit=100, name="spot", clock=clock, sleep=clock.sleep)
    limiter.ban(120.0)
    with pytest.raises(BannedError, match=r"HTTP 418.*120 s") as info:
        asyncio.run(limiter.acquire(1))
    assert info.value.retry_after == pytest.approx(120.0)
    clock.now = 121.0
    asyncio.run(limiter.acquire(1))


def _fast_limiters(limit: int, window: float) -> dict[Market, WeightLimiter]:
    """Return one limiter per market with a short window."""
    return {
        m: WeightLimiter(limit=limit, window_seconds=window, name=m) for m in ("spot", "um", "cm")
    }


def _burst(limiters: dict[Market, WeightLimiter], server: RestServer, requests: int) -> float:
    """Send `requests` spot requests (klines weight 2, aggTrades weight 4) from 8 tasks."""
    settings = rest_settings(server, http_retries=0)

    async def main() -> None:
        async with rest_client(settings, limiters=limiters) as client:

            async def worker(n: int) -> None:
                for i in range(n, requests, 8):
                    start = utc("2024-01-01T00:00") if i % 2 else utc("2024-01-01T01:00")
                    if i % 5:
                        await client.klines(
                            "spot", "BTCUSDT", "1m", start, start + timedelta(minutes=10)
                        )
                    else:  # one window with trades and a short page: one request
                        await client.agg_trades(
                            "spot", "BTCUSDT", start, start + timedelta(seconds=30)
                        )

            await asyncio.gather(*(worker(n) for n in range(8)))

    began = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - began


@pytest.mark.req("R6.1")
def test_limiter_keeps_a_counting_server_under_its_limit() -> None:
    """Hundreds of concurrent requests against a 60-per-window server never draw a 429."""
    window = 0.25
    with RestServer(weight_limits={"spot": 60}, weight_window_seconds=window) as server:
        elapsed = _burst(_fast_limiters(60, window), server, 240)
        statuses = server.statuses()
        assert len(statuses) >= 240  # aggTrades may take a second (fromId) request
        assert set(statuses) == {200}
        assert server.max_used_weight("spot") <= 60
        assert server.max_used_weight("spot") >= 50  # the budget was really used up
        total = sum(r.weight for r in server.requests)
        assert elapsed >= window * (total / 60 - 1)


def test_server_answers_429_when_the_limit_is_ignored() -> None:
    """The stand-in is a real check: a limiter allowing too much gets RateLimitedError."""
    with RestServer(weight_limits={"spot": 60}, weight_window_seconds=5.0) as server:
        # Requests already in flight when the 429 is sent arrive inside its Retry-After
        # window, so the stand-in may ban (418) before the 429 reaches the client.
        with pytest.raises((RateLimitedError, BannedError)) as info:
            _burst(_fast_limiters(10_000, 5.0), server, 80)
        assert 429 in server.statuses()
        error = info.value
        assert isinstance(error, RateLimitedError | BannedError)
        assert error.retry_after is not None and error.retry_after > 0
