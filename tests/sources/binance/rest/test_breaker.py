"""Tests for the per-host CircuitBreaker, alone and inside the REST client."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from crypto_lakehouse.exceptions import CircuitOpenError, TransientSourceError
from crypto_lakehouse.sources.binance.rest.breaker import BreakerState, CircuitBreaker
from tests.servers.rest_server import RestServer
from tests.sources.binance._support import block_non_loopback, rest_client, rest_settings, utc


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to leave loopback."""
    block_non_loopback(monkeypatch)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tripped(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    """Return a breaker whose host "api" has just opened."""
    breaker = CircuitBreaker(failure_threshold=threshold, reset_seconds=30, clock=clock)
    for _ in range(threshold):
        breaker.before_call("api")
        breaker.record_failure("api")
    return breaker


@pytest.mark.req("R3.2")
def test_opens_after_consecutive_failures_only() -> None:
    """Failures interrupted by a success do not open it; N in a row do."""
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=30, clock=Clock())
    for outcome in (False, False, True, False, False):
        breaker.before_call("api")
        (breaker.record_success if outcome else breaker.record_failure)("api")
    assert breaker.state("api") is BreakerState.CLOSED
    breaker.record_failure("api")
    assert breaker.state("api") is BreakerState.OPEN


@pytest.mark.req("R3.1", "R3.2")
def test_fails_fast_while_open_and_names_the_wait() -> None:
    """While open every call raises CircuitOpenError saying when the next probe is due."""
    clock = Clock()
    breaker = _tripped(clock)
    clock.now += 10
    with pytest.raises(CircuitOpenError, match=r"api after 3 consecutive failures.*20\.0 s"):
        breaker.before_call("api")
    breaker.before_call("other-host")  # other hosts are unaffected


@pytest.mark.req("R3.2")
def test_half_open_lets_exactly_one_probe_through() -> None:
    """After the reset timeout the first caller probes and a second caller still fails fast."""
    clock = Clock()
    breaker = _tripped(clock)
    clock.now += 30
    assert breaker.state("api") is BreakerState.HALF_OPEN
    breaker.before_call("api")
    with pytest.raises(CircuitOpenError):
        breaker.before_call("api")


def test_probe_success_closes_and_probe_failure_reopens() -> None:
    """A good probe closes the breaker; a failed probe opens it for another full timeout."""
    clock = Clock()
    breaker = _tripped(clock)
    clock.now += 30
    breaker.before_call("api")
    breaker.record_failure("api")
    assert breaker.state("api") is BreakerState.OPEN
    clock.now += 29
    assert breaker.state("api") is BreakerState.OPEN
    clock.now += 1
    breaker.before_call("api")
    breaker.record_success("api")
    assert breaker.state("api") is BreakerState.CLOSED
    breaker.before_call("api")


def test_cancelled_probe_frees_the_slot() -> None:
    """A probe that ends without an outcome (release) lets the next caller probe."""
    clock = Clock()
    breaker = _tripped(clock)
    clock.now += 30
    breaker.before_call("api")
    breaker.release("api")
    breaker.before_call("api")
    assert breaker.state("api") is BreakerState.HALF_OPEN


def test_snapshot_and_logs_report_every_transition() -> None:
    """snapshot() maps host to state and each transition is logged as a structured event."""
    clock = Clock()
    with capture_logs() as logs:
        breaker = _tripped(clock)
        breaker.before_call("healthy")
        breaker.record_success("healthy")
        assert breaker.snapshot() == {"api": "open", "healthy": "closed"}
        clock.now += 30
        assert breaker.snapshot()["api"] == "half_open"
        breaker.before_call("api")
        breaker.record_success("api")
    events = [entry["event"] for entry in logs]
    assert events == ["breaker_opened", "breaker_half_open", "breaker_probe", "breaker_closed"]
    assert logs[0]["host"] == "api" and logs[0]["failures"] == 3


@pytest.mark.req("R3.2", "R3.1", "R6.1")
def test_rest_client_trips_the_breaker_and_recovers() -> None:
    """Three 503s open the host's breaker, a fourth call never reaches it, a probe recovers."""
    with RestServer() as server:
        settings = rest_settings(server, http_retries=0, rest_weight_limit_per_minute=6000)
        clock = [1000.0]
        breaker = CircuitBreaker(failure_threshold=3, reset_seconds=30.0, clock=lambda: clock[0])
        server.add_fault("klines", 503, times=3)
        start, end = utc("2024-01-01T00:00"), utc("2024-01-01T00:05")

        async def main() -> list[str]:
            seen: list[str] = []
            async with rest_client(settings, breaker=breaker) as client:
                for _ in range(3):
                    with pytest.raises(TransientSourceError):
                        await client.klines("spot", "BTCUSDT", "1m", start, end)
                seen.append(next(iter(client.breaker.snapshot().values())))
                with pytest.raises(CircuitOpenError):
                    await client.klines("spot", "BTCUSDT", "1m", start, end)
                clock[0] += 30.0  # the reset period passes: the next call is the probe
                result = await client.klines("spot", "BTCUSDT", "1m", start, end)
                seen.append(next(iter(client.breaker.snapshot().values())))
                seen.append(str(result.row_count))
            return seen

        assert asyncio.run(main()) == ["open", "closed", "5"]
        assert [r.status for r in server.requests] == [503, 503, 503, 200]


def test_a_request_meeting_an_open_breaker_waits_for_its_probe() -> None:
    """Inside one request the retry policy waits until the breaker's next probe, as it waits
    a Retry-After, instead of the back-off: no request is sent the breaker would refuse."""
    with RestServer() as server:
        settings = rest_settings(
            server,
            http_retries=2,
            retry_max_wait_seconds=60.0,
            breaker_failure_threshold=1,
            breaker_reset_seconds=30.0,
            rest_weight_limit_per_minute=6000,
        )
        server.add_fault("klines", 503, times=5)
        waits: list[float] = []

        async def record(seconds: float) -> None:
            waits.append(seconds)

        async def main() -> None:
            async with rest_client(settings, sleep=record) as client:
                start, end = utc("2024-01-01T00:00"), utc("2024-01-01T00:05")
                await client.klines("spot", "BTCUSDT", "1m", start, end)

        with pytest.raises(CircuitOpenError) as info:
            asyncio.run(main())
        assert info.value.retry_after is not None
        assert len(waits) == 2
        assert waits[0] <= settings.tuning.retry_backoff_seconds  # the 503's back-off
        assert 25.0 < waits[1] <= 30.0  # the breaker's next probe, not a back-off step
        assert [r.status for r in server.requests] == [503]
